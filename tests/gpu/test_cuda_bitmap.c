/* Mustafar's bitmap KV store on the GPU (cuda/cu_kv_bitmap.cu) against the CPU backend's
 * (core/backend_cpu_bitmap.c, itself tested against the reference in tests/test_kv_bitmap.c):
 * device compression must equal host compression bit for bit (bitmaps and packed values), and
 * the decode attention on the compressed + dense cache must match the CPU op, on random inputs
 * with fixed seeds and shapes chosen to hit edges (GQA groups that are not powers of two, odd
 * head dims, one to three bitmap words, nothing / everything compressed, several causal
 * queries, no split-K scratch, magnitudes with ties). Outputs are poisoned with NaN first.
 * Plain C without Criterion; prints PASS/FAIL per check and "N passed, M failed" last. */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "prune/kv_bitmap.h"
#include "tests/support/compare.h"
#include "tests/gpu/gpu_util.h"

static plm_backend *cpu, *gpu;
static int n_pass, n_fail;

/* ties: values on a grid of 1/4, so many rows hold equal magnitudes at the cut */
static float *rand_vec(size_t n, int ties)
{
    float *v = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) v[i] = ties ? roundf(frand() * 4.0f) / 4.0f : frand();
    return v;
}

static void *to_dev(const void *h, size_t bytes)
{
    void *d = gpu->ops->alloc(gpu, bytes);
    if (!d) {
        fprintf(stderr, "out of device memory (%zu bytes)\n", bytes);
        exit(2);
    }
    if (h) gpu->ops->upload(gpu, d, h, bytes);
    return d;
}

