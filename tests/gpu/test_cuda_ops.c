/* Every CUDA op against the CPU reference backend, on random inputs with fixed seeds and sizes
 * chosen to hit edges (m = 1, odd widths, head dims that are not powers of two, GQA, causal
 * decode at q_pos0 > 0, offset pointers). Outputs are poisoned with NaN before each run so an
 * element the kernel never writes fails the check. Plain C without Criterion: the GPU machine
 * has no test framework. Prints one PASS/FAIL line per check and "N passed, M failed" last;
 * exits 1 on any failure. PLM_TEST_SKIP_MATMUL=1 leaves out the cuBLAS checks. The decode
 * step's own kernels (GEMV, the fused decoder ops, recorded CUDA-graph steps, split-K decode
 * attention) are checked by test_cuda_decode.c. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/backend.h"
#include "core/dtype.h"
#include "cuda/cu_test_hooks.h"
#include "tests/gpu/cuda_check.h"
#include "tests/support/compare.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;

/* ---- matmul ---- */

/* Weights uploaded through wbe, run through g (instances share device pointers); `off` floats
 * shift x and y off their allocation's alignment. */
static void test_matmul(plm_backend *wbe, plm_backend *g, const char *tag, plm_dtype dt,
                        int64_t m, int64_t n, int64_t k, int with_bias, int off, double tol)
{
    seed((uint64_t)(m * 131 + n * 7 + k + dt * 1000003 + with_bias));
    float *wf = rand_vec((size_t)(n * k), 1.0f / sqrtf((float)k), 0.0f);
    void *wh = to_dtype(wf, (size_t)(n * k), dt);
    float *x = rand_vec((size_t)(m * k), 1.0f, 0.0f);
    float *bias = with_bias ? rand_vec((size_t)n, 0.5f, 0.0f) : NULL;
    float *want = xmalloc((size_t)(m * n) * sizeof(float));
    plm_weight wc = {dt, n, k, wh};
    cpu->ops->matmul(cpu, want, x, &wc, bias, m);

    size_t wbytes = (size_t)(n * k) * plm_dtype_size(dt);
    plm_weight wg = {dt, n, k, dev_from(wbe, wh, wbytes)};
    float *dx = dev_nan(g, (size_t)(m * k + off));
    g->ops->upload(g, dx + off, x, (size_t)(m * k) * sizeof(float));
    float *db = bias ? dev_from(g, bias, (size_t)n * sizeof(float)) : NULL;
    float *dy = dev_nan(g, (size_t)(m * n + off));
    g->ops->matmul(g, dy + off, dx + off, &wg, db, m);
    float *got = fetch(g, dy + off, (size_t)(m * n));
    char name[128];
    snprintf(name, sizeof name, "matmul%s_%s_m%lld_n%lld_k%lld%s%s", tag, plm_dtype_name(dt),
             (long long)m, (long long)n, (long long)k, with_bias ? "_bias" : "",
             off ? "_offset" : "");
    check(g, name, got, want, (size_t)(m * n), tol);
    wbe->ops->release(wbe, (void *)wg.data);
    g->ops->release(g, dx);
    g->ops->release(g, db);
    g->ops->release(g, dy);
    free(wf), free(wh), free(x), free(bias), free(want), free(got);
}

