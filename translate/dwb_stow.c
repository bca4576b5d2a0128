/* STOW-RS response reader on top of the DICOM JSON/XML readers, within their limits. */
#define _GNU_SOURCE
#include "dwb_stow.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dwb_dicomjson.h"
#include "dwb_dicomxml.h"
#include "dwb_tags.h"


static dwb_status add(dwb_stow_result *r, size_t *cap, const char *uid, dwb_stow_outcome o, unsigned reason,
                      dwb_error *err) {
    /* A truncated UID could match another instance: refuse the response rather than guess. */
    if (strlen(uid) >= sizeof r->items[0].sop_uid)
        return dwb_error_set(err, DWB_E_PARSE, "SOP Instance UID longer than 64 characters (%.40s...)", uid);
    if (r->n == *cap) {
        size_t nc = *cap ? *cap * 2 : 8;
        dwb_stow_item *n = realloc(r->items, nc * sizeof *n);
        if (!n) return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
        r->items = n;
        *cap = nc;
    }
    dwb_stow_item *it = &r->items[r->n++];
    memset(it, 0, sizeof *it);
    memcpy(it->sop_uid, uid, strlen(uid) + 1);
    it->outcome = o;
    it->reason = reason;
    return DWB_OK;
}

static unsigned reason_of(const dwb_attrs *item, uint32_t tag) {
    const char *v = dwb_attrs_get_str(item, tag);
    return v ? (unsigned)strtoul(v, NULL, 10) & 0xffff : 0;
}

static dwb_status collect(const dwb_attrs *ds, dwb_stow_result *out, size_t *cap, dwb_error *err) {
    dwb_status st;
    const dwb_attr *failed = dwb_attrs_find(ds, DWB_TAG_FAILED_SEQ);
    const dwb_attr *ok = dwb_attrs_find(ds, DWB_TAG_REF_SEQ);
    for (size_t i = 0; failed && i < failed->n_items; i++) {
        const char *uid = dwb_attrs_get_str(failed->items[i], DWB_TAG_REF_SOP_UID);
        if (!uid) continue;
        unsigned reason = reason_of(failed->items[i], DWB_TAG_FAILURE_REASON);
        /* A failed item without a reason is still a failure; 0xC000 ("cannot understand") is the generic one. */
        if ((st = add(out, cap, uid, DWB_STOW_FAILED, reason ? reason : 0xC000, err)) != DWB_OK) return st;
    }
    for (size_t i = 0; ok && i < ok->n_items; i++) {
        const char *uid = dwb_attrs_get_str(ok->items[i], DWB_TAG_REF_SOP_UID);
        if (!uid) continue;
        unsigned w = reason_of(ok->items[i], DWB_TAG_WARNING_REASON);
        if ((st = add(out, cap, uid, w ? DWB_STOW_WARNING : DWB_STOW_STORED, w, err)) != DWB_OK) return st;
    }
    return DWB_OK;
}

typedef struct arr_ctx {
    dwb_stow_result *out;
    size_t *cap;
    dwb_error *err;
} arr_ctx;

static dwb_status on_ds(void *ud, dwb_attrs *ds) {
    arr_ctx *c = ud;
    dwb_status st = collect(ds, c->out, c->cap, c->err);
    dwb_attrs_free(ds);
    return st;
}

dwb_status dwb_stow_parse(const char *body, size_t len, const char *content_type, dwb_stow_result *out,
                          dwb_error *err) {
    memset(out, 0, sizeof *out);
    if (err) dwb_error_clear(err);
    if (!body && len) return dwb_error_set(err, DWB_E_INVALID, "STOW-RS response: NULL body");
    size_t i = 0, cap = 0;
    while (i < len && (body[i] == ' ' || body[i] == '\n' || body[i] == '\r' || body[i] == '\t')) i++;
    if (i == len) return DWB_OK;
    dwb_parse_limits lim = dwb_parse_limits_default();
    lim.max_bytes = 64u << 20;
    dwb_status st;
    int xml = (content_type && strcasestr(content_type, "xml")) || body[i] == '<';
    if (xml) {
        dwb_attrs *ds = NULL;
        st = dwb_dicomxml_parse(body, len, &lim, &ds, err);
        if (st == DWB_OK) {
            st = collect(ds, out, &cap, err);
            dwb_attrs_free(ds);
        }
    } else if (body[i] == '[') {
        arr_ctx c = {out, &cap, err};
        st = dwb_dicomjson_parse_array(body, len, &lim, on_ds, &c, err);
    } else {
        dwb_attrs *ds = NULL;
        st = dwb_dicomjson_parse_object(body, len, &lim, &ds, err);
        if (st == DWB_OK) {
            st = collect(ds, out, &cap, err);
            dwb_attrs_free(ds);
        }
    }
    if (st != DWB_OK) {
        dwb_stow_result_free(out);
        dwb_error_prefix(err, "STOW-RS response");
    }
    return st;
}

