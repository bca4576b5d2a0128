// DCMTK adapter for C-MOVE and C-GET: resolves the identifier (dwb_retrieve.c), streams the instances from the
// store by WADO-RS, stamps their provenance, and sends them by C-STORE to the move destination (C-MOVE) or back
// on the requesting association (C-GET), with pending responses, C-CANCEL and per-instance failures.
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcistrmb.h"
#include "dcmtk/dcmdata/dcrledrg.h"
#include "dcmtk/dcmdata/dcuid.h"
#include "dcmtk/dcmdata/dcxfer.h"
#include "dcmtk/dcmdata/dcfilefo.h"
#include "dcmtk/dcmdata/dcmetinf.h"
#include "dcmtk/dcmjpeg/djdecode.h"
#include "dcmtk/dcmjpls/djdecode.h"
#include "dcmtk/dcmnet/dimse.h"

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <sys/stat.h>
#include <unistd.h>
#include <thread>
#include <cstring>
#include <ctime>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "dwb_assoc.hh"
#include "dwb_dcmconv.hh"

extern "C" {
#include "dwb_import_send.h"
#include "dwb_metrics.h"
#include "dwb_stow.h"
#include "dwb_stow_send.h"
#include "dwb_retrieve.h"
}

namespace {

const size_t kMaxInstanceBytes = (size_t)1 << 30;

void register_codecs() {
    static std::once_flag once;
    std::call_once(once, [] {
        DJDecoderRegistration::registerCodecs();
        DJLSDecoderRegistration::registerCodecs();
        DcmRLEDecoderRegistration::registerCodecs();
    });
}

const char *const kUncompressed[] = {UID_LittleEndianExplicitTransferSyntax, UID_LittleEndianImplicitTransferSyntax};
const char *const kCompressed[] = {UID_JPEGProcess1TransferSyntax,         UID_JPEGProcess2_4TransferSyntax,
                                   UID_JPEGProcess14TransferSyntax,        UID_JPEGProcess14SV1TransferSyntax,
                                   UID_JPEGLSLosslessTransferSyntax,       UID_JPEGLSLossyTransferSyntax,
                                   UID_JPEG2000LosslessOnlyTransferSyntax, UID_JPEG2000TransferSyntax,
                                   UID_RLELosslessTransferSyntax,          UID_DeflatedExplicitVRLittleEndianTransferSyntax};

struct Target {
    T_ASC_Association *assoc = nullptr;
    T_ASC_Network *net = nullptr;
    bool own = false;
    bool is_move = true;
    std::string originator;
    DIC_US originator_msg_id = 0;
    DIC_US next_msg_id = 1;
};

void close_target(Target &t, bool abort) {
    if (!t.own) return;
    if (t.assoc) {
        if (abort) ASC_abortAssociation(t.assoc);
        else ASC_releaseAssociation(t.assoc);
        ASC_destroyAssociation(&t.assoc);
    }
    if (t.net) ASC_dropNetwork(&t.net);
}

bool open_destination(const dwb_config *cfg, const dwb_destination_conf *d, const std::vector<std::string> &classes,
                      Target &t, std::string &why) {
    t.own = true;
    OFCondition c = ASC_initializeNetwork(NET_REQUESTOR, 0, cfg->listen.acse_timeout_s, &t.net);
    if (c.bad()) {
        why = std::string("network: ") + c.text();
        return false;
    }
    if (d->tls) {
        std::string tw;
        DcmTransportLayer *layer = dwb_tls_layer(NET_REQUESTOR, d->tls_certificate, d->tls_key, d->tls_ca, 1, tw);
        if (!layer || ASC_setTransportLayer(t.net, layer, OFTrue).bad()) {
            delete layer;
            why = "TLS: " + tw;
            return false;
        }
    }
    T_ASC_Parameters *params = nullptr;
    ASC_createAssociationParameters(&params, cfg->listen.max_pdu);
    if (d->tls) ASC_setTransportLayerType(params, OFTrue);
    const char *calling = d->calling_ae_title[0] ? d->calling_ae_title : cfg->listen.ae_title;
    const char *called = d->called_ae_title[0] ? d->called_ae_title : d->ae_title;
    ASC_setAPTitles(params, calling, called, nullptr);
    std::string peer = std::string(d->host) + ":" + std::to_string(d->port);
    ASC_setPresentationAddresses(params, "localhost", peer.c_str());
    int id = 1;
    size_t with_compressed = classes.size() <= 11 ? classes.size() : 11;
    // A compressed preferred syntax gets a context of its own, proposed first: inside the uncompressed context
    // an acceptor could pick it for instances the bridge cannot encode, and every uncompressed one would fail.
    const char *pref = d->preferred_transfer_syntax;
    bool pref_compressed = pref && DcmXfer(pref).isEncapsulated();
    for (size_t i = 0; i < classes.size() && id < 256; i++) {
        if (pref_compressed) {
            const char *one[] = {pref};
            ASC_addPresentationContext(params, (T_ASC_PresentationContextID)id, classes[i].c_str(), one, 1);
            id += 2;
            if (id >= 256) break;
        }
        std::vector<const char *> ts;
        if (pref && !pref_compressed) ts.push_back(pref);
        for (auto *u : kUncompressed)
            if (!pref || strcmp(u, pref)) ts.push_back(u);
        ASC_addPresentationContext(params, (T_ASC_PresentationContextID)id, classes[i].c_str(), ts.data(), (int)ts.size());
        id += 2;
        if (i >= with_compressed) continue;
        for (auto *cts : kCompressed) {
            if (id >= 256) break;
            if (pref_compressed && strcmp(cts, pref) == 0) continue;
            const char *one[] = {cts};
            ASC_addPresentationContext(params, (T_ASC_PresentationContextID)id, classes[i].c_str(), one, 1);
            id += 2;
        }
    }
    c = ASC_requestAssociation(t.net, params, &t.assoc);
    if (c.bad()) {
        T_ASC_RejectParameters rej;
        if (c == DUL_ASSOCIATIONREJECTED) {
            ASC_getRejectParameters(params, &rej);
            OFString s;
            why = std::string("association rejected by ") + called + "@" + peer + ": " + ASC_printRejectParameters(s, &rej).c_str();
        } else {
            why = std::string("cannot associate with ") + called + "@" + peer + ": " + c.text();
        }
        if (t.assoc) {
            ASC_destroyAssociation(&t.assoc);
        } else {
            ASC_destroyAssociationParameters(&params);
        }
        return false;
    }
    dwb_set_nodelay(t.assoc);
    if (ASC_countAcceptedPresentationContexts(t.assoc->params) == 0) {
        why = std::string(called) + "@" + peer + " accepted none of the SOP classes to send";
        close_target(t, false);
        return false;
    }
    return true;
}

std::string now_dt() {
    char buf[32];
    time_t t = time(nullptr);
    struct tm tmv;
    gmtime_r(&t, &tmv);
    strftime(buf, sizeof buf, "%Y%m%d%H%M%S+0000", &tmv);
    return buf;
}

// PS3.3 C.12.1.1.9: what the bridge changed and where the instance came from, inside the data set itself (file
// meta such as Source AE Title does not survive a C-STORE).
// Sub-operation counts are US (16 bits): a study of more than 65,535 instances reports the maximum, not the
// count modulo 65,536.
DIC_US count16(size_t n) { return n > 0xFFFF ? (DIC_US)0xFFFF : (DIC_US)n; }

// "host[:port]" of a URL, without scheme, credentials or path.
std::string url_host(const char *url) {
    const char *p = strstr(url, "://");
    p = p ? p + 3 : url;
    const char *end = p + strcspn(p, "/?#");
    const char *at = static_cast<const char *>(memchr(p, '@', (size_t)(end - p)));
    if (at) p = at + 1;
    return std::string(p, (size_t)(end - p));
}

void stamp(DcmDataset *ds, const dwb_upstream_conf *up, const char *bridge_ae, const std::string &url) {
    DcmItem *item = new DcmItem();
    DcmItem *prev = new DcmItem();
    OFString v;
    if (ds->findAndGetOFStringArray(DCM_RetrieveURL, v).good()) prev->putAndInsertString(DCM_RetrieveURL, v.c_str());
    else prev->insertEmptyElement(DCM_RetrieveURL);
    if (ds->findAndGetOFStringArray(DCM_RetrieveAETitle, v).good()) prev->putAndInsertString(DCM_RetrieveAETitle, v.c_str());
    else prev->insertEmptyElement(DCM_RetrieveAETitle);
    item->insertSequenceItem(DCM_ModifiedAttributesSequence, prev);
    item->putAndInsertString(DCM_AttributeModificationDateTime, now_dt().c_str());
    item->putAndInsertString(DCM_ModifyingSystem, bridge_ae);
    // Source of Previous Values is LO (64 characters at most): the upstream's AE title and host; the full URL is
    // in Retrieve URL (UR, no such limit).
    std::string source = std::string(up->ae_title) + " " + url_host(up->base_url);
    if (source.size() > 64) source.resize(64);
    item->putAndInsertString(DCM_SourceOfPreviousValues, source.c_str());
    item->putAndInsertString(DCM_ReasonForTheAttributeModification, "COERCE");
    ds->insertSequenceItem(DCM_OriginalAttributesSequence, item, -2);
    ds->putAndInsertString(DCM_RetrieveURL, url.c_str());
    ds->putAndInsertString(DCM_RetrieveAETitle, up->ae_title);
}

struct Run {
    dwb_assoc_ctx *ctx;
    T_ASC_PresentationContextID pid;
    T_DIMSE_Message *req;
    bool is_move;
    Target target;
    size_t total = 0, completed = 0, failed = 0, warning = 0;
    std::vector<std::string> failed_uids;
    bool cancelled = false;
    bool dest_dead = false;
    OFCondition net = EC_Normal; // failure towards the requesting SCU
    std::chrono::steady_clock::time_point last_pending;
    size_t since_pending = 0;
    std::string dest_why;