static void matmuls(void)
{
    static const int64_t shapes[][3] = {{1, 33, 64},    {7, 33, 64},     {577, 1024, 1024},
                                        {1, 4096, 4096}, {7, 11008, 512}, {577, 33, 200},
                                        {13, 32000, 256}};
    static const plm_dtype dts[] = {PLM_F32, PLM_BF16, PLM_F16};
    static const double tols[] = {1e-5, 1e-2, 3e-3};
    for (int d = 0; d < 3; d++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            test_matmul(gpu, gpu, "", dts[d], shapes[s][0], shapes[s][1], shapes[s][2],
                        (int)(s % 2 == 0), 0, tols[d]);
    for (int d = 0; d < 3; d++) {
        test_matmul(gpu, gpu, "", dts[d], 7, 33, 64, 1, 1, tols[d]);
        test_matmul(gpu, gpu, "", dts[d], 577, 1024, 1024, 0, 3, tols[d]);
    }
    /* cuBLASLt should take the aligned shapes; the fallback is for what it refuses */
    long nm = 0, nf = 0;
    plm_cuda_gemm_counts(gpu, &nm, &nf);
    printf("  cublasLt ran %ld of %ld matmuls (%ld fell back to cublasGemmEx)\n", nm - nf, nm, nf);
    result(nm > 0 && nf < nm, "matmul_uses_cublaslt", (double)nf, (double)nm, "Lt never ran");
}

/* The cublasGemmEx fallback, forced through PLM_CUDA_GEMM in a second instance that also
 * reads weights uploaded by the first. */
static void matmuls_gemmex(void)
{
    setenv("PLM_CUDA_GEMM", "gemmex", 1);
    plm_backend *g2 = NULL;
    plm_error err;
    plm_status st = plm_backend_cuda_new(0, &g2, &err);
    unsetenv("PLM_CUDA_GEMM");
    if (st != PLM_OK) {
        result(0, "gemmex_backend_new", 0, 0, err.msg);
        return;
    }
    test_matmul(gpu, g2, "_gemmex", PLM_F32, 7, 33, 64, 1, 1, 1e-5);
    test_matmul(gpu, g2, "_gemmex", PLM_F32, 577, 1024, 1024, 1, 0, 1e-5);
    test_matmul(gpu, g2, "_gemmex", PLM_BF16, 577, 33, 200, 1, 1, 1e-2);
    test_matmul(gpu, g2, "_gemmex", PLM_F16, 1, 4096, 4096, 0, 0, 3e-3);
    long nm = 0, nf = 0;
    plm_cuda_gemm_counts(g2, &nm, &nf);
    result(nm == 4 && nf == 4, "gemmex_forced", (double)nf, 4, "PLM_CUDA_GEMM=gemmex ignored");
    plm_backend_free(g2);
}

/* ---- bf16/f16 twins (cu_twin): producers write the rounded copy the next GEMM reads ---- */

enum { TW_M = 300, TW_D = 256, TW_I = 512, TW_STEPS = 9 };

typedef struct twin_run {
    float *out;      /* TW_STEPS x [TW_M x TW_I] on the host: each step's last matmul */
    long uses;       /* matmuls that read a twin */
    int expected;    /* uses the fused/unfused op table should give */
} twin_run;

/* One producer -> matmul chain after another on g (weights of dtype dt), then three cases a twin
 * must not serve: the rows changed by an op that writes no twin (add), by an upload, and a twin
 * of other rows in between. */
static void twin_chain(plm_backend *g, plm_dtype dt, twin_run *r)
{
    const plm_backend_ops *o = g->ops;
    const int64_t M = TW_M, D = TW_D, I = TW_I;
    seed(4242);
    float *x = rand_vec((size_t)(M * I), 2.0f, 0.5f), *c = rand_vec((size_t)(M * I), 1.0f, 0.0f);
    float *gm = rand_vec((size_t)I, 1.0f, 1.0f), *bt = rand_vec((size_t)I, 0.5f, 0.0f);
    float *w1f = rand_vec((size_t)(D * D), 1.0f / 16, 0.0f);
    float *wgf = rand_vec((size_t)(I * D), 1.0f / 16, 0.0f);
    float *wdf = rand_vec((size_t)(D * I), 1.0f / 22, 0.0f);
    void *w1h = to_dtype(w1f, (size_t)(D * D), dt), *wgh = to_dtype(wgf, (size_t)(I * D), dt);
    void *wdh = to_dtype(wdf, (size_t)(D * I), dt);
    const size_t es = plm_dtype_size(dt);
    plm_weight w1 = {dt, D, D, dev_from(g, w1h, (size_t)(D * D) * es)};
    plm_weight wg = {dt, I, D, dev_from(g, wgh, (size_t)(I * D) * es)};
    plm_weight wd = {dt, D, I, dev_from(g, wdh, (size_t)(D * I) * es)};
    float *dx = dev_from(g, x, (size_t)(M * I) * 4), *dc = dev_from(g, c, (size_t)(M * I) * 4);
    float *dg = dev_from(g, gm, (size_t)I * 4), *db = dev_from(g, bt, (size_t)I * 4);
    float *h = dev_nan(g, (size_t)(M * I)), *h2 = dev_nan(g, (size_t)(M * I));
    float *res = dev_from(g, x, (size_t)(M * D) * 4), *u = dev_nan(g, (size_t)(M * I));
    float *y = dev_nan(g, (size_t)(M * I)), *y2 = dev_nan(g, (size_t)(M * D));
    const long before = plm_cuda_twin_uses(g);
    int step = 0, exp = 0;
#define TW_KEEP(buf, n)                                                                            \
    do {                                                                                           \
        o->download(g, r->out + (size_t)step * M * I, (buf), (size_t)(n) * sizeof(float));         \
        step++;                                                                                    \
    } while (0)
    o->matmul(g, y, dx, &w1, NULL, M); /* the first 16-bit GEMM: producers write twins after it */
    o->rmsnorm(g, h, dx, dg, M, D, 1e-6f);
    o->matmul(g, y, h, &w1, NULL, M), exp++;
    TW_KEEP(y, M * D);
    o->layernorm(g, h, dx, dg, db, M, D, 1e-5f);
    o->matmul(g, y, h, &w1, NULL, M), exp++;
    TW_KEEP(y, M * D);
    if (o->add_rmsnorm) {
        o->add_rmsnorm(g, h, res, dc, dg, M, D, 1e-6f);
    } else {
        o->add(g, res, res, dc, M * D);
        o->rmsnorm(g, h, res, dg, M, D, 1e-6f);
    }
    if (o->matmul_multi) {
        float *ys[2] = {y, y2};
        const plm_weight *ws[2] = {&w1, &w1};
        const float *bs[2] = {NULL, db};
        o->matmul_multi(g, 2, ys, h, ws, bs, M), exp += 2;
    } else {
        o->matmul(g, y, h, &w1, NULL, M), exp++;
        o->matmul(g, y2, h, &w1, db, M);
    }
    TW_KEEP(y2, M * D);
    o->rmsnorm(g, h, dx, dg, M, D, 1e-6f);
    if (o->matmul_glu) {
        o->matmul_glu(g, y, u, h, &wg, NULL, &wg, db, M), exp += 2;
    } else {
        o->matmul(g, y, h, &wg, NULL, M), exp++;
        o->matmul(g, u, h, &wg, db, M);
        o->silu_mul(g, y, y, u, M * I);
    }
    o->matmul(g, y2, y, &wd, NULL, M), exp++;
    TW_KEEP(y2, M * D);
    o->act(g, h, dx, M * I, PLM_ACT_QUICK_GELU); /* rows unknown: judged by size */
    o->matmul(g, y2, h, &wd, NULL, M), exp++;
    TW_KEEP(y2, M * D);
    o->silu_mul(g, h, dx, dc, M * I);
    o->matmul(g, y2, h, &wd, NULL, M), exp++;
    TW_KEEP(y2, M * D);
    o->rmsnorm(g, h, dx, dg, M, D, 1e-6f); /* then changed by an op without a twin */
    o->add(g, h, h, dc, M * D);
    o->matmul(g, y, h, &w1, NULL, M);
    TW_KEEP(y, M * D);
    o->rmsnorm(g, h, dx, dg, M, D, 1e-6f); /* then overwritten from the host */
    o->upload(g, h, c, (size_t)(M * D) * 4);
    o->matmul(g, y, h, &w1, NULL, M);
    TW_KEEP(y, M * D);
    o->rmsnorm(g, h, dx, dg, M, D, 1e-6f); /* then another twin in between */
    o->rmsnorm(g, h2, dc, dg, M, D, 1e-6f);
    o->matmul(g, y, h, &w1, NULL, M);
    TW_KEEP(y, M * D);
#undef TW_KEEP
    r->uses = plm_cuda_twin_uses(g) - before;
    r->expected = exp;
    void *bufs[] = {(void *)w1.data, (void *)wg.data, (void *)wd.data, dx, dc, dg, db, h, h2, res,
                    u, y, y2};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) o->release(g, bufs[i]);
    free(x), free(c), free(gm), free(bt), free(w1f), free(wgf), free(wdf);
    free(w1h), free(wgh), free(wdh);
}

