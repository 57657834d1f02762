/* Decode matmuls: y[m x n] = x[m x k] * W^T (+ bias) for m <= 8 and W bf16/f16 [n x k]
 * row-major, x and y float32. At m = 1 this reads each weight once and does 2 flops per 2
 * bytes, so it is a bandwidth problem: a 16-bit GEMM (cu_matmul's cuBLASLt path) pads m to a
 * tensor-core tile and rounds x to 16 bits first; this kernel instead streams W at full
 * bandwidth and, like the CPU backend, multiplies the exactly widened weights by the float32
 * activations with float32 accumulation.
 *
 * One launch may cover several weights that share x (q, k and v: "segments" whose rows are
 * numbered one after the other), or the MLP's gate and up weights, whose row j pair up in one
 * warp so that silu(gate . x) * (up . x) is written directly (GLU), the intermediate never
 * stored twice. At the 7B's shapes that makes 2 launches of 96 and 176 MB out of 5 of 32-88 MB:
 * each launch pays a ramp (blocks start, the first bytes arrive) that a 10-30 us kernel feels.
 *
 * Layout of the work: a warp owns a "group" of R weight rows (R consecutive rows of one
 * segment; with GLU row j of gate and row j of up). A lane reads 16 bytes (8 weights, one
 * "chunk") per row per load; chunk c of a row is elements 8c .. 8c+7, and lane l takes chunks
 * l, l + 32, ..., so a warp's load is 512 contiguous bytes. U chunks per row are loaded before
 * they are used (R * U * 16 = 128 bytes in flight per lane), and the next batch is requested as
 * soon as one is consumed, the next group's first batch while this group's sums are reduced.
 * The grid is persistent (as many blocks as fit the GPU at once; each warp strides over the
 * groups), so each block stages x in shared memory once, as float32, with 16-byte loads: for
 * m = 1 all of x up to k = 12288 fits (48 KiB). Wider x (several rows, k = 11008) is staged in
 * tiles of kt columns, all m rows at a time. Each lane keeps R * m float32 partial sums that a
 * warp shuffle reduces at the end.
 *
 * The kernel is launched with programmatic dependent launch (cu_launch_pdl): its blocks may
 * start while the op before it (a norm, the attention) still runs, load their first weights,
 * and only then wait for that op's output, x.
 *
 * The vector path needs every row 16-byte aligned: k % 8 == 0 and W aligned. Otherwise (k odd,
 * say, rows only 2-byte aligned) a scalar kernel reads one weight per lane per step, still
 * coalesced; no real checkpoint shape takes it, and the fused calls then decline. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <limits.h>

#include "cuda/cu_internal.h"

#define GV_WARPS 8
#define GV_THREADS (GV_WARPS * 32)
#define GV_XS_FLOATS 12288 /* x staged per block: 48 KiB, the most a block gets without opting in */
#define GV_MAX_SEG 3
/* Blocks per SM the vector kernel is built for (__launch_bounds__: <= 64 registers at m = 1,
 * 80 at m = 2, 128 above; none spill in the one-tile kernels) and its persistent grid counts
 * on: 32, 24 or 16 warps streaming per SM. */
#define GV_MIN_BLOCKS(M) ((M) == 1 ? 4 : (M) == 2 ? 3 : 2)

__device__ static inline float gv_warp_sum(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* 16 bytes of weights, not kept in L1: every byte is read once per call. volatile keeps the
 * first batch's loads ahead of cu_pdl_wait (also volatile), where they overlap the op before. */
__device__ static inline uint4 gv_load16(const uint16_t *p)
{
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
        : "l"(p));
    return v;
}

/* The two 16-bit weights of u (element 2i in the low half: little-endian) as floats; exact. */
template <bool BF> __device__ static inline float2 gv_widen2(uint32_t u)
{
    if (BF) return make_float2(__uint_as_float(u << 16), __uint_as_float(u & 0xffff0000u));
    __half2 h;
    memcpy(&h, &u, sizeof h);
    return __half22float2(h);
}

template <bool BF> __device__ static inline float gv_widen1(uint16_t u)
{
    if (BF) return __uint_as_float((uint32_t)u << 16);
    return __half2float(__ushort_as_half(u));
}

