/* Elementwise and data-movement ops: add, add_row, act, silu_mul, embed, copy2d, patchify.
 * Grid-stride loops with 64-bit indices (a 32k-vocab x 4096 table row index overflows 32 bits
 * once multiplied). The activation formulas are the CPU reference's, in the same float order,
 * with the accurate (non-intrinsic) expf/erff/tanhf. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda/cu_internal.h"

#define EW_THREADS 256

#define GRID_STRIDE(i, n)                                                                          \
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n);                      \
         i += (int64_t)gridDim.x * blockDim.x)

__global__ void k_add(float *y, const float *a, const float *c, int64_t n)
{
    cu_pdl_trigger(); /* a GEMV may follow: it loads weights meanwhile (cu_internal.h) */
    GRID_STRIDE(i, n) y[i] = a[i] + c[i];
}

__global__ void k_add_row(float *y, const float *x, const float *row, int64_t m, int64_t n)
{
    GRID_STRIDE(i, m * n) y[i] = x[i] + row[i % n];
}

__device__ static float act1(float x, int act)
{
    switch (act) {
    case PLM_ACT_GELU: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case PLM_ACT_GELU_TANH: {
        const float c = 0.7978845608028654f; /* sqrt(2/pi) */
        return 0.5f * x * (1.0f + tanhf(c * (x + 0.044715f * x * x * x)));
    }
    case PLM_ACT_QUICK_GELU: return x / (1.0f + expf(-1.702f * x));
    case PLM_ACT_SILU: return x / (1.0f + expf(-x));
    case PLM_ACT_RELU: return x > 0 ? x : 0;
    }
    return x;
}

/* tw: the bf16/f16 twin of y for the GEMM after (cu_twin), or NULL */
__global__ void k_act(float *y, const float *x, int64_t n, int act, void *tw, int tw_kind)
{
    GRID_STRIDE(i, n) {
        const float v = act1(x[i], act);
        y[i] = v;
        cu_twin_store(tw, tw_kind, i, v);
    }
}

__global__ void k_silu_mul(float *y, const float *gate, const float *up, int64_t n, void *tw,
                           int tw_kind)
{
    cu_pdl_trigger();
    GRID_STRIDE(i, n) {
        const float v = act1(gate[i], PLM_ACT_SILU) * up[i];
        y[i] = v;
        cu_twin_store(tw, tw_kind, i, v);
    }
}

template <typename T> __device__ static float widen(T v);
template <> __device__ float widen<float>(float v) { return v; }
template <> __device__ float widen<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <> __device__ float widen<__half>(__half v) { return __half2float(v); }

template <typename T>
__global__ void k_embed(float *y, const T *table, const int32_t *ids, int64_t n, int64_t cols)
{
    GRID_STRIDE(i, n * cols)
    {
        int64_t r = i / cols, c = i % cols;
        y[i] = widen<T>(table[(int64_t)ids[r] * cols + c]);
    }
}

__global__ void k_patchify(float *out, const float *pixels, int channels, int size, int patch,
                           int g)
{
    const int64_t pp = (int64_t)patch * patch, per = channels * pp;
    GRID_STRIDE(i, (int64_t)g * g * per)
    {
        int64_t pi = i / per, r = i % per;
        int c = (int)(r / pp), yy = (int)(r % pp / patch), xx = (int)(r % patch);
        int py = (int)(pi / g), px = (int)(pi % g);
        out[i] = pixels[((int64_t)c * size + py * patch + yy) * size + px * patch + xx];
    }
}

static int size_ok(cu_backend *b, const char *what, int64_t n)
{
    if (n < 0) cu_fail(b, "%s: negative size %lld", what, (long long)n);
    return n > 0;
}

void cu_add(cu_backend *b, float *y, const float *a, const float *c, int64_t n)
{
    if (!size_ok(b, "add", n)) return;
    k_add<<<cu_grid(n, EW_THREADS), EW_THREADS, 0, b->stream>>>(y, a, c, n);
    CU_LAUNCHED(b, "k_add");
}

void cu_add_row(cu_backend *b, float *y, const float *x, const float *row, int64_t m, int64_t n)
{
    if (m < 0 || !size_ok(b, "add_row", n) || m == 0) return;
    k_add_row<<<cu_grid(m * n, EW_THREADS), EW_THREADS, 0, b->stream>>>(y, x, row, m, n);
    CU_LAUNCHED(b, "k_add_row");
}

void cu_act(cu_backend *b, float *y, const float *x, int64_t n, plm_act act)
{
    if (act < PLM_ACT_GELU || act > PLM_ACT_RELU) {
        cu_fail(b, "act: unknown activation %d", (int)act);
        return;
    }
    if (!size_ok(b, "act", n)) return;
    int kind = 0;
    void *tw = cu_twin_begin(b, y, -1, n, &kind);
    k_act<<<cu_grid(n, EW_THREADS), EW_THREADS, 0, b->stream>>>(y, x, n, (int)act, tw, kind);
    if (CU_LAUNCHED(b, "k_act")) cu_twin_done(b);
}

