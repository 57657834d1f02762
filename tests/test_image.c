/* Image decoding: every PNG variant of tests/fixtures/images against the pattern it was written
 * from (tests/ref/make_images.h) and against PIL's Image.open(...).convert("RGB") recorded by
 * tests/ref/preprocess_ref.py; JPEGs against PIL within a measured bound; malformed input. */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/npy.h"
#include "tests/ref/make_images.h"
#include "vision/image.h"

#define IMG_DIR PLM_SOURCE_DIR "/tests/fixtures/images/"
#define DEC_DIR PLM_SOURCE_DIR "/tests/fixtures/preprocess/decoded/"

/* stb_image against libjpeg-turbo (PIL 12.3) on the test JPEGs, in uint8 levels. Measured
 * (jpeg_close_to_pil logs it): max 3 levels (4:2:0, progressive), 2 (4:4:4), 1 (gray); mean
 * 0.08 levels at most; 1.4-6.7% of the values differ at all. */
#define JPEG_MAX_LEVEL_DIFF 4
#define JPEG_MEAN_LEVEL_DIFF 0.15

static uint8_t *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)n + 1);
    cr_assert(buf);
    cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static void stem_of(const char *file, char *stem, size_t n)
{
    snprintf(stem, n, "%s", file);
    char *dot = strrchr(stem, '.');
    if (dot) *dot = '\0';
}

/* PIL's decode of a fixture image, if recorded: packed RGB8 h x w (malloc'd) or NULL. */
static uint8_t *pil_decoded(const char *file, int *w, int *h)
{
    char stem[128], path[512];
    stem_of(file, stem, sizeof stem);
    snprintf(path, sizeof path, DEC_DIR "%s.npy", stem);
    FILE *f = fopen(path, "rb");
    if (f) {
        fclose(f);
        npy_array a;
        plm_error err;
        cr_assert_eq(npy_read(path, &a, &err), PLM_OK, "%s", err.msg);
        cr_assert(!a.is_float && a.ndim == 3 && a.shape[2] == 3, "%s: expected uint8 HxWx3", path);
        *h = (int)a.shape[0];
        *w = (int)a.shape[1];
        uint8_t *rgb = malloc(a.count);
        for (size_t i = 0; i < a.count; i++) rgb[i] = (uint8_t)a.i[i];
        npy_free(&a);
        return rgb;
    }
    snprintf(path, sizeof path, DEC_DIR "%s.png", stem);
    f = fopen(path, "rb");
    if (!f) return NULL;
    fclose(f);
    plm_image img;
    plm_error err;
    cr_assert_eq(img_load_file(path, 0, &img, &err), PLM_OK, "%s", err.msg);
    *w = img.width;
    *h = img.height;
    return img.rgb;
}

static void load_fixture(const char *file, plm_image *img)
{
    char path[512];
    plm_error err;
    snprintf(path, sizeof path, IMG_DIR "%s", file);
    cr_assert_eq(img_load_file(path, 0, img, &err), PLM_OK, "%s", err.msg);
}

Test(image, png_variants_match_their_pattern)
{
    int checked = 0;
    for (int i = 0; i < MK_NUM_IMAGES; i++) {
        const mk_spec *s = &mk_images[i];
        if (s->color_type == MK_JPEG) continue;
        plm_image img;
        load_fixture(s->file, &img);
        cr_assert_eq(img.width, s->width, "%s", s->file);
        cr_assert_eq(img.height, s->height, "%s", s->file);
        for (int y = 0; y < s->height; y++)
            for (int x = 0; x < s->width; x++) {
                uint8_t want[3];
                mk_expected_rgb(s, x, y, want);
                const uint8_t *got = img.rgb + ((size_t)y * (size_t)s->width + (size_t)x) * 3;
                for (int c = 0; c < 3; c++)
                    cr_assert_eq(got[c], want[c], "%s: pixel (%d,%d) channel %d is %d, expected %d",
                                 s->file, x, y, c, got[c], want[c]);
            }
        img_free(&img);
        checked++;
    }
    cr_assert_eq(checked, 23);
}

