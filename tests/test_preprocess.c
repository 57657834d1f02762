/* CLIP preprocessing against transformers 5.17 (tests/ref/preprocess_ref.py recorded the
 * references in tests/fixtures/preprocess/): every fixture image through every config, uint8
 * stage compared exactly, float tensor within 1e-5; config parsing and its errors. */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/npy.h"
#include "tests/ref/make_images.h"
#include "vision/image.h"
#include "vision/preprocess.h"

#define FIX PLM_SOURCE_DIR "/tests/fixtures/"
#define REF FIX "preprocess/"

/* stb_image's JPEG pixels differ from PIL's by up to 3 levels (test_image.c); bicubic resampling
 * (overshooting weights, a rounding per pass) can make that 4 levels of the resized image, and
 * normalizing turns a level into 1/255/std = 0.0146..0.0150. Measured (jpeg_through_our_decoder's
 * log): 0.057 at most (progressive.jpg, llava15 config), mean about 1e-3. Bound: 5 levels. */
#define JPEG_TENSOR_BOUND 0.076

static const char *configs[] = {"llava15", "tiny", "tiny_pad", "hw_pad", "tiny_bilinear"};
#define NUM_CONFIGS ((int)(sizeof configs / sizeof configs[0]))

static int file_exists(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    return f != NULL;
}

static void load_config(const char *name, clip_preproc_config *cfg)
{
    char path[512];
    plm_error err;
    snprintf(path, sizeof path, REF "configs/%s.json", name);
    cr_assert_eq(clip_preproc_load(path, cfg, &err), PLM_OK, "%s", err.msg);
}

static int is_jpeg(const mk_spec *s) { return s->color_type == MK_JPEG; }

static void stem_of(const char *file, char *stem, size_t n)
{
    snprintf(stem, n, "%s", file);
    char *dot = strrchr(stem, '.');
    if (dot) *dot = '\0';
}

/* The input image: ours for PNGs; for JPEGs, PIL's decode (use_pil) or ours. */
static void input_image(const mk_spec *s, int use_pil, plm_image *img)
{
    char path[512], stem[128];
    plm_error err;
    stem_of(s->file, stem, sizeof stem);
    if (use_pil && is_jpeg(s)) {
        snprintf(path, sizeof path, REF "decoded/%s.npy", stem);
        if (file_exists(path)) {
            npy_array a;
            cr_assert_eq(npy_read(path, &a, &err), PLM_OK, "%s", err.msg);
            uint8_t *rgb = malloc(a.count);
            for (size_t i = 0; i < a.count; i++) rgb[i] = (uint8_t)a.i[i];
            cr_assert_eq(img_from_rgb(rgb, (int)a.shape[1], (int)a.shape[0], 0, img, &err),
                         PLM_OK, "%s", err.msg);
            free(rgb);
            npy_free(&a);
            return;
        }
        snprintf(path, sizeof path, REF "decoded/%s.png", stem);
    } else {
        snprintf(path, sizeof path, FIX "images/%s", s->file);
    }
    cr_assert_eq(img_load_file(path, 0, img, &err), PLM_OK, "%s", err.msg);
}

static uint64_t fnv1a(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static int checksum_of(const char *cfg, const char *stem, uint64_t *out)
{
    char path[512], line[256], name[128];
    snprintf(path, sizeof path, REF "%s/checksums.txt", cfg);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    int found = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long long h;
        if (line[0] == '#') continue;
        if (sscanf(line, "%127s %llx", name, &h) == 2 && strcmp(name, stem) == 0) {
            *out = h;
            found = 1;
        }
    }
    fclose(f);
    return found;
}

/* transformers' uint8 crop for (cfg, image), packed RGB, if recorded in full: .png (HxWx3) or
 * _u8.npy ([3][H][W]). */
