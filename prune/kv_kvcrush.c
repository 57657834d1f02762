/* KVCrush (Jha et al., 2025, "KVCrush: Key value cache size-reduction using similarity in
 * head-behaviour", §3; official code: OpenVINO GenAI continuous_batching/kvcrush.cpp).
 * An importance policy keeps the budget minus `share` of it; the tokens it would evict are not
 * all alike: each token is described by one bit per attention head (is it important for that
 * head), the evicted tokens are ordered by the Hamming distance of that head-behaviour vector
 * to an anchor vector, and representatives are taken at a uniform stride along that order, one
 * per bucket of similar behaviour (§3.2, get_representative_blocks_kvcrush). A token that only
 * one head needs sits far from tokens that no head needs, so it survives as a representative.
 *
 * Base importance (§4: KVCrush is paired with H2O and others): H2O's accumulated attention,
 * summed over every query head of the layer. The bit for head h (§3.1, official
 * create_indicators_kvcrush): the token is in the top half of head h's accumulated attention.
 * The vector spans all heads of the layer, so the policy keeps the same tokens in every kv head
 * (as the paper's token-level selection does); it refuses a cache whose kv heads already hold
 * different tokens (put it first in a chain).
 *
 * Keys: share=s (budget share for representatives, default 0.25), anchor=random|mean|alternate|
 * zeros|ones (default random, the official KVCrushConfig's), seed=N (random anchor, default 0),
 * and the common budget/ratio, sink (default 0), recent (default budget/4). */
#include <stdlib.h>
#include <string.h>

#include "prune/kv_accum.h"

static const char *const anchor_names[] = {"random", "mean", "alternate", "zeros", "ones"};

typedef struct crush {
    double share;
    int anchor, words;
    uint64_t seed0, seed;
    float *acc;        /* [n_layers x n_heads x cap] per query head */
    float *tmp, *sum;  /* [n_heads x cap], [cap] */
    uint64_t *sig;     /* [cap x words] */
    int32_t *keep, *imp, *cand, *rep; /* [n_kv x cap], [cap] x 3 */
} crush;

static plm_status parse(kv_policy *p, prune_spec *s, plm_error *err)
{
    PLM_TRY(kv_require_budget(p, err));
    double share, seed;
    int anchor;
    PLM_TRY(prune_spec_num(s, "share", 0.25, 0, 1, &share, err));
    PLM_TRY(prune_spec_num(s, "seed", 0, 0, 4294967295.0, &seed, err));
    PLM_TRY(kv_spec_choice(s, "anchor", anchor_names, 5, KV_ANCHOR_RANDOM, &anchor, err));
    crush *st = calloc(1, sizeof *st);
    if (!st) return plm_fail(err, PLM_E_NOMEM, "out of memory");
    st->share = share;
    st->anchor = anchor;
    st->seed0 = (uint64_t)seed;
    p->state = st;
    return PLM_OK;
}

static void release(crush *st)
{
    free(st->acc);
    free(st->tmp);
    free(st->sum);
    free(st->sig);
    free(st->keep);
    free(st->imp);
    free(st->cand);
    free(st->rep);
}

static plm_status begin(kv_policy *p, const kv_shape *sh, plm_error *err)
{
    crush *st = p->state;
    release(st);
    st->words = (sh->n_heads + 63) / 64;
    if (st->words > KV_SIG_MAX_WORDS)
        return plm_fail(err, PLM_E_LIMIT, "kvcrush: %d heads, at most %d", sh->n_heads,
                        64 * KV_SIG_MAX_WORDS);
    const size_t cap = (size_t)sh->cap, per = (size_t)sh->n_heads * cap;
    st->acc = calloc((size_t)sh->n_layers * per, sizeof *st->acc);
    st->tmp = malloc(per * sizeof *st->tmp);
    st->sum = malloc(cap * sizeof *st->sum);
    st->sig = malloc(cap * (size_t)st->words * sizeof *st->sig);
    st->keep = malloc((size_t)sh->n_kv * cap * sizeof *st->keep);
    st->imp = malloc(cap * sizeof *st->imp);
    st->cand = malloc(cap * sizeof *st->cand);
    st->rep = malloc(cap * sizeof *st->rep);
    if (!st->acc || !st->tmp || !st->sum || !st->sig || !st->keep || !st->imp || !st->cand ||
        !st->rep)
        return plm_fail(err, PLM_E_NOMEM, "kvcrush: out of memory for %d layers of %lld rows",
                        sh->n_layers, (long long)sh->cap);
    st->seed = st->seed0;
    return PLM_OK;
}

