/* The QIDO-RS pager (dwb_qido_pager.h). */
#include "dwb_qido_pager.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dwb_dicomjson.h"
#include "dwb_http.h"
#include "dwb_tags.h"

void dwb_qido_pages_init(dwb_qido_pages *p, long page_size, long cap) {
    memset(p, 0, sizeof *p);
    if (cap <= 0) cap = 5000;
    p->page = page_size > 0 ? page_size : 1000;
    if (p->page > cap) p->page = cap;
    p->pages = 1;
}

int dwb_qido_pages_result(dwb_qido_pages *p, const char *key) {
    p->got++;
    if (p->got != 1) return 0;
    snprintf(p->first, sizeof p->first, "%s", key ? key : "");
    /* Same first result as the page before: the store ignores offset and would page forever. */
    return p->offset > 0 && p->first[0] && strcmp(p->first, p->prev_first) == 0;
}

int dwb_qido_pages_next(dwb_qido_pages *p, int truncated) {
    long got = (long)p->got;
    /* A full page may have a successor; so may a short one the store says it truncated (Google's Warning). */
    if (got == 0 || (got < p->page && !truncated)) return 0;
    if (p->pages >= DWB_QIDO_MAX_PAGES) return 0;
    snprintf(p->prev_first, sizeof p->prev_first, "%s", p->first);
    p->first[0] = '\0';
    p->offset += got;
    p->got = 0;
    p->pages++;
    return 1;
}

const char *dwb_qido_result_key(const dwb_attrs *ds) {
    static const uint32_t keys[] = {DWB_TAG_SOP_UID, DWB_TAG_SERIES_UID, DWB_TAG_STUDY_UID, DWB_TAG_PATIENT_ID};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const char *v = dwb_attrs_get_str(ds, keys[i]);
        if (v && *v) return v;
    }
    return NULL;
}

typedef struct page_ctx {
    dwb_qido_pages *pages;
    dwb_status (*on_result)(void *ud, dwb_attrs *ds);
    void *ud;
    unsigned long delivered;
    int repeated;
} page_ctx;

static dwb_status page_result(void *ud, dwb_attrs *ds) {
    page_ctx *c = ud;
    if (dwb_qido_pages_result(c->pages, dwb_qido_result_key(ds))) {
        dwb_attrs_free(ds);
        c->repeated = 1;
        return DWB_E_PARSE;
    }
    c->delivered++;
    return c->on_result(c->ud, ds);
}

dwb_status dwb_qido_each(const dwb_upstream *up, const char *path, const char *query, const dwb_qido_pager_opts *o,
                         dwb_status (*on_result)(void *ud, dwb_attrs *ds), void *ud, dwb_qido_pager_out *out,
                         dwb_error *err) {
    dwb_qido_pager_out local;
    if (!out) out = &local;
    memset(out, 0, sizeof *out);
    dwb_qido_pages pages;
    dwb_qido_pages_init(&pages, o && o->page_size > 0 ? o->page_size : up->conf->qido_page_size,
                        o ? o->page_cap : 0);
    size_t max_bytes = o && o->max_page_bytes ? o->max_page_bytes : (size_t)64 << 20;
    dwb_status st = DWB_OK;
    for (;;) {
        if (o && o->is_cancelled && o->is_cancelled(o->ud)) {
            st = dwb_error_set(err, DWB_E_CANCELLED, "cancelled");
            break;
        }
        char url[4096];
        int n = snprintf(url, sizeof url, "%s%s?%s%slimit=%ld&offset=%ld", up->conf->base_url, path, query,
                         query[0] ? "&" : "", pages.page, pages.offset);
        if (n < 0 || (size_t)n >= sizeof url) {
            st = dwb_error_set(err, DWB_E_LIMIT, "QIDO-RS URL too long");
            break;
        }
        if (o && o->log && dwb_log_enabled(DWB_LOG_DEBUG)) {
            char logurl[1024];
            dwb_log_url(url, logurl, sizeof logurl);
            DWB_DEBUG(o->log, "QIDO %s", logurl);
        }
        char *body = NULL;
        size_t len = 0;
        dwb_http_response resp = {0};
        st = dwb_http_get_buffer(up->http, url, "application/dicom+json", max_bytes, &body, &len, &resp, err);
        out->requests++;
        int truncated = resp.warning != NULL;
        if (st != DWB_OK && resp.error_body && !out->error_body) out->error_body = strdup(resp.error_body);
        dwb_http_response_cleanup(&resp);
        if (st != DWB_OK) {
            free(body);
            break;
        }
        page_ctx pc = {&pages, on_result, ud, 0, 0};
        if (len > 0) {
            dwb_parse_limits lim = dwb_parse_limits_default();
            st = dwb_dicomjson_parse_array(body, len, &lim, page_result, &pc, err);
        }
        free(body);
        out->results += pc.delivered;
        if (pc.repeated) {
            st = dwb_error_set(err, DWB_E_PARSE, "the store ignores the QIDO-RS offset parameter (same page twice)");
            break;
        }
        if (st != DWB_OK) break;
        if (!dwb_qido_pages_next(&pages, truncated)) break;
    }
    return st;
}

void dwb_qido_pager_out_cleanup(dwb_qido_pager_out *out) {
    if (!out) return;
    free(out->error_body);
    out->error_body = NULL;
}
