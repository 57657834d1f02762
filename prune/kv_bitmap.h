/* Mustafar's bitmap-compressed KV cache ("Mustafar: Promoting Unstructured Sparsity for KV Cache
 * Pruning in LLM Inference", 2025, arXiv:2505.22913): the store's layout and its host side.
 *
 * The rule (the paper's per-token magnitude pruning, "Kt_Mag_Vt_Mag" in its code): each K row
 * of a kv head (head_dim values of one token) keeps its `keep = head_dim - floor(sparsity *
 * head_dim)` largest-magnitude values and zeroes the rest; V rows likewise with their own
 * sparsity. The pruned rows are stored as bitmap + packed non-zeros (the paper's bitmap-based
 * sparse format, kernel/compression.py in its code) and attention runs on that form directly.
 *
 * Layout (plm_kv_bitmap in core/backend.h), chosen for the decode kernel (cuda/cu_kv_bitmap.cu):
 *   - per kv head contiguous: head h's rows are one run, so a block reading a range of rows of a
 *     head reads one contiguous range of bitmaps and one of values;
 *   - the bitmap of a row is ceil(head_dim / 64) uint64 words (the paper's 64-wide tiles;
 *     two words = 16 bytes for head_dim 128), bit d % 64 of word d / 64 = channel d;
 *   - the kept values are packed in channel order into a fixed slot of `slots` floats, keep
 *     rounded up to 4. Every row keeps exactly `keep` values (the bitmap marks kept channels,
 *     not non-zero ones), so the slot of row r is at r * slots: no per-row offsets, no prefix
 *     sum over rows, and a row's values are one 16-byte aligned run. The paper's format pads
 *     each 64-tile's count to 8 halves and keeps a per-tile offset array because its counts vary
 *     (it keeps |x| >= the k-th value, which ties can exceed); a fixed count removes both.
 *   A lane that owns channels d0..d0+3 (within one word) finds its values at slot
 *   popcount(bits below d0): a warp reads a row's values as one contiguous, coalesced run.
 *
 * Bytes per row and kv head: 8 * words * 2 + 4 * (k_slots + v_slots); dense float32 is
 * 8 * head_dim. head_dim 128: 1024 dense; 544 at sparsity 0.5; 352 at 0.7.
 *
 * How the glue (api/kv_glue.c) drives it, per layer that a plan gives compress_upto > 0:
 *   1. once, at the first such plan:
 *        plm_kv_bitmap kb;
 *        kv_bitmap_init(&kb, n_kv, head_dim, cap, plan.sparsity_k, plan.sparsity_v, err);
 *        kv_bitmap_alloc(be, &kb, err);            (one be->alloc of kv_bitmap_bytes(&kb, cap))
 *      and once per backend a split-K scratch shared by every layer's store (ops run in stream
 *      order, so one buffer serves all):
 *        n = kv_bitmap_work_floats(n_heads, head_dim, 1);
 *        work = be->ops->alloc(be, n * sizeof(float));  kb.work = work; kb.work_floats = n;
 *   2. after the layer's pass appended its rows (the plan's moment):
 *        kv_bitmap_compress(be, &kb, k_cache, v_cache, kv_stride, plan.compress_upto, err);
 *      compresses rows [kb.n_rows, compress_upto) of every kv head from the dense cache (on the
 *      device: no host copy) and sets kb.n_rows. The dense rows below n_rows are dead from then
 *      on (never read again); the glue may keep them (simplest) or reuse their memory.
 *   3. every later attention of that layer (decode, tq = 1, or any tq with causal masking):
 *        kv_bitmap_attend(be, &args, &kb, err);
 *      with args exactly as for be->ops->attention over the whole cache (tk = rows held, k/v
 *      the dense cache): rows [0, kb.n_rows) come from kb, rows [kb.n_rows, tk) from k/v.
 *   4. kv_bitmap_release(be, &kb) when the generation ends (and be->ops->release on work).
 * Rows must not be reordered or evicted below n_rows once compressed (Mustafar evicts nothing;
 * compose it after eviction policies only if their plans never touch compressed rows).
 * Both ops are on be->ops->kv_bitmap (core/backend.h): the CPU backend's in
 * core/backend_cpu_bitmap.c, the CUDA backend's in cuda/cu_kv_bitmap.cu. */
