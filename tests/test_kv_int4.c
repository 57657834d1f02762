/* The int4 KV store (prune/kv_int4.h) and its policy (prune/kv_kivi.c) on the CPU: the
 * quantiser's round-trip bound, KIVI's grouping (keys per channel over tokens, values per token
 * over channels), when rows move into the store, the CPU ops against dense attention over the
 * dequantised cache (bit for bit) and against float attention (a stated tolerance),
 * compaction, merges, byte accounting and specs. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend_kvstore.h"
#include "prune/kv.h"
#include "prune/kv_int4.h"
#include "tests/support/compare.h"
#include "tests/support/kv_store.h"

Test(int4, round_trip_error_is_at_most_half_a_step)
{
    rng = 7;
    for (int trial = 0; trial < 200; trial++) {
        const int n = 1 + trial % 64;
        const float spread = trial % 3 == 0 ? 1e-3f : trial % 3 == 1 ? 1.0f : 300.0f;
        float x[64];
        for (int i = 0; i < n; i++) x[i] = spread * frand() + (float)(trial % 5);
        float mn, sc;
        kv_int4_params(x, n, 1, &mn, &sc);
        for (int i = 0; i < n; i++) {
            const int c = kv_int4_code(x[i], mn, sc);
            cr_assert(c >= 0 && c <= 15);
            const float y = kv_int4_value(c, mn, sc);
            /* half a step, plus the float rounding of (x - mn) / sc and of c * sc + mn */
            const double bound = 0.5 * sc + 4e-7 * (fabs(mn) + 15.0 * sc);
            cr_assert_leq(fabs((double)y - x[i]), bound, "trial %d: %g -> %d -> %g (mn %g, sc "
                          "%g)", trial, x[i], c, y, mn, sc);
        }
        /* the minimum is code 0 and comes back exactly */
        int imin = 0;
        for (int i = 1; i < n; i++)
            if (x[i] < x[imin]) imin = i;
        cr_assert_eq(kv_int4_code(x[imin], mn, sc), 0);
        cr_assert_eq(kv_int4_value(0, mn, sc), x[imin]);
    }
    /* a constant group: scale 0, every value exact */
    float c[5] = {2.5f, 2.5f, 2.5f, 2.5f, 2.5f}, mn, sc;
    kv_int4_params(c, 5, 1, &mn, &sc);
    cr_assert_eq(sc, 0.0f);
    cr_assert_eq(kv_int4_value(kv_int4_code(2.5f, mn, sc), mn, sc), 2.5f);
    /* outside the range clamps to the ends */
    kv_int4_params((float[]){0.0f, 15.0f}, 2, 1, &mn, &sc);
    cr_assert_eq(kv_int4_code(-3.0f, mn, sc), 0);
    cr_assert_eq(kv_int4_code(99.0f, mn, sc), 15);
    cr_assert_eq(kv_int4_code(7.5f, mn, sc), 8); /* half to even: 7.5 -> 8 */
    cr_assert_eq(kv_int4_code(6.5f, mn, sc), 6);
}

/* Keys per channel over a group of tokens, values per token over a group of channels: a loud
 * key channel does not blur the quiet ones, and every stored row decodes within half a step
 * of its own group. */
