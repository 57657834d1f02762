/* Helpers shared by the KV store tests on the CPU (tests/test_kv_int4.c, test_kv_think.c,
 * test_kv_bitmap.c): a seeded random source, a one-thread CPU backend and the attention
 * arguments of a causal pass over a whole cache. Criterion only (failures are cr_assert). */
#ifndef PLM_TESTS_KV_STORE_H
#define PLM_TESTS_KV_STORE_H

#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "core/backend.h"

static uint64_t rng; /* each test seeds it */

static inline float frand(void) /* uniform in [-1, 1) */
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 40) * (1.0 / 8388608.0)) - 1.0f;
}

static inline float *rand_vec(size_t n)
{
    float *v = malloc(n * sizeof *v);
    cr_assert(v);
    for (size_t i = 0; i < n; i++) v[i] = frand();
    return v;
}

static inline plm_backend *cpu_backend(void)
{
    plm_backend *be;
    plm_error err;
    cr_assert_eq(plm_backend_cpu_new(1, &be, &err), PLM_OK);
    return be;
}

/* Causal attention of the last tq of tk rows: q [tq x n_heads*hd], k and v [tk x n_kv*hd]. */
static inline plm_attn_args args(float *out, const float *q, const float *k, const float *v,
                                 int64_t tq, int64_t tk, int n_heads, int n_kv, int hd)
{
    plm_attn_args a = {0};
    a.out = out;
    a.q = q;
    a.k = k;
    a.v = v;
    a.tq = tq;
    a.tk = tk;
    a.q_stride = (int64_t)n_heads * hd;
    a.kv_stride = (int64_t)n_kv * hd;
    a.q_pos0 = tk - tq;
    a.n_heads = n_heads;
    a.n_kv = n_kv;
    a.head_dim = hd;
    a.causal = 1;
    a.scale = 1.0f / sqrtf((float)hd);
    return a;
}

#endif
