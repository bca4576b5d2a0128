// DCMTK adapter: a request's data set (C-FIND/C-MOVE/C-GET identifier, N-ACTION information) received as bytes,
// bounded in size, checked for nesting depth (translate/dwb_nesting.h) and only then parsed by DCMTK, whose
// reader recurses once per sequence level: DIMSE_receiveDataSetInMemory would parse as the PDVs arrive.
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdatset.h"
#include "dcmtk/dcmdata/dcistrmb.h"
#include "dcmtk/dcmdata/dcostrma.h"
#include "dcmtk/dcmdata/dcxfer.h"
#include "dcmtk/dcmnet/dimse.h"

#include <algorithm>
#include <memory>
#include <string>

#include "dwb_assoc.hh"

extern "C" {
#include "dwb_nesting.h"
}

namespace {

// Keeps the first max bytes written and counts the rest, so that DCMTK reads the whole data set off the network
// (the association stays in step) while memory stays bounded.
class CappedConsumer : public DcmConsumer {
  public:
    CappedConsumer(std::string &buf, size_t max) : buf_(buf), max_(max) {}
    OFBool good() const override { return OFTrue; }
    OFCondition status() const override { return EC_Normal; }
    OFBool isFlushed() const override { return OFTrue; }
    offile_off_t avail() const override { return 1 << 30; }
    offile_off_t write(const void *p, offile_off_t len) override {
        size_t n = static_cast<size_t>(len);
        total_ += n;
        if (buf_.size() < max_) buf_.append(static_cast<const char *>(p), std::min(n, max_ - buf_.size()));
        return len;
    }
    void flush() override {}
    size_t total() const { return total_; }

  private:
    std::string &buf_;
    size_t max_;
    size_t total_ = 0;
};

class CappedStream : public DcmOutputStream {
  public:
    explicit CappedStream(CappedConsumer *c) : DcmOutputStream(c) {}
};

} // namespace

OFCondition dwb_receive_dataset(dwb_assoc_ctx *ctx, T_ASC_PresentationContextID pid, size_t max_bytes,
                                std::unique_ptr<DcmDataset> &ds, std::string &why, bool *too_large) {
    ds.reset();
    if (too_large) *too_large = false;
    std::string buf;
    CappedConsumer consumer(buf, max_bytes);
    T_ASC_PresentationContextID dpid = pid;
    OFCondition c;
    {
        CappedStream out(&consumer);
        c = DIMSE_receiveDataSetInFile(ctx->assoc, dwb_peer_block(ctx), dwb_peer_timeout(ctx), &dpid, &out, nullptr, nullptr);
    }
    if (c.bad()) return c;
    if (consumer.total() > max_bytes) {
        if (too_large) *too_large = true;
        why = "data set of " + std::to_string(consumer.total()) + " bytes exceeds the bridge's limit of " +
              std::to_string(max_bytes) + " for this request";
        return EC_Normal;
    }
    T_ASC_PresentationContext pc;
    if (ASC_findAcceptedPresentationContext(ctx->assoc->params, dpid, &pc).bad()) {
        why = "data set on a presentation context that was not accepted";
        return EC_Normal;
    }
    dwb_error err = {};
    if (dwb_nesting_check_xfer(reinterpret_cast<const unsigned char *>(buf.data()), buf.size(),
                               pc.acceptedTransferSyntax, DWB_NESTING_MAX, &err) != DWB_OK) {
        why = err.message;
        return EC_Normal;
    }
    DcmXfer xf(pc.acceptedTransferSyntax);
    DcmInputBufferStream in;
    in.setBuffer(buf.data(), static_cast<offile_off_t>(buf.size()));
    in.setEos();
    std::unique_ptr<DcmDataset> parsed(new DcmDataset);
    parsed->transferInit();
    OFCondition rc = parsed->read(in, xf.getXfer(), EGL_noChange);
    parsed->transferEnd();
    if (rc.bad()) {
        why = std::string("data set does not parse: ") + rc.text();
        return EC_Normal;
    }
    ds = std::move(parsed);
    return EC_Normal;
}
