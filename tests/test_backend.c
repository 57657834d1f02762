/* The CPU backend against naive double-precision references on random inputs. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "tests/support/compare.h"

static uint64_t rng_state = 1;
static float frand(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng_state >> 40) / (double)(1ull << 24)) * 2.0f - 1.0f;
}

static float *rand_buf(size_t n)
{
    float *p = malloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++) p[i] = frand();
    return p;
}

static plm_backend *cpu(void)
{
    plm_backend *be;
    plm_error err;
    cr_assert_eq(plm_backend_cpu_new(2, &be, &err), PLM_OK, "%s", err.msg);
    return be;
}

static uint16_t to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

static void check_matmul(plm_dtype dt, int64_t m, int64_t n, int64_t k, int bias)
{
    plm_backend *be = cpu();
    float *x = rand_buf((size_t)(m * k)), *wf = rand_buf((size_t)(n * k)), *b = rand_buf((size_t)n);
    uint16_t *wh = malloc((size_t)(n * k) * 2);
    for (int64_t i = 0; i < n * k; i++) {
        if (dt == PLM_BF16) {
            wh[i] = to_bf16(wf[i]);
            wf[i] = plm_bf16_to_f32(wh[i]);
        } else if (dt == PLM_F16) {
            /* values representable in f16: multiples of 2^-10 in [-1, 1] */
            int q = (int)lrintf(wf[i] * 1024);
            wf[i] = q / 1024.0f;
            /* encode: sign, exponent, mantissa via the float's bits */
            float a = fabsf(wf[i]);
            uint16_t h = 0;
            if (a != 0) {
                int e;
                float mant = frexpf(a, &e); /* a = mant * 2^e, mant in [0.5, 1) */
                int exp = e - 1 + 15;
                uint16_t man = (uint16_t)lrintf((mant * 2 - 1) * 1024);
                h = (uint16_t)((exp << 10) | man);
            }
            wh[i] = (uint16_t)(h | (wf[i] < 0 ? 0x8000 : 0));
            cr_assert_eq(plm_f16_to_f32(wh[i]), wf[i]);
        }
    }
    plm_weight w = {dt, n, k, dt == PLM_F32 ? (const void *)wf : (const void *)wh};
    float *y = malloc((size_t)(m * n) * sizeof *y), *ref = malloc((size_t)(m * n) * sizeof *ref);
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            double s = bias ? b[j] : 0;
            for (int64_t l = 0; l < k; l++) s += (double)x[i * k + l] * wf[j * k + l];
            ref[i * n + j] = (float)s;
        }
    be->ops->matmul(be, y, x, &w, bias ? b : NULL, m);
    double e = rel_l2(y, ref, (size_t)(m * n));
    cr_assert(e < 1e-5, "%s matmul %lldx%lldx%lld: error %.3g", plm_dtype_name(dt),
              (long long)m, (long long)n, (long long)k, e);
    free(x); free(wf); free(b); free(wh); free(y); free(ref);
    plm_backend_free(be);
}

Test(backend, matmul_f32_matches_reference) { check_matmul(PLM_F32, 7, 33, 65, 1); }
Test(backend, matmul_bf16_matches_reference) { check_matmul(PLM_BF16, 5, 130, 96, 0); }
Test(backend, matmul_f16_matches_reference) { check_matmul(PLM_F16, 1, 77, 40, 1); }

/* Attention with the score matrix written out, in double. */
static void naive_attention(const plm_attn_args *a, float *out)
{
    int g = a->n_heads / a->n_kv;
    double *p = malloc((size_t)a->tk * sizeof *p);
    for (int64_t i = 0; i < a->tq; i++)
        for (int h = 0; h < a->n_heads; h++) {
            int64_t nk = a->causal ? a->q_pos0 + i + 1 : a->tk;
            double mx = -1e300, sum = 0;
            for (int64_t j = 0; j < nk; j++) {
                double s = 0;
                for (int d = 0; d < a->head_dim; d++)
                    s += (double)a->q[i * a->q_stride + h * a->head_dim + d] *
                         a->k[j * a->kv_stride + (h / g) * a->head_dim + d];
                p[j] = s * a->scale;
                if (p[j] > mx) mx = p[j];
            }
            for (int64_t j = 0; j < nk; j++) sum += p[j] = exp(p[j] - mx);
            for (int d = 0; d < a->head_dim; d++) {
                double o = 0;
                for (int64_t j = 0; j < nk; j++)
                    o += p[j] / sum * a->v[j * a->kv_stride + (h / g) * a->head_dim + d];
                out[(i * a->n_heads + h) * a->head_dim + d] = (float)o;
            }
        }
    free(p);
}

