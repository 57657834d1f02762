/* JPEG, GIF, BMP, binary PNM and TGA through stb_image, the one translation unit that holds its
 * implementation. PNG never comes here (libpng handles it, img_png.c).
 *
 * JPEG pixels are not bit-identical to the reference: PIL decodes with libjpeg-turbo (its own
 * integer IDCT, "fancy" chroma upsampling with alternating rounding, table-driven YCbCr->RGB),
 * stb_image with its own IDCT, upsampler and colour conversion. On the test JPEGs the decoded
 * RGB differs by a few levels at most; tests/test_image.c measures and bounds it. Other known
 * differences: a GIF's transparent pixels come out black here but in their palette colour from
 * PIL; EXIF orientation is ignored by both (PIL only applies it on request). */
#include "vision/image.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define STBI_NO_STDIO
#define STBI_NO_LINEAR
#define STBI_NO_HDR
#define STBI_ONLY_JPEG
#define STBI_ONLY_GIF
#define STBI_ONLY_BMP
#define STBI_ONLY_PNM
#define STBI_ONLY_TGA
#define STBI_MAX_DIMENSIONS (1 << 24)
#define STB_IMAGE_IMPLEMENTATION
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#endif
#include <stb_image.h>
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

plm_status img_stb_decode(const uint8_t *data, size_t len, const char *name, const char *kind,
                          uint64_t max_pixels, plm_image *out, plm_error *err)
{
    out->width = out->height = 0;
    out->rgb = NULL;
    if (len > INT_MAX)
        return plm_fail(err, PLM_E_LIMIT, "%s: %s file of %zu bytes is too large for stb_image",
                        name, kind, len);
    int w = 0, h = 0, comp = 0;
    /* stbi_info reads the header only, so the size is checked before any pixel buffer. */
    if (!stbi_info_from_memory(data, (int)len, &w, &h, &comp)) {
        const char *why = stbi_failure_reason();
        return plm_fail(err, PLM_E_FORMAT, "%s: corrupt %s (stb_image: %s)", name, kind,
                        why ? why : "unreadable header");
    }
    PLM_TRY(img_check_size(name, (uint64_t)w, (uint64_t)h, max_pixels, err));
    int dw = 0, dh = 0;
    stbi_uc *px = stbi_load_from_memory(data, (int)len, &dw, &dh, &comp, 3);
    if (!px) {
        const char *why = stbi_failure_reason();
        if (why && (strcmp(why, "outofmem") == 0))
            return plm_fail(err, PLM_E_NOMEM, "%s: out of memory decoding a %dx%d %s", name, w,
                            h, kind);
        return plm_fail(err, PLM_E_FORMAT, "%s: corrupt %s (stb_image: %s)", name, kind,
                        why ? why : "decode failed");
    }
    if (dw != w || dh != h) {
        stbi_image_free(px);
        return plm_fail(err, PLM_E_FORMAT, "%s: corrupt %s: header says %dx%d, data decodes to"
                        " %dx%d", name, kind, w, h, dw, dh);
    }
    /* stb allocates with malloc (STBI_MALLOC is not overridden), so img_free's free() fits. */
    out->rgb = px;
    out->width = w;
    out->height = h;
    return PLM_OK;
}
