/* Config loader: JSON (jansson) into dwb_config, validated key by key. Every message starts with the key path
 * so that an administrator knows where to look; unknown keys are errors because a typo in a PACS config must
 * not silently fall back to a default. */
#include "dwb_config.h"
#include "dwb_cidr.h"
#include "dwb_deid.h"
#include "dwb_google_key.h"
#include "dwb_keywords.h"
#include "dwb_route.h"
#include "dwb_tags.h"
#include "dwb_viewerpath.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct loader {
    const char *base_dir;
    dwb_error *err;
} loader;

static dwb_status bad(loader *L, const char *path, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static dwb_status bad(loader *L, const char *path, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return dwb_error_set(L->err, DWB_E_INVALID, "%s: %s", path, msg);
}

static void join(char *out, size_t cap, const char *path, const char *key) {
    /* Key paths are short (a few nested keys); truncation would only shorten a message. */
    int n = snprintf(out, cap, "%.100s%s%.60s", path, path[0] ? "." : "", key);
    (void)n;
}

/* Rejects keys not in the NULL-terminated list, naming the known ones. */
static dwb_status check_keys(loader *L, const char *path, json_t *obj, const char *const *known) {
    const char *key;
    json_t *val;
    json_object_foreach(obj, key, val) {
        int ok = 0;
        for (const char *const *k = known; *k; k++)
            if (strcmp(*k, key) == 0) ok = 1;
        if (!ok) {
            char list[300] = "";
            for (const char *const *k = known; *k; k++) {
                if (list[0]) strncat(list, ", ", sizeof list - strlen(list) - 1);
                strncat(list, *k, sizeof list - strlen(list) - 1);
            }
            char p[200];
            join(p, sizeof p, path, key);
            return bad(L, p, "unknown key (known: %s)", list);
        }
    }
    return DWB_OK;
}


static dwb_status get_int(loader *L, const char *path, json_t *obj, const char *key, long lo, long hi, int *out) {
    json_t *v = json_object_get(obj, key);
    if (!v) return DWB_OK;
    char p[200];
    join(p, sizeof p, path, key);
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return bad(L, p, "expected an integer %ld-%ld", lo, hi);
    *out = (int)json_integer_value(v);
    return DWB_OK;
}

static dwb_status get_bool(loader *L, const char *path, json_t *obj, const char *key, int *out) {
    json_t *v = json_object_get(obj, key);
    if (!v) return DWB_OK;
    char p[200];
    join(p, sizeof p, path, key);
    if (!json_is_boolean(v)) return bad(L, p, "expected true or false");
    *out = json_is_true(v);
    return DWB_OK;
}

static dwb_status get_str(loader *L, const char *path, json_t *obj, const char *key, int required, const char **out) {
    json_t *v = json_object_get(obj, key);
    char p[200];
    join(p, sizeof p, path, key);
    if (!v) {
        if (required) return bad(L, p, "required");
        return DWB_OK;
    }
    if (!json_is_string(v) || json_string_length(v) == 0) return bad(L, p, "expected a non-empty string");
    if (strlen(json_string_value(v)) != json_string_length(v)) return bad(L, p, "contains a NUL character");
    *out = json_string_value(v);
    return DWB_OK;
}

/* AE title: 1-16 characters of the default repertoire without backslash or control characters, not all spaces. */
static dwb_status get_ae(loader *L, const char *path, json_t *obj, const char *key, int required, char *out) {
    const char *s = NULL;
    dwb_status st = get_str(L, path, obj, key, required, &s);
    if (st != DWB_OK || !s) return st;
    char p[200];
    join(p, sizeof p, path, key);
    size_t n = strlen(s);
    if (n > DWB_AE_MAX) return bad(L, p, "AE title '%s' is longer than 16 characters", s);
    int nonspace = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c > 0x7e || c == '\\') return bad(L, p, "AE title may only contain printable ASCII, no backslash");
        if (c != ' ') nonspace = 1;
    }
    if (!nonspace) return bad(L, p, "AE title must not be blank");
    /* Leading/trailing spaces are not significant in DICOM; store the trimmed form. */
    while (*s == ' ') s++;
    n = strlen(s);
    while (n > 0 && s[n - 1] == ' ') n--;
    memcpy(out, s, n);
    out[n] = '\0';
    return DWB_OK;
}

static char *resolve_path(loader *L, const char *p) {
    if (p[0] == '/' || !L->base_dir || !L->base_dir[0]) return strdup(p);
    size_t n = strlen(L->base_dir) + strlen(p) + 2;
    char *r = malloc(n);
    if (r) snprintf(r, n, "%s/%s", L->base_dir, p);
    return r;
}

static dwb_status check_readable(loader *L, const char *key, const char *file) {
    FILE *f = fopen(file, "rb");
    if (!f) return bad(L, key, "cannot read %s: %s", file, strerror(errno));
    fclose(f);
    return DWB_OK;
}

/* A secret from exactly one of "<name>" (inline), "<name>_file", "<name>_env". */
static dwb_status get_secret(loader *L, const char *path, json_t *obj, const char *name, dwb_secret *out) {
    char k_file[64], k_env[64], p[200];
    snprintf(k_file, sizeof k_file, "%s_file", name);
    snprintf(k_env, sizeof k_env, "%s_env", name);
    const char *inl = NULL, *file = NULL, *env = NULL;
    dwb_status st;
    if ((st = get_str(L, path, obj, name, 0, &inl)) != DWB_OK) return st;
    if ((st = get_str(L, path, obj, k_file, 0, &file)) != DWB_OK) return st;
    if ((st = get_str(L, path, obj, k_env, 0, &env)) != DWB_OK) return st;
    int n = (inl != NULL) + (file != NULL) + (env != NULL);
    if (n > 1) {
        join(p, sizeof p, path, name);
        return bad(L, p, "give only one of %s, %s, %s", name, k_file, k_env);
    }
    if (inl) {
        out->value = strdup(inl);
        out->source = strdup("inline");
    } else if (file) {
        join(p, sizeof p, path, k_file);
        char *full = resolve_path(L, file);
        if (!full) return dwb_error_set(L->err, DWB_E_NOMEM, "out of memory");
        FILE *f = fopen(full, "rb");
        if (!f) {
            st = bad(L, p, "cannot read %s: %s", full, strerror(errno));
            free(full);
            return st;
        }
        char line[8192];
        size_t len = 0;
        if (fgets(line, sizeof line, f)) len = strlen(line);
        fclose(f);
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = '\0';
        if (len == 0) {
            st = bad(L, p, "%s is empty", full);
            free(full);
            return st;
        }
        line[len] = '\0';
        out->value = strdup(line);
        size_t sl = strlen(full) + 6;
        out->source = malloc(sl);
        if (out->source) snprintf(out->source, sl, "file %s", full);
        memset(line, 0, sizeof line);
        free(full);
    } else if (env) {
        join(p, sizeof p, path, k_env);
        const char *v = getenv(env);
        if (!v || !*v) return bad(L, p, "environment variable %s is not set or empty", env);
        out->value = strdup(v);
        size_t sl = strlen(env) + 5;
        out->source = malloc(sl);
        if (out->source) snprintf(out->source, sl, "env %s", env);
    }
    if (n == 1 && (!out->value || !out->source)) return dwb_error_set(L->err, DWB_E_NOMEM, "out of memory");
    return DWB_OK;
}

