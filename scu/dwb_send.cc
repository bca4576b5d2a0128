// DCMTK adapter for the sender (dwb_send.h): fetch threads stream the plan from the store (dicomweb/
// dwb_retrieve.c) and queue each instance; the calling thread stamps and sends them by C-STORE, or per series by
// STOW-RS, and reports through the caller's sink. Shared by C-MOVE, C-GET and import. Instances the destination
// takes only decoded are decoded ahead of the sending thread by a few decoder threads, in queue order.
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dccodec.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcfilefo.h"
#include "dcmtk/dcmdata/dcistrma.h"
#include "dcmtk/dcmdata/dcistrmb.h"
#include "dcmtk/dcmdata/dcmetinf.h"
#include "dcmtk/dcmdata/dcostrmb.h"
#include "dcmtk/dcmdata/dcrledrg.h"
#include "dcmtk/dcmdata/dcuid.h"
#include "dcmtk/dcmdata/dcxfer.h"
#include "dcmtk/dcmjpeg/djdecode.h"
#include "dcmtk/dcmjpls/djdecode.h"
#include "dcmtk/dcmnet/assoc.h"
#include "dcmtk/dcmnet/dimse.h"

#include <pthread.h>
#include <sched.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "dwb_dimse.hh"
#include "dwb_j2k_codec.hh"

extern "C" {
#include "dwb_activity.h"
#include "dwb_bufpool.h"
#include "dwb_nesting.h"
#include "dwb_splice.h"
#include "dwb_tags.h"
#include "dwb_send.h"
#include "dwb_stow.h"
#include "dwb_stow_send.h"
}

namespace {

const size_t kMaxInstanceBytes = (size_t)1 << 30;

void register_codecs() {
    static std::once_flag once;
    std::call_once(once, [] {
        DJDecoderRegistration::registerCodecs();
        DJLSDecoderRegistration::registerCodecs();
        DcmRLEDecoderRegistration::registerCodecs();
        dwb_j2k_register_codecs();
    });
}

const char *const kUncompressed[] = {UID_LittleEndianExplicitTransferSyntax, UID_LittleEndianImplicitTransferSyntax};
const char *const kCompressed[] = {UID_JPEGProcess1TransferSyntax,         UID_JPEGProcess2_4TransferSyntax,
                                   UID_JPEGProcess14TransferSyntax,        UID_JPEGProcess14SV1TransferSyntax,
                                   UID_JPEGLSLosslessTransferSyntax,       UID_JPEGLSLossyTransferSyntax,
                                   UID_JPEG2000LosslessOnlyTransferSyntax, UID_JPEG2000TransferSyntax,
                                   UID_RLELosslessTransferSyntax,          UID_DeflatedExplicitVRLittleEndianTransferSyntax};

// The outcome of one C-STORE sub-operation.
enum class Sent {
    Ok,       // success status
    Warning,  // a warning status (0xB...): delivered
    Failed,   // this instance failed; go on with the next
    DestDead, // the association to the destination is gone: everything after fails too
};

// ---- parsing an instance without copying its large values ----

// DCMTK's reader recurses once per sequence level: an instance from a store or bucket nested deeper than
// DWB_NESTING_MAX is refused from its bytes before DCMTK reads it.
// How long a C-STORE-RSP is awaited, from a destination or from a C-GET requester: listen.dimse_timeout_s (a
// requester that never answers a sub-operation would hold the worker for ever).
int rsp_timeout_s(const dwb_send_opts *o) { return o && o->cfg ? o->cfg->listen.dimse_timeout_s : 0; }

OFCondition nesting_ok(const void *p, size_t n) {
    dwb_error err = {};
    if (dwb_nesting_check_file(static_cast<const unsigned char *>(p), n, DWB_NESTING_MAX, &err) == DWB_E_LIMIT)
        return makeOFCondition(OFM_dcmdata, 900, OF_error, err.message);
    return EC_Normal;
}

// The bytes of one instance as the store sent them, shared by the parsed data set and the deferred values that
// still point into them; freed when the last of those goes.
struct Bytes {
    void *p;
    size_t n, cap;
    Bytes(void *data, size_t len, size_t capacity) : p(data), n(len), cap(capacity) {}
    ~Bytes() { dwb_buf_put(p, cap); }
    Bytes(const Bytes &) = delete;
    Bytes &operator=(const Bytes &) = delete;
};

// DCMTK defers reading a large value only from a stream that can make a factory for a second stream positioned
// at that value (files do; its memory buffer stream does not). This stream over shared bytes can: values above
// kDeferBytes stay in the store's buffer until the data set is written to the destination, instead of being
// copied into fresh memory at parse time (measured by bench/move.py: that copy was the largest cost left in the
// bridge's CPU).
class BytesStream : public DcmInputStream {
  public:
    explicit BytesStream(std::shared_ptr<Bytes> b) : DcmInputStream(&producer_), b_(std::move(b)) {
        producer_.setBuffer(b_->p, (offile_off_t)b_->n);
        producer_.setEos();
    }
    DcmInputStreamFactory *newFactory() const override;

  private:
    DcmBufferProducer producer_;
    std::shared_ptr<Bytes> b_;
};

class BytesFactory : public DcmInputStreamFactory {
  public:
    BytesFactory(std::shared_ptr<Bytes> b, offile_off_t at) : b_(std::move(b)), at_(at) {}
    DcmInputStream *create() const override {
        BytesStream *s = new BytesStream(b_);
        s->skip(at_);
        return s;
    }
    DcmInputStreamFactory *clone() const override { return new BytesFactory(b_, at_); }
    // DCMTK knows two kinds; it asks only to tell temporary files, which these are not.
    DcmInputStreamFactoryType ident() const override { return DFT_DcmInputFileStreamFactory; }