static uint8_t *ref_u8(const char *cfg, const char *stem, int *w, int *h)
{
    char path[512];
    plm_error err;
    snprintf(path, sizeof path, REF "%s/%s.png", cfg, stem);
    if (file_exists(path)) {
        plm_image img;
        cr_assert_eq(img_load_file(path, 0, &img, &err), PLM_OK, "%s", err.msg);
        *w = img.width;
        *h = img.height;
        return img.rgb;
    }
    snprintf(path, sizeof path, REF "%s/%s_u8.npy", cfg, stem);
    if (!file_exists(path)) return NULL;
    npy_array a;
    cr_assert_eq(npy_read(path, &a, &err), PLM_OK, "%s", err.msg);
    cr_assert(!a.is_float && a.ndim == 3 && a.shape[0] == 3, "%s", path);
    *h = (int)a.shape[1];
    *w = (int)a.shape[2];
    size_t plane = (size_t)*h * (size_t)*w;
    uint8_t *rgb = malloc(plane * 3);
    for (size_t i = 0; i < plane; i++)
        for (int c = 0; c < 3; c++) rgb[i * 3 + (size_t)c] = (uint8_t)a.i[(size_t)c * plane + i];
    npy_free(&a);
    return rgb;
}

/* transformers' float output: the recorded tensor if there is one, else levels[c][u8]
 * (preprocess_ref.py checked that identity exactly for every image). */
static float *ref_float(const char *cfg, const char *stem, const uint8_t *u8, int w, int h)
{
    char path[512];
    plm_error err;
    npy_array a;
    size_t plane = (size_t)w * (size_t)h;
    snprintf(path, sizeof path, REF "%s/%s.npy", cfg, stem);
    if (file_exists(path)) {
        cr_assert_eq(npy_read(path, &a, &err), PLM_OK, "%s", err.msg);
        cr_assert(a.is_float && a.ndim == 3 && a.shape[0] == 3 && a.shape[1] == h &&
                  a.shape[2] == w, "%s: shape", path);
        float *f = a.f;
        a.f = NULL;
        npy_free(&a);
        return f;
    }
    if (!u8) return NULL;
    snprintf(path, sizeof path, REF "%s/levels.npy", cfg);
    cr_assert_eq(npy_read(path, &a, &err), PLM_OK, "%s", err.msg);
    cr_assert(a.is_float && a.count == 768);
    float *f = malloc(plane * 3 * sizeof *f);
    for (size_t i = 0; i < plane; i++)
        for (int c = 0; c < 3; c++)
            f[(size_t)c * plane + i] = a.f[c * 256 + u8[i * 3 + (size_t)c]];
    npy_free(&a);
    return f;
}

typedef struct cmp_result {
    int compared;       /* a float reference existed */
    double max_abs;     /* float tensor */
    size_t u8_diffs;    /* uint8 crop values that differ (when recorded in full) */
    int checksum_ok;    /* -1 not recorded, 0 mismatch, 1 match */
} cmp_result;

static cmp_result compare_one(const char *cfgname, const mk_spec *s, int use_pil)
{
    cmp_result r = {0, 0.0, 0, -1};
    clip_preproc_config cfg;
    load_config(cfgname, &cfg);
    plm_image img;
    input_image(s, use_pil, &img);
    plm_error err;
    uint8_t *u8;
    int h, w;
    cr_assert_eq(clip_preprocess_u8(&cfg, &img, &u8, &h, &w, &err), PLM_OK, "%s", err.msg);
    float *px;
    int fh, fw;
    cr_assert_eq(clip_preprocess(&cfg, &img, &px, &fh, &fw, &err), PLM_OK, "%s", err.msg);
    cr_assert(fh == h && fw == w);
    cr_assert(h == cfg.crop_h && w == cfg.crop_w, "%s/%s: %dx%d", cfgname, s->file, w, h);

    char stem[128];
    stem_of(s->file, stem, sizeof stem);
    uint64_t want;
    if (checksum_of(cfgname, stem, &want)) r.checksum_ok = fnv1a(u8, (size_t)w * (size_t)h * 3) == want;
    int rw, rh;
    uint8_t *ru8 = ref_u8(cfgname, stem, &rw, &rh);
    if (ru8) {
        cr_assert(rw == w && rh == h, "%s/%s: reference is %dx%d", cfgname, stem, rw, rh);
        for (size_t i = 0; i < (size_t)w * (size_t)h * 3; i++) r.u8_diffs += ru8[i] != u8[i];
    }
    float *rf = ref_float(cfgname, stem, ru8, w, h);
    if (rf) {
        r.compared = 1;
        for (size_t i = 0; i < (size_t)w * (size_t)h * 3; i++) {
            double d = fabs((double)px[i] - (double)rf[i]);
            if (!(d <= r.max_abs)) r.max_abs = d;
        }
    }
    free(rf);
    free(ru8);
    free(px);
    free(u8);
    img_free(&img);
    return r;
}

