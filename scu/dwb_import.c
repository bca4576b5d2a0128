/* The import command. Selection (study list, IDC-style series manifest, or a QIDO query) -> plan (QIDO-RS) ->
 * state file filter -> the sender (dwb_send_run, shared with C-MOVE and C-GET) with a progress display and a summary. */
#include "dwb_import.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dwb_activity.h"
#include "dwb_attrs.h"
#include "dwb_config.h"
#include "dwb_dicomjson.h"
#include "dwb_http.h"
#include "dwb_idc.h"
#include "dwb_manifest.h"
#include "dwb_log.h"
#include "dwb_qido.h"
#include "dwb_qido_pager.h"
#include "dwb_retrieve.h"
#include "dwb_send.h"
#include "dwb_upstream.h"
#include "dwb_tags.h"

static const char *k_usage =
    "usage: dicomweb-bridge import --config FILE --upstream AE --destination AE\n"
    "                              (--studies FILE | --series FILE | --manifest FILE | --query QUERY)\n"
    "                              [--dry-run] [--state FILE] [--force] [--parallel N]\n"
    "\n"
    "Pulls instances from an upstream DICOMweb store into a destination AE (e.g. Kaapana's CTP), stamped with\n"
    "their provenance, one series per burst, with the destination's calling/called AE overrides.\n"
    "  --studies FILE   StudyInstanceUIDs, one per line\n"
    "  --series FILE    StudyInstanceUID,SeriesInstanceUID per line (IDC manifests)\n"
    "  --manifest FILE  an IDC portal manifest: s5cmd (cp s3://<bucket>/<crdc_series_uuid>/...) or CSV/TSV with\n"
    "                   StudyInstanceUID, SeriesInstanceUID, series_uuid/crdc_series_uuid columns; series are\n"
    "                   resolved through upstreams[].idc_index and fetched from its bucket\n"
    "  --query QUERY    QIDO-RS study query, e.g. 'PatientID=X&StudyDate=2020-2021&Modality=CT'\n"
    "  --dry-run        list what would be sent (studies, series, instances; bytes from the IDC index); send nothing\n"
    "  --state FILE     resume file of delivered series (default <spool.dir>/import-<upstream>-<destination>.state)\n"
    "  --force          send series the state file lists as delivered\n"
    "  --parallel N     series fetched at once (default retrieve.parallel_series)\n"
    "Exit status: 0 all sent, 1 something failed (listed), 2 usage or configuration error.\n";

static volatile sig_atomic_t g_interrupted;
static void on_sigint(int sig) {
    (void)sig;
    g_interrupted = 1;
}

static int on_cancelled(void *ud) {
    (void)ud;
    return g_interrupted;
}

static char *trim(char *s) {
    while (*s == ' ' || *s == '\t' || *s == '"') s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '"'))
        s[--n] = '\0';
    return s;
}

/* Resolves one study or series and appends it to the plan. */
static dwb_status add_selection(const dwb_upstream *up, const char *study, const char *series, dwb_rplan *plan,
                                dwb_error *err) {
    dwb_attrs *id = dwb_attrs_new();
    if (!id) return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    dwb_attrs_put_str(id, DWB_TAG(0x0008, 0x0052), "CS", series ? "SERIES" : "STUDY");
    dwb_attrs_put_str(id, DWB_TAG(0x0020, 0x000D), "UI", study);
    if (series) dwb_attrs_put_str(id, DWB_TAG(0x0020, 0x000E), "UI", series);
    dwb_rplan *p = NULL;
    dwb_status st = dwb_retrieve_resolve(up, DWB_QR_STUDY_ROOT, id, NULL, NULL, NULL, &p, err);
    dwb_attrs_free(id);
    if (st != DWB_OK) return st;
    if (p->n_series == 0) fprintf(stderr, "import: %s%s%s: nothing in the store\n", study, series ? " " : "", series ? series : "");
    st = dwb_rplan_take(plan, p);
    if (st != DWB_OK) dwb_rplan_free(p);
    return st;
}