static dwb_status load_auth(loader *L, const char *path, json_t *obj, dwb_auth_conf *a) {
    static const char *const keys[] = {"type", "token", "token_file", "token_env", "username",
                                       "password", "password_file", "password_env", "key_file", "key_env",
                                       "scope", "metadata_url", "command", "token_lifetime_s",
                                       "token_command_timeout_s", NULL};
    if (!json_is_object(obj)) return bad(L, path, "expected an object");
    dwb_status st = check_keys(L, path, obj, keys);
    if (st != DWB_OK) return st;
    const char *type = NULL;
    if ((st = get_str(L, path, obj, "type", 1, &type)) != DWB_OK) return st;
    char p[200];
    join(p, sizeof p, path, "type");
    if (strcmp(type, "none") == 0)
        a->type = DWB_AUTH_NONE;
    else if (strcmp(type, "bearer") == 0)
        a->type = DWB_AUTH_BEARER;
    else if (strcmp(type, "basic") == 0)
        a->type = DWB_AUTH_BASIC;
    else if (strcmp(type, "google_service_account") == 0)
        a->type = DWB_AUTH_GOOGLE_SERVICE_ACCOUNT;
    else if (strcmp(type, "google_metadata") == 0)
        a->type = DWB_AUTH_GOOGLE_METADATA;
    else if (strcmp(type, "token_command") == 0)
        a->type = DWB_AUTH_TOKEN_COMMAND;
    else
        return bad(L, p, "expected \"none\", \"bearer\", \"basic\", \"google_service_account\", "
                         "\"google_metadata\" or \"token_command\", got \"%s\"", type);
    if ((st = get_secret(L, path, obj, "token", &a->token)) != DWB_OK) return st;
    if ((st = get_secret(L, path, obj, "password", &a->password)) != DWB_OK) return st;
    const char *user = NULL;
    if ((st = get_str(L, path, obj, "username", 0, &user)) != DWB_OK) return st;
    if (user && !(a->username = strdup(user))) return dwb_error_set(L->err, DWB_E_NOMEM, "out of memory");
    const char *kf = NULL, *ke = NULL, *scope = NULL, *murl = NULL, *cmd = NULL;
    if ((st = get_str(L, path, obj, "key_file", 0, &kf)) != DWB_OK) return st;
    if ((st = get_str(L, path, obj, "key_env", 0, &ke)) != DWB_OK) return st;
    if ((st = get_str(L, path, obj, "scope", 0, &scope)) != DWB_OK) return st;
    if ((st = get_str(L, path, obj, "metadata_url", 0, &murl)) != DWB_OK) return st;
    if ((st = get_str(L, path, obj, "command", 0, &cmd)) != DWB_OK) return st;
    a->token_lifetime_s = 300;
    if ((st = get_int(L, path, obj, "token_lifetime_s", 1, 86400, &a->token_lifetime_s)) != DWB_OK) return st;
    a->token_command_timeout_s = 30;
    if ((st = get_int(L, path, obj, "token_command_timeout_s", 1, 3600, &a->token_command_timeout_s)) != DWB_OK)
        return st;
    if (json_object_get(obj, "token_command_timeout_s") && a->type != DWB_AUTH_TOKEN_COMMAND)
        return bad(L, path, "token_command_timeout_s is only used with type token_command");
    if ((kf || ke || scope) && a->type != DWB_AUTH_GOOGLE_SERVICE_ACCOUNT)
        return bad(L, path, "key_file/key_env/scope are only used with type google_service_account");
    if (murl && a->type != DWB_AUTH_GOOGLE_METADATA)
        return bad(L, path, "metadata_url is only used with type google_metadata");
    if (cmd && a->type != DWB_AUTH_TOKEN_COMMAND) return bad(L, path, "command is only used with type token_command");
    if (a->type == DWB_AUTH_GOOGLE_SERVICE_ACCOUNT) {
        join(p, sizeof p, path, kf ? "key_file" : "key_env");
        if (kf && ke) return bad(L, path, "give only one of key_file and key_env");
        const char *env = ke ? ke : "GOOGLE_APPLICATION_CREDENTIALS";
        const char *file = kf ? kf : getenv(env);
        if (!file || !*file)
            return bad(L, ke ? p : path, "type google_service_account needs key_file, key_env or %s", env);
        if (!(a->key_file = resolve_path(L, file))) return dwb_error_set(L->err, DWB_E_NOMEM, "out of memory");
        char why[300];
        if (dwb_google_key_check(a->key_file, why, sizeof why) != 0) return bad(L, p, "%s: %s", a->key_file, why);
        if (!(a->scope = strdup(scope ? scope : "https://www.googleapis.com/auth/cloud-healthcare")))
            return dwb_error_set(L->err, DWB_E_NOMEM, "out of memory");
    }
    if (a->type == DWB_AUTH_GOOGLE_METADATA &&
        !(a->metadata_url = strdup(murl ? murl : "http://metadata.google.internal/computeMetadata/v1/instance/"
                                                 "service-accounts/default/token")))
        return dwb_error_set(L->err, DWB_E_NOMEM, "out of memory");
    if (a->type == DWB_AUTH_TOKEN_COMMAND) {
        if (!cmd) return bad(L, path, "type token_command needs command");
        if (!(a->command = strdup(cmd))) return dwb_error_set(L->err, DWB_E_NOMEM, "out of memory");
    }
    if (a->type == DWB_AUTH_BEARER && !a->token.value)
        return bad(L, path, "type bearer needs one of token_file, token_env or token");
    if (a->type == DWB_AUTH_BASIC && (!a->username || !a->password.value))
        return bad(L, path, "type basic needs username and one of password_file, password_env or password");
    if (a->type != DWB_AUTH_BEARER && a->token.value) return bad(L, path, "a token is only used with type bearer");
    if (a->type != DWB_AUTH_BASIC && (a->username || a->password.value))
        return bad(L, path, "username/password are only used with type basic");
    return DWB_OK;
}

/* "tls": { "certificate", "key", "ca", ... }: paths resolved and checked readable. */
static dwb_status load_tls(loader *L, const char *path, json_t *obj, const char *const *extra_keys, char **cert,
                           char **key, char **ca) {
    const char *known[12] = {"certificate", "key", "ca"};
    size_t nk = 3;
    for (const char *const *e = extra_keys; e && *e && nk < 11; e++) known[nk++] = *e;
    known[nk] = NULL;
    if (!json_is_object(obj)) return bad(L, path, "expected an object");
    dwb_status st = check_keys(L, path, obj, known);
    if (st != DWB_OK) return st;
    const char *names[3] = {"certificate", "key", "ca"};
    char **slots[3] = {cert, key, ca};
    for (int i = 0; i < 3; i++) {
        const char *v = NULL;
        if ((st = get_str(L, path, obj, names[i], 0, &v)) != DWB_OK) return st;
        if (!v) continue;
        char p[220];
        join(p, sizeof p, path, names[i]);
        if (!(*slots[i] = resolve_path(L, v))) return dwb_error_set(L->err, DWB_E_NOMEM, "out of memory");
        if ((st = check_readable(L, p, *slots[i])) != DWB_OK) return st;
    }
    if ((*cert != NULL) != (*key != NULL)) return bad(L, path, "certificate and key go together");
    return DWB_OK;
}

/* upstreams[].local_match_keys: keywords or 8-hex tags. The UIDs of the hierarchy are refused: they are the
 * QIDO path or the key that bounds the answer, and a query without them would fetch the whole store. */
static dwb_status get_local_match_keys(loader *L, const char *path, json_t *obj, dwb_upstream_conf *u) {
    json_t *arr = json_object_get(obj, "local_match_keys");
    if (!arr) return DWB_OK;
    char p[200];
    join(p, sizeof p, path, "local_match_keys");
    if (!json_is_array(arr)) return bad(L, p, "expected an array of keywords or 8-hex tags");
    if (json_array_size(arr) == 0) return DWB_OK;
    u->local_match_keys = calloc(json_array_size(arr), sizeof *u->local_match_keys);
    if (!u->local_match_keys) return dwb_error_set(L->err, DWB_E_NOMEM, "out of memory");
    for (size_t i = 0; i < json_array_size(arr); i++) {
        json_t *v = json_array_get(arr, i);
        char pi[240];
        snprintf(pi, sizeof pi, "%.200s[%zu]", p, i);
        if (!json_is_string(v)) return bad(L, pi, "expected a keyword (e.g. \"StudyID\") or an 8-hex tag");
        uint32_t tag = 0;
        dwb_error e = {0};
        if (dwb_tag_parse(json_string_value(v), &tag, &e) != DWB_OK) return bad(L, pi, "%s", e.message);
        if (tag == 0x0020000Du || tag == 0x0020000Eu || tag == 0x00080018u)
            return bad(L, pi, "%s is a unique key of the query hierarchy; it is always sent to the store",
                       json_string_value(v));
        u->local_match_keys[u->n_local_match_keys++] = tag;
    }
    return DWB_OK;
}

/* A list of keywords or 8-hex tags (deidentify.keep / .remove). */
static dwb_status get_tag_list(loader *L, const char *path, json_t *obj, const char *key, uint32_t **out, size_t *n) {
    json_t *v = json_object_get(obj, key);
    if (!v) return DWB_OK;
    char p[200], pi[240];
    join(p, sizeof p, path, key);
    if (!json_is_array(v)) return bad(L, p, "expected an array of keywords (e.g. \"PatientName\") or 8-hex tags");
    if (!(*out = calloc(json_array_size(v) + 1, sizeof **out))) return dwb_error_set(L->err, DWB_E_NOMEM, "out of memory");
    for (size_t i = 0; i < json_array_size(v); i++) {
        json_t *e = json_array_get(v, i);
        snprintf(pi, sizeof pi, "%.200s[%zu]", p, i);
        if (!json_is_string(e)) return bad(L, pi, "expected a keyword (e.g. \"PatientName\") or an 8-hex tag");
        uint32_t tag = 0;
        dwb_error te = {0};
        if (dwb_tag_parse(json_string_value(e), &tag, &te) != DWB_OK) return bad(L, pi, "%s", te.message);
        (*out)[(*n)++] = tag;
    }
    return DWB_OK;
}

