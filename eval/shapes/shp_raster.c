/* Images and an integer rasterizer: analytic inside-tests evaluated at 4x4 supersamples per pixel
 * in 1/8-pixel fixed point, so anti-aliasing is exact integer coverage (0..16) and identical on
 * every machine. Outlines are a one-pixel dilation of the coverage, which gives every shape the
 * same outline width whatever its geometry (star points, ring hole, cross corners). */
#include <stdlib.h>
#include <string.h>

#include "shapes.h"

plm_status shp_image_new(shp_image *img, int w, int h, plm_error *err)
{
    img->w = img->h = 0;
    img->px = NULL;
    if (w <= 0 || h <= 0 || w > 16384 || h > 16384)
        return shp_fail(err, PLM_E_ARG, "image size %dx%d is out of range", w, h);
    img->px = calloc((size_t)w * (size_t)h, 3);
    if (!img->px) return shp_fail(err, PLM_E_NOMEM, "out of memory for a %dx%d image", w, h);
    img->w = w;
    img->h = h;
    return PLM_OK;
}

void shp_image_free(shp_image *img)
{
    free(img->px);
    img->px = NULL;
    img->w = img->h = 0;
}

void shp_put(shp_image *img, int x, int y, shp_rgb c)
{
    if (x < 0 || y < 0 || x >= img->w || y >= img->h) return;
    uint8_t *p = img->px + ((size_t)y * (size_t)img->w + (size_t)x) * 3;
    p[0] = c.r;
    p[1] = c.g;
    p[2] = c.b;
}

void shp_blend(shp_image *img, int x, int y, shp_rgb c, int cov)
{
    if (cov <= 0 || x < 0 || y < 0 || x >= img->w || y >= img->h) return;
    uint8_t *p = img->px + ((size_t)y * (size_t)img->w + (size_t)x) * 3;
    if (cov >= 16) {
        p[0] = c.r;
        p[1] = c.g;
        p[2] = c.b;
        return;
    }
    p[0] = (uint8_t)((p[0] * (16 - cov) + c.r * cov + 8) / 16);
    p[1] = (uint8_t)((p[1] * (16 - cov) + c.g * cov + 8) / 16);
    p[2] = (uint8_t)((p[2] * (16 - cov) + c.b * cov + 8) / 16);
}

void shp_fill_rect(shp_image *img, int x0, int y0, int x1, int y1, shp_rgb c)
{
    if (x0 < 0) x0 = 0;
    if (y0 < 0) y0 = 0;
    if (x1 > img->w) x1 = img->w;
    if (y1 > img->h) y1 = img->h;
    for (int y = y0; y < y1; y++)
        for (int x = x0; x < x1; x++) shp_put(img, x, y, c);
}

void shp_line(shp_image *img, int x0, int y0, int x1, int y1, int width, shp_rgb c)
{
    int dx = abs(x1 - x0), sx = x0 < x1 ? 1 : -1;
    int dy = -abs(y1 - y0), sy = y0 < y1 ? 1 : -1;
    int e = dx + dy;
    int h = width / 2;
    for (;;) {
        shp_fill_rect(img, x0 - h, y0 - h, x0 - h + width, y0 - h + width, c);
        if (x0 == x1 && y0 == y1) break;
        int e2 = 2 * e;
        if (e2 >= dy) {
            e += dy;
            x0 += sx;
        }
        if (e2 <= dx) {
            e += dx;
            y0 += sy;
        }
    }
}

/* Polygon templates in units of 1/4096 of the half-side, centred on the box centre. The star's
 * outer radius is 0.9 and it sits 0.1 lower so its points and feet are equally far from the
 * box edges; its inner radius is half the outer one so that a 14-pixel star keeps visible arms. */
static const int STAR[10][2] = {
    {0, -3686},    {1204, -1247}, {3896, -856}, {1948, 1042}, {2408, 3723},
    {0, 2458},     {-2408, 3723}, {-1948, 1042}, {-3896, -856}, {-1204, -1247},
};
static const int HEXAGON[6][2] = {
    {4096, 0}, {2048, 3547}, {-2048, 3547}, {-4096, 0}, {-2048, -3547}, {2048, -3547},
};

typedef struct poly {
    int n;
    int64_t x[10], y[10];
} poly;

static void poly_place(poly *p, const int (*t)[2], int n, int64_t cx, int64_t cy, int64_t R)
{
    p->n = n;
    for (int i = 0; i < n; i++) {
        p->x[i] = cx + (int64_t)t[i][0] * R / 4096;
        p->y[i] = cy + (int64_t)t[i][1] * R / 4096;
    }
}

