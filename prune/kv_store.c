/* The compressed KV stores' shared pieces (prune/kv_store.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "prune/kv_store.h"

#define KVS_ALIGN 256
#define KVS_WORK_SPLITS 128 /* key-range splits per query head the scratch allows */

size_t kv_store_align(size_t n) { return (n + KVS_ALIGN - 1) / KVS_ALIGN * KVS_ALIGN; }

int64_t kv_store_work_floats(int n_heads, int head_dim, int64_t tq)
{
    return (int64_t)KVS_WORK_SPLITS * tq * n_heads * (head_dim + 2);
}

plm_status kv_store_need_ops(plm_backend *be, int present, const char *what, plm_error *err)
{
    if (!present)
        return plm_fail(err, PLM_E_UNSUPPORTED, "the %s backend has no %s", be->ops->name, what);
    return PLM_OK;
}

plm_status kv_store_alloc_failed(plm_backend *be, void *p, size_t bytes, const char *store,
                                 plm_error *err)
{
    const char *why = !p && be->ops->alloc_error ? be->ops->alloc_error(be) : NULL;
    if (p) be->ops->release(be, p);
    return plm_fail(err, PLM_E_NOMEM, "%s: cannot allocate %zu bytes%s%s", store, bytes,
                    why ? ": " : "", why ? why : "");
}

plm_status kv_store_check_attn(const plm_attn_args *a, int n_kv, int head_dim, const char *store,
                               const char *what, plm_error *err)
{
    if (a->n_kv != n_kv || a->head_dim != head_dim)
        return plm_fail(err, PLM_E_ARG, "%s %s: the query side has %d kv heads of %d, the "
                        "store %d of %d", store, what, a->n_kv, a->head_dim, n_kv, head_dim);
    if (a->n_heads <= 0 || a->n_heads % a->n_kv)
        return plm_fail(err, PLM_E_ARG, "%s %s: %d heads cannot share %d kv heads", store, what,
                        a->n_heads, a->n_kv);
    if (a->tq < 0 || a->tk < 0 || a->q_stride < (int64_t)a->n_heads * a->head_dim ||
        a->kv_stride < (int64_t)a->n_kv * a->head_dim)
        return plm_fail(err, PLM_E_ARG, "%s %s: bad shape tq=%lld tk=%lld q_stride=%lld "
                        "kv_stride=%lld", store, what, (long long)a->tq, (long long)a->tk,
                        (long long)a->q_stride, (long long)a->kv_stride);
    return PLM_OK;
}

plm_status kv_store_check_merges(int n_kv, int64_t len, const int32_t *head, const int32_t *dst,
                                 const int32_t *src, int64_t n, const char *store,
                                 plm_error *err)
{
    for (int64_t m = 0; m < n; m++)
        if (head[m] < 0 || head[m] >= n_kv || dst[m] < 0 || dst[m] >= len || src[m] < 0 ||
            src[m] >= len)
            return plm_fail(err, PLM_E_ARG, "%s: merge %lld names row %d/%d of head %d, outside "
                            "%lld rows", store, (long long)m, dst[m], src[m], head[m],
                            (long long)len);
    return PLM_OK;
}

int64_t kv_store_most(const int32_t *n, int n_kv)
{
    int64_t most = 0;
    for (int h = 0; n && h < n_kv; h++)
        if (n[h] > most) most = n[h];
    return most;
}

int64_t kv_store_total(const int32_t *n, int n_kv)
{
    int64_t t = 0;
    for (int h = 0; n && h < n_kv; h++) t += n[h];
    return t;
}

const int32_t *kv_store_keep_prefix(const int32_t *keep, int64_t n_keep, int n_kv, int64_t most,
                                    int32_t *scratch)
{
    if (most >= n_keep) return keep;
    for (int h = 0; h < n_kv; h++)
        memcpy(scratch + (int64_t)h * most, keep + (int64_t)h * n_keep,
               (size_t)most * sizeof *keep);
    return scratch;
}

plm_status kv_store_attention_ref(const plm_attn_args *a, const void *st, kv_store_row_fn row,
                                  const char *store, plm_error *err)
{
    const int hd = a->head_dim, group = a->n_heads / a->n_kv;
    const int64_t tk = a->tk;
    double *s = malloc((size_t)(tk > 0 ? tk : 1) * sizeof *s);
    float *buf = malloc((size_t)hd * sizeof *buf);
    double *acc = malloc((size_t)hd * sizeof *acc);
    if (!s || !buf || !acc) {
        free(s);
        free(buf);
        free(acc);
        return plm_fail(err, PLM_E_NOMEM, "%s reference attention: out of memory for %lld keys",
                        store, (long long)tk);
    }
    for (int64_t i = 0; i < a->tq; i++)
        for (int h = 0; h < a->n_heads; h++) {
            const int kh = h / group;
            const float *q = a->q + i * a->q_stride + (int64_t)h * hd;
            int64_t nk = a->causal ? a->q_pos0 + i + 1 : tk;
            if (nk > tk) nk = tk;
            double mx = -INFINITY, sum = 0;
            for (int64_t j = 0; j < nk; j++) {
                const float *k = row(st, a, 0, j, kh, buf);
                double d = 0;
                for (int e = 0; e < hd; e++) d += (double)q[e] * k[e];
                s[j] = d * a->scale;
                if (s[j] > mx) mx = s[j];
            }
            for (int e = 0; e < hd; e++) acc[e] = 0;
            for (int64_t j = 0; j < nk; j++) {
                const double p = exp(s[j] - mx);
                const float *v = row(st, a, 1, j, kh, buf);
                sum += p;
                for (int e = 0; e < hd; e++) acc[e] += p * v[e];
            }
            float *o = a->out + (i * a->n_heads + h) * hd;
            for (int e = 0; e < hd; e++) o[e] = nk > 0 ? (float)(acc[e] / sum) : 0.0f;
        }
    free(s);
    free(buf);
    free(acc);
    return PLM_OK;
}
