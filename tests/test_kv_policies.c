/* Scissorhands, KVCrush, EMS and D2O driven by hand-made attention patterns whose answer is
 * known: a prefill pass, then decode steps, with a little cache that applies each plan. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prune/kv_accum.h"

#define CAP 32
#define MAXH 4
#define MAXD 4

/* Parses a spec the way --kv does, checking it names the policy under test. */
static plm_status make(const kv_policy_ops *ops, const char *text, kv_policy **out,
                       plm_error *err)
{
    PLM_TRY(kv_policy_parse(text, out, err));
    cr_assert(*out && (*out)->ops == ops && !(*out)->next, "%s is not one %s policy", text,
              ops->name);
    return PLM_OK;
}

/* One layer of a cache: positions and keys per kv head, as api/kv_glue.c would keep them. */
typedef struct cache {
    int n_kv, hd;
    int64_t len;
    int32_t pos[MAXH * CAP];
    float k[CAP * MAXH * MAXD];
} cache;

static void append(cache *c, int64_t n, const float *keys)
{
    for (int64_t i = 0; i < n; i++) {
        for (int h = 0; h < c->n_kv; h++) c->pos[h * CAP + c->len] = (int32_t)c->len;
        if (keys) memcpy(c->k + c->len * c->n_kv * c->hd, keys + i * c->n_kv * c->hd,
                         (size_t)(c->n_kv * c->hd) * sizeof(float));
        c->len++;
    }
}

/* A position counter that keeps growing after evictions. */
static void append_at(cache *c, int32_t position, const float *keys)
{
    for (int h = 0; h < c->n_kv; h++) c->pos[h * CAP + c->len] = position;
    if (keys) memcpy(c->k + c->len * c->n_kv * c->hd, keys, (size_t)(c->n_kv * c->hd) * 4);
    c->len++;
}

static void apply(cache *c, const kv_plan *pl)
{
    const int64_t rs = c->n_kv * c->hd;
    for (int64_t i = 0; i < pl->n_merge; i++) {
        const kv_merge *m = &pl->merge[i];
        float *d = c->k + m->dst * rs + m->head * c->hd;
        const float *s = c->k + m->src * rs + m->head * c->hd;
        for (int j = 0; j < c->hd; j++) d[j] = m->a * d[j] + m->b * s[j];
    }
    if (pl->n_keep < 0) return;
    float nk[CAP * MAXH * MAXD];
    for (int h = 0; h < c->n_kv; h++) {
        const int32_t *kp = pl->keep + h * pl->n_keep;
        for (int64_t i = 1; i < pl->n_keep; i++) cr_assert_lt(kp[i - 1], kp[i], "not ascending");
        for (int64_t i = 0; i < pl->n_keep; i++) {
            c->pos[h * CAP + i] = c->pos[h * CAP + kp[i]];
            memcpy(nk + i * rs + h * c->hd, c->k + kp[i] * rs + h * c->hd, (size_t)c->hd * 4);
        }
    }
    memcpy(c->k, nk, (size_t)(pl->n_keep * rs) * sizeof(float));
    c->len = pl->n_keep;
}

static kv_plan run(kv_policy *p, cache *c, int layer, int prefill, int64_t step, int64_t n_new,
                   const float *attn, const float *win, int64_t n_win)
{
    kv_view v = {.layer = layer, .prefill = prefill, .step = step, .len = c->len,
                 .n_new = n_new, .pos = c->pos, .attn = attn, .attn_win = win, .n_win = n_win,
                 .k = c->k};
    kv_plan pl = {.n_keep = -1};
    plm_error err;
    cr_assert_eq(p->ops->plan(p, &v, &pl, &err), PLM_OK, "%s", err.msg);
    apply(c, &pl);
    return pl;
}

static int has_pos(const cache *c, int h, int32_t position)
{
    for (int64_t r = 0; r < c->len; r++)
        if (c->pos[h * CAP + r] == position) return 1;
    return 0;
}