/* Every image through one config, PNGs with our decoder, JPEGs with PIL's decode (so that the
 * preprocessing itself is held to 1e-5 there too). */
static void check_config(const char *cfgname)
{
    int n = 0;
    for (int i = 0; i < MK_NUM_IMAGES; i++) {
        const mk_spec *s = &mk_images[i];
        cmp_result r = compare_one(cfgname, s, 1);
        cr_assert(r.compared || r.checksum_ok >= 0, "%s/%s: no reference recorded", cfgname, s->file);
        if (r.compared)
            cr_log_info("%s/%s%s: max |diff| %.3g, uint8 diffs %zu, checksum %s", cfgname,
                        s->file, is_jpeg(s) ? " (PIL-decoded)" : "", r.max_abs, r.u8_diffs,
                        r.checksum_ok < 0 ? "-" : r.checksum_ok ? "ok" : "MISMATCH");
        else
            cr_log_info("%s/%s%s: uint8 crop checksum %s (so the tensor is levels[u8], exact)",
                        cfgname, s->file, is_jpeg(s) ? " (PIL-decoded)" : "",
                        r.checksum_ok ? "ok" : "MISMATCH");
        cr_expect_neq(r.checksum_ok, 0, "%s/%s: uint8 crop checksum differs", cfgname, s->file);
        cr_expect_eq(r.u8_diffs, 0, "%s/%s: %zu uint8 values differ", cfgname, s->file, r.u8_diffs);
        cr_expect_leq(r.max_abs, 1e-5, "%s/%s: max |diff| %g", cfgname, s->file, r.max_abs);
        n += r.compared;
    }
    cr_log_info("%s: %d images compared in float, %d in all", cfgname, n, MK_NUM_IMAGES);
}

Test(preprocess, llava15_matches_transformers) { check_config("llava15"); }
Test(preprocess, tiny_matches_transformers) { check_config("tiny"); }
Test(preprocess, llava_pad_to_square_matches_transformers) { check_config("tiny_pad"); }
Test(preprocess, height_width_size_and_crop_padding_match_transformers) { check_config("hw_pad"); }
Test(preprocess, bilinear_matches_transformers) { check_config("tiny_bilinear"); }

