/* The int4 KV store: sizes, allocation, the host bookkeeping (which rows are stored, which key
 * groups are still used), the quantiser on the host and the reference attention
 * (prune/kv_int4.h says why the layout is what it is). */
#include <stdlib.h>
#include <string.h>

#include "prune/kv_int4.h"
#include "prune/kv_store.h"

#define KVQ_MAX_HD 512
#define KVQ_MAX_GROUP 1024

plm_status kv_int4_init(plm_kv_int4 *st, int n_kv, int head_dim, int group, int64_t cap,
                        plm_error *err)
{
    memset(st, 0, sizeof *st);
    if (n_kv <= 0 || head_dim < 2 || head_dim > KVQ_MAX_HD || head_dim % 2)
        return plm_fail(err, PLM_E_ARG, "int4 KV store: %d kv heads of head_dim %d (head_dim "
                        "must be even, 2..%d)", n_kv, head_dim, KVQ_MAX_HD);
    if (group < 1 || group > KVQ_MAX_GROUP)
        return plm_fail(err, PLM_E_ARG, "int4 KV store: group %d outside 1..%d", group,
                        KVQ_MAX_GROUP);
    const int vgroup = group < head_dim ? group : head_dim;
    if (head_dim % vgroup)
        return plm_fail(err, PLM_E_ARG, "int4 KV store: values are grouped %d channels at a "
                        "time, which does not divide head_dim %d; pick a group that does",
                        vgroup, head_dim);
    if (cap < 0) return plm_fail(err, PLM_E_ARG, "int4 KV store: capacity %lld rows",
                                 (long long)cap);
    /* the largest array is the codes' 2 * head_dim / 2 bytes per row; refuse overflow first */
    size_t total;
    if (!plm_mul_ok((size_t)n_kv * (size_t)(head_dim + 4 + 8 * (head_dim / vgroup)) + 64,
                    (size_t)cap, &total) || total > SIZE_MAX / 4)
        return plm_fail(err, PLM_E_LIMIT, "int4 KV store: %lld rows of %d kv heads overflow",
                        (long long)cap, n_kv);
    st->n_kv = n_kv;
    st->head_dim = head_dim;
    st->group = group;
    st->vgroup = vgroup;
    st->n_vg = head_dim / vgroup;
    st->cap = cap;
    st->n_slots = cap / group > 0 ? cap / group : 1;
    return PLM_OK;
}

/* Byte sizes of the backend arrays, in allocation order. */
enum { A_KC, A_VC, A_SLOT, A_KMN, A_KSC, A_VMN, A_VSC, A_NQ, A_N };
static void sizes(const plm_kv_int4 *st, size_t s[A_N])
{
    const size_t rows = (size_t)st->cap * (size_t)st->n_kv;
    s[A_KC] = s[A_VC] = rows * (size_t)st->head_dim / 2;
    s[A_SLOT] = rows * sizeof(int32_t);
    s[A_KMN] = s[A_KSC] = (size_t)st->n_kv * (size_t)st->n_slots * (size_t)st->head_dim *
                          sizeof(float);
    s[A_VMN] = s[A_VSC] = rows * (size_t)st->n_vg * sizeof(float);
    s[A_NQ] = (size_t)st->n_kv * sizeof(int32_t);
}

