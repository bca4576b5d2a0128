// DCMTK adapter for the accept loop and admission of the DIMSE listener: the accepting thread accepts and keeps
// each new connection in its poll set until the peer sends its first bytes; only then does a worker thread take
// it to negotiate (TLS handshake, A-ASSOCIATE-RQ) and check the allow-lists. Connections still negotiating,
// waiting or in a worker, are bounded by listen.max_pending and closed after listen.acse_timeout_s.
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmnet/assoc.h"
#include "dcmtk/dcmnet/dcmtrans.h"
#include "dcmtk/dcmnet/dul.h"
#include "dcmtk/dcmnet/dulstruc.h"
#include "dcmtk/ofstd/ofstd.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <list>
#include <map>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "dwb_cidr.h"
#include "dwb_dimse.hh"
#include "dwb_listener.hh"

extern "C" {
#include "dwb_log.h"
#include "dwb_metrics.h"
}

struct dwb_listener {
    const dwb_config *cfg = nullptr;
    T_ASC_Network *net = nullptr;
    int lfd = -1;
    std::mutex mu;
    std::condition_variable cv;
    int active = 0; // associations being served (listen.max_associations); guarded by mu
    std::map<std::string, int> per_host; // the same per calling address (listen.max_associations_per_host)
    unsigned long next_id = 1;
    // Connections accepted but not yet through negotiation, oldest first, in two stages. Waiting: the peer has
    // sent nothing yet; the accepting thread owns fd and polls it, and no thread exists for it, so that silent
    // connections cost a descriptor each and nothing else. Negotiating: the first bytes came and a worker owns
    // the socket; the accepting thread closes it (through watch_fd, a dup of the worker's socket, so that a
    // number DCMTK closed and the kernel reused is never touched). Either is closed when it exceeds
    // listen.acse_timeout_s or listen.max_pending. Guarded by mu.
    struct pending_conn {
        unsigned long id;
        int fd;       // waiting: the socket; -1 once a worker has it
        int watch_fd; // negotiating: the dup; -1 while waiting
        std::chrono::steady_clock::time_point deadline;
        char ip[INET6_ADDRSTRLEN];
    };
    std::list<pending_conn> pending;
    int workers = 0; // worker threads not yet returned, evicted ones included; guarded by mu
};