/* upstreams[].deidentify (PS3.15 Annex E, translate/dwb_deid.h). */
static dwb_status load_deidentify(loader *L, const char *path, json_t *obj, dwb_upstream_conf *u) {
    static const char *const deid_keys[] = {"profile", "options", "keep", "remove", "uid_secret", "uid_secret_file",
                                            "uid_secret_env", "allow_burned_in", NULL};
    json_t *d = json_object_get(obj, "deidentify");
    if (!d) return DWB_OK;
    char p[200], q[240];
    join(p, sizeof p, path, "deidentify");
    if (!json_is_object(d)) return bad(L, p, "expected an object");
    dwb_status st = check_keys(L, p, d, deid_keys);
    if (st != DWB_OK) return st;
    if (!(u->deid = calloc(1, sizeof *u->deid))) return dwb_error_set(L->err, DWB_E_NOMEM, "out of memory");
    const char *profile = NULL;
    if ((st = get_str(L, p, d, "profile", 1, &profile)) != DWB_OK) return st;
    join(q, sizeof q, p, "profile");
    if (strcmp(profile, "basic") != 0)
        return bad(L, q, "expected \"basic\" (the Basic Application Level Confidentiality Profile), got \"%.40s\"",
                   profile);
    json_t *opts = json_object_get(d, "options");
    join(q, sizeof q, p, "options");
    if (opts && !json_is_array(opts)) return bad(L, q, "expected an array of option names");
    for (size_t i = 0; opts && i < json_array_size(opts); i++) {
        json_t *o = json_array_get(opts, i);
        unsigned bit = json_is_string(o) ? dwb_deid_option(json_string_value(o)) : 0;
        if (!bit)
            return bad(L, q, "element %zu: \"%.60s\" is not supported; supported: retain-uids, retain-device-identity, "
                             "retain-patient-characteristics, retain-longitudinal-full-dates, "
                             "retain-longitudinal-modified-dates, clean-descriptors",
                       i, json_is_string(o) ? json_string_value(o) : "(not a string)");
        u->deid->options |= bit;
    }
    if ((u->deid->options & DWB_DEID_OPT_FULL_DATES) && (u->deid->options & DWB_DEID_OPT_MODIFIED_DATES))
        return bad(L, q, "retain-longitudinal-full-dates and retain-longitudinal-modified-dates exclude each other");
    if ((st = get_tag_list(L, p, d, "keep", &u->deid->keep, &u->deid->n_keep)) != DWB_OK) return st;
    if ((st = get_tag_list(L, p, d, "remove", &u->deid->remove, &u->deid->n_remove)) != DWB_OK) return st;
    if ((st = get_bool(L, p, d, "allow_burned_in", &u->deid->allow_burned_in)) != DWB_OK) return st;
    dwb_secret sec = {0};
    st = get_secret(L, p, d, "uid_secret", &sec);
    if (st == DWB_OK && !sec.value) {
        join(q, sizeof q, p, "uid_secret_file");
        st = bad(L, q, "required (or uid_secret_env): the key of the UID mapping and the date shift");
    } else if (st == DWB_OK && strlen(sec.value) < 16) {
        join(q, sizeof q, p, "uid_secret_file");
        st = bad(L, q, "the secret (%s) is shorter than 16 characters", sec.source);
    } else if (st == DWB_OK) {
        u->deid->secret_len = strlen(sec.value);
        if (!(u->deid->secret = malloc(u->deid->secret_len))) st = dwb_error_set(L->err, DWB_E_NOMEM, "out of memory");
        else memcpy(u->deid->secret, sec.value, u->deid->secret_len);
    }
    if (sec.value) memset(sec.value, 0, strlen(sec.value));
    free(sec.value);
    free(sec.source);
    return st;
}