plm_status kv_int4_alloc(plm_backend *be, plm_kv_int4 *st, plm_error *err)
{
    size_t s[A_N], off[A_N], bytes = 0;
    sizes(st, s);
    for (int i = 0; i < A_N; i++) {
        off[i] = bytes;
        bytes += kv_store_align(s[i]);
    }
    char *p = be->ops->alloc(be, bytes);
    const size_t rows = (size_t)st->cap * (size_t)st->n_kv;
    st->h_n_q = calloc((size_t)st->n_kv, sizeof *st->h_n_q);
    st->h_slot = malloc((rows ? rows : 1) * sizeof *st->h_slot);
    st->h_refs = calloc((size_t)st->n_kv * (size_t)st->n_slots, sizeof *st->h_refs);
    st->h_next = calloc((size_t)st->n_kv, sizeof *st->h_next);
    st->h_idx = malloc((rows ? rows : 1) * sizeof *st->h_idx);
    if (!p || !st->h_n_q || !st->h_slot || !st->h_refs || !st->h_next || !st->h_idx) {
        kv_int4_release(be, st); /* the host arrays; st->k_codes is not set yet */
        return kv_store_alloc_failed(be, p, bytes, "int4 KV store", err);
    }
    st->k_codes = (uint8_t *)p; /* first: kv_int4_release frees through it */
    st->v_codes = (uint8_t *)(p + off[A_VC]);
    st->k_slot = (int32_t *)(p + off[A_SLOT]);
    st->k_mn = (float *)(p + off[A_KMN]);
    st->k_sc = (float *)(p + off[A_KSC]);
    st->v_mn = (float *)(p + off[A_VMN]);
    st->v_sc = (float *)(p + off[A_VSC]);
    st->n_q = (int32_t *)(p + off[A_NQ]);
    be->ops->upload(be, st->n_q, st->h_n_q, s[A_NQ]);
    return PLM_OK;
}

void kv_int4_release(plm_backend *be, plm_kv_int4 *st)
{
    if (st->k_codes) be->ops->release(be, st->k_codes);
    free(st->h_n_q);
    free(st->h_slot);
    free(st->h_refs);
    free(st->h_next);
    free(st->h_idx);
    st->k_codes = st->v_codes = NULL;
    st->k_slot = st->n_q = NULL;
    st->k_mn = st->k_sc = st->v_mn = st->v_sc = NULL;
    st->h_n_q = st->h_slot = st->h_refs = st->h_idx = NULL;
    st->h_next = NULL;
}

int64_t kv_int4_work_floats(int n_heads, int head_dim, int64_t tq)
{
    return kv_store_work_floats(n_heads, head_dim, tq);
}

static plm_status need_ops(plm_backend *be, plm_error *err)
{
    return kv_store_need_ops(be, be->ops->kv_int4 != NULL, "int4 KV store", err);
}

plm_status kv_int4_advance(plm_backend *be, plm_kv_int4 *st, const float *k, const float *v,
                           int64_t kv_stride, int64_t len, int64_t recent, plm_error *err)
{
    PLM_TRY(need_ops(be, err));
    if (!st->k_codes) return plm_fail(err, PLM_E_ARG, "int4 KV store: advance before alloc");
    if (len > st->cap || kv_stride < (int64_t)st->n_kv * st->head_dim || recent < 0)
        return plm_fail(err, PLM_E_ARG, "int4 KV store: %lld rows of %lld (stride %lld, recent "
                        "%lld)", (long long)len, (long long)st->cap, (long long)kv_stride,
                        (long long)recent);
    int changed = 0;
    for (int h = 0; h < st->n_kv; h++) {
        const int64_t r0 = st->h_n_q[h], spare = len - r0 - recent;
        if (spare < st->group) continue;
        const int64_t groups = spare / st->group, r1 = r0 + groups * st->group;
        const int64_t slot0 = st->h_next[h];
        /* a row is stored once and the cache appends at most cap rows, so groups fit */
        if (slot0 + groups > st->n_slots)
            return plm_fail(err, PLM_E_LIMIT, "int4 KV store: kv head %d needs key group %lld "
                            "of %lld", h, (long long)(slot0 + groups), (long long)st->n_slots);
        be->ops->kv_int4->quantize(be, st, k, v, kv_stride, h, r0, r1, slot0);
        for (int64_t r = r0; r < r1; r++)
            st->h_slot[r * st->n_kv + h] = (int32_t)(slot0 + (r - r0) / st->group);
        for (int64_t g = 0; g < groups; g++)
            st->h_refs[(int64_t)h * st->n_slots + slot0 + g] = st->group;
        st->h_next[h] = slot0 + groups;
        st->h_n_q[h] = (int32_t)r1;
        changed = 1;
    }
    if (changed)
        be->ops->upload(be, st->n_q, st->h_n_q, (size_t)st->n_kv * sizeof(int32_t));
    return PLM_OK;
}

