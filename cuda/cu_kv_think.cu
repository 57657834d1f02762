/* ThinK's thin-key store on the GPU (prune/kv_thin.h has the format; the CPU twins are in
 * core/backend_cpu_thin.c, tested against these by tests/gpu/test_cuda_kvstore.c).
 *
 * Channel-pruned decode attention: each block gathers its query heads' kept channels once
 * (q[chan[c]], c < n_chan: the query "projected" to the head's kept channels), then walks its
 * chunk of rows. A thin row is n_chan packed floats: lane l reads slots l*P .. l*P+P-1, so a warp
 * reads the row as one contiguous run of n_chan floats instead of head_dim, and q . k is the
 * gathered query times those slots, reduced over the warp. Rows at or past the head's n_thin
 * (the recent prompt rows and every decode row, kept whole) use the full query and the dense
 * cache; values are always dense. Split-K and the warp merge are cu_kv_splitk.cuh's. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cu_kv_splitk.cuh"
#include "cuda/cu_kvstore.h"

/* ---- compression: a gather of the kept channels ------------------------------------------ */

__global__ static void k_kvt_compress(float *thin, const float *k, int64_t kv_stride,
                                      const int32_t *chan, int n_kv, int hd, int nc, int64_t r0,
                                      int64_t n)
{
    const int64_t total = n * n_kv * nc, w = (int64_t)n_kv * nc;
    for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < total;
         t += (int64_t)gridDim.x * blockDim.x) {
        const int c = (int)(t % nc);
        const int h = (int)(t / nc % n_kv);
        const int64_t r = r0 + t / w;
        thin[r * w + (int64_t)h * nc + c] = k[r * kv_stride + (int64_t)h * hd + chan[h * nc + c]];
    }
}

/* ---- decode attention ---------------------------------------------------------------------- */

typedef struct kvt_attn {
    plm_attn_args a;
    const float *thin;
    const int32_t *chan, *n_thin;
    int nc, group, qgroups, n_splits;
    int64_t chunk;
    float *work;
} kvt_attn;

template <int P, int G>
__global__ void __launch_bounds__(KVS_WARPS * 32) k_kvt_attend(kvt_attn p)
{
    const plm_attn_args &a = p.a;
    const int hd = a.head_dim, lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const kvs_tile tile = kvs_tile_of<G>(a, p.group, p.qgroups, p.chunk);
    const int kh = tile.kh, h0 = tile.h0, ng = tile.ng;
    const int64_t i = tile.i, split = tile.split, r0 = tile.r0, r1 = tile.r1;
    const int d0 = lane * P;
    const int64_t w = (int64_t)a.n_kv * p.nc;
    const int64_t nthin = p.n_thin[kh];
    const int32_t *ch = p.chan + (int64_t)kh * p.nc;

    /* q: the lane's dense channels; qt: the lane's thin slots, q at the kept channels */
    float q[G][P], qt[G][P], acc[G][P], m[G], l[G];
#pragma unroll
    for (int g = 0; g < G; g++) {
        m[g] = -INFINITY;
        l[g] = 0.0f;
        const float *qrow = a.q + i * a.q_stride + (int64_t)(h0 + (g < ng ? g : 0)) * hd;
#pragma unroll
        for (int t = 0; t < P; t++) {
            const int d = d0 + t;
            q[g][t] = g < ng && d < hd ? qrow[d] : 0.0f;
            qt[g][t] = g < ng && d < p.nc ? qrow[ch[d]] : 0.0f;
            acc[g][t] = 0.0f;
        }
    }

    auto step = [&](int64_t j0, int64_t end, bool thin) {
        float kv[KVS_ROWS][P], vv[KVS_ROWS][P];
#pragma unroll
        for (int r = 0; r < KVS_ROWS; r++) {
            const int64_t j = j0 + r;
            const bool live = j < end;
            const int64_t jr = live ? j : j0;
            const float *krow = thin ? p.thin + jr * w + (int64_t)kh * p.nc
                                     : a.k + jr * a.kv_stride + (int64_t)kh * hd;
            const int kw = thin ? p.nc : hd;
            const float *vrow = a.v + jr * a.kv_stride + (int64_t)kh * hd;
#pragma unroll
            for (int t = 0; t < P; t++) {
                kv[r][t] = live && d0 + t < kw ? krow[d0 + t] : 0.0f;
                vv[r][t] = live && d0 + t < hd ? vrow[d0 + t] : 0.0f;
            }
        }
        float s[G][KVS_ROWS];
#pragma unroll
        for (int g = 0; g < G; g++)
#pragma unroll
            for (int r = 0; r < KVS_ROWS; r++) {
                float dot = 0.0f;
#pragma unroll
                for (int t = 0; t < P; t++) dot += (thin ? qt[g][t] : q[g][t]) * kv[r][t];
                s[g][r] = j0 + r < end ? kvs_warp_sum(dot) * a.scale : -INFINITY;
            }
        kvs_softmax_step<P, G>(s, vv, acc, m, l);
    };

    const int64_t stride = (int64_t)KVS_WARPS * KVS_ROWS;
    const int64_t t_end = min(r1, nthin);
    for (int64_t j0 = r0 + warp * KVS_ROWS; j0 < t_end; j0 += stride) step(j0, t_end, true);
    /* the chunk's whole rows, on a KVS_ROWS grid of their own */
    const int64_t d_beg = max(r0, nthin);
    for (int64_t j0 = d_beg + warp * KVS_ROWS; j0 < r1; j0 += stride) step(j0, r1, false);
    kvs_finish<P, G>(a, acc, m, l, h0, ng, i, split, p.n_splits, p.work);
}

