/* The decode step's kernels against the CPU reference backend, as test_cuda_ops.c checks the
 * other ops (same helpers, tests/gpu/cuda_check.h): the GEMV that takes 16-bit matmuls at
 * m <= 8 (cuda/cu_gemv.cu); the fused decoder ops (matmul_multi, matmul_glu, add_rmsnorm,
 * rope_qk) alone and in a chain of early (PDL) launches; a decode step recorded as a CUDA graph
 * and replayed (rope_append, attention reading q_pos0 from the device, graph_*); and split-K
 * decode attention (cuda/cu_attn_decode.cu) with and without sparse rows and steering bias.
 * Each PLM_CUDA_* switch (GEMV, FUSED, PDL, GRAPH) is checked to turn its path off. Outputs are
 * poisoned with NaN before each run. Plain C without Criterion; prints one PASS/FAIL line per
 * check and "N passed, M failed" last; exits 1 on any failure. PLM_TEST_SKIP_MATMUL=1 (run.sh's
 * racecheck and initcheck) leaves out the GEMV checks and the fused ops' cuBLASLt fallbacks. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "core/dtype.h"
#include "cuda/cu_test_hooks.h"
#include "tests/gpu/cuda_check.h"
#include "tests/support/compare.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;

/* ---- GEMV (cuda/cu_gemv.cu) ---- */

/* One [n x k] weight in dt, then every m in {1, 2, 3, 8} with and without bias against the CPU.
 * Both widen the weights and sum float32 products, so they agree to float rounding (1e-5), where
 * cuBLASLt, rounding x to 16 bits, is off by ~1e-3: a pass also shows the GEMV ran. m = 3 runs on
 * x and y one float off their alignment. scalar: the weight sits one element past a 16-byte
 * boundary (rows 2-byte aligned), which the vector path cannot take. */
static void gemv_weight(plm_dtype dt, int64_t n, int64_t k, int scalar)
{
    static const int64_t ms[] = {1, 2, 3, 8};
    seed((uint64_t)(n * 31 + k * 7 + dt * 7919 + scalar));
    const size_t nw = (size_t)(n * k);
    uint16_t *wh = xmalloc(nw * 2);
    const float sc = 1.0f / sqrtf((float)k);
    for (size_t i = 0; i < nw; i++) {
        const float v = sc * frand();
        wh[i] = dt == PLM_BF16 ? to_bf16(v) : to_f16(v);
    }
    uint16_t *dw = gpu->ops->alloc(gpu, (nw + 8) * 2);
    if (!dw) {
        result(0, "gemv_weight_alloc", 0, 0, gpu->ops->alloc_error(gpu));
        free(wh);
        return;
    }
    gpu->ops->upload(gpu, dw + scalar, wh, nw * 2);
    /* x has one float more than 8 rows: the room for the copy shifted by one */
    float *x = rand_vec((size_t)(8 * k + 1), 1.0f, 0.0f), *bias = rand_vec((size_t)n, 0.5f, 0.0f);
    float *want = xmalloc((size_t)(8 * n) * 4), *nan_y = xmalloc((size_t)(8 * n + 1) * 4);
    for (int64_t i = 0; i < 8 * n + 1; i++) nan_y[i] = NAN;
    float *dx = dev_from(gpu, x, (size_t)(8 * k + 1) * 4), *db = dev_from(gpu, bias, (size_t)n * 4);
    float *dy = dev_nan(gpu, (size_t)(8 * n + 1));
    const plm_weight wc = {dt, n, k, wh}, wg = {dt, n, k, dw + scalar};
    for (size_t mi = 0; mi < sizeof ms / sizeof ms[0]; mi++)
        for (int wb = 0; wb < 2; wb++) {
            const int64_t m = ms[mi];
            if (scalar && m != 1 && m != 8) continue;
            const int off = m == 3;
            cpu->ops->matmul(cpu, want, x, &wc, wb ? bias : NULL, m);
            if (off) gpu->ops->upload(gpu, dx + off, x, (size_t)(m * k) * 4);
            gpu->ops->upload(gpu, dy, nan_y, (size_t)(8 * n + 1) * 4); /* earlier results */
            gpu->ops->matmul(gpu, dy + off, dx + off, &wg, wb ? db : NULL, m);
            float *got = fetch(gpu, dy + off, (size_t)(m * n));
            char name[128];
            snprintf(name, sizeof name, "gemv_%s_m%lld_n%lld_k%lld%s%s%s", plm_dtype_name(dt),
                     (long long)m, (long long)n, (long long)k, wb ? "_bias" : "",
                     off ? "_offset" : "", scalar ? "_unaligned_w" : "");
            /* both sum float32 products in different orders: the rounding grows like sqrt(k),
             * and a single output (n = 1) has no others to average it out */
            check(gpu, name, got, want, (size_t)(m * n), 1e-5 * fmax(1.0, sqrt(k / 1024.0)));
            free(got);
            if (off) gpu->ops->upload(gpu, dx, x, (size_t)(8 * k + 1) * 4); /* back in place */
        }
    gpu->ops->release(gpu, dw), gpu->ops->release(gpu, dx), gpu->ops->release(gpu, db);
    gpu->ops->release(gpu, dy);
    free(wh), free(x), free(bias), free(want), free(nan_y);
}

static void gemvs(void)
{
    static const int64_t ks[] = {64, 1000, 4096, 11008, 13}, ns[] = {1, 7, 4096, 32064};
    static const plm_dtype dts[] = {PLM_BF16, PLM_F16};
    for (int d = 0; d < 2; d++)
        for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++)
            for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++)
                gemv_weight(dts[d], ns[ni], ks[ki], 0);
    gemv_weight(PLM_BF16, 4096, 4096, 1);
    gemv_weight(PLM_F16, 7, 1000, 1);

    /* PLM_CUDA_GEMV=0: the same call goes to cuBLASLt, whose rounding of x shows (> 1e-4) */
    setenv("PLM_CUDA_GEMV", "0", 1);
    plm_backend *g2 = NULL;
    plm_error err;
    plm_status st = plm_backend_cuda_new(0, &g2, &err);
    unsetenv("PLM_CUDA_GEMV");
    if (st != PLM_OK) {
        result(0, "gemv_off_backend_new", 0, 0, err.msg);
        return;
    }
    const int64_t n = 4096, k = 4096;
    seed(99);
    float *wf = rand_vec((size_t)(n * k), 1.0f / 64.0f, 0.0f), *x = rand_vec((size_t)k, 1.0f, 0.0f);
    void *wh = to_dtype(wf, (size_t)(n * k), PLM_BF16);
    float *want = xmalloc((size_t)n * 4);
    const plm_weight wc = {PLM_BF16, n, k, wh};
    cpu->ops->matmul(cpu, want, x, &wc, NULL, 1);
    const plm_weight wg = {PLM_BF16, n, k, dev_from(g2, wh, (size_t)(n * k) * 2)};
    float *dx = dev_from(g2, x, (size_t)k * 4), *dy = dev_nan(g2, (size_t)n);
    g2->ops->matmul(g2, dy, dx, &wg, NULL, 1);
    float *got = fetch(g2, dy, (size_t)n);
    const double e = rel_l2(got, want, (size_t)n);
    result(e > 1e-4 && e < 1e-2 && !g2->ops->error(g2), "gemv_env_off_runs_cublaslt", e, 1e-4,
           "PLM_CUDA_GEMV=0 did not reach the cuBLASLt path (or it failed)");
    g2->ops->release(g2, (void *)wg.data), g2->ops->release(g2, dx), g2->ops->release(g2, dy);
    plm_backend_free(g2);
    free(wf), free(x), free(wh), free(want), free(got);
}