plm_status kv_int4_compact(plm_backend *be, plm_kv_int4 *st, const int32_t *keep,
                           int64_t n_keep, plm_error *err)
{
    PLM_TRY(need_ops(be, err));
    if (n_keep < 0 || n_keep > st->cap)
        return plm_fail(err, PLM_E_ARG, "int4 KV store: keeping %lld rows of %lld",
                        (long long)n_keep, (long long)st->cap);
    int64_t most = 0;
    for (int h = 0; h < st->n_kv; h++) {
        const int32_t *kl = keep + (int64_t)h * n_keep;
        int32_t m = 0;
        /* walk the stored rows: each one the list skips releases its key group */
        for (int32_t r = 0; r < st->h_n_q[h]; r++) {
            if (m < n_keep && kl[m] == r) {
                st->h_slot[(int64_t)m * st->n_kv + h] = st->h_slot[(int64_t)r * st->n_kv + h];
                m++;
            } else {
                st->h_refs[(int64_t)h * st->n_slots + st->h_slot[(int64_t)r * st->n_kv + h]]--;
            }
        }
        st->h_n_q[h] = m;
        if (m > most) most = m;
    }
    if (most > 0)
        be->ops->kv_int4->compact(be, st,
                                  kv_store_keep_prefix(keep, n_keep, st->n_kv, most, st->h_idx),
                                  most);
    be->ops->upload(be, st->n_q, st->h_n_q, (size_t)st->n_kv * sizeof(int32_t));
    return PLM_OK;
}

plm_status kv_int4_mix(plm_backend *be, const plm_kv_int4 *st, float *k, float *v,
                       int64_t kv_stride, int64_t len, const int32_t *head, const int32_t *dst,
                       const int32_t *src, const float *a, const float *b, int64_t n,
                       plm_error *err)
{
    PLM_TRY(need_ops(be, err));
    PLM_TRY(kv_store_check_merges(st->n_kv, len, head, dst, src, n, "int4 KV store", err));
    if (n > 0) be->ops->kv_int4->mix(be, st, k, v, kv_stride, head, dst, src, a, b, n);
    return PLM_OK;
}

static plm_status check_args(const plm_attn_args *a, const plm_kv_int4 *st, const char *what,
                             plm_error *err)
{
    PLM_TRY(kv_store_check_attn(a, st->n_kv, st->head_dim, "int4", what, err));
    if (a->rows || a->bias || a->q_pos0_dev)
        return plm_fail(err, PLM_E_UNSUPPORTED, "int4 %s: sparse rows, steering bias and "
                        "recorded steps do not combine with the int4 store", what);
    return PLM_OK;
}

plm_status kv_int4_attend(plm_backend *be, const plm_attn_args *a, const plm_kv_int4 *st,
                          plm_error *err)
{
    PLM_TRY(need_ops(be, err));
    PLM_TRY(check_args(a, st, "attention", err));
    be->ops->kv_int4->attend(be, a, st);
    return PLM_OK;
}

plm_status kv_int4_probs(plm_backend *be, const plm_attn_args *a, const plm_kv_int4 *st,
                         plm_error *err)
{
    PLM_TRY(need_ops(be, err));
    PLM_TRY(check_args(a, st, "scores", err));
    be->ops->kv_int4->probs(be, a, st);
    return PLM_OK;
}

