// DCMTK adapter for the DIMSE responses every service shares: failure responses with an ErrorComment, the
// response counter for /metrics, and the answer to a command this build does not provide.
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmnet/dimse.h"

#include <cstdio>
#include <cstring>
#include <string>

#include "dwb_assoc.hh"

extern "C" {
#include "dwb_metrics.h"
}

const char *dwb_command_name(T_DIMSE_Command c) {
    switch (c) {
    case DIMSE_C_ECHO_RQ: return "C-ECHO";
    case DIMSE_C_FIND_RQ: return "C-FIND";
    case DIMSE_C_MOVE_RQ: return "C-MOVE";
    case DIMSE_C_GET_RQ: return "C-GET";
    case DIMSE_C_STORE_RQ: return "C-STORE";
    case DIMSE_C_CANCEL_RQ: return "C-CANCEL";
    case DIMSE_N_ACTION_RQ: return "N-ACTION";
    default: return "DIMSE";
    }
}

bool dwb_put_error_comment(DcmItem *detail, const char *comment) {
    if (!comment || !*comment) return false;
    // ErrorComment is LO: at most 64 characters; a longer one is cut and says so.
    std::string c(comment);
    if (c.size() > 64) c = c.substr(0, 61) + "...";
    return detail->putAndInsertString(DCM_ErrorComment, c.c_str()).good();
}

void dwb_count_response(const char *service, unsigned short status) {
    char labels[96];
    snprintf(labels, sizeof labels, "service=\"%s\",status=\"0x%04X\"", service, status);
    dwb_metrics_add("dwb_dimse_requests_total", labels, 1);
}

OFCondition dwb_send_failure(dwb_assoc_ctx *ctx, T_DIMSE_Message *req, T_ASC_PresentationContextID pid,
                             unsigned short status, const char *comment) {
    dwb_count_response(dwb_command_name(req->CommandField), status);
    T_DIMSE_Message rsp;
    memset(&rsp, 0, sizeof rsp);
    switch (req->CommandField) {
    case DIMSE_C_FIND_RQ: {
        rsp.CommandField = DIMSE_C_FIND_RSP;
        T_DIMSE_C_FindRSP &r = rsp.msg.CFindRSP;
        r.MessageIDBeingRespondedTo = req->msg.CFindRQ.MessageID;
        OFStandard::strlcpy(r.AffectedSOPClassUID, req->msg.CFindRQ.AffectedSOPClassUID, sizeof r.AffectedSOPClassUID);
        r.opts = O_FIND_AFFECTEDSOPCLASSUID;
        r.DataSetType = DIMSE_DATASET_NULL;
        r.DimseStatus = status;
        break;
    }
    case DIMSE_C_MOVE_RQ: {
        rsp.CommandField = DIMSE_C_MOVE_RSP;
        T_DIMSE_C_MoveRSP &r = rsp.msg.CMoveRSP;
        r.MessageIDBeingRespondedTo = req->msg.CMoveRQ.MessageID;
        OFStandard::strlcpy(r.AffectedSOPClassUID, req->msg.CMoveRQ.AffectedSOPClassUID, sizeof r.AffectedSOPClassUID);
        r.opts = O_MOVE_AFFECTEDSOPCLASSUID;
        r.DataSetType = DIMSE_DATASET_NULL;
        r.DimseStatus = status;
        break;
    }
    case DIMSE_C_GET_RQ: {
        rsp.CommandField = DIMSE_C_GET_RSP;
        T_DIMSE_C_GetRSP &r = rsp.msg.CGetRSP;
        r.MessageIDBeingRespondedTo = req->msg.CGetRQ.MessageID;
        OFStandard::strlcpy(r.AffectedSOPClassUID, req->msg.CGetRQ.AffectedSOPClassUID, sizeof r.AffectedSOPClassUID);
        r.opts = O_GET_AFFECTEDSOPCLASSUID;
        r.DataSetType = DIMSE_DATASET_NULL;
        r.DimseStatus = status;
        break;
    }
    case DIMSE_C_STORE_RQ: {
        rsp.CommandField = DIMSE_C_STORE_RSP;
        T_DIMSE_C_StoreRSP &r = rsp.msg.CStoreRSP;
        r.MessageIDBeingRespondedTo = req->msg.CStoreRQ.MessageID;
        OFStandard::strlcpy(r.AffectedSOPClassUID, req->msg.CStoreRQ.AffectedSOPClassUID, sizeof r.AffectedSOPClassUID);
        OFStandard::strlcpy(r.AffectedSOPInstanceUID, req->msg.CStoreRQ.AffectedSOPInstanceUID,
                            sizeof r.AffectedSOPInstanceUID);
        r.opts = O_STORE_AFFECTEDSOPCLASSUID | O_STORE_AFFECTEDSOPINSTANCEUID;
        r.DataSetType = DIMSE_DATASET_NULL;
        r.DimseStatus = status;
        break;
    }
    default:
        // N-services and unknown commands: nothing sensible to answer on a Q/R or storage context.
        return DIMSE_BADCOMMANDTYPE;
    }
    DcmDataset detail;
    bool with_detail = dwb_put_error_comment(&detail, comment);
    return DIMSE_sendMessageUsingMemoryData(ctx->assoc, pid, &rsp, with_detail ? &detail : nullptr, nullptr, nullptr,
                                            nullptr);
}

bool dwb_request_has_dataset(const T_DIMSE_Message *msg) {
    switch (msg->CommandField) {
    case DIMSE_C_FIND_RQ: return msg->msg.CFindRQ.DataSetType != DIMSE_DATASET_NULL;
    case DIMSE_C_MOVE_RQ: return msg->msg.CMoveRQ.DataSetType != DIMSE_DATASET_NULL;
    case DIMSE_C_GET_RQ: return msg->msg.CGetRQ.DataSetType != DIMSE_DATASET_NULL;
    case DIMSE_C_STORE_RQ: return msg->msg.CStoreRQ.DataSetType != DIMSE_DATASET_NULL;
    default: return false;
    }
}

OFCondition dwb_handle_unsupported(dwb_assoc_ctx *ctx, T_DIMSE_Message *msg, T_ASC_PresentationContextID pid) {
    if (dwb_request_has_dataset(msg)) {
        // Read and drop the data set so that the association stays in step.
        // Dropped unparsed: DCMTK's reader is only ever given data sets whose nesting was checked.
        DIC_UL bytes = 0, pdvs = 0;
        OFCondition c = DIMSE_ignoreDataSet(ctx->assoc, dwb_peer_block(ctx), dwb_peer_timeout(ctx), &bytes, &pdvs);
        if (c.bad()) return c;
    }
    const char *name = dwb_command_name(msg->CommandField);
    DWB_WARN(&ctx->log, "%s is not available in this build of the bridge; answered failure 0xC000", name);
    char comment[64];
    snprintf(comment, sizeof comment, "%s not implemented by dicomweb-bridge yet", name);
    OFCondition c = dwb_send_failure(ctx, msg, pid, 0xC000, comment);
    if (c == DIMSE_BADCOMMANDTYPE)
        DWB_WARN(&ctx->log, "unexpected DIMSE command 0x%04x; aborting association", (unsigned)msg->CommandField);
    return c;
}