  private:
    std::shared_ptr<Bytes> b_;
    offile_off_t at_;
};

DcmInputStreamFactory *BytesStream::newFactory() const {
    // Not through a filter (a deflated data set is read through one): then everything is read now.
    return currentProducer() == &producer_ ? new BytesFactory(b_, tell()) : nullptr;
}

const Uint32 kDeferBytes = 4096;

// ---- the process-wide retrieve budget: bytes of fetched instances waiting to be sent or being assembled by the
// fetch threads, all runs together ----

std::mutex g_budget_mu;
size_t g_budget_held = 0;

// A producer waiting for room, with the instance it holds. Waiters are woken one by one, oldest first, when their
// instance fits (or their run's queue is empty): waking every fetch thread for each instance sent cost more CPU
// than the wake-ups did work.
struct Sender;
struct BudgetWaiter {
    const Sender *s = nullptr;
    size_t bytes = 0, budget = 0;
    bool go = false;
    std::condition_variable cv;
};
std::vector<BudgetWaiter *> g_budget_waiters; // oldest first; under g_budget_mu
// Of g_budget_held: native pixels decoded ahead of the sending threads (decode_ahead), all runs together. They may
// go beyond the budget by a quarter of it (one instance per run always may), so that decoding, which the senders
// wait for, is not starved by fetch threads that are already far ahead; the fetch threads then wait.
size_t g_decoded_held = 0;

// ---- destinations[].max_associations: associations open at once towards one destination, all C-MOVE and import
// runs of the process together ----

// A run sends on one association at a time (associating again for a SOP class it did not propose closes the first),
// so a run holds one slot from before it associates until its association is closed, and the limit bounds the
// runs sending to that destination at once.
struct SlotWaiter {
    bool granted = false;
    std::condition_variable cv;
};
struct DestSlots {
    int busy = 0;
    std::deque<SlotWaiter *> waiting; // oldest first: a slot that frees goes to the run that has waited longest
};
std::mutex g_slots_mu;
std::map<std::string, DestSlots> g_slots; // by destinations[].ae_title (unique); under g_slots_mu

int slot_limit(const dwb_destination_conf *d) { return d->max_associations > 0 ? d->max_associations : 1; }

// Under g_slots_mu: hands free slots to the oldest waiters.
void grant_slots(DestSlots &d, int max) {
    while (d.busy < max && !d.waiting.empty()) {
        SlotWaiter *w = d.waiting.front();
        d.waiting.pop_front();
        w->granted = true;
        d.busy++;
        w->cv.notify_one();
    }
}

// A slot held by a run, given back when the run ends (after its association is closed).
struct SlotHold {
    const dwb_destination_conf *dest = nullptr;
    SlotHold() = default;
    SlotHold(const SlotHold &) = delete;
    SlotHold &operator=(const SlotHold &) = delete;
    ~SlotHold() {
        if (!dest) return;
        std::lock_guard<std::mutex> lk(g_slots_mu);
        DestSlots &d = g_slots[dest->ae_title];
        d.busy--;
        grant_slots(d, slot_limit(dest));
    }
};

// ---- destination association ----

struct Dest {
    T_ASC_Association *assoc = nullptr;
    T_ASC_Network *net = nullptr;
    bool own = false; // false: the requester's association (C-GET), not ours to close
    DIC_US next_msg_id = 1;
};

void close_dest(Dest &d, bool abort) {
    if (!d.own) return;
    if (d.assoc) {
        if (abort) ASC_abortAssociation(d.assoc);
        else ASC_releaseAssociation(d.assoc);
        ASC_destroyAssociation(&d.assoc);
    }
    if (d.net) ASC_dropNetwork(&d.net);
}

bool open_destination(const dwb_config *cfg, const dwb_destination_conf *d, const std::vector<std::string> &classes,
                      Dest &t, std::string &why) {
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
        close_dest(t, false);
        return false;
    }
    return true;
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

// ---- provenance stamp ----

std::string now_dt() {
    char buf[32];
    time_t t = time(nullptr);
    struct tm tmv;
    gmtime_r(&t, &tmv);
    strftime(buf, sizeof buf, "%Y%m%d%H%M%S+0000", &tmv);
    return buf;
}

// "host[:port]" of a URL, without scheme, credentials or path.
std::string url_host(const char *url) {
    const char *p = strstr(url, "://");
    p = p ? p + 3 : url;
    const char *end = p + strcspn(p, "/?#");
    const char *at = static_cast<const char *>(memchr(p, '@', (size_t)(end - p)));
    if (at) p = at + 1;
    return std::string(p, (size_t)(end - p));
}

// PS3.3 C.12.1.1.9: what the bridge changed and where the instance came from, inside the data set itself (file
// meta such as Source AE Title does not survive a C-STORE). The stamp is three top-level elements: an item of
// Original Attributes Sequence (appended), Retrieve URL and Retrieve AE Title (replaced). This is the item, with
// the previous values of Retrieve URL and Retrieve AE Title (nullptr: the instance had none).
DcmItem *stamp_item(const char *prev_url, const char *prev_ae, const dwb_upstream_conf *up, const char *bridge_ae,
                    const std::string &url) {
    DcmItem *item = new DcmItem();
    DcmItem *prev = new DcmItem();
    if (prev_url) prev->putAndInsertString(DCM_RetrieveURL, prev_url);
    else prev->insertEmptyElement(DCM_RetrieveURL);
    if (prev_ae) prev->putAndInsertString(DCM_RetrieveAETitle, prev_ae);
    else prev->insertEmptyElement(DCM_RetrieveAETitle);
    item->insertSequenceItem(DCM_ModifiedAttributesSequence, prev);
    item->putAndInsertString(DCM_AttributeModificationDateTime, now_dt().c_str());
    item->putAndInsertString(DCM_ModifyingSystem, bridge_ae);
    // Source of Previous Values is LO (64 characters at most): the upstream's AE title and the host the instance
    // came from (the store's, or the bucket's for IDC bulk data); the full URL is in Retrieve URL (UR, no limit).
    std::string source = std::string(up->ae_title) + " " + url_host(url.c_str());
    if (source.size() > 64) source.resize(64);
    item->putAndInsertString(DCM_SourceOfPreviousValues, source.c_str());
    item->putAndInsertString(DCM_ReasonForTheAttributeModification, "COERCE");
    return item;
}

// Puts the stamp into a data set (takes item).
void put_stamp(DcmItem *into, DcmItem *item, const dwb_upstream_conf *up, const std::string &url) {
    into->insertSequenceItem(DCM_OriginalAttributesSequence, item, -2);
    into->putAndInsertString(DCM_RetrieveURL, url.c_str());
    into->putAndInsertString(DCM_RetrieveAETitle, up->ae_title);
}

void stamp(DcmDataset *ds, const dwb_upstream_conf *up, const char *bridge_ae, const std::string &url) {
    OFString prev_url, prev_ae;
    bool has_url = ds->findAndGetOFStringArray(DCM_RetrieveURL, prev_url).good();
    bool has_ae = ds->findAndGetOFStringArray(DCM_RetrieveAETitle, prev_ae).good();
    put_stamp(ds, stamp_item(has_url ? prev_url.c_str() : nullptr, has_ae ? prev_ae.c_str() : nullptr, up, bridge_ae, url),
              up, url);
}

// The stamp's three elements in ascending tag order, for splicing into encoded bytes (translate/dwb_splice.h).
const uint32_t kStampTags[3] = {DWB_TAG_RETRIEVE_AE, DWB_TAG_RETRIEVE_URL, DWB_TAG_ORIGINAL_ATTRS_SEQ};

// ---- one run ----

struct Sender {
    // What the caller asked; fixed for the run.
    struct {
        const dwb_send_opts *o;
        const dwb_send_sink *sink;
        const dwb_rplan *plan;
        size_t budget; // bytes of queued instances, this run and all others together
        bool splice;   // instances may go as received (plain TCP, no bursts): parse them short, plan the splice
    } set;

    // Where the run stands; the sending thread only.
    struct {
        dwb_send_totals *t;
        Dest dest;
        std::string dest_why; // why the destination failed (dest_dead)
        std::vector<std::string> classes; // SOP classes proposed to an own destination
        bool halted = false;  // the sink's progress asked to stop (requester gone)
        SlotHold slot;        // an own destination's max_associations slot, once taken (take_slot)
    } state;

    // Series bursts: each series is written to disk and sent at once when complete. Sending thread only.
    struct Burst {
        size_t seen = 0, failed = 0;
        std::vector<std::pair<std::string, std::string>> files; // path, SOP Instance UID
        std::vector<size_t> sizes;
    };
    std::map<const dwb_rseries *, Burst> bursts;
    bool burst = false;

    // The queue between fetch threads (producers) and the sending thread (consumer).
    struct Item {
        std::unique_ptr<DcmFileFormat> ff; // the instance parsed by DCMTK; null when spliceable or not delivered
        std::shared_ptr<Bytes> raw;        // the bytes as the store sent them
        // Set when the instance can go as received (store_as_received): then it was read by header walks (peek)
        // instead of DCMTK, its data set starts at raw + ds_off in transfer syntax xfer, and the stamp's
        // elements go at[0..2], with the previous Retrieve AE Title and URL kept in prev_ae and prev_url.
        bool spliceable = false;
        bool stamp = false;  // splice the stamp in (false: a burst file, stamped when it was written)
        size_t ds_off = 0;
        dwb_splice_slot at[3];
        std::string xfer, prev_ae, prev_url;
        bool has_prev_ae = false, has_prev_url = false;
        std::string sop, cls, why, location;
        const dwb_rseries *series = nullptr;
        size_t bytes = 0;
        bool reserved = false; // bytes were counted in the budget while the fetch thread assembled it (p_reserve)
        // Decoding ahead of the sending thread (decode_worker). Fresh: not looked at; Busy: a decoder thread holds
        // it (the sending thread waits before taking it, nobody else touches it); Done: looked at, decoded or not.
        enum class Ahead { Fresh, Busy, Done } ahead = Ahead::Fresh;
        size_t decoded = 0; // native pixel bytes counted in the budget, given back when it leaves the queue
    };
    struct {
        std::mutex mu;
        std::condition_variable cv_items;
        std::deque<Item> items;
        std::atomic<size_t> bytes{0}; // this run's share of g_budget_held: queued instances
        size_t assembling = 0;        // ... and instances being assembled (p_reserve); under g_budget_mu
        // The one fetch thread of the run that may assemble beyond the budget (an instance larger than what is
        // left, while nothing of the run is queued), so that no run waits for ever; under g_budget_mu.
        bool exempt_set = false;
        std::thread::id exempt;
        int producers_left = 0;
        std::atomic<bool> stop{false};
        // Decoding ahead: the destination's accepted presentation contexts (SOP class, transfer syntax) as the
        // sending thread last associated (publish_contexts), and the decoder threads, started by the sending
        // thread at the first instance it finds to decode. Under mu, except decoders (sending thread only).
        std::vector<std::pair<std::string, std::string>> accepted;
        bool decode_ahead = false; // publish_contexts was called: C-STORE without bursts
        std::condition_variable cv_work;
        std::vector<std::thread> decoders;
        size_t decoded = 0; // this run's share of g_decoded_held; under g_budget_mu
    } q;

