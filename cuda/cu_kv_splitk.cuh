/* Split-K flash decoding pieces shared by the bitmap (cu_kv_bitmap.cu), thin-key
 * (cu_kv_think.cu) and int4 (cu_kv_int4.cu) store kernels: a
 * block takes one chunk of one kv head's rows for G of its query heads; KVS_WARPS warps walk
 * the chunk KVS_ROWS rows at a time with a running max and normaliser per query head; the warps
 * merge through shared memory; with several chunks each block writes its max, normaliser and
 * unnormalised output to scratch and k_kvs_combine rescales them to their common max. A lane
 * owns P consecutive channels (P = head_dim / 32 rounded up to a power of two). */
#ifndef PLM_CUDA_CU_KV_SPLITK_CUH
#define PLM_CUDA_CU_KV_SPLITK_CUH

#include <math.h>

#include <type_traits>

#include "cuda/cu_internal.h"

#define KVS_WARPS 8
#define KVS_ROWS 4        /* rows per warp step (their loads in flight together) */
#define KVS_MAX_HD 256    /* 32 lanes x 8 channels */
#define KVS_MIN_ROWS 128  /* fewest rows per split worth a block */
#define KVS_MAX_SPLITS 1024

__device__ static inline float kvs_warp_sum(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

static inline int kvs_lanes_p(int hd) { return hd <= 32 ? 1 : hd <= 64 ? 2 : hd <= 128 ? 4 : 8; }

/* Query heads per block: the group rounded down to a power of two (1..8); the y blocks cover
 * the rest. */
static inline int kvs_heads_per_block(int group)
{
    return group >= 8 ? 8 : group >= 4 ? 4 : group >= 2 ? 2 : 1;
}

/* Splits nk keys so the grid is one full wave of resident blocks, no split under
 * KVS_MIN_ROWS rows, no more splits than the scratch holds (none without scratch). Returns the
 * split count; *chunk receives the rows per split (a multiple of KVS_WARPS * KVS_ROWS). */
static inline int kvs_plan_splits(int64_t units, int64_t nk, int64_t resident, int64_t per_split,
                                  const float *work, int64_t work_floats, int64_t *chunk)
{
    int64_t splits = resident / (units > 0 ? units : 1);
    const int64_t by_rows = (nk + KVS_MIN_ROWS - 1) / KVS_MIN_ROWS;
    if (splits > by_rows) splits = by_rows;
    if (splits > KVS_MAX_SPLITS) splits = KVS_MAX_SPLITS;
    const int64_t room = work ? work_floats / per_split : 0;
    if (splits > room) splits = room;
    if (splits < 1) splits = 1;
    const int64_t step = (int64_t)KVS_WARPS * KVS_ROWS;
    int64_t c = (nk + splits - 1) / splits;
    c = (c + step - 1) / step * step;
    if (c < step) c = step;
    *chunk = c;
    const int64_t n = (nk + c - 1) / c;
    return n < 1 ? 1 : (int)n;
}

/* Where a store attend block works: query i (blockIdx.z), query heads h0 .. h0 + ng - 1 of kv
 * head kh (G per block, blockIdx.y = kh * qgroups + qg), list rows [r0, r1): split blockIdx.x
 * of `chunk` rows, cut at the keys query i sees. */
struct kvs_tile {
    int kh, h0, ng;
    int64_t i, split, r0, r1;
};

template <int G>
__device__ static inline kvs_tile kvs_tile_of(const plm_attn_args &a, int group, int qgroups,
                                              int64_t chunk)
{
    kvs_tile t;
    const int qg = blockIdx.y % qgroups;
    t.kh = blockIdx.y / qgroups;
    t.h0 = t.kh * group + qg * G;
    t.ng = min(G, group - qg * G);
    t.i = blockIdx.z;
    t.split = blockIdx.x;
    int64_t nk = a.causal ? a.q_pos0 + t.i + 1 : a.tk;
    if (nk > a.tk) nk = a.tk;
    t.r0 = t.split * chunk;
    t.r1 = min(t.r0 + chunk, nk);
    return t;
}

/* The online-softmax state at its start, and q[g] the lane's P channels of query head h0 + g
 * (0 past the tile's heads or the head). */
template <int P, int G>
__device__ static inline void kvs_start(const plm_attn_args &a, const kvs_tile &t, int d0,
                                        float (&q)[G][P], float (&acc)[G][P], float (&m)[G],
                                        float (&l)[G])
{
    const int hd = a.head_dim;
#pragma unroll
    for (int g = 0; g < G; g++) {
        m[g] = -INFINITY;
        l[g] = 0.0f;
#pragma unroll
        for (int c = 0; c < P; c++) {
            const int d = d0 + c;
            q[g][c] = g < t.ng && d < hd ? a.q[t.i * a.q_stride + (int64_t)(t.h0 + g) * hd + d]
                                         : 0.0f;
            acc[g][c] = 0.0f;
        }
    }
}

/* Block-wide max (op 0) or sum (op 1) of each warp's lane-0 value; red: KVS_WARPS floats of
 * shared memory. */
__device__ static inline float kvs_block_reduce(float v, int op, float *red)
{
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    float r = red[0];
    for (int w = 1; w < KVS_WARPS; w++) r = op ? r + red[w] : fmaxf(r, red[w]);
    return r;
}

/* A store's attention probabilities for H2O-style scores: block h writes out[h * tk + j], the
 * softmax row of key j averaged over the tq queries. load(i) puts query i of head h where dot
 * reads it (shared memory; the caller syncs before and after); dot(j) is key j's scaled logit,
 * summed over the warp (every lane gets it). One query parks its logits in its out row; several
 * recompute them on each pass. */
template <typename Load, typename Dot>
__device__ static void kvs_probs(const plm_attn_args &a, Load load, Dot dot, float *red)
{
    const int h = blockIdx.x, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    float *out = a.out + (int64_t)h * a.tk;
    for (int64_t j = threadIdx.x; j < a.tk; j += blockDim.x) out[j] = 0.0f;
    for (int64_t i = 0; i < a.tq; i++) {
        __syncthreads();
        load(i);
        __syncthreads();
        int64_t nk = a.causal ? a.q_pos0 + i + 1 : a.tk;
        if (nk > a.tk) nk = a.tk;
        const bool park = a.tq == 1;
        float mx = -INFINITY;
        for (int64_t j = warp; j < nk; j += KVS_WARPS) {
            const float s = dot(j);
            mx = fmaxf(mx, s);
            if (park && lane == 0) out[j] = s;
        }
        const float M = kvs_block_reduce(mx, 0, red);
        float sum = 0.0f;
        for (int64_t j = warp; j < nk; j += KVS_WARPS) sum += __expf((park ? out[j] : dot(j)) - M);
        const float S = kvs_block_reduce(sum, 1, red);
        for (int64_t j = warp; j < nk; j += KVS_WARPS) {
            const float s = park ? out[j] : dot(j);
            if (lane == 0) out[j] = park ? __expf(s - M) / S : out[j] + __expf(s - M) / S;
        }
    }
    if (a.tq > 1) {
        __syncthreads();
        for (int64_t j = threadIdx.x; j < a.tk; j += blockDim.x) out[j] /= (float)a.tq;
    }
}

/* The block's end: merge the warps' states for each of its ng query heads (h0..) and write the
 * output row (one split) or the split's state to work (several). Dynamic shared memory:
 * KVS_WARPS * (32 * P + 2) floats. */
template <int P, int G>
__device__ static void kvs_finish(const plm_attn_args &a, float (&acc)[G][P], float (&m)[G],
                                  float (&l)[G], int h0, int ng, int64_t i, int64_t split,
                                  int n_splits, float *work)
{
    extern __shared__ float kvs_sm[];
    const int hd = a.head_dim, lane = threadIdx.x % 32, warp = threadIdx.x / 32, d0 = lane * P;
    const int wid = 32 * P;
    float *sm_acc = kvs_sm;
    float *sm_ml = kvs_sm + KVS_WARPS * wid;
    for (int g = 0; g < ng; g++) {
        __syncthreads(); /* the previous head's reads are done */
#pragma unroll
        for (int t = 0; t < P; t++) sm_acc[warp * wid + d0 + t] = acc[g][t];
        if (lane == 0) {
            sm_ml[warp * 2] = m[g];
            sm_ml[warp * 2 + 1] = l[g];
        }
        __syncthreads();
        float M = -INFINITY;
        for (int w = 0; w < KVS_WARPS; w++) M = fmaxf(M, sm_ml[w * 2]);
        float wt[KVS_WARPS], L = 0.0f;
#pragma unroll
        for (int w = 0; w < KVS_WARPS; w++) {
            wt[w] = M == -INFINITY ? 0.0f : __expf(sm_ml[w * 2] - M);
            L += wt[w] * sm_ml[w * 2 + 1];
        }
        const int h = h0 + g;
        for (int d = threadIdx.x; d < hd; d += blockDim.x) {
            float o = 0.0f;
#pragma unroll
            for (int w = 0; w < KVS_WARPS; w++) o += wt[w] * sm_acc[w * wid + d];
            if (n_splits == 1) {
                a.out[(i * a.n_heads + h) * hd + d] = L > 0.0f ? o / L : 0.0f;
            } else {
                float *wk = work + ((i * a.n_heads + h) * n_splits + split) * (hd + 2);
                wk[2 + d] = o;
                if (d == 0) {
                    wk[0] = M;
                    wk[1] = L;
                }
            }
        }
    }
}

/* out = the splits' outputs rescaled to their common max; grid (n_heads, tq). */
__global__ static void k_kvs_combine(const float *work, float *out, int n_heads, int hd,
                                     int n_splits)
{
    const int64_t qh = (int64_t)blockIdx.y * n_heads + blockIdx.x;
    const float *w = work + qh * n_splits * (hd + 2);
    float M = -INFINITY;
    for (int s = 0; s < n_splits; s++) M = fmaxf(M, w[s * (hd + 2)]);
    float L = 0.0f;
    for (int s = 0; s < n_splits; s++) {
        const float *ws = w + s * (hd + 2);
        if (ws[1] > 0.0f) L += ws[1] * __expf(ws[0] - M);
    }
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float o = 0.0f;
        for (int s = 0; s < n_splits; s++) {
            const float *ws = w + s * (hd + 2);
            if (ws[1] > 0.0f) o += ws[2 + d] * __expf(ws[0] - M);
        }
        out[qh * hd + d] = L > 0.0f ? o / L : 0.0f;
    }
}

