/* ThinK's thin-key store: sizes, allocation, the host bookkeeping of which rows are thin, and
 * the reference attention (prune/kv_thin.h says why the layout is what it is). */
#include <stdlib.h>
#include <string.h>

#include "prune/kv_store.h"
#include "prune/kv_thin.h"

#define KVT_MAX_HD 512

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
    const size_t kb = kv_store_align(k_bytes(st)), cb = kv_store_align(nc * sizeof(int32_t));
    const size_t bytes = kb + cb + kv_store_align((size_t)st->n_kv * sizeof(int32_t));
    char *p = be->ops->alloc(be, bytes);
    st->h_chan = malloc(nc * sizeof *st->h_chan);
    st->h_n_thin = calloc((size_t)st->n_kv, sizeof *st->h_n_thin);
    st->h_idx = malloc((size_t)st->n_kv * (size_t)(st->cap > 0 ? st->cap : 1) *
                       sizeof *st->h_idx);
    if (!p || !st->h_chan || !st->h_n_thin || !st->h_idx) {
        free(st->h_chan);
        free(st->h_n_thin);
        free(st->h_idx);
        st->h_chan = st->h_n_thin = st->h_idx = NULL;
        return kv_store_alloc_failed(be, p, bytes, "thin key store", err);
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
    return kv_store_work_floats(n_heads, head_dim, tq);
}

static plm_status need_ops(plm_backend *be, plm_error *err)
{
    return kv_store_need_ops(be, be->ops->kv_thin != NULL, "thin key store", err);
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
    if (most > 0)
        be->ops->gather_heads(be, st->k, (int64_t)st->n_kv * st->n_chan, st->n_kv, st->n_chan,
                              kv_store_keep_prefix(keep, n_keep, st->n_kv, most, st->h_idx),
                              most);
    be->ops->upload(be, st->n_thin, st->h_n_thin, (size_t)st->n_kv * sizeof(int32_t));
    return PLM_OK;
}

plm_status kv_thin_mix(plm_backend *be, const plm_kv_thin *st, float *k, int64_t kv_stride,
                       int64_t len, const int32_t *head, const int32_t *dst, const int32_t *src,
                       const float *a, const float *b, int64_t n, plm_error *err)
{
    PLM_TRY(need_ops(be, err));
    PLM_TRY(kv_store_check_merges(st->n_kv, len, head, dst, src, n, "thin key store", err));
    if (n > 0) be->ops->kv_thin->mix(be, st, k, kv_stride, head, dst, src, a, b, n);
    return PLM_OK;
}

static plm_status check_args(const plm_attn_args *a, const plm_kv_thin *st, const char *what,
                             plm_error *err)
{
    PLM_TRY(kv_store_check_attn(a, st->n_kv, st->head_dim, "thin key", what, err));
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
    const int64_t most = kv_store_most(st->h_n_thin, st->n_kv);
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
    return kv_store_total(st->h_n_thin, st->n_kv);
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

/* Row j of kv head kh as the thin-key attention reads it: a thin key expanded, else dense. */
static const float *thin_row(const void *store, const plm_attn_args *a, int v, int64_t j, int kh,
                             float *buf)
{
    const plm_kv_thin *st = store;
    if (!v && j < st->h_n_thin[kh]) {
        kv_thin_expand_row(st->k + j * st->n_kv * st->n_chan + (int64_t)kh * st->n_chan,
                           st->h_chan + (int64_t)kh * st->n_chan, st->n_chan, a->head_dim, buf);
        return buf;
    }
    return (v ? a->v : a->k) + j * a->kv_stride + (int64_t)kh * a->head_dim;
}

plm_status kv_thin_attention_ref(const plm_attn_args *a, const plm_kv_thin *st, plm_error *err)
{
    return kv_store_attention_ref(a, st, thin_row, "thin key", err);
}