/* ---- scores (attn_probs per head): one block per query head --------------------------------- */

/* q . key row j: lanes stride over the channels (coalesced), then a warp sum */
__device__ static inline float kvt_dot(const plm_attn_args &a, const float *thin,
                                       const int32_t *n_thin, int nc, int kh, int64_t j,
                                       const float *sq, const float *sqt)
{
    const int lane = threadIdx.x % 32;
    float s = 0.0f;
    if (j < n_thin[kh]) {
        const float *row = thin + j * a.n_kv * nc + (int64_t)kh * nc;
        for (int c = lane; c < nc; c += 32) s += sqt[c] * row[c];
    } else {
        const float *row = a.k + j * a.kv_stride + (int64_t)kh * a.head_dim;
        for (int d = lane; d < a.head_dim; d += 32) s += sq[d] * row[d];
    }
    return kvs_warp_sum(s) * a.scale;
}

__global__ void __launch_bounds__(KVS_WARPS * 32)
    k_kvt_probs(plm_attn_args a, const float *thin, const int32_t *chan, const int32_t *n_thin,
                int nc)
{
    __shared__ float sq[KVS_MAX_HD], sqt[KVS_MAX_HD], red[KVS_WARPS];
    const int h = blockIdx.x, kh = h / (a.n_heads / a.n_kv);
    auto load = [&](int64_t i) {
        const float *qrow = a.q + i * a.q_stride + (int64_t)h * a.head_dim;
        for (int d = threadIdx.x; d < a.head_dim; d += blockDim.x) sq[d] = qrow[d];
        for (int c = threadIdx.x; c < nc; c += blockDim.x) sqt[c] = qrow[chan[kh * nc + c]];
    };
    kvs_probs(a, load, [&](int64_t j) { return kvt_dot(a, thin, n_thin, nc, kh, j, sq, sqt); },
              red);
}

/* ---- merges: one block walks the list in order --------------------------------------------- */

__global__ static void k_kvt_mix(float *thin, const int32_t *chan, const int32_t *n_thin,
                                 float *k, int64_t kv_stride, int n_kv, int hd, int nc,
                                 const int32_t *head, const int32_t *dst, const int32_t *src,
                                 const float *a, const float *bw, int64_t n)
{
    extern __shared__ float xs[]; /* [hd]: a thin source expanded */
    const int64_t w = (int64_t)n_kv * nc;
    for (int64_t m = 0; m < n; m++) {
        const int h = head[m];
        const int32_t *ch = chan + (int64_t)h * nc;
        const bool src_thin = src[m] < n_thin[h];
        float *td = thin + (int64_t)dst[m] * w + (int64_t)h * nc;
        const float *ts = thin + (int64_t)src[m] * w + (int64_t)h * nc;
        float *kd = k + (int64_t)dst[m] * kv_stride + (int64_t)h * hd;
        const float *ks = k + (int64_t)src[m] * kv_stride + (int64_t)h * hd;
        /* _rn: no fused multiply-add, so the result equals the CPU op's bit for bit */
        if (dst[m] < n_thin[h]) {
            for (int c = threadIdx.x; c < nc; c += blockDim.x)
                td[c] = __fadd_rn(__fmul_rn(a[m], td[c]),
                                  __fmul_rn(bw[m], src_thin ? ts[c] : ks[ch[c]]));
        } else {
            if (src_thin) {
                for (int d = threadIdx.x; d < hd; d += blockDim.x) xs[d] = 0.0f;
                __syncthreads();
                for (int c = threadIdx.x; c < nc; c += blockDim.x) xs[ch[c]] = ts[c];
            } else {
                for (int d = threadIdx.x; d < hd; d += blockDim.x) xs[d] = ks[d];
            }
            __syncthreads();
            for (int d = threadIdx.x; d < hd; d += blockDim.x)
                kd[d] = __fadd_rn(__fmul_rn(a[m], kd[d]), __fmul_rn(bw[m], xs[d]));
        }
        __syncthreads();
    }
}

