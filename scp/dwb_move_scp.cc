// DCMTK adapter for C-MOVE and C-GET: decodes the identifier, resolves it (dicomweb/dwb_retrieve.c), looks up the
// move destination, and hands the plan to the sender (scu/dwb_send.h), which fetches, stamps and sends. This file
// keeps what belongs to the requesting association: C-CANCEL, pending responses with sub-operation counts, and
// the final response with the failed SOP Instance UID list.
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcuid.h"
#include "dcmtk/dcmnet/dimse.h"

#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "dwb_assoc.hh"
#include "dwb_dcmconv.hh"

extern "C" {
#include "dwb_http.h"
#include "dwb_metrics.h"
#include "dwb_retrieve.h"
#include "dwb_send.h"
}

namespace {

// Sub-operation counts are US (16 bits): a study of more than 65,535 instances reports the maximum, not the
// count modulo 65,536.
DIC_US count16(size_t n) { return n > 0xFFFF ? (DIC_US)0xFFFF : (DIC_US)n; }

// One C-MOVE or C-GET request, as the requesting association sees it.
struct Run {
    dwb_assoc_ctx *ctx;
    T_ASC_PresentationContextID pid;
    T_DIMSE_Message *req;
    bool is_move;
    dwb_send_totals t = {};
    std::vector<std::string> failed_uids;
    bool cancelled = false;
    OFCondition net = EC_Normal; // failure towards the requesting SCU
    std::chrono::steady_clock::time_point last_pending;
    size_t done_at_pending = 0; // sub-operations done when the last pending response went out
};

DIC_US msg_id(const Run &r) { return r.is_move ? r.req->msg.CMoveRQ.MessageID : r.req->msg.CGetRQ.MessageID; }
const char *sop_class(const Run &r) {
    return r.is_move ? r.req->msg.CMoveRQ.AffectedSOPClassUID : r.req->msg.CGetRQ.AffectedSOPClassUID;
}

OFCondition send_rsp(Run &r, DIC_US status, bool final, const char *comment) {
    T_DIMSE_Message rsp;
    memset(&rsp, 0, sizeof rsp);
    const dwb_send_totals &t = r.t;
    size_t remaining = t.total - t.completed - t.failed - t.warning;
    if (final) {
        const char *svc = r.is_move ? "C-MOVE" : "C-GET";
        dwb_count_response(svc, status);
        char labels[80];
        snprintf(labels, sizeof labels, "service=\"%s\",result=\"completed\"", svc);
        dwb_metrics_add("dwb_suboperations_total", labels, (double)t.completed);
        snprintf(labels, sizeof labels, "service=\"%s\",result=\"failed\"", svc);
        dwb_metrics_add("dwb_suboperations_total", labels, (double)t.failed);
        snprintf(labels, sizeof labels, "service=\"%s\",result=\"warning\"", svc);
        dwb_metrics_add("dwb_suboperations_total", labels, (double)t.warning);
    }
    bool with_remaining = !final || status == STATUS_MOVE_Cancel_SubOperationsTerminatedDueToCancelIndication;
    bool with_list = final && !r.failed_uids.empty() && status != 0;
    if (r.is_move) {
        rsp.CommandField = DIMSE_C_MOVE_RSP;
        T_DIMSE_C_MoveRSP &m = rsp.msg.CMoveRSP;
        m.MessageIDBeingRespondedTo = msg_id(r);
        OFStandard::strlcpy(m.AffectedSOPClassUID, sop_class(r), sizeof m.AffectedSOPClassUID);
        m.DimseStatus = status;
        m.NumberOfRemainingSubOperations = count16(remaining);
        m.NumberOfCompletedSubOperations = count16(t.completed);
        m.NumberOfFailedSubOperations = count16(t.failed);
        m.NumberOfWarningSubOperations = count16(t.warning);
        m.opts = O_MOVE_AFFECTEDSOPCLASSUID | O_MOVE_NUMBEROFCOMPLETEDSUBOPERATIONS | O_MOVE_NUMBEROFFAILEDSUBOPERATIONS |
                 O_MOVE_NUMBEROFWARNINGSUBOPERATIONS | (with_remaining ? O_MOVE_NUMBEROFREMAININGSUBOPERATIONS : 0);
        m.DataSetType = with_list ? DIMSE_DATASET_PRESENT : DIMSE_DATASET_NULL;
    } else {
        rsp.CommandField = DIMSE_C_GET_RSP;
        T_DIMSE_C_GetRSP &m = rsp.msg.CGetRSP;
        m.MessageIDBeingRespondedTo = msg_id(r);
        OFStandard::strlcpy(m.AffectedSOPClassUID, sop_class(r), sizeof m.AffectedSOPClassUID);
        m.DimseStatus = status;
        m.NumberOfRemainingSubOperations = count16(remaining);
        m.NumberOfCompletedSubOperations = count16(t.completed);
        m.NumberOfFailedSubOperations = count16(t.failed);
        m.NumberOfWarningSubOperations = count16(t.warning);
        m.opts = O_GET_AFFECTEDSOPCLASSUID | O_GET_NUMBEROFCOMPLETEDSUBOPERATIONS | O_GET_NUMBEROFFAILEDSUBOPERATIONS |
                 O_GET_NUMBEROFWARNINGSUBOPERATIONS | (with_remaining ? O_GET_NUMBEROFREMAININGSUBOPERATIONS : 0);
        m.DataSetType = with_list ? DIMSE_DATASET_PRESENT : DIMSE_DATASET_NULL;
    }
    DcmDataset detail, data;
    bool with_detail = dwb_put_error_comment(&detail, comment);
    if (with_list) {
        std::string list;
        for (size_t i = 0; i < r.failed_uids.size(); i++) {
            if (i) list += '\\';
            list += r.failed_uids[i];
        }
        data.putAndInsertString(DCM_FailedSOPInstanceUIDList, list.c_str());
    }
    r.last_pending = std::chrono::steady_clock::now();
    r.done_at_pending = t.completed + t.failed + t.warning;
    return DIMSE_sendMessageUsingMemoryData(r.ctx->assoc, r.pid, &rsp, with_detail ? &detail : nullptr,
                                            with_list ? &data : nullptr, nullptr, nullptr);
}


// Sink of the sender: a pending response after 10 sub-operations or a second, whichever comes first.
int on_progress(void *ud, const dwb_send_totals *t) {
    Run &r = *static_cast<Run *>(ud);
    r.t = *t;
    if (r.net.bad()) return 1;
    size_t done = t->completed + t->failed + t->warning;
    auto now = std::chrono::steady_clock::now();
    if (done - r.done_at_pending >= 10 || now - r.last_pending >= std::chrono::seconds(1))
        r.net = send_rsp(r, STATUS_Pending, false, nullptr);
    return r.net.bad() ? 1 : 0;
}

void on_failed(void *ud, const char *sop, const char *why) {
    Run &r = *static_cast<Run *>(ud);
    if (*sop && r.failed_uids.size() < 10000) r.failed_uids.push_back(sop);
}

int check_cancel(void *ud) {
    Run &r = *static_cast<Run *>(ud);
    if (r.cancelled || r.net.bad()) return 1;
    if (r.ctx->cancel_all && r.ctx->cancel_all->load()) return r.cancelled = true, 1;
    OFCondition c = DIMSE_checkForCancelRQ(r.ctx->assoc, r.pid, msg_id(r));
    if (c.good()) {
        DWB_INFO(&r.ctx->log, "%s: C-CANCEL received", r.is_move ? "C-MOVE" : "C-GET");
        r.cancelled = true;
    } else if (c != DIMSE_NODATAAVAILABLE) {
        r.net = c;
    }
    return r.cancelled || r.net.bad() ? 1 : 0;
}

} // namespace

