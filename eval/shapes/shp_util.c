/* Error messages and a growable text buffer with a JSON string writer. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shapes.h"

plm_status shp_fail(plm_error *err, plm_status st, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return st;
}

static plm_status reserve(shp_buf *b, size_t extra)
{
    if (extra > SIZE_MAX / 2 - b->len) return PLM_E_NOMEM;
    size_t need = b->len + extra + 1;
    if (need <= b->cap) return PLM_OK;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return PLM_E_NOMEM;
    b->p = p;
    b->cap = cap;
    return PLM_OK;
}

plm_status shp_buf_put(shp_buf *b, const char *s, size_t n)
{
    if (reserve(b, n) != PLM_OK) return PLM_E_NOMEM;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return PLM_OK;
}

plm_status shp_buf_puts(shp_buf *b, const char *s)
{
    return shp_buf_put(b, s, strlen(s));
}

plm_status shp_buf_printf(shp_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return PLM_E_ARG;
    if (reserve(b, (size_t)n) != PLM_OK) return PLM_E_NOMEM;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return PLM_OK;
}

plm_status shp_buf_json_str(shp_buf *b, const char *s)
{
    if (reserve(b, 2 * strlen(s) + 2) != PLM_OK) return PLM_E_NOMEM;
    PLM_TRY_SHP(shp_buf_put(b, "\"", 1));
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        const char *esc = NULL;
        char u[8];
        switch (*p) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        default:
            if (*p < 0x20) {
                snprintf(u, sizeof u, "\\u%04x", *p);
                esc = u;
            }
        }
        if (esc)
            PLM_TRY_SHP(shp_buf_puts(b, esc));
        else
            PLM_TRY_SHP(shp_buf_put(b, (const char *)p, 1));
    }
    return shp_buf_put(b, "\"", 1);
}

void shp_buf_free(shp_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}