    const char *svc() const { return set.o->service ? set.o->service : "send"; }
    const dwb_log_ctx *log() const { return set.o->log; }
};

bool stopping(Sender &s) {
    dwb_send_totals *t = s.state.t;
    if (t->cancelled || s.state.halted) return true;
    const dwb_send_sink *k = s.set.sink;
    if (k && k->is_cancelled && k->is_cancelled(k->ud)) t->cancelled = 1;
    return t->cancelled != 0;
}

void report(Sender &s) {
    const dwb_send_sink *k = s.set.sink;
    if (k && k->progress && k->progress(k->ud, s.state.t)) s.state.halted = true;
}

// Takes one of the destination's max_associations slots, waiting while other runs hold them all: until one is
// handed over (oldest waiter first), the run is cancelled or its requester is gone (DWB_E_CANCELLED), or
// listen.dimse_timeout_s passes (DWB_E_LIMIT; 0 = no bound). The requester keeps getting a pending response every
// second meanwhile (report). Called before the fetch threads start: a waiting run holds none of the retrieve budget.
dwb_status take_slot(Sender &s, dwb_error *err) {
    const dwb_destination_conf *dest = s.set.o->dest;
    const int max = slot_limit(dest);
    std::unique_lock<std::mutex> lk(g_slots_mu);
    DestSlots &d = g_slots[dest->ae_title];
    if (d.waiting.empty() && d.busy < max) {
        d.busy++;
        s.state.slot.dest = dest;
        return DWB_OK;
    }
    SlotWaiter w;
    d.waiting.push_back(&w);
    const size_t ahead = d.waiting.size() - 1;
    lk.unlock();
    DWB_INFO(s.log(), "%s: the %d association(s) to %s allowed at once (destinations[].max_associations) are open: "
             "waiting for one to close, %zu run(s) before this one", s.svc(), max, dest->ae_title, ahead);
    const int tmo = rsp_timeout_s(s.set.o);
    const auto t0 = std::chrono::steady_clock::now();
    dwb_status st = DWB_OK;
    lk.lock();
    while (!w.granted) {
        w.cv.wait_for(lk, std::chrono::milliseconds(100), [&] { return w.granted; });
        if (w.granted) break;
        lk.unlock();
        report(s); // not under g_slots_mu: it writes to the requester
        if (stopping(s)) st = DWB_E_CANCELLED;
        else if (tmo > 0 && std::chrono::steady_clock::now() - t0 >= std::chrono::seconds(tmo)) st = DWB_E_LIMIT;
        lk.lock();
        if (st != DWB_OK && !w.granted) {
            d.waiting.erase(std::find(d.waiting.begin(), d.waiting.end(), &w));
            break;
        }
    }
    if (w.granted) s.state.slot.dest = dest; // handed over meanwhile: SlotHold gives it back if the run stops now
    lk.unlock();
    long ms = (long)std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
    if (st == DWB_E_CANCELLED) return dwb_error_set(err, st, "cancelled while waiting for an association to %s", dest->ae_title);
    if (st == DWB_E_LIMIT)
        return dwb_error_set(err, st, "destination %s busy: its %d association(s) (destinations[].max_associations) "
                             "stayed open for %d s (listen.dimse_timeout_s)", dest->ae_title, max, tmo);
    DWB_INFO(s.log(), "%s: association to %s free after %ld ms", s.svc(), dest->ae_title, ms);
    return DWB_OK;
}

// sop "" = an instance the store counted but never named (dwb_retrieve.h, on_missing).
void fail_instance(Sender &s, const char *sop, const std::string &why) {
    s.state.t->failed++;
    if (*sop) DWB_WARN(s.log(), "%s: instance %s failed: %s", s.svc(), sop, why.c_str());
    else DWB_WARN(s.log(), "%s: an instance the store counted but did not name failed: %s", s.svc(), why.c_str());
    const dwb_send_sink *k = s.set.sink;
    if (k && k->instance_failed) k->instance_failed(k->ud, sop, why.c_str());
}

void count(Sender &s, Sent rc, const char *sop, const std::string &why, size_t bytes) {
    dwb_send_totals *t = s.state.t;
    switch (rc) {
    case Sent::Ok: t->completed++; t->bytes += bytes; break;
    case Sent::Warning: t->warning++; t->bytes += bytes; break;
    case Sent::DestDead:
        t->dest_dead = 1;
        s.state.dest_why = why;
        fail_instance(s, sop, why);
        break;
    case Sent::Failed: fail_instance(s, sop, why); break;
    }
}

int p_cancelled(void *ud) { return static_cast<Sender *>(ud)->q.stop.load() ? 1 : 0; }

Sent store_one(Sender &s, DcmDataset *ds, const char *cls, const char *sop, std::string &why);

bool proposed(const Sender &s, const char *cls) {
    for (auto &c : s.state.classes)
        if (c == cls) return true;
    return false;
}

// What the destination accepted, for the decoder threads (wants_decode): called by the sending thread whenever
// its association to the destination (or the C-GET requester's) is new. Only for runs that send by C-STORE
// without bursts: a burst writes each instance as received, and decodes it, if at all, when the series goes.
void publish_contexts(Sender &s) {
    if (s.set.o->stow || s.burst || !s.state.dest.assoc) return;
    std::vector<std::pair<std::string, std::string>> acc;
    T_ASC_Parameters *params = s.state.dest.assoc->params;
    int n = ASC_countPresentationContexts(params);
    for (int i = 0; i < n; i++) {
        T_ASC_PresentationContext pc;
        if (ASC_getPresentationContext(params, i, &pc).good() && pc.resultReason == ASC_P_ACCEPTANCE)
            acc.emplace_back(pc.abstractSyntax, pc.acceptedTransferSyntax);
    }
    std::lock_guard<std::mutex> lk(s.q.mu);
    s.q.accepted.swap(acc);
    s.q.decode_ahead = true;
}

// Under s.q.mu: whether store_one will decode this queued instance: it is in a compressed syntax that a codec here
// decodes, and the destination takes its SOP class uncompressed but not in that syntax.
bool wants_decode(const Sender &s, const Sender::Item &it) {
    if (!s.q.decode_ahead || it.cls.empty() || (!it.ff && !it.spliceable)) return false;
    E_TransferSyntax x = it.spliceable ? DcmXfer(it.xfer.c_str()).getXfer() : it.ff->getDataset()->getOriginalXfer();
    DcmXfer have(x);
    if (!have.isEncapsulated()) return false;
    bool uncompressed = false;
    for (auto &c : s.q.accepted) {
        if (c.first != it.cls) continue;
        if (c.second == have.getXferID()) return false;
        if (!DcmXfer(c.second.c_str()).isEncapsulated()) uncompressed = true;
    }
    if (!uncompressed) return false;
    register_codecs();
    return DcmCodecList::canChangeCoding(x, EXS_LittleEndianExplicit) != OFFalse;
}

Sent reassociate(Sender &s, const char *cls, std::string &why) {
    const dwb_send_opts *o = s.set.o;
    DWB_INFO(s.log(), "%s: an instance of SOP class %s, not proposed to %s: associating again", s.svc(), cls,
             o->dest->ae_title);
    close_dest(s.state.dest, false);
    s.state.dest = Dest();
    s.state.classes.push_back(cls);
    std::string w;
    if (!open_destination(o->cfg, o->dest, s.state.classes, s.state.dest, w)) {
        why = "cannot associate again with the destination: " + w;
        return Sent::DestDead;
    }
    publish_contexts(s);
    return Sent::Ok;
}

// The destination takes none of the instance's syntax and the bridge cannot decode it (a syntax no codec here
// takes, or JPEG 2000 that the OpenJPEG decoder does not do, such as subsampled components): ask the store for it
// in Explicit VR Little Endian (Google and Orthanc with GDCM transcode), stamp the new copy as the first one was,
// and send that.
Sent store_transcoded(Sender &s, DcmDataset *ds, const char *cls, const char *sop, const DcmXfer &have,
                      std::string &why) {
    static const char *const kExplicitLE = UID_LittleEndianExplicitTransferSyntax;
    OFString study, series;
    ds->findAndGetOFString(DCM_StudyInstanceUID, study);
    ds->findAndGetOFString(DCM_SeriesInstanceUID, series);
    const dwb_upstream *up = s.set.o->up;
    std::string base = std::string("destination does not accept ") + have.getXferName() + " (" + have.getXferID() +
                       ") and the bridge cannot decode it";
    if (!up || study.empty() || series.empty()) {
        why = base;
        return Sent::Failed;
    }
    void *data = nullptr;
    size_t len = 0;
    dwb_error err = {};
    if (dwb_retrieve_fetch_instance(up, study.c_str(), series.c_str(), sop, kExplicitLE, kMaxInstanceBytes, p_cancelled,
                                    &s, &data, &len, &err) != DWB_OK) {
        why = base + "; the store did not transcode it to Explicit VR Little Endian: " + err.message;
        return Sent::Failed;
    }
    DcmInputBufferStream in;
    in.setBuffer(data, (offile_off_t)len);
    in.setEos();
    DcmFileFormat ff;
    OFCondition c = nesting_ok(data, len);
    if (c.good()) {
        ff.transferInit();
        c = ff.read(in, EXS_Unknown, EGL_noChange, 0xFFFFFFFFu);
        ff.transferEnd();
    }
    free(data);
    DcmDataset *nds = ff.getDataset();
    if (c.bad() || DcmXfer(nds->getOriginalXfer()).isEncapsulated()) {
        why = base + "; the store's transcoded copy is " + (c.bad() ? c.text() : "still compressed");
        return Sent::Failed;
    }
    const dwb_config *cfg = s.set.o->cfg;
    if (cfg->provenance.stamp) {
        std::string url = std::string(up->conf->base_url) + "/studies/" + study.c_str() + "/series/" + series.c_str() +
                          "/instances/" + sop;
        stamp(nds, up->conf, cfg->listen.ae_title, url);
    }
    DWB_INFO(s.log(), "%s: %s not accepted by the destination; sending the store's Explicit VR Little Endian copy",
             sop, have.getXferName());
    return store_one(s, nds, cls, sop, why);
}

T_DIMSE_C_StoreRQ store_request(Sender &s, const char *cls, const char *sop) {
    const dwb_send_opts *o = s.set.o;
    T_DIMSE_C_StoreRQ req;
    memset(&req, 0, sizeof req);
    req.MessageID = s.state.dest.next_msg_id++;
    OFStandard::strlcpy(req.AffectedSOPClassUID, cls, sizeof req.AffectedSOPClassUID);
    OFStandard::strlcpy(req.AffectedSOPInstanceUID, sop, sizeof req.AffectedSOPInstanceUID);
    req.DataSetType = DIMSE_DATASET_PRESENT;
    req.Priority = DIMSE_PRIORITY_MEDIUM;
    if (o->move_originator) {
        req.opts = O_STORE_MOVEORIGINATORAETITLE | O_STORE_MOVEORIGINATORID;
        OFStandard::strlcpy(req.MoveOriginatorApplicationEntityTitle, o->move_originator,
                            sizeof req.MoveOriginatorApplicationEntityTitle);
        req.MoveOriginatorID = o->request_msg_id;
    }
    return req;
}

// What one C-STORE came to. cancel: the requester's association (C-GET), where a C-CANCEL may have arrived.
Sent store_outcome(Sender &s, const OFCondition &c, const T_DIMSE_C_StoreRSP &rsp,
                   const T_DIMSE_DetectedCancelParameters *cancel, std::string &why) {
    if (cancel && cancel->cancelEncountered && cancel->req.MessageIDBeingRespondedTo == s.set.o->request_msg_id) {
        DWB_INFO(s.log(), "%s: C-CANCEL received during a sub-operation", s.svc());
        s.state.t->cancelled = 1;
    }
    if (c.bad()) {
        why = std::string("C-STORE to the destination failed: ") + c.text();
        return Sent::DestDead;
    }
    if (rsp.DimseStatus == STATUS_Success) return Sent::Ok;
    char buf[96];
    snprintf(buf, sizeof buf, "destination answered C-STORE status 0x%04X", rsp.DimseStatus);
    why = buf;
    if ((rsp.DimseStatus & 0xF000) == 0xB000) return Sent::Warning;
    return Sent::Failed;
}

Sent store_one(Sender &s, DcmDataset *ds, const char *cls, const char *sop, std::string &why) {
    const dwb_send_opts *o = s.set.o;
    T_ASC_Association *a = s.state.dest.assoc;
    // The current syntax: an instance decoded ahead (decode_ahead) is native already.
    DcmXfer have(ds->getCurrentXfer());
    T_ASC_PresentationContextID pid = find_context(a, cls, have.getXferID(), nullptr);
    if (pid == 0) {
        std::string accepted;
        // Prefer an uncompressed context: the bridge can decode into it.
        for (const char *u : kUncompressed)
            if ((pid = find_context(a, cls, u, &accepted)) != 0) break;
        if (pid == 0) pid = find_context(a, cls, nullptr, &accepted);
        if (pid == 0 && o->dest && s.state.dest.own && !proposed(s, cls)) {
            // A class the plan did not name (a series planned by its store-reported class holds another one):
            // associate again, proposing it too.
            Sent r = reassociate(s, cls, why);
            if (r != Sent::Ok) return r;
            return store_one(s, ds, cls, sop, why);
        }
        if (pid == 0) {
            why = std::string("destination does not accept SOP class ") + cls;
            return Sent::Failed;
        }
        DcmXfer want(accepted.c_str());
        if (want.isEncapsulated()) {
            why = std::string("destination accepts ") + cls + " only as " + want.getXferName();
            return Sent::Failed;
        }
        if (have.isEncapsulated()) {
            register_codecs();
            OFCondition dc = ds->chooseRepresentation(EXS_LittleEndianExplicit, nullptr);
            // A corrupt codestream stays corrupt in the store's transcoded copy: this instance fails, with why.
            if (dwb_j2k_instance_bad(dc)) {
                why = std::string(have.getXferName()) + " not decoded: " + dc.text();
                return Sent::Failed;
            }
            if (dc.bad() || !ds->canWriteXfer(EXS_LittleEndianExplicit))
                return store_transcoded(s, ds, cls, sop, have, why);
            DWB_INFO(s.log(), "%s: %s decoded by the bridge for %s", sop, have.getXferName(),
                     o->dest ? o->dest->ae_title : "the requester");
        }
    }
    T_DIMSE_C_StoreRQ req = store_request(s, cls, sop);
    T_DIMSE_C_StoreRSP rsp;
    DcmDataset *detail = nullptr;
    // C-GET sends its sub-operations on the requester's association: a C-CANCEL may arrive there while we wait
    // for a C-STORE response. DCMTK recognises it when asked; otherwise it would break the association.
    T_DIMSE_DetectedCancelParameters cancel;
    memset(&cancel, 0, sizeof cancel);
    bool on_requester = o->requester && a == o->requester->assoc;
    int tmo = rsp_timeout_s(o);
    OFCondition c = DIMSE_storeUser(a, pid, &req, nullptr, ds, nullptr, nullptr,
                                    tmo > 0 ? DIMSE_NONBLOCKING : DIMSE_BLOCKING, tmo, &rsp, &detail,
                                    on_requester ? &cancel : nullptr);
    delete detail;
    return store_outcome(s, c, rsp, on_requester ? &cancel : nullptr, why);
}

std::string retrieve_url(const dwb_upstream_conf *up, const Sender::Item &it) {
    // A source other than the store's WADO-RS (a bucket object) names itself; otherwise the instance's WADO-RS URL.
    if (!it.location.empty()) return it.location;
    return std::string(up->base_url) + "/studies/" + it.series->study_uid + "/series/" + it.series->series_uid +
           "/instances/" + it.sop;
}

// The data set of a spliceable instance as byte spans, the stamp's elements (encoded into enc) spliced in when
// it.stamp. False when the stamp cannot be encoded.
bool dataset_spans(const Sender &s, const Sender::Item &it, std::vector<struct iovec> &spans,
                   std::vector<unsigned char> &enc) {
    const dwb_send_opts *o = s.set.o;
    DcmXfer have(it.xfer.c_str());
    const unsigned char *p = static_cast<const unsigned char *>(it.raw->p) + it.ds_off;
    size_t n = it.raw->n - it.ds_off;
    if (!it.stamp) {
        spans.push_back({const_cast<unsigned char *>(p), n});
        return true;
    }
    const dwb_upstream_conf *up = o->up->conf;
    std::string url = retrieve_url(up, it);
    DcmDataset stamp_set;
    put_stamp(&stamp_set,
              stamp_item(it.has_prev_url ? it.prev_url.c_str() : nullptr, it.has_prev_ae ? it.prev_ae.c_str() : nullptr,
                         up, o->cfg->listen.ae_title, url),
              up, url);
    enc.resize(stamp_set.getLength(have.getXfer(), EET_ExplicitLength) + 64);
    DcmOutputBufferStream os(enc.data(), (offile_off_t)enc.size());
    stamp_set.transferInit();
    OFCondition c = stamp_set.write(os, have.getXfer(), EET_ExplicitLength, nullptr);
    stamp_set.transferEnd();
    void *buf = nullptr;
    offile_off_t len = 0;
    os.flushBuffer(buf, len);
    dwb_splice_slot mine[3];
    if (c.bad() || dwb_splice_slots(enc.data(), (size_t)len, have.isExplicitVR(), kStampTags, 3, mine, nullptr) != DWB_OK)
        return false;
    size_t cur = 0;
    for (int k = 0; k < 3; k++) {
        if (!mine[k].len) return false;
        if (it.at[k].off > cur) spans.push_back({const_cast<unsigned char *>(p + cur), it.at[k].off - cur});
        spans.push_back({enc.data() + mine[k].off, mine[k].len});
        cur = it.at[k].off + it.at[k].len;
    }
    if (n > cur) spans.push_back({const_cast<unsigned char *>(p + cur), n - cur});
    return true;
}

// The instance as the store sent it, with the stamp's elements spliced into its bytes, straight onto the socket
// (dimse/dwb_pdv.cc): no parse-and-re-encode of the data set, no copy of it. Only for instances planned so
// (peek) and when the destination takes the instance's own transfer syntax. False: not tried, nothing sent.
bool store_as_received(Sender &s, Sender::Item &it, Sent &rc, std::string &why) {
    const dwb_send_opts *o = s.set.o;
    T_ASC_Association *a = s.state.dest.assoc;
    if (!it.spliceable || !a || dwb_encoded_send_fd(a) < 0) return false;
    DcmXfer have(it.xfer.c_str());
    T_ASC_PresentationContextID pid = find_context(a, it.cls.c_str(), have.getXferID(), nullptr);
    if (pid == 0) return false;
    std::vector<struct iovec> spans;
    std::vector<unsigned char> enc;
    if (!dataset_spans(s, it, spans, enc)) return false;
    T_DIMSE_C_StoreRQ req = store_request(s, it.cls.c_str(), it.sop.c_str());
    T_DIMSE_C_StoreRSP rsp;
    DcmDataset *detail = nullptr;
    T_DIMSE_DetectedCancelParameters cancel;
    memset(&cancel, 0, sizeof cancel);
    bool on_requester = o->requester && a == o->requester->assoc;
    OFCondition c = dwb_store_encoded(a, pid, req, spans.data(), spans.size(), &rsp, &detail,
                                      on_requester ? &cancel : nullptr, rsp_timeout_s(o));
    delete detail;
    rc = store_outcome(s, c, rsp, on_requester ? &cancel : nullptr, why);
    if (rc == Sent::Ok || rc == Sent::Warning) s.state.t->as_received++;
    return true;
}

// ---- reading an instance: header walks for sending as received, DCMTK otherwise ----

OFCondition parse(const std::shared_ptr<Bytes> &bytes, std::unique_ptr<DcmFileFormat> &ff) {
    OFCondition deep = nesting_ok(bytes->p, bytes->n);
    if (deep.bad()) return deep;
    ff.reset(new DcmFileFormat());
    BytesStream in(bytes);
    ff->transferInit();
    OFCondition c = ff->read(in, EXS_Unknown, EGL_noChange, kDeferBytes);
    ff->transferEnd();
    return c;
}

// The value of a string element a walk found, without padding (trailing spaces and NULs, leading spaces); the
// first value only when first (DCMTK's findAndGetOFString). False when the element is absent or has no value of
// defined length.
bool value_of(const unsigned char *d, size_t n, int explicit_vr, const dwb_splice_slot &slot, std::string &out,
              bool first) {
    size_t off = 0, len = 0;
    if (dwb_splice_value(d, n, explicit_vr, &slot, &off, &len, nullptr) != DWB_OK) return false;
    const char *v = reinterpret_cast<const char *>(d + off);
    if (first) {
        const void *bs = memchr(v, '\\', len);
        if (bs) len = (size_t)(static_cast<const char *>(bs) - v);
    }
    while (len && (v[len - 1] == ' ' || v[len - 1] == '\0')) len--;
    while (len && v[0] == ' ') v++, len--;
    out.assign(v, len);
    return true;
}

// Reads what sending as received needs with header walks (translate/dwb_splice.h) instead of DCMTK's parser: the
// transfer syntax from the file meta; SOP Class and Instance UID and the previous Retrieve AE Title and URL from
// the data set, which is walked to its last byte, so that a data set cut inside a well-formed part is caught here
// as a full parse would catch it. With it.stamp, also where the stamp's elements go. False when the instance
// cannot go as received: not a Little Endian, not deflated Part-10 file, a walk that fails, no SOP UIDs, or (when
// stamping) a group length in the stamp's groups or an Original Attributes Sequence already there (the bridge's
// item is appended to it: DCMTK does that). The caller then parses it whole.
bool peek(Sender::Item &it) {
    const unsigned char *p = static_cast<const unsigned char *>(it.raw->p);
    size_t n = it.raw->n;
    if (dwb_splice_dataset_offset(p, n, &it.ds_off, nullptr) != DWB_OK || it.ds_off < 132) return false;
    const uint32_t ts_tag = DWB_TAG(0x0002, 0x0010);
    dwb_splice_slot ts;
    std::string xfer;
    if (dwb_splice_find(p + 132, it.ds_off - 132, 1, &ts_tag, 1, &ts, nullptr) != DWB_OK ||
        !value_of(p + 132, it.ds_off - 132, 1, ts, xfer, true))
        return false;
    DcmXfer x(xfer.c_str());
    if (x.getXfer() == EXS_Unknown || !x.isLittleEndian() || x.getStreamCompression() != ESC_none) return false;
    enum { GL8, CLS, SOP, AE, URL, GL400, OAS, END, N };
    const uint32_t tags[N] = {DWB_TAG(0x0008, 0x0000), DWB_TAG_SOP_CLASS, DWB_TAG_SOP_UID,
                              kStampTags[0], kStampTags[1], DWB_TAG(0x0400, 0x0000), kStampTags[2],
                              DWB_TAG(0xFFFF, 0xFFFF)};
    dwb_splice_slot at[N];
    const unsigned char *d = p + it.ds_off;
    size_t dn = n - it.ds_off;
    int ex = x.isExplicitVR() ? 1 : 0;
    if (dwb_splice_find(d, dn, ex, tags, N, at, nullptr) != DWB_OK) return false;
    if (!value_of(d, dn, ex, at[CLS], it.cls, true) || !value_of(d, dn, ex, at[SOP], it.sop, true) || it.cls.empty() ||
        it.sop.empty())
        return false;
    if (it.stamp) {
        if (at[GL8].len || at[GL400].len || at[OAS].len) return false;
        it.has_prev_ae = value_of(d, dn, ex, at[AE], it.prev_ae, false);
        it.has_prev_url = value_of(d, dn, ex, at[URL], it.prev_url, false);
        it.at[0] = at[AE];
        it.at[1] = at[URL];
        it.at[2] = at[OAS];
    }
    it.xfer = xfer;
    return true;
}

// Reads an instance that is in it.raw: by header walks when the run splices and it can go as received (peek),
// otherwise parsed whole by DCMTK. Sets it.sop and it.cls (empty when the instance does not name them).
OFCondition read_item(const Sender &s, Sender::Item &it) {
    it.spliceable = s.set.splice && peek(it);
    if (it.spliceable) return EC_Normal;
    OFCondition c = parse(it.raw, it.ff);
    OFString sop, cls;
    if (c.good()) {
        it.ff->getDataset()->findAndGetOFString(DCM_SOPInstanceUID, sop);
        it.ff->getDataset()->findAndGetOFString(DCM_SOPClassUID, cls);
    }
    it.sop = sop.c_str();
    it.cls = cls.c_str();
    return c;
}

// An instance read for splicing, parsed by DCMTK after all: its path needs every element.
OFCondition parse_whole(Sender::Item &it) { return it.spliceable ? parse(it.raw, it.ff) : EC_Normal; }

// One instance by C-STORE: as received when it can go so; otherwise parsed whole, stamped when stamp_it, and
// re-encoded by DCMTK. unreadable starts the reason when DCMTK cannot parse it.
Sent store_item(Sender &s, Sender::Item &it, bool stamp_it, const std::string &unreadable, std::string &why) {
    Sent rc;
    if (store_as_received(s, it, rc, why)) return rc;
    OFCondition c = parse_whole(it);
    if (c.bad()) {
        why = unreadable + c.text();
        return Sent::Failed;
    }
    DcmDataset *ds = it.ff->getDataset();
    const dwb_send_opts *o = s.set.o;
    if (stamp_it) stamp(ds, o->up->conf, o->cfg->listen.ae_title, retrieve_url(o->up->conf, it));
    return store_one(s, ds, it.cls.c_str(), it.sop.c_str(), why);
}

// ---- series burst files ----

// Writes spans in order to a new file at path; false with why.
bool write_file(const std::string &path, std::vector<struct iovec> spans, std::string &why) {
    int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0) {
        why = strerror(errno);
        return false;
    }
    struct iovec *iov = spans.data();
    size_t cnt = spans.size();
    bool ok = true;
    while (ok && cnt > 0) {
        ssize_t w = writev(fd, iov, (int)cnt);
        if (w < 0) {
            if (errno == EINTR) continue;
            why = strerror(errno);
            ok = false;
            break;
        }
        dwb_iov_consume(&iov, &cnt, (size_t)w);
    }
    if (close(fd) != 0 && ok) {
        why = strerror(errno);
        ok = false;
    }
    if (!ok) unlink(path.c_str());
    return ok;
}