static void result(int ok, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void result(int ok, const char *name, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (ok) n_pass++;
    else n_fail++;
    printf("%s %s %s\n", ok ? "PASS" : "FAIL", name, msg);
    fflush(stdout);
}

static const char *gpu_error(void)
{
    return gpu->ops->error ? gpu->ops->error(gpu) : NULL;
}

/* The first (row, head) where the device store differs from the host one, or -1. */
static int64_t store_diff(const plm_kv_bitmap *h, const plm_kv_bitmap *d, int64_t rows,
                          const char **which)
{
    const size_t W = (size_t)h->words;
    const size_t nb = (size_t)h->n_kv * (size_t)h->cap * W;
    const size_t nk = (size_t)h->n_kv * (size_t)h->cap * (size_t)h->k_slots;
    const size_t nv = (size_t)h->n_kv * (size_t)h->cap * (size_t)h->v_slots;
    uint64_t *kb = xmalloc(nb * 8), *vb = xmalloc(nb * 8);
    float *kv = xmalloc(nk * 4), *vv = xmalloc(nv * 4);
    gpu->ops->download(gpu, kb, d->k_bits, nb * 8);
    gpu->ops->download(gpu, vb, d->v_bits, nb * 8);
    gpu->ops->download(gpu, kv, d->k_vals, nk * 4);
    gpu->ops->download(gpu, vv, d->v_vals, nv * 4);
    int64_t bad = -1;
    for (int hh = 0; hh < h->n_kv && bad < 0; hh++)
        for (int64_t r = 0; r < rows && bad < 0; r++) {
            const size_t row = (size_t)hh * (size_t)h->cap + (size_t)r;
            if (memcmp(kb + row * W, h->k_bits + row * W, W * 8)) *which = "K bitmap";
            else if (memcmp(vb + row * W, h->v_bits + row * W, W * 8)) *which = "V bitmap";
            else if (memcmp(kv + row * h->k_slots, h->k_vals + row * h->k_slots,
                            (size_t)h->k_slots * 4))
                *which = "K values";
            else if (memcmp(vv + row * h->v_slots, h->v_vals + row * h->v_slots,
                            (size_t)h->v_slots * 4))
                *which = "V values";
            else continue;
            bad = r * h->n_kv + hh;
        }
    free(kb);
    free(vb);
    free(kv);
    free(vv);
    return bad;
}

typedef struct tcase {
    int n_heads, n_kv, hd;
    int64_t len, nc, tq;
    double sk, sv;
    int work, ties;
} tcase;

static void run_case(const tcase *c, uint64_t s)
{
    rng = s * 0x9e3779b97f4a7c15ull + 1;
    char name[160];
    snprintf(name, sizeof name, "heads=%d/%d hd=%d len=%lld nc=%lld tq=%lld s=%.2g/%.2g%s%s",
             c->n_heads, c->n_kv, c->hd, (long long)c->len, (long long)c->nc, (long long)c->tq,
             c->sk, c->sv, c->work ? "" : " no-scratch", c->ties ? " ties" : "");
    plm_error err;
    const int64_t stride = (int64_t)c->n_kv * c->hd + (c->hd % 2 ? 3 : 0); /* odd: padded rows */
    const int64_t qs = (int64_t)c->n_heads * c->hd, nq = c->tq * qs;
    const size_t kvn = (size_t)(c->len * stride);
    float *k = rand_vec(kvn, c->ties), *v = rand_vec(kvn, c->ties);
    float *q = rand_vec((size_t)nq, 0);
    float *want = xmalloc((size_t)nq * 4), *got = xmalloc((size_t)nq * 4);
    plm_kv_bitmap hkb, dkb;
    const int64_t cap = c->len + 5;
    if (kv_bitmap_init(&hkb, c->n_kv, c->hd, cap, c->sk, c->sv, &err) != PLM_OK ||
        kv_bitmap_init(&dkb, c->n_kv, c->hd, cap, c->sk, c->sv, &err) != PLM_OK ||
        kv_bitmap_alloc(cpu, &hkb, &err) != PLM_OK || kv_bitmap_alloc(gpu, &dkb, &err) != PLM_OK) {
        result(0, name, "setup: %s", err.msg);
        exit(1);
    }
    float *dk = to_dev(k, kvn * 4), *dv = to_dev(v, kvn * 4), *dq = to_dev(q, (size_t)nq * 4);
    float *dout = to_dev(NULL, (size_t)nq * 4), *dwork = NULL;
    if (c->work) {
        dkb.work_floats = kv_bitmap_work_floats(c->n_heads, c->hd, c->tq);
        dwork = to_dev(NULL, (size_t)dkb.work_floats * 4);
        dkb.work = dwork;
    }
    /* compression: host in one go, device in two batches */
    kv_bitmap_compress(cpu, &hkb, k, v, stride, c->nc, &err);
    const int64_t mid = c->nc / 3;
    if (kv_bitmap_compress(gpu, &dkb, dk, dv, stride, mid, &err) != PLM_OK ||
        kv_bitmap_compress(gpu, &dkb, dk, dv, stride, c->nc, &err) != PLM_OK) {
        result(0, name, "compress: %s", err.msg);
        exit(1);
    }
    const char *which = "";
    const int64_t bad = store_diff(&hkb, &dkb, c->nc, &which);
    const char *e = gpu_error();
    char label[200];
    snprintf(label, sizeof label, "compress %s", name);
    if (e) result(0, label, "backend error: %s", e);
    else if (bad >= 0)
        result(0, label, "%s differ at row %lld head %lld", which, (long long)(bad / c->n_kv),
               (long long)(bad % c->n_kv));
    else result(1, label, "bit-exact over %lld rows", (long long)c->nc);

    /* attention */
    plm_attn_args a = {0};
    a.out = want;
    a.q = q;
    a.k = k;
    a.v = v;
    a.tq = c->tq;
    a.tk = c->len;
    a.q_stride = qs;
    a.kv_stride = stride;
    a.q_pos0 = c->len - c->tq;
    a.n_heads = c->n_heads;
    a.n_kv = c->n_kv;
    a.head_dim = c->hd;
    a.causal = 1;
    a.scale = 1.0f / sqrtf((float)c->hd);
    kv_bitmap_attend(cpu, &a, &hkb, &err);
    for (int64_t i = 0; i < nq; i++) got[i] = NAN;
    gpu->ops->upload(gpu, dout, got, (size_t)nq * 4);
    a.out = dout;
    a.q = dq;
    a.k = dk;
    a.v = dv;
    if (kv_bitmap_attend(gpu, &a, &dkb, &err) != PLM_OK) {
        result(0, name, "attend: %s", err.msg);
        exit(1);
    }
    gpu->ops->download(gpu, got, dout, (size_t)nq * 4);
    e = gpu_error();
    size_t nonfinite = 0;
    for (int64_t i = 0; i < nq; i++) nonfinite += !isfinite(got[i]);
    const double rel = rel_l2(got, want, (size_t)nq), tol = 1e-5;
    snprintf(label, sizeof label, "attend %s", name);
    if (e) result(0, label, "backend error: %s", e);
    else if (nonfinite) result(0, label, "%zu of %lld outputs not finite (unwritten?)", nonfinite,
                               (long long)nq);
    else result(rel <= tol, label, "rel err %.3g (tol %.0e)", rel, tol);

    kv_bitmap_release(cpu, &hkb);
    kv_bitmap_release(gpu, &dkb);
    gpu->ops->release(gpu, dk);
    gpu->ops->release(gpu, dv);
    gpu->ops->release(gpu, dq);
    gpu->ops->release(gpu, dout);
    if (dwork) gpu->ops->release(gpu, dwork);
    free(k);
    free(v);
    free(q);
    free(want);
    free(got);
}

int main(void)
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
    if (!gpu->ops->kv_bitmap) {
        printf("FAIL the CUDA backend has no kv_bitmap ops\n0 passed, 1 failed\n");
        return 1;
    }
    static const tcase cases[] = {
        /* n_heads n_kv hd  len   nc    tq  sk   sv  work ties */
        {32, 32, 128, 4096, 3968, 1, 0.5, 0.5, 1, 0}, /* LLaVA-7B, window 128 */
        {32, 32, 128, 1000, 872, 1, 0.7, 0.7, 1, 0},
        {32, 32, 128, 777, 512, 1, 0.0, 0.0, 1, 0},   /* sparsity 0: every channel kept */
        {8, 2, 64, 333, 200, 1, 0.5, 0.7, 1, 0},      /* GQA 4 */
        {12, 4, 80, 257, 257, 1, 0.6, 0.5, 1, 0},     /* all compressed, hd not a power of 2 */
        {6, 6, 17, 100, 0, 1, 0.5, 0.5, 1, 0},        /* nothing compressed, odd hd */
        {16, 2, 256, 500, 300, 1, 0.5, 0.5, 1, 0},    /* hd 256, group 8 */
        {12, 1, 96, 301, 150, 1, 0.7, 0.5, 1, 0},     /* group 12 = 8 + 4 */
        {9, 3, 130, 203, 190, 1, 0.5, 0.5, 1, 0},     /* three bitmap words, group 3 */
        {6, 3, 128, 90, 50, 4, 0.5, 0.5, 1, 0},       /* several causal queries */
        {4, 4, 128, 700, 600, 1, 0.5, 0.5, 0, 0},     /* no scratch: one block per head */
        {8, 8, 128, 300, 256, 1, 0.5, 0.7, 1, 1},     /* tied magnitudes */
        {4, 2, 33, 129, 64, 1, 0.7, 0.7, 1, 1},       /* ties, hd 33 */
        {2, 1, 8, 5, 3, 1, 0.5, 0.5, 1, 0},           /* tiny */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) run_case(&cases[i], i + 1);
    plm_backend_free(gpu);
    plm_backend_free(cpu);
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
