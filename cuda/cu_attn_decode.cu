/* Decode attention (tq <= 8): split-K flash decoding (Dao et al. 2023, "Flash-Decoding for
 * long-context inference"). cu_attention.cu's kernel gives each (16 queries, head) one block,
 * so one query runs n_heads blocks on a GPU of 132 SMs and each block walks all tk keys alone.
 * Here the keys of each kv head are split into chunks over enough blocks to fill the GPU; each
 * block computes a partial softmax (running max, normaliser, unnormalised output) over its
 * chunk, and the last block of a row to finish combines the partials, rescaled to their common
 * max (one launch: a second kernel cost 7-9 us a layer on the 7B).
 *
 * A block owns (split s, kv head kh, up to QB query rows of that kv head). The query rows of
 * kv head kh are the pairs u = i * group + g (query i, head kh * group + g), u < tq * group;
 * block y index kh * qblocks + qb takes u in [qb * QB, qb * QB + QB). So each K/V row a block
 * reads serves all its query rows (GQA and several queries at once), and with tq = 1 and a group
 * of <= 8 heads every K/V byte is read exactly once.
 * Inside a block: lane l owns the head dims l * P .. l * P + P - 1 (P = 1, 2, 4 or 8: head_dim
 * up to 32, 64, 128, 256), so a warp reads a K or V row as one contiguous run (float4 loads
 * when P >= 4 and the rows are 16-byte aligned). A warp takes ROWS keys per step (their loads in
 * flight together), the AD_WARPS warps of a block stride through the chunk, a score is the
 * lane products summed over the warp, and each warp keeps its own online-softmax state per query
 * row (Milakov & Gimelshein 2018); the warps are merged through shared memory at the end.
 * Float32 throughout, expf (not __expf): the result matches the CPU reference to ~1e-6.
 *
 * Sparse fields as cu_attention.cu: rows (each kv head attends to rows[kh * n_rows + j], j <
 * n_rows, all visible, no causal mask) and bias ([n_heads x tk], added to the scaled logit of
 * key row j). */
#include <limits.h>
#include <math.h>

#include "cuda/cu_internal.h"

#define AD_WARPS 8
#define AD_MAX_HD 256
#define AD_BLOCKS_PER_SM 2 /* __launch_bounds__: <= 128 registers, two blocks per SM */
#define AD_MIN_ROWS 64     /* fewest keys per split worth a block */
#define AD_MAX_SPLITS 256
#define AD_ROW_ROUND 32    /* chunks are multiples of this (AD_WARPS * ROWS for ROWS = 4) */

typedef struct ad_params {
    plm_attn_args a; /* a.q_pos0_dev: the kernels read q_pos0 (and so tk, the splits) there */
    int group;    /* query heads per kv head */
    int pairs;    /* query rows per kv head: tq * group */
    int qblocks;  /* blocks per kv head along y: ceil(pairs / QB) */
    int n_splits;
    int chunk;    /* keys per split */
    int nk_max;   /* keys the last query sees (all of them with rows) */
    int vec;      /* K and V rows 16-byte aligned and P >= 4: float4 loads */
    float *work;  /* [tq x n_heads x n_splits x (hd + 2)] when n_splits > 1 */
    unsigned *count; /* per block row (blockIdx.y): splits done; 0 between calls */
    int cap;      /* most splits: the grid's x size with q_pos0_dev */
} ad_params;

/* Keys per split and splits for nk keys and at most cap splits: AD_MIN_ROWS keys or more per
 * split, chunks a multiple of AD_ROW_ROUND. On the host, or on the device when the key count is
 * only known there (a recorded decode step). */
__host__ __device__ static inline void ad_split(int64_t nk, int64_t cap, int *chunk, int *n_splits)
{
    int64_t splits = (nk + AD_MIN_ROWS - 1) / AD_MIN_ROWS;
    if (splits > cap) splits = cap;
    if (splits < 1) splits = 1;
    int64_t c = (nk + splits - 1) / splits;
    c = (c + AD_ROW_ROUND - 1) / AD_ROW_ROUND * AD_ROW_ROUND;
    if (c < AD_ROW_ROUND) c = AD_ROW_ROUND;
    *chunk = (int)c;
    *n_splits = (int)((nk + c - 1) / c); /* <= splits <= cap */
    if (*n_splits < 1) *n_splits = 1;
}

