/* The CPU backend: OpenBLAS for matrix products, the thread pool for everything else. It is the
 * reference every other backend is tested against, so it favours clarity and float32 accuracy. */
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "core/backend_cpu_attn.h"
#include "core/backend_kvstore.h"
#include "core/pool.h"
#include "core/backend_cpu_sparse.h"

typedef struct cpu_backend {
    plm_backend base;
    plm_pool *pool;
    float *wbuf;      /* widened weight rows for F16/BF16 matmuls */
    size_t wbuf_cap;  /* in floats */
    plm_mem_count mem; /* bytes of alloc() blocks live now, and at most since a reset */
} cpu_backend;

/* Rows of a F16/BF16 weight widened per block, so a 7B checkpoint is never widened whole. */
#define CPU_WBLOCK_FLOATS (1u << 22)

static void widen(float *dst, const void *src, plm_dtype dt, size_t n)
{
    if (dt == PLM_F32) {
        memcpy(dst, src, n * sizeof(float));
    } else if (dt == PLM_BF16) {
        const uint16_t *s = src;
        for (size_t i = 0; i < n; i++) dst[i] = plm_bf16_to_f32(s[i]);
    } else {
        const uint16_t *s = src;
        for (size_t i = 0; i < n; i++) dst[i] = plm_f16_to_f32(s[i]);
    }
}

typedef struct widen_ctx {
    float *dst;
    const void *src;
    plm_dtype dt;
} widen_ctx;

static void widen_range(void *c, int64_t b, int64_t e)
{
    widen_ctx *w = c;
    size_t es = plm_dtype_size(w->dt);
    widen(w->dst + b, (const char *)w->src + (size_t)b * es, w->dt, (size_t)(e - b));
}

static void cpu_matmul(plm_backend *be, float *y, const float *x, const plm_weight *w,
                       const float *bias, int64_t m)
{
    cpu_backend *cb = (cpu_backend *)be;
    const int64_t n = w->rows, k = w->cols;
    if (bias)
        for (int64_t i = 0; i < m; i++) memcpy(y + i * n, bias, (size_t)n * sizeof(float));
    const float beta = bias ? 1.0f : 0.0f;
    if (w->dtype == PLM_F32) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)n, (int)k, 1.0f, x,
                    (int)k, (const float *)w->data, (int)k, beta, y, (int)n);
        return;
    }
    int64_t rows_per_block = (int64_t)(cb->wbuf_cap / (size_t)k);
    if (rows_per_block < 1) rows_per_block = 1;
    size_t es = plm_dtype_size(w->dtype);
    for (int64_t r0 = 0; r0 < n; r0 += rows_per_block) {
        int64_t nr = n - r0 < rows_per_block ? n - r0 : rows_per_block;
        widen_ctx wc = {cb->wbuf, (const char *)w->data + (size_t)r0 * (size_t)k * es, w->dtype};
        plm_pool_for(cb->pool, nr * k, widen_range, &wc);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)nr, (int)k, 1.0f, x,
                    (int)k, cb->wbuf, (int)k, beta, y + r0, (int)n);
    }
}

typedef struct norm_ctx {
    float *y;
    const float *x, *g, *b;
    int64_t n;
    float eps;
} norm_ctx;

static void layernorm_rows(void *c, int64_t r0, int64_t r1)
{
    norm_ctx *a = c;
    for (int64_t r = r0; r < r1; r++) {
        const float *x = a->x + r * a->n;
        float *y = a->y + r * a->n;
        double mean = 0, var = 0;
        for (int64_t i = 0; i < a->n; i++) mean += x[i];
        mean /= (double)a->n;
        for (int64_t i = 0; i < a->n; i++) var += (x[i] - mean) * (x[i] - mean);
        var /= (double)a->n;
        float inv = (float)(1.0 / sqrt(var + a->eps));
        for (int64_t i = 0; i < a->n; i++)
            y[i] = ((float)(x[i] - mean) * inv) * a->g[i] + (a->b ? a->b[i] : 0.0f);
    }
}

