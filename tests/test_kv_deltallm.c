/* DeltaLLM: the delta-network tracking and direct reference (prune/kv_deltallm.c), the policy's
 * keys, and the CPU backend's attention_delta op (core/backend_cpu_delta.c), which computes the
 * same thing by sparse incremental updates. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "prune/kv.h"
#include "prune/kv_deltallm.h"
#include "tests/support/compare.h"

static uint64_t rng = 11;
static float frand(void)
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng >> 40) / (double)(1ull << 24)) * 2.0f - 1.0f;
}

static plm_backend *cpu(void)
{
    plm_backend *be;
    plm_error err;
    cr_assert_eq(plm_backend_cpu_new(1, &be, &err), PLM_OK, "%s", err.msg);
    return be;
}

static void fill_inf(float *s, size_t n)
{
    for (size_t i = 0; i < n; i++) s[i] = INFINITY;
}

Test(kv_deltallm, tracking_by_hand)
{
    const float q[4 * 2] = {0, 0, 0.3f, 1.0f, 0.6f, 1.2f, 1.2f, 1.2f};
    float st[2], ref[4 * 2];
    fill_inf(st, 2);
    cr_assert_eq(kv_delta_track(q, 4, 2, 1, 2, 0.5f, st, ref), 5);
    const float want[8] = {0, 0, 0, 1.0f, 0.6f, 1.0f, 1.2f, 1.0f};
    cr_assert_arr_eq(ref, want, sizeof want);
    cr_assert(st[0] == 1.2f && st[1] == 1.0f);
}

/* Queries that drift slowly (a random walk), as consecutive tokens' queries do in the paper's
 * observation; keys and values random. */
static plm_attn_args make(int64_t tq, int64_t tk, int nh, int nkv, int hd, float **q, float **k,
                          float **v)
{
    const int64_t w = (int64_t)nh * hd;
    *q = malloc((size_t)(tq * w) * sizeof **q);
    *k = malloc((size_t)(tk * nkv * hd) * sizeof **k);
    *v = malloc((size_t)(tk * nkv * hd) * sizeof **v);
    for (int64_t e = 0; e < w; e++) (*q)[e] = frand();
    for (int64_t i = 1; i < tq; i++)
        for (int64_t e = 0; e < w; e++) (*q)[i * w + e] = (*q)[(i - 1) * w + e] + 0.15f * frand();
    for (int64_t i = 0; i < tk * nkv * hd; i++) (*k)[i] = frand(), (*v)[i] = frand();
    return (plm_attn_args){.q = *q, .k = *k, .v = *v, .tq = tq, .tk = tk, .q_stride = w,
                           .kv_stride = (int64_t)nkv * hd, .q_pos0 = tk - tq, .n_heads = nh,
                           .n_kv = nkv, .head_dim = hd, .causal = 1,
                           .scale = 1.0f / sqrtf((float)hd)};
}

Test(kv_deltallm, a_window_over_every_key_is_dense_attention_exactly)
{
    plm_backend *be = cpu();
    float *q, *k, *v;
    plm_attn_args a = make(45, 60, 6, 2, 20, &q, &k, &v);
    const size_t n = 45 * 6 * 20;
    float *dense = malloc(n * sizeof *dense), *got = malloc(n * sizeof *got);
    float *ref = malloc(n * sizeof *ref), st[6 * 20];
    fill_inf(st, 6 * 20);
    a.out = dense;
    be->ops->attention(be, &a);
    a.out = got;
    cr_assert_not_null(be->ops->attention_delta);
    be->ops->attention_delta(be, &a, st, ref, 60, 0.3f);
    cr_assert_eq(memcmp(dense, got, n * sizeof *got), 0);
    free(q), free(k), free(v), free(dense), free(got), free(ref);
    plm_backend_free(be);
}

Test(kv_deltallm, theta_zero_is_dense_attention)
{
    plm_backend *be = cpu();
    float *q, *k, *v;
    plm_attn_args a = make(50, 50, 4, 4, 16, &q, &k, &v);
    const size_t n = 50 * 4 * 16;
    float *dense = malloc(n * sizeof *dense), *got = malloc(n * sizeof *got);
    float *ref = malloc(n * sizeof *ref), st[4 * 16];
    fill_inf(st, 4 * 16);
    a.out = dense;
    be->ops->attention(be, &a);
    a.out = got;
    be->ops->attention_delta(be, &a, st, ref, 3, 0.0f);
    cr_assert_lt(max_abs_diff(got, dense, n), 2e-6);
    free(q), free(k), free(v), free(dense), free(got), free(ref);
    plm_backend_free(be);
}

/* The op (sparse incremental scores) against the direct double reference, in one call and
 * split into a prefill and decode steps that carry the state. */
