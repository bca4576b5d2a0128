/* The C-MOVE send pipeline (WADO-RS fetch threads -> provenance stamp -> C-STORE) for callers without a
 * requesting association: the import command. Whole series are sent in one burst each. */
#ifndef DWB_IMPORT_SEND_H
#define DWB_IMPORT_SEND_H

#include <stddef.h>

#include "dwb_config.h"
#include "dwb_retrieve.h"
#include "dwb_status.h"
#include "dwb_upstream.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dwb_import_totals {
    size_t total, completed, failed, warning;
    unsigned long long bytes; /* bytes of completed instances as received from the store */
} dwb_import_totals;

typedef struct dwb_import_hooks {
    void (*progress)(void *ud, const dwb_import_totals *t);
    /* A series was sent (failed = instances of it that did not make it). */
    void (*series_done)(void *ud, const dwb_rseries *series, size_t failed);
    int (*cancelled)(void *ud);
    void *ud;
} dwb_import_hooks;

/* Sends every series of the plan to dest: by C-STORE, or by STOW-RS through stow (an HTTP client with the
 * destination's auth) when dest->stow_url is set. DWB_E_CONNECT if a DIMSE destination cannot be reached. */
dwb_status dwb_import_send(const dwb_config *cfg, const dwb_upstream *up, const dwb_destination_conf *dest,
                           dwb_http_client *stow, const dwb_rplan *plan, const dwb_import_hooks *hooks,
                           dwb_import_totals *out, dwb_error *err);

#ifdef __cplusplus
}
#endif
#endif
