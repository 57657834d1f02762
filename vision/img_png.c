/* PNG through libpng, converted to RGB8 exactly as PIL's Image.open(...).convert("RGB") does,
 * since that is what transformers' processors see (convert_to_rgb in image_transforms):
 *
 * - palette: looked up to RGB; tRNS alpha is dropped ("P" -> "RGB" ignores transparency).
 * - gray 1/2/4 bits: scaled to 8 bits by bit replication (PIL's "L;2"/"L;4"/"1" unpackers and
 *   libpng's png_set_expand_gray_1_2_4_to_8 agree: 2-bit v -> v*0x55, 1-bit -> 0/255).
 * - gray 16 bits: PIL opens it as mode "I;16" and converts to RGB by CLIPPING, not scaling:
 *   I16_RGB in Pillow's Convert.c gives min(v, 255). We do the same, by hand.
 * - every other 16-bit type (RGB, RGBA, gray+alpha) is unpacked by PIL with the "...;16B"
 *   rawmodes, which keep the most significant byte: the same as png_set_strip_16.
 * - alpha (RGBA, gray+alpha, tRNS) is dropped, never composited.
 * - no gamma, sBIT or colour-profile correction (PIL applies none).
 * - interlaced images go through png_set_interlace_handling + png_read_image.
 * - like PIL, a file cut after the image data (missing IEND) still decodes: png_read_end is not
 *   called. A file cut inside the image data is refused as truncated.
 *
 * Error handling: libpng reports errors by longjmp. Everything that must be freed on that path
 * lives in a png_job owned by img_png_decode, which does not call setjmp itself; the function
 * that does (png_run) keeps no state of its own across the jump. */
#include "vision/image.h"

#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct png_job {
    const uint8_t *data;
    size_t len, pos;
    int truncated;   /* the read callback ran past the end of the data */
    int nomem;       /* our own allocation failed */
    char msg[200];   /* libpng's message */
    png_structp png;
    png_infop info;
    uint8_t *rgb;    /* output, width*height*3 */
    uint8_t *buf;    /* one row, or the whole image when interlaced */
    png_bytep *rows;
    uint32_t width, height;
} png_job;

static void png_read_cb(png_structp png, png_bytep out, size_t n)
{
    png_job *job = png_get_io_ptr(png);
    if (n > job->len - job->pos) {
        job->truncated = 1;
        png_error(png, "unexpected end of data");
    }
    memcpy(out, job->data + job->pos, n);
    job->pos += n;
}

static void png_error_cb(png_structp png, png_const_charp msg)
{
    png_job *job = png_get_error_ptr(png);
    snprintf(job->msg, sizeof job->msg, "%s", msg ? msg : "unknown error");
    png_longjmp(png, 1);
}

static void png_warning_cb(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg; /* the library never prints; warnings (bad ancillary CRCs, ...) are ignored */
}

/* One decoded row (after libpng's transforms) to RGB8. */
static void row_to_rgb(const uint8_t *in, uint8_t *out, uint32_t w, int channels, int depth,
                       int clip16_gray)
{
    if (depth == 8) {
        for (uint32_t x = 0; x < w; x++, in += channels, out += 3) {
            if (channels <= 2) {
                out[0] = out[1] = out[2] = in[0];
            } else {
                out[0] = in[0];
                out[1] = in[1];
                out[2] = in[2];
            }
        }
        return;
    }
    /* 16 bits, big-endian samples */
    for (uint32_t x = 0; x < w; x++, in += 2 * channels, out += 3) {
        if (channels == 1 && clip16_gray) {
            unsigned v = ((unsigned)in[0] << 8) | in[1];
            out[0] = out[1] = out[2] = (uint8_t)(v > 255 ? 255 : v);
        } else if (channels <= 2) {
            out[0] = out[1] = out[2] = in[0];
        } else {
            out[0] = in[0];
            out[1] = in[2];
            out[2] = in[4];
        }
    }
}

