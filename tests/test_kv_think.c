/* ThinK (prune/kv_think.c) and its thin-key store (prune/kv_thin.h) on the CPU: the channel
 * rule on a hand-made needle, the rule against an independent ranking, the CPU ops against
 * dense attention over keys with the pruned channels zeroed (bit for bit: same loops, zeros add
 * nothing), compaction, merges, spec parsing. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend_kvstore.h"
#include "prune/kv.h"
#include "prune/kv_thin.h"
#include "tests/support/compare.h"
#include "tests/support/kv_store.h"

static float *zeroed_keys(const float *k, int64_t len, int n_kv, int hd, const plm_kv_thin *st)
{
    float *z = malloc((size_t)(len * n_kv * hd) * sizeof *z);
    memcpy(z, k, (size_t)(len * n_kv * hd) * sizeof *z);
    for (int h = 0; h < n_kv; h++)
        for (int64_t r = 0; r < st->h_n_thin[h]; r++) {
            float *x = z + (r * n_kv + h) * hd;
            int keep[512] = {0};
            for (int c = 0; c < st->n_chan; c++) keep[st->h_chan[h * st->n_chan + c]] = 1;
            for (int d = 0; d < hd; d++)
                if (!keep[d]) x[d] = 0.0f;
        }
    return z;
}

Test(think, keep_counts)
{
    cr_assert_eq(kv_think_keep(128, 0.4), 77); /* int(51.2) = 51 pruned, as the code */
    cr_assert_eq(kv_think_keep(128, 0.5), 64);
    cr_assert_eq(kv_think_keep(10, 0.4), 6);
    cr_assert_eq(kv_think_keep(16, 0.0), 16);
    cr_assert_eq(kv_think_keep(4, 0.99), 1);
}

/* A needle: key channel 2 is quiet except on row 40, where it is large, and the window's
 * queries lean on channel 2; channel 6 carries the largest keys of all but no query looks at
 * it. A magnitude rule would keep 6; the query-driven rule must keep 2 and drop 6, and the
 * window's attention must still find the needle through the thin store. */
Test(think, the_needles_channel_is_kept_and_an_unqueried_loud_one_dropped)
{
    rng = 3;
    enum { HD = 8, NH = 2, NKV = 1, LEN = 64, W = 4 };
    float k[LEN * NKV * HD], v[LEN * NKV * HD], q[W * NH * HD];
    for (int r = 0; r < LEN; r++)
        for (int d = 0; d < HD; d++) {
            k[r * HD + d] = 0.1f * frand();
            v[r * HD + d] = frand();
        }
    for (int r = 0; r < LEN; r++) k[r * HD + 6] = 3.0f + 0.1f * frand();
    k[40 * HD + 2] = 5.0f;
    for (int i = 0; i < W * NH * HD; i++) q[i] = 0.3f * frand();
    for (int i = 0; i < W; i++)
        for (int h = 0; h < NH; h++) {
            q[(i * NH + h) * HD + 2] = 4.0f;
            q[(i * NH + h) * HD + 6] = 0.0f;
        }
    /* channel 6 has the largest key norm: keeping by key magnitude would keep it */
    double kn[HD] = {0};
    for (int r = 0; r < LEN; r++)
        for (int d = 0; d < HD; d++) kn[d] += (double)k[r * HD + d] * k[r * HD + d];
    for (int d = 0; d < HD; d++) cr_assert(d == 6 || kn[d] < kn[6]);

    const int keep = kv_think_keep(HD, 0.5);
    int32_t chan[HD];
    plm_error err;
    cr_assert_eq(kv_think_channels(q, W, NH * HD, k, LEN, NKV * HD, NH, NKV, HD, keep, chan,
                                   &err), PLM_OK);
    int has2 = 0, has6 = 0;
    for (int c = 0; c < keep; c++) {
        has2 |= chan[c] == 2;
        has6 |= chan[c] == 6;
        if (c) cr_assert_lt(chan[c - 1], chan[c], "not ascending");
    }
    cr_assert(has2, "the needle's channel 2 was pruned");
    cr_assert(!has6, "channel 6 (no query weight) was kept");

    plm_backend *be = cpu_backend();
    plm_kv_thin st;
    cr_assert_eq(kv_thin_init(&st, NKV, HD, keep, LEN, &err), PLM_OK);
    cr_assert_eq(kv_thin_alloc(be, &st, chan, &err), PLM_OK);
    cr_assert_eq(kv_thin_compress(be, &st, k, NKV * HD, LEN, &err), PLM_OK);
    float probs[NH * LEN];
    plm_attn_args a = args(probs, q + (W - 1) * NH * HD, k, v, 1, LEN, NH, NKV, HD);
    cr_assert_eq(kv_thin_probs(be, &a, &st, &err), PLM_OK);
    for (int h = 0; h < NH; h++)
        cr_assert_gt(probs[h * LEN + 40], 0.9f, "head %d gives the needle %g", h,
                     probs[h * LEN + 40]);
    kv_thin_release(be, &st);
    plm_backend_free(be);
}

