/* Selection shared by the KV policies: top-k per kv head under sink and recent-window
 * protection (DESIGN.md "Budgets ... always with sink and recent-window protection"), GQA score
 * folding, and per-row state compaction. */
#include <stdlib.h>
#include <string.h>

#include "prune/kv.h"

int64_t kv_select_topk(const float *score, int n_kv, int64_t len, int64_t budget, int64_t sink,
                       int64_t recent, int32_t *keep)
{
    if (budget > len) budget = len;
    if (budget < 0) budget = 0;
    if (sink > budget) sink = budget;
    if (recent > budget - sink) recent = budget - sink;
    if (sink < 0) sink = 0;
    if (recent < 0) recent = 0;
    const int64_t mid = len - sink - recent, k = budget - sink - recent;
    int32_t *pick = k > 0 ? malloc((size_t)k * sizeof *pick) : NULL;
    if (k > 0 && !pick) return -1;
    for (int h = 0; h < n_kv; h++) {
        int32_t *out = keep + (int64_t)h * budget;
        int64_t n = 0;
        for (int64_t r = 0; r < sink; r++) out[n++] = (int32_t)r;
        if (k > 0) {
            /* the middle rows compete; prune_topk answers ascending indices into the middle */
            if (prune_topk(score + (int64_t)h * len + sink, mid, k, pick) < 0) {
                free(pick);
                return -1;
            }
            for (int64_t i = 0; i < k; i++) out[n++] = (int32_t)(pick[i] + sink);
        }
        for (int64_t r = len - recent; r < len; r++) out[n++] = (int32_t)r;
    }
    free(pick);
    return budget;
}

void kv_heads_sum(const float *per_head, int n_heads, int n_kv, int64_t len, float *out)
{
    const int group = n_heads / n_kv;
    memset(out, 0, (size_t)n_kv * (size_t)len * sizeof *out);
    for (int h = 0; h < n_heads; h++) {
        const float *src = per_head + (int64_t)h * len;
        float *dst = out + (int64_t)(h / group) * len;
        for (int64_t r = 0; r < len; r++) dst[r] += src[r];
    }
}

void kv_compact_f32(float *state, int64_t stride, int n_kv, const int32_t *keep, int64_t n_keep)
{
    for (int h = 0; h < n_kv; h++) {
        float *row = state + (int64_t)h * stride;
        const int32_t *k = keep + (int64_t)h * n_keep;
        for (int64_t i = 0; i < n_keep; i++) row[i] = row[k[i]]; /* ascending: safe in place */
    }
}

void kv_compact_i32(int32_t *state, int64_t stride, int n_kv, const int32_t *keep,
                    int64_t n_keep)
{
    for (int h = 0; h < n_kv; h++) {
        int32_t *row = state + (int64_t)h * stride;
        const int32_t *k = keep + (int64_t)h * n_keep;
        for (int64_t i = 0; i < n_keep; i++) row[i] = row[k[i]];
    }
}

int64_t kv_rows_from_marks(uint8_t *mark, int n_kv, int64_t len, int32_t *rows)
{
    int64_t n = 0;
    for (int h = 0; h < n_kv; h++) {
        int64_t c = 0;
        for (int64_t r = 0; r < len; r++) c += mark[(int64_t)h * len + r];
        if (c > n) n = c;
    }
    if (n >= len) return 0;
    for (int h = 0; h < n_kv; h++) {
        uint8_t *m = mark + (int64_t)h * len;
        int64_t c = 0;
        for (int64_t r = 0; r < len; r++) c += m[r];
        for (int64_t r = len - 1; r >= 0 && c < n; r--) /* pad with the newest unmarked rows */
            if (!m[r]) m[r] = 1, c++;
        int32_t *o = rows + (int64_t)h * (n + 1);
        int64_t k = 0;
        for (int64_t r = 0; r < len; r++)
            if (m[r]) o[k++] = (int32_t)r;
        o[k] = (int32_t)len;
    }
    return n + 1;
}
