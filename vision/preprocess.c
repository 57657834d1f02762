/* CLIP image preprocessing, exactly as transformers 5.17 does it for llava-hf checkpoints.
 *
 * What transformers 5.17 does (read from its source and confirmed by running it, torch 2.11,
 * torchvision 0.26, PIL 12.3: tests/ref/preprocess_ref.py, tests/fixtures/preprocess/):
 *
 * 1. Which class. llava-1.5-7b-hf's preprocessor_config.json says
 *    "image_processor_type": "CLIPImageProcessor". In v5 that name is the torchvision backend
 *    (models/clip/image_processing_clip.py: CLIPImageProcessor(TorchvisionBackend)); the PIL one
 *    is CLIPImageProcessorPil and is used only when torchvision is missing or backend="pil" is
 *    asked for. AutoImageProcessor.from_pretrained (what LlavaProcessor.from_pretrained calls)
 *    returns the torchvision class: that is what users get, so that is what we match. (The PIL
 *    backend differs from it by 1-2 uint8 levels on up to 1.2% of the values: PIL resamples with
 *    22-bit int32 coefficients, torch with int16 coefficients of adaptive precision.)
 *
 * 2. Decode and RGB. The PIL image goes through convert_to_rgb (Image.convert("RGB"): alpha
 *    dropped, not composited; see image.c, img_png.c) and tvF.pil_to_tensor: uint8 CHW.
 *
 * 3. Resize (TorchvisionBackend.resize). size {"shortest_edge": s} goes through
 *    image_transforms.get_resize_output_image_size(default_to_square=False): with
 *    short = min(h, w), long = max(h, w), the short side becomes s and the long side
 *    int(s * long / short) (float division, truncated); size {"height", "width"} is used as is;
 *    nothing is padded to square (no do_pad for CLIPImageProcessor; its do_pad would pad a batch
 *    to its largest image, a no-op for one image). Then tvF.resize(uint8 tensor, [h, w],
 *    BICUBIC, antialias=True): torchvision's resize_image keeps uint8 on the CPU for bicubic
 *    (_do_native_uint8_resize_on_cpu) and returns the input untouched when the size does not
 *    change; otherwise torch's _upsample_bicubic2d_aa runs on uint8 itself: separable, width
 *    first, int16 fixed-point weights, a uint8 intermediate, round and clamp per pass. resize.c
 *    replicates it bit for bit. resample 2 (bilinear) is the same with a triangle filter (uint8
 *    path on AVX2/AVX512 CPUs); resample 1 (LANCZOS) falls back to BICUBIC with torchvision
 *    < 0.27; NEAREST/BOX/HAMMING are not supported here.
 *
 * 4. Centre crop (TorchvisionBackend.center_crop) on the uint8 image: if the crop is larger
 *    than the image on an axis, pad with zeros, (crop - size) // 2 before and the rest after;
 *    then top = int((H - crop_h) / 2.0), left = int((W - crop_w) / 2.0). We compute only the
 *    cropped window of the resize (identical values).
 *
 * 5. Rescale + normalize, fused (_fuse_mean_std_and_rescale_factor): in float32,
 *    mean' = float32(mean) * float32(1 / rescale_factor), std' likewise, and
 *    out = (float32(u8) - mean') / std' (tvF.normalize: sub, then div). Normalize alone:
 *    (u8 - mean) / std; rescale alone: u8 * float32(rescale_factor). So the output is a pure
 *    function of the uint8 level per channel: clip_level_table.
 *
 * LlavaImageProcessor (a checkpoint that names it, with "do_pad": true) first pads the image to
 * a square, centred ((max - w) // 2 on the left), with the colour int(mean * 255) per channel,
 * then does the same steps. */
#include "vision/preprocess.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "core/json.h"

#define PREPROC_MAX_JSON_BYTES (1u << 20)
#define PREPROC_MAX_SIDE (1 << 24)

static const double clip_mean[3] = {0.48145466, 0.4578275, 0.40821073};
static const double clip_std[3] = {0.26862954, 0.26130258, 0.27577711};

void clip_preproc_defaults(clip_preproc_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->do_resize = cfg->do_center_crop = cfg->do_rescale = cfg->do_normalize = 1;
    cfg->do_convert_rgb = 1;
    cfg->do_pad = 0;
    cfg->shortest_edge = 224;
    cfg->crop_h = cfg->crop_w = 224;
    cfg->resample = 3;
    cfg->rescale_factor = 1.0 / 255.0;
    for (int c = 0; c < 3; c++) {
        cfg->mean[c] = clip_mean[c];
        cfg->std[c] = clip_std[c];
    }
}

