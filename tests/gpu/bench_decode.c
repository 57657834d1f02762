/* Batch-1 decode against the memory-bandwidth bound:
 *   bench_decode OUT.txt
 * 1. The bound: a device-to-device cudaMemcpy of 1 GiB, GB/s counting its read and its write.
 * 2. Decode matmuls at the LLaVA-1.5-7B shapes (bf16 weights, m = 1): the GEMV (cuda/cu_gemv.cu)
 *    and the cuBLASLt path (a backend made under PLM_CUDA_GEMV=0), microseconds, GB/s of weight
 *    read and the fraction of the copy's GB/s; then one token's matmuls at those times (32
 *    layers of q, k, v, o, gate, up, down, and the lm_head).
 * 3. Decode attention (32 heads, 32 kv heads, head_dim 128, one query at the end of the cache)
 *    at 629, 4096 and 32768 keys: split-K (cuda/cu_attn_decode.cu) against the prefill kernel
 *    (PLM_CUDA_ATTN_DECODE=0), microseconds and GB/s of K/V read.
 * 4. The fused decoder ops (issue 4): q/k/v in one launch (matmul_multi) and gate/up with the
 *    SiLU gating (matmul_glu) against the separate launches; then one token's decoder without
 *    attention (32 layers of norms, projections and residuals on one layer's weights, which L2
 *    cannot hold, + the lm_head) back to back on the stream: fused or plain ops, programmatic
 *    dependent launch on or off (PLM_CUDA_PDL=0), and recorded once as a CUDA graph and
 *    replayed; microseconds and the fraction of the copy's rate at which its 13 GB of weights
 *    stream.
 * Every time is the median of 50 runs, each between CUDA events with a cold L2
 * (plm_cuda_time_ops). Self-checks: the GEMV matches the CPU (rel. L2 <= 1e-5) and cuBLASLt
 * (<= 1e-2: it rounds x to bf16); split-K matches the old kernel (<= 1e-5). Prints the table
 * (and writes it to OUT.txt), "N passed, M failed" last, and exits 1 on a failed check. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "cuda/cu_test_hooks.h"
#include "tests/support/compare.h"
#include "tests/gpu/gpu_util.h"
#include "tests/gpu/bench_util.h"

#define RUNS 50
#define COPY_BYTES ((size_t)1 << 30)

static plm_backend *cpu, *gpu, *old; /* old: PLM_CUDA_GEMV=0 and PLM_CUDA_ATTN_DECODE=0 */
static plm_backend *nopdl;           /* PLM_CUDA_PDL=0 */
static uint64_t rng = 0x2545f4914f6cdd1dull;

