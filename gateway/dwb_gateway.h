/* The DICOMweb gateway for viewers (config `gateway`): a read-only QIDO-RS/WADO-RS pass-through to each
 * upstream at /dicom-web/<upstream AE title>, with the upstream's credentials injected and CORS for set origins;
 * with gateway.viewer, also the OHIF viewer and the same gateway under the viewer's URL prefix. */
#ifndef DWB_GATEWAY_H
#define DWB_GATEWAY_H

#include <stddef.h>

#include "dwb_config.h"
#include "dwb_status.h"
#include "dwb_spool.h"
#include "dwb_uploader.h"
#include "dwb_upstream.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dwb_gateway dwb_gateway;

/* Serves cfg->gateway on its own libmicrohttpd daemon. cfg, the upstreams, their spools and uploaders (same
 * order as cfg->upstreams; NULL entries where a spool could not be opened) are borrowed and must outlive the
 * gateway; the gateway makes its own streaming HTTP clients with their auth. */
dwb_status dwb_gateway_start(const dwb_config *cfg, dwb_upstream *const *upstreams, dwb_spool *const *spools,
                             dwb_uploader *const *uploaders, size_t n_upstreams, dwb_gateway **out, dwb_error *err);
/* Stops accepting, cancels transfers in progress and waits for them. NULL is a no-op. */
void dwb_gateway_stop(dwb_gateway *gw);

#ifdef __cplusplus
}
#endif
#endif
