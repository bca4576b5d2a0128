// DCMTK adapter for Storage Commitment Push Model (1.2.840.10008.1.20.1) on an upstream's AE title. An
// N-ACTION with a Referenced SOP Sequence is answered at once; a background job then decides each instance
// (spool/dwb_commit.c: ledger, queue, QIDO-RS) and the N-EVENT-REPORT goes on the same association while it is
// open (sent by the association's own thread, between requests), otherwise on a new association to the
// requester's AE title looked up in destinations[].
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcsequen.h"
#include "dcmtk/dcmdata/dcitem.h"
#include "dcmtk/dcmdata/dcuid.h"
#include "dcmtk/dcmnet/dimse.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "dwb_assoc.hh"

extern "C" {
#include "dwb_commit.h"
#include "dwb_deid.h"
#include "dwb_tags.h"
}

namespace {

const unsigned short kNoSuchObjectInstance = 0x0112;
const unsigned short kProcessingFailure = 0x0110;
const unsigned short kResourceLimitation = 0x0213;

// One N-ACTION's life. The association thread and the job's thread meet here under mu.
struct Job {
    std::mutex mu;
    std::condition_variable cv;
    bool ready = false;      // the result is known
    bool sent = false;       // the report was delivered (or given up)
    bool assoc_open = true;  // the requester's association is still there to carry it
    DIC_US report_id = 0;    // Message ID of the report sent on the requesting association, awaiting its answer
    std::string transaction_uid;
    std::vector<dwb_commit_ref> refs;
    const dwb_config *cfg = nullptr;
    const dwb_upstream *up = nullptr;
    dwb_spool *spool = nullptr;
    dwb_activity *activity = nullptr; // the console's registry, NULL = not shown
    const std::atomic<bool> *cancel_all = nullptr;
    std::string calling, called, assoc_id, peer;
};

// Jobs at once across the bridge: each issues up to one QIDO per 40 references; more requests are refused with
// Resource Limitation rather than queued without bound.
const int kMaxLiveJobs = 8;
std::atomic<int> g_live_jobs{0};
std::atomic<bool> g_shutdown{false};

int job_cancelled(void *ud) {
    Job *j = static_cast<Job *>(ud);
    return g_shutdown.load() || (j->cancel_all && j->cancel_all->load());
}

DcmDataset *event_info(const Job &j, unsigned short &event_type) {
    DcmDataset *ds = new DcmDataset;
    ds->putAndInsertString(DCM_TransactionUID, j.transaction_uid.c_str());
    bool failures = false;
    for (const dwb_commit_ref &r : j.refs) {
        bool ok = r.state == DWB_COMMIT_DONE;
        failures |= !ok;
        DcmItem *item = nullptr;
        if (ds->findOrCreateSequenceItem(ok ? DCM_ReferencedSOPSequence : DCM_FailedSOPSequence, item, -2).bad()) continue;
        item->putAndInsertString(DCM_ReferencedSOPClassUID, r.sop_class);
        item->putAndInsertString(DCM_ReferencedSOPInstanceUID, r.sop_uid);
        if (!ok)
            item->putAndInsertUint16(DCM_FailureReason,
                                     r.state == DWB_COMMIT_NO_SUCH ? kNoSuchObjectInstance : kProcessingFailure);
    }
    event_type = failures ? 2 : 1;
    return ds;
}

// Sends the N-EVENT-REPORT on assoc; *id is its Message ID.
bool send_report_rq(T_ASC_Association *assoc, T_ASC_PresentationContextID pid, const Job &j, DIC_US *id,
                    std::string &why) {
    unsigned short type = 1;
    std::unique_ptr<DcmDataset> info(event_info(j, type));
    T_DIMSE_Message req;
    memset(&req, 0, sizeof req);
    req.CommandField = DIMSE_N_EVENT_REPORT_RQ;
    T_DIMSE_N_EventReportRQ &r = req.msg.NEventReportRQ;
    r.MessageID = *id = assoc->nextMsgID++;
    OFStandard::strlcpy(r.AffectedSOPClassUID, UID_StorageCommitmentPushModelSOPClass, sizeof r.AffectedSOPClassUID);
    OFStandard::strlcpy(r.AffectedSOPInstanceUID, UID_StorageCommitmentPushModelSOPInstance,
                        sizeof r.AffectedSOPInstanceUID);
    r.EventTypeID = type;
    r.DataSetType = DIMSE_DATASET_PRESENT;
    OFCondition c = DIMSE_sendMessageUsingMemoryData(assoc, pid, &req, nullptr, info.get(), nullptr, nullptr);
    if (c.bad()) {
        why = std::string("sending N-EVENT-REPORT: ") + c.text();
        return false;
    }
    return true;
}

// Sends the N-EVENT-REPORT on an association of the bridge's own, which carries nothing else, and waits for its
// response.
bool send_report(T_ASC_Association *assoc, T_ASC_PresentationContextID pid, const Job &j, std::string &why) {
    DIC_US id = 0;
    if (!send_report_rq(assoc, pid, j, &id, why)) return false;
    T_DIMSE_Message rsp;
    T_ASC_PresentationContextID rpid = 0;
    OFCondition c = DIMSE_receiveCommand(assoc, DIMSE_NONBLOCKING, 30, &rpid, &rsp, nullptr);
    if (c.good() && rsp.CommandField == DIMSE_N_EVENT_REPORT_RSP &&
        rsp.msg.NEventReportRSP.DataSetType != DIMSE_DATASET_NULL) {
        DIC_UL bytes = 0, pdvs = 0;
        c = DIMSE_ignoreDataSet(assoc, DIMSE_NONBLOCKING, 30, &bytes, &pdvs);
    }
    if (c.bad() || rsp.CommandField != DIMSE_N_EVENT_REPORT_RSP ||
        rsp.msg.NEventReportRSP.MessageIDBeingRespondedTo != id) {
        why = std::string("no N-EVENT-REPORT response: ") + (c.bad() ? c.text() : "another command came");
        return false;
    }
    return true;
}

// A new association to the requester (destinations[] by its AE title), the bridge in the SCP role.
bool report_on_new_association(const Job &j, std::string &why) {
    const dwb_destination_conf *d = dwb_config_find_destination(j.cfg, j.calling.c_str());
    if (!d || !d->host) {
        why = "the requester " + j.calling + " is not in destinations[] (needed once its association is gone)";
        return false;
    }
    T_ASC_Network *net = nullptr;
    OFCondition c = ASC_initializeNetwork(NET_REQUESTOR, 0, j.cfg->listen.acse_timeout_s, &net);
    if (c.bad()) {
        why = std::string("network: ") + c.text();
        return false;
    }
    T_ASC_Parameters *params = nullptr;
    ASC_createAssociationParameters(&params, j.cfg->listen.max_pdu);
    const char *called = d->called_ae_title[0] ? d->called_ae_title : d->ae_title;
    ASC_setAPTitles(params, j.called.c_str(), called, nullptr);
    std::string peer = std::string(d->host) + ":" + std::to_string(d->port);
    ASC_setPresentationAddresses(params, "localhost", peer.c_str());
    const char *ts[] = {UID_LittleEndianExplicitTransferSyntax, UID_LittleEndianImplicitTransferSyntax};
    ASC_addPresentationContext(params, 1, UID_StorageCommitmentPushModelSOPClass, ts, 2, ASC_SC_ROLE_SCP);
    T_ASC_Association *assoc = nullptr;
    c = ASC_requestAssociation(net, params, &assoc);
    bool ok = false;
    if (c.bad()) {
        why = std::string("cannot associate with ") + called + "@" + peer + ": " + c.text();
        if (assoc) ASC_destroyAssociation(&assoc);
        else ASC_destroyAssociationParameters(&params);
    } else {
        T_ASC_PresentationContextID pid = ASC_findAcceptedPresentationContextID(assoc, UID_StorageCommitmentPushModelSOPClass);
        if (!pid) {
            why = std::string(called) + " accepted no Storage Commitment context";
            ASC_abortAssociation(assoc);
        } else {
            ok = send_report(assoc, pid, j, why);
            if (ok) ASC_releaseAssociation(assoc);
            else ASC_abortAssociation(assoc);
        }
        ASC_destroyAssociation(&assoc);
    }
    ASC_dropNetwork(&net);
    return ok;
}

void log_result(const Job &j, const char *how) {
    dwb_log_ctx lc = {j.assoc_id.c_str(), j.up->conf->ae_title, nullptr, j.peer.c_str()};
    size_t done = 0;
    for (const dwb_commit_ref &r : j.refs) done += r.state == DWB_COMMIT_DONE;
    DWB_INFO(&lc, "storage commitment %s: %zu of %zu committed, report %s", j.transaction_uid.c_str(), done,
             j.refs.size(), how);
}

void run_job(std::shared_ptr<Job> j) {
    dwb_log_ctx lc = {j->assoc_id.c_str(), j->up->conf->ae_title, nullptr, j->peer.c_str()};
    dwb_error err = {};
    unsigned long shown = dwb_activity_begin(j->activity, "commitment", j->peer.c_str(), j->up->conf->ae_title, "",
                                             j->refs.size());
    // A de-identifying upstream (deidentify) holds the instances under their new UIDs, the keyed hash of the ones
    // the requester sent and names here: the store is asked for those, the report names the requester's.
    std::vector<dwb_commit_ref> mapped(j->refs);
    const dwb_deid_profile *deid = j->up->conf->deid;
    if (deid && dwb_deid_decide(deid, DWB_TAG(0x0008, 0x0018)) == DWB_DO_UID)
        for (dwb_commit_ref &r : mapped) {
            char uid[65];
            dwb_error ue = {};
            if (dwb_deid_uid(deid->secret, deid->secret_len, r.sop_uid, uid, sizeof uid, &ue) == DWB_OK)
                snprintf(r.sop_uid, sizeof r.sop_uid, "%s", uid);
        }
    dwb_status st = dwb_commit_resolve(j->up->http, j->up->conf->base_url, j->spool, mapped.data(), mapped.size(),
                                       j->up->conf->commitment_timeout_s, job_cancelled, j.get(), &err);
    for (size_t i = 0; i < mapped.size(); i++) j->refs[i].state = mapped[i].state;
    size_t done = 0;
    for (const dwb_commit_ref &r : j->refs) done += r.state == DWB_COMMIT_DONE;
    dwb_activity_progress(j->activity, shown, j->refs.size(), done, j->refs.size() - done, 0, 0);
    dwb_activity_end(j->activity, shown, st == DWB_E_CANCELLED ? DWB_JOB_CANCELLED : DWB_JOB_DONE,
                     st != DWB_OK ? err.message : "");
    std::unique_lock<std::mutex> lk(j->mu);
    j->ready = true;
    j->cv.notify_all();
    // The association's thread sends it while the association lasts; otherwise this thread does.
    j->cv.wait(lk, [&] { return j->sent || !j->assoc_open; });
    if (!j->sent && !job_cancelled(j.get())) {
        lk.unlock();
        std::string why;
        if (report_on_new_association(*j, why)) log_result(*j, "sent on a new association");
        else DWB_ERROR(&lc, "storage commitment %s: report not delivered: %s", j->transaction_uid.c_str(), why.c_str());
        lk.lock();
        j->sent = true;
    }
}

} // namespace

