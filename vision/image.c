/* Image decoding entry points: read the bytes, recognise the format by its signature, check the
 * size against the pixel limit before any pixel buffer exists, hand over to libpng (img_png.c)
 * or stb_image (img_stb.c).
 *
 * The reference is what transformers gets for an image a user opens with PIL:
 * PIL.Image.open(path) and then convert_to_rgb (transformers.image_transforms), which is plain
 * Image.convert("RGB"). That conversion drops alpha; it does not composite onto a background.
 * We drop it too. The PNG specifics (palette, 16-bit, tRNS) are in img_png.c. */
#include "vision/image.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Files larger than this are refused before reading: no image within the pixel limit needs it. */
#define IMG_MAX_FILE_BYTES ((size_t)1 << 31)

static void fmt_megapixels(char *buf, size_t n, uint64_t px)
{
    if (px % 1000000 == 0)
        snprintf(buf, n, "%" PRIu64, px / 1000000);
    else
        snprintf(buf, n, "%.1f", (double)px / 1e6);
}

plm_status img_check_size(const char *name, uint64_t width, uint64_t height, uint64_t max_pixels,
                          plm_error *err)
{
    if (max_pixels == 0) max_pixels = PLM_DEFAULT_MAX_PIXELS;
    if (width == 0 || height == 0)
        return plm_fail(err, PLM_E_FORMAT, "%s: image is %" PRIu64 "x%" PRIu64
                        " pixels: an empty image", name, width, height);
    /* Callers pass sizes read from 32-bit (PNG, stb) or 16-bit (JPEG) fields. */
    if (width > UINT32_MAX || height > UINT32_MAX || width * height > max_pixels) {
        char have[32], limit[32];
        /* megapixels, unless the limit is below one */
        const char *unit = max_pixels < 1000000 ? "pixels" : "megapixels";
        if (width > UINT32_MAX || height > UINT32_MAX)
            snprintf(have, sizeof have, "more than 4e18");
        else if (max_pixels < 1000000)
            snprintf(have, sizeof have, "%" PRIu64, width * height);
        else
            fmt_megapixels(have, sizeof have, width * height);
        if (max_pixels < 1000000)
            snprintf(limit, sizeof limit, "%" PRIu64, max_pixels);
        else
            fmt_megapixels(limit, sizeof limit, max_pixels);
        return plm_fail(err, PLM_E_LIMIT, "%s: image is %" PRIu64 "x%" PRIu64
                        " = %s %s, over the limit of %s %s", name, width, height, have, unit,
                        limit, unit);
    }
    return PLM_OK;
}

static int has_suffix_ci(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcasecmp(s + n - m, suffix) == 0;
}

/* ---- JPEG marker walk ----------------------------------------------------------------------- */

/* Why our own walk before stb_image: stb decodes a truncated JPEG without complaint (the missing
 * scan data reads as zeros), while PIL refuses it ("image file is truncated"); and stb's messages
 * for a zero-size frame are terse. The walk reads only segment headers. */
plm_status img_jpeg_scan(const uint8_t *d, size_t len, const char *name, uint32_t *width,
                         uint32_t *height, plm_error *err)
{
    int have_frame = 0;
    *width = *height = 0;
    if (len < 4 || d[0] != 0xFF || d[1] != 0xD8)
        return plm_fail(err, PLM_E_FORMAT, "%s: corrupt JPEG: no start-of-image marker", name);
    size_t p = 2;
    for (;;) {
        /* Markers may be preceded by any number of 0xFF fill bytes. */
        if (p >= len) goto truncated;
        if (d[p] != 0xFF)
            return plm_fail(err, PLM_E_FORMAT, "%s: corrupt JPEG: expected a marker at byte %zu,"
                            " found 0x%02X", name, p, d[p]);
        while (p < len && d[p] == 0xFF) p++;
        if (p >= len) goto truncated;
        uint8_t m = d[p++];
        if (m == 0xD9) { /* EOI */
            if (!have_frame)
                return plm_fail(err, PLM_E_FORMAT, "%s: corrupt JPEG: no frame header (SOF)",
                                name);
            return PLM_OK;
        }
        if (m == 0x01 || (m >= 0xD0 && m <= 0xD7)) continue; /* TEM, RSTn: no length */
        if (p + 2 > len) goto truncated;
        size_t seglen = ((size_t)d[p] << 8) | d[p + 1];
        if (seglen < 2)
            return plm_fail(err, PLM_E_FORMAT, "%s: corrupt JPEG: segment 0xFF%02X at byte %zu"
                            " has length %zu", name, m, p - 2, seglen);
        if (p + seglen > len) goto truncated;
        if (m == 0xC4) {
            /* Huffman tables: stb_image (2.27, as Debian ships it) does not check that a table
             * has at most 256 codes before building it, and writes past its arrays if not. */
            size_t q = p + 2, end = p + seglen;
            while (q < end) {
                if (q + 17 > end || (d[q] >> 4) > 1 || (d[q] & 15) > 3)
                    return plm_fail(err, PLM_E_FORMAT, "%s: corrupt JPEG: bad Huffman table"
                                    " header at byte %zu", name, q);
                size_t n = 0;
                for (int i = 1; i <= 16; i++) n += d[q + (size_t)i];
                if (n > 256 || q + 17 + n > end)
                    return plm_fail(err, PLM_E_FORMAT, "%s: corrupt JPEG: Huffman table at byte"
                                    " %zu has %zu codes", name, q, n);
                q += 17 + n;
            }
        }
        /* SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC). */
        if (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC) {
            if (seglen < 8)
                return plm_fail(err, PLM_E_FORMAT, "%s: corrupt JPEG: frame header of %zu bytes",
                                name, seglen);
            *height = ((uint32_t)d[p + 3] << 8) | d[p + 4];
            *width = ((uint32_t)d[p + 5] << 8) | d[p + 6];
            have_frame = 1;
        }
        p += seglen;
        if (m == 0xDA) {
            /* Entropy-coded data runs to the next marker that is neither a stuffed 0xFF00 nor a
             * restart marker. */
            for (;;) {
                while (p < len && d[p] != 0xFF) p++;
                if (p + 1 >= len) goto truncated;
                uint8_t n = d[p + 1];
                if (n == 0x00 || (n >= 0xD0 && n <= 0xD7) || n == 0xFF) {
                    p += (n == 0xFF) ? 1 : 2;
                    continue;
                }
                break;
            }
        }
    }
truncated:
    return plm_fail(err, PLM_E_FORMAT, "%s: truncated JPEG: the data ends at byte %zu before the"
                    " end-of-image marker", name, len);
}

