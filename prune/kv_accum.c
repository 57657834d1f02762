/* Per-row accumulators and grouping primitives for the history-keeping KV policies. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "prune/kv_accum.h"

void kv_rows_accum(float *st, int64_t stride, int n_kv, const float *add, int64_t len,
                   int64_t n_new, float decay)
{
    for (int h = 0; h < n_kv; h++) {
        float *s = st + (int64_t)h * stride;
        const float *a = add + (int64_t)h * len;
        for (int64_t r = 0; r < len - n_new; r++) s[r] = decay * s[r] + a[r];
        for (int64_t r = len - n_new; r < len; r++) s[r] = a[r];
    }
}

void kv_rows_gather(const float *st, int64_t stride, int n_kv, int64_t len, float *out)
{
    for (int h = 0; h < n_kv; h++)
        memcpy(out + (int64_t)h * len, st + (int64_t)h * stride, (size_t)len * sizeof *out);
}

void kv_uniform_share(int64_t len, int64_t n_new, float *out)
{
    const int64_t q0 = len - n_new;
    double suffix = 0; /* sum over queries i in [max(r, q0), len) of 1/(i+1) */
    for (int64_t r = len - 1; r >= 0; r--) {
        if (r >= q0) suffix += 1.0 / (double)(r + 1);
        out[r] = (float)suffix;
    }
}

/* ---- history bits ---------------------------------------------------------------------------- */
static void hist_shift_in(uint64_t *w, int words, uint64_t bit)
{
    for (int i = words - 1; i > 0; i--) w[i] = (w[i] << 1) | (w[i - 1] >> 63);
    w[0] = (w[0] << 1) | bit;
}

void kv_hist_push(uint64_t *hist, int words, int64_t stride, int n_kv, int64_t len,
                  int64_t n_new, const float *score, const float *expect, float scale)
{
    for (int h = 0; h < n_kv; h++) {
        uint64_t *base = hist + (int64_t)h * stride * words;
        const float *s = score + (int64_t)h * len;
        memset(base + (len - n_new) * words, 0, (size_t)(n_new * words) * sizeof *base);
        for (int64_t r = 0; r < len; r++)
            hist_shift_in(base + r * words, words, s[r] < expect[r] * scale);
    }
}

void kv_hist_count(const uint64_t *hist, int words, int64_t stride, int n_kv, int64_t len,
                   int window, float *count)
{
    for (int h = 0; h < n_kv; h++) {
        const uint64_t *base = hist + (int64_t)h * stride * words;
        for (int64_t r = 0; r < len; r++) {
            const uint64_t *w = base + r * words;
            int c = 0, left = window;
            for (int i = 0; i < words && left > 0; i++, left -= 64) {
                uint64_t m = left >= 64 ? ~0ull : ((1ull << left) - 1);
                c += __builtin_popcountll(w[i] & m);
            }
            count[(int64_t)h * len + r] = (float)c;
        }
    }
}

void kv_compact_u64(uint64_t *st, int words, int64_t stride, int n_kv, const int32_t *keep,
                    int64_t n_keep)
{
    for (int h = 0; h < n_kv; h++) {
        uint64_t *base = st + (int64_t)h * stride * words;
        const int32_t *k = keep + (int64_t)h * n_keep;
        for (int64_t i = 0; i < n_keep; i++)
            if (k[i] != i) memmove(base + i * words, base + (int64_t)k[i] * words,
                                   (size_t)words * sizeof *base);
    }
}

typedef struct costed {
    float c;
    int32_t i;
} costed;

/* lower cost first; equal cost: the newer row first (it is the one kept) */
static int by_cost_newer(const void *a, const void *b)
{
    const costed *x = a, *y = b;
    if (x->c != y->c) return x->c < y->c ? -1 : 1;
    return (x->i < y->i) - (x->i > y->i);
}

