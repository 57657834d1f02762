/* PNG output (the pruning mask view), written atomically. */
#include <errno.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vision/image.h"

/* libpng reports errors by longjmp; everything the jump crosses is volatile or static. */
static int write_rows(FILE *f, const uint8_t *rgb, int w, int h, char *why, size_t why_n)
{
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_write_struct(&png, &info);
        snprintf(why, why_n, "out of memory");
        return 0;
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        snprintf(why, why_n, "libpng failed to write");
        return 0;
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < h; y++) png_write_row(png, (png_const_bytep)(rgb + (size_t)y * w * 3));
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    return 1;
}

plm_status img_write_png(const char *path, const uint8_t *rgb, int width, int height,
                         plm_error *err)
{
    if (width <= 0 || height <= 0)
        return plm_fail(err, PLM_E_ARG, "%s: nothing to write (%dx%d)", path, width, height);
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) return plm_fail(err, PLM_E_IO, "%s: cannot write: %s", path, strerror(errno));
    char why[128] = "";
    int ok = write_rows(f, rgb, width, height, why, sizeof why);
    if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
        ok = 0;
        snprintf(why, sizeof why, "%s", strerror(errno));
    }
    if (fclose(f) != 0 && ok) {
        ok = 0;
        snprintf(why, sizeof why, "%s", strerror(errno));
    }
    if (ok && rename(tmp, path) != 0) {
        ok = 0;
        snprintf(why, sizeof why, "%s", strerror(errno));
    }
    if (!ok) {
        remove(tmp);
        return plm_fail(err, PLM_E_IO, "%s: cannot write: %s", path, why);
    }
    return PLM_OK;
}

void img_patch_overlay(uint8_t *rgb, int size, int patch, const int32_t *kept, size_t n_kept)
{
    const int g = size / patch;
    size_t j = 0;
    for (int p = 0; p < g * g; p++) {
        int is_kept = j < n_kept && kept[j] == p;
        if (is_kept) j++;
        int py = p / g * patch, px = p % g * patch;
        for (int y = 0; y < patch; y++)
            for (int x = 0; x < patch; x++) {
                uint8_t *c = rgb + ((size_t)(py + y) * size + px + x) * 3;
                if (!is_kept) { /* a quarter of the colour over mid grey */
                    for (int k = 0; k < 3; k++) c[k] = (uint8_t)(96 + c[k] / 4);
                } else if (y == 0 || x == 0 || y == patch - 1 || x == patch - 1) {
                    c[0] = 255; /* a yellow frame */
                    c[1] = 220;
                    c[2] = 0;
                }
            }
    }
}