__device__ static inline float ad_warp_sum(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* The lane's P floats of a row at src (channels d0 .. d0 + P - 1; 0 past hd or when !live). */
template <int P>
__device__ static inline void ad_load(const float *src, int d0, int hd, bool live, bool vec,
                                      float out[P])
{
    if (P >= 4 && vec) {
#pragma unroll
        for (int t = 0; t < P; t += 4) {
            /* hd % 4 == 0 when vec: a float4 is wholly inside or wholly past the head */
            const float4 f = live && d0 + t < hd ? __ldg((const float4 *)(src + d0 + t))
                                                 : make_float4(0.f, 0.f, 0.f, 0.f);
            out[t] = f.x, out[t + 1] = f.y, out[t + 2] = f.z, out[t + 3] = f.w;
        }
    } else {
#pragma unroll
        for (int t = 0; t < P; t++) out[t] = live && d0 + t < hd ? __ldg(src + d0 + t) : 0.0f;
    }
}

/* out[qh] = sum_s acc_s e^(M_s - M) / sum_s L_s e^(M_s - M), over the splits that saw a key
 * (L_s > 0; the others were never scored and hold M_s = -inf). One pass with a running max, so
 * a thread's loads of all splits are independent and go out together (three dependent passes
 * cost three L2 round trips at the tail of every layer's attention). The block's threads split
 * the channels; the partials come from other blocks, so they are read past L1 (__ldcg). */
__device__ static void ad_combine(const float *work, float *out, int64_t qh, int hd, int n_splits)
{
    const float *w = work + qh * n_splits * (hd + 2);
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float M = -INFINITY, L = 0.0f, o = 0.0f;
#pragma unroll 8
        for (int s = 0; s < n_splits; s++) {
            const float *ws = w + s * (hd + 2);
            const float ms = __ldcg(ws), ls = __ldcg(ws + 1), os = __ldcg(ws + 2 + d);
            if (ls > 0.0f) {
                const float nm = fmaxf(M, ms), c = expf(M - nm), e = expf(ms - nm);
                L = L * c + ls * e;
                o = o * c + os * e;
                M = nm;
            }
        }
        out[qh * hd + d] = L > 0.0f ? o / L : 0.0f;
    }
}