/* The chain with twins and without (PLM_CUDA_TWIN=0, a second instance) must agree bit for bit:
 * a twin holds the rounding pass's values, and a stale one would show as a difference. */
static void test_twins(plm_dtype dt)
{
    const size_t n = (size_t)TW_STEPS * TW_M * TW_I;
    twin_run on = {xmalloc(n * 4), 0, 0}, off = {xmalloc(n * 4), 0, 0};
    for (size_t i = 0; i < n; i++) on.out[i] = off.out[i] = 0.0f;
    setenv("PLM_CUDA_TWIN", "0", 1);
    plm_backend *g0 = NULL;
    plm_error err;
    plm_status st = plm_backend_cuda_new(0, &g0, &err);
    unsetenv("PLM_CUDA_TWIN");
    char name[64];
    snprintf(name, sizeof name, "twins_%s", plm_dtype_name(dt));
    if (st != PLM_OK) {
        result(0, name, 0, 0, err.msg);
        free(on.out), free(off.out);
        return;
    }
    twin_chain(gpu, dt, &on);
    twin_chain(g0, dt, &off);
    const char *e = gpu->ops->error(gpu) ? gpu->ops->error(gpu) : g0->ops->error(g0);
    size_t diff = 0;
    for (size_t i = 0; i < n; i++) diff += memcmp(&on.out[i], &off.out[i], sizeof(float)) != 0;
    char why[160];
    snprintf(why, sizeof why, "%s%zu elements differ; twins read %ld times (expected %d), %ld "
             "with PLM_CUDA_TWIN=0", e ? e : "", diff, on.uses, on.expected, off.uses);
    printf("  %s: twins read %ld times, %zu of %zu elements differ\n", name, on.uses, diff, n);
    result(!e && diff == 0 && on.uses == on.expected && off.uses == 0, name, (double)diff, 0,
           why);
    plm_backend_free(g0);
    free(on.out), free(off.out);
}

/* ---- norms and elementwise ---- */

static void test_norms(int64_t m, int64_t n)
{
    seed((uint64_t)(m * 17 + n));
    /* an offset mean exercises the two-pass variance */
    float *x = rand_vec((size_t)(m * n), 2.0f, 3.0f), *gm = rand_vec((size_t)n, 1.0f, 1.0f);
    float *bt = rand_vec((size_t)n, 0.5f, 0.0f);
    float *want = xmalloc((size_t)(m * n) * sizeof(float));
    float *dx = dev_from(gpu, x, (size_t)(m * n) * 4), *dg = dev_from(gpu, gm, (size_t)n * 4);
    float *db = dev_from(gpu, bt, (size_t)n * 4);
    char name[96];
    for (int kind = 0; kind < 3; kind++) {
        float *dy = dev_nan(gpu, (size_t)(m * n));
        if (kind == 0) {
            cpu->ops->layernorm(cpu, want, x, gm, bt, m, n, 1e-5f);
            gpu->ops->layernorm(gpu, dy, dx, dg, db, m, n, 1e-5f);
        } else if (kind == 1) {
            cpu->ops->layernorm(cpu, want, x, gm, NULL, m, n, 1e-6f);
            gpu->ops->layernorm(gpu, dy, dx, dg, NULL, m, n, 1e-6f);
        } else {
            cpu->ops->rmsnorm(cpu, want, x, gm, m, n, 1e-6f);
            gpu->ops->rmsnorm(gpu, dy, dx, dg, m, n, 1e-6f);
        }
        float *got = fetch(gpu, dy, (size_t)(m * n));
        snprintf(name, sizeof name, "%s_m%lld_n%lld",
                 kind == 0 ? "layernorm" : kind == 1 ? "layernorm_nobias" : "rmsnorm",
                 (long long)m, (long long)n);
        check(gpu, name, got, want, (size_t)(m * n), 1e-5);
        free(got);
        gpu->ops->release(gpu, dy);
    }
    /* add_layernorm (the fused op): x += h, then h = layernorm(x) in place of h, against the
     * CPU's add + layernorm; both results (the new x and the norm) are checked */
    if (gpu->ops->add_layernorm) {
        float *hres = rand_vec((size_t)(m * n), 1.0f, -0.5f);
        float *xw = xmalloc((size_t)(m * n) * 4);
        memcpy(xw, x, (size_t)(m * n) * 4);
        cpu->ops->add(cpu, xw, xw, hres, m * n);
        cpu->ops->layernorm(cpu, want, xw, gm, bt, m, n, 1e-5f);
        float *dxx = dev_from(gpu, x, (size_t)(m * n) * 4);
        float *dh = dev_from(gpu, hres, (size_t)(m * n) * 4);
        gpu->ops->add_layernorm(gpu, dh, dxx, dh, dg, db, m, n, 1e-5f);
        float *got = fetch(gpu, dh, (size_t)(m * n)), *gotx = fetch(gpu, dxx, (size_t)(m * n));
        snprintf(name, sizeof name, "add_layernorm_m%lld_n%lld", (long long)m, (long long)n);
        check(gpu, name, got, want, (size_t)(m * n), 1e-5);
        snprintf(name, sizeof name, "add_layernorm_residual_m%lld_n%lld", (long long)m,
                 (long long)n);
        check(gpu, name, gotx, xw, (size_t)(m * n), 1e-6);
        free(got), free(gotx), free(hres), free(xw);
        gpu->ops->release(gpu, dxx), gpu->ops->release(gpu, dh);
    }
    gpu->ops->release(gpu, dx), gpu->ops->release(gpu, dg), gpu->ops->release(gpu, db);
    free(x), free(gm), free(bt), free(want);
}

