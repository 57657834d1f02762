/* Block-sparse prefill primitives (FlexPrefill, Lai et al., ICLR 2025): estimate per head where
 * the attention of a prompt goes, at the granularity of (query block, key block) tiles, and
 * build the tile mask that the backend's attention_blocks op computes. Host arrays only.
 *
 * Layouts follow plm_attn_args: queries [n x n_heads x hd] and keys [n x n_kv x hd], row strides
 * in floats; heads share kv heads in groups of n_heads / n_kv. The mask is
 * [n_heads x n_qb x n_kb] bytes, query blocks counted from the first query of the pass, key
 * blocks by absolute key index (core/backend.h, attention_blocks). */
#ifndef PLM_PRUNE_KV_BLOCKS_H
#define PLM_PRUNE_KV_BLOCKS_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

/* Jensen-Shannon divergence (natural log) of two distributions over n bins, 0 log 0 = 0.
 * FlexPrefill compares sqrt(JS) with tau (official code: square_root_js_divergence). */
double kv_js_divergence(const float *p, const float *q, int64_t n);

/* Fewest entries of x (n >= 1, x >= 0) whose sum reaches gamma * sum(x), taken from the largest
 * down (ties: lower index first). order (may be NULL) receives the chosen indices in that order.
 * Returns the count (at least 1), -1 when out of memory. */
int64_t kv_cover_count(const float *x, int64_t n, double gamma, int32_t *order);

/* Row means of every group of `block` rows of x [n x width] (stride in floats): out
 * [ceil(n/block) x width]; the last group is averaged over the rows it has (the official code
 * rescales the padded mean the same way). */
void kv_pool_rows(const float *x, int64_t n, int64_t stride, int64_t width, int block, float *out);

/* The shape of one FlexPrefill decision. */
typedef struct kv_fp_shape {
    int n_heads, n_kv, head_dim;
    int64_t tq, tk;      /* queries of the pass and keys they see (causal, q_pos0 = tk - tq) */
    int64_t q_stride, k_stride;
    float scale;         /* softmax scale, 1/sqrt(hd) */
    int block;
} kv_fp_shape;

/* Per head h, what the last query block (its n_last queries, the last of the pass) attends to:
 * the true causal attention softmax(scale q k^T), averaged over the n_last queries, summed
 * into key blocks (vert_blk [n_heads x n_kb], FlexPrefill's a-hat, §3.2) and into diagonal
 * blocks by distance (slash_blk [n_heads x n_kb], block s = distances [s*block, (s+1)*block)).
 * vert_tok / slash_tok [n_heads x tk] (may be NULL) receive the token-level averages from which
 * the budgets are counted. Returns PLM_E_NOMEM when scratch cannot be had. */
plm_status kv_fp_last_block(const kv_fp_shape *s, const float *q_last, int64_t n_last,
                            const float *k, float *vert_blk, float *slash_blk, float *vert_tok,
                            float *slash_tok, plm_error *err);

/* The pooled estimate a-bar (§3.2): softmax over key blocks of scale * mean(q_last) . mean_kb(K)
 * per head; k_pool [n_kb x n_kv*hd] from kv_pool_rows. out [n_heads x n_kb]. */
void kv_fp_pooled_estimate(const kv_fp_shape *s, const float *q_last, int64_t n_last,
                           const float *k_pool, float *out);

/* Key block on the diagonal of query block qb: the block of the last key its last query sees. */
int64_t kv_fp_diag(const kv_fp_shape *s, int64_t qb);

/* Vertical-slash tiles (§3.3, Alg. 3): for every query block qb, the key blocks in `vert` at or
 * before its diagonal, and the tiles (qb, diag(qb) - s) for every slash block s in `slash`.
 * ORs into mask_h [n_qb x n_kb]. */
void kv_fp_vertical_slash(const kv_fp_shape *s, uint8_t *mask_h, const int32_t *vert,
                          int64_t n_vert, const int32_t *slash, int64_t n_slash);

/* Query-aware tiles (§3.3): per query block the causal softmax over key blocks of scale *
 * mean_qb(Q) . mean_kb(K) (rows of q_pool [n_qb x n_heads*hd]); every row sums to 1, and the
 * fewest tiles over the whole grid whose estimates reach gamma * n_qb are ORed into mask_h.
 * Returns the tiles chosen, -1 when out of memory. */
int64_t kv_fp_query_aware(const kv_fp_shape *s, int h, const float *q_pool, const float *k_pool,
                          double gamma, uint8_t *mask_h);

/* What FlexPrefill decided for one head. */
typedef struct kv_fp_head {
    float js;          /* sqrt(JS(a-bar, a-hat)) */
    int query_aware;   /* js < tau */
    int64_t n_vert, n_slash, n_tiles;
} kv_fp_head;

typedef struct kv_fp_params {
    double gamma, tau;
    int block;
    int64_t min_budget, max_budget; /* tokens; max_budget <= 0: none */
} kv_fp_params;

/* The whole decision (§3, Alg. 1) from host arrays: q_last [block x n_heads*hd] are the last
 * n_last = min(block, tq) queries of the pass, q_pool [n_qb x n_heads*hd] the per-block query
 * means (kv_pool_rows over all tq queries), k [tk x n_kv*hd] every key. Fills mask
 * [n_heads x n_qb x n_kb] and, when heads != NULL, heads[n_heads]. */
plm_status kv_flexprefill_mask(const kv_fp_shape *s, const kv_fp_params *p, const float *q_last,
                               const float *q_pool, const float *k, uint8_t *mask,
                               kv_fp_head *heads, plm_error *err);

/* The `flexprefill` KV policy (prune/kv_flexprefill.c) deciding one layer's prefill mask from
 * host arrays laid out as above with contiguous rows (q: n_heads*hd floats, k: n_kv*hd):
 * q_last the last min(block, tq) queries, q_pool the per-block query means, k all tk keys.
 * *mask ([n_heads x n_qb x n_kb], policy-owned, valid until the next call) and *block receive
 * the result. tq and tk may not exceed the prompt length given to begin. */
typedef struct kv_policy kv_policy;
plm_status kv_flexprefill_decide(kv_policy *p, const float *q_last, const float *q_pool,
                                 const float *k, int64_t tq, int64_t tk, const uint8_t **mask,
                                 int *block, plm_error *err);

/* The policy's tile side (its block=): the glue pools the queries per block of this size. */
int kv_flexprefill_block(const kv_policy *p);

/* Fraction of the causal tiles a mask computes (the tiles with any key a query can see). */
double kv_blocks_density(const uint8_t *mask, int n_heads, int64_t tq, int64_t tk, int block);

#endif
