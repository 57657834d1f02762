/* ThinK's thin-key store ("ThinK: Thinner Key Cache by Query-Driven Pruning", Xu et al. 2024,
 * arXiv:2407.21018): the layout, its host side and ThinK's channel rule.
 *
 * The rule (§3.2; prune/kv_think.c applies it once, after the prefill): per layer and kv head,
 * key channel d scores ||Q_win[:, d]|| * ||K[:, d]||, the Frobenius norm of its rank-one share
 * Q_win[:, d] K[:, d]^T of the observation window's attention logits; the head keeps its
 * head_dim - floor(ratio * head_dim) highest-scored channels. From then on the old rows' keys
 * hold only those channels, and a query's dot product with them runs over those channels only
 * (the pruned ones are dropped from q . k, which equals zeroing them in the key).
 *
 * Layout (plm_kv_thin in core/backend_kvstore.h): the thin keys are a [cap x n_kv*n_chan]
 * float array, the dense cache's layout with head_dim replaced by n_chan, so:
 *   - a thin row is n_chan consecutive floats: a warp reads it as one contiguous run;
 *   - the backend's gather_heads compacts it with the same keep list as the dense cache, and
 *     the stored rows of each head stay a prefix [0, n_thin[h]);
 *   - the channel list (n_kv x n_chan, ascending) is all the index data there is: the query
 *     gathers its kept channels once per attention call, not per row.
 * Bytes per thin row and kv head: 4 * n_chan for the key (values stay dense, 4 * head_dim);
 * dense float32 K+V is 8 * head_dim. head_dim 128, ratio 0.4: 820 vs 1024 bytes (K alone 308
 * vs 512).
 *
 * How the glue (api/kv_store_glue.c) drives it, per layer whose plan gives n_chan > 0:
 *   kv_thin_init(&st, n_kv, head_dim, n_chan, cap, err);
 *   kv_thin_alloc(be, &st, chan, err);              (chan: host [n_kv x n_chan])
 *   kv_thin_compress(be, &st, k_cache, kv_stride, upto, err);   rows [0, upto) become thin
 *   per later plan: kv_thin_mix (merges, before) and kv_thin_compact (keep lists)
 *   per later attention: kv_thin_attend(be, &args, &st, err), args as for attention() over the
 *   whole cache; per score request: kv_thin_probs
 *   kv_thin_release(be, &st) when the generation ends. */
#ifndef PLM_PRUNE_KV_THIN_H
#define PLM_PRUNE_KV_THIN_H

#include <stddef.h>
#include <stdint.h>

#include "core/backend_kvstore.h"
#include "core/err.h"

/* Channels a head keeps when `ratio` of head_dim is pruned: head_dim - floor(ratio *
 * head_dim), at least 1 (ThinK's code prunes int(head_dim * ratio)). */
int kv_think_keep(int head_dim, double ratio);

/* ThinK's selection for every kv head: q [n_q x q_stride] holds the observation window's
 * queries (query head h at column h * hd), k [len x kv_stride] the layer's keys (kv head h at
 * column h * hd). A kv head's channel score sums its query heads' squared window norms (GQA:
 * the group shares the stored keys, so it shares the choice) times the key column's squared
 * norm; chan [n_kv x keep] receives the `keep` best per head, ascending (ties: lower channel).
 * Fails only when out of memory. */
plm_status kv_think_channels(const float *q, int64_t n_q, int64_t q_stride, const float *k,
                             int64_t len, int64_t kv_stride, int n_heads, int n_kv, int hd,
                             int keep, int32_t *chan, plm_error *err);

/* Fills st's shape (n_kv heads of head_dim 1..512 keeping n_chan channels, cap rows); pointers
 * NULL. */
plm_status kv_thin_init(plm_kv_thin *st, int n_kv, int head_dim, int n_chan, int64_t cap,
                        plm_error *err);
/* One be->alloc for chan, n_thin and the thin keys, plus the host copies; uploads chan (host
 * [n_kv x n_chan], ascending per head, checked) and sets every n_thin to 0. */
plm_status kv_thin_alloc(plm_backend *be, plm_kv_thin *st, const int32_t *chan, plm_error *err);
void kv_thin_release(plm_backend *be, plm_kv_thin *st);
/* Scratch floats that let attend split each query head's keys over up to 128 blocks. */
int64_t kv_thin_work_floats(int n_heads, int head_dim, int64_t tq);

/* Rows [n_thin, upto) of every kv head become thin (all heads must hold the same n_thin: the
 * store is filled once, before any compaction). */
plm_status kv_thin_compress(plm_backend *be, plm_kv_thin *st, const float *k, int64_t kv_stride,
                            int64_t upto, plm_error *err);
/* Applies a keep list ([n_kv x n_keep], ascending per head, rows < the layer's length) to the
 * thin rows: each head keeps its listed thin rows, still a prefix. */
plm_status kv_thin_compact(plm_backend *be, plm_kv_thin *st, const int32_t *keep, int64_t n_keep,
                           plm_error *err);
/* The ops' merges (core/backend_kvstore.h), checked against the layer's len rows. */
plm_status kv_thin_mix(plm_backend *be, const plm_kv_thin *st, float *k, int64_t kv_stride,
                       int64_t len, const int32_t *head, const int32_t *dst, const int32_t *src,
                       const float *a, const float *b, int64_t n, plm_error *err);
/* Check a against st, then the backend's attend / probs. */
plm_status kv_thin_attend(plm_backend *be, const plm_attn_args *a, const plm_kv_thin *st,
                          plm_error *err);
plm_status kv_thin_probs(plm_backend *be, const plm_attn_args *a, const plm_kv_thin *st,
                         plm_error *err);
/* Overwrites rows [0, n_thin[h]) of head h in k_host ([len x kv_stride], a host copy of the
 * dense cache) with the thin rows, zero in the pruned channels: what the attention reads. */
plm_status kv_thin_download(plm_backend *be, const plm_kv_thin *st, float *k_host,
                            int64_t kv_stride, plm_error *err);
/* Bytes the store holds: the thin rows and the channel lists. */
size_t kv_thin_bytes(const plm_kv_thin *st);
/* Rows stored over all kv heads (sum of n_thin). */
int64_t kv_thin_rows(const plm_kv_thin *st);

/* ---- host side: the CPU op bodies and the tests' references ------------------------------ */
/* Rows [r0, r1) of every head into st (host pointers). */
void kv_thin_compress_host(const plm_kv_thin *st, const float *k, int64_t kv_stride, int64_t r0,
                           int64_t r1);
/* x[hd] = thin row t expanded (0 in the pruned channels). */
void kv_thin_expand_row(const float *t, const int32_t *chan, int n_chan, int hd, float *x);
/* The reference attention (host pointers, double accumulation), as attend computes it. */
plm_status kv_thin_attention_ref(const plm_attn_args *a, const plm_kv_thin *st, plm_error *err);

#endif
