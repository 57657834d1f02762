/* Block-sparse prefill attention (attention_blocks) against dense attention on the GPU:
 *   bench_attn_blocks [OUT.md]
 * For 4k, 8k, 16k and 32k tokens (32 query heads, 8 kv heads, head_dim 128, blocks of 128):
 * dense attention ms, the block-sparse op at the mask FlexPrefill picks (gamma 0.95, tau 0.1,
 * min_budget 1024) on synthetic inputs with segment, rotary and attention-sink structure,
 * and at random masks of 10/30/50% of the causal tiles (first block and diagonal always kept).
 * Self-checking: at 100% of the tiles the op must match dense attention (rel. L2 <= 1e-5), and
 * every output must be finite. Prints the table (and writes it to OUT.md); "N passed, M failed"
 * last; exits 1 on a failed check. Times are the median of 3 runs after a warm-up, each ended
 * by a 4-byte download (which waits for the stream). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/backend.h"
#include "prune/kv_blocks.h"
#include "tests/support/compare.h"
#include "tests/gpu/gpu_util.h"
#include "tests/gpu/bench_util.h"

enum { NH = 32, NKV = 8, HD = 128, BLK = 128 };

static plm_backend *gpu;
static uint64_t rng = 0x2545f4914f6cdd1dull;

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}

/* Synthetic rows with the structure long prompts show: dims 0..63 carry a segment vector
 * (tokens of one 384-token segment share a random unit direction, scaled so a query scores
 * its own segment ~8 logits above others: block-level structure), dims 64..125 are rotary
 * pairs (a local slash), dim 126 is an attention sink (key 0 only), dim 127 noise. */
static void synth(float *x, int64_t t, int heads, int is_key)
{
    enum { SEG = 384, SD = 64 };
    const int64_t nseg = (t + SEG - 1) / SEG;
    float *sv = malloc((size_t)(nseg * heads * SD) * sizeof *sv);
    for (int64_t i = 0; i < nseg * heads; i++) {
        double n2 = 0;
        float *r = sv + i * SD;
        for (int d = 0; d < SD; d++) {
            r[d] = frand();
            n2 += (double)r[d] * r[d];
        }
        for (int d = 0; d < SD; d++) r[d] = (float)(9.5 * r[d] / sqrt(n2));
    }
    for (int64_t i = 0; i < t; i++)
        for (int h = 0; h < heads; h++) {
            float *r = x + (i * heads + h) * HD;
            memcpy(r, sv + ((i / SEG) * heads + h) * SD, SD * sizeof *r);
            for (int f = 0; f < (HD - SD - 2) / 2; f++) {
                const double w = pow(10000.0, -2.0 * f / (HD - SD)) * (1 + 0.1 * h);
                r[SD + 2 * f] = (float)cos(w * (double)i) + 0.3f * frand();
                r[SD + 2 * f + 1] = (float)sin(w * (double)i) + 0.3f * frand();
            }
            r[HD - 2] = is_key ? (i == 0 ? 20.0f : 0.0f) : 2.0f;
            r[HD - 1] = 0.3f * frand();
        }
    free(sv);
}

static double time_op(const plm_attn_args *a, const uint8_t *dmask, int dense)
{
    double t[3];
    float probe;
    for (int r = -1; r < 3; r++) {
        const double t0 = now_ms();
        if (dense) gpu->ops->attention(gpu, a);
        else gpu->ops->attention_blocks(gpu, a, dmask, BLK);
        gpu->ops->download(gpu, &probe, a->out, sizeof probe);
        if (r >= 0) t[r] = now_ms() - t0;
    }
    for (int i = 0; i < 3; i++) /* median of three */
        for (int j = i + 1; j < 3; j++)
            if (t[j] < t[i]) {
                const double s = t[i];
                t[i] = t[j], t[j] = s;
            }
    return t[1];
}

static void random_mask(uint8_t *m, int64_t nb, double density)
{
    for (int h = 0; h < NH; h++)
        for (int64_t qb = 0; qb < nb; qb++)
            for (int64_t kb = 0; kb < nb; kb++)
                m[(h * nb + qb) * nb + kb] =
                    kb <= qb && (kb == 0 || kb == qb || (frand() * 0.5 + 0.5) < density);
}