struct dwb_commit_jobs {
    std::vector<std::shared_ptr<Job>> jobs;
};

OFCondition dwb_handle_naction(dwb_assoc_ctx *ctx, T_DIMSE_Message *msg, T_ASC_PresentationContextID pid) {
    const T_DIMSE_N_ActionRQ &rq = msg->msg.NActionRQ;
    std::unique_ptr<DcmDataset> ds;
    std::string why;
    bool too_large = false;
    if (rq.DataSetType != DIMSE_DATASET_NULL) {
        OFCondition c = dwb_receive_dataset(ctx, pid, DWB_NACTION_MAX_BYTES, ds, why, &too_large);
        if (c.bad()) return c;
    }
    unsigned short status = STATUS_Success;
    auto job = std::make_shared<Job>();
    if (rq.DataSetType != DIMSE_DATASET_NULL && !ds) {
        // Too large (DWB_NACTION_MAX_BYTES), too deep or unparsable: refused as a whole, never half-read.
        status = too_large ? kResourceLimitation : kProcessingFailure;
    } else if (strcmp(rq.RequestedSOPClassUID, UID_StorageCommitmentPushModelSOPClass) != 0) {
        status = 0x0118; // No such SOP class
        why = "N-ACTION is offered for Storage Commitment Push Model only";
    } else if (rq.ActionTypeID != 1) {
        status = 0x0123; // No such action type
        why = "Storage Commitment knows action type 1 only";
    } else if (!ctx->upstream) {
        status = kProcessingFailure;
        why = "storage commitment needs an upstream AE title";
    } else if (g_live_jobs.load() >= kMaxLiveJobs) {
        status = kResourceLimitation;
        why = "too many storage commitment requests in progress; ask again later";
    } else {
        OFString tuid;
        if (!ds || ds->findAndGetOFString(DCM_TransactionUID, tuid).bad() || tuid.empty()) {
            status = 0x0120; // Missing attribute
            why = "Transaction UID missing";
        }
        job->transaction_uid = tuid.c_str();
        DcmSequenceOfItems *seq = nullptr;
        if (status == STATUS_Success && (ds->findAndGetSequence(DCM_ReferencedSOPSequence, seq).bad() || !seq)) {
            status = 0x0120;
            why = "Referenced SOP Sequence missing";
        }
        // Walked item by item: getItem(i) starts from the head each time, quadratic in the number of references.
        DcmObject *obj = nullptr;
        if (status == STATUS_Success) job->refs.reserve(seq->card());
        while (status == STATUS_Success && (obj = seq->nextInContainer(obj)) != nullptr) {
            DcmItem *it = static_cast<DcmItem *>(obj);
            OFString cls, uid;
            it->findAndGetOFString(DCM_ReferencedSOPClassUID, cls);
            it->findAndGetOFString(DCM_ReferencedSOPInstanceUID, uid);
            if (uid.empty() || uid.length() > 64 || cls.length() > 64) {
                status = 0x0121; // Missing attribute value / invalid
                why = "a Referenced SOP Sequence item lacks a valid SOP Instance UID";
                break;
            }
            dwb_commit_ref r = {};
            OFStandard::strlcpy(r.sop_class, cls.c_str(), sizeof r.sop_class);
            OFStandard::strlcpy(r.sop_uid, uid.c_str(), sizeof r.sop_uid);
            job->refs.push_back(r);
        }
    }
    T_DIMSE_Message rsp;
    memset(&rsp, 0, sizeof rsp);
    rsp.CommandField = DIMSE_N_ACTION_RSP;
    T_DIMSE_N_ActionRSP &r = rsp.msg.NActionRSP;
    r.MessageIDBeingRespondedTo = rq.MessageID;
    OFStandard::strlcpy(r.AffectedSOPClassUID, rq.RequestedSOPClassUID, sizeof r.AffectedSOPClassUID);
    OFStandard::strlcpy(r.AffectedSOPInstanceUID, rq.RequestedSOPInstanceUID, sizeof r.AffectedSOPInstanceUID);
    r.ActionTypeID = rq.ActionTypeID;
    r.DimseStatus = status;
    r.DataSetType = DIMSE_DATASET_NULL;
    r.opts = O_NACTION_AFFECTEDSOPCLASSUID | O_NACTION_AFFECTEDSOPINSTANCEUID | O_NACTION_ACTIONTYPEID;
    dwb_count_response("N-ACTION", status);
    if (status != STATUS_Success) DWB_WARN(&ctx->log, "storage commitment refused (0x%04x): %s", status, why.c_str());
    DcmDataset detail;
    bool with_detail = status != STATUS_Success && dwb_put_error_comment(&detail, why.c_str());
    OFCondition c = DIMSE_sendMessageUsingMemoryData(ctx->assoc, pid, &rsp, with_detail ? &detail : nullptr, nullptr,
                                                     nullptr, nullptr);
    if (c.bad() || status != STATUS_Success) return c;

    job->cfg = ctx->cfg;
    job->up = ctx->upstream;
    job->spool = ctx->spool;
    job->activity = ctx->activity;
    job->cancel_all = ctx->cancel_all;
    job->calling = ctx->calling;
    job->called = ctx->called;
    job->assoc_id = ctx->id;
    job->peer = ctx->peer;
    DWB_INFO(&ctx->log, "storage commitment %s requested for %zu instance(s)", job->transaction_uid.c_str(),
             job->refs.size());
    if (!ctx->commit) ctx->commit = new dwb_commit_jobs;
    ctx->commit->jobs.push_back(job);
    g_live_jobs++;
    try {
        std::thread([job]() {
            run_job(job);
            g_live_jobs--;
        }).detach();
    } catch (const std::exception &e) {
        g_live_jobs--;
        job->sent = true;
        DWB_ERROR(&ctx->log, "storage commitment: cannot start a thread: %s", e.what());
    }
    return EC_Normal;
}