static dwb_status load_upstream(loader *L, const char *path, json_t *obj, dwb_upstream_conf *u) {
    static const char *const keys[] = {"ae_title", "base_url", "auth", "qido_page_size", "timeout_s",
                                       "connect_timeout_s", "low_speed_time_s", "max_retries", "retry_budget_s",
                                       "tls_verify", "ca_bundle", "metadata_format", "max_concurrent_requests",
                                       "stow_batch_instances", "stow_batch_bytes", "stow_batch_delay_ms", "store_mode",
                                       "google", "stow_parallel", "max_attempts", "retry_max_wait_s", "commitment_timeout_s",
                                       "local_match_keys", "bucket_endpoint", "idc_index", "idc", "on_conflict", "deidentify", NULL};
    if (!json_is_object(obj)) return bad(L, path, "expected an object");
    dwb_status st = check_keys(L, path, obj, keys);
    if (st != DWB_OK) return st;
    u->qido_page_size = 1000;
    u->timeout_s = 60;
    u->connect_timeout_s = 10;
    u->low_speed_time_s = 60;
    u->max_retries = 5;
    u->retry_budget_s = 120;
    u->tls_verify = 1;
    u->metadata_format = DWB_META_JSON;
    u->max_concurrent_requests = 16;
    u->stow_batch_instances = 50;
    u->stow_batch_bytes = 32 << 20;
    u->stow_batch_delay_ms = 200;
    u->stow_parallel = 4;
    u->max_attempts = 10;
    u->retry_max_wait_s = 300;
    u->commitment_timeout_s = 600;
    if ((st = get_ae(L, path, obj, "ae_title", 1, u->ae_title)) != DWB_OK) return st;
    const char *url = NULL;
    char p[200];
    char gurl[1024];
    json_t *google = json_object_get(obj, "google");
    json_t *idc = json_object_get(obj, "idc");
    if (idc) {
        /* NCI Imaging Data Commons: its public proxy, or the Google store of one release (see conf/README.md). */
        static const char *const ikeys[] = {"release", "via", NULL};
        char ip[200];
        join(ip, sizeof ip, path, "idc");
        if (!json_is_object(idc)) return bad(L, ip, "expected an object");
        if (json_object_get(obj, "base_url") || google) return bad(L, ip, "give one of base_url, google or idc");
        if ((st = check_keys(L, ip, idc, ikeys)) != DWB_OK) return st;
        const char *rel = "current", *via = "proxy";
        if ((st = get_str(L, ip, idc, "release", 0, &rel)) != DWB_OK) return st;
        if ((st = get_str(L, ip, idc, "via", 0, &via)) != DWB_OK) return st;
        char rp[200], vp[200];
        join(rp, sizeof rp, ip, "release");
        join(vp, sizeof vp, ip, "via");
        int ver = 0;
        if (strcmp(rel, "current") != 0) {
            char tail;
            if (rel[0] != 'v' || sscanf(rel + 1, "%d%c", &ver, &tail) != 1 || ver < 1 || ver > 9999)
                return bad(L, rp, "expected \"current\" or \"v<N>\" (an IDC release, e.g. \"v21\"), got \"%s\"", rel);
        }
        if (!strcmp(via, "proxy")) {
            if (ver)
                return bad(L, rp, "the IDC proxy serves only the current release; use \"via\": \"google\" for %s", rel);
            snprintf(gurl, sizeof gurl, "%s",
                     "https://proxy.imaging.datacommons.cancer.gov/current/"
                     "viewer-only-no-downloads-see-tinyurl-dot-com-slash-3j3d9jyp/dicomWeb");
        } else if (!strcmp(via, "google")) {
            if (!ver)
                return bad(L, rp, "the Google stores of IDC are per release: give \"v<N>\" (e.g. \"v21\"), not \"current\"");
            if (!json_object_get(obj, "auth"))
                return bad(L, vp, "\"google\" needs an auth section (google_service_account, google_metadata or "
                                  "token_command): the stores are readable by any signed-in Google account");
            snprintf(gurl, sizeof gurl,
                     "https://healthcare.googleapis.com/v1/projects/nci-idc-data/locations/us-central1/datasets/idc/"
                     "dicomStores/idc-store-v%d/dicomWeb", ver);
        } else {
            return bad(L, vp, "expected \"proxy\" or \"google\", got \"%s\"", via);
        }
        snprintf(u->idc_release, sizeof u->idc_release, "%s", rel);
        u->idc_via_google = !strcmp(via, "google");
        url = gurl;
        join(p, sizeof p, path, "idc");
    } else if (google) {
        /* Google Cloud Healthcare API store addressed by its names instead of a URL. */
        static const char *const gkeys[] = {"project", "location", "dataset", "dicom_store", "endpoint", NULL};
        char gp[200];
        join(gp, sizeof gp, path, "google");
        if (!json_is_object(google)) return bad(L, gp, "expected an object");
        if (json_object_get(obj, "base_url")) return bad(L, gp, "give either base_url or google, not both");
        if ((st = check_keys(L, gp, google, gkeys)) != DWB_OK) return st;
        const char *proj = NULL, *loc = NULL, *ds = NULL, *store = NULL;
        const char *ep = "https://healthcare.googleapis.com/v1";
        if ((st = get_str(L, gp, google, "project", 1, &proj)) != DWB_OK) return st;
        if ((st = get_str(L, gp, google, "location", 1, &loc)) != DWB_OK) return st;
        if ((st = get_str(L, gp, google, "dataset", 1, &ds)) != DWB_OK) return st;
        if ((st = get_str(L, gp, google, "dicom_store", 1, &store)) != DWB_OK) return st;
        if ((st = get_str(L, gp, google, "endpoint", 0, &ep)) != DWB_OK) return st;
        const char *parts[] = {proj, loc, ds, store};
        for (int i = 0; i < 4; i++)
            for (const char *c = parts[i]; *c; c++)
                if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
                      *c == '-' || *c == '_' || *c == '.'))
                    return bad(L, gp, "'%s' may only contain letters, digits, '-', '_' and '.'", parts[i]);
        snprintf(gurl, sizeof gurl, "%s/projects/%s/locations/%s/datasets/%s/dicomStores/%s/dicomWeb", ep, proj, loc,
                 ds, store);
        url = gurl;
        join(p, sizeof p, path, "google.endpoint");
    } else {
        if ((st = get_str(L, path, obj, "base_url", 1, &url)) != DWB_OK) return st;
        join(p, sizeof p, path, "base_url");
    }
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)
        return bad(L, p, "expected an http:// or https:// URL, got \"%s\"", url);
    const char *host = strstr(url, "://") + 3;
    if (!*host || *host == '/') return bad(L, p, "URL has no host");
    for (const char *c = url; *c; c++)
        if ((unsigned char)*c <= 0x20 || *c == '?' || *c == '#')
            return bad(L, p, "URL must not contain spaces, control characters, '?' or '#'");
    if (!(u->base_url = strdup(url))) return dwb_error_set(L->err, DWB_E_NOMEM, "out of memory");
    size_t n = strlen(u->base_url);
    while (n > 0 && u->base_url[n - 1] == '/') u->base_url[--n] = '\0';
    u->auth.name = u->ae_title;
    json_t *auth = json_object_get(obj, "auth");
    if (auth) {
        join(p, sizeof p, path, "auth");
        if ((st = load_auth(L, p, auth, &u->auth)) != DWB_OK) return st;
    }
    if ((st = get_int(L, path, obj, "qido_page_size", 1, 100000, &u->qido_page_size)) != DWB_OK) return st;
    if ((st = get_int(L, path, obj, "timeout_s", 0, 86400, &u->timeout_s)) != DWB_OK) return st;
    if ((st = get_int(L, path, obj, "connect_timeout_s", 1, 600, &u->connect_timeout_s)) != DWB_OK) return st;
    if ((st = get_int(L, path, obj, "low_speed_time_s", 0, 3600, &u->low_speed_time_s)) != DWB_OK) return st;
    if ((st = get_int(L, path, obj, "max_retries", 0, 100, &u->max_retries)) != DWB_OK) return st;
    if ((st = get_int(L, path, obj, "retry_budget_s", 0, 86400, &u->retry_budget_s)) != DWB_OK) return st;
    if ((st = get_bool(L, path, obj, "tls_verify", &u->tls_verify)) != DWB_OK) return st;
    if ((st = get_int(L, path, obj, "max_concurrent_requests", 1, 1024, &u->max_concurrent_requests)) != DWB_OK)
        return st;
    if ((st = get_int(L, path, obj, "stow_batch_instances", 1, 10000, &u->stow_batch_instances)) != DWB_OK) return st;
    if ((st = get_int(L, path, obj, "stow_batch_bytes", 1024, 1 << 30, &u->stow_batch_bytes)) != DWB_OK) return st;
    if ((st = get_int(L, path, obj, "stow_batch_delay_ms", 0, 60000, &u->stow_batch_delay_ms)) != DWB_OK) return st;
    if ((st = get_int(L, path, obj, "stow_parallel", 1, 64, &u->stow_parallel)) != DWB_OK) return st;
    if ((st = get_int(L, path, obj, "max_attempts", 1, 1000, &u->max_attempts)) != DWB_OK) return st;
    if ((st = get_int(L, path, obj, "retry_max_wait_s", 1, 86400, &u->retry_max_wait_s)) != DWB_OK) return st;
    if ((st = get_int(L, path, obj, "commitment_timeout_s", 1, 86400, &u->commitment_timeout_s)) != DWB_OK) return st;
    const char *ca = NULL;
    if ((st = get_str(L, path, obj, "ca_bundle", 0, &ca)) != DWB_OK) return st;
    if (ca) {
        join(p, sizeof p, path, "ca_bundle");
        if (!(u->ca_bundle = resolve_path(L, ca))) return dwb_error_set(L->err, DWB_E_NOMEM, "out of memory");
        if ((st = check_readable(L, p, u->ca_bundle)) != DWB_OK) return st;
    }
    const char *mode = NULL;
    if ((st = get_str(L, path, obj, "store_mode", 0, &mode)) != DWB_OK) return st;
    if (mode) {
        join(p, sizeof p, path, "store_mode");
        if (!strcmp(mode, "async")) u->store_sync = 0;
        else if (!strcmp(mode, "sync")) u->store_sync = 1;
        else return bad(L, p, "expected \"async\" or \"sync\", got \"%s\"", mode);
    }
    const char *oc = NULL;
    if ((st = get_str(L, path, obj, "on_conflict", 0, &oc)) != DWB_OK) return st;
    if (oc) {
        join(p, sizeof p, path, "on_conflict");
        if (!strcmp(oc, "keep")) u->on_conflict_overwrite = 0;
        else if (!strcmp(oc, "overwrite")) u->on_conflict_overwrite = 1;
        else return bad(L, p, "expected \"keep\" or \"overwrite\", got \"%s\"", oc);
    }
    if ((st = get_local_match_keys(L, path, obj, u)) != DWB_OK) return st;
    if ((st = load_deidentify(L, path, obj, u)) != DWB_OK) return st;
    const char *bep = NULL, *ixp = NULL;
    if ((st = get_str(L, path, obj, "bucket_endpoint", 0, &bep)) != DWB_OK) return st;
    if (!bep && idc) bep = "https://s3.amazonaws.com"; /* IDC's buckets: AWS, anonymous, no egress fees */
    if (bep) {
        join(p, sizeof p, path, "bucket_endpoint");
        if (strncmp(bep, "http://", 7) != 0 && strncmp(bep, "https://", 8) != 0)
            return bad(L, p, "expected an http:// or https:// URL, got \"%s\"", bep);
        for (const char *c = bep; *c; c++)
            if ((unsigned char)*c <= 0x20 || *c == '?' || *c == '#')
                return bad(L, p, "URL must not contain spaces, control characters, '?' or '#'");
        if (!(u->bucket_endpoint = strdup(bep))) return dwb_error_set(L->err, DWB_E_NOMEM, "out of memory");
        size_t bn = strlen(u->bucket_endpoint);
        while (bn > 0 && u->bucket_endpoint[bn - 1] == '/') u->bucket_endpoint[--bn] = '\0';
    }
    if ((st = get_str(L, path, obj, "idc_index", 0, &ixp)) != DWB_OK) return st;
    if (ixp) {
        join(p, sizeof p, path, "idc_index");
        if (!(u->idc_index = resolve_path(L, ixp))) return dwb_error_set(L->err, DWB_E_NOMEM, "out of memory");
        if ((st = check_readable(L, p, u->idc_index)) != DWB_OK) return st;
        if (!u->bucket_endpoint)
            return bad(L, p, "needs bucket_endpoint (or an idc preset) to know where the indexed series are");
    }
    const char *fmt = NULL;
    if ((st = get_str(L, path, obj, "metadata_format", 0, &fmt)) != DWB_OK) return st;
    if (fmt) {
        join(p, sizeof p, path, "metadata_format");
        if (strcmp(fmt, "json") == 0)
            u->metadata_format = DWB_META_JSON;
        else if (strcmp(fmt, "xml") == 0)
            u->metadata_format = DWB_META_XML;
        else
            return bad(L, p, "expected \"json\" or \"xml\", got \"%s\"", fmt);
    }
    return DWB_OK;
}

