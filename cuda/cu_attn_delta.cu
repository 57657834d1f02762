/* DeltaLLM attention (Qi et al., 2025) on the GPU, in two kernels. k_delta_track runs the delta
 * network over the call's queries: one thread per (head, element) walks the queries in order and
 * moves its tracked value ref only where |q - ref| > theta. k_attention_delta is then the dense
 * flash kernel (cu_attention.cu) with a second query tile: a key inside the local window of a
 * query is scored with the query, an older key with its tracked row. That is the quantity the
 * CPU twin (core/backend_cpu_delta.c) accumulates by sparse updates; on a GPU the direct product
 * costs the same as the dense one, so this kernel reproduces DeltaLLM's numbers, not its saving
 * (the paper targets edge CPUs/NPUs, where skipped multiply-adds are skipped time). */
#include <math.h>

#include "cuda/cu_flash.cuh"
#include "cuda/cu_internal.h"
#include "cuda/cu_sparse.h"

#define AD_BQ 16
#define AD_BK CU_FLASH_BK
#define AD_WARPS 4
#define AD_RPW (AD_BQ / AD_WARPS)
#define AD_MAX_HD 512
#define AD_PREFETCH 8

__global__ void k_delta_track(const float *__restrict__ q, int64_t q_stride, int64_t tq,
                              int n_heads, int hd, float theta, float *__restrict__ state,
                              float *__restrict__ q_ref)
{
    const int64_t width = (int64_t)n_heads * hd;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < width;
         e += (int64_t)gridDim.x * blockDim.x) {
        float ref = state[e];
        const float *qe = q + (e / hd) * hd + e % hd;
        for (int64_t i0 = 0; i0 < tq; i0 += AD_PREFETCH) {
            float v[AD_PREFETCH]; /* independent loads in flight before the serial compare */
#pragma unroll
            for (int u = 0; u < AD_PREFETCH; u++) v[u] = i0 + u < tq ? qe[(i0 + u) * q_stride] : 0.0f;
#pragma unroll
            for (int u = 0; u < AD_PREFETCH; u++) {
                if (i0 + u >= tq) break;
                if (fabsf(v[u] - ref) > theta) ref = v[u];
                q_ref[(i0 + u) * width + e] = ref;
            }
        }
        state[e] = ref;
    }
}

template <int MAXT>
__global__ void __launch_bounds__(AD_WARPS * 32)
    k_attention_delta(plm_attn_args a, const float *__restrict__ q_ref, int64_t window)
{
    extern __shared__ float sm[];
    const int hd = a.head_dim, kpad = hd + 1;
    float *qs = sm;                /* [AD_BQ][hd] own rows */
    float *rs = qs + AD_BQ * hd;   /* [AD_BQ][hd] tracked rows */
    float *ks = rs + AD_BQ * hd;   /* [AD_BK][hd + 1] */
    float *vs = ks + AD_BK * kpad; /* [AD_BK][hd] */
    const int h = blockIdx.y, kh = h / (a.n_heads / a.n_kv);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int64_t q0 = (int64_t)blockIdx.x * AD_BQ;

    for (int e = threadIdx.x; e < AD_BQ * hd; e += blockDim.x) {
        const int64_t qi = q0 + e / hd;
        const bool in = qi < a.tq;
        qs[e] = in ? a.q[qi * a.q_stride + (int64_t)h * hd + e % hd] : 0.0f;
        rs[e] = in ? q_ref[(qi * a.n_heads + h) * hd + e % hd] : 0.0f;
    }
    const int64_t q_last = (q0 + AD_BQ < a.tq ? q0 + AD_BQ : a.tq) - 1;
    int64_t kend = a.causal ? a.q_pos0 + q_last + 1 : a.tk;
    if (kend > a.tk) kend = a.tk;
    int64_t nk[AD_RPW];
    float m[AD_RPW], l[AD_RPW], acc[AD_RPW][MAXT];
#pragma unroll
    for (int r = 0; r < AD_RPW; r++) {
        const int64_t qi = q0 + warp * AD_RPW + r;
        int64_t n = a.causal ? a.q_pos0 + qi + 1 : a.tk;
        if (n > a.tk) n = a.tk;
        nk[r] = qi < a.tq && n > 0 ? n : 0;
        m[r] = -INFINITY;
        l[r] = 0.0f;
#pragma unroll
        for (int t = 0; t < MAXT; t++) acc[r][t] = 0.0f;
    }

    for (int64_t j0 = 0; j0 < kend; j0 += AD_BK) {
        __syncthreads();
        for (int e = threadIdx.x; e < AD_BK * hd; e += blockDim.x) {
            const int r = e / hd, d = e % hd;
            const int64_t j = j0 + r;
            const int64_t off = j * a.kv_stride + (int64_t)kh * hd + d;
            ks[r * kpad + d] = j < a.tk ? a.k[off] : 0.0f;
            vs[r * hd + d] = j < a.tk ? a.v[off] : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int r = 0; r < AD_RPW; r++) {
            if (j0 >= nk[r]) continue;
            const int64_t qi = q0 + warp * AD_RPW + r, j = j0 + lane;
            /* outside the local window: the delta-tracked row (DeltaLLM's approximation) */
            const bool far = a.q_pos0 + qi - j >= window;
            const float *qr = (far ? rs : qs) + (warp * AD_RPW + r) * hd;
            const float *kr = ks + lane * kpad;
            float s = 0.0f;
            for (int d = 0; d < hd; d++) s += qr[d] * kr[d];
            s *= a.scale;
            if (j >= nk[r]) s = -INFINITY;
            cu_flash_tile<MAXT>(s, m[r], l[r], acc[r], vs, hd, lane);
        }
    }

#pragma unroll
    for (int r = 0; r < AD_RPW; r++) {
        const int64_t qi = q0 + warp * AD_RPW + r;
        if (qi >= a.tq) continue;
        /* a row that saw no key has l = 0 (lane 0 of any tile it saw was a live key) */
        cu_flash_store<MAXT>(a.out + (qi * a.n_heads + h) * hd, acc[r], l[r], hd, lane);
    }
}

