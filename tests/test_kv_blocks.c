/* FlexPrefill's primitives (prune/kv_blocks.c), its policy (prune/kv_flexprefill.c) and the CPU
 * backend's attention_blocks op (core/backend_cpu_blocks.c). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "prune/kv.h"
#include "prune/kv_blocks.h"
#include "tests/support/compare.h"

static uint64_t rng = 7;
static float frand(void) /* uniform in [-1, 1) */
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng >> 40) / (double)(1ull << 24)) * 2.0f - 1.0f;
}

static float *rand_buf(size_t n, float scale)
{
    float *p = malloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++) p[i] = scale * frand();
    return p;
}

static plm_backend *cpu(void)
{
    plm_backend *be;
    plm_error err;
    cr_assert_eq(plm_backend_cpu_new(1, &be, &err), PLM_OK, "%s", err.msg);
    return be;
}

Test(kv_blocks, js_divergence_by_hand)
{
    const float a[2] = {1, 0}, b[2] = {0, 1}, c[2] = {0.5f, 0.5f};
    cr_assert_float_eq(kv_js_divergence(a, b, 2), log(2.0), 1e-12);
    cr_assert_float_eq(kv_js_divergence(a, a, 2), 0.0, 1e-12);
    /* m = (0.75, 0.25): 0.5 (0.5 ln(0.5/0.75) + 0.5 ln(0.5/0.25)) + 0.5 (1 ln(1/0.75)) */
    const double want = 0.5 * (0.5 * log(0.5 / 0.75) + 0.5 * log(2.0)) + 0.5 * log(1 / 0.75);
    cr_assert_float_eq(kv_js_divergence(c, a, 2), want, 1e-9);
    cr_assert_float_eq(kv_js_divergence(a, c, 2), want, 1e-9, "symmetric");
}

Test(kv_blocks, cover_count_takes_the_fewest_largest)
{
    const float x[5] = {0.1f, 0.5f, 0.05f, 0.3f, 0.05f};
    int32_t order[5];
    cr_assert_eq(kv_cover_count(x, 5, 0.8, order), 2);
    cr_assert(order[0] == 1 && order[1] == 3);
    cr_assert_eq(kv_cover_count(x, 5, 0.81, order), 3);
    cr_assert_eq(order[2], 0);
    cr_assert_eq(kv_cover_count(x, 5, 1.0, NULL), 5);
    cr_assert_eq(kv_cover_count(x, 5, 0.0, NULL), 1, "at least one");
    /* On random weights: the chosen k reach gamma and k - 1 of the largest do not. */
    float *y = rand_buf(300, 1);
    for (int i = 0; i < 300; i++) y[i] = y[i] * y[i];
    double total = 0;
    for (int i = 0; i < 300; i++) total += y[i];
    int32_t o[300];
    const int64_t k = kv_cover_count(y, 300, 0.9, o);
    double run = 0;
    for (int64_t i = 0; i < k; i++) run += y[o[i]];
    cr_assert_geq(run, 0.9 * total - 1e-9);
    cr_assert_lt(run - y[o[k - 1]], 0.9 * total);
    for (int64_t i = 1; i < 300; i++) cr_assert_geq(y[o[i - 1]], y[o[i]]);
    free(y);
}

Test(kv_blocks, pool_rows_averages_the_short_last_group)
{
    const float x[5 * 2] = {1, 10, 2, 20, 3, 30, 4, 40, 5, 50};
    float out[3 * 2];
    kv_pool_rows(x, 5, 2, 2, 2, out);
    const float want[6] = {1.5f, 15, 3.5f, 35, 5, 50};
    for (int i = 0; i < 6; i++) cr_assert_float_eq(out[i], want[i], 1e-6);
}

/* Two heads over 256 tokens in blocks of 16 (head_dim 16, one kv head each).
 * Head 0, concentrated: every key of block 3 is A*u and every query is A*u, so both the true
 * attention of the last block and its pooled estimate sit on block 3.
 * Head 1, diffuse: keys come in pairs (+v, -v) so every block's mean key is 0 (the pooled
 * estimate is uniform), while the last 16 queries each match one key spread over 8 blocks. */
enum { T = 256, B = 16, HD = 16, NB = T / B };

