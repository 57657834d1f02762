/* Selection: which indices survive. Results are ascending so compaction keeps order. */
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
