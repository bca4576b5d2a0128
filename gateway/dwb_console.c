/* The operator's console: static page from the binary, /api/state and /api/failed as JSON built with jansson,
 * and the two writes, Retry and Discard, which move or delete a file of an upstream's failed/ folder through the
 * spool (so that its index and counts stay right). Nothing here waits on a store: every number comes from memory
 * or from the spool's folders. */
#include "dwb_console.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

#include "dwb_cidr.h"
#include "dwb_console_assets.h"
#include "dwb_httpd.h"
#include "dwb_keywords.h"
#include "dwb_log.h"

#define MAX_BODY 4096        /* a write's JSON body */
#define MAX_FAILED_SHOWN 500 /* failed instances listed per upstream */
#define MAX_JOBS 128         /* transfers shown */
#define MAX_JOB_FILES 64     /* other processes' jobs read */
#define JOB_FILE_MAX_AGE_S 86400

struct dwb_console {
    dwb_console_sources src;
    char *path;     /* console_path */
    char *jobs_dir; /* copy of src.jobs_dir */
};

/* A POST's body, collected over MHD's calls. */
typedef struct body {
    char buf[MAX_BODY + 1];
    size_t len;
    int too_large;
} body;

void dwb_console_jobs_dir(const dwb_config *cfg, char *buf, size_t cap) {
    snprintf(buf, cap, "%s/.jobs", cfg->spool.dir ? cfg->spool.dir : ".");
}

dwb_status dwb_console_new(const dwb_console_sources *src, dwb_console **out, dwb_error *err) {
    *out = NULL;
    dwb_console *c = calloc(1, sizeof *c);
    if (!c) return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    c->src = *src;
    c->path = strdup(src->cfg->http.console_path ? src->cfg->http.console_path : "/console");
    c->jobs_dir = src->jobs_dir ? strdup(src->jobs_dir) : NULL;
    if (!c->path || (src->jobs_dir && !c->jobs_dir)) {
        dwb_console_free(c);
        return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    }
    c->src.jobs_dir = c->jobs_dir;
    *out = c;
    return DWB_OK;
}

void dwb_console_free(dwb_console *c) {
    if (!c) return;
    free(c->path);
    free(c->jobs_dir);
    free(c);
}

int dwb_console_owns(const dwb_console *c, const char *url) {
    size_t n = strlen(c->path);
    return !strncmp(url, c->path, n) && (url[n] == '\0' || url[n] == '/');
}

void dwb_console_completed(void *req_cls) { free(req_cls); }

const char *dwb_console_path(const dwb_console *c) { return c->path; }

int dwb_console_is_proxy(const dwb_console *c, const unsigned char ip[16]) {
    const dwb_config *cfg = c->src.cfg;
    for (size_t i = 0; i < cfg->http.n_admin_proxies; i++) {
        dwb_cidr range;
        if (dwb_cidr_parse(cfg->http.admin_proxies[i], &range) && dwb_cidr_contains(&range, ip)) return 1;
    }
    return 0;
}

/* ---- small helpers ---- */

static void iso(long long ms, char out[32]) {
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static json_t *iso_json(long long ms) {
    if (ms <= 0) return json_null();
    char b[32];
    iso(ms, b);
    return json_string(b);
}

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The text with every UID-like run (digits and dots, at least two dots and 8 characters) replaced by "***", unless
 * log.phi: reasons name SOP Instance UIDs, and a UID points at a patient's study as a name does. Also made valid
 * for JSON: control characters become spaces, bytes >= 0x80 '?'. */
static json_t *text_json(const char *s, size_t n, int phi) {
    char *o = malloc(n + 1);
    if (!o) return json_string("");
    dwb_log_redact_uids(s, n, phi, o, n + 1);
    json_t *v = json_string(o);
    free(o);
    return v ? v : json_string("");
}

/* The handle of a failed instance: FNV-1a 64 of its file name, 16 hex digits. */
static void failed_id(const char *name, char out[17]) {
    uint64_t h = 1469598103934665603ULL;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) h = (h ^ *p) * 1099511628211ULL;
    snprintf(out, 17, "%016llx", (unsigned long long)h);
}