static void two_heads(float *q, float *k)
{
    const int qs = 2 * HD, ks = 2 * HD;
    float u[HD];
    for (int d = 0; d < HD; d++) u[d] = d == 0 ? 1.0f : 0.0f;
    for (int j = 0; j < T; j += 2)
        for (int d = 0; d < HD; d++) {
            const float v0 = 0.2f * frand(), v1 = 2.0f * frand();
            k[j * ks + d] = v0;
            k[(j + 1) * ks + d] = -v0;
            k[j * ks + HD + d] = v1;
            k[(j + 1) * ks + HD + d] = -v1;
        }
    for (int j = 3 * B; j < 4 * B; j++)
        for (int d = 0; d < HD; d++) k[j * ks + d] = 6.0f * u[d];
    for (int i = 0; i < T; i++)
        for (int d = 0; d < HD; d++) {
            q[i * qs + d] = 6.0f * u[d];
            q[i * qs + HD + d] = 0.1f * frand();
        }
    for (int r = 0; r < B; r++) { /* last block, head 1: key 32 * (r / 2) of blocks 0, 2, .. */
        const int j = 32 * (r / 2), i = T - B + r;
        for (int d = 0; d < HD; d++) q[i * qs + HD + d] = 3.0f * k[j * ks + HD + d];
    }
}

static kv_fp_shape shape2(void)
{
    return (kv_fp_shape){.n_heads = 2, .n_kv = 2, .head_dim = HD, .tq = T, .tk = T,
                         .q_stride = 2 * HD, .k_stride = 2 * HD, .scale = 0.25f, .block = B};
}

Test(kv_blocks, concentrated_head_is_query_aware_diffuse_is_vertical_slash)
{
    float *q = calloc(T * 2 * HD, sizeof *q), *k = calloc(T * 2 * HD, sizeof *k);
    float *qp = malloc(NB * 2 * HD * sizeof *qp);
    two_heads(q, k);
    kv_pool_rows(q, T, 2 * HD, 2 * HD, B, qp);
    const kv_fp_shape s = shape2();
    const kv_fp_params p = {.gamma = 0.95, .tau = 0.1, .block = B, .min_budget = B};
    uint8_t *mask = malloc(2 * NB * NB);
    kv_fp_head hs[2];
    plm_error err;
    cr_assert_eq(kv_flexprefill_mask(&s, &p, q + (T - B) * 2 * HD, qp, k, mask, hs, &err),
                 PLM_OK, "%s", err.msg);
    cr_assert_lt(hs[0].js, 0.1f, "js %g", hs[0].js);
    cr_assert_eq(hs[0].query_aware, 1);
    cr_assert_gt(hs[1].js, 0.3f, "js %g", hs[1].js);
    cr_assert_eq(hs[1].query_aware, 0);
    /* Head 0: every query block from 3 on computes block 3; head 0 needs little else. */
    for (int qb = 3; qb < NB; qb++) cr_assert(mask[qb * NB + 3], "tile (%d, 3)", qb);
    cr_assert_lt(hs[0].n_tiles, NB * (NB + 1) / 2 / 2);
    /* Both heads keep the first block and the diagonal of every query block. */
    for (int h = 0; h < 2; h++)
        for (int qb = 0; qb < NB; qb++) {
            cr_assert(mask[(h * NB + qb) * NB], "head %d tile (%d, 0)", h, qb);
            cr_assert(mask[(h * NB + qb) * NB + qb], "head %d tile (%d, %d)", h, qb, qb);
            for (int kb = qb + 1; kb < NB; kb++) cr_assert_eq(mask[(h * NB + qb) * NB + kb], 0);
        }
    free(q);
    free(k);
    free(qp);
    free(mask);
}

Test(kv_blocks, query_aware_tiles_reach_gamma_with_the_fewest)
{
    float *q = calloc(T * 2 * HD, sizeof *q), *k = calloc(T * 2 * HD, sizeof *k);
    float *qp = malloc(NB * 2 * HD * sizeof *qp), *kp = malloc(NB * 2 * HD * sizeof *kp);
    for (int i = 0; i < T * 2 * HD; i++) q[i] = 2 * frand(), k[i] = 2 * frand();
    kv_pool_rows(q, T, 2 * HD, 2 * HD, B, qp);
    kv_pool_rows(k, T, 2 * HD, 2 * HD, B, kp);
    const kv_fp_shape s = shape2();
    uint8_t mask[NB * NB] = {0};
    const int64_t n = kv_fp_query_aware(&s, 1, qp, kp, 0.9, mask);
    /* Recompute the per-row causal softmax estimates and check the chosen mass. */
    double chosen = 0, smallest = INFINITY;
    for (int qb = 0; qb < NB; qb++) {
        double e[NB], mx = -INFINITY, sum = 0;
        for (int kb = 0; kb <= qb; kb++) {
            double d = 0;
            for (int t = 0; t < HD; t++) d += (double)qp[qb * 2 * HD + HD + t] * kp[kb * 2 * HD + HD + t];
            e[kb] = 0.25 * d;
            mx = e[kb] > mx ? e[kb] : mx;
        }
        for (int kb = 0; kb <= qb; kb++) sum += (e[kb] = exp(e[kb] - mx));
        for (int kb = 0; kb <= qb; kb++)
            if (mask[qb * NB + kb]) {
                chosen += e[kb] / sum;
                smallest = fmin(smallest, e[kb] / sum);
            }
        for (int kb = qb + 1; kb < NB; kb++) cr_assert_eq(mask[qb * NB + kb], 0, "causal");
    }
    int64_t on = 0;
    for (int i = 0; i < NB * NB; i++) on += mask[i];
    cr_assert_eq(on, n);
    cr_assert_geq(chosen, 0.9 * NB - 1e-4, "mass %g of %d", chosen, NB);
    cr_assert_lt(chosen - smallest, 0.9 * NB, "one tile fewer would not reach gamma");
    free(q);
    free(k);
    free(qp);
    free(kp);
}

