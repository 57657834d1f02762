/* Decode attention on ThinK's thin keys and on KIVI's int4 rows against dense decode attention,
 * at the LLaVA-7B shape (32 heads, 32 kv heads, head_dim 128), one query, contexts 4k..32k.
 *   bench_kv_store OUT.txt
 * Columns: dense_us (the backend's attention op), splitk_us (the thin-key kernel with nothing
 * thin: the same split-K decode over the dense cache, the fair baseline for ThinK), think40_us
 * and think50_us (40% / 50% of the key channels pruned, the newest 32 rows whole as in ThinK's
 * code), int4_us (group 32, the newest 128 rows float32 as in KIVI), the cache's MiB for dense,
 * ThinK at 0.4 and int4 (keys and values, float32 for the float rows), and the time to build
 * each store on the device. Every timing is the mean over >= 0.3 s of back-to-back launches
 * (the host waits only at the end of each batch of 20).
 * Self-checks: at 4k the GPU outputs match the CPU ops on the same stores (rel err <= 1e-5); at
 * every context int4 beats dense attention and ThinK at 0.5 beats its own kernel with nothing
 * thin. The last line is "N passed, M failed" and the exit status 1 on any failure. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/backend_kvstore.h"
#include "prune/kv_int4.h"
#include "prune/kv_thin.h"
#include "tests/support/compare.h"
#include "tests/gpu/gpu_util.h"
#include "tests/gpu/bench_util.h"

#define HEADS 32
#define KV 32
#define HD 128
#define THINK_RECENT 32
#define KIVI_GROUP 32
#define KIVI_RESIDUAL 128
#define MAX_CTX 32768

static plm_backend *cpu, *gpu;
static uint64_t rng = 0x2545f4914f6cdd1dull;

enum { J_DENSE, J_THIN, J_INT4 };

typedef struct job {
    int kind;
    plm_attn_args a;
    const void *store;
} job;

static void run_job(plm_backend *be, const job *j)
{
    if (j->kind == J_THIN) be->ops->kv_thin->attend(be, &j->a, j->store);
    else if (j->kind == J_INT4) be->ops->kv_int4->attend(be, &j->a, j->store);
    else be->ops->attention(be, &j->a);
}

static void sync_gpu(const float *probe)
{
    float x;
    gpu->ops->download(gpu, &x, probe, sizeof x);
}

/* Mean microseconds per call. */
static double time_us(const job *j)
{
    for (int i = 0; i < 3; i++) run_job(gpu, j);
    sync_gpu(j->a.out);
    long n = 0;
    const double t0 = now_s();
    double t;
    do {
        for (int i = 0; i < 20; i++) run_job(gpu, j);
        n += 20;
        sync_gpu(j->a.out);
        t = now_s() - t0;
    } while (t < 0.3);
    return 1e6 * t / (double)n;
}

static void fail_setup(const char *what, const plm_error *err)
{
    printf("FAIL %s: %s\n%d passed, %d failed\n", what, err->msg, n_pass, n_fail + 1);
    exit(1);
}

/* kept channels: the first `keep` of a fixed shuffle per head (the rule is not what is timed) */
static void channels(int keep, int32_t *chan)
{
    for (int h = 0; h < KV; h++) {
        int perm[HD];
        for (int d = 0; d < HD; d++) perm[d] = d;
        for (int d = HD - 1; d > 0; d--) {
            const int e = (int)((frand() + 1.0f) * 0.5f * (float)(d + 1)) % (d + 1);
            const int t = perm[d];
            perm[d] = perm[e];
            perm[e] = t;
        }
        int mark[HD] = {0};
        for (int c = 0; c < keep; c++) mark[perm[c]] = 1;
        for (int d = 0, n = 0; d < HD; d++)
            if (mark[d]) chan[h * keep + n++] = d;
    }
}

/* GPU vs CPU on the same store contents (at 4k). */
static void against_cpu(const job *gj, job cj, const char *what)
{
    float want[HEADS * HD], got[HEADS * HD];
    cj.a.out = want;
    run_job(cpu, &cj);
    run_job(gpu, gj);
    gpu->ops->download(gpu, got, gj->a.out, sizeof got);
    const double rel = rel_l2(got, want, HEADS * HD);
    char line[256];
    snprintf(line, sizeof line, "ctx 4096 %s: GPU vs CPU rel err %.3g (tol 1e-5)", what, rel);
    check(rel <= 1e-5, line);
}

