/* y[m x n] = x[m x k] * W^T (+ bias): cuBLASLt first, cublasGemmEx where Lt has no algorithm.
 * Weights stay in their stored dtype. For F16/BF16 weights the float32 activations are rounded to
 * that dtype first so the tensor cores run a 16-bit GEMM with float32 accumulation and output
 * (the CPU widens the weights instead; the difference is the activations' rounding, ~2^-9 for
 * bf16). Where the kernel that produced the activations already wrote that rounded copy (a
 * twin, cu_internal.h cu_twin) the GEMM reads it and the rounding pass is skipped. F32 weights
 * run a true float32 GEMM (compute 32F, never TF32), matching the CPU to float rounding.
 *
 * Layout: row-major W[n][k] is, to column-major cuBLAS, a k x n matrix with ld k; x[m][k] is
 * k x m; y[m][n] is n x m. So y^T = op(W)^T-with-trans: C(n x m) = A^T(n x k) * B(k x m). */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <limits.h>

#include "cuda/cu_internal.h"
#include "cuda/cu_test_hooks.h"

/* dst = src rounded to bf16 or f16 (kind: CU_TWIN_BF16 / CU_TWIN_F16), by the same rule the
 * producing kernels use for their twins (cu_twin_store: f16 saturates). */
__global__ void k_round16(void *dst, const float *src, int64_t n, int kind)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        cu_twin_store(dst, kind, i, src[i]);
}

/* bf16 rounding eight elements a thread (src and dst 16-byte aligned, n8 = n / 8): one
 * 16-byte store instead of eight 2-byte ones; the scalar kernel ran at about half the copy's
 * rate in the 7B's prefill (2.95 ms of it). */
__global__ void k_round_bf16_x8(uint4 *dst, const float4 *src, int64_t n8)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n8;
         i += (int64_t)gridDim.x * blockDim.x) {
        const float4 a = src[2 * i], c = src[2 * i + 1];
        const __nv_bfloat162 p[4] = {__floats2bfloat162_rn(a.x, a.y),
                                     __floats2bfloat162_rn(a.z, a.w),
                                     __floats2bfloat162_rn(c.x, c.y),
                                     __floats2bfloat162_rn(c.z, c.w)};
        uint4 o;
        o.x = *(const unsigned *)&p[0];
        o.y = *(const unsigned *)&p[1];
        o.z = *(const unsigned *)&p[2];
        o.w = *(const unsigned *)&p[3];
        dst[i] = o;
    }
}

/* y[r][c] = bias[c] (or 0 without bias): the GEMM then accumulates onto it with beta = 1. */
__global__ void k_fill_rows(float *y, const float *bias, int64_t m, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < m * n;
         i += (int64_t)gridDim.x * blockDim.x)
        y[i] = bias ? bias[i % n] : 0.0f;
}

int cu_round_activations(cu_backend *b, void *dst, const float *src, int64_t n, int bf16)
{
    if (n <= 0) return 1;
    if (bf16 && n % 8 == 0 && (uintptr_t)src % 16 == 0 && (uintptr_t)dst % 16 == 0) {
        k_round_bf16_x8<<<cu_grid(n / 8, 256), 256, 0, b->stream>>>((uint4 *)dst,
                                                                     (const float4 *)src, n / 8);
        return CU_LAUNCHED(b, "k_round_bf16_x8");
    }
    k_round16<<<cu_grid(n, 256), 256, 0, b->stream>>>(dst, src, n,
                                                      bf16 ? CU_TWIN_BF16 : CU_TWIN_F16);
    return CU_LAUNCHED(b, "k_round16");
}

void *cu_twin_begin(cu_backend *b, const float *y, int64_t rows, int64_t n, int *kind)
{
    b->twin.of = NULL;
    /* decode rows go to the GEMV, which reads float32; a row count unknown to the op (act,
     * silu_mul) is judged by size: 8 rows of the 7B's MLP are 88k elements */
    const int decode = rows >= 0 ? rows <= CU_GEMV_MAX_ROWS : n <= CU_GEMV_MAX_ROWS * 16384;
    if (b->twin_off || !b->twin_want || n <= 0 || decode) return NULL;
    const size_t bytes = (size_t)n * 2;
    /* growing would synchronise a recording: that op's matmul rounds for itself instead */
    if (b->capturing && bytes > b->twin_buf.cap) return NULL;
    if (!cu_buf_reserve(b, &b->twin_buf, bytes, "bf16 activation")) return NULL;
    b->twin.of = y;
    b->twin.n = n;
    b->twin.kind = b->twin_want;
    b->twin.seq = b->op_seq;
    b->twin.launch = ~0ull; /* usable once cu_twin_done sees the kernel launched */
    *kind = b->twin_want;
    return b->twin_buf.p;
}

void cu_twin_done(cu_backend *b)
{
    if (b->twin.of) b->twin.launch = b->n_launch;
}

