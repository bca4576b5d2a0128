/* dicomweb-bridge: command-line entry point. Parses the subcommand, loads the config, initialises the
 * logger and the HTTP stack (the only process-wide state), and runs the DIMSE server until SIGTERM. */
#include <errno.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dwb_config.h"
#include "dwb_health.h"
#include "dwb_http.h"
#include "dwb_idc_index.h"
#include "dwb_import.h"
#include "dwb_log.h"
#include "dwb_server.h"
#include "dwb_status.h"

enum { EXIT_OK = 0, EXIT_RUNTIME = 1, EXIT_USAGE = 2 };

static dwb_server *g_server; /* for the signal handler only */

static const char *k_usage =
    "usage: dicomweb-bridge <command> [options]\n"
    "\n"
    "A DICOM node that answers DIMSE (C-ECHO, C-FIND, C-MOVE, C-GET, C-STORE) from DICOMweb stores.\n"
    "\n"
    "commands:\n"
    "  serve --config FILE          run the DIMSE listener until SIGTERM/SIGINT\n"
    "  check-config --config FILE   validate a configuration file and the files it references\n"
    "  import --config FILE ...     pull studies/series from an upstream store into a destination AE\n"
    "  version                      print the version\n"
    "\n"
    "Run 'dicomweb-bridge <command> --help' for the options of a command.\n";

static const char *k_usage_serve =
    "usage: dicomweb-bridge serve --config FILE [--log-level LEVEL] [--log-format text|json]\n"
    "\n"
    "Listens on listen.port. Each upstream store answers on its own called AE title; the bridge's own\n"
    "listen.ae_title answers C-ECHO. The first SIGTERM/SIGINT stops accepting associations and lets running\n"
    "operations finish; a second one cancels them. --log-level/--log-format override the config's log section.\n";

static const char *k_usage_check =
    "usage: dicomweb-bridge check-config --config FILE\n"
    "\n"
    "Loads FILE, checks every key and the files and environment variables it references, and prints a\n"
    "summary. Exits with status 2 and a message naming the offending key when something is wrong.\n";

static int is_help(const char *a) { return strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0 || strcmp(a, "help") == 0; }

typedef struct cli_opts {
    const char *config;
    const char *log_level;
    const char *log_format;
} cli_opts;

/* Returns -1 on usage error (message printed), 1 if help was printed, 0 otherwise. */
static int parse_opts(int argc, char **argv, const char *usage, int allow_log, cli_opts *o) {
    memset(o, 0, sizeof *o);
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char **slot = NULL;
        if (is_help(a)) {
            fputs(usage, stdout);
            return 1;
        }
        if (strcmp(a, "--config") == 0 || strcmp(a, "-c") == 0)
            slot = &o->config;
        else if (allow_log && strcmp(a, "--log-level") == 0)
            slot = &o->log_level;
        else if (allow_log && strcmp(a, "--log-format") == 0)
            slot = &o->log_format;
        if (!slot) {
            fprintf(stderr, "dicomweb-bridge: unknown option '%s'\n\n%s", a, usage);
            return -1;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "dicomweb-bridge: option %s needs a value\n", a);
            return -1;
        }
        *slot = argv[++i];
    }
    if (!o->config) {
        fprintf(stderr, "dicomweb-bridge: --config FILE is required\n\n%s", usage);
        return -1;
    }
    return 0;
}