/* ---- preprocessor_config.json ------------------------------------------------------------- */

static plm_status positive_int(const cJSON *v, const char *what, const char *path, int *out,
                               plm_error *err)
{
    int64_t x;
    char name[256];
    snprintf(name, sizeof name, "%s: %s", path, what);
    PLM_TRY(json_value_int(v, name, &x, err));
    if (x < 1 || x > PREPROC_MAX_SIDE)
        return plm_fail(err, PLM_E_FORMAT, "%s: %s is %lld, expected 1..%d", path, what,
                        (long long)x, PREPROC_MAX_SIDE);
    *out = (int)x;
    return PLM_OK;
}

/* A size: an integer, [h, w], or an object with the given keys. Returns which form it was:
 * 0 integer, 1 height/width, 2 shortest_edge. */
static plm_status parse_size(const cJSON *v, const char *key, const char *path, int allow_shortest,
                             int *form, int *a, int *b, plm_error *err)
{
    char what[64];
    if (cJSON_IsNumber(v)) {
        *form = 0;
        return positive_int(v, key, path, a, err);
    }
    if (cJSON_IsArray(v) && cJSON_GetArraySize(v) == 2) {
        *form = 1;
        snprintf(what, sizeof what, "%s[0]", key);
        PLM_TRY(positive_int(cJSON_GetArrayItem(v, 0), what, path, a, err));
        snprintf(what, sizeof what, "%s[1]", key);
        return positive_int(cJSON_GetArrayItem(v, 1), what, path, b, err);
    }
    if (!cJSON_IsObject(v))
        return plm_fail(err, PLM_E_FORMAT, "%s: %s must be an integer, [height, width] or an"
                        " object", path, key);
    const cJSON *se = cJSON_GetObjectItemCaseSensitive(v, "shortest_edge");
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(v, "height");
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(v, "width");
    if (cJSON_GetObjectItemCaseSensitive(v, "longest_edge") ||
        cJSON_GetObjectItemCaseSensitive(v, "max_height") ||
        cJSON_GetObjectItemCaseSensitive(v, "max_width"))
        return plm_fail(err, PLM_E_UNSUPPORTED, "%s: %s with longest_edge or max_height/max_width"
                        " is not supported (only shortest_edge, or height and width)", path, key);
    if (se && allow_shortest && !h && !w) {
        *form = 2;
        snprintf(what, sizeof what, "%s.shortest_edge", key);
        return positive_int(se, what, path, a, err);
    }
    if (h && w && !se) {
        *form = 1;
        snprintf(what, sizeof what, "%s.height", key);
        PLM_TRY(positive_int(h, what, path, a, err));
        snprintf(what, sizeof what, "%s.width", key);
        return positive_int(w, what, path, b, err);
    }
    return plm_fail(err, PLM_E_FORMAT, "%s: %s must have %s\"height\" and \"width\"", path, key,
                    allow_shortest ? "\"shortest_edge\" alone, or " : "");
}

/* image_mean / image_std: a number or a list of 1 or 3 numbers. */
static plm_status parse_triple(const cJSON *root, const char *key, const char *path, double out[3],
                               plm_error *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) return PLM_OK;
    if (cJSON_IsNumber(v)) {
        out[0] = out[1] = out[2] = v->valuedouble;
        return PLM_OK;
    }
    int n = cJSON_IsArray(v) ? cJSON_GetArraySize(v) : -1;
    if (n != 1 && n != 3)
        return plm_fail(err, PLM_E_FORMAT, "%s: %s must be a number or a list of 3 numbers", path,
                        key);
    for (int c = 0; c < n; c++) {
        const cJSON *x = cJSON_GetArrayItem(v, c);
        if (!cJSON_IsNumber(x))
            return plm_fail(err, PLM_E_FORMAT, "%s: %s[%d] is not a number", path, key, c);
        out[c] = x->valuedouble;
    }
    if (n == 1) out[1] = out[2] = out[0];
    return PLM_OK;
}

