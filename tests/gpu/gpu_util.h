/* What every GPU test and benchmark draws on: a seeded xorshift source, a checked malloc, a
 * checked device buffer and a monotonic clock. Plain C: the GPU machine has no Criterion. The programs share one generator
 * so their random inputs stay comparable; each gives `rng` its own seed (a definition
 * `static uint64_t rng = ...;` after this header, or an assignment before the first draw). */
#ifndef PLM_TESTS_GPU_UTIL_H
#define PLM_TESTS_GPU_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "core/backend.h"

static uint64_t rng;

static inline float frand(void) /* uniform in [-1, 1) */
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 40) * (1.0 / 8388608.0)) - 1.0f;
}

static inline void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of host memory\n");
        exit(2);
    }
    return p;
}

/* A buffer of `bytes` on be, holding host's bytes where host is not NULL; exits 2 when be
 * cannot allocate it. */
static inline void *dev_from(plm_backend *be, const void *host, size_t bytes)
{
    void *d = be->ops->alloc(be, bytes);
    if (!d) {
        fprintf(stderr, "device alloc of %zu bytes failed: %s\n", bytes,
                be->ops->alloc_error ? be->ops->alloc_error(be) : "?");
        exit(2);
    }
    if (host && bytes) be->ops->upload(be, d, host, bytes);
    return d;
}

static inline double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

#endif