Test(int4, keys_per_channel_values_per_token)
{
    rng = 11;
    plm_backend *be = cpu_backend();
    const int nkv = 2, hd = 16, group = 8;
    const int64_t len = 24, stride = nkv * hd;
    float *k = rand_vec((size_t)(len * stride)), *v = rand_vec((size_t)(len * stride));
    for (int64_t r = 0; r < len; r++) k[r * stride + 3] = 100.0f + 50.0f * frand(); /* outlier */
    plm_kv_int4 st;
    plm_error err;
    cr_assert_eq(kv_int4_init(&st, nkv, hd, group, len, &err), PLM_OK);
    cr_assert_eq(st.vgroup, 8);
    cr_assert_eq(st.n_vg, 2);
    cr_assert_eq(kv_int4_alloc(be, &st, &err), PLM_OK);
    cr_assert_eq(kv_int4_advance(be, &st, k, v, stride, len, 0, &err), PLM_OK);
    cr_assert_eq(st.h_n_q[0], 24);
    cr_assert_eq(st.h_n_q[1], 24);
    float kd[16], vd[16];
    for (int h = 0; h < nkv; h++)
        for (int64_t r = 0; r < len; r++) {
            kv_int4_row_host(&st, r, h, kd, vd);
            cr_assert_eq(st.k_slot[r * nkv + h], r / group, "row %lld's key group", (long long)r);
            for (int d = 0; d < hd; d++) {
                /* the key's own group: rows of its token group, this channel */
                float lo = INFINITY, hi = -INFINITY;
                for (int64_t g = r / group * group; g < r / group * group + group; g++) {
                    const float x = k[g * stride + h * hd + d];
                    lo = x < lo ? x : lo;
                    hi = x > hi ? x : hi;
                }
                const float x = k[r * stride + h * hd + d];
                cr_assert_leq(fabsf(kd[d] - x), (hi - lo) / 30.0f * 1.0001f + 1e-6f,
                              "K row %lld head %d ch %d", (long long)r, h, d);
                lo = INFINITY;
                hi = -INFINITY;
                for (int e = d / 8 * 8; e < d / 8 * 8 + 8; e++) {
                    const float y = v[r * stride + h * hd + e];
                    lo = y < lo ? y : lo;
                    hi = y > hi ? y : hi;
                }
                cr_assert_leq(fabsf(vd[d] - v[r * stride + h * hd + d]),
                              (hi - lo) / 30.0f * 1.0001f + 1e-6f, "V row %lld head %d ch %d",
                              (long long)r, h, d);
            }
            /* the quiet channels keep their precision next to the loud channel 3 */
            if (h == 0) cr_assert_lt(fabsf(kd[4] - k[r * stride + 4]), 0.07f);
        }
    kv_int4_release(be, &st);
    plm_backend_free(be);
    free(k);
    free(v);
}

Test(int4, rows_move_in_whole_groups_behind_the_float_window)
{
    plm_backend *be = cpu_backend();
    const int nkv = 1, hd = 8;
    plm_kv_int4 st;
    plm_error err;
    float *k = calloc(100 * 8, 4), *v = calloc(100 * 8, 4);
    cr_assert_eq(kv_int4_init(&st, nkv, hd, 8, 100, &err), PLM_OK);
    cr_assert_eq(kv_int4_alloc(be, &st, &err), PLM_OK);
    cr_assert_eq(kv_int4_advance(be, &st, k, v, 8, 17, 10, &err), PLM_OK);
    cr_assert_eq(st.h_n_q[0], 0); /* 17 - 10 < 8 */
    cr_assert_eq(kv_int4_advance(be, &st, k, v, 8, 50, 10, &err), PLM_OK);
    cr_assert_eq(st.h_n_q[0], 40);
    for (int64_t len = 51; len < 58; len++) {
        cr_assert_eq(kv_int4_advance(be, &st, k, v, 8, len, 10, &err), PLM_OK);
        cr_assert_eq(st.h_n_q[0], 40, "len %lld", (long long)len);
    }
    cr_assert_eq(kv_int4_advance(be, &st, k, v, 8, 58, 10, &err), PLM_OK);
    cr_assert_eq(st.h_n_q[0], 48);
    cr_assert_eq(st.h_next[0], 6);
    /* 48 rows of 8 codes + slot + 1 value group, 6 live key groups of 8 channels */
    cr_assert_eq(kv_int4_bytes(&st), (size_t)(48 * (8 + 4 + 8) + 6 * 8 * 8));
    kv_int4_release(be, &st);
    plm_backend_free(be);
    free(k);
    free(v);
}

/* Dense attention over the dequantised cache: the CPU op must equal it bit for bit; and the
 * stored cache must stay close to float attention over the original one. */
