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

/* The KV cache: per layer, K and V rows [cap x n_kv*head_dim] on the device. */
typedef struct llama_kv {
    int cap, n, n_layers;
    float **k, **v;
} llama_kv;

plm_status llama_load(llama_model *m, const llama_config *cfg, plm_wsrc *src, plm_wsrc *head,
                      plm_error *err);
void llama_unload(llama_model *m);

plm_status llama_kv_init(llama_kv *kv, const llama_config *cfg, plm_backend *be, int cap,
                         plm_error *err);
void llama_kv_free(llama_kv *kv, plm_backend *be);

/* Float32 RoPE inverse frequencies (head_dim/2) for a forward pass whose longest position is
 * seq_len - 1, as transformers computes them for the config's rope type. */
void llama_rope_inv_freq(const llama_config *c, int64_t seq_len, float *inv_freq);

size_t llama_scratch_floats(const llama_config *c, int64_t t);

/* Runs t tokens whose input embeddings are x[t x hidden] (device; overwritten) at positions
 * pos[t] (host) after the kv->n cached ones, appends their K/V, and writes logits for the last
 * n_logits rows into logits[n_logits x vocab] (device). rope_len is the sequence length the
 * dynamic RoPE variant sizes itself by. */
void llama_forward(const llama_model *m, plm_backend *be, llama_kv *kv, float *x,
                   const int32_t *pos, int64_t t, int64_t n_logits, float *logits,
                   int64_t rope_len, float *scratch);

#endif
