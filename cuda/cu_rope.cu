/* Rotary position embedding, rotate-half convention (Llama in transformers): for each token i,
 * pair j < hd/2 of every head turns by angle pos[i] * inv_freq[j]. The angle is formed in
 * float32 like the reference, then accurate cosf/sinf (positions reach thousands of radians, where
 * the fast intrinsics lose digits). pos and inv_freq arrive as host arrays: staged together. */
#include "cuda/cu_internal.h"

#define ROPE_THREADS 256

__global__ void k_rope(float *x, int64_t t, int64_t stride, int n_heads, int hd,
                       const int32_t *pos, const float *inv_freq)
{
    const int half = hd / 2;
    const int64_t n = t * n_heads * half;
    for (int64_t w = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; w < n;
         w += (int64_t)gridDim.x * blockDim.x) {
        /* j fastest so a warp touches consecutive floats of one head */
        const int j = (int)(w % half);
        const int64_t rest = w / half;
        const int h = (int)(rest % n_heads);
        const int64_t i = rest / n_heads;
        const float f = (float)pos[i] * inv_freq[j];
        const float c = cosf(f), s = sinf(f);
        float *v = x + i * stride + (int64_t)h * hd;
        const float a = v[j], b = v[j + half];
        v[j] = a * c - b * s;
        v[j + half] = b * c + a * s;
    }
}

void cu_rope(cu_backend *b, float *x, int64_t t, int64_t stride, int n_heads, int hd,
             const int32_t *pos, const float *inv_freq)
{
    if (t < 0 || n_heads < 0 || hd < 0 || stride < (int64_t)n_heads * hd) {
        cu_fail(b, "rope: bad shape t=%lld stride=%lld n_heads=%d hd=%d", (long long)t,
                (long long)stride, n_heads, hd);
        return;
    }
    const int half = hd / 2;
    if (t == 0 || n_heads == 0 || half == 0) return;
    void *dpos, *dfreq;
    if (!cu_stage_pair(b, pos, (size_t)t * sizeof(int32_t), inv_freq, (size_t)half * sizeof(float),
                       &dpos, &dfreq))
        return;
    const int64_t n = t * n_heads * half;
    k_rope<<<cu_grid(n, ROPE_THREADS), ROPE_THREADS, 0, b->stream>>>(
        x, t, stride, n_heads, hd, (const int32_t *)dpos, (const float *)dfreq);
    CU_LAUNCHED(b, "k_rope");
}
