/* Attention on tensor cores for 16-bit checkpoints: FlashAttention-2 (Dao 2023, Alg. 1, with the
 * warp split of Sec. 3.3). One CTA per (TC_BQ = 64 queries, head); each of its 4 warps owns 16
 * query rows, holds them as bf16 mma fragments for the whole run, and keeps its output rows and
 * softmax statistics in float32 registers. Per tile of TC_BK = 64 keys the CTA copies K and V
 * (float32 in global memory, like every activation of the engine) into shared memory with
 * cp.async, rounds them to bf16 into a second, padded tile, and starts the next tile's copy
 * before computing on this one, so the load overlaps the math. S = Q K^T and O += P V are
 * mma.sync.m16n8k16 (bf16 in, float32 accumulate); the softmax runs online in float32 with
 * exp2 (scale folded with log2 e). P stays in registers: the accumulator layout of S is the
 * A-operand layout of P V (FA2 Sec. 3.1), so it is only packed to bf16.
 *
 * Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16", bf16), lane = 4 g + t:
 *   A (16x16, row):  reg0 = A[g][2t, 2t+1]     reg1 = A[g+8][2t, 2t+1]
 *                    reg2 = A[g][2t+8, 2t+9]   reg3 = A[g+8][2t+8, 2t+9]
 *   B (16x8, col):   reg0 = B[2t, 2t+1][g]     reg1 = B[2t+8, 2t+9][g]
 *   C (16x8, f32):   c0, c1 = C[g][2t, 2t+1]   c2, c3 = C[g+8][2t, 2t+1]
 * (in each .b32 register the lower column / row index sits in the low 16 bits).
 *   ldmatrix.x4: lane 8 m + r gives the address of row r of matrix m; register m of lane
 *   4 r + t receives matrix m's row r, elements 2t and 2t+1 (.trans: column r, rows 2t, 2t+1).
 *
 * Used by cu_attention() when the backend runs a 16-bit checkpoint (set_precision), tq >= 16,
 * head_dim is 64 or 128 and the call is dense; float32 checkpoints keep the exact kernel. */
#include <cuda_bf16.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "cuda/cu_internal.h"
#include "cuda/cu_test_hooks.h"

#define TC_BQ 64 /* queries per CTA */
#define TC_BK 64 /* keys per tile */
#define TC_WARPS (TC_BQ / 16)
#define TC_PAD 8 /* bf16 padding per smem row: consecutive rows start 16 bytes apart mod 128,
                  * so the 8 row addresses of an ldmatrix phase hit distinct bank groups */

/* ---- lane-level index maps, shared with the host-side fragment check (tests by hand) ---- */

/* Row (key) and column (dim) of the bf16 K tile whose address lane gives to the ldmatrix.x4
 * that loads the B operands of S = Q K^T for keys n0..n0+7, dims d0..d0+31: matrix m = lane/8
 * holds dims d0 + 8m .. +7, so registers 0,1 are B for the k-step at d0 and 2,3 for d0 + 16. */
__host__ __device__ static inline int tc_k_row(int lane) { return lane & 7; }
__host__ __device__ static inline int tc_k_col(int lane) { return (lane >> 3) * 8; }
/* Key and dim of the bf16 V tile for the ldmatrix.x4.trans that loads the B operands of
 * O += P V for keys k0..k0+15, dims n0..n0+15: matrix 0 = keys +0..7 x dims +0..7, 1 = keys
 * +8..15 x dims +0..7, 2 = keys +0..7 x dims +8..15, 3 = keys +8..15 x dims +8..15; so
 * registers 0,1 are B for the n-tile at n0 and 2,3 for n0 + 8. */
__host__ __device__ static inline int tc_v_row(int lane) { return (lane & 7) + ((lane >> 3) & 1) * 8; }
__host__ __device__ static inline int tc_v_col(int lane) { return (lane >> 4) * 8; }

/* ---- PTX wrappers ---- */

__device__ static inline uint32_t pack_bf16(float lo, float hi)
{
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi); /* .x (low half) = lo */
    return *reinterpret_cast<uint32_t *>(&v);
}

__device__ static inline void ldsm_x4(uint32_t r[4], const void *p)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}
__device__ static inline void ldsm_x4_trans(uint32_t r[4], const void *p)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}

