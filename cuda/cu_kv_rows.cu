/* Row edits: for the KV policies, per-head compaction (gather through a temporary, since an
 * in-place parallel gather would race on rows another thread still reads) and ordered row
 * folding (merges); for the visual recycling, weighted row sums. CPU twins: cpu_gather_heads,
 * cpu_mix_rows and cpu_sum_rows in core/backend_cpu.c. */
#include <stdlib.h>
#include <string.h>

#include "cuda/cu_internal.h"

/* tmp[h][i][e] = x[idx[h*n+i]][h*hd + e] */
__global__ void k_gather_heads(float *tmp, const float *x, int64_t stride, int n_heads, int hd,
                               const int32_t *idx, int64_t n)
{
    const int64_t total = (int64_t)n_heads * n * hd;
    for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < total;
         t += (int64_t)gridDim.x * blockDim.x) {
        const int e = (int)(t % hd);
        const int64_t i = (t / hd) % n;
        const int h = (int)(t / hd / n);
        tmp[t] = x[(int64_t)idx[(int64_t)h * n + i] * stride + (int64_t)h * hd + e];
    }
}

__global__ void k_scatter_heads(float *x, const float *tmp, int64_t stride, int n_heads, int hd,
                                int64_t n)
{
    const int64_t total = (int64_t)n_heads * n * hd;
    for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < total;
         t += (int64_t)gridDim.x * blockDim.x) {
        const int e = (int)(t % hd);
        const int64_t i = (t / hd) % n;
        const int h = (int)(t / hd / n);
        x[i * stride + (int64_t)h * hd + e] = tmp[t];
    }
}

void cu_gather_heads(cu_backend *b, float *x, int64_t stride, int n_heads, int hd,
                     const int32_t *idx, int64_t n)
{
    if (n <= 0 || n_heads <= 0) return;
    const size_t ib = (size_t)n_heads * (size_t)n * sizeof(int32_t);
    int32_t *d_idx = (int32_t *)cu_stage(b, idx, ib);
    if (!d_idx) return;
    const int64_t total = (int64_t)n_heads * n * hd;
    if (!cu_buf_reserve(b, &b->tmp, (size_t)total * sizeof(float), "KV compaction")) return;
    float *tmp = (float *)b->tmp.p;
    k_gather_heads<<<cu_grid(total, 256), 256, 0, b->stream>>>(tmp, x, stride, n_heads, hd, d_idx,
                                                               n);
    if (!CU_LAUNCHED(b, "k_gather_heads")) return;
    k_scatter_heads<<<cu_grid(total, 256), 256, 0, b->stream>>>(x, tmp, stride, n_heads, hd, n);
    CU_LAUNCHED(b, "k_scatter_heads");
}

/* One block walks the whole list in order (a later entry may read a row an earlier one wrote);
 * its threads split the hd elements, so entries stay sequential and elements parallel. */
__global__ void k_mix_rows(float *x, int64_t stride, int hd, const int32_t *head,
                           const int32_t *dst, const int32_t *src, const float *a, const float *bw,
                           int64_t n)
{
    for (int64_t m = 0; m < n; m++) {
        float *d = x + (int64_t)dst[m] * stride + (int64_t)head[m] * hd;
        const float *s = x + (int64_t)src[m] * stride + (int64_t)head[m] * hd;
        for (int e = threadIdx.x; e < hd; e += blockDim.x) d[e] = a[m] * d[e] + bw[m] * s[e];
        __syncthreads();
    }
}

char *cu_stage_merges(cu_backend *b, const int32_t *head, const int32_t *dst,
                      const int32_t *src, const float *a, const float *bw, int64_t n,
                      const char *what)
{
    const size_t w = (size_t)n * 4;
    char *host = (char *)malloc(5 * w);
    if (!host) {
        cu_fail(b, "%s: out of host memory", what);
        return NULL;
    }
    memcpy(host, head, w);
    memcpy(host + w, dst, w);
    memcpy(host + 2 * w, src, w);
    memcpy(host + 3 * w, a, w);
    memcpy(host + 4 * w, bw, w);
    char *d = (char *)cu_stage(b, host, 5 * w);
    free(host);
    return d;
}

void cu_mix_rows(cu_backend *b, float *x, int64_t stride, int hd, const int32_t *head,
                 const int32_t *dst, const int32_t *src, const float *a, const float *bw, int64_t n)
{
    if (n <= 0) return;
    char *d = cu_stage_merges(b, head, dst, src, a, bw, n, "mix_rows");
    if (!d) return;
    const size_t w = (size_t)n * 4;
    k_mix_rows<<<1, 128, 0, b->stream>>>(x, stride, hd, (const int32_t *)d,
                                         (const int32_t *)(d + w), (const int32_t *)(d + 2 * w),
                                         (const float *)(d + 3 * w), (const float *)(d + 4 * w), n);
    CU_LAUNCHED(b, "k_mix_rows");
}

/* Threads split the columns, blocks along y the output rows; each thread sums its column of
 * the row's sources in their order (the CPU's order, so weight-1 gathers are exact). */
__global__ void k_sum_rows(float *y, int64_t y_stride, const float *x, int64_t x_stride,
                           int64_t cols, const int64_t *off, const int32_t *src, const float *w,
                           int64_t n)
{
    const int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (e >= cols) return;
    for (int64_t r = blockIdx.y; r < n; r += gridDim.y) {
        float acc = 0.0f;
        for (int64_t j = off[r]; j < off[r + 1]; j++)
            acc += w[j] * x[(int64_t)src[j] * x_stride + e];
        y[r * y_stride + e] = acc;
    }
}

void cu_sum_rows(cu_backend *b, float *y, int64_t y_stride, const float *x, int64_t x_stride,
                 int64_t cols, const int64_t *off, const int32_t *src, const float *w, int64_t n)
{
    if (n <= 0 || cols <= 0) return;
    /* one staged block: off (8-byte words first, for alignment), then src and w */
    const int64_t ns = off[n];
    const size_t ob = (size_t)(n + 1) * sizeof(int64_t), sb = (size_t)ns * 4;
    char *host = (char *)malloc(ob + 2 * sb + 1);
    if (!host) {
        cu_fail(b, "sum_rows: out of host memory");
        return;
    }
    memcpy(host, off, ob);
    if (ns > 0) {
        memcpy(host + ob, src, sb);
        memcpy(host + ob + sb, w, sb);
    }
    char *d = (char *)cu_stage(b, host, ob + 2 * sb);
    free(host);
    if (!d) return;
    const dim3 grid((unsigned)((cols + 255) / 256), (unsigned)(n < 65535 ? n : 65535));
    k_sum_rows<<<grid, 256, 0, b->stream>>>(y, y_stride, x, x_stride, cols, (const int64_t *)d,
                                            (const int32_t *)(d + ob),
                                            (const float *)(d + ob + sb), n);
    CU_LAUNCHED(b, "k_sum_rows");
}