static int cmd_check_config(int argc, char **argv) {
    cli_opts o;
    int r = parse_opts(argc, argv, k_usage_check, 0, &o);
    if (r != 0) return r > 0 ? EXIT_OK : EXIT_USAGE;
    dwb_config *cfg = NULL;
    dwb_error err = {0};
    if (dwb_config_load_file(o.config, &cfg, &err) != DWB_OK) {
        fprintf(stderr, "%s: %s\n", o.config, err.message);
        return EXIT_USAGE;
    }
    /* IDC indexes are loaded in full here, so that a broken file is found now and not at start-up. */
    size_t *idc_series = calloc(cfg->n_upstreams ? cfg->n_upstreams : 1, sizeof *idc_series);
    for (size_t i = 0; idc_series && i < cfg->n_upstreams; i++) {
        if (!cfg->upstreams[i].idc_index) continue;
        dwb_idc_index *ix = NULL;
        if (dwb_idc_index_load(cfg->upstreams[i].idc_index, &ix, &err) != DWB_OK) {
            fprintf(stderr, "%s: upstreams[%zu].idc_index: %s\n", o.config, i, err.message);
            free(idc_series);
            dwb_config_free(cfg);
            return EXIT_USAGE;
        }
        idc_series[i] = dwb_idc_index_count(ix);
        dwb_idc_index_free(ix);
    }
    if (!idc_series) {
        dwb_config_free(cfg);
        return EXIT_USAGE;
    }
    printf("%s: OK\n", o.config);
    printf("  listen: port %d, AE title %s (C-ECHO), max %d associations\n", cfg->listen.port, cfg->listen.ae_title,
           cfg->listen.max_associations);
    for (size_t i = 0; i < cfg->n_upstreams; i++) {
        const dwb_upstream_conf *u = &cfg->upstreams[i];
        static const char *const names[] = {"none", "bearer", "basic", "google_service_account", "google_metadata",
                                            "token_command"};
        const char *auth = names[u->auth.type];
        const char *from = u->auth.token.source   ? u->auth.token.source
                           : u->auth.key_file     ? u->auth.key_file
                           : u->auth.metadata_url ? u->auth.metadata_url
                                                  : NULL;
        char url[512];
        dwb_log_url(u->base_url, url, sizeof url);
        printf("  upstream %-16s %s (auth %s%s%s)\n", u->ae_title, url, auth, from ? ", from " : "",
               from ? from : "");
        if (u->idc_index) {
            printf("    IDC index %s: %zu series; bulk data from %s\n", u->idc_index, idc_series[i], u->bucket_endpoint);
        } else if (u->bucket_endpoint) {
            printf("    bucket %s (no idc_index: not used)\n", u->bucket_endpoint);
        }
    }
    for (size_t i = 0; i < cfg->n_destinations; i++) {
        const dwb_destination_conf *d = &cfg->destinations[i];
        if (d->stow_url) {
            char url[512];
            dwb_log_url(d->stow_url, url, sizeof url);
            printf("  destination %-16s STOW-RS %s (import only)\n", d->ae_title, url);
            continue;
        }
        printf("  destination %-16s %s:%d (calling %s, called %s)\n", d->ae_title, d->host, d->port,
               d->calling_ae_title[0] ? d->calling_ae_title : cfg->listen.ae_title,
               d->called_ae_title[0] ? d->called_ae_title : d->ae_title);
    }
    if (cfg->http.port > 0)
        printf("  console: http://%s:%d%s/ (%s)\n", cfg->http.bind, cfg->http.port, cfg->http.console_path,
               cfg->http.admin_token.value && cfg->http.n_admin_proxies
                   ? "Retry/Discard with the admin token or through an authenticating proxy"
               : cfg->http.admin_token.value ? "Retry/Discard with the admin token"
               : cfg->http.n_admin_proxies   ? "Retry/Discard through an authenticating proxy"
                                             : "read-only: no http.admin_token_file");
    free(idc_series);
    dwb_config_free(cfg);
    return EXIT_OK;
}

static void on_signal(int sig) {
    (void)sig;
    if (g_server) dwb_server_request_stop(g_server);
}

