/* The bridge's configuration: a JSON file loaded, validated and resolved into plain structs.
 * Every key is documented in conf/README.md; errors name the offending key ("listen.port: expected ..."). */
#ifndef DWB_CONFIG_H
#define DWB_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "dwb_log.h"
#include "dwb_status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DWB_AE_MAX 16 /* DICOM AE titles are at most 16 characters */

typedef enum dwb_auth_type {
    DWB_AUTH_NONE = 0,
    DWB_AUTH_BEARER,
    DWB_AUTH_BASIC,
    DWB_AUTH_GOOGLE_SERVICE_ACCOUNT,
    DWB_AUTH_GOOGLE_METADATA,
    DWB_AUTH_TOKEN_COMMAND
} dwb_auth_type;

/* A secret comes from exactly one of: inline value, file (first line, trailing newline stripped), env var.
 * The loader resolves it into `value` at load time; `source` says where it came from for messages. */
typedef struct dwb_secret {
    char *value;  /* resolved secret, NULL if not configured */
    char *source; /* e.g. "file /run/secrets/token", "env STORE_TOKEN", "inline" */
} dwb_secret;

typedef struct dwb_auth_conf {
    dwb_auth_type type;
    const char *name;    /* the upstream's AE title, for messages (points into dwb_upstream_conf) */
    dwb_secret token;    /* bearer: token | token_file | token_env */
    char *username;      /* basic */
    dwb_secret password; /* basic: password | password_file | password_env */
    char *key_file;      /* google_service_account: path of the key JSON (key_file, key_env, or
                          * GOOGLE_APPLICATION_CREDENTIALS); validated at load time */
    char *scope;         /* google_service_account: default https://www.googleapis.com/auth/cloud-healthcare */
    char *metadata_url;  /* google_metadata: token URL of the metadata server */
    char *command;       /* token_command: run with /bin/sh -c; first line of stdout is the token */
    int token_lifetime_s; /* token_command: how long a token is reused; default 300 */
    int token_command_timeout_s; /* token_command: killed (with what it started) after this; default 30 */
} dwb_auth_conf;

typedef enum dwb_metadata_format { DWB_META_JSON = 0, DWB_META_XML } dwb_metadata_format;

typedef struct dwb_upstream_conf {
    char ae_title[DWB_AE_MAX + 1];
    char *base_url; /* without trailing slash */
    dwb_auth_conf auth;
    int qido_page_size;      /* default 1000 */
    int timeout_s;           /* whole-request timeout for QIDO/metadata; default 60 */
    int connect_timeout_s;   /* default 10 */
    int low_speed_time_s;    /* abort a transfer slower than 1 byte/s for this long; default 60 */
    int max_retries;         /* retries after the first attempt; default 5 */
    int retry_budget_s;      /* total time spent waiting between retries; default 120 */
    int tls_verify;          /* default 1 */
    char *ca_bundle;         /* optional path */
    dwb_metadata_format metadata_format; /* "json" (default) | "xml" */
    int max_concurrent_requests;         /* default 16 */
    int stow_batch_instances;            /* instances per STOW-RS request; default 50 */
    int stow_batch_bytes;                /* bytes per STOW-RS request (a single larger instance still goes); 32 MiB */
    int stow_batch_delay_ms;             /* wait this long for a batch to fill; default 200 */
    int store_sync;                      /* "store_mode": "sync" = answer C-STORE after the store confirmed */
    int stow_parallel;                   /* STOW-RS requests in flight at once (within max_concurrent_requests); 4 */
    int max_attempts;                    /* refusals of one instance before it goes to failed/; default 10 */
    int retry_max_wait_s;                /* longest wait between STOW-RS retries (also caps Retry-After); 300 */
    int commitment_timeout_s;            /* storage commitment waits this long for queued instances; 600 */
    int on_conflict_overwrite;           /* "on_conflict": 1 = "overwrite" (DELETE, then STOW again, once), 0 = "keep" */
    struct dwb_deid_profile *deid;       /* "deidentify": applied before spooling; NULL = sent as received */
    uint32_t *local_match_keys;          /* never sent to this store as QIDO filters, matched locally only */
    size_t n_local_match_keys;
    /* IDC (issue 16): bulk data from a public bucket, queries still by QIDO-RS on base_url */
    char *bucket_endpoint;               /* S3-compatible endpoint, path style, anonymous; NULL = none */
    char *idc_index;                     /* path of idc_index.csv(.zip); NULL = none */
    char idc_release[16];                /* idc.release: "current" or "v<N>"; "" = no preset */
    int idc_via_google;                  /* idc.via: 1 = the release's Google store, 0 = the public proxy */
} dwb_upstream_conf;

typedef struct dwb_destination_conf {
    char ae_title[DWB_AE_MAX + 1];
    char *host;
    int port;
    char calling_ae_title[DWB_AE_MAX + 1]; /* "" = listen.ae_title */
    char called_ae_title[DWB_AE_MAX + 1];  /* "" = ae_title */
    int max_associations;                  /* default 1 */
    char *preferred_transfer_syntax;       /* optional UID, NULL = as stored */
    char *transfer_syntax;                 /* asked of the store by WADO-RS; NULL = "as-stored" */
    int series_burst;                      /* default 0 */
    char *stow_url;                        /* a STOW-RS destination (import): POST URL instead of host/port */
    dwb_auth_conf auth;                    /* for stow_url */
    int tls;                               /* destinations[].tls present: DIMSE over TLS */
    char *tls_ca, *tls_certificate, *tls_key; /* trusted CA (verify the peer), optional client certificate */
} dwb_destination_conf;

