/* Antialiased uint8 resize, bit-exact with PyTorch's CPU kernels for
 * F.interpolate(uint8 NCHW, size=..., mode="bicubic"|"bilinear", antialias=True,
 * align_corners=False), which is what torchvision's resize does to a uint8 image on the CPU
 * (transformers' torchvision backend, see preprocess.c).
 *
 * PyTorch (aten/src/ATen/native/cpu/UpSampleKernel.cpp, UpSampleKernelAVXAntialias.h):
 * - separable: a horizontal pass (width) into a uint8 buffer, then a vertical pass (height);
 *   a pass whose size does not change is skipped, and same-size input is copied;
 * - per axis, HelperInterpBase::_compute_indices_min_size_weights_aa in double:
 *   scale = in/out, support = (interp_size/2) * max(scale, 1) with interp_size 4 (cubic) or 2
 *   (linear), center = scale*(i+0.5), xmin = max(int(center-support+0.5), 0),
 *   xsize = min(int(center+support+0.5), in) - xmin, w_j = filter((j+xmin-center+0.5)/max(scale,1))
 *   normalised by their sum; the cubic filter is Keys' with a = -0.5 (PIL's), the linear one a
 *   triangle;
 * - _compute_index_ranges_int16_weights: the largest weight of the whole axis fixes the
 *   precision p (the first p in 0..21 with int(0.5 + wmax * 2^(p+1)) >= 2^15, else 22); each
 *   weight becomes the int16 round-half-away(w * 2^p);
 * - each output sample: (2^(p-1) + sum src*w) >> p (arithmetic), clamped to 0..255, in int32.
 * The AVX2/AVX512 kernels and the generic one compute the same integers (checked on the
 * reference machine: identical bytes under ATEN_CPU_CAPABILITY=default/avx2/avx512).
 *
 * We compute only the window of the output that the centre crop keeps; every computed value is
 * the same as in the full resize, since weights (and the precision) are computed for the whole
 * axis. */
#include "vision/preprocess.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct aa_axis {
    int ksize;          /* weights per output sample (max) */
    unsigned precision; /* fixed-point bits */
    int *xmin, *xsize;  /* [out] */
    int16_t *w;         /* [out][ksize] */
} aa_axis;

/* Keys' cubic convolution, a = -0.5, written as UpSample.h's cubic_convolution1/2 so the double
 * rounding is the same. */
static double filter_cubic(double x)
{
    const double a = -0.5;
    x = fabs(x);
    if (x < 1.0) return ((a + 2) * x - (a + 3)) * x * x + 1;
    if (x < 2.0) return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a;
    return 0.0;
}

static double filter_linear(double x)
{
    x = fabs(x);
    return x < 1.0 ? 1.0 - x : 0.0;
}

static void axis_free(aa_axis *a)
{
    free(a->xmin);
    free(a->xsize);
    free(a->w);
    memset(a, 0, sizeof *a);
}