static plm_status parse_config(const cJSON *root, const char *path, clip_preproc_config *cfg,
                               plm_error *err)
{
    if (!cJSON_IsObject(root))
        return plm_fail(err, PLM_E_FORMAT, "%s: expected a JSON object", path);
    /* processor_config.json (transformers 5 save_pretrained) nests it under "image_processor" */
    const cJSON *nested = cJSON_GetObjectItemCaseSensitive(root, "image_processor");
    if (nested) {
        if (!cJSON_IsObject(nested))
            return plm_fail(err, PLM_E_FORMAT, "%s: image_processor is not an object", path);
        root = nested;
    }
    PLM_TRY(json_bool_opt(root, "do_resize", path, &cfg->do_resize, err));
    PLM_TRY(json_bool_opt(root, "do_center_crop", path, &cfg->do_center_crop, err));
    PLM_TRY(json_bool_opt(root, "do_rescale", path, &cfg->do_rescale, err));
    PLM_TRY(json_bool_opt(root, "do_normalize", path, &cfg->do_normalize, err));
    PLM_TRY(json_bool_opt(root, "do_convert_rgb", path, &cfg->do_convert_rgb, err));
    int do_pad = 0;
    PLM_TRY(json_bool_opt(root, "do_pad", path, &do_pad, err));
    const char *type = NULL;
    PLM_TRY(json_str_opt(root, "image_processor_type", path, &type, err));
    cfg->do_pad = do_pad && type && strstr(type, "LlavaImageProcessor") != NULL;

    const cJSON *size = cJSON_GetObjectItemCaseSensitive(root, "size");
    if (size && !cJSON_IsNull(size)) {
        int form, a = 0, b = 0;
        PLM_TRY(parse_size(size, "size", path, 1, &form, &a, &b, err));
        if (form == 1) {
            cfg->shortest_edge = 0;
            cfg->size_h = a;
            cfg->size_w = b;
        } else { /* an integer means shortest_edge for CLIP (default_to_square=False) */
            cfg->shortest_edge = a;
            cfg->size_h = cfg->size_w = 0;
        }
    }
    const cJSON *crop = cJSON_GetObjectItemCaseSensitive(root, "crop_size");
    if (crop && !cJSON_IsNull(crop)) {
        int form, a = 0, b = 0;
        PLM_TRY(parse_size(crop, "crop_size", path, 0, &form, &a, &b, err));
        cfg->crop_h = a;
        cfg->crop_w = form == 0 ? a : b;
    }
    int64_t resample = cfg->resample;
    PLM_TRY(json_int_opt(root, "resample", path, &resample, err));
    if (resample < 0 || resample > 5)
        return plm_fail(err, PLM_E_FORMAT, "%s: resample is %lld, expected a PIL filter code"
                        " 0..5", path, (long long)resample);
    cfg->resample = (int)resample;
    if (cfg->do_resize && resample != 1 && resample != 2 && resample != 3) {
        static const char *names[] = {"NEAREST", "LANCZOS", "BILINEAR", "BICUBIC", "BOX",
                                      "HAMMING"};
        return plm_fail(err, PLM_E_UNSUPPORTED, "%s: resample %lld (%s) is not supported (only"
                        " 3 bicubic, 2 bilinear, 1 lanczos read as bicubic)", path,
                        (long long)resample, names[resample]);
    }
    PLM_TRY(json_num_opt(root, "rescale_factor", path, &cfg->rescale_factor, err));
    PLM_TRY(parse_triple(root, "image_mean", path, cfg->mean, err));
    PLM_TRY(parse_triple(root, "image_std", path, cfg->std, err));
    if (cfg->do_rescale && !(cfg->rescale_factor != 0.0 && isfinite(cfg->rescale_factor)))
        return plm_fail(err, PLM_E_FORMAT, "%s: rescale_factor must be a nonzero number", path);
    for (int c = 0; c < 3 && cfg->do_normalize; c++)
        if (cfg->std[c] == 0.0 || !isfinite(cfg->std[c]) || !isfinite(cfg->mean[c]))
            return plm_fail(err, PLM_E_FORMAT, "%s: image_std[%d] is %g: a division by zero", path,
                            c, cfg->std[c]);
    return PLM_OK;
}

plm_status clip_preproc_load(const char *path, clip_preproc_config *cfg, plm_error *err)
{
    clip_preproc_defaults(cfg);
    cJSON *root = NULL;
    PLM_TRY(json_load_file(path, PREPROC_MAX_JSON_BYTES, &root, err));
    plm_status st = parse_config(root, path, cfg, err);
    cJSON_Delete(root);
    if (st != PLM_OK) clip_preproc_defaults(cfg);
    return st;
}

/* ---- the pipeline ------------------------------------------------------------------------- */

