// DCMTK adapter for the DIMSE server: opens each upstream's store client, spool and uploader, maps the called AE
// title of an admitted association (dwb_listener.cc) to its upstream, negotiates presentation contexts and
// dispatches each request to its service (one dwb_<service>_scp.cc each).
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdict.h"
#include "dcmtk/dcmdata/dcuid.h"
#include "dcmtk/dcmdata/dcxfer.h"
#include "dcmtk/dcmnet/assoc.h"
#include "dcmtk/dcmnet/dimse.h"
#include "dcmtk/dcmnet/diutil.h"
#include "dcmtk/dcmnet/dul.h"
#include "dcmtk/oflog/oflog.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "dwb_assoc.hh"
#include "dwb_listener.hh"

extern "C" {
#include "dwb_gateway.h"
#include "dwb_server.h"
#include "dwb_idc.h"
#include "dwb_route.h"
}

struct dwb_server {
    const dwb_config *cfg = nullptr;
    dwb_listener *listener = nullptr;
    std::vector<dwb_upstream *> upstreams; // same order as cfg->upstreams
    std::vector<dwb_spool *> spools;       // same order; NULL where the spool could not be opened
    std::vector<dwb_uploader *> uploaders;
    dwb_gateway *gateway = nullptr;
    dwb_activity *activity = nullptr;      // transfers and commitment jobs, for the console
    dwb_router router;                    // used when cfg->n_routes > 0
    std::atomic<int> stop_level{0};       // 1 = drain, 2 = cancel in-flight work
    std::atomic<bool> cancel_all{false};
};