void cu_silu_mul(cu_backend *b, float *y, const float *gate, const float *up, int64_t rows,
                 int64_t n)
{
    if (!size_ok(b, "silu_mul", n)) return;
    int kind = 0;
    void *tw = cu_twin_begin(b, y, rows, n, &kind);
    k_silu_mul<<<cu_grid(n, EW_THREADS), EW_THREADS, 0, b->stream>>>(y, gate, up, n, tw, kind);
    if (CU_LAUNCHED(b, "k_silu_mul")) cu_twin_done(b);
}

void cu_embed(cu_backend *b, float *y, const plm_weight *w, const int32_t *ids, int64_t n)
{
    if (!size_ok(b, "embed", n) || w->cols <= 0) return;
    /* ids come from the host: a bad one would fault the kernel and poison the context, so
     * the check costs less than the failure. */
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= w->rows) {
            cu_fail(b, "embed: id %d at %lld is outside the table's %lld rows", (int)ids[i],
                    (long long)i, (long long)w->rows);
            return;
        }
    const int32_t *dids = (const int32_t *)cu_stage(b, ids, (size_t)n * sizeof(int32_t));
    if (!dids) return;
    const unsigned grid = cu_grid(n * w->cols, EW_THREADS);
    switch (w->dtype) {
    case PLM_F32:
        k_embed<float><<<grid, EW_THREADS, 0, b->stream>>>(y, (const float *)w->data, dids, n,
                                                           w->cols);
        break;
    case PLM_BF16:
        k_embed<__nv_bfloat16><<<grid, EW_THREADS, 0, b->stream>>>(
            y, (const __nv_bfloat16 *)w->data, dids, n, w->cols);
        break;
    case PLM_F16:
        k_embed<__half><<<grid, EW_THREADS, 0, b->stream>>>(y, (const __half *)w->data, dids, n,
                                                            w->cols);
        break;
    default:
        cu_fail(b, "embed: table dtype %s is not supported (F32, F16, BF16)",
                plm_dtype_name(w->dtype));
        return;
    }
    CU_LAUNCHED(b, "k_embed");
}

/* The CPU copies row by row with memmove; cudaMemcpy2D has no defined result for overlapping
 * ranges, so an overlapping copy goes through a packed temporary. */
void cu_copy2d(cu_backend *b, float *dst, int64_t dst_stride, const float *src,
               int64_t src_stride, int64_t rows, int64_t cols)
{
    if (rows < 0 || cols < 0 || dst_stride < cols || src_stride < cols) {
        cu_fail(b, "copy2d: bad shape rows=%lld cols=%lld dst_stride=%lld src_stride=%lld",
                (long long)rows, (long long)cols, (long long)dst_stride, (long long)src_stride);
        return;
    }
    if (rows == 0 || cols == 0) return;
    if (dst == src && dst_stride == src_stride) return;
    const size_t w = (size_t)cols * sizeof(float);
    const float *d_end = dst + (rows - 1) * dst_stride + cols;
    const float *s_end = src + (rows - 1) * src_stride + cols;
    if (dst < s_end && src < d_end) {
        if (!cu_buf_reserve(b, &b->tmp, w * (size_t)rows, "copy2d")) return;
        if (!CU_OK(b, cudaMemcpy2DAsync(b->tmp.p, w, src, (size_t)src_stride * sizeof(float), w,
                                        (size_t)rows, cudaMemcpyDeviceToDevice, b->stream)))
            return;
        src = (const float *)b->tmp.p;
        src_stride = cols;
    }
    CU_OK(b, cudaMemcpy2DAsync(dst, (size_t)dst_stride * sizeof(float), src,
                               (size_t)src_stride * sizeof(float), w, (size_t)rows,
                               cudaMemcpyDeviceToDevice, b->stream));
}

void cu_patchify(cu_backend *b, float *out, const float *pixels, int channels, int size,
                 int patch)
{
    if (channels <= 0 || size <= 0 || patch <= 0 || patch > size) {
        cu_fail(b, "patchify: bad shape channels=%d size=%d patch=%d", channels, size, patch);
        return;
    }
    const int g = size / patch;
    const int64_t n = (int64_t)g * g * channels * patch * patch;
    k_patchify<<<cu_grid(n, EW_THREADS), EW_THREADS, 0, b->stream>>>(out, pixels, channels, size,
                                                                     patch, g);
    CU_LAUNCHED(b, "k_patchify");
}
