/* A session's state, shared by session.c (lifetime, accessors) and generate.c (the run). */
#ifndef PLM_API_SESSION_INTERNAL_H
#define PLM_API_SESSION_INTERNAL_H

#include "api/model_internal.h"
#include "prune/visual.h"
#include "vision/image.h"

typedef struct kv_glue kv_glue;

struct plm_session {
    plm_model *m;
    plm_session_params p;
    int max_new;               /* max_tokens resolved for the current prompt */
    plm_backend *be;
    plm_error err;
    llama_kv kv;
    int kv_keep_alloc;         /* tests: 1 keeps the cache's allocation after a policy evicts */
    float *scratch;            /* device */
    size_t scratch_floats;
    plm_image img;
    int has_image;
    float *pixels;             /* host [3 x ph x pw] */
    int ph, pw;
    float *feats;              /* host [n_feat x hidden] when feats_host_ok */
    size_t n_feat;
    float *feats_dev;          /* device [n_feat x hidden] when feats_dev_ok: a vision stage
                                  that projects on the device keeps its rows there (no copy
                                  to the host and back before the prefill) */
    size_t feats_dev_floats;
    int feats_host_ok, feats_dev_ok;
    void *vit_graph;           /* the vision tower recorded (graph ops), or NULL */
    const void *vit_graph_key[3]; /* what it was recorded for: model, device pixels, taps */
    int vit_graph_off;         /* recording failed once: run the tower op by op */
    int32_t *tokens;
    size_t n_prompt, n_tokens, cap_tokens;
    size_t n_late;             /* the prompt's last tokens read after the prefill, one decode
                                  step each (a late question); 0: none */
    int keep_logits;
    float *prompt_logits;      /* host [n_logit_rows x vocab] when kept */
    size_t n_logit_rows;       /* prompt positions that reached the last layer */
    float *logits;             /* host [vocab] */
    float *last_hidden;        /* host [hidden]: the last prompt row after the final norm */
    plm_timings t;
    /* visual pruning */
    int prune_on;
    prune_visual prune;
    float *probs;              /* device [n_heads x n_ctx]: attention scores for the stages */
    size_t probs_floats;
    float *work;               /* device: the pruning stages' working rows (similarities, Gram
                                  matrices, clusters), grown and kept: a cudaMalloc and a
                                  synchronising cudaFree per stage cost more than they held */
    size_t work_floats;
    int64_t img_lo, img_n;     /* the image rows in the current prefill sequence */
    int64_t img_n0;            /* image rows that entered the decoder */
    int64_t img_layer_sum;     /* image rows summed over the layers run (for the average) */
    float *img_scores;         /* host [img_n]: the vision-stage score carried per image row */
    float *stage_buf;          /* device, inside the scratch during a prefill: next-layer q/k
                                  for PyramidDrop-style scoring */
    int32_t *pending_shift;    /* host [n_layers]: position shifts a renumbering stage leaves */
    int64_t rope_len;          /* the sequence length RoPE is sized by in this forward */
    int32_t *raters;           /* host: SparseVLM's rater rows, relative to the text after the
                                  image block */
    int64_t n_raters;
    int32_t *img_patch;        /* host [n_feat]: the patch each image row stands for (-1: the
                                  CLS row or a merged contextual token); compacted with the rows */
    int32_t *kept_list;        /* host: plm_session_kept_patches' answer */
    int vis_valid;             /* feats (and the copies below) hold this image's vision stage */
    float *vis_scores;         /* host: img_scores as the vision stage left them */
    int32_t *vis_patch;        /* host: img_patch as the vision stage left them */
    size_t n_kept_list;
    plm_status hook_status;
    kv_glue *kvg;              /* the KV-cache policy (api/kv_glue.c); NULL: none */
};

double plm_now_ms(void);
/* Grows the device buffer *buf (*floats long) to at least n floats, its contents dropped;
 * `what` names it in the out-of-memory message. */
plm_status session_dev_grow(plm_session *s, float **buf, size_t *floats, size_t n,
                            const char *what);
/* Grows the device scratch to at least n floats. */
plm_status session_ensure_scratch(plm_session *s, size_t n);

/* Visual pruning (api/prune_glue.c). */
/* Device scratch the vision stage needs, in floats. */
size_t session_vision_scratch(const plm_session *s);
/* Runs the vision tower on s->pixels with the policy's vision stage: s->n_feat rows of
 * projected embeddings, in s->feats_dev or s->feats (host; see feats_dev_ok, feats_host_ok),
 * s->img_scores their carried scores. */
plm_status session_encode_image(plm_session *s, float *dev_scratch);
/* The decoder hook for the prefill (NULL when no decoder stage applies). */
const llama_hook *session_prefill_hook(plm_session *s, llama_hook *storage);
/* The preprocessed image as RGB8 (undoing the normalisation, which is exact per level). */
plm_status session_pixels_rgb(plm_session *s, uint8_t **out);
/* SparseVLM's raters, from the prompt's input embeddings x (device, [t x hidden]). */
plm_status session_pick_raters(plm_session *s, const float *x, int64_t t);
/* Device scratch the decoder stages need for a prefill of t rows, in floats. */
size_t session_stage_scratch(const plm_session *s, int64_t t);

/* KV-cache policy (api/kv_glue.c). */
int session_kv_active(const plm_session *s);
void session_kv_free(plm_session *s);
/* Before a prefill: sizes the policy's state for a prompt of n_prompt rows in a cache of cap. */
plm_status session_kv_begin(plm_session *s, int64_t n_prompt, int64_t cap, int64_t max_new);
void session_kv_phase(plm_session *s, int prefill, int64_t step);
/* 1 when a policy will steer the passes after the prefill (AutoPASTA) and every layer's last
 * row is the prompt's last token (position last_pos), held densely: generate.c then runs that
 * token again, steered, so that the first answer token is steered too. */
int session_kv_resteer(const plm_session *s, int64_t last_pos);
/* llama_hook callbacks (after_layer returns v->t, or -1 with s->hook_status set). */
int64_t session_kv_after_layer(plm_session *s, const llama_layer_view *v);
int session_kv_before_attention(plm_session *s, int layer, plm_attn_args *a);
/* Bytes of keys and values the cache holds (dense rows plus bitmap-compressed ones). */
uint64_t session_kv_bytes(const plm_session *s);
/* The sentence of each prompt token (malloc'd [n_prompt], non-decreasing): a new one after a
 * token whose text ends in . ! ? (closing quotes or brackets aside) or holds a line break, and
 * the image's rows as one of their own. AutoPASTA's units (kv_shape.sentence). NULL: no memory. */
int32_t *session_prompt_sentences(const plm_session *s);

#endif