int main(int argc, char **argv)
{
    char why[256], line[512], table[8192] = "";
    plm_error err;
    if (!bench_backends(NULL, &gpu, why, sizeof why)) {
        printf("FAIL cuda: %s\n0 passed, 1 failed\n", why);
        return 1;
    }
    strcat(table, "| tokens | dense ms | FlexPrefill density | FlexPrefill ms | speed-up | "
                  "10% ms | 30% ms | 50% ms | host mask ms |\n"
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    const int64_t sizes[] = {4096, 8192, 16384, 32768};
    for (int si = 0; si < 4; si++) {
        const int64_t T = sizes[si], nb = (T + BLK - 1) / BLK;
        const size_t nq = (size_t)T * NH * HD, nk = (size_t)T * NKV * HD, nm = (size_t)NH * nb * nb;
        float *q = malloc(nq * 4), *k = malloc(nk * 4), *v = malloc(nk * 4);
        float *out = malloc(nq * 4), *ref = malloc(nq * 4), *qp = malloc((size_t)nb * NH * HD * 4);
        uint8_t *mask = malloc(nm);
        if (!q || !k || !v || !out || !ref || !qp || !mask) {
            fprintf(stderr, "out of host memory\n");
            return 2;
        }
        synth(q, T, NH, 0);
        synth(k, T, NKV, 1);
        for (size_t i = 0; i < nk; i++) v[i] = frand();
        plm_attn_args a = {.tq = T, .tk = T, .q_stride = NH * HD, .kv_stride = NKV * HD,
                           .n_heads = NH, .n_kv = NKV, .head_dim = HD, .causal = 1,
                           .scale = 1.0f / sqrtf((float)HD)};
        a.q = dev_from(gpu, q, nq * 4), a.k = dev_from(gpu, k, nk * 4), a.v = dev_from(gpu, v, nk * 4);
        a.out = dev_from(gpu, NULL, nq * 4);
        uint8_t *dmask = dev_from(gpu, NULL, nm);

        const double dense = time_op(&a, NULL, 1);
        gpu->ops->download(gpu, ref, a.out, nq * 4);
        memset(mask, 1, nm);
        gpu->ops->upload(gpu, dmask, mask, nm);
        time_op(&a, dmask, 0);
        gpu->ops->download(gpu, out, a.out, nq * 4);
        const double e_all = rel_l2(out, ref, nq);
        snprintf(line, sizeof line, "%lld tokens: all tiles == dense (rel %.2g)", (long long)T, e_all);
        check(e_all <= 1e-5 && !gpu->ops->error(gpu), line);

        /* FlexPrefill's own mask on these inputs (decided on the host) */
        const kv_fp_shape fs = {.n_heads = NH, .n_kv = NKV, .head_dim = HD, .tq = T, .tk = T,
                                .q_stride = NH * HD, .k_stride = NKV * HD, .scale = a.scale,
                                .block = BLK};
        const kv_fp_params fp = {.gamma = 0.95, .tau = 0.1, .block = BLK, .min_budget = 1024};
        double t0 = now_ms();
        kv_pool_rows(q, T, NH * HD, NH * HD, BLK, qp);
        plm_status st = kv_flexprefill_mask(&fs, &fp, q + (T - BLK) * NH * HD, qp, k, mask,
                                            NULL, &err);
        const double host_ms = now_ms() - t0;
        check(st == PLM_OK, st == PLM_OK ? "flexprefill mask" : err.msg);
        const double dens = kv_blocks_density(mask, NH, T, T, BLK);
        gpu->ops->upload(gpu, dmask, mask, nm);
        const double flex = time_op(&a, dmask, 0);
        gpu->ops->download(gpu, out, a.out, nq * 4);
        size_t bad = 0;
        for (size_t i = 0; i < nq; i++) bad += !isfinite(out[i]);
        snprintf(line, sizeof line, "%lld tokens: flexprefill output finite (%zu bad), rel. diff "
                 "to dense %.3g", (long long)T, bad, rel_l2(out, ref, nq));
        check(!bad && !gpu->ops->error(gpu), line);

        double ms[3];
        const double dd[3] = {0.10, 0.30, 0.50};
        for (int d = 0; d < 3; d++) {
            random_mask(mask, nb, dd[d]);
            gpu->ops->upload(gpu, dmask, mask, nm);
            ms[d] = time_op(&a, dmask, 0);
        }
        snprintf(line, sizeof line,
                 "| %lld | %.2f | %.1f%% | %.2f | %.2fx | %.2f | %.2f | %.2f | %.0f |\n",
                 (long long)T, dense, 100 * dens, flex, dense / flex, ms[0], ms[1], ms[2], host_ms);
        strcat(table, line);
        printf("%s", line);
        fflush(stdout);
        const char *e = gpu->ops->error(gpu);
        check(!e, e ? e : "no backend error");
        gpu->ops->release(gpu, (void *)a.q), gpu->ops->release(gpu, (void *)a.k);
        gpu->ops->release(gpu, (void *)a.v), gpu->ops->release(gpu, a.out);
        gpu->ops->release(gpu, dmask);
        free(q), free(k), free(v), free(out), free(ref), free(qp), free(mask);
    }
    printf("\nattention_blocks vs dense, %d heads / %d kv heads, head_dim %d, block %d:\n%s", NH,
           NKV, HD, BLK, table);
    if (argc > 1)
        bench_save(argv[1],
                   "# attention_blocks vs dense (%d/%d heads, head_dim %d, block %d)\n\n%s", NH,
                   NKV, HD, BLK, table);
    plm_backend_free(gpu);
    return bench_finish(NULL);
}