/* ---- fused decoder ops (matmul_multi, matmul_glu, add_rmsnorm, rope_qk) against the CPU
 * backend's unfused ops. The 16-bit cases at m <= 8 take the fused GEMV, whose float32 sums
 * match the CPU to rounding (cuBLASLt, rounding x to 16 bits, would miss the tolerance); f32,
 * k % 8 != 0 and unaligned weights show the fallbacks compose correctly. ---- */

/* A random [n x k] weight in dt, on the host and (off elements past a 16-byte boundary) on the
 * GPU; *dev_base receives the allocation to release. */
static plm_weight fused_weight(plm_dtype dt, int64_t n, int64_t k, int off, void **host,
                               void **dev_base)
{
    const size_t nw = (size_t)(n * k), es = plm_dtype_size(dt);
    float *wf = rand_vec(nw, 1.0f / sqrtf((float)k), 0.0f);
    *host = to_dtype(wf, nw, dt);
    free(wf);
    char *d = gpu->ops->alloc(gpu, (nw + 8) * es);
    if (!d) {
        fprintf(stderr, "device alloc failed: %s\n", gpu->ops->alloc_error(gpu));
        exit(2);
    }
    gpu->ops->upload(gpu, d + (size_t)off * es, *host, nw * es);
    *dev_base = d;
    return (plm_weight){dt, n, k, d + (size_t)off * es};
}

static double gemv_tol(plm_dtype dt, int64_t k)
{
    return dt == PLM_F32 ? 1e-5 : 1e-5 * fmax(1.0, sqrt(k / 1024.0));
}

/* matmul_multi over nw weights of rows[i] x k; woff shifts the last weight off alignment. */
static void fused_multi(plm_dtype dt, int64_t m, int nw, const int64_t *rows, int64_t k,
                        int with_bias, int woff)
{
    seed((uint64_t)(m * 7 + k * 3 + rows[0] + nw * 101 + dt * 13 + woff));
    void *wh[3], *wd[3];
    plm_weight wc[3], wg[3];
    float *bias[3] = {NULL, NULL, NULL}, *dbias[3] = {NULL, NULL, NULL}, *want[3], *dy[3];
    float *x = rand_vec((size_t)(m * k + 1), 1.0f, 0.0f);
    const int xoff = m == 3; /* x one float off its alignment: scalar staging */
    float *dx = dev_nan(gpu, (size_t)(m * k + 1));
    gpu->ops->upload(gpu, dx + xoff, x, (size_t)(m * k) * 4);
    for (int i = 0; i < nw; i++) {
        wg[i] = fused_weight(dt, rows[i], k, i == nw - 1 ? woff : 0, &wh[i], &wd[i]);
        wc[i] = (plm_weight){dt, rows[i], k, wh[i]};
        if (with_bias) {
            bias[i] = rand_vec((size_t)rows[i], 0.5f, 0.0f);
            dbias[i] = dev_from(gpu, bias[i], (size_t)rows[i] * 4);
        }
        want[i] = xmalloc((size_t)(m * rows[i]) * 4);
        cpu->ops->matmul(cpu, want[i], x, &wc[i], bias[i], m);
        dy[i] = dev_nan(gpu, (size_t)(m * rows[i]));
    }
    const plm_weight *wp[3] = {&wg[0], &wg[1], &wg[2]};
    gpu->ops->matmul_multi(gpu, nw, dy, dx + xoff, wp, (const float *const *)dbias, m);
    for (int i = 0; i < nw; i++) {
        float *got = fetch(gpu, dy[i], (size_t)(m * rows[i]));
        char name[160];
        snprintf(name, sizeof name, "matmul_multi_%s_m%lld_k%lld_w%d_of%d_n%lld%s%s",
                 plm_dtype_name(dt), (long long)m, (long long)k, i, nw, (long long)rows[i],
                 with_bias ? "_bias" : "", woff ? "_unaligned_w" : "");
        check(gpu, name, got, want[i], (size_t)(m * rows[i]), gemv_tol(dt, k));
        free(got);
        gpu->ops->release(gpu, wd[i]), gpu->ops->release(gpu, dbias[i]);
        gpu->ops->release(gpu, dy[i]);
        free(wh[i]), free(bias[i]), free(want[i]);
    }
    gpu->ops->release(gpu, dx);
    free(x);
}