static uint16_t to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static int cmp_f(const void *a, const void *b)
{
    const float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* One op to time: a matmul, an attention, or the copy. */
typedef struct job {
    plm_backend *be;
    int kind; /* 0 matmul, 1 attention, 2 copy */
    float *y;
    const float *x;
    plm_weight w;
    plm_attn_args a;
    void *dst;
    const void *src;
    size_t bytes;
} job;

static void run_job(void *ctx)
{
    const job *j = ctx;
    if (j->kind == 0) j->be->ops->matmul(j->be, j->y, j->x, &j->w, NULL, 1);
    else if (j->kind == 1) j->be->ops->attention(j->be, &j->a);
    else plm_cuda_copy_d2d(j->be, j->dst, j->src, j->bytes);
}

/* Median microseconds of RUNS runs of fn(ctx) on be; -1 when the backend failed. */
static double median_fn_us(plm_backend *be, void (*fn)(void *), void *ctx)
{
    float ms[RUNS];
    fn(ctx); /* warm-up: cuBLASLt's first call, scratch growth */
    if (plm_cuda_time_ops(be, fn, ctx, RUNS, ms) != 0) {
        fprintf(stderr, "timing failed: %s\n", be->ops->error(be));
        return -1;
    }
    qsort(ms, RUNS, sizeof ms[0], cmp_f);
    return 1e3 * 0.5 * (ms[RUNS / 2 - 1] + ms[RUNS / 2]);
}

static double median_us(job *j)
{
    return median_fn_us(j->be, run_job, j);
}

static double copy_gbps(void)
{
    job j = {.be = gpu, .kind = 2, .bytes = COPY_BYTES};
    j.dst = dev_from(gpu, NULL, COPY_BYTES);
    j.src = dev_from(gpu, NULL, COPY_BYTES);
    const double us = median_us(&j);
    gpu->ops->release(gpu, j.dst), gpu->ops->release(gpu, (void *)j.src);
    return us > 0 ? 2.0 * (double)COPY_BYTES / (us * 1e3) : 0;
}

/* GEMV vs cuBLASLt at one shape; returns the two times through us_new / us_old. */
static void bench_matmul(const char *what, int64_t n, int64_t k, double bw, double *us_new,
                         double *us_old)
{
    const size_t nw = (size_t)(n * k);
    uint16_t *wh = malloc(nw * 2);
    float *x = malloc((size_t)k * 4), *want = malloc((size_t)n * 4);
    float *got = malloc((size_t)n * 4), *got_old = malloc((size_t)n * 4);
    if (!wh || !x || !want || !got || !got_old) {
        fprintf(stderr, "out of host memory\n");
        exit(2);
    }
    const float sc = 1.0f / sqrtf((float)k);
    for (size_t i = 0; i < nw; i++) wh[i] = to_bf16(sc * frand());
    for (int64_t i = 0; i < k; i++) x[i] = frand();
    const plm_weight wc = {PLM_BF16, n, k, wh};
    cpu->ops->matmul(cpu, want, x, &wc, NULL, 1);

    job j = {.be = gpu, .kind = 0};
    j.w = wc;
    j.w.data = dev_from(gpu, wh, nw * 2); /* valid in `old` too: one context per process */
    j.x = dev_from(gpu, x, (size_t)k * 4);
    j.y = dev_from(gpu, NULL, (size_t)n * 4);
    *us_new = median_us(&j);
    gpu->ops->download(gpu, got, j.y, (size_t)n * 4);
    job jo = j;
    jo.be = old;
    jo.y = dev_from(old, NULL, (size_t)n * 4);
    *us_old = median_us(&jo);
    old->ops->download(old, got_old, jo.y, (size_t)n * 4);

    const double bytes = (double)nw * 2 + (double)k * 4 + (double)n * 4;
    const double gb_new = bytes / (*us_new * 1e3), gb_old = bytes / (*us_old * 1e3);
    emit("%-22s %6lld %6lld %9.1f %9.1f %7.2f %8.0f %8.0f %6.1f%% %6.1f%%\n", what, (long long)n,
         (long long)k, *us_new, *us_old, *us_old / *us_new, gb_new, gb_old, 100 * gb_new / bw,
         100 * gb_old / bw);
    char name[128];
    const double e_cpu = rel_l2(got, want, (size_t)n), e_lt = rel_l2(got_old, got, (size_t)n);
    snprintf(name, sizeof name, "gemv_vs_cpu_%lldx%lld", (long long)n, (long long)k);
    check_tol(e_cpu <= 1e-5 && *us_new > 0, name, e_cpu, 1e-5);
    snprintf(name, sizeof name, "gemv_vs_cublaslt_%lldx%lld", (long long)n, (long long)k);
    check_tol(e_lt <= 1e-2 && *us_old > 0, name, e_lt, 1e-2);
    gpu->ops->release(gpu, (void *)j.w.data), gpu->ops->release(gpu, (void *)j.x);
    gpu->ops->release(gpu, j.y), old->ops->release(old, jo.y);
    free(wh), free(x), free(want), free(got), free(got_old);
}

static void bench_attention(const float *dk, const float *dv, const float *dq, int64_t tk,
                            double bw)
{
    enum { NH = 32, NKV = 32, HD = 128 };
    float *got = malloc(NH * HD * 4), *got_old = malloc(NH * HD * 4);
    job j = {.be = gpu, .kind = 1};
    plm_attn_args a = {.out = dev_from(gpu, NULL, NH * HD * 4), .q = dq, .k = dk, .v = dv, .tq = 1,
                       .tk = tk, .q_stride = NH * HD, .kv_stride = NKV * HD, .q_pos0 = tk - 1,
                       .n_heads = NH, .n_kv = NKV, .head_dim = HD, .causal = 1,
                       .scale = 1.0f / sqrtf((float)HD)};
    j.a = a;
    const double us_new = median_us(&j);
    gpu->ops->download(gpu, got, j.a.out, NH * HD * 4);
    job jo = j;
    jo.be = old;
    jo.a.out = dev_from(old, NULL, NH * HD * 4);
    const double us_old = median_us(&jo);
    old->ops->download(old, got_old, jo.a.out, NH * HD * 4);
    const double bytes = 2.0 * (double)tk * NKV * HD * 4;
    emit("%-22s %6lld %6d %9.1f %9.1f %7.2f %8.0f %8.0f %6.1f%% %6.1f%%\n", "attention 32/32x128",
         (long long)tk, 1, us_new, us_old, us_old / us_new, bytes / (us_new * 1e3),
         bytes / (us_old * 1e3), 100 * bytes / (us_new * 1e3) / bw,
         100 * bytes / (us_old * 1e3) / bw);
    char name[96];
    const double e = rel_l2(got, got_old, NH * HD);
    snprintf(name, sizeof name, "attn_decode_vs_old_tk%lld", (long long)tk);
    check_tol(e <= 1e-5 && us_new > 0 && us_old > 0, name, e, 1e-5);
    gpu->ops->release(gpu, j.a.out), old->ops->release(old, jo.a.out);
    free(got), free(got_old);
}

/* ---- the fused decoder ops ---- */

enum { LD = 4096, LI = 11008, LV = 32064, LAYERS = 32 };

/* One layer's weights (bf16, random) and the activations of one token, on the device. */
typedef struct layer7b {
    plm_backend *be;
    plm_weight q, k, v, o, gate, up, down, head;
    float *x, *h, *qb, *kb, *vb, *g, *u, *logits, *norm;
    int fused, what; /* what: 0 q/k/v, 1 gate/up, 2 a whole token */
} layer7b;

static plm_weight dev_weight(int64_t n, int64_t k)
{
    const size_t nw = (size_t)(n * k);
    uint16_t *h = malloc(nw * 2);
    if (!h) {
        fprintf(stderr, "out of host memory\n");
        exit(2);
    }
    const float sc = 1.0f / sqrtf((float)k);
    for (size_t i = 0; i < nw; i++) h[i] = to_bf16(sc * frand());
    plm_weight w = {PLM_BF16, n, k, dev_from(gpu, h, nw * 2)};
    free(h);
    return w;
}

static void layer_qkv(const layer7b *l)
{
    const plm_backend_ops *o = l->be->ops;
    if (l->fused) {
        float *const ys[3] = {l->qb, l->kb, l->vb};
        const plm_weight *const ws[3] = {&l->q, &l->k, &l->v};
        const float *const bs[3] = {NULL, NULL, NULL};
        o->matmul_multi(l->be, 3, ys, l->h, ws, bs, 1);
    } else {
        o->matmul(l->be, l->qb, l->h, &l->q, NULL, 1);
        o->matmul(l->be, l->kb, l->h, &l->k, NULL, 1);
        o->matmul(l->be, l->vb, l->h, &l->v, NULL, 1);
    }
}

static void layer_mlp_in(const layer7b *l)
{
    const plm_backend_ops *o = l->be->ops;
    if (l->fused) {
        o->matmul_glu(l->be, l->g, l->u, l->h, &l->gate, NULL, &l->up, NULL, 1);
    } else {
        o->matmul(l->be, l->g, l->h, &l->gate, NULL, 1);
        o->matmul(l->be, l->u, l->h, &l->up, NULL, 1);
        o->silu_mul(l->be, l->g, l->g, l->u, LI);
    }
}

static void add_norm(const layer7b *l)
{
    const plm_backend_ops *o = l->be->ops;
    if (l->fused) {
        o->add_rmsnorm(l->be, l->h, l->x, l->h, l->norm, 1, LD, 1e-5f);
    } else {
        o->add(l->be, l->x, l->x, l->h, LD);
        o->rmsnorm(l->be, l->h, l->x, l->norm, 1, LD, 1e-5f);
    }
}

/* what 2: a token without attention (o reads q's output in its place) */
static void run_layer(void *ctx)
{
    const layer7b *l = ctx;
    if (l->what == 0) {
        layer_qkv(l);
        return;
    }
    if (l->what == 1) {
        layer_mlp_in(l);
        return;
    }
    for (int i = 0; i < LAYERS; i++) {
        add_norm(l);
        layer_qkv(l);
        l->be->ops->matmul(l->be, l->h, l->qb, &l->o, NULL, 1);
        add_norm(l);
        layer_mlp_in(l);
        l->be->ops->matmul(l->be, l->h, l->g, &l->down, NULL, 1);
    }
    add_norm(l);
    l->be->ops->matmul(l->be, l->logits, l->h, &l->head, NULL, 1);
}

typedef struct replay {
    plm_backend *be;
    void *graph;
} replay;

static void run_replay(void *ctx)
{
    const replay *r = ctx;
    if (!r->be->ops->graph_launch(r->be, r->graph, NULL, NULL, 0))
        fprintf(stderr, "graph_launch refused the recording\n");
}

static void bench_fused(double bw)
{
    layer7b l = {.be = gpu};
    l.q = dev_weight(LD, LD), l.k = dev_weight(LD, LD), l.v = dev_weight(LD, LD);
    l.o = dev_weight(LD, LD), l.gate = dev_weight(LI, LD), l.up = dev_weight(LI, LD);
    l.down = dev_weight(LD, LI), l.head = dev_weight(LV, LD);
    float *hx = malloc(LD * 4);
    for (int i = 0; i < LD; i++) hx[i] = frand();
    l.x = dev_from(gpu, hx, LD * 4), l.h = dev_from(gpu, hx, LD * 4), l.norm = dev_from(gpu, hx, LD * 4);
    l.qb = dev_from(gpu, NULL, LD * 4), l.kb = dev_from(gpu, NULL, LD * 4), l.vb = dev_from(gpu, NULL, LD * 4);
    l.g = dev_from(gpu, NULL, LI * 4), l.u = dev_from(gpu, NULL, LI * 4);
    l.logits = dev_from(gpu, NULL, LV * 4);

    emit("\n%-34s %10s %10s %7s %8s %7s\n", "fused decoder ops (bf16, m=1)", "fused_us", "plain_us",
         "x", "fused%bw", "pdl");
    static const char *names[2] = {"q/k/v 3 x 4096x4096", "gate/up+silu 2 x 11008x4096"};
    const double bytes[2] = {3.0 * LD * LD * 2, 2.0 * LI * LD * 2};
    float *ref = malloc(LI * 4), *got = malloc(LI * 4);
    for (int w = 0; w < 2; w++) {
        l.what = w;
        l.fused = 1;
        const double tf = median_fn_us(gpu, run_layer, &l);
        float *y = w == 0 ? l.qb : l.g;
        const int64_t n = w == 0 ? LD : LI;
        gpu->ops->download(gpu, got, y, (size_t)n * 4);
        l.fused = 0;
        const double tp = median_fn_us(gpu, run_layer, &l);
        gpu->ops->download(gpu, ref, y, (size_t)n * 4);
        emit("%-34s %10.1f %10.1f %7.2f %7.1f%% %7s\n", names[w], tf, tp, tp / tf,
             100 * bytes[w] / (tf * 1e3) / bw, "on");
        char name[64];
        snprintf(name, sizeof name, "fused_vs_plain_%s", w == 0 ? "qkv" : "glu");
        const double e = rel_l2(got, ref, (size_t)n);
        check_tol(e <= 1e-6 && tf > 0 && tp > 0, name, e, 1e-6);
    }
    /* a whole token's weights: 32 x (4 x 4096^2 + 3 x 11008 x 4096) + the lm_head */
    const double tok = 2.0 * (LAYERS * (4.0 * LD * LD + 3.0 * LI * LD) + (double)LV * LD);
    l.what = 2;
    double t[2][2];
    float *res[2][2];
    for (int pdl = 1; pdl >= 0; pdl--)
        for (int f = 1; f >= 0; f--) {
            l.be = pdl ? gpu : nopdl;
            l.fused = f;
            t[pdl][f] = median_fn_us(l.be, run_layer, &l);
            /* the token adds into x in place, so every run starts where the last ended: the
             * compared run starts from the same x and h in each configuration */
            l.be->ops->upload(l.be, l.x, hx, LD * 4);
            l.be->ops->upload(l.be, l.h, hx, LD * 4);
            run_layer(&l);
            res[pdl][f] = malloc(LV * 4);
            l.be->ops->download(l.be, res[pdl][f], l.logits, LV * 4);
        }
    for (int pdl = 1; pdl >= 0; pdl--)
        emit("%-34s %10.1f %10.1f %7.2f %7.1f%% %7s\n", "token, no attention (7B)", t[pdl][1],
             t[pdl][0], t[pdl][0] / t[pdl][1], 100 * tok / (t[pdl][1] * 1e3) / bw,
             pdl ? "on" : "off");
    /* the same token recorded once (graph_begin) and replayed: no launch cost per kernel */
    double t_rec = -1;
    l.be = gpu, l.fused = 1;
    void *graph = NULL;
    if (gpu->ops->graph_begin && gpu->ops->graph_begin(gpu)) {
        run_layer(&l);
        graph = gpu->ops->graph_end(gpu);
    }
    if (graph) {
        replay rp = {gpu, graph};
        t_rec = median_fn_us(gpu, run_replay, &rp);
        emit("%-34s %10.1f %10s %7s %7.1f%% %7s\n", "token, no attention, recorded", t_rec, "-",
             "-", 100 * tok / (t_rec * 1e3) / bw, "on");
        gpu->ops->graph_free(gpu, graph);
    } else {
        emit("# recording the token failed (PLM_CUDA_GRAPH=0?)\n");
    }
    emit("# a token's weights (%.2f GB) at the copy's rate: %.0f us; fused with PDL: %.0f "
         "tokens/s without attention (%.0f recorded)\n", tok / 1e9, tok / (bw * 1e3),
         1e6 / t[1][1], t_rec > 0 ? 1e6 / t_rec : 0.0);
    /* the fused norm sums in another order; 32 layers of random weights carry that on */
    check_tol(rel_l2(res[1][1], res[0][0], LV) <= 1e-3, "token_fused_pdl_vs_plain",
              rel_l2(res[1][1], res[0][0], LV), 1e-3);
    check_tol(max_abs_diff(res[1][1], res[0][1], LV) == 0.0, "token_pdl_on_equals_off",
              max_abs_diff(res[1][1], res[0][1], LV), 0);
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 2; b++) free(res[a][b]);
    free(hx);
    free(ref), free(got);
    const plm_weight *ws[] = {&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down, &l.head};
    for (int i = 0; i < 8; i++) gpu->ops->release(gpu, (void *)ws[i]->data);
    float *bufs[] = {l.x, l.h, l.norm, l.qb, l.kb, l.vb, l.g, l.u, l.logits};
    for (int i = 0; i < 9; i++) gpu->ops->release(gpu, bufs[i]);
}

