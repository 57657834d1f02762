/* Image decoding: PNG through libpng (palette, grayscale, 16-bit, alpha, interlaced), JPEG, BMP,
 * GIF, TGA, PNM through stb_image. Output is always packed RGB8. Sizes are checked against a
 * pixel limit before any pixel buffer is allocated. */
#ifndef PLM_VISION_IMAGE_H
#define PLM_VISION_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

typedef struct plm_image {
    int width, height;
    uint8_t *rgb; /* width*height*3 bytes, malloc'd; free with img_free */
} plm_image;

#define PLM_DEFAULT_MAX_PIXELS (64ull * 1000 * 1000)

plm_status img_load_file(const char *path, uint64_t max_pixels, plm_image *out, plm_error *err);
/* Decodes from memory; `name` is used in messages. */
plm_status img_load_memory(const void *data, size_t len, const char *name, uint64_t max_pixels,
                           plm_image *out, plm_error *err);
/* Copies packed RGB8 (validating the size against max_pixels). */
plm_status img_from_rgb(const uint8_t *rgb, int width, int height, uint64_t max_pixels,
                        plm_image *out, plm_error *err);
void img_free(plm_image *img);

/* Alpha is composited how? Documented in image.c: transformers' convert_rgb drops alpha
 * (PIL Image.convert("RGB")), so we drop it too. */

/* max_pixels == 0 means PLM_DEFAULT_MAX_PIXELS. */

/* ---- internal to vision/ (image.c, img_png.c, img_stb.c) --------------------------------- */

/* Refuses a zero-size image (PLM_E_FORMAT) or one over max_pixels (PLM_E_LIMIT), naming `name`:
 * "cat.png: image is 100000x100000 = 10000 megapixels, over the limit of 64 megapixels". */
plm_status img_check_size(const char *name, uint64_t width, uint64_t height, uint64_t max_pixels,
                          plm_error *err);
/* PNG through libpng, converted to RGB8 the way PIL's Image.open(...).convert("RGB") does. */
plm_status img_png_decode(const uint8_t *data, size_t len, const char *name, uint64_t max_pixels,
                          plm_image *out, plm_error *err);
/* JPEG, GIF, BMP, PNM and TGA through stb_image. `kind` names the format in messages ("JPEG"). */
plm_status img_stb_decode(const uint8_t *data, size_t len, const char *name, const char *kind,
                          uint64_t max_pixels, plm_image *out, plm_error *err);
/* Walks a JPEG's markers: the frame size from its SOFn segment, and whether the data reaches the
 * EOI marker. Returns PLM_E_FORMAT ("truncated JPEG", "corrupt JPEG: ...") when it cannot. */
plm_status img_jpeg_scan(const uint8_t *data, size_t len, const char *name, uint32_t *width,
                         uint32_t *height, plm_error *err);

/* Writes packed RGB8 as an 8-bit PNG, atomically (a temporary name in the same folder, then
 * rename): a failure leaves no file. */
plm_status img_write_png(const char *path, const uint8_t *rgb, int width, int height,
                         plm_error *err);

/* Draws which patches of a square image [size x size] were kept: the others dimmed toward
 * grey, each kept one outlined. kept: ascending row-major patch indices. */
void img_patch_overlay(uint8_t *rgb, int size, int patch, const int32_t *kept, size_t n_kept);

#endif