static int by_index(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

int64_t kv_keep_lowest(const float *cost, int64_t len, int64_t n_keep, int64_t sink,
                       int64_t recent, int32_t *keep)
{
    if (n_keep > len) n_keep = len;
    if (n_keep < 0) n_keep = 0;
    if (sink > n_keep) sink = n_keep;
    if (recent > n_keep - sink) recent = n_keep - sink;
    const int64_t mid = len - sink - recent, k = n_keep - sink - recent;
    int64_t n = 0;
    for (int64_t r = 0; r < sink; r++) keep[n++] = (int32_t)r;
    if (k > 0) {
        costed *t = malloc((size_t)mid * sizeof *t);
        if (!t) return -1;
        for (int64_t i = 0; i < mid; i++) {
            float c = cost[sink + i];
            t[i].c = c == c ? c : 3.4e38f; /* NaN: first to go */
            t[i].i = (int32_t)(sink + i);
        }
        qsort(t, (size_t)mid, sizeof *t, by_cost_newer);
        for (int64_t i = 0; i < k; i++) keep[n + i] = t[i].i;
        free(t);
        qsort(keep + n, (size_t)k, sizeof *keep, by_index);
        n += k;
    }
    for (int64_t r = len - recent; r < len; r++) keep[n++] = (int32_t)r;
    return n_keep;
}

/* ---- signatures ------------------------------------------------------------------------------ */
int kv_head_signature(const float *score, int n_bits, int64_t len, int words, uint64_t *sig)
{
    memset(sig, 0, (size_t)(len * words) * sizeof *sig);
    const int64_t half = len / 2;
    if (half == 0) return 0;
    int32_t *idx = malloc((size_t)half * sizeof *idx);
    if (!idx) return -1;
    for (int b = 0; b < n_bits; b++) {
        if (prune_topk(score + (int64_t)b * len, len, half, idx) < 0) {
            free(idx);
            return -1;
        }
        for (int64_t i = 0; i < half; i++)
            sig[(int64_t)idx[i] * words + b / 64] |= 1ull << (b % 64);
    }
    free(idx);
    return 0;
}

static uint64_t xorshift64(uint64_t *s)
{
    uint64_t x = *s ? *s : 0x9E3779B97F4A7C15ull;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

void kv_anchor(int mode, const uint64_t *sig, int words, int n_bits, const int32_t *cand,
               int64_t nc, uint64_t *seed, uint64_t *anchor)
{
    memset(anchor, 0, (size_t)words * sizeof *anchor);
    for (int b = 0; b < n_bits; b++) {
        int on = 0;
        switch (mode) {
        case KV_ANCHOR_RANDOM: on = (int)(xorshift64(seed) >> 63); break;
        case KV_ANCHOR_ALTERNATE: on = b % 2; break;
        case KV_ANCHOR_ONES: on = 1; break;
        case KV_ANCHOR_ZEROS: on = 0; break;
        case KV_ANCHOR_MEAN: {
            int64_t ones = 0;
            for (int64_t i = 0; i < nc; i++)
                ones += (sig[(int64_t)cand[i] * words + b / 64] >> (b % 64)) & 1;
            on = 2 * ones > nc; /* the official code: mean > 0.5 */
            break;
        }
        }
        if (on) anchor[b / 64] |= 1ull << (b % 64);
    }
}

typedef struct dist_row {
    int d;
    int32_t i; /* position in cand, so the sort is stable */
} dist_row;

static int by_dist(const void *a, const void *b)
{
    const dist_row *x = a, *y = b;
    if (x->d != y->d) return x->d < y->d ? -1 : 1;
    return (x->i > y->i) - (x->i < y->i);
}

int64_t kv_hamming_pick(const uint64_t *sig, int words, const int32_t *cand, int64_t nc,
                        const uint64_t *anchor, int64_t k, int32_t *out)
{
    if (k > nc) k = nc;
    if (k <= 0) return 0;
    dist_row *t = malloc((size_t)nc * sizeof *t);
    if (!t) return -1;
    for (int64_t i = 0; i < nc; i++) {
        int d = 0;
        for (int w = 0; w < words; w++)
            d += __builtin_popcountll(sig[(int64_t)cand[i] * words + w] ^ anchor[w]);
        t[i].d = d;
        t[i].i = (int32_t)i;
    }
    qsort(t, (size_t)nc, sizeof *t, by_dist);
    const int64_t step = nc / k;
    for (int64_t j = 0; j < k; j++) out[j] = cand[t[j * step].i];
    free(t);
    qsort(out, (size_t)k, sizeof *out, by_index);
    return k;
}

/* ---- similarity merge ------------------------------------------------------------------------ */
/* Rows of src per product: bounds the similarity block at COS_BLOCK x nd floats. */
#define COS_BLOCK 256

/* The key rows `idx` of kv head h, each scaled to unit length (norms clamped at 1e-6, as the
 * official D2O code does), into out [n x hd]. */
static void unit_rows(const float *k, int64_t rs, int hd, int h, const int32_t *idx, int64_t n,
                      float *out)
{
    for (int64_t i = 0; i < n; i++) {
        const float *a = k + (int64_t)idx[i] * rs + (int64_t)h * hd;
        double na = 0;
        for (int c = 0; c < hd; c++) na += (double)a[c] * a[c];
        const float inv = (float)(1.0 / fmax(sqrt(na), 1e-6));
        for (int c = 0; c < hd; c++) out[i * hd + c] = a[c] * inv;
    }
}

/* The cosine similarities of every src row with every dst row are one matrix product of the
 * unit rows (ns x nd x hd: at 4096 keys and 10% kept, 1.5 M pairs a head and layer, which the
 * pairwise loop this replaced took ~0.4 s a prompt for), done by BLAS a block of src rows at
 * a time; then each row's arg max. */
int kv_cos_nearest(const float *k, int n_kv, int hd, int h, const int32_t *src, int64_t ns,
                   const int32_t *dst, int64_t nd, int32_t *best, float *sim)
{
    const int64_t rs = (int64_t)n_kv * hd, blk = ns < COS_BLOCK ? ns : COS_BLOCK;
    const size_t dn_n = (size_t)(nd * hd), sn_n = (size_t)(blk * hd), s_n = (size_t)(blk * nd);
    float *dn = malloc((dn_n ? dn_n : 1) * sizeof *dn);
    float *sn = malloc((sn_n ? sn_n : 1) * sizeof *sn), *s = malloc((s_n ? s_n : 1) * sizeof *s);
    if (!dn || !sn || !s) {
        free(dn);
        free(sn);
        free(s);
        return -1;
    }
    unit_rows(k, rs, hd, h, dst, nd, dn);
    for (int64_t i0 = 0; i0 < ns; i0 += blk) {
        const int64_t m = ns - i0 < blk ? ns - i0 : blk;
        unit_rows(k, rs, hd, h, src + i0, m, sn);
        if (nd > 0)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)nd, hd, 1.0f, sn,
                        hd, dn, hd, 0.0f, s, (int)nd);
        for (int64_t i = 0; i < m; i++) {
            float top = -2.0f;
            int32_t arg = nd > 0 ? dst[0] : -1;
            for (int64_t j = 0; j < nd; j++)
                if (s[i * nd + j] > top) { /* ties: the earlier entry */
                    top = s[i * nd + j];
                    arg = dst[j];
                }
            best[i0 + i] = arg;
            sim[i0 + i] = top;
        }
    }
    free(dn);
    free(sn);
    free(s);
    return 0;
}