plm_status clip_resize_size(const clip_preproc_config *cfg, int in_h, int in_w, int *out_h,
                            int *out_w, plm_error *err)
{
    *out_h = in_h;
    *out_w = in_w;
    if (!cfg->do_resize) return PLM_OK;
    if (cfg->shortest_edge > 0) {
        /* get_resize_output_image_size: int(s * long / short), the product exact, the division
         * in double, truncated */
        int s = cfg->shortest_edge;
        int shorter = in_w <= in_h ? in_w : in_h, longer = in_w <= in_h ? in_h : in_w;
        double nl = (double)((int64_t)s * longer) / (double)shorter;
        if (nl > PREPROC_MAX_SIDE)
            return plm_fail(err, PLM_E_LIMIT, "image %dx%d would be resized to a side of %.0f"
                            " pixels, over %d", in_w, in_h, nl, PREPROC_MAX_SIDE);
        int new_long = (int)nl;
        if (in_w <= in_h) {
            *out_w = s;
            *out_h = new_long;
        } else {
            *out_h = s;
            *out_w = new_long;
        }
    } else if (cfg->size_h > 0 && cfg->size_w > 0) {
        *out_h = cfg->size_h;
        *out_w = cfg->size_w;
    } else {
        return plm_fail(err, PLM_E_ARG, "preprocessing config has neither size.shortest_edge nor"
                        " size.height/width");
    }
    return PLM_OK;
}

/* LlavaImageProcessor.pad_to_square: centred on a square of the longer side, filled with
 * int(mean * 255) per channel. *sq is NULL when the image is square already. */
static plm_status pad_to_square(const clip_preproc_config *cfg, const plm_image *img, uint8_t **sq,
                                int *side, plm_error *err)
{
    int w = img->width, h = img->height, m = w > h ? w : h;
    *sq = NULL;
    *side = m;
    if (w == h) return PLM_OK;
    /* The square is a new image, bounded like a decoded one: a 1x4000000 strip within the
     * caller's pixel limit would ask for 48 TB here (found by tests/fuzz/fuzz_image.c). */
    if ((uint64_t)m * (uint64_t)m > PLM_DEFAULT_MAX_PIXELS)
        return plm_fail(err, PLM_E_LIMIT, "pad to square: a %dx%d image pads to %dx%d, over the "
                        "limit of %llu megapixels", w, h, m, m, PLM_DEFAULT_MAX_PIXELS / 1000000);
    size_t n;
    if (!plm_mul_ok((size_t)m, (size_t)m, &n) || !plm_mul_ok(n, 3, &n))
        return plm_fail(err, PLM_E_LIMIT, "pad to square: %dx%d overflows", m, m);
    uint8_t *p = malloc(n);
    if (!p) return plm_fail(err, PLM_E_NOMEM, "pad to square: out of memory (%zu bytes)", n);
    uint8_t fill[3];
    for (int c = 0; c < 3; c++) {
        double v = cfg->mean[c] * 255; /* Python int(): truncation toward zero */
        fill[c] = (uint8_t)(v <= 0 ? 0 : v >= 255 ? 255 : (int)v);
    }
    for (size_t i = 0; i < n; i += 3) memcpy(p + i, fill, 3);
    int left = (m - w) / 2, top = (m - h) / 2;
    for (int y = 0; y < h; y++)
        memcpy(p + ((size_t)(y + top) * (size_t)m + (size_t)left) * 3,
               img->rgb + (size_t)y * (size_t)w * 3, (size_t)w * 3);
    *sq = p;
    return PLM_OK;
}

/* One axis of the centre crop: output index o reads resized index o + off - pad, valid in
 * [0, size). Returns the count of valid indices; *first is the first valid resized index and
 * *dst_first where it lands. */
static int crop_axis(int size, int crop, int *first, int *dst_first)
{
    if (crop > size) {
        *first = 0;
        *dst_first = (crop - size) / 2;
        return size;
    }
    *first = (int)((size - crop) / 2.0);
    *dst_first = 0;
    return crop;
}

