/* The DIMSE listener: one port, one called AE title per upstream store, a thread per association.
 * A C façade over the DCMTK adapter in dwb_server.cc; no DCMTK type appears here. */
#ifndef DWB_SERVER_H
#define DWB_SERVER_H

#include "dwb_config.h"
#include "dwb_status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dwb_server dwb_server;

/* Loads the DICOM dictionary, creates the upstream HTTP clients and binds the port.
 * cfg is borrowed and must outlive the server. */
dwb_status dwb_server_new(const dwb_config *cfg, dwb_server **out, dwb_error *err);

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
