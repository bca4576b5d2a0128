// DCMTK adapter for C-STORE on an upstream's AE title: each instance is received straight into a file in that
// upstream's spool, never into memory, and made durable there (temporary name, checked writes, fsync, rename,
// fsync of the directory: the spool's writer) before the SCU hears success; the uploader thread then sends it by
// STOW-RS. A full or unwritable spool, or an instance over spool.max_instance_mb, answers Out of Resources.
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcfilefo.h"
#include "dcmtk/dcmdata/dcmetinf.h"
#include "dcmtk/dcmdata/dcistrmb.h"
#include "dcmtk/dcmdata/dcostrma.h"
#include "dcmtk/dcmdata/dcuid.h"
#include "dcmtk/dcmdata/dcxfer.h"
#include "dcmtk/dcmnet/dimse.h"

#include <cerrno>
#include <chrono>
#include <fcntl.h>
#include <sys/stat.h>
#include <cstring>
#include <fstream>
#include <sys/mman.h>
#include <thread>
#include <unistd.h>
#include <string>
#include <vector>

#include "dwb_assoc.hh"
#include "dwb_deid.hh"

extern "C" {
#include "dwb_attrs.h"
#include "dwb_nesting.h"
#include "dwb_route.h"
#include "dwb_tags.h"
}

namespace {

// The data set's bytes go through the spool's writer (spool/dwb_spool.h), which checks every write, the free
// space every few MiB and spool.max_instance_mb, and removes the partial file at the first failure. This consumer
// takes every byte even then, so that DCMTK finishes reading the data set off the network (the association stays
// in step); the caller asks the writer's status after.
class WriterConsumer : public DcmConsumer {
  public:
    explicit WriterConsumer(dwb_spool_writer *w) : w_(w) {}
    OFBool good() const override { return OFTrue; }
    OFCondition status() const override { return EC_Normal; }
    OFBool isFlushed() const override { return OFTrue; }
    offile_off_t avail() const override { return 1 << 30; }
    offile_off_t write(const void *buf, offile_off_t len) override {
        (void)dwb_spool_writer_write(w_, buf, static_cast<size_t>(len), nullptr);
        return len;
    }
    void flush() override {}

  private:
    dwb_spool_writer *w_;
};

class WriterOutputStream : public DcmOutputStream {
  public:
    explicit WriterOutputStream(DcmConsumer *c) : DcmOutputStream(c) {}
};

// A de-identifying upstream's instance is received into memory, never into a file, so that the spool only ever
// holds its de-identified form. Bounded by cap: past it the bytes are dropped (the association stays in step) and
// over() says so.
class MemConsumer : public DcmConsumer {
  public:
    explicit MemConsumer(size_t cap) : cap_(cap) {}
    OFBool good() const override { return OFTrue; }
    OFCondition status() const override { return EC_Normal; }
    OFBool isFlushed() const override { return OFTrue; }
    offile_off_t avail() const override { return 1 << 30; }
    offile_off_t write(const void *buf, offile_off_t len) override {
        size_t n = static_cast<size_t>(len);
        if (over_ || n > cap_ - data_.size()) {
            over_ = true;
            std::vector<unsigned char>().swap(data_);
            return len;
        }
        const unsigned char *b = static_cast<const unsigned char *>(buf);
        data_.insert(data_.end(), b, b + n);
        return len;
    }
    void flush() override {}
    bool over() const { return over_; }
    std::vector<unsigned char> &data() { return data_; }

