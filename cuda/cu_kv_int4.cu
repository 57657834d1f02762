/* The int4 KV store on the GPU (KIVI; prune/kv_int4.h has the format; the CPU twins are in
 * core/backend_cpu_int4.c and prune/kv_int4.c, tested against these by
 * tests/gpu/test_cuda_kvstore.c).
 *
 * Quantisation runs where the rows lie, one block per key group; its arithmetic is the host's
 * step for step (min/max in row order, IEEE division, round half to even, no fused
 * multiply-add), so the GPU test can demand bit-identical codes and parameters.
 *
 * Dequantising decode attention: lane l owns channels l*P .. l*P+P-1, so its key and value
 * codes are P/2 consecutive bytes of the row and a warp reads a row's head_dim/2 code bytes as
 * one run (an eighth of the float32 row). A stored row's key dequantises with its key group's
 * min/scale per channel, which a warp keeps in registers until the group changes (rows of a
 * group are consecutive), and its value with the row's own per-channel-group min/scale. Rows at
 * or past the head's n_q are read from the dense cache. Split-K and the warp merge are
 * cu_kv_splitk.cuh's. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cu_kv_splitk.cuh"
#include "cuda/cu_kvstore.h"

/* The host's kv_int4_code / kv_int4_value, without contraction. */
__device__ static inline int kvq_code(float x, float mn, float sc)
{
    if (!(sc > 0.0f)) return 0;
    float t = __fdiv_rn(__fsub_rn(x, mn), sc);
    t = t < 0.0f ? 0.0f : t > 15.0f ? 15.0f : t;
    return (int)rintf(t);
}

__device__ static inline float kvq_value(int c, float mn, float sc)
{
    return __fadd_rn(__fmul_rn((float)c, sc), mn);
}

__device__ static inline int kvq_get(const uint8_t *codes, int d)
{
    const uint8_t b = codes[d >> 1];
    return d & 1 ? b >> 4 : b & 15;
}

/* min and scale of x[0], x[stride], ... x[(n-1)*stride], in the host's order */
__device__ static inline void kvq_params(const float *x, int n, int64_t stride, float *mn,
                                         float *sc)
{
    float lo = x[0], hi = x[0];
    for (int i = 1; i < n; i++) {
        const float y = x[i * stride];
        lo = y < lo ? y : lo;
        hi = y > hi ? y : hi;
    }
    *mn = lo;
    *sc = __fdiv_rn(__fsub_rn(hi, lo), 15.0f);
}

/* ---- quantisation: one block per key group of head h ------------------------------------- */

__global__ static void k_kvq_quantize(plm_kv_int4 st, const float *k, const float *v,
                                      int64_t kv_stride, int h, int64_t r0, int64_t slot0)
{
    const int G = st.group, hd = st.head_dim, cb = hd / 2;
    const int64_t g0 = r0 + (int64_t)blockIdx.x * G, slot = slot0 + blockIdx.x;
    float *mn = st.k_mn + ((int64_t)h * st.n_slots + slot) * hd;
    float *sc = st.k_sc + ((int64_t)h * st.n_slots + slot) * hd;
    /* keys: a thread per channel pair (one code byte per row) */
    for (int p = threadIdx.x; p < cb; p += blockDim.x) {
        float lo[2], s[2];
        for (int e = 0; e < 2; e++) {
            const int d = 2 * p + e;
            kvq_params(k + g0 * kv_stride + (int64_t)h * hd + d, G, kv_stride, &lo[e], &s[e]);
            mn[d] = lo[e];
            sc[d] = s[e];
        }
        for (int r = 0; r < G; r++) {
            const float *x = k + (g0 + r) * kv_stride + (int64_t)h * hd + 2 * p;
            st.k_codes[((g0 + r) * st.n_kv + h) * cb + p] =
                (uint8_t)(kvq_code(x[0], lo[0], s[0]) | kvq_code(x[1], lo[1], s[1]) << 4);
        }
    }
    for (int r = threadIdx.x; r < G; r += blockDim.x)
        st.k_slot[(g0 + r) * st.n_kv + h] = (int32_t)slot;
    /* values: a thread per (row, code byte); each channel's group parameters are recomputed by
     * the threads that need them, and written by the one holding the group's first channel */
    for (int t = threadIdx.x; t < G * cb; t += blockDim.x) {
        const int r = t / cb, p = t % cb;
        const int64_t row = (g0 + r) * st.n_kv + h;
        const float *x = v + (g0 + r) * kv_stride + (int64_t)h * hd;
        int byte = 0;
        for (int e = 0; e < 2; e++) {
            const int d = 2 * p + e, gi = d / st.vgroup, gs = gi * st.vgroup;
            float lo, s;
            kvq_params(x + gs, st.vgroup, 1, &lo, &s);
            if (d == gs) {
                st.v_mn[row * st.n_vg + gi] = lo;
                st.v_sc[row * st.n_vg + gi] = s;
            }
            byte |= kvq_code(x[d], lo, s) << (4 * e);
        }
        st.v_codes[row * cb + p] = (uint8_t)byte;
    }
}

