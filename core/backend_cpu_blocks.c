/* Block-sparse causal attention on the CPU (FlexPrefill's kernel, Lai et al., ICLR 2025, §3.3):
 * the dense op's online softmax with every masked (query block, key block) tile skipped. The
 * arithmetic per kept key is the dense op's, in the same order, so an all-ones mask reproduces
 * attention() bit for bit. One thread: the backend's pool is private to backend_cpu.c. */
#include <math.h>

#include "core/backend_cpu_attn.h"
#include "core/backend_cpu_sparse.h"

void cpu_attention_blocks(plm_backend *be, const plm_attn_args *a, const uint8_t *mask,
                          int block)
{
    if (block <= 0 || a->n_kv <= 0 || a->head_dim > 1024) return;
    const int hd = a->head_dim, group = a->n_heads / a->n_kv;
    const int64_t nqb = (a->tq + block - 1) / block, nkb = (a->tk + block - 1) / block;
    float acc[1024];
    for (int64_t i = 0; i < a->tq; i++)
        for (int h = 0; h < a->n_heads; h++) {
            const int kh = h / group;
            const float *q = a->q + i * a->q_stride + (int64_t)h * hd;
            const uint8_t *mrow = mask + ((int64_t)h * nqb + i / block) * nkb;
            const int64_t nk = cpu_attn_nk(a, i);
            float mx = -INFINITY, sum = 0;
            for (int d = 0; d < hd; d++) acc[d] = 0;
            for (int64_t j0 = 0; j0 < nk; j0 += block) {
                if (!mrow[j0 / block]) continue;
                const int64_t j1 = j0 + block < nk ? j0 + block : nk;
                for (int64_t j = j0; j < j1; j++) {
                    const float *k = a->k + j * a->kv_stride + (int64_t)kh * hd;
                    float s = 0;
                    for (int d = 0; d < hd; d++) s += q[d] * k[d];
                    s *= a->scale;
                    const float *v = a->v + j * a->kv_stride + (int64_t)kh * hd;
                    cpu_acc_add(acc, cpu_softmax_step(s, &mx, &sum, acc, hd), v, hd);
                }
            }
            cpu_attn_write(a->out + (i * a->n_heads + h) * hd, acc, sum, sum > 0, hd);
        }
}