template <int P, int QB>
__global__ void __launch_bounds__(AD_WARPS * 32, AD_BLOCKS_PER_SM) k_attn_decode(ad_params p)
{
    /* Fewer rows in flight when q and acc already take many registers, or the rows do (two
     * steps' rows are live at once, see load below). */
    constexpr int ROWS = QB * P >= 32 || P >= 8 ? 2 : 4;
    cu_pdl_trigger(); /* the o projection's GEMV may load its weights meanwhile */
    cu_pdl_wait();    /* launched early (cu_launch_pdl): q and the cache's new row */
    const plm_attn_args &a = p.a;
    const int hd = a.head_dim, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int kh = blockIdx.y / p.qblocks, u0 = (blockIdx.y % p.qblocks) * QB;
    const int split = blockIdx.x, d0 = lane * P;
    int64_t q_pos0 = a.q_pos0, tk = a.tk;
    int chunk = p.chunk, nk_max = p.nk_max, n_splits = p.n_splits;
    if (a.q_pos0_dev) { /* dense and causal: the last query sees every key */
        q_pos0 = *a.q_pos0_dev;
        tk = q_pos0 + a.tq;
        nk_max = (int)tk;
        ad_split(nk_max, p.cap, &chunk, &n_splits);
        if (split >= n_splits) return; /* the grid has room for cap splits */
    }
    /* keys [r0, r1) of the list (list position j is key row rows[j] with rows, else j) */
    const int r0 = split * chunk, r1 = min(r0 + chunk, nk_max);
    const int32_t *rows = a.rows ? a.rows + (int64_t)kh * a.n_rows : NULL;
    const int64_t kv_off = (int64_t)kh * hd; /* the kv head's columns in a K/V row */

    /* The K/V rows of a step (key row index: the K/V row and the bias column), loaded one
     * step ahead of their use: the first step's before the query's barrier below, each next
     * one while the current step is scored, so a warp waits on memory about once, not once per
     * step (at a few hundred keys a warp has only a few steps). */
    float nkv[ROWS][P], nvv[ROWS][P];
    int nkey[ROWS];
    auto load = [&](int j0) {
#pragma unroll
        for (int r = 0; r < ROWS; r++) {
            const int j = j0 + r;
            const bool live = j < r1;
            nkey[r] = rows ? (live ? rows[j] : 0) : j;
            const int64_t off = (int64_t)nkey[r] * a.kv_stride + kv_off;
            ad_load<P>(a.k + off, d0, hd, live, p.vec, nkv[r]);
            ad_load<P>(a.v + off, d0, hd, live, p.vec, nvv[r]);
        }
    };
    if (r0 + warp * ROWS < r1) load(r0 + warp * ROWS);

    /* Shared memory: the query rows (read from here at each use, which keeps registers for
     * acc and the K/V rows in flight), then the warps' states for the final merge. */
    extern __shared__ float4 ad_sm4[];
    float *sm = (float *)ad_sm4;
    const int wid = 32 * P;              /* floats per query row / per warp's acc: lane * P + t */
    float *sm_q = sm;                    /* [QB][wid] */
    float *sm_acc = sm_q + QB * wid;     /* [AD_WARPS][wid] */
    float *sm_ml = sm_acc + AD_WARPS * wid; /* [AD_WARPS][2] */
    for (int e = threadIdx.x; e < QB * wid; e += blockDim.x) {
        const int g = e / wid, d = e % wid, u = u0 + g, i = u / p.group;
        const int h = kh * p.group + u % p.group;
        sm_q[e] = u < p.pairs && d < hd ? a.q[(int64_t)i * a.q_stride + (int64_t)h * hd + d]
                                        : 0.0f;
    }

    float acc[QB][P], m[QB], l[QB];
    int nk[QB]; /* keys query row g sees (0 for a row past the pairs) */
#pragma unroll
    for (int g = 0; g < QB; g++) {
        const int u = u0 + g, i = u / p.group;
        int64_t n = a.causal ? q_pos0 + i + 1 : tk;
        if (n > tk) n = tk;
        if (rows) n = a.n_rows;
        nk[g] = u < p.pairs ? (int)n : 0;
        m[g] = -INFINITY;
        l[g] = 0.0f;
#pragma unroll
        for (int t = 0; t < P; t++) acc[g][t] = 0.0f;
    }
    __syncthreads(); /* sm_q written */

    const int stride = AD_WARPS * ROWS;
    for (int j0 = r0 + warp * ROWS; j0 < r1; j0 += stride) {
        /* this step's rows, loaded during the previous step (or before the query's barrier) */
        float kv[ROWS][P], vv[ROWS][P];
        int key[ROWS];
#pragma unroll
        for (int r = 0; r < ROWS; r++) {
            key[r] = nkey[r];
#pragma unroll
            for (int t = 0; t < P; t++) kv[r][t] = nkv[r][t], vv[r][t] = nvv[r][t];
        }
        if (j0 + stride < r1) load(j0 + stride);
#pragma unroll
        for (int g = 0; g < QB; g++) {
            float q[P];
#pragma unroll
            for (int t = 0; t < P; t++) q[t] = sm_q[g * wid + d0 + t];
            float s[ROWS];
            float mx = m[g];
#pragma unroll
            for (int r = 0; r < ROWS; r++) {
                float dot = 0.0f;
#pragma unroll
                for (int t = 0; t < P; t++) dot = fmaf(q[t], kv[r][t], dot);
                dot = ad_warp_sum(dot) * a.scale;
                /* visible: in this split (j < r1) and to this query (j < nk[g] <= nk_max) */
                const bool vis = j0 + r < r1 && j0 + r < nk[g];
                if (vis && a.bias) {
                    const int h = kh * p.group + (u0 + g) % p.group;
                    dot += a.bias[(int64_t)h * a.tk + key[r]];
                }
                s[r] = vis ? dot : -INFINITY;
                mx = fmaxf(mx, s[r]);
            }
            /* A query row that has seen no key yet keeps mx = -inf: rescale by exp(-inf) = 0
             * against a finite reference instead of exp(-inf - -inf) = NaN. */
            const float ref = mx == -INFINITY ? 0.0f : mx;
            const float corr = expf(m[g] - ref);
            float psum = 0.0f;
#pragma unroll
            for (int t = 0; t < P; t++) acc[g][t] *= corr;
#pragma unroll
            for (int r = 0; r < ROWS; r++) {
                const float pr = expf(s[r] - ref);
                psum += pr;
#pragma unroll
                for (int t = 0; t < P; t++) acc[g][t] = fmaf(pr, vv[r][t], acc[g][t]);
            }
            l[g] = l[g] * corr + psum;
            m[g] = mx;
        }
    }

    /* Merge the warps, one query row at a time, through shared memory. */
#pragma unroll
    for (int g = 0; g < QB; g++) {
        const int u = u0 + g;
        if (u >= p.pairs) break; /* uniform over the block */
        __syncthreads();         /* the previous row's reads are done */
#pragma unroll
        for (int t = 0; t < P; t++) sm_acc[warp * wid + d0 + t] = acc[g][t];
        if (lane == 0) {
            sm_ml[warp * 2] = m[g];
            sm_ml[warp * 2 + 1] = l[g];
        }
        __syncthreads();
        float M = -INFINITY;
#pragma unroll
        for (int w = 0; w < AD_WARPS; w++) M = fmaxf(M, sm_ml[w * 2]);
        float wt[AD_WARPS], L = 0.0f;
#pragma unroll
        for (int w = 0; w < AD_WARPS; w++) {
            wt[w] = M == -INFINITY ? 0.0f : expf(sm_ml[w * 2] - M);
            L += wt[w] * sm_ml[w * 2 + 1];
        }
        /* (query i, head h) */
        const int64_t qh = (int64_t)(u / p.group) * a.n_heads + kh * p.group + u % p.group;
        for (int d = threadIdx.x; d < hd; d += blockDim.x) {
            float o = 0.0f;
#pragma unroll
            for (int w = 0; w < AD_WARPS; w++) o += wt[w] * sm_acc[w * wid + d];
            if (n_splits == 1) {
                a.out[qh * hd + d] = L > 0.0f ? o / L : 0.0f;
            } else {
                /* partial (qh, split): [M, L, acc[0 .. hd)] */
                float *wk = p.work + (qh * n_splits + split) * (hd + 2);
                wk[2 + d] = o;
                if (d == 0) {
                    wk[0] = M;
                    wk[1] = L;
                }
            }
        }
    }
    if (n_splits == 1) return;
    /* The last of the row's splits to finish combines them all (the threadFenceReduction
     * pattern of CUDA's samples): one kernel per decode attention instead of two. */
    __shared__ int ad_last;
    __threadfence(); /* this block's partials are visible before its arrival is counted */
    __syncthreads();
    if (threadIdx.x == 0)
        ad_last = atomicAdd(&p.count[blockIdx.y], 1u) == (unsigned)n_splits - 1;
    __syncthreads();
    if (!ad_last) return;
    __threadfence();
#pragma unroll
    for (int g = 0; g < QB; g++) {
        const int u = u0 + g;
        if (u >= p.pairs) break;
        const int64_t qh = (int64_t)(u / p.group) * a.n_heads + kh * p.group + u % p.group;
        ad_combine(p.work, a.out, qh, hd, n_splits);
    }
    if (threadIdx.x == 0) p.count[blockIdx.y] = 0; /* ready for the next call (or replay) */
}