static dwb_status load_destination(loader *L, const char *path, json_t *obj, dwb_destination_conf *d) {
    static const char *const keys[] = {"ae_title", "host", "port", "calling_ae_title", "called_ae_title",
                                       "max_associations", "preferred_transfer_syntax", "series_burst", "tls",
                                       "stow_url", "auth", "transfer_syntax", NULL};
    if (!json_is_object(obj)) return bad(L, path, "expected an object");
    dwb_status st = check_keys(L, path, obj, keys);
    if (st != DWB_OK) return st;
    d->max_associations = 1;
    d->port = 0;
    if ((st = get_ae(L, path, obj, "ae_title", 1, d->ae_title)) != DWB_OK) return st;
    const char *host = NULL, *stow = NULL;
    char p[200];
    if ((st = get_str(L, path, obj, "stow_url", 0, &stow)) != DWB_OK) return st;
    d->auth.name = d->ae_title;
    if (stow) {
        /* A DICOMweb destination (e.g. CTP's STOW-RS port) for the import command. */
        join(p, sizeof p, path, "stow_url");
        if (json_object_get(obj, "host") || json_object_get(obj, "port"))
            return bad(L, path, "give either host and port, or stow_url");
        if (strncmp(stow, "http://", 7) != 0 && strncmp(stow, "https://", 8) != 0)
            return bad(L, p, "expected an http:// or https:// URL, got \"%s\"", stow);
        if (!(d->stow_url = strdup(stow))) return dwb_error_set(L->err, DWB_E_NOMEM, "out of memory");
        if (!(d->host = strdup(""))) return dwb_error_set(L->err, DWB_E_NOMEM, "out of memory");
        json_t *auth = json_object_get(obj, "auth");
        if (auth) {
            join(p, sizeof p, path, "auth");
            if ((st = load_auth(L, p, auth, &d->auth)) != DWB_OK) return st;
        }
    } else {
        if (json_object_get(obj, "auth")) return bad(L, path, "auth is only used with stow_url");
        if ((st = get_str(L, path, obj, "host", 1, &host)) != DWB_OK) return st;
        if (!(d->host = strdup(host))) return dwb_error_set(L->err, DWB_E_NOMEM, "out of memory");
        join(p, sizeof p, path, "port");
        if (!json_object_get(obj, "port")) return bad(L, p, "required");
        if ((st = get_int(L, path, obj, "port", 1, 65535, &d->port)) != DWB_OK) return st;
    }
    if ((st = get_ae(L, path, obj, "calling_ae_title", 0, d->calling_ae_title)) != DWB_OK) return st;
    if ((st = get_ae(L, path, obj, "called_ae_title", 0, d->called_ae_title)) != DWB_OK) return st;
    if ((st = get_int(L, path, obj, "max_associations", 1, 64, &d->max_associations)) != DWB_OK) return st;
    if ((st = get_bool(L, path, obj, "series_burst", &d->series_burst)) != DWB_OK) return st;
    json_t *tls = json_object_get(obj, "tls");
    if (tls) {
        char tp[200];
        join(tp, sizeof tp, path, "tls");
        d->tls = 1;
        if ((st = load_tls(L, tp, tls, NULL, &d->tls_certificate, &d->tls_key, &d->tls_ca)) != DWB_OK) return st;
    }
    const char *ts = NULL;
    if ((st = get_str(L, path, obj, "preferred_transfer_syntax", 0, &ts)) != DWB_OK) return st;
    if (ts) {
        join(p, sizeof p, path, "preferred_transfer_syntax");
        if (!dwb_uid_valid(ts)) return bad(L, p, "expected a transfer syntax UID such as 1.2.840.10008.1.2.1");
        if (!(d->preferred_transfer_syntax = strdup(ts))) return dwb_error_set(L->err, DWB_E_NOMEM, "out of memory");
    }
    const char *want = NULL;
    if ((st = get_str(L, path, obj, "transfer_syntax", 0, &want)) != DWB_OK) return st;
    if (want && strcmp(want, "as-stored") != 0) {
        join(p, sizeof p, path, "transfer_syntax");
        if (!dwb_uid_valid(want)) return bad(L, p, "expected \"as-stored\" or a transfer syntax UID such as 1.2.840.10008.1.2.1");
        if (!(d->transfer_syntax = strdup(want))) return dwb_error_set(L->err, DWB_E_NOMEM, "out of memory");
    }
    return DWB_OK;
}

/* A value as a Host header carries it: a DNS name or IPv4 literal, or an [IPv6] literal, then an optional :port. */
static int host_valid(const char *s) {
    size_t n = strlen(s), h;
    if (s[0] == '[') {
        h = strcspn(s, "]");
        if (h == n || h < 3) return 0;
        for (size_t i = 1; i < h; i++)
            if (!isxdigit((unsigned char)s[i]) && s[i] != ':' && s[i] != '.') return 0;
        h++;
    } else {
        h = strcspn(s, ":");
        if (h == 0 || h > 253) return 0;
        for (size_t i = 0; i < h; i++)
            if (!isalnum((unsigned char)s[i]) && s[i] != '-' && s[i] != '.') return 0;
    }
    if (s[h] == '\0') return 1;
    size_t digits = strspn(s + h + 1, "0123456789");
    return s[h] == ':' && digits >= 1 && digits <= 5 && s[h + 1 + digits] == '\0';
}

typedef enum str_kind { STR_AE = 0, STR_IP, STR_ORIGIN, STR_HOST } str_kind;

static dwb_status get_str_array(loader *L, const char *path, json_t *obj, const char *key, str_kind kind,
                                char ***out, size_t *n_out) {
    json_t *arr = json_object_get(obj, key);
    if (!arr) return DWB_OK;
    char p[200];
    join(p, sizeof p, path, key);
    if (!json_is_array(arr)) return bad(L, p, "expected an array of strings");
    size_t n = json_array_size(arr);
    if (n == 0) return DWB_OK;
    *out = calloc(n, sizeof **out);
    if (!*out) return dwb_error_set(L->err, DWB_E_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(arr, i);
        char pi[240];
        snprintf(pi, sizeof pi, "%s[%zu]", p, i);
        if (!json_is_string(v) || json_string_length(v) == 0) return bad(L, pi, "expected a non-empty string");
        const char *s = json_string_value(v);
        if (kind == STR_ORIGIN) {
            /* Browsers send Origin as scheme://host[:port], no path and no trailing slash; compared exactly. */
            if ((strncmp(s, "http://", 7) != 0 && strncmp(s, "https://", 8) != 0) || strchr(strstr(s, "//") + 2, '/'))
                return bad(L, pi, "expected an origin such as \"https://kaapana.example\", got \"%s\"", s);
        } else if (kind == STR_HOST) {
            if (!host_valid(s))
                return bad(L, pi, "expected a host name with an optional port such as \"viewer.example:8443\", "
                           "got \"%s\"", s);
        } else if (kind == STR_IP) {
            dwb_cidr range;
            if (!dwb_cidr_parse(s, &range))
                return bad(L, pi, "expected an IPv4 or IPv6 address or a network such as \"10.1.0.0/16\" (no host "
                           "bits below the prefix), got \"%s\"", s);
        } else if (strlen(s) > DWB_AE_MAX) {
            return bad(L, pi, "AE title '%s' is longer than 16 characters", s);
        }
        if (!((*out)[i] = strdup(s))) return dwb_error_set(L->err, DWB_E_NOMEM, "out of memory");
        *n_out = i + 1;
    }
    return DWB_OK;
}

/* 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104: only this host can connect. */
static int is_loopback(const char *ip) {
    unsigned char a[16];
    if (inet_pton(AF_INET, ip, a) == 1) return a[0] == 127;
    if (inet_pton(AF_INET6, ip, a) != 1) return 0;
    static const unsigned char one[16] = {[15] = 1}, mapped[12] = {[10] = 0xff, [11] = 0xff};
    return memcmp(a, one, 16) == 0 || (memcmp(a, mapped, 12) == 0 && a[12] == 127);
}

/* "<path>.bind": the address a server listens on, an IPv4 or IPv6 literal (obj may be NULL: the default). */
static dwb_status get_bind(loader *L, const char *path, json_t *obj, const char *def, char **out) {
    const char *s = def;
    dwb_status st = obj ? get_str(L, path, obj, "bind", 0, &s) : DWB_OK;
    if (st != DWB_OK) return st;
    unsigned char buf[16];
    if (inet_pton(AF_INET, s, buf) != 1 && inet_pton(AF_INET6, s, buf) != 1) {
        char p[200];
        join(p, sizeof p, path, "bind");
        return bad(L, p, "expected an IPv4 or IPv6 address such as 0.0.0.0, 127.0.0.1 or ::, got \"%s\"", s);
    }
    if (!(*out = strdup(s))) return dwb_error_set(L->err, DWB_E_NOMEM, "out of memory");
    return DWB_OK;
}