static void rmsnorm_rows(void *c, int64_t r0, int64_t r1)
{
    norm_ctx *a = c;
    for (int64_t r = r0; r < r1; r++) {
        const float *x = a->x + r * a->n;
        float *y = a->y + r * a->n;
        double ss = 0;
        for (int64_t i = 0; i < a->n; i++) ss += (double)x[i] * x[i];
        float inv = (float)(1.0 / sqrt(ss / (double)a->n + a->eps));
        for (int64_t i = 0; i < a->n; i++) y[i] = a->g[i] * (x[i] * inv);
    }
}

static void cpu_layernorm(plm_backend *be, float *y, const float *x, const float *g,
                          const float *b, int64_t m, int64_t n, float eps)
{
    norm_ctx c = {y, x, g, b, n, eps};
    plm_pool_for(((cpu_backend *)be)->pool, m, layernorm_rows, &c);
}

static void cpu_rmsnorm(plm_backend *be, float *y, const float *x, const float *g, int64_t m,
                        int64_t n, float eps)
{
    norm_ctx c = {y, x, g, NULL, n, eps};
    plm_pool_for(((cpu_backend *)be)->pool, m, rmsnorm_rows, &c);
}

static void cpu_add(plm_backend *be, float *y, const float *a, const float *b, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

static void cpu_add_row(plm_backend *be, float *y, const float *x, const float *row, int64_t m,
                        int64_t n)
{
    for (int64_t r = 0; r < m; r++)
        for (int64_t i = 0; i < n; i++) y[r * n + i] = x[r * n + i] + row[i];
}

static float act1(float x, plm_act act)
{
    switch (act) {
    case PLM_ACT_GELU: return 0.5f * x * (1.0f + erff(x * (float)M_SQRT1_2));
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

typedef struct act_ctx {
    float *y;
    const float *x, *up;
    plm_act act;
} act_ctx;

static void act_range(void *c, int64_t b, int64_t e)
{
    act_ctx *a = c;
    for (int64_t i = b; i < e; i++) a->y[i] = act1(a->x[i], a->act);
}

static void silu_mul_range(void *c, int64_t b, int64_t e)
{
    act_ctx *a = c;
    for (int64_t i = b; i < e; i++) a->y[i] = act1(a->x[i], PLM_ACT_SILU) * a->up[i];
}

static void cpu_act(plm_backend *be, float *y, const float *x, int64_t n, plm_act act)
{
    act_ctx c = {y, x, NULL, act};
    plm_pool_for(((cpu_backend *)be)->pool, n, act_range, &c);
}

static void cpu_silu_mul(plm_backend *be, float *y, const float *gate, const float *up, int64_t n)
{
    act_ctx c = {y, gate, up, PLM_ACT_SILU};
    plm_pool_for(((cpu_backend *)be)->pool, n, silu_mul_range, &c);
}

static void cpu_rope(plm_backend *be, float *x, int64_t t, int64_t stride, int n_heads, int hd,
                     const int32_t *pos, const float *inv_freq)
{
    int half = hd / 2;
    for (int64_t i = 0; i < t; i++) {
        for (int j = 0; j < half; j++) {
            /* float32 like the reference: freqs = pos * inv_freq, then cos/sin */
            float f = (float)pos[i] * inv_freq[j];
            float c = cosf(f), s = sinf(f);
            for (int h = 0; h < n_heads; h++) {
                float *v = x + i * stride + (int64_t)h * hd;
                float a = v[j], b = v[j + half];
                v[j] = a * c - b * s;
                v[j + half] = b * c + a * s;
            }
        }
    }
}

static void attn_rows(void *c, int64_t w0, int64_t w1)
{
    const plm_attn_args *a = c;
    const int hd = a->head_dim, group = a->n_heads / a->n_kv;
    float acc[1024];
    for (int64_t w = w0; w < w1; w++) {
        int64_t i = w / a->n_heads;
        int h = (int)(w % a->n_heads), kh = h / group;
        const float *q = a->q + i * a->q_stride + (int64_t)h * hd;
        int64_t nk = cpu_attn_nk(a, i);
        const int32_t *rows = a->rows ? a->rows + (int64_t)kh * a->n_rows : NULL;
        if (rows) nk = a->n_rows;
        /* Online softmax (running max and sum) so no score row is stored. */
        float mx = -INFINITY, sum = 0;
        for (int d = 0; d < hd; d++) acc[d] = 0;
        for (int64_t jj = 0; jj < nk; jj++) {
            const int64_t j = rows ? rows[jj] : jj;
            const float *k = a->k + j * a->kv_stride + (int64_t)kh * hd;
            float s = 0;
            for (int d = 0; d < hd; d++) s += q[d] * k[d];
            s *= a->scale;
            if (a->bias) s += a->bias[(int64_t)h * a->tk + j];
            const float *v = a->v + j * a->kv_stride + (int64_t)kh * hd;
            cpu_acc_add(acc, cpu_softmax_step(s, &mx, &sum, acc, hd), v, hd);
        }
        cpu_attn_write(a->out + (i * a->n_heads + h) * hd, acc, sum, nk > 0, hd);
    }
}

static float dense_dot(void *ctx, const plm_attn_args *a, int kh, int64_t j, const float *q)
{
    const float *k = a->k + j * a->kv_stride + (int64_t)kh * a->head_dim;
    float s = 0;
    for (int d = 0; d < a->head_dim; d++) s += q[d] * k[d];
    return s;
}

/* Three passes per (query, head): the row maximum, the normaliser, then the probabilities.
 * One thread per head so the sums into out need no locks. */
static void probs_heads(void *c, int64_t h0, int64_t h1)
{
    cpu_probs_heads(c, h0, h1, dense_dot, NULL, NULL);
}

static void cpu_attn_probs(plm_backend *be, const plm_attn_args *a, int per_head)
{
    plm_pool_for(((cpu_backend *)be)->pool, a->n_heads, probs_heads, (void *)a);
    if (!per_head) /* row j of head 0 is read before it is overwritten */
        for (int64_t j = 0; j < a->tk; j++) {
            float s = 0;
            for (int h = 0; h < a->n_heads; h++) s += a->out[h * a->tk + j];
            a->out[j] = s / (float)a->n_heads;
        }
}

static void cpu_attention(plm_backend *be, const plm_attn_args *a)
{
    plm_pool_for(((cpu_backend *)be)->pool, a->tq * a->n_heads, attn_rows, (void *)a);
}

static void cpu_gather_heads(plm_backend *be, float *x, int64_t stride, int n_heads, int hd,
                             const int32_t *idx, int64_t n)
{
    for (int h = 0; h < n_heads; h++)
        for (int64_t i = 0; i < n; i++) { /* ascending: row idx >= i is not yet overwritten */
            int64_t r = idx[(int64_t)h * n + i];
            if (r != i)
                memcpy(x + i * stride + (int64_t)h * hd, x + r * stride + (int64_t)h * hd,
                       (size_t)hd * sizeof *x);
        }
}

static void cpu_mix_rows(plm_backend *be, float *x, int64_t stride, int hd, const int32_t *head,
                         const int32_t *dst, const int32_t *src, const float *a, const float *b,
                         int64_t n)
{
    for (int64_t m = 0; m < n; m++) {
        float *d = x + dst[m] * stride + (int64_t)head[m] * hd;
        const float *s = x + src[m] * stride + (int64_t)head[m] * hd;
        for (int e = 0; e < hd; e++) d[e] = a[m] * d[e] + b[m] * s[e];
    }
}

static void cpu_sum_rows(plm_backend *be, float *y, int64_t y_stride, const float *x,
                         int64_t x_stride, int64_t cols, const int64_t *off, const int32_t *src,
                         const float *w, int64_t n)
{
    for (int64_t r = 0; r < n; r++) {
        float *d = y + r * y_stride;
        for (int64_t e = 0; e < cols; e++) d[e] = 0.0f;
        for (int64_t j = off[r]; j < off[r + 1]; j++) {
            const float *s = x + (int64_t)src[j] * x_stride;
            for (int64_t e = 0; e < cols; e++) d[e] += w[j] * s[e];
        }
    }
}

static void cpu_embed(plm_backend *be, float *y, const plm_weight *w, const int32_t *ids,
                      int64_t n)
{
    size_t es = plm_dtype_size(w->dtype);
    for (int64_t i = 0; i < n; i++)
        widen(y + i * w->cols, (const char *)w->data + (size_t)ids[i] * (size_t)w->cols * es,
              w->dtype, (size_t)w->cols);
}

static void cpu_copy2d(plm_backend *be, float *dst, int64_t dst_stride, const float *src,
                       int64_t src_stride, int64_t rows, int64_t cols)
{
    for (int64_t r = 0; r < rows; r++)
        memmove(dst + r * dst_stride, src + r * src_stride, (size_t)cols * sizeof(float));
}

static void cpu_patchify(plm_backend *be, float *out, const float *pixels, int channels, int size,
                         int patch)
{
    int g = size / patch;
    for (int py = 0; py < g; py++)
        for (int px = 0; px < g; px++) {
            float *o = out + ((int64_t)py * g + px) * channels * patch * patch;
            for (int c = 0; c < channels; c++)
                for (int y = 0; y < patch; y++) {
                    const float *row = pixels + ((int64_t)c * size + py * patch + y) * size;
                    memcpy(o, row + px * patch, (size_t)patch * sizeof(float));
                    o += patch;
                }
        }
}

/* Each block carries its size in front (a header of malloc's alignment, so the block keeps
 * it), so release() knows what it gives back and mem_held can count. */
#define CPU_HDR 16

static void *cpu_alloc(plm_backend *be, size_t bytes)
{
    cpu_backend *cb = (cpu_backend *)be;
    if (bytes > SIZE_MAX - CPU_HDR - 1) return NULL;
    char *h = malloc(CPU_HDR + (bytes ? bytes : 1));
    if (!h) return NULL;
    memcpy(h, &bytes, sizeof bytes);
    plm_mem_count_add(&cb->mem, (long long)bytes);
    return h + CPU_HDR;
}

static void cpu_release(plm_backend *be, void *p)
{
    if (!p) return;
    cpu_backend *cb = (cpu_backend *)be;
    char *h = (char *)p - CPU_HDR;
    size_t bytes;
    memcpy(&bytes, h, sizeof bytes);
    plm_mem_count_add(&cb->mem, -(long long)bytes);
    free(h);
}

static void cpu_mem_held(plm_backend *be, int reset, size_t *now, size_t *peak)
{
    plm_mem_count_report(&((cpu_backend *)be)->mem, reset, now, peak);
}

static void cpu_memcpy(plm_backend *be, void *dst, const void *src, size_t bytes)
{
    memcpy(dst, src, bytes);
}

static void cpu_destroy(plm_backend *be)
{
    cpu_backend *cb = (cpu_backend *)be;
    plm_pool_free(cb->pool);
    free(cb->wbuf);
    free(cb);
}

static const plm_backend_ops cpu_ops = {
    .name = "cpu",
    .host_memory = 1,
    .destroy = cpu_destroy,
    .alloc = cpu_alloc,
    .release = cpu_release,
    .mem_held = cpu_mem_held,
    .upload = cpu_memcpy,
    .download = cpu_memcpy,
    .matmul = cpu_matmul,
    .layernorm = cpu_layernorm,
    .rmsnorm = cpu_rmsnorm,
    .add = cpu_add,
    .add_row = cpu_add_row,
    .act = cpu_act,
    .silu_mul = cpu_silu_mul,
    .rope = cpu_rope,
    .attention = cpu_attention,
    .attn_probs = cpu_attn_probs,
    .attention_blocks = cpu_attention_blocks,
    .attention_delta = cpu_attention_delta,
    .gather_heads = cpu_gather_heads,
    .mix_rows = cpu_mix_rows,
    .sum_rows = cpu_sum_rows,
    .embed = cpu_embed,
    .copy2d = cpu_copy2d,
    .patchify = cpu_patchify,
    .kv_bitmap = &plm_cpu_kv_bitmap_ops,
    .kv_thin = &plm_cpu_kv_thin_ops,
    .kv_int4 = &plm_cpu_kv_int4_ops,
};

plm_status plm_backend_cpu_new(int n_threads, plm_backend **out, plm_error *err)
{
    *out = NULL;
    cpu_backend *cb = calloc(1, sizeof *cb);
    if (!cb) return plm_fail(err, PLM_E_NOMEM, "cpu backend: out of memory");
    cb->base.ops = &cpu_ops;
    cb->pool = plm_pool_new(n_threads);
    cb->wbuf_cap = CPU_WBLOCK_FLOATS;
    cb->wbuf = malloc(cb->wbuf_cap * sizeof(float));
    if (!cb->pool || !cb->wbuf) {
        cpu_destroy(&cb->base);
        return plm_fail(err, PLM_E_NOMEM, "cpu backend: out of memory for thread pool/buffers");
    }
    *out = &cb->base;
    return PLM_OK;
}
