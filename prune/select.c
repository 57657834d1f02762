/* Selection: which indices survive. Results are ascending so compaction keeps order. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "prune/prune.h"

typedef struct scored {
    float s;
    int32_t i;
} scored;

static int by_score_desc(const void *a, const void *b)
{
    const scored *x = a, *y = b;
    if (x->s != y->s) return x->s < y->s ? 1 : -1;
    return (x->i > y->i) - (x->i < y->i);
}

static int by_index(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

int64_t prune_topk(const float *score, int64_t n, int64_t k, int32_t *idx)
{
    if (k > n) k = n;
    if (k <= 0) return 0;
    scored *t = malloc((size_t)n * sizeof *t);
    if (!t) return -1;
    for (int64_t i = 0; i < n; i++) {
        /* NaN scores sink to the bottom rather than poisoning the order */
        t[i].s = score[i] == score[i] ? score[i] : -3.4e38f;
        t[i].i = (int32_t)i;
    }
    qsort(t, (size_t)n, sizeof *t, by_score_desc);
    for (int64_t i = 0; i < k; i++) idx[i] = t[i].i;
    free(t);
    qsort(idx, (size_t)k, sizeof *idx, by_index);
    return k;
}

int64_t prune_topk_cover(const float *score, int g, int64_t k, int64_t k_cover, int32_t *idx)
{
    const int64_t n = (int64_t)g * g;
    if (k > n) k = n;
    if (k_cover > k) k_cover = k;
    int s = 0;
    while ((int64_t)(s + 1) * (s + 1) <= k_cover) s++;
    if (s == 0) return prune_topk(score, n, k, idx);
    /* the blocks' winners are lifted above every other score, so one top-k takes them first and
     * breaks the remaining ties as prune_topk does */
    float *lifted = malloc((size_t)n * sizeof *lifted);
    if (!lifted) return -1;
    float hi = -3.4e38f, lo = 3.4e38f;
    for (int64_t i = 0; i < n; i++) {
        lifted[i] = score[i] == score[i] ? score[i] : -3.4e38f;
        hi = lifted[i] > hi ? lifted[i] : hi;
        lo = lifted[i] < lo ? lifted[i] : lo;
    }
    const float lift = (hi - lo) + 1.0f;
    for (int by = 0; by < s; by++)
        for (int bx = 0; bx < s; bx++) {
            int64_t best = -1;
            for (int y = by * g / s; y < (by + 1) * g / s; y++)
                for (int x = bx * g / s; x < (bx + 1) * g / s; x++) {
                    int64_t i = (int64_t)y * g + x;
                    if (best < 0 || score[i] > score[best]) best = i;
                }
            if (best >= 0) lifted[best] = score[best] + lift;
        }
    int64_t m = prune_topk(lifted, n, k, idx);
    free(lifted);
    return m;
}

int64_t prune_spread_select(const float *gram, const float *score, int64_t n, int64_t k,
                            double w, int32_t *idx)
{
    if (k > n) k = n;
    if (k <= 0) return 0;
    double *dmin = malloc((size_t)n * sizeof *dmin), *weight = malloc((size_t)n * sizeof *weight);
    double *inv = malloc((size_t)n * sizeof *inv);
    char *taken = calloc((size_t)n, 1);
    if (!dmin || !weight || !inv || !taken) {
        free(dmin); free(weight); free(inv); free(taken);
        return -1;
    }
    float lo = score[0], hi = score[0];
    int64_t first = 0;
    for (int64_t i = 0; i < n; i++) {
        lo = score[i] < lo ? score[i] : lo;
        if (score[i] > hi) hi = score[first = i];
        double g = gram[i * n + i];
        inv[i] = g > 0 ? 1 / sqrt(g) : 0;
        dmin[i] = INFINITY;
    }
    for (int64_t i = 0; i < n; i++) {
        double u = hi > lo ? (score[i] - lo) / (hi - lo) : 1;
        weight[i] = pow(u > 0 ? u : 0, w);
    }
    for (int64_t m = 0, pick = first; m < k; m++) {
        taken[pick] = 1;
        idx[m] = (int32_t)pick;
        const float *row = gram + pick * n;
        int64_t next = -1;
        double best = -1;
        for (int64_t i = 0; i < n; i++) {
            if (taken[i]) continue;
            double d = 1 - row[i] * inv[i] * inv[pick];
            dmin[i] = d < dmin[i] ? d : dmin[i];
            double v = dmin[i] * weight[i];
            if (v > best) best = v, next = i;
        }
        if (next < 0) {
            k = m + 1;
            break;
        }
        pick = next;
    }
    free(dmin); free(weight); free(inv); free(taken);
    qsort(idx, (size_t)k, sizeof *idx, by_index);
    return k;
}

int64_t prune_uniform_grid(int g, int64_t k, int32_t *idx)
{
    int64_t n = (int64_t)g * g;
    if (k > n) k = n;
    if (k <= 0) return 0;
    /* an s x s lattice of evenly spaced rows and columns, then the k - s*s left over spread
     * evenly through the cells the lattice missed */
    int s = 1;
    while ((int64_t)(s + 1) * (s + 1) <= k) s++;
    char *taken = calloc((size_t)n, 1);
    if (!taken) return -1;
    for (int r = 0; r < s; r++)
        for (int c = 0; c < s; c++) {
            int y = (2 * r + 1) * g / (2 * s), x = (2 * c + 1) * g / (2 * s);
            taken[y * g + x] = 1;
        }
    int64_t rest = k - (int64_t)s * s, free_cells = n - (int64_t)s * s;
    for (int64_t i = 0, seen = 0, next = 0; i < n && next < rest; i++) {
        if (taken[i]) continue;
        if (seen++ == (2 * next + 1) * free_cells / (2 * rest)) {
            taken[i] = 1;
            next++;
        }
    }
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++)
        if (taken[i]) idx[m++] = (int32_t)i;
    free(taken);
    return m;
}

int64_t prune_random(uint64_t seed, int64_t n, int64_t k, int32_t *idx)
{
    if (k > n) k = n;
    /* Floyd's algorithm: k distinct draws without an n-sized buffer */
    uint64_t st = seed ? seed : 1;
    int64_t m = 0;
    for (int64_t j = n - k; j < n; j++) {
        st ^= st << 13;
        st ^= st >> 7;
        st ^= st << 17;
        int32_t t = (int32_t)(st % (uint64_t)(j + 1));
        int dup = 0;
        for (int64_t i = 0; i < m; i++) dup |= idx[i] == t;
        idx[m++] = dup ? (int32_t)j : t;
    }
    qsort(idx, (size_t)m, sizeof *idx, by_index);
    return m;
}

int64_t prune_complement(const int32_t *keep, int64_t nk, int64_t n, int32_t *out)
{
    int64_t m = 0, j = 0;
    for (int64_t i = 0; i < n; i++) {
        if (j < nk && keep[j] == i) {
            j++;
            continue;
        }
        out[m++] = (int32_t)i;
    }
    return m;
}
