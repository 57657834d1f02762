/* The test images under tests/fixtures/images/: their list and the deterministic pattern their
 * pixels follow, shared by the generator (tests/ref/make_images.c) and tests/test_image.c, which
 * recomputes every expected pixel from it.
 *
 * The pattern has smooth gradients, sharp edges (a disc and diagonal stripes) and low-amplitude
 * noise, so that resampling differences (rounding, filter support, edge handling) show up. */
#ifndef PLM_TESTS_MAKE_IMAGES_H
#define PLM_TESTS_MAKE_IMAGES_H

#include <stdint.h>

enum { MK_JPEG = -1 };

typedef struct mk_spec {
    const char *file;  /* under tests/fixtures/images/ */
    int color_type;    /* PNG colour type (0 gray, 2 RGB, 3 palette, 4 gray+alpha, 6 RGBA) or MK_JPEG */
    int depth;         /* PNG bit depth */
    int width, height;
    int interlace;     /* Adam7 */
    int trns;          /* write a tRNS chunk */
    int colors;        /* palette entries (color_type 3) */
    int quality;       /* JPEG */
    int jpeg444;       /* JPEG: no chroma subsampling */
    int progressive;   /* JPEG */
    int gray;          /* JPEG: one component */
    uint32_t seed;
} mk_spec;

static const mk_spec mk_images[] = {
    /* file                     type   depth  w    h   il trns pal  q  444 prog gray seed */
    {"rgb_square.png",            2,     8, 360, 360, 0, 0,   0,  0, 0,  0,   0,   1},
    {"rgb_wide.png",              2,     8, 500, 300, 0, 0,   0,  0, 0,  0,   0,   2},
    {"rgb_tall.png",              2,     8, 240, 420, 0, 0,   0,  0, 0,  0,   0,   3},
    {"rgb_big.png",               2,     8, 512, 384, 0, 0,   0,  0, 0,  0,   0,   4},
    {"rgb_tiny.png",              2,     8,  20,  13, 0, 0,   0,  0, 0,  0,   0,   5},
    {"rgb_odd.png",               2,     8,  33,  47, 0, 0,   0,  0, 0,  0,   0,   6},
    {"rgb_trns.png",              2,     8,  40,  30, 0, 1,   0,  0, 0,  0,   0,   7},
    {"rgb_interlaced.png",        2,     8, 300, 200, 1, 0,   0,  0, 0,  0,   0,   8},
    {"rgb16.png",                 2,    16,  52,  44, 0, 0,   0,  0, 0,  0,   0,   9},
    {"rgba8.png",                 6,     8,  80,  60, 0, 0,   0,  0, 0,  0,   0,  10},
    {"rgba16_interlaced.png",     6,    16,  43,  35, 1, 0,   0,  0, 0,  0,   0,  11},
    {"gray8_trns.png",            0,     8,  64,  40, 0, 1,   0,  0, 0,  0,   0,  12},
    {"gray4.png",                 0,     4,  31,  23, 0, 0,   0,  0, 0,  0,   0,  13},
    {"gray2.png",                 0,     2,  29,  17, 0, 0,   0,  0, 0,  0,   0,  14},
    {"gray1.png",                 0,     1,  37,  21, 0, 0,   0,  0, 0,  0,   0,  15},
    {"gray16.png",                0,    16,  50,  37, 0, 0,   0,  0, 0,  0,   0,  16},
    {"gray16_interlaced.png",     0,    16,  29,  19, 1, 1,   0,  0, 0,  0,   0,  17},
    {"gray_alpha8.png",           4,     8,  48,  36, 0, 0,   0,  0, 0,  0,   0,  18},
    {"gray_alpha16.png",          4,    16,  40,  30, 0, 0,   0,  0, 0,  0,   0,  19},
    {"palette8_trns.png",         3,     8,  96,  64, 0, 1, 180,  0, 0,  0,   0,  20},
    {"palette4.png",              3,     4,  37,  29, 0, 0,  13,  0, 0,  0,   0,  21},
    {"palette2.png",              3,     2,  26,  18, 0, 0,   4,  0, 0,  0,   0,  22},
    {"palette1_interlaced.png",   3,     1,  45,  31, 1, 0,   2,  0, 0,  0,   0,  23},
    {"photo420.jpg",        MK_JPEG,     8, 320, 240, 0, 0,   0, 90, 0,  0,   0,  24},
    {"photo444.jpg",        MK_JPEG,     8, 200, 150, 0, 0,   0, 95, 1,  0,   0,  25},
    {"photo_odd420.jpg",    MK_JPEG,     8,  75,  53, 0, 0,   0, 85, 0,  0,   0,  26},
    {"progressive.jpg",     MK_JPEG,     8, 150, 100, 0, 0,   0, 85, 0,  1,   0,  27},
    {"gray.jpg",            MK_JPEG,     8,  64,  64, 0, 0,   0, 90, 0,  0,   1,  28},
};
#define MK_NUM_IMAGES ((int)(sizeof mk_images / sizeof mk_images[0]))

