/* ThinK's thin-key store: sizes, allocation, the host bookkeeping of which rows are thin, and
 * the reference attention (prune/kv_thin.h says why the layout is what it is). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "prune/kv_thin.h"

#define KVT_ALIGN 256
#define KVT_MAX_HD 512
#define KVT_WORK_SPLITS 128

static size_t align_up(size_t n) { return (n + KVT_ALIGN - 1) / KVT_ALIGN * KVT_ALIGN; }

plm_status kv_thin_init(plm_kv_thin *st, int n_kv, int head_dim, int n_chan, int64_t cap,
                        plm_error *err)
{
    memset(st, 0, sizeof *st);
    if (n_kv <= 0 || head_dim <= 0 || head_dim > KVT_MAX_HD || n_chan < 1 || n_chan > head_dim)
        return plm_fail(err, PLM_E_ARG, "thin key store: %d kv heads of head_dim %d keeping %d "
                        "channels (head_dim 1..%d, channels 1..head_dim)", n_kv, head_dim, n_chan,
                        KVT_MAX_HD);
    if (cap < 0) return plm_fail(err, PLM_E_ARG, "thin key store: capacity %lld rows",
                                 (long long)cap);
    size_t total;
    if (!plm_mul_ok((size_t)n_kv * (size_t)n_chan * sizeof(float), (size_t)cap, &total) ||
        total > SIZE_MAX / 2)
        return plm_fail(err, PLM_E_LIMIT, "thin key store: %lld rows of %d x %d floats overflow",
                        (long long)cap, n_kv, n_chan);
    st->n_kv = n_kv;
    st->head_dim = head_dim;
    st->n_chan = n_chan;
    st->cap = cap;
    return PLM_OK;
}

static size_t k_bytes(const plm_kv_thin *st)
{
    return (size_t)st->cap * (size_t)st->n_kv * (size_t)st->n_chan * sizeof(float);
}

plm_status kv_thin_alloc(plm_backend *be, plm_kv_thin *st, const int32_t *chan, plm_error *err)
{
    const size_t nc = (size_t)st->n_kv * (size_t)st->n_chan;
    for (int h = 0; h < st->n_kv; h++)
        for (int c = 0; c < st->n_chan; c++) {
            const int32_t d = chan[(size_t)h * st->n_chan + c];
            if (d < 0 || d >= st->head_dim || (c && d <= chan[(size_t)h * st->n_chan + c - 1]))
                return plm_fail(err, PLM_E_ARG, "thin key store: channel list of kv head %d is "
                                "not ascending within 0..%d", h, st->head_dim - 1);
        }
    const size_t kb = align_up(k_bytes(st)), cb = align_up(nc * sizeof(int32_t));
    const size_t bytes = kb + cb + align_up((size_t)st->n_kv * sizeof(int32_t));
    char *p = be->ops->alloc(be, bytes);
    st->h_chan = malloc(nc * sizeof *st->h_chan);
    st->h_n_thin = calloc((size_t)st->n_kv, sizeof *st->h_n_thin);
    st->h_idx = malloc((size_t)st->n_kv * (size_t)(st->cap > 0 ? st->cap : 1) *
                       sizeof *st->h_idx);
    if (!p || !st->h_chan || !st->h_n_thin || !st->h_idx) {
        const char *why = !p && be->ops->alloc_error ? be->ops->alloc_error(be) : NULL;
        if (p) be->ops->release(be, p);
        free(st->h_chan);
        free(st->h_n_thin);
        free(st->h_idx);
        st->h_chan = st->h_n_thin = st->h_idx = NULL;
        return plm_fail(err, PLM_E_NOMEM, "thin key store: cannot allocate %zu bytes%s%s", bytes,
                        why ? ": " : "", why ? why : "");
    }
    st->k = (float *)p; /* first: kv_thin_release frees through it */
    st->chan = (int32_t *)(p + kb);
    st->n_thin = (int32_t *)(p + kb + cb);
    memcpy(st->h_chan, chan, nc * sizeof *chan);
    be->ops->upload(be, st->chan, chan, nc * sizeof *chan);
    be->ops->upload(be, st->n_thin, st->h_n_thin, (size_t)st->n_kv * sizeof(int32_t));
    return PLM_OK;
}