static void check_attention(int64_t tq, int64_t tk, int nh, int nkv, int hd, int causal)
{
    plm_backend *be = cpu();
    int64_t qs = (int64_t)nh * hd, ks = (int64_t)nkv * hd;
    float *q = rand_buf((size_t)(tq * qs)), *k = rand_buf((size_t)(tk * ks)),
          *v = rand_buf((size_t)(tk * ks));
    float *out = malloc((size_t)(tq * qs) * sizeof *out), *ref = malloc((size_t)(tq * qs) * 4);
    plm_attn_args a = {.out = out, .q = q, .k = k, .v = v, .tq = tq, .tk = tk, .q_stride = qs,
                       .kv_stride = ks, .q_pos0 = causal ? tk - tq : 0, .n_heads = nh,
                       .n_kv = nkv, .head_dim = hd, .causal = causal,
                       .scale = 1.0f / sqrtf((float)hd)};
    be->ops->attention(be, &a);
    naive_attention(&a, ref);
    double e = rel_l2(out, ref, (size_t)(tq * qs));
    cr_assert(e < 1e-5, "attention tq=%lld tk=%lld: error %.3g", (long long)tq, (long long)tk, e);
    free(q); free(k); free(v); free(out); free(ref);
    plm_backend_free(be);
}

Test(backend, attention_full_matches_reference) { check_attention(17, 17, 4, 4, 16, 0); }
Test(backend, attention_causal_gqa_matches_reference) { check_attention(9, 9, 6, 2, 32, 1); }
Test(backend, attention_decode_after_cache_matches_reference) { check_attention(1, 40, 4, 1, 8, 1); }
Test(backend, attention_chunk_after_cache_matches_reference) { check_attention(5, 23, 8, 4, 24, 1); }

Test(backend, rmsnorm_and_layernorm_match_reference)
{
    plm_backend *be = cpu();
    const int64_t m = 3, n = 50;
    float *x = rand_buf((size_t)(m * n)), *g = rand_buf((size_t)n), *b = rand_buf((size_t)n);
    float y[150], ref[150];
    be->ops->rmsnorm(be, y, x, g, m, n, 1e-6f);
    for (int64_t r = 0; r < m; r++) {
        double ss = 0;
        for (int64_t i = 0; i < n; i++) ss += (double)x[r * n + i] * x[r * n + i];
        for (int64_t i = 0; i < n; i++)
            ref[r * n + i] = (float)(x[r * n + i] / sqrt(ss / n + 1e-6) * g[i]);
    }
    cr_assert(rel_l2(y, ref, 150) < 1e-6);
    be->ops->layernorm(be, y, x, g, b, m, n, 1e-5f);
    for (int64_t r = 0; r < m; r++) {
        double mu = 0, var = 0;
        for (int64_t i = 0; i < n; i++) mu += x[r * n + i];
        mu /= n;
        for (int64_t i = 0; i < n; i++) var += (x[r * n + i] - mu) * (x[r * n + i] - mu);
        var /= n;
        for (int64_t i = 0; i < n; i++)
            ref[r * n + i] = (float)((x[r * n + i] - mu) / sqrt(var + 1e-5) * g[i] + b[i]);
    }
    cr_assert(rel_l2(y, ref, 150) < 1e-6);
    free(x); free(g); free(b);
    plm_backend_free(be);
}

Test(backend, rope_rotates_pairs_half_apart)
{
    plm_backend *be = cpu();
    float x[8] = {1, 2, 3, 4, 5, 6, 7, 8}; /* one head of 8: pairs (0,4) (1,5) (2,6) (3,7) */
    float inv[4] = {1.0f, 0.5f, 0.25f, 0.0f};
    int32_t pos = 2;
    be->ops->rope(be, x, 1, 8, 1, 8, &pos, inv);
    for (int j = 0; j < 4; j++) {
        float a = (float)(j + 1), b = (float)(j + 5), t = 2 * inv[j];
        cr_assert_float_eq(x[j], a * cosf(t) - b * sinf(t), 1e-6);
        cr_assert_float_eq(x[j + 4], b * cosf(t) + a * sinf(t), 1e-6);
    }
    plm_backend_free(be);
}

Test(backend, activations_match_their_definitions)
{
    plm_backend *be = cpu();
    float x[4] = {-2.0f, -0.5f, 0.3f, 1.7f}, y[4];
    be->ops->act(be, y, x, 4, PLM_ACT_GELU);
    for (int i = 0; i < 4; i++)
        cr_assert_float_eq(y[i], 0.5 * x[i] * (1 + erf(x[i] / sqrt(2.0))), 1e-6);
    be->ops->act(be, y, x, 4, PLM_ACT_QUICK_GELU);
    for (int i = 0; i < 4; i++) cr_assert_float_eq(y[i], x[i] / (1 + exp(-1.702 * x[i])), 1e-6);
    float up[4] = {1, 2, 3, 4};
    be->ops->silu_mul(be, y, x, up, 4);
    for (int i = 0; i < 4; i++) cr_assert_float_eq(y[i], x[i] / (1 + exp(-x[i])) * up[i], 1e-6);
    plm_backend_free(be);
}

