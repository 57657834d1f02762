/* Decode attention on Mustafar's bitmap-compressed KV cache against dense decode attention, at
 * the LLaVA-7B shape (32 heads, 32 kv heads, head_dim 128), one query, contexts 4k..32k, K and
 * V sparsity 0 / 0.5 / 0.7, the newest 128 rows dense (the paper code's local window).
 *   bench_kv_bitmap OUT.txt
 * Columns: dense_us (the backend's attention op), splitk_us (the bitmap kernel with nothing
 * compressed: a split-K dense flash-decode, the fair dense baseline), bitmap_us, the two
 * speedups, the bytes the cache takes (dense float32 vs store + window) and the time to
 * compress the whole prefix on the device. Every timing is the mean over >= 0.3 s of
 * back-to-back launches (the host waits only at the end of each batch of 20).
 * Self-checks: at 4k the GPU output must match the CPU op on the same store (rel err <= 1e-5),
 * and the bitmap kernel must beat dense attention at sparsity >= 0.5 for every context; the
 * last line is "N passed, M failed" and the exit status 1 on any failure. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/backend.h"
#include "prune/kv_bitmap.h"
#include "tests/support/compare.h"
#include "tests/gpu/gpu_util.h"
#include "tests/gpu/bench_util.h"

#define HEADS 32
#define KV 32
#define HD 128
#define WINDOW 128
#define MAX_CTX 32768

static plm_backend *cpu, *gpu;
static uint64_t rng = 0x2545f4914f6cdd1dull;

typedef struct job {
    int bitmap; /* 0: be->ops->attention; 1: kv_bitmap attend */
    plm_attn_args a;
    const plm_kv_bitmap *kb;
} job;

static void run_job(const job *j)
{
    if (j->bitmap) gpu->ops->kv_bitmap->attend(gpu, &j->a, j->kb);
    else gpu->ops->attention(gpu, &j->a);
}

static void sync_gpu(const float *probe)
{
    float x;
    gpu->ops->download(gpu, &x, probe, sizeof x);
}

/* Mean microseconds per call. */
static double time_us(const job *j)
{
    for (int i = 0; i < 3; i++) run_job(j);
    sync_gpu(j->a.out);
    long n = 0;
    const double t0 = now_s();
    double t;
    do {
        for (int i = 0; i < 20; i++) run_job(j);
        n += 20;
        sync_gpu(j->a.out);
        t = now_s() - t0;
    } while (t < 0.3);
    return 1e6 * t / (double)n;
}

