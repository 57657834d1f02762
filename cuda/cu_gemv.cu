/* Decode matmuls: y[m x n] = x[m x k] * W^T (+ bias) for m <= 8 and W bf16/f16 [n x k]
 * row-major, x and y float32. At m = 1 this reads each weight once and does 2 flops per 2
 * bytes, so it is a bandwidth problem: a 16-bit GEMM (cu_matmul's cuBLASLt path) pads m to a
 * tensor-core tile and rounds x to 16 bits first; this kernel instead streams W at full
 * bandwidth and, like the CPU backend, multiplies the exactly widened weights by the float32
 * activations with float32 accumulation.
 *
 * Layout of the work: a block of GV_WARPS warps owns GV_WARPS * R consecutive output rows, warp
 * w the R rows from (block * GV_WARPS + w) * R. A lane reads 16 bytes (8 weights, one "chunk")
 * per row per load; chunk c of a row is elements 8c .. 8c+7, and lane l takes chunks l, l + 32,
 * ..., so a warp's load is 512 contiguous bytes. U chunks per row are loaded before they are
 * used (R * U * 16 bytes in flight per lane; many warps per SM hide the rest of the latency).
 * x is staged in shared memory as float32, a tile of kt columns for all m rows at a time (k up
 * to 11008 x 8 rows does not fit), and each lane keeps R * m float32 partial sums that a warp
 * shuffle reduces at the end. The next batch of weights is requested before each tile's x is
 * staged, so the HBM stream does not pause at tile boundaries.
 *
 * The vector path needs every row 16-byte aligned: k % 8 == 0 and W aligned. Otherwise (k odd,
 * say, rows only 2-byte aligned) a scalar kernel reads one weight per lane per step, still
 * coalesced; no real checkpoint shape takes it. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <limits.h>

#include "cuda/cu_internal.h"

#define GV_WARPS 8
#define GV_XS_FLOATS 8192 /* x tile per block: 32 KiB, so ~7 blocks fit an SM's shared memory */