plm_status kv_int4_download(plm_backend *be, const plm_kv_int4 *st, float *k, float *v,
                            int64_t kv_stride, plm_error *err)
{
    const int64_t most = kv_store_most(st->h_n_q, st->n_kv);
    if (most == 0) return PLM_OK;
    /* a host twin of the store's first `most` rows and every key group */
    plm_kv_int4 t = *st;
    const size_t rows = (size_t)most * (size_t)st->n_kv, hd = (size_t)st->head_dim;
    const size_t kp = (size_t)st->n_kv * (size_t)st->n_slots * hd;
    t.cap = most; /* the twin's row-major arrays hold `most` rows; slots index the same */
    t.k_codes = malloc(rows * hd / 2);
    t.v_codes = malloc(rows * hd / 2);
    t.k_slot = malloc(rows * sizeof *t.k_slot);
    t.k_mn = malloc(kp * sizeof(float));
    t.k_sc = malloc(kp * sizeof(float));
    t.v_mn = malloc(rows * (size_t)st->n_vg * sizeof(float));
    t.v_sc = malloc(rows * (size_t)st->n_vg * sizeof(float));
    plm_status rc = PLM_OK;
    if (!t.k_codes || !t.v_codes || !t.k_slot || !t.k_mn || !t.k_sc || !t.v_mn || !t.v_sc) {
        rc = plm_fail(err, PLM_E_NOMEM, "int4 KV store: out of memory for %lld rows",
                      (long long)most);
    } else {
        be->ops->download(be, t.k_codes, st->k_codes, rows * hd / 2);
        be->ops->download(be, t.v_codes, st->v_codes, rows * hd / 2);
        be->ops->download(be, t.k_slot, st->k_slot, rows * sizeof *t.k_slot);
        be->ops->download(be, t.k_mn, st->k_mn, kp * sizeof(float));
        be->ops->download(be, t.k_sc, st->k_sc, kp * sizeof(float));
        be->ops->download(be, t.v_mn, st->v_mn, rows * (size_t)st->n_vg * sizeof(float));
        be->ops->download(be, t.v_sc, st->v_sc, rows * (size_t)st->n_vg * sizeof(float));
        for (int h = 0; h < st->n_kv; h++)
            for (int64_t r = 0; r < st->h_n_q[h]; r++)
                kv_int4_row_host(&t, r, h, k + r * kv_stride + (int64_t)h * st->head_dim,
                                 v + r * kv_stride + (int64_t)h * st->head_dim);
    }
    free(t.k_codes);
    free(t.v_codes);
    free(t.k_slot);
    free(t.k_mn);
    free(t.k_sc);
    free(t.v_mn);
    free(t.v_sc);
    return rc;
}

int64_t kv_int4_rows(const plm_kv_int4 *st)
{
    return kv_store_total(st->h_n_q, st->n_kv);
}

size_t kv_int4_bytes(const plm_kv_int4 *st)
{
    if (!st->h_n_q) return 0;
    int64_t live = 0;
    for (int64_t i = 0; i < (int64_t)st->n_kv * st->n_slots; i++) live += st->h_refs[i] > 0;
    const size_t row = (size_t)st->head_dim + sizeof(int32_t) + 2 * sizeof(float) *
                                                                    (size_t)st->n_vg;
    return (size_t)kv_int4_rows(st) * row + (size_t)live * 2 * sizeof(float) *
                                                (size_t)st->head_dim;
}

/* ---- host side ------------------------------------------------------------------------------ */

void kv_int4_params(const float *x, int64_t n, int64_t stride, float *mn, float *sc)
{
    float lo = x[0], hi = x[0];
    for (int64_t i = 1; i < n; i++) {
        const float y = x[i * stride];
        lo = y < lo ? y : lo;
        hi = y > hi ? y : hi;
    }
    *mn = lo;
    *sc = (hi - lo) / 15.0f;
}

static inline void put_code(uint8_t *codes, int d, int c)
{
    uint8_t *b = codes + d / 2;
    *b = d % 2 ? (uint8_t)((*b & 0x0f) | (c << 4)) : (uint8_t)((*b & 0xf0) | c);
}

static inline int get_code(const uint8_t *codes, int d)
{
    return d % 2 ? codes[d / 2] >> 4 : codes[d / 2] & 0x0f;
}

/* One row's values into codes and its n_vg parameter pairs. */
static void encode_v(const plm_kv_int4 *st, const float *x, uint8_t *codes, float *mn, float *sc)
{
    for (int g = 0; g < st->n_vg; g++) {
        const float *xg = x + g * st->vgroup;
        kv_int4_params(xg, st->vgroup, 1, &mn[g], &sc[g]);
        for (int e = 0; e < st->vgroup; e++)
            put_code(codes, g * st->vgroup + e, kv_int4_code(xg[e], mn[g], sc[g]));
    }
}