/* The rule spelled out another way: |Q col| * |K col| in double, sorted, GQA heads summed. */
Test(think, channels_match_an_independent_ranking)
{
    rng = 17;
    const int nh = 6, nkv = 2, hd = 24, keep = kv_think_keep(hd, 0.4);
    const int64_t len = 30, w = 5;
    float *q = rand_vec((size_t)(w * nh * hd)), *k = rand_vec((size_t)(len * nkv * hd));
    int32_t chan[2 * 24];
    plm_error err;
    cr_assert_eq(kv_think_channels(q, w, nh * hd, k, len, nkv * hd, nh, nkv, hd, keep, chan,
                                   &err), PLM_OK);
    for (int kh = 0; kh < nkv; kh++) {
        double s[24];
        for (int d = 0; d < hd; d++) {
            double qq = 0, kk = 0;
            for (int g = 0; g < nh / nkv; g++)
                for (int64_t i = 0; i < w; i++) {
                    double x = q[(i * nh + kh * (nh / nkv) + g) * hd + d];
                    qq += x * x;
                }
            for (int64_t r = 0; r < len; r++) {
                double x = k[(r * nkv + kh) * hd + d];
                kk += x * x;
            }
            s[d] = sqrt(qq) * sqrt(kk);
        }
        /* every kept channel outscores every pruned one */
        for (int d = 0; d < hd; d++) {
            int kept = 0;
            for (int c = 0; c < keep; c++) kept |= chan[kh * keep + c] == d;
            for (int e = 0; e < hd && kept; e++) {
                int ekept = 0;
                for (int c = 0; c < keep; c++) ekept |= chan[kh * keep + c] == e;
                if (!ekept) cr_assert_geq(s[d], s[e], "head %d: kept %d under pruned %d", kh, d,
                                          e);
            }
        }
    }
    free(q);
    free(k);
}

/* Store with rows [0, nt) thin, then heads made uneven by a keep list. */
static void make_store(plm_backend *be, plm_kv_thin *st, float *k, int64_t len, int n_kv,
                       int hd, int keep, int64_t nt, int64_t *len_out)
{
    plm_error err;
    int32_t *chan = malloc((size_t)(n_kv * keep) * sizeof *chan);
    for (int h = 0; h < n_kv; h++) { /* a spread of channels, different per head */
        int n = 0;
        for (int d = 0; d < hd && n < keep; d++)
            if (hd - d <= keep - n || ((d * 7 + h * 3) % 5) != 0) chan[h * keep + n++] = d;
    }
    cr_assert_eq(kv_thin_init(st, n_kv, hd, keep, len, &err), PLM_OK);
    cr_assert_eq(kv_thin_alloc(be, st, chan, &err), PLM_OK);
    cr_assert_eq(kv_thin_compress(be, st, k, (int64_t)n_kv * hd, nt, &err), PLM_OK);
    /* head h drops the rows r below the thin boundary with r % (h + 2) == 1 (so the heads'
     * thin prefixes end at different rows) and then its oldest dense rows until every head
     * keeps n_keep */
    int64_t dmax = 0;
    for (int h = 0; h < n_kv; h++) {
        int64_t d = 0;
        for (int64_t r = 0; r < nt; r++) d += r % (h + 2) == 1;
        if (d > dmax) dmax = d;
    }
    const int64_t n_keep = len - dmax - 1;
    int32_t *kl = malloc((size_t)(n_kv * n_keep) * sizeof *kl);
    for (int h = 0; h < n_kv; h++) {
        int64_t d = 0, n = 0;
        for (int64_t r = 0; r < nt; r++) d += r % (h + 2) == 1;
        int64_t extra = len - d - n_keep;
        cr_assert_leq(extra, len - nt, "head %d: not enough dense rows to drop", h);
        for (int64_t r = 0; r < len; r++) {
            const int drop = r < nt ? r % (h + 2) == 1 : extra > 0 ? (extra--, 1) : 0;
            if (!drop) kl[h * n_keep + n++] = (int32_t)r;
        }
        cr_assert_eq(n, n_keep, "head %d keep list", h);
    }
    /* the dense cache follows the same list */
    be->ops->gather_heads(be, k, (int64_t)n_kv * hd, n_kv, hd, kl, n_keep);
    cr_assert_eq(kv_thin_compact(be, st, kl, n_keep, &err), PLM_OK);
    *len_out = n_keep;
    free(kl);
    free(chan);
}

