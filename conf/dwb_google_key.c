/* Service-account key loading with OpenSSL; the private key never leaves this struct and is never logged. */
#include "dwb_google_key.h"

#include <jansson.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int dwb_google_key_load(const char *path, dwb_google_key *out, char *why, size_t cap) {
    memset(out, 0, sizeof *out);
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) {
        snprintf(why, cap, "not a JSON key file (%s, line %d)", je.text, je.line);
        return -1;
    }
    int rc = -1;
    const char *type = json_string_value(json_object_get(root, "type"));
    const char *pk = json_string_value(json_object_get(root, "private_key"));
    const char *email = json_string_value(json_object_get(root, "client_email"));
    const char *kid = json_string_value(json_object_get(root, "private_key_id"));
    const char *uri = json_string_value(json_object_get(root, "token_uri"));
    if (type && strcmp(type, "service_account") != 0) {
        snprintf(why, cap, "\"type\" is \"%.40s\", expected \"service_account\"", type);
    } else if (!pk) {
        snprintf(why, cap, "no \"private_key\" in the key file");
    } else if (!email) {
        snprintf(why, cap, "no \"client_email\" in the key file");
    } else {
        BIO *bio = BIO_new_mem_buf(pk, -1);
        EVP_PKEY *key = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
        BIO_free(bio);
        if (!key) {
            snprintf(why, cap, "\"private_key\" is not a PEM private key");
        } else if (EVP_PKEY_base_id(key) != EVP_PKEY_RSA) {
            snprintf(why, cap, "\"private_key\" is not an RSA key (RS256 needs RSA)");
            EVP_PKEY_free(key);
        } else {
            out->pkey = key;
            out->client_email = strdup(email);
            out->private_key_id = kid ? strdup(kid) : NULL;
            out->token_uri = strdup(uri ? uri : "https://oauth2.googleapis.com/token");
            rc = 0;
        }
    }
    json_decref(root);
    return rc;
}

void dwb_google_key_free(dwb_google_key *k) {
    if (!k) return;
    EVP_PKEY_free(k->pkey);
    free(k->client_email);
    free(k->private_key_id);
    free(k->token_uri);
    memset(k, 0, sizeof *k);
}

int dwb_google_key_check(const char *path, char *why, size_t cap) {
    dwb_google_key k;
    int rc = dwb_google_key_load(path, &k, why, cap);
    if (rc == 0) dwb_google_key_free(&k);
    return rc;
}
