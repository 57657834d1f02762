/* The loops the CPU attention ops share (core/backend_cpu.c's dense attention and probs, the
 * sparse ops in backend_cpu_blocks.c / backend_cpu_delta.c, the KV store ops in
 * backend_cpu_thin.c / backend_cpu_int4.c / backend_cpu_bitmap.c). Every op runs the same
 * float arithmetic in the same order through these, which is what lets a store or sparse op
 * with nothing pruned reproduce the dense op bit for bit. */
#ifndef PLM_CORE_BACKEND_CPU_ATTN_H
#define PLM_CORE_BACKEND_CPU_ATTN_H

#include <math.h>

#include "core/backend.h"

/* Keys query i sees: up to its position when causal, never past tk. */
static inline int64_t cpu_attn_nk(const plm_attn_args *a, int64_t i)
{
    int64_t nk = a->causal ? a->q_pos0 + i + 1 : a->tk;
    return nk > a->tk ? a->tk : nk;
}

/* One key of the online softmax (running max *mx and normaliser *sum, so no score row is
 * stored): rescales *sum and acc[hd] when s is a new maximum, adds p = exp(s - max) to *sum
 * and returns p; the caller adds p times the value row to acc. */
static inline float cpu_softmax_step(float s, float *mx, float *sum, float *acc, int hd)
{
    if (s > *mx) {
        float r = expf(*mx - s);
        *sum *= r;
        for (int d = 0; d < hd; d++) acc[d] *= r;
        *mx = s;
    }
    float p = expf(s - *mx);
    *sum += p;
    return p;
}

static inline void cpu_acc_add(float *acc, float p, const float *v, int hd)
{
    for (int d = 0; d < hd; d++) acc[d] += p * v[d];
}

/* o[hd] = acc / sum, or 0 where the query saw no key (live == 0). */
static inline void cpu_attn_write(float *o, const float *acc, float sum, int live, int hd)
{
    for (int d = 0; d < hd; d++) o[d] = live ? acc[d] / sum : 0.0f;
}

/* q . key row j of kv head kh (unscaled), for the query head whose head_dim floats are q. */
typedef float (*cpu_key_dot)(void *ctx, const plm_attn_args *a, int kh, int64_t j,
                             const float *q);
/* Run once per query and head before its dot products (a store gathers the query there). */
typedef void (*cpu_query_begin)(void *ctx, int kh, const float *q);

/* attn_probs(a, per_head = 1) for query heads [h0, h1) over the keys `dot` scores (begin may be
 * NULL): per (query, head) the row maximum, the normaliser, then the probabilities, summed
 * over the queries into out [n_heads x tk]. Inline so that a constant dot is inlined too. */
static inline void cpu_probs_heads(const plm_attn_args *a, int64_t h0, int64_t h1,
                                   cpu_key_dot dot, cpu_query_begin begin, void *ctx)
{
    const int hd = a->head_dim, group = a->n_heads / a->n_kv;
    for (int64_t h = h0; h < h1; h++) {
        float *acc = a->out + h * a->tk;
        const int kh = (int)h / group;
        for (int64_t j = 0; j < a->tk; j++) acc[j] = 0;
        for (int64_t i = 0; i < a->tq; i++) {
            const float *q = a->q + i * a->q_stride + h * hd;
            const int64_t nk = cpu_attn_nk(a, i);
            if (begin) begin(ctx, kh, q);
            float mx = -INFINITY;
            double sum = 0;
            for (int pass = 0; pass < 3; pass++)
                for (int64_t j = 0; j < nk; j++) {
                    float s = dot(ctx, a, kh, j, q);
                    s *= a->scale;
                    if (pass == 0) mx = s > mx ? s : mx;
                    else if (pass == 1) sum += expf(s - mx);
                    else acc[j] += (float)(expf(s - mx) / sum);
                }
        }
        for (int64_t j = 0; j < a->tk; j++) acc[j] /= (float)a->tq;
    }
}

#endif