/* acc += the 8 weights of wv . x[8c .. 8c+7], where xl holds x[8c .. 8c+3], xh x[8c+4 .. +7]. */
template <bool BF>
__device__ static inline float gv_dot8(uint4 wv, float4 xl, float4 xh, float acc)
{
    const float2 w0 = gv_widen2<BF>(wv.x), w1 = gv_widen2<BF>(wv.y);
    const float2 w2 = gv_widen2<BF>(wv.z), w3 = gv_widen2<BF>(wv.w);
    acc = fmaf(w0.x, xl.x, acc);
    acc = fmaf(w0.y, xl.y, acc);
    acc = fmaf(w1.x, xl.z, acc);
    acc = fmaf(w1.y, xl.w, acc);
    acc = fmaf(w2.x, xh.x, acc);
    acc = fmaf(w2.y, xh.y, acc);
    acc = fmaf(w3.x, xh.z, acc);
    acc = fmaf(w3.y, xh.w, acc);
    return acc;
}

/* One weight matrix of a launch: rows [g0 * R, ...) of the launch's row numbering. */
typedef struct gv_seg {
    const uint16_t *w; /* [n x k] */
    const float *bias; /* [n] or NULL */
    float *y;          /* [m x n] */
    int n;
    int g0; /* its first group; INT_MAX for an unused slot */
} gv_seg;

typedef struct gv_params {
    gv_seg s[GV_MAX_SEG]; /* with GLU: s[0] gate (and y), s[1] up */
    const float *x;
    int k, kt;  /* columns; columns of x per shared-memory tile (a multiple of 8) */
    int groups; /* warps' work items over all segments */
    int xvec;   /* x 16-byte aligned: staged with float4 loads */
} gv_params;

/* The rows of group g (ok[r] false past a segment's end or past the last group: nothing read). */
template <int R, bool GLU>
__device__ static inline void gv_rows(const gv_params &p, int g, const uint16_t *(&wr)[R],
                                      bool (&ok)[R])
{
    if constexpr (GLU) {
        static_assert(R == 2, "GLU pairs a gate row with an up row");
        const bool live = g < p.groups;
        const int64_t off = (int64_t)(live ? g : 0) * p.k;
        wr[0] = p.s[0].w + off;
        wr[1] = p.s[1].w + off;
        ok[0] = ok[1] = live;
    } else {
        /* field by field: a computed index into the parameter struct would copy it to local
         * memory */
        const int si = g >= p.s[2].g0 ? 2 : g >= p.s[1].g0 ? 1 : 0;
        const uint16_t *w = si == 2 ? p.s[2].w : si == 1 ? p.s[1].w : p.s[0].w;
        const int n = si == 2 ? p.s[2].n : si == 1 ? p.s[1].n : p.s[0].n;
        const int row0 = (g - (si == 2 ? p.s[2].g0 : si == 1 ? p.s[1].g0 : p.s[0].g0)) * R;
#pragma unroll
        for (int r = 0; r < R; r++) {
            ok[r] = g < p.groups && row0 + r < n;
            wr[r] = w + (int64_t)(ok[r] ? row0 + r : 0) * p.k;
        }
    }
}

/* Stages x's chunks [t0, t0 + tn) of all M rows: the low halves (x[8c .. 8c+3]) of the tile's
 * chunks, then the high halves, so that lane l's two float4 reads of chunk l hit 32
 * consecutive float4s (no bank conflicts): row i's chunk cl sits at float4 i * kt/4 + cl and
 * i * kt/4 + kt/8 + cl. */
template <int M>
__device__ static inline void gv_stage(float4 *xs4, const float *x, int k, int kt, int t0,
                                       int tn, bool xvec)
{
    const int per_row = 2 * tn;
#pragma unroll 4
    for (int e = threadIdx.x; e < M * per_row; e += blockDim.x) {
        const int i = e / per_row, q = e - i * per_row;
        const int hi = q >= tn, cl = hi ? q - tn : q;
        const float *src = x + (int64_t)i * k + 8 * (int64_t)(t0 + cl) + 4 * hi;
        /* coherent loads, not the read-only path: x was written by the kernel this one may
         * have overlapped (cu_pdl_wait makes those writes visible) */
        const float4 v = xvec ? *(const float4 *)src : make_float4(src[0], src[1], src[2], src[3]);
        xs4[i * (kt >> 2) + hi * (kt >> 3) + cl] = v;
    }
}