Test(preprocess, jpeg_through_our_decoder)
{
    /* The reference is our pipeline on PIL's decode, which the tests above hold to transformers
     * (exactly, in fact); so this measures what stb_image's decode alone changes. */
    double worst = 0;
    for (int k = 0; k < NUM_CONFIGS; k++) {
        clip_preproc_config cfg;
        load_config(configs[k], &cfg);
        for (int i = 0; i < MK_NUM_IMAGES; i++) {
            const mk_spec *s = &mk_images[i];
            if (!is_jpeg(s)) continue;
            plm_image ours, pil;
            input_image(s, 0, &ours);
            input_image(s, 1, &pil);
            float *a, *b;
            int h, w, h2, w2;
            plm_error err;
            cr_assert_eq(clip_preprocess(&cfg, &ours, &a, &h, &w, &err), PLM_OK, "%s", err.msg);
            cr_assert_eq(clip_preprocess(&cfg, &pil, &b, &h2, &w2, &err), PLM_OK, "%s", err.msg);
            cr_assert(h == h2 && w == w2);
            double m = 0, sum = 0;
            size_t n = (size_t)h * (size_t)w * 3;
            for (size_t j = 0; j < n; j++) {
                double d = fabs((double)a[j] - (double)b[j]);
                if (!(d <= m)) m = d;
                sum += d;
            }
            cr_log_info("%s/%s (stb_image decode): max |diff| %.4f, mean %.2g", configs[k],
                        s->file, m, sum / (double)n);
            cr_expect_leq(m, JPEG_TENSOR_BOUND, "%s/%s: max |diff| %g", configs[k], s->file, m);
            if (m > worst) worst = m;
            free(a);
            free(b);
            img_free(&ours);
            img_free(&pil);
        }
    }
    cr_log_info("JPEG through stb_image: worst max |diff| %.4f (bound %.2f)", worst,
                JPEG_TENSOR_BOUND);
}

Test(preprocess, level_table_matches_transformers)
{
    for (int k = 0; k < NUM_CONFIGS; k++) {
        clip_preproc_config cfg;
        load_config(configs[k], &cfg);
        float table[3][256];
        clip_level_table(&cfg, table);
        char path[512];
        plm_error err;
        npy_array a;
        snprintf(path, sizeof path, REF "%s/levels.npy", configs[k]);
        cr_assert_eq(npy_read(path, &a, &err), PLM_OK, "%s", err.msg);
        for (int c = 0; c < 3; c++)
            for (int v = 0; v < 256; v++)
                cr_assert_eq(table[c][v], a.f[c * 256 + v], "%s: level %d of channel %d: %.9g vs %.9g",
                             configs[k], v, c, table[c][v], a.f[c * 256 + v]);
        npy_free(&a);
    }
}

Test(preprocess, model_fixture_pixels)
{
    /* the pixel tensors tests/ref/make_llava_fixtures.py recorded with AutoProcessor */
    static const char *models[] = {"tiny_f32", "mqa_f32_oldnames", "gqa_bf16_sharded"};
    for (size_t k = 0; k < sizeof models / sizeof models[0]; k++) {
        char path[512];
        plm_error err;
        clip_preproc_config cfg;
        snprintf(path, sizeof path, FIX "models/%s/processor_config.json", models[k]);
        if (!file_exists(path)) continue;
        cr_assert_eq(clip_preproc_load(path, &cfg, &err), PLM_OK, "%s", err.msg);
        plm_image img;
        snprintf(path, sizeof path, FIX "models/%s/image.png", models[k]);
        cr_assert_eq(img_load_file(path, 0, &img, &err), PLM_OK, "%s", err.msg);
        float *px;
        int h, w;
        cr_assert_eq(clip_preprocess(&cfg, &img, &px, &h, &w, &err), PLM_OK, "%s", err.msg);
        npy_array a;
        snprintf(path, sizeof path, FIX "models/%s/ref/pixels.npy", models[k]);
        cr_assert_eq(npy_read(path, &a, &err), PLM_OK, "%s", err.msg);
        cr_assert(a.ndim == 3 && a.shape[0] == 3 && a.shape[1] == h && a.shape[2] == w,
                  "%s: %dx%d", models[k], w, h);
        double m = 0;
        for (size_t i = 0; i < a.count; i++) {
            double d = fabs((double)px[i] - (double)a.f[i]);
            if (!(d <= m)) m = d;
        }
        cr_log_info("%s: image.png max |diff| %.3g", models[k], m);
        cr_expect_leq(m, 1e-5, "%s: max |diff| %g", models[k], m);
        npy_free(&a);
        free(px);
        img_free(&img);
    }
}