Test(int4, attention_equals_dense_attention_over_dequantised_rows)
{
    rng = 19;
    const struct {
        int nh, nkv, hd, group;
        int64_t len, recent, tq;
    } cases[] = {{4, 2, 16, 8, 40, 4, 1}, {6, 2, 32, 32, 100, 8, 3}, {2, 1, 64, 16, 70, 0, 1},
                 {3, 3, 24, 12, 37, 5, 2}};
    plm_backend *be = cpu_backend();
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
        const int nh = cases[ci].nh, nkv = cases[ci].nkv, hd = cases[ci].hd;
        const int64_t len = cases[ci].len, stride = nkv * hd, tq = cases[ci].tq;
        float *k = rand_vec((size_t)(len * stride)), *v = rand_vec((size_t)(len * stride));
        float *q = rand_vec((size_t)(tq * nh * hd));
        plm_kv_int4 st;
        plm_error err;
        cr_assert_eq(kv_int4_init(&st, nkv, hd, cases[ci].group, len, &err), PLM_OK, "%s",
                     err.msg);
        cr_assert_eq(kv_int4_alloc(be, &st, &err), PLM_OK);
        cr_assert_eq(kv_int4_advance(be, &st, k, v, stride, len, cases[ci].recent, &err), PLM_OK);
        cr_assert_gt(st.h_n_q[0], 0);
        float *kd = malloc((size_t)(len * stride) * 4), *vd = malloc((size_t)(len * stride) * 4);
        memcpy(kd, k, (size_t)(len * stride) * 4);
        memcpy(vd, v, (size_t)(len * stride) * 4);
        cr_assert_eq(kv_int4_download(be, &st, kd, vd, stride, &err), PLM_OK);
        const size_t n = (size_t)(tq * nh * hd);
        float *got = malloc(n * 4), *want = malloc(n * 4), *fl = malloc(n * 4);
        float *ref = malloc(n * 4);
        plm_attn_args a = args(got, q, k, v, tq, len, nh, nkv, hd);
        cr_assert_eq(kv_int4_attend(be, &a, &st, &err), PLM_OK);
        a.out = ref;
        cr_assert_eq(kv_int4_attention_ref(&a, &st, &err), PLM_OK);
        a.out = fl;
        be->ops->attention(be, &a); /* float attention over the original rows */
        a.out = want;
        a.k = kd;
        a.v = vd;
        be->ops->attention(be, &a);
        cr_assert_arr_eq(got, want, n * 4, "case %zu: int4 attention differs from dense "
                         "attention over the dequantised rows", ci);
        cr_assert_lt(rel_l2(got, ref, n), 1e-5, "case %zu vs the reference", ci);
        /* Uniform K and V: a code is off by at most half a step, 1/30 of its group's range,
         * an RMS error of 1/15 of the values' RMS; the output, a weighted mean of values, stays
         * under 0.1 relative error (measured 0.038-0.062 on these cases). */
        const double e = rel_l2(got, fl, n);
        cr_assert_lt(e, 0.1, "case %zu: int4 vs float attention rel err %g", ci, e);
        float *pg = malloc((size_t)(nh * len) * 4), *pw = malloc((size_t)(nh * len) * 4);
        a.k = k;
        a.v = v;
        a.out = pg;
        cr_assert_eq(kv_int4_probs(be, &a, &st, &err), PLM_OK);
        a.k = kd;
        a.out = pw;
        be->ops->attn_probs(be, &a, 1);
        cr_assert_arr_eq(pg, pw, (size_t)(nh * len) * 4, "case %zu: scores differ", ci);
        kv_int4_release(be, &st);
        free(k);
        free(v);
        free(q);
        free(kd);
        free(vd);
        free(got);
        free(want);
        free(fl);
        free(ref);
        free(pg);
        free(pw);
    }
    plm_backend_free(be);
}

