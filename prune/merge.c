/* Recycling: dropped tokens are folded into a few summary tokens instead of vanishing. Two
 * official rules: VFlowOpt's spatial grid cells and VisionZip's stride targets. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "prune/prune.h"

int64_t prune_grid_recycle(float *rows, int64_t dim, const float *score, int g,
                           const int32_t *top, int64_t nk, double m, int32_t *keep)
{
    const int64_t n = (int64_t)g * g;
    if (nk >= n) {
        for (int64_t i = 0; i < n; i++) keep[i] = (int32_t)i;
        return n;
    }
    char *kept = calloc((size_t)n, 1);
    const int cells_side = (int)ceil(g / m);
    const int64_t nc = (int64_t)cells_side * cells_side;
    int32_t *best = malloc((size_t)nc * sizeof *best);
    double *mass = calloc((size_t)nc, sizeof *mass);
    float *acc = calloc((size_t)(nc * dim), sizeof *acc);
    if (!kept || !best || !mass || !acc) {
        free(kept); free(best); free(mass); free(acc);
        return -1;
    }
    for (int64_t i = 0; i < nk; i++) kept[top[i]] = 1;
    for (int64_t c = 0; c < nc; c++) best[c] = -1;
    for (int64_t i = 0; i < n; i++) {
        if (kept[i]) continue;
        int cy = (int)floor((i / g) / m), cx = (int)floor((i % g) / m);
        int64_t c = (int64_t)cy * cells_side + cx;
        if (best[c] < 0 || score[i] > score[best[c]]) best[c] = (int32_t)i;
        mass[c] += score[i];
    }
    for (int64_t i = 0; i < n; i++) {
        if (kept[i]) continue;
        int cy = (int)floor((i / g) / m), cx = (int)floor((i % g) / m);
        int64_t c = (int64_t)cy * cells_side + cx;
        /* weights are the raw scores normalised within the cell; equal if they sum to zero */
        double w = mass[c] > 0 ? score[i] / mass[c] : 0;
        const float *r = rows + i * dim;
        float *a = acc + c * dim;
        for (int64_t d = 0; d < dim; d++) a[d] += (float)(w * r[d]);
    }
    for (int64_t c = 0; c < nc; c++) {
        if (best[c] < 0) continue;
        float *dst = rows + (int64_t)best[c] * dim;
        if (mass[c] > 0) {
            memcpy(dst, acc + c * dim, (size_t)dim * sizeof *dst);
        } else { /* all-zero scores: plain mean of the cell */
            int64_t cnt = 0;
            memset(acc + c * dim, 0, (size_t)dim * sizeof *acc);
            for (int64_t i = 0; i < n; i++) {
                if (kept[i]) continue;
                int cy = (int)floor((i / g) / m), cx = (int)floor((i % g) / m);
                if ((int64_t)cy * cells_side + cx != c) continue;
                for (int64_t d = 0; d < dim; d++) acc[c * dim + d] += rows[i * dim + d];
                cnt++;
            }
            for (int64_t d = 0; d < dim; d++) dst[d] = acc[c * dim + d] / (float)cnt;
        }
        kept[best[c]] = 1;
    }
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++)
        if (kept[i]) keep[k++] = (int32_t)i;
    free(kept); free(best); free(mass); free(acc);
    return k;
}

int64_t prune_visionzip_merge(const float *rows, int64_t dim, const float *keys, int64_t kd,
                              const int32_t *rem, int64_t nr, int64_t c, float *out)
{
    if (c > nr) c = nr;
    if (c <= 0) return 0;
    float *kn = malloc((size_t)(nr * kd) * sizeof *kn);
    int32_t *tgt = malloc((size_t)c * sizeof *tgt);
    int64_t *count = calloc((size_t)c, sizeof *count);
    char *is_tgt = calloc((size_t)nr, 1);
    if (!kn || !tgt || !count || !is_tgt) {
        free(kn); free(tgt); free(count); free(is_tgt);
        return -1;
    }
    for (int64_t i = 0; i < nr; i++) {
        const float *k = keys + (int64_t)rem[i] * kd;
        double nn = 0;
        for (int64_t d = 0; d < kd; d++) nn += (double)k[d] * k[d];
        float inv = nn > 0 ? (float)(1.0 / sqrt(nn)) : 0.0f;
        for (int64_t d = 0; d < kd; d++) kn[i * kd + d] = k[d] * inv;
    }
    const int64_t step = nr / c > 1 ? nr / c : 1;
    for (int64_t j = 0; j < c; j++) {
        tgt[j] = (int32_t)(j * step);
        is_tgt[j * step] = 1;
    }
    memset(out, 0, (size_t)(c * dim) * sizeof *out);
    for (int64_t i = 0; i < nr; i++) {
        if (is_tgt[i]) continue;
        int64_t best = 0;
        double bs = -2;
        for (int64_t j = 0; j < c; j++) {
            double sim = 0;
            for (int64_t d = 0; d < kd; d++) sim += (double)kn[i * kd + d] * kn[tgt[j] * kd + d];
            if (sim > bs) {
                bs = sim;
                best = j;
            }
        }
        const float *r = rows + (int64_t)rem[i] * dim;
        for (int64_t d = 0; d < dim; d++) out[best * dim + d] += r[d];
        count[best]++;
    }
    for (int64_t j = 0; j < c; j++) {
        /* the official rule: target + mean of its members (not an average with the target) */
        const float *t = rows + (int64_t)rem[tgt[j]] * dim;
        float inv = count[j] ? 1.0f / (float)count[j] : 0.0f;
        for (int64_t d = 0; d < dim; d++) out[j * dim + d] = t[d] + out[j * dim + d] * inv;
    }
    free(kn); free(tgt); free(count); free(is_tgt);
    return c;
}