  private:
    size_t cap_;
    bool over_ = false;
    std::vector<unsigned char> data_;
};

// Reads and drops a data set the bridge will not keep, so that the association stays in step.
OFCondition drop_dataset(dwb_assoc_ctx *ctx) {
    DIC_UL bytes = 0, pdvs = 0;
    return DIMSE_ignoreDataSet(ctx->assoc, dwb_peer_block(ctx), dwb_peer_timeout(ctx), &bytes, &pdvs);
}

// Receives the data set of a C-STORE into consumer as a Part-10 stream: the file meta information first (from the
// command, the negotiated transfer syntax and the calling AE title), then the data set's bytes as they arrive, in
// that transfer syntax. Returns the network's condition (bad: the caller aborts the association); *meta_c says
// whether the meta header could be encoded (when not, the data set is read and dropped, the association in step).
OFCondition receive_part10(dwb_assoc_ctx *ctx, const T_DIMSE_C_StoreRQ &rq, const char *xfer_uid,
                           T_ASC_PresentationContextID pid, DcmConsumer &consumer, OFCondition *meta_c_out) {
    OFCondition net;
    OFCondition meta_c;
    {
        WriterOutputStream out(&consumer);
        DcmMetaInfo meta;
        const Uint8 version[2] = {0, 1};
        meta.putAndInsertUint8Array(DCM_FileMetaInformationVersion, version, 2);
        meta.putAndInsertString(DCM_MediaStorageSOPClassUID, rq.AffectedSOPClassUID);
        meta.putAndInsertString(DCM_MediaStorageSOPInstanceUID, rq.AffectedSOPInstanceUID);
        meta.putAndInsertString(DCM_TransferSyntaxUID, xfer_uid);
        meta.putAndInsertString(DCM_ImplementationClassUID, OFFIS_IMPLEMENTATION_CLASS_UID);
        meta.putAndInsertString(DCM_ImplementationVersionName, OFFIS_DTK_IMPLEMENTATION_VERSION_NAME);
        // Who sent it. It does not survive a later C-STORE, but it is kept with the spooled file.
        meta.putAndInsertString(DCM_SourceApplicationEntityTitle, ctx->calling);
        meta_c = meta.computeGroupLengthAndPadding(EGL_withGL, EPD_noChange, EXS_LittleEndianExplicit,
                                                   EET_ExplicitLength);
        if (meta_c.good()) {
            meta.transferInit();
            meta_c = meta.write(out, EXS_LittleEndianExplicit, EET_ExplicitLength, nullptr);
            meta.transferEnd();
        }
        // Even when the meta header failed, the data set is read to the end so that the association stays in step.
        T_ASC_PresentationContextID dpid = pid;
        if (meta_c.good()) {
            net = DIMSE_receiveDataSetInFile(ctx->assoc, dwb_peer_block(ctx), dwb_peer_timeout(ctx), &dpid, &out,
                                             nullptr, nullptr);
        } else {
            net = drop_dataset(ctx);
        }
    }
    *meta_c_out = meta_c;
    return net;
}

// Receives the data set of a C-STORE straight into the spool writer's file as a Part-10 file (receive_part10), so
// that no data set is ever held in memory. A bad returned condition is a network failure (the caller aborts the
// association); a failed or refused write (the writer's limits) leaves the association in step and returns false in
// *ok with why, *limit when it was a limit (spool.max_instance_mb, spool.min_free_mb) rather than an I/O error. The
// caller commits or discards w.
OFCondition receive_durably(dwb_assoc_ctx *ctx, const T_DIMSE_C_StoreRQ &rq, const char *xfer_uid,
                            T_ASC_PresentationContextID pid, dwb_spool_writer *w, bool *ok, bool *limit,
                            std::string &why) {
    *ok = false;
    *limit = false;
    WriterConsumer consumer(w);
    OFCondition meta_c;
    OFCondition net = receive_part10(ctx, rq, xfer_uid, pid, consumer, &meta_c);
    if (net.bad()) return net;
    dwb_error e = {};
    if (dwb_spool_writer_status(w, &e) != DWB_OK) {
        why = e.message;
        *limit = e.status == DWB_E_LIMIT;
        return net;
    }
    if (meta_c.bad()) {
        why = std::string("cannot encode the file meta information: ") + meta_c.text();
        return net;
    }
    *ok = true;
    return net;
}

// The received data set's UIDs against its command: "" when they are there and agree, else why not.
std::string uid_mismatch(const OFString &sop, const OFString &cls, const T_DIMSE_C_StoreRQ &rq) {
    if (sop.empty()) return "data set has no SOP Instance UID";
    if (cls.empty()) return "data set has no SOP Class UID";
    if (strcmp(sop.c_str(), rq.AffectedSOPInstanceUID) != 0) return "SOP Instance UID differs from the command";
    if (strcmp(cls.c_str(), rq.AffectedSOPClassUID) != 0) return "SOP Class UID differs from the command";
    return "";
}

// Reads the SOP Class and Instance UIDs of a spooled file back from disk, with values longer than a few KiB left
// on disk (DCMTK loads them on demand), so that checking a large instance costs no memory. False with why when the
// file does not parse.
// With tags and attrs (routing), the top-level attributes of those tags go into attrs, as text with their VRs.
bool read_uids(const char *path, OFString &cls, OFString &sop, std::string &why,
               const std::vector<uint32_t> *tags = nullptr, dwb_attrs *attrs = nullptr) {
    // DCMTK's reader recurses once per sequence level: the file's nesting is checked from its bytes first,
    // mapped, not read into memory (a spooled instance may be gigabytes).
    int fd = ::open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || ::fstat(fd, &sb) != 0) {
        why = std::string("cannot reopen the spool file: ") + strerror(errno);
        if (fd >= 0) ::close(fd);
        return false;
    }
    void *map = sb.st_size > 0 ? ::mmap(nullptr, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0) : MAP_FAILED;
    ::close(fd);
    if (map == MAP_FAILED) {
        why = std::string("cannot map the spool file: ") + strerror(errno);
        return false;
    }
    dwb_error err = {};
    dwb_status st = dwb_nesting_check_file(static_cast<const unsigned char *>(map), (size_t)sb.st_size, DWB_NESTING_MAX, &err);
    ::munmap(map, (size_t)sb.st_size);
    if (st != DWB_OK) {
        why = err.message;
        return false;
    }
    DcmFileFormat ff;
    OFCondition c = ff.loadFile(path, EXS_Unknown, EGL_noChange, 4096, ERM_autoDetect);
    if (c.bad()) {
        why = std::string("cannot parse the data set: ") + c.text();
        return false;
    }
    ff.getDataset()->findAndGetOFString(DCM_SOPInstanceUID, sop);
    ff.getDataset()->findAndGetOFString(DCM_SOPClassUID, cls);
    for (size_t i = 0; tags && attrs && i < tags->size(); i++) {
        uint32_t t = (*tags)[i];
        DcmElement *el = nullptr;
        if (ff.getDataset()->findAndGetElement(DcmTagKey(DWB_TAG_GROUP(t), DWB_TAG_ELEMENT(t)), el).bad() || !el)
            continue;
        DcmVR vr(el->getVR());
        // A sequence's items cannot be named by a filter's text: it is present, with nothing to compare.
        dwb_attr *a = dwb_attrs_put(attrs, t, el->ident() == EVR_SQ ? "SQ" : vr.getValidVRName());
        if (!a) {
            why = "out of memory";
            return false;
        }
        if (el->ident() == EVR_SQ) continue;
        for (unsigned long k = 0; k < el->getVM(); k++) {
            OFString v;
            if (el->getOFString(v, k, OFTrue).good() && dwb_attr_add_value(a, v.c_str()) != DWB_OK) {
                why = "out of memory";
                return false;
            }
        }
    }
    return true;
}