namespace {

// Transfer syntaxes for query/retrieve and verification contexts, in order of preference.
const char *const kNonStorageSyntaxes[] = {UID_LittleEndianExplicitTransferSyntax,
                                           UID_LittleEndianImplicitTransferSyntax,
                                           UID_BigEndianExplicitTransferSyntax};

const char *const kQueryRetrieveClasses[] = {
    UID_FINDPatientRootQueryRetrieveInformationModel, UID_FINDStudyRootQueryRetrieveInformationModel,
    UID_MOVEPatientRootQueryRetrieveInformationModel, UID_MOVEStudyRootQueryRetrieveInformationModel,
    UID_GETPatientRootQueryRetrieveInformationModel,  UID_GETStudyRootQueryRetrieveInformationModel,
};

// Accepts storage contexts with the first proposed transfer syntax DCMTK knows, keeping the proposed role so
// that a C-GET requester (which proposes the SCP role for storage) can receive its sub-operations.
void accept_storage_contexts(T_ASC_Parameters *params) {
    int n = ASC_countPresentationContexts(params);
    for (int i = 0; i < n; i++) {
        T_ASC_PresentationContext pc;
        if (ASC_getPresentationContext(params, i, &pc).bad()) continue;
        if (pc.resultReason == ASC_P_ACCEPTANCE) continue;
        if (!dcmIsaStorageSOPClassUID(pc.abstractSyntax, ESSC_All)) continue;
        // The SCU's order, except that big endian (retired, badly supported by stores) is taken only when it is
        // the only syntax the bridge knows in this context.
        const char *pick = nullptr, *big = nullptr;
        for (int t = 0; t < pc.transferSyntaxCount && !pick; t++) {
            DcmXfer xf(pc.proposedTransferSyntaxes[t]);
            // Deflated data sets are not taken: their nesting cannot be checked before DCMTK inflates and parses
            // them (dwb_nesting.h).
            if (xf.getXfer() == EXS_Unknown || xf.getXfer() == EXS_DeflatedLittleEndianExplicit) continue;
            if (xf.getXfer() == EXS_BigEndianExplicit) {
                if (!big) big = pc.proposedTransferSyntaxes[t];
                continue;
            }
            pick = pc.proposedTransferSyntaxes[t];
        }
        if (!pick) pick = big;
        if (!pick) continue;
        T_ASC_SC_ROLE role = ASC_SC_ROLE_DEFAULT;
        if (pc.proposedRole == ASC_SC_ROLE_SCP || pc.proposedRole == ASC_SC_ROLE_SCUSCP) role = pc.proposedRole;
        ASC_acceptPresentationContext(params, pc.presentationContextID, pick, role);
    }
}

int count_accepted(T_ASC_Parameters *params) { return ASC_countAcceptedPresentationContexts(params); }

void serve_association(dwb_server *srv, dwb_assoc_ctx *ctx) {
    T_ASC_Association *assoc = ctx->assoc;
    OFCondition cond = ASC_acknowledgeAssociation(assoc);
    if (cond.bad()) {
        DWB_WARN(&ctx->log, "association acknowledge failed: %s", cond.text());
        ASC_dropSCPAssociation(assoc);
        ASC_destroyAssociation(&assoc);
        return;
    }
    DWB_INFO(&ctx->log, "association accepted: %s -> %s, %d presentation context(s)", ctx->calling, ctx->called,
             count_accepted(assoc->params));
    int idle_s = 0;
    for (;;) {
        T_DIMSE_Message msg;
        T_ASC_PresentationContextID pid = 0;
        dwb_commit_poll(ctx);
        cond = DIMSE_receiveCommand(assoc, DIMSE_NONBLOCKING, 1, &pid, &msg, nullptr);
        if (cond == DIMSE_NODATAAVAILABLE) {
            idle_s++;
            if (srv->stop_level.load() > 0) {
                DWB_INFO(&ctx->log, "shutting down: aborting idle association");
                ASC_abortAssociation(assoc);
                break;
            }
            if (ctx->cfg->listen.dimse_timeout_s > 0 && idle_s >= ctx->cfg->listen.dimse_timeout_s) {
                DWB_INFO(&ctx->log, "no request for %d s (listen.dimse_timeout_s): aborting association", idle_s);
                ASC_abortAssociation(assoc);
                break;
            }
            continue;
        }
        idle_s = 0;
        if (cond == DUL_PEERREQUESTEDRELEASE) {
            ASC_acknowledgeRelease(assoc);
            DWB_DEBUG(&ctx->log, "association released after %lu request(s)", ctx->n_requests);
            break;
        }
        if (cond == DUL_PEERABORTEDASSOCIATION) {
            DWB_INFO(&ctx->log, "peer aborted the association");
            break;
        }
        if (cond.bad()) {
            DWB_WARN(&ctx->log, "receiving a command failed: %s; aborting association", cond.text());
            ASC_abortAssociation(assoc);
            break;
        }
        ctx->n_requests++;
        switch (msg.CommandField) {
        case DIMSE_C_ECHO_RQ: cond = dwb_handle_echo(ctx, &msg, pid); break;
        case DIMSE_C_FIND_RQ: cond = dwb_handle_find(ctx, &msg, pid); break;
        case DIMSE_C_STORE_RQ: cond = dwb_handle_store(ctx, &msg, pid); break;
        case DIMSE_C_MOVE_RQ:
        case DIMSE_C_GET_RQ: cond = dwb_handle_move_get(ctx, &msg, pid); break;
        case DIMSE_N_ACTION_RQ: cond = dwb_handle_naction(ctx, &msg, pid); break;
        case DIMSE_N_EVENT_REPORT_RSP: cond = dwb_commit_answered(ctx, &msg, pid); break;
        case DIMSE_C_CANCEL_RQ:
            // A cancel outside an operation refers to nothing: ignore, as PS3.7 allows.
            DWB_DEBUG(&ctx->log, "C-CANCEL outside an operation ignored");
            cond = EC_Normal;
            break;
        default: cond = dwb_handle_unsupported(ctx, &msg, pid); break;
        }
        if (cond.bad()) {
            DWB_WARN(&ctx->log, "%s failed on the network: %s; aborting association",
                     dwb_command_name(msg.CommandField), cond.text());
            ASC_abortAssociation(assoc);
            break;
        }
    }
    dwb_commit_assoc_closed(ctx);
    ASC_dropSCPAssociation(assoc);
    ASC_destroyAssociation(&assoc);
}

// The listener's serve function, in the association's worker thread: called AE title, presentation contexts,
// listen.max_associations, then the requests until release.
void serve_admitted(void *ud, dwb_admitted *a) {
    dwb_server *srv = static_cast<dwb_server *>(ud);
    const dwb_config *cfg = srv->cfg;
    T_ASC_Association *assoc = a->assoc;
    std::unique_ptr<dwb_assoc_ctx> ctx(new dwb_assoc_ctx());
    ctx->assoc = assoc;
    ctx->cfg = cfg;
    ctx->activity = srv->activity;
    ctx->cancel_all = &srv->cancel_all;
    OFStandard::strlcpy(ctx->calling, a->calling, sizeof ctx->calling);
    OFStandard::strlcpy(ctx->called, a->called, sizeof ctx->called);
    snprintf(ctx->peer, sizeof ctx->peer, "%s@%s", ctx->calling, a->host);
    OFStandard::strlcpy(ctx->id, a->id, sizeof ctx->id);
    ctx->log.assoc = ctx->id;
    ctx->log.peer = ctx->peer;

    char own[DWB_AE_MAX + 1];
    dwb_trim_ae(cfg->listen.ae_title, own);
    const dwb_upstream *up = nullptr;
    for (size_t i = 0; i < cfg->n_upstreams; i++) {
        char t[DWB_AE_MAX + 1];
        dwb_trim_ae(cfg->upstreams[i].ae_title, t);
        if (strcmp(t, ctx->called) == 0) {
            up = srv->upstreams[i];
            ctx->spool = srv->spools[i];
            ctx->uploader = srv->uploaders[i];
        }
    }
    if (cfg->n_routes > 0) {
        char routing[DWB_AE_MAX + 1];
        dwb_trim_ae(cfg->routing_ae_title, routing);
        if (strcmp(routing, ctx->called) == 0) ctx->router = &srv->router;
    }
    if (!up && !ctx->router && strcmp(own, ctx->called) != 0) {
        DWB_WARN(&ctx->log, "association rejected: called AE title '%s' is not an upstream of this bridge", ctx->called);
        dwb_reject(assoc, ASC_RESULT_REJECTEDPERMANENT, ASC_SOURCE_SERVICEUSER, ASC_REASON_SU_CALLEDAETITLENOTRECOGNIZED);
        return;
    }
    ctx->upstream = up;
    if (up) ctx->log.upstream = up->conf->ae_title;

    const char *verification[] = {UID_VerificationSOPClass};
    ASC_acceptContextsWithPreferredTransferSyntaxes(assoc->params, verification, 1, (const char **)kNonStorageSyntaxes, 3);
    if (up) {
        ASC_acceptContextsWithPreferredTransferSyntaxes(assoc->params, (const char **)kQueryRetrieveClasses,
                                                        (int)(sizeof kQueryRetrieveClasses / sizeof kQueryRetrieveClasses[0]),
                                                        (const char **)kNonStorageSyntaxes, 3);
        accept_storage_contexts(assoc->params);
        const char *commitment[] = {UID_StorageCommitmentPushModelSOPClass};
        ASC_acceptContextsWithPreferredTransferSyntaxes(assoc->params, commitment, 1, (const char **)kNonStorageSyntaxes,
                                                        3);
    } else if (ctx->router) {
        accept_storage_contexts(assoc->params); // C-STORE only: the instance's upstreams are chosen by routes[]
    }
    if (count_accepted(assoc->params) == 0) {
        DWB_WARN(&ctx->log, "association rejected: none of the proposed presentation contexts is supported%s",
                 up ? "" : " (the bridge's own AE title offers Verification only)");
        dwb_reject(assoc, ASC_RESULT_REJECTEDPERMANENT, ASC_SOURCE_SERVICEUSER, ASC_REASON_SU_NOREASON);
        return;
    }
    int active = 0, from_host = 0;
    if (!dwb_listener_enter(srv->listener, a->host, &active, &from_host)) {
        if (active >= cfg->listen.max_associations)
            DWB_WARN(&ctx->log, "association rejected (transient): %d associations already active (listen.max_associations)",
                     active);
        else
            DWB_WARN(&ctx->log, "association rejected (transient): %d associations already active from %s "
                     "(listen.max_associations_per_host)", from_host, a->host);
        dwb_reject(assoc, ASC_RESULT_REJECTEDTRANSIENT, ASC_SOURCE_SERVICEPROVIDER_PRESENTATION_RELATED,
                   ASC_REASON_SP_PRES_LOCALLIMITEXCEEDED);
        return;
    }
    serve_association(srv, ctx.get());
    dwb_listener_leave(srv->listener, a->host);
}

} // namespace

