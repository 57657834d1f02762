/* Block-sparse causal attention (FlexPrefill, Lai et al., ICLR 2025, §3.3; the official
 * block_wise_prefill_attention_kernel iterates only the active key blocks of a query block).
 * Same layout as k_attention (cu_attention.cu): one CTA per (16 queries, head), 4 warps of 4
 * rows, keys staged 32 at a time in shared memory, flash-style online softmax (Dao et al. 2022,
 * Alg. 1). The difference: keys are walked key block by key block, and a key block whose tile is
 * masked for every row of the CTA is never loaded or scored, which is where the time goes.
 * Rows whose own tile is masked skip the block too (a CTA straddles two query blocks only when
 * block is not a multiple of 16). Plain float32 FMAs, like the dense kernel it is timed against.
 * CPU twin: core/backend_cpu_blocks.c. */
#include <math.h>

#include "cuda/cu_flash.cuh"
#include "cuda/cu_internal.h"
#include "cuda/cu_sparse.h"

#define AB_BQ 16
#define AB_BK CU_FLASH_BK
#define AB_WARPS 4
#define AB_RPW (AB_BQ / AB_WARPS)
#define AB_MAX_HD 512

template <int MAXT>
__global__ void __launch_bounds__(AB_WARPS * 32)
    k_attention_blocks(plm_attn_args a, const uint8_t *__restrict__ mask, int block, int64_t nqb,
                       int64_t nkb)
{
    extern __shared__ float sm[];
    const int hd = a.head_dim, kpad = hd + 1;
    float *qs = sm;                /* [AB_BQ][hd] */
    float *ks = qs + AB_BQ * hd;   /* [AB_BK][hd + 1] */
    float *vs = ks + AB_BK * kpad; /* [AB_BK][hd] */
    const int h = blockIdx.y, kh = h / (a.n_heads / a.n_kv);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int64_t q0 = (int64_t)blockIdx.x * AB_BQ;

    for (int e = threadIdx.x; e < AB_BQ * hd; e += blockDim.x) {
        const int64_t qi = q0 + e / hd;
        qs[e] = qi < a.tq ? a.q[qi * a.q_stride + (int64_t)h * hd + e % hd] : 0.0f;
    }
    const int64_t q_last = (q0 + AB_BQ < a.tq ? q0 + AB_BQ : a.tq) - 1;
    int64_t kend = a.causal ? a.q_pos0 + q_last + 1 : a.tk;
    if (kend > a.tk) kend = a.tk;
    const uint8_t *mh = mask + (int64_t)h * nqb * nkb;
    const int64_t qb_lo = q0 / block, qb_hi = q_last / block;
    int64_t nk[AB_RPW];
    const uint8_t *mrow[AB_RPW];
    float m[AB_RPW], l[AB_RPW], acc[AB_RPW][MAXT];
#pragma unroll
    for (int r = 0; r < AB_RPW; r++) {
        const int64_t qi = q0 + warp * AB_RPW + r;
        int64_t n = a.causal ? a.q_pos0 + qi + 1 : a.tk;
        if (n > a.tk) n = a.tk;
        nk[r] = qi < a.tq && n > 0 ? n : 0;
        mrow[r] = mh + (qi < a.tq ? qi / block : qb_lo) * nkb;
        m[r] = -INFINITY;
        l[r] = 0.0f;
#pragma unroll
        for (int t = 0; t < MAXT; t++) acc[r][t] = 0.0f;
    }

    for (int64_t kb = 0; kb * block < kend; kb++) {
        /* Uniform across the CTA: is this key block live for any of its query blocks? */
        int live = 0;
        for (int64_t qb = qb_lo; qb <= qb_hi; qb++) live |= mh[qb * nkb + kb];
        if (!live) continue;
        const int64_t kb_end = (kb + 1) * block < kend ? (kb + 1) * block : kend;
        for (int64_t j0 = kb * block; j0 < kb_end; j0 += AB_BK) {
            __syncthreads(); /* the previous tile is consumed (and qs written, the first time) */
            for (int e = threadIdx.x; e < AB_BK * hd; e += blockDim.x) {
                const int r = e / hd, d = e % hd;
                const int64_t j = j0 + r;
                const int64_t off = j * a.kv_stride + (int64_t)kh * hd + d;
                const bool in = j < kb_end;
                ks[r * kpad + d] = in ? a.k[off] : 0.0f;
                vs[r * hd + d] = in ? a.v[off] : 0.0f;
            }
            __syncthreads();
#pragma unroll
            for (int r = 0; r < AB_RPW; r++) {
                /* uniform across the warp: a row past its causal end or with its tile masked */
                if (j0 >= nk[r] || !mrow[r][kb]) continue;
                const float *qr = qs + (warp * AB_RPW + r) * hd;
                const float *kr = ks + lane * kpad;
                float s = 0.0f;
                for (int d = 0; d < hd; d++) s += qr[d] * kr[d];
                s *= a.scale;
                const int64_t j = j0 + lane;
                if (j >= nk[r] || j >= kb_end) s = -INFINITY;
                /* lane 0's key (j0) is valid here, so the tile max is finite */
                cu_flash_tile<MAXT>(s, m[r], l[r], acc[r], vs, hd, lane);
            }
        }
    }

#pragma unroll
    for (int r = 0; r < AB_RPW; r++) {
        const int64_t qi = q0 + warp * AB_RPW + r;
        if (qi >= a.tq) continue;
        /* a row that saw no key has l = 0 (lane 0 of any tile it saw was a live key) */
        cu_flash_store<MAXT>(a.out + (qi * a.n_heads + h) * hd, acc[r], l[r], hd, lane);
    }
}