static dwb_status read_list(const dwb_upstream *up, const char *path, int series_mode, dwb_rplan *plan, dwb_error *err) {
    FILE *f = fopen(path, "r");
    if (!f) return dwb_error_set(err, DWB_E_IO, "cannot read %s: %s", path, strerror(errno));
    char line[512];
    int lineno = 0;
    dwb_status st = DWB_OK;
    while (st == DWB_OK && fgets(line, sizeof line, f)) {
        lineno++;
        char *l = trim(line);
        if (!*l || *l == '#') continue;
        if (!series_mode) {
            if (!dwb_uid_valid(l)) {
                st = dwb_error_set(err, DWB_E_INVALID, "%s:%d: '%s' is not a StudyInstanceUID", path, lineno, l);
                break;
            }
            st = add_selection(up, l, NULL, plan, err);
            continue;
        }
        char *sep = strpbrk(l, ",; \t");
        if (!sep) {
            st = dwb_error_set(err, DWB_E_INVALID, "%s:%d: expected StudyInstanceUID,SeriesInstanceUID", path, lineno);
            break;
        }
        *sep = '\0';
        char *a = trim(l), *b = trim(sep + 1);
        if (!dwb_uid_valid(a) || !dwb_uid_valid(b)) {
            if (lineno == 1) continue; /* a CSV header line */
            st = dwb_error_set(err, DWB_E_INVALID, "%s:%d: '%s,%s' are not two UIDs", path, lineno, a, b);
            break;
        }
        st = add_selection(up, a, b, plan, err);
    }
    fclose(f);
    return st;
}

/* An IDC portal manifest: every series resolved to its study through the index (s5cmd lines name only the
 * crdc_series_uuid), then planned by QIDO-RS like --series. */
static dwb_status read_manifest(const dwb_upstream *up, const dwb_manifest *m, const char *path, dwb_rplan *plan,
                                dwb_error *err) {
    const dwb_idc_index *ix = dwb_idc_index_of(up);
    for (size_t i = 0; i < m->n; i++) {
        const dwb_manifest_entry *e = &m->v[i];
        dwb_idc_series is;
        int found = ix && (e->series_uid[0] ? dwb_idc_index_find(ix, e->series_uid, &is)
                                            : dwb_idc_index_find_crdc(ix, e->crdc, &is));
        const char *study = e->study_uid[0] ? e->study_uid : found ? is.study_uid : NULL;
        const char *series = e->series_uid[0] ? e->series_uid : found ? is.series_uid : NULL;
        if (!study || !series) {
            if (!ix)
                return dwb_error_set(err, DWB_E_INVALID, "%s:%zu: series named by its crdc_series_uuid %s: upstream %s "
                                     "needs idc_index and bucket_endpoint to resolve it", path, e->line, e->crdc,
                                     up->conf->ae_title);
            return dwb_error_set(err, DWB_E_INVALID, "%s:%zu: %s is not in the IDC index %s (an index of another "
                                 "release?)", path, e->line, e->series_uid[0] ? e->series_uid : e->crdc,
                                 up->conf->idc_index);
        }
        dwb_status st = add_selection(up, study, series, plan, err);
        if (st != DWB_OK) return st;
    }
    return DWB_OK;
}

typedef struct study_list {
    char (*uid)[65];
    size_t n, cap;
} study_list;

static dwb_status collect_study(void *ud, dwb_attrs *ds) {
    study_list *l = ud;
    const char *uid = dwb_attrs_get_str(ds, DWB_TAG_STUDY_UID);
    dwb_status st = DWB_OK;
    if (uid && dwb_uid_valid(uid)) {
        if (l->n == l->cap) {
            size_t cap = l->cap ? l->cap * 2 : 64;
            char(*nv)[65] = realloc(l->uid, cap * sizeof *nv);
            if (!nv) st = DWB_E_NOMEM;
            else {
                l->uid = nv;
                l->cap = cap;
            }
        }
        if (st == DWB_OK) snprintf(l->uid[l->n++], 65, "%s", uid);
    }
    dwb_attrs_free(ds);
    return st;
}