template <int MAXT>
static void launch(cu_backend *b, const plm_attn_args *a, const float *q_ref, int64_t window,
                   size_t smem)
{
    if (smem > 48 * 1024 &&
        !CU_OK(b, cudaFuncSetAttribute(k_attention_delta<MAXT>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem)))
        return;
    dim3 grid((unsigned)((a->tq + AD_BQ - 1) / AD_BQ), (unsigned)a->n_heads);
    k_attention_delta<MAXT><<<grid, AD_WARPS * 32, smem, b->stream>>>(*a, q_ref, window);
    CU_LAUNCHED(b, "k_attention_delta");
}

void cu_attention_delta(cu_backend *b, const plm_attn_args *a, float *state, float *q_ref,
                        int64_t window, float theta)
{
    const int hd = a->head_dim;
    if (a->n_heads <= 0 || a->n_kv <= 0 || a->n_heads % a->n_kv != 0 || a->n_heads > 65535) {
        cu_fail(b, "attention_delta: %d heads cannot share %d kv heads", a->n_heads, a->n_kv);
        return;
    }
    if (hd <= 0 || hd > AD_MAX_HD) {
        cu_fail(b, "attention_delta: head_dim %d is outside the CUDA kernel's 1..%d", hd,
                AD_MAX_HD);
        return;
    }
    if (!state || !q_ref || !(theta >= 0)) {
        cu_fail(b, "attention_delta: state and q_ref must be given and theta >= 0 (got %g)",
                (double)theta);
        return;
    }
    if (a->tq < 0 || a->tk < 0 || a->q_stride < (int64_t)a->n_heads * hd ||
        a->kv_stride < (int64_t)a->n_kv * hd || (a->tq + AD_BQ - 1) / AD_BQ > INT32_MAX) {
        cu_fail(b, "attention_delta: bad shape tq=%lld tk=%lld q_stride=%lld kv_stride=%lld",
                (long long)a->tq, (long long)a->tk, (long long)a->q_stride,
                (long long)a->kv_stride);
        return;
    }
    if (a->tq == 0) return;
    const size_t smem = sizeof(float) * ((size_t)2 * AD_BQ * hd + (size_t)AD_BK * (hd + 1) +
                                         (size_t)AD_BK * hd);
    if (smem > b->smem_optin) {
        cu_fail(b, "attention_delta: head_dim %d needs %zu bytes of shared memory, over the "
                "GPU's %zu", hd, smem, b->smem_optin);
        return;
    }
    const int64_t width = (int64_t)a->n_heads * hd;
    k_delta_track<<<cu_grid(width, 128), 128, 0, b->stream>>>(a->q, a->q_stride, a->tq,
                                                              a->n_heads, hd, theta, state, q_ref);
    if (!CU_LAUNCHED(b, "k_delta_track")) return;
    if (hd <= 64) launch<2>(b, a, q_ref, window, smem);
    else if (hd <= 128) launch<4>(b, a, q_ref, window, smem);
    else if (hd <= 256) launch<8>(b, a, q_ref, window, smem);
    else launch<16>(b, a, q_ref, window, smem);
}

void cu_op_attention_delta(plm_backend *be, const plm_attn_args *a, float *state, float *q_ref,
                           int64_t window, float theta)
{
    cu_backend *b = (cu_backend *)be;
    if (b->failed || !CU_OK(b, cudaSetDevice(b->device))) return;
    cu_attention_delta(b, a, state, q_ref, window, theta);
}
