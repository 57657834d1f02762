/* ShapesVQA: a deterministic, procedural benchmark generator (library plm_shapes).
 *
 * Everything here is a pure function of a 64-bit item seed and a few parameters: scenes of
 * coloured shapes on backgrounds of varying entropy, questions whose answers are re-derivable
 * from the scene, and long-context text tasks (pass key, multi-key, image-then-dialogue) for the
 * KV cache. No floating point touches anything that is written out: geometry is integer and the
 * PRNG is xoshiro256** seeded through splitmix64, so outputs match across compilers and machines.
 *
 * Errors follow the project's convention: fallible calls return plm_status and fill a plm_error
 * that names the input and the problem. Nothing here prints or exits; main.c does. */
#ifndef PLM_EVAL_SHAPES_H
#define PLM_EVAL_SHAPES_H

#include <stddef.h>
#include <stdint.h>

#include "prunelm.h"

#define PLM_TRY_SHP(expr)                                                                          \
    do {                                                                                           \
        plm_status shp_try_st_ = (expr);                                                           \
        if (shp_try_st_ != PLM_OK) return shp_try_st_;                                             \
    } while (0)

/* ---- prng (shp_prng.c) -------------------------------------------------------------------- */
/* Never draw twice within one expression (f(rng(), rng())): C leaves the order of evaluation of
 * arguments and operands unspecified, and gcc and clang do differ. One draw per statement. */
typedef struct shp_rng {
    uint64_t s[4];
} shp_rng;

uint64_t shp_splitmix64(uint64_t *state);
/* Seeds from (seed, stream); different streams of one seed are independent sequences. */
void shp_rng_seed(shp_rng *r, uint64_t seed, uint64_t stream);
uint64_t shp_rng_next(shp_rng *r);
/* Uniform in [0, n), unbiased; n == 0 returns 0. */
uint32_t shp_rng_below(shp_rng *r, uint32_t n);
/* Uniform in [lo, hi] inclusive. */
int shp_rng_range(shp_rng *r, int lo, int hi);
/* 1 with probability num/den. */
int shp_rng_chance(shp_rng *r, uint32_t num, uint32_t den);
void shp_rng_shuffle_int(shp_rng *r, int *a, int n);

/* ---- image and rasterizer (shp_raster.c) -------------------------------------------------- */
enum { SHP_IMG = 336, SHP_PATCH = 14 };

typedef struct shp_rgb {
    uint8_t r, g, b;
} shp_rgb;

typedef struct shp_image {
    int w, h;
    uint8_t *px; /* w*h*3 RGB8, row-major; owned */
} shp_image;

plm_status shp_image_new(shp_image *img, int w, int h, plm_error *err);
void shp_image_free(shp_image *img);
void shp_put(shp_image *img, int x, int y, shp_rgb c);
/* Blends c over pixel (x, y) with coverage cov/16; out-of-range pixels are ignored. */
void shp_blend(shp_image *img, int x, int y, shp_rgb c, int cov);
void shp_fill_rect(shp_image *img, int x0, int y0, int x1, int y1, shp_rgb c); /* [x0,x1) */
void shp_line(shp_image *img, int x0, int y0, int x1, int y1, int width, shp_rgb c);

typedef enum shp_shape {
    SHP_CIRCLE, SHP_SQUARE, SHP_TRIANGLE, SHP_STAR, SHP_CROSS, SHP_DIAMOND, SHP_HEXAGON, SHP_RING,
    SHP_N_SHAPES
} shp_shape;

/* A coverage mask: cov[(y - y0) * w + (x - x0)] in 0..16 (4x4 supersamples per pixel). */
typedef struct shp_mask {
    int x0, y0, w, h;
    uint8_t cov[(96 + 8) * (96 + 8)];
} shp_mask;

/* Rasterizes shape with bounding box [x0, x0+side) x [y0, y0+side) into m (m->w/h cover the
 * box plus a 2-pixel border for the outline). side is 4..96. */
void shp_mask_shape(shp_mask *m, shp_shape s, int x0, int y0, int side);
/* Rasterizes a bitmap (1 = ink) of bw x bh cells, each cell k x k pixels, at (x0, y0). */
void shp_mask_bitmap(shp_mask *m, const uint8_t *bits, int bw, int bh, int k, int x0, int y0);
/* Draws the mask: a 1-pixel outline (dilation of the coverage) in `outline`, then the fill. */
void shp_draw_mask(shp_image *img, const shp_mask *m, shp_rgb fill, shp_rgb outline);

/* ---- font (shp_font.c) -------------------------------------------------------------------- */
enum { SHP_GLYPH_W = 5, SHP_GLYPH_H = 7, SHP_N_GLYPHS = 36 };
/* Glyph index 0..25 = 'A'..'Z', 26..35 = '0'..'9'; -1 if c has no glyph. */
int shp_glyph_index(char c);
char shp_glyph_char(int index);
/* Fills bits (SHP_GLYPH_W * SHP_GLYPH_H bytes, row-major, 1 = ink); 0 if index is invalid. */
int shp_glyph_bits(int index, uint8_t *bits);

