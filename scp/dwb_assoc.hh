/* Internal to scp/: what a DIMSE service handler gets for one association. C++ only (DCMTK types).
 * Each service lives in its own dwb_<service>.cc; the C logic behind it sees only C headers. */
#ifndef DWB_ASSOC_HH
#define DWB_ASSOC_HH

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmnet/assoc.h"
#include "dcmtk/dcmnet/dimse.h"
#include "dcmtk/dcmnet/dcmlayer.h"
#include "dcmtk/dcmdata/dcitem.h"

#include "dwb_dimse.hh"

#include <atomic>
#include <memory>
#include <string>
#include <vector>

extern "C" {
#include "dwb_activity.h"
#include "dwb_config.h"
#include "dwb_log.h"
#include "dwb_spool.h"
#include "dwb_uploader.h"
#include "dwb_upstream.h"
}

/* What the routing AE title (routes[], issue 28) needs: every upstream's spool and uploader, the staging spool a
 * routed instance is received into before it is linked into its targets' spools, and the tags the filters name. */
struct dwb_router {
    const dwb_config *cfg = nullptr;
    dwb_spool *const *spools = nullptr; /* cfg->upstreams' order; NULL where a spool could not be opened */
    dwb_uploader *const *uploaders = nullptr;
    dwb_spool *staging = nullptr;       /* <spool.dir>/.routing; NULL = routed C-STOREs answer Out of Resources */
    std::vector<uint32_t> tags;         /* every tag the routes' filters name */
};

struct dwb_assoc_ctx {
    T_ASC_Association *assoc;
    const dwb_config *cfg;
    const dwb_upstream *upstream; /* NULL when the called AE is the bridge's own (Verification only) */
    dwb_spool *spool;             /* the upstream's spool; NULL if it could not be opened */
    dwb_uploader *uploader;
    char id[24];
    char calling[DWB_AE_MAX + 1];
    char called[DWB_AE_MAX + 1];
    char peer[112]; /* "CALLING@ip" */
    dwb_log_ctx log;
    const std::atomic<bool> *cancel_all; /* second SIGTERM: abandon in-flight work */
    unsigned long n_requests;
    struct dwb_commit_jobs *commit; /* storage commitment reports owed on this association */
    const dwb_router *router;       /* set when the called AE is routing_ae_title: C-STOREs go by routes[] */
    dwb_activity *activity;         /* the console's registry of transfers and commitment jobs (the server's) */
};

/* How a handler waits for the rest of a peer's message (a data set after its command): at most
 * listen.dimse_timeout_s, so that a peer stalling mid-message cannot hold a worker for ever. */
inline T_DIMSE_BlockingMode dwb_peer_block(const dwb_assoc_ctx *ctx) {
    return ctx->cfg && ctx->cfg->listen.dimse_timeout_s > 0 ? DIMSE_NONBLOCKING : DIMSE_BLOCKING;
}
inline int dwb_peer_timeout(const dwb_assoc_ctx *ctx) { return ctx->cfg ? ctx->cfg->listen.dimse_timeout_s : 0; }

/* Handlers answer one request. A returned bad OFCondition is a network failure: the caller aborts. */
OFCondition dwb_handle_echo(dwb_assoc_ctx *ctx, T_DIMSE_Message *msg, T_ASC_PresentationContextID pid);
OFCondition dwb_handle_move_get(dwb_assoc_ctx *ctx, T_DIMSE_Message *msg, T_ASC_PresentationContextID pid);
OFCondition dwb_handle_store(dwb_assoc_ctx *ctx, T_DIMSE_Message *msg, T_ASC_PresentationContextID pid);
OFCondition dwb_handle_find(dwb_assoc_ctx *ctx, T_DIMSE_Message *msg, T_ASC_PresentationContextID pid);
/* Storage Commitment Push Model (dwb_commit_scp.cc): N-ACTION answered at once, the report sent later by
 * dwb_commit_poll between requests, or on a new association once this one closed. */
OFCondition dwb_handle_naction(dwb_assoc_ctx *ctx, T_DIMSE_Message *msg, T_ASC_PresentationContextID pid);
void dwb_commit_poll(dwb_assoc_ctx *ctx);
/* An N-EVENT-REPORT-RSP received as the association's next command: the answer to a report dwb_commit_poll sent. */
OFCondition dwb_commit_answered(dwb_assoc_ctx *ctx, T_DIMSE_Message *msg, T_ASC_PresentationContextID pid);
void dwb_commit_assoc_closed(dwb_assoc_ctx *ctx);
/* At shutdown: cancels pending commitment work and waits a moment for it. */
void dwb_commit_shutdown(void);
/* The DIMSE response builder (dwb_response.cc). */
/* "C-FIND", "C-MOVE", ... for logs and metrics; "DIMSE" for others. */
const char *dwb_command_name(T_DIMSE_Command c);
/* Puts comment into detail as the ErrorComment, cut to 64 characters (the LO limit) with "..." when longer;
 * false (nothing put) when comment is NULL or empty. The one place that cuts an ErrorComment. */
bool dwb_put_error_comment(DcmItem *detail, const char *comment);
/* Sends the response matching req's command (FIND/MOVE/GET/STORE) with a status and an ErrorComment
 * (dwb_put_error_comment). DIMSE_BADCOMMANDTYPE for other commands. */
OFCondition dwb_send_failure(dwb_assoc_ctx *ctx, T_DIMSE_Message *req, T_ASC_PresentationContextID pid,
                             unsigned short status, const char *comment);
bool dwb_request_has_dataset(const T_DIMSE_Message *msg);
/* Bounds for a request's data set (dwb_receive_dataset): an identifier is a few KiB; an N-ACTION of 4 MiB holds
 * about 35,000 references, which DCMTK parses in well under a second and about 60 MB. */
enum : size_t { DWB_IDENTIFIER_MAX_BYTES = 1u << 20, DWB_NACTION_MAX_BYTES = 4u << 20 };
/* Receives a request's data set as bytes (at most max_bytes kept, the rest read and dropped), refuses one nested
 * deeper than DWB_NESTING_MAX (dwb_nesting.h), then parses it. A bad condition is a network failure (the
 * caller aborts). Otherwise ds holds the data set, or is null with why filled (too large, too deep, does not
 * parse) and the association is still in step for the failure response; *too_large (when given) says the refusal
 * was the size. */
OFCondition dwb_receive_dataset(dwb_assoc_ctx *ctx, T_ASC_PresentationContextID pid, size_t max_bytes,
                                std::unique_ptr<DcmDataset> &ds, std::string &why, bool *too_large = nullptr);
/* Counts a final DIMSE response for /metrics. */
void dwb_count_response(const char *service, unsigned short status);
/* Answers a request whose service this build does not provide yet with a failure and an ErrorComment. */
OFCondition dwb_handle_unsupported(dwb_assoc_ctx *ctx, T_DIMSE_Message *msg, T_ASC_PresentationContextID pid);

#endif
