/* DCMTK helpers shared by scp/ and scu/. C++ only (DCMTK types); C code never includes this. */
#ifndef DWB_DIMSE_HH
#define DWB_DIMSE_HH

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmnet/assoc.h"
#include "dcmtk/dcmnet/dcmlayer.h"
#include "dcmtk/dcmnet/dcmtrans.h"

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

#endif
