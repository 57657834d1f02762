/* Recycled Attention (Xu, Goyal, Choi, 2024, "Recycled Attention: Efficient inference for
 * long-context language models", arXiv 2411.05787, §3). Generation alternates between full
 * steps, which attend to the whole cache and record, per layer and kv head, the K rows their
 * query attended to most, and recycled steps, which attend only to those K plus every token
 * generated since the last full step (§3.1). The full cache is kept (nothing is evicted).
 *   - The prompt pass is the first full step: its top-K comes from the last `window` prompt
 *     queries (1 by default: the query that produces the first generated token).
 *   - Fixed schedule (§3.2): with stride S, decode step t (0-based, after the prompt) is full
 *     when (t + 1) % S == 0, i.e. every S-th generated token, counting the prompt's.
 *   - Dynamic schedule (§3.2, optional, sim=s > 0): a recycled step whose layer-0 query has
 *     cosine similarity below s with the query of the last full step becomes a full step from
 *     layer 1 on (layer 0 has already attended by then; its K rows are refreshed all the same,
 *     from the dense probabilities the glue computes).
 * GQA: the query heads of a group add their probabilities; the kv head's K rows serve them all.
 * The recorded rows are kept as token positions so compaction by an earlier policy in a chain
 * cannot shift them. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "prune/kv.h"

typedef struct recycled {
    int64_t stride;
    double sim;
    int32_t *sel;     /* [n_layers x n_kv x cap] positions of the K recorded rows, ascending */
    int64_t *n_sel;   /* [n_layers]; -1: nothing recorded yet */
    int32_t *newer;   /* [n_layers]: rows at or after this position are newer than the record */
    float *qref;      /* [n_heads x head_dim] layer-0 query of the last full step */
    int have_q;
    int64_t forced;   /* decode step the similarity test turned into a full step; -1: none */
    float *score;
    int32_t *keep, *rows;
    uint8_t *mark;
} recycled;

static plm_status parse(kv_policy *p, prune_spec *s, plm_error *err)
{
    PLM_TRY(kv_require_budget(p, err));
    double stride, sim;
    PLM_TRY(prune_spec_num(s, "stride", 10, 1, 1 << 20, &stride, err));
    PLM_TRY(prune_spec_num(s, "sim", 0, 0, 1, &sim, err));
    if (stride != floor(stride))
        return plm_fail(err, PLM_E_ARG, "kv spec '%s': stride must be a whole number", p->spec);
    recycled *st = calloc(1, sizeof *st);
    if (!st) return plm_fail(err, PLM_E_NOMEM, "out of memory");
    st->stride = (int64_t)stride;
    st->sim = sim;
    p->state = st;
    if (p->c.window < 0) p->c.window = 1; /* the prompt's last query */
    return PLM_OK;
}

static void release(recycled *st)
{
    free(st->sel);
    free(st->n_sel);
    free(st->newer);
    free(st->qref);
    free(st->score);
    free(st->keep);
    free(st->rows);
    free(st->mark);
}

static plm_status begin(kv_policy *p, const kv_shape *sh, plm_error *err)
{
    recycled *st = p->state;
    release(st);
    const size_t per = (size_t)sh->n_kv * (size_t)(sh->cap + 1);
    st->sel = malloc((size_t)sh->n_layers * per * sizeof *st->sel);
    st->n_sel = malloc((size_t)sh->n_layers * sizeof *st->n_sel);
    st->newer = malloc((size_t)sh->n_layers * sizeof *st->newer);
    st->qref = malloc((size_t)sh->n_heads * (size_t)sh->head_dim * sizeof *st->qref);
    st->score = malloc(per * sizeof *st->score);
    st->keep = malloc(per * sizeof *st->keep);
    st->rows = malloc(per * sizeof *st->rows);
    st->mark = malloc(per);
    if (!st->sel || !st->n_sel || !st->newer || !st->qref || !st->score || !st->keep ||
        !st->rows || !st->mark)
        return plm_fail(err, PLM_E_NOMEM, "out of memory for the KV policy");
    for (int l = 0; l < sh->n_layers; l++) st->n_sel[l] = -1;
    st->have_q = 0;
    st->forced = -1;
    return PLM_OK;
}

static int scheduled(const recycled *st, int64_t step) { return (step + 1) % st->stride == 0; }

static int is_full(const recycled *st, int layer, int64_t step)
{
    return scheduled(st, step) || (st->forced == step && layer > 0);
}

static int needs(const kv_policy *p, int layer, int prefill, int64_t step)
{
    const recycled *st = p->state;
    if (prefill) return KV_NEED_WIN | (st->sim > 0 && layer == 0 ? KV_NEED_Q : 0);
    if (layer == 0 && st->sim > 0) return KV_NEED_ATTN | KV_NEED_Q; /* may refresh, see top */
    return is_full(st, layer, step) ? KV_NEED_ATTN : 0;
}

