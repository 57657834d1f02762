/* Backgrounds of increasing entropy: flat, gradient, stripes, checkerboard, noise, clutter.
 * Every background pixel is a low-saturation grey (channels within a small tint of each other)
 * clamped to [BG_LO, BG_HI], while object colours are either saturated or near-white/near-black
 * and carry a contrasting outline; this keeps every object visible on every background and
 * stops clutter from ever reading as an object. */
#include "shapes.h"

enum { BG_LO = 56, BG_HI = 200, TINT = 10 };

static uint8_t clamp_bg(int v)
{
    return (uint8_t)(v < BG_LO ? BG_LO : v > BG_HI ? BG_HI : v);
}

typedef struct tint {
    int g, tr, tg, tb;
} tint;

static tint pick_grey(shp_rng *r, int lo, int hi, const tint *like)
{
    tint t;
    t.g = shp_rng_range(r, lo, hi);
    if (like) { /* same hue family as the base, so two-tone patterns stay harmonious */
        t.tr = like->tr;
        t.tg = like->tg;
        t.tb = like->tb;
    } else {
        t.tr = shp_rng_range(r, -TINT, TINT);
        t.tg = shp_rng_range(r, -TINT, TINT);
        t.tb = shp_rng_range(r, -TINT, TINT);
    }
    return t;
}

static shp_rgb rgb_of(const tint *t, int delta)
{
    shp_rgb c = {clamp_bg(t->g + t->tr + delta), clamp_bg(t->g + t->tg + delta),
                 clamp_bg(t->g + t->tb + delta)};
    return c;
}

/* Two greys at least `min_diff` apart in luminance. */
static void pick_pair(shp_rng *r, int min_diff, tint *a, tint *b)
{
    *a = pick_grey(r, 64, 192, NULL);
    do {
        *b = pick_grey(r, 64, 192, a);
    } while (b->g - a->g < min_diff && a->g - b->g < min_diff);
}

static void paint_flat(shp_image *img, shp_rng *r)
{
    tint t = pick_grey(r, 72, 184, NULL);
    shp_fill_rect(img, 0, 0, img->w, img->h, rgb_of(&t, 0));
}

static void paint_gradient(shp_image *img, shp_rng *r)
{
    static const int DIRS[8][2] = {{1, 0}, {0, 1}, {1, 1}, {1, -1}, {-1, 0}, {0, -1}, {-1, -1},
                                   {-1, 1}};
    tint a, b;
    pick_pair(r, 48, &a, &b);
    const int *d = DIRS[shp_rng_below(r, 8)];
    /* t runs over [tmin, tmax] across the image; interpolate the grey and the tint linearly. */
    int tmin = 0, tmax = 0;
    int cx[2] = {0, img->w - 1}, cy[2] = {0, img->h - 1};
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) {
            int t = d[0] * cx[i] + d[1] * cy[j];
            if (i + j == 0 || t < tmin) tmin = t;
            if (i + j == 0 || t > tmax) tmax = t;
        }
    int span = tmax - tmin;
    for (int y = 0; y < img->h; y++)
        for (int x = 0; x < img->w; x++) {
            int t = d[0] * x + d[1] * y - tmin;
            tint m = {a.g + (b.g - a.g) * t / span, a.tr, a.tg, a.tb};
            shp_put(img, x, y, rgb_of(&m, 0));
        }
}

static void paint_noise(shp_image *img, shp_rng *r)
{
    tint t = pick_grey(r, 96, 160, NULL);
    int amp = shp_rng_range(r, 12, 56);
    int cell = shp_rng_range(r, 1, 4);
    int gw = (img->w + cell - 1) / cell;
    for (int cyy = 0; cyy * cell < img->h; cyy++)
        for (int cxx = 0; cxx < gw; cxx++) {
            int delta = shp_rng_range(r, -amp, amp);
            shp_fill_rect(img, cxx * cell, cyy * cell, cxx * cell + cell, cyy * cell + cell,
                          rgb_of(&t, delta));
        }
}

