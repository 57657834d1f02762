/* Text-guided pieces of SparseVLM: choosing raters, and density-peak clustering of the tokens
 * it recycles. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "prune/prune.h"

int64_t prune_raters(const float *sim, int64_t nv, int64_t nt, int32_t *idx)
{
    if (nt <= 0) return 0;
    double *m = calloc((size_t)nt, sizeof *m), *row = malloc((size_t)nt * sizeof *row);
    if (!m || !row) {
        free(m);
        free(row);
        return -1;
    }
    for (int64_t v = 0; v < nv; v++) {
        const float *sv = sim + v * nt;
        double mx = -INFINITY, sum = 0;
        for (int64_t t = 0; t < nt; t++) mx = sv[t] > mx ? sv[t] : mx;
        for (int64_t t = 0; t < nt; t++) sum += row[t] = exp((double)sv[t] - mx);
        for (int64_t t = 0; t < nt; t++) m[t] += row[t] / sum / (double)nv;
    }
    double mean = 0;
    for (int64_t t = 0; t < nt; t++) mean += m[t] / (double)nt;
    int64_t n = 0;
    for (int64_t t = 0; t < nt; t++)
        if (m[t] > mean) idx[n++] = (int32_t)t;
    free(m);
    free(row);
    return n;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int64_t prune_dpc_knn_merge(const float *gram, int64_t n, int64_t d, int64_t k, int knn,
                            int64_t *off, int32_t *src, float *w)
{
    if (k > n) k = n;
    off[0] = 0;
    if (k <= 0) return 0;
    if (knn > n) knn = (int)n;
    double *dist = malloc((size_t)(n * n) * sizeof *dist), *dens = malloc((size_t)n * 8);
    double *score = malloc((size_t)n * 8), *tmp = malloc((size_t)n * 8);
    int32_t *centre = malloc((size_t)k * sizeof *centre);
    int64_t *count = calloc((size_t)k, sizeof *count);
    if (!dist || !dens || !score || !tmp || !centre || !count) {
        free(dist); free(dens); free(score); free(tmp); free(centre); free(count);
        return -1;
    }
    const double scale = 1.0 / sqrt((double)d);
    /* ||a - b||^2 = g_aa + g_bb - 2 g_ab from the Gram matrix the backend computed: the n x n x d
     * products were the host's ~0.1 s of SparseVLM's recycling on the 7B. One triangle,
     * mirrored, so the matrix is symmetric exactly; rounding can leave a tiny negative. */
    for (int64_t a = 0; a < n; a++) {
        dist[a * n + a] = 0;
        for (int64_t b = a + 1; b < n; b++) {
            const double sq = (double)gram[a * n + a] + gram[b * n + b] - 2.0 * gram[a * n + b];
            dist[a * n + b] = dist[b * n + a] = sqrt(sq > 0 ? sq : 0) * scale;
        }
    }
    double dmax = 0;
    for (int64_t a = 0; a < n; a++) {
        for (int64_t b = 0; b < n; b++) {
            tmp[b] = dist[a * n + b];
            dmax = tmp[b] > dmax ? tmp[b] : dmax;
        }
        qsort(tmp, (size_t)n, sizeof *tmp, cmp_double); /* tmp[0] = 0: the row itself */
        double ms = 0;
        for (int j = 0; j < knn; j++) ms += tmp[j] * tmp[j];
        dens[a] = exp(-ms / knn) - 1e-12 * (double)a; /* deterministic tie-break by index */
    }
    for (int64_t a = 0; a < n; a++) {
        double delta = dmax;
        for (int64_t b = 0; b < n; b++)
            if (dens[b] > dens[a] && dist[a * n + b] < delta) delta = dist[a * n + b];
        score[a] = dens[a] * delta;
    }
    /* the k highest scores are the centres */
    for (int64_t c = 0; c < k; c++) {
        int64_t best = -1;
        for (int64_t a = 0; a < n; a++) {
            int taken = 0;
            for (int64_t j = 0; j < c; j++) taken |= centre[j] == a;
            if (!taken && (best < 0 || score[a] > score[best])) best = a;
        }
        centre[c] = (int32_t)best;
    }
    int32_t *near = malloc((size_t)n * sizeof *near);
    if (!near) {
        free(dist); free(dens); free(score); free(tmp); free(centre); free(count);
        return -1;
    }
    for (int64_t a = 0; a < n; a++) {
        int64_t c_near = 0;
        for (int64_t c = 1; c < k; c++)
            if (dist[a * n + centre[c]] < dist[a * n + centre[c_near]]) c_near = c;
        near[a] = (int32_t)c_near;
        count[c_near]++;
    }
    int64_t j = 0;
    for (int64_t c = 0; c < k; c++) {
        off[c] = j;
        for (int64_t a = 0; a < n; a++)
            if (near[a] == c) {
                src[j] = (int32_t)a;
                w[j++] = 1.0f / (float)count[c];
            }
    }
    off[k] = j;
    free(near);
    free(dist); free(dens); free(score); free(tmp); free(centre); free(count);
    return k;
}