/* One online-softmax step of KVS_ROWS rows for one query head: s[r] its scores (-inf past the
 * end), vv[r] the lane's value channels, acc/m/l the head's running output, max and sum. */
template <int P>
__device__ static inline void kvs_softmax_head(const float (&s)[KVS_ROWS],
                                               const float (&vv)[KVS_ROWS][P], float (&acc)[P],
                                               float &m, float &l)
{
    float mx = m;
#pragma unroll
    for (int r = 0; r < KVS_ROWS; r++) mx = fmaxf(mx, s[r]);
    /* the step's first row is live, so mx is finite and exp(-inf - mx) = 0 */
    const float corr = __expf(m - mx);
    float psum = 0.0f;
#pragma unroll
    for (int t = 0; t < P; t++) acc[t] *= corr;
#pragma unroll
    for (int r = 0; r < KVS_ROWS; r++) {
        const float pr = __expf(s[r] - mx);
        psum += pr;
#pragma unroll
        for (int t = 0; t < P; t++) acc[t] += pr * vv[r][t];
    }
    l = l * corr + psum;
    m = mx;
}

/* The same step for G query heads sharing the rows. */
template <int P, int G>
__device__ static inline void kvs_softmax_step(const float (&s)[G][KVS_ROWS],
                                               const float (&vv)[KVS_ROWS][P],
                                               float (&acc)[G][P], float (&m)[G], float (&l)[G])
{
#pragma unroll
    for (int g = 0; g < G; g++) kvs_softmax_head<P>(s[g], vv, acc[g], m[g], l[g]);
}

