/* The Llama decoder, written once against the backend ops table, llama2.c style: plain structs
 * of weights, one forward function that reads top to bottom. */
#ifndef PLM_LM_LLAMA_H
#define PLM_LM_LLAMA_H

#include "core/backend.h"
#include "core/weights.h"

typedef enum llama_rope_type { ROPE_DEFAULT, ROPE_LINEAR, ROPE_DYNAMIC, ROPE_LLAMA3 } llama_rope_type;

#define LLAMA_MAX_EOS 8

typedef struct llama_config {
    int vocab, hidden, intermediate, n_layers, n_heads, n_kv, head_dim, max_pos;
    float rms_eps;
    double rope_theta;
    llama_rope_type rope_type;
    double rope_factor, rope_low_freq, rope_high_freq;
    int rope_orig_max_pos;
    int tie_embeddings, attn_bias, mlp_bias;
    int bos;
    int eos[LLAMA_MAX_EOS], n_eos;
} llama_config;

typedef struct llama_layer {
    float *in_norm, *post_norm;
    plm_weight q, k, v, o, gate, up, down;
    float *q_b, *k_b, *v_b, *o_b, *gate_b, *up_b, *down_b;
} llama_layer;

typedef struct llama_model {
    llama_config cfg;
    plm_weight embed, lm_head;
    float *norm;
    llama_layer *layers;
} llama_model;

/* The KV cache: per layer, K and V rows [cap x n_kv*head_dim] on the device. Layers may hold
 * different numbers of rows once pruning has dropped tokens from the deeper ones. */
typedef struct llama_kv {
    int cap, n_layers;
    int *len;          /* rows held per layer */
    int32_t *shift;    /* per layer: subtracted from new tokens' positions (a pruning stage
                          that renumbers positions shifts the layers after it) */
    float **k, **v;
    /* A decode step recorded once and replayed (backends with graph ops; llama_forward manages
     * these): the step reads each layer's position and cached rows from step_dev, which a small
     * copy of step_host refreshes before each replay. */
    void *graph;
    const void *graph_key[4]; /* the last step's model, x, logits, scratch: the recording's */
    void *step_dev;           /* [n_layers] positions, [n_layers] rows, then head_dim/2 freqs */
    void *step_host;
    int graph_state;          /* -1: off (a recording failed, or the shapes do not suit) */
} llama_kv;

/* Rows of keys and values held over all layers (for memory accounting). */
int64_t llama_kv_rows(const llama_kv *kv);
void llama_kv_clear(llama_kv *kv);

/* What a pruning hook sees after a layer: the layer's hidden states (already including the
 * layer's output), its queries (RoPE applied) and its KV rows. */
typedef struct llama_layer_view {
    plm_backend *be;
    int layer;
    float *x;          /* [t x hidden], device */
    int32_t *pos;      /* [t] original positions, host */
    int64_t t;
    const float *q;    /* [t x n_heads*head_dim], device */
    const float *k;    /* [k_len x n_kv*head_dim], device: this layer's cache */
    int64_t k_len, q_pos0;
} llama_layer_view;

/* Called after every layer of a forward pass. It may keep a subset of the rows for the layers
 * that follow by compacting v->x and v->pos in place (order kept) and returning the new row
 * count; returning v->t keeps them all. Negative: an error (the forward stops). */
typedef struct llama_hook {
    int64_t (*after_layer)(void *ctx, const llama_layer_view *v);
    /* Optional: before a layer's attention, may make it sparse (a->rows, a->bias: KV
     * policies) or compute it itself into a->out. Returns 0: run the dense op on a; 1: done;
     * negative: an error (the forward stops). */
    int (*before_attention)(void *ctx, int layer, plm_attn_args *a);
    void *ctx;
} llama_hook;

plm_status llama_load(llama_model *m, const llama_config *cfg, plm_wsrc *src, plm_wsrc *head,
                      plm_error *err);
void llama_unload(llama_model *m);

plm_status llama_kv_init(llama_kv *kv, const llama_config *cfg, plm_backend *be, int cap,
                         plm_error *err);
void llama_kv_free(llama_kv *kv, plm_backend *be);
/* Reallocates every layer's K/V to cap rows (< kv->cap), keeping the rows held: a KV policy's
 * evictions then free memory for real. On failure the old cache stays as it was. */
plm_status llama_kv_shrink(llama_kv *kv, const llama_config *c, plm_backend *be, int cap,
                           plm_error *err);

/* Float32 RoPE inverse frequencies (head_dim/2) for a forward pass whose longest position is
 * seq_len - 1, as transformers computes them for the config's rope type. */
void llama_rope_inv_freq(const llama_config *c, int64_t seq_len, float *inv_freq);

size_t llama_scratch_floats(const llama_config *c, int64_t t);

/* Runs t tokens whose input embeddings are x[t x hidden] (device; overwritten) at positions
 * pos[t] (host; compacted in place if a hook drops rows) after the cached ones, appends their
 * K/V to every layer, and writes logits for the last n_logits rows that survive into
 * logits[n_logits x vocab] (device). rope_len is the sequence length the dynamic RoPE variant
 * sizes itself by. The final-normed hidden states of those n_logits rows are left at the start
 * of scratch. Returns the rows that reached the last layer (t without a hook), or -1
 * when the hook failed. */
int64_t llama_forward(const llama_model *m, plm_backend *be, llama_kv *kv, float *x,
                      int32_t *pos, int64_t t, int64_t n_logits, float *logits,
                      int64_t rope_len, float *scratch, const llama_hook *hook);

#endif