int main(int argc, char **argv)
{
    char why[256];
    bench_start(argc, argv, &cpu, &gpu, why, sizeof why);
    plm_error err;
    const int64_t stride = KV * HD;
    const size_t n = (size_t)MAX_CTX * stride;
    float *k = malloc(n * 4), *v = malloc(n * 4), *q = malloc(HEADS * HD * 4);
    if (!k || !v || !q) {
        fprintf(stderr, "out of host memory\n");
        return 2;
    }
    for (size_t i = 0; i < n; i++) k[i] = frand();
    for (size_t i = 0; i < n; i++) v[i] = frand();
    for (int i = 0; i < HEADS * HD; i++) q[i] = frand();
    float *dk = gpu->ops->alloc(gpu, n * 4), *dv = gpu->ops->alloc(gpu, n * 4);
    float *dq = gpu->ops->alloc(gpu, HEADS * HD * 4), *dout = gpu->ops->alloc(gpu, HEADS * HD * 4);
    const int64_t work_floats = kv_thin_work_floats(HEADS, HD, 1);
    float *dwork = gpu->ops->alloc(gpu, (size_t)work_floats * 4);
    if (!dk || !dv || !dq || !dout || !dwork) {
        printf("FAIL device memory\n0 passed, 1 failed\n");
        return 1;
    }
    gpu->ops->upload(gpu, dk, k, n * 4);
    gpu->ops->upload(gpu, dv, v, n * 4);
    gpu->ops->upload(gpu, dq, q, HEADS * HD * 4);
    const int keep40 = kv_think_keep(HD, 0.4), keep50 = kv_think_keep(HD, 0.5);
    int32_t *chan40 = malloc(KV * HD * 4), *chan50 = malloc(KV * HD * 4), *chan_all =
                                                                          malloc(KV * HD * 4);
    channels(keep40, chan40);
    channels(keep50, chan50);
    for (int h = 0; h < KV; h++)
        for (int d = 0; d < HD; d++) chan_all[h * HD + d] = d;

    const int64_t ctxs[] = {4096, 8192, 16384, 32768};
    emit("# %s; %d heads, %d kv heads, head_dim %d, 1 query; ThinK recent %d, KIVI group %d "
         "residual %d\n%-6s %9s %9s %10s %10s %9s %7s %7s %9s %9s %9s %9s %9s\n", why, HEADS, KV,
         HD, THINK_RECENT, KIVI_GROUP, KIVI_RESIDUAL, "ctx", "dense_us", "splitk_us",
         "think40_us", "think50_us", "int4_us", "x_th50", "x_int4", "dense_MiB", "th40_MiB",
         "int4_MiB", "thin_us", "quant_us");
    for (size_t ci = 0; ci < sizeof ctxs / sizeof *ctxs; ci++) {
        const int64_t len = ctxs[ci], n_thin = len - THINK_RECENT;
        job j = {J_DENSE, {0}, NULL};
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
        const double dense_us = time_us(&j);
        /* the split-K baseline: a thin store with no thin row */
        plm_kv_thin t0, t40, t50;
        if (kv_thin_init(&t0, KV, HD, HD, len, &err) || kv_thin_alloc(gpu, &t0, chan_all, &err))
            fail_setup("thin store", &err);
        t0.work = dwork;
        t0.work_floats = work_floats;
        j.kind = J_THIN;
        j.store = &t0;
        const double splitk_us = time_us(&j);
        kv_thin_release(gpu, &t0);
        double thin_build = 0, th_us[2];
        plm_kv_thin *ts[2] = {&t40, &t50};
        const int keeps[2] = {keep40, keep50};
        const int32_t *chans[2] = {chan40, chan50};
        for (int s = 0; s < 2; s++) {
            if (kv_thin_init(ts[s], KV, HD, keeps[s], len, &err) ||
                kv_thin_alloc(gpu, ts[s], chans[s], &err))
                fail_setup("thin store", &err);
            ts[s]->work = dwork;
            ts[s]->work_floats = work_floats;
            sync_gpu(dout);
            const double b0 = now_s();
            kv_thin_compress(gpu, ts[s], dk, stride, n_thin, &err);
            sync_gpu(dout);
            if (s == 0) thin_build = 1e6 * (now_s() - b0);
            j.store = ts[s];
            th_us[s] = time_us(&j);
        }
        plm_kv_int4 qs;
        if (kv_int4_init(&qs, KV, HD, KIVI_GROUP, len, &err) || kv_int4_alloc(gpu, &qs, &err))
            fail_setup("int4 store", &err);
        qs.work = dwork;
        qs.work_floats = work_floats;
        sync_gpu(dout);
        const double b0 = now_s();
        kv_int4_advance(gpu, &qs, dk, dv, stride, len, KIVI_RESIDUAL, &err);
        sync_gpu(dout);
        const double quant_us = 1e6 * (now_s() - b0);
        j.kind = J_INT4;
        j.store = &qs;
        const double int4_us = time_us(&j);
        const double mib = 1.0 / 1048576.0;
        const double dense_mib = (double)len * KV * HD * 8 * mib;
        const double th_mib = ((double)len * KV * HD * 4 + (double)THINK_RECENT * KV * HD * 4 +
                               (double)kv_thin_bytes(&t40)) * mib;
        const double q_mib = ((double)(len - kv_int4_rows(&qs) / KV) * KV * HD * 8 +
                              (double)kv_int4_bytes(&qs)) * mib;
        emit("%-6lld %9.1f %9.1f %10.1f %10.1f %9.1f %7.2f %7.2f %9.1f %9.1f %9.1f %9.0f %9.0f\n",
             (long long)len, dense_us, splitk_us, th_us[0], th_us[1], int4_us,
             splitk_us / th_us[1], dense_us / int4_us, dense_mib, th_mib, q_mib, thin_build,
             quant_us);
        const char *e = gpu->ops->error(gpu);
        char what[256];
        if (e) {
            snprintf(what, sizeof what, "ctx %lld: backend error %s", (long long)len, e);
            check(0, what);
            return 1;
        }
        snprintf(what, sizeof what, "ctx %lld: int4 %.1f us < dense attention %.1f us",
                 (long long)len, int4_us, dense_us);
        check(int4_us < dense_us, what);
        snprintf(what, sizeof what, "ctx %lld: think at 0.5 %.1f us < the same kernel with "
                 "nothing thin %.1f us", (long long)len, th_us[1], splitk_us);
        check(th_us[1] < splitk_us, what);
        if (len == 4096) { /* the CPU ops on host stores of the same rows */
            plm_kv_thin ht;
            plm_kv_int4 hq;
            if (kv_thin_init(&ht, KV, HD, keep40, len, &err) ||
                kv_thin_alloc(cpu, &ht, chan40, &err) ||
                kv_thin_compress(cpu, &ht, k, stride, n_thin, &err) ||
                kv_int4_init(&hq, KV, HD, KIVI_GROUP, len, &err) || kv_int4_alloc(cpu, &hq, &err) ||
                kv_int4_advance(cpu, &hq, k, v, stride, len, KIVI_RESIDUAL, &err))
                fail_setup("host stores", &err);
            job c = j;
            c.a.q = q;
            c.a.k = k;
            c.a.v = v;
            j.kind = c.kind = J_THIN;
            j.store = &t40;
            c.store = &ht;
            against_cpu(&j, c, "think 0.4");
            j.kind = c.kind = J_INT4;
            j.store = &qs;
            c.store = &hq;
            against_cpu(&j, c, "int4");
            kv_thin_release(cpu, &ht);
            kv_int4_release(cpu, &hq);
        }
        kv_thin_release(gpu, &t40);
        kv_thin_release(gpu, &t50);
        kv_int4_release(gpu, &qs);
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
    free(chan40);
    free(chan50);
    free(chan_all);
    fclose(bench_out);
    return bench_finish(NULL); /* on stdout only: OUT.txt holds the table alone */
}
