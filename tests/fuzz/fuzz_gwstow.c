/* libFuzzer: the gateway's STOW-RS receiver (gateway/dwb_gw_stow.h) on arbitrary request bodies, fed in chunks whose
 * size the first byte picks, into a spool opened once in a temporary directory. Besides not crashing: the answer is
 * one of the documented statuses, every instance it committed passes the data set check (nothing unchecked reaches
 * the spool), and no temporary file is left behind. Committed instances are then taken and deleted, so the spool
 * stays empty between inputs. */
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dwb_gw_stow.h"
#include "dwb_log.h"
#include "dwb_spool.h"

#define CONTENT_TYPE "multipart/related; type=\"application/dicom\"; boundary=GWSTOW"

static dwb_spool *g_spool;
static char g_root[] = "/tmp/fuzz_gwstow-XXXXXX";

static void remove_root(void) {
    if (!g_spool) return;
    char cmd[64];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_root);
    dwb_spool_close(g_spool);
    g_spool = NULL;
    if (system(cmd) != 0) fprintf(stderr, "fuzz_gwstow: could not remove the temporary spool\n");
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    dwb_log_init(DWB_LOG_OFF, DWB_LOG_TEXT);
    dwb_error err = {0};
    if (!mkdtemp(g_root) || dwb_spool_open(g_root, "CLOUD", &g_spool, &err) != DWB_OK) {
        fprintf(stderr, "fuzz_gwstow: cannot open a spool in %s: %s\n", g_root, err.message);
        abort();
    }
    atexit(remove_root);
    return 0;
}

/* The committed file still checks out: its meta UIDs (from the name's UID and the file) name its data set. */
static void recheck(const char *path, const char *sop_uid) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0 || sb.st_size <= 0) abort();
    void *map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) abort();
    char cls[65], uid[65];
    if (dwb_gw_stow_meta_uids(map, (size_t)sb.st_size, cls, uid) != 1 || strcmp(uid, sop_uid) != 0) abort();
    if (dwb_gw_stow_check(map, (size_t)sb.st_size, cls, uid, NULL) != 0) abort();
    munmap(map, (size_t)sb.st_size);
}

/* Deletes what the input committed after checking it, and fails on a temporary file left behind. */
static void drain(void) {
    dwb_spool_item *items[64];
    size_t n;
    while ((n = dwb_spool_take(g_spool, dwb_spool_now_ms(), 64, 1LL << 40, items, NULL)) > 0) {
        for (size_t i = 0; i < n; i++) {
            char path[1400];
            dwb_spool_item_path(g_spool, items[i], path, sizeof path);
            recheck(path, items[i]->sop_uid);
            if (dwb_spool_delivered(g_spool, items[i], NULL) != DWB_OK) abort();
        }
    }
    DIR *d = opendir(dwb_spool_dir(g_spool));
    if (!d) abort();
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len > 4 && strcmp(e->d_name + len - 4, ".tmp") == 0) abort();
    }
    closedir(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    size_t chunk = (size_t)data[0] * 61 + 1; /* 1 to 15556 bytes */
    data++;
    size--;
    dwb_gw_stow *s = NULL;
    unsigned code = 0;
    if (dwb_gw_stow_begin(g_spool, NULL, 0, CONTENT_TYPE, &s, &code, NULL) != DWB_OK) abort();
    for (size_t i = 0; i < size; i += chunk) dwb_gw_stow_feed(s, data + i, size - i < chunk ? size - i : chunk);
    char *body = NULL;
    size_t len = 0;
    code = dwb_gw_stow_finish(s, &body, &len);
    if (code != 200 && code != 202 && code != 409 && code != 400) abort();
    if (!body || strlen(body) != len) abort();
    free(body);
    dwb_gw_stow_free(s);
    drain();
    return 0;
}