Test(image, png_variants_match_pil)
{
    /* The pattern's idea of PIL's conversion (clipping 16-bit gray, most significant byte
     * elsewhere, alpha and tRNS dropped) checked against PIL itself. */
    int checked = 0;
    for (int i = 0; i < MK_NUM_IMAGES; i++) {
        const mk_spec *s = &mk_images[i];
        if (s->color_type == MK_JPEG) continue;
        int w, h;
        uint8_t *ref = pil_decoded(s->file, &w, &h);
        if (!ref) continue; /* large RGB8 images: covered by the pattern test */
        plm_image img;
        load_fixture(s->file, &img);
        cr_assert(img.width == w && img.height == h, "%s: size", s->file);
        size_t n = (size_t)w * (size_t)h * 3;
        for (size_t k = 0; k < n; k++)
            cr_assert_eq(img.rgb[k], ref[k], "%s: byte %zu is %d, PIL gives %d", s->file, k,
                         img.rgb[k], ref[k]);
        img_free(&img);
        free(ref);
        checked++;
    }
    cr_assert_geq(checked, 18);
}

Test(image, gray16_clips_like_pil)
{
    /* PIL converts 16-bit gray ("I;16") to RGB with min(v, 255), not v >> 8 */
    const mk_spec *s = NULL;
    for (int i = 0; i < MK_NUM_IMAGES; i++)
        if (strcmp(mk_images[i].file, "gray16.png") == 0) s = &mk_images[i];
    cr_assert(s);
    plm_image img;
    load_fixture(s->file, &img);
    int below = 0, above = 0;
    for (int y = 0; y < s->height; y++)
        for (int x = 0; x < s->width; x++) {
            uint16_t v = mk_gray16(s, x, y);
            uint8_t got = img.rgb[((size_t)y * (size_t)s->width + (size_t)x) * 3];
            if (v <= 255) {
                cr_assert_eq(got, v);
                below++;
            } else {
                cr_assert_eq(got, 255);
                above++;
            }
        }
    cr_assert(below > 100 && above > 100, "the fixture should have both kinds (%d, %d)", below,
              above);
    img_free(&img);
}

Test(image, rgba_alpha_is_dropped_not_composited)
{
    /* rgba8.png is fully transparent on its left quarter; its colour must come through. */
    const mk_spec *s = NULL;
    for (int i = 0; i < MK_NUM_IMAGES; i++)
        if (strcmp(mk_images[i].file, "rgba8.png") == 0) s = &mk_images[i];
    cr_assert(s);
    cr_assert_eq(mk_sample16(s, 3, 5, 3), 0);
    plm_image img;
    load_fixture(s->file, &img);
    const uint8_t *p = img.rgb + ((size_t)5 * (size_t)s->width + 3) * 3;
    for (int c = 0; c < 3; c++) cr_assert_eq(p[c], mk_sample16(s, 3, 5, c) >> 8);
    img_free(&img);
}

Test(image, jpeg_close_to_pil)
{
    int checked = 0;
    for (int i = 0; i < MK_NUM_IMAGES; i++) {
        const mk_spec *s = &mk_images[i];
        if (s->color_type != MK_JPEG) continue;
        int w, h;
        uint8_t *ref = pil_decoded(s->file, &w, &h);
        cr_assert(ref, "%s: no PIL decode recorded", s->file);
        plm_image img;
        load_fixture(s->file, &img);
        cr_assert(img.width == w && img.height == h, "%s: size", s->file);
        size_t n = (size_t)w * (size_t)h * 3, ndiff = 0;
        int maxd = 0;
        double sum = 0;
        for (size_t k = 0; k < n; k++) {
            int d = abs((int)img.rgb[k] - (int)ref[k]);
            if (d > maxd) maxd = d;
            sum += d;
            ndiff += d != 0;
        }
        cr_log_info("%s: stb_image vs PIL (libjpeg-turbo): max %d levels, mean %.3f, %.1f%% of"
                    " values differ", s->file, maxd, sum / (double)n, 100.0 * (double)ndiff / (double)n);
        cr_expect_leq(maxd, JPEG_MAX_LEVEL_DIFF, "%s: max diff %d", s->file, maxd);
        cr_expect_leq(sum / (double)n, JPEG_MEAN_LEVEL_DIFF, "%s: mean diff", s->file);
        img_free(&img);
        free(ref);
        checked++;
    }
    cr_assert_eq(checked, 5);
}