Test(int4, compaction_moves_stored_rows_and_releases_key_groups)
{
    rng = 29;
    plm_backend *be = cpu_backend();
    const int nkv = 2, hd = 8, group = 4;
    const int64_t len = 20, stride = nkv * hd;
    float *k = rand_vec((size_t)(len * stride)), *v = rand_vec((size_t)(len * stride));
    plm_kv_int4 st;
    plm_error err;
    cr_assert_eq(kv_int4_init(&st, nkv, hd, group, len, &err), PLM_OK);
    cr_assert_eq(kv_int4_alloc(be, &st, &err), PLM_OK);
    cr_assert_eq(kv_int4_advance(be, &st, k, v, stride, len, 4, &err), PLM_OK);
    cr_assert_eq(st.h_n_q[0], 16);
    float *before_k = malloc((size_t)(len * stride) * 4);
    float *before_v = malloc((size_t)(len * stride) * 4);
    memcpy(before_k, k, (size_t)(len * stride) * 4);
    memcpy(before_v, v, (size_t)(len * stride) * 4);
    cr_assert_eq(kv_int4_download(be, &st, before_k, before_v, stride, &err), PLM_OK);
    /* head 0 drops key group 1 whole (rows 4..7) and row 17; head 1 rows 0 and 9..12 */
    const int64_t n_keep = 15;
    int32_t keep[2 * 15];
    int n0 = 0, n1 = 0;
    for (int32_t r = 0; r < len; r++) {
        if (!(r >= 4 && r < 8) && r != 17) keep[n0++] = r;
        if (r != 0 && !(r >= 9 && r <= 12)) keep[15 + n1++] = r;
    }
    cr_assert_eq(n0, 15);
    cr_assert_eq(n1, 15);
    be->ops->gather_heads(be, k, stride, nkv, hd, keep, n_keep);
    be->ops->gather_heads(be, v, stride, nkv, hd, keep, n_keep);
    cr_assert_eq(kv_int4_compact(be, &st, keep, n_keep, &err), PLM_OK);
    cr_assert_eq(st.h_n_q[0], 12);
    cr_assert_eq(st.h_n_q[1], 11);
    float *after_k = malloc((size_t)(n_keep * stride) * 4);
    float *after_v = malloc((size_t)(n_keep * stride) * 4);
    memcpy(after_k, k, (size_t)(n_keep * stride) * 4);
    memcpy(after_v, v, (size_t)(n_keep * stride) * 4);
    cr_assert_eq(kv_int4_download(be, &st, after_k, after_v, stride, &err), PLM_OK);
    for (int h = 0; h < nkv; h++)
        for (int64_t i = 0; i < n_keep; i++) {
            const int64_t r = keep[h * n_keep + i];
            cr_assert_arr_eq(after_k + (i * nkv + h) * hd, before_k + (r * nkv + h) * hd, hd * 4,
                             "K head %d row %lld", h, (long long)i);
            cr_assert_arr_eq(after_v + (i * nkv + h) * hd, before_v + (r * nkv + h) * hd, hd * 4,
                             "V head %d row %lld", h, (long long)i);
        }
    /* head 0: groups 0, 2, 3 live (group 1 went whole); head 1: all four (one row each left) */
    const size_t row = 8 + 4 + 2 * 8; /* codes, slot, two value groups (4 channels each) */
    cr_assert_eq(kv_int4_bytes(&st), (12 + 11) * row + (3 + 4) * 8 * 8, "%zu bytes",
                 kv_int4_bytes(&st));
    kv_int4_release(be, &st);
    plm_backend_free(be);
    free(k);
    free(v);
    free(before_k);
    free(before_v);
    free(after_k);
    free(after_v);
}

/* Merges into a stored row re-encode it: keys against its key group (clamped to the group's
 * range), values with fresh parameters; into a float row they are exact float arithmetic on
 * the dequantised source. */
Test(int4, merges_re_encode_stored_rows)
{
    rng = 43;
    plm_backend *be = cpu_backend();
    const int nkv = 2, hd = 8, group = 4;
    const int64_t len = 12, stride = nkv * hd;
    float *k = rand_vec((size_t)(len * stride)), *v = rand_vec((size_t)(len * stride));
    plm_kv_int4 st;
    plm_error err;
    cr_assert_eq(kv_int4_init(&st, nkv, hd, group, len, &err), PLM_OK);
    cr_assert_eq(kv_int4_alloc(be, &st, &err), PLM_OK);
    cr_assert_eq(kv_int4_advance(be, &st, k, v, stride, len, 4, &err), PLM_OK);
    cr_assert_eq(st.h_n_q[0], 8);
    const int32_t head[] = {0, 1, 0, 1}, dst[] = {2, 9, 5, 10}, src[] = {10, 3, 1, 11};
    const float a[] = {0.5f, 0.25f, 0.7f, 0.5f}, b[] = {0.5f, 0.75f, 0.3f, 0.5f};
    /* the reference: dequantised rows, float arithmetic, stored dst re-encoded */
    float *rk = malloc((size_t)(len * stride) * 4), *rv = malloc((size_t)(len * stride) * 4);
    memcpy(rk, k, (size_t)(len * stride) * 4);
    memcpy(rv, v, (size_t)(len * stride) * 4);
    cr_assert_eq(kv_int4_download(be, &st, rk, rv, stride, &err), PLM_OK);
    for (int m = 0; m < 4; m++) {
        float *dk = rk + (dst[m] * nkv + head[m]) * hd, *dv = rv + (dst[m] * nkv + head[m]) * hd;
        const float *sk = rk + (src[m] * nkv + head[m]) * hd;
        const float *sv = rv + (src[m] * nkv + head[m]) * hd;
        for (int d = 0; d < hd; d++) {
            dk[d] = a[m] * dk[d] + b[m] * sk[d];
            dv[d] = a[m] * dv[d] + b[m] * sv[d];
        }
        if (dst[m] < st.h_n_q[head[m]]) { /* re-encode as the store would */
            const int slot = st.k_slot[dst[m] * nkv + head[m]];
            const float *mn = st.k_mn + (head[m] * st.n_slots + slot) * hd;
            const float *sc = st.k_sc + (head[m] * st.n_slots + slot) * hd;
            for (int d = 0; d < hd; d++)
                dk[d] = kv_int4_value(kv_int4_code(dk[d], mn[d], sc[d]), mn[d], sc[d]);
            for (int g = 0; g < hd; g += st.vgroup) { /* values: per row, vgroup channels */
                float vmn, vsc;
                kv_int4_params(dv + g, st.vgroup, 1, &vmn, &vsc);
                for (int d = g; d < g + st.vgroup; d++)
                    dv[d] = kv_int4_value(kv_int4_code(dv[d], vmn, vsc), vmn, vsc);
            }
        }
    }
    cr_assert_eq(kv_int4_mix(be, &st, k, v, stride, len, head, dst, src, a, b, 4, &err), PLM_OK);
    cr_assert_eq(kv_int4_download(be, &st, k, v, stride, &err), PLM_OK);
    cr_assert_arr_eq(k, rk, (size_t)(len * stride) * 4);
    cr_assert_arr_eq(v, rv, (size_t)(len * stride) * 4);
    cr_assert_eq(kv_int4_mix(be, &st, k, v, stride, len, head, dst, (int32_t[]){-1}, a, b, 1,
                             &err), PLM_E_ARG);
    cr_assert(strstr(err.msg, "outside 12 rows"), "%s", err.msg);
    kv_int4_release(be, &st);
    plm_backend_free(be);
    free(k);
    free(v);
    free(rk);
    free(rv);
}

