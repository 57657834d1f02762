/* Score providers that need no model: patch information entropy, normalisation, mixing. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "prune/prune.h"

/* A histogram bin's term in the patch entropy: p log2 p, p = count / n (VFlowOpt's 1e-10). */
static double bin_term(int count, double n)
{
    const double p = count / n;
    return p * log2(p + 1e-10);
}

void prune_patch_entropy(const uint8_t *rgb, int size, int patch, float *out)
{
    const int g = size / patch, n_px = patch * patch;
    const double n = (double)n_px;
    /* VFlowOpt's gray, round(0.3333 R + 0.3333 G + 0.3333 B), depends on R + G + B alone (checked
     * over all 2^24 colours), and a bin's term on its count alone: two tables make this ~30x
     * faster than per-pixel lrint and per-bin log2 (8 ms for 576 patches, most of VFlowOpt's
     * host-side cost), with the same values and the same summation order. */
    uint8_t gray_of_sum[766];
    for (int sum = 0; sum <= 765; sum++) {
        int r = sum < 255 ? sum : 255, gg = sum - r < 255 ? sum - r : 255, b = sum - r - gg;
        gray_of_sum[sum] = (uint8_t)lrint(0.3333 * r + 0.3333 * gg + 0.3333 * b);
    }
    double *term = malloc((size_t)(n_px + 1) * sizeof *term);
    if (term)
        for (int c = 1; c <= n_px; c++) term[c] = bin_term(c, n);
    int hist[256];
    for (int py = 0; py < g; py++)
        for (int px = 0; px < g; px++) {
            memset(hist, 0, sizeof hist);
            for (int y = 0; y < patch; y++) {
                const uint8_t *row = rgb + ((size_t)(py * patch + y) * size + px * patch) * 3;
                for (int x = 0; x < patch; x++)
                    hist[gray_of_sum[row[3 * x] + row[3 * x + 1] + row[3 * x + 2]]]++;
            }
            double e = 0;
            for (int i = 0; i < 256; i++) /* no memory for the table: the terms computed here */
                if (hist[i]) e -= term ? term[hist[i]] : bin_term(hist[i], n);
            out[py * g + px] = (float)e;
        }
    free(term);
}

void prune_softmax(float *s, int64_t n)
{
    if (n <= 0) return;
    float mx = s[0];
    for (int64_t i = 1; i < n; i++) mx = s[i] > mx ? s[i] : mx;
    double sum = 0;
    for (int64_t i = 0; i < n; i++) sum += s[i] = expf(s[i] - mx);
    for (int64_t i = 0; i < n; i++) s[i] = (float)(s[i] / sum);
}

void prune_add_scaled(float *out, const float *a, float w, const float *b, int64_t n)
{
    for (int64_t i = 0; i < n; i++) out[i] = a[i] + w * b[i];
}

static void min_max(const float *x, int64_t n, float *lo, float *span)
{
    float a = n ? x[0] : 0, b = a;
    for (int64_t i = 1; i < n; i++) {
        a = x[i] < a ? x[i] : a;
        b = x[i] > b ? x[i] : b;
    }
    *lo = a;
    *span = b > a ? b - a : 1; /* a constant score rescales to 0 */
}

void prune_blend_scores(const float *a, const float *b, double w, int64_t n, float *out)
{
    float la, sa, lb, sb;
    min_max(a, n, &la, &sa);
    min_max(b, n, &lb, &sb);
    for (int64_t i = 0; i < n; i++)
        out[i] = (a[i] - la) / sa + (float)w * ((b[i] - lb) / sb);
}

int64_t prune_global_rows(const float *recv, int64_t n, double t, int32_t *idx)
{
    double mean = 0;
    for (int64_t i = 0; i < n; i++) mean += recv[i];
    mean /= n > 0 ? (double)n : 1;
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++)
        if (recv[i] > t * mean) idx[k++] = (int32_t)i;
    return k;
}