/* One of routes[]: a C-STORE to routing_ae_title whose instance matches filter goes to these upstreams. */
typedef struct dwb_route_conf {
    char *filter;           /* the configured text, for messages */
    struct dwb_attrs *keys; /* filter parsed by dwb_route_filter_parse (translate/dwb_route.h) */
    size_t *upstreams;      /* indices into dwb_config.upstreams, each once */
    size_t n_upstreams;
} dwb_route_conf;

typedef struct dwb_config {
    char *path; /* the file it was loaded from, NULL for strings */
    struct {
        int port;                           /* default 11112 */
        char ae_title[DWB_AE_MAX + 1];      /* default "DWBRIDGE" */
        int max_associations;               /* default 32 */
        int max_pdu;                        /* default 131072 */
        int acse_timeout_s;                 /* default 30 */
        int max_pending;                    /* default 64: connections still negotiating */
        int dimse_timeout_s;                /* default 300; 0 = none (idle associations wait for the peer) */
        int max_associations_per_host;      /* default half of max_associations (at least 1) */
        char **allow_calling_ae; size_t n_allow_calling_ae; /* empty = all */
        char **allow_hosts; size_t n_allow_hosts;           /* IPv4/IPv6 literals; empty = all */
        char *tls_certificate, *tls_key, *tls_ca;            /* listen.tls: DIMSE over TLS when set */
        int tls_require_client_certificate;                  /* default 0 */
    } listen;
    dwb_upstream_conf *upstreams;
    size_t n_upstreams;
    dwb_destination_conf *destinations;
    size_t n_destinations;
    dwb_route_conf *routes;                  /* routing C-STOREs by tag; none = no routing AE title */
    size_t n_routes;
    int route_to_all;                        /* "route_to": 1 = "all" matching routes, 0 = "first" (default) */
    char routing_ae_title[DWB_AE_MAX + 1];   /* default listen.ae_title; "" when there are no routes */
    struct {
        char *dir;       /* default "/var/spool/dicomweb-bridge" */
        int min_free_mb; /* below this much free space C-STORE answers Out of Resources; default 512 */
        int max_instance_mb; /* a larger instance is refused with Out of Resources; default 0 = no cap */
    } spool;
    struct {
        int parallel_series;  /* series fetched at once per C-MOVE/C-GET; default 4 */
        int max_in_flight_mb; /* instances fetched but not yet sent, per C-MOVE/C-GET; default 64 */
        int max_attempts;     /* requests of one instance before it counts as failed; default 3 */
        int parallel_objects; /* bucket objects fetched at once per series (IDC buckets); default 8 */
    } retrieve;
    struct {
        int stamp; /* default 1: Original Attributes Sequence, Retrieve URL/AE on forwarded instances */
    } provenance;
    struct {
        int port;   /* default 8080; 0 = disabled */
        char *bind; /* IPv4/IPv6 literal; default "0.0.0.0" */
        char *console_path;     /* URL prefix of the operator's console; default "/console" */
        dwb_secret admin_token; /* console writes (Retry, Discard): admin_token | admin_token_file | admin_token_env */
        char **admin_proxies; size_t n_admin_proxies; /* addresses/networks of authenticating proxies (X-Forwarded-User) */
    } http;
    struct {
        int port;                                   /* DICOMweb gateway for viewers; default 0 = disabled */
        char *bind;                                 /* IPv4/IPv6 literal; default "127.0.0.1" */
        char **cors_origins; size_t n_cors_origins; /* exact Origin values allowed; empty = no CORS */
        dwb_secret token;                           /* optional bearer token clients must present */
        int allow_stow;                             /* STOW-RS accepted into the spool; default 0 = 405 */
        char **public_hosts; size_t n_public_hosts; /* host[:port] names the gateway may put in store URLs */
        char **trusted_proxies; size_t n_trusted_proxies; /* IPv4/IPv6 literals sending X-Forwarded-*; loopback too */
        int max_connections_per_ip; /* connections one client address may hold; trusted_proxies exempt; 0 = any. 8 */
        int idle_timeout_s;         /* a connection that sends nothing, or reads nothing of an answer, is closed; 60 */
        struct {
            char *path; /* URL prefix of the OHIF viewer served on the gateway's listener; NULL = no viewer */
            char *dir;  /* OHIF's built dist/ (index.html, bundles), resolved to its real path */
            char upstream[DWB_AE_MAX + 1]; /* the upstream the viewer shows; default the first one */
        } viewer;
    } gateway;
    struct {
        dwb_log_level level;   /* default info */
        dwb_log_format format; /* default text */
        int phi;               /* default 0: identifier and query values redacted in logs */
    } log;
} dwb_config;

/* Loads and validates. Relative paths in the file are resolved against the file's directory.
 * On failure err->message starts with the key path, e.g. "upstreams[0].base_url: expected an http(s) URL". */
dwb_status dwb_config_load_file(const char *path, dwb_config **out, dwb_error *err);
/* Same for a JSON text; base_dir resolves relative paths (NULL = current directory). */
dwb_status dwb_config_load_string(const char *json, const char *base_dir, dwb_config **out, dwb_error *err);
void dwb_config_free(dwb_config *cfg);

/* Case-sensitive, trailing-space-insensitive AE lookups (DICOM pads AE titles with spaces). NULL if none. */
const dwb_upstream_conf *dwb_config_find_upstream(const dwb_config *cfg, const char *ae_title);
const dwb_destination_conf *dwb_config_find_destination(const dwb_config *cfg, const char *ae_title);

#ifdef __cplusplus
}
#endif
#endif