    // Import mode: no requesting association; progress and cancellation come from the caller's hooks.
    const dwb_import_hooks *import = nullptr;
    unsigned long long bytes_done = 0;
    dwb_http_client *stow = nullptr; // STOW-RS destination (import)
    std::string stow_url;

    // series_burst: a series is written to disk first and sent in one burst once complete.
    bool burst = false;
    std::string burst_dir;
    struct Burst {
        size_t seen = 0, failed = 0;
        std::vector<std::pair<std::string, std::string>> files; // path, SOP Instance UID
        std::vector<size_t> sizes;
    };
    std::map<const dwb_rseries *, Burst> bursts;

    // Pipeline: producer threads fetch and parse (WADO-RS), this thread stamps and sends (C-STORE).
    struct Item {
        std::unique_ptr<DcmFileFormat> ff; // null = an instance the store did not deliver
        std::string sop, cls, why;
        std::string bucket_url; // the object's URL when it came from the upstream's bucket (IDC), else empty
        const dwb_rseries *series = nullptr;
        size_t bytes = 0;
    };
    std::mutex mu;
    std::condition_variable cv_space, cv_items;
    std::deque<Item> queue;
    size_t queued_bytes = 0, budget = 64u << 20;
    int producers_left = 0;
    std::atomic<bool> stop{false};
};

DIC_US msg_id(const Run &r) { return r.is_move ? r.req->msg.CMoveRQ.MessageID : r.req->msg.CGetRQ.MessageID; }
const char *sop_class(const Run &r) {
    return r.is_move ? r.req->msg.CMoveRQ.AffectedSOPClassUID : r.req->msg.CGetRQ.AffectedSOPClassUID;
}

OFCondition send_rsp(Run &r, DIC_US status, bool final, const char *comment) {
    if (r.import) {
        dwb_import_totals t = {r.total, r.completed, r.failed, r.warning, r.bytes_done};
        if (r.import->progress) r.import->progress(r.import->ud, &t);
        r.last_pending = std::chrono::steady_clock::now();
        r.since_pending = 0;
        return EC_Normal;
    }
    T_DIMSE_Message rsp;
    memset(&rsp, 0, sizeof rsp);
    size_t remaining = r.total - r.completed - r.failed - r.warning;
    if (final) {
        const char *svc = r.is_move ? "C-MOVE" : "C-GET";
        dwb_count_response(svc, status);
        char labels[80];
        snprintf(labels, sizeof labels, "service=\"%s\",result=\"completed\"", svc);
        dwb_metrics_add("dwb_suboperations_total", labels, (double)r.completed);
        snprintf(labels, sizeof labels, "service=\"%s\",result=\"failed\"", svc);
        dwb_metrics_add("dwb_suboperations_total", labels, (double)r.failed);
        snprintf(labels, sizeof labels, "service=\"%s\",result=\"warning\"", svc);
        dwb_metrics_add("dwb_suboperations_total", labels, (double)r.warning);
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
        m.NumberOfCompletedSubOperations = count16(r.completed);
        m.NumberOfFailedSubOperations = count16(r.failed);
        m.NumberOfWarningSubOperations = count16(r.warning);
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
        m.NumberOfCompletedSubOperations = count16(r.completed);
        m.NumberOfFailedSubOperations = count16(r.failed);
        m.NumberOfWarningSubOperations = count16(r.warning);
        m.opts = O_GET_AFFECTEDSOPCLASSUID | O_GET_NUMBEROFCOMPLETEDSUBOPERATIONS | O_GET_NUMBEROFFAILEDSUBOPERATIONS |
                 O_GET_NUMBEROFWARNINGSUBOPERATIONS | (with_remaining ? O_GET_NUMBEROFREMAININGSUBOPERATIONS : 0);
        m.DataSetType = with_list ? DIMSE_DATASET_PRESENT : DIMSE_DATASET_NULL;
    }
    DcmDataset detail, data;
    bool with_detail = comment && *comment;
    if (with_detail) {
        std::string c(comment);
        if (c.size() > 64) c = c.substr(0, 61) + "...";
        detail.putAndInsertString(DCM_ErrorComment, c.c_str());
    }
    if (with_list) {
        std::string list;
        for (size_t i = 0; i < r.failed_uids.size(); i++) {
            if (i) list += '\\';
            list += r.failed_uids[i];
        }
        data.putAndInsertString(DCM_FailedSOPInstanceUIDList, list.c_str());
    }
    r.last_pending = std::chrono::steady_clock::now();
    r.since_pending = 0;
    return DIMSE_sendMessageUsingMemoryData(r.ctx->assoc, r.pid, &rsp, with_detail ? &detail : nullptr,
                                            with_list ? &data : nullptr, nullptr, nullptr);
}

void maybe_pending(Run &r) {
    if (r.net.bad()) return;
    auto now = std::chrono::steady_clock::now();
    if (r.since_pending >= 10 || now - r.last_pending >= std::chrono::seconds(1))
        r.net = send_rsp(r, STATUS_Pending, false, nullptr);
}

int check_cancel(void *ud) {
    Run &r = *static_cast<Run *>(ud);
    if (r.cancelled || r.net.bad()) return 1;
    if (r.import) return r.cancelled = r.import->cancelled && r.import->cancelled(r.import->ud), r.cancelled ? 1 : 0;
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

void fail_instance(Run &r, const char *sop, const std::string &why) {
    r.failed++;
    r.since_pending++;
    if (r.failed_uids.size() < 10000) r.failed_uids.push_back(sop);
    DWB_WARN(&r.ctx->log, "%s: instance %s failed: %s", r.import ? "import" : r.is_move ? "C-MOVE" : "C-GET", sop,
             why.c_str());
}

// Accepted context for a SOP class, with the given transfer syntax (NULL: the first accepted one). Written out
// because ASC_findAcceptedPresentationContextID also returns contexts whose syntax differs from the one asked.
T_ASC_PresentationContextID find_context(T_ASC_Association *a, const char *cls, const char *ts, std::string *accepted) {
    int n = ASC_countPresentationContexts(a->params);
    for (int i = 0; i < n; i++) {
        T_ASC_PresentationContext pc;
        if (ASC_getPresentationContext(a->params, i, &pc).bad()) continue;
        if (pc.resultReason != ASC_P_ACCEPTANCE || strcmp(pc.abstractSyntax, cls) != 0) continue;
        if (ts && strcmp(pc.acceptedTransferSyntax, ts) != 0) continue;
        if (accepted) *accepted = pc.acceptedTransferSyntax;
        return pc.presentationContextID;
    }
    return 0;
}

// Returns 0 sent, 1 warning, -1 failed (go on), -2 target dead.
int store_one(Run &r, DcmDataset *ds, const char *cls, const char *sop, std::string &why);
int p_cancelled(void *ud);

// The destination takes none of the instance's syntax and the bridge cannot decode it (JPEG 2000 with Debian's
// DCMTK): ask the store for it in Explicit VR Little Endian (Google and Orthanc with GDCM transcode), stamp the
// new copy as the first one was, and send that.
int store_transcoded(Run &r, DcmDataset *ds, const char *cls, const char *sop, const DcmXfer &have, std::string &why) {
    static const char *const kExplicitLE = UID_LittleEndianExplicitTransferSyntax;
    OFString study, series;
    ds->findAndGetOFString(DCM_StudyInstanceUID, study);
    ds->findAndGetOFString(DCM_SeriesInstanceUID, series);
    const dwb_upstream *up = r.ctx->upstream;
    std::string base = std::string("destination does not accept ") + have.getXferName() + " (" + have.getXferID() +
                       ") and the bridge cannot decode it";
    if (!up || study.empty() || series.empty()) {
        why = base;
        return -1;
    }
    void *data = nullptr;
    size_t len = 0;
    dwb_error err = {};
    if (dwb_retrieve_fetch_instance(up, study.c_str(), series.c_str(), sop, kExplicitLE, kMaxInstanceBytes, p_cancelled,
                                    &r, &data, &len, &err) != DWB_OK) {
        why = base + "; the store did not transcode it to Explicit VR Little Endian: " + err.message;
        return -1;
    }
    DcmInputBufferStream in;
    in.setBuffer(data, (offile_off_t)len);
    in.setEos();
    DcmFileFormat ff;
    ff.transferInit();
    OFCondition c = ff.read(in, EXS_Unknown, EGL_noChange, 0xFFFFFFFFu);
    ff.transferEnd();
    free(data);
    DcmDataset *nds = ff.getDataset();
    if (c.bad() || DcmXfer(nds->getOriginalXfer()).isEncapsulated()) {
        why = base + "; the store's transcoded copy is " + (c.bad() ? c.text() : "still compressed");
        return -1;
    }
    if (r.ctx->cfg->provenance.stamp) {
        std::string url = std::string(up->conf->base_url) + "/studies/" + study.c_str() + "/series/" + series.c_str() +
                          "/instances/" + sop;
        stamp(nds, up->conf, r.ctx->cfg->listen.ae_title, url);
    }
    DWB_INFO(&r.ctx->log, "%s: %s not accepted by the destination; sending the store's Explicit VR Little Endian copy",
             sop, have.getXferName());
    return store_one(r, nds, cls, sop, why);
}

int store_one(Run &r, DcmDataset *ds, const char *cls, const char *sop, std::string &why) {
    T_ASC_Association *a = r.target.assoc;
    DcmXfer have(ds->getOriginalXfer());
    T_ASC_PresentationContextID pid = find_context(a, cls, have.getXferID(), nullptr);
    if (pid == 0) {
        std::string accepted;
        // Prefer an uncompressed context: the bridge can decode into it.
        for (const char *u : kUncompressed)
            if ((pid = find_context(a, cls, u, &accepted)) != 0) break;
        if (pid == 0) pid = find_context(a, cls, nullptr, &accepted);
        if (pid == 0) {
            why = std::string("destination does not accept SOP class ") + cls;
            return -1;
        }
        DcmXfer want(accepted.c_str());
        if (want.isEncapsulated()) {
            why = std::string("destination accepts ") + cls + " only as " + want.getXferName();
            return -1;
        }
        if (have.isEncapsulated()) {
            register_codecs();
            if (ds->chooseRepresentation(EXS_LittleEndianExplicit, nullptr).bad() ||
                !ds->canWriteXfer(EXS_LittleEndianExplicit))
                return store_transcoded(r, ds, cls, sop, have, why);
        }
    }
    T_DIMSE_C_StoreRQ req;
    memset(&req, 0, sizeof req);
    req.MessageID = r.target.next_msg_id++;
    OFStandard::strlcpy(req.AffectedSOPClassUID, cls, sizeof req.AffectedSOPClassUID);
    OFStandard::strlcpy(req.AffectedSOPInstanceUID, sop, sizeof req.AffectedSOPInstanceUID);
    req.DataSetType = DIMSE_DATASET_PRESENT;
    req.Priority = DIMSE_PRIORITY_MEDIUM;
    if (r.is_move) {
        req.opts = O_STORE_MOVEORIGINATORAETITLE | O_STORE_MOVEORIGINATORID;
        OFStandard::strlcpy(req.MoveOriginatorApplicationEntityTitle, r.ctx->calling,
                            sizeof req.MoveOriginatorApplicationEntityTitle);
        req.MoveOriginatorID = msg_id(r);
    }
    T_DIMSE_C_StoreRSP rsp;
    DcmDataset *detail = nullptr;
    // C-GET sends its sub-operations on the requester's association: a C-CANCEL may arrive there while we wait
    // for a C-STORE response. DCMTK recognises it when asked; otherwise it would break the association.
    T_DIMSE_DetectedCancelParameters cancel;
    memset(&cancel, 0, sizeof cancel);
    bool on_requester = !r.is_move && !r.import && a == r.ctx->assoc;
    OFCondition c = DIMSE_storeUser(a, pid, &req, nullptr, ds, nullptr, nullptr, DIMSE_BLOCKING, 0, &rsp, &detail,
                                    on_requester ? &cancel : nullptr);
    if (on_requester && cancel.cancelEncountered && cancel.req.MessageIDBeingRespondedTo == msg_id(r)) {
        DWB_INFO(&r.ctx->log, "C-GET: C-CANCEL received during a sub-operation");
        r.cancelled = true;
    }
    delete detail;
    if (c.bad()) {
        why = std::string("C-STORE to the destination failed: ") + c.text();
        return -2;
    }
    if (rsp.DimseStatus == STATUS_Success) return 0;
    char buf[96];
    snprintf(buf, sizeof buf, "destination answered C-STORE status 0x%04X", rsp.DimseStatus);
    why = buf;
    if ((rsp.DimseStatus & 0xF000) == 0xB000) return 1;
    return -1;
}

void push(Run &r, Run::Item &&it) {
    std::unique_lock<std::mutex> lk(r.mu);
    // Bounded in-flight data: a producer waits while the sender is behind (one item always fits).
    r.cv_space.wait(lk, [&] { return r.stop.load() || r.queued_bytes == 0 || r.queued_bytes + it.bytes <= r.budget; });
    if (r.stop.load()) return;
    r.queued_bytes += it.bytes;
    r.queue.push_back(std::move(it));
    r.cv_items.notify_one();
}

// Producer side (fetch threads): parse each instance as it completes and queue it.
int p_instance(void *ud, const dwb_rseries *se, const void *data, size_t len, const char *location) {
    Run &r = *static_cast<Run *>(ud);
    if (r.stop.load()) return 1;
    DcmInputBufferStream in;
    in.setBuffer(data, (offile_off_t)len);
    in.setEos();
    std::unique_ptr<DcmFileFormat> ff(new DcmFileFormat());
    ff->transferInit();
    // Load every value now: a buffer stream cannot serve deferred reads later.
    OFCondition c = ff->read(in, EXS_Unknown, EGL_noChange, 0xFFFFFFFFu);
    ff->transferEnd();
    OFString sop, cls;
    if (c.good()) {
        ff->getDataset()->findAndGetOFString(DCM_SOPInstanceUID, sop);
        ff->getDataset()->findAndGetOFString(DCM_SOPClassUID, cls);
    }
    if (c.bad() || sop.empty() || cls.empty()) {
        // Not attributable to a planned instance: the planned ones that never arrive are counted as missing.
        DWB_WARN(&r.ctx->log, "store sent an unreadable instance (%s): %s", location && *location ? location : "?",
                 c.bad() ? c.text() : "no SOP Instance/Class UID");
        return 0;
    }
    if (!dwb_retrieve_mark_seen(se, sop.c_str())) {
        // Not asked for: neither sent nor counted (a store that answers more than the plan holds).
        DWB_DEBUG(&r.ctx->log, "store sent %s, which is not in the plan of series %s: skipped", sop.c_str(),
                  se->series_uid);
        return 0;
    }
    Run::Item it;
    it.ff = std::move(ff);
    it.sop = sop.c_str();
    it.cls = cls.c_str();
    const char *bep = r.ctx->upstream->conf->bucket_endpoint;
    if (bep && location && !strncmp(location, bep, strlen(bep))) it.bucket_url = location;
    it.series = se;
    it.bytes = len;
    push(r, std::move(it));
    return r.stop.load() ? 1 : 0;
}

void p_missing(void *ud, const dwb_rseries *se, const char *sop, const char *reason) {
    Run &r = *static_cast<Run *>(ud);
    Run::Item it;
    it.sop = sop;
    it.why = reason;
    it.series = se;
    push(r, std::move(it));
}

int p_cancelled(void *ud) { return static_cast<Run *>(ud)->stop.load() ? 1 : 0; }

void count_result(Run &r, int rc, const char *sop, const std::string &why) {
    if (rc == 0) {
        r.completed++;
        r.since_pending++;
    } else if (rc == 1) {
        r.warning++;
        r.since_pending++;
    } else {
        fail_instance(r, sop, why);
        if (rc == -2) {
            r.dest_dead = true;
            r.dest_why = why;
        }
    }
}

// A completed series to a STOW-RS destination: one request, streamed from the burst files.
void flush_burst_stow(Run &r, Run::Burst &b) {
    std::vector<const char *> paths;
    std::vector<long long> sizes;
    for (auto &f : b.files) {
        paths.push_back(f.first.c_str());
        struct stat st;
        sizes.push_back(stat(f.first.c_str(), &st) == 0 ? (long long)st.st_size : 0);
    }
    dwb_stow_post post;
    dwb_stow_post_files(r.stow, r.stow_url.c_str(), paths.data(), sizes.data(), paths.size(), 0, check_cancel, &r, &post);
    // The same verdict as the C-STORE uploader (translate/dwb_stow.c); here nothing is retried later, so
    // whatever is not delivered is a failed sub-operation with the reason.
    long code = (post.status == DWB_E_CONNECT || post.status == DWB_E_TIMEOUT || post.status == DWB_E_CANCELLED)
                    ? 0 : post.code;
    dwb_stow_result res = {};
    char verdict_why[400];
    dwb_stow_verdict v = dwb_stow_judge(code, post.content_type, post.body, post.body_len, &res, verdict_why,
                                        sizeof verdict_why);
    for (size_t k = 0; k < b.files.size(); k++) {
        const char *sop = b.files[k].second.c_str();
        int rc = -1;
        std::string why;
        unsigned reason = 0;
        if (v == DWB_STOW_V_ANSWERED &&
            dwb_stow_instance_fate(code, &res, sop, &reason) == DWB_STOW_F_DELIVERED) {
            const dwb_stow_item *it = dwb_stow_find(&res, sop);
            rc = it && it->outcome == DWB_STOW_WARNING ? 1 : 0;
        } else {
            char buf[640];
            if (reason) snprintf(buf, sizeof buf, "STOW-RS destination refused it with FailureReason 0x%04X", reason);
            else if (v == DWB_STOW_V_ANSWERED) snprintf(buf, sizeof buf, "STOW-RS destination: no answer for it");
            else snprintf(buf, sizeof buf, "STOW-RS destination: %s", code == 0 && post.err.message[0] ? post.err.message
                                                                                                      : verdict_why);
            why = buf;
        }
        count_result(r, rc, sop, why);
        if (rc < 0) b.failed++;
        else r.bytes_done += b.sizes[k];
        unlink(b.files[k].first.c_str());
    }
    dwb_stow_result_free(&res);
    dwb_stow_post_cleanup(&post);
    maybe_pending(r);
}

// Sends a completed series from its burst files, back to back.
void flush_burst(Run &r, const dwb_rseries *se, Run::Burst &b) {
    if (r.stow) {
        flush_burst_stow(r, b);
        b.files.clear();
        b.sizes.clear();
        if (r.import && r.import->series_done) r.import->series_done(r.import->ud, se, b.failed);
        return;
    }
    for (size_t k = 0; k < b.files.size(); k++) {
        auto &f = b.files[k];
        if (r.dest_dead) {
            fail_instance(r, f.second.c_str(), r.dest_why);
            b.failed++;
        } else {
            DcmFileFormat ff;
            std::string why;
            int rc;
            if (ff.loadFile(f.first.c_str()).bad()) {
                rc = -1;
                why = "cannot read back " + f.first;
            } else {
                OFString cls;
                ff.getDataset()->findAndGetOFString(DCM_SOPClassUID, cls);
                rc = store_one(r, ff.getDataset(), cls.c_str(), f.second.c_str(), why);
            }
            count_result(r, rc, f.second.c_str(), why);
            if (rc < 0) b.failed++;
            else r.bytes_done += b.sizes[k];
        }
        unlink(f.first.c_str());
        maybe_pending(r);
    }
    b.files.clear();
    b.sizes.clear();
    if (r.import && r.import->series_done) r.import->series_done(r.import->ud, se, b.failed);
}

// Consumer side (the association's thread): stamp and send one queued instance.
void send_item(Run &r, Run::Item &it) {
    Run::Burst *burst = r.burst ? &r.bursts[it.series] : nullptr;
    if (burst) burst->seen++;
    if (!it.ff) {
        fail_instance(r, it.sop.c_str(), it.why);
        if (burst) burst->failed++;
    } else if (r.dest_dead) {
        fail_instance(r, it.sop.c_str(), r.dest_why);
        if (burst) burst->failed++;
    } else {
        DcmDataset *ds = it.ff->getDataset();
        const dwb_upstream_conf *up = r.ctx->upstream->conf;
        if (r.ctx->cfg->provenance.stamp) {
            std::string url = !it.bucket_url.empty() ? it.bucket_url
                                                     : std::string(up->base_url) + "/studies/" + it.series->study_uid +
                                                           "/series/" + it.series->series_uid + "/instances/" + it.sop;
            stamp(ds, up, r.ctx->cfg->listen.ae_title, url);
        }
        if (burst) {
            // Part-10 written by the bridge itself: the file meta can carry the source too.
            it.ff->getMetaInfo()->putAndInsertString(DCM_SourceApplicationEntityTitle, up->ae_title);
            it.ff->getMetaInfo()->putAndInsertString(DCM_SourcePresentationAddress, up->base_url);
            std::string path = r.burst_dir + "/" + std::to_string(r.bursts.size()) + "-" + it.sop + ".dcm";
            OFCondition c = it.ff->saveFile(path.c_str(), EXS_Unknown, EET_ExplicitLength, EGL_recalcGL, EPD_noChange,
                                            0, 0, EWM_fileformat);
            if (c.bad()) {
                unlink(path.c_str());
                fail_instance(r, it.sop.c_str(), std::string("cannot write the series burst file: ") + c.text());
                burst->failed++;
            } else {
                burst->files.emplace_back(path, it.sop);
                burst->sizes.push_back(it.bytes);
            }
        } else {
            std::string why;
            int rc = store_one(r, ds, it.cls.c_str(), it.sop.c_str(), why);
            count_result(r, rc, it.sop.c_str(), why);
            if (rc >= 0) r.bytes_done += it.bytes;
        }
    }
    if (burst && burst->seen >= it.series->n) flush_burst(r, it.series, *burst);
}

void run_pipeline(Run &r, const dwb_rplan *plan) {
    const dwb_config *cfg = r.ctx->cfg;
    r.budget = (size_t)cfg->retrieve.max_in_flight_mb << 20;
    size_t n_threads = (size_t)cfg->retrieve.parallel_series;
    if (n_threads > plan->n_series) n_threads = plan->n_series;
    if (n_threads == 0) n_threads = 1;
    std::atomic<size_t> next{0};
    dwb_retrieve_callbacks cb = {p_instance, p_missing, p_cancelled, &r};
    r.producers_left = (int)n_threads;
    std::vector<std::thread> producers;
    for (size_t t = 0; t < n_threads; t++) {
        producers.emplace_back([&r, &next, &cb, plan] {
            for (size_t i = next++; i < plan->n_series && !r.stop.load(); i = next++) {
                dwb_error e = {};
                dwb_retrieve_stream_series(r.ctx->upstream, plan, i, &r.ctx->log, kMaxInstanceBytes, &cb, &e);
            }
            std::lock_guard<std::mutex> lk(r.mu);
            r.producers_left--;
            r.cv_items.notify_all();
        });
    }
    for (;;) {
        Run::Item it;
        bool have = false, done = false;
        {
            std::unique_lock<std::mutex> lk(r.mu);
            r.cv_items.wait_for(lk, std::chrono::milliseconds(100),
                                [&] { return !r.queue.empty() || r.producers_left == 0; });
            if (!r.queue.empty()) {
                it = std::move(r.queue.front());
                r.queue.pop_front();
                r.queued_bytes -= it.bytes;
                have = true;
                r.cv_space.notify_all();
            } else if (r.producers_left == 0) {
                done = true;
            }
        }
        if (done) break;
        if (check_cancel(&r)) break;
        if (have) send_item(r, it);
        maybe_pending(r);
    }
    // Cancel or a dead requester: stop the producers (they notice within one callback or 100 ms).
    r.stop.store(true);
    r.cv_space.notify_all();
    for (auto &t : producers) t.join();
}

} // namespace

OFCondition dwb_handle_move_get(dwb_assoc_ctx *ctx, T_DIMSE_Message *msg, T_ASC_PresentationContextID pid) {
    Run r;
    r.ctx = ctx;
    r.pid = pid;
    r.req = msg;
    r.is_move = msg->CommandField == DIMSE_C_MOVE_RQ;
    const char *name = r.is_move ? "C-MOVE" : "C-GET";
    DcmDataset *raw = nullptr;
    T_ASC_PresentationContextID dpid = pid;
    OFCondition cond = DIMSE_receiveDataSetInMemory(ctx->assoc, DIMSE_BLOCKING, 0, &dpid, &raw, nullptr, nullptr);
    std::unique_ptr<DcmDataset> ident(raw);
    if (cond.bad()) return cond;
    if (!ctx->upstream) return send_rsp(r, 0xC000, true, "needs an upstream AE title as called AE");
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
            return send_rsp(r, 0xC000, true, "destination is STOW-RS (import only)");
        }
    }
    dwb_attrs *id = dwb_attrs_new();
    dwb_error err = {};
    if (!id) return send_rsp(r, 0xA701, true, "out of memory");
    if (dwb_dcm_to_attrs(ident.get(), id, &err) != DWB_OK) {
        dwb_attrs_free(id);
        return send_rsp(r, 0xA900, true, err.message);
    }
    auto t0 = std::chrono::steady_clock::now();
    dwb_rplan *plan = nullptr;
    dwb_status st = dwb_retrieve_resolve(ctx->upstream, model, id, &ctx->log, check_cancel, &r, &plan, &err);
    dwb_attrs_free(id);
    if (r.net.bad()) return r.net;
    if (st != DWB_OK) {
        if (st == DWB_E_CANCELLED || r.cancelled) return send_rsp(r, STATUS_MOVE_Cancel_SubOperationsTerminatedDueToCancelIndication, true, nullptr);
        DWB_WARN(&ctx->log, "%s: cannot resolve the identifier: %s", name, err.message);
        DIC_US status = st == DWB_E_INVALID ? 0xA900 : (err.http_code >= 400 && err.http_code < 500) ? 0xC000 : 0xA701;
        std::string comment = st == DWB_E_INVALID ? err.message : (err.http_code ? "store HTTP " + std::to_string(err.http_code) : std::string("store unreachable"));
        if (st == DWB_E_LIMIT && err.http_code == 429) { // IDC proxy quota (issue 16): out of resources until 00:00 UTC
            status = 0xA702;
            comment = DWB_HTTP_QUOTA_COMMENT;
        }
        return send_rsp(r, status, true, comment.c_str());
    }
    r.total = plan->total;
    plan->max_attempts = ctx->cfg->retrieve.max_attempts;
    if (dest && dest->transfer_syntax) snprintf(plan->transfer_syntax, sizeof plan->transfer_syntax, "%s", dest->transfer_syntax);
    DWB_INFO(&ctx->log, "%s: %zu instance(s) in %zu series to %s", name, plan->total, plan->n_series,
             r.is_move ? dest->ae_title : ctx->calling);
    if (r.total == 0) {
        dwb_rplan_free(plan);
        return send_rsp(r, STATUS_Success, true, nullptr);
    }
    if (r.is_move) {
        size_t n = 0;
        const char **classes = dwb_rplan_sop_classes(plan, &n);
        std::vector<std::string> cl;
        for (size_t i = 0; classes && i < n; i++) cl.push_back(classes[i]);
        free(classes);
        std::string why;
        if (!open_destination(ctx->cfg, dest, cl, r.target, why)) {
            DWB_WARN(&ctx->log, "C-MOVE: destination %s: %s", dest->ae_title, why.c_str());
            for (size_t s = 0; s < plan->n_series; s++)
                for (size_t i = 0; i < plan->series[s].n; i++)
                    if (r.failed_uids.size() < 10000) r.failed_uids.push_back(plan->series[s].sop[i]);
            r.failed = r.total;
            dwb_rplan_free(plan);
            return send_rsp(r, STATUS_MOVE_Refused_OutOfResourcesSubOperations, true, "destination unreachable");
        }
    } else {
        r.target.assoc = ctx->assoc;
        r.target.own = false;
        r.target.is_move = false;
        r.target.next_msg_id = (DIC_US)(msg_id(r) + 1);
    }
    if (r.is_move && dest->series_burst) {
        r.burst = true;
        r.burst_dir = std::string(ctx->cfg->spool.dir) + "/burst-" + ctx->id + "-" + std::to_string(msg_id(r));
        std::string parent = std::string(ctx->cfg->spool.dir);
        mkdir(parent.c_str(), 0750);
        if (mkdir(r.burst_dir.c_str(), 0750) != 0 && errno != EEXIST) {
            DWB_WARN(&ctx->log, "C-MOVE: cannot create %s (%s): sending without series bursts", r.burst_dir.c_str(),
                     strerror(errno));
            r.burst = false;
        }
    }
    r.net = send_rsp(r, STATUS_Pending, false, nullptr);
    if (r.net.good()) run_pipeline(r, plan);
    if (r.burst) {
        // Cancelled or failed bursts leave files behind: they were never acknowledged to anyone.
        for (auto &kv : r.bursts)
            for (auto &f : kv.second.files) unlink(f.first.c_str());
        rmdir(r.burst_dir.c_str());
    }
    dwb_rplan_free(plan);
    close_target(r.target, r.cancelled || r.dest_dead);
    if (r.net.bad()) return r.net;
    long ms = (long)std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
    DIC_US status;
    const char *comment = nullptr;
    if (r.cancelled) {
        status = STATUS_MOVE_Cancel_SubOperationsTerminatedDueToCancelIndication;
    } else if (r.failed == 0 && r.warning == 0) {
        status = STATUS_Success;
    } else if (r.completed == 0 && r.warning == 0) {
        status = STATUS_MOVE_Refused_OutOfResourcesSubOperations;
        comment = r.dest_dead ? "destination failed" : "no instance could be sent";
    } else {
        status = STATUS_MOVE_Warning_SubOperationsCompleteOneOrMoreFailures;
    }
    DWB_INFO(&ctx->log, "%s finished 0x%04X: %zu completed, %zu failed, %zu warning of %zu in %ld ms", name, status,
             r.completed, r.failed, r.warning, r.total, ms);
    return send_rsp(r, status, true, comment);
}

