/* DELTA (Entezari Zarch, Gao, Jiang, Annavaram, 2025, "DELTA: Dynamic Layer-Aware Token
 * Attention for Efficient Long-Context Reasoning", arXiv 2510.09883, §3; official code
 * hoenza/DELTA: page_score.py, page_selector_v2.py, run_reason_accuracy_8gpu.sh). Decode steps
 * only; the prompt runs dense and nothing is ever evicted (the full cache stays, §3.1).
 *   - layers [0, full) run full attention;
 *   - the last of them and every Delta-layer (`layers=a/b/c`) also run full attention and, from
 *     the current query's attention, pick the salient tokens: a row's score is the maximum over
 *     all query heads of its probability ("unified head selection": one subset shared by every
 *     head), rows are grouped in pages of `page` rows and a page scores the sum of its rows
 *     (page_score.py); the top budget/page pages are kept, the last recent/page pages always
 *     (the "stable recency window", PageSelectorV2 forces them to +inf), ties to the earlier page;
 *   - every other layer at or after `full` attends only to that subset, until the next
 *     Delta-layer reselects (§3.2), through kv_attend.rows.
 * The subset is remembered as token positions, so a layer whose rows an earlier policy in the
 * chain compacted differently still attends to the same tokens. */
#include <stdlib.h>
#include <string.h>

#include "prune/kv.h"

#define DELTA_MAX_LAYERS 64

enum { ROLE_DENSE, ROLE_SELECT, ROLE_SPARSE };

typedef struct delta {
    int full, n_given, given[DELTA_MAX_LAYERS];
    int64_t page;
    uint8_t *role;     /* [n_layers] */
    uint8_t *chosen;   /* [n_pos]: position picked by the latest selection layer */
    int64_t n_pos;
    int64_t sel_step;  /* decode step of the latest selection; -1: none */
    float *row, *pscore;
    int32_t *pages;
    uint8_t *mark;     /* [n_kv x cap] */
    int32_t *rows;     /* [n_kv x cap] */
} delta;

static plm_status parse(kv_policy *p, prune_spec *s, plm_error *err)
{
    PLM_TRY(kv_require_budget(p, err));
    if (p->c.window >= 0)
        return plm_fail(err, PLM_E_ARG, "kv spec '%s': delta selects from each decode step's own "
                        "query; it has no window=", p->spec);
    double full, page;
    PLM_TRY(prune_spec_num(s, "full", 3, 0, 1 << 16, &full, err));
    PLM_TRY(prune_spec_num(s, "page", 16, 1, 1 << 16, &page, err));
    if ((int)full < 1)
        return plm_fail(err, PLM_E_ARG, "kv spec '%s': delta needs full >= 1 (the last full layer "
                        "selects the first subset)", p->spec);
    delta *st = calloc(1, sizeof *st);
    if (!st) return plm_fail(err, PLM_E_NOMEM, "out of memory");
    p->state = st;
    st->full = (int)full;
    st->page = (int64_t)page;
    st->n_given = -1;
    PLM_TRY(prune_spec_ints(s, "layers", st->given, DELTA_MAX_LAYERS, &st->n_given, err));
    for (int i = 0; i < st->n_given; i++) {
        if (i && st->given[i] <= st->given[i - 1])
            return plm_fail(err, PLM_E_ARG, "kv spec '%s': delta layers= must be ascending",
                            p->spec);
        if (st->given[i] < st->full)
            return plm_fail(err, PLM_E_ARG, "kv spec '%s': delta layer %d is one of the first "
                            "full=%d layers", p->spec, st->given[i], st->full);
    }
    return PLM_OK;
}

static plm_status begin(kv_policy *p, const kv_shape *sh, plm_error *err)
{
    delta *st = p->state;
    const int nl = sh->n_layers;
    free(st->role);
    free(st->chosen);
    free(st->row);
    free(st->pscore);
    free(st->pages);
    free(st->mark);
    free(st->rows);
    st->n_pos = (sh->cap > sh->n_prompt ? sh->cap : sh->n_prompt) + sh->max_new + 1;
    const size_t per = (size_t)sh->n_kv * (size_t)(sh->cap + 1);
    st->role = calloc((size_t)nl, 1);
    st->chosen = calloc((size_t)st->n_pos, 1);
    st->row = malloc((size_t)(sh->cap + 1) * sizeof *st->row);
    st->pscore = malloc((size_t)(sh->cap + 1) * sizeof *st->pscore);
    st->pages = malloc((size_t)(sh->cap + 1) * sizeof *st->pages);
    st->mark = malloc(per);
    st->rows = malloc(per * sizeof *st->rows);
    if (!st->role || !st->chosen || !st->row || !st->pscore || !st->pages || !st->mark ||
        !st->rows)
        return plm_fail(err, PLM_E_NOMEM, "out of memory for the KV policy");
    st->sel_step = -1;
    for (int l = 0; l < nl; l++) st->role[l] = l < st->full ? ROLE_DENSE : ROLE_SPARSE;
    if (st->full - 1 < nl) st->role[st->full - 1] = ROLE_SELECT;
    if (st->n_given >= 0) {
        for (int i = 0; i < st->n_given; i++) {
            if (st->given[i] >= nl)
                return plm_fail(err, PLM_E_ARG, "kv spec '%s': delta layer %d, but the model has "
                                "%d layers", p->spec, st->given[i], nl);
            st->role[st->given[i]] = ROLE_SELECT;
        }
    } else {
        /* the official runs use Delta-layers 14 and 22 of DeepSeek-R1-Distill-Qwen-7B's 28:
         * scaled to this model's depth */
        const int dflt[2] = {nl / 2, 11 * nl / 14};
        for (int i = 0; i < 2; i++)
            if (dflt[i] >= st->full && dflt[i] < nl) st->role[dflt[i]] = ROLE_SELECT;
    }
    return PLM_OK;
}

