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

/* Builds a policy as kv_policy_parse does for a registered one (common keys, then its own). */
static plm_status make(const kv_policy_ops *ops, const char *text, kv_policy **out,
                       plm_error *err)
{
    prune_spec s;
    PLM_TRY(prune_spec_parse(text, &s, err));
    kv_policy *p = calloc(1, sizeof *p);
    cr_assert(p);
    p->ops = ops;
    snprintf(p->spec, sizeof p->spec, "%s", s.text);
    const char *keys[] = {"budget", "sink", "recent", "window"};
    int64_t *dst[] = {&p->c.budget, &p->c.sink, &p->c.recent, &p->c.window};
    plm_status st = PLM_OK;
    for (int i = 0; i < 4 && st == PLM_OK; i++) {
        double d;
        st = prune_spec_num(&s, keys[i], -1, 0, 1 << 24, &d, err);
        *dst[i] = (int64_t)d;
    }
    if (p->c.budget < 0) p->c.budget = 0;
    if (st == PLM_OK) st = prune_spec_num(&s, "ratio", 0, 0, 1, &p->c.ratio, err);
    if (st == PLM_OK) st = ops->parse(p, &s, err);
    if (st == PLM_OK) st = prune_spec_check_unused(&s, err);
    if (st != PLM_OK) {
        kv_policy_free(p);
        return st;
    }
    *out = p;
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
