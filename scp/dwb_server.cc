// DCMTK adapter for the DIMSE listener: accepts associations on one port, maps the called AE title to an
// upstream store, negotiates presentation contexts, and runs one thread per association.
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcdict.h"
#include "dcmtk/dcmdata/dcuid.h"
#include "dcmtk/dcmdata/dcxfer.h"
#include "dcmtk/dcmnet/assoc.h"
#include "dcmtk/dcmnet/dcmtrans.h"
#include "dcmtk/dcmnet/dimse.h"
#include "dcmtk/dcmnet/diutil.h"
#include "dcmtk/dcmnet/dul.h"
#include "dcmtk/dcmnet/dulstruc.h"
#include "dcmtk/oflog/oflog.h"
#include "dcmtk/dcmtls/tlslayer.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <fcntl.h>
#include <cerrno>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <list>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "dwb_assoc.hh"

extern "C" {
#include "dwb_metrics.h"
#include "dwb_gateway.h"
#include "dwb_ops.h"
#include "dwb_server.h"
#include "dwb_idc.h"
}

struct dwb_server {
    const dwb_config *cfg = nullptr;
    T_ASC_Network *net = nullptr;
    std::vector<dwb_upstream *> upstreams; // same order as cfg->upstreams
    std::vector<dwb_spool *> spools;       // same order; NULL where the spool could not be opened
    std::vector<dwb_uploader *> uploaders;
    dwb_ops *ops = nullptr;
    dwb_gateway *gateway = nullptr;
    std::vector<dwb_http_client *> probe_http; // readiness probes: short timeout, no retries; same order
    std::atomic<bool> probe_stop{false};
    std::atomic<int> stop_level{0};       // 1 = drain, 2 = cancel in-flight work
    std::atomic<bool> cancel_all{false};
    std::mutex mu;
    std::condition_variable cv;
    int active = 0;
    unsigned long next_id = 1;
    // Connections accepted but not yet through negotiation, oldest first. The accepting thread closes them
    // (through watch_fd, a dup of the worker's socket, so that a number DCMTK closed and the kernel reused is
    // never touched) when they exceed listen.acse_timeout_s or listen.max_pending. Guarded by mu.
    struct pending_conn {
        unsigned long id;
        int watch_fd;
        std::chrono::steady_clock::time_point deadline;
        char ip[INET6_ADDRSTRLEN];
    };
    std::list<pending_conn> pending;
    int negotiating = 0; // worker threads not yet serving or gone, evicted ones included; guarded by mu
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

void trim_ae(const char *in, char *out) {
    size_t n = strnlen(in, DWB_AE_MAX);
    while (n > 0 && in[n - 1] == ' ') n--;
    size_t s = 0;
    while (s < n && in[s] == ' ') s++;
    memcpy(out, in + s, n - s);
    out[n - s] = '\0';
}


// DCMTK reads an A-ASSOCIATE-RQ only from a socket it accepts itself or from the process-wide
// dcmExternalSocketHandle (its fork-per-association mode). The accepting thread only accepts; each worker hands
// its socket to DCMTK through that global, one worker at a time. DCMTK takes the handle before it creates the
// transport connection, where HandoffLayer lets the next worker in, so TLS handshakes and the reads of
// A-ASSOCIATE-RQs run in parallel, each in its own worker.
std::mutex g_handoff_mu;
thread_local std::unique_lock<std::mutex> *t_handoff = nullptr;
thread_local bool t_handed = false; // DCMTK owns the socket now (it closes it on every later failure)

void release_handoff() {
    if (t_handoff && t_handoff->owns_lock()) {
        dcmExternalSocketHandle.set(DCMNET_INVALID_SOCKET);
        t_handoff->unlock();
    }
}

class HandoffLayer : public DcmTransportLayer {
  public:
    explicit HandoffLayer(DcmTransportLayer *inner) : inner_(inner) {}
    ~HandoffLayer() override { delete inner_; }
    DcmTransportConnection *createConnection(DcmNativeSocketType sock, OFBool secure) override {
        release_handoff();
        t_handed = true;
        return inner_->createConnection(sock, secure);
    }

  private:
    DcmTransportLayer *inner_;
};

} // namespace

