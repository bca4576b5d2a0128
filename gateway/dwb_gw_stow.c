/* STOW-RS receiver of the gateway. A part's first bytes are held until its file meta names the SOP Instance
 * UID (the spool file's name carries it); then the part goes straight to its temporary spool file through a
 * checked write loop. When the part ends, the file is mapped and its data set checked by header walks (what the
 * C-STORE SCP checks before it commits), then committed (fsync, rename, index) or removed: the spool holds only
 * instances every later reader can take. Memory per request: the multipart parser's boundary tail plus at most
 * HEAD_MAX bytes of one part; the mapping is the page cache's. */
#include "dwb_gw_stow.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dwb_log.h"
#include "dwb_multipart.h"
#include "dwb_nesting.h"
#include "dwb_splice.h"
#include "dwb_tags.h"

/* The file meta group must be complete within this many bytes (it is a few hundred in practice). */
#define HEAD_MAX (64u << 10)
#define MAX_RESULTS 100000

typedef struct result {
    char cls[65], uid[65];
    unsigned reason; /* 0 = stored */
} result;

struct dwb_gw_stow {
    dwb_spool *spool;
    dwb_uploader *uploader;
    int min_free_mb;
    dwb_multipart *mp;
    int broken;            /* the body is not valid multipart: stop feeding */
    char why[256];
    /* the part being received */
    int in_part, part_bad;
    unsigned part_reason;
    unsigned char *head;
    size_t head_len;
    int fd;
    char tmp[1400];
    char cls[65], uid[65];
    long long written;
    result *res;
    size_t n_res, cap_res;
};

int dwb_gw_stow_meta_uids(const unsigned char *b, size_t len, char *cls, char *uid) {
    cls[0] = uid[0] = '\0';
    if (len < 132) return 0;
    if (memcmp(b + 128, "DICM", 4) != 0) return -1;
    size_t o = 132;
    for (;;) {
        if (o + 8 > len) return 0;
        unsigned group = b[o] | (unsigned)b[o + 1] << 8, elem = b[o + 2] | (unsigned)b[o + 3] << 8;
        if (group != 0x0002) return -1; /* meta ended without both UIDs */
        char vr[3] = {(char)b[o + 4], (char)b[o + 5], 0};
        size_t vlen, hdr;
        if (!strcmp(vr, "OB") || !strcmp(vr, "OW") || !strcmp(vr, "UN") || !strcmp(vr, "SQ") || !strcmp(vr, "UT")) {
            if (o + 12 > len) return 0;
            vlen = b[o + 8] | (size_t)b[o + 9] << 8 | (size_t)b[o + 10] << 16 | (size_t)b[o + 11] << 24;
            hdr = 12;
        } else {
            vlen = b[o + 6] | (size_t)b[o + 7] << 8;
            hdr = 8;
        }
        if (vlen > HEAD_MAX) return -1;
        if (o + hdr + vlen > len) return 0;
        if (elem == 0x0002 || elem == 0x0003) {
            char *dst = elem == 0x0002 ? cls : uid;
            size_t n = vlen;
            while (n && (b[o + hdr + n - 1] == 0 || b[o + hdr + n - 1] == ' ')) n--;
            if (n > 64) return -1;
            memcpy(dst, b + o + hdr, n);
            dst[n] = '\0';
        }
        o += hdr + vlen;
        if (cls[0] && uid[0]) return dwb_uid_valid(cls) && dwb_uid_valid(uid) ? 1 : -1;
    }
}

/* 1 Explicit VR Little Endian, 0 Implicit VR Little Endian, -1 a syntax the header walk cannot read. PS3.5 Annex
 * A: every standard syntax but Implicit VR Little Endian, Big Endian (retired) and the deflated ones encodes its
 * data set in Explicit VR Little Endian (the compressed ones encapsulate Pixel Data only); a private syntax may
 * encode it in any way. */
static int xfer_explicit(const char *ts) {
    static const char *const implicit = "1.2.840.10008.1.2";
    static const char *const exact[] = {"1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.98", "1.2.840.10008.1.2.5"};
    static const char *const family[] = {"1.2.840.10008.1.2.4.", "1.2.840.10008.1.2.7.", "1.2.840.10008.1.2.8."};
    static const char *const deflated_jpip = "1.2.840.10008.1.2.4.95";
    if (!strcmp(ts, implicit)) return 0;
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++)
        if (!strcmp(ts, exact[i])) return 1;
    if (!strcmp(ts, deflated_jpip)) return -1;
    for (size_t i = 0; i < sizeof family / sizeof family[0]; i++)
        if (!strncmp(ts, family[i], strlen(family[i])) && ts[strlen(family[i])]) return 1;
    return -1;
}