namespace {

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

bool peer_is_numeric_ip(const char *host) {
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

bool allowed(const dwb_config *cfg, const char *calling, const char *host, const char **why) {
    if (cfg->listen.n_allow_calling_ae > 0) {
        bool ok = false;
        for (size_t i = 0; i < cfg->listen.n_allow_calling_ae && !ok; i++) {
            char t[DWB_AE_MAX + 1];
            dwb_trim_ae(cfg->listen.allow_calling_ae[i], t);
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
            ok = peer_is_numeric_ip(host) && dwb_cidr_match(cfg->listen.allow_hosts[i], host);
        if (!ok) {
            *why = "peer address not in listen.allow_hosts";
            return false;
        }
    }
    return true;
}

// Forgets a pending connection: true when it was still pending, false when the accepting thread closed it
// (listen.acse_timeout_s or listen.max_pending) and has logged why.
bool pending_done(dwb_listener *l, unsigned long id) {
    std::lock_guard<std::mutex> lk(l->mu);
    for (auto it = l->pending.begin(); it != l->pending.end(); ++it) {
        if (it->id != id) continue;
        close(it->watch_fd);
        l->pending.erase(it);
        return true;
    }
    return false;
}

// Closes a pending connection: a waiting one simply, a negotiating one under its worker's feet (the worker's
// blocked read or TLS handshake fails and the worker cleans up). Called with l->mu held.
void pending_close(dwb_listener *l, std::list<dwb_listener::pending_conn>::iterator it) {
    if (it->watch_fd >= 0) {
        shutdown(it->watch_fd, SHUT_RDWR);
        close(it->watch_fd);
    }
    if (it->fd >= 0) close(it->fd);
    l->pending.erase(it);
    dwb_metrics_add("dwb_associations_total", "result=\"closed_negotiating\"", 1);
}

// Everything after accept(), in the association's own thread: TLS handshake, A-ASSOCIATE-RQ, allow-lists, then
// the server's serve function.
void negotiate(dwb_listener *l, int fd, unsigned long id, dwb_listener_serve_fn serve, void *ud) {
    const dwb_config *cfg = l->cfg;
    T_ASC_Association *assoc = nullptr;
    OFCondition c;
    {
        std::unique_lock<std::mutex> handoff(g_handoff_mu);
        t_handoff = &handoff;
        t_handed = false;
        dcmExternalSocketHandle.set(fd);
        c = ASC_receiveAssociation(l->net, &assoc, cfg->listen.max_pdu, nullptr, nullptr,
                                   cfg->listen.tls_certificate ? OFTrue : OFFalse, DUL_NOBLOCK,
                                   cfg->listen.acse_timeout_s);
        release_handoff(); // DCMTK failed before it created the connection
        t_handoff = nullptr;
    }
    if (!t_handed) close(fd);
    bool still_pending = pending_done(l, id);
    dwb_admitted a = {};
    snprintf(a.id, sizeof a.id, "a%lu", id);
    dwb_log_ctx lc = {};
    lc.assoc = a.id;
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
    a.assoc = assoc;
    dwb_trim_ae(assoc->params->DULparams.callingAPTitle, a.calling);
    dwb_trim_ae(assoc->params->DULparams.calledAPTitle, a.called);
    OFStandard::strlcpy(a.host, assoc->params->DULparams.callingPresentationAddress, sizeof a.host);

    const char *why = nullptr;
    if (!allowed(cfg, a.calling, a.host, &why)) {
        char peer[112];
        snprintf(peer, sizeof peer, "%s@%s", a.calling, a.host);
        lc.peer = peer;
        DWB_WARN(&lc, "association to %s rejected: %s", a.called, why);
        dwb_reject(assoc, ASC_RESULT_REJECTEDPERMANENT, ASC_SOURCE_SERVICEUSER,
                   ASC_REASON_SU_CALLINGAETITLENOTRECOGNIZED);
        return;
    }
    serve(ud, &a);
}

// Closes pending connections past listen.acse_timeout_s. Needed beyond DCMTK's own ARTIM timer: a TLS
// handshake has no timeout of its own. Called with l->mu held.
void reap_overdue(dwb_listener *l, std::chrono::steady_clock::time_point now) {
    while (!l->pending.empty() && l->pending.front().deadline <= now) {
        auto it = l->pending.begin();
        DWB_INFO(nullptr, "a%lu: closing the connection from %s: no association after %d s (listen.acse_timeout_s)",
                 it->id, it->ip, l->cfg->listen.acse_timeout_s);
        pending_close(l, it);
    }
}

// Takes every connection the kernel has queued, so that a burst (200 silent connections, then a real peer) is
// in the poll set at once instead of one per poll round. Each starts waiting, with no thread. Returns false
// when out of descriptors.
bool accept_all(dwb_listener *l) {
    const dwb_config *cfg = l->cfg;
    for (int n = 0; n < 4096; n++) {
        struct sockaddr_storage from;
        socklen_t len = sizeof from;
        int fd = accept4(l->lfd, reinterpret_cast<struct sockaddr *>(&from), &len, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
            if (errno == EINTR || errno == ECONNABORTED) continue;
            DWB_WARN(nullptr, "accepting a connection failed: %s", strerror(errno));
            return !(errno == EMFILE || errno == ENFILE);
        }
        dwb_listener::pending_conn pc = {};
        pc.fd = fd;
        pc.watch_fd = -1;
        pc.deadline = std::chrono::steady_clock::now() + std::chrono::seconds(cfg->listen.acse_timeout_s);
        if (from.ss_family == AF_INET)
            inet_ntop(AF_INET, &reinterpret_cast<struct sockaddr_in *>(&from)->sin_addr, pc.ip, sizeof pc.ip);
        else if (from.ss_family == AF_INET6)
            inet_ntop(AF_INET6, &reinterpret_cast<struct sockaddr_in6 *>(&from)->sin6_addr, pc.ip, sizeof pc.ip);
        else
            snprintf(pc.ip, sizeof pc.ip, "?");
        std::lock_guard<std::mutex> lk(l->mu);
        pc.id = l->next_id++;
        // Full: the connection negotiating longest goes, so silent connections cannot lock real peers out.
        if ((int)l->pending.size() >= cfg->listen.max_pending) {
            auto it = l->pending.begin();
            DWB_WARN(nullptr, "a%lu: closing the connection from %s: %d connections still negotiating (listen.max_pending)",
                     it->id, it->ip, (int)l->pending.size());
            pending_close(l, it);
        }
        l->pending.push_back(pc);
    }
    return true;
}

// A waiting connection became readable: its first bytes (an A-ASSOCIATE-RQ or a TLS ClientHello) are there, so
// a worker takes it now and reads without waiting. A peer that closed without a word is closed here.
void hand_over(dwb_listener *l, unsigned long id, dwb_listener_serve_fn serve, void *ud) {
    int fd;
    char ip[INET6_ADDRSTRLEN];
    {
        std::lock_guard<std::mutex> lk(l->mu);
        auto it = l->pending.begin();
        while (it != l->pending.end() && it->id != id) ++it;
        if (it == l->pending.end() || it->fd < 0) return;
        char b;
        ssize_t r = recv(it->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
        if (r <= 0) {
            DWB_DEBUG(nullptr, "a%lu: connection from %s closed before an association request", id, it->ip);
            close(it->fd);
            l->pending.erase(it);
            return;
        }
        int watch = fcntl(it->fd, F_DUPFD_CLOEXEC, 0);
        if (watch < 0) {
            DWB_WARN(nullptr, "a%lu: closing the connection from %s: %s", id, it->ip, strerror(errno));
            close(it->fd);
            l->pending.erase(it);
            return;
        }
        fd = it->fd;
        it->fd = -1;
        it->watch_fd = watch;
        memcpy(ip, it->ip, sizeof ip);
        l->workers++;
    }
    try {
        std::thread([l, fd, id, serve, ud]() {
            negotiate(l, fd, id, serve, ud);
            std::lock_guard<std::mutex> lk(l->mu);
            l->workers--;
            l->cv.notify_all();
        }).detach();
    } catch (const std::exception &e) {
        DWB_ERROR(nullptr, "cannot start a thread for a connection from %s: %s", ip, e.what());
        pending_done(l, id);
        close(fd);
        std::lock_guard<std::mutex> lk(l->mu);
        l->workers--;
    }
}

} // namespace

void dwb_trim_ae(const char *in, char *out) {
    size_t n = strnlen(in, DWB_AE_MAX);
    while (n > 0 && in[n - 1] == ' ') n--;
    size_t s = 0;
    while (s < n && in[s] == ' ') s++;
    memcpy(out, in + s, n - s);
    out[n - s] = '\0';
}

void dwb_reject(T_ASC_Association *assoc, T_ASC_RejectParametersResult result, T_ASC_RejectParametersSource source,
                T_ASC_RejectParametersReason reason) {
    dwb_metrics_add("dwb_associations_total", "result=\"rejected\"", 1);
    T_ASC_RejectParameters rej = {result, source, reason};
    ASC_rejectAssociation(assoc, &rej);
    ASC_dropAssociation(assoc);
    ASC_destroyAssociation(&assoc);
}

bool dwb_listener_enter(dwb_listener *l, const char *host, int *active, int *from_host) {
    std::lock_guard<std::mutex> lk(l->mu);
    *active = l->active;
    int &mine = l->per_host[host];
    *from_host = mine;
    if (l->active >= l->cfg->listen.max_associations || mine >= l->cfg->listen.max_associations_per_host) {
        if (mine == 0) l->per_host.erase(host);
        return false;
    }
    l->active++;
    mine++;
    dwb_metrics_add("dwb_associations_total", "result=\"accepted\"", 1);
    dwb_metrics_set("dwb_associations_active", nullptr, l->active);
    return true;
}

void dwb_listener_leave(dwb_listener *l, const char *host) {
    std::lock_guard<std::mutex> lk(l->mu);
    l->active--;
    auto it = l->per_host.find(host);
    if (it != l->per_host.end() && --it->second <= 0) l->per_host.erase(it);
    dwb_metrics_set("dwb_associations_active", nullptr, l->active);
}

dwb_status dwb_listener_new(const dwb_config *cfg, DcmTransportLayer *tls, dwb_listener **out, dwb_error *err) {
    *out = nullptr;
    DcmTransportLayer *inner = tls ? tls : new DcmTransportLayer();
    dwb_listener *l = new (std::nothrow) dwb_listener;
    if (!l) {
        delete inner;
        return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    }
    l->cfg = cfg;
    OFCondition c = ASC_initializeNetwork(NET_ACCEPTOR, cfg->listen.port, cfg->listen.acse_timeout_s, &l->net);
    if (c.bad()) {
        delete inner;
        dwb_listener_free(l);
        return dwb_error_set(err, DWB_E_IO, "listen.port %d: cannot listen: %s", cfg->listen.port, c.text());
    }
    if (ASC_setTransportLayer(l->net, new HandoffLayer(inner), OFTrue).bad()) {
        dwb_listener_free(l);
        return dwb_error_set(err, DWB_E_INTERNAL, "cannot set the listener's transport layer");
    }
    // The accepting thread polls, then accepts: a peer that resets in between must not block it in accept().
    l->lfd = (int)reinterpret_cast<PRIVATE_NETWORKKEY *>(l->net->network)->networkSpecific.TCP.listenSocket;
    // DCMTK listens with a backlog of 50; bursts of connections must wait in the kernel, not be dropped.
    if (listen(l->lfd, 1024) != 0) DWB_WARN(nullptr, "cannot raise the listen backlog: %s", strerror(errno));
    int fl = fcntl(l->lfd, F_GETFL);
    if (fl < 0 || fcntl(l->lfd, F_SETFL, fl | O_NONBLOCK) < 0) {
        dwb_status st = dwb_error_set(err, DWB_E_IO, "listen.port %d: cannot make the socket non-blocking: %s",
                                      cfg->listen.port, strerror(errno));
        dwb_listener_free(l);
        return st;
    }
    *out = l;
    return DWB_OK;
}

void dwb_listener_run(dwb_listener *l, const std::atomic<int> *stop, dwb_listener_serve_fn serve, void *ud) {
    // One poll over the listening socket and every waiting connection: one connection that never speaks must
    // not delay the others, nor cost a thread.
    std::vector<struct pollfd> fds;
    std::vector<unsigned long> ids; // ids[i] is the pending connection polled in fds[i]; fds[0] listens
    while (stop->load() == 0) {
        int wait_ms = 200; // how often *stop is looked at
        fds.clear();
        ids.clear();
        fds.push_back({l->lfd, POLLIN, 0});
        ids.push_back(0);
        {
            std::lock_guard<std::mutex> lk(l->mu);
            auto now = std::chrono::steady_clock::now();
            reap_overdue(l, now);
            for (const auto &pc : l->pending) {
                if (pc.fd < 0) continue;
                fds.push_back({pc.fd, POLLIN, 0});
                ids.push_back(pc.id);
            }
            if (!l->pending.empty()) {
                auto left = std::chrono::duration_cast<std::chrono::milliseconds>(l->pending.front().deadline - now);
                if (left.count() + 1 < wait_ms) wait_ms = (int)left.count() + 1;
            }
        }
        if (poll(fds.data(), fds.size(), wait_ms) <= 0) continue;
        // The connections that spoke first: accepting may close the oldest waiting ones (listen.max_pending).
        for (size_t i = 1; i < fds.size(); i++)
            if (fds[i].revents) hand_over(l, ids[i], serve, ud);
        // Out of descriptors: give the workers time to free some rather than spinning.
        if ((fds[0].revents & POLLIN) && !accept_all(l)) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    std::unique_lock<std::mutex> lk(l->mu);
    // Connections still negotiating are closed; associations drain (or are cancelled by a second signal).
    while (!l->pending.empty()) pending_close(l, l->pending.begin());
    if (l->active > 0) DWB_INFO(nullptr, "stopping: waiting for %d association(s) to finish", l->active);
    l->cv.wait(lk, [l] { return l->workers == 0; });
}

void dwb_listener_free(dwb_listener *l) {
    if (!l) return;
    if (l->net) ASC_dropNetwork(&l->net);
    delete l;
}