__device__ static inline float gv_silu(float v)
{
    return v / (1.0f + expf(-v)); /* the CPU's and cu_elementwise's formula */
}

/* Vector path (k % 8 == 0, every W 16-byte aligned). kt: columns of x per tile = the
 * shared-memory row stride, a multiple of 8; when k > kt it is a multiple of 8 * 32 * U, so a
 * batch of U chunk-steps (32 * U chunks) never straddles two tiles. The loop over groups runs
 * the same number of times in every warp of a block (groups past the end read nothing), since
 * tiles are staged between __syncthreads. */
template <int M, int R, int U, bool BF, bool GLU, bool TILED>
__global__ void __launch_bounds__(GV_THREADS, GV_MIN_BLOCKS(M)) k_gemv_vec(const gv_params p)
{
    extern __shared__ float4 gv_sm4[];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int nc = p.k >> 3, tc = TILED ? p.kt >> 3 : nc; /* chunks per row, per tile */
    const int stride = gridDim.x * GV_WARPS;
    int g = blockIdx.x * GV_WARPS + warp;

    const uint16_t *wr[R];
    bool ok[R];
    uint4 wv[R][U];
    /* Batch at chunk c0: lane's chunks c0 + lane + 32u, u < U (zeros past the row). */
    auto load = [&](int c0) {
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int c = c0 + lane + 32 * u;
#pragma unroll
            for (int r = 0; r < R; r++)
                wv[r][u] = ok[r] && c < nc ? gv_load16(wr[r] + 8 * (int64_t)c)
                                           : make_uint4(0u, 0u, 0u, 0u);
        }
    };
    gv_rows<R, GLU>(p, g, wr, ok);
    load(0); /* weights only: constant, safe before the wait */
    cu_pdl_wait();
    cu_pdl_trigger();
    if (!TILED) {
        gv_stage<M>(gv_sm4, p.x, p.k, p.kt, 0, nc, p.xvec);
        __syncthreads();
    }

    for (int base = blockIdx.x * GV_WARPS; base < p.groups; base += stride, g += stride) {
        float acc[R][M];
#pragma unroll
        for (int r = 0; r < R; r++)
#pragma unroll
            for (int i = 0; i < M; i++) acc[r][i] = 0.0f;
        int c0 = 0;
        for (int t0 = 0; t0 < nc; t0 += tc) { /* t0: the tile's first chunk */
            const int tn = min(tc, nc - t0);  /* chunks in this tile */
            if (TILED) {
                __syncthreads(); /* the previous tile is consumed */
                gv_stage<M>(gv_sm4, p.x, p.k, p.kt, t0, tn, p.xvec);
                __syncthreads();
            }
            const float4 *xs4 = gv_sm4;
            /* c0 is a multiple of 32U and so is t0 (tc is, or there is one tile): the batch
             * lies in this tile, and its chunks past t0 + tn (the row's end) are skipped. */
            for (; c0 < t0 + tn; c0 += 32 * U) {
#pragma unroll
                for (int u = 0; u < U; u++) {
                    const int c = c0 + lane + 32 * u;
                    if (c < t0 + tn) {
                        const int cl = c - t0; /* chunk within the tile */
#pragma unroll
                        for (int i = 0; i < M; i++) {
                            const float4 xl = xs4[i * (p.kt >> 2) + cl];
                            const float4 xh = xs4[i * (p.kt >> 2) + (p.kt >> 3) + cl];
#pragma unroll
                            for (int r = 0; r < R; r++)
                                acc[r][i] = gv_dot8<BF>(wv[r][u], xl, xh, acc[r][i]);
                        }
                    }
                }
                /* the row's next batch (in flight while a next tile is staged) */
                if (c0 + 32 * U < nc) load(c0 + 32 * U);
            }
        }
        /* the next group's first batch: in flight while this group's sums are reduced */
        gv_rows<R, GLU>(p, g + stride, wr, ok);
        load(0);
        if (g >= p.groups) continue; /* uniform per warp; the block's loop count is unchanged */
        if constexpr (GLU) {
            const int n = p.s[0].n;
#pragma unroll
            for (int i = 0; i < M; i++) {
                const float sg = gv_warp_sum(acc[0][i]), su = gv_warp_sum(acc[1][i]);
                if (lane == i) {
                    const float gt = p.s[0].bias ? sg + p.s[0].bias[g] : sg;
                    const float up = p.s[1].bias ? su + p.s[1].bias[g] : su;
                    p.s[0].y[(int64_t)i * n + g] = gv_silu(gt) * up;
                }
            }
        } else {
            const int si = g >= p.s[2].g0 ? 2 : g >= p.s[1].g0 ? 1 : 0;
            const int n = si == 2 ? p.s[2].n : si == 1 ? p.s[1].n : p.s[0].n;
            const int row0 = (g - (si == 2 ? p.s[2].g0 : si == 1 ? p.s[1].g0 : p.s[0].g0)) * R;
            float *y = si == 2 ? p.s[2].y : si == 1 ? p.s[1].y : p.s[0].y;
            const float *bias = si == 2 ? p.s[2].bias : si == 1 ? p.s[1].bias : p.s[0].bias;
#pragma unroll
            for (int r = 0; r < R; r++)
#pragma unroll
                for (int i = 0; i < M; i++) {
                    const float s = gv_warp_sum(acc[r][i]);
                    if (lane == r * M + i && row0 + r < n)
                        y[(int64_t)i * n + row0 + r] = bias ? s + bias[row0 + r] : s;
                }
        }
    }
}

