/* The thin-key (ThinK) and int4 (KIVI) stores on a session's KV cache: api/kv_glue.c hands them
 * the plans' store requests, the merges and keep lists of every plan, and the attention and
 * score calls of layers that hold stored rows; this file keeps one store of each kind per layer
 * (prune/kv_thin.h, prune/kv_int4.h) and routes those calls to it. */
#ifndef PLM_API_KV_STORE_GLUE_H
#define PLM_API_KV_STORE_GLUE_H

#include "api/session_internal.h"
#include "prune/kv.h"
#include "prune/kv_int4.h"
#include "prune/kv_thin.h"

typedef struct kv_stores {
    int n_layers;
    plm_kv_thin *thin; /* [n_layers]: .k is NULL until a plan gives the layer channels */
    plm_kv_int4 *q4;   /* [n_layers]: .k_codes is NULL until a plan quantises the layer */
    float *work;       /* split-K scratch every layer's attention shares (backend) */
    int64_t work_floats;
} kv_stores;

/* Sizes ks for the model's layers (nothing allocated on the backend yet). */
plm_status kv_stores_begin(plm_session *s, kv_stores *ks);
void kv_stores_release(plm_session *s, kv_stores *ks);
/* 1 when a store exists for the layer (even with no rows yet). */
int kv_stores_has(const kv_stores *ks, int layer);
/* Rows the layer's store holds, over all kv heads (0 without a store). */
int64_t kv_stores_rows(const kv_stores *ks, int layer);

/* The store side of a plan, after its merges and keep list: ThinK's channels (n_chan > 0: make
 * rows [0, chan_upto) thin) or KIVI's quantisation (quant_group > 0: store the old rows). */
plm_status kv_stores_plan(plm_session *s, kv_stores *ks, int layer, const kv_plan *pl,
                          const char *who);
/* A plan's merges on a layer with a store (K, and V where the store holds it). */
plm_status kv_stores_mix(plm_session *s, kv_stores *ks, int layer, const int32_t *head,
                         const int32_t *dst, const int32_t *src, const float *a, const float *b,
                         int64_t n);
/* A plan's keep list on the layer's stored rows (the dense cache is compacted by the caller). */
plm_status kv_stores_compact(plm_session *s, kv_stores *ks, int layer, const int32_t *keep,
                             int64_t n_keep);
/* attention() / attn_probs(per_head) for a layer whose store holds rows. */
plm_status kv_stores_attend(plm_session *s, kv_stores *ks, int layer, const plm_attn_args *a);
plm_status kv_stores_probs(plm_session *s, kv_stores *ks, int layer, const plm_attn_args *a);
/* Host copies of the layer's K and V ([len x kv_stride]) get the stored rows as attention reads
 * them. */
plm_status kv_stores_download(plm_session *s, kv_stores *ks, int layer, float *k, float *v,
                              int64_t kv_stride);
/* Bytes of keys and values the layer holds with its store, len rows per kv head. */
uint64_t kv_stores_bytes(const plm_session *s, const kv_stores *ks, int layer, int64_t len);

#endif
