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

#endif