#ifndef PLM_PRUNE_KV_BITMAP_H
#define PLM_PRUNE_KV_BITMAP_H

#include <stddef.h>
#include <stdint.h>

#include "core/backend.h"
#include "core/err.h"

/* Values a row of head_dim keeps at `sparsity` (in [0, 1)): head_dim - floor(sparsity *
 * head_dim), at least 1. */
int kv_bitmap_keep(int head_dim, double sparsity);

/* Fills kb's shape for n_kv heads of head_dim (1..512; the CUDA ops take 1..256) and cap rows
 * at the given sparsities ([0, 1)); pointers NULL, n_rows 0. */
plm_status kv_bitmap_init(plm_kv_bitmap *kb, int n_kv, int head_dim, int64_t cap,
                          double sparsity_k, double sparsity_v, plm_error *err);
/* Bytes `rows` compressed rows of every kv head take (bitmaps and values of K and V, with the
 * 256-byte alignment of each of the four arrays): kv_bitmap_bytes(kb, kb->cap) is what
 * kv_bitmap_alloc allocates. */
size_t kv_bitmap_bytes(const plm_kv_bitmap *kb, int64_t rows);
/* The same rows held dense (float32 K and V). */
size_t kv_bitmap_dense_bytes(const plm_kv_bitmap *kb, int64_t rows);
/* One be->alloc for the four arrays; kb->n_rows = 0. Free with kv_bitmap_release. */
plm_status kv_bitmap_alloc(plm_backend *be, plm_kv_bitmap *kb, plm_error *err);
void kv_bitmap_release(plm_backend *be, plm_kv_bitmap *kb);
/* Scratch floats that let attend split every query head's key range over up to 128 blocks
 * (beyond that, or with less scratch, it splits less). */
int64_t kv_bitmap_work_floats(int n_heads, int head_dim, int64_t tq);

/* Compresses rows [kb->n_rows, upto) of the dense cache k/v (backend pointers, [rows x
 * kv_stride]) through be->ops->kv_bitmap and sets kb->n_rows = upto. upto <= n_rows: nothing. */
plm_status kv_bitmap_compress(plm_backend *be, plm_kv_bitmap *kb, const float *k,
                              const float *v, int64_t kv_stride, int64_t upto, plm_error *err);
/* Checks a and kb agree, then be->ops->kv_bitmap->attend. A device failure surfaces later, in
 * be->ops->error, like every op's. */
plm_status kv_bitmap_attend(plm_backend *be, const plm_attn_args *a, const plm_kv_bitmap *kb,
                            plm_error *err);

/* ---- host side: the rule itself, the CPU backend's ops and the tests' references --------- */
/* One row: bits (ceil(hd/64) words) marks the keep largest |x| (ties: lower channel), vals
 * (slots floats) receives them in channel order, then zeros. */
void kv_bitmap_compress_row(const float *x, int hd, int keep, int slots, uint64_t *bits,
                            float *vals);
/* x[hd] = the row with pruned channels 0. */
void kv_bitmap_decompress_row(const uint64_t *bits, const float *vals, int hd, float *x);
/* Rows [r0, r1) of every kv head, kb holding host pointers (the CPU op). */
void kv_bitmap_compress_host(const plm_kv_bitmap *kb, const float *k, const float *v,
                             int64_t kv_stride, int64_t r0, int64_t r1);
/* Writes the pruned rows [r0, r1) back into k/v ([rows x kv_stride]); for tests. */
void kv_bitmap_decompress_host(const plm_kv_bitmap *kb, int64_t r0, int64_t r1, float *k,
                               float *v, int64_t kv_stride);
/* The reference attend (host pointers): decompresses each row it needs and runs a two-pass
 * softmax in double, per query and head, GQA and causal as attention(). */
plm_status kv_bitmap_attention_ref(const plm_attn_args *a, const plm_kv_bitmap *kb,
                                   plm_error *err);

#endif