/* ---- geometry ----------------------------------------------------------------------------- */

Test(preprocess, resize_size_follows_transformers)
{
    clip_preproc_config cfg;
    clip_preproc_defaults(&cfg);
    cfg.shortest_edge = 336;
    int h, w;
    plm_error err;
    struct { int ih, iw, oh, ow; } cases[] = {
        {300, 500, 336, 560},  /* wide: long = int(336 * 500 / 300) */
        {500, 300, 560, 336},  /* tall */
        {13, 20, 336, 516},    /* 516.92 truncated */
        {20, 13, 516, 336},
        {360, 360, 336, 336},  /* square */
        {1, 3, 336, 1008},
        {47, 33, 478, 336},    /* 478.545... */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cr_assert_eq(clip_resize_size(&cfg, cases[i].ih, cases[i].iw, &h, &w, &err), PLM_OK);
        cr_assert(h == cases[i].oh && w == cases[i].ow, "%dx%d -> %dx%d, expected %dx%d",
                  cases[i].iw, cases[i].ih, w, h, cases[i].ow, cases[i].oh);
    }
    cfg.shortest_edge = 0;
    cfg.size_h = 40;
    cfg.size_w = 24;
    cr_assert_eq(clip_resize_size(&cfg, 300, 500, &h, &w, &err), PLM_OK);
    cr_assert(h == 40 && w == 24);
    cfg.do_resize = 0;
    cr_assert_eq(clip_resize_size(&cfg, 300, 500, &h, &w, &err), PLM_OK);
    cr_assert(h == 300 && w == 500);
    /* an absurd aspect ratio is refused rather than allocated */
    clip_preproc_defaults(&cfg);
    cfg.shortest_edge = 336;
    cr_assert_eq(clip_resize_size(&cfg, 1, 60000000, &h, &w, &err), PLM_E_LIMIT);
    cr_assert(strstr(err.msg, "would be resized to a side of 20160000000 pixels"), "%s", err.msg);
}

Test(preprocess, window_equals_full_resize)
{
    /* computing only the cropped window gives the same bytes as the whole resize */
    plm_image img;
    plm_error err;
    cr_assert_eq(img_load_file(FIX "images/rgb_odd.png", 0, &img, &err), PLM_OK);
    int ow = 61, oh = 29;
    uint8_t *full = malloc((size_t)ow * (size_t)oh * 3), *win = malloc(20 * 10 * 3);
    for (int f = CLIP_FILTER_BILINEAR; f <= CLIP_FILTER_BICUBIC; f++) {
        cr_assert_eq(clip_resize_u8(img.rgb, img.width, img.height, ow, oh, 0, ow, 0, oh, f, full,
                                    &err), PLM_OK, "%s", err.msg);
        cr_assert_eq(clip_resize_u8(img.rgb, img.width, img.height, ow, oh, 17, 20, 11, 10, f, win,
                                    &err), PLM_OK, "%s", err.msg);
        for (int y = 0; y < 10; y++)
            cr_assert_eq(memcmp(win + (size_t)y * 60, full + ((size_t)(y + 11) * (size_t)ow + 17) * 3,
                                60), 0, "row %d", y);
    }
    cr_assert_eq(clip_resize_u8(img.rgb, img.width, img.height, ow, oh, 50, 20, 0, 1, 3, win, &err),
                 PLM_E_ARG);
    free(full);
    free(win);
    img_free(&img);
}

