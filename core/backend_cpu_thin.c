/* The CPU backend's thin-key store ops (ThinK; prune/kv_thin.h has the format). Attention and
 * scores run the same loops as the dense CPU attention (core/backend_cpu.c, attn_rows and
 * probs_heads) with a thin row's dot product taken over its kept channels, in channel order:
 * with every channel kept the results are bit-identical to the dense ones, which the model
 * tests rely on. Single-threaded: the backend's thread pool is private to backend_cpu.c. */
#include <math.h>

#include "core/backend_cpu_attn.h"
#include "core/backend_kvstore.h"
#include "prune/kv_thin.h"

#define CPU_KVT_MAX_HD 512

static void cpu_thin_compress(plm_backend *be, const plm_kv_thin *st, const float *k,
                              int64_t kv_stride, int64_t r0, int64_t r1)
{
    kv_thin_compress_host(st, k, kv_stride, r0, r1);
}

/* q . key row j of kv head kh: thin rows over the kept channels (qt: q gathered to them) */
static inline float thin_dot(const plm_attn_args *a, const plm_kv_thin *st, int kh, int64_t j,
                             const float *q, const float *qt)
{
    float s = 0;
    if (j < st->n_thin[kh]) {
        const float *t = st->k + j * st->n_kv * st->n_chan + (int64_t)kh * st->n_chan;
        for (int c = 0; c < st->n_chan; c++) s += qt[c] * t[c];
    } else {
        const float *k = a->k + j * a->kv_stride + (int64_t)kh * a->head_dim;
        for (int d = 0; d < a->head_dim; d++) s += q[d] * k[d];
    }
    return s;
}

static void gather_q(const plm_kv_thin *st, int kh, const float *q, float *qt)
{
    const int32_t *ch = st->chan + (int64_t)kh * st->n_chan;
    for (int c = 0; c < st->n_chan; c++) qt[c] = q[ch[c]];
}

static void cpu_thin_attend(plm_backend *be, const plm_attn_args *a, const plm_kv_thin *st)
{
    const int hd = a->head_dim, group = a->n_heads / a->n_kv;
    if (hd > CPU_KVT_MAX_HD) return; /* kv_thin_init refuses it first */
    float acc[CPU_KVT_MAX_HD], qt[CPU_KVT_MAX_HD];
    for (int64_t i = 0; i < a->tq; i++)
        for (int h = 0; h < a->n_heads; h++) {
            const int kh = h / group;
            const float *q = a->q + i * a->q_stride + (int64_t)h * hd;
            const int64_t nk = cpu_attn_nk(a, i);
            gather_q(st, kh, q, qt);
            float mx = -INFINITY, sum = 0;
            for (int d = 0; d < hd; d++) acc[d] = 0;
            for (int64_t j = 0; j < nk; j++) {
                float s = thin_dot(a, st, kh, j, q, qt);
                s *= a->scale;
                const float *v = a->v + j * a->kv_stride + (int64_t)kh * hd;
                cpu_acc_add(acc, cpu_softmax_step(s, &mx, &sum, acc, hd), v, hd);
            }
            cpu_attn_write(a->out + (i * a->n_heads + h) * hd, acc, sum, nk > 0, hd);
        }
}

/* The scores' key rows: the store and the query gathered to the kept channels. */
typedef struct thin_keys {
    const plm_kv_thin *st;
    float qt[CPU_KVT_MAX_HD];
} thin_keys;

static void thin_begin(void *ctx, int kh, const float *q)
{
    thin_keys *c = ctx;
    gather_q(c->st, kh, q, c->qt);
}

static float thin_key_dot(void *ctx, const plm_attn_args *a, int kh, int64_t j, const float *q)
{
    thin_keys *c = ctx;
    return thin_dot(a, c->st, kh, j, q, c->qt);
}

static void cpu_thin_probs(plm_backend *be, const plm_attn_args *a, const plm_kv_thin *st)
{
    if (a->head_dim > CPU_KVT_MAX_HD) return;
    thin_keys c;
    c.st = st;
    cpu_probs_heads(a, 0, a->n_heads, thin_key_dot, thin_begin, &c);
}

static void cpu_thin_mix(plm_backend *be, const plm_kv_thin *st, float *k, int64_t kv_stride,
                         const int32_t *head, const int32_t *dst, const int32_t *src,
                         const float *a, const float *b, int64_t n)
{
    const int hd = st->head_dim, nc = st->n_chan;
    const int64_t w = (int64_t)st->n_kv * nc;
    float xs[CPU_KVT_MAX_HD];
    for (int64_t m = 0; m < n; m++) {
        const int h = head[m];
        const int32_t *ch = st->chan + (int64_t)h * nc;
        const int src_thin = src[m] < st->n_thin[h];
        float *td = st->k + (int64_t)dst[m] * w + (int64_t)h * nc;
        const float *ts = st->k + (int64_t)src[m] * w + (int64_t)h * nc;
        float *kd = k + (int64_t)dst[m] * kv_stride + (int64_t)h * hd;
        const float *ks = k + (int64_t)src[m] * kv_stride + (int64_t)h * hd;
        if (dst[m] < st->n_thin[h]) {
            for (int c = 0; c < nc; c++)
                td[c] = a[m] * td[c] + b[m] * (src_thin ? ts[c] : ks[ch[c]]);
        } else if (src_thin) { /* the source's pruned channels are 0 */
            kv_thin_expand_row(ts, ch, nc, hd, xs);
            for (int d = 0; d < hd; d++) kd[d] = a[m] * kd[d] + b[m] * xs[d];
        } else {
            for (int d = 0; d < hd; d++) kd[d] = a[m] * kd[d] + b[m] * ks[d];
        }
    }
}

const plm_kv_thin_ops plm_cpu_kv_thin_ops = {
    .compress = cpu_thin_compress,
    .attend = cpu_thin_attend,
    .probs = cpu_thin_probs,
    .mix = cpu_thin_mix,
};
