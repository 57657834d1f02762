/* What a loaded model holds; shared read-only by every session. */
#ifndef PLM_API_MODEL_INTERNAL_H
#define PLM_API_MODEL_INTERNAL_H

#include "api/config.h"
#include "core/log.h"
#include "core/safetensors.h"
#include "lm/tokenizer.h"
#include "vision/preprocess.h"

struct plm_model {
    plm_model_params params;
    plm_logger log;
    char *dir;
    llava_config cfg;
    st_set *weights;
    tok_tokenizer *tok;
    clip_preproc_config pp;
    plm_backend *wbe;           /* owns the uploaded weights (device) or small vectors (CPU) */
    int on_cuda;                /* sessions compute with a CUDA backend */
    plm_wsrc vsrc, psrc, tsrc, hsrc;
    vit_model vit;
    llama_model llm;
    char image_token[64];       /* the image token's text, e.g. "<image>" */
    int prepend_bos;            /* tokenizer.json adds no BOS but the checkpoint wants one */
};

/* A compute backend of the model's kind for a session (CUDA on the model's GPU, or CPU with the
 * model's thread count). */
plm_status model_new_backend(const plm_model *m, plm_backend **out, plm_error *err);
/* PLM_E_DEVICE with the backend's first failure, if an op failed. */
plm_status backend_check(plm_backend *be, plm_error *err);

#endif