template <int P, int QB> static void ad_launch(cu_backend *b, const ad_params &p)
{
    const size_t smem = sizeof(float) * ((size_t)(QB + AD_WARPS) * 32 * P + 2 * AD_WARPS);
    const dim3 grid((unsigned)p.n_splits, (unsigned)(p.a.n_kv * p.qblocks));
    cu_launch_pdl(b, "k_attn_decode", k_attn_decode<P, QB>, grid, dim3(AD_WARPS * 32), smem, p);
}

/* QB: query rows per block, the pairs rounded up to a power of two, at most 8 (4 for P = 8,
 * whose q and acc take 2 x 8 registers per row). */
template <int P> static void ad_launch_qb(cu_backend *b, const ad_params &p, int qb)
{
    switch (qb) {
    case 1: ad_launch<P, 1>(b, p); break;
    case 2: ad_launch<P, 2>(b, p); break;
    case 4: ad_launch<P, 4>(b, p); break;
    default: ad_launch<P, (P >= 8 ? 4 : 8)>(b, p); break;
    }
}

int cu_attn_decode(cu_backend *b, const plm_attn_args *a)
{
    const int hd = a->head_dim;
    /* Anything outside this kernel's range goes to cu_attention's checks and kernel. */
    if (a->tq < 1 || a->tq > 8 || hd < 1 || hd > AD_MAX_HD || a->n_heads < 1 || a->n_kv < 1 ||
        a->n_heads % a->n_kv != 0 || a->tk < 0 || a->tk > INT_MAX / 2 ||
        a->q_stride < (int64_t)a->n_heads * hd || a->kv_stride < (int64_t)a->n_kv * hd ||
        (a->rows && (a->n_rows < 0 || a->n_rows > INT_MAX / 2)) ||
        (a->q_pos0_dev && (a->rows || a->bias || !a->causal)))
        return 0;
    const int P = hd <= 32 ? 1 : hd <= 64 ? 2 : hd <= 128 ? 4 : 8;
    const int qb_max = P >= 8 ? 4 : 8;
    ad_params p;
    p.a = *a;
    p.group = a->n_heads / a->n_kv;
    p.pairs = (int)a->tq * p.group;
    int qb = 1;
    while (qb < p.pairs && qb < qb_max) qb *= 2;
    p.qblocks = (p.pairs + qb - 1) / qb;
    if ((int64_t)a->n_kv * p.qblocks > 65535) return 0;
    int64_t nk = a->causal ? a->q_pos0 + a->tq : a->tk;
    if (nk > a->tk) nk = a->tk;
    if (nk < 0) nk = 0;
    if (a->rows) nk = a->n_rows;
    p.nk_max = (int)nk;
    p.vec = P >= 4 && hd % 4 == 0 && a->kv_stride % 4 == 0 && (uintptr_t)a->k % 16 == 0 &&
            (uintptr_t)a->v % 16 == 0;

    /* Splits: b->ad_waves (default 1) whole waves of resident blocks over the (kv head, query
     * block) units. The blocks of a call are all alike, so a second wave only adds a tail: two
     * waves rounded up (544 blocks for 528 slots at 32 kv heads) decoded the 7B at 168.0
     * tokens/s against 171.3 for one (H100, 2026-12-07; PLM_CUDA_DECODE_WAVES=2 compares).
     * The scratch is sized for that count, which does not depend on tk, so a decode loop (or a
     * CUDA graph of one step) never regrows it; fewer splits when the keys are few. */
    const int n_sm = b->n_sm;
    const int64_t units = (int64_t)a->n_kv * p.qblocks;
    int64_t cap = (int64_t)b->ad_waves * AD_BLOCKS_PER_SM * n_sm / units; /* whole waves */
    if (cap > AD_MAX_SPLITS) cap = AD_MAX_SPLITS;
    if (cap < 1) cap = 1;
    p.cap = (int)cap;
    ad_split(nk, cap, &p.chunk, &p.n_splits);
    /* q_pos0 known on the device only: a grid of cap splits, those past the key count idle (they
     * return before counting themselves) */
    if (a->q_pos0_dev) p.n_splits = (int)cap;
    p.work = NULL;
    if (cap > 1) { /* reserve for cap splits even when this call needs fewer (see above) */
        const size_t floats = (size_t)a->tq * (size_t)a->n_heads * (size_t)cap * (size_t)(hd + 2);
        if (!cu_buf_reserve(b, &b->decode_work, floats * sizeof(float), "decode attention"))
            return 1;
        p.work = (float *)b->decode_work.p;
    }
    /* the arrival counters, one per block row: zeroed when (re)allocated, then reset by the
     * block that combines (never grown while a step is being recorded: the unrecorded step
     * before it grew them) */
    p.count = NULL;
    if (cap > 1) {
        const size_t had = b->decode_count.cap;
        const size_t bytes = (size_t)a->n_kv * (size_t)p.qblocks * sizeof(unsigned);
        if (!cu_buf_reserve(b, &b->decode_count, bytes, "decode attention counters")) return 1;
        if (b->decode_count.cap != had &&
            !CU_OK(b, cudaMemsetAsync(b->decode_count.p, 0, b->decode_count.cap, b->stream)))
            return 1;
        p.count = (unsigned *)b->decode_count.p;
    }
    switch (P) {
    case 1: ad_launch_qb<1>(b, p, qb); break;
    case 2: ad_launch_qb<2>(b, p, qb); break;
    case 4: ad_launch_qb<4>(b, p, qb); break;
    default: ad_launch_qb<8>(b, p, qb); break;
    }
    return 1;
}