void kv_thin_release(plm_backend *be, plm_kv_thin *st)
{
    if (st->k) be->ops->release(be, st->k);
    free(st->h_chan);
    free(st->h_n_thin);
    free(st->h_idx);
    st->k = NULL;
    st->chan = st->n_thin = NULL;
    st->h_chan = st->h_n_thin = st->h_idx = NULL;
}

int64_t kv_thin_work_floats(int n_heads, int head_dim, int64_t tq)
{
    /* per split and query head: the running max, the normaliser and head_dim sums */
    return (int64_t)KVT_WORK_SPLITS * tq * n_heads * (head_dim + 2);
}

static plm_status need_ops(plm_backend *be, plm_error *err)
{
    if (!be->ops->kv_thin)
        return plm_fail(err, PLM_E_UNSUPPORTED, "the %s backend has no thin key store",
                        be->ops->name);
    return PLM_OK;
}

plm_status kv_thin_compress(plm_backend *be, plm_kv_thin *st, const float *k, int64_t kv_stride,
                            int64_t upto, plm_error *err)
{
    PLM_TRY(need_ops(be, err));
    if (!st->k) return plm_fail(err, PLM_E_ARG, "thin key store: compress before kv_thin_alloc");
    if (upto > st->cap || kv_stride < (int64_t)st->n_kv * st->head_dim)
        return plm_fail(err, PLM_E_ARG, "thin key store: rows up to %lld of %lld (stride %lld)",
                        (long long)upto, (long long)st->cap, (long long)kv_stride);
    const int32_t r0 = st->h_n_thin[0];
    for (int h = 1; h < st->n_kv; h++)
        if (st->h_n_thin[h] != r0)
            return plm_fail(err, PLM_E_ARG, "thin key store: kv heads hold different thin rows "
                            "(%d, %d): rows are made thin once, before any eviction", r0,
                            st->h_n_thin[h]);
    if (upto <= r0) return PLM_OK;
    be->ops->kv_thin->compress(be, st, k, kv_stride, r0, upto);
    for (int h = 0; h < st->n_kv; h++) st->h_n_thin[h] = (int32_t)upto;
    be->ops->upload(be, st->n_thin, st->h_n_thin, (size_t)st->n_kv * sizeof(int32_t));
    return PLM_OK;
}

plm_status kv_thin_compact(plm_backend *be, plm_kv_thin *st, const int32_t *keep, int64_t n_keep,
                           plm_error *err)
{
    if (n_keep < 0 || n_keep > st->cap)
        return plm_fail(err, PLM_E_ARG, "thin key store: keeping %lld rows of %lld",
                        (long long)n_keep, (long long)st->cap);
    int64_t most = 0;
    for (int h = 0; h < st->n_kv; h++) {
        int32_t n = 0; /* ascending: the kept thin rows are the first entries */
        while (n < n_keep && keep[(int64_t)h * n_keep + n] < st->h_n_thin[h]) n++;
        st->h_n_thin[h] = n;
        if (n > most) most = n;
    }
    /* Only the longest thin prefix moves: a head's entries past its own prefix name dense rows,
     * whose thin slots are dead, but the first `most` entries of every list are still a valid
     * ascending list, so one gather serves all heads. */
    const int32_t *idx = keep;
    if (most > 0 && most < n_keep) {
        for (int h = 0; h < st->n_kv; h++)
            memcpy(st->h_idx + (int64_t)h * most, keep + (int64_t)h * n_keep,
                   (size_t)most * sizeof *idx);
        idx = st->h_idx;
    }
    if (most > 0)
        be->ops->gather_heads(be, st->k, (int64_t)st->n_kv * st->n_chan, st->n_kv, st->n_chan,
                              idx, most);
    be->ops->upload(be, st->n_thin, st->h_n_thin, (size_t)st->n_kv * sizeof(int32_t));
    return PLM_OK;
}

