/* Writes the test images listed in make_images.h into a folder (tests/fixtures/images/):
 * PNGs of every colour type and bit depth through libpng, JPEGs through libjpeg(-turbo).
 * The output is deterministic for a given libpng/zlib/libjpeg; the committed files are the
 * reference, the tests recompute the PNG pixels from the pattern, not from this program.
 *
 *   cc -std=c11 -O2 -o /tmp/make_images tests/ref/make_images.c -lpng -ljpeg
 *   /tmp/make_images tests/fixtures/images
 */
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

#include "make_images.h"

static int write_png(const mk_spec *s, const char *path)
{
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    if (setjmp(png_jmpbuf(png))) {
        fclose(f);
        return 0;
    }
    png_init_io(png, f);
    png_set_compression_level(png, 9);
    png_set_IHDR(png, info, (png_uint_32)s->width, (png_uint_32)s->height, s->depth,
                 s->color_type, s->interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (s->color_type == 3) {
        png_color pal[256];
        png_byte alpha[256];
        for (int i = 0; i < s->colors; i++) {
            uint8_t rgb[3];
            mk_palette_color(s, (unsigned)i, rgb);
            pal[i].red = rgb[0];
            pal[i].green = rgb[1];
            pal[i].blue = rgb[2];
            alpha[i] = mk_palette_alpha(s, (unsigned)i);
        }
        png_set_PLTE(png, info, pal, s->colors);
        if (s->trns) png_set_tRNS(png, info, alpha, s->colors / 4, NULL);
    } else if (s->trns) {
        png_color_16 tc;
        memset(&tc, 0, sizeof tc);
        /* the colour of pixel (1, 1): transparent for PIL's RGBA, kept by convert("RGB") */
        if (s->color_type == 0) {
            tc.gray = s->depth == 16 ? mk_gray16(s, 1, 1) : (png_uint_16)mk_gray_low(s, 1, 1);
        } else {
            tc.red = (png_uint_16)(mk_sample16(s, 1, 1, 0) >> (16 - s->depth));
            tc.green = (png_uint_16)(mk_sample16(s, 1, 1, 1) >> (16 - s->depth));
            tc.blue = (png_uint_16)(mk_sample16(s, 1, 1, 2) >> (16 - s->depth));
        }
        png_set_tRNS(png, info, NULL, 0, &tc);
    }
    png_write_info(png, info);
    if (s->depth < 8) png_set_packing(png);

    int ch = s->color_type == 0 ? 1 : s->color_type == 2 ? 3 : s->color_type == 3 ? 1
           : s->color_type == 4 ? 2 : 4;
    int bpp = ch * (s->depth == 16 ? 2 : 1);
    png_bytep img = calloc((size_t)s->width * (size_t)s->height, (size_t)bpp);
    png_bytepp rows = malloc(sizeof(png_bytep) * (size_t)s->height);
    for (int y = 0; y < s->height; y++) {
        png_bytep r = img + (size_t)y * (size_t)s->width * (size_t)bpp;
        rows[y] = r;
        for (int x = 0; x < s->width; x++) {
            png_bytep p = r + (size_t)x * (size_t)bpp;
            for (int c = 0; c < ch; c++) {
                unsigned v;
                if (s->color_type == 3) {
                    v = mk_palette_index(s, x, y);
                } else if (s->color_type == 0) {
                    v = s->depth == 16 ? mk_gray16(s, x, y) : mk_gray_low(s, x, y);
                } else {
                    int sc = (s->color_type == 4 && c == 1) ? 3 : c;
                    v = mk_sample16(s, x, y, sc) >> (16 - s->depth);
                }
                if (s->depth == 16) {
                    p[2 * c] = (png_byte)(v >> 8);
                    p[2 * c + 1] = (png_byte)v;
                } else {
                    p[c] = (png_byte)v; /* packing to 1/2/4 bits by png_set_packing */
                }
            }
        }
    }
    png_write_image(png, rows);
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    free(rows);
    free(img);
    return fclose(f) == 0;
}

static int write_jpeg(const mk_spec *s, const char *path)
{
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    struct jpeg_compress_struct cinfo;
    struct jpeg_error_mgr jerr;
    cinfo.err = jpeg_std_error(&jerr);
    jpeg_create_compress(&cinfo);
    jpeg_stdio_dest(&cinfo, f);
    cinfo.image_width = (JDIMENSION)s->width;
    cinfo.image_height = (JDIMENSION)s->height;
    cinfo.input_components = s->gray ? 1 : 3;
    cinfo.in_color_space = s->gray ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_set_defaults(&cinfo);
    jpeg_set_quality(&cinfo, s->quality, TRUE);
    if (s->jpeg444 && !s->gray) {
        cinfo.comp_info[0].h_samp_factor = 1;
        cinfo.comp_info[0].v_samp_factor = 1;
    }
    if (s->progressive) jpeg_simple_progression(&cinfo);
    jpeg_start_compress(&cinfo, TRUE);
    int ch = s->gray ? 1 : 3;
    JSAMPLE *row = malloc((size_t)s->width * (size_t)ch);
    while (cinfo.next_scanline < cinfo.image_height) {
        int y = (int)cinfo.next_scanline;
        for (int x = 0; x < s->width; x++)
            for (int c = 0; c < ch; c++)
                row[x * ch + c] = (JSAMPLE)(mk_sample16(s, x, y, c) >> 8);
        JSAMPROW rp = row;
        jpeg_write_scanlines(&cinfo, &rp, 1);
    }
    jpeg_finish_compress(&cinfo);
    jpeg_destroy_compress(&cinfo);
    free(row);
    return fclose(f) == 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s OUTDIR\n", argv[0]);
        return 2;
    }
    for (int i = 0; i < MK_NUM_IMAGES; i++) {
        const mk_spec *s = &mk_images[i];
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", argv[1], s->file);
        int ok = s->color_type == MK_JPEG ? write_jpeg(s, path) : write_png(s, path);
        if (!ok) {
            fprintf(stderr, "failed to write %s\n", path);
            return 1;
        }
    }
    return 0;
}