static void expect_error(const kv_policy_ops *ops, const char *spec, const char *msg)
{
    kv_policy *p = NULL;
    plm_error err;
    cr_assert_neq(make(ops, spec, &p, &err), PLM_OK, "%s accepted", spec);
    cr_assert(strstr(err.msg, msg), "%s: %s", spec, err.msg);
}

/* ---- Scissorhands ------------------------------------------------------------------------------ */
Test(kv_scissorhands, behaviour)
{
    kv_policy *p;
    plm_error err;
    cr_assert_eq(make(&kv_scissorhands_ops, "scissorhands:budget=6,sink=1,recent=2,drop=1,"
                      "history=8", &p, &err), PLM_OK, "%s", err.msg);
    kv_shape sh = {.n_layers = 1, .n_heads = 2, .n_kv = 1, .head_dim = 2, .n_prompt = 8,
                   .cap = CAP, .max_new = 4};
    cr_assert_eq(kv_policy_begin(p, &sh, &err), PLM_OK, "%s", err.msg);
    cache c = {.n_kv = 1, .hd = 2};
    append(&c, 8, NULL);
    /* prompt: every row gets half its uniform share but row 3 (3x): only 3 is never below */
    float share[8], attn[2 * CAP];
    kv_uniform_share(8, 8, share);
    for (int h = 0; h < 2; h++)
        for (int r = 0; r < 8; r++) attn[h * 8 + r] = share[r] * (r == 3 ? 3.0f : 0.5f);
    kv_plan pl = run(p, &c, 0, 1, 0, 8, attn, NULL, 0);
    /* over budget: down to B - m = 5: sink 0, recent 6 7, row 3 (count 0), then the newest of
     * the tied rows 1 2 4 5 (count 1 each) */
    cr_assert_eq(pl.n_keep, 5);
    int32_t want1[] = {0, 3, 5, 6, 7};
    for (int i = 0; i < 5; i++) cr_assert_eq(c.pos[i], want1[i], "row %d: %d", i, c.pos[i]);

    /* decode: position 3 takes 0.6 of every query, the rest share 0.4 */
    for (int step = 0; step < 2; step++) {
        append_at(&c, 8 + step, NULL);
        for (int h = 0; h < 2; h++)
            for (int64_t r = 0; r < c.len; r++)
                attn[h * c.len + r] = c.pos[r] == 3 ? 0.6f : 0.4f / (float)(c.len - 1);
        pl = run(p, &c, 0, 0, step, 1, attn, NULL, 0);
        cr_assert(c.len <= 6, "budget exceeded: %lld", (long long)c.len);
    }
    /* the second step overflowed (7 > 6): 5 kept, the heavy hitter among them; 5 6 7 tie at 3
     * unimportant observations, so the newest (7) stays */
    cr_assert_eq(pl.n_keep, 5);
    int32_t want2[] = {0, 3, 7, 8, 9};
    for (int i = 0; i < 5; i++) cr_assert_eq(c.pos[i], want2[i], "row %d: %d", i, c.pos[i]);
    cr_assert_eq(p->ops->needs(p, 0, 0, 1), KV_NEED_ATTN);
    kv_policy_free(p);

    expect_error(&kv_scissorhands_ops, "scissorhands:budget=8,history=300",
                 "history=300, expected a number from 1 to 256");
    expect_error(&kv_scissorhands_ops, "scissorhands:drop=2", "needs budget=N");
    expect_error(&kv_scissorhands_ops, "scissorhands:budget=8,drop=1.5", "whole numbers");
    cr_assert_eq(make(&kv_scissorhands_ops, "scissorhands:budget=4,recent=4", &p, &err), PLM_OK);
    cr_assert_eq(kv_policy_begin(p, &sh, &err), PLM_E_ARG);
    cr_assert(strstr(err.msg, "leave no room in the budget of 4 rows"), "%s", err.msg);
    kv_policy_free(p);
}