/* ---- decode attention ---------------------------------------------------------------------- */

typedef struct kvq_attn {
    plm_attn_args a;
    plm_kv_int4 st;
    int group, qgroups, n_splits;
    int64_t chunk;
    float *work;
} kvq_attn;

template <int P, int G>
__global__ void __launch_bounds__(KVS_WARPS * 32) k_kvq_attend(kvq_attn p)
{
    const plm_attn_args &a = p.a;
    const plm_kv_int4 &st = p.st;
    const int hd = a.head_dim, lane = threadIdx.x % 32, warp = threadIdx.x / 32, cb = hd / 2;
    const kvs_tile tile = kvs_tile_of<G>(a, p.group, p.qgroups, p.chunk);
    const int kh = tile.kh, h0 = tile.h0, ng = tile.ng;
    const int64_t i = tile.i, split = tile.split, r0 = tile.r0, r1 = tile.r1;
    const int d0 = lane * P;
    const int64_t nq = st.n_q[kh];

    float q[G][P], acc[G][P], m[G], l[G];
    kvs_start<P, G>(a, tile, d0, q, acc, m, l);
    /* the key group whose min/scale the lane holds */
    int32_t cur = -1;
    float kmn[P], ksc[P];

    auto step = [&](int64_t j0, int64_t end, bool stored) {
        float kv[KVS_ROWS][P], vv[KVS_ROWS][P];
#pragma unroll
        for (int r = 0; r < KVS_ROWS; r++) {
            const int64_t j = j0 + r;
            const bool live = j < end;
            const int64_t jr = live ? j : j0;
            if (stored) {
                const int64_t row = jr * st.n_kv + kh;
                const int32_t slot = st.k_slot[row];
                if (slot != cur) { /* uniform across the warp: same row */
                    cur = slot;
                    const int64_t base = ((int64_t)kh * st.n_slots + slot) * hd;
#pragma unroll
                    for (int t = 0; t < P; t++) {
                        kmn[t] = d0 + t < hd ? st.k_mn[base + d0 + t] : 0.0f;
                        ksc[t] = d0 + t < hd ? st.k_sc[base + d0 + t] : 0.0f;
                    }
                }
                const uint8_t *kc = st.k_codes + row * cb, *vc = st.v_codes + row * cb;
                const float *vmn = st.v_mn + row * st.n_vg, *vsc = st.v_sc + row * st.n_vg;
                int gprev = -1;
                float gmn = 0.0f, gsc = 0.0f;
#pragma unroll
                for (int t = 0; t < P; t++) {
                    const int d = d0 + t;
                    const bool ok = live && d < hd;
                    kv[r][t] = ok ? kvq_value(kvq_get(kc, d), kmn[t], ksc[t]) : 0.0f;
                    const int gi = d / st.vgroup;
                    if (ok && gi != gprev) {
                        gprev = gi;
                        gmn = vmn[gi];
                        gsc = vsc[gi];
                    }
                    vv[r][t] = ok ? kvq_value(kvq_get(vc, d), gmn, gsc) : 0.0f;
                }
            } else {
                const int64_t off = jr * a.kv_stride + (int64_t)kh * hd + d0;
#pragma unroll
                for (int t = 0; t < P; t++) {
                    const bool ok = live && d0 + t < hd;
                    kv[r][t] = ok ? a.k[off + t] : 0.0f;
                    vv[r][t] = ok ? a.v[off + t] : 0.0f;
                }
            }
        }
        float s[G][KVS_ROWS];
#pragma unroll
        for (int g = 0; g < G; g++)
#pragma unroll
            for (int r = 0; r < KVS_ROWS; r++) {
                float dot = 0.0f;
#pragma unroll
                for (int t = 0; t < P; t++) dot += q[g][t] * kv[r][t];
                s[g][r] = j0 + r < end ? kvs_warp_sum(dot) * a.scale : -INFINITY;
            }
        kvs_softmax_step<P, G>(s, vv, acc, m, l);
    };

    const int64_t stride = (int64_t)KVS_WARPS * KVS_ROWS;
    const int64_t q_end = min(r1, nq);
    for (int64_t j0 = r0 + warp * KVS_ROWS; j0 < q_end; j0 += stride) step(j0, q_end, true);
    const int64_t d_beg = max(r0, nq);
    for (int64_t j0 = d_beg + warp * KVS_ROWS; j0 < r1; j0 += stride) step(j0, r1, false);
    kvs_finish<P, G>(a, acc, m, l, h0, ng, i, split, p.n_splits, p.work);
}