Test(kv_blocks, short_prompts_run_dense_and_bad_shapes_are_refused)
{
    const kv_fp_shape s = {.n_heads = 2, .n_kv = 2, .head_dim = 4, .tq = 32, .tk = 32,
                           .q_stride = 8, .k_stride = 8, .scale = 0.5f, .block = 16};
    const kv_fp_params p = {.gamma = 0.9, .tau = 0.1, .block = 16, .min_budget = 1};
    float *q = rand_buf(32 * 8, 1), *k = rand_buf(32 * 8, 1), qp[2 * 8] = {0};
    uint8_t mask[2 * 2 * 2];
    plm_error err;
    cr_assert_eq(kv_flexprefill_mask(&s, &p, q + 16 * 8, qp, k, mask, NULL, &err), PLM_OK);
    const uint8_t want[8] = {1, 0, 1, 1, 1, 0, 1, 1};
    cr_assert_arr_eq(mask, want, 8);
    kv_fp_shape bad = s;
    bad.n_kv = 3;
    cr_assert_eq(kv_flexprefill_mask(&bad, &p, q, qp, k, mask, NULL, &err), PLM_E_ARG);
    cr_assert_str_eq(err.msg, "flexprefill: bad shape (block 16, 2 heads, 3 kv heads, "
                     "head_dim 4, 32 queries, 32 keys)");
    free(q);
    free(k);
}

static plm_attn_args args(int64_t tq, int64_t tk, int nh, int nkv, int hd, float **q, float **k,
                          float **v)
{
    *q = rand_buf((size_t)tq * nh * hd, 1.5f);
    *k = rand_buf((size_t)tk * nkv * hd, 1.5f);
    *v = rand_buf((size_t)tk * nkv * hd, 1);
    return (plm_attn_args){.q = *q, .k = *k, .v = *v, .tq = tq, .tk = tk,
                           .q_stride = (int64_t)nh * hd, .kv_stride = (int64_t)nkv * hd,
                           .q_pos0 = tk - tq, .n_heads = nh, .n_kv = nkv, .head_dim = hd,
                           .causal = 1, .scale = 1.0f / sqrtf((float)hd)};
}

static void all_ones_equals_dense(int64_t tq, int64_t tk, int nh, int nkv, int hd, int block)
{
    plm_backend *be = cpu();
    float *q, *k, *v;
    plm_attn_args a = args(tq, tk, nh, nkv, hd, &q, &k, &v);
    const size_t n = (size_t)tq * nh * hd;
    float *dense = malloc(n * sizeof *dense), *sparse = malloc(n * sizeof *sparse);
    const size_t nm = (size_t)nh * ((tq + block - 1) / block) * ((tk + block - 1) / block);
    uint8_t *mask = malloc(nm);
    memset(mask, 1, nm);
    a.out = dense;
    be->ops->attention(be, &a);
    a.out = sparse;
    cr_assert_not_null(be->ops->attention_blocks);
    be->ops->attention_blocks(be, &a, mask, block);
    cr_assert_eq(memcmp(dense, sparse, n * sizeof *dense), 0, "tq %lld tk %lld block %d",
                 (long long)tq, (long long)tk, block);
    free(q), free(k), free(v), free(dense), free(sparse), free(mask);
    plm_backend_free(be);
}

Test(kv_blocks, cpu_op_with_all_tiles_equals_dense_attention)
{
    all_ones_equals_dense(77, 77, 6, 2, 20, 16);
    all_ones_equals_dense(37, 100, 4, 1, 12, 7);  /* q_pos0 = 63, a block that is no power of 2 */
    all_ones_equals_dense(1, 50, 2, 2, 8, 16);    /* one decode query */
}

