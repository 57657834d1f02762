/* DeltaLLM (Qi, Gao, Ren, Chen, 2025, arXiv 2507.19608): host reference of its attention and
 * the parameters of the `deltallm` KV policy (prune/kv_deltallm.c). The backend op that runs it
 * is attention_delta (core/backend.h); docs/methods/kv/deltallm.md says what is and is not
 * taken from the paper. */
#ifndef PLM_PRUNE_KV_DELTALLM_H
#define PLM_PRUNE_KV_DELTALLM_H

#include <stdint.h>

#include "core/backend.h"
#include "core/err.h"

/* Delta network over the queries q [tq x n_heads*hd] (row stride q_stride), in order: element d
 * of head h moves its tracked value state[h*hd + d] to q only when |q - state| > theta (state
 * starts at +inf for a new sequence, so the first query is sent whole). q_ref
 * [tq x n_heads x hd] receives the tracked rows. Returns how many elements were sent (non-zero
 * deltas); the delta sparsity is 1 - that / (tq * n_heads * hd). */
int64_t kv_delta_track(const float *q, int64_t tq, int64_t q_stride, int n_heads, int hd,
                       float theta, float *state, float *q_ref);

/* The attention DeltaLLM computes, directly and in double: attention_delta's definition with
 * host pointers (a->out written; q_ref from kv_delta_track). */
void kv_deltallm_attention(const plm_attn_args *a, const float *q_ref, int64_t window);

/* The smallest theta (to 1e-4 relative) whose delta sparsity over q reaches `sparsity` from a
 * fresh state (the paper reports ~60% in the prefill). -1 when out of memory. */
float kv_deltallm_calibrate(const float *q, int64_t tq, int64_t q_stride, int n_heads, int hd,
                            double sparsity);

typedef struct kv_policy kv_policy;
/* The policy's local window (keys scored exactly) and theta (0: calibrate to `sparsity`). */
void kv_deltallm_params(const kv_policy *p, int64_t *window, float *theta, double *sparsity);

#endif
