#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *plm_status_str(plm_status s)
{
    switch (s) {
    case PLM_OK: return "ok";
    case PLM_E_IO: return "I/O error";
    case PLM_E_FORMAT: return "format error";
    case PLM_E_MISSING: return "missing";
    case PLM_E_SHAPE: return "shape error";
    case PLM_E_UNSUPPORTED: return "unsupported";
    case PLM_E_LIMIT: return "over limit";
    case PLM_E_NOMEM: return "out of memory";
    case PLM_E_ARG: return "invalid argument";
    case PLM_E_DEVICE: return "device error";
    case PLM_E_CANCELLED: return "cancelled";
    }
    return "unknown status";
}

plm_status plm_fail(plm_error *err, plm_status status, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return status;
}

plm_status plm_fail_prefix(plm_error *err, plm_status status, const char *fmt, ...)
{
    if (err) {
        char old[sizeof err->msg];
        memcpy(old, err->msg, sizeof old);
        old[sizeof old - 1] = '\0';
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < sizeof err->msg)
            snprintf(err->msg + n, sizeof err->msg - (size_t)n, "%s", old);
    }
    return status;
}

int plm_mul_ok(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > SIZE_MAX / a) return 0;
    *out = a * b;
    return 1;
}

int plm_add_ok(size_t a, size_t b, size_t *out)
{
    if (b > SIZE_MAX - a) return 0;
    *out = a + b;
    return 1;
}