Test(kv_blocks, cpu_op_with_a_partial_mask_equals_the_masked_reference)
{
    const int64_t tq = 70, tk = 90;
    const int nh = 4, nkv = 2, hd = 12, block = 8;
    const int64_t nqb = (tq + block - 1) / block, nkb = (tk + block - 1) / block;
    plm_backend *be = cpu();
    float *q, *k, *v;
    plm_attn_args a = args(tq, tk, nh, nkv, hd, &q, &k, &v);
    uint8_t *mask = malloc((size_t)nh * nqb * nkb);
    for (int64_t i = 0; i < nh * nqb * nkb; i++) mask[i] = frand() > 0;
    memset(mask + nkb * 2, 0, (size_t)nkb); /* head 0, query block 2: no key at all */
    float *got = malloc((size_t)tq * nh * hd * sizeof *got);
    float *want = malloc((size_t)tq * nh * hd * sizeof *want);
    a.out = got;
    be->ops->attention_blocks(be, &a, mask, block);
    for (int64_t i = 0; i < tq; i++)
        for (int h = 0; h < nh; h++) {
            const int kh = h / (nh / nkv);
            double s[90], mx = -INFINITY, sum = 0;
            for (int64_t j = 0; j <= a.q_pos0 + i; j++) {
                s[j] = -INFINITY;
                if (!mask[(h * nqb + i / block) * nkb + j / block]) continue;
                double d = 0;
                for (int t = 0; t < hd; t++) d += (double)q[i * nh * hd + h * hd + t] * k[j * nkv * hd + kh * hd + t];
                s[j] = d * a.scale;
                mx = fmax(mx, s[j]);
            }
            for (int64_t j = 0; j <= a.q_pos0 + i; j++) sum += (s[j] = isinf(s[j]) ? 0 : exp(s[j] - mx));
            for (int t = 0; t < hd; t++) {
                double o = 0;
                for (int64_t j = 0; j <= a.q_pos0 + i; j++) o += s[j] * v[j * nkv * hd + kh * hd + t];
                want[(i * nh + h) * hd + t] = sum > 0 ? (float)(o / sum) : 0.0f;
            }
        }
    cr_assert_lt(max_abs_diff(got, want, (size_t)tq * nh * hd), 1e-5);
    for (int64_t i = 16; i < 24; i++)
        for (int t = 0; t < hd; t++) cr_assert_eq(got[i * nh * hd + t], 0.0f, "masked row is zero");
    free(q), free(k), free(v), free(mask), free(got), free(want);
    plm_backend_free(be);
}

Test(kv_blocks, policy_parses_its_keys_and_decides_a_mask)
{
    kv_policy p = {.ops = &kv_flexprefill_ops, .c = {.sink = -1, .recent = -1, .window = -1}};
    prune_spec s;
    plm_error err;
    snprintf(p.spec, sizeof p.spec, "flexprefill:gamma=0.9,block=16,min_budget=16");
    cr_assert_eq(prune_spec_parse(p.spec, &s, &err), PLM_OK, "%s", err.msg);
    cr_assert_eq(p.ops->parse(&p, &s, &err), PLM_OK, "%s", err.msg);
    cr_assert_eq(prune_spec_check_unused(&s, &err), PLM_OK, "%s", err.msg);
    const kv_shape sh = {.n_layers = 1, .n_heads = 2, .n_kv = 2, .head_dim = HD, .n_prompt = T,
                         .cap = T};
    p.shape = sh;
    cr_assert_eq(p.ops->begin(&p, &sh, &err), PLM_OK, "%s", err.msg);
    float *q = calloc(T * 2 * HD, sizeof *q), *k = calloc(T * 2 * HD, sizeof *k);
    float *qp = malloc(NB * 2 * HD * sizeof *qp);
    two_heads(q, k);
    kv_pool_rows(q, T, 2 * HD, 2 * HD, B, qp);
    const uint8_t *mask;
    int block;
    cr_assert_eq(kv_flexprefill_decide(&p, q + (T - B) * 2 * HD, qp, k, T, T, &mask, &block,
                                       &err), PLM_OK, "%s", err.msg);
    cr_assert_eq(block, 16);
    const double dens = kv_blocks_density(mask, 2, T, T, B);
    cr_assert(dens > 0 && dens < 0.6, "density %g", dens);
    cr_assert_eq(kv_flexprefill_decide(&p, q, qp, k, T, 2 * T, &mask, &block, &err), PLM_E_ARG);
    cr_assert_str_eq(err.msg, "flexprefill: 256 queries over 512 keys do not fit the 256-token "
                     "prompt");
    p.ops->destroy(&p);

    kv_policy p2 = {.ops = &kv_flexprefill_ops, .c = {.budget = 64, .sink = -1, .recent = -1}};
    snprintf(p2.spec, sizeof p2.spec, "flexprefill:budget=64");
    cr_assert_eq(p2.ops->parse(&p2, &s, &err), PLM_E_ARG);
    cr_assert_str_eq(err.msg, "kv spec 'flexprefill:budget=64': flexprefill evicts nothing; it "
                     "takes gamma, tau, block, min_budget and max_budget, not budget/ratio/sink/"
                     "recent");
    free(q), free(k), free(qp);
}
