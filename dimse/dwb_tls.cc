// DCMTK helpers shared by the listener (scp/) and the sender (scu/): the TLS transport layer factory and
// socket options of an association.
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmnet/dcmtrans.h"
#include "dcmtk/dcmnet/dul.h"
#include "dcmtk/dcmtls/tlslayer.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <string>

#include "dwb_dimse.hh"

// DcmTransportConnection::getSocket() is protected; a member pointer taken inside a derived class is the
// standard-conforming way to reach it without patching DCMTK.
struct SocketAccessImpl : DcmTransportConnection {
    static int fd(DcmTransportConnection *c) {
        DcmNativeSocketType (DcmTransportConnection::*get)() = &SocketAccessImpl::getSocket;
        return static_cast<int>((c->*get)());
    }
};

int dwb_socket_fd(DcmTransportConnection *c) { return c ? SocketAccessImpl::fd(c) : -1; }

DcmTransportLayer *dwb_tls_layer(T_ASC_NetworkRole role, const char *cert, const char *key, const char *ca,
                                 int require_peer_cert, std::string &why) {
    DcmTLSTransportLayer *t = new DcmTLSTransportLayer(role, nullptr, OFTrue);
    if (t->setTLSProfile(TSP_Profile_BCP195).bad() || t->activateCipherSuites().bad()) {
        why = "cannot set up the TLS profile";
        delete t;
        return nullptr;
    }
    if (cert && key) {
        if (t->setPrivateKeyFile(key, DCF_Filetype_PEM).bad()) {
            why = std::string("cannot load the private key ") + key;
            delete t;
            return nullptr;
        }
        if (t->setCertificateFile(cert, DCF_Filetype_PEM).bad()) {
            why = std::string("cannot load the certificate ") + cert;
            delete t;
            return nullptr;
        }
        if (!t->checkPrivateKeyMatchesCertificate()) {
            why = std::string("the private key does not match the certificate ") + cert;
            delete t;
            return nullptr;
        }
    }
    if (ca && t->addTrustedCertificateFile(ca, DCF_Filetype_PEM).bad()) {
        why = std::string("cannot load the CA certificate ") + ca;
        delete t;
        return nullptr;
    }
    // A requestor verifies the destination when a CA is given; an acceptor asks clients for certificates when a CA
    // is given and insists on them only when configured to.
    if (role == NET_REQUESTOR) t->setCertificateVerification(ca ? DCV_requireCertificate : DCV_ignoreCertificate);
    else t->setCertificateVerification(require_peer_cert ? DCV_requireCertificate : ca ? DCV_checkCertificate : DCV_ignoreCertificate);
    return t;
}

void dwb_set_nodelay(T_ASC_Association *assoc) {
    DcmTransportConnection *conn = DUL_getTransportConnection(assoc->DULassociation);
    if (!conn) return;
    int fd = dwb_socket_fd(conn);
    int one = 1;
    if (fd >= 0) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