int main(int argc, char **argv)
{
    char why[256];
    bench_start(argc, argv, &cpu, &gpu, why, sizeof why);
    plm_error err;
    setenv("PLM_CUDA_GEMV", "0", 1);
    setenv("PLM_CUDA_ATTN_DECODE", "0", 1);
    plm_status st = plm_backend_cuda_new(0, &old, &err);
    unsetenv("PLM_CUDA_GEMV");
    unsetenv("PLM_CUDA_ATTN_DECODE");
    setenv("PLM_CUDA_PDL", "0", 1);
    if (st == PLM_OK) st = plm_backend_cuda_new(0, &nopdl, &err);
    unsetenv("PLM_CUDA_PDL");
    if (st != PLM_OK) {
        printf("FAIL second CUDA backend: %s\n0 passed, 1 failed\n", err.msg);
        return 1;
    }
    const double bw = copy_gbps();
    emit("# %s; median of %d runs, cold L2; bound: device-to-device copy of 1 GiB = %.0f GB/s "
         "(read + write)\n", why, RUNS, bw);
    emit("# new: GEMV / split-K decode attention; old: cuBLASLt (PLM_CUDA_GEMV=0) / the prefill "
         "attention kernel (PLM_CUDA_ATTN_DECODE=0)\n");
    emit("%-22s %6s %6s %9s %9s %7s %8s %8s %7s %7s\n", "op (bf16 W, m=1)", "n|tk", "k|tq",
         "new_us", "old_us", "x", "new_GB/s", "old_GB/s", "new%bw", "old%bw");

    static const struct { const char *what; int64_t n, k; } shapes[] = {
        {"q/k/v/o 4096x4096", 4096, 4096},
        {"gate/up 11008x4096", 11008, 4096},
        {"down 4096x11008", 4096, 11008},
        {"lm_head 32064x4096", 32064, 4096},
    };
    double tn[4], to[4];
    for (int s = 0; s < 4; s++)
        bench_matmul(shapes[s].what, shapes[s].n, shapes[s].k, bw, &tn[s], &to[s]);
    /* one token: 32 layers x (q, k, v, o + gate, up + down) + lm_head */
    const double tok_new = 32 * (4 * tn[0] + 2 * tn[1] + tn[2]) + tn[3];
    const double tok_old = 32 * (4 * to[0] + 2 * to[1] + to[2]) + to[3];
    const double wbytes = 32.0 * (4.0 * 4096 * 4096 + 3.0 * 11008 * 4096) * 2 + 32064.0 * 4096 * 2;
    emit("# one token's matmuls (7B): new %.0f us (%.0f tok/s), old %.0f us (%.0f tok/s); "
         "weights %.2f GB read at the copy's rate: %.0f us\n", tok_new, 1e6 / tok_new, tok_old,
         1e6 / tok_old, wbytes / 1e9, wbytes / (bw * 1e3));

    enum { MAXK = 32768, W = 32 * 128 };
    const size_t nkv = (size_t)MAXK * W;
    float *h = malloc(nkv * 4);
    if (!h) {
        fprintf(stderr, "out of host memory\n");
        return 2;
    }
    for (size_t i = 0; i < nkv; i++) h[i] = frand();
    float *dk = dev_from(gpu, h, nkv * 4);
    for (size_t i = 0; i < nkv; i++) h[i] = frand();
    float *dv = dev_from(gpu, h, nkv * 4);
    float *dq = dev_from(gpu, h, W * 4);
    free(h);
    static const int64_t tks[] = {629, 4096, 32768};
    for (int i = 0; i < 3; i++) bench_attention(dk, dv, dq, tks[i], bw);
    gpu->ops->release(gpu, dk), gpu->ops->release(gpu, dv), gpu->ops->release(gpu, dq);
    bench_fused(bw);

    const char *e = gpu->ops->error(gpu), *eo = old->ops->error(old);
    if (!eo) eo = nopdl->ops->error(nopdl);
    if (e || eo) {
        emit("FAIL backend error: %s\n", e ? e : eo);
        n_fail++;
    }
    plm_backend_free(nopdl);
    plm_backend_free(old);
    plm_backend_free(gpu);
    plm_backend_free(cpu);
    const int status = bench_finish(bench_out);
    fclose(bench_out);
    return status;
}