/* The UI value a walk found, without its padding (trailing NUL or space). 0 when absent, not of defined length
 * or longer than a UID may be. */
static int uid_value(const unsigned char *ds, size_t n, int explicit_vr, const dwb_splice_slot *slot, char out[65]) {
    size_t off = 0, len = 0;
    out[0] = '\0';
    if (dwb_splice_value(ds, n, explicit_vr, slot, &off, &len, NULL) != DWB_OK) return 0;
    while (len && (ds[off + len - 1] == 0 || ds[off + len - 1] == ' ')) len--;
    if (len > 64) return 0;
    memcpy(out, ds + off, len);
    out[len] = '\0';
    return 1;
}

unsigned dwb_gw_stow_check(const unsigned char *p, size_t n, const char *cls, const char *uid, dwb_error *err) {
    dwb_error e = {0};
    size_t off = 0;
    if (dwb_splice_dataset_offset(p, n, &off, &e) != DWB_OK || off < 132) {
        dwb_error_set(err, DWB_E_PARSE, "%s", e.message);
        return DWB_GW_STOW_CANNOT_UNDERSTAND;
    }
    static const uint32_t ts_tag = DWB_TAG(0x0002, 0x0010);
    dwb_splice_slot ts_slot;
    char ts[65];
    if (dwb_splice_find(p + 132, off - 132, 1, &ts_tag, 1, &ts_slot, NULL) != DWB_OK ||
        !uid_value(p + 132, off - 132, 1, &ts_slot, ts) || !ts[0]) {
        dwb_error_set(err, DWB_E_PARSE, "the file meta names no transfer syntax");
        return DWB_GW_STOW_CANNOT_UNDERSTAND;
    }
    int explicit_vr = xfer_explicit(ts);
    if (explicit_vr < 0) {
        dwb_error_set(err, DWB_E_UNSUPPORTED, "transfer syntax %s is not accepted (not Little Endian, or deflated)",
                      dwb_uid_valid(ts) ? ts : "(not a UID)");
        return DWB_GW_STOW_SYNTAX_UNSUPPORTED;
    }
    /* As in the C-STORE SCP, before any walk that recurses: nothing may read a data set nested deeper than the
     * bridge allows (a recursive reader, such as the store's, may overflow its stack on it). */
    dwb_status st = dwb_nesting_check_file(p, n, DWB_NESTING_MAX, &e);
    if (st != DWB_OK) {
        dwb_error_set(err, st, "%s", e.message);
        return st == DWB_E_UNSUPPORTED ? DWB_GW_STOW_SYNTAX_UNSUPPORTED : DWB_GW_STOW_CANNOT_UNDERSTAND;
    }
    /* (FFFF,FFFF) sorts after every tag, so the walk goes through the last element: a data set cut short or
     * followed by bytes that are not elements fails here as a full parse would. */
    enum { CLS, SOP, END, N };
    static const uint32_t tags[N] = {DWB_TAG_SOP_CLASS, DWB_TAG_SOP_UID, DWB_TAG(0xFFFF, 0xFFFF)};
    dwb_splice_slot at[N];
    const unsigned char *ds = p + off;
    size_t dn = n - off;
    if (dwb_splice_find(ds, dn, explicit_vr, tags, N, at, &e) != DWB_OK) {
        dwb_error_set(err, DWB_E_PARSE, "the data set does not parse: %s", e.message);
        return DWB_GW_STOW_CANNOT_UNDERSTAND;
    }
    if (at[END].len) { /* PS3.5 7.1: group FFFF is not used; the walk would stop at it */
        dwb_error_set(err, DWB_E_PARSE, "the data set holds an element (FFFF,FFFF)");
        return DWB_GW_STOW_CANNOT_UNDERSTAND;
    }
    char ds_cls[65], ds_uid[65];
    if (!uid_value(ds, dn, explicit_vr, &at[CLS], ds_cls) || !ds_cls[0]) {
        dwb_error_set(err, DWB_E_INVALID, "the data set has no SOP Class UID");
        return DWB_GW_STOW_DOES_NOT_MATCH;
    }
    if (!uid_value(ds, dn, explicit_vr, &at[SOP], ds_uid) || !ds_uid[0]) {
        dwb_error_set(err, DWB_E_INVALID, "the data set has no SOP Instance UID");
        return DWB_GW_STOW_DOES_NOT_MATCH;
    }
    if (!dwb_uid_valid(ds_uid)) {
        dwb_error_set(err, DWB_E_INVALID, "the data set's SOP Instance UID is not a valid UID");
        return DWB_GW_STOW_DOES_NOT_MATCH;
    }
    /* The data set's UIDs are quoted only when valid: then they hold digits and dots, nothing else. */
    if (strcmp(ds_uid, uid) != 0) {
        dwb_error_set(err, DWB_E_INVALID, "the data set's SOP Instance UID %s differs from the file meta's", ds_uid);
        return DWB_GW_STOW_DOES_NOT_MATCH;
    }
    if (strcmp(ds_cls, cls) != 0) {
        dwb_error_set(err, DWB_E_INVALID, "the data set's SOP Class UID %s differs from the file meta's",
                      dwb_uid_valid(ds_cls) ? ds_cls : "(not a UID)");
        return DWB_GW_STOW_DOES_NOT_MATCH;
    }
    return 0;
}

