/* Scene sampling and rendering. A scene is 1-8 non-overlapping shapes plus, sometimes, one
 * capital letter or digit. Small objects are placed inside a 2x2 block of 14-pixel ViT patches
 * (a quarter of them exactly inside one patch), so that each lives in at most four visual
 * tokens: those are the ones a 90% token pruning is most likely to drop. */
#include "shapes.h"

static const char *const SHAPE_NAMES[SHP_N_SHAPES] = {
    "circle", "square", "triangle", "star", "cross", "diamond", "hexagon", "ring"};
static const char *const SHAPE_PLURALS[SHP_N_SHAPES] = {
    "circles", "squares", "triangles", "stars", "crosses", "diamonds", "hexagons", "rings"};
static const char *const COLOUR_NAMES[SHP_N_COLOURS] = {
    "red", "green", "blue", "yellow", "purple", "orange", "white", "black"};
/* Saturated hues at least ~60 apart in some channel from each other, and far from any
 * background grey (channels within +-10 of each other, in [56, 200]). */
static const shp_rgb COLOURS[SHP_N_COLOURS] = {
    {220, 36, 36}, {36, 168, 56}, {36, 76, 232}, {246, 216, 36},
    {150, 56, 192}, {252, 136, 24}, {252, 252, 252}, {16, 16, 16}};
static const char *const SIZE_NAMES[SHP_N_SIZES] = {"small", "medium", "large"};
static const char *const NUMBERS[10] = {"zero", "one", "two", "three", "four",
                                        "five", "six", "seven", "eight", "nine"};

const char *shp_shape_name(shp_shape s)
{
    return (unsigned)s < SHP_N_SHAPES ? SHAPE_NAMES[s] : "?";
}

const char *shp_shape_plural(shp_shape s)
{
    return (unsigned)s < SHP_N_SHAPES ? SHAPE_PLURALS[s] : "?";
}

const char *shp_colour_name(shp_colour c)
{
    return (unsigned)c < SHP_N_COLOURS ? COLOUR_NAMES[c] : "?";
}

const char *shp_size_name(shp_size s)
{
    return (unsigned)s < SHP_N_SIZES ? SIZE_NAMES[s] : "?";
}

const char *shp_number_word(int n)
{
    return n >= 0 && n <= 9 ? NUMBERS[n] : "?";
}

shp_rgb shp_colour_rgb(shp_colour c)
{
    return COLOURS[(unsigned)c < SHP_N_COLOURS ? c : 0];
}

shp_rgb shp_outline_rgb(shp_colour c)
{
    shp_rgb dark = {24, 24, 24}, light = {228, 228, 228};
    return c == SHP_BLACK ? light : dark;
}

int shp_boxes_clash(int ax, int ay, int aw, int ah, int bx, int by, int bw, int bh, int gap)
{
    return ax < bx + bw + gap && bx < ax + aw + gap && ay < by + bh + gap && by < ay + ah + gap;
}

static int clashes(const shp_scene *sc, int x, int y, int w, int h)
{
    for (int i = 0; i < sc->n_objects; i++) {
        const shp_object *o = &sc->obj[i];
        if (shp_boxes_clash(x, y, w, h, o->x0, o->y0, o->side, o->side, SHP_GAP)) return 1;
    }
    const shp_glyph *g = &sc->glyph;
    return g->present && shp_boxes_clash(x, y, w, h, g->x0, g->y0, g->w, g->h, SHP_GAP);
}

/* A coordinate for a box of length len whose drawn extent (the box plus its 1-pixel outline)
 * stays inside patches [p, p + span) and at least SHP_BORDER from the image edge; -1 if none. */
static int coord_in_patches(shp_rng *r, int len, int span)
{
    int n_starts = SHP_IMG / SHP_PATCH - span + 1;
    int p = (int)shp_rng_below(r, (uint32_t)n_starts);
    int lo = p * SHP_PATCH + 1, hi = (p + span) * SHP_PATCH - 1 - len;
    if (lo < SHP_BORDER + 1) lo = SHP_BORDER + 1;
    if (hi > SHP_IMG - SHP_BORDER - 1 - len) hi = SHP_IMG - SHP_BORDER - 1 - len;
    if (lo > hi) return -1;
    return shp_rng_range(r, lo, hi);
}

static int coord_free(shp_rng *r, int len)
{
    return shp_rng_range(r, SHP_BORDER + 1, SHP_IMG - SHP_BORDER - 1 - len);
}

/* Finds a free spot for a w x h box; small boxes go into a patch block. Returns 1 on success. */
static int place(const shp_scene *sc, shp_rng *r, int w, int h, int small, int one_patch,
                 int *ox, int *oy)
{
    for (int tries = 0; tries < 200; tries++) {
        int span = one_patch ? 1 : 2;
        int x = small ? coord_in_patches(r, w, span) : coord_free(r, w);
        int y = small ? coord_in_patches(r, h, span) : coord_free(r, h);
        if (x < 0 || y < 0) continue;
        if (!clashes(sc, x, y, w, h)) {
            *ox = x;
            *oy = y;
            return 1;
        }
    }
    return 0;
}