// A burst file from the store's own bytes: the file meta as received, the data set with the stamp spliced in.
// (The file meta gets no Source AE Title here: a C-STORE does not carry file meta.) False with why empty: the
// stamp could not be spliced, the caller re-encodes; false with why: the file could not be written.
bool write_as_received(const Sender &s, const Sender::Item &it, const std::string &path, std::string &why) {
    std::vector<struct iovec> spans;
    std::vector<unsigned char> enc;
    spans.push_back({it.raw->p, it.ds_off});
    if (!dataset_spans(s, it, spans, enc)) return false;
    return write_file(path, spans, why);
}

// Reads a burst file back into a pool buffer (read_item).
OFCondition read_burst_file(const Sender &s, const std::string &path, Sender::Item &it) {
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || st.st_size <= 0) {
        if (fd >= 0) close(fd);
        return makeOFCondition(OFM_dcmdata, 1, OF_error, strerror(fd < 0 ? errno : EINVAL));
    }
    size_t n = (size_t)st.st_size, cap = 0, got = 0;
    void *buf = dwb_buf_get(n, &cap);
    if (!buf) {
        close(fd);
        return makeOFCondition(OFM_dcmdata, 2, OF_error, "out of memory");
    }
    it.raw = std::make_shared<Bytes>(buf, n, cap);
    while (got < n) {
        ssize_t r = read(fd, static_cast<char *>(buf) + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    close(fd);
    if (got != n) return makeOFCondition(OFM_dcmdata, 3, OF_error, "file shorter than its size");
    it.stamp = false; // stamped when it was written
    return read_item(s, it);
}

// ---- producers (fetch threads) ----

// Under g_budget_mu: wakes the waiters that can go now, oldest first, counting what each will take.
void wake_budget_waiters() {
    size_t held = g_budget_held;
    for (BudgetWaiter *w : g_budget_waiters) {
        if (w->go) {
            held += w->bytes;
            continue;
        }
        if (w->s->q.stop.load() || w->s->q.bytes.load() == 0 || held + w->bytes <= w->budget) {
            w->go = true;
            w->cv.notify_one();
            held += w->bytes;
        }
    }
}

void push(Sender &s, Sender::Item &&it) {
    if (it.reserved) {
        // Counted while it was assembled: it moves from the fetch thread's share to the queue's, without waiting.
        std::lock_guard<std::mutex> lk(g_budget_mu);
        s.q.assembling -= it.bytes;
        s.q.bytes += it.bytes;
        if (s.q.exempt_set && s.q.exempt == std::this_thread::get_id()) s.q.exempt_set = false;
    } else {
        // Bounded in-flight data across every run of the process: a producer waits while the senders are behind.
        // A run whose queue is empty may always queue one instance, so that no run waits on another forever.
        std::unique_lock<std::mutex> lk(g_budget_mu);
        auto blocked = [&] { return !s.q.stop.load() && s.q.bytes.load() != 0 && g_budget_held + it.bytes > s.set.budget; };
        if (blocked()) {
            BudgetWaiter w;
            w.s = &s;
            w.bytes = it.bytes;
            w.budget = s.set.budget;
            g_budget_waiters.push_back(&w);
            while (blocked()) {
                w.cv.wait_for(lk, std::chrono::milliseconds(100), [&] { return w.go; });
                w.go = false;
            }
            g_budget_waiters.erase(std::find(g_budget_waiters.begin(), g_budget_waiters.end(), &w));
        }
        if (s.q.stop.load()) return;
        g_budget_held += it.bytes;
        s.q.bytes += it.bytes;
    }
    std::lock_guard<std::mutex> lk(s.q.mu);
    s.q.items.push_back(std::move(it));
    s.q.cv_items.notify_one();
    s.q.cv_work.notify_one();
}

// bytes left the queue, decoded of them native pixels decoded ahead.
void release_budget(Sender &s, size_t bytes, size_t decoded = 0) {
    std::lock_guard<std::mutex> lk(g_budget_mu);
    s.q.bytes -= bytes;
    g_budget_held -= bytes;
    s.q.decoded -= decoded;
    g_decoded_held -= decoded;
    wake_budget_waiters();
}

// Counts the native pixels of a queued instance about to be decoded ahead in the budget (g_decoded_held says how
// far beyond it). False: no room now; the instance stays for the sending thread or a later try.
bool reserve_decoded(Sender &s, size_t bytes) {
    std::lock_guard<std::mutex> lk(g_budget_mu);
    if (s.q.stop.load()) return false;
    if (s.q.decoded != 0 && g_decoded_held + bytes > s.set.budget / 4) return false;
    g_budget_held += bytes;
    g_decoded_held += bytes;
    s.q.decoded += bytes;
    s.q.bytes += bytes;
    return true;
}

// The WADO-RS engine's ask before a part's buffer grows (dwb_retrieve_callbacks.reserve): instances being
// assembled count in the budget too, so that fetch threads cannot each hold an instance of any size outside it.
// Waits while the budget is full, except the run's one exempt thread: while nothing of the run is queued, one of
// its fetch threads may assemble beyond the budget (an instance larger than the budget must still go), as a run
// whose queue is empty may always queue one instance in push().
int p_reserve(void *ud, size_t bytes) {
    Sender &s = *static_cast<Sender *>(ud);
    const std::thread::id me = std::this_thread::get_id();
    std::unique_lock<std::mutex> lk(g_budget_mu);
    auto may = [&] {
        if (s.q.stop.load() || (s.q.exempt_set && s.q.exempt == me)) return true;
        if (g_budget_held + bytes <= s.set.budget) return true;
        if (s.q.bytes.load() == 0 && !s.q.exempt_set) {
            s.q.exempt_set = true;
            s.q.exempt = me;
            return true;
        }
        return false;
    };
    if (!may()) {
        BudgetWaiter w;
        w.s = &s;
        w.bytes = bytes;
        w.budget = s.set.budget;
        g_budget_waiters.push_back(&w);
        while (!may()) {
            w.cv.wait_for(lk, std::chrono::milliseconds(100), [&] { return w.go; });
            w.go = false;
        }
        g_budget_waiters.erase(std::find(g_budget_waiters.begin(), g_budget_waiters.end(), &w));
    }
    if (s.q.stop.load()) return 1;
    g_budget_held += bytes;
    s.q.assembling += bytes;
    return 0;
}

// Bytes reserved for parts that were never handed over (the series ended), or for an instance handed over and
// then not queued.
void p_unreserve(void *ud, size_t bytes) {
    Sender &s = *static_cast<Sender *>(ud);
    std::lock_guard<std::mutex> lk(g_budget_mu);
    g_budget_held -= bytes;
    s.q.assembling -= bytes;
    if (s.q.exempt_set && s.q.exempt == std::this_thread::get_id()) s.q.exempt_set = false;
    wake_budget_waiters();
}

// Parses each instance as it completes (on the fetch thread) and queues it: short, when it can go as received;
// whole otherwise. Takes data (core/dwb_bufpool.h).
// An instance for the queue; reserved: its buffer (cap) is already counted in the budget (the WADO-RS engine's
// p_reserve), given back here when the instance is not queued.
int take_instance(Sender &s, const dwb_rseries *se, void *data, size_t len, size_t cap, const char *location,
                  bool reserved) {
    Sender::Item it;
    it.raw = std::make_shared<Bytes>(data, len, cap);
    struct Unqueued { // gives the reservation back unless the instance went into the queue
        Sender &s;
        size_t bytes;
        ~Unqueued() {
            if (bytes) p_unreserve(&s, bytes);
        }
    } unqueued{s, reserved ? cap : 0};
    if (s.q.stop.load()) return 1;
    it.stamp = s.set.o->cfg->provenance.stamp != 0;
    OFCondition c = read_item(s, it);
    if (c.bad() || it.sop.empty() || it.cls.empty()) {
        // Not attributable to a planned instance: the planned ones that never arrive are counted as missing.
        DWB_WARN(s.log(), "store sent an unreadable instance in series %s (%s)", se->series_uid,
                 c.bad() ? c.text() : "no SOP Instance/Class UID");
        return 0;
    }
    if (!dwb_retrieve_mark_seen(se, it.sop.c_str())) {
        // Not asked for: neither sent nor counted (a store that answers more than the plan holds).
        DWB_DEBUG(s.log(), "store sent %s, which is not in the plan of series %s: skipped", it.sop.c_str(),
                  se->series_uid);
        return 0;
    }
    if (location) it.location = location; // a bucket object (IDC) names itself as the Retrieve URL
    it.series = se;
    it.bytes = reserved ? cap : len;
    it.reserved = reserved;
    unqueued.bytes = 0;
    push(s, std::move(it));
    return s.q.stop.load() ? 1 : 0;
}

// The WADO-RS engine's instances: their buffers were reserved as they were assembled.
int p_instance_take(void *ud, const dwb_rseries *se, void *data, size_t len, size_t cap, const char *location) {
    return take_instance(*static_cast<Sender *>(ud), se, data, len, cap, location, true);
}

// The same for sources that keep their buffer (IDC buckets): one copy.
int p_instance(void *ud, const dwb_rseries *se, const void *data, size_t len, const char *location) {
    size_t cap = 0;
    void *copy = dwb_buf_get(len, &cap);
    if (!copy) {
        DWB_WARN(static_cast<Sender *>(ud)->log(), "out of memory for an instance of series %s", se->series_uid);
        return 0;
    }
    memcpy(copy, data, len);
    return take_instance(*static_cast<Sender *>(ud), se, copy, len, cap, location, false);
}

void p_missing(void *ud, const dwb_rseries *se, const char *sop, const char *reason) {
    Sender &s = *static_cast<Sender *>(ud);
    Sender::Item it;
    it.sop = sop ? sop : "";
    it.why = reason;
    it.series = se;
    push(s, std::move(it));
}

// ---- consumer (the calling thread) ----

// A completed series to a STOW-RS destination: one request, streamed from the burst files.
void flush_burst_stow(Sender &s, Sender::Burst &b) {
    std::vector<const char *> paths;
    std::vector<long long> sizes;
    for (auto &f : b.files) {
        paths.push_back(f.first.c_str());
        struct stat st;
        sizes.push_back(stat(f.first.c_str(), &st) == 0 ? (long long)st.st_size : 0);
    }
    dwb_stow_post post;
    auto cancelled = [](void *ud) -> int { return stopping(*static_cast<Sender *>(ud)) ? 1 : 0; };
    dwb_stow_post_files(s.set.o->stow, s.set.o->dest->stow_url, paths.data(), sizes.data(), paths.size(), 0,
                        cancelled, &s, &post);
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
        Sent rc = Sent::Failed;
        std::string why;
        unsigned reason = 0;
        if (v == DWB_STOW_V_ANSWERED && dwb_stow_instance_fate(code, &res, sop, &reason) == DWB_STOW_F_DELIVERED) {
            const dwb_stow_item *it = dwb_stow_find(&res, sop);
            rc = it && it->outcome == DWB_STOW_WARNING ? Sent::Warning : Sent::Ok;
        } else {
            char buf[640];
            if (reason) snprintf(buf, sizeof buf, "STOW-RS destination refused it with FailureReason 0x%04X", reason);
            else if (v == DWB_STOW_V_ANSWERED) snprintf(buf, sizeof buf, "STOW-RS destination: no answer for it");
            else snprintf(buf, sizeof buf, "STOW-RS destination: %s", code == 0 && post.err.message[0] ? post.err.message
                                                                                                      : verdict_why);
            why = buf;
        }
        count(s, rc, sop, why, b.sizes[k]);
        if (rc == Sent::Failed) b.failed++;
        unlink(b.files[k].first.c_str());
    }
    dwb_stow_result_free(&res);
    dwb_stow_post_cleanup(&post);
    report(s);
}