namespace {

bool peer_is_numeric_ip(const char *host) {
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

// Compares two IP literals by their binary form so that "::ffff:127.0.0.1" style differences do not matter.
bool same_ip(const char *a, const char *b) {
    unsigned char ba[16] = {0}, bb[16] = {0};
    auto parse = [](const char *s, unsigned char *out) -> bool {
        struct in_addr v4;
        if (inet_pton(AF_INET, s, &v4) == 1) { // as IPv4-mapped IPv6
            memset(out, 0, 10);
            out[10] = out[11] = 0xff;
            memcpy(out + 12, &v4, 4);
            return true;
        }
        return inet_pton(AF_INET6, s, out) == 1;
    };
    return parse(a, ba) && parse(b, bb) && memcmp(ba, bb, 16) == 0;
}

bool allowed(const dwb_config *cfg, const char *calling, const char *host, const char **why) {
    if (cfg->listen.n_allow_calling_ae > 0) {
        bool ok = false;
        for (size_t i = 0; i < cfg->listen.n_allow_calling_ae && !ok; i++) {
            char t[DWB_AE_MAX + 1];
            trim_ae(cfg->listen.allow_calling_ae[i], t);
            ok = strcmp(t, calling) == 0;
        }
        if (!ok) {
            *why = "calling AE title not in listen.allow_calling_ae";
            return false;
        }
    }
    if (cfg->listen.n_allow_hosts > 0) {
        bool ok = false;
        for (size_t i = 0; i < cfg->listen.n_allow_hosts && !ok; i++)
            ok = peer_is_numeric_ip(host) && same_ip(cfg->listen.allow_hosts[i], host);
        if (!ok) {
            *why = "peer address not in listen.allow_hosts";
            return false;
        }
    }
    return true;
}

void reject(T_ASC_Association *assoc, T_ASC_RejectParametersResult result, T_ASC_RejectParametersSource source,
            T_ASC_RejectParametersReason reason) {
    dwb_metrics_add("dwb_associations_total", "result=\"rejected\"", 1);
    T_ASC_RejectParameters rej = {result, source, reason};
    ASC_rejectAssociation(assoc, &rej);
    ASC_dropAssociation(assoc);
    ASC_destroyAssociation(&assoc);
}

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
            if (xf.getXfer() == EXS_Unknown) continue;
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

const char *command_name(T_DIMSE_Command c) {
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
    bool aborted = false;
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
                aborted = true;
                break;
            }
            if (ctx->cfg->listen.dimse_timeout_s > 0 && idle_s >= ctx->cfg->listen.dimse_timeout_s) {
                DWB_INFO(&ctx->log, "no request for %d s (listen.dimse_timeout_s): aborting association", idle_s);
                ASC_abortAssociation(assoc);
                aborted = true;
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
            aborted = true;
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
        case DIMSE_C_CANCEL_RQ:
            // A cancel outside an operation refers to nothing: ignore, as PS3.7 allows.
            DWB_DEBUG(&ctx->log, "C-CANCEL outside an operation ignored");
            cond = EC_Normal;
            break;
        default: cond = dwb_handle_unsupported(ctx, &msg, pid); break;
        }
        if (cond.bad()) {
            DWB_WARN(&ctx->log, "%s failed on the network: %s; aborting association", command_name(msg.CommandField),
                     cond.text());
            ASC_abortAssociation(assoc);
            aborted = true;
            break;
        }
    }
    (void)aborted;
    dwb_commit_assoc_closed(ctx);
    ASC_dropSCPAssociation(assoc);
    ASC_destroyAssociation(&assoc);
}

} // namespace

OFCondition dwb_handle_echo(dwb_assoc_ctx *ctx, T_DIMSE_Message *msg, T_ASC_PresentationContextID pid) {
    DWB_DEBUG(&ctx->log, "C-ECHO");
    dwb_count_response("C-ECHO", STATUS_Success);
    return DIMSE_sendEchoResponse(ctx->assoc, pid, &msg->msg.CEchoRQ, STATUS_Success, nullptr);
}

void dwb_count_response(const char *service, unsigned short status) {
    char labels[96];
    snprintf(labels, sizeof labels, "service=\"%s\",status=\"0x%04X\"", service, status);
    dwb_metrics_add("dwb_dimse_requests_total", labels, 1);
}