template <int MAXT>
static void launch(cu_backend *b, const plm_attn_args *a, const uint8_t *mask, int block,
                   size_t smem)
{
    if (smem > 48 * 1024 &&
        !CU_OK(b, cudaFuncSetAttribute(k_attention_blocks<MAXT>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem)))
        return;
    const int64_t nqb = (a->tq + block - 1) / block, nkb = (a->tk + block - 1) / block;
    dim3 grid((unsigned)((a->tq + AB_BQ - 1) / AB_BQ), (unsigned)a->n_heads);
    k_attention_blocks<MAXT><<<grid, AB_WARPS * 32, smem, b->stream>>>(*a, mask, block, nqb, nkb);
    CU_LAUNCHED(b, "k_attention_blocks");
}

void cu_attention_blocks(cu_backend *b, const plm_attn_args *a, const uint8_t *mask, int block)
{
    const int hd = a->head_dim;
    if (a->n_heads <= 0 || a->n_kv <= 0 || a->n_heads % a->n_kv != 0 || a->n_heads > 65535) {
        cu_fail(b, "attention_blocks: %d heads cannot share %d kv heads", a->n_heads, a->n_kv);
        return;
    }
    if (hd <= 0 || hd > AB_MAX_HD) {
        cu_fail(b, "attention_blocks: head_dim %d is outside the CUDA kernel's 1..%d", hd,
                AB_MAX_HD);
        return;
    }
    if (block <= 0 || !mask) {
        cu_fail(b, "attention_blocks: block %d must be positive and the mask given", block);
        return;
    }
    if (a->tq < 0 || a->tk < 0 || a->q_stride < (int64_t)a->n_heads * hd ||
        a->kv_stride < (int64_t)a->n_kv * hd || (a->tq + AB_BQ - 1) / AB_BQ > INT32_MAX) {
        cu_fail(b, "attention_blocks: bad shape tq=%lld tk=%lld q_stride=%lld kv_stride=%lld",
                (long long)a->tq, (long long)a->tk, (long long)a->q_stride,
                (long long)a->kv_stride);
        return;
    }
    if (a->tq == 0) return;
    const size_t smem = sizeof(float) * ((size_t)AB_BQ * hd + (size_t)AB_BK * (hd + 1) +
                                         (size_t)AB_BK * hd);
    if (smem > b->smem_optin) {
        cu_fail(b, "attention_blocks: head_dim %d needs %zu bytes of shared memory, over the "
                "GPU's %zu", hd, smem, b->smem_optin);
        return;
    }
    if (hd <= 64) launch<2>(b, a, mask, block, smem);
    else if (hd <= 128) launch<4>(b, a, mask, block, smem);
    else if (hd <= 256) launch<8>(b, a, mask, block, smem);
    else launch<16>(b, a, mask, block, smem);
}

void cu_op_attention_blocks(plm_backend *be, const plm_attn_args *a, const uint8_t *mask,
                            int block)
{
    cu_backend *b = (cu_backend *)be;
    /* As backend_cuda.cu's enter(): skip after a failure, run with this backend's GPU current. */
    if (b->failed || !CU_OK(b, cudaSetDevice(b->device))) return;
    cu_attention_blocks(b, a, mask, block);
}
