/* The CUDA attention_blocks (FlexPrefill) and attention_delta (DeltaLLM) ops against their CPU
 * twins, on random inputs with fixed seeds: odd sizes, GQA, head dims that are not powers of two,
 * blocks that are not multiples of the kernel's 16-query tiles, q_pos0 > 0, rows with every tile
 * masked, FlexPrefill's own masks, and DeltaLLM split over a prefill and decode steps. Outputs
 * are poisoned with NaN first so an element the kernel never writes fails. Prints one PASS/FAIL
 * line per check and "N passed, M failed" last; exits 1 on any failure. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "prune/kv_blocks.h"
#include "prune/kv_deltallm.h"
#include "tests/support/compare.h"
#include "tests/gpu/gpu_util.h"

static plm_backend *cpu, *gpu;
static int n_pass, n_fail;
static uint64_t rng = 0x9e3779b97f4a7c15ull;

static float *rand_vec(size_t n, float scale)
{
    float *v = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) v[i] = scale * frand();
    return v;
}

static void *dev(const void *host, size_t bytes)
{
    void *d = gpu->ops->alloc(gpu, bytes ? bytes : 1);
    if (!d) {
        fprintf(stderr, "device alloc of %zu bytes failed\n", bytes);
        exit(2);
    }
    if (host) gpu->ops->upload(gpu, d, host, bytes);
    return d;
}

static void poison(void *d, size_t bytes)
{
    void *h = xmalloc(bytes);
    memset(h, 0xff, bytes);
    gpu->ops->upload(gpu, d, h, bytes);
    free(h);
}

static void check(const char *name, const float *got, const float *want, size_t n, double tol)
{
    const char *e = gpu->ops->error(gpu);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        if (!isfinite(got[i]) && isfinite(want[i])) bad++;
    const double err = rel_l2(got, want, n);
    const int ok = !e && !bad && err <= tol;
    ok ? n_pass++ : n_fail++;
    printf("%s %s err=%.3g (tol %.0e)%s%s", ok ? "PASS" : "FAIL", name, err, tol,
           e ? ": backend error: " : "", e ? e : "");
    if (bad && !e) printf(": %zu of %zu elements not finite (unwritten?)", bad, n);
    printf("\n");
    fflush(stdout);
}

typedef struct shape {
    int64_t tq, tk;
    int nh, nkv, hd, block;
} shape;

/* mode 0: all tiles; 1: random half (diagonal kept, some rows empty); 2: FlexPrefill's mask */
static void blocks_case(const shape *s, int mode)
{
    const int64_t nqb = (s->tq + s->block - 1) / s->block, nkb = (s->tk + s->block - 1) / s->block;
    const size_t nq = (size_t)s->tq * s->nh * s->hd, nk = (size_t)s->tk * s->nkv * s->hd;
    const size_t nm = (size_t)s->nh * nqb * nkb;
    float *q = rand_vec(nq, 1.5f), *k = rand_vec(nk, 1.5f), *v = rand_vec(nk, 1.0f);
    uint8_t *mask = xmalloc(nm);
    const int64_t q_pos0 = s->tk - s->tq;
    const plm_attn_args base = {.tq = s->tq, .tk = s->tk, .q_stride = (int64_t)s->nh * s->hd,
                                .kv_stride = (int64_t)s->nkv * s->hd, .q_pos0 = q_pos0,
                                .n_heads = s->nh, .n_kv = s->nkv, .head_dim = s->hd,
                                .causal = 1, .scale = 1.0f / sqrtf((float)s->hd)};
    if (mode == 0) memset(mask, 1, nm);
    else if (mode == 1) {
        for (size_t i = 0; i < nm; i++) mask[i] = frand() > 0;
        memset(mask, 0, (size_t)nkb); /* head 0, query block 0: every tile masked */
    } else {
        const int64_t nl = s->tq < s->block ? s->tq : s->block;
        float *qp = xmalloc((size_t)nqb * s->nh * s->hd * sizeof *qp);
        kv_pool_rows(q, s->tq, base.q_stride, base.q_stride, s->block, qp);
        const kv_fp_shape fs = {.n_heads = s->nh, .n_kv = s->nkv, .head_dim = s->hd,
                                .tq = s->tq, .tk = s->tk, .q_stride = base.q_stride,
                                .k_stride = base.kv_stride, .scale = base.scale,
                                .block = s->block};
        const kv_fp_params fp = {.gamma = 0.9, .tau = 0.1, .block = s->block, .min_budget = 1};
        plm_error err;
        if (kv_flexprefill_mask(&fs, &fp, q + (s->tq - nl) * base.q_stride, qp, k, mask, NULL,
                                &err) != PLM_OK) {
            printf("FAIL flexprefill mask: %s\n", err.msg);
            n_fail++;
        }
        free(qp);
    }
    float *want = xmalloc(nq * sizeof *want), *got = xmalloc(nq * sizeof *got);
    plm_attn_args a = base;
    a.q = q, a.k = k, a.v = v, a.out = want;
    cpu->ops->attention_blocks(cpu, &a, mask, s->block);
    plm_attn_args g = base;
    g.q = dev(q, nq * 4), g.k = dev(k, nk * 4), g.v = dev(v, nk * 4), g.out = dev(NULL, nq * 4);
    uint8_t *dmask = dev(mask, nm);
    poison(g.out, nq * 4);
    gpu->ops->attention_blocks(gpu, &g, dmask, s->block);
    gpu->ops->download(gpu, got, g.out, nq * 4);
    char name[160];
    static const char *modes[] = {"all", "random", "flexprefill"};
    snprintf(name, sizeof name, "attention_blocks %s tq=%lld tk=%lld heads=%d/%d hd=%d block=%d",
             modes[mode], (long long)s->tq, (long long)s->tk, s->nh, s->nkv, s->hd, s->block);
    check(name, got, want, nq, 2e-5);
    if (mode == 0) { /* and the dense CUDA kernel: all tiles is plain attention */
        poison(g.out, nq * 4);
        gpu->ops->attention(gpu, &g);
        gpu->ops->download(gpu, want, g.out, nq * 4);
        snprintf(name, sizeof name, "attention_blocks all == cuda attention tq=%lld hd=%d",
                 (long long)s->tq, s->hd);
        check(name, got, want, nq, 1e-6);
    }
    gpu->ops->release(gpu, (void *)g.q), gpu->ops->release(gpu, (void *)g.k);
    gpu->ops->release(gpu, (void *)g.v), gpu->ops->release(gpu, g.out);
    gpu->ops->release(gpu, dmask);
    free(q), free(k), free(v), free(mask), free(want), free(got);
}

