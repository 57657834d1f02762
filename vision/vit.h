/* The CLIP vision tower (ViT) and LLaVA's multimodal projector, written once against the
 * backend ops table. Reads like the model: embeddings, pre-layernorm, encoder layers. */
#ifndef PLM_VISION_VIT_H
#define PLM_VISION_VIT_H

#include "core/backend.h"
#include "core/weights.h"

#define VIT_MAX_FEATURE_LAYERS 8

typedef struct vit_config {
    int hidden, intermediate, n_layers, n_heads, image_size, patch_size, n_channels;
    float ln_eps;
    plm_act act;
    /* LLaVA: which hidden states feed the projector (hidden_states[] indexing, negative from
     * the end; several are concatenated feature-wise) and whether the CLS row is dropped. */
    int feature_layers[VIT_MAX_FEATURE_LAYERS], n_feature_layers;
    int drop_cls;
} vit_config;

typedef struct proj_config {
    int in_dim, hidden, out_dim;
    int bias;
    plm_act act;
} proj_config;

typedef struct vit_layer {
    float *ln1_g, *ln1_b, *ln2_g, *ln2_b;
    plm_weight q, k, v, o, fc1, fc2;
    float *q_b, *k_b, *v_b, *o_b, *fc1_b, *fc2_b;
    /* q, k and v stacked [3 hidden x hidden] (on a device: q, k, v are views of it) and their
     * biases, for one GEMM; data NULL where they could not be stacked (wsrc_matrix_stack) */
    plm_weight qkv;
    float *qkv_b;
} vit_layer;

typedef struct vit_model {
    vit_config cfg;
    plm_weight patch;       /* [hidden x 3*p*p] */
    float *cls, *pos;       /* [hidden], [n_pos x hidden] */
    float *pre_g, *pre_b;
    vit_layer *layers;
    int n_run;              /* encoder layers needed for the deepest feature layer */
    proj_config pcfg;
    plm_weight p1, p2;
    float *p1_b, *p2_b;
} vit_model;

int vit_n_patches(const vit_config *c);
/* Rows the projector emits per image (patches, plus CLS unless dropped). */
int vit_n_tokens(const vit_config *c);

/* Resolves a hidden_states index (negative counts from the end) to the number of encoder
 * layers run before it; -1 when out of range. */
int vit_resolve_layer(const vit_config *c, int idx);

plm_status vit_load(vit_model *m, const vit_config *cfg, const proj_config *pcfg,
                    plm_wsrc *vision, plm_wsrc *projector, plm_error *err);
void vit_unload(vit_model *m);

/* Scratch the forward pass needs, in floats. */
size_t vit_scratch_floats(const vit_model *m);
/* Width of one feature row (hidden x number of feature layers). */
int vit_feature_dim(const vit_model *m);

/* What the pruning score providers read from the encoder: copies of the queries and keys of
 * the last encoder layer run (the layer whose output is the feature layer), rows [CLS, patch
 * 0, ...], [n_patches + 1 x hidden] each, device. Left untouched when no layer runs. */
typedef struct vit_taps {
    float *q, *k;
} vit_taps;

/* The encoder: pixels [3 x S x S] -> feat [n_patches + 1 x vit_feature_dim] (device), every
 * row including [CLS] (row 0) whatever the select strategy; taps may be NULL. */
void vit_encode(const vit_model *m, plm_backend *be, const float *pixels, float *feat,
                const vit_taps *taps, float *scratch);
/* The projector on n rows of features: out [n x out_dim] (device). */
void vit_project(const vit_model *m, plm_backend *be, const float *feat, int64_t n, float *out,
                 float *scratch);
/* Both, for every token. */
void vit_forward(const vit_model *m, plm_backend *be, const float *pixels, float *out,
                 float *scratch);

#endif