/* c += A B, one m16n8k16 with bf16 inputs and float32 accumulators. */
__device__ static inline void mma_bf16(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1)
{
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
        "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* ---- the kernel ---- */

template <int HD> struct tc_layout {
    static constexpr int LDB = HD + TC_PAD;                /* bf16 row stride of kb, vb */
    static constexpr size_t F32 = (size_t)TC_BK * HD * 4;  /* one float32 staging tile */
    static constexpr size_t B16 = (size_t)TC_BK * LDB * 2; /* one bf16 tile */
    static constexpr size_t SMEM = 2 * F32 + 2 * B16;      /* kf, vf, kb, vb */
};

/* Starts the copy of keys j0..j0+TC_BK-1 of K and V (rows at and past tk read as zeros, so a
 * masked key's V row is 0, never NaN garbage that 0 * x would spread). */
template <int HD>
__device__ static inline void tc_load_tile(float *kf, float *vf, const float *kg, const float *vg,
                                           int64_t stride, int j0, int tk)
{
    constexpr int C = HD / 4; /* 16-byte chunks per row */
    for (int c = threadIdx.x; c < TC_BK * C; c += TC_WARPS * 32) {
        const int r = c / C, col = (c % C) * 4, j = j0 + r;
        const bool ok = j < tk;
        const int64_t off = ok ? (int64_t)j * stride + col : 0;
        cp_async16(kf + r * HD + col, kg + off, ok);
        cp_async16(vf + r * HD + col, vg + off, ok);
    }
}

template <int HD>
__global__ void __launch_bounds__(TC_WARPS * 32) k_attention_tc(plm_attn_args a, float scale_log2)
{
    typedef tc_layout<HD> L;
    constexpr int LDB = L::LDB, NT = TC_BK / 8, KS = HD / 16, DT = HD / 8;
    extern __shared__ __align__(16) unsigned char tc_sm[];
    float *kf = reinterpret_cast<float *>(tc_sm);
    float *vf = kf + TC_BK * HD;
    __nv_bfloat16 *kb = reinterpret_cast<__nv_bfloat16 *>(vf + TC_BK * HD);
    __nv_bfloat16 *vb = kb + TC_BK * LDB;

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int h = blockIdx.y, kh = h / (a.n_heads / a.n_kv);
    const int tq = (int)a.tq, tk = (int)a.tk, qpos = (int)a.q_pos0;
    /* last query blocks first: under a causal mask they have the most keys */
    const int q0 = (int)(gridDim.x - 1 - blockIdx.x) * TC_BQ;
    const int q_last = min(q0 + TC_BQ, tq) - 1;
    const int kend = a.causal ? min(tk, qpos + q_last + 1) : tk;
    const int ntiles = (kend + TC_BK - 1) / TC_BK;
    const float *kg = a.k + (int64_t)kh * HD, *vg = a.v + (int64_t)kh * HD;

    if (ntiles > 0) tc_load_tile<HD>(kf, vf, kg, vg, a.kv_stride, 0, tk);
    cp_async_commit();

    /* This lane's query rows r0 = g and r1 = g + 8 of the warp's slice, as A fragments for the
     * KS k-steps of 16 dims: qa[ks] = A layout above with A[row][col] = Q[row][16 ks + col]. */
    const int qw = q0 + warp * 16, r0 = qw + g, r1 = qw + g + 8;
    uint32_t qa[KS][4];
    {
        const float *p0 = a.q + (int64_t)min(r0, tq - 1) * a.q_stride + (int64_t)h * HD + 2 * t;
        const float *p1 = a.q + (int64_t)min(r1, tq - 1) * a.q_stride + (int64_t)h * HD + 2 * t;
        const float2 z = make_float2(0.0f, 0.0f);
#pragma unroll
        for (int ks = 0; ks < KS; ks++) {
            const float2 x0 = r0 < tq ? *reinterpret_cast<const float2 *>(p0 + 16 * ks) : z;
            const float2 x1 = r1 < tq ? *reinterpret_cast<const float2 *>(p1 + 16 * ks) : z;
            const float2 x2 = r0 < tq ? *reinterpret_cast<const float2 *>(p0 + 16 * ks + 8) : z;
            const float2 x3 = r1 < tq ? *reinterpret_cast<const float2 *>(p1 + 16 * ks + 8) : z;
            qa[ks][0] = pack_bf16(x0.x, x0.y); /* Q[r0][16ks + 2t, +1] */
            qa[ks][1] = pack_bf16(x1.x, x1.y); /* Q[r1][16ks + 2t, +1] */
            qa[ks][2] = pack_bf16(x2.x, x2.y); /* Q[r0][16ks + 8 + 2t, +1] */
            qa[ks][3] = pack_bf16(x3.x, x3.y); /* Q[r1][16ks + 8 + 2t, +1] */
        }
    }
    /* Keys each row sees: [0, lim); rows past tq are computed on zeros and never stored. */
    const int lim0 = a.causal ? min(tk, qpos + r0 + 1) : tk;
    const int lim1 = a.causal ? min(tk, qpos + r1 + 1) : tk;
    /* The warp's keys: none when all its rows are past tq; a tile reaching past the first
     * row's limit needs the per-element mask. */
    const int warp_kend = qw >= tq ? 0 : a.causal ? min(tk, qpos + min(qw + 15, tq - 1) + 1) : tk;
    const int mask_from = a.causal ? min(tk, qpos + qw + 1) : tk;

    float o[DT][4];
#pragma unroll
    for (int d = 0; d < DT; d++) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.0f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f; /* l: this lane's columns */

    for (int it = 0; it < ntiles; it++) {
        const int j0 = it * TC_BK;
        cp_async_wait_all();
        __syncthreads(); /* tile it is in kf/vf; every warp is done with kb/vb of tile it-1 */
        for (int c = threadIdx.x; c < TC_BK * HD / 4; c += TC_WARPS * 32) {
            const int r = c / (HD / 4), col = (c % (HD / 4)) * 4;
            const float4 x = *reinterpret_cast<const float4 *>(kf + 4 * c);
            const float4 y = *reinterpret_cast<const float4 *>(vf + 4 * c);
            *reinterpret_cast<uint2 *>(kb + r * LDB + col) =
                make_uint2(pack_bf16(x.x, x.y), pack_bf16(x.z, x.w));
            *reinterpret_cast<uint2 *>(vb + r * LDB + col) =
                make_uint2(pack_bf16(y.x, y.y), pack_bf16(y.z, y.w));
        }
        __syncthreads(); /* kb/vb hold tile it; kf/vf are free */
        if (it + 1 < ntiles) tc_load_tile<HD>(kf, vf, kg, vg, a.kv_stride, j0 + TC_BK, tk);
        cp_async_commit();
        if (j0 >= warp_kend) continue; /* warp-uniform: every key of the tile is masked */

        /* S[16 x 64] = Q K^T: s[n] is the C fragment of keys j0 + 8n .. +7, i.e.
         * s[n][0..1] = S[r0][8n + 2t, +1], s[n][2..3] = S[r1][8n + 2t, +1]. */
        float s[NT][4];
#pragma unroll
        for (int n = 0; n < NT; n++) {
            s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < HD / 32; kk++) {
                uint32_t b[4];
                ldsm_x4(b, kb + (8 * n + tc_k_row(lane)) * LDB + 32 * kk + tc_k_col(lane));
                mma_bf16(s[n], qa[2 * kk], b[0], b[1]);
                mma_bf16(s[n], qa[2 * kk + 1], b[2], b[3]);
            }
        }

        /* Online softmax in the log2 domain (FA2 Alg. 1 lines 8-10). */
        const bool masked = j0 + TC_BK > mask_from;
        float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
        for (int n = 0; n < NT; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float v = s[n][e] * scale_log2;
                if (masked && j0 + 8 * n + 2 * t + (e & 1) >= (e < 2 ? lim0 : lim1)) v = -INFINITY;
                s[n][e] = v;
                if (e < 2) mx0 = fmaxf(mx0, v);
                else mx1 = fmaxf(mx1, v);
            }
        /* a row's 64 columns live in the 4 lanes of its quad (lanes 4g .. 4g+3) */
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
        const float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1);
        /* a row with no key yet keeps max -inf: subtract 0 so exp2 gives 0, not NaN */
        const float b0 = mn0 == -INFINITY ? 0.0f : mn0, b1 = mn1 == -INFINITY ? 0.0f : mn1;
        const float c0 = exp2f(m0 - b0), c1 = exp2f(m1 - b1);
        m0 = mn0, m1 = mn1;
        float sum0 = 0.0f, sum1 = 0.0f;
#pragma unroll
        for (int n = 0; n < NT; n++) {
            s[n][0] = exp2f(s[n][0] - b0), s[n][1] = exp2f(s[n][1] - b0);
            s[n][2] = exp2f(s[n][2] - b1), s[n][3] = exp2f(s[n][3] - b1);
            sum0 += s[n][0] + s[n][1];
            sum1 += s[n][2] + s[n][3];
        }
        l0 = l0 * c0 + sum0;
        l1 = l1 * c1 + sum1;
#pragma unroll
        for (int d = 0; d < DT; d++) o[d][0] *= c0, o[d][1] *= c0, o[d][2] *= c1, o[d][3] *= c1;

        /* O += P V over 4 k-steps of 16 keys. P's A fragment for keys 16 ks .. +15 is the C
         * fragments of key groups 2 ks and 2 ks + 1: A[g][2t,+1] = s[2ks][0,1], A[g+8][2t,+1] =
         * s[2ks][2,3], A[g][8+2t,+1] = s[2ks+1][0,1], A[g+8][8+2t,+1] = s[2ks+1][2,3]. */
#pragma unroll
        for (int ks = 0; ks < TC_BK / 16; ks++) {
            const uint32_t pa[4] = {pack_bf16(s[2 * ks][0], s[2 * ks][1]),
                                    pack_bf16(s[2 * ks][2], s[2 * ks][3]),
                                    pack_bf16(s[2 * ks + 1][0], s[2 * ks + 1][1]),
                                    pack_bf16(s[2 * ks + 1][2], s[2 * ks + 1][3])};
#pragma unroll
            for (int dp = 0; dp < HD / 16; dp++) {
                uint32_t b[4];
                ldsm_x4_trans(b, vb + (16 * ks + tc_v_row(lane)) * LDB + 16 * dp + tc_v_col(lane));
                mma_bf16(o[2 * dp], pa, b[0], b[1]);
                mma_bf16(o[2 * dp + 1], pa, b[2], b[3]);
            }
        }
    }
    cp_async_wait_all(); /* nothing is in flight at exit (the last commit is empty) */

    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    /* A row that sees no key (tk == 0) is zero, like the CPU reference. */
    const float inv0 = l0 > 0.0f ? 1.0f / l0 : 0.0f, inv1 = l1 > 0.0f ? 1.0f / l1 : 0.0f;
    /* o[d] is the C fragment of dims 8d .. 8d+7: o[d][0,1] = O[r0][8d + 2t, +1], [2,3] r1 */
    if (r0 < tq) {
        float *p = a.out + ((int64_t)r0 * a.n_heads + h) * HD + 2 * t;
#pragma unroll
        for (int d = 0; d < DT; d++)
            *reinterpret_cast<float2 *>(p + 8 * d) = make_float2(o[d][0] * inv0, o[d][1] * inv0);
    }
    if (r1 < tq) {
        float *p = a.out + ((int64_t)r1 * a.n_heads + h) * HD + 2 * t;
#pragma unroll
        for (int d = 0; d < DT; d++)
            *reinterpret_cast<float2 *>(p + 8 * d) = make_float2(o[d][2] * inv1, o[d][3] * inv1);
    }
}