Test(think, thin_attention_equals_dense_attention_over_zeroed_keys)
{
    rng = 23;
    const struct {
        int nh, nkv, hd, keep;
        int64_t len, nt, tq;
    } cases[] = {{4, 2, 16, 10, 40, 30, 1}, {6, 2, 32, 19, 60, 44, 3}, {3, 3, 20, 20, 30, 20, 1},
                 {8, 1, 64, 5, 70, 10, 2}};
    plm_backend *be = cpu_backend();
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
        const int nh = cases[ci].nh, nkv = cases[ci].nkv, hd = cases[ci].hd;
        int64_t len0 = cases[ci].len, len;
        float *k = rand_vec((size_t)(len0 * nkv * hd)), *v = rand_vec((size_t)(len0 * nkv * hd));
        plm_kv_thin st;
        make_store(be, &st, k, len0, nkv, hd, cases[ci].keep, cases[ci].nt, &len);
        if (nkv > 1)
            cr_assert_neq(st.h_n_thin[0], st.h_n_thin[1], "case %zu: the heads' thin prefixes "
                          "should differ", ci);
        const int64_t tq = cases[ci].tq, n = tq * nh * hd;
        float *q = rand_vec((size_t)n), *got = malloc((size_t)n * 4), *want = malloc((size_t)n * 4);
        float *ref = malloc((size_t)n * 4);
        float *z = zeroed_keys(k, len, nkv, hd, &st);
        plm_attn_args a = args(got, q, k, v, tq, len, nh, nkv, hd);
        plm_error err;
        cr_assert_eq(kv_thin_attend(be, &a, &st, &err), PLM_OK);
        a.out = ref;
        cr_assert_eq(kv_thin_attention_ref(&a, &st, &err), PLM_OK);
        a.out = want;
        a.k = z;
        be->ops->attention(be, &a);
        cr_assert_arr_eq(got, want, (size_t)n * 4, "case %zu: thin attention differs from dense "
                         "attention over zeroed keys", ci);
        cr_assert_lt(rel_l2(got, ref, (size_t)n), 1e-5, "case %zu vs the reference", ci);
        /* scores likewise */
        float *pg = malloc((size_t)(nh * len) * 4), *pw = malloc((size_t)(nh * len) * 4);
        a.k = k;
        a.out = pg;
        cr_assert_eq(kv_thin_probs(be, &a, &st, &err), PLM_OK);
        a.k = z;
        a.out = pw;
        be->ops->attn_probs(be, &a, 1);
        cr_assert_arr_eq(pg, pw, (size_t)(nh * len) * 4, "case %zu: scores differ", ci);
        kv_thin_release(be, &st);
        free(k);
        free(v);
        free(q);
        free(got);
        free(want);
        free(ref);
        free(z);
        free(pg);
        free(pw);
    }
    plm_backend_free(be);
}