plm_status clip_preprocess_u8(const clip_preproc_config *cfg, const plm_image *img, uint8_t **rgb,
                              int *out_h, int *out_w, plm_error *err)
{
    *rgb = NULL;
    *out_h = *out_w = 0;
    if (!cfg || !img || !img->rgb || img->width <= 0 || img->height <= 0)
        return plm_fail(err, PLM_E_ARG, "clip_preprocess: no image");

    plm_image src = *img;
    uint8_t *squared = NULL;
    if (cfg->do_pad) {
        int side;
        PLM_TRY(pad_to_square(cfg, img, &squared, &side, err));
        if (squared) {
            src.rgb = squared;
            src.width = src.height = side;
        }
    }

    int rh, rw;
    plm_status st = clip_resize_size(cfg, src.height, src.width, &rh, &rw, err);
    if (st != PLM_OK) {
        free(squared);
        return st;
    }
    int ch = rh, cw = rw;
    if (cfg->do_center_crop) {
        if (cfg->crop_h <= 0 || cfg->crop_w <= 0) {
            free(squared);
            return plm_fail(err, PLM_E_ARG, "clip_preprocess: crop size %dx%d", cfg->crop_w,
                            cfg->crop_h);
        }
        ch = cfg->crop_h;
        cw = cfg->crop_w;
    }
    int y0, ny, dy, x0, nx, dx;
    ny = crop_axis(rh, ch, &y0, &dy);
    nx = crop_axis(rw, cw, &x0, &dx);

    size_t n;
    if (!plm_mul_ok((size_t)ch, (size_t)cw, &n) || !plm_mul_ok(n, 3, &n)) {
        free(squared);
        return plm_fail(err, PLM_E_LIMIT, "clip_preprocess: %dx%d output overflows", cw, ch);
    }
    uint8_t *out = calloc(n, 1); /* the crop's padding is zeros */
    int direct = (nx == cw && ny == ch);
    uint8_t *win = direct ? out : malloc((size_t)nx * (size_t)ny * 3);
    if (!out || !win) {
        free(out);
        free(squared);
        return plm_fail(err, PLM_E_NOMEM, "clip_preprocess: out of memory for a %dx%d image", cw,
                        ch);
    }
    if (rh == src.height && rw == src.width) {
        /* torchvision returns the image untouched when the size does not change */
        for (int y = 0; y < ny; y++)
            memcpy(win + (size_t)y * (size_t)nx * 3,
                   src.rgb + ((size_t)(y + y0) * (size_t)src.width + (size_t)x0) * 3,
                   (size_t)nx * 3);
    } else {
        int filter = cfg->resample == 2 ? CLIP_FILTER_BILINEAR : CLIP_FILTER_BICUBIC;
        st = clip_resize_u8(src.rgb, src.width, src.height, rw, rh, x0, nx, y0, ny, filter, win,
                            err);
        if (st != PLM_OK) {
            if (!direct) free(win);
            free(out);
            free(squared);
            return st;
        }
    }
    if (!direct) {
        for (int y = 0; y < ny; y++)
            memcpy(out + ((size_t)(y + dy) * (size_t)cw + (size_t)dx) * 3,
                   win + (size_t)y * (size_t)nx * 3, (size_t)nx * 3);
        free(win);
    }
    free(squared);
    *rgb = out;
    *out_h = ch;
    *out_w = cw;
    return PLM_OK;
}

void clip_level_table(const clip_preproc_config *cfg, float table[3][256])
{
    for (int c = 0; c < 3; c++) {
        float mean = (float)cfg->mean[c], std = (float)cfg->std[c];
        if (cfg->do_rescale && cfg->do_normalize) {
            /* torch.tensor(mean) * (1.0 / rescale_factor): float32 tensor times a scalar that
             * torch casts to float32 */
            float inv = (float)(1.0 / cfg->rescale_factor);
            mean = mean * inv;
            std = std * inv;
        }
        for (int v = 0; v < 256; v++) {
            float x = (float)v;
            if (cfg->do_normalize)
                x = (x - mean) / std;
            else if (cfg->do_rescale)
                x = x * (float)cfg->rescale_factor;
            table[c][v] = x;
        }
    }
}

plm_status clip_preprocess(const clip_preproc_config *cfg, const plm_image *img, float **pixels,
                           int *out_h, int *out_w, plm_error *err)
{
    *pixels = NULL;
    uint8_t *rgb;
    int h, w;
    PLM_TRY(clip_preprocess_u8(cfg, img, &rgb, &h, &w, err));
    size_t plane = (size_t)h * (size_t)w, n;
    if (!plm_mul_ok(plane, 3 * sizeof(float), &n)) {
        free(rgb);
        return plm_fail(err, PLM_E_LIMIT, "clip_preprocess: %dx%d output overflows", w, h);
    }
    float *px = malloc(n);
    if (!px) {
        free(rgb);
        return plm_fail(err, PLM_E_NOMEM, "clip_preprocess: out of memory (%zu bytes)", n);
    }
    float table[3][256];
    clip_level_table(cfg, table);
    for (size_t i = 0; i < plane; i++)
        for (int c = 0; c < 3; c++) px[(size_t)c * plane + i] = table[c][rgb[i * 3 + (size_t)c]];
    free(rgb);
    *pixels = px;
    *out_h = h;
    *out_w = w;
    return PLM_OK;
}
