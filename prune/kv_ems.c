/* EMS (Li et al., 2024, "EMS: Adaptive Evict-then-Merge Strategy for Head-wise KV Cache
 * Compression Based on Global-Local Importance", arXiv 2412.08521).
 *
 * Global-Local score (§3.2): accumulated attention alone favours early tokens, which the causal
 * mask lets more queries see; attention from a local window alone forgets what mattered
 * earlier. EMS combines both. Here the global part is the accumulated attention divided by the
 * number of queries that saw the row (a per-query mean, so no positional head start) and the
 * local part the mean attention from the last `window` queries: at the prefill the observation
 * window (attn_win), during decoding an exponential average with weight 1/window on the newest
 * step. score = global + local, per kv head (the group's query heads averaged).
 *
 * Evict-then-merge (§3.3): per kv head, the budget's top rows by score stay; each evicted row is
 * compared by key cosine similarity with the kept ones (the class centres): if its best
 * similarity reaches `sim` it is merged into that centre as a score-weighted average
 * (redundancy), else it falls into the zero class, which is discarded (sparsity). The zero
 * class is what lets every head merge a different number of rows in one parallel pass. The
 * centre absorbs the merged rows' accumulated and local attention.
 *
 * Head-wise budgets: the paper lets heads differ in how much of their budget goes to eviction
 * vs merging; our cache holds the same row count in every kv head of a layer, so every head
 * keeps `budget` rows and the head-wise adaptivity is in how many of its evicted rows each head
 * merges (redundant heads merge many, sparse heads drop most).
 *
 * Keys: sim=s (merge threshold on cosine similarity, default 0.5 (check)), and the common
 * budget/ratio, window (default 32), sink (default 0), recent (default window). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "prune/kv_accum.h"

typedef struct ems {
    double sim;
    float *glob, *seen, *loc;  /* [n_layers x n_kv x cap]: attention sum, queries, local mean */
    float *tmp, *score, *scratch, *w_self, *w, *simv; /* [n_kv x cap] each */
    int32_t *keep, *evict, *best;                     /* [n_kv x cap], [cap], [cap] */
    kv_merge *merge;                                  /* [n_kv x cap] */
} ems;

static plm_status parse(kv_policy *p, prune_spec *s, plm_error *err)
{
    PLM_TRY(kv_require_budget(p, err));
    double sim;
    PLM_TRY(prune_spec_num(s, "sim", 0.5, -1, 1, &sim, err));
    ems *st = calloc(1, sizeof *st);
    if (!st) return plm_fail(err, PLM_E_NOMEM, "out of memory");
    st->sim = sim;
    p->state = st;
    return PLM_OK;
}

static void release(ems *st)
{
    void *bufs[] = {st->glob, st->seen, st->loc, st->tmp, st->score, st->scratch, st->w_self,
                    st->w, st->simv, st->keep, st->evict, st->best, st->merge};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) free(bufs[i]);
}

static plm_status begin(kv_policy *p, const kv_shape *sh, plm_error *err)
{
    ems *st = p->state;
    release(st);
    const size_t per = (size_t)sh->n_kv * (size_t)sh->cap, all = (size_t)sh->n_layers * per;
    st->glob = calloc(all, sizeof *st->glob);
    st->seen = calloc(all, sizeof *st->seen);
    st->loc = calloc(all, sizeof *st->loc);
    float **f[] = {&st->tmp, &st->score, &st->scratch, &st->w_self, &st->w, &st->simv};
    int ok = st->glob && st->seen && st->loc;
    for (size_t i = 0; i < sizeof f / sizeof *f; i++) ok &= !!(*f[i] = malloc(per * sizeof(float)));
    st->keep = malloc(per * sizeof *st->keep);
    st->evict = malloc((size_t)sh->cap * sizeof *st->evict);
    st->best = malloc((size_t)sh->cap * sizeof *st->best);
    st->merge = malloc(per * sizeof *st->merge);
    if (!ok || !st->keep || !st->evict || !st->best || !st->merge)
        return plm_fail(err, PLM_E_NOMEM, "ems: out of memory for %d layers of %lld rows",
                        sh->n_layers, (long long)sh->cap);
    return PLM_OK;
}

static int needs(const kv_policy *p, int layer, int prefill, int64_t step)
{
    return KV_NEED_ATTN | KV_NEED_KV | (prefill && kv_or(p->c.window, 32) > 0 ? KV_NEED_WIN : 0);
}

/* The state arrays of a layer follow the rows a merge folds in, then the keep list. */
static void fold_state(float *st, int64_t cap, const kv_merge *m, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        st[(int64_t)m[i].head * cap + m[i].dst] += st[(int64_t)m[i].head * cap + m[i].src];
}