/* matmul_glu against matmul, matmul, silu_mul on the CPU. */
static void fused_glu(plm_dtype dt, int64_t m, int64_t n, int64_t k, int with_bias)
{
    seed((uint64_t)(m * 5 + n * 11 + k + dt * 17 + with_bias));
    void *gh, *uh, *gd, *ud;
    const plm_weight gg = fused_weight(dt, n, k, 0, &gh, &gd);
    const plm_weight ug = fused_weight(dt, n, k, 0, &uh, &ud);
    const plm_weight gc = {dt, n, k, gh}, uc = {dt, n, k, uh};
    float *x = rand_vec((size_t)(m * k), 2.0f, 0.0f);
    float *gb = with_bias ? rand_vec((size_t)n, 1.0f, 0.0f) : NULL;
    float *ub = with_bias ? rand_vec((size_t)n, 1.0f, 0.0f) : NULL;
    const size_t ny = (size_t)(m * n);
    float *want = xmalloc(ny * 4), *tmp = xmalloc(ny * 4);
    cpu->ops->matmul(cpu, want, x, &gc, gb, m);
    cpu->ops->matmul(cpu, tmp, x, &uc, ub, m);
    cpu->ops->silu_mul(cpu, want, want, tmp, (int64_t)ny);
    float *dx = dev_from(gpu, x, (size_t)(m * k) * 4), *dy = dev_nan(gpu, ny);
    float *dt_ = dev_nan(gpu, ny);
    float *dgb = gb ? dev_from(gpu, gb, (size_t)n * 4) : NULL;
    float *dub = ub ? dev_from(gpu, ub, (size_t)n * 4) : NULL;
    gpu->ops->matmul_glu(gpu, dy, dt_, dx, &gg, dgb, &ug, dub, m);
    float *got = fetch(gpu, dy, ny);
    char name[128];
    snprintf(name, sizeof name, "matmul_glu_%s_m%lld_n%lld_k%lld%s", plm_dtype_name(dt),
             (long long)m, (long long)n, (long long)k, with_bias ? "_bias" : "");
    check(gpu, name, got, want, ny, 2 * gemv_tol(dt, k));
    gpu->ops->release(gpu, gd), gpu->ops->release(gpu, ud), gpu->ops->release(gpu, dx);
    gpu->ops->release(gpu, dy), gpu->ops->release(gpu, dt_);
    gpu->ops->release(gpu, dgb), gpu->ops->release(gpu, dub);
    free(gh), free(uh), free(x), free(gb), free(ub), free(want), free(tmp), free(got);
}

/* add_rmsnorm against add + rmsnorm: x updated in place, y separate or y = h. */
static void fused_add_rmsnorm(int64_t m, int64_t n, int y_is_h)
{
    seed((uint64_t)(m * 19 + n + y_is_h));
    const size_t t = (size_t)(m * n);
    float *x = rand_vec(t, 2.0f, 1.0f), *h = rand_vec(t, 2.0f, 0.0f);
    float *gm = rand_vec((size_t)n, 1.0f, 1.0f), *want = xmalloc(t * 4), *xw = xmalloc(t * 4);
    cpu->ops->add(cpu, xw, x, h, (int64_t)t);
    cpu->ops->rmsnorm(cpu, want, xw, gm, m, n, 1e-5f);
    float *dx = dev_from(gpu, x, t * 4), *dh = dev_from(gpu, h, t * 4);
    float *dg = dev_from(gpu, gm, (size_t)n * 4), *dy = y_is_h ? dh : dev_nan(gpu, t);
    gpu->ops->add_rmsnorm(gpu, dy, dx, dh, dg, m, n, 1e-5f);
    float *got = fetch(gpu, dy, t), *gotx = fetch(gpu, dx, t);
    char name[96];
    snprintf(name, sizeof name, "add_rmsnorm_m%lld_n%lld%s", (long long)m, (long long)n,
             y_is_h ? "_y_is_h" : "");
    check(gpu, name, got, want, t, 1e-5);
    strcat(name, "_x");
    check(gpu, name, gotx, xw, t, 1e-6);
    gpu->ops->release(gpu, dx), gpu->ops->release(gpu, dh), gpu->ops->release(gpu, dg);
    if (!y_is_h) gpu->ops->release(gpu, dy);
    free(x), free(h), free(gm), free(want), free(xw), free(got), free(gotx);
}

/* rope_qk on q [t x qs] and k [t x ks] buffers against two CPU ropes. */
static void fused_rope_qk(int64_t t, int nq, int nk, int hd, int max_pos)
{
    seed((uint64_t)(t * 23 + nq + hd));
    const int64_t qs = (int64_t)nq * hd + 3, ks = (int64_t)nk * hd; /* q rows padded */
    float *q = rand_vec((size_t)(t * qs), 1.0f, 0.0f), *k = rand_vec((size_t)(t * ks), 1.0f, 0.0f);
    float *inv = xmalloc((size_t)hd / 2 * 4);
    int32_t *pos = xmalloc((size_t)t * 4);
    for (int j = 0; j < hd / 2; j++) inv[j] = powf(10000.0f, -2.0f * (float)j / (float)hd);
    for (int64_t i = 0; i < t; i++) pos[i] = (int32_t)((frand() + 1.0f) * 0.5f * (float)max_pos);
    float *dq = dev_from(gpu, q, (size_t)(t * qs) * 4), *dk = dev_from(gpu, k, (size_t)(t * ks) * 4);
    gpu->ops->rope_qk(gpu, dq, qs, nq, dk, ks, nk, t, hd, pos, inv);
    cpu->ops->rope(cpu, q, t, qs, nq, hd, pos, inv);
    cpu->ops->rope(cpu, k, t, ks, nk, hd, pos, inv);
    for (int64_t i = 0; i < t; i++) pos[i] = -1; /* staged already */
    float *gq = fetch(gpu, dq, (size_t)(t * qs)), *gk = fetch(gpu, dk, (size_t)(t * ks));
    char name[96];
    snprintf(name, sizeof name, "rope_qk_t%lld_q%d_k%d_hd%d_q", (long long)t, nq, nk, hd);
    check(gpu, name, gq, q, (size_t)(t * qs), 1e-5);
    name[strlen(name) - 1] = 'k';
    check(gpu, name, gk, k, (size_t)(t * ks), 1e-5);
    gpu->ops->release(gpu, dq), gpu->ops->release(gpu, dk);
    free(q), free(k), free(inv), free(pos), free(gq), free(gk);
}

/* A chain of dependent GEMVs (each reads the previous one's output, in place, with norms and
 * ropes between) on one stream: with programmatic dependent launch, a GEMV that read x before
 * the op writing it had finished would show here. Compared with the CPU and with a backend made
 * under PLM_CUDA_PDL=0 (bitwise: the kernels are deterministic). */