/* ---- backgrounds (shp_background.c) ------------------------------------------------------- */
typedef enum shp_bg {
    SHP_BG_FLAT, SHP_BG_GRADIENT, SHP_BG_NOISE, SHP_BG_STRIPES, SHP_BG_CHECKER, SHP_BG_CLUTTER,
    SHP_N_BGS
} shp_bg;

const char *shp_bg_name(shp_bg b);
/* Paints the whole image. Backgrounds are low-saturation greys with luminance in [48, 208], so
 * the eight saturated/extreme object colours stay distinguishable (see shp_colour_rgb). */
void shp_background_paint(shp_image *img, shp_bg type, shp_rng *r);

/* ---- scenes (shp_scene.c) ----------------------------------------------------------------- */
typedef enum shp_colour {
    SHP_RED, SHP_GREEN, SHP_BLUE, SHP_YELLOW, SHP_PURPLE, SHP_ORANGE, SHP_WHITE, SHP_BLACK,
    SHP_N_COLOURS
} shp_colour;

typedef enum shp_size { SHP_SMALL, SHP_MEDIUM, SHP_LARGE, SHP_N_SIZES } shp_size;

enum {
    SHP_MAX_OBJECTS = 8,
    SHP_SMALL_MIN = 14, SHP_SMALL_MAX = 20,
    SHP_MEDIUM_MIN = 36, SHP_MEDIUM_MAX = 48,
    SHP_LARGE_MIN = 72, SHP_LARGE_MAX = 96,
    SHP_BORDER = 4, /* min distance of a bounding box from the image edge */
    SHP_GAP = 6     /* min gap between two bounding boxes (outlines included) */
};

typedef struct shp_object {
    shp_shape shape;
    shp_colour colour;
    shp_size size;
    int x0, y0, side; /* bounding box [x0, x0+side) x [y0, y0+side) */
} shp_object;

typedef struct shp_glyph {
    int present;
    char ch;          /* 'A'..'Z' or '0'..'9' */
    shp_colour colour;
    shp_size size;    /* small: k <= 3, medium: k 4..5, large: k >= 6 */
    int k;            /* pixels per font cell */
    int x0, y0, w, h; /* bounding box of the ink */
} shp_glyph;

typedef struct shp_scene {
    uint64_t seed;
    shp_bg background;
    int n_objects;
    shp_object obj[SHP_MAX_OBJECTS];
    shp_glyph glyph;
} shp_scene;

const char *shp_shape_name(shp_shape s);
const char *shp_shape_plural(shp_shape s);
const char *shp_colour_name(shp_colour c);
const char *shp_size_name(shp_size s);
shp_rgb shp_colour_rgb(shp_colour c);
shp_rgb shp_outline_rgb(shp_colour c);
const char *shp_number_word(int n); /* 0..9 -> "zero".."nine" */

/* Samples a scene from r (objects never overlap; small objects lie inside a 2x2 block of
 * 14-pixel patches). */
void shp_scene_sample(shp_scene *sc, uint64_t seed, shp_rng *r);
/* Renders background then objects then the glyph. The background is drawn from r, so the same
 * rng state gives the same pixels. img must be SHP_IMG x SHP_IMG. */
void shp_scene_render(const shp_scene *sc, shp_image *img, shp_rng *r);
/* 1 if the gap-inflated bounding boxes of a and b intersect. */
int shp_boxes_clash(int ax, int ay, int aw, int ah, int bx, int by, int bw, int bh, int gap);

/* ---- questions (shp_question.c) ----------------------------------------------------------- */
typedef enum shp_qtype {
    SHP_Q_COLOUR, SHP_Q_SHAPE, SHP_Q_COUNT, SHP_Q_EXIST, SHP_Q_POSITION, SHP_Q_RELATION,
    SHP_Q_SIZE, SHP_Q_LETTER, SHP_N_QTYPES
} shp_qtype;

enum { SHP_Q_TEXT = 128, SHP_A_TEXT = 16, SHP_MAX_QUESTIONS = 16 };

typedef struct shp_question {
    shp_qtype type;
    char text[SHP_Q_TEXT];
    char answer[SHP_A_TEXT];
    const char *target_size; /* "small" | "medium" | "large" | "none" (static string) */
} shp_question;

const char *shp_qtype_name(shp_qtype t);
/* Picks up to n distinct questions (n <= SHP_MAX_QUESTIONS) for sc, balancing types and
 * answers; returns how many were written to out. */
int shp_questions_pick(const shp_scene *sc, shp_rng *r, int n, shp_question *out);
/* All candidate questions of one type (at most cap); used by the picker and by tests. */
int shp_questions_all(const shp_scene *sc, shp_qtype t, shp_rng *r, shp_question *out, int cap);