Test(think, compaction_keeps_each_heads_thin_prefix)
{
    rng = 31;
    plm_backend *be = cpu_backend();
    const int nkv = 3, hd = 12, keep = 7;
    const int64_t len0 = 24, nt = 16;
    float *k = rand_vec((size_t)(len0 * nkv * hd)), *orig = malloc((size_t)(len0 * nkv * hd) * 4);
    memcpy(orig, k, (size_t)(len0 * nkv * hd) * 4);
    plm_kv_thin st;
    int64_t len;
    make_store(be, &st, k, len0, nkv, hd, keep, nt, &len);
    /* after the keep list, thin row i of head h is the projection of the kept row, which the
     * dense cache (gathered with the same list) still holds in full */
    plm_error err;
    float *full = malloc((size_t)(len * nkv * hd) * 4);
    memcpy(full, k, (size_t)(len * nkv * hd) * 4);
    cr_assert_eq(kv_thin_download(be, &st, full, nkv * hd, &err), PLM_OK);
    for (int h = 0; h < nkv; h++) {
        int32_t want = 0;
        for (int64_t r = 0; r < nt; r++) want += r % (h + 2) != 1;
        cr_assert_eq(st.h_n_thin[h], want, "head %d holds %d thin rows", h, st.h_n_thin[h]);
        for (int64_t r = 0; r < len; r++) {
            const float *x = k + (r * nkv + h) * hd, *y = full + (r * nkv + h) * hd;
            for (int d = 0; d < hd; d++) {
                int kept = 0;
                for (int c = 0; c < keep; c++) kept |= st.h_chan[h * keep + c] == d;
                const float e = r < st.h_n_thin[h] && !kept ? 0.0f : x[d];
                cr_assert_eq(y[d], e, "head %d row %lld channel %d", h, (long long)r, d);
            }
        }
    }
    kv_thin_release(be, &st);
    plm_backend_free(be);
    free(k);
    free(orig);
    free(full);
}

/* Merges read each row in its form (thin: zero in the pruned channels) and write dst's form. */
Test(think, merges_read_and_write_each_rows_form)
{
    rng = 37;
    plm_backend *be = cpu_backend();
    const int nkv = 2, hd = 10, keep = 6;
    const int64_t len = 12, nt = 6;
    float *k = rand_vec((size_t)(len * nkv * hd));
    plm_kv_thin st;
    plm_error err;
    int32_t chan[2 * 6] = {0, 1, 3, 4, 8, 9, 2, 3, 5, 6, 7, 9};
    cr_assert_eq(kv_thin_init(&st, nkv, hd, keep, len, &err), PLM_OK);
    cr_assert_eq(kv_thin_alloc(be, &st, chan, &err), PLM_OK);
    cr_assert_eq(kv_thin_compress(be, &st, k, nkv * hd, nt, &err), PLM_OK);
    float *ref = zeroed_keys(k, len, nkv, hd, &st);
    /* thin <- thin, thin <- dense, dense <- thin, dense <- dense, a chain into one row */
    const int32_t head[] = {0, 1, 0, 1, 0, 0}, dst[] = {1, 2, 8, 9, 2, 2}, src[] = {3, 10, 4, 7,
                                                                                      1, 11};
    const float a[] = {0.5f, 0.25f, 0.75f, 0.5f, 0.6f, 0.9f}, b[] = {0.5f, 0.75f, 0.25f, 0.5f,
                                                                     0.4f, 0.1f};
    cr_assert_eq(kv_thin_mix(be, &st, k, nkv * hd, len, head, dst, src, a, b, 6, &err), PLM_OK);
    for (int m = 0; m < 6; m++) { /* the reference on full rows, thin dst projected */
        float *d = ref + (dst[m] * nkv + head[m]) * hd;
        const float *s = ref + (src[m] * nkv + head[m]) * hd;
        for (int e = 0; e < hd; e++) d[e] = a[m] * d[e] + b[m] * s[e];
    }
    float *got = malloc((size_t)(len * nkv * hd) * 4);
    memcpy(got, k, (size_t)(len * nkv * hd) * 4);
    cr_assert_eq(kv_thin_download(be, &st, got, nkv * hd, &err), PLM_OK);
    float *want = zeroed_keys(ref, len, nkv, hd, &st);
    cr_assert_arr_eq(got, want, (size_t)(len * nkv * hd) * 4);
    cr_assert_eq(kv_thin_mix(be, &st, k, nkv * hd, len, head, dst, (int32_t[]){12, 0, 0, 0, 0, 0},
                             a, b, 1, &err), PLM_E_ARG);
    cr_assert(strstr(err.msg, "outside 12 rows"), "%s", err.msg);
    kv_thin_release(be, &st);
    plm_backend_free(be);
    free(k);
    free(ref);
    free(got);
    free(want);
}