static void fused_chain(void)
{
    enum { D = 1024, F = 2816, Q = 1024, KV = 256, HD = 64, STEPS = 12 };
    seed(4242);
    void *h[6], *d[6];
    const plm_weight wq = fused_weight(PLM_BF16, Q, D, 0, &h[0], &d[0]);
    const plm_weight wk = fused_weight(PLM_BF16, KV, D, 0, &h[1], &d[1]);
    const plm_weight wo = fused_weight(PLM_BF16, D, Q, 0, &h[2], &d[2]);
    const plm_weight wgt = fused_weight(PLM_BF16, F, D, 0, &h[3], &d[3]);
    const plm_weight wup = fused_weight(PLM_BF16, F, D, 0, &h[4], &d[4]);
    const plm_weight wdn = fused_weight(PLM_BF16, D, F, 0, &h[5], &d[5]);
    const plm_weight cq = {PLM_BF16, Q, D, h[0]}, ck = {PLM_BF16, KV, D, h[1]};
    const plm_weight co = {PLM_BF16, D, Q, h[2]}, cg = {PLM_BF16, F, D, h[3]};
    const plm_weight cu = {PLM_BF16, F, D, h[4]}, cd = {PLM_BF16, D, F, h[5]};
    float *x0 = rand_vec(D, 1.0f, 0.0f), *gm = rand_vec(D, 0.5f, 1.0f);
    float inv[HD / 2];
    for (int j = 0; j < HD / 2; j++) inv[j] = powf(10000.0f, -2.0f * (float)j / HD);
    /* CPU: unfused ops */
    float *x = xmalloc(D * 4), *hb = xmalloc(D * 4), *q = xmalloc(Q * 4), *kk = xmalloc(KV * 4);
    float *g = xmalloc(F * 4), *u = xmalloc(F * 4);
    memcpy(x, x0, D * 4);
    memset(hb, 0, D * 4);
    for (int s = 0; s < STEPS; s++) {
        const int32_t p = 7 * s + 3;
        cpu->ops->add(cpu, x, x, hb, D);
        cpu->ops->rmsnorm(cpu, hb, x, gm, 1, D, 1e-5f);
        cpu->ops->matmul(cpu, q, hb, &cq, NULL, 1);
        cpu->ops->matmul(cpu, kk, hb, &ck, NULL, 1);
        cpu->ops->rope(cpu, q, 1, Q, Q / HD, HD, &p, inv);
        cpu->ops->rope(cpu, kk, 1, KV, KV / HD, HD, &p, inv);
        cpu->ops->matmul(cpu, hb, q, &co, NULL, 1);
        cpu->ops->add(cpu, x, x, hb, D);
        cpu->ops->rmsnorm(cpu, hb, x, gm, 1, D, 1e-5f);
        cpu->ops->matmul(cpu, g, hb, &cg, NULL, 1);
        cpu->ops->matmul(cpu, u, hb, &cu, NULL, 1);
        cpu->ops->silu_mul(cpu, g, g, u, F);
        cpu->ops->matmul(cpu, hb, g, &cd, NULL, 1);
    }
    cpu->ops->add(cpu, x, x, hb, D);
    float *got[2] = {NULL, NULL};
    for (int pass = 0; pass < 2; pass++) {
        plm_backend *g2 = gpu;
        if (pass == 1) {
            setenv("PLM_CUDA_PDL", "0", 1);
            plm_error err;
            plm_status st = plm_backend_cuda_new(0, &g2, &err);
            unsetenv("PLM_CUDA_PDL");
            if (st != PLM_OK) {
                result(0, "fused_chain_pdl_off_backend_new", 0, 0, err.msg);
                break;
            }
        }
        const plm_backend_ops *o = g2->ops;
        float *dx = dev_from(g2, x0, D * 4), *dh = dev_from(g2, hb, D * 4);
        float *dg = dev_from(g2, gm, D * 4), *dq = dev_nan(g2, Q), *dk = dev_nan(g2, KV);
        float *dgt = dev_nan(g2, F), *dup = dev_nan(g2, F);
        o->upload(g2, dh, (float[D]){0}, D * 4);
        for (int s = 0; s < STEPS; s++) {
            const int32_t p = 7 * s + 3;
            o->add_rmsnorm(g2, dh, dx, dh, dg, 1, D, 1e-5f);
            float *ys[2] = {dq, dk};
            const plm_weight *ws[2] = {&wq, &wk};
            const float *bs[2] = {NULL, NULL};
            o->matmul_multi(g2, 2, ys, dh, ws, bs, 1);
            o->rope_qk(g2, dq, Q, Q / HD, dk, KV, KV / HD, 1, HD, &p, inv);
            o->matmul(g2, dh, dq, &wo, NULL, 1);
            o->add_rmsnorm(g2, dh, dx, dh, dg, 1, D, 1e-5f);
            o->matmul_glu(g2, dgt, dup, dh, &wgt, NULL, &wup, NULL, 1);
            o->matmul(g2, dh, dgt, &wdn, NULL, 1);
        }
        o->add(g2, dx, dx, dh, D);
        got[pass] = fetch(g2, dx, D);
        check(g2, pass ? "fused_chain_pdl_off" : "fused_chain", got[pass], x, D, 1e-4);
        g2->ops->release(g2, dx), g2->ops->release(g2, dh), g2->ops->release(g2, dg);
        g2->ops->release(g2, dq), g2->ops->release(g2, dk), g2->ops->release(g2, dgt);
        g2->ops->release(g2, dup);
        if (pass == 1) plm_backend_free(g2);
    }
    if (got[0] && got[1]) {
        const double e = max_abs_diff(got[0], got[1], D);
        result(e == 0.0, "fused_chain_pdl_on_equals_off", e, 0, "PDL changed the result");
    }
    for (int i = 0; i < 6; i++) gpu->ops->release(gpu, d[i]), free(h[i]);
    free(x0), free(gm), free(x), free(hb), free(q), free(kk), free(g), free(u);
    free(got[0]), free(got[1]);
}