static void paint_stripes(shp_image *img, shp_rng *r)
{
    tint a, b;
    pick_pair(r, 32, &a, &b);
    shp_rgb ca = rgb_of(&a, 0), cb = rgb_of(&b, 0);
    int half = shp_rng_range(r, 2, 14);
    int orient = (int)shp_rng_below(r, 4);
    int off = shp_rng_range(r, 0, 2 * half - 1);
    for (int y = 0; y < img->h; y++)
        for (int x = 0; x < img->w; x++) {
            int u = orient == 0 ? y : orient == 1 ? x : orient == 2 ? x + y : x - y + img->h;
            shp_put(img, x, y, ((u + off) / half) % 2 ? ca : cb);
        }
}

static void paint_checker(shp_image *img, shp_rng *r)
{
    tint a, b;
    pick_pair(r, 32, &a, &b);
    shp_rgb ca = rgb_of(&a, 0), cb = rgb_of(&b, 0);
    int cell = shp_rng_range(r, 6, 28);
    int ox = shp_rng_range(r, 0, cell - 1);
    int oy = shp_rng_range(r, 0, cell - 1);
    for (int y = 0; y < img->h; y++)
        for (int x = 0; x < img->w; x++)
            shp_put(img, x, y, (((x + ox) / cell) + ((y + oy) / cell)) % 2 ? ca : cb);
}

static void paint_clutter(shp_image *img, shp_rng *r)
{
    tint base = pick_grey(r, 80, 176, NULL);
    shp_fill_rect(img, 0, 0, img->w, img->h, rgb_of(&base, 0));
    int n = shp_rng_range(r, 30, 90);
    for (int i = 0; i < n; i++) {
        tint t = pick_grey(r, 56, 200, &base);
        shp_rgb c = rgb_of(&t, 0);
        int x = shp_rng_range(r, -20, img->w + 20);
        int y = shp_rng_range(r, -20, img->h + 20);
        switch (shp_rng_below(r, 4)) {
        case 0: { /* a thin line */
            int dx = shp_rng_range(r, -120, 120);
            int dy = shp_rng_range(r, -120, 120);
            int width = shp_rng_range(r, 1, 2);
            shp_line(img, x, y, x + dx, y + dy, width, c);
            break;
        }
        case 1: { /* an open rectangle, elongated so it never reads as a square */
            int w = shp_rng_range(r, 8, 30);
            int h = w * 2 + shp_rng_range(r, 0, 30);
            if (shp_rng_chance(r, 1, 2)) {
                int tmp = w;
                w = h;
                h = tmp;
            }
            shp_line(img, x, y, x + w, y, 1, c);
            shp_line(img, x, y + h, x + w, y + h, 1, c);
            shp_line(img, x, y, x, y + h, 1, c);
            shp_line(img, x + w, y, x + w, y + h, 1, c);
            break;
        }
        case 2: { /* a small bar, again never square */
            int w = shp_rng_range(r, 2, 5);
            int h = w * 3 + shp_rng_range(r, 0, 6);
            if (shp_rng_chance(r, 1, 2)) {
                int tmp = w;
                w = h;
                h = tmp;
            }
            shp_fill_rect(img, x, y, x + w, y + h, c);
            break;
        }
        default: { /* a scribble */
            int px = x, py = y;
            for (int k = 0; k < 6; k++) {
                int nx = px + shp_rng_range(r, -16, 16);
                int ny = py + shp_rng_range(r, -16, 16);
                shp_line(img, px, py, nx, ny, 1, c);
                px = nx;
                py = ny;
            }
        }
        }
    }
}

const char *shp_bg_name(shp_bg b)
{
    switch (b) {
    case SHP_BG_FLAT: return "flat";
    case SHP_BG_GRADIENT: return "gradient";
    case SHP_BG_NOISE: return "noise";
    case SHP_BG_STRIPES: return "stripes";
    case SHP_BG_CHECKER: return "checkerboard";
    case SHP_BG_CLUTTER: return "clutter";
    case SHP_N_BGS: break;
    }
    return "?";
}

void shp_background_paint(shp_image *img, shp_bg type, shp_rng *r)
{
    switch (type) {
    case SHP_BG_FLAT: paint_flat(img, r); break;
    case SHP_BG_GRADIENT: paint_gradient(img, r); break;
    case SHP_BG_NOISE: paint_noise(img, r); break;
    case SHP_BG_STRIPES: paint_stripes(img, r); break;
    case SHP_BG_CHECKER: paint_checker(img, r); break;
    case SHP_BG_CLUTTER: paint_clutter(img, r); break;
    case SHP_N_BGS: paint_flat(img, r); break;
    }
}