Test(think, store_bytes_and_refusals)
{
    plm_kv_thin st;
    plm_error err;
    cr_assert_eq(kv_thin_init(&st, 2, 8, 9, 10, &err), PLM_E_ARG);
    cr_assert(strstr(err.msg, "keeping 9 channels"), "%s", err.msg);
    cr_assert_eq(kv_thin_init(&st, 2, 8, 5, 10, &err), PLM_OK);
    plm_backend *be = cpu_backend();
    int32_t bad[10] = {0, 1, 1, 2, 3, 0, 1, 2, 3, 4};
    cr_assert_eq(kv_thin_alloc(be, &st, bad, &err), PLM_E_ARG);
    cr_assert(strstr(err.msg, "not ascending"), "%s", err.msg);
    int32_t good[10] = {0, 1, 2, 3, 4, 3, 4, 5, 6, 7};
    cr_assert_eq(kv_thin_alloc(be, &st, good, &err), PLM_OK);
    float k[10 * 16] = {0};
    cr_assert_eq(kv_thin_compress(be, &st, k, 16, 7, &err), PLM_OK);
    /* 7 rows x 2 heads x 5 floats + the two channel lists */
    cr_assert_eq(kv_thin_bytes(&st), (size_t)(7 * 2 * 5 * 4 + 2 * 5 * 4));
    cr_assert_eq(kv_thin_rows(&st), 14);
    kv_thin_release(be, &st);
    plm_backend_free(be);
}

Test(think, specs)
{
    kv_policy *p = NULL;
    plm_error err;
    cr_assert_eq(kv_policy_parse("think", &p, &err), PLM_OK, "%s", err.msg);
    kv_shape sh = {.n_layers = 1, .n_heads = 2, .n_kv = 1, .head_dim = 10, .n_prompt = 40,
                   .cap = 50, .max_new = 10};
    cr_assert_eq(kv_policy_begin(p, &sh, &err), PLM_OK);
    cr_assert_eq(kv_budget(p), INT64_MAX, "think must not turn its ratio into a row budget");
    /* a prefill view: 40 rows, queries 40; recent 32 by default leaves 8 thin rows */
    rng = 41;
    float *q = rand_vec(40 * 20), *k = rand_vec(40 * 10);
    kv_view v = {.layer = 0, .prefill = 1, .len = 40, .n_new = 40, .q = q, .n_q = 40, .k = k};
    kv_plan pl = {.n_keep = -1};
    cr_assert_eq(p->ops->needs(p, 0, 1, 0), KV_NEED_Q | KV_NEED_KV);
    cr_assert_eq(p->ops->needs(p, 0, 0, 3), 0);
    cr_assert_eq(p->ops->plan(p, &v, &pl, &err), PLM_OK);
    cr_assert_eq(pl.n_chan, 6); /* ratio 0.4 of 10 */
    cr_assert_eq(pl.chan_upto, 8);
    cr_assert_eq(pl.n_keep, -1);
    kv_policy_free(p);
    free(q);
    free(k);
    const struct {
        const char *spec, *msg;
    } bad[] = {{"think:ratio=1", "ratio"}, {"think:budget=8", "budget and sink do not apply"},
               {"think:window=0", "window"}, {"think:keep=3", "no parameter 'keep'"}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        cr_assert_neq(kv_policy_parse(bad[i].spec, &p, &err), PLM_OK, "%s", bad[i].spec);
        cr_assert(strstr(err.msg, bad[i].msg), "%s: '%s'", bad[i].spec, err.msg);
    }
    cr_assert_eq(kv_policy_parse("h2o:budget=8+think:ratio=0.5,recent=4", &p, &err), PLM_OK,
                 "%s", err.msg);
    cr_assert(p && p->next && p->next->ops == &kv_think_ops);
    kv_policy_free(p);
}
