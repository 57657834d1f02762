/* CLIP image preprocessing exactly as transformers 5.17 does it for llava-hf checkpoints, driven
 * by preprocessor_config.json. */
#ifndef PLM_VISION_PREPROCESS_H
#define PLM_VISION_PREPROCESS_H

#include "core/err.h"
#include "vision/image.h"

typedef struct clip_preproc_config {
    int do_resize, do_center_crop, do_rescale, do_normalize, do_convert_rgb, do_pad;
    int shortest_edge;          /* resize target (size.shortest_edge) */
    int size_h, size_w;         /* when size is given as height/width instead (0 otherwise) */
    int crop_h, crop_w;         /* crop_size */
    int resample;               /* PIL code: 3 = bicubic, 2 = bilinear, ... */
    double rescale_factor;      /* 1/255 */
    double mean[3], std[3];
} clip_preproc_config;

/* Parses preprocessor_config.json (missing optional fields get CLIPImageProcessor defaults). */
plm_status clip_preproc_load(const char *path, clip_preproc_config *cfg, plm_error *err);
void clip_preproc_defaults(clip_preproc_config *cfg);

/* Produces the pixel tensor [3][out_h][out_w] (float32, channel-major), malloc'd into *pixels. */
plm_status clip_preprocess(const clip_preproc_config *cfg, const plm_image *img, float **pixels,
                           int *out_h, int *out_w, plm_error *err);

/* Notes on the fields, as clip_preproc_load fills them (details in preprocess.c):
 * - do_pad is 1 only for LlavaImageProcessor's pad-to-square (mean colour, before resizing);
 *   CLIPImageProcessor's do_pad pads a batch to its largest image, a no-op for one image.
 * - resample 1 (LANCZOS) is read as bicubic, as transformers 5.17 does with torchvision < 0.27;
 *   0 (NEAREST), 4 (BOX) and 5 (HAMMING) are refused as unsupported when do_resize is set.
 * - do_convert_rgb has no effect: plm_image is RGB already. */

/* ---- internal to vision/ and its tests ---------------------------------------------------- */

/* The uint8 stages of clip_preprocess (pad to square, resize, centre crop with zero padding).
 * *rgb is malloc'd packed RGB8 of *out_h x *out_w. */
plm_status clip_preprocess_u8(const clip_preproc_config *cfg, const plm_image *img, uint8_t **rgb,
                              int *out_h, int *out_w, plm_error *err);
/* The float clip_preprocess gives each uint8 level of each channel (rescale and normalize). */
void clip_level_table(const clip_preproc_config *cfg, float table[3][256]);
/* The resized size (before cropping) for an input of in_h x in_w. */
plm_status clip_resize_size(const clip_preproc_config *cfg, int in_h, int in_w, int *out_h,
                            int *out_w, plm_error *err);

enum { CLIP_FILTER_BILINEAR = 2, CLIP_FILTER_BICUBIC = 3 };
/* Antialiased resize of packed RGB8 in_w x in_h to out_w x out_h, bit-exact with PyTorch's uint8
 * CPU kernels (resize.c); writes only the window of columns [x0, x0+nx) and rows [y0, y0+ny) of
 * the result into dst (packed RGB8, nx x ny). */
plm_status clip_resize_u8(const uint8_t *src, int in_w, int in_h, int out_w, int out_h, int x0,
                          int nx, int y0, int ny, int filter, uint8_t *dst, plm_error *err);

#endif