OFCondition dwb_send_failure(dwb_assoc_ctx *ctx, T_DIMSE_Message *req, T_ASC_PresentationContextID pid,
                             unsigned short status, const char *comment) {
    dwb_count_response(command_name(req->CommandField), status);
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
    if (comment && *comment) {
        // ErrorComment is LO: at most 64 characters.
        std::string c(comment);
        if (c.size() > 64) c = c.substr(0, 61) + "...";
        detail.putAndInsertString(DCM_ErrorComment, c.c_str());
    }
    return DIMSE_sendMessageUsingMemoryData(ctx->assoc, pid, &rsp, comment && *comment ? &detail : nullptr, nullptr,
                                            nullptr, nullptr);
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
        DcmDataset *ds = nullptr;
        T_ASC_PresentationContextID dpid = pid;
        OFCondition c = DIMSE_receiveDataSetInMemory(ctx->assoc, DIMSE_BLOCKING, 0, &dpid, &ds, nullptr, nullptr);
        delete ds;
        if (c.bad()) return c;
    }
    const char *name = command_name(msg->CommandField);
    DWB_WARN(&ctx->log, "%s is not available in this build of the bridge; answered failure 0xC000", name);
    char comment[64];
    snprintf(comment, sizeof comment, "%s not implemented by dicomweb-bridge yet", name);
    OFCondition c = dwb_send_failure(ctx, msg, pid, 0xC000, comment);
    if (c == DIMSE_BADCOMMANDTYPE) {
        DWB_WARN(&ctx->log, "unexpected DIMSE command 0x%04x; aborting association", (unsigned)msg->CommandField);
        return c;
    }
    return c;
}

static dwb_status fail(dwb_error *err, dwb_status st, const char *what, const OFCondition &c) {
    return dwb_error_set(err, st, "%s: %s", what, c.text());
}

static int probe_stopping(void *ud) { return static_cast<dwb_server *>(ud)->probe_stop.load() ? 1 : 0; }

static int probe_body(void *ud, const void *data, size_t len) {
    (void)ud; (void)data; (void)len;
    return 0; /* a one-result QIDO answer; only its status matters */
}

// The readiness probe, on the ops probe thread: each upstream answers a one-result QIDO through a client with a
// short timeout and no retries, and each spool takes a file. The answer to /readyz names what is not ready; the
// reasons go to the debug log only.
static int ready_probe(void *ud, char *summary, size_t summary_cap, char *detail, size_t detail_cap) {
    dwb_server *srv = static_cast<dwb_server *>(ud);
    std::string names, reasons;
    for (size_t i = 0; i < srv->upstreams.size(); i++) {
        const dwb_upstream *up = srv->upstreams[i];
        std::string url = std::string(up->conf->base_url) + "/studies?limit=1&includefield=0020000D";
        const char *hdrs[] = {"Accept: application/dicom+json"};
        dwb_http_request req = {};
        req.url = url.c_str();
        req.headers = hdrs;
        req.n_headers = 1;
        req.on_body = probe_body;
        req.is_cancelled = probe_stopping;
        req.ud = srv;
        dwb_error e = {};
        if (!srv->probe_http[i] || dwb_http_perform(srv->probe_http[i], &req, nullptr, &e) != DWB_OK) {
            names += std::string("upstream ") + up->conf->ae_title + ": not reachable\n";
            reasons += std::string("upstream ") + up->conf->ae_title + ": " + e.message + "\n";
        }
        if (!srv->spools[i]) {
            names += std::string("upstream ") + up->conf->ae_title + ": spool not available\n";
            reasons += std::string("upstream ") + up->conf->ae_title + ": spool could not be opened at start-up\n";
        } else {
            std::string probe = std::string(dwb_spool_dir(srv->spools[i])) + "/.readyz-probe";
            FILE *f = fopen(probe.c_str(), "w");
            if (!f || fputs("ok", f) < 0) {
                names += std::string("upstream ") + up->conf->ae_title + ": spool not writable\n";
                reasons += std::string("spool ") + dwb_spool_dir(srv->spools[i]) + " not writable: " + strerror(errno) + "\n";
            }
            if (f) fclose(f);
            unlink(probe.c_str());
        }
    }
    snprintf(summary, summary_cap, "%s", names.c_str());
    snprintf(detail, detail_cap, "%s", reasons.c_str());
    return names.empty();
}