void series_done(Sender &s, const dwb_rseries *se, size_t failed) {
    const dwb_send_sink *k = s.set.sink;
    if (k && k->series_done) k->series_done(k->ud, se, failed);
}

// Sends a completed series from its burst files, back to back.
void flush_burst(Sender &s, const dwb_rseries *se, Sender::Burst &b) {
    if (s.set.o->stow) {
        flush_burst_stow(s, b);
    } else {
        for (size_t k = 0; k < b.files.size(); k++) {
            auto &f = b.files[k];
            if (s.state.t->dest_dead) {
                fail_instance(s, f.second.c_str(), s.state.dest_why);
                b.failed++;
            } else {
                Sender::Item it;
                it.sop = f.second;
                std::string why;
                Sent rc;
                OFCondition c = read_burst_file(s, f.first, it);
                if (c.bad() || it.cls.empty()) {
                    rc = Sent::Failed;
                    why = "cannot read back " + f.first + (c.bad() ? std::string(": ") + c.text() : "");
                } else {
                    rc = store_item(s, it, false, "cannot read back " + f.first + ": ", why); // stamped already
                }
                count(s, rc, f.second.c_str(), why, b.sizes[k]);
                if (rc == Sent::Failed || rc == Sent::DestDead) b.failed++;
            }
            unlink(f.first.c_str());
            report(s);
        }
    }
    b.files.clear();
    b.sizes.clear();
    series_done(s, se, b.failed);
}