extern "C" dwb_status dwb_server_new(const dwb_config *cfg, dwb_server **out, dwb_error *err) {
    *out = nullptr;
    if (!dcmDataDict.isDictionaryLoaded())
        return dwb_error_set(err, DWB_E_INTERNAL,
                             "the DICOM data dictionary is not loaded (is DCMDICTPATH set to a missing file?)");
    // DCMTK's own logger would print to stdout in its format; the bridge logs DIMSE events itself.
    OFLog::configure(dwb_log_enabled(DWB_LOG_TRACE) ? OFLogger::DEBUG_LOG_LEVEL : OFLogger::ERROR_LOG_LEVEL);
    dcmDisableGethostbyaddr.set(OFTrue); // peers are logged by address; reverse DNS would stall accepts
    dwb_server *srv = new (std::nothrow) dwb_server;
    if (!srv) return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    srv->cfg = cfg;
    srv->activity = dwb_activity_new(50);
    for (size_t i = 0; i < cfg->n_upstreams; i++) {
        dwb_upstream *up = nullptr;
        dwb_status st = dwb_upstream_new(&cfg->upstreams[i], &up, err);
        if (st != DWB_OK) {
            dwb_error_prefix(err, "upstream %s", cfg->upstreams[i].ae_title);
            dwb_server_free(srv);
            return st;
        }
        srv->upstreams.push_back(up);
        // IDC: the series index and the bucket client, when the upstream names both (issue 16).
        if ((st = dwb_idc_attach(up, cfg->retrieve.parallel_objects, err)) != DWB_OK) {
            dwb_server_free(srv);
            return st;
        }
        // C-STORE needs the spool; the other services work without it, so a bad spool is a warning here and
        // an Out of Resources answer to C-STORE later.
        dwb_spool *sp = nullptr;
        dwb_uploader *ul = nullptr;
        dwb_error se = {};
        if (dwb_spool_open(cfg->spool.dir, cfg->upstreams[i].ae_title, &sp, &se) != DWB_OK) {
            DWB_WARN(nullptr, "upstream %s: C-STORE disabled: %s", cfg->upstreams[i].ae_title, se.message);
        } else if (dwb_uploader_start(up, sp, &ul, &se) != DWB_OK) {
            DWB_WARN(nullptr, "upstream %s: C-STORE disabled: %s", cfg->upstreams[i].ae_title, se.message);
            dwb_spool_close(sp);
            sp = nullptr;
        }
        srv->spools.push_back(sp);
        srv->uploaders.push_back(ul);
    }
    if (cfg->n_routes > 0) {
        // Routed instances are received into a staging directory beside the upstreams' spools (one file system,
        // so that they can be hard-linked into each). Its leftovers were never acknowledged: opening removes them.
        srv->router.cfg = cfg;
        srv->router.spools = srv->spools.data();
        srv->router.uploaders = srv->uploaders.data();
        for (size_t i = 0; i < cfg->n_routes; i++) {
            std::vector<uint32_t> t(dwb_route_filter_tags(cfg->routes[i].keys, nullptr, 0));
            dwb_route_filter_tags(cfg->routes[i].keys, t.data(), t.size());
            for (uint32_t tag : t)
                if (std::find(srv->router.tags.begin(), srv->router.tags.end(), tag) == srv->router.tags.end())
                    srv->router.tags.push_back(tag);
        }
        dwb_error se = {};
        if (dwb_spool_open(cfg->spool.dir, ".routing", &srv->router.staging, &se) != DWB_OK)
            DWB_WARN(nullptr, "routing AE title %s: C-STORE disabled: %s", cfg->routing_ae_title, se.message);
        else
            DWB_INFO(nullptr, "C-STOREs to %s are routed by %zu route(s), route_to %s", cfg->routing_ae_title,
                     cfg->n_routes, cfg->route_to_all ? "all" : "first");
    }
    if (cfg->gateway.port > 0) {
        dwb_error ge = {};
        if (dwb_gateway_start(cfg, srv->upstreams.data(), srv->spools.data(), srv->uploaders.data(), srv->upstreams.size(),
                              &srv->gateway, &ge) != DWB_OK) {
            dwb_status st = dwb_error_set(err, ge.status, "%s", ge.message);
            dwb_server_free(srv);
            return st;
        }
        DWB_INFO(nullptr, "DICOMweb gateway on http://%s:%d/dicom-web/<upstream AE title>", cfg->gateway.bind,
                 cfg->gateway.port);
    }
    DcmTransportLayer *tls = nullptr;
    if (cfg->listen.tls_certificate) {
        std::string why;
        tls = dwb_tls_layer(NET_ACCEPTOR, cfg->listen.tls_certificate, cfg->listen.tls_key, cfg->listen.tls_ca,
                            cfg->listen.tls_require_client_certificate, why);
        if (!tls) {
            dwb_status st = dwb_error_set(err, DWB_E_INVALID, "listen.tls: %s", why.c_str());
            dwb_server_free(srv);
            return st;
        }
        DWB_INFO(nullptr, "DIMSE over TLS (BCP 195 profile)%s", cfg->listen.tls_require_client_certificate
                                                                    ? ", client certificates required"
                                                                    : "");
    }
    dwb_status st = dwb_listener_new(cfg, tls, &srv->listener, err);
    if (st != DWB_OK) {
        dwb_server_free(srv);
        return st;
    }
    *out = srv;
    return DWB_OK;
}

