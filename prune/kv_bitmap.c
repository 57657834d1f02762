/* Mustafar's bitmap-compressed KV store: sizes, allocation, the host form of the pruning rule
 * and the reference attention (prune/kv_bitmap.h says why the layout is what it is). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "prune/kv_bitmap.h"
#include "prune/kv_store.h"

#define KVB_MAX_HD 512

/* each of the four arrays starts aligned */
static size_t align_up(size_t n) { return kv_store_align(n); }

int kv_bitmap_keep(int head_dim, double sparsity)
{
    /* The nudge keeps 0.7 * 128 = 89.6 from rounding to 89.59999 and then to 89 the other way
     * on another compiler; the rule is floor of the exact product. */
    int zero = (int)floor(sparsity * head_dim + 1e-9);
    int keep = head_dim - zero;
    return keep < 1 ? 1 : keep;
}

plm_status kv_bitmap_init(plm_kv_bitmap *kb, int n_kv, int head_dim, int64_t cap,
                          double sparsity_k, double sparsity_v, plm_error *err)
{
    memset(kb, 0, sizeof *kb);
    if (n_kv <= 0 || head_dim <= 0 || head_dim > KVB_MAX_HD)
        return plm_fail(err, PLM_E_ARG, "kv bitmap store: %d kv heads of head_dim %d (head_dim "
                        "must be 1..%d)", n_kv, head_dim, KVB_MAX_HD);
    if (cap < 0)
        return plm_fail(err, PLM_E_ARG, "kv bitmap store: capacity %lld rows", (long long)cap);
    /* !(x >= 0) also refuses NaN. */
    if (!(sparsity_k >= 0 && sparsity_k < 1) || !(sparsity_v >= 0 && sparsity_v < 1))
        return plm_fail(err, PLM_E_ARG, "kv bitmap store: sparsity k=%g v=%g outside [0, 1)",
                        sparsity_k, sparsity_v);
    kb->n_kv = n_kv;
    kb->head_dim = head_dim;
    kb->words = (head_dim + 63) / 64;
    kb->k_keep = kv_bitmap_keep(head_dim, sparsity_k);
    kb->v_keep = kv_bitmap_keep(head_dim, sparsity_v);
    kb->k_slots = (kb->k_keep + 3) / 4 * 4;
    kb->v_slots = (kb->v_keep + 3) / 4 * 4;
    kb->cap = cap;
    /* Refuse a capacity whose byte count would overflow before anything multiplies it. */
    size_t per_row = (size_t)n_kv * (16u * (size_t)kb->words + 4u * (size_t)(kb->k_slots +
                                                                          kb->v_slots));
    size_t total;
    if (!plm_mul_ok(per_row, (size_t)cap, &total) || total > SIZE_MAX / 2)
        return plm_fail(err, PLM_E_LIMIT, "kv bitmap store: %lld rows of %zu bytes overflow",
                        (long long)cap, per_row);
    return PLM_OK;
}

/* Byte sizes of the four arrays for `rows` rows (unaligned). */
static void sizes(const plm_kv_bitmap *kb, int64_t rows, size_t s[4])
{
    const size_t nr = (size_t)kb->n_kv * (size_t)rows;
    s[0] = nr * (size_t)kb->words * sizeof(uint64_t);
    s[1] = s[0];
    s[2] = nr * (size_t)kb->k_slots * sizeof(float);
    s[3] = nr * (size_t)kb->v_slots * sizeof(float);
}

size_t kv_bitmap_bytes(const plm_kv_bitmap *kb, int64_t rows)
{
    size_t s[4];
    sizes(kb, rows, s);
    return align_up(s[0]) + align_up(s[1]) + align_up(s[2]) + align_up(s[3]);
}

size_t kv_bitmap_dense_bytes(const plm_kv_bitmap *kb, int64_t rows)
{
    return 2u * (size_t)kb->n_kv * (size_t)rows * (size_t)kb->head_dim * sizeof(float);
}

plm_status kv_bitmap_alloc(plm_backend *be, plm_kv_bitmap *kb, plm_error *err)
{
    size_t s[4];
    sizes(kb, kb->cap, s);
    const size_t bytes = kv_bitmap_bytes(kb, kb->cap);
    char *p = be->ops->alloc(be, bytes);
    if (!p) return kv_store_alloc_failed(be, p, bytes, "kv bitmap store", err);
    /* k_bits first: kv_bitmap_release frees through it. */
    kb->k_bits = (uint64_t *)p;
    kb->v_bits = (uint64_t *)(p + align_up(s[0]));
    kb->k_vals = (float *)(p + align_up(s[0]) + align_up(s[1]));
    kb->v_vals = (float *)(p + align_up(s[0]) + align_up(s[1]) + align_up(s[2]));
    kb->n_rows = 0;
    return PLM_OK;
}

void kv_bitmap_release(plm_backend *be, plm_kv_bitmap *kb)
{
    if (kb->k_bits) be->ops->release(be, kb->k_bits);
    kb->k_bits = kb->v_bits = NULL;
    kb->k_vals = kb->v_vals = NULL;
    kb->n_rows = 0;
}

int64_t kv_bitmap_work_floats(int n_heads, int head_dim, int64_t tq)
{
    return kv_store_work_floats(n_heads, head_dim, tq);
}

