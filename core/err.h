/* Status + message plumbing shared by every module.
 * Internal functions that can fail take a plm_error *err (may be NULL) and return plm_status;
 * on failure they fill err->msg with a sentence naming the input and the problem, e.g.
 * "model.safetensors: tensor 'x' ends at byte 9000, past the file's 4096 bytes". */
#ifndef PLM_CORE_ERR_H
#define PLM_CORE_ERR_H

#include "prunelm.h"

#if defined(__GNUC__)
#define PLM_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define PLM_PRINTF(a, b)
#endif

/* Formats the message into err (when non-NULL) and returns status, so callers can write
 * `return plm_fail(err, PLM_E_FORMAT, "%s: ...", path);`. */
plm_status plm_fail(plm_error *err, plm_status status, const char *fmt, ...) PLM_PRINTF(3, 4);

/* Prefixes an existing message with context ("loading vision tower: " + old message). */
plm_status plm_fail_prefix(plm_error *err, plm_status status, const char *fmt, ...)
    PLM_PRINTF(3, 4);

/* Checked size arithmetic for sizes that come from files: returns 0 on overflow. */
int plm_mul_ok(size_t a, size_t b, size_t *out);
int plm_add_ok(size_t a, size_t b, size_t *out);

#define PLM_TRY(expr)                                                                              \
    do {                                                                                           \
        plm_status plm_try_st_ = (expr);                                                           \
        if (plm_try_st_ != PLM_OK) return plm_try_st_;                                             \
    } while (0)

#endif
