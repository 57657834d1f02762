/* D2O (Wan et al., 2024/ICLR 2025, "D2O: Dynamic Discriminative Operations for Efficient
 * Generative Inference of Large Language Models"; official code AIoT-MLSys-Lab/D2O,
 * modeling_llama3_7b_13b_d2o.py).
 *
 * Layer level (§3.2): layers whose attention is dense (spread over many tokens) lose more by
 * eviction than layers whose attention is sparse. Density is read from the prompt: per query
 * head, the variance over rows of the attention each row received (column sums), averaged over
 * the layer's heads and min-max normalised over the layers, is high for a peaked layer. Once
 * every layer's prompt has run, layer l keeps budget * L * softmax(-v)_l rows (clamped to
 * [1, cap]): dense, low-variance layers keep more, the total stays about L * budget (the
 * allocation of the public D2O ports; the official script sets it in its driver). So the
 * prompt is kept whole
 * and the first decode step of each layer evicts to the layer's budget, as in the official
 * code, which compresses from the first generated token on.
 *
 * Token level (§3.3): H2O eviction (accumulated attention, per kv head, heavy hitters + recent
 * window + the first `sink` tokens, which the official code pins). Every evicted row is
 * compared by key cosine similarity with the kept rows; it is merged into the most similar one
 * when that similarity reaches a threshold kept as an exponential moving average of the mean
 * best similarity of each eviction (threshold = alpha * threshold + beta * mean, the first
 * mean taken as is), else dropped. The merge is the official scatter mean, weights = the
 * similarities: kept = (kept + sum s_i evicted_i) / (1 + n).
 * Deviation: the official code decides per evicted slot from the mean over heads of the slot's
 * similarity although each head evicts different tokens; we decide per head and row.
 *
 * Keys: alpha=, beta= (EMA, default 0.5 each, the official defaults), and the common
 * budget/ratio, sink (default 4), recent (default half the layer's budget). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "prune/kv_accum.h"

typedef struct d2o {
    double alpha, beta;
    float *acc;         /* [n_layers x n_kv x cap] accumulated attention */
    float *var;         /* [n_layers] normalised attention variance of the prompt */
    int64_t *lbudget;   /* [n_layers]; 0: not allocated yet */
    float *thr;         /* [n_layers] */
    int *have_thr;
    float *tmp, *sim, *scratch, *ones; /* [n_heads x cap], [n_kv x cap], [cap] x 2 */
    int32_t *keep, *evict, *best;      /* [n_kv x cap] each */
    kv_merge *merge;                   /* [n_kv x cap] */
} d2o;

static plm_status parse(kv_policy *p, prune_spec *s, plm_error *err)
{
    PLM_TRY(kv_require_budget(p, err));
    double a, b;
    PLM_TRY(prune_spec_num(s, "alpha", 0.5, 0, 1, &a, err));
    PLM_TRY(prune_spec_num(s, "beta", 0.5, 0, 1, &b, err));
    if (a + b <= 0)
        return plm_fail(err, PLM_E_ARG, "kv spec '%s': alpha + beta must be above 0", p->spec);
    d2o *st = calloc(1, sizeof *st);
    if (!st) return plm_fail(err, PLM_E_NOMEM, "out of memory");
    st->alpha = a;
    st->beta = b;
    p->state = st;
    return PLM_OK;
}

static void release(d2o *st)
{
    void *bufs[] = {st->acc, st->var, st->lbudget, st->thr, st->have_thr, st->tmp, st->scratch,
                    st->sim, st->ones, st->keep, st->evict, st->best, st->merge};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) free(bufs[i]);
}

static plm_status begin(kv_policy *p, const kv_shape *sh, plm_error *err)
{
    d2o *st = p->state;
    release(st);
    const size_t cap = (size_t)sh->cap, L = (size_t)sh->n_layers;
    st->acc = calloc(L * (size_t)sh->n_kv * cap, sizeof *st->acc);
    st->var = calloc(L, sizeof *st->var);
    st->lbudget = calloc(L, sizeof *st->lbudget);
    st->thr = calloc(L, sizeof *st->thr);
    st->have_thr = calloc(L, sizeof *st->have_thr);
    st->tmp = malloc((size_t)sh->n_heads * cap * sizeof *st->tmp);
    st->scratch = malloc(cap * sizeof *st->scratch);
    st->sim = malloc((size_t)sh->n_kv * cap * sizeof *st->sim);
    st->ones = malloc(cap * sizeof *st->ones);
    st->keep = malloc((size_t)sh->n_kv * cap * sizeof *st->keep);
    st->evict = malloc((size_t)sh->n_kv * cap * sizeof *st->evict);
    st->best = malloc((size_t)sh->n_kv * cap * sizeof *st->best);
    st->merge = malloc((size_t)sh->n_kv * cap * sizeof *st->merge);
    if (!st->acc || !st->var || !st->lbudget || !st->thr || !st->have_thr || !st->tmp ||
        !st->scratch || !st->sim || !st->ones || !st->keep || !st->evict || !st->best ||
        !st->merge)
        return plm_fail(err, PLM_E_NOMEM, "d2o: out of memory for %d layers of %lld rows",
                        sh->n_layers, (long long)sh->cap);
    for (size_t i = 0; i < cap; i++) st->ones[i] = 1.0f;
    return PLM_OK;
}

static int needs(const kv_policy *p, int layer, int prefill, int64_t step)
{
    return KV_NEED_ATTN | (prefill ? 0 : KV_NEED_KV);
}