plm_status kv_bitmap_compress(plm_backend *be, plm_kv_bitmap *kb, const float *k,
                              const float *v, int64_t kv_stride, int64_t upto, plm_error *err)
{
    PLM_TRY(kv_store_need_ops(be, be->ops->kv_bitmap && be->ops->kv_bitmap->compress,
                              "bitmap KV store", err));
    if (!kb->k_bits)
        return plm_fail(err, PLM_E_ARG, "kv bitmap store: compress before kv_bitmap_alloc");
    if (upto > kb->cap)
        return plm_fail(err, PLM_E_ARG, "kv bitmap store: compressing up to row %lld, past its "
                        "%lld rows", (long long)upto, (long long)kb->cap);
    if (kv_stride < (int64_t)kb->n_kv * kb->head_dim)
        return plm_fail(err, PLM_E_ARG, "kv bitmap store: row stride %lld under %d kv heads x "
                        "%d", (long long)kv_stride, kb->n_kv, kb->head_dim);
    if (upto <= kb->n_rows) return PLM_OK;
    be->ops->kv_bitmap->compress(be, kb, k, v, kv_stride, kb->n_rows, upto);
    kb->n_rows = upto;
    return PLM_OK;
}

plm_status kv_bitmap_attend(plm_backend *be, const plm_attn_args *a, const plm_kv_bitmap *kb,
                            plm_error *err)
{
    PLM_TRY(kv_store_need_ops(be, be->ops->kv_bitmap && be->ops->kv_bitmap->attend,
                              "bitmap KV store", err));
    PLM_TRY(kv_store_check_attn(a, kb->n_kv, kb->head_dim, "kv bitmap", "attention", err));
    be->ops->kv_bitmap->attend(be, a, kb);
    return PLM_OK;
}

/* ---- host side ------------------------------------------------------------------------------ */

/* |x| as an integer that orders like |x| (IEEE magnitudes order as their bit patterns). */
static inline uint32_t mag_key(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u & 0x7fffffffu;
}

void kv_bitmap_compress_row(const float *x, int hd, int keep, int slots, uint64_t *bits,
                            float *vals)
{
    /* Radix select of the keep-th largest key, most significant bit first: t grows to the
     * largest value with at least `keep` keys >= t. The CUDA kernel runs the same steps with
     * warp sums, so both pick the same channels. */
    uint32_t t = 0;
    for (int b = 30; b >= 0; b--) {
        const uint32_t cand = t | (1u << b);
        int n = 0;
        for (int d = 0; d < hd; d++) n += mag_key(x[d]) >= cand;
        if (n >= keep) t = cand;
    }
    int above = 0;
    for (int d = 0; d < hd; d++) above += mag_key(x[d]) > t;
    int ties = keep - above; /* channels with key == t taken, lowest first */
    const int words = (hd + 63) / 64;
    for (int w = 0; w < words; w++) bits[w] = 0;
    int n = 0;
    for (int d = 0; d < hd; d++) {
        const uint32_t key = mag_key(x[d]);
        if (key > t || (key == t && ties > 0)) {
            if (key == t) ties--;
            bits[d >> 6] |= 1ull << (d & 63);
            vals[n++] = x[d];
        }
    }
    while (n < slots) vals[n++] = 0.0f;
}

void kv_bitmap_decompress_row(const uint64_t *bits, const float *vals, int hd, float *x)
{
    int n = 0;
    for (int d = 0; d < hd; d++) x[d] = (bits[d >> 6] >> (d & 63)) & 1 ? vals[n++] : 0.0f;
}

void kv_bitmap_compress_host(const plm_kv_bitmap *kb, const float *k, const float *v,
                             int64_t kv_stride, int64_t r0, int64_t r1)
{
    const int hd = kb->head_dim, W = kb->words;
    for (int h = 0; h < kb->n_kv; h++)
        for (int64_t r = r0; r < r1; r++) {
            const int64_t row = (int64_t)h * kb->cap + r;
            const int64_t off = r * kv_stride + (int64_t)h * hd;
            kv_bitmap_compress_row(k + off, hd, kb->k_keep, kb->k_slots, kb->k_bits + row * W,
                                   kb->k_vals + row * kb->k_slots);
            kv_bitmap_compress_row(v + off, hd, kb->v_keep, kb->v_slots, kb->v_bits + row * W,
                                   kb->v_vals + row * kb->v_slots);
        }
}

void kv_bitmap_decompress_host(const plm_kv_bitmap *kb, int64_t r0, int64_t r1, float *k,
                               float *v, int64_t kv_stride)
{
    const int hd = kb->head_dim, W = kb->words;
    for (int h = 0; h < kb->n_kv; h++)
        for (int64_t r = r0; r < r1; r++) {
            const int64_t row = (int64_t)h * kb->cap + r;
            const int64_t off = r * kv_stride + (int64_t)h * hd;
            kv_bitmap_decompress_row(kb->k_bits + row * W, kb->k_vals + row * kb->k_slots, hd,
                                     k + off);
            kv_bitmap_decompress_row(kb->v_bits + row * W, kb->v_vals + row * kb->v_slots, hd,
                                     v + off);
        }
}

/* Row j of kv head kh as the bitmap attention reads it: pruned below n_rows, dense above. */
static const float *bitmap_row(const void *store, const plm_attn_args *a, int v, int64_t j,
                               int kh, float *buf)
{
    const plm_kv_bitmap *kb = store;
    if (j < kb->n_rows) {
        const int64_t row = (int64_t)kh * kb->cap + j;
        if (v)
            kv_bitmap_decompress_row(kb->v_bits + row * kb->words, kb->v_vals + row * kb->v_slots,
                                     a->head_dim, buf);
        else
            kv_bitmap_decompress_row(kb->k_bits + row * kb->words, kb->k_vals + row * kb->k_slots,
                                     a->head_dim, buf);
        return buf;
    }
    return (v ? a->v : a->k) + j * a->kv_stride + (int64_t)kh * a->head_dim;
}

plm_status kv_bitmap_attention_ref(const plm_attn_args *a, const plm_kv_bitmap *kb,
                                   plm_error *err)
{
    return kv_store_attention_ref(a, kb, bitmap_row, "kv bitmap", err);
}