/* Even-odd crossing test, exact in integers. */
static int poly_inside(const poly *p, int64_t px, int64_t py)
{
    int in = 0;
    for (int i = 0, j = p->n - 1; i < p->n; j = i++) {
        int64_t yi = p->y[i], yj = p->y[j];
        if ((yi > py) == (yj > py)) continue;
        int64_t lhs = (px - p->x[i]) * (yj - yi);
        int64_t rhs = (py - yi) * (p->x[j] - p->x[i]);
        if (yj > yi ? lhs < rhs : lhs > rhs) in = !in;
    }
    return in;
}

static int64_t iabs64(int64_t v)
{
    return v < 0 ? -v : v;
}

/* dx, dy: sample offset from the centre; R: half-side; all in 1/8 pixel. */
static int inside(shp_shape s, const poly *pg, int64_t px, int64_t py, int64_t dx, int64_t dy,
                  int64_t R)
{
    int64_t ax = iabs64(dx), ay = iabs64(dy), d2 = dx * dx + dy * dy;
    switch (s) {
    case SHP_CIRCLE: return d2 <= R * R;
    case SHP_RING: {
        int64_t ri = R * 56 / 100;
        return d2 <= R * R && d2 >= ri * ri;
    }
    case SHP_SQUARE: return ax <= R && ay <= R;
    case SHP_DIAMOND: return ax + ay <= R;
    case SHP_TRIANGLE: return dy <= R && 2 * ax <= dy + R;
    case SHP_CROSS: {
        int64_t t = R * 3 / 8;
        return (ax <= t && ay <= R) || (ay <= t && ax <= R);
    }
    case SHP_STAR:
    case SHP_HEXAGON: return poly_inside(pg, px, py);
    case SHP_N_SHAPES: break;
    }
    return 0;
}

static void mask_clear(shp_mask *m, int x0, int y0, int w, int h)
{
    m->x0 = x0;
    m->y0 = y0;
    m->w = w;
    m->h = h;
    memset(m->cov, 0, (size_t)w * (size_t)h);
}

void shp_mask_shape(shp_mask *m, shp_shape s, int x0, int y0, int side)
{
    if (side < 4) side = 4;
    if (side > 96) side = 96;
    mask_clear(m, x0 - 2, y0 - 2, side + 4, side + 4);
    int64_t cx = 8 * (int64_t)x0 + 4 * side, cy = 8 * (int64_t)y0 + 4 * side;
    int64_t R = 4 * (int64_t)side;
    poly pg = {0};
    if (s == SHP_STAR) poly_place(&pg, STAR, 10, cx, cy, R);
    if (s == SHP_HEXAGON) poly_place(&pg, HEXAGON, 6, cx, cy, R);
    for (int y = y0; y < y0 + side; y++) {
        for (int x = x0; x < x0 + side; x++) {
            int c = 0;
            for (int sy = 0; sy < 4; sy++) {
                int64_t py = 8 * (int64_t)y + 2 * sy + 1;
                for (int sx = 0; sx < 4; sx++) {
                    int64_t px = 8 * (int64_t)x + 2 * sx + 1;
                    c += inside(s, &pg, px, py, px - cx, py - cy, R);
                }
            }
            m->cov[(y - m->y0) * m->w + (x - m->x0)] = (uint8_t)c;
        }
    }
}

void shp_mask_bitmap(shp_mask *m, const uint8_t *bits, int bw, int bh, int k, int x0, int y0)
{
    int w = bw * k + 4, h = bh * k + 4;
    if (w * h > (int)sizeof m->cov) { /* caller error; leave an empty mask */
        mask_clear(m, x0, y0, 0, 0);
        return;
    }
    mask_clear(m, x0 - 2, y0 - 2, w, h);
    for (int cy = 0; cy < bh; cy++)
        for (int cx = 0; cx < bw; cx++) {
            if (!bits[cy * bw + cx]) continue;
            for (int y = 0; y < k; y++)
                for (int x = 0; x < k; x++)
                    m->cov[(2 + cy * k + y) * w + 2 + cx * k + x] = 16;
        }
}

void shp_draw_mask(shp_image *img, const shp_mask *m, shp_rgb fill, shp_rgb outline)
{
    for (int y = 0; y < m->h; y++) {
        for (int x = 0; x < m->w; x++) {
            int dil = 0;
            for (int j = y - 1; j <= y + 1; j++) {
                if (j < 0 || j >= m->h) continue;
                for (int i = x - 1; i <= x + 1; i++) {
                    if (i < 0 || i >= m->w) continue;
                    int c = m->cov[j * m->w + i];
                    if (c > dil) dil = c;
                }
            }
            shp_blend(img, m->x0 + x, m->y0 + y, outline, dil);
            shp_blend(img, m->x0 + x, m->y0 + y, fill, m->cov[y * m->w + x]);
        }
    }
}