static void test_elementwise(int64_t m, int64_t n)
{
    const int64_t t = m * n;
    seed((uint64_t)t);
    float *a = rand_vec((size_t)t, 6.0f, 0.0f), *b = rand_vec((size_t)t, 3.0f, 0.0f);
    float *row = rand_vec((size_t)n, 1.0f, 0.0f), *want = xmalloc((size_t)t * 4);
    float *da = dev_from(gpu, a, (size_t)t * 4), *db = dev_from(gpu, b, (size_t)t * 4);
    float *dr = dev_from(gpu, row, (size_t)n * 4);
    static const char *acts[] = {"gelu", "gelu_tanh", "quick_gelu", "silu", "relu"};
    char name[96];
    for (int op = 0; op < 8; op++) {
        float *dy = dev_nan(gpu, (size_t)t);
        if (op == 0) {
            cpu->ops->add(cpu, want, a, b, t);
            gpu->ops->add(gpu, dy, da, db, t);
            snprintf(name, sizeof name, "add_n%lld", (long long)t);
        } else if (op == 1) {
            cpu->ops->add_row(cpu, want, a, row, m, n);
            gpu->ops->add_row(gpu, dy, da, dr, m, n);
            snprintf(name, sizeof name, "add_row_m%lld_n%lld", (long long)m, (long long)n);
        } else if (op == 2) {
            cpu->ops->silu_mul(cpu, want, a, b, t);
            gpu->ops->silu_mul(gpu, dy, da, db, t);
            snprintf(name, sizeof name, "silu_mul_n%lld", (long long)t);
        } else {
            plm_act act = (plm_act)(op - 3);
            cpu->ops->act(cpu, want, a, t, act);
            gpu->ops->act(gpu, dy, da, t, act);
            snprintf(name, sizeof name, "act_%s_n%lld", acts[op - 3], (long long)t);
        }
        float *got = fetch(gpu, dy, (size_t)t);
        check(gpu, name, got, want, (size_t)t, 1e-6);
        free(got);
        gpu->ops->release(gpu, dy);
    }
    /* in place, as the models call add for residuals */
    cpu->ops->add(cpu, want, a, b, t);
    gpu->ops->add(gpu, da, da, db, t);
    float *got = fetch(gpu, da, (size_t)t);
    snprintf(name, sizeof name, "add_inplace_n%lld", (long long)t);
    check(gpu, name, got, want, (size_t)t, 1e-6);
    free(got);
    gpu->ops->release(gpu, da), gpu->ops->release(gpu, db), gpu->ops->release(gpu, dr);
    free(a), free(b), free(row), free(want);
}

/* ---- rope ---- */

static void test_rope(int64_t t, int n_heads, int n_kv, int hd, int max_pos)
{
    seed((uint64_t)(t * 3 + hd));
    const int64_t stride = (int64_t)(n_heads + 2 * n_kv) * hd; /* fused qkv rows */
    const size_t nx = (size_t)(t * stride);
    float *x = rand_vec(nx, 1.0f, 0.0f), *inv = xmalloc((size_t)hd / 2 * 4);
    int32_t *pos = xmalloc((size_t)t * 4), *pos2 = xmalloc((size_t)t * 4);
    for (int j = 0; j < hd / 2; j++) inv[j] = powf(10000.0f, -2.0f * (float)j / (float)hd);
    for (int64_t i = 0; i < t; i++) pos[i] = (int32_t)((frand() + 1.0f) * 0.5f * (float)max_pos);
    memcpy(pos2, pos, (size_t)t * 4);
    float *dx = dev_from(gpu, x, nx * 4);
    /* q heads, then the k heads at their offset, like lm/llama.c */
    cpu->ops->rope(cpu, x, t, stride, n_heads, hd, pos, inv);
    cpu->ops->rope(cpu, x + n_heads * hd, t, stride, n_kv, hd, pos, inv);
    gpu->ops->rope(gpu, dx, t, stride, n_heads, hd, pos2, inv);
    /* the host array may change right after the call: staging must have copied it already */
    for (int64_t i = 0; i < t; i++) pos2[i] = -12345;
    memcpy(pos2, pos, (size_t)t * 4);
    gpu->ops->rope(gpu, dx + n_heads * hd, t, stride, n_kv, hd, pos2, inv);
    for (int64_t i = 0; i < t; i++) pos2[i] = -12345;
    float *got = fetch(gpu, dx, nx);
    char name[96];
    snprintf(name, sizeof name, "rope_t%lld_h%d_kv%d_hd%d_pos%d", (long long)t, n_heads, n_kv, hd,
             max_pos);
    check(gpu, name, got, x, nx, 1e-5);
    free(got), free(x), free(inv), free(pos), free(pos2);
    gpu->ops->release(gpu, dx);
}

