#include "dwb_log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <ctype.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static dwb_log_level g_level = DWB_LOG_INFO;
static dwb_log_format g_format = DWB_LOG_TEXT;
static _Atomic int g_phi;
static void (*g_sink)(void *, const char *);
static void *g_sink_ud;

static const char *const level_names[] = {"trace", "debug", "info", "warn", "error", "off"};

void dwb_log_init(dwb_log_level level, dwb_log_format format)
{
    g_level = level;
    g_format = format;
}

dwb_status dwb_log_parse_level(const char *s, dwb_log_level *out)
{
    for (int i = 0; i <= DWB_LOG_OFF; i++) {
        if (s && strcmp(s, level_names[i]) == 0) {
            *out = (dwb_log_level)i;
            return DWB_OK;
        }
    }
    if (s && strcmp(s, "warning") == 0) {
        *out = DWB_LOG_WARN;
        return DWB_OK;
    }
    return DWB_E_INVALID;
}

dwb_status dwb_log_parse_format(const char *s, dwb_log_format *out)
{
    if (s && strcmp(s, "text") == 0)
        *out = DWB_LOG_TEXT;
    else if (s && strcmp(s, "json") == 0)
        *out = DWB_LOG_JSON;
    else
        return DWB_E_INVALID;
    return DWB_OK;
}

int dwb_log_enabled(dwb_log_level level) { return level >= g_level && level < DWB_LOG_OFF; }

void dwb_log_set_phi(int on) { atomic_store(&g_phi, on ? 1 : 0); }

int dwb_log_phi(void) { return atomic_load(&g_phi); }

const char *dwb_log_value(const char *value)
{
    if (!value || !*value)
        return "";
    return dwb_log_phi() ? value : "***";
}

/* QIDO-RS parameters whose values say how, never about whom: kept in log lines. */
static int paging_key(const char *k, size_t n)
{
    static const char *const keys[] = {"limit", "offset", "includefield", "fuzzymatching", NULL};
    for (int i = 0; keys[i]; i++)
        if (strlen(keys[i]) == n && strncmp(k, keys[i], n) == 0)
            return 1;
    return 0;
}

void dwb_log_text(const char *text, size_t n, char *out, size_t cap)
{
    if (!cap)
        return;
    size_t o = 0;
    int phi = dwb_log_phi();
    for (size_t i = 0; text && i < n && text[i] && o + 1 < cap;) {
        unsigned char c = (unsigned char)text[i];
        if (!phi && c == '=') {
            out[o++] = '=';
            size_t j = i + 1;
            while (j < n && text[j] && !strchr("&\"' \t\r\n<>()[]{},;", text[j]))
                j++;
            if (j > i + 1)
                for (const char *m = "***"; *m && o + 1 < cap; m++)
                    out[o++] = *m;
            i = j;
            continue;
        }
        if (!phi && !isspace(c)) { /* a word: kept unless it holds '^' */
            size_t j = i;
            int caret = 0;
            while (j < n && text[j] && !isspace((unsigned char)text[j]) && text[j] != '=') {
                caret |= text[j] == '^';
                j++;
            }
            if (caret) {
                for (const char *m = "***"; *m && o + 1 < cap; m++)
                    out[o++] = *m;
                i = j;
                continue;
            }
            for (; i < j && o + 1 < cap; i++) {
                unsigned char k = (unsigned char)text[i];
                out[o++] = (k < 0x20 || k == 0x7f) ? ' ' : (char)k;
            }
            continue;
        }
        out[o++] = (c < 0x20 || c == 0x7f) ? ' ' : (char)c;
        i++;
    }
    out[o] = '\0';
}

void dwb_log_url(const char *url, char *out, size_t cap)
{
    if (!cap)
        return;
    out[0] = '\0';
    if (!url)
        return;
    size_t o = 0;
#define OUT(c) do { if (o + 1 < cap) out[o++] = (c); } while (0)
    const char *p = url;
    const char *scheme = strstr(url, "://");
    if (scheme && strcspn(url, "/?#") > (size_t)(scheme - url)) { /* "://" before any path or query */
        const char *host = scheme + 3;
        const char *end = host + strcspn(host, "/?#");
        const char *at = NULL;
        for (const char *q = host; q < end; q++)
            if (*q == '@')
                at = q;
        for (; p < host; p++)
            OUT(*p);
        if (at)
            p = at + 1;
    }
    int phi = dwb_log_phi();
    int in_query = 0, in_value = 0, keep = 0;
    const char *key = NULL;
    for (; *p; p++) {
        char c = *p;
        if (c == '#') /* fragments are never sent; drop them too */
            break;
        if (!in_query) {
            OUT(c);
            if (c == '?') {
                in_query = 1;
                key = p + 1;
            }
            continue;
        }
        if (c == '&') {
            in_value = 0;
            key = p + 1;
            OUT(c);
        } else if (c == '=' && !in_value) {
            in_value = 1;
            keep = phi || paging_key(key, (size_t)(p - key));
            OUT(c);
            if (!keep) {
                OUT('*');
                OUT('*');
                OUT('*');
            }
        } else if (!in_value || keep) {
            OUT(c);
        }
    }
#undef OUT
    out[o] = '\0';
}