static inline uint32_t mk_hash(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}

/* 16-bit sample of channel c (0..2 colour, 3 alpha) at (x, y). */
static inline uint16_t mk_sample16(const mk_spec *s, int x, int y, int c)
{
    int w = s->width, h = s->height;
    uint32_t gx = (uint32_t)x * 65535u / (uint32_t)(w > 1 ? w - 1 : 1);
    uint32_t gy = (uint32_t)y * 65535u / (uint32_t)(h > 1 ? h - 1 : 1);
    uint32_t v;
    if (c == 3) {
        /* alpha: fully transparent on the left quarter (its colour must survive: PIL drops
         * alpha), a ramp elsewhere */
        if (x < w / 4) return 0;
        v = 65535u - gy / 2;
    } else {
        v = c == 0 ? gx : c == 1 ? gy : (gx + 65535u - gy) / 2;
        int cx = w * 2 / 5, cy = h / 2, r = (w < h ? w : h) / 3;
        int dx = x - cx, dy = y - cy;
        if (dx * dx + dy * dy <= r * r) v = 65535u - v;
        if (((x + 2 * y) / 5) % 4 == 0) v /= 3;
    }
    uint32_t n = mk_hash(s->seed * 0x9E3779B9u ^ ((uint32_t)(y * 40503 + x) * 4u + (uint32_t)c));
    int32_t nv = (int32_t)v + (int32_t)(n % 1537u) - 768; /* about +-3 levels at 8 bits */
    if (nv < 0) nv = 0;
    if (nv > 65535) nv = 65535;
    return (uint16_t)nv;
}

/* A 16-bit gray image's sample: the top half stays below 512, so that PIL's clipping
 * conversion (values over 255 become 255) meets both kinds of value. */
static inline uint16_t mk_gray16(const mk_spec *s, int x, int y)
{
    uint16_t v = mk_sample16(s, x, y, 0);
    return y < s->height / 2 ? (uint16_t)(v >> 7) : v;
}

/* Sample of a gray image of bit depth d < 16, in 0..2^d-1. */
static inline unsigned mk_gray_low(const mk_spec *s, int x, int y)
{
    return mk_sample16(s, x, y, 0) >> (16 - s->depth);
}

static inline unsigned mk_palette_index(const mk_spec *s, int x, int y)
{
    unsigned base = (unsigned)(x / 3 + (y / 3) * 7);
    int dx = x - s->width / 2, dy = y - s->height / 2;
    if (dx * dx + dy * dy < (s->height / 3) * (s->height / 3)) base = base * 5 + 1;
    return base % (unsigned)s->colors;
}

static inline void mk_palette_color(const mk_spec *s, unsigned i, uint8_t rgb[3])
{
    uint32_t hsh = mk_hash(s->seed * 7919u + i);
    rgb[0] = (uint8_t)hsh;
    rgb[1] = (uint8_t)(hsh >> 8);
    rgb[2] = (uint8_t)(hsh >> 16);
}

static inline uint8_t mk_palette_alpha(const mk_spec *s, unsigned i)
{
    return (uint8_t)(mk_hash(s->seed * 104729u + i) >> 24);
}

/* What PIL's Image.open(...).convert("RGB") gives for pixel (x, y) of a PNG of this list. */
static inline void mk_expected_rgb(const mk_spec *s, int x, int y, uint8_t rgb[3])
{
    switch (s->color_type) {
    case 2:
    case 6:
        for (int c = 0; c < 3; c++) rgb[c] = (uint8_t)(mk_sample16(s, x, y, c) >> 8);
        return;
    case 4:
        rgb[0] = rgb[1] = rgb[2] = (uint8_t)(mk_sample16(s, x, y, 0) >> 8);
        return;
    case 0:
        if (s->depth == 16) {
            uint16_t v = mk_gray16(s, x, y);
            rgb[0] = rgb[1] = rgb[2] = (uint8_t)(v > 255 ? 255 : v);
        } else {
            unsigned v = mk_gray_low(s, x, y);
            unsigned scale = s->depth == 8 ? 1 : s->depth == 4 ? 17 : s->depth == 2 ? 85 : 255;
            rgb[0] = rgb[1] = rgb[2] = (uint8_t)(v * scale);
        }
        return;
    case 3:
        mk_palette_color(s, mk_palette_index(s, x, y), rgb);
        return;
    }
    rgb[0] = rgb[1] = rgb[2] = 0;
}

#endif