/* ---- scores (attn_probs per head): one block per query head --------------------------------- */

__device__ static inline float kvq_dot(const plm_attn_args &a, const plm_kv_int4 &st, int kh,
                                       int64_t j, const float *sq)
{
    const int lane = threadIdx.x % 32, hd = a.head_dim;
    float s = 0.0f;
    if (j < st.n_q[kh]) {
        const int64_t row = j * st.n_kv + kh;
        const int64_t base = ((int64_t)kh * st.n_slots + st.k_slot[row]) * hd;
        const uint8_t *kc = st.k_codes + row * (hd / 2);
        for (int d = lane; d < hd; d += 32)
            s += sq[d] * kvq_value(kvq_get(kc, d), st.k_mn[base + d], st.k_sc[base + d]);
    } else {
        const float *k = a.k + j * a.kv_stride + (int64_t)kh * hd;
        for (int d = lane; d < hd; d += 32) s += sq[d] * k[d];
    }
    return kvs_warp_sum(s) * a.scale;
}

__global__ void __launch_bounds__(KVS_WARPS * 32) k_kvq_probs(plm_attn_args a, plm_kv_int4 st)
{
    __shared__ float sq[KVS_MAX_HD], red[KVS_WARPS];
    const int h = blockIdx.x, kh = h / (a.n_heads / a.n_kv);
    auto load = [&](int64_t i) {
        const float *qrow = a.q + i * a.q_stride + (int64_t)h * a.head_dim;
        for (int d = threadIdx.x; d < a.head_dim; d += blockDim.x) sq[d] = qrow[d];
    };
    kvs_probs(a, load, [&](int64_t j) { return kvq_dot(a, st, kh, j, sq); }, red);
}

/* ---- merges: one block walks the list in order --------------------------------------------- */

/* Row j of head h, K and V, as attention reads it, into kx / vx (threads split channels). */
__device__ static void kvq_read_row(const plm_kv_int4 &st, const float *k, const float *v,
                                    int64_t kv_stride, int h, int64_t j, float *kx, float *vx)
{
    const int hd = st.head_dim;
    if (j < st.n_q[h]) {
        const int64_t row = j * st.n_kv + h;
        const int64_t base = ((int64_t)h * st.n_slots + st.k_slot[row]) * hd;
        for (int d = threadIdx.x; d < hd; d += blockDim.x) {
            kx[d] = kvq_value(kvq_get(st.k_codes + row * (hd / 2), d), st.k_mn[base + d],
                              st.k_sc[base + d]);
            const int gi = d / st.vgroup;
            vx[d] = kvq_value(kvq_get(st.v_codes + row * (hd / 2), d),
                              st.v_mn[row * st.n_vg + gi], st.v_sc[row * st.n_vg + gi]);
        }
    } else {
        for (int d = threadIdx.x; d < hd; d += blockDim.x) {
            kx[d] = k[j * kv_stride + (int64_t)h * hd + d];
            vx[d] = v[j * kv_stride + (int64_t)h * hd + d];
        }
    }
}