static void fused_ops(void)
{
    if (!gpu->ops->matmul_multi || !gpu->ops->matmul_glu || !gpu->ops->add_rmsnorm ||
        !gpu->ops->rope_qk) {
        /* PLM_CUDA_FUSED=0 withdraws them on purpose (run.sh's second pass runs so) */
        const char *off = getenv("PLM_CUDA_FUSED");
        if (off && !strcmp(off, "0")) printf("SKIP fused ops: PLM_CUDA_FUSED=0\n");
        else result(0, "fused_ops_present", 0, 0, "the CUDA backend lacks a fused op");
        return;
    }
    static const int64_t ms[] = {1, 2, 3, 8};
    const int64_t qkv[3] = {4096, 1024, 1024}, odd[3] = {33, 7, 100}, one[1] = {4096};
    for (size_t i = 0; i < 4; i++) {
        fused_multi(PLM_BF16, ms[i], 3, qkv, 4096, (int)(i % 2), 0);
        fused_multi(PLM_F16, ms[i], 3, odd, 1000, 1, 0);
        fused_multi(PLM_BF16, ms[i], 2, odd, 64, 0, 0);
        fused_multi(PLM_BF16, ms[i], 1, one, 11008, 0, 0); /* x tiled from m = 2 */
        fused_glu(PLM_BF16, ms[i], 1000, 4096, (int)(i % 2));
        fused_glu(PLM_F16, ms[i], 7, 11008, 1);
        fused_glu(PLM_BF16, ms[i], 4096, 64, 0);
    }
    fused_multi(PLM_BF16, 1, 3, odd, 16384, 1, 0); /* m = 1 tiled */
    fused_glu(PLM_BF16, 1, 33, 16384, 1);
    /* the fallbacks: f32 weights (cuBLASLt), k % 8 != 0 and an unaligned weight (per-weight
     * scalar GEMV) */
    if (!getenv("PLM_TEST_SKIP_MATMUL")) { /* cuBLASLt: see main() */
        fused_multi(PLM_F32, 1, 3, odd, 64, 1, 0);
        fused_glu(PLM_F32, 3, 100, 64, 1);
    }
    fused_multi(PLM_BF16, 1, 3, odd, 13, 1, 0);
    fused_multi(PLM_BF16, 2, 3, odd, 1000, 0, 1);
    fused_glu(PLM_BF16, 1, 100, 13, 1);
    fused_add_rmsnorm(1, 4096, 1);
    fused_add_rmsnorm(1, 33, 0);
    fused_add_rmsnorm(7, 5000, 0);
    fused_add_rmsnorm(577, 1024, 1);
    fused_rope_qk(1, 32, 8, 128, 4096);
    fused_rope_qk(7, 32, 32, 128, 4096);
    fused_rope_qk(33, 8, 4, 80, 100000);
    fused_chain();

    /* PLM_CUDA_FUSED=0: a backend without them, so lm/llama.c composes the plain ops */
    setenv("PLM_CUDA_FUSED", "0", 1);
    plm_backend *g2 = NULL;
    plm_error err;
    plm_status st = plm_backend_cuda_new(0, &g2, &err);
    unsetenv("PLM_CUDA_FUSED");
    if (st != PLM_OK) {
        result(0, "fused_off_backend_new", 0, 0, err.msg);
        return;
    }
    result(!g2->ops->matmul_multi && !g2->ops->matmul_glu && !g2->ops->add_rmsnorm &&
               !g2->ops->rope_qk && g2->ops->matmul,
           "fused_env_off_leaves_ops_null", 0, 0, "PLM_CUDA_FUSED=0 ignored");
    plm_backend_free(g2);
}

/* ---- recorded decode steps: rope_append, attention with q_pos0_dev, graph_* ---- */

/* rope_append run directly (the device values are plain device memory) against rope on q and
 * k_new then the copy into the cache row, on the CPU. */
static void rope_append_case(int nq, int nk, int hd, int row, int pos)
{
    seed((uint64_t)(nq * 3 + nk + hd * 7 + row));
    const int64_t kvd = (int64_t)nk * hd, rows = row + 3;
    float *q = rand_vec((size_t)nq * hd, 1.0f, 0.0f), *kn = rand_vec((size_t)kvd, 1.0f, 0.0f);
    float *vn = rand_vec((size_t)kvd, 1.0f, 0.0f);
    float *kc = rand_vec((size_t)(rows * kvd), 1.0f, 0.0f), *vc = rand_vec((size_t)(rows * kvd), 1.0f, 0.0f);
    float *inv = xmalloc((size_t)hd / 2 * 4);
    for (int j = 0; j < hd / 2; j++) inv[j] = powf(10000.0f, -2.0f * (float)j / (float)hd);
    float *dq = dev_from(gpu, q, (size_t)nq * hd * 4), *dkn = dev_from(gpu, kn, (size_t)kvd * 4);
    float *dvn = dev_from(gpu, vn, (size_t)kvd * 4), *dinv = dev_from(gpu, inv, (size_t)hd / 2 * 4);
    float *dkc = dev_from(gpu, kc, (size_t)(rows * kvd) * 4);
    float *dvc = dev_from(gpu, vc, (size_t)(rows * kvd) * 4);
    int32_t pr[2] = {pos, row};
    int32_t *dpr = dev_from(gpu, pr, sizeof pr);
    const plm_rope_step rs = {dq, dkn, dvn, dkc, dvc, nq, nk, hd, dpr, dpr + 1, dinv};
    gpu->ops->rope_append(gpu, &rs);
    cpu->ops->rope(cpu, q, 1, (int64_t)nq * hd, nq, hd, &pos, inv);
    cpu->ops->rope(cpu, kn, 1, kvd, nk, hd, &pos, inv);
    memcpy(kc + row * kvd, kn, (size_t)kvd * 4);
    memcpy(vc + row * kvd, vn, (size_t)kvd * 4);
    float *gq = fetch(gpu, dq, (size_t)nq * hd), *gk = fetch(gpu, dkc, (size_t)(rows * kvd));
    float *gv = fetch(gpu, dvc, (size_t)(rows * kvd));
    char name[96];
    snprintf(name, sizeof name, "rope_append_q%d_k%d_hd%d_row%d_q", nq, nk, hd, row);
    check(gpu, name, gq, q, (size_t)nq * hd, 1e-5);
    name[strlen(name) - 1] = 'k';
    check(gpu, name, gk, kc, (size_t)(rows * kvd), 1e-5);
    name[strlen(name) - 1] = 'v';
    check(gpu, name, gv, vc, (size_t)(rows * kvd), 0.0);
    gpu->ops->release(gpu, dq), gpu->ops->release(gpu, dkn), gpu->ops->release(gpu, dvn);
    gpu->ops->release(gpu, dinv), gpu->ops->release(gpu, dkc), gpu->ops->release(gpu, dvc);
    gpu->ops->release(gpu, dpr);
    free(q), free(kn), free(vn), free(kc), free(vc), free(inv), free(gq), free(gk), free(gv);
}

/* Decode attention whose q_pos0 the kernel reads from device memory (tk = it + tq; the args'
 * tk and q_pos0 only bound it), run directly, against the CPU with host values. */
