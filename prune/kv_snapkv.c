/* SnapKV (Li et al., 2024, "SnapKV: LLM Knows What You are Looking for Before Generation", §4 and
 * the official snapkv_utils.py): once, after the prompt, each head scores the prompt's keys by the
 * attention of the last `window` prompt queries (the observation window, 32 by default), summed
 * over those queries and smoothed by a 1-D average pool (kernel 5, zero padding, stride 1); the
 * top (budget - window) keys of the prefix plus the window itself are kept. Decode steps append
 * without eviction. GQA: the query heads of a group add their scores (the kv head is shared). */
#include <stdlib.h>
#include <string.h>

#include "prune/kv.h"

typedef struct snapkv {
    int kernel;
    float *score, *pooled;
    int32_t *keep;
} snapkv;

static plm_status parse(kv_policy *p, prune_spec *s, plm_error *err)
{
    PLM_TRY(kv_require_budget(p, err));
    double k;
    PLM_TRY(prune_spec_num(s, "kernel", 5, 1, 63, &k, err));
    if ((int)k % 2 == 0)
        return plm_fail(err, PLM_E_ARG, "kv spec '%s': kernel must be odd", p->spec);
    if (p->c.recent >= 0)
        return plm_fail(err, PLM_E_ARG, "kv spec '%s': snapkv keeps its observation window; "
                        "use window=, not recent=", p->spec);
    snapkv *st = calloc(1, sizeof *st);
    if (!st) return plm_fail(err, PLM_E_NOMEM, "out of memory");
    st->kernel = (int)k;
    p->state = st;
    return PLM_OK;
}

static plm_status begin(kv_policy *p, const kv_shape *sh, plm_error *err)
{
    snapkv *st = p->state;
    size_t per = (size_t)sh->n_kv * (size_t)sh->cap;
    free(st->score);
    free(st->pooled);
    free(st->keep);
    st->score = malloc(per * sizeof *st->score);
    st->pooled = malloc(per * sizeof *st->pooled);
    st->keep = malloc(per * sizeof *st->keep);
    if (!st->score || !st->pooled || !st->keep)
        return plm_fail(err, PLM_E_NOMEM, "out of memory for the KV policy");
    return PLM_OK;
}

static int needs(const kv_policy *p, int layer, int prefill, int64_t step)
{
    return prefill ? KV_NEED_WIN : 0;
}

static plm_status plan(kv_policy *p, const kv_view *v, kv_plan *out, plm_error *err)
{
    snapkv *st = p->state;
    const kv_shape *sh = &p->shape;
    const int64_t len = v->len, budget = kv_budget(p);
    out->n_keep = -1;
    if (!v->prefill || len <= budget) return PLM_OK;
    int64_t win = v->n_win;
    if (win >= budget) win = budget - 1 > 0 ? budget - 1 : 0;
    /* the official code requires capacity > window; with a tiny budget the window shrinks */
    kv_heads_sum(v->attn_win, sh->n_heads, sh->n_kv, len, st->score);
    const int64_t prefix = len - win, half = st->kernel / 2;
    for (int h = 0; h < sh->n_kv; h++) {
        const float *s = st->score + (int64_t)h * len;
        float *o = st->pooled + (int64_t)h * len;
        for (int64_t r = 0; r < prefix; r++) {
            double sum = 0;
            for (int64_t j = r - half; j <= r + half; j++)
                if (j >= 0 && j < prefix) sum += s[j];
            o[r] = (float)(sum / st->kernel); /* avg_pool1d counts the zero padding */
        }
        for (int64_t r = prefix; r < len; r++) o[r] = 0;
    }
    int64_t n = kv_select_topk(st->pooled, sh->n_kv, len, budget, kv_or(p->c.sink, 0), win,
                               st->keep);
    if (n < 0) return plm_fail(err, PLM_E_NOMEM, "out of memory in snapkv");
    out->n_keep = n;
    out->keep = st->keep;
    return PLM_OK;
}

static void destroy(kv_policy *p)
{
    snapkv *st = p->state;
    if (st) {
        free(st->score);
        free(st->pooled);
        free(st->keep);
    }
    free(st);
}

const kv_policy_ops kv_snapkv_ops = {
    .name = "snapkv", .parse = parse, .begin = begin, .needs = needs, .plan = plan,
    .destroy = destroy,
};