static void add_result(dwb_gw_stow *s, const char *cls, const char *uid, unsigned reason) {
    if (s->n_res == s->cap_res) {
        if (s->cap_res >= MAX_RESULTS) return;
        size_t cap = s->cap_res ? s->cap_res * 2 : 16;
        result *nr = realloc(s->res, cap * sizeof *nr);
        if (!nr) return;
        s->res = nr;
        s->cap_res = cap;
    }
    result *r = &s->res[s->n_res++];
    snprintf(r->cls, sizeof r->cls, "%s", cls);
    snprintf(r->uid, sizeof r->uid, "%s", uid);
    r->reason = reason;
}

static void drop_part_file(dwb_gw_stow *s) {
    if (s->fd >= 0) close(s->fd);
    s->fd = -1;
    if (s->tmp[0]) dwb_spool_discard(s->tmp);
    s->tmp[0] = '\0';
}

static void part_fail(dwb_gw_stow *s, unsigned reason, const char *why) {
    if (s->part_bad) return;
    s->part_bad = 1;
    s->part_reason = reason;
    drop_part_file(s);
    /* The SOP Instance UID is logged only once the file meta named a valid one: no patient data in this line. */
    if (s->uid[0])
        DWB_WARN(NULL, "gateway STOW-RS: part %zu (SOP Instance UID %s) refused with 0x%04X: %s", s->n_res + 1,
                 s->uid, reason, why);
    else
        DWB_WARN(NULL, "gateway STOW-RS: part %zu refused with 0x%04X: %s", s->n_res + 1, reason, why);
}