static void attn_pos_dev_case(int64_t tq, int64_t n0, int64_t cap, int nh, int nkv, int hd)
{
    seed((uint64_t)(tq * 13 + n0 * 7 + nh + hd));
    const int64_t qs = (int64_t)nh * hd, kvs = (int64_t)nkv * hd;
    const size_t nq = (size_t)(tq * qs), nkv_ = (size_t)(cap * kvs), no = (size_t)(tq * qs);
    float *qb = rand_vec(nq, 2.0f, 0.0f), *kb = rand_vec(nkv_, 2.0f, 0.0f);
    float *vb = rand_vec(nkv_, 1.0f, 0.0f), *want = xmalloc(no * 4);
    plm_attn_args a = {.out = want, .q = qb, .k = kb, .v = vb, .tq = tq, .tk = n0 + tq,
                       .q_stride = qs, .kv_stride = kvs, .q_pos0 = n0, .n_heads = nh,
                       .n_kv = nkv, .head_dim = hd, .causal = 1,
                       .scale = 1.0f / sqrtf((float)hd)};
    cpu->ops->attention(cpu, &a);
    const int32_t n0i = (int32_t)n0;
    plm_attn_args ag = a;
    ag.tk = cap, ag.q_pos0 = cap - tq; /* bounds only */
    ag.q = dev_from(gpu, qb, nq * 4), ag.k = dev_from(gpu, kb, nkv_ * 4);
    ag.v = dev_from(gpu, vb, nkv_ * 4), ag.out = dev_nan(gpu, no);
    ag.q_pos0_dev = dev_from(gpu, &n0i, sizeof n0i);
    gpu->ops->attention(gpu, &ag);
    float *got = fetch(gpu, ag.out, no);
    char name[128];
    snprintf(name, sizeof name, "attn_q_pos0_dev_tq%lld_n0_%lld_cap%lld_h%d_kv%d_hd%d",
             (long long)tq, (long long)n0, (long long)cap, nh, nkv, hd);
    check(gpu, name, got, want, no, 1e-5);
    gpu->ops->release(gpu, (void *)ag.q), gpu->ops->release(gpu, (void *)ag.k);
    gpu->ops->release(gpu, (void *)ag.v), gpu->ops->release(gpu, ag.out);
    gpu->ops->release(gpu, (void *)ag.q_pos0_dev);
    free(qb), free(kb), free(vb), free(want), free(got);
}

/* One decoder layer's step as lm/llama.c records it (norm, q/k/v, rope_append, attention at
 * the device-side row, o, add+norm, gate/up, down), recorded once and replayed with new step
 * values uploaded by graph_launch, against the CPU's plain ops with host values, at cache
 * lengths that give one split and several. Then graph_launch must refuse the recording once
 * the backend's decode scratch has been reallocated. */
