/* Internal to scp/: the accept loop and admission of the DIMSE listener (dwb_listener.cc). The accepting thread
 * accepts and polls new connections; once one has sent its first bytes, a worker thread negotiates (TLS
 * handshake, A-ASSOCIATE-RQ), checks the allow-lists and hands the association to the server. C++ only. */
#ifndef DWB_LISTENER_HH
#define DWB_LISTENER_HH

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmnet/assoc.h"
#include "dcmtk/dcmnet/dcmtrans.h"

#include <atomic>

extern "C" {
#include "dwb_config.h"
#include "dwb_status.h"
}

struct dwb_listener;

/* An association request that passed the listener's admission (allow-lists); its presentation contexts are not
 * negotiated yet. */
struct dwb_admitted {
    T_ASC_Association *assoc; /* the serve function owns it: it rejects, or acknowledges and drops it */
    char id[24];              /* "a<n>", for logs */
    char calling[DWB_AE_MAX + 1];
    char called[DWB_AE_MAX + 1];
    char host[80]; /* the peer's IP literal (DCMTK keeps no port for incoming associations) */
};

/* Runs in the connection's worker thread. */
typedef void (*dwb_listener_serve_fn)(void *ud, dwb_admitted *a);

/* Binds listen.port and takes over tls (NULL = plain TCP), also on failure. cfg is borrowed. */
dwb_status dwb_listener_new(const dwb_config *cfg, DcmTransportLayer *tls, dwb_listener **out, dwb_error *err);
/* Accepts until *stop is nonzero, then closes connections still negotiating and waits for every worker (the
 * serve functions included) to return. */
void dwb_listener_run(dwb_listener *l, const std::atomic<int> *stop, dwb_listener_serve_fn serve, void *ud);
void dwb_listener_free(dwb_listener *l);

/* listen.max_associations and listen.max_associations_per_host: counts an association from host as active, or
 * returns false (nothing counted) when either limit is reached; *active and *from_host receive the counts before.
 * dwb_listener_leave() with the same host when it ends. */
bool dwb_listener_enter(dwb_listener *l, const char *host, int *active, int *from_host);
void dwb_listener_leave(dwb_listener *l, const char *host);

/* Sends an A-ASSOCIATE-RJ, counts it and destroys the association. */
void dwb_reject(T_ASC_Association *assoc, T_ASC_RejectParametersResult result, T_ASC_RejectParametersSource source,
                T_ASC_RejectParametersReason reason);
/* An AE title without leading and trailing spaces; out holds DWB_AE_MAX + 1. */
void dwb_trim_ae(const char *in, char *out);

#endif
