/* STOW-RS response reader on top of the DICOM JSON/XML readers, within their limits. */
#define _GNU_SOURCE
#include "dwb_stow.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dwb_dicomjson.h"
#include "dwb_dicomxml.h"

#define TAG_FAILED_SEQ DWB_TAG(0x0008, 0x1198)
#define TAG_REF_SEQ DWB_TAG(0x0008, 0x1199)
#define TAG_REF_SOP_UID DWB_TAG(0x0008, 0x1155)
#define TAG_FAILURE_REASON DWB_TAG(0x0008, 0x1197)
#define TAG_WARNING_REASON DWB_TAG(0x0008, 0x1196)

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
    const dwb_attr *failed = dwb_attrs_find(ds, TAG_FAILED_SEQ);
    const dwb_attr *ok = dwb_attrs_find(ds, TAG_REF_SEQ);
    for (size_t i = 0; failed && i < failed->n_items; i++) {
        const char *uid = dwb_attrs_get_str(failed->items[i], TAG_REF_SOP_UID);
        if (!uid) continue;
        unsigned reason = reason_of(failed->items[i], TAG_FAILURE_REASON);
        /* A failed item without a reason is still a failure; 0xC000 ("cannot understand") is the generic one. */
        if ((st = add(out, cap, uid, DWB_STOW_FAILED, reason ? reason : 0xC000, err)) != DWB_OK) return st;
    }
    for (size_t i = 0; ok && i < ok->n_items; i++) {
        const char *uid = dwb_attrs_get_str(ok->items[i], TAG_REF_SOP_UID);
        if (!uid) continue;
        unsigned w = reason_of(ok->items[i], TAG_WARNING_REASON);
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