/* ---- binary PNM header ---------------------------------------------------------------------- */

/* stb_image pads a binary PNM whose pixel data is cut short with zeros; PIL refuses it. Read the
 * header (P5/P6, width, height, maxval, with # comments) to check the data is all there. */
static int pnm_number(const uint8_t *d, size_t len, size_t *p, uint64_t *out)
{
    for (;;) {
        while (*p < len && (d[*p] == ' ' || d[*p] == '\t' || d[*p] == '\n' || d[*p] == '\r' ||
                            d[*p] == '\v' || d[*p] == '\f'))
            (*p)++;
        if (*p < len && d[*p] == '#') {
            while (*p < len && d[*p] != '\n' && d[*p] != '\r') (*p)++;
            continue;
        }
        break;
    }
    if (*p >= len || d[*p] < '0' || d[*p] > '9') return 0;
    uint64_t v = 0;
    while (*p < len && d[*p] >= '0' && d[*p] <= '9') {
        if (v > 1000000000) return 0;
        v = v * 10 + (uint64_t)(d[*p] - '0');
        (*p)++;
    }
    *out = v;
    return 1;
}

static plm_status pnm_check(const uint8_t *d, size_t len, const char *name, uint64_t max_pixels,
                            plm_error *err)
{
    size_t p = 2;
    uint64_t w, h, maxval;
    if (!pnm_number(d, len, &p, &w) || !pnm_number(d, len, &p, &h) ||
        !pnm_number(d, len, &p, &maxval) || p >= len)
        return plm_fail(err, PLM_E_FORMAT, "%s: corrupt PNM: unreadable header", name);
    PLM_TRY(img_check_size(name, w, h, max_pixels, err));
    if (maxval == 0 || maxval > 65535)
        return plm_fail(err, PLM_E_FORMAT, "%s: corrupt PNM: maxval %" PRIu64, name, maxval);
    /* stb_image 2.27 takes 16-bit samples in the host's byte order (the low byte of each
     * big-endian sample on x86), and for P5 widens them with its 8-bit routine, reading past
     * its buffer (found by tests/fuzz/fuzz_image.c). */
    if (maxval > 255)
        return plm_fail(err, PLM_E_UNSUPPORTED, "%s: 16-bit PNM (maxval %" PRIu64 ") is not "
                        "supported", name, maxval);
    p++; /* the single whitespace before the data */
    uint64_t need = w * h * (d[1] == '6' ? 3u : 1u);
    if (len - p < need)
        return plm_fail(err, PLM_E_FORMAT, "%s: truncated PNM: %zu bytes of pixel data, %" PRIu64
                        " needed", name, len - p, need);
    return PLM_OK;
}

/* ---- entry points --------------------------------------------------------------------------- */

