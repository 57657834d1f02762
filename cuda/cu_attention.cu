/* Attention, first correct version: flash-style online softmax (Dao et al. 2022, FlashAttention,
 * Alg. 1) so no score matrix ever reaches global memory. One block per (block of ATT_BQ queries,
 * head); each of its 4 warps owns ATT_RPW query rows. Per tile of ATT_BK keys the block stages
 * K and V in shared memory; a warp's lane j scores key j for a row, the warp reduces the tile's
 * max and sum with shuffles, and each lane accumulates the output dims lane, lane+32, ... in
 * registers. Causal rows stop at key q_pos0 + i; GQA maps head h to kv head h / (n_heads/n_kv).
 * Plain float32 FMAs, no tensor cores: the Hopper-tuned kernels come in a later pass, tested
 * against this one and the CPU. */
#include <math.h>

#include "cuda/cu_flash.cuh"
#include "cuda/cu_internal.h"

#define ATT_BQ 16  /* queries per block */
#define ATT_BK CU_FLASH_BK  /* keys per tile: one per lane */
#define ATT_WARPS 4
#define ATT_RPW (ATT_BQ / ATT_WARPS) /* query rows per warp */
#define ATT_MAX_HD 512

/* MAXT = output dims per lane (head_dim <= 32 * MAXT); a template so acc stays in registers. */
template <int MAXT>
__global__ void __launch_bounds__(ATT_WARPS * 32) k_attention(plm_attn_args a)
{
    extern __shared__ float sm[];
    const int hd = a.head_dim, kpad = hd + 1; /* +1: lanes read different K rows, no conflicts */
    float *qs = sm;                           /* [ATT_BQ][hd] */
    float *ks = qs + ATT_BQ * hd;             /* [ATT_BK][hd + 1] */
    float *vs = ks + ATT_BK * kpad;           /* [ATT_BK][hd] */
    const int h = blockIdx.y, kh = h / (a.n_heads / a.n_kv);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int64_t q0 = (int64_t)blockIdx.x * ATT_BQ;

    for (int e = threadIdx.x; e < ATT_BQ * hd; e += blockDim.x) {
        const int64_t qi = q0 + e / hd;
        qs[e] = qi < a.tq ? a.q[qi * a.q_stride + (int64_t)h * hd + e % hd] : 0.0f;
    }
    /* Keys this block needs at all, and per row (0 for rows past tq). */
    const int64_t q_last = (q0 + ATT_BQ < a.tq ? q0 + ATT_BQ : a.tq) - 1;
    int64_t kend = a.causal ? a.q_pos0 + q_last + 1 : a.tk;
    if (kend > a.tk) kend = a.tk;
    /* sparse rows: position j of the list stands for key row rows[j]; every query sees all */
    const int32_t *rows = a.rows ? a.rows + (int64_t)kh * a.n_rows : NULL;
    if (rows) kend = a.n_rows;
    int64_t nk[ATT_RPW];
    float m[ATT_RPW], l[ATT_RPW], acc[ATT_RPW][MAXT];
#pragma unroll
    for (int r = 0; r < ATT_RPW; r++) {
        const int64_t qi = q0 + warp * ATT_RPW + r;
        int64_t n = a.causal ? a.q_pos0 + qi + 1 : a.tk;
        if (n > a.tk) n = a.tk;
        if (rows) n = a.n_rows;
        nk[r] = qi < a.tq && n > 0 ? n : 0;
        m[r] = -INFINITY;
        l[r] = 0.0f;
#pragma unroll
        for (int t = 0; t < MAXT; t++) acc[r][t] = 0.0f;
    }

    for (int64_t j0 = 0; j0 < kend; j0 += ATT_BK) {
        __syncthreads(); /* the previous tile is consumed (and qs written, the first time) */
        for (int e = threadIdx.x; e < ATT_BK * hd; e += blockDim.x) {
            const int r = e / hd, d = e % hd;
            const int64_t j = j0 + r;
            const int ok = j < kend;
            const int64_t kj = rows ? (ok ? rows[j] : 0) : j;
            const int64_t off = kj * a.kv_stride + (int64_t)kh * hd + d;
            ks[r * kpad + d] = ok ? a.k[off] : 0.0f;
            vs[r * hd + d] = ok ? a.v[off] : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int r = 0; r < ATT_RPW; r++) {
            if (j0 >= nk[r]) continue; /* uniform across the warp */
            const float *qr = qs + (warp * ATT_RPW + r) * hd;
            const float *kr = ks + lane * kpad;
            float s = 0.0f;
            for (int d = 0; d < hd; d++) s += qr[d] * kr[d];
            s *= a.scale;
            if (a.bias && j0 + lane < nk[r])
                s += a.bias[(int64_t)h * a.tk + (rows ? rows[j0 + lane] : j0 + lane)];
            if (j0 + lane >= nk[r]) s = -INFINITY;
            /* lane 0's key is always valid here, so the tile max is finite */
            cu_flash_tile<MAXT>(s, m[r], l[r], acc[r], vs, hd, lane);
        }
    }

#pragma unroll
    for (int r = 0; r < ATT_RPW; r++) {
        const int64_t qi = q0 + warp * ATT_RPW + r;
        if (qi >= a.tq) continue;
        /* a row that saw no key has l = 0 (lane 0 of any tile it saw was a live key) */
        cu_flash_store<MAXT>(a.out + (qi * a.n_heads + h) * hd, acc[r], l[r], hd, lane);
    }
}