void dwb_commit_poll(dwb_assoc_ctx *ctx) {
    if (!ctx->commit) return;
    auto &jobs = ctx->commit->jobs;
    for (size_t i = 0; i < jobs.size();) {
        std::shared_ptr<Job> j = jobs[i];
        bool ready;
        {
            std::lock_guard<std::mutex> lk(j->mu);
            ready = j->ready && !j->sent;
        }
        if (!ready) {
            i++;
            continue;
        }
        if (j->report_id) { // sent, its answer not yet in: it comes as a command (dwb_commit_answered)
            i++;
            continue;
        }
        T_ASC_PresentationContextID pid =
            ASC_findAcceptedPresentationContextID(ctx->assoc, UID_StorageCommitmentPushModelSOPClass);
        std::string why = "no Storage Commitment context on this association";
        DIC_US id = 0;
        if (pid && send_report_rq(ctx->assoc, pid, *j, &id, why)) {
            j->report_id = id;
            i++;
            continue;
        }
        DWB_WARN(&ctx->log, "storage commitment %s: %s; trying a new association", j->transaction_uid.c_str(),
                 why.c_str());
        std::lock_guard<std::mutex> lk(j->mu);
        j->assoc_open = false;
        j->cv.notify_all();
        jobs.erase(jobs.begin() + (long)i);
    }
}