// Puts the received file into one target's spool under a temporary name (tmp, room for cap), invisible to its
// uploader until dwb_spool_commit: a hard link, or a copy when the spool is on another file system. On failure
// nothing is left.
dwb_status link_tmp(dwb_spool *sp, const char *received, const char *sop, char *tmp, size_t cap, dwb_error *err) {
    dwb_status st = dwb_spool_tmp_path(sp, sop, tmp, cap, err);
    if (st != DWB_OK) return st;
    if (::link(received, tmp) != 0) {
        if (errno != EXDEV) return dwb_error_set(err, DWB_E_IO, "cannot link into %s: %s", dwb_spool_dir(sp), strerror(errno));
        std::ifstream in(received, std::ios::binary);
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        out << in.rdbuf();
        out.close();
        if (!in || !out) {
            ::unlink(tmp);
            return dwb_error_set(err, DWB_E_IO, "cannot copy into %s", dwb_spool_dir(sp));
        }
    }
    return DWB_OK;
}

OFCondition respond(dwb_assoc_ctx *ctx, T_DIMSE_Message *msg, T_ASC_PresentationContextID pid, DIC_US status,
                    const char *comment) {
    if (status != STATUS_Success) return dwb_send_failure(ctx, msg, pid, status, comment);
    dwb_count_response("C-STORE", status);
    T_DIMSE_Message rsp;
    memset(&rsp, 0, sizeof rsp);
    rsp.CommandField = DIMSE_C_STORE_RSP;
    T_DIMSE_C_StoreRSP &r = rsp.msg.CStoreRSP;
    const T_DIMSE_C_StoreRQ &rq = msg->msg.CStoreRQ;
    r.MessageIDBeingRespondedTo = rq.MessageID;
    OFStandard::strlcpy(r.AffectedSOPClassUID, rq.AffectedSOPClassUID, sizeof r.AffectedSOPClassUID);
    OFStandard::strlcpy(r.AffectedSOPInstanceUID, rq.AffectedSOPInstanceUID, sizeof r.AffectedSOPInstanceUID);
    r.opts = O_STORE_AFFECTEDSOPCLASSUID | O_STORE_AFFECTEDSOPINSTANCEUID;
    r.DataSetType = DIMSE_DATASET_NULL;
    r.DimseStatus = STATUS_Success;
    return DIMSE_sendMessageUsingMemoryData(ctx->assoc, pid, &rsp, nullptr, nullptr, nullptr, nullptr);
}


// The checks every C-STORE passes before its data set is read, so that a refusal costs neither disk nor memory: the
// spool it is received into is open (whose names it in the log), the Affected SOP Instance UID can name a spool
// file, the presentation context was accepted, the spool's file system is above spool.min_free_mb. On a refusal the
// data set is read and dropped (the association stays in step), the SCU answered, and false returned with the
// condition in *cond (bad: the caller aborts the association). True: *pc is the accepted presentation context.
bool admit_store(dwb_assoc_ctx *ctx, T_DIMSE_Message *msg, T_ASC_PresentationContextID pid, dwb_spool *sp,
                 const char *whose, T_ASC_PresentationContext *pc, OFCondition *cond) {
    const T_DIMSE_C_StoreRQ &rq = msg->msg.CStoreRQ;
    DIC_US status = STATUS_Success;
    const char *comment = nullptr;
    int min_free = ctx->cfg ? ctx->cfg->spool.min_free_mb : 0;
    long long free_mb = -1;
    if (!sp) {
        DWB_WARN(&ctx->log, "C-STORE %s refused: %s is not available", rq.AffectedSOPInstanceUID, whose);
        status = STATUS_STORE_Refused_OutOfResources;
        comment = "spool not available";
    } else if (!dwb_uid_valid(rq.AffectedSOPInstanceUID)) {
        // Refused for what it is (no spool file can be named after it), not Out of Resources, which invites the
        // SCU to send it again for ever.
        DWB_WARN(&ctx->log, "C-STORE refused: Affected SOP Instance UID is not a valid UID");
        status = STATUS_STORE_Error_DataSetDoesNotMatchSOPClass;
        comment = "Affected SOP Instance UID is not a valid UID";
    } else if (ASC_findAcceptedPresentationContext(ctx->assoc->params, pid, pc).bad()) {
        status = STATUS_STORE_Refused_SOPClassNotSupported;
        comment = "no such presentation context";
    } else if (min_free > 0 && (free_mb = dwb_spool_free_mb(sp)) >= 0 && free_mb < min_free) {
        DWB_ERROR(&ctx->log, "C-STORE %s refused: %lld MiB free in %s, below spool.min_free_mb %d",
                  rq.AffectedSOPInstanceUID, free_mb, dwb_spool_dir(sp), min_free);
        status = STATUS_STORE_Refused_OutOfResources;
        comment = "spool below min_free_mb";
    } else {
        return true;
    }
    if ((*cond = drop_dataset(ctx)).bad()) return false;
    *cond = respond(ctx, msg, pid, status, comment);
    return false;
}