int main(int argc, char **argv)
{
    char why[256];
    bench_start(argc, argv, &cpu, &gpu, why, sizeof why);
    plm_error err;
    const int64_t stride = KV * HD;
    const size_t n = (size_t)MAX_CTX * stride;
    float *k = malloc(n * 4), *v = malloc(n * 4), *q = malloc(HEADS * HD * 4);
    float *want = malloc(HEADS * HD * 4), *got = malloc(HEADS * HD * 4);
    if (!k || !v || !q || !want || !got) {
        fprintf(stderr, "out of host memory\n");
        return 2;
    }
    for (size_t i = 0; i < n; i++) k[i] = frand();
    for (size_t i = 0; i < n; i++) v[i] = frand();
    for (int i = 0; i < HEADS * HD; i++) q[i] = frand();
    float *dk = gpu->ops->alloc(gpu, n * 4), *dv = gpu->ops->alloc(gpu, n * 4);
    float *dq = gpu->ops->alloc(gpu, HEADS * HD * 4), *dout = gpu->ops->alloc(gpu, HEADS * HD * 4);
    const int64_t work_floats = kv_bitmap_work_floats(HEADS, HD, 1);
    float *dwork = gpu->ops->alloc(gpu, (size_t)work_floats * 4);
    if (!dk || !dv || !dq || !dout || !dwork) {
        printf("FAIL device memory\n0 passed, 1 failed\n");
        return 1;
    }
    gpu->ops->upload(gpu, dk, k, n * 4);
    gpu->ops->upload(gpu, dv, v, n * 4);
    gpu->ops->upload(gpu, dq, q, HEADS * HD * 4);

    const int64_t ctxs[] = {4096, 8192, 16384, 32768};
    const double sps[] = {0.0, 0.5, 0.7};
    emit("# %s; %d heads, %d kv heads, head_dim %d, 1 query, window %d\n"
         "%-6s %-5s %10s %10s %10s %9s %9s %12s %12s %6s %11s\n",
         why, HEADS, KV, HD, WINDOW, "ctx", "spars", "dense_us", "splitk_us", "bitmap_us",
         "x_dense", "x_splitk", "dense_MiB", "bitmap_MiB", "ratio", "compress_us");
    for (size_t ci = 0; ci < sizeof ctxs / sizeof *ctxs; ci++)
        for (size_t si = 0; si < sizeof sps / sizeof *sps; si++) {
            const int64_t len = ctxs[ci], nc = len - WINDOW;
            plm_kv_bitmap kb;
            if (kv_bitmap_init(&kb, KV, HD, len, sps[si], sps[si], &err) != PLM_OK ||
                kv_bitmap_alloc(gpu, &kb, &err) != PLM_OK) {
                printf("FAIL store: %s\n", err.msg);
                return 1;
            }
            kb.work = dwork;
            kb.work_floats = work_floats;
            job j = {0};
            j.a.out = dout;
            j.a.q = dq;
            j.a.k = dk;
            j.a.v = dv;
            j.a.tq = 1;
            j.a.tk = len;
            j.a.q_stride = HEADS * HD;
            j.a.kv_stride = stride;
            j.a.q_pos0 = len - 1;
            j.a.n_heads = HEADS;
            j.a.n_kv = KV;
            j.a.head_dim = HD;
            j.a.causal = 1;
            j.a.scale = 1.0f / sqrtf((float)HD);
            j.kb = &kb;
            const double dense_us = time_us(&j);
            j.bitmap = 1; /* n_rows is still 0: all rows dense, through the split-K kernel */
            const double splitk_us = time_us(&j);
            sync_gpu(dout);
            const double t0 = now_s();
            kv_bitmap_compress(gpu, &kb, dk, dv, stride, nc, &err);
            sync_gpu(dout);
            const double compress_us = 1e6 * (now_s() - t0);
            const double bitmap_us = time_us(&j);
            const double dense_mib = (double)kv_bitmap_dense_bytes(&kb, len) / 1048576.0;
            const double bitmap_mib = (double)(kv_bitmap_bytes(&kb, nc) +
                                               kv_bitmap_dense_bytes(&kb, WINDOW)) / 1048576.0;
            emit("%-6lld %-5.2f %10.1f %10.1f %10.1f %9.2f %9.2f %12.1f %12.1f %6.3f %11.0f\n",
                 (long long)len, sps[si], dense_us, splitk_us, bitmap_us, dense_us / bitmap_us,
                 splitk_us / bitmap_us, dense_mib, bitmap_mib, bitmap_mib / dense_mib,
                 compress_us);
            const char *e = gpu->ops->error(gpu);
            char what[256];
            if (e) {
                snprintf(what, sizeof what, "ctx %lld sparsity %.2f: backend error %s",
                         (long long)len, sps[si], e);
                check(0, what);
                return 1;
            }
            if (sps[si] >= 0.5) {
                snprintf(what, sizeof what, "ctx %lld sparsity %.2f: bitmap %.1f us < dense "
                         "attention %.1f us", (long long)len, sps[si], bitmap_us, dense_us);
                check(bitmap_us < dense_us, what);
            }
            if (len == 4096) { /* against the CPU op on a host store of the same rows */
                plm_kv_bitmap hk;
                kv_bitmap_init(&hk, KV, HD, len, sps[si], sps[si], &err);
                kv_bitmap_alloc(cpu, &hk, &err);
                kv_bitmap_compress(cpu, &hk, k, v, stride, nc, &err);
                plm_attn_args a = j.a;
                a.out = want;
                a.q = q;
                a.k = k;
                a.v = v;
                kv_bitmap_attend(cpu, &a, &hk, &err);
                run_job(&j);
                gpu->ops->download(gpu, got, dout, HEADS * HD * 4);
                const double rel = rel_l2(got, want, HEADS * HD);
                snprintf(what, sizeof what, "ctx 4096 sparsity %.2f: GPU vs CPU rel err %.3g "
                         "(tol 1e-5)", sps[si], rel);
                check(rel <= 1e-5, what);
                kv_bitmap_release(cpu, &hk);
            }
            kv_bitmap_release(gpu, &kb);
        }
    gpu->ops->release(gpu, dk);
    gpu->ops->release(gpu, dv);
    gpu->ops->release(gpu, dq);
    gpu->ops->release(gpu, dout);
    gpu->ops->release(gpu, dwork);
    plm_backend_free(gpu);
    plm_backend_free(cpu);
    free(k);
    free(v);
    free(q);
    free(want);
    free(got);
    fclose(bench_out);
    return bench_finish(NULL); /* on stdout only: OUT.txt holds the table alone */
}