/* ---- attention ---- */

/* fused: q, k, v interleaved in one [t x (nh + 2 nkv) x hd] buffer, as after a fused QKV
 * projection (strides > width); otherwise three packed buffers. Runs on g, checks against tol,
 * returns the relative L2 error. */
static double attention_case(plm_backend *g, const char *tag, double tol, int64_t tq, int64_t tk,
                             int nh, int nkv, int hd, int causal, int64_t q_pos0, int fused)
{
    seed((uint64_t)(tq * 1000 + tk + hd + causal));
    const int64_t w = (int64_t)(nh + 2 * nkv) * hd;
    const int64_t qs = fused ? w : (int64_t)nh * hd, kvs = fused ? w : (int64_t)nkv * hd;
    const int64_t rows = tq > tk ? tq : tk;
    const size_t nq = fused ? (size_t)(rows * w) : (size_t)(tq * qs);
    const size_t nkv_ = fused ? 0 : (size_t)(tk * kvs);
    float *qb = rand_vec(nq, 2.0f, 0.0f);
    float *kb = fused ? NULL : rand_vec(nkv_, 2.0f, 0.0f);
    float *vb = fused ? NULL : rand_vec(nkv_, 1.0f, 0.0f);
    const size_t no = (size_t)(tq * nh * hd);
    float *want = xmalloc(no * 4);
    plm_attn_args a = {.out = want, .q = qb, .k = fused ? qb + nh * hd : kb,
                       .v = fused ? qb + (nh + nkv) * hd : vb, .tq = tq, .tk = tk, .q_stride = qs,
                       .kv_stride = kvs, .q_pos0 = q_pos0, .n_heads = nh, .n_kv = nkv,
                       .head_dim = hd, .causal = causal, .scale = 1.0f / sqrtf((float)hd)};
    cpu->ops->attention(cpu, &a);

    float *dq = dev_from(g, qb, nq * 4);
    float *dk = fused ? NULL : dev_from(g, kb, nkv_ * 4);
    float *dv = fused ? NULL : dev_from(g, vb, nkv_ * 4);
    float *dout = dev_nan(g, no);
    plm_attn_args ag = a;
    ag.out = dout;
    ag.q = dq;
    ag.k = fused ? dq + nh * hd : dk;
    ag.v = fused ? dq + (nh + nkv) * hd : dv;
    g->ops->attention(g, &ag);
    float *got = fetch(g, dout, no);
    char name[128];
    snprintf(name, sizeof name, "attention%s_tq%lld_tk%lld_h%d_kv%d_hd%d%s_pos%lld%s", tag,
             (long long)tq, (long long)tk, nh, nkv, hd, causal ? "_causal" : "",
             (long long)q_pos0, fused ? "_fused" : "");
    check(g, name, got, want, no, tol);
    const double err = rel_l2(got, want, no);
    g->ops->release(g, dq), g->ops->release(g, dk), g->ops->release(g, dv);
    g->ops->release(g, dout);
    free(qb), free(kb), free(vb), free(want), free(got);
    return err;
}

static void test_attention(int64_t tq, int64_t tk, int nh, int nkv, int hd, int causal,
                           int64_t q_pos0, int fused)
{
    attention_case(gpu, "", 1e-5, tq, tk, nh, nkv, hd, causal, q_pos0, fused);
}

/* The bf16 tensor-core kernel (cuda/cu_attention_tc.cu), taken when the backend runs a 16-bit
 * checkpoint: bf16 inputs with float32 accumulation, so rel. L2 2e-2 rather than 1e-5. Then the
 * calls it must leave to the exact kernel: float32 checkpoints, shapes it does not take, and a
 * backend made under PLM_CUDA_ATTN=fp32. */
static void attention_tc(void)
{
    static const int64_t ts[] = {16, 17, 64, 100, 577, 640};
    const double tol = 2e-2;
    gpu->ops->set_precision(gpu, 1);
    for (int hd = 64; hd <= 128; hd += 64)
        for (int causal = 0; causal < 2; causal++)
            for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
                attention_case(gpu, "_tc", tol, ts[i], ts[i], 8, 2, hd, causal, 0, 0);
    /* tq != tk, and prefill chunks after cached rows (q_pos0 > 0, tk > tq) */
    attention_case(gpu, "_tc", tol, 17, 577, 8, 2, 64, 0, 0, 0);
    attention_case(gpu, "_tc", tol, 100, 16, 8, 2, 128, 0, 0, 0);
    attention_case(gpu, "_tc", tol, 100, 640, 8, 2, 128, 1, 540, 0);
    attention_case(gpu, "_tc", tol, 17, 577, 8, 2, 64, 1, 560, 0);
    attention_case(gpu, "_tc", tol, 64, 100, 8, 2, 64, 1, 36, 0);
    attention_case(gpu, "_tc", tol, 16, 100, 8, 2, 128, 1, 10, 0); /* keys past the last query */
    attention_case(gpu, "_tc", tol, 577, 640, 8, 2, 128, 1, 63, 1);
    /* the vision tower's layer (fused qkv rows) and the 7B decoder's prefill */
    attention_case(gpu, "_tc", tol, 577, 577, 16, 16, 64, 0, 0, 1);
    attention_case(gpu, "_tc", tol, 629, 629, 32, 32, 128, 1, 0, 0);
    /* the float32 kernel is exact to ~1e-7: an error this large shows bf16 actually ran */
    const double e = attention_case(gpu, "_tc", tol, 100, 100, 8, 2, 128, 1, 0, 0);
    result(e > 1e-4, "attention_tc_taken_when_mixed", e, 1e-4, "mixed ran the float32 kernel");
    /* not for the tensor cores even when mixed: tq < 16, head_dim 80 */
    attention_case(gpu, "_mixed_fp32", 1e-5, 15, 300, 32, 8, 128, 1, 285, 0);
    attention_case(gpu, "_mixed_fp32", 1e-5, 33, 33, 8, 8, 80, 0, 0, 0);
    gpu->ops->set_precision(gpu, 0);
    attention_case(gpu, "_fp32", 1e-5, 100, 100, 8, 2, 128, 1, 0, 0);
    attention_case(gpu, "_fp32", 1e-5, 577, 577, 16, 16, 64, 0, 0, 0);

    setenv("PLM_CUDA_ATTN", "fp32", 1);
    plm_backend *g2 = NULL;
    plm_error err;
    plm_status st = plm_backend_cuda_new(0, &g2, &err);
    unsetenv("PLM_CUDA_ATTN");
    if (st != PLM_OK) {
        result(0, "attn_fp32_backend_new", 0, 0, err.msg);
        return;
    }
    g2->ops->set_precision(g2, 1);
    attention_case(g2, "_env_fp32", 1e-5, 100, 100, 8, 2, 128, 1, 0, 0);
    plm_backend_free(g2);
}

