/* The float32 attention kernel against the bf16 tensor-core one (cuda/cu_attention_tc.cu):
 *   bench_attention [OUT.md]
 * For the CLIP ViT-L/14-336 layer (577 tokens, 16 heads, head_dim 64, bidirectional) and the
 * 7B decoder's prefill layer (629 tokens, 32 heads, head_dim 128, causal): milliseconds per call
 * of each kernel (CUDA events around each call on the backend's stream, median of 20 after two
 * warm-ups), the speed-up, the time per model (24 and 32 layers) and the relative L2 difference
 * of the outputs. The float32 kernel runs with set_precision(be, 0), the tensor-core one with
 * set_precision(be, 1). Self-checking: outputs finite and within 2e-2 of each other. Prints the
 * table (and writes it to OUT.md); "N passed, M failed" last; exits 1 on a failed check. */
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

enum { REPS = 20, WARMUP = 2 };

static plm_backend *gpu;
static uint64_t rng = 0x2545f4914f6cdd1dull;

static int cmp_float(const void *x, const void *y)
{
    const float a = *(const float *)x, b = *(const float *)y;
    return (a > b) - (a < b);
}

/* Median milliseconds of REPS calls at precision `mixed`; -1 on a backend failure. */
static double time_attention(const plm_attn_args *a, int mixed)
{
    float ms[WARMUP + REPS];
    gpu->ops->set_precision(gpu, mixed);
    if (plm_cuda_time_attention(gpu, a, WARMUP + REPS, ms) != 0) return -1;
    qsort(ms + WARMUP, REPS, sizeof *ms, cmp_float);
    return 0.5 * (ms[WARMUP + REPS / 2 - 1] + ms[WARMUP + REPS / 2]);
}

typedef struct shape {
    const char *name;
    int64_t t;
    int heads, kv, hd, causal, layers;
} shape;

int main(int argc, char **argv)
{
    char why[256], line[512], table[4096] = "";
    if (!bench_backends(NULL, &gpu, why, sizeof why)) {
        printf("FAIL cuda: %s\n0 passed, 1 failed\n", why);
        return 1;
    }
    strcat(table, "| layer | tokens | heads x hd | causal | fp32 ms | tensor-core ms | speed-up | "
                  "fp32 ms/model | tc ms/model | rel. L2 |\n"
                  "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|\n");
    static const shape shapes[] = {
        {"CLIP ViT-L/14-336", 577, 16, 16, 64, 0, 24},
        {"LLaVA 7B prefill", 629, 32, 32, 128, 1, 32},
    };
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const shape *s = &shapes[si];
        const size_t nq = (size_t)s->t * s->heads * s->hd, nk = (size_t)s->t * s->kv * s->hd;
        float *q = malloc(nq * 4), *k = malloc(nk * 4), *v = malloc(nk * 4);
        float *ref = malloc(nq * 4), *out = malloc(nq * 4);
        if (!q || !k || !v || !ref || !out) {
            fprintf(stderr, "out of host memory\n");
            return 2;
        }
        /* q, k in [-2, 2): logits of a few units, a peaked but not one-hot softmax */
        for (size_t i = 0; i < nq; i++) q[i] = 2.0f * frand();
        for (size_t i = 0; i < nk; i++) k[i] = 2.0f * frand();
        for (size_t i = 0; i < nk; i++) v[i] = frand();
        plm_attn_args a = {.tq = s->t, .tk = s->t, .q_stride = (int64_t)s->heads * s->hd,
                           .kv_stride = (int64_t)s->kv * s->hd, .n_heads = s->heads,
                           .n_kv = s->kv, .head_dim = s->hd, .causal = s->causal,
                           .scale = 1.0f / sqrtf((float)s->hd)};
        a.q = dev_from(gpu, q, nq * 4), a.k = dev_from(gpu, k, nk * 4), a.v = dev_from(gpu, v, nk * 4);
        a.out = dev_from(gpu, NULL, nq * 4);

        const double fp32 = time_attention(&a, 0);
        gpu->ops->download(gpu, ref, a.out, nq * 4);
        const double tc = time_attention(&a, 1);
        gpu->ops->download(gpu, out, a.out, nq * 4);
        gpu->ops->set_precision(gpu, 0);
        const char *e = gpu->ops->error(gpu);
        size_t bad = 0;
        for (size_t i = 0; i < nq; i++) bad += !isfinite(out[i]) || !isfinite(ref[i]);
        const double rel = rel_l2(out, ref, nq);
        snprintf(line, sizeof line, "%s: tensor-core output finite (%zu bad) and within 2e-2 of "
                 "float32 (rel. L2 %.3g)%s%s", s->name, bad, rel, e ? "; backend error: " : "",
                 e ? e : "");
        check(!e && !bad && rel <= 2e-2 && fp32 > 0 && tc > 0, line);

        snprintf(line, sizeof line,
                 "| %s | %lld | %d x %d | %s | %.3f | %.3f | %.2fx | %.2f | %.2f | %.2g |\n",
                 s->name, (long long)s->t, s->heads, s->hd, s->causal ? "yes" : "no", fp32, tc,
                 tc > 0 ? fp32 / tc : 0.0, fp32 * s->layers, tc * s->layers, rel);
        strcat(table, line);
        printf("%s", line);
        fflush(stdout);
        gpu->ops->release(gpu, (void *)a.q), gpu->ops->release(gpu, (void *)a.k);
        gpu->ops->release(gpu, (void *)a.v), gpu->ops->release(gpu, a.out);
        free(q), free(k), free(v), free(ref), free(out);
        if (e) break; /* a failed backend skips every later op */
    }
    printf("\nattention, float32 kernel vs bf16 tensor cores (median of %d, CUDA events):\n%s",
           REPS, table);
    if (argc > 1)
        bench_save(argv[1], "# attention: float32 kernel vs bf16 tensor cores (median of %d)\n\n%s",
                   REPS, table);
    plm_backend_free(gpu);
    return bench_finish(NULL);
}
