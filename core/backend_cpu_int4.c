/* The CPU backend's int4 KV store ops (KIVI; prune/kv_int4.h has the format). Attention and
 * scores dequantise each stored row and then run the dense CPU attention's loops
 * (core/backend_cpu.c), so they equal dense attention over the dequantised cache bit for bit.
 * Single-threaded: the backend's thread pool is private to backend_cpu.c. */
#include <math.h>
#include <string.h>

#include "core/backend_cpu_attn.h"
#include "core/backend_kvstore.h"
#include "prune/kv_int4.h"

#define CPU_KVQ_MAX_HD 512

static void cpu_int4_quantize(plm_backend *be, const plm_kv_int4 *st, const float *k,
                              const float *v, int64_t kv_stride, int head, int64_t r0,
                              int64_t r1, int64_t slot0)
{
    kv_int4_quantize_host(st, k, v, kv_stride, head, r0, r1, slot0);
}

/* Key (or value) row j of kv head kh as the attention reads it: dequantised into buf when
 * stored, else the dense cache's row itself. */
static inline const float *key_row(const plm_attn_args *a, const plm_kv_int4 *st, int kh,
                                   int64_t j, float *buf)
{
    if (j < st->n_q[kh]) {
        kv_int4_row_host(st, j, kh, buf, NULL);
        return buf;
    }
    return a->k + j * a->kv_stride + (int64_t)kh * a->head_dim;
}

static inline const float *value_row(const plm_attn_args *a, const plm_kv_int4 *st, int kh,
                                     int64_t j, float *buf)
{
    if (j < st->n_q[kh]) {
        kv_int4_row_host(st, j, kh, NULL, buf);
        return buf;
    }
    return a->v + j * a->kv_stride + (int64_t)kh * a->head_dim;
}

static void cpu_int4_attend(plm_backend *be, const plm_attn_args *a, const plm_kv_int4 *st)
{
    const int hd = a->head_dim, group = a->n_heads / a->n_kv;
    if (hd > CPU_KVQ_MAX_HD) return; /* kv_int4_init refuses it first */
    float acc[CPU_KVQ_MAX_HD], kb[CPU_KVQ_MAX_HD], vb[CPU_KVQ_MAX_HD];
    for (int64_t i = 0; i < a->tq; i++)
        for (int h = 0; h < a->n_heads; h++) {
            const int kh = h / group;
            const float *q = a->q + i * a->q_stride + (int64_t)h * hd;
            const int64_t nk = cpu_attn_nk(a, i);
            float mx = -INFINITY, sum = 0;
            for (int d = 0; d < hd; d++) acc[d] = 0;
            for (int64_t j = 0; j < nk; j++) {
                const float *k = key_row(a, st, kh, j, kb);
                float s = 0;
                for (int d = 0; d < hd; d++) s += q[d] * k[d];
                s *= a->scale;
                const float *v = value_row(a, st, kh, j, vb);
                cpu_acc_add(acc, cpu_softmax_step(s, &mx, &sum, acc, hd), v, hd);
            }
            cpu_attn_write(a->out + (i * a->n_heads + h) * hd, acc, sum, nk > 0, hd);
        }
}

/* The scores' key rows: the store and a row to dequantise into. */
typedef struct int4_keys {
    const plm_kv_int4 *st;
    float buf[CPU_KVQ_MAX_HD];
} int4_keys;

static float int4_dot(void *ctx, const plm_attn_args *a, int kh, int64_t j, const float *q)
{
    int4_keys *c = ctx;
    const float *k = key_row(a, c->st, kh, j, c->buf);
    float s = 0;
    for (int d = 0; d < a->head_dim; d++) s += q[d] * k[d];
    return s;
}

static void cpu_int4_probs(plm_backend *be, const plm_attn_args *a, const plm_kv_int4 *st)
{
    if (a->head_dim > CPU_KVQ_MAX_HD) return;
    int4_keys c;
    c.st = st;
    cpu_probs_heads(a, 0, a->n_heads, int4_dot, NULL, &c);
}

static void cpu_int4_mix(plm_backend *be, const plm_kv_int4 *st, float *k, float *v,
                         int64_t kv_stride, const int32_t *head, const int32_t *dst,
                         const int32_t *src, const float *a, const float *b, int64_t n)
{
    const int hd = st->head_dim;
    float kd[CPU_KVQ_MAX_HD], vd[CPU_KVQ_MAX_HD], ks[CPU_KVQ_MAX_HD], vs[CPU_KVQ_MAX_HD];
    for (int64_t m = 0; m < n; m++) {
        const int h = head[m];
        const int64_t od = (int64_t)dst[m] * kv_stride + (int64_t)h * hd;
        const int64_t os = (int64_t)src[m] * kv_stride + (int64_t)h * hd;
        const int dst_q = dst[m] < st->n_q[h];
        if (src[m] < st->n_q[h]) {
            kv_int4_row_host(st, src[m], h, ks, vs);
        } else {
            memcpy(ks, k + os, (size_t)hd * sizeof *ks);
            memcpy(vs, v + os, (size_t)hd * sizeof *vs);
        }
        if (dst_q) {
            kv_int4_row_host(st, dst[m], h, kd, vd);
        } else {
            memcpy(kd, k + od, (size_t)hd * sizeof *kd);
            memcpy(vd, v + od, (size_t)hd * sizeof *vd);
        }
        for (int d = 0; d < hd; d++) {
            kd[d] = a[m] * kd[d] + b[m] * ks[d];
            vd[d] = a[m] * vd[d] + b[m] * vs[d];
        }
        if (dst_q) {
            kv_int4_encode_row_host(st, dst[m], h, kd, vd);
        } else {
            memcpy(k + od, kd, (size_t)hd * sizeof *kd);
            memcpy(v + od, vd, (size_t)hd * sizeof *vd);
        }
    }
}

static void cpu_int4_compact(plm_backend *be, const plm_kv_int4 *st, const int32_t *idx,
                             int64_t n)
{
    const int64_t cb = st->head_dim / 2;
    for (int h = 0; h < st->n_kv; h++)
        for (int64_t i = 0; i < n; i++) { /* ascending: row idx >= i is not yet overwritten */
            const int64_t r = idx[(int64_t)h * n + i];
            if (r == i) continue;
            const int64_t to = i * st->n_kv + h, from = r * st->n_kv + h;
            memcpy(st->k_codes + to * cb, st->k_codes + from * cb, (size_t)cb);
            memcpy(st->v_codes + to * cb, st->v_codes + from * cb, (size_t)cb);
            st->k_slot[to] = st->k_slot[from];
            memcpy(st->v_mn + to * st->n_vg, st->v_mn + from * st->n_vg,
                   (size_t)st->n_vg * sizeof(float));
            memcpy(st->v_sc + to * st->n_vg, st->v_sc + from * st->n_vg,
                   (size_t)st->n_vg * sizeof(float));
        }
}

const plm_kv_int4_ops plm_cpu_kv_int4_ops = {
    .quantize = cpu_int4_quantize,
    .attend = cpu_int4_attend,
    .probs = cpu_int4_probs,
    .mix = cpu_int4_mix,
    .compact = cpu_int4_compact,
};