static int needs(const kv_policy *p, int layer, int prefill, int64_t step)
{
    (void)step;
    const delta *st = p->state;
    return !prefill && st->role[layer] == ROLE_SELECT ? KV_NEED_ATTN : 0;
}

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

static plm_status plan(kv_policy *p, const kv_view *v, kv_plan *out, plm_error *err)
{
    delta *st = p->state;
    const kv_shape *sh = &p->shape;
    const int64_t len = v->len, cap = sh->cap, pg = st->page;
    out->n_keep = -1; /* DELTA never evicts */
    if (v->prefill || st->role[v->layer] != ROLE_SELECT || !v->attn || len == 0) return PLM_OK;
    for (int64_t r = 0; r < len; r++) {
        float m = v->attn[r];
        for (int h = 1; h < sh->n_heads; h++)
            if (v->attn[(int64_t)h * len + r] > m) m = v->attn[(int64_t)h * len + r];
        st->row[r] = m;
    }
    const int64_t n_pages = ceil_div(len, pg);
    for (int64_t q = 0; q < n_pages; q++) {
        double s = 0;
        for (int64_t r = q * pg; r < len && r < (q + 1) * pg; r++) s += st->row[r];
        st->pscore[q] = (float)s;
    }
    int64_t want = kv_budget(p) / pg;
    if (want < 1) want = 1;
    const int64_t rec = kv_or(p->c.recent, kv_budget(p) / 8); /* official L = 8 of 64 pages */
    int64_t n = kv_select_topk(st->pscore, 1, n_pages, want, ceil_div(kv_or(p->c.sink, 0), pg),
                               ceil_div(rec, pg), st->pages);
    if (n < 0) return plm_fail(err, PLM_E_NOMEM, "out of memory in delta");
    memset(st->chosen, 0, (size_t)st->n_pos);
    for (int64_t i = 0; i < n; i++)
        for (int64_t r = st->pages[i] * pg; r < len && r < (st->pages[i] + 1) * pg; r++)
            for (int h = 0; h < sh->n_kv; h++) {
                int32_t ps = v->pos[(int64_t)h * cap + r];
                if (ps >= 0 && ps < st->n_pos) st->chosen[ps] = 1;
            }
    st->sel_step = v->step;
    return PLM_OK;
}

static plm_status attend(kv_policy *p, int layer, int prefill, int64_t step, int64_t len,
                         int64_t n_new, const int32_t *pos, kv_attend *a, plm_error *err)
{
    (void)err;
    delta *st = p->state;
    const kv_shape *sh = &p->shape;
    if (prefill || n_new != 1 || st->role[layer] != ROLE_SPARSE || st->sel_step != step)
        return PLM_OK;
    /* the recent window counts the row this step appends, as the official last-L pages do */
    const int64_t sink = kv_or(p->c.sink, 0);
    const int64_t from = len + 1 - kv_or(p->c.recent, kv_budget(p) / 8);
    for (int h = 0; h < sh->n_kv; h++)
        for (int64_t r = 0; r < len; r++) {
            int32_t ps = pos[(int64_t)h * sh->cap + r];
            st->mark[(int64_t)h * len + r] =
                r < sink || r >= from || (ps >= 0 && ps < st->n_pos && st->chosen[ps]);
        }
    a->n_rows = kv_rows_from_marks(st->mark, sh->n_kv, len, st->rows);
    a->rows = a->n_rows ? st->rows : NULL;
    return PLM_OK;
}

static void destroy(kv_policy *p)
{
    delta *st = p->state;
    if (st) {
        free(st->role);
        free(st->chosen);
        free(st->row);
        free(st->pscore);
        free(st->pages);
        free(st->mark);
        free(st->rows);
    }
    free(st);
}

const kv_policy_ops kv_delta_ops = {
    .name = "delta", .parse = parse, .begin = begin, .needs = needs, .plan = plan,
    .attend = attend, .destroy = destroy,
};