static int write_all(dwb_gw_stow *s, const unsigned char *d, size_t n) {
    while (n) {
        ssize_t w = write(s->fd, d, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        d += w;
        n -= (size_t)w;
        s->written += w;
    }
    return 0;
}

/* The head is complete enough: open the spool file and write what was held. */
static void open_part_file(dwb_gw_stow *s) {
    dwb_error err = {0};
    if (s->min_free_mb > 0) {
        long long free_mb = dwb_spool_free_mb(s->spool);
        if (free_mb >= 0 && free_mb < s->min_free_mb) {
            part_fail(s, DWB_GW_STOW_OUT_OF_RESOURCES, "spool below spool.min_free_mb");
            return;
        }
    }
    if (dwb_spool_tmp_path(s->spool, s->uid, s->tmp, sizeof s->tmp, &err) != DWB_OK) {
        s->tmp[0] = '\0';
        part_fail(s, DWB_GW_STOW_OUT_OF_RESOURCES, err.message);
        return;
    }
    s->fd = open(s->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (s->fd < 0 || write_all(s, s->head, s->head_len) != 0) {
        char why[300];
        snprintf(why, sizeof why, "cannot write the spool file: %s", strerror(errno));
        part_fail(s, DWB_GW_STOW_OUT_OF_RESOURCES, why);
    }
}

/* Maps the part's file read-only and checks it (dwb_gw_stow_check): 0 to commit it, else the reason with why. */
static unsigned check_part_file(dwb_gw_stow *s, char *why, size_t cap) {
    int fd = open(s->tmp, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0 || sb.st_size != s->written || sb.st_size <= 0) {
        snprintf(why, cap, "cannot read the spool file back: %s", fd < 0 ? strerror(errno) : "size differs");
        if (fd >= 0) close(fd);
        return DWB_GW_STOW_OUT_OF_RESOURCES;
    }
    void *map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        snprintf(why, cap, "cannot map the spool file: %s", strerror(errno));
        return DWB_GW_STOW_OUT_OF_RESOURCES;
    }
    dwb_error err = {0};
    unsigned reason = dwb_gw_stow_check(map, (size_t)sb.st_size, s->cls, s->uid, &err);
    munmap(map, (size_t)sb.st_size);
    if (reason) snprintf(why, cap, "%s", err.message);
    return reason;
}

static int on_begin(void *ud, const dwb_multipart_part *p) {
    dwb_gw_stow *s = ud;
    s->in_part = 1;
    s->part_bad = 0;
    s->part_reason = 0;
    s->head_len = 0;
    s->fd = -1;
    s->tmp[0] = s->cls[0] = s->uid[0] = '\0';
    s->written = 0;
    const char *ct = p->content_type;
    /* application/dicom only: DICOM JSON/XML metadata with bulk data is not accepted by this gateway. */
    if (ct[0] && (strncasecmp(ct, "application/dicom", 17) != 0 || ct[17] == '+'))
        part_fail(s, DWB_GW_STOW_CANNOT_UNDERSTAND, "only application/dicom parts are accepted");
    return 0;
}

static int on_data(void *ud, const void *d, size_t n) {
    dwb_gw_stow *s = ud;
    if (s->part_bad) return 0;
    if (s->fd < 0) {
        size_t take = n < HEAD_MAX - s->head_len ? n : HEAD_MAX - s->head_len;
        memcpy(s->head + s->head_len, d, take);
        s->head_len += take;
        int m = dwb_gw_stow_meta_uids(s->head, s->head_len, s->cls, s->uid);
        if (m < 0 || (m == 0 && s->head_len == HEAD_MAX)) {
            part_fail(s, DWB_GW_STOW_CANNOT_UNDERSTAND, "not a DICOM Part-10 instance with SOP Class and Instance UIDs");
            return 0;
        }
        if (m == 0) return 0;
        open_part_file(s);
        if (s->part_bad) return 0;
        d = (const unsigned char *)d + take;
        n -= take;
    }
    if (n && write_all(s, d, n) != 0) {
        char why[300];
        snprintf(why, sizeof why, "spool write failed: %s", strerror(errno));
        part_fail(s, DWB_GW_STOW_OUT_OF_RESOURCES, why);
    }
    return 0;
}

static int on_end(void *ud) {
    dwb_gw_stow *s = ud;
    s->in_part = 0;
    if (!s->part_bad && s->fd < 0)
        part_fail(s, DWB_GW_STOW_CANNOT_UNDERSTAND, "not a DICOM Part-10 instance with SOP Class and Instance UIDs");
    if (!s->part_bad) { /* checked before the fsync: a refused part costs no flush */
        char why[600];
        unsigned reason = check_part_file(s, why, sizeof why);
        if (reason) part_fail(s, reason, why);
    }
    if (!s->part_bad) {
        struct stat sb;
        int bad = fsync(s->fd) != 0;
        bad |= close(s->fd) != 0;
        s->fd = -1;
        if (bad || stat(s->tmp, &sb) != 0 || sb.st_size != s->written) {
            part_fail(s, DWB_GW_STOW_OUT_OF_RESOURCES, "spool write could not be made durable");
        } else {
            dwb_error err = {0};
            if (dwb_spool_commit(s->spool, s->tmp, &err) != DWB_OK) {
                part_fail(s, DWB_GW_STOW_OUT_OF_RESOURCES, err.message);
            } else {
                s->tmp[0] = '\0';
                if (s->uploader) dwb_uploader_notify(s->uploader);
            }
        }
    }
    add_result(s, s->cls, s->uid, s->part_bad ? s->part_reason : 0);
    return 0;
}

dwb_status dwb_gw_stow_begin(dwb_spool *spool, dwb_uploader *uploader, int min_free_mb, const char *content_type,
                             dwb_gw_stow **out, unsigned *http_code, dwb_error *err) {
    *out = NULL;
    if (!spool) {
        *http_code = 503;
        return dwb_error_set(err, DWB_E_IO, "the spool of this upstream is not available");
    }
    char boundary[128], type[128];
    dwb_error e = {0};
    if (!content_type || dwb_multipart_parse_content_type(content_type, boundary, sizeof boundary, type, sizeof type,
                                                          &e) != DWB_OK) {
        *http_code = 415;
        return dwb_error_set(err, DWB_E_INVALID, "STOW-RS needs multipart/related; type=\"application/dicom\"");
    }
    if (type[0] && strcasecmp(type, "application/dicom") != 0) {
        *http_code = 415;
        return dwb_error_set(err, DWB_E_INVALID, "this gateway takes STOW-RS parts of type application/dicom only");
    }
    dwb_gw_stow *s = calloc(1, sizeof *s);
    if (!s || !(s->head = malloc(HEAD_MAX))) {
        free(s);
        *http_code = 503;
        return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    }
    s->spool = spool;
    s->uploader = uploader;
    s->min_free_mb = min_free_mb;
    s->fd = -1;
    dwb_multipart_callbacks cb = {on_begin, on_data, on_end};
    if (dwb_multipart_new(boundary, &cb, s, 16384, &s->mp, err) != DWB_OK) {
        free(s->head);
        free(s);
        *http_code = 400;
        return err ? err->status : DWB_E_INVALID;
    }
    *out = s;
    return DWB_OK;
}

void dwb_gw_stow_feed(dwb_gw_stow *s, const void *data, size_t len) {
    if (s->broken) return;
    dwb_error e = {0};
    if (dwb_multipart_feed(s->mp, data, len, &e) != DWB_OK) {
        s->broken = 1;
        snprintf(s->why, sizeof s->why, "%.250s", e.message);
    }
}

static json_t *uid_attr(const char *v) {
    return json_pack("{s:s, s:[s]}", "vr", "UI", "Value", v);
}

unsigned dwb_gw_stow_finish(dwb_gw_stow *s, char **body, size_t *len) {
    *body = NULL;
    *len = 0;
    dwb_error e = {0};
    if (!s->broken && dwb_multipart_finish(s->mp, &e) != DWB_OK) {
        s->broken = 1;
        snprintf(s->why, sizeof s->why, "%.250s", e.message);
    }
    if (s->in_part) { /* cut inside a part: it is not stored */
        drop_part_file(s);
        s->in_part = 0;
    }
    json_t *doc = json_object(), *ok = json_array(), *bad = json_array();
    size_t n_ok = 0, n_bad = 0;
    for (size_t i = 0; i < s->n_res; i++) {
        const result *r = &s->res[i];
        json_t *item = json_object();
        if (r->cls[0]) json_object_set_new(item, "00081150", uid_attr(r->cls));
        if (r->uid[0]) json_object_set_new(item, "00081155", uid_attr(r->uid));
        if (r->reason) {
            json_object_set_new(item, "00081197", json_pack("{s:s, s:[i]}", "vr", "US", "Value", (int)r->reason));
            json_array_append_new(bad, item);
            n_bad++;
        } else {
            json_array_append_new(ok, item);
            n_ok++;
        }
    }
    if (n_ok) json_object_set_new(doc, "00081199", json_pack("{s:s, s:o}", "vr", "SQ", "Value", ok));
    else json_decref(ok);
    if (n_bad) json_object_set_new(doc, "00081198", json_pack("{s:s, s:o}", "vr", "SQ", "Value", bad));
    else json_decref(bad);
    unsigned code = n_ok && !n_bad ? 200 : n_ok ? 202 : 409;
    if (s->broken && !n_ok && !n_bad) code = 400;
    if (s->broken) DWB_WARN(NULL, "gateway STOW-RS: request body is not valid multipart: %s", s->why);
    *body = json_dumps(doc, JSON_COMPACT);
    *len = *body ? strlen(*body) : 0;
    json_decref(doc);
    DWB_INFO(NULL, "gateway STOW-RS: %zu instance(s) spooled, %zu refused", n_ok, n_bad);
    return code;
}

void dwb_gw_stow_free(dwb_gw_stow *s) {
    if (!s) return;
    drop_part_file(s);
    dwb_multipart_free(s->mp);
    free(s->head);
    free(s->res);
    free(s);
}