/* "StudyDate=2020-2021" -> "00080020=20200101-20211231"; "Modality=CT" -> "ModalitiesInStudy=CT" (a study query). */
static void translate_query(const char *q, char *out, size_t cap) {
    out[0] = '\0';
    char *copy = strdup(q);
    char *save = NULL;
    for (char *tok = strtok_r(copy, "&", &save); tok; tok = strtok_r(NULL, "&", &save)) {
        char *eq = strchr(tok, '=');
        char part[512];
        int y1, y2;
        char tail;
        if (eq && !strncmp(tok, "StudyDate=", 10) && sscanf(eq + 1, "%4d-%4d%c", &y1, &y2, &tail) == 2 &&
            strlen(eq + 1) == 9)
            snprintf(part, sizeof part, "StudyDate=%04d0101-%04d1231", y1, y2);
        else if (eq && !strncmp(tok, "Modality=", 9))
            snprintf(part, sizeof part, "ModalitiesInStudy=%s", eq + 1);
        else
            snprintf(part, sizeof part, "%s", tok);
        if (out[0]) strncat(out, "&", cap - strlen(out) - 1);
        strncat(out, part, cap - strlen(out) - 1);
    }
    free(copy);
}

static dwb_status run_query(const dwb_upstream *up, const char *query, dwb_rplan *plan, dwb_error *err) {
    char q[2048];
    translate_query(query, q, sizeof q);
    strncat(q, "&includefield=0020000D", sizeof q - strlen(q) - 1);
    study_list studies = {0};
    dwb_qido_pager_opts o = {0};
    o.is_cancelled = on_cancelled;
    dwb_status st = dwb_qido_each(up, "/studies", q, &o, collect_study, &studies, NULL, err);
    for (size_t i = 0; st == DWB_OK && i < studies.n; i++) st = add_selection(up, studies.uid[i], NULL, plan, err);
    free(studies.uid);
    return st;
}

/* ---- state file ---- */

typedef struct state {
    char **lines; /* "study series" */
    size_t n;
    FILE *append;
} state;

static void state_load(state *s, const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return;
    char line[300];
    while (fgets(line, sizeof line, f)) {
        char *l = trim(line);
        if (!*l) continue;
        char **nl = realloc(s->lines, (s->n + 1) * sizeof *nl);
        if (!nl) break;
        s->lines = nl;
        s->lines[s->n++] = strdup(l);
    }
    fclose(f);
}

static int state_has(const state *s, const dwb_rseries *se) {
    char key[200];
    snprintf(key, sizeof key, "%s %s", se->study_uid, se->series_uid);
    for (size_t i = 0; i < s->n; i++)
        if (!strcmp(s->lines[i], key)) return 1;
    return 0;
}

/* ---- progress ---- */

typedef struct progress {
    int tty;
    struct timespec t0, last, published;
    state *st;
    size_t series_done, series_failed;
    dwb_activity *activity; /* this import's job, published for the serving process's console */
    char job_path[1200];    /* <spool.dir>/.jobs/import-<pid>.job; "" = not published */
} progress;

static double secs_since(const struct timespec *t) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t->tv_sec) + (double)(now.tv_nsec - t->tv_nsec) / 1e9;
}

static int on_progress(void *ud, const dwb_send_totals *t) {
    progress *p = ud;
    if (p->job_path[0] && secs_since(&p->published) >= 0.5) {
        clock_gettime(CLOCK_MONOTONIC, &p->published);
        dwb_activity_publish(p->activity, p->job_path);
    }
    double el = secs_since(&p->t0);
    size_t done = t->completed + t->failed + t->warning;
    double mb = (double)t->bytes / 1e6, rate = el > 0 ? mb / el : 0;
    double eta = done > 0 ? el * (double)(t->total - done) / (double)done : 0;
    if (p->tty) {
        if (done != t->total && secs_since(&p->last) < 0.1) return 0;
        clock_gettime(CLOCK_MONOTONIC, &p->last);
        int width = 30, fill = t->total ? (int)(width * done / t->total) : width;
        char bar[64];
        for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
        bar[width] = '\0';
        fprintf(stderr, "\r[%s] %zu/%zu instances  %.1f MB  %.1f MB/s  ETA %d:%02d  ", bar, done, t->total, mb, rate,
                (int)eta / 60, (int)eta % 60);
        fflush(stderr);
    } else if (secs_since(&p->last) >= 5.0 || done == t->total) {
        clock_gettime(CLOCK_MONOTONIC, &p->last);
        fprintf(stderr, "import: %zu/%zu instances, %zu failed, %.1f MB, %.1f MB/s, ETA %d s\n", done, t->total,
                t->failed, mb, rate, (int)eta);
    }
    return 0;
}

