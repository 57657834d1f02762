/* What the GPU programs that check CUDA ops against the CPU backend share (test_cuda_ops,
 * test_cuda_decode): the two backends, the PASS/FAIL tally, random inputs, NaN-poisoned device
 * buffers and 16-bit weights made from float values. Plain C: the GPU machine has no Criterion.
 * A program calls cuda_check_begin() first and returns cuda_check_end(); its rng gets its own
 * seed (see gpu_util.h), and each check reseeds it through seed(). */
#ifndef PLM_TESTS_GPU_CUDA_CHECK_H
#define PLM_TESTS_GPU_CUDA_CHECK_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "core/dtype.h"
#include "tests/gpu/gpu_util.h"
#include "tests/support/compare.h"

static plm_backend *cpu, *gpu;
static int n_pass, n_fail;

static inline void seed(uint64_t s)
{
    rng = s * 0x9e3779b97f4a7c15ull + 1;
}

static inline float *rand_vec(size_t n, float scale, float offset)
{
    float *v = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) v[i] = offset + scale * frand();
    return v;
}

static inline void result(int ok, const char *name, double err, double tol, const char *why)
{
    if (ok) {
        n_pass++;
        printf("PASS %s err=%.3g (tol %.0e)\n", name, err, tol);
    } else {
        n_fail++;
        printf("FAIL %s err=%.3g (tol %.0e)%s%s\n", name, err, tol, why ? ": " : "",
               why ? why : "");
    }
    fflush(stdout);
}

/* Compares got with want; NaN/inf where want is finite (an unwritten element) always fails. */
static inline void check(plm_backend *g, const char *name, const float *got, const float *want,
                         size_t n, double tol)
{
    const char *e = g->ops->error ? g->ops->error(g) : NULL;
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        if (!isfinite(got[i]) && isfinite(want[i])) bad++;
    double err = rel_l2(got, want, n);
    char why[256] = "";
    if (e) snprintf(why, sizeof why, "backend error: %s", e);
    else if (bad) snprintf(why, sizeof why, "%zu of %zu elements not finite (unwritten?)", bad, n);
    result(!e && !bad && err <= tol, name, err, tol, why[0] ? why : NULL);
}

/* A device buffer of n floats, all NaN. */
static inline float *dev_nan(plm_backend *g, size_t n)
{
    float *h = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) h[i] = NAN;
    float *d = dev_from(g, h, n * sizeof(float));
    free(h);
    return d;
}

static inline float *fetch(plm_backend *g, const float *d, size_t n)
{
    float *h = xmalloc(n * sizeof(float));
    g->ops->download(g, h, d, n * sizeof(float));
    return h;
}

static inline uint16_t to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16); /* nearest even; test data only */
}

/* Nearest-even float -> half for normal values; tiny values flush to zero (test data only). */
static inline uint16_t to_f16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    int32_t exp = (int32_t)((u >> 23) & 0xff) - 127 + 15;
    uint32_t man = u & 0x7fffffu;
    if (exp <= 0) return sign;
    if (exp >= 31) return (uint16_t)(sign | 0x7c00u);
    uint32_t h = ((uint32_t)exp << 10) | (man >> 13), rest = man & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h++;
    return (uint16_t)(sign | h);
}

/* Host weights in dtype dt from float values. */
static inline void *to_dtype(const float *v, size_t n, plm_dtype dt)
{
    if (dt == PLM_F32) {
        float *o = xmalloc(n * 4);
        memcpy(o, v, n * 4);
        return o;
    }
    uint16_t *o = xmalloc(n * 2);
    for (size_t i = 0; i < n; i++) o[i] = dt == PLM_BF16 ? to_bf16(v[i]) : to_f16(v[i]);
    return o;
}

/* Makes cpu and gpu (device 0). Returns 0, or 1 after printing a FAIL line and a tally. */
static inline int cuda_check_begin(void)
{
    char why[256];
    if (!plm_cuda_available(why, sizeof why)) {
        printf("FAIL cuda_available: %s\n0 passed, 1 failed\n", why);
        return 1;
    }
    printf("cuda: %s\n", why);
    plm_error err;
    if (plm_backend_cpu_new(0, &cpu, &err) != PLM_OK ||
        plm_backend_cuda_new(0, &gpu, &err) != PLM_OK) {
        printf("FAIL backend_new: %s\n0 passed, 1 failed\n", err.msg);
        return 1;
    }
    return 0;
}

/* Frees both backends and prints "N passed, M failed" (run.sh reads it). Returns the exit
 * status: 1 on any failure. */
static inline int cuda_check_end(void)
{
    plm_backend_free(gpu);
    plm_backend_free(cpu);
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}

#endif