template <int HD> static void launch_tc(cu_backend *b, const plm_attn_args *a)
{
    const size_t smem = tc_layout<HD>::SMEM;
    if (smem > b->smem_optin) {
        cu_fail(b, "attention (tensor cores): head_dim %d needs %zu bytes of shared memory, over "
                "the GPU's %zu", HD, smem, b->smem_optin);
        return;
    }
    if (!CU_OK(b, cudaFuncSetAttribute(k_attention_tc<HD>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem)))
        return;
    dim3 grid((unsigned)((a->tq + TC_BQ - 1) / TC_BQ), (unsigned)a->n_heads);
    const float scale_log2 = a->scale * 1.4426950408889634f; /* exp(x) = exp2(x log2 e) */
    k_attention_tc<HD><<<grid, TC_WARPS * 32, smem, b->stream>>>(*a, scale_log2);
    CU_LAUNCHED(b, "k_attention_tc");
}

/* cp.async moves 16-byte chunks and Q/out move float2: every row start must be 16-byte aligned */
static int tc_aligned(const plm_attn_args *a)
{
    const uintptr_t p = (uintptr_t)a->q | (uintptr_t)a->k | (uintptr_t)a->v | (uintptr_t)a->out;
    return p % 16 == 0 && a->q_stride % 4 == 0 && a->kv_stride % 4 == 0;
}