Test(backend, patchify_orders_like_a_conv_weight)
{
    plm_backend *be = cpu();
    /* 2 channels, 4x4 image, patch 2: patch (py=1, px=0), channel 1, row 1, col 0 */
    float px[32], out[32];
    for (int i = 0; i < 32; i++) px[i] = (float)i;
    be->ops->patchify(be, out, px, 2, 4, 2);
    /* patch index 2 (py=1,px=0): channel c, row y, col x -> px[c*16 + (2+y)*4 + x] */
    int p = 2;
    for (int c = 0; c < 2; c++)
        for (int y = 0; y < 2; y++)
            for (int x = 0; x < 2; x++)
                cr_assert_eq(out[p * 8 + c * 4 + y * 2 + x], px[c * 16 + (2 + y) * 4 + x]);
    plm_backend_free(be);
}

Test(backend, attn_probs_match_the_softmax_rows)
{
    plm_backend *be = cpu();
    const int64_t tq = 3, tk = 11;
    const int nh = 4, nkv = 2, hd = 8;
    float *q = rand_buf((size_t)(tq * nh * hd)), *k = rand_buf((size_t)(tk * nkv * hd));
    float out[4 * 11], mean[11];
    plm_attn_args a = {.out = out, .q = q, .k = k, .v = k, .tq = tq, .tk = tk,
                       .q_stride = nh * hd, .kv_stride = nkv * hd, .q_pos0 = tk - tq,
                       .n_heads = nh, .n_kv = nkv, .head_dim = hd, .causal = 1, .scale = 0.35f};
    be->ops->attn_probs(be, &a, 1);
    double ref[4][11] = {{0}};
    for (int h = 0; h < nh; h++)
        for (int64_t i = 0; i < tq; i++) {
            int64_t nk = tk - tq + i + 1;
            double p[11], mx = -1e300, sum = 0;
            for (int64_t j = 0; j < nk; j++) {
                double s = 0;
                for (int d = 0; d < hd; d++) s += (double)q[i * nh * hd + h * hd + d] * k[j * nkv * hd + (h / 2) * hd + d];
                p[j] = s * 0.35f;
                if (p[j] > mx) mx = p[j];
            }
            for (int64_t j = 0; j < nk; j++) sum += p[j] = exp(p[j] - mx);
            for (int64_t j = 0; j < nk; j++) ref[h][j] += p[j] / sum / tq;
        }
    for (int h = 0; h < nh; h++)
        for (int64_t j = 0; j < tk; j++) cr_assert_float_eq(out[h * tk + j], ref[h][j], 1e-6);
    /* each head's row sums to one: every query's probabilities do */
    for (int h = 0; h < nh; h++) {
        double s = 0;
        for (int64_t j = 0; j < tk; j++) s += out[h * tk + j];
        cr_assert_float_eq(s, 1.0, 1e-5);
    }
    be->ops->attn_probs(be, &a, 0);
    for (int64_t j = 0; j < tk; j++) {
        mean[j] = (float)((ref[0][j] + ref[1][j] + ref[2][j] + ref[3][j]) / 4);
        cr_assert_float_eq(out[j], mean[j], 1e-6);
    }
    free(q);
    free(k);
    plm_backend_free(be);
}

/* The float -> 16-bit roundings --dtype uses: every 16-bit value survives the round trip, any
 * float lands on the nearer neighbour, ties go to even, overflow to inf, tiny values to the
 * nearest subnormal or zero. */