/* gateway.viewer: OHIF's dist/ served under a URL prefix on the gateway's listener, showing one upstream. */
static dwb_status load_viewer(loader *L, json_t *v, dwb_config *c) {
    static const char *const keys[] = {"path", "dir", "upstream", NULL};
    if (!json_is_object(v)) return bad(L, "gateway.viewer", "expected an object");
    dwb_status st = check_keys(L, "gateway.viewer", v, keys);
    if (st != DWB_OK) return st;
    if (!c->gateway.port)
        return bad(L, "gateway.viewer", "needs gateway.port: the viewer is served on the gateway's listener");
    const char *path = "/ohif-dicomweb-bridge", *dir = "/usr/share/dicomweb-bridge/ohif";
    if ((st = get_str(L, "gateway.viewer", v, "path", 0, &path)) != DWB_OK) return st;
    if ((st = get_str(L, "gateway.viewer", v, "dir", 0, &dir)) != DWB_OK) return st;
    const char *why = dwb_viewerpath_check_prefix(path);
    if (why) return bad(L, "gateway.viewer.path", "\"%s\" %s (e.g. \"/ohif-dicomweb-bridge\")", path, why);
    if ((st = get_ae(L, "gateway.viewer", v, "upstream", 0, c->gateway.viewer.upstream)) != DWB_OK) return st;
    if (!c->gateway.viewer.upstream[0]) {
        snprintf(c->gateway.viewer.upstream, sizeof c->gateway.viewer.upstream, "%s", c->upstreams[0].ae_title);
    } else if (!dwb_config_find_upstream(c, c->gateway.viewer.upstream)) {
        char list[300] = "";
        for (size_t i = 0; i < c->n_upstreams; i++) {
            if (list[0]) strncat(list, ", ", sizeof list - strlen(list) - 1);
            strncat(list, c->upstreams[i].ae_title, sizeof list - strlen(list) - 1);
        }
        return bad(L, "gateway.viewer.upstream", "no upstream has the AE title '%s' (upstreams: %s)",
                   c->gateway.viewer.upstream, list);
    }
    /* The gateway matches the AE title in the URL as written; a browser would percent-encode a space in it. */
    if (!dwb_viewerpath_url_safe(c->gateway.viewer.upstream))
        return bad(L, json_object_get(v, "upstream") ? "gateway.viewer.upstream" : "gateway.viewer",
                   "the AE title '%s'%s holds characters a browser percent-encodes in a URL, and the gateway matches "
                   "AE titles as written: give an upstream whose AE title is only letters, digits, '.', '_', '-' "
                   "or '~'", c->gateway.viewer.upstream,
                   json_object_get(v, "upstream") ? "" : " (the first upstream, taken when upstream is not given)");
    char *full = resolve_path(L, dir);
    if (!full) return dwb_error_set(L->err, DWB_E_NOMEM, "out of memory");
    /* The real path: files are opened below it without following any symbolic link. */
    char *real = realpath(full, NULL);
    struct stat sb;
    if (!real || stat(real, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        st = bad(L, "gateway.viewer.dir", "%s: %s (the folder of OHIF's built dist/)", full,
                 real ? "not a directory" : strerror(errno));
        free(real);
        free(full);
        return st;
    }
    free(full);
    c->gateway.viewer.dir = real;
    char index[4200];
    snprintf(index, sizeof index, "%.4000s/index.html", real);
    if (lstat(index, &sb) != 0 || !S_ISREG(sb.st_mode))
        return bad(L, "gateway.viewer.dir", "%s has no index.html (a regular file): not OHIF's built dist/", real);
    if ((st = check_readable(L, "gateway.viewer.dir", index)) != DWB_OK) return st;
    if (!(c->gateway.viewer.path = strdup(path))) return dwb_error_set(L->err, DWB_E_NOMEM, "out of memory");
    return DWB_OK;
}

/* routes, route_to, routing_ae_title (issue 28 item 2), after listen and upstreams: each route's filter parsed
 * by the router's own parser, so that check-config refuses what the router could not apply. */
static dwb_status load_routes(loader *L, json_t *root, dwb_config *c) {
    static const char *const route_keys[] = {"filter", "upstreams", NULL};
    json_t *routes = json_object_get(root, "routes");
    dwb_status st;
    if (!routes) {
        if (json_object_get(root, "route_to")) return bad(L, "route_to", "given without routes");
        if (json_object_get(root, "routing_ae_title")) return bad(L, "routing_ae_title", "given without routes");
        return DWB_OK;
    }
    if (!json_is_array(routes)) return bad(L, "routes", "expected an array of objects");
    if (json_array_size(routes) == 0)
        return bad(L, "routes", "empty: give at least one route, or leave the key out (no routing)");
    c->routes = calloc(json_array_size(routes), sizeof *c->routes);
    if (!c->routes) return dwb_error_set(L->err, DWB_E_NOMEM, "out of memory");
    for (size_t i = 0; i < json_array_size(routes); i++) {
        char p[64], q[96];
        snprintf(p, sizeof p, "routes[%zu]", i);
        json_t *r = json_array_get(routes, i);
        dwb_route_conf *rc = &c->routes[i];
        c->n_routes = i + 1;
        if (!json_is_object(r)) return bad(L, p, "expected an object with filter and upstreams");
        if ((st = check_keys(L, p, r, route_keys)) != DWB_OK) return st;
        const char *f = NULL;
        if ((st = get_str(L, p, r, "filter", 1, &f)) != DWB_OK) return st;
        join(q, sizeof q, p, "filter");
        if (!(rc->filter = strdup(f))) return dwb_error_set(L->err, DWB_E_NOMEM, "out of memory");
        dwb_error fe = {0};
        if (dwb_route_filter_parse(f, &rc->keys, &fe) != DWB_OK) return bad(L, q, "%s", fe.message);
        json_t *ups = json_object_get(r, "upstreams");
        join(q, sizeof q, p, "upstreams");
        if (!ups) return bad(L, q, "required: the AE titles of the upstreams this route sends to");
        if (!json_is_array(ups) || json_array_size(ups) == 0)
            return bad(L, q, "expected a non-empty array of upstream AE titles");
        rc->upstreams = calloc(json_array_size(ups), sizeof *rc->upstreams);
        if (!rc->upstreams) return dwb_error_set(L->err, DWB_E_NOMEM, "out of memory");
        for (size_t j = 0; j < json_array_size(ups); j++) {
            json_t *u = json_array_get(ups, j);
            if (!json_is_string(u)) return bad(L, q, "element %zu: expected an upstream AE title (a string)", j);
            const dwb_upstream_conf *uc = dwb_config_find_upstream(c, json_string_value(u));
            if (!uc)
                return bad(L, q, "'%.64s' is not the ae_title of any of upstreams[]", json_string_value(u));
            size_t k = (size_t)(uc - c->upstreams);
            for (size_t m = 0; m < rc->n_upstreams; m++)
                if (rc->upstreams[m] == k) return bad(L, q, "'%s' is listed twice", uc->ae_title);
            rc->upstreams[rc->n_upstreams++] = k;
        }
    }
    const char *to = NULL;
    if ((st = get_str(L, "", root, "route_to", 0, &to)) != DWB_OK) return st;
    if (to) {
        if (!strcmp(to, "first")) c->route_to_all = 0;
        else if (!strcmp(to, "all")) c->route_to_all = 1;
        else return bad(L, "route_to", "expected \"first\" or \"all\", got \"%.40s\"", to);
    }
    snprintf(c->routing_ae_title, sizeof c->routing_ae_title, "%s", c->listen.ae_title);
    if ((st = get_ae(L, "", root, "routing_ae_title", 0, c->routing_ae_title)) != DWB_OK) return st;
    if (dwb_config_find_upstream(c, c->routing_ae_title))
        return bad(L, "routing_ae_title", "'%s' is an upstream's ae_title; C-STOREs to it go to that upstream only",
                   c->routing_ae_title);
    return DWB_OK;
}

static dwb_status load_root(loader *L, json_t *root, dwb_config *c) {
    static const char *const keys[] = {"listen", "upstreams", "destinations", "spool", "http", "log",
                                       "provenance", "retrieve", "gateway", "routes", "route_to", "routing_ae_title",
                                       NULL};
    static const char *const listen_keys[] = {"port", "ae_title", "max_associations", "max_pdu", "acse_timeout_s",
                                              "max_pending", "dimse_timeout_s", "max_associations_per_host", "allow_calling_ae", "allow_hosts",
                                              "tls", NULL};
    if (!json_is_object(root)) return bad(L, "(top level)", "expected a JSON object");
    dwb_status st = check_keys(L, "", root, keys);
    if (st != DWB_OK) return st;

    c->listen.port = 11112;
    strcpy(c->listen.ae_title, "DWBRIDGE");
    c->listen.max_associations = 32;
    c->listen.max_pdu = 131072;
    c->listen.acse_timeout_s = 30;
    c->listen.max_pending = 64;
    c->listen.dimse_timeout_s = 300;
    c->listen.max_associations_per_host = 0; /* set from max_associations below unless given */
    c->http.port = 8080;
    c->gateway.port = 0;
    /* A browser opens at most 6 connections to one host, so 8 never refuses a viewer, and no one address can
     * hold every slot towards a store (16 by default). A viewer that reads nothing for a minute is gone. */
    c->gateway.max_connections_per_ip = 8;
    c->gateway.idle_timeout_s = 60;
    c->provenance.stamp = 1;
    c->retrieve.parallel_series = 4;
    c->retrieve.max_in_flight_mb = 16;
    c->retrieve.max_attempts = 3;
    c->retrieve.parallel_objects = 8;
    c->log.level = DWB_LOG_INFO;
    c->log.format = DWB_LOG_TEXT;

    json_t *listen = json_object_get(root, "listen");
    if (listen) {
        if (!json_is_object(listen)) return bad(L, "listen", "expected an object");
        if ((st = check_keys(L, "listen", listen, listen_keys)) != DWB_OK) return st;
        if ((st = get_int(L, "listen", listen, "port", 1, 65535, &c->listen.port)) != DWB_OK) return st;
        if ((st = get_ae(L, "listen", listen, "ae_title", 0, c->listen.ae_title)) != DWB_OK) return st;
        if ((st = get_int(L, "listen", listen, "max_associations", 1, 4096, &c->listen.max_associations)) != DWB_OK)
            return st;
        if ((st = get_int(L, "listen", listen, "max_pdu", 4096, 131072, &c->listen.max_pdu)) != DWB_OK) return st;
        if ((st = get_int(L, "listen", listen, "acse_timeout_s", 1, 3600, &c->listen.acse_timeout_s)) != DWB_OK)
            return st;
        if ((st = get_int(L, "listen", listen, "dimse_timeout_s", 0, 86400, &c->listen.dimse_timeout_s)) != DWB_OK)
            return st;
        if ((st = get_int(L, "listen", listen, "max_pending", 1, 4096, &c->listen.max_pending)) != DWB_OK) return st;
        if ((st = get_int(L, "listen", listen, "max_associations_per_host", 1, 4096,
                          &c->listen.max_associations_per_host)) != DWB_OK)
            return st;
        if ((st = get_str_array(L, "listen", listen, "allow_calling_ae", STR_AE, &c->listen.allow_calling_ae,
                                &c->listen.n_allow_calling_ae)) != DWB_OK)
            return st;
        if ((st = get_str_array(L, "listen", listen, "allow_hosts", STR_IP, &c->listen.allow_hosts,
                                &c->listen.n_allow_hosts)) != DWB_OK)
            return st;
        json_t *tls = json_object_get(listen, "tls");
        if (tls) {
            static const char *const extra[] = {"require_client_certificate", NULL};
            if ((st = load_tls(L, "listen.tls", tls, extra, &c->listen.tls_certificate, &c->listen.tls_key,
                               &c->listen.tls_ca)) != DWB_OK)
                return st;
            if (!c->listen.tls_certificate) return bad(L, "listen.tls", "certificate and key are required");
            if ((st = get_bool(L, "listen.tls", tls, "require_client_certificate",
                               &c->listen.tls_require_client_certificate)) != DWB_OK)
                return st;
            if (c->listen.tls_require_client_certificate && !c->listen.tls_ca)
                return bad(L, "listen.tls", "require_client_certificate needs ca");
        }
    }

    json_t *ups = json_object_get(root, "upstreams");
    if (!ups) return bad(L, "upstreams", "at least one upstream is required");
    if (!json_is_array(ups)) return bad(L, "upstreams", "expected an array of objects");
    if (json_array_size(ups) == 0) return bad(L, "upstreams", "at least one upstream is required");
    c->upstreams = calloc(json_array_size(ups), sizeof *c->upstreams);
    if (!c->upstreams) return dwb_error_set(L->err, DWB_E_NOMEM, "out of memory");
    for (size_t i = 0; i < json_array_size(ups); i++) {
        char p[64];
        snprintf(p, sizeof p, "upstreams[%zu]", i);
        c->n_upstreams = i + 1;
        if ((st = load_upstream(L, p, json_array_get(ups, i), &c->upstreams[i])) != DWB_OK) return st;
        if (strcmp(c->upstreams[i].ae_title, c->listen.ae_title) == 0)
            return bad(L, p, "ae_title '%s' is the bridge's own listen.ae_title", c->upstreams[i].ae_title);
        for (size_t j = 0; j < i; j++)
            if (strcmp(c->upstreams[i].ae_title, c->upstreams[j].ae_title) == 0)
                return bad(L, p, "ae_title '%s' is already used by upstreams[%zu]", c->upstreams[i].ae_title, j);
    }

    json_t *dests = json_object_get(root, "destinations");
    if (dests) {
        if (!json_is_array(dests)) return bad(L, "destinations", "expected an array of objects");
        if (json_array_size(dests) > 0) {
            c->destinations = calloc(json_array_size(dests), sizeof *c->destinations);
            if (!c->destinations) return dwb_error_set(L->err, DWB_E_NOMEM, "out of memory");
        }
        for (size_t i = 0; i < json_array_size(dests); i++) {
            char p[64];
            snprintf(p, sizeof p, "destinations[%zu]", i);
            c->n_destinations = i + 1;
            if ((st = load_destination(L, p, json_array_get(dests, i), &c->destinations[i])) != DWB_OK) return st;
            for (size_t j = 0; j < i; j++)
                if (strcmp(c->destinations[i].ae_title, c->destinations[j].ae_title) == 0)
                    return bad(L, p, "ae_title '%s' is already used by destinations[%zu]",
                               c->destinations[i].ae_title, j);
        }
    }
    if ((st = load_routes(L, root, c)) != DWB_OK) return st;
    /* One calling address may hold at most half the slots by default, so that a peer that opens associations
     * and never releases them cannot lock out every other. */
    if (c->listen.max_associations_per_host == 0)
        c->listen.max_associations_per_host = c->listen.max_associations > 1 ? c->listen.max_associations / 2 : 1;

    json_t *spool = json_object_get(root, "spool");
    const char *dir = "/var/spool/dicomweb-bridge";
    c->spool.min_free_mb = 512;
    if (spool) {
        static const char *const spool_keys[] = {"dir", "min_free_mb", "max_instance_mb", NULL};
        if (!json_is_object(spool)) return bad(L, "spool", "expected an object");
        if ((st = check_keys(L, "spool", spool, spool_keys)) != DWB_OK) return st;
        if ((st = get_str(L, "spool", spool, "dir", 0, &dir)) != DWB_OK) return st;
        if ((st = get_int(L, "spool", spool, "min_free_mb", 0, 1 << 30, &c->spool.min_free_mb)) != DWB_OK) return st;
        if ((st = get_int(L, "spool", spool, "max_instance_mb", 0, 1 << 30, &c->spool.max_instance_mb)) != DWB_OK)
            return st;
    }
    if (!(c->spool.dir = resolve_path(L, dir))) return dwb_error_set(L->err, DWB_E_NOMEM, "out of memory");

    json_t *prov = json_object_get(root, "provenance");
    if (prov) {
        static const char *const prov_keys[] = {"stamp", NULL};
        if (!json_is_object(prov)) return bad(L, "provenance", "expected an object");
        if ((st = check_keys(L, "provenance", prov, prov_keys)) != DWB_OK) return st;
        if ((st = get_bool(L, "provenance", prov, "stamp", &c->provenance.stamp)) != DWB_OK) return st;
    }

    json_t *ret = json_object_get(root, "retrieve");
    if (ret) {
        static const char *const ret_keys[] = {"parallel_series", "max_in_flight_mb", "max_attempts",
                                               "parallel_objects", NULL};
        if (!json_is_object(ret)) return bad(L, "retrieve", "expected an object");
        if ((st = check_keys(L, "retrieve", ret, ret_keys)) != DWB_OK) return st;
        if ((st = get_int(L, "retrieve", ret, "parallel_series", 1, 16, &c->retrieve.parallel_series)) != DWB_OK)
            return st;
        if ((st = get_int(L, "retrieve", ret, "max_attempts", 1, 100, &c->retrieve.max_attempts)) != DWB_OK)
            return st;
        if ((st = get_int(L, "retrieve", ret, "max_in_flight_mb", 1, 4096, &c->retrieve.max_in_flight_mb)) != DWB_OK)
            return st;
        if ((st = get_int(L, "retrieve", ret, "parallel_objects", 1, 64, &c->retrieve.parallel_objects)) != DWB_OK)
            return st;
    }

    json_t *http = json_object_get(root, "http");
    if (http) {
        static const char *const http_keys[] = {"port", "bind", "console_path", "admin_token", "admin_token_file",
                                                "admin_token_env", "admin_proxies", NULL};
        if (!json_is_object(http)) return bad(L, "http", "expected an object");
        if ((st = check_keys(L, "http", http, http_keys)) != DWB_OK) return st;
        if ((st = get_int(L, "http", http, "port", 0, 65535, &c->http.port)) != DWB_OK) return st;
        const char *cp = NULL;
        if ((st = get_str(L, "http", http, "console_path", 0, &cp)) != DWB_OK) return st;
        if (cp) {
            const char *why = dwb_viewerpath_check_prefix(cp);
            if (!why && (!strncmp(cp, "/healthz", 8) || !strncmp(cp, "/readyz", 7) || !strncmp(cp, "/metrics", 8)))
                why = "is a path of the probes and metrics";
            if (why) return bad(L, "http.console_path", "\"%s\" %s (e.g. \"/console\")", cp, why);
            if (!(c->http.console_path = strdup(cp))) return dwb_error_set(L->err, DWB_E_NOMEM, "out of memory");
        }
        if ((st = get_secret(L, "http", http, "admin_token", &c->http.admin_token)) != DWB_OK) return st;
        if ((st = get_str_array(L, "http", http, "admin_proxies", STR_IP, &c->http.admin_proxies,
                                &c->http.n_admin_proxies)) != DWB_OK)
            return st;
    }
    if (!c->http.console_path && !(c->http.console_path = strdup("/console")))
        return dwb_error_set(L->err, DWB_E_NOMEM, "out of memory");
    if ((st = get_bind(L, "http", http, "0.0.0.0", &c->http.bind)) != DWB_OK) return st;

    json_t *gw = json_object_get(root, "gateway");
    if (gw) {
        static const char *const gw_keys[] = {"port", "bind", "cors_origins", "token", "token_file", "token_env",
                                              "allow_stow", "public_hosts", "trusted_proxies",
                                              "max_connections_per_ip", "idle_timeout_s", "viewer", NULL};
        if (!json_is_object(gw)) return bad(L, "gateway", "expected an object");
        if ((st = check_keys(L, "gateway", gw, gw_keys)) != DWB_OK) return st;
        if ((st = get_int(L, "gateway", gw, "port", 0, 65535, &c->gateway.port)) != DWB_OK) return st;
        if ((st = get_str_array(L, "gateway", gw, "cors_origins", STR_ORIGIN, &c->gateway.cors_origins,
                                &c->gateway.n_cors_origins)) != DWB_OK)
            return st;
        if ((st = get_secret(L, "gateway", gw, "token", &c->gateway.token)) != DWB_OK) return st;
        if ((st = get_bool(L, "gateway", gw, "allow_stow", &c->gateway.allow_stow)) != DWB_OK) return st;
        if ((st = get_str_array(L, "gateway", gw, "public_hosts", STR_HOST, &c->gateway.public_hosts,
                                &c->gateway.n_public_hosts)) != DWB_OK)
            return st;
        if ((st = get_str_array(L, "gateway", gw, "trusted_proxies", STR_IP, &c->gateway.trusted_proxies,
                                &c->gateway.n_trusted_proxies)) != DWB_OK)
            return st;
        if ((st = get_int(L, "gateway", gw, "max_connections_per_ip", 0, 1000, &c->gateway.max_connections_per_ip)) !=
            DWB_OK)
            return st;
        if ((st = get_int(L, "gateway", gw, "idle_timeout_s", 1, 3600, &c->gateway.idle_timeout_s)) != DWB_OK)
            return st;
        json_t *viewer = json_object_get(gw, "viewer");
        if (viewer && (st = load_viewer(L, viewer, c)) != DWB_OK) return st;
    }
    if ((st = get_bind(L, "gateway", gw, "127.0.0.1", &c->gateway.bind)) != DWB_OK) return st;
    /* STOW-RS writes into the store with the bridge's credentials: never for whoever reaches an open port. */
    if (c->gateway.port && c->gateway.allow_stow && !c->gateway.token.value && !is_loopback(c->gateway.bind))
        return bad(L, "gateway.allow_stow", "needs gateway.token_file (or token_env) when gateway.bind is %s, not a "
                   "loopback address: anyone who reaches the port could write into the store", c->gateway.bind);

    json_t *log = json_object_get(root, "log");
    if (log) {
        static const char *const log_keys[] = {"level", "format", "phi", NULL};
        if (!json_is_object(log)) return bad(L, "log", "expected an object");
        if ((st = check_keys(L, "log", log, log_keys)) != DWB_OK) return st;
        const char *s = NULL;
        if ((st = get_str(L, "log", log, "level", 0, &s)) != DWB_OK) return st;
        if (s && dwb_log_parse_level(s, &c->log.level) != DWB_OK)
            return bad(L, "log.level", "expected trace, debug, info, warn, error or off, got \"%s\"", s);
        s = NULL;
        if ((st = get_str(L, "log", log, "format", 0, &s)) != DWB_OK) return st;
        if (s && dwb_log_parse_format(s, &c->log.format) != DWB_OK)
            return bad(L, "log.format", "expected text or json, got \"%s\"", s);
        if ((st = get_bool(L, "log", log, "phi", &c->log.phi)) != DWB_OK) return st;
    }
    return DWB_OK;
}

dwb_status dwb_config_load_string(const char *json, const char *base_dir, dwb_config **out, dwb_error *err) {
    *out = NULL;
    json_error_t jerr;
    json_t *root = json_loads(json, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return dwb_error_set(err, DWB_E_INVALID, "line %d, column %d: invalid JSON: %s", jerr.line, jerr.column,
                             jerr.text);
    dwb_config *c = calloc(1, sizeof *c);
    if (!c) {
        json_decref(root);
        return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    }
    loader L = {base_dir, err};
    dwb_status st = load_root(&L, root, c);
    json_decref(root);
    if (st != DWB_OK) {
        dwb_config_free(c);
        return st;
    }
    *out = c;
    return DWB_OK;
}

dwb_status dwb_config_load_file(const char *path, dwb_config **out, dwb_error *err) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return dwb_error_set(err, DWB_E_IO, "cannot read %s: %s", path, strerror(errno));
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (n == 0) break;
        if (len + 1 >= cap) {
            if (cap >= (16u << 20)) {
                free(buf);
                fclose(f);
                return dwb_error_set(err, DWB_E_LIMIT, "%s is larger than 16 MiB", path);
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (!buf) return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    buf[len] = '\0';
    char *dir = strdup(path);
    char *slash = dir ? strrchr(dir, '/') : NULL;
    if (slash) *slash = '\0';
    dwb_status st = dwb_config_load_string(buf, slash ? dir : ".", out, err);
    free(dir);
    free(buf);
    if (st == DWB_OK && !((*out)->path = strdup(path))) {
        dwb_config_free(*out);
        *out = NULL;
        return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    }
    return st;
}

static void secret_free(dwb_secret *s) {
    if (s->value) {
        memset(s->value, 0, strlen(s->value));
        free(s->value);
    }
    free(s->source);
}

static void auth_free(dwb_auth_conf *a) {
    secret_free(&a->token);
    secret_free(&a->password);
    free(a->username);
    free(a->key_file);
    free(a->scope);
    free(a->metadata_url);
    free(a->command);
}

void dwb_config_free(dwb_config *c) {
    if (!c) return;
    for (size_t i = 0; i < c->n_upstreams; i++) {
        dwb_upstream_conf *u = &c->upstreams[i];
        free(u->base_url);
        free(u->ca_bundle);
        free(u->bucket_endpoint);
        free(u->idc_index);
        dwb_deid_profile_free(u->deid);
        free(u->local_match_keys);
        auth_free(&u->auth);
    }
    free(c->upstreams);
    for (size_t i = 0; i < c->n_destinations; i++) {
        free(c->destinations[i].host);
        free(c->destinations[i].preferred_transfer_syntax);
        free(c->destinations[i].transfer_syntax);
        free(c->destinations[i].tls_ca);
        free(c->destinations[i].tls_certificate);
        free(c->destinations[i].tls_key);
        free(c->destinations[i].stow_url);
        auth_free(&c->destinations[i].auth);
    }
    free(c->listen.tls_certificate);
    free(c->listen.tls_key);
    free(c->listen.tls_ca);
    free(c->destinations);
    for (size_t i = 0; i < c->n_routes; i++) {
        free(c->routes[i].filter);
        dwb_attrs_free(c->routes[i].keys);
        free(c->routes[i].upstreams);
    }
    free(c->routes);
    for (size_t i = 0; i < c->listen.n_allow_calling_ae; i++) free(c->listen.allow_calling_ae[i]);
    free(c->listen.allow_calling_ae);
    for (size_t i = 0; i < c->listen.n_allow_hosts; i++) free(c->listen.allow_hosts[i]);
    free(c->listen.allow_hosts);
    free(c->spool.dir);
    free(c->http.bind);
    free(c->http.console_path);
    secret_free(&c->http.admin_token);
    for (size_t i = 0; i < c->http.n_admin_proxies; i++) free(c->http.admin_proxies[i]);
    free(c->http.admin_proxies);
    free(c->gateway.bind);
    for (size_t i = 0; i < c->gateway.n_cors_origins; i++) free(c->gateway.cors_origins[i]);
    free(c->gateway.cors_origins);
    for (size_t i = 0; i < c->gateway.n_public_hosts; i++) free(c->gateway.public_hosts[i]);
    free(c->gateway.public_hosts);
    for (size_t i = 0; i < c->gateway.n_trusted_proxies; i++) free(c->gateway.trusted_proxies[i]);
    free(c->gateway.trusted_proxies);
    secret_free(&c->gateway.token);
    free(c->gateway.viewer.path);
    free(c->gateway.viewer.dir);
    free(c->path);
    free(c);
}

static int ae_eq(const char *conf, const char *ae) {
    while (*ae == ' ') ae++;
    size_t n = strlen(ae);
    while (n > 0 && ae[n - 1] == ' ') n--;
    return strlen(conf) == n && strncmp(conf, ae, n) == 0;
}

const dwb_upstream_conf *dwb_config_find_upstream(const dwb_config *cfg, const char *ae_title) {
    for (size_t i = 0; i < cfg->n_upstreams; i++)
        if (ae_eq(cfg->upstreams[i].ae_title, ae_title)) return &cfg->upstreams[i];
    return NULL;
}

const dwb_destination_conf *dwb_config_find_destination(const dwb_config *cfg, const char *ae_title) {
    for (size_t i = 0; i < cfg->n_destinations; i++)
        if (ae_eq(cfg->destinations[i].ae_title, ae_title)) return &cfg->destinations[i];
    return NULL;
}