static void refresh_gauges(void *ud) {
    dwb_server *srv = static_cast<dwb_server *>(ud);
    for (size_t i = 0; i < srv->spools.size(); i++) {
        if (!srv->spools[i]) continue;
        char labels[64];
        snprintf(labels, sizeof labels, "upstream=\"%s\"", srv->upstreams[i]->conf->ae_title);
        dwb_spool_stats st;
        dwb_spool_stats_get(srv->spools[i], &st);
        dwb_metrics_set("dwb_spool_queued", labels, (double)st.queued);
        dwb_metrics_set("dwb_spool_retrying", labels, (double)st.retrying);
        dwb_metrics_set("dwb_spool_failed", labels, (double)st.failed);
        dwb_metrics_set("dwb_spool_oldest_age_seconds", labels, st.oldest_age_s);
    }
}

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
    for (size_t i = 0; i < srv->upstreams.size(); i++) {
        // Probes must answer well within the kubelet's timeout: 3 s, no retries, same credentials.
        dwb_http_client_opts o;
        dwb_http_opts_from_upstream(&cfg->upstreams[i], &o);
        o.auth = srv->upstreams[i]->auth;
        o.connect_timeout_ms = 2000;
        o.timeout_ms = 3000;
        o.max_retries = 0;
        o.retry_budget_ms = 0;
        o.max_concurrent = 0;
        dwb_http_client *pc = nullptr;
        dwb_error pe = {};
        if (dwb_http_client_new(&o, &pc, &pe) != DWB_OK)
            DWB_WARN(nullptr, "upstream %s: no readiness probe: %s", cfg->upstreams[i].ae_title, pe.message);
        srv->probe_http.push_back(pc);
    }
    if (cfg->http.port > 0) {
        dwb_error oe = {};
        dwb_ops_opts oo = {};
        oo.bind = cfg->http.bind;
        oo.port = cfg->http.port;
        oo.ready = ready_probe;
        oo.refresh = refresh_gauges;
        oo.ud = srv;
        if (dwb_ops_start(&oo, &srv->ops, &oe) != DWB_OK)
            DWB_WARN(nullptr, "health and metrics endpoint not available: %s", oe.message);
        else
            DWB_INFO(nullptr, "health and metrics on http://%s:%d (/healthz, /readyz, /metrics)", cfg->http.bind,
                     cfg->http.port);
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
    OFCondition c = ASC_initializeNetwork(NET_ACCEPTOR, cfg->listen.port, cfg->listen.acse_timeout_s, &srv->net);
    if (c.bad()) {
        dwb_status st = fail(err, DWB_E_IO, "cannot listen", c);
        dwb_error_prefix(err, "listen.port %d", cfg->listen.port);
        dwb_server_free(srv);
        return st;
    }
    DcmTransportLayer *inner = nullptr;
    if (cfg->listen.tls_certificate) {
        std::string why;
        inner = dwb_tls_layer(NET_ACCEPTOR, cfg->listen.tls_certificate, cfg->listen.tls_key, cfg->listen.tls_ca,
                              cfg->listen.tls_require_client_certificate, why);
        if (!inner) {
            dwb_status st = dwb_error_set(err, DWB_E_INVALID, "listen.tls: %s", why.c_str());
            dwb_server_free(srv);
            return st;
        }
        DWB_INFO(nullptr, "DIMSE over TLS (BCP 195 profile)%s", cfg->listen.tls_require_client_certificate
                                                                    ? ", client certificates required"
                                                                    : "");
    } else {
        inner = new DcmTransportLayer();
    }
    if (ASC_setTransportLayer(srv->net, new HandoffLayer(inner), OFTrue).bad()) {
        dwb_status st = dwb_error_set(err, DWB_E_INTERNAL, "cannot set the listener's transport layer");
        dwb_server_free(srv);
        return st;
    }
    // The accepting thread polls, then accepts: a peer that resets in between must not block it in accept().
    int lfd = (int)reinterpret_cast<PRIVATE_NETWORKKEY *>(srv->net->network)->networkSpecific.TCP.listenSocket;
    // DCMTK listens with a backlog of 50; bursts of connections must wait in the kernel, not be dropped.
    if (listen(lfd, 1024) != 0) DWB_WARN(nullptr, "cannot raise the listen backlog: %s", strerror(errno));
    int fl = fcntl(lfd, F_GETFL);
    if (fl < 0 || fcntl(lfd, F_SETFL, fl | O_NONBLOCK) < 0) {
        dwb_status st = dwb_error_set(err, DWB_E_IO, "listen.port %d: cannot make the socket non-blocking: %s",
                                      cfg->listen.port, strerror(errno));
        dwb_server_free(srv);
        return st;
    }
    *out = srv;
    return DWB_OK;
}