static double cosine(const float *a, const float *b, int64_t n)
{
    double ab = 0, aa = 0, bb = 0;
    for (int64_t i = 0; i < n; i++) {
        ab += (double)a[i] * b[i];
        aa += (double)a[i] * a[i];
        bb += (double)b[i] * b[i];
    }
    return aa > 0 && bb > 0 ? ab / sqrt(aa * bb) : 1.0;
}

/* Records the top-K rows of every kv head by score [n_heads x len]; rows from position `newer`
 * on will be attended anyway. */
static plm_status record(kv_policy *p, const kv_view *v, const float *score, int32_t newer,
                         plm_error *err)
{
    recycled *st = p->state;
    const kv_shape *sh = &p->shape;
    const int64_t cap = sh->cap, per = (int64_t)sh->n_kv * (cap + 1);
    kv_heads_sum(score, sh->n_heads, sh->n_kv, v->len, st->score);
    int64_t n = kv_select_topk(st->score, sh->n_kv, v->len, kv_budget(p), kv_or(p->c.sink, 0),
                               kv_or(p->c.recent, 0), st->keep);
    if (n < 0) return plm_fail(err, PLM_E_NOMEM, "out of memory in recycled");
    int32_t *sel = st->sel + (int64_t)v->layer * per;
    for (int h = 0; h < sh->n_kv; h++)
        for (int64_t i = 0; i < n; i++)
            sel[(int64_t)h * (cap + 1) + i] = v->pos[(int64_t)h * cap + st->keep[h * n + i]];
    st->n_sel[v->layer] = n;
    st->newer[v->layer] = newer;
    return PLM_OK;
}

static plm_status plan(kv_policy *p, const kv_view *v, kv_plan *out, plm_error *err)
{
    recycled *st = p->state;
    const kv_shape *sh = &p->shape;
    const int64_t qd = (int64_t)sh->n_heads * sh->head_dim;
    out->n_keep = -1; /* the full cache stays */
    if (v->len == 0) return PLM_OK;
    if (v->prefill) {
        if (v->layer == 0 && v->q && v->n_new > 0) {
            memcpy(st->qref, v->q + (v->n_new - 1) * qd, (size_t)qd * sizeof *st->qref);
            st->have_q = 1;
        }
        if (!v->attn_win) return PLM_OK;
        int32_t end = 0; /* generated tokens come after every prompt position */
        for (int h = 0; h < sh->n_kv; h++)
            for (int64_t r = 0; r < v->len; r++)
                if (v->pos[(int64_t)h * sh->cap + r] >= end)
                    end = v->pos[(int64_t)h * sh->cap + r] + 1;
        return record(p, v, v->attn_win, end, err);
    }
    if (v->layer == 0 && st->sim > 0 && v->q && !scheduled(st, v->step) && st->have_q &&
        cosine(v->q, st->qref, qd) < st->sim)
        st->forced = v->step;
    const int full = scheduled(st, v->step) || st->forced == v->step;
    if (!full || !v->attn) return PLM_OK;
    if (v->layer == 0 && v->q) {
        memcpy(st->qref, v->q, (size_t)qd * sizeof *st->qref);
        st->have_q = 1;
    }
    /* the full step's own token joins the recycled rows like every later one */
    return record(p, v, v->attn, v->pos[v->len - 1], err);
}

static plm_status attend(kv_policy *p, int layer, int prefill, int64_t step, int64_t len,
                         int64_t n_new, const int32_t *pos, kv_attend *a, plm_error *err)
{
    (void)err;
    recycled *st = p->state;
    const kv_shape *sh = &p->shape;
    const int64_t cap = sh->cap, n = st->n_sel[layer];
    if (prefill || n_new != 1 || n < 0 || is_full(st, layer, step)) return PLM_OK;
    const int32_t *sel = st->sel + (int64_t)layer * sh->n_kv * (cap + 1);
    for (int h = 0; h < sh->n_kv; h++) {
        const int32_t *s = sel + (int64_t)h * (cap + 1);
        int64_t j = 0;
        for (int64_t r = 0; r < len; r++) { /* both ascending in position: one merge walk */
            const int32_t ps = pos[(int64_t)h * cap + r];
            while (j < n && s[j] < ps) j++;
            st->mark[(int64_t)h * len + r] = (j < n && s[j] == ps) || ps >= st->newer[layer];
        }
    }
    a->n_rows = kv_rows_from_marks(st->mark, sh->n_kv, len, st->rows);
    a->rows = a->n_rows ? st->rows : NULL;
    return PLM_OK;
}

static void destroy(kv_policy *p)
{
    recycled *st = p->state;
    if (st) release(st);
    free(st);
}

const kv_policy_ops kv_recycled_ops = {
    .name = "recycled", .parse = parse, .begin = begin, .needs = needs, .plan = plan,
    .attend = attend, .destroy = destroy,
};