/* Returns 0 after a libpng error (job->msg set) or our own failure (job->nomem / job->msg). */
static int png_run(png_job *job)
{
    if (setjmp(png_jmpbuf(job->png))) return 0;

    png_set_read_fn(job->png, job, png_read_cb);
    /* Our own limit (checked before libpng runs) is the one that applies. */
    png_set_user_limits(job->png, 0x7fffffffu, 0x7fffffffu);
    png_read_info(job->png, job->info);

    png_uint_32 w, h;
    int depth, ctype, ilace;
    png_get_IHDR(job->png, job->info, &w, &h, &depth, &ctype, &ilace, NULL, NULL);
    if (w != job->width || h != job->height) {
        snprintf(job->msg, sizeof job->msg, "IHDR changed size");
        return 0;
    }
    if (ctype == PNG_COLOR_TYPE_PALETTE)
        png_set_palette_to_rgb(job->png);
    else if (ctype == PNG_COLOR_TYPE_GRAY && depth < 8)
        png_set_expand_gray_1_2_4_to_8(job->png);
    int passes = png_set_interlace_handling(job->png);
    png_read_update_info(job->png, job->info);

    int channels = png_get_channels(job->png, job->info);
    int odepth = png_get_bit_depth(job->png, job->info);
    size_t rowbytes = png_get_rowbytes(job->png, job->info);
    if (channels < 1 || channels > 4 || (odepth != 8 && odepth != 16) ||
        rowbytes != (size_t)w * (size_t)channels * (size_t)(odepth / 8)) {
        snprintf(job->msg, sizeof job->msg, "unexpected row layout (%d channels of %d bits)",
                 channels, odepth);
        return 0;
    }
    int clip16 = (ctype == PNG_COLOR_TYPE_GRAY && odepth == 16);

    /* w*h <= max_pixels was checked, so w*h*3 and rowbytes*h fit a size_t on 64-bit hosts;
     * check anyway for 32-bit ones. */
    size_t npix, nrgb, nbuf;
    if (!plm_mul_ok(w, h, &npix) || !plm_mul_ok(npix, 3, &nrgb) ||
        !plm_mul_ok(rowbytes, passes > 1 ? h : 1, &nbuf)) {
        snprintf(job->msg, sizeof job->msg, "%ux%u image does not fit in memory", (unsigned)w,
                 (unsigned)h);
        job->nomem = 1;
        return 0;
    }
    job->rgb = malloc(nrgb);
    job->buf = malloc(nbuf);
    if (passes > 1) job->rows = malloc(sizeof(png_bytep) * h);
    if (!job->rgb || !job->buf || (passes > 1 && !job->rows)) {
        job->nomem = 1;
        return 0;
    }
    if (passes > 1) {
        for (png_uint_32 y = 0; y < h; y++) job->rows[y] = job->buf + (size_t)y * rowbytes;
        png_read_image(job->png, job->rows);
        for (png_uint_32 y = 0; y < h; y++)
            row_to_rgb(job->rows[y], job->rgb + (size_t)y * w * 3, w, channels, odepth, clip16);
    } else {
        for (png_uint_32 y = 0; y < h; y++) {
            png_read_row(job->png, job->buf, NULL);
            row_to_rgb(job->buf, job->rgb + (size_t)y * w * 3, w, channels, odepth, clip16);
        }
    }
    return 1;
}

static uint32_t be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

plm_status img_png_decode(const uint8_t *data, size_t len, const char *name, uint64_t max_pixels,
                          plm_image *out, plm_error *err)
{
    out->width = out->height = 0;
    out->rgb = NULL;
    /* The size comes from IHDR, which the format puts first: refuse empty or oversized images
     * from these 16 bytes, before libpng allocates anything for them. */
    if (len < 8 + 8 + 13)
        return plm_fail(err, PLM_E_FORMAT, "%s: truncated PNG: %zu bytes, too short for the"
                        " header", name, len);
    if (memcmp(data + 12, "IHDR", 4) != 0 || be32(data + 8) != 13)
        return plm_fail(err, PLM_E_FORMAT, "%s: corrupt PNG: the first chunk is not a 13-byte"
                        " IHDR", name);
    uint32_t w = be32(data + 16), h = be32(data + 20);
    PLM_TRY(img_check_size(name, w, h, max_pixels, err));

    png_job job;
    memset(&job, 0, sizeof job);
    job.data = data;
    job.len = len;
    job.width = w;
    job.height = h;
    job.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &job, png_error_cb, png_warning_cb);
    if (job.png) job.info = png_create_info_struct(job.png);
    if (!job.png || !job.info) {
        png_destroy_read_struct(job.png ? &job.png : NULL, NULL, NULL);
        return plm_fail(err, PLM_E_NOMEM, "%s: out of memory starting libpng", name);
    }

    int ok = png_run(&job);
    png_destroy_read_struct(&job.png, &job.info, NULL);
    free(job.buf);
    free(job.rows);
    if (!ok) {
        free(job.rgb);
        if (job.nomem || strstr(job.msg, "ut of memory"))
            return plm_fail(err, PLM_E_NOMEM, "%s: out of memory decoding a %ux%u PNG%s%s", name,
                            (unsigned)w, (unsigned)h, job.msg[0] ? ": " : "", job.msg);
        if (job.truncated)
            return plm_fail(err, PLM_E_FORMAT, "%s: truncated PNG (libpng: %s)", name, job.msg);
        return plm_fail(err, PLM_E_FORMAT, "%s: corrupt PNG (libpng: %s)", name, job.msg);
    }
    out->rgb = job.rgb;
    out->width = (int)w;
    out->height = (int)h;
    return PLM_OK;
}
