/* Google service-account key files (the JSON that `gcloud iam service-accounts keys create` writes): parsed
 * and checked for a usable RSA private key, for check-config and for the OAuth JWT signer. */
#ifndef DWB_GOOGLE_KEY_H
#define DWB_GOOGLE_KEY_H

#include <stddef.h>

#include <openssl/evp.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dwb_google_key {
    char *client_email;
    char *private_key_id; /* may be NULL */
    char *token_uri;      /* default https://oauth2.googleapis.com/token */
    EVP_PKEY *pkey;       /* RSA */
} dwb_google_key;

/* 0 on success; otherwise why holds a reason a human can act on ("not JSON: ...", "no private_key", ...). */
int dwb_google_key_load(const char *path, dwb_google_key *out, char *why, size_t cap);
void dwb_google_key_free(dwb_google_key *k);
int dwb_google_key_check(const char *path, char *why, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
