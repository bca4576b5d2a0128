/* The OHIF viewer served by the gateway (config gateway.viewer): OHIF's built dist/ under a URL prefix on the
 * gateway's listener, moved under the prefix as it streams, with a generated app-config.js whose data source is
 * the gateway under the same prefix. The gateway answers <path>/dicom-web/... itself; the rest comes here. */
#ifndef DWB_VIEWER_H
#define DWB_VIEWER_H

#include <microhttpd.h>

#include "dwb_config.h"
#include "dwb_status.h"
#include "dwb_viewerpath.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dwb_viewer dwb_viewer;

/* Opens cfg->gateway.viewer.dir, which must hold index.html. cfg is borrowed and must outlive the viewer. When no
 * viewer is configured, *out is NULL and the result DWB_OK. */
dwb_status dwb_viewer_open(const dwb_config *cfg, dwb_viewer **out, dwb_error *err);

/* Frees; NULL is a no-op. Only once no request is being answered (the daemon has stopped). */
void dwb_viewer_close(dwb_viewer *v);

/* Queues the answer to a request whose target the route classifies (any kind but NOT_MINE and DICOMWEB): a file
 * of dist/ (index.html for a path that names none), the generated app-config.js, a redirect of the bare prefix,
 * or a refusal (400, 404, 405 for methods other than GET and HEAD) with one warning naming peer and the reason. */
enum MHD_Result dwb_viewer_answer(dwb_viewer *v, struct MHD_Connection *con, const char *method,
                                  const dwb_viewerpath_route *route, const char *peer);

#ifdef __cplusplus
}
#endif
#endif
