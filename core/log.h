/* The library's logger: a callback with a level threshold, silent unless a callback is set. */
#ifndef PLM_CORE_LOG_H
#define PLM_CORE_LOG_H

#include "core/err.h"

typedef struct plm_logger {
    plm_log_fn fn;      /* NULL: silent */
    void *user;
    plm_log_level max;  /* messages above this level are dropped */
} plm_logger;

/* Formats the message and hands it to lg->fn; a no-op when lg or lg->fn is NULL or lvl is above
 * lg->max. Messages of any length are delivered whole unless memory runs out, in which case a
 * truncated one is sent. */
void plm_log(const plm_logger *lg, plm_log_level lvl, const char *fmt, ...) PLM_PRINTF(3, 4);

#endif