extern "C" dwb_status dwb_import_send(const dwb_config *cfg, const dwb_upstream *up, const dwb_destination_conf *dest,
                                      dwb_http_client *stow, const dwb_rplan *plan, const dwb_import_hooks *hooks,
                                      dwb_import_totals *out, dwb_error *err) {
    memset(out, 0, sizeof *out);
    dwb_assoc_ctx ctx = {};
    ctx.cfg = cfg;
    ctx.upstream = up;
    snprintf(ctx.id, sizeof ctx.id, "import");
    ctx.log.assoc = ctx.id;
    ctx.log.upstream = up->conf->ae_title;
    Run r;
    r.ctx = &ctx;
    r.req = nullptr;
    r.pid = 0;
    r.is_move = false; // no move originator on the sub-operations
    r.import = hooks;
    r.total = plan->total;
    size_t n = 0;
    const char **classes = dwb_rplan_sop_classes(plan, &n);
    std::vector<std::string> cl;
    for (size_t i = 0; classes && i < n; i++) cl.push_back(classes[i]);
    free(classes);
    std::string why;
    if (dest->stow_url) {
        r.stow = stow;
        r.stow_url = dest->stow_url;
    } else if (!open_destination(cfg, dest, cl, r.target, why)) {
        return dwb_error_set(err, DWB_E_CONNECT, "destination %s: %s", dest->ae_title, why.c_str());
    }
    // Kaapana's CTP starts its workflow after ~10 s of silence per series: always send whole series at once.
    r.burst = true;
    r.burst_dir = std::string(cfg->spool.dir) + "/burst-import-" + std::to_string((long)getpid());
    mkdir(cfg->spool.dir, 0750);
    if (mkdir(r.burst_dir.c_str(), 0750) != 0 && errno != EEXIST) {
        close_target(r.target, true);
        return dwb_error_set(err, DWB_E_IO, "cannot create %s: %s", r.burst_dir.c_str(), strerror(errno));
    }
    run_pipeline(r, plan);
    for (auto &kv : r.bursts)
        for (auto &f : kv.second.files) unlink(f.first.c_str());
    rmdir(r.burst_dir.c_str());
    close_target(r.target, r.cancelled || r.dest_dead);
    out->total = r.total;
    out->completed = r.completed;
    out->failed = r.failed;
    out->warning = r.warning;
    out->bytes = r.bytes_done;
    if (r.cancelled) return dwb_error_set(err, DWB_E_CANCELLED, "interrupted");
    return DWB_OK;
}