/* DeltaLLM: one call over tq queries, then (split) a prefill of half and one-query steps. */
static void delta_case(const shape *s, int64_t window, float theta)
{
    const size_t w = (size_t)s->nh * s->hd, nq = (size_t)s->tq * w;
    const size_t nk = (size_t)s->tk * s->nkv * s->hd;
    float *q = xmalloc(nq * sizeof *q), *k = rand_vec(nk, 1), *v = rand_vec(nk, 1);
    for (size_t e = 0; e < w; e++) q[e] = frand();
    for (int64_t i = 1; i < s->tq; i++) /* slowly drifting queries */
        for (size_t e = 0; e < w; e++) q[i * w + e] = q[(i - 1) * w + e] + 0.15f * frand();
    const plm_attn_args base = {.tq = s->tq, .tk = s->tk, .q_stride = (int64_t)w,
                                .kv_stride = (int64_t)s->nkv * s->hd, .q_pos0 = s->tk - s->tq,
                                .n_heads = s->nh, .n_kv = s->nkv, .head_dim = s->hd,
                                .causal = 1, .scale = 1.0f / sqrtf((float)s->hd)};
    float *want = xmalloc(nq * 4), *got = xmalloc(nq * 4), *ref_c = xmalloc(nq * 4);
    float *ref_g = xmalloc(nq * 4), *st = xmalloc(w * 4), *stg = xmalloc(w * 4);
    for (size_t e = 0; e < w; e++) st[e] = INFINITY;
    plm_attn_args a = base;
    a.q = q, a.k = k, a.v = v, a.out = want;
    cpu->ops->attention_delta(cpu, &a, st, ref_c, window, theta);
    plm_attn_args g = base;
    g.q = dev(q, nq * 4), g.k = dev(k, nk * 4), g.v = dev(v, nk * 4), g.out = dev(NULL, nq * 4);
    float *dst = dev(NULL, w * 4), *dref = dev(NULL, nq * 4);
    char name[160];
    for (int split = 0; split < 2; split++) {
        for (size_t e = 0; e < w; e++) stg[e] = INFINITY;
        gpu->ops->upload(gpu, dst, stg, w * 4);
        poison(g.out, nq * 4);
        poison(dref, nq * 4);
        const int64_t first = split ? s->tq / 2 : s->tq;
        for (int64_t i0 = 0; i0 < s->tq; i0 += (i0 ? 1 : first)) {
            plm_attn_args b = g;
            b.tq = i0 ? 1 : first;
            b.q_pos0 = base.q_pos0 + i0;
            b.tk = b.q_pos0 + b.tq;
            b.q = g.q + i0 * (int64_t)w;
            b.out = g.out + i0 * (int64_t)w;
            gpu->ops->attention_delta(gpu, &b, dst, dref + i0 * (int64_t)w, window, theta);
        }
        gpu->ops->download(gpu, got, g.out, nq * 4);
        gpu->ops->download(gpu, ref_g, dref, nq * 4);
        gpu->ops->download(gpu, stg, dst, w * 4);
        snprintf(name, sizeof name, "attention_delta%s tq=%lld tk=%lld heads=%d/%d hd=%d "
                 "window=%lld theta=%g", split ? " split" : "", (long long)s->tq,
                 (long long)s->tk, s->nh, s->nkv, s->hd, (long long)window, theta);
        check(name, got, want, nq, 2e-5);
        const int same = !memcmp(ref_g, ref_c, nq * 4) && !memcmp(stg, st, w * 4);
        same ? n_pass++ : n_fail++;
        printf("%s %s: tracked queries and state bit-identical\n", same ? "PASS" : "FAIL", name);
    }
    gpu->ops->release(gpu, (void *)g.q), gpu->ops->release(gpu, (void *)g.k);
    gpu->ops->release(gpu, (void *)g.v), gpu->ops->release(gpu, g.out);
    gpu->ops->release(gpu, dst), gpu->ops->release(gpu, dref);
    free(q), free(k), free(v), free(want), free(got), free(ref_c), free(ref_g), free(st);
    free(stg);
}