__global__ static void k_kvq_mix(plm_kv_int4 st, float *k, float *v, int64_t kv_stride,
                                 const int32_t *head, const int32_t *dst, const int32_t *src,
                                 const float *a, const float *bw, int64_t n)
{
    extern __shared__ float sm[]; /* kd | vd | ks | vs, head_dim each */
    const int hd = st.head_dim, cb = hd / 2;
    float *kd = sm, *vd = sm + hd, *ks = sm + 2 * hd, *vs = sm + 3 * hd;
    for (int64_t m = 0; m < n; m++) {
        const int h = head[m];
        kvq_read_row(st, k, v, kv_stride, h, src[m], ks, vs);
        kvq_read_row(st, k, v, kv_stride, h, dst[m], kd, vd);
        __syncthreads();
        for (int d = threadIdx.x; d < hd; d += blockDim.x) {
            kd[d] = __fadd_rn(__fmul_rn(a[m], kd[d]), __fmul_rn(bw[m], ks[d]));
            vd[d] = __fadd_rn(__fmul_rn(a[m], vd[d]), __fmul_rn(bw[m], vs[d]));
        }
        __syncthreads();
        if (dst[m] < st.n_q[h]) { /* re-encode in place */
            const int64_t row = (int64_t)dst[m] * st.n_kv + h;
            const int64_t base = ((int64_t)h * st.n_slots + st.k_slot[row]) * hd;
            for (int p = threadIdx.x; p < cb; p += blockDim.x) {
                int kb = 0, vb = 0;
                for (int e = 0; e < 2; e++) {
                    const int d = 2 * p + e, gi = d / st.vgroup, gs = gi * st.vgroup;
                    kb |= kvq_code(kd[d], st.k_mn[base + d], st.k_sc[base + d]) << (4 * e);
                    float lo, s;
                    kvq_params(vd + gs, st.vgroup, 1, &lo, &s);
                    if (d == gs) {
                        st.v_mn[row * st.n_vg + gi] = lo;
                        st.v_sc[row * st.n_vg + gi] = s;
                    }
                    vb |= kvq_code(vd[d], lo, s) << (4 * e);
                }
                st.k_codes[row * cb + p] = (uint8_t)kb;
                st.v_codes[row * cb + p] = (uint8_t)vb;
            }
        } else {
            for (int d = threadIdx.x; d < hd; d += blockDim.x) {
                k[(int64_t)dst[m] * kv_stride + (int64_t)h * hd + d] = kd[d];
                v[(int64_t)dst[m] * kv_stride + (int64_t)h * hd + d] = vd[d];
            }
        }
        __syncthreads();
    }
}

/* ---- compaction: gather the moving rows to scratch, then scatter them ----------------------- */

/* A stored row's bytes in one store array: codes, slot, value parameters. */
__device__ static inline void kvq_move(uint8_t *to, const uint8_t *from, int n)
{
    for (int x = threadIdx.x % 32; x < n; x += 32) to[x] = from[x];
}

/* dir 0: tmp[unit] = store row idx; dir 1: store row i = tmp[unit]. A warp per (head, i). */
__global__ static void k_kvq_compact(plm_kv_int4 st, uint8_t *tmp, const int32_t *idx, int64_t n,
                                     int dir)
{
    const int cb = st.head_dim / 2, vp = st.n_vg * (int)sizeof(float);
    const int unit = 2 * cb + (int)sizeof(int32_t) + 2 * vp;
    const int64_t warps = (int64_t)gridDim.x * blockDim.x / 32;
    for (int64_t u = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / 32; u < st.n_kv * n;
         u += warps) {
        const int h = (int)(u / n);
        const int64_t i = u % n, r = idx[u];
        if (r == i) continue; /* ascending: a row that stays is nobody's source */
        const int64_t row = (dir ? i : r) * st.n_kv + h;
        uint8_t *t = tmp + u * unit;
        uint8_t *kc = st.k_codes + row * cb, *vc = st.v_codes + row * cb;
        uint8_t *sl = (uint8_t *)(st.k_slot + row);
        uint8_t *mn = (uint8_t *)(st.v_mn + row * st.n_vg);
        uint8_t *sc = (uint8_t *)(st.v_sc + row * st.n_vg);
        if (dir == 0) {
            kvq_move(t, kc, cb);
            kvq_move(t + cb, vc, cb);
            kvq_move(t + 2 * cb, sl, 4);
            kvq_move(t + 2 * cb + 4, mn, vp);
            kvq_move(t + 2 * cb + 4 + vp, sc, vp);
        } else {
            kvq_move(kc, t, cb);
            kvq_move(vc, t + cb, cb);
            kvq_move(sl, t + 2 * cb, 4);
            kvq_move(mn, t + 2 * cb + 4, vp);
            kvq_move(sc, t + 2 * cb + 4 + vp, vp);
        }
    }
}

/* ---- launchers ------------------------------------------------------------------------------ */

static void op_kvq_quantize(plm_backend *be, const plm_kv_int4 *st, const float *k,
                            const float *v, int64_t kv_stride, int head, int64_t r0, int64_t r1,
                            int64_t slot0)
{
    cu_backend *b = kvs_enter(be);
    if (!b || r1 <= r0) return;
    const int64_t groups = (r1 - r0) / st->group;
    if (r0 < 0 || r1 > st->cap || (r1 - r0) % st->group || head < 0 || head >= st->n_kv ||
        slot0 < 0 || slot0 + groups > st->n_slots || kv_stride < (int64_t)st->n_kv * st->head_dim ||
        groups > INT32_MAX) {
        cu_fail(b, "int4 quantize: rows [%lld, %lld) of head %d into groups of %d from slot %lld "
                "(store: %lld rows, %lld slots)", (long long)r0, (long long)r1, head, st->group,
                (long long)slot0, (long long)st->cap, (long long)st->n_slots);
        return;
    }
    k_kvq_quantize<<<(unsigned)groups, 128, 0, b->stream>>>(*st, k, v, kv_stride, head, r0,
                                                             slot0);
    CU_LAUNCHED(b, "k_kvq_quantize");
}

