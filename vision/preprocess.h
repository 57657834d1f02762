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

#endif