static void test_attn_probs(int64_t tq, int64_t tk, int nh, int nkv, int hd, int causal,
                            int64_t q_pos0, int per_head)
{
    seed((uint64_t)(tq * 7 + tk + hd + per_head));
    const int64_t qs = (int64_t)nh * hd, kvs = (int64_t)nkv * hd;
    float *qb = rand_vec((size_t)(tq * qs), 2.0f, 0.0f), *kb = rand_vec((size_t)(tk * kvs), 2.0f, 0.0f);
    const size_t no = (size_t)nh * (size_t)tk, nchk = per_head ? no : (size_t)tk;
    float *want = xmalloc(no * 4);
    plm_attn_args a = {.out = want, .q = qb, .k = kb, .tq = tq, .tk = tk, .q_stride = qs,
                       .kv_stride = kvs, .q_pos0 = q_pos0, .n_heads = nh, .n_kv = nkv,
                       .head_dim = hd, .causal = causal, .scale = 1.0f / sqrtf((float)hd)};
    cpu->ops->attn_probs(cpu, &a, per_head);
    float *dq = dev_from(gpu, qb, (size_t)(tq * qs) * 4), *dk = dev_from(gpu, kb, (size_t)(tk * kvs) * 4);
    float *dout = dev_nan(gpu, no);
    plm_attn_args ag = a;
    ag.out = dout, ag.q = dq, ag.k = dk;
    gpu->ops->attn_probs(gpu, &ag, per_head);
    float *got = fetch(gpu, dout, no);
    char name[128];
    snprintf(name, sizeof name, "attn_probs_tq%lld_tk%lld_h%d_kv%d_hd%d%s_pos%lld%s",
             (long long)tq, (long long)tk, nh, nkv, hd, causal ? "_causal" : "",
             (long long)q_pos0, per_head ? "_per_head" : "_mean");
    check(gpu, name, got, want, nchk, 1e-5);
    gpu->ops->release(gpu, dq), gpu->ops->release(gpu, dk), gpu->ops->release(gpu, dout);
    free(qb), free(kb), free(want), free(got);
}

/* ---- embed, copy2d, patchify ---- */

static void test_embed(plm_dtype dt, int64_t rows, int64_t cols, int64_t n)
{
    seed((uint64_t)(rows + cols + dt));
    float *tf = rand_vec((size_t)(rows * cols), 1.0f, 0.0f);
    void *th = to_dtype(tf, (size_t)(rows * cols), dt);
    int32_t *ids = xmalloc((size_t)n * 4);
    for (int64_t i = 0; i < n; i++) ids[i] = (int32_t)((frand() + 1.0f) * 0.5f * (float)rows);
    ids[0] = 0;
    ids[n - 1] = (int32_t)rows - 1;
    float *want = xmalloc((size_t)(n * cols) * 4);
    plm_weight wc = {dt, rows, cols, th};
    cpu->ops->embed(cpu, want, &wc, ids, n);
    plm_weight wg = {dt, rows, cols, dev_from(gpu, th, (size_t)(rows * cols) * plm_dtype_size(dt))};
    float *dy = dev_nan(gpu, (size_t)(n * cols));
    gpu->ops->embed(gpu, dy, &wg, ids, n);
    for (int64_t i = 0; i < n; i++) ids[i] = -1; /* staged already */
    float *got = fetch(gpu, dy, (size_t)(n * cols));
    char name[96];
    snprintf(name, sizeof name, "embed_%s_rows%lld_cols%lld_n%lld", plm_dtype_name(dt),
             (long long)rows, (long long)cols, (long long)n);
    check(gpu, name, got, want, (size_t)(n * cols), 0.0);
    gpu->ops->release(gpu, (void *)wg.data), gpu->ops->release(gpu, dy);
    free(tf), free(th), free(ids), free(want), free(got);
}

