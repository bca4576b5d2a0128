/* The DIMSE server: one port, one called AE title per upstream store, a thread per association.
 * A C façade over the DCMTK adapters dwb_server.cc and dwb_listener.cc; no DCMTK type appears here. */
#ifndef DWB_SERVER_H
#define DWB_SERVER_H

#include <stddef.h>

#include "dwb_config.h"
#include "dwb_spool.h"
#include "dwb_activity.h"
#include "dwb_status.h"
#include "dwb_uploader.h"
#include "dwb_upstream.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dwb_server dwb_server;

/* Loads the DICOM dictionary, creates the upstream HTTP clients and binds the port.
 * cfg is borrowed and must outlive the server. */
dwb_status dwb_server_new(const dwb_config *cfg, dwb_server **out, dwb_error *err);

/* The stores the server opened, in cfg->upstreams order and owned by it until dwb_server_free(): upstreams[i],
 * and spools[i] (NULL where that spool could not be opened). Returns their number. */
size_t dwb_server_stores(dwb_server *srv, dwb_upstream *const **upstreams, dwb_spool *const **spools);

/* For the operator's console: the uploaders (same order and ownership as the stores; NULL where a spool could not
 * be opened) and the registry of transfers and storage commitment jobs (owned by the server). */
dwb_uploader *const *dwb_server_uploaders(dwb_server *srv);
dwb_activity *dwb_server_activity(dwb_server *srv);

/* Accepts associations until dwb_server_request_stop(), then lets in-flight operations finish,
 * closes idle associations and returns. */
dwb_status dwb_server_run(dwb_server *srv, dwb_error *err);

/* Async-signal-safe. The first call stops accepting and drains; the second cancels in-flight work. */
void dwb_server_request_stop(dwb_server *srv);

void dwb_server_free(dwb_server *srv);

#ifdef __cplusplus
}
#endif
#endif