Test(backend, float_to_16_bit_rounds_to_nearest_even)
{
    for (uint32_t h = 0; h < 65536; h++) {
        float f = plm_f16_to_f32((uint16_t)h), b = plm_bf16_to_f32((uint16_t)h);
        if (!isnan(f)) cr_assert_eq(plm_f32_to_f16(f), h, "f16 %#x", h);
        if (!isnan(b)) cr_assert_eq(plm_f32_to_bf16(b), h, "bf16 %#x", h);
    }
    uint32_t st = 1;
    for (int i = 0; i < 200000; i++) {
        st = st * 1664525u + 1013904223u;
        float f;
        memcpy(&f, &st, 4);
        if (isnan(f) || isinf(f)) continue;
        uint16_t h = plm_f32_to_f16(f), b = plm_f32_to_bf16(f);
        double eh = fabs((double)plm_f16_to_f32(h) - f), eb = fabs((double)plm_bf16_to_f32(b) - f);
        if (isinf(plm_f16_to_f32(h))) {
            cr_assert_geq(fabsf(f), 65520.0f, "%g overflowed", f);
        } else {
            for (int d = -1; d <= 1; d += 2) {
                float nb = plm_f16_to_f32((uint16_t)(h + d));
                if ((h & 0x7fff) || d > 0)
                    cr_assert(isinf(nb) || fabs((double)nb - f) >= eh, "f16 of %g", f);
            }
        }
        if (isinf(plm_bf16_to_f32(b))) { /* past the largest bf16 plus half its spacing */
            cr_assert_geq(fabs((double)f), 0x1.fe8p127, "%g overflowed", f);
            continue;
        }
        for (int d = -1; d <= 1; d += 2) {
            float nb = plm_bf16_to_f32((uint16_t)(b + d));
            if ((b & 0x7fff) || d > 0)
                cr_assert(isinf(nb) || isnan(nb) || fabs((double)nb - f) >= eb, "bf16 of %g", f);
        }
    }
    cr_assert_eq(plm_f32_to_f16(1.0f + 1.0f / 2048), 0x3c00);   /* tie: down to even */
    cr_assert_eq(plm_f32_to_f16(1.0f + 3.0f / 2048), 0x3c02);   /* tie: up to even */
    cr_assert_eq(plm_f32_to_f16(65520.0f), 0x7c00);
    cr_assert_eq(plm_f32_to_f16(65519.0f), 0x7bff);
    cr_assert_eq(plm_f32_to_f16(ldexpf(1, -25)), 0);            /* half the smallest: even */
    cr_assert_eq(plm_f32_to_f16(ldexpf(1.5f, -25)), 1);
    cr_assert_eq(plm_f32_to_bf16(1.0f + ldexpf(1, -8)), 0x3f80); /* tie: down to even */
    cr_assert(isnan(plm_bf16_to_f32(plm_f32_to_bf16(NAN))));
    cr_assert(isnan(plm_f16_to_f32(plm_f32_to_f16(NAN))));
}

Test(backend, sum_rows_gathers_exactly_and_merges_by_weight)
{
    plm_backend *be = cpu();
    /* x: 4 rows of 3 columns in a stride of 5; y rows: x[2] (a copy), 0.25 x[0] + 0.75 x[3],
     * and an empty segment (zeros) */
    float x[20], y[3 * 4];
    for (int i = 0; i < 20; i++) x[i] = 0.1f * (float)i + 0.3f;
    for (int i = 0; i < 12; i++) y[i] = -7.0f;
    const int64_t off[4] = {0, 1, 3, 3};
    const int32_t src[3] = {2, 0, 3};
    const float w[3] = {1.0f, 0.25f, 0.75f};
    be->ops->sum_rows(be, y, 4, x, 5, 3, off, src, w, 3);
    for (int e = 0; e < 3; e++) {
        cr_assert_eq(y[e], x[10 + e], "a weight-1 gather is exact");
        cr_assert_float_eq(y[4 + e], 0.25f * x[e] + 0.75f * x[15 + e], 1e-6);
        cr_assert_eq(y[8 + e], 0.0f);
    }
    cr_assert_eq(y[3], -7.0f, "the stride's gap is left alone");
    plm_backend_free(be);
}

/* mem_held counts what alloc() handed out and release() took back; a reset starts the peak
 * over from what is held then. */
Test(backend, mem_held_counts_blocks_and_their_peak)
{
    plm_backend *be = cpu();
    cr_assert(be->ops->mem_held);
    size_t now, peak;
    be->ops->mem_held(be, 1, &now, &peak);
    cr_assert_eq(now, 0);
    cr_assert_eq(peak, 0);
    float *a = be->ops->alloc(be, 1000), *b = be->ops->alloc(be, 24);
    cr_assert(a && b);
    a[249] = 1.0f; /* the whole block is usable (ASan watches the edges) */
    be->ops->release(be, a);
    be->ops->mem_held(be, 0, &now, &peak);
    cr_assert_eq(now, 24);
    cr_assert_eq(peak, 1024);
    be->ops->mem_held(be, 1, &now, &peak);
    cr_assert_eq(peak, 24, "a reset starts the peak from what is held");
    be->ops->release(be, b);
    be->ops->release(be, NULL);
    be->ops->mem_held(be, 0, &now, &peak);
    cr_assert_eq(now, 0);
    cr_assert_eq(peak, 24);
    be->ops->destroy(be);
}