/* ---- KVCrush ----------------------------------------------------------------------------------- */
Test(kv_kvcrush, behaviour)
{
    kv_policy *p;
    plm_error err;
    cr_assert_eq(make(&kv_kvcrush_ops, "kvcrush:budget=6,share=0.34,anchor=mean,sink=1,recent=2",
                      &p, &err), PLM_OK, "%s", err.msg);
    kv_shape sh = {.n_layers = 1, .n_heads = 4, .n_kv = 2, .head_dim = 2, .n_prompt = 12,
                   .cap = CAP, .max_new = 4};
    cr_assert_eq(kv_policy_begin(p, &sh, &err), PLM_OK, "%s", err.msg);
    cache c = {.n_kv = 2, .hd = 2};
    append(&c, 12, NULL);
    /* rows 0 5 10 11 matter to every head; each head also favours two of the others (0.3;
     * row 7 only for head 2, at 0.5). Base selection (4 rows): sink 0, recent 10 11, row 5.
     * Evicted: 1 2 3 4 6 7 8 9 with head bits 1:1111 7:0010 8:0100 9:1001, the rest 0000;
     * the mean anchor is 0000, so the Hamming order is 2 3 4 6 | 7 8 | 9 | 1 and the two
     * representatives (stride 8/2) are 2 and 7: the head-2 specialist survives. */
    const int fav[4][2] = {{1, 9}, {1, 8}, {7, 1}, {1, 9}};
    float attn[4 * CAP];
    for (int h = 0; h < 4; h++)
        for (int r = 0; r < 12; r++) {
            float a = 0.1f;
            if (r == 0 || r == 5 || r == 10 || r == 11) a = 1.0f;
            if (r == fav[h][0] || r == fav[h][1]) a = (h == 2 && r == 7) ? 0.5f : 0.3f;
            attn[h * 12 + r] = a;
        }
    kv_plan pl = run(p, &c, 0, 1, 0, 12, attn, NULL, 0);
    cr_assert_eq(pl.n_keep, 6);
    int32_t want[] = {0, 2, 5, 7, 10, 11};
    for (int h = 0; h < 2; h++)
        for (int i = 0; i < 6; i++)
            cr_assert_eq(c.pos[h * CAP + i], want[i], "head %d row %d: %d", h, i,
                         c.pos[h * CAP + i]);
    /* decode: one more row, back to the budget, same tokens in both kv heads, sink and
     * recent kept */
    append_at(&c, 12, NULL);
    for (int h = 0; h < 4; h++)
        for (int64_t r = 0; r < c.len; r++) attn[h * c.len + r] = 1.0f / (float)c.len;
    pl = run(p, &c, 0, 0, 0, 1, attn, NULL, 0);
    cr_assert_eq(pl.n_keep, 6);
    cr_assert(!memcmp(c.pos, c.pos + CAP, 6 * sizeof(int32_t)));
    cr_assert(c.pos[0] == 0 && c.pos[4] == 11 && c.pos[5] == 12, "%d %d %d", c.pos[0], c.pos[4],
              c.pos[5]);
    /* kv heads holding different tokens (another policy ran first) are refused */
    c.pos[CAP + 1] = 3;
    append_at(&c, 13, NULL);
    kv_view v = {.layer = 0, .len = c.len, .n_new = 1, .pos = c.pos, .attn = attn};
    cr_assert_eq(p->ops->plan(p, &v, &pl, &err), PLM_E_ARG);
    cr_assert(strstr(err.msg, "must come first"), "%s", err.msg);
    kv_policy_free(p);

    expect_error(&kv_kvcrush_ops, "kvcrush:budget=8,anchor=middle",
                 "anchor=middle, expected one of random, mean, alternate, zeros, ones");
    expect_error(&kv_kvcrush_ops, "kvcrush:budget=8,share=2", "share=2, expected a number");
    expect_error(&kv_kvcrush_ops, "kvcrush:budget=8,shar=0.2", "has no parameter 'shar'");
}

