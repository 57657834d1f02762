/* What the compressed KV stores (prune/kv_thin.c, prune/kv_int4.c, prune/kv_bitmap.c) share:
 * their array alignment and split-K scratch size, the checks of the calls into the backend,
 * the failure of their allocation, the keep-list prefix they compact with, and the skeleton of
 * their reference attention. Each store names itself in the messages (`store`, e.g. "int4"). */
#ifndef PLM_PRUNE_KV_STORE_H
#define PLM_PRUNE_KV_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "core/backend.h"
#include "core/err.h"

/* n rounded up to the 256 bytes each of a store's arrays starts on. */
size_t kv_store_align(size_t n);
/* Scratch floats that let attend split each query head's keys over up to 128 blocks: per split
 * and query head the running max, the normaliser and head_dim sums. */
int64_t kv_store_work_floats(int n_heads, int head_dim, int64_t tq);

/* PLM_E_UNSUPPORTED "the <backend> backend has no <what>" unless `present`. */
plm_status kv_store_need_ops(plm_backend *be, int present, const char *what, plm_error *err);
/* PLM_E_NOMEM "<store>: cannot allocate <bytes> bytes" with the backend's reason when p, its
 * block, is what failed; releases p otherwise (a host array failed). */
plm_status kv_store_alloc_failed(plm_backend *be, void *p, size_t bytes, const char *store,
                                 plm_error *err);
/* The query side of attend/probs against a store of n_kv heads of head_dim: "<store> <what>:"
 * messages (what: "attention", "scores"). */
plm_status kv_store_check_attn(const plm_attn_args *a, int n_kv, int head_dim, const char *store,
                               const char *what, plm_error *err);
/* The merges (head[m], dst[m], src[m]) against n_kv heads of len rows. */
plm_status kv_store_check_merges(int n_kv, int64_t len, const int32_t *head, const int32_t *dst,
                                 const int32_t *src, int64_t n, const char *store,
                                 plm_error *err);
/* The largest and the sum of n[0..n_kv) (0 when n is NULL). */
int64_t kv_store_most(const int32_t *n, int n_kv);
int64_t kv_store_total(const int32_t *n, int n_kv);
/* The first `most` entries of every head's keep list ([n_kv x n_keep], ascending), an
 * ascending list of their own: keep itself when most == n_keep, else copied into scratch
 * ([n_kv x most]), which is returned. */
const int32_t *kv_store_keep_prefix(const int32_t *keep, int64_t n_keep, int n_kv, int64_t most,
                                    int32_t *scratch);

/* Row j of kv head kh as a store's attention reads it (v: the value row, else the key row):
 * either a pointer into a->k / a->v or the row written into buf[head_dim] and buf returned. */
typedef const float *(*kv_store_row_fn)(const void *st, const plm_attn_args *a, int v, int64_t j,
                                        int kh, float *buf);
/* The stores' reference attention (host pointers, double accumulation) over the rows `row`
 * gives: a->out [tq x n_heads x head_dim]. */
plm_status kv_store_attention_ref(const plm_attn_args *a, const void *st, kv_store_row_fn row,
                                  const char *store, plm_error *err);

#endif