/* ---- malformed input ---------------------------------------------------------------------- */

static uint32_t crc32_of(const uint8_t *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return c ^ 0xFFFFFFFFu;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* A PNG signature + IHDR claiming w x h (8-bit RGB), with a correct CRC, and nothing else. */
static size_t png_header(uint8_t *buf, uint32_t w, uint32_t h)
{
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
    memcpy(buf, sig, 8);
    put_be32(buf + 8, 13);
    memcpy(buf + 12, "IHDR", 4);
    put_be32(buf + 16, w);
    put_be32(buf + 20, h);
    buf[24] = 8;
    buf[25] = 2;
    buf[26] = buf[27] = buf[28] = 0;
    put_be32(buf + 29, crc32_of(buf + 12, 17));
    return 33;
}

/* Offset of the first IDAT chunk's length field. */
static size_t find_idat(const uint8_t *d, size_t len)
{
    size_t p = 8;
    while (p + 8 <= len) {
        uint32_t n = get_be32(d + p);
        if (memcmp(d + p + 4, "IDAT", 4) == 0) return p;
        p += 12 + n;
    }
    cr_assert_fail("no IDAT");
    return 0;
}

static void expect_fail(const void *data, size_t len, const char *name, uint64_t max_pixels,
                        plm_status want, const char *msg_prefix)
{
    plm_image img = {1, 1, (uint8_t *)"x"};
    plm_error err = {{0}};
    plm_status st = img_load_memory(data, len, name, max_pixels, &img, &err);
    cr_assert_eq(st, want, "%s: status %s, expected %s (%s)", name, plm_status_str(st),
                 plm_status_str(want), err.msg);
    cr_assert_null(img.rgb, "%s: no image on failure", name);
    cr_assert_eq(img.width, 0);
    cr_assert_eq(strncmp(err.msg, msg_prefix, strlen(msg_prefix)), 0,
                 "%s: message \"%s\" should start with \"%s\"", name, err.msg, msg_prefix);
}

Test(image, truncated_png)
{
    size_t len;
    uint8_t *d = read_all(IMG_DIR "rgb_odd.png", &len);
    expect_fail(d, len / 2, "cut.png", 0, PLM_E_FORMAT, "cut.png: truncated PNG (libpng: ");
    expect_fail(d, 20, "short.png", 0, PLM_E_FORMAT,
                "short.png: truncated PNG: 20 bytes, too short for the header");
    /* cut inside the IHDR's CRC */
    expect_fail(d, 31, "ihdr.png", 0, PLM_E_FORMAT, "ihdr.png: truncated PNG (libpng: ");
    free(d);
}

Test(image, corrupt_png)
{
    size_t len;
    uint8_t *d = read_all(IMG_DIR "rgb_odd.png", &len);
    size_t idat = find_idat(d, len);
    uint32_t n = get_be32(d + idat);
    /* a bad CRC on intact data */
    d[idat + 8 + n] ^= 0x55;
    expect_fail(d, len, "crc.png", 0, PLM_E_FORMAT, "crc.png: corrupt PNG (libpng: IDAT: CRC error)");
    d[idat + 8 + n] ^= 0x55;
    /* a flipped byte in the compressed data: inflating or unfiltering fails before the CRC */
    d[idat + 8 + n / 2] ^= 0x55;
    expect_fail(d, len, "flip.png", 0, PLM_E_FORMAT, "flip.png: corrupt PNG (libpng: ");
    /* the same damage with a correct CRC: zlib catches it */
    memset(d + idat + 8 + 2, 0xFF, n - 2);
    put_be32(d + idat + 8 + n, crc32_of(d + idat + 4, n + 4));
    expect_fail(d, len, "zlib.png", 0, PLM_E_FORMAT, "zlib.png: corrupt PNG (libpng: ");
    /* a first chunk that is not IHDR */
    memcpy(d + 12, "IHDX", 4);
    expect_fail(d, len, "ihdr.png", 0, PLM_E_FORMAT,
                "ihdr.png: corrupt PNG: the first chunk is not a 13-byte IHDR");
    free(d);
    /* an invalid colour type in IHDR */
    uint8_t hdr[64];
    size_t hl = png_header(hdr, 4, 4);
    hdr[25] = 5;
    put_be32(hdr + 29, crc32_of(hdr + 12, 17));
    expect_fail(hdr, hl, "ctype.png", 0, PLM_E_FORMAT, "ctype.png: ");
}

Test(image, zero_size_png)
{
    uint8_t hdr[64];
    size_t n = png_header(hdr, 0, 13);
    expect_fail(hdr, n, "z.png", 0, PLM_E_FORMAT, "z.png: image is 0x13 pixels: an empty image");
    n = png_header(hdr, 20, 0);
    expect_fail(hdr, n, "z.png", 0, PLM_E_FORMAT, "z.png: image is 20x0 pixels: an empty image");
}

Test(image, huge_png_refused_before_decoding)
{
    /* Only the 33-byte header exists: had libpng been asked to read on, it would have reported a
     * truncated file instead; and no 30 GB buffer is allocated (valgrind shows it too). */
    uint8_t hdr[64];
    size_t n = png_header(hdr, 100000, 100000);
    expect_fail(hdr, n, "cat.png", 0, PLM_E_LIMIT,
                "cat.png: image is 100000x100000 = 10000 megapixels, over the limit of 64 megapixels");
    /* a configurable limit, on a real image */
    size_t len;
    uint8_t *d = read_all(IMG_DIR "rgb_wide.png", &len);
    expect_fail(d, len, "wide.png", 100000, PLM_E_LIMIT,
                "wide.png: image is 500x300 = 150000 pixels, over the limit of 100000 pixels");
    plm_image img;
    plm_error err;
    cr_assert_eq(img_load_memory(d, len, "wide.png", 150000, &img, &err), PLM_OK, "%s", err.msg);
    img_free(&img);
    free(d);
}

/* A JPEG made of SOI, a baseline SOF0 for w x h with one component, and EOI. */
static size_t jpeg_header(uint8_t *b, unsigned w, unsigned h)
{
    static const uint8_t head[] = {0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x0B, 0x08};
    memcpy(b, head, sizeof head);
    size_t p = sizeof head;
    b[p++] = (uint8_t)(h >> 8);
    b[p++] = (uint8_t)h;
    b[p++] = (uint8_t)(w >> 8);
    b[p++] = (uint8_t)w;
    b[p++] = 1;    /* components */
    b[p++] = 1;    /* id */
    b[p++] = 0x11; /* sampling */
    b[p++] = 0;    /* quant table */
    b[p++] = 0xFF;
    b[p++] = 0xD9;
    return p;
}

Test(image, zero_size_and_huge_jpeg)
{
    uint8_t b[64];
    size_t n = jpeg_header(b, 64, 0);
    expect_fail(b, n, "z.jpg", 0, PLM_E_FORMAT, "z.jpg: image is 64x0 pixels: an empty image");
    n = jpeg_header(b, 65535, 65535);
    expect_fail(b, n, "big.jpg", 0, PLM_E_LIMIT,
                "big.jpg: image is 65535x65535 = 4294.8 megapixels, over the limit of 64 megapixels");
}

Test(image, truncated_and_corrupt_jpeg)
{
    size_t len;
    uint8_t *d = read_all(IMG_DIR "photo420.jpg", &len);
    expect_fail(d, len / 2, "cut.jpg", 0, PLM_E_FORMAT, "cut.jpg: truncated JPEG: the data ends at");
    expect_fail(d, len - 2, "noeoi.jpg", 0, PLM_E_FORMAT, "noeoi.jpg: truncated JPEG");
    expect_fail(d, 3, "three.jpg", 0, PLM_E_FORMAT, "three.jpg: corrupt JPEG: no start-of-image");
    /* a segment that does not start with a marker */
    uint8_t *e = malloc(len);
    memcpy(e, d, len);
    size_t second = 4 + (((size_t)e[4] << 8) | e[5]); /* the segment after APP0 */
    e[second] = 0x00;
    char want[128];
    snprintf(want, sizeof want, "marker.jpg: corrupt JPEG: expected a marker at byte %zu, found 0x00",
             second);
    expect_fail(e, len, "marker.jpg", 0, PLM_E_FORMAT, want);
    /* a frame header stb_image refuses (12-bit samples) */
    memcpy(e, d, len);
    for (size_t p = 2; p + 4 < len; p++)
        if (e[p] == 0xFF && e[p + 1] == 0xC0) {
            e[p + 4] = 12;
            break;
        }
    expect_fail(e, len, "bits.jpg", 0, PLM_E_FORMAT, "bits.jpg: corrupt JPEG (stb_image: ");
    /* a Huffman table of more than 256 codes (stb_image 2.27 would overrun its arrays) */
    uint8_t dht[4 + 2 + 17 + 2] = {0xFF, 0xD8, 0xFF, 0xC4, 0x00, 0x13, 0x00};
    memset(dht + 7, 0x20, 16);
    dht[23] = 0xFF;
    dht[24] = 0xD9;
    expect_fail(dht, sizeof dht, "dht.jpg", 0, PLM_E_FORMAT,
                "dht.jpg: corrupt JPEG: Huffman table at byte 6 has 512 codes");
    /* no frame header at all */
    static const uint8_t soi_eoi[] = {0xFF, 0xD8, 0xFF, 0xD9};
    expect_fail(soi_eoi, sizeof soi_eoi, "nosof.jpg", 0, PLM_E_FORMAT,
                "nosof.jpg: corrupt JPEG: no frame header (SOF)");
    free(e);
    free(d);
}

Test(image, unknown_format_and_empty)
{
    const char text[] = "hello, this is not an image";
    expect_fail(text, sizeof text, "notes.txt", 0, PLM_E_FORMAT,
                "notes.txt: unknown image format (expected PNG, JPEG, GIF, BMP, binary PNM, or TGA");
    expect_fail(text, 0, "empty.png", 0, PLM_E_FORMAT, "empty.png: empty file, not an image");
    /* PNG-looking but not quite */
    const uint8_t almost[] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x00, 0, 0, 0, 0};
    expect_fail(almost, sizeof almost, "almost.png", 0, PLM_E_FORMAT, "almost.png: unknown image");
}

