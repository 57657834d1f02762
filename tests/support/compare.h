/* Helpers shared by the tests that compare prunelm with recorded reference outputs. */
#ifndef PLM_TESTS_COMPARE_H
#define PLM_TESTS_COMPARE_H

#include <math.h>
#include <stddef.h>

/* ||a - b|| / ||b|| in double. */
static inline double rel_l2(const float *a, const float *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static inline double max_abs_diff(const float *a, const float *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= m)) m = d; /* NaN counts as a failure */
    }
    return m;
}

#endif