extern "C" size_t dwb_server_stores(dwb_server *srv, dwb_upstream *const **upstreams, dwb_spool *const **spools) {
    *upstreams = srv->upstreams.data();
    *spools = srv->spools.data();
    return srv->upstreams.size();
}

extern "C" void dwb_server_request_stop(dwb_server *srv) {
    // Only atomics here: this runs in a signal handler.
    int lvl = srv->stop_level.fetch_add(1) + 1;
    if (lvl >= 2) srv->cancel_all.store(true);
}

extern "C" dwb_status dwb_server_run(dwb_server *srv, dwb_error *err) {
    const dwb_config *cfg = srv->cfg;
    DWB_INFO(nullptr, "listening on port %d as %s; %zu upstream AE title(s), max %d associations, max %d negotiating",
             cfg->listen.port, cfg->listen.ae_title, cfg->n_upstreams, cfg->listen.max_associations,
             cfg->listen.max_pending);
    dwb_listener_run(srv->listener, &srv->stop_level, serve_admitted, srv);
    DWB_INFO(nullptr, "stopped");
    (void)err;
    return DWB_OK;
}

extern "C" dwb_uploader *const *dwb_server_uploaders(dwb_server *srv) { return srv->uploaders.data(); }

extern "C" dwb_activity *dwb_server_activity(dwb_server *srv) { return srv->activity; }

extern "C" void dwb_server_free(dwb_server *srv) {
    if (!srv) return;
    dwb_gateway_stop(srv->gateway);
    dwb_listener_free(srv->listener);
    dwb_commit_shutdown();
    // Uploaders first: they use the upstreams' HTTP clients. Spooled files stay for the next start.
    for (dwb_uploader *u : srv->uploaders) dwb_uploader_stop(u);
    for (dwb_spool *sp : srv->spools) dwb_spool_close(sp);
    dwb_spool_close(srv->router.staging);
    for (dwb_upstream *up : srv->upstreams) dwb_upstream_free(up);
    dwb_activity_free(srv->activity);
    delete srv;
}