void dwb_stow_result_free(dwb_stow_result *r) {
    free(r->items);
    memset(r, 0, sizeof *r);
}

const dwb_stow_item *dwb_stow_find(const dwb_stow_result *r, const char *uid) {
    for (size_t i = 0; i < r->n; i++)
        if (!strcmp(r->items[i].sop_uid, uid)) return &r->items[i];
    return NULL;
}

int dwb_stow_reason_transient(unsigned reason) {
    if ((reason & 0xFF00) == 0xA700) return 1; /* out of resources: the store may free some */
    if (reason == 0x0110) return 1;             /* processing failure: often a store-side hiccup */
    /* The same bytes will be refused again: SOP class not supported, not authorized, duplicate, no such class. */
    if (reason == 0x0122 || reason == 0x0124 || reason == 0x0111 || reason == 0x0118) return 0;
    if ((reason & 0xFF00) == 0xA900 || (reason & 0xF000) == 0xC000) return 0; /* does not match / cannot understand */
    return 1; /* unknown: retrying costs a delay, dropping costs an instance */
}

int dwb_stow_reason_already_stored(unsigned reason) {
    /* 0x0111 Duplicate SOP Instance (PS3.4 Annex C): the store has it; re-sending would not change that. */
    return reason == 0x0111;
}

/* A DICOM STOW answer is DICOM JSON or DICOM XML; a proxy's login page or error page is anything else. */
static int dicom_answer_type(const char *ct) {
    if (!ct) return 0;
    return strcasestr(ct, "application/dicom+json") || strcasestr(ct, "application/dicom+xml") ||
           strcasestr(ct, "application/json") || strcasestr(ct, "multipart/related") ||
           strcasestr(ct, "application/xml") || strcasestr(ct, "text/xml");
}

static int blank(const char *b, size_t len) {
    for (size_t i = 0; i < len; i++)
        if (b[i] != ' ' && b[i] != '\n' && b[i] != '\r' && b[i] != '\t') return 0;
    return 1;
}