OFCondition dwb_handle_move_get(dwb_assoc_ctx *ctx, T_DIMSE_Message *msg, T_ASC_PresentationContextID pid) {
    Run r;
    r.ctx = ctx;
    r.pid = pid;
    r.req = msg;
    r.is_move = msg->CommandField == DIMSE_C_MOVE_RQ;
    const char *name = r.is_move ? "C-MOVE" : "C-GET";
    std::unique_ptr<DcmDataset> ident;
    std::string why;
    OFCondition cond = dwb_receive_dataset(ctx, pid, DWB_IDENTIFIER_MAX_BYTES, ident, why);
    if (cond.bad()) return cond;
    if (!ident) {
        DWB_WARN(&ctx->log, "%s: identifier refused: %s", name, why.c_str());
        return send_rsp(r, STATUS_MOVE_Failed_IdentifierDoesNotMatchSOPClass, true, why.c_str());
    }
    if (!ctx->upstream) return send_rsp(r, STATUS_MOVE_Failed_UnableToProcess, true, "needs an upstream AE title as called AE");
    const char *cls = sop_class(r);
    dwb_qr_model model = (!strcmp(cls, UID_MOVEPatientRootQueryRetrieveInformationModel) ||
                          !strcmp(cls, UID_GETPatientRootQueryRetrieveInformationModel))
                             ? DWB_QR_PATIENT_ROOT
                             : DWB_QR_STUDY_ROOT;
    const dwb_destination_conf *dest = nullptr;
    if (r.is_move) {
        dest = dwb_config_find_destination(ctx->cfg, msg->msg.CMoveRQ.MoveDestination);
        if (!dest) {
            DWB_WARN(&ctx->log, "C-MOVE: move destination '%s' is not in destinations[]", msg->msg.CMoveRQ.MoveDestination);
            return send_rsp(r, STATUS_MOVE_Failed_MoveDestinationUnknown, true, "move destination unknown");
        }
        if (dest->stow_url) {
            DWB_WARN(&ctx->log, "C-MOVE: destination %s is a STOW-RS destination, used by import only", dest->ae_title);
            return send_rsp(r, STATUS_MOVE_Failed_UnableToProcess, true, "destination is STOW-RS (import only)");
        }
    }
    dwb_attrs *id = dwb_attrs_new();
    dwb_error err = {};
    if (!id) return send_rsp(r, STATUS_MOVE_Refused_OutOfResourcesNumberOfMatches, true, "out of memory");
    if (dwb_dcm_to_attrs(ident.get(), id, &err) != DWB_OK) {
        dwb_attrs_free(id);
        return send_rsp(r, STATUS_MOVE_Failed_IdentifierDoesNotMatchSOPClass, true, err.message);
    }
    auto t0 = std::chrono::steady_clock::now();
    dwb_rplan *plan = nullptr;
    dwb_status st = dwb_retrieve_resolve(ctx->upstream, model, id, &ctx->log, check_cancel, &r, &plan, &err);
    dwb_attrs_free(id);
    if (r.net.bad()) return r.net;
    if (st != DWB_OK) {
        if (st == DWB_E_CANCELLED || r.cancelled) return send_rsp(r, STATUS_MOVE_Cancel_SubOperationsTerminatedDueToCancelIndication, true, nullptr);
        DWB_WARN(&ctx->log, "%s: cannot resolve the identifier: %s", name, err.message);
        DIC_US status = st == DWB_E_INVALID ? STATUS_MOVE_Failed_IdentifierDoesNotMatchSOPClass
                        : (err.http_code >= 400 && err.http_code < 500) ? STATUS_MOVE_Failed_UnableToProcess
                                                                        : STATUS_MOVE_Refused_OutOfResourcesNumberOfMatches;
        std::string comment = st == DWB_E_INVALID ? err.message : (err.http_code ? "store HTTP " + std::to_string(err.http_code) : std::string("store unreachable"));
        if (st == DWB_E_LIMIT && err.http_code == 429) { // IDC proxy quota (issue 16): out of resources until 00:00 UTC
            status = STATUS_MOVE_Refused_OutOfResourcesSubOperations;
            comment = DWB_HTTP_QUOTA_COMMENT;
        }
        return send_rsp(r, status, true, comment.c_str());
    }
    r.t.total = plan->total;
    plan->max_attempts = ctx->cfg->retrieve.max_attempts;
    if (dest && dest->transfer_syntax) snprintf(plan->transfer_syntax, sizeof plan->transfer_syntax, "%s", dest->transfer_syntax);
    DWB_INFO(&ctx->log, "%s: %zu instance(s) in %zu series to %s", name, plan->total, plan->n_series,
             r.is_move ? dest->ae_title : ctx->calling);
    if (r.t.total == 0) {
        dwb_rplan_free(plan);
        return send_rsp(r, STATUS_Success, true, nullptr);
    }
    r.net = send_rsp(r, STATUS_Pending, false, nullptr);
    if (r.net.bad()) {
        dwb_rplan_free(plan);
        return r.net;
    }
    dwb_dimse_link requester = {ctx->assoc};
    dwb_send_opts o = {};
    o.cfg = ctx->cfg;
    o.up = ctx->upstream;
    o.dest = dest;
    o.requester = r.is_move ? nullptr : &requester;
    o.request_msg_id = msg_id(r);
    o.move_originator = r.is_move ? ctx->calling : nullptr;
    std::string burst_dir;
    if (r.is_move && dest->series_burst) {
        burst_dir = std::string(ctx->cfg->spool.dir) + "/burst-" + ctx->id + "-" + std::to_string(msg_id(r));
        o.burst_dir = burst_dir.c_str();
    }
    o.log = &ctx->log;
    o.service = name;
    o.activity = ctx->activity;
    dwb_send_sink sink = {on_progress, on_failed, nullptr, check_cancel, &r};
    dwb_send_totals t = {};
    st = dwb_send_run(&o, plan, &sink, &t, &err);
    if (st == DWB_E_IO && o.burst_dir) {
        DWB_WARN(&ctx->log, "C-MOVE: %s: sending without series bursts", err.message);
        o.burst_dir = nullptr;
        st = dwb_send_run(&o, plan, &sink, &t, &err);
    }
    if (st == DWB_E_CONNECT || st == DWB_E_LIMIT) {
        DWB_WARN(&ctx->log, "C-MOVE: %s", err.message);
        // The Failed SOP Instance UID List names every instance: a series planned by count is listed now.
        for (size_t sx = 0; sx < plan->n_series; sx++) {
            dwb_error le = {};
            dwb_retrieve_list_series(ctx->upstream, &plan->series[sx], &ctx->log, &le);
            const char *u;
            for (size_t i = 0; (u = dwb_rseries_uid(&plan->series[sx], i)) != nullptr; i++)
                if (r.failed_uids.size() < 10000) r.failed_uids.push_back(u);
        }
        r.t.failed = r.t.total;
        dwb_rplan_free(plan);
        return send_rsp(r, STATUS_MOVE_Refused_OutOfResourcesSubOperations, true,
                        st == DWB_E_LIMIT ? "destination busy (max_associations)" : "destination unreachable");
    }
    dwb_rplan_free(plan);
    r.t = t;
    if (t.cancelled) r.cancelled = true;
    if (r.net.bad()) return r.net;
    long ms = (long)std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
    DIC_US status;
    const char *comment = nullptr;
    if (r.cancelled) {
        status = STATUS_MOVE_Cancel_SubOperationsTerminatedDueToCancelIndication;
    } else if (t.failed == 0 && t.warning == 0) {
        status = STATUS_Success;
    } else if (t.completed == 0 && t.warning == 0) {
        status = STATUS_MOVE_Refused_OutOfResourcesSubOperations;
        comment = t.dest_dead ? "destination failed" : "no instance could be sent";
    } else {
        status = STATUS_MOVE_Warning_SubOperationsCompleteOneOrMoreFailures;
    }
    DWB_INFO(&ctx->log, "%s finished 0x%04X: %zu completed, %zu failed, %zu warning of %zu in %ld ms (%zu sent as received)",
             name, status, t.completed, t.failed, t.warning, t.total, ms, t.as_received);
    return send_rsp(r, status, true, comment);
}
