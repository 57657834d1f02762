/* attn_probs: the mean attention probability the queries of `a` give each key, per head or
 * averaged over heads, without touching V. The pruning score providers read it (CLS attention,
 * last-token attention, column sums). Like the CPU reference it takes the row statistics first
 * (max and normaliser of each query's softmax) and then sums the probabilities per key, so no
 * [tq x tk] matrix is stored: DESIGN.md's "second pass using the row log-sum-exp".
 *   k_probs_stats: one warp per (query, head); lanes stride over the keys with their own
 *                  running (max, sum), merged across the warp at the end.
 *   k_probs_cols:  one thread per (head, key); loops over the queries that see the key.
 *   k_probs_heads: the mean over heads into out's first row (unless per_head).
 * First version, like cu_attention.cu: plain float32, tuned later. */
#include <math.h>

#include "cuda/cu_internal.h"

__device__ static float dot_scaled(const float *q, const float *k, int hd, float scale)
{
    float s = 0.0f;
    for (int d = 0; d < hd; d++) s += q[d] * k[d];
    return s * scale;
}

/* Keys query i sees: min(tk, q_pos0 + i + 1) when causal, else tk (never negative). */
__device__ static int64_t keys_seen(const plm_attn_args &a, int64_t i)
{
    int64_t n = a.causal ? a.q_pos0 + i + 1 : a.tk;
    if (n > a.tk) n = a.tk;
    return n > 0 ? n : 0;
}

/* stats[(i * n_heads + h) * 2 + {0, 1}] = the softmax max and normaliser of query i, head h. */
__global__ void k_probs_stats(plm_attn_args a, float *stats)
{
    const int64_t w = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) / 32;
    const int lane = threadIdx.x % 32;
    if (w >= a.tq * a.n_heads) return; /* whole warps leave together: blockDim is a multiple */
    const int64_t i = w / a.n_heads;
    const int h = (int)(w % a.n_heads), hd = a.head_dim, kh = h / (a.n_heads / a.n_kv);
    const float *q = a.q + i * a.q_stride + (int64_t)h * hd;
    const int64_t nk = keys_seen(a, i);
    float m = -INFINITY, l = 0.0f;
    for (int64_t j = lane; j < nk; j += 32) {
        const float s = dot_scaled(q, a.k + j * a.kv_stride + (int64_t)kh * hd, hd, a.scale);
        if (s > m) {
            l *= expf(m - s);
            m = s;
        }
        l += expf(s - m);
    }
    for (int o = 16; o > 0; o >>= 1) { /* merge (m, l) pairs; an empty lane has m = -inf */
        const float m2 = __shfl_xor_sync(0xffffffffu, m, o), l2 = __shfl_xor_sync(0xffffffffu, l, o);
        const float mn = fmaxf(m, m2);
        l = (m == -INFINITY ? 0.0f : l * expf(m - mn)) + (m2 == -INFINITY ? 0.0f : l2 * expf(m2 - mn));
        m = mn;
    }
    if (lane == 0) {
        stats[w * 2] = m;
        stats[w * 2 + 1] = l;
    }
}

__global__ void k_probs_cols(plm_attn_args a, const float *stats)
{
    const int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (t >= a.tk * a.n_heads) return;
    const int h = (int)(t / a.tk), hd = a.head_dim, kh = h / (a.n_heads / a.n_kv);
    const int64_t j = t % a.tk;
    const float *k = a.k + j * a.kv_stride + (int64_t)kh * hd;
    /* causal: query i sees key j once q_pos0 + i >= j */
    int64_t i0 = a.causal ? j - a.q_pos0 : 0;
    if (i0 < 0) i0 = 0;
    float acc = 0.0f;
    for (int64_t i = i0; i < a.tq; i++) {
        if (j >= keys_seen(a, i)) continue;
        const float *st = stats + (i * a.n_heads + h) * 2;
        const float s = dot_scaled(a.q + i * a.q_stride + (int64_t)h * hd, k, hd, a.scale);
        acc += expf(s - st[0]) / st[1];
    }
    a.out[(int64_t)h * a.tk + j] = acc / (float)a.tq;
}

/* out[j] = mean over heads of out[h * tk + j]; each thread reads only its own column. */
__global__ void k_probs_heads(float *out, int64_t tk, int n_heads)
{
    const int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (j >= tk) return;
    float s = 0.0f;
    for (int h = 0; h < n_heads; h++) s += out[h * tk + j];
    out[j] = s / (float)n_heads;
}

void cu_attn_probs(cu_backend *b, const plm_attn_args *a, int per_head)
{
    if (a->n_heads <= 0 || a->n_kv <= 0 || a->n_heads % a->n_kv != 0) {
        cu_fail(b, "attn_probs: %d heads cannot share %d kv heads", a->n_heads, a->n_kv);
        return;
    }
    if (a->head_dim <= 0 || a->tq < 0 || a->tk < 0 || a->q_stride < (int64_t)a->n_heads * a->head_dim ||
        a->kv_stride < (int64_t)a->n_kv * a->head_dim) {
        cu_fail(b, "attn_probs: bad shape tq=%lld tk=%lld head_dim=%d", (long long)a->tq,
                (long long)a->tk, a->head_dim);
        return;
    }
    if (a->tk == 0) return;
    const int64_t nw = a->tq * a->n_heads;
    if (!cu_buf_reserve(b, &b->stats, (size_t)nw * 2 * sizeof(float), "attn_probs")) return;
    float *stats = (float *)b->stats.p;
    const int64_t threads = 256, blocks1 = (nw * 32 + threads - 1) / threads;
    const int64_t blocks2 = (a->tk * a->n_heads + threads - 1) / threads;
    if (blocks1 > INT32_MAX || blocks2 > INT32_MAX) {
        cu_fail(b, "attn_probs: %lld queries x %lld keys is too large", (long long)a->tq,
                (long long)a->tk);
        return;
    }
    if (nw > 0) { /* tq == 0 leaves 0/0 = NaN per key, as on the CPU */
        k_probs_stats<<<(unsigned)blocks1, (unsigned)threads, 0, b->stream>>>(*a, stats);
        if (!CU_LAUNCHED(b, "k_probs_stats")) return;
    }
    k_probs_cols<<<(unsigned)blocks2, (unsigned)threads, 0, b->stream>>>(*a, stats);
    if (!CU_LAUNCHED(b, "k_probs_cols")) return;
    if (per_head) return;
    k_probs_heads<<<(unsigned)((a->tk + threads - 1) / threads), (unsigned)threads, 0, b->stream>>>(
        a->out, a->tk, a->n_heads);
    CU_LAUNCHED(b, "k_probs_heads");
}
