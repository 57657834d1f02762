/* LayerNorm and RMSNorm: one block per row, float32 statistics reduced through warp shuffles.
 * LayerNorm takes two passes (mean, then the mean of squared deviations) like the CPU reference,
 * which avoids the cancellation of E[x^2] - E[x]^2 on rows with a large mean. The decoder's
 * residual add fuses with the norm after it (x += h; y = rmsnorm(x)): one launch instead of two
 * in a decode step, and x read once. */
#include "cuda/cu_internal.h"

#define NORM_THREADS 256

/* Sum over the block; every thread gets the result. `red` holds one float per warp. */
__device__ static float block_sum(float v, float *red)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nw = blockDim.x / 32;
    __syncthreads(); /* red may still be read from the previous call */
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* A row's layernorm from its mean: the second pass (the mean of squared deviations, as the CPU
 * reference), then y and its twin. Shared by k_layernorm and k_add_layernorm. */
__device__ static void layernorm_rest(float *yr, const float *xr, float mean, const float *g,
                                      const float *bias, int64_t n, float eps, void *tw,
                                      int tw_kind, float *red)
{
    float v = 0.0f;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        const float d = xr[i] - mean;
        v += d * d;
    }
    const float var = block_sum(v, red) / (float)n;
    const float inv = 1.0f / sqrtf(var + eps);
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        const float o = ((xr[i] - mean) * inv) * g[i] + (bias ? bias[i] : 0.0f);
        yr[i] = o;
        cu_twin_store(tw, tw_kind, blockIdx.x * n + i, o);
    }
}

/* tw: the bf16/f16 twin of y for the GEMM after (cu_twin), or NULL */
__global__ void k_layernorm(float *y, const float *x, const float *g, const float *bias,
                            int64_t n, float eps, void *tw, int tw_kind)
{
    __shared__ float red[32];
    const float *xr = x + blockIdx.x * n;
    float s = 0.0f;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += xr[i];
    const float mean = block_sum(s, red) / (float)n;
    layernorm_rest(y + blockIdx.x * n, xr, mean, g, bias, n, eps, tw, tw_kind, red);
}

__global__ void k_rmsnorm(float *y, const float *x, const float *g, int64_t n, float eps,
                          void *tw, int tw_kind)
{
    __shared__ float red[32];
    cu_pdl_trigger();
    const float *xr = x + blockIdx.x * n;
    float *yr = y + blockIdx.x * n;
    float s = 0.0f;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += xr[i] * xr[i];
    const float inv = 1.0f / sqrtf(block_sum(s, red) / (float)n + eps);
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        const float o = g[i] * (xr[i] * inv);
        yr[i] = o;
        cu_twin_store(tw, tw_kind, blockIdx.x * n + i, o);
    }
}

/* k_rmsnorm after x += h. Each thread reads its own elements of h before any are written, so
 * y may be h. The next op (a GEMV) may start loading its
 * weights meanwhile (cu_pdl_trigger). */
__global__ void k_add_rmsnorm(float *y, float *x, const float *h, const float *g, int64_t n,
                              float eps, void *tw, int tw_kind)
{
    __shared__ float red[32];
    cu_pdl_trigger();
    cu_pdl_wait(); /* launched early (cu_launch_pdl): x and h come from the kernels before */
    float *xr = x + blockIdx.x * n;
    const float *hr = h + blockIdx.x * n;
    float *yr = y + blockIdx.x * n;
    float s = 0.0f;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        const float v = xr[i] + hr[i];
        xr[i] = v;
        s += v * v;
    }
    const float inv = 1.0f / sqrtf(block_sum(s, red) / (float)n + eps);
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        const float o = g[i] * (xr[i] * inv);
        yr[i] = o;
        cu_twin_store(tw, tw_kind, blockIdx.x * n + i, o);
    }
}

/* k_layernorm after x += h (one block per row, as there). Each thread writes y only at
 * indices whose h it read in the first pass, so y may be h. */
__global__ void k_add_layernorm(float *y, float *x, const float *h, const float *g,
                                const float *bias, int64_t n, float eps, void *tw, int tw_kind)
{
    __shared__ float red[32];
    float *xr = x + blockIdx.x * n;
    const float *hr = h + blockIdx.x * n;
    float s = 0.0f;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        const float v = xr[i] + hr[i];
        xr[i] = v;
        s += v;
    }
    const float mean = block_sum(s, red) / (float)n;
    layernorm_rest(y + blockIdx.x * n, xr, mean, g, bias, n, eps, tw, tw_kind, red);
}

/* Fewer threads for short rows so most of the block is not idle; always whole warps. */
static int norm_threads(int64_t n)
{
    int t = 32;
    while (t < NORM_THREADS && t < n) t *= 2;
    return t;
}

static int norm_args_ok(cu_backend *b, const char *what, int64_t m, int64_t n)
{
    if (m < 0 || n < 0 || m > INT32_MAX) {
        cu_fail(b, "%s: bad size m=%lld n=%lld", what, (long long)m, (long long)n);
        return 0;
    }
    return 1;
}

void cu_layernorm(cu_backend *b, float *y, const float *x, const float *g, const float *bias,
                  int64_t m, int64_t n, float eps)
{
    if (!norm_args_ok(b, "layernorm", m, n) || m == 0 || n == 0) return;
    int kind = 0;
    void *tw = cu_twin_begin(b, y, m, m * n, &kind);
    k_layernorm<<<(unsigned)m, norm_threads(n), 0, b->stream>>>(y, x, g, bias, n, eps, tw, kind);
    if (CU_LAUNCHED(b, "k_layernorm")) cu_twin_done(b);
}

void cu_add_layernorm(cu_backend *b, float *y, float *x, const float *h, const float *g,
                      const float *bias, int64_t m, int64_t n, float eps)
{
    if (!norm_args_ok(b, "add_layernorm", m, n) || m == 0 || n == 0) return;
    int kind = 0;
    void *tw = cu_twin_begin(b, y, m, m * n, &kind);
    k_add_layernorm<<<(unsigned)m, norm_threads(n), 0, b->stream>>>(y, x, h, g, bias, n, eps, tw,
                                                                    kind);
    if (CU_LAUNCHED(b, "k_add_layernorm")) cu_twin_done(b);
}

void cu_rmsnorm(cu_backend *b, float *y, const float *x, const float *g, int64_t m, int64_t n,
                float eps)
{
    if (!norm_args_ok(b, "rmsnorm", m, n) || m == 0 || n == 0) return;
    int kind = 0;
    void *tw = cu_twin_begin(b, y, m, m * n, &kind);
    k_rmsnorm<<<(unsigned)m, norm_threads(n), 0, b->stream>>>(y, x, g, n, eps, tw, kind);
    if (CU_LAUNCHED(b, "k_rmsnorm")) cu_twin_done(b);
}

void cu_add_rmsnorm(cu_backend *b, float *y, float *x, const float *h, const float *g,
                    int64_t m, int64_t n, float eps)
{
    if (!norm_args_ok(b, "add_rmsnorm", m, n) || m == 0 || n == 0) return;
    /* up to 1024 threads, ~4 elements each: at m = 1 (decode) this one block is the whole
     * kernel, and its latency is a few dependent loads per thread */
    int threads = 32;
    while (threads < 1024 && threads * 4 < n) threads *= 2;
    int kind = 0;
    void *tw = cu_twin_begin(b, y, m, m * n, &kind);
    if (cu_launch_pdl(b, "k_add_rmsnorm", k_add_rmsnorm, dim3((unsigned)m), dim3(threads), 0, y,
                      x, h, g, n, eps, tw, kind))
        cu_twin_done(b);
}