// Burned In Annotation YES on a de-identifying upstream without allow_burned_in: the profile cleans attributes, not
// pixels, so the instance is refused for good. A Failure of the "Cannot understand" family (C000), as for an
// instance without a route: not Out of Resources (A7xx), which invites the SCU to send it again for ever, and not
// A900 (the data set does match its SOP Class); the ErrorComment says why.
const DIC_US kStatusBurnedIn = STATUS_STORE_Error_CannotUnderstand;

// The memory a de-identified instance may take when spool.max_instance_mb is 0 (no cap).
const long long kDeidDefaultCapMb = 1024;

// No route for an instance: a permanent refusal of this instance, so a Failure, not Refused: Out of Resources
// (A7xx), which tells the SCU to try again later and would make it re-send for ever; not A9xx either (the data
// set does match its SOP Class). PS3.4 B.2.3's "Error: Cannot understand" (C000-CFFF) is the Failure an SCP gives
// for an instance it will not process for its own reasons; the ErrorComment says which.
const DIC_US kStatusNoRoute = STATUS_STORE_Error_CannotUnderstand;

// A C-STORE to routing_ae_title: received once into the staging spool (the same checks and limits as any
// C-STORE), its ORIGINAL attributes matched against routes[] (translate/dwb_route.h), then a copy made for every
// target upstream under a temporary name in its spool: a hard link of the received file for a plain upstream, a
// de-identified copy by that upstream's own profile (scp/dwb_deid.hh) for a de-identifying one, so that such a spool
// never holds the original. A failure while making them removes them all; then each is committed (durable), and
// the C-STORE acknowledged only when the last one is. Each upstream's uploader sends its own queue. A crash or a
// failed commit between two commits leaves some queued: the SCU, unanswered or answered Out of Resources, sends the
// instance again, and a spool that still holds its SOP Instance UID (a de-identifying spool: the mapped one, the
// same for the same secret) is not given a second copy.
OFCondition handle_routed_store(dwb_assoc_ctx *ctx, T_DIMSE_Message *msg, T_ASC_PresentationContextID pid) {
    const T_DIMSE_C_StoreRQ &rq = msg->msg.CStoreRQ;
    const dwb_router *rt = ctx->router;
    const dwb_config *cfg = rt->cfg;
    OFCondition cond;
    T_ASC_PresentationContext pc;
    if (!admit_store(ctx, msg, pid, rt->staging, "the routing spool", &pc, &cond)) return cond;
    dwb_error err = {};
    dwb_spool_limits lim = {cfg->spool.min_free_mb, (long long)cfg->spool.max_instance_mb << 20};
    dwb_spool_writer *w = nullptr;
    if (dwb_spool_writer_open(rt->staging, rq.AffectedSOPInstanceUID, &lim, &w, &err) != DWB_OK) {
        if ((cond = drop_dataset(ctx)).bad()) return cond;
        DWB_ERROR(&ctx->log, "C-STORE %s refused: %s", rq.AffectedSOPInstanceUID, err.message);
        return respond(ctx, msg, pid, STATUS_STORE_Refused_OutOfResources, err.message);
    }
    bool written = false, limit = false;
    std::string werr;
    cond = receive_durably(ctx, rq, pc.acceptedTransferSyntax, pid, w, &written, &limit, werr);
    if (cond.bad()) {
        dwb_spool_writer_discard(w);
        return cond;
    }
    if (!written) {
        dwb_spool_writer_discard(w);
        DWB_WARN(&ctx->log, "C-STORE %s refused: %s; answered Out of Resources", rq.AffectedSOPInstanceUID, werr.c_str());
        return respond(ctx, msg, pid, STATUS_STORE_Refused_OutOfResources, werr.c_str());
    }
    std::string received = dwb_spool_writer_path(w);
    OFString sop, cls;
    std::string why;
    dwb_attrs *attrs = dwb_attrs_new();
    if (!attrs || !read_uids(received.c_str(), cls, sop, why, &rt->tags, attrs)) {
        dwb_attrs_free(attrs);
        dwb_spool_writer_discard(w);
        DWB_WARN(&ctx->log, "C-STORE %s refused: %s", rq.AffectedSOPInstanceUID, why.c_str());
        return respond(ctx, msg, pid, STATUS_STORE_Error_CannotUnderstand, why.c_str());
    }
    why = uid_mismatch(sop, cls, rq);
    if (!why.empty()) {
        dwb_attrs_free(attrs);
        dwb_spool_writer_discard(w);
        DWB_WARN(&ctx->log, "C-STORE %s refused: %s", rq.AffectedSOPInstanceUID, why.c_str());
        return respond(ctx, msg, pid, STATUS_STORE_Error_DataSetDoesNotMatchSOPClass, why.c_str());
    }
    std::vector<const dwb_attrs *> filters(cfg->n_routes);
    for (size_t i = 0; i < cfg->n_routes; i++) filters[i] = cfg->routes[i].keys;
    std::vector<size_t> chosen(cfg->n_routes);
    size_t n_chosen = dwb_route_select(filters.data(), filters.size(), attrs, cfg->route_to_all, chosen.data());
    dwb_attrs_free(attrs);
    if (n_chosen == 0) {
        dwb_spool_writer_discard(w);
        DWB_WARN(&ctx->log, "C-STORE %s refused: no route matches it (%zu route(s), route_to %s)", sop.c_str(),
                 cfg->n_routes, cfg->route_to_all ? "all" : "first");
        return respond(ctx, msg, pid, kStatusNoRoute, "no route for this instance");
    }
    // The union of the chosen routes' upstreams, each once, in the upstreams' order.
    std::vector<char> target(cfg->n_upstreams, 0);
    for (size_t i = 0; i < n_chosen; i++) {
        const dwb_route_conf &r = cfg->routes[chosen[i]];
        for (size_t k = 0; k < r.n_upstreams; k++) target[r.upstreams[k]] = 1;
    }
    for (size_t u = 0; u < cfg->n_upstreams; u++)
        if (target[u] && !rt->spools[u]) {
            dwb_spool_writer_discard(w);
            DWB_WARN(&ctx->log, "C-STORE %s refused: the spool of upstream %s is not available", sop.c_str(),
                     cfg->upstreams[u].ae_title);
            return respond(ctx, msg, pid, STATUS_STORE_Refused_OutOfResources, "spool not available");
        }
    // A de-identifying target gets its own de-identified copy, made from the received file read back into memory
    // (bounded as a C-STORE to its own AE title is), never a link of the original.
    bool any_deid = false;
    for (size_t u = 0; u < cfg->n_upstreams; u++) any_deid = any_deid || (target[u] && cfg->upstreams[u].deid);
    DcmFileFormat original;
    if (any_deid) {
        long long cap_mb = cfg->spool.max_instance_mb > 0 ? cfg->spool.max_instance_mb : kDeidDefaultCapMb;
        struct stat sb;
        if (::stat(received.c_str(), &sb) == 0 && (long long)sb.st_size > (cap_mb << 20)) {
            dwb_spool_writer_discard(w);
            DWB_WARN(&ctx->log, "C-STORE %s refused: larger than %lld MiB (spool.max_instance_mb, de-identified in "
                     "memory for a routed de-identifying upstream); answered Out of Resources", sop.c_str(), cap_mb);
            return respond(ctx, msg, pid, STATUS_STORE_Refused_OutOfResources, "instance over spool.max_instance_mb");
        }
        OFCondition lc = original.loadFile(received.c_str(), EXS_Unknown, EGL_noChange, DCM_MaxReadLength,
                                           ERM_autoDetect);
        if (lc.good()) lc = original.loadAllDataIntoMemory();
        if (lc.bad()) {
            dwb_spool_writer_discard(w);
            why = std::string("cannot parse the data set: ") + lc.text();
            DWB_WARN(&ctx->log, "C-STORE %s refused: %s", sop.c_str(), why.c_str());
            return respond(ctx, msg, pid, STATUS_STORE_Error_CannotUnderstand, why.c_str());
        }
        OFString burned;
        original.getDataset()->findAndGetOFString(DCM_BurnedInAnnotation, burned);
        for (size_t u = 0; u < cfg->n_upstreams; u++)
            if (target[u] && cfg->upstreams[u].deid && !cfg->upstreams[u].deid->allow_burned_in && burned == "YES") {
                dwb_spool_writer_discard(w);
                DWB_WARN(&ctx->log, "C-STORE %s refused: Burned In Annotation is YES and upstream %s cannot clean "
                         "pixels (deidentify.allow_burned_in is false); stored nowhere", sop.c_str(),
                         cfg->upstreams[u].ae_title);
                return respond(ctx, msg, pid, kStatusBurnedIn, "burned-in annotation: not de-identifiable");
            }
    }
    // Every target's copy is first made under a temporary name in its spool (invisible to its uploader): a link of
    // the received file, or the de-identified instance through the spool's writer. A failure there removes them
    // all: nothing is queued anywhere. Only then are they committed, one by one.
    struct Copy {
        size_t u;
        std::string uid;                    // the SOP Instance UID it is queued under
        char tmp[1300];                     // a link's temporary name
        dwb_spool_writer *dw;               // a de-identified copy's writer
    };
    std::vector<Copy> copies;
    auto abandon = [&]() {
        for (Copy &c : copies) {
            if (c.dw) dwb_spool_writer_discard(c.dw);
            else dwb_spool_discard(c.tmp);
        }
        copies.clear();
        dwb_spool_writer_discard(w);
    };
    std::string to;
    for (size_t u = 0; u < cfg->n_upstreams; u++) {
        if (!target[u]) continue;
        const dwb_upstream_conf &uc = cfg->upstreams[u];
        to += to.empty() ? "" : ",";
        to += uc.ae_title;
        Copy c = {u, sop.c_str(), {0}, nullptr};
        if (!uc.deid) {
            // Already queued there (a link left by a crash before the answer, or an earlier send still waiting):
            // one delivery is enough.
            if (dwb_spool_holds(rt->spools[u], sop.c_str())) continue;
            if (link_tmp(rt->spools[u], received.c_str(), sop.c_str(), c.tmp, sizeof c.tmp, &err) != DWB_OK) {
                abandon();
                DWB_ERROR(&ctx->log, "C-STORE %s: upstream %s: %s", sop.c_str(), uc.ae_title, err.message);
                return respond(ctx, msg, pid, STATUS_STORE_Refused_OutOfResources,
                               err.status == DWB_E_LIMIT ? "spool full" : "spool not writable");
            }
            copies.push_back(c);
            continue;
        }
        DcmFileFormat ff(original);
        if (!dwb_deid_apply(ff, uc.deid, why)) {
            abandon();
            DWB_WARN(&ctx->log, "C-STORE %s refused: upstream %s: de-identification failed: %s", sop.c_str(),
                     uc.ae_title, why.c_str());
            return respond(ctx, msg, pid, STATUS_STORE_Error_CannotUnderstand, "de-identification failed");
        }
        OFString nsop;
        ff.getDataset()->findAndGetOFString(DCM_SOPInstanceUID, nsop);
        c.uid = nsop.c_str();
        if (dwb_spool_holds(rt->spools[u], c.uid.c_str())) continue; // the same secret maps to the same UID
        dwb_status st = dwb_spool_writer_open(rt->spools[u], c.uid.c_str(), &lim, &c.dw, &err);
        OFCondition wc;
        if (st == DWB_OK) {
            {
                WriterConsumer consumer(c.dw);
                WriterOutputStream out(&consumer);
                ff.transferInit();
                wc = ff.write(out, DcmXfer(pc.acceptedTransferSyntax).getXfer(), EET_ExplicitLength, nullptr,
                              EGL_recalcGL, EPD_noChange, 0, 0, 0, EWM_fileformat);
                ff.transferEnd();
                out.flush();
            }
            copies.push_back(c); // abandon() discards it from here on
            st = dwb_spool_writer_status(c.dw, &err);
        }
        if (st != DWB_OK || wc.bad()) {
            std::string m = st != DWB_OK ? err.message
                                         : std::string("cannot encode the de-identified instance: ") + wc.text();
            abandon();
            DWB_ERROR(&ctx->log, "C-STORE %s: upstream %s: %s; answered Out of Resources", sop.c_str(), uc.ae_title,
                      m.c_str());
            return respond(ctx, msg, pid, STATUS_STORE_Refused_OutOfResources, m.c_str());
        }
    }
    // The commits: each one durable (fsync, rename, fsync of the directory). One failing leaves those committed
    // before it queued, as a crash between two commits would; the SCU, answered Out of Resources, sends the
    // instance again, and a spool that still holds it is not given a second copy.
    for (size_t i = 0; i < copies.size(); i++) {
        Copy &c = copies[i];
        size_t u = c.u;
        dwb_status st = c.dw ? dwb_spool_writer_commit(c.dw, &err) : dwb_spool_commit(rt->spools[u], c.tmp, &err);
        if (!c.dw && st != DWB_OK) dwb_spool_discard(c.tmp); // a writer's commit removes its file itself
        if (st != DWB_OK) {
            copies.erase(copies.begin(), copies.begin() + (long)i + 1); // committed, or gone
            abandon();
            DWB_ERROR(&ctx->log, "C-STORE %s: upstream %s: %s", sop.c_str(), cfg->upstreams[u].ae_title, err.message);
            return respond(ctx, msg, pid, STATUS_STORE_Refused_OutOfResources,
                           err.status == DWB_E_LIMIT ? "spool full" : "spool not writable");
        }
        if (c.uid != sop.c_str())
            DWB_DEBUG(&ctx->log, "C-STORE %s de-identified for %s as %s", sop.c_str(), cfg->upstreams[c.u].ae_title,
                      c.uid.c_str());
    }
    dwb_spool_writer_discard(w); // the staging name only: the data lives on in the targets' spools
    for (size_t u = 0; u < cfg->n_upstreams; u++)
        if (target[u] && rt->uploaders[u]) dwb_uploader_notify(rt->uploaders[u]);
    DWB_DEBUG(&ctx->log, "C-STORE %s routed to %s", sop.c_str(), to.c_str());
    return respond(ctx, msg, pid, STATUS_Success, nullptr);
}

