// DCMTK adapter for C-FIND: reads the identifier, converts it to UTF-8 attributes, runs the QIDO engine
// (dwb_find.c) and sends each match as a pending response, watching for C-CANCEL between transfers.
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcuid.h"
#include "dcmtk/dcmnet/dimse.h"

#include <chrono>
#include <cstring>
#include <memory>
#include <string>

#include "dwb_assoc.hh"
#include "dwb_dcmconv.hh"

extern "C" {
#include "dwb_find.h"
}

namespace {

struct FindCall {
    dwb_assoc_ctx *ctx;
    T_ASC_PresentationContextID pid;
    const T_DIMSE_C_FindRQ *rq;
    std::string charset;
    OFCondition net = EC_Normal;
    bool cancelled = false;
};

OFCondition send_rsp(FindCall *fc, unsigned short status, DcmDataset *data, const char *comment) {
    T_DIMSE_Message rsp;
    memset(&rsp, 0, sizeof rsp);
    rsp.CommandField = DIMSE_C_FIND_RSP;
    T_DIMSE_C_FindRSP &r = rsp.msg.CFindRSP;
    r.MessageIDBeingRespondedTo = fc->rq->MessageID;
    OFStandard::strlcpy(r.AffectedSOPClassUID, fc->rq->AffectedSOPClassUID, sizeof r.AffectedSOPClassUID);
    r.opts = O_FIND_AFFECTEDSOPCLASSUID;
    r.DataSetType = data ? DIMSE_DATASET_PRESENT : DIMSE_DATASET_NULL;
    r.DimseStatus = status;
    if (!data) dwb_count_response("C-FIND", status);
    DcmDataset detail;
    bool with_detail = dwb_put_error_comment(&detail, comment);
    return DIMSE_sendMessageUsingMemoryData(fc->ctx->assoc, fc->pid, &rsp, with_detail ? &detail : nullptr, data,
                                            nullptr, nullptr);
}

int on_match(void *ud, const dwb_attrs *response) {
    FindCall *fc = static_cast<FindCall *>(ud);
    DcmDataset ds;
    dwb_error err = {};
    if (dwb_attrs_to_item(response, &ds, &err) != DWB_OK) {
        // One unconvertible store value must not end the query: log and skip this response.
        DWB_WARN(&fc->ctx->log, "C-FIND: skipped a response the bridge cannot encode: %s", err.message);
        return 0;
    }
    ds.putAndInsertString(DCM_SpecificCharacterSet, "ISO_IR 192");
    dwb_dcm_answer_charset(&ds, fc->charset);
    fc->net = send_rsp(fc, STATUS_FIND_Pending_MatchesAreContinuing, &ds, nullptr);
    return fc->net.bad() ? 1 : 0;
}

int is_cancelled(void *ud) {
    FindCall *fc = static_cast<FindCall *>(ud);
    if (fc->cancelled) return 1;
    if (fc->ctx->cancel_all && fc->ctx->cancel_all->load()) return fc->cancelled = true, 1;
    OFCondition c = DIMSE_checkForCancelRQ(fc->ctx->assoc, fc->pid, fc->rq->MessageID);
    if (c.good()) {
        DWB_INFO(&fc->ctx->log, "C-FIND: C-CANCEL received");
        fc->cancelled = true;
    } else if (c != DIMSE_NODATAAVAILABLE) {
        // Anything but silence while we answer is a protocol or network problem: stop the query.
        fc->net = c;
        fc->cancelled = true;
    }
    return fc->cancelled ? 1 : 0;
}

} // namespace

OFCondition dwb_handle_find(dwb_assoc_ctx *ctx, T_DIMSE_Message *msg, T_ASC_PresentationContextID pid) {
    const T_DIMSE_C_FindRQ &rq = msg->msg.CFindRQ;
    std::unique_ptr<DcmDataset> ident;
    std::string why;
    OFCondition cond = dwb_receive_dataset(ctx, pid, DWB_IDENTIFIER_MAX_BYTES, ident, why);
    if (cond.bad()) return cond;

    FindCall fc;
    fc.ctx = ctx;
    fc.pid = pid;
    fc.rq = &rq;
    if (!ident) {
        DWB_WARN(&ctx->log, "C-FIND: identifier refused: %s", why.c_str());
        return send_rsp(&fc, STATUS_FIND_Error_DataSetDoesNotMatchSOPClass, nullptr, why.c_str());
    }
    if (!ctx->upstream) return send_rsp(&fc, 0xC000, nullptr, "C-FIND needs an upstream AE title as called AE");

    dwb_qr_model model;
    if (strcmp(rq.AffectedSOPClassUID, UID_FINDPatientRootQueryRetrieveInformationModel) == 0)
        model = DWB_QR_PATIENT_ROOT;
    else if (strcmp(rq.AffectedSOPClassUID, UID_FINDStudyRootQueryRetrieveInformationModel) == 0)
        model = DWB_QR_STUDY_ROOT;
    else
        return send_rsp(&fc, STATUS_FIND_Refused_SOPClassNotSupported, nullptr, "SOP class not supported");

    OFString cs;
    ident->findAndGetOFStringArray(DCM_SpecificCharacterSet, cs);
    fc.charset = cs.c_str();
    dwb_error err = {};
    dwb_attrs *id = dwb_attrs_new();
    if (!id) return send_rsp(&fc, 0xA700, nullptr, "out of memory");
    if (dwb_dcm_to_attrs(ident.get(), id, &err) != DWB_OK) {
        DWB_WARN(&ctx->log, "C-FIND: identifier refused: %s", err.message);
        dwb_attrs_free(id);
        return send_rsp(&fc, STATUS_FIND_Error_DataSetDoesNotMatchSOPClass, nullptr, err.message);
    }

    auto t0 = std::chrono::steady_clock::now();
    dwb_find_callbacks cb = {on_match, is_cancelled, &fc};
    dwb_find_outcome out;
    memset(&out, 0, sizeof out);
    dwb_find_run(ctx->upstream, model, id, &ctx->log, &cb, &out);
    dwb_attrs_free(id);
    long ms = (long)std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
    if (fc.net.bad()) return fc.net;
    if (fc.cancelled && out.status == 0xFE00) {
        DWB_INFO(&ctx->log, "C-FIND cancelled after %lu match(es), %lu HTTP request(s), %ld ms", out.matches,
                 out.requests, ms);
    } else if (out.status == 0) {
        DWB_INFO(&ctx->log, "C-FIND: %lu match(es), %lu HTTP request(s), %ld ms", out.matches, out.requests, ms);
    } else {
        DWB_WARN(&ctx->log, "C-FIND failed with 0x%04X after %lu match(es), %ld ms: %s", out.status, out.matches, ms,
                 out.comment);
    }
    return send_rsp(&fc, out.status, nullptr, out.status == 0 || out.status == 0xFE00 ? nullptr : out.comment);
}