dwb_stow_verdict dwb_stow_judge(long code, const char *ct, const char *body, size_t len, dwb_stow_result *res,
                                char *why, size_t cap) {
    char tmp[2];
    if (!why) why = tmp, cap = sizeof tmp;
    why[0] = '\0';
    memset(res, 0, sizeof *res);
    if (code == 0) {
        /* No answer (refused connection, reset, timeout, a body cut on the way): the store may or may not have
         * stored the request; re-sending is safe because a second copy is answered as already held. */
        snprintf(why, cap, "no answer from the store");
        return DWB_STOW_V_UNAVAILABLE;
    }
    if (code >= 500 || code == 408 || code == 429) {
        /* Any server error, a timeout or a quota: the store is failing or overloaded, and said nothing about the
         * instances. A 500 for a whole batch is how a store in an outage answers, not proof that one instance is
         * bad: splitting the batch and charging each instance an attempt moved a whole backlog to failed/ during
         * a 25 s storm of 500s (issue 25). The same request will succeed once the store recovers. */
        snprintf(why, cap, "HTTP %ld", code);
        return DWB_STOW_V_UNAVAILABLE;
    }
    if (code == 401 || code == 403 || code == 404 || code == 405 || code == 407) {
        /* Credentials, permissions or the URL are wrong: an operator fixes the configuration, the instances are
         * not at fault and must wait for that fix. */
        snprintf(why, cap, "HTTP %ld (check base_url and credentials)", code);
        return DWB_STOW_V_UNAVAILABLE;
    }
    if ((code >= 200 && code < 300) || code == 409) {
        if (!body || blank(body, len)) {
            if (code >= 200 && code < 300 && dicom_answer_type(ct)) return DWB_STOW_V_ANSWERED; /* accepted whole */
            if (code == 409) {
                snprintf(why, cap, "HTTP 409 without a per-instance answer");
                return DWB_STOW_V_SPLIT;
            }
            /* An empty 2xx of another type is what a captive proxy or a misrouted URL gives: nothing proves
             * the store has the instances, so nothing is deleted. */
            snprintf(why, cap, "HTTP %ld with an empty %s body, not a STOW-RS answer", code, ct ? ct : "untyped");
            return DWB_STOW_V_UNAVAILABLE;
        }
        if (!dicom_answer_type(ct) && !(ct == NULL && (body[0] == '{' || body[0] == '[' || body[0] == '<'))) {
            snprintf(why, cap, "HTTP %ld with a %s body, not a STOW-RS answer (a proxy in the way?)", code,
                     ct ? ct : "untyped");
            return DWB_STOW_V_UNAVAILABLE;
        }
        dwb_error perr = {0};
        if (dwb_stow_parse(body, len, ct, res, &perr) != DWB_OK) {
            /* An answer we cannot read deletes nothing: the next attempt will be answered as already held. */
            snprintf(why, cap, "HTTP %ld: %s", code, perr.message);
            return DWB_STOW_V_UNAVAILABLE;
        }
        return DWB_STOW_V_ANSWERED;
    }
    if (code >= 400 && code < 500) {
        /* 400, 413, 415, 422 and the other client errors: a definite refusal of the request as a whole, possibly
         * because of one of its instances; halves are tried until the culprit is alone. */
        snprintf(why, cap, "HTTP %ld", code);
        return DWB_STOW_V_SPLIT;
    }
    /* 1xx, an unfollowed 3xx, or a status outside HTTP's classes: not a STOW-RS answer, nothing decided. */
    snprintf(why, cap, "HTTP %ld, not a STOW-RS answer", code);
    return DWB_STOW_V_UNAVAILABLE;
}

dwb_stow_fate dwb_stow_instance_fate(long code, const dwb_stow_result *res, const char *uid, unsigned *reason) {
    const dwb_stow_item *it = dwb_stow_find(res, uid);
    *reason = it ? it->reason : 0;
    if (!it) {
        /* A 2xx with no item at all accepted the request whole; an answer that names others but not this one
         * leaves it undecided, so it is tried again (counted, so it cannot loop forever). */
        return (code >= 200 && code < 300 && res->n == 0) ? DWB_STOW_F_DELIVERED : DWB_STOW_F_RETRY;
    }
    if (it->outcome != DWB_STOW_FAILED) return DWB_STOW_F_DELIVERED; /* stored, or stored with a warning */
    if (dwb_stow_reason_already_stored(it->reason)) return DWB_STOW_F_DELIVERED;
    return dwb_stow_reason_transient(it->reason) ? DWB_STOW_F_RETRY : DWB_STOW_F_REFUSED;
}

int dwb_stow_conflict(long code, const dwb_stow_result *res, const char *uid, int single, unsigned *reason) {
    *reason = 0;
    const dwb_stow_item *it = res ? dwb_stow_find(res, uid) : NULL;
    if (!it) return single && code == 409 && (!res || res->n == 0);
    if (it->outcome != DWB_STOW_FAILED) return 0;
    *reason = it->reason;
    if (it->reason == 0x0111) return 1;
    /* 0x0110 is a processing failure anywhere else (retried); only a 409 says it is about what the store holds. */
    return code == 409 && (it->reason == 0x0110 || it->reason == 0xB00E);
}

dwb_stow_fate dwb_stow_single_fate(long code) {
    /* A client error for one instance alone is about its bytes: sending them again gets the same answer.
     * (Server errors are never SPLIT, so they never reach here; anything else is retried, counted.) */
    return (code >= 400 && code < 500) ? DWB_STOW_F_REFUSED : DWB_STOW_F_RETRY;
}
