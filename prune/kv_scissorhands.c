/* Scissorhands (Liu et al., NeurIPS 2023, "Scissorhands: Exploiting the Persistence of Importance
 * Hypothesis for LLM KV Cache Compression at Test Time", §4.1, Alg. 1-2). A token that was
 * pivotal once stays pivotal (the persistence of importance, §3), so a token's record over a
 * history window of attention predicts its future: per head, every query counts a token as
 * unimportant when the attention it gives it is below the average 1/t (t = tokens it sees).
 * When the cache exceeds the budget B, the tokens most often unimportant over the last w
 * observations are dropped, m at once (the cache goes back to B - m and refills for m steps,
 * amortising the compression), never the r most recent (they have had no time to prove
 * themselves).
 *
 * Here: one observation per query head group and pass. A decode step is one query: row r is
 * unimportant when its group-summed attention is below g/len (g = query heads per kv head). The
 * prompt pass arrives summed over its queries, so it is one observation: a row is unimportant
 * when its summed attention is below what uniform attention would have given it
 * (kv_uniform_share). Ties in the count drop the older token.
 *
 * Keys: history=w (observations remembered, up to 256; default 128), drop=m (rows dropped per
 * compression; default max(1, budget/8), as lmdeploy's reproduction keeps 1024 and trims every
 * 128), and the common budget/ratio, sink (default 0), recent (default 16). */
#include <stdlib.h>
#include <string.h>

#include "prune/kv_accum.h"

typedef struct sh_state {
    int history, words;
    int64_t drop;        /* 0: budget / 8 */
    uint64_t *hist;      /* [n_layers x n_kv x cap x words] */
    float *tmp, *expect; /* [n_kv x cap], [cap] */
    int32_t *keep;       /* [n_kv x cap] */
} sh_state;

static plm_status parse(kv_policy *p, prune_spec *s, plm_error *err)
{
    PLM_TRY(kv_require_budget(p, err));
    double hist, drop;
    PLM_TRY(prune_spec_num(s, "history", 128, 1, 64 * KV_HIST_MAX_WORDS, &hist, err));
    PLM_TRY(prune_spec_num(s, "drop", 0, 0, 1 << 24, &drop, err));
    if (hist != (int)hist || drop != (int64_t)drop)
        return plm_fail(err, PLM_E_FORMAT, "kv spec '%s': history and drop are whole numbers",
                        p->spec);
    sh_state *st = calloc(1, sizeof *st);
    if (!st) return plm_fail(err, PLM_E_NOMEM, "out of memory");
    st->history = (int)hist;
    st->words = (st->history + 63) / 64;
    st->drop = (int64_t)drop;
    p->state = st;
    return PLM_OK;
}

static plm_status begin(kv_policy *p, const kv_shape *sh, plm_error *err)
{
    sh_state *st = p->state;
    const size_t per = (size_t)sh->n_kv * (size_t)sh->cap;
    free(st->hist);
    free(st->tmp);
    free(st->expect);
    free(st->keep);
    st->hist = calloc((size_t)sh->n_layers * per * (size_t)st->words, sizeof *st->hist);
    st->tmp = malloc(per * sizeof *st->tmp);
    st->expect = malloc((size_t)sh->cap * sizeof *st->expect);
    st->keep = malloc(per * sizeof *st->keep);
    if (!st->hist || !st->tmp || !st->expect || !st->keep)
        return plm_fail(err, PLM_E_NOMEM, "scissorhands: out of memory for %d layers of %lld "
                        "rows", sh->n_layers, (long long)sh->cap);
    const int64_t budget = kv_budget(p), recent = kv_or(p->c.recent, 16);
    if (kv_or(p->c.sink, 0) + recent >= budget)
        return plm_fail(err, PLM_E_ARG, "kv spec '%s': sink + recent (%lld) leave no room in "
                        "the budget of %lld rows", p->spec,
                        (long long)(kv_or(p->c.sink, 0) + recent), (long long)budget);
    return PLM_OK;
}

static int needs(const kv_policy *p, int layer, int prefill, int64_t step)
{
    return KV_NEED_ATTN;
}

static plm_status plan(kv_policy *p, const kv_view *v, kv_plan *out, plm_error *err)
{
    sh_state *st = p->state;
    const kv_shape *sh = &p->shape;
    const int64_t cap = sh->cap, len = v->len, budget = kv_budget(p);
    const int g = sh->n_heads / sh->n_kv;
    uint64_t *hist = st->hist + (int64_t)v->layer * sh->n_kv * cap * st->words;
    out->n_keep = -1;
    if (!v->attn) return plm_fail(err, PLM_E_ARG, "scissorhands: layer %d came without "
                                  "attention", v->layer);

    /* §4.1: one observation, "below average" against the uniform share */
    kv_heads_sum(v->attn, sh->n_heads, sh->n_kv, len, st->tmp);
    kv_uniform_share(len, v->n_new, st->expect);
    kv_hist_push(hist, st->words, cap, sh->n_kv, len, v->n_new, st->tmp, st->expect, (float)g);
    if (len <= budget) return PLM_OK;

    /* Alg. 1: full, so compress to B - m, keeping the least often unimportant */
    const int64_t sink = kv_or(p->c.sink, 0), recent = kv_or(p->c.recent, 16);
    int64_t drop = st->drop > 0 ? st->drop : (budget / 8 > 1 ? budget / 8 : 1);
    int64_t target = budget - drop;
    if (target < sink + recent) target = sink + recent;
    kv_hist_count(hist, st->words, cap, sh->n_kv, len, st->history, st->tmp);
    for (int h = 0; h < sh->n_kv; h++)
        if (kv_keep_lowest(st->tmp + (int64_t)h * len, len, target, sink, recent,
                           st->keep + (int64_t)h * target) < 0)
            return plm_fail(err, PLM_E_NOMEM, "scissorhands: out of memory");
    kv_compact_u64(hist, st->words, cap, sh->n_kv, st->keep, target);
    out->n_keep = target;
    out->keep = st->keep;
    return PLM_OK;
}

static void destroy(kv_policy *p)
{
    sh_state *st = p->state;
    if (st) {
        free(st->hist);
        free(st->tmp);
        free(st->expect);
        free(st->keep);
    }
    free(st);
}

const kv_policy_ops kv_scissorhands_ops = {
    .name = "scissorhands", .parse = parse, .begin = begin, .needs = needs, .plan = plan,
    .destroy = destroy,
};