static void on_series_done(void *ud, const dwb_rseries *se, size_t failed) {
    progress *p = ud;
    p->series_done++;
    if (failed) {
        p->series_failed++;
        return;
    }
    if (p->st->append) {
        fprintf(p->st->append, "%s %s\n", se->study_uid, se->series_uid);
        fflush(p->st->append);
        fsync(fileno(p->st->append));
    }
}


int dwb_import_main(int argc, char **argv) {
    const char *config = NULL, *upstream = NULL, *destination = NULL, *studies = NULL, *series = NULL, *query = NULL;
    const char *manifest = NULL;
    const char *state_path = NULL;
    int dry_run = 0, force = 0, parallel = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char **slot = NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(k_usage, stdout);
            return 0;
        }
        if (!strcmp(a, "--dry-run")) { dry_run = 1; continue; }
        if (!strcmp(a, "--force")) { force = 1; continue; }
        if (!strcmp(a, "--config") || !strcmp(a, "-c")) slot = &config;
        else if (!strcmp(a, "--upstream")) slot = &upstream;
        else if (!strcmp(a, "--destination")) slot = &destination;
        else if (!strcmp(a, "--studies")) slot = &studies;
        else if (!strcmp(a, "--series")) slot = &series;
        else if (!strcmp(a, "--query")) slot = &query;
        else if (!strcmp(a, "--manifest")) slot = &manifest;
        else if (!strcmp(a, "--state")) slot = &state_path;
        else if (!strcmp(a, "--parallel") && i + 1 < argc) {
            parallel = atoi(argv[++i]);
            if (parallel < 1 || parallel > 16) {
                fprintf(stderr, "import: --parallel expects 1-16\n");
                return 2;
            }
            continue;
        }
        if (!slot || i + 1 >= argc) {
            fprintf(stderr, "import: unknown option or missing value '%s'\n\n%s", a, k_usage);
            return 2;
        }
        *slot = argv[++i];
    }
    int n_sel = (studies != NULL) + (series != NULL) + (query != NULL) + (manifest != NULL);
    if (!config || !upstream || (!destination && !dry_run) || n_sel != 1) {
        fprintf(stderr, "import: --config, --upstream, --destination and exactly one of --studies, --series, "
                        "--manifest, --query are required\n\n%s", k_usage);
        return 2;
    }
    dwb_config *cfg = NULL;
    dwb_error err = {0};
    if (dwb_config_load_file(config, &cfg, &err) != DWB_OK) {
        fprintf(stderr, "%s: %s\n", config, err.message);
        return 2;
    }
    int rc = 2;
    dwb_upstream *up = NULL;
    dwb_rplan *plan = NULL;
    state st = {0};
    dwb_manifest man = {0};
    dwb_log_init(cfg->log.level > DWB_LOG_WARN ? cfg->log.level : DWB_LOG_WARN, cfg->log.format);
    setenv("TCP_NODELAY", "1", 0);
    if (parallel) cfg->retrieve.parallel_series = parallel;
    const dwb_upstream_conf *uc = dwb_config_find_upstream(cfg, upstream);
    const dwb_destination_conf *dc = destination ? dwb_config_find_destination(cfg, destination) : NULL;
    if (!uc) {
        fprintf(stderr, "import: --upstream %s is not in upstreams[] of %s\n", upstream, config);
        goto out;
    }
    if (destination && !dc) {
        fprintf(stderr, "import: --destination %s is not in destinations[] of %s\n", destination, config);
        goto out;
    }
    if (manifest) {
        if (dwb_manifest_load(manifest, &man, &err) != DWB_OK) {
            fprintf(stderr, "import: %s\n", err.message);
            goto out;
        }
        /* Only the configuration says where instances come from: a manifest is input, and an endpoint it names
         * would point the bridge at any host. One that is neither bucket_endpoint nor IDC's is refused before any
         * request; an IDC one that differs from bucket_endpoint (the same buckets elsewhere) is only noted. */
        if (dwb_manifest_check_endpoint(&man, manifest, uc->bucket_endpoint, &err) != DWB_OK) {
            fprintf(stderr, "import: %s\n", err.message);
            goto out;
        }
        if (man.endpoint[0] && uc->bucket_endpoint && strcmp(man.endpoint, uc->bucket_endpoint) != 0)
            fprintf(stderr, "import: %s names the endpoint %s; using bucket_endpoint %s of the configuration\n",
                    manifest, man.endpoint, uc->bucket_endpoint);
    }
    if (dwb_http_global_init(&err) != DWB_OK || dwb_upstream_new(uc, &up, &err) != DWB_OK) {
        fprintf(stderr, "import: %s\n", err.message);
        rc = 1;
        goto out;
    }
    if (dwb_idc_attach(up, cfg->retrieve.parallel_objects, &err) != DWB_OK) {
        fprintf(stderr, "import: %s\n", err.message);
        goto out;
    }
    plan = calloc(1, sizeof *plan);
    if (!plan) goto out;
    dwb_status s;
    if (studies) s = read_list(up, studies, 0, plan, &err);
    else if (series) s = read_list(up, series, 1, plan, &err);
    else if (manifest) s = read_manifest(up, &man, manifest, plan, &err);
    else s = run_query(up, query, plan, &err);
    if (s != DWB_OK) {
        fprintf(stderr, "import: %s\n", err.message);
        rc = s == DWB_E_INVALID || s == DWB_E_IO ? 2 : 1;
        goto out;
    }
    char default_state[1200];
    if (!state_path) {
        snprintf(default_state, sizeof default_state, "%s/import-%s-%s.state", cfg->spool.dir, uc->ae_title,
                 dc ? dc->ae_title : "none");
        state_path = default_state;
    }
    state_load(&st, state_path);
    size_t skipped_series = 0, skipped_instances = 0;
    if (!force) {
        for (size_t i = 0; i < plan->n_series;) {
            if (state_has(&st, &plan->series[i])) {
                skipped_series++;
                skipped_instances += plan->series[i].n;
                dwb_rplan_remove_series(plan, i);
            } else {
                i++;
            }
        }
    }
    size_t n_studies = 0;
    for (size_t i = 0; i < plan->n_series; i++) {
        int seen = 0;
        for (size_t k = 0; k < i && !seen; k++) seen = !strcmp(plan->series[k].study_uid, plan->series[i].study_uid);
        if (!seen) n_studies++;
    }
    if (dry_run) {
        /* Sizes come from the IDC index where it has the series; QIDO-RS does not report them. */
        const dwb_idc_index *ix = dwb_idc_index_of(up);
        unsigned long long bytes = 0;
        size_t sized = 0;
        for (size_t i = 0; i < plan->n_series; i++) {
            dwb_idc_series is;
            if (ix && dwb_idc_index_find(ix, plan->series[i].series_uid, &is) && is.bytes) {
                sized++;
                bytes += is.bytes;
                printf("series %s %s: %zu instance(s), %llu bytes (bucket %s/%s)\n", plan->series[i].study_uid,
                       plan->series[i].series_uid, plan->series[i].n, is.bytes, is.bucket, is.crdc_series_uuid);
            } else {
                printf("series %s %s: %zu instance(s)\n", plan->series[i].study_uid, plan->series[i].series_uid,
                       plan->series[i].n);
            }
        }
        char bytes_text[160];
        if (sized == plan->n_series && sized > 0)
            snprintf(bytes_text, sizeof bytes_text, "%llu bytes (%.1f MB, from the IDC index)", bytes, (double)bytes / 1e6);
        else if (sized > 0)
            snprintf(bytes_text, sizeof bytes_text, "%llu bytes (%.1f MB) for the %zu series in the IDC index", bytes,
                     (double)bytes / 1e6, sized);
        else
            snprintf(bytes_text, sizeof bytes_text, "bytes: not reported by QIDO-RS");
        printf("would send: %zu studies, %zu series, %zu instances, %s; skipped as already delivered: %zu series, "
               "%zu instances\n",
               n_studies, plan->n_series, plan->total, bytes_text, skipped_series, skipped_instances);
        rc = 0;
        goto out;
    }
    if (plan->total == 0) {
        printf("import: nothing to send (%zu series already delivered according to %s)\n", skipped_series, state_path);
        rc = 0;
        goto out;
    }
    mkdir(cfg->spool.dir, 0750); /* the default state file lives there */
    st.append = fopen(state_path, "a");
    if (!st.append) fprintf(stderr, "import: cannot write the state file %s: %s (no resume)\n", state_path, strerror(errno));
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    progress pr;
    memset(&pr, 0, sizeof pr);
    pr.tty = isatty(2);
    pr.st = &st;
    clock_gettime(CLOCK_MONOTONIC, &pr.t0);
    pr.last = pr.t0;
    dwb_send_sink sink = {on_progress, NULL, on_series_done, on_cancelled, &pr};
    /* A STOW-RS destination gets its own HTTP client and auth, with the upstream's timeouts and retries. */
    dwb_upstream *stow = NULL;
    dwb_upstream_conf stow_conf;
    if (dc->stow_url) {
        stow_conf = *uc;
        snprintf(stow_conf.ae_title, sizeof stow_conf.ae_title, "%s", dc->ae_title);
        stow_conf.base_url = dc->stow_url;
        stow_conf.auth = dc->auth;
        if (dwb_upstream_new(&stow_conf, &stow, &err) != DWB_OK) {
            fprintf(stderr, "import: destination %s: %s\n", dc->ae_title, err.message);
            rc = 1;
            goto out;
        }
    }
    dwb_send_totals tot;
    fprintf(stderr, "import: %zu studies, %zu series, %zu instances from %s to %s%s\n", n_studies, plan->n_series,
            plan->total, uc->ae_title, dc->ae_title, skipped_series ? " (resuming)" : "");
    plan->max_attempts = cfg->retrieve.max_attempts;
    if (dc->transfer_syntax) snprintf(plan->transfer_syntax, sizeof plan->transfer_syntax, "%s", dc->transfer_syntax);
    /* Kaapana's CTP starts its workflow after ~10 s of silence per series: always send whole series at once. */
    char burst_dir[1200];
    snprintf(burst_dir, sizeof burst_dir, "%s/burst-import-%ld", cfg->spool.dir, (long)getpid());
    dwb_log_ctx lc = {0};
    lc.assoc = "import";
    lc.upstream = uc->ae_title;
    dwb_send_opts so = {0};
    so.cfg = cfg;
    so.up = up;
    so.dest = dc;
    so.stow = stow ? stow->http : NULL;
    so.burst_dir = burst_dir;
    so.log = &lc;
    so.service = "import";
    /* The serving process's console shows this import: its job, published every half second and at the end into
     * <spool.dir>/.jobs/ (best effort: an import runs the same without it). */
    char caller[64], jobs_dir[1100];
    snprintf(caller, sizeof caller, "import (pid %ld)", (long)getpid());
    snprintf(jobs_dir, sizeof jobs_dir, "%s/.jobs", cfg->spool.dir);
    pr.activity = dwb_activity_new(1);
    if (pr.activity && (mkdir(jobs_dir, 0750) == 0 || errno == EEXIST))
        snprintf(pr.job_path, sizeof pr.job_path, "%s/import-%ld.job", jobs_dir, (long)getpid());
    so.activity = pr.activity;
    so.caller = caller;
    s = dwb_send_run(&so, plan, &sink, &tot, &err);
    if (pr.job_path[0]) dwb_activity_publish(pr.activity, pr.job_path);
    dwb_activity_free(pr.activity);
    pr.activity = NULL;
    dwb_upstream_free(stow);
    if (pr.tty) fputc('\n', stderr);
    double el = secs_since(&pr.t0);
    if (s != DWB_OK && s != DWB_E_CANCELLED) {
        fprintf(stderr, "import: %s\n", err.message);
        rc = 1;
        goto out;
    }
    printf("import summary: sent %zu, skipped %zu (already delivered), failed %zu, %.1f MB in %.1f s%s\n",
           tot.completed + tot.warning, skipped_instances, tot.failed + (tot.total - tot.completed - tot.warning - tot.failed),
           (double)tot.bytes / 1e6, el, s == DWB_E_CANCELLED ? " (interrupted)" : "");
    if (tot.failed) printf("failed instances are listed above with their reason; run again to retry them\n");
    rc = (tot.failed || s == DWB_E_CANCELLED || tot.completed + tot.warning < tot.total) ? 1 : 0;
out:
    dwb_manifest_free(&man);
    if (st.append) fclose(st.append);
    for (size_t i = 0; i < st.n; i++) free(st.lines[i]);
    free(st.lines);
    dwb_rplan_free(plan);
    dwb_upstream_free(up);
    dwb_http_global_cleanup();
    dwb_config_free(cfg);
    return rc;
}