static plm_status plan(kv_policy *p, const kv_view *v, kv_plan *out, plm_error *err)
{
    ems *st = p->state;
    const kv_shape *sh = &p->shape;
    const int64_t cap = sh->cap, len = v->len, budget = kv_budget(p), off = v->layer * sh->n_kv * cap;
    const int g = sh->n_heads / sh->n_kv, nkv = sh->n_kv;
    const int64_t window = kv_or(p->c.window, 32);
    float *glob = st->glob + off, *seen = st->seen + off, *loc = st->loc + off;
    out->n_keep = -1;
    out->n_merge = 0;
    if (!v->attn) return plm_fail(err, PLM_E_ARG, "ems: layer %d came without attention",
                                  v->layer);

    /* global: attention sum and the queries that saw each row (per query head) */
    kv_heads_sum(v->attn, sh->n_heads, nkv, len, st->tmp);
    kv_rows_accum(glob, cap, nkv, st->tmp, len, v->n_new, 1.0f);
    const int64_t q0 = len - v->n_new;
    for (int h = 0; h < nkv; h++)
        for (int64_t r = 0; r < len; r++)
            seen[(int64_t)h * cap + r] = (r < q0 ? seen[(int64_t)h * cap + r] : 0) +
                                         (float)(len - (r > q0 ? r : q0));
    /* local: the observation window at the prefill, an average over ~window steps after */
    if (v->prefill) {
        if (v->attn_win && v->n_win > 0) {
            kv_heads_sum(v->attn_win, sh->n_heads, nkv, len, st->tmp);
            for (int64_t i = 0; i < (int64_t)nkv * len; i++) st->tmp[i] /= (float)(g * v->n_win);
        } else {
            for (int64_t i = 0; i < (int64_t)nkv * len; i++) st->tmp[i] = 0;
        }
        kv_rows_accum(loc, cap, nkv, st->tmp, len, v->n_new, 0.0f);
    } else {
        const float beta = window > 0 ? 1.0f / (float)window : 1.0f;
        for (int64_t i = 0; i < (int64_t)nkv * len; i++) st->tmp[i] *= beta / (float)g;
        kv_rows_accum(loc, cap, nkv, st->tmp, len, v->n_new, 1.0f - beta);
    }
    if (len <= budget) return PLM_OK;
    if (!v->k) return plm_fail(err, PLM_E_ARG, "ems: layer %d came without keys", v->layer);

    for (int h = 0; h < nkv; h++)
        for (int64_t r = 0; r < len; r++) {
            const int64_t i = (int64_t)h * cap + r;
            st->score[(int64_t)h * len + r] =
                glob[i] / ((float)g * (seen[i] > 0 ? seen[i] : 1)) + loc[i];
        }
    const int64_t n = kv_select_topk(st->score, nkv, len, budget, kv_or(p->c.sink, 0),
                                     kv_or(p->c.recent, window), st->keep);
    if (n < 0) return plm_fail(err, PLM_E_NOMEM, "ems: out of memory");

    int64_t nm = 0;
    for (int h = 0; h < nkv; h++) {
        const int32_t *kp = st->keep + (int64_t)h * n;
        const float *sc = st->score + (int64_t)h * len;
        const int64_t ne = prune_complement(kp, n, len, st->evict);
        if (kv_cos_nearest(v->k, nkv, sh->head_dim, h, st->evict, ne, kp, n, st->best,
                           st->simv) < 0)
            return plm_fail(err, PLM_E_NOMEM, "ems: out of memory");
        int64_t nmerge = 0; /* the evicted rows that join a centre; the rest: zero class */
        for (int64_t i = 0; i < ne; i++)
            if (st->simv[i] >= st->sim) {
                st->evict[nmerge] = st->evict[i];
                st->best[nmerge] = st->best[i];
                st->w[nmerge++] = sc[st->evict[i]] + 1e-12f; /* > 0: a row with no attention */
            }
        for (int64_t r = 0; r < len; r++) st->w_self[r] = sc[r] + 1e-12f;
        nm += kv_merge_weighted(h, st->evict, st->best, st->w, nmerge, st->w_self, 0, len,
                                st->scratch, st->merge + nm);
    }
    fold_state(glob, cap, st->merge, nm);
    fold_state(loc, cap, st->merge, nm);
    kv_compact_f32(glob, cap, nkv, st->keep, n);
    kv_compact_f32(seen, cap, nkv, st->keep, n);
    kv_compact_f32(loc, cap, nkv, st->keep, n);
    out->n_keep = n;
    out->keep = st->keep;
    out->n_merge = nm;
    out->merge = st->merge;
    return PLM_OK;
}

static void destroy(kv_policy *p)
{
    if (p->state) release(p->state);
    free(p->state);
}

const kv_policy_ops kv_ems_ops = {
    .name = "ems", .parse = parse, .begin = begin, .needs = needs, .plan = plan,
    .destroy = destroy,
};
