/* The CPU backend's bitmap KV store ops (Mustafar; prune/kv_bitmap.h has the format). Compression
 * is the host rule itself; attention walks each compressed row's set bits, so it computes on
 * the packed values without decompressing, with the same online softmax as cpu attention.
 * Single-threaded: the backend's thread pool is private to backend_cpu.c. */
#include <math.h>

#include "core/backend_cpu_attn.h"
#include "prune/kv_bitmap.h"

#define CPU_KVB_MAX_HD 512

static void cpu_kvb_compress(plm_backend *be, const plm_kv_bitmap *kb, const float *k,
                             const float *v, int64_t kv_stride, int64_t r0, int64_t r1)
{
    kv_bitmap_compress_host(kb, k, v, kv_stride, r0, r1);
}

static void cpu_kvb_attend(plm_backend *be, const plm_attn_args *a, const plm_kv_bitmap *kb)
{
    const int hd = a->head_dim, group = a->n_heads / a->n_kv, W = kb->words;
    if (hd > CPU_KVB_MAX_HD) return; /* kv_bitmap_init refuses it first */
    float acc[CPU_KVB_MAX_HD];
    for (int64_t i = 0; i < a->tq; i++)
        for (int h = 0; h < a->n_heads; h++) {
            const int kh = h / group;
            const float *q = a->q + i * a->q_stride + (int64_t)h * hd;
            const int64_t nk = cpu_attn_nk(a, i);
            float mx = -INFINITY, sum = 0;
            for (int d = 0; d < hd; d++) acc[d] = 0;
            for (int64_t j = 0; j < nk; j++) {
                const int compressed = j < kb->n_rows;
                const int64_t row = (int64_t)kh * kb->cap + j;
                const float *k = a->k + j * a->kv_stride + (int64_t)kh * hd;
                const float *v = a->v + j * a->kv_stride + (int64_t)kh * hd;
                float s = 0;
                if (compressed) {
                    const uint64_t *bits = kb->k_bits + row * W;
                    const float *vals = kb->k_vals + row * kb->k_slots;
                    for (int w = 0, n = 0; w < W; w++)
                        for (uint64_t b = bits[w]; b; b &= b - 1)
                            s += q[w * 64 + __builtin_ctzll(b)] * vals[n++];
                } else {
                    for (int d = 0; d < hd; d++) s += q[d] * k[d];
                }
                s *= a->scale;
                const float p = cpu_softmax_step(s, &mx, &sum, acc, hd);
                if (compressed) {
                    const uint64_t *bits = kb->v_bits + row * W;
                    const float *vals = kb->v_vals + row * kb->v_slots;
                    for (int w = 0, n = 0; w < W; w++)
                        for (uint64_t b = bits[w]; b; b &= b - 1)
                            acc[w * 64 + __builtin_ctzll(b)] += p * vals[n++];
                } else {
                    cpu_acc_add(acc, p, v, hd);
                }
            }
            cpu_attn_write(a->out + (i * a->n_heads + h) * hd, acc, sum, nk > 0, hd);
        }
}

const plm_kv_bitmap_ops plm_cpu_kv_bitmap_ops = {
    .compress = cpu_kvb_compress,
    .attend = cpu_kvb_attend,
};