Test(preprocess, constant_image_stays_constant)
{
    /* normalised weights: a flat image resizes to the same flat value, up or down */
    uint8_t *flat = malloc(37 * 23 * 3);
    for (int i = 0; i < 37 * 23; i++) {
        flat[i * 3] = 7;
        flat[i * 3 + 1] = 128;
        flat[i * 3 + 2] = 255;
    }
    uint8_t out[300 * 3];
    plm_error err;
    int sizes[][2] = {{10, 30}, {300, 1}, {5, 60}};
    for (int k = 0; k < 3; k++) {
        cr_assert_eq(clip_resize_u8(flat, 37, 23, sizes[k][0], sizes[k][1], 0, sizes[k][0], 0,
                                    1, CLIP_FILTER_BICUBIC, out, &err), PLM_OK);
        for (int x = 0; x < sizes[k][0]; x++)
            cr_assert(out[x * 3] == 7 && out[x * 3 + 1] == 128 && out[x * 3 + 2] == 255, "size %d",
                      k);
    }
    free(flat);
}

/* ---- config ------------------------------------------------------------------------------- */

Test(preprocess, loads_llava15_config)
{
    clip_preproc_config cfg;
    load_config("llava15", &cfg);
    cr_assert(cfg.do_resize && cfg.do_center_crop && cfg.do_rescale && cfg.do_normalize &&
              cfg.do_convert_rgb && !cfg.do_pad);
    cr_assert_eq(cfg.shortest_edge, 336);
    cr_assert(cfg.size_h == 0 && cfg.size_w == 0);
    cr_assert(cfg.crop_h == 336 && cfg.crop_w == 336);
    cr_assert_eq(cfg.resample, 3);
    cr_assert_eq(cfg.rescale_factor, 0.00392156862745098);
    cr_assert(cfg.mean[0] == 0.48145466 && cfg.mean[1] == 0.4578275 && cfg.mean[2] == 0.40821073);
    cr_assert(cfg.std[0] == 0.26862954 && cfg.std[1] == 0.26130258 && cfg.std[2] == 0.27577711);
    load_config("tiny_pad", &cfg);
    cr_assert(cfg.do_pad, "LlavaImageProcessor's do_pad is the pad to square");
    load_config("hw_pad", &cfg);
    cr_assert(cfg.shortest_edge == 0 && cfg.size_h == 40 && cfg.size_w == 24);
}

Test(preprocess, defaults_are_clip_processor_defaults)
{
    clip_preproc_config cfg;
    clip_preproc_defaults(&cfg);
    cr_assert(cfg.shortest_edge == 224 && cfg.crop_h == 224 && cfg.crop_w == 224);
    cr_assert(cfg.resample == 3 && cfg.rescale_factor == 1.0 / 255.0);
    cr_assert(cfg.do_resize && cfg.do_center_crop && cfg.do_rescale && cfg.do_normalize);
}

static const char *write_tmp(const char *name, const char *text)
{
    static char path[512];
    snprintf(path, sizeof path, PLM_BINARY_DIR "/test_preprocess_%s.json", name);
    FILE *f = fopen(path, "wb");
    cr_assert(f, "%s", path);
    fputs(text, f);
    fclose(f);
    return path;
}

Test(preprocess, config_forms)
{
    clip_preproc_config cfg;
    plm_error err;
    const char *p = write_tmp("ints", "{\"size\": 30, \"crop_size\": 28, \"image_mean\": 0.5,"
                                      " \"image_std\": [0.25], \"do_pad\": true}");
    cr_assert_eq(clip_preproc_load(p, &cfg, &err), PLM_OK, "%s", err.msg);
    cr_assert(cfg.shortest_edge == 30 && cfg.crop_h == 28 && cfg.crop_w == 28);
    cr_assert(cfg.mean[2] == 0.5 && cfg.std[1] == 0.25);
    cr_assert(!cfg.do_pad, "CLIPImageProcessor (the default type) has no pad to square");
    p = write_tmp("lists", "{\"size\": [40, 24], \"crop_size\": [20, 22], \"resample\": 1}");
    cr_assert_eq(clip_preproc_load(p, &cfg, &err), PLM_OK, "%s", err.msg);
    cr_assert(cfg.size_h == 40 && cfg.size_w == 24 && cfg.shortest_edge == 0);
    cr_assert(cfg.crop_h == 20 && cfg.crop_w == 22 && cfg.resample == 1);
    p = write_tmp("nested", "{\"image_processor\": {\"size\": {\"shortest_edge\": 12}}}");
    cr_assert_eq(clip_preproc_load(p, &cfg, &err), PLM_OK, "%s", err.msg);
    cr_assert_eq(cfg.shortest_edge, 12);
}