/* ---- EMS --------------------------------------------------------------------------------------- */
Test(kv_ems, behaviour)
{
    kv_policy *p;
    plm_error err;
    cr_assert_eq(make(&kv_ems_ops, "ems:budget=4,sink=1,recent=1,window=2,sim=0.9", &p, &err),
                 PLM_OK, "%s", err.msg);
    kv_shape sh = {.n_layers = 1, .n_heads = 2, .n_kv = 2, .head_dim = 2, .n_prompt = 6,
                   .cap = CAP, .max_new = 4};
    cr_assert_eq(kv_policy_begin(p, &sh, &err), PLM_OK, "%s", err.msg);
    cr_assert_eq(p->ops->needs(p, 0, 1, 0), KV_NEED_ATTN | KV_NEED_KV | KV_NEED_WIN);
    cache c = {.n_kv = 2, .hd = 2};
    /* keys [row][head][2]: head 0's row 2 nearly duplicates row 1, row 4 resembles nothing;
     * in head 1 no evicted row resembles a kept one */
    const float keys[6][2][2] = {
        {{0, -1}, {-1, 0}},      {{1, 0}, {0, -1}},  {{0.99f, 0.01f}, {1, 0}},
        {{0, 1}, {-1, 0.1f}},    {{-1, -1}, {0, 1}}, {{0.5f, 0.5f}, {-0.1f, -1}}};
    append(&c, 6, &keys[0][0][0]);
    /* global score = attention / queries that saw the row (6 - r); no window attention */
    const float sums[6] = {0.6f, 2.5f, 0.4f, 1.2f, 0.2f, 0.5f};
    float attn[2 * CAP], win[2 * CAP] = {0};
    for (int h = 0; h < 2; h++)
        for (int r = 0; r < 6; r++) attn[h * 6 + r] = sums[r];
    kv_plan pl = run(p, &c, 0, 1, 0, 6, attn, win, 0);
    /* kept: sink 0, recent 5, the best of the rest: 1 (2.5/5 = 0.5) and 3 (1.2/3 = 0.4) */
    cr_assert_eq(pl.n_keep, 4);
    int32_t want[] = {0, 1, 3, 5};
    for (int h = 0; h < 2; h++)
        for (int i = 0; i < 4; i++) cr_assert_eq(c.pos[h * CAP + i], want[i]);
    /* one merge, head 0: row 2 into row 1, weights 0.5 and 0.4/4 = 0.1 normalised */
    cr_assert_eq(pl.n_merge, 1);
    cr_assert(pl.merge[0].head == 0 && pl.merge[0].dst == 1 && pl.merge[0].src == 2);
    cr_assert_float_eq(pl.merge[0].a, 0.5f / 0.6f, 1e-5);
    cr_assert_float_eq(pl.merge[0].b, 0.1f / 0.6f, 1e-5);
    /* the centre's key is now the weighted mean of the two */
    cr_assert_float_eq(c.k[1 * 4 + 0], (0.5f * 1 + 0.1f * 0.99f) / 0.6f, 1e-5);
    cr_assert_float_eq(c.k[1 * 4 + 1], (0.1f * 0.01f) / 0.6f, 1e-5);
    cr_assert_float_eq(c.k[1 * 4 + 2], 0.0f, 1e-6); /* head 1's row 1 untouched */
    cr_assert_float_eq(c.k[1 * 4 + 3], -1.0f, 1e-6);

    /* a decode step: back to 4 rows, sink and the new row kept */
    const float nk[2][2] = {{0.3f, 0.7f}, {0.6f, 0.2f}};
    append_at(&c, 6, &nk[0][0]);
    for (int h = 0; h < 2; h++)
        for (int64_t r = 0; r < c.len; r++) attn[h * c.len + r] = 0.2f;
    pl = run(p, &c, 0, 0, 0, 1, attn, NULL, 0);
    cr_assert_eq(pl.n_keep, 4);
    for (int h = 0; h < 2; h++)
        cr_assert(c.pos[h * CAP] == 0 && c.pos[h * CAP + 3] == 6);
    kv_policy_free(p);

    expect_error(&kv_ems_ops, "ems:budget=8,sim=2", "sim=2, expected a number from -1 to 1");
    expect_error(&kv_ems_ops, "ems:sim=0.5", "needs budget=N");
}