/* Scalar path (any k, any alignment): lane l takes columns l, l + 32, ... of each row; x tiles
 * of kt columns, plain layout xs[i * kt + e]. */
template <int M, int R, bool BF>
__global__ void __launch_bounds__(GV_WARPS * 32, 2)
    k_gemv_scalar(float *__restrict__ y, const float *__restrict__ x,
                  const uint16_t *__restrict__ w, const float *__restrict__ bias, int n, int k,
                  int kt)
{
    extern __shared__ float4 gv_sm4[];
    float *xs = (float *)gv_sm4;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int row0 = (blockIdx.x * GV_WARPS + warp) * R;
    const uint16_t *wr[R];
    bool ok[R];
#pragma unroll
    for (int r = 0; r < R; r++) {
        ok[r] = row0 + r < n;
        wr[r] = w + (int64_t)(ok[r] ? row0 + r : 0) * k;
    }
    float acc[R][M];
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int i = 0; i < M; i++) acc[r][i] = 0.0f;
    for (int t0 = 0; t0 < k; t0 += kt) {
        const int tn = min(kt, k - t0);
        __syncthreads();
#pragma unroll
        for (int i = 0; i < M; i++)
            for (int e = threadIdx.x; e < tn; e += blockDim.x)
                xs[i * kt + e] = x[(int64_t)i * k + t0 + e];
        __syncthreads();
#pragma unroll 4
        for (int e = lane; e < tn; e += 32) {
#pragma unroll
            for (int r = 0; r < R; r++) {
                const float wf = ok[r] ? gv_widen1<BF>(wr[r][t0 + e]) : 0.0f;
#pragma unroll
                for (int i = 0; i < M; i++) acc[r][i] = fmaf(wf, xs[i * kt + e], acc[r][i]);
            }
        }
    }
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int i = 0; i < M; i++) {
            const float s = gv_warp_sum(acc[r][i]);
            if (lane == 0 && ok[r])
                y[(int64_t)i * n + row0 + r] = bias ? s + bias[row0 + r] : s;
        }
}

/* The scalar kernel (k % 8 != 0 or W unaligned; one weight per launch). R rows per warp: at
 * m >= 2 each x value read from shared memory serves two rows. */
