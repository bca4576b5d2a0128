// A C-STORE whose data set is already encoded (dwb_dimse.hh, dwb_store_encoded): the command through DCMTK's
// encoder, the data set's bytes straight from the caller's buffers onto the socket, many PDUs per system call.
// DCMTK's own path writes the data set element by element into a PDU-sized buffer and makes two writes per PDU;
// with a 16 KB PDU that is two TCP segments per 16 KB on a no-delay socket (measured by bench/move.py as the
// largest part of the bridge's CPU during a C-MOVE).
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdatset.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcostrmb.h"
#include "dcmtk/dcmnet/dimse.h"
#include "dcmtk/dcmnet/dul.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <string>
#include <typeinfo>
#include <vector>

#include "dwb_dimse.hh"

namespace {

const size_t kPduHeader = 12;          // PDU type, reserved, length (6) + PDV item length, context, control (6)
const size_t kBatchBytes = 1u << 20;   // data handed to one sendmsg
const size_t kBatchIov = 256;          // and at most this many pieces (below IOV_MAX)

void be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

// Writes every byte of iov[0, cnt) (which it consumes); false with errno on error.
bool send_all(int fd, struct iovec *iov, size_t cnt) {
    while (cnt > 0) {
        struct msghdr m;
        memset(&m, 0, sizeof m);
        m.msg_iov = iov;
        m.msg_iovlen = cnt;
        ssize_t w = sendmsg(fd, &m, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        dwb_iov_consume(&iov, &cnt, (size_t)w);
    }
    return true;
}

// Cuts a message (spans in order) into P-DATA-TF PDUs of one PDV each (PS3.8 9.3.5) and sends them in batches.
class PduWriter {
  public:
    PduWriter(int fd, T_ASC_PresentationContextID pid, size_t max_data) : fd_(fd), pid_(pid), max_(max_data) {
        iov_.reserve(kBatchIov);
        // A batch holds at most one header per piece, so this never reallocates while pieces point into it.
        headers_.reserve(kBatchIov);
    }

    // All of spans[0, n) as one message: command or data set.
    bool message(const struct iovec *spans, size_t n, bool command) {
        size_t total = 0;
        for (size_t i = 0; i < n; i++) total += spans[i].iov_len;
        size_t i = 0, at = 0; // position in the spans
        do {
            size_t frag = total < max_ ? total : max_;
            total -= frag;
            unsigned char *h = header();
            h[0] = 0x04; // P-DATA-TF
            h[1] = 0;
            be32(h + 2, (uint32_t)(frag + 6));
            be32(h + 6, (uint32_t)(frag + 2));
            h[10] = pid_;
            h[11] = (unsigned char)((command ? 0x01 : 0x00) | (total == 0 ? 0x02 : 0x00));
            if (!add(h, kPduHeader)) return false;
            while (frag > 0) {
                size_t take = spans[i].iov_len - at;
                if (take > frag) take = frag;
                if (!add(static_cast<const char *>(spans[i].iov_base) + at, take)) return false;
                frag -= take;
                at += take;
                if (at == spans[i].iov_len) {
                    i++;
                    at = 0;
                }
            }
        } while (total > 0);
        return true;
    }

    bool flush() {
        bool ok = iov_.empty() || send_all(fd_, iov_.data(), iov_.size());
        iov_.clear();
        headers_.clear();
        bytes_ = 0;
        return ok;
    }

  private:
    unsigned char *header() {
        headers_.emplace_back();
        return headers_.back().b;
    }
    bool add(const void *p, size_t n) {
        if (n == 0) return true;
        iov_.push_back({const_cast<void *>(p), n});
        bytes_ += n;
        if (bytes_ >= kBatchBytes || iov_.size() >= kBatchIov) return flush();
        return true;
    }

    struct Header {
        unsigned char b[kPduHeader];
    };
    int fd_;
    T_ASC_PresentationContextID pid_;
    size_t max_;
    std::vector<struct iovec> iov_;
    std::vector<Header> headers_; // the PDU headers of the batch
    size_t bytes_ = 0;
};

// The C-STORE-RQ command set (PS3.7 9.3.1.1), Implicit VR Little Endian with its group length.
bool encode_command(const T_DIMSE_C_StoreRQ &req, std::vector<unsigned char> &out) {
    DcmDataset cmd;
    bool ok = cmd.putAndInsertString(DCM_AffectedSOPClassUID, req.AffectedSOPClassUID).good() &&
              cmd.putAndInsertUint16(DCM_CommandField, DIMSE_C_STORE_RQ).good() &&
              cmd.putAndInsertUint16(DCM_MessageID, req.MessageID).good() &&
              cmd.putAndInsertUint16(DCM_Priority, (Uint16)req.Priority).good() &&
              cmd.putAndInsertUint16(DCM_CommandDataSetType, DIMSE_DATASET_PRESENT).good() &&
              cmd.putAndInsertString(DCM_AffectedSOPInstanceUID, req.AffectedSOPInstanceUID).good();
    if (ok && (req.opts & O_STORE_MOVEORIGINATORAETITLE))
        ok = cmd.putAndInsertString(DCM_MoveOriginatorApplicationEntityTitle, req.MoveOriginatorApplicationEntityTitle)
                 .good();
    if (ok && (req.opts & O_STORE_MOVEORIGINATORID))
        ok = cmd.putAndInsertUint16(DCM_MoveOriginatorMessageID, req.MoveOriginatorID).good();
    if (!ok) return false;
    if (cmd.computeGroupLengthAndPadding(EGL_withGL, EPD_noChange, EXS_LittleEndianImplicit, EET_ExplicitLength).bad())
        return false;
    out.resize(cmd.getLength(EXS_LittleEndianImplicit, EET_ExplicitLength));
    DcmOutputBufferStream os(out.data(), (offile_off_t)out.size());
    cmd.transferInit();
    OFCondition c = cmd.write(os, EXS_LittleEndianImplicit, EET_ExplicitLength, nullptr);
    cmd.transferEnd();
    if (c.bad()) return false;
    void *buf = nullptr;
    offile_off_t len = 0;
    os.flushBuffer(buf, len);
    out.resize((size_t)len);
    return true;
}

} // namespace

void dwb_iov_consume(struct iovec **iov, size_t *cnt, size_t n) {
    while (*cnt > 0 && n >= (*iov)->iov_len) {
        n -= (*iov)->iov_len;
        (*iov)++;
        (*cnt)--;
    }
    if (*cnt > 0) {
        (*iov)->iov_base = static_cast<char *>((*iov)->iov_base) + n;
        (*iov)->iov_len -= n;
    }
}

int dwb_encoded_send_fd(T_ASC_Association *a) {
    DcmTransportConnection *conn = a ? DUL_getTransportConnection(a->DULassociation) : nullptr;
    // TLS connections (a subclass) encrypt in their write(): only the plain TCP connection is a bare socket.
    if (!conn || typeid(*conn) != typeid(DcmTCPConnection)) return -1;
    return dwb_socket_fd(conn);
}

OFCondition dwb_store_encoded(T_ASC_Association *a, T_ASC_PresentationContextID pid, const T_DIMSE_C_StoreRQ &req,
                              const struct iovec *spans, size_t n_spans, T_DIMSE_C_StoreRSP *rsp,
                              DcmDataset **detail, T_DIMSE_DetectedCancelParameters *cancel, int timeout_s) {
    int fd = dwb_encoded_send_fd(a);
    if (fd < 0) return makeOFCondition(OFM_dcmnet, 1, OF_error, "association is not on a plain TCP socket");
    std::vector<unsigned char> cmd;
    if (!encode_command(req, cmd)) return makeOFCondition(OFM_dcmnet, 2, OF_error, "cannot encode the C-STORE-RQ");
    // As DCMTK's own sender: the PDV buffer's size, bounded by the configured outgoing PDU size.
    size_t max_data = a->sendPDVLength;
    size_t max_pdu = dcmMaxOutgoingPDUSize.get();
    if (max_data + kPduHeader > max_pdu) max_data = max_pdu - kPduHeader;
    if (max_data < 2) return makeOFCondition(OFM_dcmnet, 3, OF_error, "negotiated PDU size too small");
    max_data &= ~(size_t)1; // fragments of even length, like DCMTK's
    PduWriter w(fd, pid, max_data);
    struct iovec c = {cmd.data(), cmd.size()};
    if (!w.message(&c, 1, true) || !w.message(spans, n_spans, false) || !w.flush()) {
        char buf[160];
        snprintf(buf, sizeof buf, "DIMSE failed to send the data set: %s",
                 errno == EAGAIN || errno == EWOULDBLOCK ? "send timed out" : strerror(errno));
        return makeOFCondition(OFM_dcmnet, 4, OF_error, buf);
    }
    if (cancel) cancel->cancelEncountered = OFFalse;
    // The response, as DIMSE_storeUser waits for it: a C-CANCEL-RQ on the same association is noted, not fatal.
    for (;;) {
        T_ASC_PresentationContextID got_pid = pid;
        T_DIMSE_Message m;
        memset(&m, 0, sizeof m);
        OFCondition rc = DIMSE_receiveCommand(a, timeout_s > 0 ? DIMSE_NONBLOCKING : DIMSE_BLOCKING, timeout_s,
                                              &got_pid, &m, detail);
        if (rc.bad()) return rc;
        if (cancel && m.CommandField == DIMSE_C_CANCEL_RQ) {
            cancel->cancelEncountered = OFTrue;
            cancel->req = m.msg.CCancelRQ;
            cancel->presId = got_pid;
            continue;
        }
        if (m.CommandField != DIMSE_C_STORE_RSP) {
            char buf[96];
            snprintf(buf, sizeof buf, "DIMSE: unexpected response command field 0x%x", (unsigned)m.CommandField);
            return makeOFCondition(OFM_dcmnet, 5, OF_error, buf);
        }
        *rsp = m.msg.CStoreRSP;
        if (rsp->MessageIDBeingRespondedTo != req.MessageID) {
            char buf[96];
            snprintf(buf, sizeof buf, "DIMSE: response to message %u, expected %u",
                     (unsigned)rsp->MessageIDBeingRespondedTo, (unsigned)req.MessageID);
            return makeOFCondition(OFM_dcmnet, 6, OF_error, buf);
        }
        return EC_Normal;
    }
}