/* ---- D2O --------------------------------------------------------------------------------------- */
Test(kv_d2o, behaviour)
{
    kv_policy *p;
    plm_error err;
    cr_assert_eq(make(&kv_d2o_ops, "d2o:budget=5,sink=1,recent=1", &p, &err), PLM_OK, "%s",
                 err.msg);
    kv_shape sh = {.n_layers = 2, .n_heads = 2, .n_kv = 1, .head_dim = 2, .n_prompt = 8,
                   .cap = CAP, .max_new = 4};
    cr_assert_eq(kv_policy_begin(p, &sh, &err), PLM_OK, "%s", err.msg);
    cache c0 = {.n_kv = 1, .hd = 2}, c1 = {.n_kv = 1, .hd = 2};
    /* layer 0 keys: row 5 is row 3's twin, the others point away from every kept row */
    float keys[8][2];
    for (int r = 0; r < 8; r++) keys[r][0] = -1, keys[r][1] = 0;
    keys[0][0] = 0, keys[0][1] = 1;
    keys[3][0] = 1, keys[3][1] = 0;
    keys[5][0] = 2, keys[5][1] = 0.02f;
    append(&c0, 8, &keys[0][0]);
    append(&c1, 8, &keys[0][0]);
    /* layer 0 is peaked (row 3 takes most), layer 1 dense (every row the same) */
    float attn0[2 * CAP], attn1[2 * CAP];
    for (int h = 0; h < 2; h++)
        for (int r = 0; r < 8; r++) {
            attn0[h * 8 + r] = r == 3 ? 5.0f : 0.3f;
            attn1[h * 8 + r] = 1.0f;
        }
    cr_assert_eq(run(p, &c0, 0, 1, 0, 8, attn0, NULL, 0).n_keep, -1); /* the prompt stays */
    cr_assert_eq(run(p, &c1, 1, 1, 0, 8, attn1, NULL, 0).n_keep, -1);
    cr_assert_eq(p->ops->needs(p, 0, 1, 0), KV_NEED_ATTN);
    cr_assert_eq(p->ops->needs(p, 0, 0, 0), KV_NEED_ATTN | KV_NEED_KV);

    /* first decode step: budgets 10 * softmax(-[1, 0]) = 2.69 -> 3 and 7.31 -> 7 */
    const float k8[2] = {0, -1};
    append_at(&c0, 8, k8);
    append_at(&c1, 8, k8);
    for (int h = 0; h < 2; h++)
        for (int r = 0; r < 9; r++) attn0[h * 9 + r] = attn1[h * 9 + r] = 1.0f / 9;
    kv_plan pl = run(p, &c0, 0, 0, 0, 1, attn0, NULL, 0);
    /* layer 0 keeps sink 0, heavy 3, recent 8; of the six evicted, row 5 (cos 0.99995) beats
     * the threshold (the mean best similarity, 0.99995 / 6) and folds into row 3; the rest
     * (best cos 0) are dropped */
    cr_assert_eq(pl.n_keep, 3);
    cr_assert(c0.pos[0] == 0 && c0.pos[1] == 3 && c0.pos[2] == 8);
    cr_assert_eq(pl.n_merge, 1);
    const float s = 2.0f / sqrtf(4.0004f);
    cr_assert(pl.merge[0].dst == 3 && pl.merge[0].src == 5);
    cr_assert_float_eq(pl.merge[0].a, 0.5f, 1e-6);
    cr_assert_float_eq(pl.merge[0].b, s / 2, 1e-5);
    cr_assert_float_eq(c0.k[2], (1 + s * 2) / 2, 1e-5);
    cr_assert_float_eq(c0.k[3], s * 0.02f / 2, 1e-5);
    pl = run(p, &c1, 1, 0, 0, 1, attn1, NULL, 0);
    cr_assert_eq(pl.n_keep, 7);

    /* second step on layer 0: row 8 is evicted with best cos 0 (its mean); a fresh threshold
     * (0) would merge it, the moving one (0.5 * 0.1667 + 0.5 * 0) drops it */
    const float k9[2] = {-1, 0};
    append_at(&c0, 9, k9);
    for (int h = 0; h < 2; h++)
        for (int r = 0; r < 4; r++) attn0[h * 4 + r] = r == 1 ? 0.7f : 0.1f;
    pl = run(p, &c0, 0, 0, 1, 1, attn0, NULL, 0);
    cr_assert_eq(pl.n_keep, 3);
    cr_assert(c0.pos[0] == 0 && c0.pos[1] == 3 && c0.pos[2] == 9);
    cr_assert(!has_pos(&c0, 0, 8));
    cr_assert_eq(pl.n_merge, 0);
    kv_policy_free(p);

    expect_error(&kv_d2o_ops, "d2o:budget=8,alpha=0,beta=0", "alpha + beta must be above 0");
    expect_error(&kv_d2o_ops, "d2o:budget=8,alpha=1.5", "alpha=1.5, expected a number from 0");
}