__device__ static inline float gv_warp_sum(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* 16 bytes of weights, not kept in L1: every byte is read once per call. */
__device__ static inline uint4 gv_load16(const uint16_t *p)
{
    uint4 v;
    asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
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

/* Vector path (k % 8 == 0, W 16-byte aligned). kt: columns of x per tile = the shared-memory
 * row stride, a multiple of 8; when k > kt it is a multiple of 8 * 32 * U, so a batch of U
 * chunk-steps (32 * U chunks) never straddles two tiles.
 * Shared layout, so that lane l's two float4 reads of chunk l hit 32 consecutive float4s (no
 * bank conflicts): for x row i and tile column e (chunk c = e / 8), element e sits at
 *   xs[i * kt + ((e >> 2) & 1) * (kt / 2) + c * 4 + (e & 3)]
 * i.e. the low halves of all chunks, then the high halves. c * 4 + 3 < (kt / 8) * 4 = kt / 2,
 * so the halves do not overlap. */
template <int M, int R, int U, bool BF>
__global__ void __launch_bounds__(GV_WARPS * 32, 2)
    k_gemv_vec(float *__restrict__ y, const float *__restrict__ x,
               const uint16_t *__restrict__ w, const float *__restrict__ bias, int n, int k,
               int kt)
{
    extern __shared__ float4 gv_sm4[];
    float *xs = (float *)gv_sm4;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int row0 = (blockIdx.x * GV_WARPS + warp) * R;
    const int nc = k >> 3, tc = kt >> 3; /* chunks per row, per tile */
    const uint16_t *wr[R];
    bool ok[R];
#pragma unroll
    for (int r = 0; r < R; r++) {
        ok[r] = row0 + r < n;
        wr[r] = w + (int64_t)(ok[r] ? row0 + r : 0) * k; /* a dead row reads nothing */
    }
    float acc[R][M];
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int i = 0; i < M; i++) acc[r][i] = 0.0f;

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

    int c0 = 0;
    load(0);
    for (int t0 = 0; t0 < nc; t0 += tc) { /* t0: the tile's first chunk */
        const int tn = min(tc, nc - t0);  /* chunks in this tile */
        __syncthreads();                  /* the previous tile is consumed */
#pragma unroll
        for (int i = 0; i < M; i++) {
            const float *xg = x + (int64_t)i * k + 8 * (int64_t)t0;
            float *xr = xs + i * kt;
            for (int e = threadIdx.x; e < tn * 8; e += blockDim.x)
                xr[((e >> 2) & 1) * (kt >> 1) + (e >> 3) * 4 + (e & 3)] = xg[e];
        }
        __syncthreads();
        const float4 *xs4 = gv_sm4;
        /* c0 is a multiple of 32U and so is t0 (tc is, or there is one tile): the batch lies in
         * this tile, and its chunks past t0 + tn (the row's end) are skipped. */
        for (; c0 < t0 + tn; c0 += 32 * U) {
#pragma unroll
            for (int u = 0; u < U; u++) {
                const int c = c0 + lane + 32 * u;
                if (c < t0 + tn) {
                    const int cl = c - t0; /* chunk within the tile */
#pragma unroll
                    for (int i = 0; i < M; i++) {
                        /* float4 index: (i * kt + h * kt/2 + cl * 4) / 4, kt % 8 == 0 */
                        const float4 xl = xs4[i * (kt >> 2) + cl];
                        const float4 xh = xs4[i * (kt >> 2) + (kt >> 3) + cl];
#pragma unroll
                        for (int r = 0; r < R; r++)
                            acc[r][i] = gv_dot8<BF>(wv[r][u], xl, xh, acc[r][i]);
                    }
                }
            }
            if (c0 + 32 * U < nc) load(c0 + 32 * U); /* may be the next tile's: in flight
                                                       * while it is staged */
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

/* R rows per warp: at m >= 2 each x value read from shared memory serves two rows, halving the
 * shared-memory traffic per weight byte (at m = 8 and R = 1 it would exceed what an SM's shared
 * memory delivers while HBM streams its share). R * U = 8: 128 bytes in flight per lane. */
template <int M, bool BF>
static void gv_launch(cu_backend *b, float *y, const float *x, const uint16_t *w,
                      const float *bias, int n, int k, bool vec)
{
    constexpr int R = M == 1 ? 1 : 2, U = 8 / R;
    const unsigned grid = (unsigned)((n + GV_WARPS * R - 1) / (GV_WARPS * R));
    if (vec) {
        /* widest tile whose chunk count is a multiple of 32U: 8192 (m=1), 4096 (2), 2048 (3, 4),
         * 1024 (5..8) */
        constexpr int gran = 8 * 32 * U;
        constexpr int kt_max = GV_XS_FLOATS / M / gran * gran;
        static_assert(kt_max >= gran, "x tile narrower than one batch");
        const int kt = k < kt_max ? k : kt_max; /* k % 8 == 0 */
        k_gemv_vec<M, R, U, BF><<<grid, GV_WARPS * 32, sizeof(float) * M * kt, b->stream>>>(
            y, x, w, bias, n, k, kt);
        CU_LAUNCHED(b, "k_gemv_vec");
    } else {
        constexpr int kt_max = GV_XS_FLOATS / M;
        const int kt = k < kt_max ? k : kt_max;
        k_gemv_scalar<M, R, BF><<<grid, GV_WARPS * 32, sizeof(float) * M * kt, b->stream>>>(
            y, x, w, bias, n, k, kt);
        CU_LAUNCHED(b, "k_gemv_scalar");
    }
}

template <bool BF>
static void gv_dispatch(cu_backend *b, float *y, const float *x, const uint16_t *w,
                        const float *bias, int64_t m, int n, int k, bool vec)
{
    switch (m) {
    case 1: gv_launch<1, BF>(b, y, x, w, bias, n, k, vec); break;
    case 2: gv_launch<2, BF>(b, y, x, w, bias, n, k, vec); break;
    case 3: gv_launch<3, BF>(b, y, x, w, bias, n, k, vec); break;
    case 4: gv_launch<4, BF>(b, y, x, w, bias, n, k, vec); break;
    case 5: gv_launch<5, BF>(b, y, x, w, bias, n, k, vec); break;
    case 6: gv_launch<6, BF>(b, y, x, w, bias, n, k, vec); break;
    case 7: gv_launch<7, BF>(b, y, x, w, bias, n, k, vec); break;
    default: gv_launch<8, BF>(b, y, x, w, bias, n, k, vec); break;
    }
}

int cu_gemv(cu_backend *b, float *y, const float *x, const plm_weight *w, const float *bias,
            int64_t m)
{
    const int64_t n = w->rows, k = w->cols;
    if (m < 1 || m > 8 || (w->dtype != PLM_BF16 && w->dtype != PLM_F16)) return 0;
    /* int indices inside: chunks, columns, rows (row offsets are int64) */
    if (n < 1 || k < 1 || n > INT_MAX - 64 || k > INT_MAX / 2) return 0;
    const bool vec = k % 8 == 0 && (uintptr_t)w->data % 16 == 0;
    if (w->dtype == PLM_BF16)
        gv_dispatch<true>(b, y, x, (const uint16_t *)w->data, bias, m, (int)n, (int)k, vec);
    else
        gv_dispatch<false>(b, y, x, (const uint16_t *)w->data, bias, m, (int)n, (int)k, vec);
    return 1;
}