plm_status kv_thin_mix(plm_backend *be, const plm_kv_thin *st, float *k, int64_t kv_stride,
                       int64_t len, const int32_t *head, const int32_t *dst, const int32_t *src,
                       const float *a, const float *b, int64_t n, plm_error *err)
{
    PLM_TRY(need_ops(be, err));
    for (int64_t m = 0; m < n; m++)
        if (head[m] < 0 || head[m] >= st->n_kv || dst[m] < 0 || dst[m] >= len || src[m] < 0 ||
            src[m] >= len)
            return plm_fail(err, PLM_E_ARG, "thin key store: merge %lld names row %d/%d of head "
                            "%d, outside %lld rows", (long long)m, dst[m], src[m], head[m],
                            (long long)len);
    if (n > 0) be->ops->kv_thin->mix(be, st, k, kv_stride, head, dst, src, a, b, n);
    return PLM_OK;
}

static plm_status check_args(const plm_attn_args *a, const plm_kv_thin *st, const char *what,
                             plm_error *err)
{
    if (a->n_kv != st->n_kv || a->head_dim != st->head_dim)
        return plm_fail(err, PLM_E_ARG, "thin key %s: the query side has %d kv heads of %d, the "
                        "store %d of %d", what, a->n_kv, a->head_dim, st->n_kv, st->head_dim);
    if (a->n_heads <= 0 || a->n_heads % a->n_kv)
        return plm_fail(err, PLM_E_ARG, "thin key %s: %d heads cannot share %d kv heads", what,
                        a->n_heads, a->n_kv);
    if (a->tq < 0 || a->tk < 0 || a->q_stride < (int64_t)a->n_heads * a->head_dim ||
        a->kv_stride < (int64_t)a->n_kv * a->head_dim)
        return plm_fail(err, PLM_E_ARG, "thin key %s: bad shape tq=%lld tk=%lld q_stride=%lld "
                        "kv_stride=%lld", what, (long long)a->tq, (long long)a->tk,
                        (long long)a->q_stride, (long long)a->kv_stride);
    if (a->rows || a->bias || a->q_pos0_dev)
        return plm_fail(err, PLM_E_UNSUPPORTED, "thin key %s: sparse rows, steering bias and "
                        "recorded steps do not combine with the thin store", what);
    return PLM_OK;
}

plm_status kv_thin_attend(plm_backend *be, const plm_attn_args *a, const plm_kv_thin *st,
                          plm_error *err)
{
    PLM_TRY(need_ops(be, err));
    PLM_TRY(check_args(a, st, "attention", err));
    be->ops->kv_thin->attend(be, a, st);
    return PLM_OK;
}

plm_status kv_thin_probs(plm_backend *be, const plm_attn_args *a, const plm_kv_thin *st,
                         plm_error *err)
{
    PLM_TRY(need_ops(be, err));
    PLM_TRY(check_args(a, st, "scores", err));
    be->ops->kv_thin->probs(be, a, st);
    return PLM_OK;
}

plm_status kv_thin_download(plm_backend *be, const plm_kv_thin *st, float *k_host,
                            int64_t kv_stride, plm_error *err)
{
    int64_t most = 0;
    for (int h = 0; h < st->n_kv; h++)
        if (st->h_n_thin[h] > most) most = st->h_n_thin[h];
    if (most == 0) return PLM_OK;
    const int64_t w = (int64_t)st->n_kv * st->n_chan;
    float *t = malloc((size_t)(most * w) * sizeof *t);
    if (!t) return plm_fail(err, PLM_E_NOMEM, "thin key store: out of memory for %lld rows",
                            (long long)most);
    be->ops->download(be, t, st->k, (size_t)(most * w) * sizeof(float));
    for (int h = 0; h < st->n_kv; h++)
        for (int64_t r = 0; r < st->h_n_thin[h]; r++)
            kv_thin_expand_row(t + r * w + (int64_t)h * st->n_chan,
                               st->h_chan + (int64_t)h * st->n_chan, st->n_chan, st->head_dim,
                               k_host + r * kv_stride + (int64_t)h * st->head_dim);
    free(t);
    return PLM_OK;
}

