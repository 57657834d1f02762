/* Recycling: dropped tokens are folded into a few summary tokens instead of vanishing. Two
 * official rules: VFlowOpt's spatial grid cells and VisionZip's stride targets. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "prune/prune.h"

int64_t prune_grid_recycle(const float *score, int g, const int32_t *top, int64_t nk, double m,
                           int32_t *keep, int64_t *off, int32_t *src, float *w)
{
    const int64_t n = (int64_t)g * g;
    const int cells_side = (int)ceil(g / m);
    const int64_t nc = (int64_t)cells_side * cells_side;
    char *kept = calloc((size_t)n, 1);
    int32_t *best = malloc((size_t)nc * sizeof *best), *cell = malloc((size_t)n * sizeof *cell);
    int64_t *count = calloc((size_t)nc, sizeof *count);
    double *mass = calloc((size_t)nc, sizeof *mass);
    if (!kept || !best || !cell || !count || !mass) {
        free(kept); free(best); free(cell); free(count); free(mass);
        return -1;
    }
    if (nk >= n) memset(kept, 1, (size_t)n);
    else for (int64_t i = 0; i < nk; i++) kept[top[i]] = 1;
    for (int64_t c = 0; c < nc; c++) best[c] = -1;
    for (int64_t i = 0; i < n; i++) {
        int cy = (int)floor((i / g) / m), cx = (int)floor((i % g) / m);
        int64_t c = (int64_t)cy * cells_side + cx;
        cell[i] = (int32_t)c;
        if (kept[i]) continue;
        if (best[c] < 0 || score[i] > score[best[c]]) best[c] = (int32_t)i;
        mass[c] += score[i];
        count[c]++;
    }
    /* each kept slot in ascending order: a kept token is itself; a cell's best dropped slot is
     * the cell's dropped tokens, weighted by their scores normalised within the cell (plainly
     * averaged when those sum to zero) */
    int64_t r = 0, j = 0;
    for (int64_t i = 0; i < n; i++) {
        const int64_t c = cell[i];
        if (!kept[i] && best[c] != i) continue;
        keep[r] = (int32_t)i;
        off[r] = j;
        if (kept[i]) {
            src[j] = (int32_t)i;
            w[j++] = 1.0f;
        } else {
            for (int64_t t = 0; t < n; t++) {
                if (kept[t] || cell[t] != c) continue;
                src[j] = (int32_t)t;
                w[j++] = (float)(mass[c] > 0 ? score[t] / mass[c] : 1.0 / (double)count[c]);
            }
        }
        r++;
    }
    off[r] = j;
    free(kept); free(best); free(cell); free(count); free(mass);
    return r;
}

int64_t prune_visionzip_merge(const float *keys, int64_t kd, const int32_t *rem, int64_t nr,
                              int64_t c, int64_t *off, int32_t *src, float *w)
{
    if (c > nr) c = nr;
    if (c <= 0) {
        off[0] = 0;
        return 0;
    }
    float *kn = malloc((size_t)(nr * kd) * sizeof *kn);
    int32_t *tgt = malloc((size_t)c * sizeof *tgt), *join = malloc((size_t)nr * sizeof *join);
    int64_t *count = calloc((size_t)c, sizeof *count);
    char *is_tgt = calloc((size_t)nr, 1);
    if (!kn || !tgt || !join || !count || !is_tgt) {
        free(kn); free(tgt); free(join); free(count); free(is_tgt);
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
    for (int64_t i = 0; i < nr; i++) {
        join[i] = -1;
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
        join[i] = (int32_t)best;
        count[best]++;
    }
    /* the official rule: target + mean of its members (not an average with the target) */
    int64_t k = 0;
    for (int64_t j = 0; j < c; j++) {
        off[j] = k;
        src[k] = rem[tgt[j]];
        w[k++] = 1.0f;
        for (int64_t i = 0; i < nr; i++)
            if (join[i] == j) {
                src[k] = rem[i];
                w[k++] = 1.0f / (float)count[j];
            }
    }
    off[c] = k;
    free(kn); free(tgt); free(join); free(count); free(is_tgt);
    return c;
}