// The answer to a C-STORE whose file (spooled under the temporary name tmp) is committed: at once in store_mode
// async; in sync, once the uploader has settled the file (deleted = delivered, failed/ = refused).
OFCondition answer_spooled(dwb_assoc_ctx *ctx, T_DIMSE_Message *msg, T_ASC_PresentationContextID pid,
                           const std::string &tmp, const char *sop) {
    if (!ctx->upstream->conf->store_sync) return respond(ctx, msg, pid, STATUS_Success, nullptr);

    std::string final(tmp);
    final.resize(final.size() - 4); // ".tmp"
    std::string base = final.substr(final.rfind('/') + 1);
    std::string failed = std::string(dwb_spool_dir(ctx->spool)) + "/failed/" + base;
    int limit_s = ctx->upstream->conf->timeout_s > 0 ? ctx->upstream->conf->timeout_s : 60;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(limit_s);
    while (access(final.c_str(), F_OK) == 0) {
        if (std::chrono::steady_clock::now() > deadline || (ctx->cancel_all && ctx->cancel_all->load())) {
            DWB_WARN(&ctx->log, "C-STORE %s: the store did not confirm within %d s; kept in the spool", sop,
                     limit_s);
            return respond(ctx, msg, pid, STATUS_STORE_Refused_OutOfResources, "store did not confirm in time");
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (access(failed.c_str(), F_OK) == 0) {
        std::ifstream in(failed + ".reason.txt");
        std::string reason;
        std::getline(in, reason);
        DWB_WARN(&ctx->log, "C-STORE %s refused by the store: %s", sop, reason.c_str());
        return respond(ctx, msg, pid, STATUS_STORE_Error_CannotUnderstand, "refused by the store");
    }
    return respond(ctx, msg, pid, STATUS_Success, nullptr);
}

// A C-STORE to a de-identifying upstream: the instance is received into memory (bounded by spool.max_instance_mb,
// or kDeidDefaultCapMb without it), its nesting checked, parsed by DCMTK, checked against the command,
// de-identified (scp/dwb_deid.hh) and only then written into the spool by the spool's writer (checked writes,
// fsync, rename, fsync of the directory) under its new SOP Instance UID, before the SCU hears success. Nothing of
// the received form touches the disk.
OFCondition handle_deid_store(dwb_assoc_ctx *ctx, T_DIMSE_Message *msg, T_ASC_PresentationContextID pid,
                              const char *xfer_uid) {
    const T_DIMSE_C_StoreRQ &rq = msg->msg.CStoreRQ;
    const dwb_deid_profile *prof = ctx->upstream->conf->deid;
    long long cap_mb = ctx->cfg->spool.max_instance_mb > 0 ? ctx->cfg->spool.max_instance_mb : kDeidDefaultCapMb;
    OFCondition meta_c;
    OFCondition cond;
    std::string why;
    DcmFileFormat ff;
    {
        MemConsumer mem(static_cast<size_t>(cap_mb) << 20);
        cond = receive_part10(ctx, rq, xfer_uid, pid, mem, &meta_c);
        if (cond.bad()) return cond;
        if (mem.over()) {
            DWB_WARN(&ctx->log, "C-STORE %s refused: larger than %lld MiB (spool.max_instance_mb, de-identified in "
                     "memory); answered Out of Resources", rq.AffectedSOPInstanceUID, cap_mb);
            return respond(ctx, msg, pid, STATUS_STORE_Refused_OutOfResources, "instance over spool.max_instance_mb");
        }
        if (meta_c.bad()) {
            why = std::string("cannot encode the file meta information: ") + meta_c.text();
            DWB_ERROR(&ctx->log, "C-STORE %s: %s", rq.AffectedSOPInstanceUID, why.c_str());
            return respond(ctx, msg, pid, STATUS_STORE_Refused_OutOfResources, why.c_str());
        }
        std::vector<unsigned char> &buf = mem.data();
        dwb_error nerr = {};
        // DCMTK's reader recurses once per sequence level: the nesting is checked from the bytes first.
        if (dwb_nesting_check_file(buf.data(), buf.size(), DWB_NESTING_MAX, &nerr) != DWB_OK) {
            DWB_WARN(&ctx->log, "C-STORE %s refused: %s", rq.AffectedSOPInstanceUID, nerr.message);
            return respond(ctx, msg, pid, STATUS_STORE_Error_CannotUnderstand, nerr.message);
        }
        DcmInputBufferStream in;
        in.setBuffer(buf.data(), static_cast<offile_off_t>(buf.size()));
        in.setEos();
        ff.transferInit();
        OFCondition rc = ff.read(in, EXS_Unknown, EGL_noChange, DCM_MaxReadLength);
        ff.transferEnd();
        in.releaseBuffer();
        if (rc.bad()) {
            why = std::string("cannot parse the data set: ") + rc.text();
            DWB_WARN(&ctx->log, "C-STORE %s refused: %s", rq.AffectedSOPInstanceUID, why.c_str());
            return respond(ctx, msg, pid, STATUS_STORE_Error_CannotUnderstand, why.c_str());
        }
        ff.loadAllDataIntoMemory();
    } // the received bytes are freed here
    DcmDataset *ds = ff.getDataset();
    OFString sop, cls, burned;
    ds->findAndGetOFString(DCM_SOPInstanceUID, sop);
    ds->findAndGetOFString(DCM_SOPClassUID, cls);
    why = uid_mismatch(sop, cls, rq);
    if (!why.empty()) {
        DWB_WARN(&ctx->log, "C-STORE %s refused: %s", rq.AffectedSOPInstanceUID, why.c_str());
        return respond(ctx, msg, pid, STATUS_STORE_Error_DataSetDoesNotMatchSOPClass, why.c_str());
    }
    ds->findAndGetOFString(DCM_BurnedInAnnotation, burned);
    if (!prof->allow_burned_in && burned == "YES") {
        DWB_WARN(&ctx->log, "C-STORE %s refused: Burned In Annotation is YES and the profile cannot clean pixels "
                 "(deidentify.allow_burned_in is false)", rq.AffectedSOPInstanceUID);
        return respond(ctx, msg, pid, kStatusBurnedIn, "burned-in annotation: not de-identifiable");
    }
    if (!dwb_deid_apply(ff, prof, why)) {
        DWB_WARN(&ctx->log, "C-STORE %s refused: de-identification failed: %s", rq.AffectedSOPInstanceUID, why.c_str());
        return respond(ctx, msg, pid, STATUS_STORE_Error_CannotUnderstand, "de-identification failed");
    }
    OFString nsop;
    ds->findAndGetOFString(DCM_SOPInstanceUID, nsop);
    dwb_error err = {};
    dwb_spool_limits lim = {ctx->cfg->spool.min_free_mb, (long long)ctx->cfg->spool.max_instance_mb << 20};
    dwb_spool_writer *w = nullptr;
    if (dwb_spool_writer_open(ctx->spool, nsop.c_str(), &lim, &w, &err) != DWB_OK) {
        DWB_ERROR(&ctx->log, "C-STORE %s refused: %s", rq.AffectedSOPInstanceUID, err.message);
        return respond(ctx, msg, pid, STATUS_STORE_Refused_OutOfResources, err.message);
    }
    OFCondition wc;
    {
        WriterConsumer consumer(w);
        WriterOutputStream out(&consumer);
        E_TransferSyntax xfer = DcmXfer(xfer_uid).getXfer();
        ff.transferInit();
        wc = ff.write(out, xfer, EET_ExplicitLength, nullptr, EGL_recalcGL, EPD_noChange, 0, 0, 0, EWM_fileformat);
        ff.transferEnd();
        out.flush();
    }
    if (dwb_spool_writer_status(w, &err) != DWB_OK || wc.bad()) {
        std::string m = wc.bad() ? std::string("cannot encode the de-identified instance: ") + wc.text() : err.message;
        dwb_spool_writer_discard(w);
        DWB_ERROR(&ctx->log, "C-STORE %s: %s; answered Out of Resources", rq.AffectedSOPInstanceUID, m.c_str());
        return respond(ctx, msg, pid, STATUS_STORE_Refused_OutOfResources, m.c_str());
    }
    std::string tmp = dwb_spool_writer_path(w);
    if (dwb_spool_writer_commit(w, &err) != DWB_OK) {
        DWB_ERROR(&ctx->log, "C-STORE %s: %s", nsop.c_str(), err.message);
        return respond(ctx, msg, pid, STATUS_STORE_Refused_OutOfResources,
                       err.status == DWB_E_LIMIT ? "spool full" : "spool not writable");
    }
    if (ctx->uploader) dwb_uploader_notify(ctx->uploader);
    DWB_DEBUG(&ctx->log, "C-STORE %s de-identified and spooled as %s", rq.AffectedSOPInstanceUID, nsop.c_str());
    return answer_spooled(ctx, msg, pid, tmp, nsop.c_str());
}

} // namespace

OFCondition dwb_handle_store(dwb_assoc_ctx *ctx, T_DIMSE_Message *msg, T_ASC_PresentationContextID pid) {
    const T_DIMSE_C_StoreRQ &rq = msg->msg.CStoreRQ;
    if (ctx->router) return handle_routed_store(ctx, msg, pid);
    // Everything that refuses without looking at the data set is decided before it is read, and the data set is
    // then dropped as it arrives.
    OFCondition cond;
    if (!ctx->upstream) {
        if ((cond = drop_dataset(ctx)).bad()) return cond;
        return respond(ctx, msg, pid, STATUS_STORE_Refused_SOPClassNotSupported, "C-STORE needs an upstream AE title");
    }
    T_ASC_PresentationContext pc;
    if (!admit_store(ctx, msg, pid, ctx->spool, "the spool of this upstream", &pc, &cond)) return cond;
    if (ctx->upstream->conf->deid) return handle_deid_store(ctx, msg, pid, pc.acceptedTransferSyntax);
    dwb_error err = {};
    dwb_spool_limits lim = {ctx->cfg->spool.min_free_mb, (long long)ctx->cfg->spool.max_instance_mb << 20};
    dwb_spool_writer *w = nullptr;
    if (dwb_spool_writer_open(ctx->spool, rq.AffectedSOPInstanceUID, &lim, &w, &err) != DWB_OK) {
        if ((cond = drop_dataset(ctx)).bad()) return cond;
        DWB_ERROR(&ctx->log, "C-STORE %s refused: %s", rq.AffectedSOPInstanceUID, err.message);
        return respond(ctx, msg, pid, STATUS_STORE_Refused_OutOfResources, err.message);
    }
    bool written = false, limit = false;
    std::string werr;
    cond = receive_durably(ctx, rq, pc.acceptedTransferSyntax, pid, w, &written, &limit, werr);
    if (cond.bad()) { // the stream is out of step: the caller aborts the association
        dwb_spool_writer_discard(w);
        return cond;
    }
    if (!written) {
        dwb_spool_writer_discard(w);
        if (limit) // spool.max_instance_mb or spool.min_free_mb while writing: the partial file is already gone
            DWB_WARN(&ctx->log, "C-STORE %s refused: %s; answered Out of Resources", rq.AffectedSOPInstanceUID,
                     werr.c_str());
        else
            DWB_ERROR(&ctx->log, "C-STORE %s: %s; answered Out of Resources", rq.AffectedSOPInstanceUID,
                      werr.c_str());
        return respond(ctx, msg, pid, STATUS_STORE_Refused_OutOfResources, werr.c_str());
    }
    std::string tmp = dwb_spool_writer_path(w);

    OFString sop, cls;
    std::string why;
    if (!read_uids(tmp.c_str(), cls, sop, why)) {
        dwb_spool_writer_discard(w);
        DWB_WARN(&ctx->log, "C-STORE %s refused: %s", rq.AffectedSOPInstanceUID, why.c_str());
        return respond(ctx, msg, pid, STATUS_STORE_Error_CannotUnderstand, why.c_str());
    }
    why = uid_mismatch(sop, cls, rq);
    if (!why.empty()) {
        dwb_spool_writer_discard(w);
        DWB_WARN(&ctx->log, "C-STORE %s refused: %s", rq.AffectedSOPInstanceUID, why.c_str());
        return respond(ctx, msg, pid, STATUS_STORE_Error_DataSetDoesNotMatchSOPClass, why.c_str());
    }
    if (dwb_spool_writer_commit(w, &err) != DWB_OK) {
        DWB_ERROR(&ctx->log, "C-STORE %s: %s", sop.c_str(), err.message);
        return respond(ctx, msg, pid, STATUS_STORE_Refused_OutOfResources,
                       err.status == DWB_E_LIMIT ? "spool full" : "spool not writable");
    }
    if (ctx->uploader) dwb_uploader_notify(ctx->uploader);
    DWB_DEBUG(&ctx->log, "C-STORE %s spooled", sop.c_str());
    return answer_spooled(ctx, msg, pid, tmp, sop.c_str());
}