const void *cu_twin_take(cu_backend *b, const float *x, int64_t n, int kind)
{
    const cu_twin *t = &b->twin;
    if (!t->of || t->of != x || t->n != n || t->kind != kind || t->seq + 1 != b->op_seq ||
        t->launch != b->n_launch)
        return NULL;
    return b->twin_buf.p;
}

static int fill_rows(cu_backend *b, float *y, const float *bias, int64_t m, int64_t n)
{
    k_fill_rows<<<cu_grid(m * n, 256), 256, 0, b->stream>>>(y, bias, m, n);
    return CU_LAUNCHED(b, "k_fill_rows");
}

/* Largest power of two (<= 256) dividing the address: Lt's heuristic otherwise assumes 256-byte
 * aligned buffers and may pick a kernel that rejects an offset pointer (x + row * D). */
static uint32_t ptr_align(const void *p)
{
    uintptr_t a = (uintptr_t)p;
    uint32_t al = 256;
    while (al > 1 && a % al) al /= 2;
    return al;
}

enum { LT_DONE = 1, LT_FALLBACK = 0, LT_FAILED = -1 };

/* The cache entry for a matmul's shape, dtype, epilogue and alignments: the one that matches,
 * else a fresh one (state 0) taking an empty slot or the oldest. */
static cu_lt_algo *lt_entry(cu_backend *b, const cu_lt_algo *key)
{
    for (int i = 0; i < CU_LT_CACHE; i++) {
        cu_lt_algo *e = &b->lt_cache[i];
        if (e->state && e->m == key->m && e->n == key->n && e->k == key->k &&
            e->ab == key->ab && e->bias == key->bias && e->al_a == key->al_a &&
            e->al_b == key->al_b && e->al_c == key->al_c)
            return e;
    }
    cu_lt_algo *e = &b->lt_cache[b->lt_next++ % CU_LT_CACHE];
    *e = *key;
    e->state = 0;
    return e;
}

/* One cuBLASLt matmul; LT_FALLBACK when Lt has no algorithm for this shape/alignment. */
static int lt_matmul(cu_backend *b, float *y, const void *w, const void *x, cudaDataType_t ab,
                     const float *bias, int64_t m, int64_t n, int64_t k)
{
    cublasLtMatmulDesc_t op = NULL;
    cublasLtMatrixLayout_t la = NULL, lb = NULL, lc = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    int ret = LT_FAILED;
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    const cublasLtEpilogue_t epi = bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    const uint64_t ws = b->lt_ws_bytes;
    const uint32_t al_a = ptr_align(w), al_b = ptr_align(x), al_c = ptr_align(y);
    const float alpha = 1.0f, beta = 0.0f;
    cublasLtMatmulHeuristicResult_t heur;
    cu_lt_algo key = {}, *cached = NULL;
    int found = 0;
    cublasStatus_t s;

    if (!CU_BLAS_OK(b, cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F))) goto out;
    if (!CU_BLAS_OK(b, cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta,
                                                      sizeof ta)) ||
        !CU_BLAS_OK(b, cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb,
                                                      sizeof tb)) ||
        !CU_BLAS_OK(b, cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi,
                                                      sizeof epi)))
        goto out;
    if (bias && !CU_BLAS_OK(b, cublasLtMatmulDescSetAttribute(
                                   op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias)))
        goto out;
    if (!CU_BLAS_OK(b, cublasLtMatrixLayoutCreate(&la, ab, (uint64_t)k, (uint64_t)n, k)) ||
        !CU_BLAS_OK(b, cublasLtMatrixLayoutCreate(&lb, ab, (uint64_t)k, (uint64_t)m, k)) ||
        !CU_BLAS_OK(b, cublasLtMatrixLayoutCreate(&lc, CUDA_R_32F, (uint64_t)n, (uint64_t)m, n)))
        goto out;
    key.m = m, key.n = n, key.k = k, key.ab = (int)ab, key.bias = bias != NULL;
    key.al_a = al_a, key.al_b = al_b, key.al_c = al_c;
    cached = lt_entry(b, &key);
    if (cached->state == 2) { /* asked before: Lt has no algorithm for it */
        ret = LT_FALLBACK;
        goto out;
    }
    if (cached->state == 1) goto run;
    if (!CU_BLAS_OK(b, cublasLtMatmulPreferenceCreate(&pref)) ||
        !CU_BLAS_OK(b, cublasLtMatmulPreferenceSetAttribute(
                           pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws)) ||
        !CU_BLAS_OK(b, cublasLtMatmulPreferenceSetAttribute(
                           pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof al_a)) ||
        !CU_BLAS_OK(b, cublasLtMatmulPreferenceSetAttribute(
                           pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof al_b)) ||
        !CU_BLAS_OK(b, cublasLtMatmulPreferenceSetAttribute(
                           pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_c, sizeof al_c)) ||
        !CU_BLAS_OK(b, cublasLtMatmulPreferenceSetAttribute(
                           pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_c, sizeof al_c)))
        goto out;
    /* No algorithm (or "not supported") is an answer, not an error: the caller falls back. */
    s = cublasLtMatmulAlgoGetHeuristic(b->lt, op, la, lb, lc, lc, pref, 1, &heur, &found);
    if (s == CUBLAS_STATUS_NOT_SUPPORTED || (s == CUBLAS_STATUS_SUCCESS && found == 0)) {
        cached->state = 2;
        ret = LT_FALLBACK;
        goto out;
    }
    if (!CU_BLAS_OK(b, s)) goto out;
    cached->algo = heur.algo;
    cached->state = 1;