void dwb_log_set_sink(void (*sink)(void *ud, const char *line), void *ud)
{
    g_sink = sink;
    g_sink_ud = ud;
}

typedef struct {
    char *p;
    size_t len, cap;
} linebuf;

static void put(linebuf *b, const char *s, size_t n)
{
    if (b->len + n >= b->cap)
        n = b->cap - 1 - b->len; /* truncate a too-long line rather than allocate in the logger */
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void puts_(linebuf *b, const char *s) { put(b, s, strlen(s)); }

/* JSON string body escaping; also used for text so a hostile value cannot forge a second log line. */
static void put_escaped(linebuf *b, const char *s, int json)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        if (c == '\n') {
            puts_(b, "\\n");
        } else if (c == '\r') {
            puts_(b, "\\r");
        } else if (c == '\t') {
            puts_(b, json ? "\\t" : " ");
        } else if (json && (c == '"' || c == '\\')) {
            esc[0] = '\\';
            esc[1] = (char)c;
            put(b, esc, 2);
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            puts_(b, esc);
        } else {
            put(b, (const char *)&c, 1);
        }
    }
}

static void put_field(linebuf *b, const char *key, const char *val, int json)
{
    if (!val || !*val)
        return;
    if (json) {
        puts_(b, ",\"");
        puts_(b, key);
        puts_(b, "\":\"");
        put_escaped(b, val, 1);
        puts_(b, "\"");
    } else {
        puts_(b, " ");
        puts_(b, key);
        puts_(b, "=");
        put_escaped(b, val, 0);
    }
}

void dwb_log(dwb_log_level level, const dwb_log_ctx *ctx, const char *fmt, ...)
{
    if (!dwb_log_enabled(level))
        return;
    char msg[2048], line[4096], ts[40];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    struct timespec now;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    size_t n = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof ts - n, ".%03ldZ", now.tv_nsec / 1000000L);

    linebuf b = {line, 0, sizeof line};
    line[0] = '\0';
    int json = g_format == DWB_LOG_JSON;
    if (json) {
        puts_(&b, "{\"ts\":\"");
        puts_(&b, ts);
        puts_(&b, "\",\"level\":\"");
        puts_(&b, level_names[level]);
        puts_(&b, "\"");
        if (ctx) {
            put_field(&b, "assoc", ctx->assoc, 1);
            put_field(&b, "upstream", ctx->upstream, 1);
            put_field(&b, "request_id", ctx->request_id, 1);
            put_field(&b, "peer", ctx->peer, 1);
        }
        puts_(&b, ",\"msg\":\"");
        put_escaped(&b, msg, 1);
        /* keep room for the closing characters even when the message was truncated */
        if (b.len > b.cap - 4)
            b.len = b.cap - 4;
        b.p[b.len] = '\0';
        puts_(&b, "\"}\n");
    } else {
        puts_(&b, ts);
        puts_(&b, " ");
        puts_(&b, level_names[level]);
        puts_(&b, " ");
        put_escaped(&b, msg, 0);
        if (ctx) {
            put_field(&b, "assoc", ctx->assoc, 0);
            put_field(&b, "upstream", ctx->upstream, 0);
            put_field(&b, "req", ctx->request_id, 0);
            put_field(&b, "peer", ctx->peer, 0);
        }
        if (b.len > b.cap - 2)
            b.len = b.cap - 2;
        b.p[b.len] = '\0';
        puts_(&b, "\n");
    }
    if (g_sink) {
        g_sink(g_sink_ud, line);
        return;
    }
    /* a single write(2) keeps concurrent lines whole */
    ssize_t off = 0, len = (ssize_t)b.len;
    while (off < len) {
        ssize_t w = write(STDERR_FILENO, line + off, (size_t)(len - off));
        if (w <= 0)
            break;
        off += w;
    }
}

void dwb_log_redact_uids(const char *s, size_t n, int keep_uids, char *o, size_t cap) {
    if (!cap) return;
    size_t k = 0;
    for (size_t i = 0; i < n && k + 1 < cap;) {
        size_t j = i, dots = 0;
        while (j < n && ((s[j] >= '0' && s[j] <= '9') || s[j] == '.')) dots += s[j++] == '.';
        int glued = i > 0 && (s[i - 1] | 0x20) >= 'a' && (s[i - 1] | 0x20) <= 'z';
        const char *put = s + i;
        size_t len = j - i;
        if (!keep_uids && len >= 8 && dots >= 2 && !glued) put = "***", len = 3;
        if (len) {
            if (len > cap - 1 - k) len = cap - 1 - k;
            memcpy(o + k, put, len);
            k += len;
            i = j;
            continue;
        }
        unsigned char ch = (unsigned char)s[i++];
        o[k++] = ch < 0x20 || ch == 0x7f ? ' ' : ch >= 0x80 ? '?' : (char)ch;
    }
    o[k] = '\0';
}
