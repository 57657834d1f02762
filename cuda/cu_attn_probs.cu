/* attn_probs: the mean attention probability the queries of `a` give each key, per head or
 * averaged over heads, without touching V. The pruning score providers read it (CLS attention,
 * last-token attention, column sums). Like the CPU reference it takes the row statistics first
 * (max and normaliser of each query's softmax) and then sums the probabilities per key, so no
 * [tq x tk] matrix is stored: DESIGN.md's "second pass using the row log-sum-exp".
 *   k_probs_stats: one warp per (query, head); lanes stride over the keys with their own
 *                  running (max, sum), merged across the warp at the end.
 *   k_probs_cols:  one block per (tile of 32 keys, head); warps split the queries.
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

/* One block per (tile of PC_KEYS keys, head): the tile's keys wait in shared memory, each warp
 * walks its share of the queries, lane j scores key j0 + j against the query (a broadcast read)
 * and adds its probability; the warps' sums meet in shared memory at the end. A thread per
 * (head, key) looping over every query serially was ~40x slower at 577 x 577 (VFlowOpt's
 * vision stage) and at long prompts (the KV policies' column sums). */
#define PC_KEYS 32
#define PC_WARPS 8
__global__ void __launch_bounds__(PC_WARPS * 32) k_probs_cols(plm_attn_args a, const float *stats)
{
    extern __shared__ float ks[]; /* [PC_KEYS][hd + 1], then [PC_WARPS][PC_KEYS] */
    const int hd = a.head_dim, kpad = hd + 1, h = blockIdx.y, kh = h / (a.n_heads / a.n_kv);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int64_t j0 = (int64_t)blockIdx.x * PC_KEYS, j = j0 + lane;
    float *part = ks + PC_KEYS * kpad;
    for (int e = threadIdx.x; e < PC_KEYS * hd; e += blockDim.x) {
        const int r = e / hd, d = e % hd;
        ks[r * kpad + d] = j0 + r < a.tk ? a.k[(j0 + r) * a.kv_stride + (int64_t)kh * hd + d] : 0.0f;
    }
    __syncthreads();
    /* causal: query i sees key j once q_pos0 + i >= j; no query before i0 sees the tile */
    int64_t i0 = a.causal ? j0 - a.q_pos0 : 0;
    if (i0 < 0) i0 = 0;
    const float *kr = ks + lane * kpad;
    float acc = 0.0f;
    for (int64_t i = i0 + warp; i < a.tq; i += PC_WARPS) {
        const float *q = a.q + i * a.q_stride + (int64_t)h * hd;
        float sc = 0.0f;
        for (int d = 0; d < hd; d++) sc += q[d] * kr[d];
        const float *st = stats + (i * a.n_heads + h) * 2;
        if (j < keys_seen(a, i)) acc += expf(sc * a.scale - st[0]) / st[1];
    }
    part[warp * PC_KEYS + lane] = acc;
    __syncthreads();
    if (warp == 0 && j < a.tk) {
        float sum = 0.0f;
        for (int w = 0; w < PC_WARPS; w++) sum += part[w * PC_KEYS + lane];
        a.out[(int64_t)h * a.tk + j] = sum / (float)a.tq;
    }
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
    if (blocks1 > INT32_MAX || (a->tk + PC_KEYS - 1) / PC_KEYS > INT32_MAX || a->n_heads > 65535) {
        cu_fail(b, "attn_probs: %lld queries x %lld keys is too large", (long long)a->tq,
                (long long)a->tk);
        return;
    }
    if (nw > 0) { /* tq == 0 leaves 0/0 = NaN per key, as on the CPU */
        k_probs_stats<<<(unsigned)blocks1, (unsigned)threads, 0, b->stream>>>(*a, stats);
        if (!CU_LAUNCHED(b, "k_probs_stats")) return;
    }
    const size_t smem = sizeof(float) * ((size_t)PC_KEYS * (a->head_dim + 1) +
                                         (size_t)PC_WARPS * PC_KEYS);
    if (smem > b->smem_optin) {
        cu_fail(b, "attn_probs: head_dim %d needs %zu bytes of shared memory", a->head_dim, smem);
        return;
    }
    if (smem > 48 * 1024 &&
        !CU_OK(b, cudaFuncSetAttribute(k_probs_cols, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       (int)smem)))
        return;
    dim3 grid((unsigned)((a->tk + PC_KEYS - 1) / PC_KEYS), (unsigned)a->n_heads);
    k_probs_cols<<<grid, PC_WARPS * 32, smem, b->stream>>>(*a, stats);
    if (!CU_LAUNCHED(b, "k_probs_cols")) return;
    if (per_head) return;
    k_probs_heads<<<(unsigned)((a->tk + threads - 1) / threads), (unsigned)threads, 0, b->stream>>>(
        a->out, a->tk, a->n_heads);
    CU_LAUNCHED(b, "k_probs_heads");
}
