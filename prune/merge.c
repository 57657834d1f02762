/* Recycling: dropped tokens are folded into a few summary tokens instead of vanishing. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "prune/prune.h"

static double dot(const float *a, const float *b, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

int64_t prune_merge_similar(const float *rows, int64_t dim, const int32_t *drop, int64_t nd,
                            const float *w, int64_t n_out, float *out, int32_t *group_of)
{
    if (n_out > nd) n_out = nd;
    if (n_out <= 0) return 0;
    /* seeds: the n_out heaviest dropped rows (by weight; the first ones when unweighted) */
    float *wd = calloc((size_t)nd, sizeof *wd);
    int32_t *seed = malloc((size_t)n_out * sizeof *seed);
    double *norm = malloc((size_t)nd * sizeof *norm), *mass = calloc((size_t)n_out, sizeof *mass);
    int32_t *grp = malloc((size_t)nd * sizeof *grp);
    if (!wd || !seed || !norm || !mass || !grp) {
        free(wd); free(seed); free(norm); free(mass); free(grp);
        return -1;
    }
    for (int64_t i = 0; i < nd; i++) {
        wd[i] = w ? w[drop[i]] : 1.0f;
        norm[i] = sqrt(dot(rows + (int64_t)drop[i] * dim, rows + (int64_t)drop[i] * dim, dim));
    }
    int64_t ns = prune_topk(wd, nd, n_out, seed); /* positions within drop[] */
    if (ns < 0) ns = 0;
    for (int64_t i = 0; i < nd; i++) {
        const float *r = rows + (int64_t)drop[i] * dim;
        int best = 0;
        double best_sim = -2;
        for (int64_t c = 0; c < ns; c++) {
            const float *sr = rows + (int64_t)drop[seed[c]] * dim;
            double den = norm[i] * norm[seed[c]];
            double sim = den > 0 ? dot(r, sr, dim) / den : 0;
            if (sim > best_sim) {
                best_sim = sim;
                best = (int)c;
            }
        }
        grp[i] = best;
    }
    memset(out, 0, (size_t)(ns * dim) * sizeof *out);
    for (int64_t i = 0; i < nd; i++) {
        /* weights must be positive for an average: shift by a floor so zeros still count */
        double wi = (double)wd[i] > 0 ? wd[i] : 1e-6;
        const float *r = rows + (int64_t)drop[i] * dim;
        float *o = out + (int64_t)grp[i] * dim;
        for (int64_t d = 0; d < dim; d++) o[d] += (float)(wi * r[d]);
        mass[grp[i]] += wi;
    }
    for (int64_t c = 0; c < ns; c++)
        for (int64_t d = 0; d < dim; d++) out[c * dim + d] = (float)(out[c * dim + d] / mass[c]);
    if (group_of) memcpy(group_of, grp, (size_t)nd * sizeof *grp);
    free(wd); free(seed); free(norm); free(mass); free(grp);
    return ns;
}