static void op_kvq_attend(plm_backend *be, const plm_attn_args *a, const plm_kv_int4 *st)
{
    cu_backend *b = kvs_enter(be);
    if (!b || !kvs_check(b, a, st->n_kv, st->head_dim, "int4 attention") || a->tq == 0) return;
    kvq_attn p;
    p.a = *a;
    p.st = *st;
    p.group = a->n_heads / a->n_kv;
    const int G = kvs_heads_per_block(p.group);
    p.qgroups = (p.group + G - 1) / G;
    if ((int64_t)a->n_kv * p.qgroups > 65535) {
        cu_fail(b, "int4 attention: %d kv heads x %d query blocks exceed the grid", a->n_kv,
                p.qgroups);
        return;
    }
    int64_t nk = a->causal ? a->q_pos0 + a->tq : a->tk;
    if (nk > a->tk) nk = a->tk;
    p.work = st->work;
    kvs_with_pg(a->head_dim, G, [&](auto P, auto G_) {
        kvs_launch(b, k_kvq_attend<decltype(P)::value, decltype(G_)::value>,
                   "k_kvq_attend", (int)P, p, nk, st->work_floats);
    });
}

static void op_kvq_probs(plm_backend *be, const plm_attn_args *a, const plm_kv_int4 *st)
{
    cu_backend *b = kvs_enter(be);
    if (!b || !kvs_check(b, a, st->n_kv, st->head_dim, "int4 scores")) return;
    if (a->n_heads > 65535) {
        cu_fail(b, "int4 scores: %d heads exceed the grid", a->n_heads);
        return;
    }
    if (a->tk == 0) return;
    k_kvq_probs<<<(unsigned)a->n_heads, KVS_WARPS * 32, 0, b->stream>>>(*a, *st);
    CU_LAUNCHED(b, "k_kvq_probs");
}

static void op_kvq_mix(plm_backend *be, const plm_kv_int4 *st, float *k, float *v,
                       int64_t kv_stride, const int32_t *head, const int32_t *dst,
                       const int32_t *src, const float *a, const float *bw, int64_t n)
{
    cu_backend *b = kvs_enter(be);
    if (!b || n <= 0) return;
    char *d = cu_stage_merges(b, head, dst, src, a, bw, n, "int4 merges");
    if (!d) return;
    const size_t w = (size_t)n * 4;
    k_kvq_mix<<<1, 128, 4 * (size_t)st->head_dim * sizeof(float), b->stream>>>(
        *st, k, v, kv_stride, (const int32_t *)d, (const int32_t *)(d + w),
        (const int32_t *)(d + 2 * w), (const float *)(d + 3 * w), (const float *)(d + 4 * w), n);
    CU_LAUNCHED(b, "k_kvq_mix");
}

static void op_kvq_compact(plm_backend *be, const plm_kv_int4 *st, const int32_t *idx, int64_t n)
{
    cu_backend *b = kvs_enter(be);
    if (!b || n <= 0) return;
    const size_t units = (size_t)st->n_kv * (size_t)n;
    const size_t unit = (size_t)st->head_dim + sizeof(int32_t) + 2 * sizeof(float) * st->n_vg;
    int32_t *d_idx = (int32_t *)cu_stage(b, idx, units * sizeof(int32_t));
    if (!d_idx || !cu_buf_reserve(b, &b->tmp, units * unit, "int4 KV compaction")) return;
    const unsigned grid = cu_grid((int64_t)units * 32, 256);
    k_kvq_compact<<<grid, 256, 0, b->stream>>>(*st, (uint8_t *)b->tmp.p, d_idx, n, 0);
    if (!CU_LAUNCHED(b, "k_kvq_compact gather")) return;
    k_kvq_compact<<<grid, 256, 0, b->stream>>>(*st, (uint8_t *)b->tmp.p, d_idx, n, 1);
    CU_LAUNCHED(b, "k_kvq_compact scatter");
}

const plm_kv_int4_ops cu_kv_int4_ops = {op_kvq_quantize, op_kvq_attend, op_kvq_probs,
                                        op_kvq_mix, op_kvq_compact};