template <int M, bool BF>
static void gv_launch_scalar(cu_backend *b, float *y, const float *x, const uint16_t *w,
                             const float *bias, int n, int k)
{
    constexpr int R = M == 1 ? 1 : 2;
    constexpr int kt_max = GV_XS_FLOATS / M;
    const unsigned grid = (unsigned)((n + GV_WARPS * R - 1) / (GV_WARPS * R));
    const int kt = k < kt_max ? k : kt_max;
    k_gemv_scalar<M, R, BF><<<grid, GV_THREADS, sizeof(float) * M * kt, b->stream>>>(
        y, x, w, bias, n, k, kt);
    CU_LAUNCHED(b, "k_gemv_scalar");
}

/* Rows per group: two at m >= 2 (each x value read from shared memory then serves two rows,
 * halving the shared-memory traffic per weight byte: at m = 8 and one row it would exceed what
 * an SM's shared memory delivers while HBM streams its share), and always two with GLU. */
static int gv_rows_per_group(int64_t m, bool glu)
{
    return glu || m > 1 ? 2 : 1;
}

template <int M, bool BF, bool GLU> static void gv_launch_vec(cu_backend *b, gv_params p)
{
    constexpr int R = GLU || M > 1 ? 2 : 1, U = 8 / R;
    /* one tile when all of x fits; else the widest tile whose chunk count is a multiple of
     * 32U: 6144 columns (m = 2), 3072 (3, 4), 2048 (5, 6), 1024 (7, 8) */
    constexpr int gran = 8 * 32 * U;
    constexpr int kt_max = GV_XS_FLOATS / M / gran * gran;
    static_assert(kt_max >= gran, "x tile narrower than one batch");
    const bool tiled = p.k > GV_XS_FLOATS / M;
    p.kt = tiled ? kt_max : p.k;
    const int64_t blocks = (p.groups + GV_WARPS - 1) / GV_WARPS;
    const int64_t fit = (int64_t)b->n_sm * GV_MIN_BLOCKS(M);
    const unsigned grid = (unsigned)(blocks < fit ? blocks : fit);
    const size_t smem = sizeof(float) * M * p.kt;
    if (tiled)
        cu_launch_pdl(b, "k_gemv_vec", k_gemv_vec<M, R, U, BF, GLU, true>, dim3(grid),
                      dim3(GV_THREADS), smem, p);
    else
        cu_launch_pdl(b, "k_gemv_vec", k_gemv_vec<M, R, U, BF, GLU, false>, dim3(grid),
                      dim3(GV_THREADS), smem, p);
}

template <bool BF, bool GLU>
static void gv_dispatch_vec(cu_backend *b, const gv_params &p, int64_t m)
{
    switch (m) {
    case 1: gv_launch_vec<1, BF, GLU>(b, p); break;
    case 2: gv_launch_vec<2, BF, GLU>(b, p); break;
    case 3: gv_launch_vec<3, BF, GLU>(b, p); break;
    case 4: gv_launch_vec<4, BF, GLU>(b, p); break;
    case 5: gv_launch_vec<5, BF, GLU>(b, p); break;
    case 6: gv_launch_vec<6, BF, GLU>(b, p); break;
    case 7: gv_launch_vec<7, BF, GLU>(b, p); break;
    default: gv_launch_vec<8, BF, GLU>(b, p); break;
    }
}

template <bool BF>
static void gv_dispatch_scalar(cu_backend *b, float *y, const float *x, const uint16_t *w,
                               const float *bias, int64_t m, int n, int k)
{
    switch (m) {
    case 1: gv_launch_scalar<1, BF>(b, y, x, w, bias, n, k); break;
    case 2: gv_launch_scalar<2, BF>(b, y, x, w, bias, n, k); break;
    case 3: gv_launch_scalar<3, BF>(b, y, x, w, bias, n, k); break;
    case 4: gv_launch_scalar<4, BF>(b, y, x, w, bias, n, k); break;
    case 5: gv_launch_scalar<5, BF>(b, y, x, w, bias, n, k); break;
    case 6: gv_launch_scalar<6, BF>(b, y, x, w, bias, n, k); break;
    case 7: gv_launch_scalar<7, BF>(b, y, x, w, bias, n, k); break;
    default: gv_launch_scalar<8, BF>(b, y, x, w, bias, n, k); break;
    }
}