static void expect_config_error(const char *name, const char *json, plm_status want,
                                const char *needle)
{
    clip_preproc_config cfg;
    plm_error err = {{0}};
    const char *p = write_tmp(name, json);
    plm_status st = clip_preproc_load(p, &cfg, &err);
    cr_assert_eq(st, want, "%s: %s (%s)", name, plm_status_str(st), err.msg);
    cr_assert(strstr(err.msg, needle), "%s: message \"%s\" lacks \"%s\"", name, err.msg, needle);
    cr_assert(strstr(err.msg, "test_preprocess_"), "%s: message names the file: %s", name, err.msg);
    cr_assert_eq(cfg.shortest_edge, 224, "defaults after a failure");
}

Test(preprocess, config_errors)
{
    expect_config_error("longest", "{\"size\": {\"shortest_edge\": 10, \"longest_edge\": 20}}",
                        PLM_E_UNSUPPORTED, "size with longest_edge");
    expect_config_error("nearest", "{\"resample\": 0}", PLM_E_UNSUPPORTED,
                        "resample 0 (NEAREST) is not supported");
    expect_config_error("resample9", "{\"resample\": 9}", PLM_E_FORMAT, "resample is 9");
    expect_config_error("cropstr", "{\"crop_size\": \"big\"}", PLM_E_FORMAT,
                        "crop_size must be an integer, [height, width] or an object");
    expect_config_error("cropse", "{\"crop_size\": {\"shortest_edge\": 3}}", PLM_E_FORMAT,
                        "crop_size must have \"height\" and \"width\"");
    expect_config_error("zero", "{\"size\": {\"shortest_edge\": 0}}", PLM_E_FORMAT,
                        "size.shortest_edge is 0, expected 1..");
    expect_config_error("frac", "{\"crop_size\": {\"height\": 2.5, \"width\": 3}}", PLM_E_FORMAT,
                        "crop_size.height");
    expect_config_error("std0", "{\"image_std\": [0.2, 0, 0.2]}", PLM_E_FORMAT,
                        "image_std[1] is 0: a division by zero");
    expect_config_error("mean2", "{\"image_mean\": [0.2, 0.3]}", PLM_E_FORMAT,
                        "image_mean must be a number or a list of 3 numbers");
    expect_config_error("notobj", "[1, 2]", PLM_E_FORMAT, "expected a JSON object");
    expect_config_error("badjson", "{\"size\": ", PLM_E_FORMAT, "test_preprocess_badjson");
    expect_config_error("flag", "{\"do_resize\": \"yes\"}", PLM_E_FORMAT, "do_resize");

    clip_preproc_config cfg;
    plm_error err;
    cr_assert_neq(clip_preproc_load(PLM_BINARY_DIR "/no_such_preprocessor.json", &cfg, &err),
                  PLM_OK);
    cr_assert(strstr(err.msg, "no_such_preprocessor.json"), "%s", err.msg);
}

Test(preprocess, bad_arguments)
{
    clip_preproc_config cfg;
    clip_preproc_defaults(&cfg);
    plm_image none = {0, 0, NULL};
    float *px = (float *)&cfg;
    int h = 1, w = 1;
    plm_error err;
    cr_assert_eq(clip_preprocess(&cfg, &none, &px, &h, &w, &err), PLM_E_ARG);
    cr_assert_null(px);
    cr_assert(strstr(err.msg, "no image"), "%s", err.msg);
}