static void test_copy2d(void)
{
    const int64_t R = 37, S = 1031, C = 577; /* rows, stride, copied columns */
    seed(7);
    float *src = rand_vec((size_t)(R * S), 1.0f, 0.0f), *dst = rand_vec((size_t)(R * 2 * S), 1.0f, 0.0f);
    float *ds = dev_from(gpu, src, (size_t)(R * S) * 4), *dd = dev_from(gpu, dst, (size_t)(R * 2 * S) * 4);
    cpu->ops->copy2d(cpu, dst + 5, 2 * S, src + 3, S, R, C);
    gpu->ops->copy2d(gpu, dd + 5, 2 * S, ds + 3, S, R, C);
    float *got = fetch(gpu, dd, (size_t)(R * 2 * S));
    check(gpu, "copy2d_strided", got, dst, (size_t)(R * 2 * S), 0.0);
    free(got);
    /* overlapping block (dst one row below src): the CUDA op reads the whole block first */
    float *want = xmalloc((size_t)(R * S) * 4);
    memcpy(want, src, (size_t)(R * S) * 4);
    for (int64_t r = R - 2; r >= 0; r--) memmove(want + (r + 1) * S, src + r * S, (size_t)C * 4);
    gpu->ops->copy2d(gpu, ds + S, S, ds, S, R - 1, C);
    got = fetch(gpu, ds, (size_t)(R * S));
    check(gpu, "copy2d_overlapping", got, want, (size_t)(R * S), 0.0);
    gpu->ops->release(gpu, ds), gpu->ops->release(gpu, dd);
    free(src), free(dst), free(want), free(got);
}

static void test_patchify(int channels, int size, int patch)
{
    seed((uint64_t)(size * 31 + patch));
    const size_t np = (size_t)channels * size * size;
    const int g = size / patch;
    const size_t no = (size_t)g * g * channels * patch * patch;
    float *pix = rand_vec(np, 1.0f, 0.0f), *want = xmalloc(no * 4);
    cpu->ops->patchify(cpu, want, pix, channels, size, patch);
    float *dp = dev_from(gpu, pix, np * 4), *dout = dev_nan(gpu, no);
    gpu->ops->patchify(gpu, dout, dp, channels, size, patch);
    float *got = fetch(gpu, dout, no);
    char name[96];
    snprintf(name, sizeof name, "patchify_c%d_size%d_patch%d", channels, size, patch);
    check(gpu, name, got, want, no, 0.0);
    gpu->ops->release(gpu, dp), gpu->ops->release(gpu, dout);
    free(pix), free(want), free(got);
}

/* ---- the kernel profile (PLM_CUDA_PROFILE) ---- */

/* A backend made with PLM_CUDA_PROFILE writes, when freed, one row per kernel it ran (an
 * elementwise kernel and a cuBLASLt matmul here) with their call counts, and refuses a path it
 * cannot write. */
static void test_profile(void)
{
    char path[] = "/tmp/plm-profile-XXXXXX";
    const int fd = mkstemp(path);
    if (fd < 0) {
        result(0, "profile_file", 0, 0, "mkstemp failed");
        return;
    }
    close(fd);
    setenv("PLM_CUDA_PROFILE", path, 1);
    plm_backend *g = NULL;
    plm_error err;
    const plm_status st = plm_backend_cuda_new(0, &g, &err);
    unsetenv("PLM_CUDA_PROFILE");
    if (st != PLM_OK) {
        result(0, "profile_backend_new", 0, 0, err.msg);
        return;
    }
    enum { M = 16, N = 64, K = 96 }; /* M > 8: cuBLASLt, not the GEMV */
    seed(11);
    float *x = rand_vec(M * K, 1.0f, 0.0f), *w = rand_vec(N * K, 0.1f, 0.0f);
    float *dx = dev_from(g, x, M * K * 4), *dy = dev_nan(g, M * N);
    plm_weight wt = {.data = dev_from(g, w, N * K * 4), .dtype = PLM_F32, .rows = N, .cols = K};
    for (int i = 0; i < 3; i++) {
        g->ops->add(g, dx, dx, dx, M * K);
        g->ops->matmul(g, dy, dx, &wt, NULL, M);
    }
    result(!g->ops->error(g), "profile_ops_run", 0, 0, g->ops->error(g));
    g->ops->release(g, dx), g->ops->release(g, dy), g->ops->release(g, (void *)wt.data);
    plm_backend_free(g); /* writes the profile */
    FILE *f = fopen(path, "r");
    char line[256];
    int add_calls = -1, mm_calls = -1, trace = 0;
    while (f && fgets(line, sizeof line, f)) {
        char name[64];
        int calls;
        if (sscanf(line, "%63s %d", name, &calls) == 2) {
            if (!strcmp(name, "k_add")) add_calls = calls;
            if (!strcmp(name, "cublasLtMatmul")) mm_calls = calls;
        }
        trace += strncmp(line, "# the last", 10) == 0;
    }
    if (f) fclose(f);
    unlink(path);
    /* the first kernel of a batch only opens it: 6 launches, 5 timed */
    printf("  profile: k_add %d calls, cublasLtMatmul %d calls\n", add_calls, mm_calls);
    result(add_calls + mm_calls == 5 && add_calls >= 2 && mm_calls >= 2 && trace == 1,
           "profile_counts_kernels", 0, 0, "wrong rows in the profile");
    setenv("PLM_CUDA_PROFILE", "/nonexistent/dir/profile.txt", 1);
    const plm_status bad = plm_backend_cuda_new(0, &g, &err);
    unsetenv("PLM_CUDA_PROFILE");
    if (bad == PLM_OK) plm_backend_free(g);
    result(bad != PLM_OK && strstr(err.msg, "PLM_CUDA_PROFILE"), "profile_bad_path_refused", 0, 0,
           bad == PLM_OK ? "accepted" : err.msg);
    free(x), free(w);
}

/* ---- failures are reported, not crashed on ---- */