Test(int4, store_refusals)
{
    plm_kv_int4 st;
    plm_error err;
    cr_assert_eq(kv_int4_init(&st, 2, 15, 8, 10, &err), PLM_E_ARG);
    cr_assert(strstr(err.msg, "even"), "%s", err.msg);
    cr_assert_eq(kv_int4_init(&st, 2, 80, 32, 10, &err), PLM_E_ARG);
    cr_assert(strstr(err.msg, "does not divide head_dim 80"), "%s", err.msg);
    cr_assert_eq(kv_int4_init(&st, 2, 80, 16, 10, &err), PLM_OK);
    cr_assert_eq(kv_int4_init(&st, 2, 16, 64, 10, &err), PLM_OK); /* one value group per row */
    cr_assert_eq(st.vgroup, 16);
    cr_assert_eq(kv_int4_init(&st, 2, 16, 0, 10, &err), PLM_E_ARG);
}

Test(int4, specs)
{
    kv_policy *p = NULL;
    plm_error err;
    cr_assert_eq(kv_policy_parse("int4", &p, &err), PLM_OK, "%s", err.msg);
    kv_plan pl = {.n_keep = -1};
    kv_view v = {.layer = 0, .len = 5};
    cr_assert_eq(p->ops->plan(p, &v, &pl, &err), PLM_OK);
    cr_assert_eq(pl.quant_group, 32);
    cr_assert_eq(pl.quant_recent, 128);
    cr_assert_eq(pl.n_keep, -1);
    kv_policy_free(p);
    cr_assert_eq(kv_policy_parse("none+int4:group=8,residual=4", &p, &err), PLM_OK, "%s",
                 err.msg);
    cr_assert(p && p->ops == &kv_int4_ops && !p->next);
    kv_policy_free(p);
    cr_assert_eq(kv_policy_parse("scissorhands:budget=64+int4", &p, &err), PLM_OK, "%s", err.msg);
    cr_assert(p && p->next && p->next->ops == &kv_int4_ops);
    kv_policy_free(p);
    /* a policy file joins the chain as a part of its own */
    char path[] = "/tmp/plm_kv_int4_specXXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    FILE *f = fdopen(fd, "w");
    fputs("# eviction\nh2o:budget=16\n", f);
    fclose(f);
    char spec[128];
    snprintf(spec, sizeof spec, "@%s+int4:group=16", path);
    cr_assert_eq(kv_policy_parse(spec, &p, &err), PLM_OK, "%s", err.msg);
    cr_assert(p && p->ops == &kv_h2o_ops && p->next && p->next->ops == &kv_int4_ops);
    kv_policy_free(p);
    remove(path);
    const struct {
        const char *spec, *msg;
    } bad[] = {{"int4:group=0", "group"}, {"int4:group=2.5", "whole numbers"},
               {"int4:budget=8", "do not apply"}, {"int4:bits=2", "no parameter 'bits'"}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        cr_assert_neq(kv_policy_parse(bad[i].spec, &p, &err), PLM_OK, "%s", bad[i].spec);
        cr_assert(strstr(err.msg, bad[i].msg), "%s: '%s'", bad[i].spec, err.msg);
    }
}