size_t kv_thin_bytes(const plm_kv_thin *st)
{
    if (!st->h_n_thin) return 0;
    return (size_t)kv_thin_rows(st) * (size_t)st->n_chan * sizeof(float) +
           (size_t)st->n_kv * (size_t)st->n_chan * sizeof(int32_t);
}

int64_t kv_thin_rows(const plm_kv_thin *st)
{
    int64_t n = 0;
    for (int h = 0; st->h_n_thin && h < st->n_kv; h++) n += st->h_n_thin[h];
    return n;
}

/* ---- host side ------------------------------------------------------------------------------ */

void kv_thin_compress_host(const plm_kv_thin *st, const float *k, int64_t kv_stride, int64_t r0,
                           int64_t r1)
{
    const int64_t w = (int64_t)st->n_kv * st->n_chan;
    for (int64_t r = r0; r < r1; r++)
        for (int h = 0; h < st->n_kv; h++) {
            const float *x = k + r * kv_stride + (int64_t)h * st->head_dim;
            const int32_t *ch = st->chan + (int64_t)h * st->n_chan;
            float *t = st->k + r * w + (int64_t)h * st->n_chan;
            for (int c = 0; c < st->n_chan; c++) t[c] = x[ch[c]];
        }
}

void kv_thin_expand_row(const float *t, const int32_t *chan, int n_chan, int hd, float *x)
{
    for (int d = 0; d < hd; d++) x[d] = 0.0f;
    for (int c = 0; c < n_chan; c++) x[chan[c]] = t[c];
}

plm_status kv_thin_attention_ref(const plm_attn_args *a, const plm_kv_thin *st, plm_error *err)
{
    const int hd = a->head_dim, group = a->n_heads / a->n_kv;
    const int64_t tk = a->tk, w = (int64_t)st->n_kv * st->n_chan;
    double *s = malloc((size_t)(tk > 0 ? tk : 1) * sizeof *s);
    float *kr = malloc((size_t)hd * sizeof *kr);
    double *acc = malloc((size_t)hd * sizeof *acc);
    if (!s || !kr || !acc) {
        free(s);
        free(kr);
        free(acc);
        return plm_fail(err, PLM_E_NOMEM, "thin key reference attention: out of memory for %lld "
                        "keys", (long long)tk);
    }
    for (int64_t i = 0; i < a->tq; i++)
        for (int h = 0; h < a->n_heads; h++) {
            const int kh = h / group;
            const float *q = a->q + i * a->q_stride + (int64_t)h * hd;
            int64_t nk = a->causal ? a->q_pos0 + i + 1 : tk;
            if (nk > tk) nk = tk;
            double mx = -INFINITY, sum = 0;
            for (int64_t j = 0; j < nk; j++) {
                if (j < st->h_n_thin[kh])
                    kv_thin_expand_row(st->k + j * w + (int64_t)kh * st->n_chan,
                                       st->h_chan + (int64_t)kh * st->n_chan, st->n_chan, hd, kr);
                else
                    memcpy(kr, a->k + j * a->kv_stride + (int64_t)kh * hd,
                           (size_t)hd * sizeof *kr);
                double d = 0;
                for (int e = 0; e < hd; e++) d += (double)q[e] * kr[e];
                s[j] = d * a->scale;
                if (s[j] > mx) mx = s[j];
            }
            for (int e = 0; e < hd; e++) acc[e] = 0;
            for (int64_t j = 0; j < nk; j++) {
                const double p = exp(s[j] - mx);
                const float *v = a->v + j * a->kv_stride + (int64_t)kh * hd;
                sum += p;
                for (int e = 0; e < hd; e++) acc[e] += p * v[e];
            }
            float *o = a->out + (i * a->n_heads + h) * hd;
            for (int e = 0; e < hd; e++) o[e] = nk > 0 ? (float)(acc[e] / sum) : 0.0f;
        }
    free(s);
    free(kr);
    free(acc);
    return PLM_OK;
}