Test(kv_deltallm, cpu_op_matches_the_reference_across_calls)
{
    const int64_t T = 61, W = 5;
    const int nh = 4, nkv = 2, hd = 12;
    const size_t w = (size_t)nh * hd, n = (size_t)T * w;
    plm_backend *be = cpu();
    float *q, *k, *v;
    plm_attn_args a = make(T, T, nh, nkv, hd, &q, &k, &v);
    float *want = malloc(n * sizeof *want), *got = malloc(n * sizeof *got);
    float *ref = malloc(n * sizeof *ref), *ref2 = malloc(n * sizeof *ref2);
    float st[48], st2[48];
    fill_inf(st, w);
    const int64_t sent = kv_delta_track(q, T, w, nh, hd, 0.2f, st, ref);
    const double sparsity = 1.0 - (double)sent / (double)n;
    cr_assert(sparsity > 0.3 && sparsity < 0.95, "sparsity %g", sparsity);
    a.out = want;
    kv_deltallm_attention(&a, ref, W);
    /* one call */
    fill_inf(st2, w);
    a.out = got;
    be->ops->attention_delta(be, &a, st2, ref2, W, 0.2f);
    cr_assert_arr_eq(ref2, ref, n * sizeof *ref);
    cr_assert_lt(max_abs_diff(got, want, n), 1e-5);
    cr_assert_arr_eq(st2, st, w * sizeof *st);
    /* a 40-query prefill, then 21 one-query decode steps */
    fill_inf(st2, w);
    memset(got, 0, n * sizeof *got);
    for (int64_t i0 = 0; i0 < T; i0 = i0 < 40 ? 40 : i0 + 1) {
        plm_attn_args b = a;
        b.tq = i0 < 40 ? 40 : 1;
        b.tk = i0 + b.tq;
        b.q_pos0 = i0;
        b.q = q + i0 * (int64_t)w;
        b.out = got + i0 * (int64_t)w;
        be->ops->attention_delta(be, &b, st2, ref2 + i0 * (int64_t)w, W, 0.2f);
    }
    cr_assert_arr_eq(ref2, ref, n * sizeof *ref);
    cr_assert_lt(max_abs_diff(got, want, n), 1e-5);
    /* and the approximation is not the dense result */
    float *dense = malloc(n * sizeof *dense);
    a.out = dense;
    be->ops->attention(be, &a);
    cr_assert_gt(max_abs_diff(dense, want, n), 1e-3);
    free(q), free(k), free(v), free(want), free(got), free(ref), free(ref2), free(dense);
    plm_backend_free(be);
}

Test(kv_deltallm, calibration_reaches_the_target_sparsity)
{
    float *q, *k, *v;
    make(200, 200, 2, 1, 16, &q, &k, &v);
    const float th = kv_deltallm_calibrate(q, 200, 32, 2, 16, 0.6);
    cr_assert_gt(th, 0);
    float st[32];
    fill_inf(st, 32);
    const double sp = 1 - kv_delta_track(q, 200, 32, 2, 16, th, st, NULL) / 6400.0;
    fill_inf(st, 32);
    const double below = 1 - kv_delta_track(q, 200, 32, 2, 16, th * 0.98f, st, NULL) / 6400.0;
    cr_assert_geq(sp, 0.6, "sparsity %g at theta %g", sp, th);
    cr_assert_lt(below, 0.6 + 0.01, "sparsity %g just below theta %g", below, th);
    free(q), free(k), free(v);
}

Test(kv_deltallm, policy_keys)
{
    kv_policy p = {.ops = &kv_deltallm_ops, .c = {.sink = -1, .recent = -1, .window = -1}};
    prune_spec s;
    plm_error err;
    snprintf(p.spec, sizeof p.spec, "deltallm:local=64,theta=0.25");
    cr_assert_eq(prune_spec_parse(p.spec, &s, &err), PLM_OK, "%s", err.msg);
    cr_assert_eq(p.ops->parse(&p, &s, &err), PLM_OK, "%s", err.msg);
    cr_assert_eq(prune_spec_check_unused(&s, &err), PLM_OK, "%s", err.msg);
    int64_t w;
    float th;
    double sp;
    kv_deltallm_params(&p, &w, &th, &sp);
    cr_assert(w == 64 && th == 0.25f && sp == 0.6);
    kv_plan plan = {0};
    const kv_view view = {.prefill = 1, .len = 8, .n_new = 8};
    cr_assert_eq(p.ops->plan(&p, &view, &plan, &err), PLM_OK);
    cr_assert_eq(plan.n_keep, -1, "nothing is evicted");
    p.ops->destroy(&p);

    kv_policy p2 = {.ops = &kv_deltallm_ops, .c = {.sink = 4, .recent = -1, .window = -1}};
    snprintf(p2.spec, sizeof p2.spec, "deltallm:sink=4");
    cr_assert_eq(p2.ops->parse(&p2, &s, &err), PLM_E_ARG);
    cr_assert_str_eq(err.msg, "kv spec 'deltallm:sink=4': deltallm evicts nothing; it takes "
                     "local, theta and sparsity, not budget/ratio/sink/recent");
}