/* ---- text tasks (shp_text.c) -------------------------------------------------------------- */
typedef struct shp_buf {
    char *p;
    size_t len, cap;
} shp_buf;

plm_status shp_buf_put(shp_buf *b, const char *s, size_t n);
plm_status shp_buf_puts(shp_buf *b, const char *s);
plm_status shp_buf_printf(shp_buf *b, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Appends s as a JSON string literal (quotes included). */
plm_status shp_buf_json_str(shp_buf *b, const char *s);
void shp_buf_free(shp_buf *b);

typedef struct shp_text_item {
    shp_buf context;  /* owned */
    char question[SHP_Q_TEXT];
    char answer[16];
    int depth_pct;    /* where the (first asked) needle sits, 0..100 */
    int n_keys;       /* multikey: number of key lines */
} shp_text_item;

enum { SHP_CHARS_PER_TOKEN = 4, SHP_TOKENS_MIN = 64, SHP_TOKENS_MAX = 131072 };

/* Context of about tokens*4 characters with one pass key buried at a random depth. */
plm_status shp_text_passkey(shp_text_item *it, int tokens, shp_rng *r, plm_error *err);
/* Several "The key for <word> is <number>." lines; asks for one. */
plm_status shp_text_multikey(shp_text_item *it, int tokens, shp_rng *r, plm_error *err);
/* A long filler dialogue that follows an image; the caller fills question/answer. */
plm_status shp_text_dialogue(shp_text_item *it, int tokens, shp_rng *r, plm_error *err);
void shp_text_item_free(shp_text_item *it);

/* ---- PNG (shp_png.c) ---------------------------------------------------------------------- */
/* Writes img to path atomically (a temporary name in the same directory, then rename). */
plm_status shp_png_write(const char *path, const shp_image *img, plm_error *err);

/* ---- generation driver (shp_gen.c) -------------------------------------------------------- */
typedef enum shp_split { SHP_TRAIN, SHP_VAL, SHP_TEST, SHP_N_SPLITS } shp_split;
typedef enum shp_task { SHP_TASK_VQA, SHP_TASK_PASSKEY, SHP_TASK_MULTIKEY, SHP_TASK_DIALOGUE,
                        SHP_N_TASKS } shp_task;

/* Item seeds: split * SHP_SPLIT_STRIDE + index, index < SHP_SPLIT_STRIDE, so the three splits
 * occupy disjoint ranges (train [0, 1e12), val [1e12, 2e12), test [2e12, 3e12)). The seeds stay
 * below 2^53 so JSON readers that parse numbers as doubles keep them exact. */
#define SHP_SPLIT_STRIDE 1000000000000ULL

const char *shp_split_name(shp_split s);
const char *shp_task_name(shp_task t);
int shp_split_parse(const char *s, shp_split *out);
int shp_task_parse(const char *s, shp_task *out);
uint64_t shp_item_seed(shp_split s, uint64_t index);

typedef struct shp_params {
    const char *out_dir;
    shp_split split;
    shp_task task;
    uint64_t count;
    uint64_t seed_base;      /* first item index */
    int questions_per_image; /* vqa */
    int tokens;              /* text tasks; 0 = per item from {512, 1024, 2048, 4096, 8192} */
    int jobs;                /* worker threads */
} shp_params;

shp_params shp_default_params(void);

/* Answer tallies per question type, for the end-of-run report. */
enum { SHP_STATS_ANSWERS = 64 };
typedef struct shp_type_stats {
    char name[24];
    uint64_t total;
    int n_answers;
    char answer[SHP_STATS_ANSWERS][SHP_A_TEXT]; /* the last slot collects "(other)" */
    uint64_t count[SHP_STATS_ANSWERS];
    uint64_t by_size[4]; /* target size: small, medium, large, none */
} shp_type_stats;

typedef struct shp_stats {
    uint64_t items, questions;
    int n_types;
    shp_type_stats type[SHP_N_QTYPES + 4];
} shp_stats;

void shp_stats_add(shp_stats *st, const char *type, const char *answer, const char *target_size);
void shp_stats_merge(shp_stats *dst, const shp_stats *src);
/* Writes the report (one line per type, answers by count) into b. */
plm_status shp_stats_format(const shp_stats *st, shp_buf *b);

/* Generates one item's JSONL lines (and, with write_png, its image) into line. */
plm_status shp_gen_item(const shp_params *p, uint64_t index, shp_buf *line, shp_stats *st,
                        int write_png, plm_error *err);
/* Generates the whole run: PNGs under DIR/images/ and DIR/<split>[-task].jsonl, atomically. */
plm_status shp_generate(const shp_params *p, shp_stats *st, plm_error *err);
/* Path of the JSONL file a run writes (into buf of size n). */
void shp_jsonl_path(const shp_params *p, char *buf, size_t n);

plm_status shp_fail(plm_error *err, plm_status st, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

#endif