extern "C" void dwb_server_request_stop(dwb_server *srv) {
    // Only atomics here: this runs in a signal handler.
    int lvl = srv->stop_level.fetch_add(1) + 1;
    if (lvl >= 2) srv->cancel_all.store(true);
}

namespace {

// Forgets a pending connection: true when it was still pending, false when the accepting thread closed it
// (listen.acse_timeout_s or listen.max_pending) and has logged why.
bool pending_done(dwb_server *srv, unsigned long id) {
    std::lock_guard<std::mutex> lk(srv->mu);
    for (auto it = srv->pending.begin(); it != srv->pending.end(); ++it) {
        if (it->id != id) continue;
        close(it->watch_fd);
        srv->pending.erase(it);
        return true;
    }
    return false;
}

// Closes a pending connection under its worker's feet: the worker's blocked read or TLS handshake fails and the
// worker cleans up. Called with srv->mu held.
void pending_close(dwb_server *srv, std::list<dwb_server::pending_conn>::iterator it) {
    shutdown(it->watch_fd, SHUT_RDWR);
    close(it->watch_fd);
    srv->pending.erase(it);
    dwb_metrics_add("dwb_associations_total", "result=\"closed_negotiating\"", 1);
}

// Everything after accept(), in the association's own thread: TLS handshake, A-ASSOCIATE-RQ, allow-lists,
// called AE title, limits, presentation contexts, then serving.
void negotiate(dwb_server *srv, int fd, unsigned long id) {
    const dwb_config *cfg = srv->cfg;
    T_ASC_Association *assoc = nullptr;
    OFCondition c;
    {
        std::unique_lock<std::mutex> handoff(g_handoff_mu);
        t_handoff = &handoff;
        t_handed = false;
        dcmExternalSocketHandle.set(fd);
        c = ASC_receiveAssociation(srv->net, &assoc, cfg->listen.max_pdu, nullptr, nullptr,
                                   cfg->listen.tls_certificate ? OFTrue : OFFalse, DUL_NOBLOCK,
                                   cfg->listen.acse_timeout_s);
        release_handoff(); // DCMTK failed before it created the connection
        t_handoff = nullptr;
    }
    if (!t_handed) close(fd);
    bool still_pending = pending_done(srv, id);
    char aid[24];
    snprintf(aid, sizeof aid, "a%lu", id);
    dwb_log_ctx lc = {};
    lc.assoc = aid;
    // DCMTK reports a connection closed before any PDU as success with empty parameters.
    bool no_request = c.good() && (!still_pending || assoc->params->DULparams.calledAPTitle[0] == '\0');
    if (c.bad() || no_request) {
        if (assoc) {
            ASC_dropAssociation(assoc);
            ASC_destroyAssociation(&assoc);
        }
        if (!still_pending) DWB_DEBUG(&lc, "closed while negotiating: %s", c.text());
        else if (no_request) DWB_DEBUG(&lc, "connection closed before an association request");
        else if (c == DUL_READTIMEOUT)
            DWB_INFO(&lc, "closing a connection: no association request within %d s (listen.acse_timeout_s)",
                     cfg->listen.acse_timeout_s);
        else DWB_WARN(&lc, "receiving an association request failed: %s", c.text());
        return;
    }
    dwb_set_nodelay(assoc);

    std::unique_ptr<dwb_assoc_ctx> ctx(new dwb_assoc_ctx());
    ctx->assoc = assoc;
    ctx->cfg = cfg;
    ctx->cancel_all = &srv->cancel_all;
    trim_ae(assoc->params->DULparams.callingAPTitle, ctx->calling);
    trim_ae(assoc->params->DULparams.calledAPTitle, ctx->called);
    char hostbuf[80];
    // DCMTK stores only the host for incoming associations, no port.
    OFStandard::strlcpy(hostbuf, assoc->params->DULparams.callingPresentationAddress, sizeof hostbuf);
    snprintf(ctx->peer, sizeof ctx->peer, "%s@%s", ctx->calling, hostbuf);
    OFStandard::strlcpy(ctx->id, aid, sizeof ctx->id);
    ctx->log.assoc = ctx->id;
    ctx->log.peer = ctx->peer;

    const char *why = nullptr;
    if (!allowed(cfg, ctx->calling, hostbuf, &why)) {
        DWB_WARN(&ctx->log, "association to %s rejected: %s", ctx->called, why);
        reject(assoc, ASC_RESULT_REJECTEDPERMANENT, ASC_SOURCE_SERVICEUSER, ASC_REASON_SU_CALLINGAETITLENOTRECOGNIZED);
        return;
    }
    char own[DWB_AE_MAX + 1];
    trim_ae(cfg->listen.ae_title, own);
    const dwb_upstream *up = nullptr;
    for (size_t i = 0; i < cfg->n_upstreams; i++) {
        char t[DWB_AE_MAX + 1];
        trim_ae(cfg->upstreams[i].ae_title, t);
        if (strcmp(t, ctx->called) == 0) {
            up = srv->upstreams[i];
            ctx->spool = srv->spools[i];
            ctx->uploader = srv->uploaders[i];
        }
    }
    if (!up && strcmp(own, ctx->called) != 0) {
        DWB_WARN(&ctx->log, "association rejected: called AE title '%s' is not an upstream of this bridge", ctx->called);
        reject(assoc, ASC_RESULT_REJECTEDPERMANENT, ASC_SOURCE_SERVICEUSER, ASC_REASON_SU_CALLEDAETITLENOTRECOGNIZED);
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
    }
    if (count_accepted(assoc->params) == 0) {
        DWB_WARN(&ctx->log, "association rejected: none of the proposed presentation contexts is supported%s",
                 up ? "" : " (the bridge's own AE title offers Verification only)");
        reject(assoc, ASC_RESULT_REJECTEDPERMANENT, ASC_SOURCE_SERVICEUSER, ASC_REASON_SU_NOREASON);
        return;
    }
    {
        std::lock_guard<std::mutex> lk(srv->mu);
        if (srv->active >= cfg->listen.max_associations) {
            DWB_WARN(&ctx->log, "association rejected (transient): %d associations already active (listen.max_associations)",
                     srv->active);
            reject(assoc, ASC_RESULT_REJECTEDTRANSIENT, ASC_SOURCE_SERVICEPROVIDER_PRESENTATION_RELATED,
                   ASC_REASON_SP_PRES_LOCALLIMITEXCEEDED);
            return;
        }
        srv->active++;
        dwb_metrics_add("dwb_associations_total", "result=\"accepted\"", 1);
        dwb_metrics_set("dwb_associations_active", nullptr, srv->active);
    }
    serve_association(srv, ctx.get());
    std::lock_guard<std::mutex> lk(srv->mu);
    srv->active--;
    dwb_metrics_set("dwb_associations_active", nullptr, srv->active);
}

// Closes pending connections past listen.acse_timeout_s. Needed beyond DCMTK's own ARTIM timer: a TLS
// handshake has no timeout of its own. Called with srv->mu held.
void reap_overdue(dwb_server *srv, std::chrono::steady_clock::time_point now) {
    while (!srv->pending.empty() && srv->pending.front().deadline <= now) {
        auto it = srv->pending.begin();
        DWB_INFO(nullptr, "a%lu: closing the connection from %s: no association after %d s (listen.acse_timeout_s)",
                 it->id, it->ip, srv->cfg->listen.acse_timeout_s);
        pending_close(srv, it);
    }
}

} // namespace