Test(image, missing_file)
{
    plm_image img;
    plm_error err;
    cr_assert_eq(img_load_file(IMG_DIR "no_such_image.png", 0, &img, &err), PLM_E_IO);
    cr_assert(strstr(err.msg, "no_such_image.png: cannot open: "), "%s", err.msg);
    cr_assert_null(img.rgb);
}

Test(image, pnm_tga_bmp_through_stb)
{
    const uint8_t ppm[] = "P6\n2 1\n255\n\x01\x02\x03\xFA\xFB\xFC";
    plm_image img;
    plm_error err;
    cr_assert_eq(img_load_memory(ppm, sizeof ppm - 1, "two.ppm", 0, &img, &err), PLM_OK, "%s",
                 err.msg);
    cr_assert(img.width == 2 && img.height == 1);
    cr_assert_eq(memcmp(img.rgb, "\x01\x02\x03\xFA\xFB\xFC", 6), 0);
    img_free(&img);
    const uint8_t ppm0[] = "P6\n0 1\n255\n";
    expect_fail(ppm0, sizeof ppm0 - 1, "zero.ppm", 0, PLM_E_FORMAT,
                "zero.ppm: image is 0x1 pixels: an empty image");
    const uint8_t ppmcut[] = "P6\n2 1\n255\n\x01\x02";
    expect_fail(ppmcut, sizeof ppmcut - 1, "cut.ppm", 0, PLM_E_FORMAT,
                "cut.ppm: truncated PNM: 2 bytes of pixel data, 6 needed");
    const uint8_t ppmbad[] = "P6\nx y\n255\n";
    expect_fail(ppmbad, sizeof ppmbad - 1, "bad.ppm", 0, PLM_E_FORMAT,
                "bad.ppm: corrupt PNM: unreadable header");
    /* uncompressed true-colour TGA, 1x1, BGR: recognised by its name only */
    const uint8_t tga[] = {0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 24, 0x20, 30, 20, 10};
    cr_assert_eq(img_load_memory(tga, sizeof tga, "dot.tga", 0, &img, &err), PLM_OK, "%s", err.msg);
    cr_assert(img.rgb[0] == 10 && img.rgb[1] == 20 && img.rgb[2] == 30);
    img_free(&img);
    expect_fail(tga, sizeof tga, "dot.bin", 0, PLM_E_FORMAT, "dot.bin: unknown image format");
    /* 24-bit BMP, 1x1 (rows bottom-up, BGR, padded to 4 bytes) */
    const uint8_t bmp[58] = {'B', 'M', 58, 0, 0, 0, 0, 0, 0, 0, 54, 0, 0, 0,
                             40, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 24, 0, 0, 0, 0, 0,
                             4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                             10, 20, 30, 0};
    cr_assert_eq(img_load_memory(bmp, sizeof bmp, "dot.bmp", 0, &img, &err), PLM_OK, "%s", err.msg);
    cr_assert(img.width == 1 && img.height == 1);
    cr_assert(img.rgb[0] == 30 && img.rgb[1] == 20 && img.rgb[2] == 10);
    img_free(&img);
}