static void graph_steps(void)
{
    enum { D = 512, NH = 8, NKV = 2, HD = 64, QD = NH * HD, KVD = NKV * HD, F = 1024, CAP = 1200 };
    enum { NB = 2 + HD / 2 + D }; /* the step block: pos, row, inv_freq, x */
    seed(777);
    void *h[7], *d[7];
    const int64_t wr[7] = {QD, KVD, KVD, D, F, F, D}, wc[7] = {D, D, D, QD, D, D, F};
    plm_weight wg[7], wcpu[7];
    for (int i = 0; i < 7; i++) {
        wg[i] = fused_weight(PLM_BF16, wr[i], wc[i], 0, &h[i], &d[i]);
        wcpu[i] = (plm_weight){PLM_BF16, wr[i], wc[i], h[i]};
    }
    float *gm = rand_vec(D, 0.3f, 1.0f), *kc = rand_vec((size_t)CAP * KVD, 1.0f, 0.0f);
    float *vc = rand_vec((size_t)CAP * KVD, 1.0f, 0.0f);
    float *dgm = dev_from(gpu, gm, D * 4), *dkc = dev_from(gpu, kc, (size_t)CAP * KVD * 4);
    float *dvc = dev_from(gpu, vc, (size_t)CAP * KVD * 4);
    float *blk = dev_nan(gpu, NB), *dh = dev_nan(gpu, D), *dq = dev_nan(gpu, QD);
    float *dkn = dev_nan(gpu, KVD), *dvn = dev_nan(gpu, KVD), *datt = dev_nan(gpu, QD);
    float *dg = dev_nan(gpu, F), *du = dev_nan(gpu, F), *dout = dev_nan(gpu, D);
    const int32_t *dpos = (const int32_t *)blk, *drow = dpos + 1;
    const float *dinv = blk + 2;
    float *dx = blk + 2 + HD / 2;
    const plm_backend_ops *o = gpu->ops;

    /* warm-up, unrecorded: the buffers a recording needs must exist before it */
    float *hb = xmalloc(NB * 4);
    int32_t *hi = (int32_t *)hb;
    hi[0] = 3, hi[1] = 2;
    for (int j = 0; j < HD / 2; j++) hb[2 + j] = powf(10000.0f, -2.0f * (float)j / HD);
    for (int j = 0; j < D; j++) hb[2 + HD / 2 + j] = frand();
    void *graph = NULL;
    o->upload(gpu, blk, hb, NB * 4);
    for (int rec = 0; rec < 2; rec++) {
        if (rec && !o->graph_begin(gpu)) {
            result(0, "graph_begin", 0, 0, "graph_begin refused");
            break;
        }
        o->rmsnorm(gpu, dh, dx, dgm, 1, D, 1e-5f);
        float *const ys[3] = {dq, dkn, dvn};
        const plm_weight *const ws[3] = {&wg[0], &wg[1], &wg[2]};
        const float *const bs[3] = {NULL, NULL, NULL};
        o->matmul_multi(gpu, 3, ys, dh, ws, bs, 1);
        const plm_rope_step rs = {dq, dkn, dvn, dkc, dvc, NH, NKV, HD, dpos, drow, dinv};
        o->rope_append(gpu, &rs);
        plm_attn_args a = {.out = datt, .q = dq, .k = dkc, .v = dvc, .tq = 1, .tk = CAP,
                           .q_stride = QD, .kv_stride = KVD, .q_pos0 = CAP - 1, .n_heads = NH,
                           .n_kv = NKV, .head_dim = HD, .causal = 1,
                           .scale = 1.0f / sqrtf((float)HD), .q_pos0_dev = drow};
        o->attention(gpu, &a);
        o->matmul(gpu, dh, datt, &wg[3], NULL, 1);
        o->add_rmsnorm(gpu, dh, dx, dh, dgm, 1, D, 1e-5f);
        o->matmul_glu(gpu, dg, du, dh, &wg[4], NULL, &wg[5], NULL, 1);
        o->matmul(gpu, dout, dg, &wg[6], NULL, 1);
        if (!rec) {
            o->upload(gpu, dkc, kc, (size_t)CAP * KVD * 4); /* undo the warm-up's row */
            o->upload(gpu, dvc, vc, (size_t)CAP * KVD * 4);
        } else {
            graph = o->graph_end(gpu);
        }
    }
    result(graph != NULL && !o->error(gpu), "graph_records_a_decode_step", 0, 0,
           o->error(gpu) ? o->error(gpu) : "graph_end refused the recording");
    static const int rows[] = {100, 101, 102, 5, 0, 700, 1199, 64};
    float *q = xmalloc(QD * 4), *kn = xmalloc(KVD * 4), *vn = xmalloc(KVD * 4);
    float *att = xmalloc(QD * 4), *hh = xmalloc(D * 4), *g = xmalloc(F * 4), *u = xmalloc(F * 4);
    float *want = xmalloc(D * 4), *x = xmalloc(D * 4);
    for (size_t s = 0; graph && s < sizeof rows / sizeof rows[0]; s++) {
        const int32_t row = rows[s], pos = row + 7;
        hi[0] = pos, hi[1] = row;
        for (int j = 0; j < D; j++) hb[2 + HD / 2 + j] = frand();
        memcpy(x, hb + 2 + HD / 2, D * 4);
        const float *inv = hb + 2;
        /* the CPU, plain ops and host values */
        cpu->ops->rmsnorm(cpu, hh, x, gm, 1, D, 1e-5f);
        cpu->ops->matmul(cpu, q, hh, &wcpu[0], NULL, 1);
        cpu->ops->matmul(cpu, kn, hh, &wcpu[1], NULL, 1);
        cpu->ops->matmul(cpu, vn, hh, &wcpu[2], NULL, 1);
        cpu->ops->rope(cpu, q, 1, QD, NH, HD, &pos, inv);
        cpu->ops->rope(cpu, kn, 1, KVD, NKV, HD, &pos, inv);
        memcpy(kc + (size_t)row * KVD, kn, KVD * 4);
        memcpy(vc + (size_t)row * KVD, vn, KVD * 4);
        plm_attn_args a = {.out = att, .q = q, .k = kc, .v = vc, .tq = 1, .tk = row + 1,
                           .q_stride = QD, .kv_stride = KVD, .q_pos0 = row, .n_heads = NH,
                           .n_kv = NKV, .head_dim = HD, .causal = 1,
                           .scale = 1.0f / sqrtf((float)HD)};
        cpu->ops->attention(cpu, &a);
        cpu->ops->matmul(cpu, hh, att, &wcpu[3], NULL, 1);
        cpu->ops->add(cpu, x, x, hh, D);
        cpu->ops->rmsnorm(cpu, hh, x, gm, 1, D, 1e-5f);
        cpu->ops->matmul(cpu, g, hh, &wcpu[4], NULL, 1);
        cpu->ops->matmul(cpu, u, hh, &wcpu[5], NULL, 1);
        cpu->ops->silu_mul(cpu, g, g, u, F);
        cpu->ops->matmul(cpu, want, g, &wcpu[6], NULL, 1);
        /* the GPU: the recording, replayed */
        const int ran = o->graph_launch(gpu, graph, blk, hb, NB * 4);
        float *got = fetch(gpu, dout, D), *gk = fetch(gpu, dkc, (size_t)CAP * KVD);
        char name[96];
        snprintf(name, sizeof name, "graph_step_row%d", row);
        if (!ran) result(0, name, 0, 0, "graph_launch refused the recording");
        else check(gpu, name, got, want, D, 1e-4);
        strcat(name, "_kcache");
        check(gpu, name, gk, kc, (size_t)CAP * KVD, 1e-5);
        free(got), free(gk);
    }
    if (graph) { /* the recording's pointers into the backend's scratch are now stale */
        plm_cuda_buffers_moved(gpu);
        const int ran = o->graph_launch(gpu, graph, blk, hb, NB * 4);
        result(!ran && !o->error(gpu), "graph_refused_after_scratch_moved", ran, 0,
               "graph_launch replayed a recording whose scratch was reallocated");
        o->graph_free(gpu, graph);
    }
    for (int i = 0; i < 7; i++) gpu->ops->release(gpu, d[i]), free(h[i]);
    float *bufs[] = {dgm, dkc, dvc, blk, dh, dq, dkn, dvn, datt, dg, du, dout};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) gpu->ops->release(gpu, bufs[i]);
    free(gm), free(kc), free(vc), free(hb), free(q), free(kn), free(vn), free(att), free(hh);
    free(g), free(u), free(want), free(x);
}

static void graph_ops(void)
{
    if (!gpu->ops->graph_begin || !gpu->ops->graph_end || !gpu->ops->graph_launch ||
        !gpu->ops->graph_free || !gpu->ops->rope_append) {
        const char *off = getenv("PLM_CUDA_GRAPH");
        if (off && !strcmp(off, "0")) printf("SKIP graph ops: PLM_CUDA_GRAPH=0\n");
        else result(0, "graph_ops_present", 0, 0, "the CUDA backend lacks a graph op");
        return;
    }
    rope_append_case(32, 8, 128, 0, 5);
    rope_append_case(32, 32, 128, 577, 4000);
    rope_append_case(4, 2, 65, 9, 123); /* odd head_dim: the last channel is carried over */
    attn_pos_dev_case(1, 0, 64, 32, 8, 128);
    attn_pos_dev_case(1, 31, 700, 32, 8, 128);
    attn_pos_dev_case(1, 628, 4200, 32, 32, 128);
    attn_pos_dev_case(1, 4099, 4200, 8, 2, 64);
    attn_pos_dev_case(3, 577, 1000, 8, 2, 80);
    graph_steps();

    setenv("PLM_CUDA_GRAPH", "0", 1);
    plm_backend *g2 = NULL;
    plm_error err;
    plm_status st = plm_backend_cuda_new(0, &g2, &err);
    unsetenv("PLM_CUDA_GRAPH");
    if (st != PLM_OK) {
        result(0, "graph_off_backend_new", 0, 0, err.msg);
        return;
    }
    result(!g2->ops->graph_begin && !g2->ops->rope_append && g2->ops->matmul_multi,
           "graph_env_off_leaves_ops_null", 0, 0, "PLM_CUDA_GRAPH=0 ignored");
    plm_backend_free(g2);
}

/* ---- split-K decode attention (cuda/cu_attn_decode.cu) ---- */