extern "C" dwb_status dwb_server_run(dwb_server *srv, dwb_error *err) {
    const dwb_config *cfg = srv->cfg;
    DWB_INFO(nullptr, "listening on port %d as %s; %zu upstream AE title(s), max %d associations, max %d negotiating",
             cfg->listen.port, cfg->listen.ae_title, cfg->n_upstreams, cfg->listen.max_associations,
             cfg->listen.max_pending);
    const int lfd = (int)reinterpret_cast<PRIVATE_NETWORKKEY *>(srv->net->network)->networkSpecific.TCP.listenSocket;
    // This thread only accepts: one connection that never speaks must not delay the others.
    while (srv->stop_level.load() == 0) {
        {
            std::lock_guard<std::mutex> lk(srv->mu);
            reap_overdue(srv, std::chrono::steady_clock::now());
        }
        struct pollfd p = {lfd, POLLIN, 0};
        if (poll(&p, 1, 200) <= 0) continue;
        struct sockaddr_storage from;
        socklen_t len = sizeof from;
        int fd = accept4(lfd, reinterpret_cast<struct sockaddr *>(&from), &len, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED) continue;
            DWB_WARN(nullptr, "accepting a connection failed: %s", strerror(errno));
            // Out of descriptors: give the workers time to free some rather than spinning.
            if (errno == EMFILE || errno == ENFILE) std::this_thread::sleep_for(std::chrono::milliseconds(100));
            continue;
        }
        int watch = fcntl(fd, F_DUPFD_CLOEXEC, 0);
        if (watch < 0) {
            DWB_WARN(nullptr, "accepting a connection failed: %s", strerror(errno));
            close(fd);
            continue;
        }
        dwb_server::pending_conn pc = {};
        pc.id = srv->next_id++;
        pc.watch_fd = watch;
        pc.deadline = std::chrono::steady_clock::now() + std::chrono::seconds(cfg->listen.acse_timeout_s);
        if (from.ss_family == AF_INET)
            inet_ntop(AF_INET, &reinterpret_cast<struct sockaddr_in *>(&from)->sin_addr, pc.ip, sizeof pc.ip);
        else if (from.ss_family == AF_INET6)
            inet_ntop(AF_INET6, &reinterpret_cast<struct sockaddr_in6 *>(&from)->sin6_addr, pc.ip, sizeof pc.ip);
        else
            snprintf(pc.ip, sizeof pc.ip, "?");
        {
            std::lock_guard<std::mutex> lk(srv->mu);
            // Full: the connection negotiating longest goes, so silent connections cannot lock real peers out.
            if ((int)srv->pending.size() >= cfg->listen.max_pending) {
                auto it = srv->pending.begin();
                DWB_WARN(nullptr, "a%lu: closing the connection from %s: %d connections still negotiating (listen.max_pending)",
                         it->id, it->ip, (int)srv->pending.size());
                pending_close(srv, it);
            }
            srv->pending.push_back(pc);
            srv->negotiating++;
        }
        unsigned long id = pc.id;
        try {
            std::thread([srv, fd, id]() {
                negotiate(srv, fd, id);
                std::lock_guard<std::mutex> lk(srv->mu);
                srv->negotiating--;
                srv->cv.notify_all();
            }).detach();
        } catch (const std::exception &e) {
            DWB_ERROR(nullptr, "cannot start a thread for a connection from %s: %s", pc.ip, e.what());
            pending_done(srv, id);
            close(fd);
            std::lock_guard<std::mutex> lk(srv->mu);
            srv->negotiating--;
        }
    }
    std::unique_lock<std::mutex> lk(srv->mu);
    // Connections still negotiating are closed; associations drain (or are cancelled by a second signal).
    while (!srv->pending.empty()) pending_close(srv, srv->pending.begin());
    if (srv->active > 0) DWB_INFO(nullptr, "stopping: waiting for %d association(s) to finish", srv->active);
    srv->cv.wait(lk, [srv] { return srv->negotiating == 0; });
    DWB_INFO(nullptr, "stopped");
    (void)err;
    return DWB_OK;
}

extern "C" void dwb_server_free(dwb_server *srv) {
    if (!srv) return;
    srv->probe_stop.store(true);
    dwb_ops_stop(srv->ops);
    dwb_gateway_stop(srv->gateway);
    for (dwb_http_client *c : srv->probe_http) dwb_http_client_free(c);
    if (srv->net) ASC_dropNetwork(&srv->net);
    dwb_commit_shutdown();
    // Uploaders first: they use the upstreams' HTTP clients. Spooled files stay for the next start.
    for (dwb_uploader *u : srv->uploaders) dwb_uploader_stop(u);
    for (dwb_spool *sp : srv->spools) dwb_spool_close(sp);
    for (dwb_upstream *up : srv->upstreams) dwb_upstream_free(up);
    delete srv;
}