static int side_for(shp_rng *r, shp_size s, int *one_patch)
{
    *one_patch = 0;
    switch (s) {
    case SHP_SMALL:
        if (shp_rng_chance(r, 1, 4)) {
            *one_patch = 1;
            return SHP_PATCH - 2; /* outline included, exactly one patch */
        }
        return shp_rng_range(r, SHP_SMALL_MIN, SHP_SMALL_MAX);
    case SHP_MEDIUM: return shp_rng_range(r, SHP_MEDIUM_MIN, SHP_MEDIUM_MAX);
    default: return shp_rng_range(r, SHP_LARGE_MIN, SHP_LARGE_MAX);
    }
}

static void sample_glyph(shp_scene *sc, shp_rng *r)
{
    shp_glyph *g = &sc->glyph;
    g->present = 0;
    if (!shp_rng_chance(r, 7, 20)) return;
    g->ch = shp_glyph_char((int)shp_rng_below(r, SHP_N_GLYPHS));
    g->colour = (shp_colour)shp_rng_below(r, SHP_N_COLOURS);
    g->size = (shp_size)shp_rng_below(r, SHP_N_SIZES);
    static const int K[SHP_N_SIZES][2] = {{2, 3}, {4, 5}, {6, 8}};
    g->k = shp_rng_range(r, K[g->size][0], K[g->size][1]);
    g->w = SHP_GLYPH_W * g->k;
    g->h = SHP_GLYPH_H * g->k;
    g->present = place(sc, r, g->w, g->h, g->size == SHP_SMALL, 0, &g->x0, &g->y0);
}

/* Draws a pool of allowed values: all of them half the time, otherwise 1-3, so that scenes
 * often repeat a shape or colour (counting needs repeats; unique references need variety). */
static int sample_pool(shp_rng *r, int n_all, int *pool)
{
    for (int i = 0; i < n_all; i++) pool[i] = i;
    shp_rng_shuffle_int(r, pool, n_all);
    return shp_rng_chance(r, 1, 2) ? n_all : shp_rng_range(r, 1, 3);
}

void shp_scene_sample(shp_scene *sc, uint64_t seed, shp_rng *r)
{
    sc->seed = seed;
    sc->background = (shp_bg)shp_rng_below(r, SHP_N_BGS);
    sc->n_objects = 0;
    sample_glyph(sc, r);

    int shapes[SHP_N_SHAPES], colours[SHP_N_COLOURS];
    int n_shapes = sample_pool(r, SHP_N_SHAPES, shapes);
    int n_colours = sample_pool(r, SHP_N_COLOURS, colours);
    int want = shp_rng_range(r, 1, SHP_MAX_OBJECTS);
    int n_large = 0;
    for (int i = 0; i < want; i++) {
        shp_object o;
        o.shape = (shp_shape)shapes[shp_rng_below(r, (uint32_t)n_shapes)];
        o.colour = (shp_colour)colours[shp_rng_below(r, (uint32_t)n_colours)];
        uint32_t u = shp_rng_below(r, 10); /* small 40%, medium 30%, large 30% */
        o.size = u < 4 ? SHP_SMALL : u < 7 ? SHP_MEDIUM : SHP_LARGE;
        if (o.size == SHP_LARGE && n_large >= 2) o.size = SHP_MEDIUM;
        int placed = 0;
        for (;;) {
            int one_patch;
            o.side = side_for(r, o.size, &one_patch);
            if (place(sc, r, o.side, o.side, o.size == SHP_SMALL, one_patch, &o.x0, &o.y0)) {
                placed = 1;
                break;
            }
            if (o.size == SHP_SMALL) break;
            o.size = (shp_size)(o.size - 1); /* crowded: try a smaller one */
        }
        if (!placed) break;
        if (o.size == SHP_LARGE) n_large++;
        sc->obj[sc->n_objects++] = o;
    }
}

void shp_scene_render(const shp_scene *sc, shp_image *img, shp_rng *r)
{
    shp_mask m;
    shp_background_paint(img, sc->background, r);
    for (int i = 0; i < sc->n_objects; i++) {
        const shp_object *o = &sc->obj[i];
        shp_mask_shape(&m, o->shape, o->x0, o->y0, o->side);
        shp_draw_mask(img, &m, shp_colour_rgb(o->colour), shp_outline_rgb(o->colour));
    }
    const shp_glyph *g = &sc->glyph;
    if (g->present) {
        uint8_t bits[SHP_GLYPH_W * SHP_GLYPH_H];
        shp_glyph_bits(shp_glyph_index(g->ch), bits);
        shp_mask_bitmap(&m, bits, SHP_GLYPH_W, SHP_GLYPH_H, g->k, g->x0, g->y0);
        shp_draw_mask(img, &m, shp_colour_rgb(g->colour), shp_outline_rgb(g->colour));
    }
}
