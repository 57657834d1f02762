/* DeltaLLM attention on the CPU (Qi et al., 2025, "DeltaLLM: A Training-Free Framework
 * Exploiting Temporal Sparsity for Efficient Edge LLM Inference"), computed the way an edge
 * device saves work: per head, the queries are taken in order and each one's delta-tracked row
 * ref changes only in the elements whose change exceeds theta (a delta network, as in Gao et
 * al.'s DeltaRNN). The scores of the keys outside the local window are therefore updated by
 * the sparse delta alone, s_j += sum over changed d of delta_d * k_j[d], instead of a full dot
 * product; a key that leaves the window gets one full dot with ref. Keys inside the window are
 * scored exactly. The softmax and value sum are the dense op's, in the same order, so a window
 * covering every key reproduces attention() bit for bit. One thread (the pool is private to
 * backend_cpu.c); without memory for the score row it falls back to full dots with ref, which
 * gives the same result without the saving. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend_cpu_attn.h"
#include "core/backend_cpu_sparse.h"

/* ref . k in double: the running scores are kept in double so that thousands of sparse
 * updates do not drift from the direct product the GPU computes. */
static double dotd(const float *x, const float *k, int hd)
{
    double s = 0;
    for (int d = 0; d < hd; d++) s += (double)x[d] * k[d];
    return s;
}

void cpu_attention_delta(plm_backend *be, const plm_attn_args *a, float *state, float *q_ref,
                         int64_t window, float theta)
{
    if (a->n_kv <= 0 || a->head_dim > 1024) return;
    const int hd = a->head_dim, group = a->n_heads / a->n_kv;
    double *far = malloc((size_t)(a->tk > 0 ? a->tk : 1) * sizeof *far);
    float acc[1024], delta[1024];
    int nzi[1024];
    for (int h = 0; h < a->n_heads; h++) {
        const int kh = h / group;
        float *ref = state + (int64_t)h * hd;
        int64_t n_far = 0; /* keys whose score in far[] is ref . k */
        for (int64_t i = 0; i < a->tq; i++) {
            const float *q = a->q + i * a->q_stride + (int64_t)h * hd;
            /* Delta network: only elements that moved by more than theta are sent on. */
            int nz = 0, finite = 1;
            for (int d = 0; d < hd; d++)
                if (fabsf(q[d] - ref[d]) > theta) {
                    delta[d] = q[d] - ref[d];
                    finite &= isfinite(delta[d]);
                    ref[d] = q[d];
                    nzi[nz++] = d;
                }
            memcpy(q_ref + (i * a->n_heads + h) * hd, ref, (size_t)hd * sizeof *ref);
            const int64_t pos = a->q_pos0 + i;
            const int64_t nk = cpu_attn_nk(a, i);
            int64_t nf = pos - window + 1; /* keys j <= pos - window are outside the window */
            if (nf < 0) nf = 0;
            if (nf > nk) nf = nk;
            if (far) {
                /* The call's first query, or a first delta from +inf, starts from full dots. */
                if (i == 0 || !finite) n_far = 0;
                if (n_far > nf) n_far = nf;
                for (int64_t j = 0; j < n_far && nz; j++) {
                    const float *k = a->k + j * a->kv_stride + (int64_t)kh * hd;
                    double s = 0;
                    for (int t = 0; t < nz; t++) s += (double)delta[nzi[t]] * k[nzi[t]];
                    far[j] += s;
                }
                for (int64_t j = n_far; j < nf; j++)
                    far[j] = dotd(ref, a->k + j * a->kv_stride + (int64_t)kh * hd, hd);
                n_far = nf;
            }
            float mx = -INFINITY, sum = 0;
            for (int d = 0; d < hd; d++) acc[d] = 0;
            for (int64_t j = 0; j < nk; j++) {
                const float *k = a->k + j * a->kv_stride + (int64_t)kh * hd;
                float s = 0;
                if (j < nf)
                    s = (float)(far ? far[j] : dotd(ref, k, hd));
                else
                    for (int d = 0; d < hd; d++) s += q[d] * k[d];
                s *= a->scale;
                const float *v = a->v + j * a->kv_stride + (int64_t)kh * hd;
                cpu_acc_add(acc, cpu_softmax_step(s, &mx, &sum, acc, hd), v, hd);
            }
            cpu_attn_write(a->out + (i * a->n_heads + h) * hd, acc, sum, nk > 0, hd);
        }
    }
    free(far);
}