Test(image, from_rgb_copies_and_checks)
{
    const uint8_t px[6] = {1, 2, 3, 4, 5, 6};
    plm_image img;
    plm_error err;
    cr_assert_eq(img_from_rgb(px, 2, 1, 0, &img, &err), PLM_OK);
    cr_assert(img.rgb != px && memcmp(img.rgb, px, 6) == 0 && img.width == 2 && img.height == 1);
    img_free(&img);
    cr_assert_null(img.rgb);
    img_free(&img); /* twice is harmless */
    cr_assert_eq(img_from_rgb(px, 0, 1, 0, &img, &err), PLM_E_FORMAT);
    cr_assert(strstr(err.msg, "RGB buffer: image is 0x1 pixels: an empty image"), "%s", err.msg);
    cr_assert_eq(img_from_rgb(px, 3000, 3000, 1000000, &img, &err), PLM_E_LIMIT);
    cr_assert(strstr(err.msg, "3000x3000 = 9 megapixels, over the limit of 1 megapixels"), "%s",
              err.msg);
    cr_assert_eq(img_from_rgb(NULL, 2, 1, 0, &img, &err), PLM_E_ARG);
    cr_assert_eq(img_from_rgb(px, -2, 1, 0, &img, &err), PLM_E_ARG);
}
