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
                    /* ITU-R 601 luma, as PIL's convert("L") computes it */
                    int l = (row[3 * x] * 299 + row[3 * x + 1] * 587 + row[3 * x + 2] * 114 +
                             500) / 1000;
                    hist[l]++;
                }
            }
            double e = 0;
            for (int i = 0; i < 256; i++)
                if (hist[i]) {
                    double p = hist[i] / n;
                    e -= p * log2(p);
                }
            out[py * g + px] = (float)e;
        }
}

void prune_norm_minmax(float *s, int64_t n)
{
    if (n <= 0) return;
    float lo = s[0], hi = s[0];
    for (int64_t i = 1; i < n; i++) {
        lo = s[i] < lo ? s[i] : lo;
        hi = s[i] > hi ? s[i] : hi;
    }
    float r = hi - lo;
    for (int64_t i = 0; i < n; i++) s[i] = r > 0 ? (s[i] - lo) / r : 0.0f;
}

void prune_combine(float *out, const float *a, float wa, const float *b, float wb, int64_t n)
{
    for (int64_t i = 0; i < n; i++) out[i] = wa * a[i] + wb * b[i];
}