int cu_attention_tc(cu_backend *b, const plm_attn_args *a)
{
    const int hd = a->head_dim;
    if (!b->mixed || b->attn_fp32 || a->rows || a->bias || a->tq < 16 || (hd != 64 && hd != 128))
        return 0;
    /* the kernel indexes keys and queries in int */
    if (a->tk > INT32_MAX / 2 || a->tq > INT32_MAX / 2 || a->q_pos0 < 0 ||
        a->q_pos0 > INT32_MAX / 2 || !tc_aligned(a))
        return 0;
    if (hd == 64) launch_tc<64>(b, a);
    else launch_tc<128>(b, a);
    return 1;
}

extern "C" int plm_cuda_time_attention(plm_backend *be, const plm_attn_args *a, int n, float *ms)
{
    cu_backend *b = (cu_backend *)be;
    cudaEvent_t e0 = NULL, e1 = NULL;
    int ok = !b->failed && CU_OK(b, cudaSetDevice(b->device)) &&
             CU_OK(b, cudaEventCreate(&e0)) && CU_OK(b, cudaEventCreate(&e1));
    for (int i = 0; ok && i < n; i++) {
        ok = CU_OK(b, cudaEventRecord(e0, b->stream));
        if (ok) be->ops->attention(be, a);
        ok = ok && !b->failed && CU_OK(b, cudaEventRecord(e1, b->stream)) &&
             CU_OK(b, cudaEventSynchronize(e1)) && CU_OK(b, cudaEventElapsedTime(&ms[i], e0, e1));
    }
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    return ok ? 0 : -1;
}