static int cmp_i32(const void *a, const void *b)
{
    const int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Decode attention (tq <= 8 takes cu_attn_decode) against the CPU: causal at the end of the
 * cache (q_pos0 = tk - tq) unless causal = 0. sparse: 1 = rows (each kv head keeps a random
 * ascending third of the keys), 2 = bias ([nh x tk] steering logits), 3 = both. pad: one float
 * added to the q and K/V row strides, so rows lose their 16-byte alignment (scalar loads). */
static void decode_case(int64_t tq, int64_t tk, int nh, int nkv, int hd, int causal, int sparse,
                        int pad)
{
    seed((uint64_t)(tq * 100003 + tk * 31 + nh * 7 + hd + sparse * 3 + pad + causal * 11));
    const int64_t qs = (int64_t)nh * hd + pad, kvs = (int64_t)nkv * hd + pad;
    const size_t nq = (size_t)(tq * qs), nkv_ = (size_t)(tk * kvs), no = (size_t)(tq * nh * hd);
    float *qb = rand_vec(nq, 2.0f, 0.0f), *kb = rand_vec(nkv_, 2.0f, 0.0f);
    float *vb = rand_vec(nkv_, 1.0f, 0.0f), *want = xmalloc(no * 4);
    const int64_t n_rows = (sparse & 1) ? tk / 3 + 1 : 0;
    int32_t *rows = NULL;
    if (sparse & 1) { /* partial Fisher-Yates per kv head, then ascending */
        rows = xmalloc((size_t)(nkv * n_rows) * 4);
        int32_t *perm = xmalloc((size_t)tk * 4);
        for (int h = 0; h < nkv; h++) {
            for (int64_t j = 0; j < tk; j++) perm[j] = (int32_t)j;
            for (int64_t j = 0; j < n_rows; j++) {
                int64_t r = j + (int64_t)((frand() + 1.0f) * 0.5f * (float)(tk - j));
                if (r >= tk) r = tk - 1;
                const int32_t t = perm[j];
                perm[j] = perm[r], perm[r] = t;
            }
            memcpy(rows + h * n_rows, perm, (size_t)n_rows * 4);
            qsort(rows + h * n_rows, (size_t)n_rows, 4, cmp_i32);
        }
        free(perm);
    }
    float *bias = (sparse & 2) ? rand_vec((size_t)(nh * tk), 2.0f, 0.0f) : NULL;
    const int64_t q_pos0 = causal && tk > tq ? tk - tq : 0;
    plm_attn_args a = {.out = want, .q = qb, .k = kb, .v = vb, .tq = tq, .tk = tk,
                       .q_stride = qs, .kv_stride = kvs, .q_pos0 = q_pos0, .n_heads = nh,
                       .n_kv = nkv, .head_dim = hd, .causal = causal,
                       .scale = 1.0f / sqrtf((float)hd), .rows = rows, .n_rows = n_rows,
                       .bias = bias};
    cpu->ops->attention(cpu, &a);

    plm_attn_args ag = a;
    ag.q = dev_from(gpu, qb, nq * 4);
    ag.k = dev_from(gpu, kb, nkv_ * 4);
    ag.v = dev_from(gpu, vb, nkv_ * 4);
    ag.out = dev_nan(gpu, no);
    ag.rows = rows ? dev_from(gpu, rows, (size_t)(nkv * n_rows) * 4) : NULL;
    ag.bias = bias ? dev_from(gpu, bias, (size_t)(nh * tk) * 4) : NULL;
    gpu->ops->attention(gpu, &ag);
    float *got = fetch(gpu, ag.out, no);
    char name[160];
    snprintf(name, sizeof name, "attn_decode_tq%lld_tk%lld_h%d_kv%d_hd%d%s%s%s%s",
             (long long)tq, (long long)tk, nh, nkv, hd, causal ? "_causal" : "",
             (sparse & 1) ? "_rows" : "", (sparse & 2) ? "_bias" : "", pad ? "_pad" : "");
    check(gpu, name, got, want, no, 1e-5);
    gpu->ops->release(gpu, (void *)ag.q), gpu->ops->release(gpu, (void *)ag.k);
    gpu->ops->release(gpu, (void *)ag.v), gpu->ops->release(gpu, ag.out);
    gpu->ops->release(gpu, (void *)ag.rows), gpu->ops->release(gpu, (void *)ag.bias);
    free(qb), free(kb), free(vb), free(want), free(got), free(rows), free(bias);
}

static void attn_decodes(void)
{
    static const int64_t tqs[] = {1, 3, 8}, tks[] = {1, 31, 577, 4100};
    static const int heads[][2] = {{32, 32}, {8, 2}}, hds[] = {64, 128, 80};
    for (size_t a = 0; a < 3; a++)
        for (size_t b = 0; b < 4; b++)
            for (size_t c = 0; c < 2; c++)
                for (size_t d = 0; d < 3; d++)
                    decode_case(tqs[a], tks[b], heads[c][0], heads[c][1], hds[d], 1, 0, 0);
    for (size_t a = 0; a < 3; a++)
        for (int sparse = 1; sparse <= 3; sparse++) {
            decode_case(tqs[a], 577, 8, 2, 128, 1, sparse, 0);
            decode_case(tqs[a], 4100, 32, 32, 128, 1, sparse, 0);
            decode_case(tqs[a], 577, 32, 32, 80, 1, sparse, 0);
        }
    /* non-causal; lanes' 4-float groups past head_dim; one and two floats per lane; the 8-float
     * lanes with their 4-row query blocks (hd 256: tq 8 x 4 heads is 8 blocks per kv head);
     * unaligned rows; GQA groups of 8 and 4 */
    decode_case(3, 577, 8, 2, 128, 0, 0, 0);
    decode_case(8, 4100, 32, 32, 128, 0, 2, 0);
    decode_case(3, 577, 8, 2, 32, 1, 0, 0);
    decode_case(1, 1000, 4, 4, 36, 1, 0, 0);
    decode_case(8, 577, 8, 2, 256, 1, 0, 0);
    decode_case(1, 4100, 8, 1, 200, 1, 3, 0);
    decode_case(3, 577, 8, 2, 128, 1, 0, 1);
    decode_case(8, 31, 32, 32, 80, 1, 1, 1);
    decode_case(1, 4100, 32, 4, 128, 1, 0, 0);
    decode_case(2, 0, 8, 2, 128, 1, 0, 0); /* no keys: zeros */
}

int main(void)
{
    if (cuda_check_begin()) return 1;
    if (!getenv("PLM_TEST_SKIP_MATMUL")) gemvs(); /* run.sh's racecheck/initcheck skip matmuls */
    fused_ops();
    graph_ops();
    attn_decodes();
    return cuda_check_end();
}