// Stamps and sends one queued instance (or writes it to its series burst).
void send_item(Sender &s, Sender::Item &it) {
    const dwb_send_opts *o = s.set.o;
    Sender::Burst *burst = s.burst ? &s.bursts[it.series] : nullptr;
    if (burst) burst->seen++;
    if (!it.ff && !it.spliceable) {
        fail_instance(s, it.sop.c_str(), it.why);
        if (burst) burst->failed++;
    } else if (s.state.t->dest_dead) {
        fail_instance(s, it.sop.c_str(), s.state.dest_why);
        if (burst) burst->failed++;
    } else {
        DcmDataset *ds = nullptr;
        const dwb_upstream_conf *up = o->up->conf;
        if (burst) {
            std::string path = std::string(o->burst_dir) + "/" + std::to_string(s.bursts.size()) + "-" + it.sop + ".dcm";
            std::string werr;
            bool written = it.spliceable && write_as_received(s, it, path, werr);
            if (!written && werr.empty()) {
                OFCondition c = parse_whole(it);
                ds = it.ff->getDataset();
                if (c.good() && o->cfg->provenance.stamp)
                    stamp(ds, up, o->cfg->listen.ae_title, retrieve_url(up, it));
                // Part-10 written by the bridge itself: the file meta can carry the source too.
                it.ff->getMetaInfo()->putAndInsertString(DCM_SourceApplicationEntityTitle, up->ae_title);
                it.ff->getMetaInfo()->putAndInsertString(DCM_SourcePresentationAddress, up->base_url);
                if (c.good())
                    c = it.ff->saveFile(path.c_str(), EXS_Unknown, EET_ExplicitLength, EGL_recalcGL, EPD_noChange, 0,
                                        0, EWM_fileformat);
                if (c.bad()) {
                    unlink(path.c_str());
                    werr = c.text();
                } else {
                    written = true;
                }
            }
            if (!written) {
                fail_instance(s, it.sop.c_str(), "cannot write the series burst file: " + werr);
                burst->failed++;
            } else {
                burst->files.emplace_back(path, it.sop);
                burst->sizes.push_back(it.bytes);
            }
        } else {
            std::string why;
            Sent rc = store_item(s, it, o->cfg->provenance.stamp != 0, "store sent an unreadable instance: ", why);
            count(s, rc, it.sop.c_str(), why, it.bytes);
        }
    }
    if (burst && burst->seen >= it.series->n) flush_burst(s, it.series, *burst);
}

