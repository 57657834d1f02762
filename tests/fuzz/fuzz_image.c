/* Fuzz target: image decoding (PNG through libpng; JPEG, GIF, BMP, PNM and TGA through
 * stb_image) and CLIP preprocessing of whatever decodes. */
#include <math.h>

#include "tests/fuzz/fuzz_util.h"
#include "vision/image.h"
#include "vision/preprocess.h"

/* Big enough for every decoder path, small enough that a 2000x2000 bomb stays fast. */
#define FUZZ_MAX_PIXELS 4000000ull

static void preprocess(const clip_preproc_config *cfg, const plm_image *img)
{
    float *px = NULL;
    int h = 0, w = 0;
    plm_error err = {{0}};
    plm_status st = clip_preprocess(cfg, img, &px, &h, &w, &err);
    fuzz_check_status(st, &err, "clip_preprocess");
    if (st != PLM_OK) {
        FUZZ_CHECK(px == NULL, "clip_preprocess failed but returned pixels");
        return;
    }
    FUZZ_CHECK(h == cfg->crop_h && w == cfg->crop_w, "clip_preprocess gave %dx%d, not the %dx%d "
               "crop", w, h, cfg->crop_w, cfg->crop_h);
    for (size_t i = 0; i < (size_t)h * (size_t)w * 3; i++)
        FUZZ_CHECK(isfinite(px[i]), "pixel %zu is not finite", i);
    free(px);
}

int fuzz_image(const uint8_t *data, size_t size)
{
    plm_image img;
    plm_error err = {{0}};
    /* Named .tga: inputs with a PNG/JPEG/GIF/BMP/PNM signature go to their decoder anyway, and
     * everything else reaches the TGA decoder, which is picked by name. */
    plm_status st = img_load_memory(data, size, "fuzz.tga", FUZZ_MAX_PIXELS, &img, &err);
    fuzz_check_status(st, &err, "img_load_memory");
    if (st != PLM_OK) {
        FUZZ_CHECK(img.rgb == NULL, "img_load_memory failed but returned pixels");
        return 0;
    }
    FUZZ_CHECK(img.rgb && img.width > 0 && img.height > 0 &&
               (uint64_t)img.width * (uint64_t)img.height <= FUZZ_MAX_PIXELS,
               "img_load_memory gave a %dx%d image", img.width, img.height);

    clip_preproc_config cfg;
    clip_preproc_defaults(&cfg); /* llava-1.5: bicubic to 336, centre crop 336 */
    cfg.shortest_edge = 336;
    cfg.crop_h = cfg.crop_w = 336;
    preprocess(&cfg, &img);
    /* A tiny target (cheap, and odd sizes exercise the crop's padding); the input's length picks
     * pad-to-square and the filter, since decoders ignore trailing bytes. */
    cfg.shortest_edge = 30;
    cfg.crop_h = cfg.crop_w = 28;
    cfg.do_pad = (size & 1) != 0;
    cfg.resample = size & 2 ? CLIP_FILTER_BILINEAR : CLIP_FILTER_BICUBIC;
    preprocess(&cfg, &img);
    img_free(&img);
    return 0;
}

#ifndef PLM_FUZZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_image(data, size);
}
#endif