static plm_status axis_init(aa_axis *a, int in, int out, int filter, plm_error *err)
{
    memset(a, 0, sizeof *a);
    double (*fn)(double) = filter == CLIP_FILTER_BILINEAR ? filter_linear : filter_cubic;
    int interp_size = filter == CLIP_FILTER_BILINEAR ? 2 : 4;
    double scale = (double)in / out;
    double support = (scale >= 1.0) ? (interp_size * 0.5) * scale : interp_size * 0.5;
    double ks = ceil(support) * 2 + 1;
    if (ks > 1e8)
        return plm_fail(err, PLM_E_LIMIT, "resize from %d to %d needs %.0f taps per sample", in,
                        out, ks);
    int ksize = (int)ks;
    size_t nw;
    if (!plm_mul_ok((size_t)out, (size_t)ksize, &nw))
        return plm_fail(err, PLM_E_LIMIT, "resize from %d to %d: weight table overflows", in, out);
    double *wd = malloc(nw * sizeof *wd);
    a->xmin = malloc((size_t)out * sizeof *a->xmin);
    a->xsize = malloc((size_t)out * sizeof *a->xsize);
    a->w = malloc(nw * sizeof *a->w);
    if (!wd || !a->xmin || !a->xsize || !a->w) {
        free(wd);
        axis_free(a);
        return plm_fail(err, PLM_E_NOMEM, "resize from %d to %d: out of memory for %zu weights",
                        in, out, nw);
    }
    double invscale = (scale >= 1.0) ? 1.0 / scale : 1.0;
    double wt_max = 0.0;
    for (int i = 0; i < out; i++) {
        double center = scale * (i + 0.5);
        double *w = wd + (size_t)i * (size_t)ksize;
        int64_t xmin = (int64_t)(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int64_t xmax = (int64_t)(center + support + 0.5);
        if (xmax > in) xmax = in;
        int64_t xsize = xmax - xmin;
        if (xsize < 0) xsize = 0;
        if (xsize > ksize) xsize = ksize;
        double total = 0.0;
        int64_t j = 0;
        for (; j < xsize; j++) {
            w[j] = fn(((double)(j + xmin) - center + 0.5) * invscale);
            total += w[j];
        }
        if (total != 0.0) {
            for (j = 0; j < xsize; j++) {
                w[j] /= total;
                if (w[j] > wt_max) wt_max = w[j];
            }
        }
        for (; j < ksize; j++) w[j] = 0.0;
        a->xmin[i] = (int)xmin;
        a->xsize[i] = (int)xsize;
    }
    unsigned p;
    for (p = 0; p < 22; ++p) {
        int next = (int)(0.5 + wt_max * (double)(1 << (p + 1)));
        if (next >= (1 << 15)) break;
    }
    for (size_t k = 0; k < nw; k++) {
        double v = wd[k] * (double)(1 << p);
        a->w[k] = (int16_t)((v < 0) ? (int)(-0.5 + v) : (int)(0.5 + v));
    }
    free(wd);
    a->ksize = ksize;
    a->precision = p;
    return PLM_OK;
}

static inline uint8_t fixed_to_u8(int32_t acc, unsigned p)
{
    /* (acc >> p) clamped to 0..255; a negative sum clamps to 0 whatever the shift rounds to */
    if (acc < 0) return 0;
    acc >>= p;
    return (uint8_t)(acc > 255 ? 255 : acc);
}

plm_status clip_resize_u8(const uint8_t *src, int in_w, int in_h, int out_w, int out_h, int x0,
                          int nx, int y0, int ny, int filter, uint8_t *dst, plm_error *err)
{
    if (in_w <= 0 || in_h <= 0 || out_w <= 0 || out_h <= 0 || x0 < 0 || y0 < 0 || nx <= 0 ||
        ny <= 0 || x0 + nx > out_w || y0 + ny > out_h)
        return plm_fail(err, PLM_E_ARG, "clip_resize_u8: bad geometry %dx%d -> %dx%d window"
                        " (%d,%d)+%dx%d", in_w, in_h, out_w, out_h, x0, y0, nx, ny);
    if (filter != CLIP_FILTER_BICUBIC && filter != CLIP_FILTER_BILINEAR)
        return plm_fail(err, PLM_E_ARG, "clip_resize_u8: unknown filter %d", filter);

    int need_h = out_w != in_w, need_v = out_h != in_h;
    aa_axis ax = {0}, ay = {0};
    if (need_h) PLM_TRY(axis_init(&ax, in_w, out_w, filter, err));
    if (need_v) {
        plm_status st = axis_init(&ay, in_h, out_h, filter, err);
        if (st != PLM_OK) {
            axis_free(&ax);
            return st;
        }
    }

    /* Input rows the vertical pass reads (all of them when there is no vertical pass). */
    int r0 = y0, r1 = y0 + ny;
    if (need_v) {
        r0 = in_h;
        r1 = 0;
        for (int y = y0; y < y0 + ny; y++) {
            if (ay.xsize[y] == 0) continue;
            if (ay.xmin[y] < r0) r0 = ay.xmin[y];
            if (ay.xmin[y] + ay.xsize[y] > r1) r1 = ay.xmin[y] + ay.xsize[y];
        }
        if (r1 <= r0) r0 = r1 = 0;
    }

    /* Horizontal pass: rows r0..r1 of the input, output columns x0..x0+nx, into tmp. */
    size_t trow = (size_t)nx * 3;
    uint8_t *tmp = malloc(trow * (size_t)((r1 - r0) > 0 ? (r1 - r0) : 1));
    if (!tmp) {
        axis_free(&ax);
        axis_free(&ay);
        return plm_fail(err, PLM_E_NOMEM, "resize: out of memory for a %dx%d buffer", nx,
                        r1 - r0);
    }
    for (int y = r0; y < r1; y++) {
        const uint8_t *s = src + (size_t)y * (size_t)in_w * 3;
        uint8_t *t = tmp + (size_t)(y - r0) * trow;
        if (!need_h) {
            memcpy(t, s + (size_t)x0 * 3, trow);
            continue;
        }
        for (int x = x0; x < x0 + nx; x++) {
            const int16_t *w = ax.w + (size_t)x * (size_t)ax.ksize;
            const uint8_t *sp = s + (size_t)ax.xmin[x] * 3;
            int32_t acc[3];
            acc[0] = acc[1] = acc[2] = (int32_t)1 << (ax.precision - 1);
            for (int j = 0; j < ax.xsize[x]; j++, sp += 3) {
                acc[0] += sp[0] * w[j];
                acc[1] += sp[1] * w[j];
                acc[2] += sp[2] * w[j];
            }
            uint8_t *tp = t + (size_t)(x - x0) * 3;
            for (int c = 0; c < 3; c++) tp[c] = fixed_to_u8(acc[c], ax.precision);
        }
    }

    /* Vertical pass: output rows y0..y0+ny from tmp. */
    for (int y = y0; y < y0 + ny; y++) {
        uint8_t *d = dst + (size_t)(y - y0) * trow;
        if (!need_v) {
            memcpy(d, tmp + (size_t)(y - r0) * trow, trow);
            continue;
        }
        const int16_t *w = ay.w + (size_t)y * (size_t)ay.ksize;
        const uint8_t *base = tmp + (size_t)(ay.xmin[y] - r0) * trow;
        for (size_t k = 0; k < trow; k++) {
            int32_t acc = (int32_t)1 << (ay.precision - 1);
            const uint8_t *sp = base + k;
            for (int j = 0; j < ay.xsize[y]; j++, sp += trow) acc += *sp * w[j];
            d[k] = fixed_to_u8(acc, ay.precision);
        }
    }
    free(tmp);
    axis_free(&ax);
    axis_free(&ay);
    return PLM_OK;
}