/* The shapes the GEMV takes at all: m <= 8, 16-bit weights, int indices inside (chunks,
 * columns, rows; row offsets are int64). */
static bool gv_shape_ok(const plm_weight *w, int64_t m)
{
    return m >= 1 && m <= CU_GEMV_MAX_ROWS && (w->dtype == PLM_BF16 || w->dtype == PLM_F16) &&
           w->rows >= 1 && w->cols >= 1 && w->rows <= INT_MAX / 4 && w->cols <= INT_MAX / 2;
}

/* What the vector kernel needs of each weight of a launch: the first one's dtype and k, a
 * multiple of 8, and 16-byte aligned rows. */
static bool gv_vec_ok(const plm_weight *w, const plm_weight *first, int64_t m)
{
    return gv_shape_ok(w, m) && w->dtype == first->dtype && w->cols == first->cols &&
           w->cols % 8 == 0 && (uintptr_t)w->data % 16 == 0;
}

static void gv_run_vec(cu_backend *b, gv_params &p, const plm_weight *w0, int64_t m, bool glu)
{
    p.k = (int)w0->cols;
    p.xvec = (uintptr_t)p.x % 16 == 0;
    if (w0->dtype == PLM_BF16) {
        if (glu) gv_dispatch_vec<true, true>(b, p, m);
        else gv_dispatch_vec<true, false>(b, p, m);
    } else {
        if (glu) gv_dispatch_vec<false, true>(b, p, m);
        else gv_dispatch_vec<false, false>(b, p, m);
    }
}

int cu_gemv_multi(cu_backend *b, int n, float *const *y, const float *x,
                  const plm_weight *const *w, const float *const *bias, int64_t m)
{
    if (n < 1 || n > GV_MAX_SEG) return 0;
    for (int i = 0; i < n; i++)
        if (!gv_vec_ok(w[i], w[0], m)) return 0;
    gv_params p;
    memset(&p, 0, sizeof p);
    const int R = gv_rows_per_group(m, false);
    int64_t groups = 0;
    for (int i = 0; i < GV_MAX_SEG; i++) {
        if (i >= n) {
            p.s[i].g0 = INT_MAX;
            continue;
        }
        p.s[i].w = (const uint16_t *)w[i]->data;
        p.s[i].bias = bias[i];
        p.s[i].y = y[i];
        p.s[i].n = (int)w[i]->rows;
        p.s[i].g0 = (int)groups;
        groups += (w[i]->rows + R - 1) / R;
    }
    if (groups > INT_MAX / 2) return 0;
    p.x = x;
    p.groups = (int)groups;
    gv_run_vec(b, p, w[0], m, false);
    return 1;
}

int cu_gemv_glu(cu_backend *b, float *y, const float *x, const plm_weight *gate,
                const float *gate_b, const plm_weight *up, const float *up_b, int64_t m)
{
    if (!gv_vec_ok(gate, gate, m) || !gv_vec_ok(up, gate, m) || up->rows != gate->rows) return 0;
    gv_params p;
    memset(&p, 0, sizeof p);
    p.s[0] = {(const uint16_t *)gate->data, gate_b, y, (int)gate->rows, 0};
    p.s[1] = {(const uint16_t *)up->data, up_b, NULL, (int)up->rows, INT_MAX};
    p.s[2].g0 = INT_MAX;
    p.x = x;
    p.groups = (int)gate->rows;
    gv_run_vec(b, p, gate, m, true);
    return 1;
}

int cu_gemv(cu_backend *b, float *y, const float *x, const plm_weight *w, const float *bias,
            int64_t m)
{
    if (!gv_shape_ok(w, m)) return 0;
    if (gv_vec_ok(w, w, m)) return cu_gemv_multi(b, 1, &y, x, &w, &bias, m);
    if (w->dtype == PLM_BF16)
        gv_dispatch_scalar<true>(b, y, x, (const uint16_t *)w->data, bias, m, (int)w->rows,
                                 (int)w->cols);
    else
        gv_dispatch_scalar<false>(b, y, x, (const uint16_t *)w->data, bias, m, (int)w->rows,
                                  (int)w->cols);
    return 1;
}