// Fetch threads run ahead of the sender within the budget; what paces a retrieve is the sender's C-STORE
// ping-pong with the destination, which waits on every response. As batch threads the fetchers do not preempt it
// when they wake (bench/move.py on two cores, 11 interleaved runs: median C-MOVE 0.59 -> 0.50 s).
void mark_bulk_thread() {
#ifdef SCHED_BATCH
    struct sched_param sp;
    memset(&sp, 0, sizeof sp);
    pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp);
#endif
}

// ---- decoding ahead of the sending thread ----

// The native bytes of an instance's pixels once decoded; 0 when the data set does not say (store_one decides).
size_t native_bytes(DcmItem *ds) {
    Uint16 rows = 0, cols = 0, spp = 1, ba = 0;
    Sint32 frames = 1;
    if (ds->findAndGetUint16(DCM_Rows, rows).bad() || ds->findAndGetUint16(DCM_Columns, cols).bad() ||
        ds->findAndGetUint16(DCM_BitsAllocated, ba).bad())
        return 0;
    ds->findAndGetUint16(DCM_SamplesPerPixel, spp);
    if (ds->tagExistsWithValue(DCM_NumberOfFrames) && ds->findAndGetSint32(DCM_NumberOfFrames, frames).bad()) return 0;
    uint64_t n = (uint64_t)rows * cols * (spp ? spp : 1) * ((ba + 7u) / 8u) * (uint64_t)(frames > 0 ? frames : 1);
    return n <= kMaxInstanceBytes ? (size_t)n : 0;
}

// Decodes one queued instance that a decoder thread holds (Busy), as store_one would on the sending thread: parsed
// whole, its native pixels counted in the budget, decoded. A corrupt codestream fails the instance here with
// store_one's reason; whatever else does not decode is parsed again and left to store_one, which asks the store
// for a transcoded copy. False: no room in the budget for its pixels yet (nothing decoded; try again later).
bool decode_ahead(Sender &s, Sender::Item &it) {
    if (parse_whole(it).bad()) return true; // the sending thread fails it with the parser's reason
    it.spliceable = false;                  // parsed: sent from the data set now
    DcmDataset *ds = it.ff->getDataset();
    size_t n = native_bytes(ds);
    if (!n) return true;
    if (!reserve_decoded(s, n)) return false;
    register_codecs();
    DcmXfer have(ds->getOriginalXfer());
    OFCondition dc = ds->chooseRepresentation(EXS_LittleEndianExplicit, nullptr);
    if (dc.good() && ds->canWriteXfer(EXS_LittleEndianExplicit)) {
        it.decoded = n;
        const dwb_send_opts *o = s.set.o;
        DWB_INFO(s.log(), "%s: %s decoded by the bridge for %s", it.sop.c_str(), have.getXferName(),
                 o->dest ? o->dest->ae_title : "the requester");
        return true;
    }
    release_budget(s, n, n);
    if (dwb_j2k_instance_bad(dc)) {
        it.why = std::string(have.getXferName()) + " not decoded: " + dc.text();
        it.ff.reset(); // send_item fails it with why
    } else if (parse(it.raw, it.ff).bad()) {
        it.ff.reset();
        it.why = "store sent an unreadable instance";
    }
    return true;
}

// A decoder thread: takes the first queued instance not looked at yet, decodes it when the destination needs it
// (wants_decode), and lets the sending thread know; stops with the run. The sending thread waits only for an
// instance a decoder holds: one it reaches first it decodes itself, so the order of the queue is the order sent.
void decode_worker(Sender &s) {
    using Ahead = Sender::Item::Ahead;
    mark_bulk_thread();
    std::unique_lock<std::mutex> lk(s.q.mu);
    while (!s.q.stop.load()) {
        Sender::Item *it = nullptr;
        for (auto &x : s.q.items) { // a deque: elements stay where they are while others are pushed and popped
            if (x.ahead != Ahead::Fresh) continue;
            if (!wants_decode(s, x)) {
                x.ahead = Ahead::Done;
                continue;
            }
            x.ahead = Ahead::Busy;
            it = &x;
            break;
        }
        if (!it) {
            s.q.cv_work.wait_for(lk, std::chrono::milliseconds(100));
            continue;
        }
        lk.unlock();
        bool done = decode_ahead(s, *it);
        lk.lock();
        it->ahead = done ? Ahead::Done : Ahead::Fresh;
        s.q.cv_items.notify_all();
        // No room for decoded pixels: until the sending thread takes an instance (or decodes this one itself).
        if (!done) s.q.cv_work.wait_for(lk, std::chrono::milliseconds(100));
    }
}

// One decoder thread per core (at most four): each decodes one whole instance at a time.
void start_decoders(Sender &s) {
    unsigned hw = std::thread::hardware_concurrency();
    size_t n = hw == 0 ? 1 : std::min<size_t>(hw, 4);
    DWB_INFO(s.log(), "%s: decoding ahead of the sending thread on %zu thread(s)", s.svc(), n);
    for (size_t k = 0; k < n; k++) s.q.decoders.emplace_back([&s] { decode_worker(s); });
}