/* The nearest kept key by cosine similarity (EMS and D2O merge by it), against the pairwise
 * definition in double: more sources than one product block, a zero key (norm clamped: its
 * similarities are 0, and the first target wins) and a source equal to a target (1). */
Test(kv_cos_nearest, matches_the_pairwise_definition)
{
    enum { N_KV = 2, HD = 5, LEN = 700 };
    float *k = malloc(sizeof(float) * LEN * N_KV * HD);
    int32_t src[600], dst[90], best[600];
    float sim[600];
    cr_assert(k);
    unsigned s = 12345;
    for (int i = 0; i < LEN * N_KV * HD; i++) {
        s = s * 1103515245u + 12345u;
        k[i] = (float)((s >> 8) & 0xffff) / 32768.0f - 1.0f;
    }
    for (int c = 0; c < HD; c++) k[(int64_t)7 * N_KV * HD + HD + c] = 0.0f; /* row 7, head 1 */
    for (int j = 0; j < 90; j++) dst[j] = 600 + j;
    for (int i = 0; i < 600; i++) src[i] = i;
    for (int c = 0; c < HD; c++) /* source 11 is target 20's key, head 1 */
        k[(int64_t)11 * N_KV * HD + HD + c] = k[(int64_t)dst[20] * N_KV * HD + HD + c];
    for (int h = 0; h < N_KV; h++) {
        cr_assert_eq(kv_cos_nearest(k, N_KV, HD, h, src, 600, dst, 90, best, sim), 0);
        for (int i = 0; i < 600; i++) {
            const float *a = k + (int64_t)src[i] * N_KV * HD + h * HD;
            double top = -2;
            int32_t arg = -1;
            for (int j = 0; j < 90; j++) {
                const float *b = k + (int64_t)dst[j] * N_KV * HD + h * HD;
                double dot = 0, na = 0, nb = 0;
                for (int c = 0; c < HD; c++) {
                    dot += (double)a[c] * b[c];
                    na += (double)a[c] * a[c];
                    nb += (double)b[c] * b[c];
                }
                const double v = dot / (fmax(sqrt(na), 1e-6) * fmax(sqrt(nb), 1e-6));
                if (v > top + 1e-6) top = v, arg = dst[j];
            }
            cr_assert_float_eq(sim[i], top, 1e-5, "head %d source %d: %g, want %g", h, i,
                               sim[i], top);
            cr_assert_eq(best[i], arg, "head %d source %d: nearest %d, want %d", h, i, best[i],
                         arg);
        }
    }
    cr_assert_eq(kv_cos_nearest(k, N_KV, HD, 1, src + 11, 1, dst, 90, best, sim), 0);
    cr_assert_eq(best[0], dst[20]);
    cr_assert_float_eq(sim[0], 1.0f, 1e-5);
    /* a zero key */
    cr_assert_eq(kv_cos_nearest(k, N_KV, HD, 1, src + 7, 1, dst, 90, best, sim), 0);
    cr_assert_float_eq(sim[0], 0.0f, 1e-6);
    cr_assert_eq(best[0], dst[0]);
    free(k);
}
