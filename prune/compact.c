/* Compaction: gather the kept rows in place, one copy per run of consecutive indices. */
#include "prune/prune.h"

void prune_gather_rows(plm_backend *be, float *dst, const float *src, int64_t dim,
                       const int32_t *idx, int64_t n)
{
    int64_t i = 0;
    while (i < n) {
        int64_t j = i + 1;
        while (j < n && idx[j] == idx[j - 1] + 1) j++;
        /* Ascending idx[i] >= i, so an in-place gather never overwrites a row it still needs;
         * the run still moves in pieces no longer than its shift, so no single copy reads
         * rows it writes (a device copy runs its rows in parallel). */
        int64_t shift = dst == src ? (int64_t)idx[i] - i : j - i;
        if (shift > 0) {
            for (int64_t a = i; a < j; a += shift) {
                int64_t len = j - a < shift ? j - a : shift;
                be->ops->copy2d(be, dst + a * dim, dim, src + (int64_t)idx[a] * dim, dim, len, dim);
            }
        }
        i = j;
    }
}

void prune_gather_i32(int32_t *dst, const int32_t *src, const int32_t *idx, int64_t n)
{
    for (int64_t i = 0; i < n; i++) dst[i] = src[idx[i]];
}
