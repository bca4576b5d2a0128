/* Storage commitment resolution: ledger, then queue, then QIDO-RS, in rounds until everything is decided. */
#include "dwb_commit.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dwb_log.h"

/* UIDs per QIDO-RS request (UID list matching, PS3.4 C.2.2.2.2): the URL stays well under 8 KiB. */
#define UIDS_PER_QUERY 40
#define MAX_ANSWER (8u << 20)

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Marks the refs of idx[] that the store holds as DONE and the others as NO_SUCH. Returns 0 when the store
 * answered, -1 when it did not (the refs stay pending). */
static int ask_store(dwb_http_client *http, const char *base_url, dwb_commit_ref *refs, const size_t *idx, size_t k,
                     dwb_error *err) {
    size_t cap = strlen(base_url) + 128 + k * 66;
    char *url = malloc(cap);
    if (!url) return -1;
    size_t off = (size_t)snprintf(url, cap, "%s/instances?includefield=00080018&limit=%zu&SOPInstanceUID=", base_url,
                                  k * 2);
    for (size_t i = 0; i < k; i++)
        off += (size_t)snprintf(url + off, cap - off, "%s%s", i ? "," : "", refs[idx[i]].sop_uid);
    char *body = NULL;
    size_t len = 0;
    dwb_status st = dwb_http_get_buffer(http, url, "application/dicom+json", MAX_ANSWER, &body, &len, NULL, err);
    free(url);
    if (st != DWB_OK) {
        free(body);
        return -1;
    }
    json_error_t je;
    json_t *arr = len ? json_loadb(body, len, 0, &je) : json_array();
    free(body);
    if (!arr || !json_is_array(arr)) {
        json_decref(arr);
        dwb_error_set(err, DWB_E_PARSE, "QIDO-RS answer for storage commitment is not a JSON array");
        return -1;
    }
    for (size_t i = 0; i < k; i++) refs[idx[i]].state = DWB_COMMIT_NO_SUCH;
    size_t j;
    json_t *ds;
    json_array_foreach(arr, j, ds) {
        json_t *v = json_array_get(json_object_get(json_object_get(ds, "00080018"), "Value"), 0);
        const char *uid = json_string_value(v);
        if (!uid) continue;
        for (size_t i = 0; i < k; i++)
            if (!strcmp(refs[idx[i]].sop_uid, uid)) refs[idx[i]].state = DWB_COMMIT_DONE;
    }
    json_decref(arr);
    return 0;
}

dwb_status dwb_commit_resolve(dwb_http_client *http, const char *base_url, dwb_spool *spool, dwb_commit_ref *refs,
                              size_t n, int timeout_s, int (*cancelled)(void *), void *ud, dwb_error *err) {
    long long deadline = dwb_spool_now_ms() + (long long)timeout_s * 1000;
    size_t *idx = malloc((n ? n : 1) * sizeof *idx);
    if (!idx) return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    for (;;) {
        size_t waiting = 0, k = 0;
        for (size_t i = 0; i < n; i++) {
            dwb_commit_ref *r = &refs[i];
            if (r->state != DWB_COMMIT_PENDING) continue;
            if (spool && dwb_spool_confirmed(spool, r->sop_uid)) r->state = DWB_COMMIT_DONE;
            else if (spool && dwb_spool_holds(spool, r->sop_uid)) waiting++;
            else idx[k++] = i;
        }
        for (size_t off = 0; off < k; off += UIDS_PER_QUERY) {
            size_t m = k - off < UIDS_PER_QUERY ? k - off : UIDS_PER_QUERY;
            /* Asked before every query, not once per round: a round of 20,000 references is 500 queries, and
             * shutdown waits for this job (it uses the upstream's client). */
            if (cancelled && cancelled(ud)) {
                free(idx);
                return dwb_error_set(err, DWB_E_CANCELLED, "storage commitment cancelled");
            }
            dwb_error qe = {0};
            if (ask_store(http, base_url, refs, idx + off, m, &qe) != 0) {
                waiting += m; /* the store did not answer: ask again in the next round */
                if (err) *err = qe;
            }
        }
        if (!waiting) break;
        if (cancelled && cancelled(ud)) {
            free(idx);
            return dwb_error_set(err, DWB_E_CANCELLED, "storage commitment cancelled");
        }
        if (dwb_spool_now_ms() >= deadline) {
            for (size_t i = 0; i < n; i++)
                if (refs[i].state == DWB_COMMIT_PENDING) refs[i].state = DWB_COMMIT_TIMED_OUT;
            break;
        }
        sleep_ms(500);
    }
    free(idx);
    return DWB_OK;
}