/* The store attend launch: plans the splits for one wave of resident blocks of kern (an
 * instance of the store's kernel for P lanes' channels), launches it on grid (splits,
 * n_kv * qgroups, tq), then combines the splits. Params holds a, qgroups, n_splits, chunk and
 * work, the kernel's argument; `launch` names the kernel (a string literal: "k_..."); kern_smem:
 * the dynamic shared memory the kernel needs besides kvs_finish's (the larger is given). */
template <typename Params>
static void kvs_launch(cu_backend *b, void (*kern)(Params), const char *launch, int P, Params &p,
                       int64_t nk, int64_t work_floats, size_t kern_smem = 0)
{
    size_t smem = sizeof(float) * ((size_t)KVS_WARPS * 32 * P + 2 * KVS_WARPS);
    if (smem < kern_smem) smem = kern_smem;
    int n_sm = 0, occ = 0;
    if (!CU_OK(b, cudaDeviceGetAttribute(&n_sm, cudaDevAttrMultiProcessorCount, b->device)) ||
        (smem > 48 * 1024 &&
         !CU_OK(b, cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        (int)smem))) ||
        !CU_OK(b, cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, kern, KVS_WARPS * 32,
                                                                smem)))
        return;
    const plm_attn_args &a = p.a;
    p.n_splits = kvs_plan_splits((int64_t)a.n_kv * p.qgroups * a.tq, nk,
                                 (int64_t)n_sm * (occ > 0 ? occ : 1),
                                 a.tq * a.n_heads * (int64_t)(a.head_dim + 2), p.work,
                                 work_floats, &p.chunk);
    dim3 grid((unsigned)p.n_splits, (unsigned)(a.n_kv * p.qgroups), (unsigned)a.tq);
    kern<<<grid, KVS_WARPS * 32, smem, b->stream>>>(p);
    if (!cu_launched(b, launch, __FILE__, __LINE__) || p.n_splits == 1)
        return;
    k_kvs_combine<<<dim3((unsigned)a.n_heads, (unsigned)a.tq), 128, 0, b->stream>>>(
        p.work, a.out, a.n_heads, a.head_dim, p.n_splits);
    CU_LAUNCHED(b, "k_kvs_combine");
}

