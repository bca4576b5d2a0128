/* DCMTK helpers shared by scp/ and scu/. C++ only (DCMTK types); C code never includes this. */
#ifndef DWB_DIMSE_HH
#define DWB_DIMSE_HH

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmnet/assoc.h"
#include "dcmtk/dcmnet/dcmlayer.h"
#include "dcmtk/dcmnet/dcmtrans.h"
#include "dcmtk/dcmnet/dimse.h"

#include <sys/uio.h>

#include <string>

/* The C headers' opaque handle for an association owned by a caller (scu/dwb_send.h). */
struct dwb_dimse_link {
    T_ASC_Association *assoc;
};

/* A TLS transport layer (BCP 195 profile) with optional own certificate and trusted CA; NULL + why on error. */
DcmTransportLayer *dwb_tls_layer(T_ASC_NetworkRole role, const char *cert, const char *key, const char *ca,
                                 int require_peer_cert, std::string &why);
/* Disables Nagle on the association's socket (Debian's DCMTK leaves it on). Also for outbound associations. */
void dwb_set_nodelay(T_ASC_Association *assoc);
/* The socket of a transport connection (DCMTK keeps the accessor protected); -1 if none. */
int dwb_socket_fd(DcmTransportConnection *c);

/* Drops the first n bytes of iov[0, *cnt) after a partial writev/sendmsg: advances *iov, lowers *cnt. */
void dwb_iov_consume(struct iovec **iov, size_t *cnt, size_t n);
/* The socket a data set can be written to directly (plain TCP); -1 when the association runs over TLS. */
int dwb_encoded_send_fd(T_ASC_Association *a);
/* A C-STORE-RQ whose data set is already encoded in the presentation context's transfer syntax, given as byte
 * spans in order: the spans go straight onto the socket, several PDUs per system call, without a copy. Then the
 * C-STORE-RSP is awaited as DIMSE_storeUser does (a C-CANCEL-RQ met meanwhile is noted in *cancel when given).
 * Plain TCP only (dwb_encoded_send_fd); *detail as DIMSE_storeUser's statusDetail. The response is awaited
 * at most timeout_s seconds (0: for ever). */
OFCondition dwb_store_encoded(T_ASC_Association *a, T_ASC_PresentationContextID pid, const T_DIMSE_C_StoreRQ &req,
                              const struct iovec *spans, size_t n_spans, T_DIMSE_C_StoreRSP *rsp,
                              DcmDataset **detail, T_DIMSE_DetectedCancelParameters *cancel, int timeout_s);

#endif