template <int MAXT> static void launch(cu_backend *b, const plm_attn_args *a, size_t smem)
{
    /* Above 48 KiB a block must opt in to its dynamic shared memory. */
    if (smem > 48 * 1024 &&
        !CU_OK(b, cudaFuncSetAttribute(k_attention<MAXT>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem)))
        return;
    dim3 grid((unsigned)((a->tq + ATT_BQ - 1) / ATT_BQ), (unsigned)a->n_heads);
    k_attention<MAXT><<<grid, ATT_WARPS * 32, smem, b->stream>>>(*a);
    CU_LAUNCHED(b, "k_attention");
}

void cu_attention(cu_backend *b, const plm_attn_args *a)
{
    const int hd = a->head_dim;
    if (a->n_heads <= 0 || a->n_kv <= 0 || a->n_heads % a->n_kv != 0 || a->n_heads > 65535) {
        cu_fail(b, "attention: %d heads cannot share %d kv heads", a->n_heads, a->n_kv);
        return;
    }
    if (hd <= 0 || hd > ATT_MAX_HD) {
        cu_fail(b, "attention: head_dim %d is outside the CUDA kernel's 1..%d", hd, ATT_MAX_HD);
        return;
    }
    if (a->tq < 0 || a->tk < 0 || a->q_stride < (int64_t)a->n_heads * hd ||
        a->kv_stride < (int64_t)a->n_kv * hd || (a->tq + ATT_BQ - 1) / ATT_BQ > INT32_MAX) {
        cu_fail(b, "attention: bad shape tq=%lld tk=%lld q_stride=%lld kv_stride=%lld",
                (long long)a->tq, (long long)a->tk, (long long)a->q_stride,
                (long long)a->kv_stride);
        return;
    }
    if (a->tq == 0) return;
    if (a->tq <= 8 && b->attn_decode && cu_attn_decode(b, a)) return; /* split-K decode */
    if (a->q_pos0_dev) { /* a recorded decode step: only the decode kernel reads it */
        cu_fail(b, "attention: a device-side q_pos0 needs the decode kernel (tq <= 8, dense, "
                "causal, head_dim <= 256, PLM_CUDA_ATTN_DECODE not 0)");
        return;
    }
    if (cu_attention_tc(b, a)) return; /* 16-bit checkpoint: bf16 tensor cores */
    const size_t smem = sizeof(float) * ((size_t)ATT_BQ * hd + (size_t)ATT_BK * (hd + 1) +
                                         (size_t)ATT_BK * hd);
    if (smem > b->smem_optin) {
        cu_fail(b, "attention: head_dim %d needs %zu bytes of shared memory, over the GPU's %zu",
                hd, smem, b->smem_optin);
        return;
    }
    if (hd <= 64) launch<2>(b, a, smem);
    else if (hd <= 128) launch<4>(b, a, smem);
    else if (hd <= 256) launch<8>(b, a, smem);
    else launch<16>(b, a, smem);
}