plm_status img_load_memory(const void *data, size_t len, const char *name, uint64_t max_pixels,
                           plm_image *out, plm_error *err)
{
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
    const uint8_t *d = data;
    if (!out) return plm_fail(err, PLM_E_ARG, "img_load_memory: out is NULL");
    out->width = out->height = 0;
    out->rgb = NULL;
    if (!name) name = "<memory>";
    if (!d || len == 0) return plm_fail(err, PLM_E_FORMAT, "%s: empty file, not an image", name);

    if (len >= 8 && memcmp(d, png_sig, 8) == 0)
        return img_png_decode(d, len, name, max_pixels, out, err);
    if (len >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF) {
        uint32_t w, h;
        PLM_TRY(img_jpeg_scan(d, len, name, &w, &h, err));
        PLM_TRY(img_check_size(name, w, h, max_pixels, err));
        return img_stb_decode(d, len, name, "JPEG", max_pixels, out, err);
    }
    if (len >= 6 && (memcmp(d, "GIF87a", 6) == 0 || memcmp(d, "GIF89a", 6) == 0))
        return img_stb_decode(d, len, name, "GIF", max_pixels, out, err);
    if (len >= 2 && d[0] == 'B' && d[1] == 'M')
        return img_stb_decode(d, len, name, "BMP", max_pixels, out, err);
    if (len >= 2 && d[0] == 'P' && (d[1] == '5' || d[1] == '6')) {
        PLM_TRY(pnm_check(d, len, name, max_pixels, err));
        return img_stb_decode(d, len, name, "PNM", max_pixels, out, err);
    }
    /* TGA has no signature; trust the name rather than guess at arbitrary bytes. stb_image
     * sniffs the format again, though, and takes 0xFF 0xFF 0xD8 for a JPEG (fill bytes before
     * the SOI), which would skip the marker walk above; a colour-map type of 0 or 1 (byte 1)
     * is what stb's TGA test wants and rules that out (found by tests/fuzz/fuzz_image.c). */
    if (has_suffix_ci(name, ".tga")) {
        if (len < 18 || d[1] > 1)
            return plm_fail(err, PLM_E_FORMAT, "%s: corrupt TGA: bad header", name);
        return img_stb_decode(d, len, name, "TGA", max_pixels, out, err);
    }
    return plm_fail(err, PLM_E_FORMAT, "%s: unknown image format (expected PNG, JPEG, GIF, BMP,"
                    " binary PNM, or TGA by its .tga name)", name);
}

plm_status img_load_file(const char *path, uint64_t max_pixels, plm_image *out, plm_error *err)
{
    if (!out) return plm_fail(err, PLM_E_ARG, "img_load_file: out is NULL");
    out->width = out->height = 0;
    out->rgb = NULL;
    if (!path) return plm_fail(err, PLM_E_ARG, "img_load_file: path is NULL");
    FILE *f = fopen(path, "rb");
    if (!f) return plm_fail(err, PLM_E_IO, "%s: cannot open: %s", path, strerror(errno));
    long size = -1;
    if (fseek(f, 0, SEEK_END) == 0) size = ftell(f);
    if (size < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return plm_fail(err, PLM_E_IO, "%s: cannot determine the file size", path);
    }
    if ((unsigned long)size > IMG_MAX_FILE_BYTES) {
        fclose(f);
        return plm_fail(err, PLM_E_LIMIT, "%s: file is %ld bytes, larger than any image prunelm"
                        " reads (2 GiB)", path, size);
    }
    uint8_t *buf = malloc(size ? (size_t)size : 1);
    if (!buf) {
        fclose(f);
        return plm_fail(err, PLM_E_NOMEM, "%s: out of memory reading %ld bytes", path, size);
    }
    size_t got = fread(buf, 1, (size_t)size, f);
    int rerr = ferror(f);
    fclose(f);
    if (rerr || got != (size_t)size) {
        free(buf);
        return plm_fail(err, PLM_E_IO, "%s: read error after %zu of %ld bytes", path, got, size);
    }
    plm_status st = img_load_memory(buf, got, path, max_pixels, out, err);
    free(buf);
    return st;
}

plm_status img_from_rgb(const uint8_t *rgb, int width, int height, uint64_t max_pixels,
                        plm_image *out, plm_error *err)
{
    if (!out) return plm_fail(err, PLM_E_ARG, "img_from_rgb: out is NULL");
    out->width = out->height = 0;
    out->rgb = NULL;
    if (width < 0 || height < 0)
        return plm_fail(err, PLM_E_ARG, "img_from_rgb: negative size %dx%d", width, height);
    PLM_TRY(img_check_size("RGB buffer", (uint64_t)width, (uint64_t)height, max_pixels, err));
    if (!rgb) return plm_fail(err, PLM_E_ARG, "img_from_rgb: rgb is NULL");
    size_t n;
    if (!plm_mul_ok((size_t)width, (size_t)height, &n) || !plm_mul_ok(n, 3, &n))
        return plm_fail(err, PLM_E_LIMIT, "img_from_rgb: %dx%d overflows size_t", width, height);
    out->rgb = malloc(n);
    if (!out->rgb) return plm_fail(err, PLM_E_NOMEM, "img_from_rgb: out of memory (%zu bytes)", n);
    memcpy(out->rgb, rgb, n);
    out->width = width;
    out->height = height;
    return PLM_OK;
}

void img_free(plm_image *img)
{
    if (!img) return;
    free(img->rgb);
    img->rgb = NULL;
    img->width = img->height = 0;
}
