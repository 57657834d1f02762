/* The int4 KV store of KIVI ("KIVI: A Tuning-Free Asymmetric 2bit Quantization for KV Cache",
 * Liu et al., ICML 2024, arXiv:2402.02750), at 4 bits: layout, host side and the quantiser.
 *
 * The rule (§3-4; the code's quant/new_pack.py): asymmetric min/max quantisation, code =
 * round(clamp((x - min) / scale, 0, 15)) with scale = (max - min) / 15 and x' = code * scale +
 * min. Keys have outlier *channels*, so they are quantised per channel, the min and scale shared
 * by a group of `group` consecutive tokens; values have no channel structure and are
 * quantised per token, the min and scale shared by `vgroup` = min(group, head_dim) consecutive
 * channels. The newest rows stay float32 (the residual), because per-channel key groups need
 * `group` tokens to exist and recent tokens matter most.
 *
 * Layout (plm_kv_int4 in core/backend_kvstore.h), row-major like the dense cache so a warp
 * reads one row of one head as one run and compaction moves whole rows:
 *   codes   [cap x n_kv x head_dim/2] bytes for K and for V: channel d in byte d/2, low nibble
 *           for even d;
 *   k_slot  [cap x n_kv] int32: the key group of each stored row. Eviction can leave a group
 *           with any subset of its rows, so rows name their group's parameters instead of
 *           finding them by position;
 *   k_mn/k_sc [n_kv x n_slots x head_dim]: per key group and channel; a head's groups are
 *           numbered in the order they were made (at most cap / group);
 *   v_mn/v_sc [cap x n_kv x n_vg]: per stored row and channel group.
 * Bytes per stored row and kv head: head_dim (both codes) + 4 + 8 * n_vg, plus 8 * head_dim per
 * live key group; head_dim 128, group 32: 164 + 32 = 196 vs 1024 float32 (5.2x).
 *
 * How the glue (api/kv_store_glue.c) drives it, per layer whose plan gives quant_group > 0:
 *   kv_int4_init(&st, n_kv, head_dim, group, cap, err); kv_int4_alloc(be, &st, err);
 *   after each pass: kv_int4_advance(be, &st, k_cache, v_cache, kv_stride, len, recent, err)
 *   per later plan: kv_int4_mix (merges, before) and kv_int4_compact (keep lists)
 *   per later attention: kv_int4_attend; per score request: kv_int4_probs
 *   kv_int4_release(be, &st) when the generation ends. */
#ifndef PLM_PRUNE_KV_INT4_H
#define PLM_PRUNE_KV_INT4_H

#include <stddef.h>
#include <stdint.h>

#include "core/backend_kvstore.h"
#include "core/err.h"

/* Fills st's shape: n_kv heads of head_dim (even, 2..512, a multiple of min(group,
 * head_dim)), key groups of `group` rows (1..1024), cap rows; pointers NULL. */
plm_status kv_int4_init(plm_kv_int4 *st, int n_kv, int head_dim, int group, int64_t cap,
                        plm_error *err);
/* One be->alloc for every array plus the host bookkeeping; nothing stored yet. */
plm_status kv_int4_alloc(plm_backend *be, plm_kv_int4 *st, plm_error *err);
void kv_int4_release(plm_backend *be, plm_kv_int4 *st);
int64_t kv_int4_work_floats(int n_heads, int head_dim, int64_t tq);

/* Per kv head, stores the oldest float rows `group` at a time while at least recent + group
 * of the head's len rows are float, so between recent and recent + group - 1 stay float. */
plm_status kv_int4_advance(plm_backend *be, plm_kv_int4 *st, const float *k, const float *v,
                           int64_t kv_stride, int64_t len, int64_t recent, plm_error *err);
/* Applies a keep list ([n_kv x n_keep], ascending per head) to the stored rows. */
plm_status kv_int4_compact(plm_backend *be, plm_kv_int4 *st, const int32_t *keep,
                           int64_t n_keep, plm_error *err);
/* The ops' merges (core/backend_kvstore.h), checked against the layer's len rows. */
plm_status kv_int4_mix(plm_backend *be, const plm_kv_int4 *st, float *k, float *v,
                       int64_t kv_stride, int64_t len, const int32_t *head, const int32_t *dst,
                       const int32_t *src, const float *a, const float *b, int64_t n,
                       plm_error *err);
plm_status kv_int4_attend(plm_backend *be, const plm_attn_args *a, const plm_kv_int4 *st,
                          plm_error *err);
plm_status kv_int4_probs(plm_backend *be, const plm_attn_args *a, const plm_kv_int4 *st,
                         plm_error *err);
/* Overwrites the stored rows of host copies k, v ([len x kv_stride]) with their dequantised
 * values: what the attention reads. */
plm_status kv_int4_download(plm_backend *be, const plm_kv_int4 *st, float *k, float *v,
                            int64_t kv_stride, plm_error *err);
/* Bytes the store holds: stored rows (codes, slots, value parameters) and live key groups. */
size_t kv_int4_bytes(const plm_kv_int4 *st);
/* Rows stored over all kv heads. */
int64_t kv_int4_rows(const plm_kv_int4 *st);

/* ---- host side: the rule, the CPU op bodies and the tests' references -------------------- */
/* min and scale of n values x[i * stride]. */
void kv_int4_params(const float *x, int64_t n, int64_t stride, float *mn, float *sc);
/* The code of x (0..15) under mn/sc (clamped: x outside the range takes the nearest end). */
static inline int kv_int4_code(float x, float mn, float sc)
{
    if (!(sc > 0)) return 0;
    float t = (x - mn) / sc;
    t = t < 0 ? 0 : t > 15 ? 15 : t;
    /* round half to even, as torch.round in the code; the CUDA kernel uses rintf too */
    return (int)__builtin_rintf(t);
}
static inline float kv_int4_value(int code, float mn, float sc) { return (float)code * sc + mn; }
/* Rows [r0, r1) of head h into st (host pointers), key groups into slots slot0, ... */
void kv_int4_quantize_host(const plm_kv_int4 *st, const float *k, const float *v,
                           int64_t kv_stride, int h, int64_t r0, int64_t r1, int64_t slot0);
/* Stored row r of head h dequantised into k[head_dim] and v[head_dim] (either may be NULL). */
void kv_int4_row_host(const plm_kv_int4 *st, int64_t r, int h, float *k, float *v);
/* Re-encodes stored row r of head h from k, v (head_dim each): keys against the row's key
 * group, values with fresh parameters (the mix rule). */
void kv_int4_encode_row_host(const plm_kv_int4 *st, int64_t r, int h, const float *k,
                             const float *v);
/* The reference attention (host pointers, double accumulation). */
plm_status kv_int4_attention_ref(const plm_attn_args *a, const plm_kv_int4 *st, plm_error *err);

#endif