int main(void)
{
    char why[256];
    if (!plm_cuda_available(why, sizeof why)) {
        printf("FAIL cuda_available: %s\n0 passed, 1 failed\n", why);
        return 1;
    }
    plm_error err;
    if (plm_backend_cpu_new(0, &cpu, &err) != PLM_OK ||
        plm_backend_cuda_new(0, &gpu, &err) != PLM_OK) {
        printf("FAIL backend_new: %s\n0 passed, 1 failed\n", err.msg);
        return 1;
    }
    if (!gpu->ops->attention_blocks || !gpu->ops->attention_delta) {
        printf("FAIL ops: the CUDA backend has no attention_blocks/attention_delta\n"
               "0 passed, 1 failed\n");
        return 1;
    }
    const shape shapes[] = {
        {1, 1, 2, 1, 64, 128},     {77, 77, 6, 2, 20, 16},    {37, 100, 4, 1, 12, 7},
        {300, 300, 4, 4, 128, 128}, {257, 257, 8, 2, 64, 64}, {200, 200, 4, 2, 96, 24},
        {130, 130, 2, 2, 256, 48},  {64, 64, 2, 1, 500, 32},  {1, 333, 4, 2, 128, 128},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++)
        for (int mode = 0; mode < 3; mode++) blocks_case(&shapes[i], mode);
    const shape ds[] = {{61, 61, 4, 2, 12, 0}, {150, 150, 8, 2, 64, 0}, {90, 120, 4, 4, 128, 0},
                        {40, 40, 2, 1, 300, 0}};
    for (size_t i = 0; i < sizeof ds / sizeof *ds; i++) {
        delta_case(&ds[i], 5, 0.2f);
        delta_case(&ds[i], 32, 0.05f);
    }
    plm_backend_free(gpu);
    plm_backend_free(cpu);
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