run:
    s = cublasLtMatmul(b->lt, op, &alpha, w, la, x, lb, &beta, y, lc, y, lc, &cached->algo,
                       b->lt_ws, b->lt_ws_bytes, b->stream);
    if (s == CUBLAS_STATUS_NOT_SUPPORTED) {
        ret = LT_FALLBACK;
        goto out;
    }
    if (CU_BLAS_OK(b, s)) {
        ret = LT_DONE;
        cu_prof_mark(b, "cublasLtMatmul");
    }
out:
    /* Destroying descriptors only frees host memory; their statuses cannot change the result. */
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (lc) cublasLtMatrixLayoutDestroy(lc);
    if (lb) cublasLtMatrixLayoutDestroy(lb);
    if (la) cublasLtMatrixLayoutDestroy(la);
    if (op) cublasLtMatmulDescDestroy(op);
    return ret;
}

/* The general path: cublasGemmEx takes any alignment and leading dimension. */
static void gemmex(cu_backend *b, float *y, const void *w, const void *x, cudaDataType_t ab,
                   const float *bias, int64_t m, int64_t n, int64_t k)
{
    if (m > INT_MAX || n > INT_MAX || k > INT_MAX) {
        cu_fail(b, "matmul: %lld x %lld x %lld is over cublasGemmEx's int dimensions",
                (long long)m, (long long)n, (long long)k);
        return;
    }
    const float alpha = 1.0f, beta = bias ? 1.0f : 0.0f;
    if (bias && !fill_rows(b, y, bias, m, n)) return;
    if (CU_BLAS_OK(b, cublasGemmEx(b->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)n, (int)m, (int)k,
                                   &alpha, w, ab, (int)k, x, ab, (int)k, &beta, y, CUDA_R_32F,
                                   (int)n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT)))
        cu_prof_mark(b, "cublasGemmEx");
}

void cu_matmul(cu_backend *b, float *y, const float *x, const plm_weight *w, const float *bias,
               int64_t m)
{
    const int64_t n = w->rows, k = w->cols;
    cudaDataType_t ab;
    switch (w->dtype) {
    case PLM_F32: ab = CUDA_R_32F; break;
    case PLM_BF16: ab = CUDA_R_16BF; break;
    case PLM_F16: ab = CUDA_R_16F; break;
    default:
        cu_fail(b, "matmul: weight dtype %s is not supported (F32, F16, BF16)",
                plm_dtype_name(w->dtype));
        return;
    }
    if (m < 0 || n < 0 || k < 0) {
        cu_fail(b, "matmul: negative size m=%lld n=%lld k=%lld", (long long)m, (long long)n,
                (long long)k);
        return;
    }
    if (m == 0 || n == 0) return;
    if (k == 0) { /* an empty sum: y is the bias (or 0), as the CPU's sgemm leaves it */
        fill_rows(b, y, bias, m, n);
        return;
    }
    /* decode shapes: a bandwidth-bound GEMV on the widened weights (cu_gemv.cu) */
    if (m <= CU_GEMV_MAX_ROWS && b->gemv && !b->force_gemmex && cu_gemv(b, y, x, w, bias, m))
        return;
    const void *xin = x;
    if (ab != CUDA_R_32F) {
        const int kind = ab == CUDA_R_16BF ? CU_TWIN_BF16 : CU_TWIN_F16;
        b->twin_want = kind;
        xin = cu_twin_take(b, x, m * k, kind);
        if (xin) {
            b->n_twin_used++;
        } else {
            if (!cu_buf_reserve(b, &b->conv, (size_t)m * (size_t)k * 2, "matmul activation"))
                return;
            if (!cu_round_activations(b, b->conv.p, x, m * k, ab == CUDA_R_16BF)) return;
            xin = b->conv.p;
        }
    }
    b->n_matmul++;
    if (!b->force_gemmex) {
        int r = lt_matmul(b, y, w->data, xin, ab, bias, m, n, k);
        if (r != LT_FALLBACK) return; /* done, or the failure is recorded */
    }
    b->n_fallback++;
    gemmex(b, y, w->data, xin, ab, bias, m, n, k);
}

extern "C" void plm_cuda_gemm_counts(plm_backend *be, long *n_matmul, long *n_fallback)
{
    const cu_backend *b = (const cu_backend *)be;
    *n_matmul = b->n_matmul;
    *n_fallback = b->n_fallback;
}

extern "C" long plm_cuda_twin_uses(plm_backend *be)
{
    return ((const cu_backend *)be)->n_twin_used;
}