/* §3.2: the variance over rows of the attention each row received (column sums), averaged
 * over the query heads: high for a peaked (sparse) layer, low for a dense one. */
static float attention_variance(const float *attn, int n_heads, int64_t len)
{
    double s = 0;
    for (int h = 0; h < n_heads; h++) {
        const float *a = attn + (int64_t)h * len;
        double m = 0, q = 0;
        for (int64_t r = 0; r < len; r++) m += a[r];
        m /= (double)len;
        for (int64_t r = 0; r < len; r++) q += (a[r] - m) * (a[r] - m);
        s += len > 1 ? q / (double)(len - 1) : 0; /* torch.var: unbiased */
    }
    return (float)(s / n_heads);
}

/* budget_l = budget * L * softmax(-v)_l with v min-max normalised over the layers, clamped to
 * [1, cap]. (The official code min-max normalises over a layer's heads instead, which leaves
 * the layers' mean near 0.5 whatever their density; we normalise where the comparison is.) */
static void allocate(d2o *st, const kv_shape *sh, int64_t budget)
{
    double z = 0, vmin = INFINITY, vmax = -INFINITY;
    for (int l = 0; l < sh->n_layers; l++) {
        vmin = fmin(vmin, st->var[l]);
        vmax = fmax(vmax, st->var[l]);
    }
    for (int l = 0; l < sh->n_layers; l++) z += exp(-(st->var[l] - vmin) / (vmax - vmin + 1e-6));
    for (int l = 0; l < sh->n_layers; l++) {
        double b = (double)budget * sh->n_layers *
                   exp(-(st->var[l] - vmin) / (vmax - vmin + 1e-6)) / z;
        int64_t n = (int64_t)llround(b);
        st->lbudget[l] = n < 1 ? 1 : n > sh->cap ? sh->cap : n;
    }
}

static plm_status plan(kv_policy *p, const kv_view *v, kv_plan *out, plm_error *err)
{
    d2o *st = p->state;
    const kv_shape *sh = &p->shape;
    const int64_t cap = sh->cap, len = v->len;
    const int nkv = sh->n_kv, l = v->layer;
    float *acc = st->acc + (int64_t)l * nkv * cap;
    out->n_keep = -1;
    out->n_merge = 0;
    if (!v->attn) return plm_fail(err, PLM_E_ARG, "d2o: layer %d came without attention", l);
    if (v->prefill) {
        st->var[l] = attention_variance(v->attn, sh->n_heads, len);
        st->lbudget[l] = 0;
        st->have_thr[l] = 0;
    }
    kv_heads_sum(v->attn, sh->n_heads, nkv, len, st->tmp);
    kv_rows_accum(acc, cap, nkv, st->tmp, len, v->n_new, 1.0f);
    if (v->prefill) return PLM_OK;
    if (!st->lbudget[l]) allocate(st, sh, kv_budget(p)); /* every prompt layer has run */
    const int64_t budget = st->lbudget[l];
    if (len <= budget) return PLM_OK;
    if (!v->k) return plm_fail(err, PLM_E_ARG, "d2o: layer %d came without keys", l);

    kv_rows_gather(acc, cap, nkv, len, st->tmp);
    const int64_t n = kv_select_topk(st->tmp, nkv, len, budget, kv_or(p->c.sink, 4),
                                     kv_or(p->c.recent, budget / 2), st->keep);
    if (n < 0) return plm_fail(err, PLM_E_NOMEM, "d2o: out of memory");

    /* §3.3: the EMA threshold moves with the mean best similarity of this eviction */
    const int64_t ne = len - n; /* every head evicts as many rows */
    double mean = 0;
    int64_t nm = 0;
    for (int h = 0; h < nkv; h++) {
        int32_t *ev = st->evict + (int64_t)h * cap, *best = st->best + (int64_t)h * cap;
        float *sim = st->sim + (int64_t)h * cap;
        prune_complement(st->keep + (int64_t)h * n, n, len, ev);
        if (kv_cos_nearest(v->k, nkv, sh->head_dim, h, ev, ne, st->keep + (int64_t)h * n, n,
                           best, sim) < 0)
            return plm_fail(err, PLM_E_NOMEM, "d2o: out of memory");
        for (int64_t i = 0; i < ne; i++) mean += sim[i];
    }
    mean /= (double)(ne * nkv);
    const float thr = kv_ema(st->thr[l], st->have_thr[l], (float)mean, (float)st->alpha,
                             (float)st->beta);
    st->thr[l] = thr;
    st->have_thr[l] = 1;
    for (int h = 0; h < nkv; h++) {
        int32_t *ev = st->evict + (int64_t)h * cap, *best = st->best + (int64_t)h * cap;
        float *sim = st->sim + (int64_t)h * cap;
        int64_t k = 0;
        for (int64_t i = 0; i < ne; i++)
            if (sim[i] >= thr) {
                ev[k] = ev[i];
                best[k] = best[i];
                sim[k++] = sim[i];
            }
        nm += kv_merge_weighted(h, ev, best, sim, k, st->ones, 1, len, st->scratch,
                                st->merge + nm);
    }
    kv_compact_f32(acc, cap, nkv, st->keep, n); /* merged rows' scores are not added (official) */
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

const kv_policy_ops kv_d2o_ops = {
    .name = "d2o", .parse = parse, .begin = begin, .needs = needs, .plan = plan,
    .destroy = destroy,
};
