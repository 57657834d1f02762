/* config.json of a LLaVA (or plain Llama) checkpoint, read the way transformers reads it:
 * fields a Hub config leaves out take the defaults of LlavaConfig / CLIPVisionConfig /
 * LlamaConfig; rope settings come from `rope_parameters` (5.x) or `rope_theta` +
 * `rope_scaling` (4.x). */
#ifndef PLM_API_CONFIG_H
#define PLM_API_CONFIG_H

#include "lm/llama.h"
#include "vision/vit.h"

typedef struct llava_config {
    int has_vision;
    vit_config vision;
    proj_config proj;
    llama_config text;
    int image_token_id;
} llava_config;

/* Reads dir/config.json (and dir/generation_config.json for extra EOS ids when present). */
plm_status llava_config_load(const char *dir, llava_config *c, plm_error *err);

#endif