int64_t kv_merge_weighted(int32_t head, const int32_t *src, const int32_t *tgt, const float *w,
                          int64_t n, const float *w_self, int count, int64_t len, float *scratch,
                          kv_merge *out)
{
    (void)len;
    for (int64_t i = 0; i < n; i++) scratch[tgt[i]] = w_self[tgt[i]];
    for (int64_t i = 0; i < n; i++) scratch[tgt[i]] += count ? 1.0f : w[i];
    /* the first entry of a target rescales it (a = w_self / den); the rest only add. A
     * negative scratch value marks a target whose first entry is written. */
    for (int64_t i = 0; i < n; i++) {
        const int32_t t = tgt[i];
        const int first = scratch[t] > 0;
        const float den = first ? scratch[t] : -scratch[t];
        out[i] = (kv_merge){.head = head, .dst = t, .src = src[i],
                            .a = first ? w_self[t] / den : 1.0f, .b = w[i] / den};
        if (first) scratch[t] = -den;
    }
    return n;
}

plm_status kv_spec_choice(prune_spec *s, const char *key, const char *const *names, int n,
                          int dflt, int *out, plm_error *err)
{
    *out = dflt;
    for (int i = 0; i < s->n; i++) {
        if (strcmp(s->p[i].key, key)) continue;
        s->p[i].used = 1;
        for (int j = 0; j < n; j++)
            if (!strcmp(s->p[i].val, names[j])) {
                *out = j;
                return PLM_OK;
            }
        char list[256] = "";
        for (int j = 0; j < n; j++) {
            if (j) strncat(list, ", ", sizeof list - strlen(list) - 1);
            strncat(list, names[j], sizeof list - strlen(list) - 1);
        }
        return plm_fail(err, PLM_E_FORMAT, "pruning spec '%s': %s=%s, expected one of %s",
                        s->text, key, s->p[i].val, list);
    }
    return PLM_OK;
}
