#include "dwb_status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *dwb_status_str(dwb_status st)
{
    switch (st) {
    case DWB_OK: return "ok";
    case DWB_E_INVALID: return "invalid";
    case DWB_E_NOMEM: return "out of memory";
    case DWB_E_IO: return "i/o error";
    case DWB_E_CONNECT: return "connection error";
    case DWB_E_TIMEOUT: return "timeout";
    case DWB_E_HTTP: return "http error";
    case DWB_E_PARSE: return "parse error";
    case DWB_E_NOT_FOUND: return "not found";
    case DWB_E_REFUSED: return "refused";
    case DWB_E_CANCELLED: return "cancelled";
    case DWB_E_LIMIT: return "limit exceeded";
    case DWB_E_UNSUPPORTED: return "unsupported";
    case DWB_E_AUTH: return "authentication error";
    case DWB_E_INTERNAL: return "internal error";
    }
    return "unknown";
}

dwb_status dwb_error_set(dwb_error *err, dwb_status st, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        err->status = st;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return st;
}

dwb_status dwb_error_prefix(dwb_error *err, const char *fmt, ...)
{
    if (!err)
        return DWB_E_INTERNAL;
    char prefix[256], old[sizeof err->message];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->message, sizeof old);
    /* Truncation is acceptable here: the message buffer bounds what a log line shows. */
    size_t n = strlen(prefix);
    if (n > sizeof err->message - 3)
        n = sizeof err->message - 3;
    memcpy(err->message, prefix, n);
    memcpy(err->message + n, ": ", 2);
    size_t rest = sizeof err->message - n - 3;
    size_t olen = strnlen(old, rest);
    memcpy(err->message + n + 2, old, olen);
    err->message[n + 2 + olen] = '\0';
    if (err->status == DWB_OK)
        err->status = DWB_E_INTERNAL;
    return err->status;
}

void dwb_error_clear(dwb_error *err)
{
    if (err) {
        err->status = DWB_OK;
        err->http_code = 0;
        err->message[0] = '\0';
    }
}