static enum MHD_Result reply_json(struct MHD_Connection *con, unsigned code, json_t *v) {
    char *s = v ? json_dumps(v, JSON_COMPACT) : NULL;
    json_decref(v);
    if (!s) return dwb_httpd_reply(con, MHD_HTTP_INTERNAL_SERVER_ERROR, "text/plain", "out of memory\n", 14);
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(s), s, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(s);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    enum MHD_Result ret = MHD_queue_response(con, code, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result reply_error(struct MHD_Connection *con, unsigned code, const char *msg) {
    return reply_json(con, code, json_pack("{s:s}", "error", msg));
}

/* ---- who may write ---- */

/* 1 when this request may write; who says who asked, for the log line. */
static int may_write(const dwb_console *c, struct MHD_Connection *con, char *who, size_t cap) {
    const dwb_config *cfg = c->src.cfg;
    unsigned char ip[16];
    char ipt[64] = "?";
    if (!dwb_httpd_peer(con, ip, ipt, sizeof ipt)) return 0;
    const char *auth = MHD_lookup_connection_value(con, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (cfg->http.admin_token.value && auth && !strncasecmp(auth, "Bearer ", 7)) {
        const char *t = auth + 7;
        while (*t == ' ') t++;
        if (dwb_httpd_same_secret(t, cfg->http.admin_token.value)) {
            snprintf(who, cap, "the token holder from %s", ipt);
            return 1;
        }
    }
    static const char *const user_headers[] = {"X-Forwarded-User", "X-Forwarded-Preferred-Username",
                                               "X-Forwarded-Email", NULL};
    if (dwb_console_is_proxy(c, ip)) {
        for (size_t h = 0; user_headers[h]; h++) {
            const char *u = MHD_lookup_connection_value(con, MHD_HEADER_KIND, user_headers[h]);
            if (u && *u) {
                char clean[128];
                dwb_log_text(u, strlen(u), clean, sizeof clean);
                /* dwb_log_text redacts after '=' only: a user name has none, and it is who asked, not patient data */
                snprintf(who, cap, "user %s via %s", clean, ipt);
                return 1;
            }
        }
    }
    return 0;
}

/* ---- GET /api/state ---- */

static json_t *upstream_json(const dwb_console *c, size_t i) {
    const dwb_upstream *up = c->src.upstreams[i];
    dwb_spool *sp = c->src.spools ? c->src.spools[i] : NULL;
    dwb_uploader *ul = c->src.uploaders ? c->src.uploaders[i] : NULL;
    json_t *o = json_object();
    json_object_set_new(o, "ae_title", json_string(up->conf->ae_title));
    dwb_uploader_info in;
    memset(&in, 0, sizeof in);
    if (ul) dwb_uploader_info_get(ul, &in);
    const char *state = !sp ? "unavailable" : !ul || in.available ? "healthy" : in.quota ? "quota" : "unavailable";
    json_object_set_new(o, "state", json_string(state));
    const char *reason = !sp ? "spool not available" : in.reason;
    json_object_set_new(o, "reason", text_json(reason, strlen(reason), c->src.cfg->log.phi));
    json_object_set_new(o, "since", iso_json(in.since_ms));
    json_object_set_new(o, "retry_at", in.available || !ul ? json_null() : iso_json(in.retry_at_ms));
    dwb_spool_stats ss;
    memset(&ss, 0, sizeof ss);
    if (sp) dwb_spool_stats_get(sp, &ss);
    json_object_set_new(o, "queue", json_pack("{s:I,s:I,s:I,s:f}", "instances", (json_int_t)(ss.queued + ss.retrying),
                                              "retrying", (json_int_t)ss.retrying, "bytes", (json_int_t)ss.bytes,
                                              "oldest_age_s", ss.oldest_age_s));
    json_object_set_new(o, "failed", json_integer((json_int_t)ss.failed));
    json_object_set_new(o, "delivered_total", json_integer((json_int_t)in.delivered));
    json_object_set_new(o, "failed_total", json_integer((json_int_t)in.failed));
    json_object_set_new(o, "delivered_last_hour", json_integer((json_int_t)in.delivered_last_hour));
    json_object_set_new(o, "stow_bytes_per_s", json_real(in.bytes_per_s));
    json_t *rf = json_array();
    uint32_t tags[DWB_UPSTREAM_MAX_REFUSED];
    char res[DWB_UPSTREAM_MAX_REFUSED][16];
    size_t nr = dwb_upstream_refused_list(up, tags, res, DWB_UPSTREAM_MAX_REFUSED);
    for (size_t k = 0; k < nr; k++) {
        char b[96];
        const char *kw = dwb_tag_keyword(tags[k]);
        if (kw) snprintf(b, sizeof b, "%s:%s", res[k], kw);
        else snprintf(b, sizeof b, "%s:(%04X,%04X)", res[k], (unsigned)(tags[k] >> 16), (unsigned)(tags[k] & 0xffff));
        json_array_append_new(rf, json_string(b));
    }
    json_object_set_new(o, "refused_filters", rf);
    return o;
}

static json_t *job_json(const dwb_job *j) {
    long long end = j->ended_ms ? j->ended_ms : now_ms();
    double secs = (double)(end - j->started_ms) / 1000.0;
    size_t done = j->sent + j->failed;
    json_t *o = json_object();
    json_object_set_new(o, "id", json_integer((json_int_t)j->id));
    json_object_set_new(o, "service", json_string(j->service));
    json_object_set_new(o, "state", json_string(dwb_job_state_name(j->state)));
    json_object_set_new(o, "caller", text_json(j->caller, strlen(j->caller), 1));
    json_object_set_new(o, "upstream", text_json(j->upstream, strlen(j->upstream), 1));
    json_object_set_new(o, "destination", text_json(j->destination, strlen(j->destination), 1));
    json_object_set_new(o, "started", iso_json(j->started_ms));
    json_object_set_new(o, "ended", iso_json(j->ended_ms));
    json_object_set_new(o, "total", json_integer((json_int_t)j->total));
    json_object_set_new(o, "sent", json_integer((json_int_t)j->sent));
    json_object_set_new(o, "failed", json_integer((json_int_t)j->failed));
    json_object_set_new(o, "warning", json_integer((json_int_t)j->warning));
    json_object_set_new(o, "remaining", json_integer((json_int_t)(j->total > done ? j->total - done : 0)));
    json_object_set_new(o, "bytes", json_integer((json_int_t)j->bytes));
    json_object_set_new(o, "mb_per_s", json_real(secs > 0.05 ? (double)j->bytes / 1048576.0 / secs : 0.0));
    json_object_set_new(o, "error", text_json(j->error, strlen(j->error), 0));
    return o;
}

/* Jobs other processes (import) published into jobs_dir: import-<pid>.job, one record each. A running job whose
 * process is gone ended without saying so: shown failed. */
static size_t read_job_files(const char *dir, dwb_job *out, size_t cap) {
    DIR *d = dir ? opendir(dir) : NULL;
    if (!d) return 0;
    size_t n = 0;
    struct dirent *e;
    time_t now = time(NULL);
    while ((e = readdir(d)) && n < cap) {
        int pid = 0;
        char tail[8] = "";
        if (sscanf(e->d_name, "import-%d.%7s", &pid, tail) != 2 || strcmp(tail, "job") != 0 || pid <= 0) continue;
        char p[1200];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (stat(p, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size > 2048 || now - sb.st_mtime > JOB_FILE_MAX_AGE_S)
            continue;
        FILE *f = fopen(p, "r");
        if (!f) continue;
        char line[2100];
        int ok = fgets(line, sizeof line, f) != NULL;
        fclose(f);
        if (!ok || dwb_job_parse(line, &out[n]) != 0) continue;
        if (out[n].state == DWB_JOB_RUNNING && kill(pid, 0) != 0 && errno == ESRCH) {
            out[n].state = DWB_JOB_FAILED;
            out[n].ended_ms = (long long)sb.st_mtime * 1000;
            snprintf(out[n].error, sizeof out[n].error, "the import process (pid %d) ended without finishing", pid);
        }
        out[n].id = 1000000000UL + (unsigned long)pid; /* apart from the server's own ids */
        n++;
    }
    closedir(d);
    return n;
}

static enum MHD_Result get_state(dwb_console *c, struct MHD_Connection *con) {
    const dwb_config *cfg = c->src.cfg;
    json_t *o = json_object();
    char b[32];
    iso(now_ms(), b);
    char who[200];
    json_object_set_new(o, "version", json_string(DWB_VERSION));
    json_object_set_new(o, "now", json_string(b));
    json_object_set_new(o, "phi", json_boolean(cfg->log.phi));
    json_object_set_new(o, "writable", json_boolean(may_write(c, con, who, sizeof who)));
    json_object_set_new(o, "token_configured", json_boolean(cfg->http.admin_token.value != NULL));
    json_t *ups = json_array();
    for (size_t i = 0; i < c->src.n; i++) json_array_append_new(ups, upstream_json(c, i));
    json_object_set_new(o, "upstreams", ups);
    dwb_job *jobs = calloc(MAX_JOBS + MAX_JOB_FILES, sizeof *jobs);
    size_t n = jobs ? dwb_activity_list(c->src.activity, jobs, MAX_JOBS) : 0;
    size_t m = jobs ? read_job_files(c->jobs_dir, jobs + n, MAX_JOB_FILES) : 0;
    json_t *xfers = json_array(), *commits = json_array();
    /* running first (the server's, then other processes'), then finished */
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < n + m; i++) {
            if ((jobs[i].state == DWB_JOB_RUNNING) != (pass == 0)) continue;
            if (!strcmp(jobs[i].service, "commitment")) {
                json_t *cj = json_object();
                json_object_set_new(cj, "id", json_integer((json_int_t)jobs[i].id));
                json_object_set_new(cj, "caller", text_json(jobs[i].caller, strlen(jobs[i].caller), 1));
                json_object_set_new(cj, "upstream", json_string(jobs[i].upstream));
                json_object_set_new(cj, "instances", json_integer((json_int_t)jobs[i].total));
                json_object_set_new(cj, "committed", json_integer((json_int_t)jobs[i].sent));
                json_object_set_new(cj, "state", json_string(jobs[i].state == DWB_JOB_RUNNING ? "waiting" : "done"));
                json_object_set_new(cj, "started", iso_json(jobs[i].started_ms));
                json_object_set_new(cj, "ended", iso_json(jobs[i].ended_ms));
                json_array_append_new(commits, cj);
            } else {
                json_array_append_new(xfers, job_json(&jobs[i]));
            }
        }
    free(jobs);
    json_object_set_new(o, "transfers", xfers);
    json_object_set_new(o, "commitments", commits);
    return reply_json(con, MHD_HTTP_OK, o);
}

/* ---- failed/ ---- */

static int find_upstream(const dwb_console *c, const char *ae) {
    for (size_t i = 0; ae && i < c->src.n; i++)
        if (!strcmp(c->src.upstreams[i]->conf->ae_title, ae)) return (int)i;
    return -1;
}

static enum MHD_Result get_failed(dwb_console *c, struct MHD_Connection *con) {
    const char *ae = MHD_lookup_connection_value(con, MHD_GET_ARGUMENT_KIND, "upstream");
    int i = find_upstream(c, ae);
    if (i < 0) return reply_error(con, MHD_HTTP_NOT_FOUND, "no such upstream (give ?upstream=<AE title>)");
    dwb_spool *sp = c->src.spools[i];
    if (!sp) return reply_error(con, MHD_HTTP_SERVICE_UNAVAILABLE, "this upstream's spool is not available");
    dwb_spool_failed *v = NULL;
    size_t n = 0, total = 0;
    dwb_error err = {0};
    if (dwb_spool_failed_list(sp, MAX_FAILED_SHOWN, &v, &n, &total, &err) != DWB_OK)
        return reply_error(con, MHD_HTTP_INTERNAL_SERVER_ERROR, err.message);
    int phi = c->src.cfg->log.phi;
    json_t *items = json_array();
    for (size_t k = 0; k < n; k++) {
        char id[17];
        failed_id(v[k].name, id);
        json_t *it = json_object();
        json_object_set_new(it, "id", json_string(id));
        json_object_set_new(it, "name", json_string(phi ? v[k].name : "***"));
        /* <time>-<seq>-<pid>-<uid>.dcm */
        const char *u = v[k].name;
        for (int dash = 0; dash < 3 && u; dash++) u = strchr(u, '-') ? strchr(u, '-') + 1 : NULL;
        char uid[65] = "";
        if (u) snprintf(uid, sizeof uid, "%.*s", (int)(strlen(u) > 4 ? strlen(u) - 4 : 0), u);
        json_object_set_new(it, "sop_uid", json_string(phi ? uid : "***"));
        json_object_set_new(it, "size", json_integer((json_int_t)v[k].size));
        json_object_set_new(it, "failed_at", iso_json(v[k].failed_at * 1000));
        const char *r = v[k].reason ? v[k].reason : "";
        size_t first = strcspn(r, "\n");
        json_object_set_new(it, "reason", text_json(r, first, phi));
        json_t *hist = json_array();
        const char *h = strstr(r, "\nhistory:\n");
        for (h = h ? h + 10 : NULL; h && *h;) {
            size_t l = strcspn(h, "\n");
            if (l) json_array_append_new(hist, text_json(h, l, phi));
            h += l;
            if (*h == '\n') h++;
        }
        json_object_set_new(it, "history", hist);
        json_array_append_new(items, it);
    }
    dwb_spool_failed_free(v, n);
    return reply_json(con, MHD_HTTP_OK,
                      json_pack("{s:s,s:I,s:o}", "upstream", ae, "total", (json_int_t)total, "items", items));
}

/* The file name in failed/ whose handle is id, into name. */
static int name_of(dwb_spool *sp, const char *id, char *name, size_t cap) {
    char dir[1200];
    snprintf(dir, sizeof dir, "%s/failed", dwb_spool_dir(sp));
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *e;
    int found = 0;
    while (!found && (e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l < 5 || strcmp(e->d_name + l - 4, ".dcm") != 0) continue;
        char h[17];
        failed_id(e->d_name, h);
        if (!strcmp(h, id)) {
            snprintf(name, cap, "%s", e->d_name);
            found = 1;
        }
    }
    closedir(d);
    return found;
}

static enum MHD_Result post_failed(dwb_console *c, struct MHD_Connection *con, int retry, const body *b) {
    char who[200];
    if (!may_write(c, con, who, sizeof who))
        return reply_error(con, MHD_HTTP_FORBIDDEN,
                           c->src.cfg->http.admin_token.value
                               ? "not allowed: send the admin token (http.admin_token_file) as Authorization: Bearer"
                               : "not allowed: the console is read-only (no http.admin_token_file configured)");
    const char *ct = MHD_lookup_connection_value(con, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    if (!ct || strncasecmp(ct, "application/json", 16) != 0)
        return reply_error(con, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, "expected Content-Type: application/json");
    if (b->too_large) return reply_error(con, MHD_HTTP_CONTENT_TOO_LARGE, "body too large");
    json_error_t je;
    json_t *j = json_loadb(b->buf, b->len, JSON_REJECT_DUPLICATES, &je);
    const char *ae = NULL, *id = NULL;
    if (!j || json_unpack(j, "{s:s,s:s}", "upstream", &ae, "id", &id) != 0 || strlen(id) != 16) {
        json_decref(j);
        return reply_error(con, MHD_HTTP_BAD_REQUEST, "expected {\"upstream\": \"<AE title>\", \"id\": \"<16 hex digits>\"}");
    }
    int i = find_upstream(c, ae);
    dwb_spool *sp = i >= 0 ? c->src.spools[i] : NULL;
    char name[256];
    if (!sp || !name_of(sp, id, name, sizeof name)) {
        char idc[17] = "";
        for (size_t k = 0; k < 16 && id[k]; k++) idc[k] = isxdigit((unsigned char)id[k]) ? id[k] : '?';
        json_decref(j);
        dwb_log_ctx lc = {NULL, i >= 0 ? c->src.upstreams[i]->conf->ae_title : NULL, NULL, NULL};
        DWB_WARN(&lc, "console: %s of failed instance %s asked by %s: %s", retry ? "retry" : "discard", idc, who,
                 i < 0 ? "no such upstream" : "no such instance in failed/");
        return reply_error(con, MHD_HTTP_NOT_FOUND, i < 0 ? "no such upstream" : "no failed instance with this id");
    }
    dwb_log_ctx lc = {NULL, c->src.upstreams[i]->conf->ae_title, NULL, NULL};
    char idc[17];
    snprintf(idc, sizeof idc, "%s", id);
    json_decref(j);
    dwb_error err = {0};
    dwb_status st = retry ? dwb_spool_failed_retry(sp, name, &err) : dwb_spool_failed_discard(sp, name, &err);
    if (st != DWB_OK) {
        unsigned code = st == DWB_E_NOT_FOUND ? MHD_HTTP_NOT_FOUND : st == DWB_E_REFUSED ? MHD_HTTP_CONFLICT
                        : st == DWB_E_INVALID ? MHD_HTTP_BAD_REQUEST : MHD_HTTP_INTERNAL_SERVER_ERROR;
        DWB_WARN(&lc, "console: %s of failed instance %s asked by %s: %s", retry ? "retry" : "discard", idc, who,
                 code == MHD_HTTP_INTERNAL_SERVER_ERROR ? err.message : "refused");
        return reply_error(con, code, code == MHD_HTTP_CONFLICT ? "this instance is already back in the queue"
                                      : code == MHD_HTTP_NOT_FOUND ? "no failed instance with this id"
                                                                   : "the spool could not do it (see the log)");
    }
    if (retry && c->src.uploaders[i]) dwb_uploader_notify(c->src.uploaders[i]);
    if (c->src.cfg->log.phi)
        DWB_INFO(&lc, "console: %s of failed instance %s (%s) asked by %s", retry ? "retry" : "discard", idc, name, who);
    else
        DWB_INFO(&lc, "console: %s of failed instance %s asked by %s", retry ? "retry" : "discard", idc, who);
    return reply_json(con, MHD_HTTP_OK,
                      json_pack("{s:b,s:s}", "ok", 1, "message", retry ? "queued again" : "discarded"));
}

/* ---- the page ---- */

static enum MHD_Result asset(struct MHD_Connection *con, const char *name) {
    const dwb_console_asset *a = dwb_console_asset_find(name);
    if (!a) return reply_error(con, MHD_HTTP_NOT_FOUND, "not found");
    struct MHD_Response *r = MHD_create_response_from_buffer(a->len, (void *)a->data, MHD_RESPMEM_PERSISTENT);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, a->content_type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    /* Only the page's own script and style; may be framed by the platform that links to it (same origin). */
    MHD_add_response_header(r, "Content-Security-Policy",
                            "default-src 'self'; img-src 'self' data:; frame-ancestors 'self'; form-action 'none'");
    MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
    enum MHD_Result ret = MHD_queue_response(con, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}

enum MHD_Result dwb_console_handle(dwb_console *c, struct MHD_Connection *con, const char *url, const char *method,
                                   const char *upload_data, size_t *upload_data_size, void **req_cls) {
    const char *rel = url + strlen(c->path);
    int is_get = !strcmp(method, MHD_HTTP_METHOD_GET) || !strcmp(method, MHD_HTTP_METHOD_HEAD);
    int is_post = !strcmp(method, MHD_HTTP_METHOD_POST);
    if (is_post) {
        body *b = *req_cls;
        if (!b) {
            if (!(b = calloc(1, sizeof *b))) return MHD_NO;
            *req_cls = b;
            return MHD_YES;
        }
        if (*upload_data_size) {
            size_t n = *upload_data_size;
            if (b->len + n > MAX_BODY) b->too_large = 1;
            else {
                memcpy(b->buf + b->len, upload_data, n);
                b->len += n;
            }
            *upload_data_size = 0;
            return MHD_YES;
        }
        if (!strcmp(rel, "/api/failed/retry")) return post_failed(c, con, 1, b);
        if (!strcmp(rel, "/api/failed/discard")) return post_failed(c, con, 0, b);
        return reply_error(con, MHD_HTTP_NOT_FOUND, "no such action");
    }
    if (!is_get) return reply_error(con, MHD_HTTP_METHOD_NOT_ALLOWED, "GET or POST only");
    if (!*rel) {
        char loc[300];
        snprintf(loc, sizeof loc, "%s/", c->path);
        return dwb_httpd_redirect(con, MHD_HTTP_MOVED_PERMANENTLY, loc);
    }
    if (!strcmp(rel, "/") || !strcmp(rel, "/index.html")) return asset(con, "index.html");
    if (!strcmp(rel, "/console.css")) return asset(con, "console.css");
    if (!strcmp(rel, "/console.js")) return asset(con, "console.js");
    if (!strcmp(rel, "/api/state")) return get_state(c, con);
    if (!strcmp(rel, "/api/failed")) return get_failed(c, con);
    if (!strncmp(rel, "/api/failed/", 12)) return reply_error(con, MHD_HTTP_METHOD_NOT_ALLOWED, "POST only");
    return reply_error(con, MHD_HTTP_NOT_FOUND, "not found");
}