/* Calls f(P, G) with P = kvs_lanes_p(hd) and G (1, 2, 4 or 8) as std::integral_constant, so f
 * can name its kernel's instance: decltype(P)::value. */
template <int P, typename F> static void kvs_with_g(int G, F &&f)
{
    switch (G) {
    case 1: f(std::integral_constant<int, P>(), std::integral_constant<int, 1>()); break;
    case 2: f(std::integral_constant<int, P>(), std::integral_constant<int, 2>()); break;
    case 4: f(std::integral_constant<int, P>(), std::integral_constant<int, 4>()); break;
    default: f(std::integral_constant<int, P>(), std::integral_constant<int, 8>()); break;
    }
}

template <typename F> static void kvs_with_pg(int hd, int G, F &&f)
{
    switch (kvs_lanes_p(hd)) {
    case 1: kvs_with_g<1>(G, f); break;
    case 2: kvs_with_g<2>(G, f); break;
    case 4: kvs_with_g<4>(G, f); break;
    default: kvs_with_g<8>(G, f); break;
    }
}

/* The backend of a store op, its device current; NULL when it has failed before. */
static inline cu_backend *kvs_enter(plm_backend *be)
{
    cu_backend *b = (cu_backend *)be;
    if (b->failed) return NULL;
    if (!CU_OK(b, cudaSetDevice(b->device))) return NULL;
    return b;
}

/* Shared launch checks of the store attention ops; 0 (failure recorded) when a does not fit. */
static inline int kvs_check(cu_backend *b, const plm_attn_args *a, int n_kv, int hd,
                            const char *what)
{
    if (a->n_heads <= 0 || a->n_kv <= 0 || a->n_heads % a->n_kv != 0) {
        cu_fail(b, "%s: %d heads cannot share %d kv heads", what, a->n_heads, a->n_kv);
        return 0;
    }
    if (a->head_dim <= 0 || a->head_dim > KVS_MAX_HD || a->head_dim != hd || a->n_kv != n_kv) {
        cu_fail(b, "%s: head_dim %d (store %d, kernel 1..%d), %d kv heads (store %d)", what,
                a->head_dim, hd, KVS_MAX_HD, a->n_kv, n_kv);
        return 0;
    }
    if (a->tq < 0 || a->tk < 0 || a->tq > 65535 || a->q_stride < (int64_t)a->n_heads * hd ||
        a->kv_stride < (int64_t)a->n_kv * hd) {
        cu_fail(b, "%s: bad shape tq=%lld (CUDA 0..65535) tk=%lld q_stride=%lld kv_stride=%lld",
                what, (long long)a->tq, (long long)a->tk, (long long)a->q_stride,
                (long long)a->kv_stride);
        return 0;
    }
    if (a->rows || a->bias || a->q_pos0_dev) {
        cu_fail(b, "%s: sparse rows, steering bias and recorded steps are not supported", what);
        return 0;
    }
    return 1;
}

#endif