static int cmd_serve(int argc, char **argv) {
    cli_opts o;
    int r = parse_opts(argc, argv, k_usage_serve, 1, &o);
    if (r != 0) return r > 0 ? EXIT_OK : EXIT_USAGE;
    dwb_config *cfg = NULL;
    dwb_error err = {0};
    if (dwb_config_load_file(o.config, &cfg, &err) != DWB_OK) {
        fprintf(stderr, "%s: %s\n", o.config, err.message);
        return EXIT_USAGE;
    }
    dwb_log_level level = cfg->log.level;
    dwb_log_format format = cfg->log.format;
    if (o.log_level && dwb_log_parse_level(o.log_level, &level) != DWB_OK) {
        fprintf(stderr, "--log-level: expected trace, debug, info, warn, error or off\n");
        dwb_config_free(cfg);
        return EXIT_USAGE;
    }
    if (o.log_format && dwb_log_parse_format(o.log_format, &format) != DWB_OK) {
        fprintf(stderr, "--log-format: expected text or json\n");
        dwb_config_free(cfg);
        return EXIT_USAGE;
    }
    dwb_log_init(level, format);
    dwb_log_set_phi(cfg->log.phi);
    /* Debian's DCMTK leaves Nagle's algorithm on unless TCP_NODELAY is set: 45 ms per instance. The server
     * also sets the option on each socket it accepts; this covers sockets DCMTK opens itself. */
    setenv("TCP_NODELAY", "1", 0);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);

    int rc = EXIT_RUNTIME;
    if (dwb_http_global_init(&err) != DWB_OK) {
        DWB_ERROR(NULL, "HTTP initialisation failed: %s", err.message);
        dwb_config_free(cfg);
        return EXIT_RUNTIME;
    }
    dwb_server *srv = NULL;
    if (dwb_server_new(cfg, &srv, &err) != DWB_OK) {
        DWB_ERROR(NULL, "%s", err.message);
    } else {
        /* /healthz, /readyz and /metrics: a warning, not a failure, when the endpoint cannot start. */
        dwb_upstream *const *ups = NULL;
        dwb_spool *const *spools = NULL;
        size_t n = dwb_server_stores(srv, &ups, &spools);
        dwb_health *health = NULL;
        dwb_error he = {0};
        if (dwb_health_start(cfg, ups, spools, dwb_server_uploaders(srv), dwb_server_activity(srv), n, &health, &he) !=
            DWB_OK)
            DWB_WARN(NULL, "health and metrics endpoint not available: %s", he.message);
        g_server = srv;
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);
        if (dwb_server_run(srv, &err) == DWB_OK)
            rc = EXIT_OK;
        else
            DWB_ERROR(NULL, "%s", err.message);
        sa.sa_handler = SIG_DFL;
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);
        g_server = NULL;
        dwb_health_stop(health); /* before the stores it probes go */
        dwb_server_free(srv);
    }
    dwb_http_global_cleanup();
    dwb_config_free(cfg);
    return rc;
}

/* Instances of a few hundred KB to a few MB pass through the bridge by the thousand. With glibc's defaults
 * each such buffer is a fresh mmap, page-faulted and zeroed again on first touch: measured (bench/move.py,
 * 300 x 512 KB) as half of the bridge's CPU during a C-MOVE. They come from the heap instead, and the buffer pool
 * (core/dwb_bufpool.c) hands freed ones out again. The trim threshold stays glibc's: memory beyond the pool and
 * the retrieve budget goes back to the kernel (a 64 MB threshold kept up to that much per thread's arena). */
static void tune_malloc(void) {
#ifdef __GLIBC__
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
#endif
}

int main(int argc, char **argv) {
    tune_malloc();
    if (argc < 2 || is_help(argv[1])) {
        fputs(k_usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : EXIT_OK;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "serve") == 0) return cmd_serve(argc - 2, argv + 2);
    if (strcmp(cmd, "check-config") == 0) return cmd_check_config(argc - 2, argv + 2);
    if (strcmp(cmd, "import") == 0) return dwb_import_main(argc - 2, argv + 2);
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        if (argc > 2 && is_help(argv[2])) {
            puts("usage: dicomweb-bridge version\n\nPrints the version of dicomweb-bridge.");
            return EXIT_OK;
        }
        printf("dicomweb-bridge %s\n", DWB_VERSION);
        return EXIT_OK;
    }
    fprintf(stderr, "dicomweb-bridge: unknown command '%s'\n\n%s", cmd, k_usage);
    return EXIT_USAGE;
}