/* ---- launchers ------------------------------------------------------------------------------ */

static void cu_kvt_attend(cu_backend *b, const plm_attn_args *a, const plm_kv_thin *st)
{
    if (!kvs_check(b, a, st->n_kv, st->head_dim, "thin key attention")) return;
    if (a->tq == 0) return;
    kvt_attn p;
    p.a = *a;
    p.thin = st->k;
    p.chan = st->chan;
    p.n_thin = st->n_thin;
    p.nc = st->n_chan;
    p.group = a->n_heads / a->n_kv;
    const int G = kvs_heads_per_block(p.group);
    p.qgroups = (p.group + G - 1) / G;
    if ((int64_t)a->n_kv * p.qgroups > 65535) {
        cu_fail(b, "thin key attention: %d kv heads x %d query blocks exceed the grid", a->n_kv,
                p.qgroups);
        return;
    }
    int64_t nk = a->causal ? a->q_pos0 + a->tq : a->tk; /* keys the longest query sees */
    if (nk > a->tk) nk = a->tk;
    p.work = st->work;
    kvs_with_pg(a->head_dim, G, [&](auto P, auto G_) {
        kvs_launch(b, k_kvt_attend<decltype(P)::value, decltype(G_)::value>,
                   "k_kvt_attend", (int)P, p, nk, st->work_floats);
    });
}

static void op_kvt_compress(plm_backend *be, const plm_kv_thin *st, const float *k,
                            int64_t kv_stride, int64_t r0, int64_t r1)
{
    cu_backend *b = kvs_enter(be);
    if (!b || r1 <= r0) return;
    if (r0 < 0 || r1 > st->cap || kv_stride < (int64_t)st->n_kv * st->head_dim) {
        cu_fail(b, "thin key compress: rows [%lld, %lld) of a store of %lld (stride %lld)",
                (long long)r0, (long long)r1, (long long)st->cap, (long long)kv_stride);
        return;
    }
    const int64_t total = (r1 - r0) * st->n_kv * st->n_chan;
    k_kvt_compress<<<cu_grid(total, 256), 256, 0, b->stream>>>(
        st->k, k, kv_stride, st->chan, st->n_kv, st->head_dim, st->n_chan, r0, r1 - r0);
    CU_LAUNCHED(b, "k_kvt_compress");
}

static void op_kvt_attend(plm_backend *be, const plm_attn_args *a, const plm_kv_thin *st)
{
    cu_backend *b = kvs_enter(be);
    if (b) cu_kvt_attend(b, a, st);
}

static void op_kvt_probs(plm_backend *be, const plm_attn_args *a, const plm_kv_thin *st)
{
    cu_backend *b = kvs_enter(be);
    if (!b || !kvs_check(b, a, st->n_kv, st->head_dim, "thin key scores")) return;
    if (a->n_heads > 65535) {
        cu_fail(b, "thin key scores: %d heads exceed the grid", a->n_heads);
        return;
    }
    if (a->tk == 0) return;
    k_kvt_probs<<<(unsigned)a->n_heads, KVS_WARPS * 32, 0, b->stream>>>(*a, st->k, st->chan,
                                                                          st->n_thin, st->n_chan);
    CU_LAUNCHED(b, "k_kvt_probs");
}

static void op_kvt_mix(plm_backend *be, const plm_kv_thin *st, float *k, int64_t kv_stride,
                       const int32_t *head, const int32_t *dst, const int32_t *src,
                       const float *a, const float *bw, int64_t n)
{
    cu_backend *b = kvs_enter(be);
    if (!b || n <= 0) return;
    char *d = cu_stage_merges(b, head, dst, src, a, bw, n, "thin key merges");
    if (!d) return;
    const size_t w = (size_t)n * 4;
    k_kvt_mix<<<1, 128, (size_t)st->head_dim * sizeof(float), b->stream>>>(
        st->k, st->chan, st->n_thin, k, kv_stride, st->n_kv, st->head_dim, st->n_chan,
        (const int32_t *)d, (const int32_t *)(d + w), (const int32_t *)(d + 2 * w),
        (const float *)(d + 3 * w), (const float *)(d + 4 * w), n);
    CU_LAUNCHED(b, "k_kvt_mix");
}

const plm_kv_thin_ops cu_kv_thin_ops = {op_kvt_compress, op_kvt_attend, op_kvt_probs,
                                        op_kvt_mix};