void kv_int4_quantize_host(const plm_kv_int4 *st, const float *k, const float *v,
                           int64_t kv_stride, int h, int64_t r0, int64_t r1, int64_t slot0)
{
    const int hd = st->head_dim, G = st->group;
    const int64_t cb = hd / 2;
    for (int64_t g0 = r0; g0 + G <= r1; g0 += G) {
        const int64_t slot = slot0 + (g0 - r0) / G;
        float *mn = st->k_mn + ((int64_t)h * st->n_slots + slot) * hd;
        float *sc = st->k_sc + ((int64_t)h * st->n_slots + slot) * hd;
        const float *kg = k + g0 * kv_stride + (int64_t)h * hd;
        for (int d = 0; d < hd; d++) kv_int4_params(kg + d, G, kv_stride, &mn[d], &sc[d]);
        for (int64_t r = g0; r < g0 + G; r++) {
            const int64_t row = r * st->n_kv + h;
            const float *x = k + r * kv_stride + (int64_t)h * hd;
            for (int d = 0; d < hd; d++)
                put_code(st->k_codes + row * cb, d, kv_int4_code(x[d], mn[d], sc[d]));
            st->k_slot[row] = (int32_t)slot;
        }
    }
    for (int64_t r = r0; r < r1; r++) {
        const int64_t row = r * st->n_kv + h;
        encode_v(st, v + r * kv_stride + (int64_t)h * hd, st->v_codes + row * cb,
                 st->v_mn + row * st->n_vg, st->v_sc + row * st->n_vg);
    }
}

void kv_int4_row_host(const plm_kv_int4 *st, int64_t r, int h, float *k, float *v)
{
    const int hd = st->head_dim;
    const int64_t row = r * st->n_kv + h, cb = hd / 2;
    if (k) {
        const int64_t p = ((int64_t)h * st->n_slots + st->k_slot[row]) * hd;
        for (int d = 0; d < hd; d++)
            k[d] = kv_int4_value(get_code(st->k_codes + row * cb, d), st->k_mn[p + d],
                                 st->k_sc[p + d]);
    }
    if (v) {
        const float *mn = st->v_mn + row * st->n_vg, *sc = st->v_sc + row * st->n_vg;
        for (int d = 0; d < hd; d++)
            v[d] = kv_int4_value(get_code(st->v_codes + row * cb, d), mn[d / st->vgroup],
                                 sc[d / st->vgroup]);
    }
}

void kv_int4_encode_row_host(const plm_kv_int4 *st, int64_t r, int h, const float *k,
                             const float *v)
{
    const int hd = st->head_dim;
    const int64_t row = r * st->n_kv + h, cb = hd / 2;
    const int64_t p = ((int64_t)h * st->n_slots + st->k_slot[row]) * hd;
    uint8_t *kc = st->k_codes + row * cb;
    for (int d = 0; d < hd; d++) put_code(kc, d, kv_int4_code(k[d], st->k_mn[p + d],
                                                             st->k_sc[p + d]));
    encode_v(st, v, st->v_codes + row * cb, st->v_mn + row * st->n_vg,
             st->v_sc + row * st->n_vg);
}

/* Row j of kv head kh as the int4 attention reads it: dequantised when stored. */
static const float *int4_row(const void *store, const plm_attn_args *a, int v, int64_t j, int kh,
                             float *buf)
{
    const plm_kv_int4 *st = store;
    if (j < st->h_n_q[kh]) {
        kv_int4_row_host(st, j, kh, v ? NULL : buf, v ? buf : NULL);
        return buf;
    }
    return (v ? a->v : a->k) + j * a->kv_stride + (int64_t)kh * a->head_dim;
}

plm_status kv_int4_attention_ref(const plm_attn_args *a, const plm_kv_int4 *st, plm_error *err)
{
    return kv_store_attention_ref(a, st, int4_row, "int4", err);
}