static int needs(const kv_policy *p, int layer, int prefill, int64_t step)
{
    return KV_NEED_ATTN;
}

static plm_status plan(kv_policy *p, const kv_view *v, kv_plan *out, plm_error *err)
{
    crush *st = p->state;
    const kv_shape *sh = &p->shape;
    const int64_t cap = sh->cap, len = v->len, budget = kv_budget(p);
    const int nh = sh->n_heads;
    float *acc = st->acc + (int64_t)v->layer * nh * cap;
    out->n_keep = -1;
    if (!v->attn) return plm_fail(err, PLM_E_ARG, "kvcrush: layer %d came without attention",
                                  v->layer);
    for (int h = 1; h < sh->n_kv; h++)
        if (memcmp(v->pos + (int64_t)h * cap, v->pos, (size_t)len * sizeof *v->pos))
            return plm_fail(err, PLM_E_ARG, "kvcrush: layer %d's kv heads hold different tokens "
                            "(kv head %d); kvcrush selects tokens for all heads at once, so it "
                            "must come first in a '+' chain", v->layer, h);
    kv_rows_accum(acc, cap, nh, v->attn, len, v->n_new, 1.0f);
    if (len <= budget) return PLM_OK;

    /* the base (H2O) selection: budget minus the representatives' share */
    const int64_t n_rep = (int64_t)(st->share * (double)budget);
    const int64_t n_imp = budget - n_rep, sink = kv_or(p->c.sink, 0),
                  recent = kv_or(p->c.recent, budget / 4);
    kv_rows_gather(acc, cap, nh, len, st->tmp);
    memset(st->sum, 0, (size_t)len * sizeof *st->sum);
    for (int h = 0; h < nh; h++)
        for (int64_t r = 0; r < len; r++) st->sum[r] += st->tmp[(int64_t)h * len + r];
    if (kv_select_topk(st->sum, 1, len, n_imp, sink, recent, st->imp) < 0)
        return plm_fail(err, PLM_E_NOMEM, "kvcrush: out of memory");
    const int64_t n_cand = prune_complement(st->imp, n_imp, len, st->cand);

    /* §3.1-3.2: head-behaviour bits, anchor, Hamming order, one representative per bucket */
    if (kv_head_signature(st->tmp, nh, len, st->words, st->sig) < 0)
        return plm_fail(err, PLM_E_NOMEM, "kvcrush: out of memory");
    uint64_t anchor[KV_SIG_MAX_WORDS];
    kv_anchor(st->anchor, st->sig, st->words, nh, st->cand, n_cand, &st->seed, anchor);
    int64_t got = kv_hamming_pick(st->sig, st->words, st->cand, n_cand, anchor, n_rep, st->rep);
    if (got < 0) return plm_fail(err, PLM_E_NOMEM, "kvcrush: out of memory");

    /* union of two ascending lists, the same for every kv head */
    int64_t n = 0, i = 0, j = 0;
    while (i < n_imp || j < got)
        st->keep[n++] = (j >= got || (i < n_imp && st->imp[i] < st->rep[j])) ? st->imp[i++]
                                                                              : st->rep[j++];
    for (int h = 1; h < sh->n_kv; h++)
        memcpy(st->keep + (int64_t)h * n, st->keep, (size_t)n * sizeof *st->keep);
    for (int h = 0; h < nh; h++) { /* the per-query-head state follows its kv head's rows */
        float *row = acc + (int64_t)h * cap;
        for (int64_t r = 0; r < n; r++) row[r] = row[st->keep[r]];
    }
    out->n_keep = n;
    out->keep = st->keep;
    return PLM_OK;
}

static void destroy(kv_policy *p)
{
    if (p->state) release(p->state);
    free(p->state);
}

const kv_policy_ops kv_kvcrush_ops = {
    .name = "kvcrush", .parse = parse, .begin = begin, .needs = needs, .plan = plan,
    .destroy = destroy,
};
