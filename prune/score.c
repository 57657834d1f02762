/* Score providers that need no model: patch information entropy, normalisation, mixing. */
#include <math.h>
#include <string.h>

#include "prune/prune.h"

void prune_patch_entropy(const uint8_t *rgb, int size, int patch, float *out)
{
    const int g = size / patch;
    int hist[256];
    const double n = (double)patch * patch;
    for (int py = 0; py < g; py++)
        for (int px = 0; px < g; px++) {
            memset(hist, 0, sizeof hist);
            for (int y = 0; y < patch; y++) {
                const uint8_t *row = rgb + ((size_t)(py * patch + y) * size + px * patch) * 3;
                for (int x = 0; x < patch; x++) {
                    /* equal channel weights, as VFlowOpt's gray (0.3333 each), rounded */
                    double gray = 0.3333 * row[3 * x] + 0.3333 * row[3 * x + 1] +
                                  0.3333 * row[3 * x + 2];
                    hist[(int)lrint(gray)]++;
                }
            }
            double e = 0;
            for (int i = 0; i < 256; i++)
                if (hist[i]) {
                    double p = hist[i] / n;
                    e -= p * log2(p + 1e-10);
                }
            out[py * g + px] = (float)e;
        }
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
