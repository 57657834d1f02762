/* H2O (Zhang et al., NeurIPS 2023, "H2O: Heavy-Hitter Oracle for Efficient Generative Inference
 * of Large Language Models", §3-4): per head, the attention every cached token has received,
 * summed over all queries so far (prompt column sums, then one row per decode step), ranks the
 * "heavy hitters"; the cache keeps the top ones plus the most recent tokens, half the budget each
 * by default (the paper's heavy_ratio = recent_ratio), evicting once it is full. GQA: the query
 * heads of a group add their scores, since they share the kv head's rows.
 * Deviation: the official code masks progressively while the prompt is processed; we evict once
 * after the prompt's layer has run, from the same column sums. */
#include <stdlib.h>
#include <string.h>

#include "prune/kv.h"

typedef struct h2o {
    float *acc;      /* [n_layers x n_kv x cap] accumulated attention per row */
    float *tmp;      /* [n_kv x cap] */
    int32_t *keep;
} h2o;

static plm_status parse(kv_policy *p, prune_spec *s, plm_error *err)
{
    (void)s;
    PLM_TRY(kv_require_budget(p, err));
    p->state = calloc(1, sizeof(h2o));
    return p->state ? PLM_OK : plm_fail(err, PLM_E_NOMEM, "out of memory");
}

static plm_status begin(kv_policy *p, const kv_shape *sh, plm_error *err)
{
    h2o *st = p->state;
    size_t per = (size_t)sh->n_kv * (size_t)sh->cap;
    free(st->acc);
    free(st->tmp);
    free(st->keep);
    st->acc = calloc((size_t)sh->n_layers * per, sizeof *st->acc);
    st->tmp = malloc(per * sizeof *st->tmp);
    st->keep = malloc(per * sizeof *st->keep);
    if (!st->acc || !st->tmp || !st->keep)
        return plm_fail(err, PLM_E_NOMEM, "out of memory for the KV policy");
    return PLM_OK;
}

static int needs(const kv_policy *p, int layer, int prefill, int64_t step)
{
    return KV_NEED_ATTN;
}

static plm_status plan(kv_policy *p, const kv_view *v, kv_plan *out, plm_error *err)
{
    h2o *st = p->state;
    const kv_shape *sh = &p->shape;
    const int64_t cap = sh->cap, len = v->len, budget = kv_budget(p);
    float *acc = st->acc + (int64_t)v->layer * sh->n_kv * cap;
    kv_heads_sum(v->attn, sh->n_heads, sh->n_kv, len, st->tmp);
    for (int h = 0; h < sh->n_kv; h++) {
        float *a = acc + (int64_t)h * cap;
        const float *add = st->tmp + (int64_t)h * len;
        for (int64_t r = 0; r < len - v->n_new; r++) a[r] += add[r];
        for (int64_t r = len - v->n_new; r < len; r++) a[r] = add[r]; /* new rows start here */
    }
    out->n_keep = -1;
    if (len <= budget) return PLM_OK;
    /* rank within each head's row of acc: gather it contiguously for the selector */
    for (int h = 0; h < sh->n_kv; h++)
        memcpy(st->tmp + (int64_t)h * len, acc + (int64_t)h * cap, (size_t)len * sizeof(float));
    int64_t n = kv_select_topk(st->tmp, sh->n_kv, len, budget, kv_or(p->c.sink, 0),
                               kv_or(p->c.recent, budget / 2), st->keep);
    if (n < 0) return plm_fail(err, PLM_E_NOMEM, "out of memory in h2o");
    kv_compact_f32(acc, cap, sh->n_kv, st->keep, n);
    out->n_keep = n;
    out->keep = st->keep;
    return PLM_OK;
}

static void destroy(kv_policy *p)
{
    h2o *st = p->state;
    if (st) {
        free(st->acc);
        free(st->tmp);
        free(st->keep);
    }
    free(st);
}

const kv_policy_ops kv_h2o_ops = {
    .name = "h2o", .parse = parse, .begin = begin, .needs = needs, .plan = plan,
    .destroy = destroy,
};