// The fetch threads start first; an own destination is associated with while the store answers the first
// requests (an association costs a few round trips the first instance no longer waits for). DWB_E_CONNECT when
// it cannot be reached: the fetchers are stopped and nothing is sent.
dwb_status run_pipeline(Sender &s, dwb_error *err) {
    const dwb_send_opts *o = s.set.o;
    const dwb_rplan *plan = s.set.plan;
    size_t n_threads = (size_t)o->cfg->retrieve.parallel_series;
    if (n_threads > plan->n_series) n_threads = plan->n_series;
    if (n_threads == 0) n_threads = 1;
    std::atomic<size_t> next{0};
    dwb_retrieve_callbacks cb = {p_instance, p_missing, p_cancelled, &s, p_instance_take, p_reserve, p_unreserve};
    s.q.producers_left = (int)n_threads;
    std::vector<std::thread> producers;
    for (size_t t = 0; t < n_threads; t++) {
        producers.emplace_back([&s, &next, &cb, plan, o] {
            mark_bulk_thread();
            for (size_t i = next++; i < plan->n_series && !s.q.stop.load(); i = next++) {
                dwb_error e = {};
                dwb_retrieve_stream_series(o->up, plan, i, o->log, kMaxInstanceBytes, &cb, &e);
            }
            std::lock_guard<std::mutex> lk(s.q.mu);
            s.q.producers_left--;
            s.q.cv_items.notify_all();
        });
    }
    dwb_status st = DWB_OK;
    if (o->dest && !o->stow) {
        std::string why;
        if (!open_destination(o->cfg, o->dest, s.state.classes, s.state.dest, why))
            st = dwb_error_set(err, DWB_E_CONNECT, "destination %s: %s", o->dest->ae_title, why.c_str());
    }
    if (st == DWB_OK) publish_contexts(s);
    for (; st == DWB_OK;) {
        Sender::Item it;
        bool have = false, done = false, decoders = false;
        {
            std::unique_lock<std::mutex> lk(s.q.mu);
            // The next instance, unless a decoder thread holds it.
            auto ready = [&] { return !s.q.items.empty() && s.q.items.front().ahead != Sender::Item::Ahead::Busy; };
            s.q.cv_items.wait_for(lk, std::chrono::milliseconds(100),
                                  [&] { return ready() || (s.q.items.empty() && s.q.producers_left == 0); });
            if (ready()) {
                it = std::move(s.q.items.front());
                s.q.items.pop_front();
                have = true;
                decoders = s.q.decoders.empty() && wants_decode(s, it);
                s.q.cv_work.notify_all();
            } else if (s.q.items.empty() && s.q.producers_left == 0) {
                done = true;
            }
        }
        if (have) release_budget(s, it.bytes + it.decoded, it.decoded);
        if (decoders) start_decoders(s);
        if (done) break;
        if (stopping(s)) break;
        if (have) send_item(s, it);
        if (s.state.t->dest_dead && !s.q.decoders.empty()) {
            // Every later instance fails without being sent: nothing more to decode.
            std::lock_guard<std::mutex> lk(s.q.mu);
            s.q.decode_ahead = false;
        }
        report(s);
        if (s.state.halted) break;
    }
    // Cancel or a dead requester: stop the producers (they notice within one callback or 100 ms).
    s.q.stop.store(true);
    {
        std::lock_guard<std::mutex> lk(g_budget_mu);
        wake_budget_waiters();
    }
    {
        std::lock_guard<std::mutex> lk(s.q.mu);
        s.q.cv_work.notify_all();
    }
    for (auto &t : producers) t.join();
    for (auto &t : s.q.decoders) t.join(); // each ends after the instance it is decoding, if any
    // What is still queued was never sent: give its share of the budget back.
    size_t left = 0, decoded = 0;
    for (auto &it : s.q.items) {
        left += it.bytes + it.decoded;
        decoded += it.decoded;
    }
    s.q.items.clear();
    if (left) release_budget(s, left, decoded);
    return st;
}

} // namespace

namespace {
// The console's view of a run (opts->activity): the caller's sink, wrapped so that every progress report also
// updates the run's job.
struct Shown {
    const dwb_send_sink *inner;
    dwb_activity *a;
    unsigned long id;
};
int shown_progress(void *ud, const dwb_send_totals *t) {
    Shown *w = static_cast<Shown *>(ud);
    dwb_activity_progress(w->a, w->id, t->total, t->completed, t->failed, t->warning, t->bytes);
    return w->inner && w->inner->progress ? w->inner->progress(w->inner->ud, t) : 0;
}
void shown_failed(void *ud, const char *uid, const char *why) {
    Shown *w = static_cast<Shown *>(ud);
    if (w->inner && w->inner->instance_failed) w->inner->instance_failed(w->inner->ud, uid, why);
}
void shown_series(void *ud, const dwb_rseries *se, size_t failed) {
    Shown *w = static_cast<Shown *>(ud);
    if (w->inner && w->inner->series_done) w->inner->series_done(w->inner->ud, se, failed);
}
int shown_cancelled(void *ud) {
    Shown *w = static_cast<Shown *>(ud);
    return w->inner && w->inner->is_cancelled ? w->inner->is_cancelled(w->inner->ud) : 0;
}
dwb_status send_run(const dwb_send_opts *o, const dwb_rplan *plan, const dwb_send_sink *sink, dwb_send_totals *t,
                    dwb_error *err);
} // namespace

extern "C" dwb_status dwb_send_run(const dwb_send_opts *o, const dwb_rplan *plan, const dwb_send_sink *sink,
                                   dwb_send_totals *t, dwb_error *err) {
    if (!o->activity) return send_run(o, plan, sink, t, err);
    const char *caller = o->caller ? o->caller : (o->log && o->log->peer ? o->log->peer : "");
    const char *dest = o->dest ? o->dest->ae_title : caller;
    Shown w = {sink, o->activity, 0};
    w.id = dwb_activity_begin(o->activity, o->service, caller, o->up ? o->up->conf->ae_title : "", dest, plan->total);
    dwb_send_sink wrapped = {shown_progress, shown_failed, shown_series, shown_cancelled, &w};
    dwb_status st = send_run(o, plan, &wrapped, t, err);
    dwb_activity_progress(o->activity, w.id, t->total, t->completed, t->failed, t->warning, t->bytes);
    dwb_job_state js = st == DWB_OK ? DWB_JOB_DONE : st == DWB_E_CANCELLED || t->cancelled ? DWB_JOB_CANCELLED
                                                                                          : DWB_JOB_FAILED;
    const char *why = st != DWB_OK ? err->message : t->dest_dead ? "destination failed" : "";
    dwb_activity_end(o->activity, w.id, js, why);
    return st;
}

namespace {
dwb_status send_run(const dwb_send_opts *o, const dwb_rplan *plan, const dwb_send_sink *sink, dwb_send_totals *t,
                    dwb_error *err) {
    memset(t, 0, sizeof *t);
    t->total = plan->total;
    Sender s;
    s.set.o = o;
    s.set.sink = sink;
    s.set.plan = plan;
    s.set.budget = (size_t)o->cfg->retrieve.max_in_flight_mb << 20;
    dwb_buf_pool_limit(s.set.budget);
    s.state.t = t;
    if (o->dest && o->stow) {
        if (!o->dest->stow_url) return dwb_error_set(err, DWB_E_INVALID, "destination %s has no stow_url", o->dest->ae_title);
    } else if (o->dest) {
        size_t n = 0;
        const char **classes = dwb_rplan_sop_classes(plan, &n);
        for (size_t i = 0; classes && i < n; i++) s.state.classes.push_back(classes[i]);
        free(classes);
    } else if (o->requester) {
        s.state.dest.assoc = o->requester->assoc;
        s.state.dest.own = false;
        s.state.dest.next_msg_id = (DIC_US)(o->request_msg_id + 1);
    } else {
        return dwb_error_set(err, DWB_E_INVALID, "no destination to send to");
    }
    if (o->burst_dir) {
        s.burst = true;
        // The parent (the spool folder) may not exist yet on a fresh node.
        std::string parent(o->burst_dir);
        size_t slash = parent.rfind('/');
        if (slash != std::string::npos && slash > 0) mkdir(parent.substr(0, slash).c_str(), 0750);
        if (mkdir(o->burst_dir, 0750) != 0 && errno != EEXIST) {
            int e = errno;
            close_dest(s.state.dest, true);
            return dwb_error_set(err, DWB_E_IO, "cannot create %s: %s", o->burst_dir, strerror(e));
        }
    }
    // Known before the destination is associated with (the fetch threads parse accordingly from the start): an own
    // destination without TLS, or a requester's plain TCP association.
    // Burst files are written from the received bytes whatever the transport.
    s.set.splice = !o->stow && (s.burst || (o->dest ? !o->dest->tls : dwb_encoded_send_fd(s.state.dest.assoc) >= 0));
    dwb_status st = o->dest && !o->stow ? take_slot(s, err) : DWB_OK; // given back when s goes, after close_dest
    if (st == DWB_OK) st = run_pipeline(s, err);
    if (st != DWB_OK) {
        close_dest(s.state.dest, true);
        if (s.burst) rmdir(o->burst_dir);
        return st;
    }
    if (s.burst) {
        // Cancelled or failed bursts leave files behind: they were never acknowledged to anyone.
        for (auto &kv : s.bursts)
            for (auto &f : kv.second.files) unlink(f.first.c_str());
        rmdir(o->burst_dir);
    }
    close_dest(s.state.dest, t->cancelled || t->dest_dead || s.state.halted);
    if (t->cancelled) return dwb_error_set(err, DWB_E_CANCELLED, "cancelled");
    return DWB_OK;
}
} // namespace