OFCondition dwb_commit_answered(dwb_assoc_ctx *ctx, T_DIMSE_Message *msg, T_ASC_PresentationContextID pid) {
    (void)pid;
    const T_DIMSE_N_EventReportRSP &rsp = msg->msg.NEventReportRSP;
    if (rsp.DataSetType != DIMSE_DATASET_NULL) {
        DIC_UL bytes = 0, pdvs = 0;
        OFCondition c = DIMSE_ignoreDataSet(ctx->assoc, dwb_peer_block(ctx), dwb_peer_timeout(ctx), &bytes, &pdvs);
        if (c.bad()) return c;
    }
    if (ctx->commit) {
        auto &jobs = ctx->commit->jobs;
        for (size_t i = 0; i < jobs.size(); i++) {
            std::shared_ptr<Job> j = jobs[i];
            if (!j->report_id || j->report_id != rsp.MessageIDBeingRespondedTo) continue;
            log_result(*j, "sent on the requesting association");
            std::lock_guard<std::mutex> lk(j->mu);
            j->sent = true;
            j->cv.notify_all();
            jobs.erase(jobs.begin() + (long)i);
            return EC_Normal;
        }
    }
    DWB_WARN(&ctx->log, "N-EVENT-REPORT-RSP for message %u, which the bridge did not send; ignored",
             (unsigned)rsp.MessageIDBeingRespondedTo);
    return EC_Normal;
}

void dwb_commit_assoc_closed(dwb_assoc_ctx *ctx) {
    if (!ctx->commit) return;
    for (auto &j : ctx->commit->jobs) {
        std::lock_guard<std::mutex> lk(j->mu);
        j->assoc_open = false;
        j->cv.notify_all();
    }
    delete ctx->commit;
    ctx->commit = nullptr;
}

void dwb_commit_shutdown(void) {
    // Jobs use the configuration and the upstreams' HTTP clients, freed after this returns: wait for every one.
    // They see g_shutdown at their next QIDO page or wait, and give up reports still owed.
    g_shutdown.store(true);
    for (int i = 1; g_live_jobs.load() > 0; i++) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        if (i % 100 == 0) DWB_INFO(nullptr, "shutting down: waiting for %d storage commitment job(s)", g_live_jobs.load());
    }
}
