#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

void plm_log(const plm_logger *lg, plm_log_level lvl, const char *fmt, ...)
{
    if (!lg || !lg->fn || lvl > lg->max) return;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof buf) {
        lg->fn(lvl, buf, lg->user);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        lg->fn(lvl, buf, lg->user);
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    lg->fn(lvl, big, lg->user);
    free(big);
}