static void test_errors(void)
{
    plm_backend *g = NULL;
    plm_error err;
    if (plm_backend_cuda_new(0, &g, &err) != PLM_OK) {
        result(0, "errors_backend_new", 0, 0, err.msg);
        return;
    }
    const plm_backend_ops *o = g->ops;
    void *huge = o->alloc(g, (size_t)1 << 50);
    const char *ae = o->alloc_error ? o->alloc_error(g) : NULL;
    int ok = !huge && ae && strstr(ae, "free") && !o->error(g);
    if (ae) printf("  alloc_error: %s\n", ae);
    result(ok, "alloc_1PiB_fails_with_reason", 0, 0, ok ? NULL : "no NULL/message");
    void *small = o->alloc(g, 1024);
    result(small && !o->alloc_error(g), "alloc_after_failure", 0, 0, "alloc failed");
    size_t fr = 0, tot = 0;
    ok = o->mem_info && o->mem_info(g, &fr, &tot) == 0 && fr <= tot && tot > ((size_t)1 << 30);
    printf("  mem_info: free %.1f MiB of %.1f MiB\n", fr / 1048576.0, tot / 1048576.0);
    result(ok, "mem_info", 0, 0, "mem_info failed");
    /* mem_held counts op_alloc's blocks by their sizes (the failed 1 PiB one not at all) */
    size_t held0 = 0, held = 0, peak = 0;
    ok = o->mem_held != NULL;
    if (ok) {
        o->mem_held(g, 1, &held0, NULL);
        void *blk = o->alloc(g, 3000);
        o->mem_held(g, 0, &held, &peak);
        ok = blk && held == held0 + 3000 && peak == held;
        o->release(g, blk);
        o->mem_held(g, 0, &held, &peak);
        ok = ok && held == held0 && peak == held0 + 3000;
        printf("  mem_held: %.1f MiB held (with the 1 KiB block)\n", held0 / 1048576.0);
    }
    result(ok, "mem_held_counts_blocks", 0, 0, "mem_held wrong");
    plm_attn_args a = {.out = small, .q = small, .k = small, .v = small, .tq = 1, .tk = 1,
                       .q_stride = 1024, .kv_stride = 1024, .n_heads = 1, .n_kv = 1,
                       .head_dim = 1024, .scale = 1.0f};
    o->attention(g, &a);
    const char *e = o->error(g);
    if (e) printf("  error: %s\n", e);
    result(e && strstr(e, "head_dim"), "attention_hd1024_reports", 0, 0, "no error recorded");
    float f = 0;
    o->download(g, &f, small, sizeof f);
    result(isnan(f), "download_after_failure_is_nan", 0, 0, "not NaN");
    o->release(g, small);
    plm_backend_free(g);
    if (plm_backend_cuda_new(99, &g, &err) == PLM_OK) {
        result(0, "device_99_refused", 0, 0, "accepted");
        plm_backend_free(g);
    } else {
        printf("  device 99: %s\n", err.msg);
        result(strstr(err.msg, "does not exist") != NULL, "device_99_refused", 0, 0, err.msg);
    }
}

int main(void)
{
    if (cuda_check_begin()) return 1;
    /* run.sh sets this under racecheck/initcheck, which misreport cuBLASLt's own kernels */
    if (!getenv("PLM_TEST_SKIP_MATMUL")) {
        matmuls();
        matmuls_gemmex();
        test_twins(PLM_BF16);
        test_twins(PLM_F16);
    }
    test_norms(1, 33);
    test_norms(7, 1024);
    test_norms(577, 4096);
    test_norms(3, 5000);
    test_elementwise(1, 1);
    test_elementwise(7, 33);
    test_elementwise(577, 1024);
    test_rope(1, 32, 8, 128, 4096);
    test_rope(7, 32, 8, 128, 4096);
    test_rope(577, 16, 16, 64, 577);
    test_rope(33, 8, 4, 80, 100000);
    /* vision tower: 577 tokens, bidirectional */
    test_attention(577, 577, 16, 16, 64, 0, 0, 0);
    test_attention(33, 33, 8, 8, 80, 0, 0, 0);
    test_attention(33, 33, 8, 8, 80, 1, 0, 1);
    /* Llama prefill with GQA 32/8, then chunks and decode at q_pos0 > 0 */
    test_attention(300, 300, 32, 8, 128, 1, 0, 0);
    test_attention(37, 137, 32, 8, 128, 1, 100, 1);
    test_attention(20, 64, 8, 2, 128, 1, 10, 0); /* keys past the last query are masked */
    test_attention(1, 1000, 32, 8, 128, 1, 999, 0);
    test_attention(1, 1000, 32, 8, 128, 1, 999, 1);
    test_attention(1, 1, 4, 4, 64, 1, 0, 0);
    test_attention(5, 77, 4, 2, 96, 0, 0, 0);
    test_attention(45, 45, 4, 1, 256, 1, 0, 0);
    test_attention(17, 40, 2, 2, 512, 1, 23, 0);
    test_attention(3, 0, 2, 2, 64, 0, 0, 0); /* no keys: zeros */
    attention_tc();
    /* score providers: CLS attention, an observation window at the end, column sums */
    if (gpu->ops->attn_probs) {
        test_attn_probs(1, 577, 16, 16, 64, 0, 0, 0);
        test_attn_probs(1, 577, 16, 16, 64, 0, 0, 1);
        test_attn_probs(8, 300, 32, 8, 128, 1, 292, 1);
        test_attn_probs(8, 300, 32, 8, 128, 1, 292, 0);
        test_attn_probs(577, 577, 16, 16, 64, 0, 0, 0);
        test_attn_probs(100, 100, 8, 8, 80, 1, 0, 1);
        test_attn_probs(1, 1000, 32, 8, 128, 1, 999, 0);
    } else {
        result(0, "attn_probs_present", 0, 0, "the CUDA backend has no attn_probs");
    }
    test_embed(PLM_F32, 1000, 4096, 7);
    test_embed(PLM_BF16, 32000, 256, 577);
    test_embed(PLM_F16, 33, 33, 1);
    test_copy2d();
    test_patchify(3, 336, 14);
    test_patchify(3, 30, 7);
    test_patchify(1, 8, 8);
    test_profile();
    test_errors();
    return cuda_check_end();
}
