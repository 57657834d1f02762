/* AutoPASTA (Zhang, Yu, Singh, Liu, Liu, Gao, Zhao, Roth, Cheng, 2024, "Model Tells Itself Where
 * to Attend: Faithfulness Meets Automatic Attention Steering", arXiv 2409.10790, §3) on PASTA's
 * steering (Zhang et al., ICLR 2024, "Tell Your Model Where to Attend", §3.1; official
 * pastalib/pasta.py, scale_position="exclude").
 *   - Steering: in the steered heads, the attention to every prompt token outside the
 *     highlighted spans is scaled by alpha (0.01) and the row renormalised; PASTA implements it
 *     by adding log(alpha) to those tokens' logits, which is what kv_attend.bias does. Tokens
 *     after the prompt (generated ones) are not scaled: pasta.py stops at input_len.
 *   - Identification: AutoPASTA asks the model to name the key sentence and maps it back to the
 *     context. One prompt's prefill cannot hold that second generation, so we let the model's
 *     attention name it instead: the prompt before the observation window (the last `window`
 *     queries, i.e. the question) is cut into its sentences (kv_shape.sentence, from the
 *     tokenizer's text; fixed spans of `span` positions when `span=` is given or the glue has
 *     no sentences), each scored by the attention the window queries pay its tokens, summed
 *     over every layer and head, ignoring the first `sink` positions (attention sinks would
 *     otherwise always win), and the `sentences` best are highlighted.
 *   - Heads: `heads=all`, or a '/' list of `L` (every head of layer L) and `L.H` (query head H
 *     of layer L), standing in for AutoPASTA's coarse-to-fine profiled heads.
 * The spans are known once the prompt's last layer has run; the glue then runs the last
 * prompt token again with the steering on (steers()), so the first answer token is steered
 * too, and every decode step after it. Never evicts; positions map rows, so it composes after
 * any policy in a chain. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prune/kv.h"

#define AP_MAX_HEADS 64

typedef struct autopasta {
    int64_t span, sentences;
    int fixed_span;   /* span= given: fixed spans even when the glue knows the sentences */
    const int32_t *sid; /* kv_shape.sentence, or NULL: fixed spans */
    int64_t n_sid;    /* prompt positions sid covers */
    int64_t n_units;  /* entries of span_score */
    double alpha;
    int all, n_heads;
    int32_t hl[AP_MAX_HEADS], hh[AP_MAX_HEADS]; /* layer, head (-1: the whole layer) */
    uint8_t *steer;   /* [n_layers x n_heads] */
    uint8_t *lit;     /* [n_pos]: highlighted position */
    int64_t n_pos;
    int32_t prompt_end, win_start; /* positions */
    int question;     /* question=1 [prunelm]: the observation window is never scaled */
    float *span_score;
    int32_t *pick;
    int ready;        /* spans chosen for this prompt */
    int64_t n_lit;    /* highlighted positions (0: nothing to steer toward) */
    float *bias;      /* [n_heads x cap] */
} autopasta;

static plm_status parse_heads(kv_policy *p, autopasta *st, const char *v, plm_error *err)
{
    if (!strcmp(v, "all")) {
        st->all = 1;
        return PLM_OK;
    }
    const char *c = v;
    while (*c) {
        char *end;
        long l = strtol(c, &end, 10), h = -1;
        if (end == c || l < 0 || l > 1 << 16) break;
        if (*end == '.') {
            c = end + 1;
            h = strtol(c, &end, 10);
            if (end == c || h < 0 || h > 1 << 16) break;
        }
        if (st->n_heads == AP_MAX_HEADS)
            return plm_fail(err, PLM_E_ARG, "kv spec '%s': autopasta steers at most %d heads= "
                            "entries", p->spec, AP_MAX_HEADS);
        st->hl[st->n_heads] = (int32_t)l;
        st->hh[st->n_heads++] = (int32_t)h;
        if (!*end) return PLM_OK;
        if (*end != '/') break;
        c = end + 1;
    }
    return plm_fail(err, PLM_E_FORMAT, "kv spec '%s': heads=%s, expected all or a '/' list of "
                    "LAYER or LAYER.HEAD", p->spec, v);
}

static plm_status parse(kv_policy *p, prune_spec *s, plm_error *err)
{
    if (p->c.budget > 0 || p->c.ratio > 0 || p->c.recent >= 0)
        return plm_fail(err, PLM_E_ARG, "kv spec '%s': autopasta steers attention and keeps "
                        "every row; it takes no budget=, ratio= or recent=", p->spec);
    double span, k, alpha, question;
    int st_fixed = 0;
    for (int i = 0; i < s->n; i++) st_fixed |= !strcmp(s->p[i].key, "span");
    PLM_TRY(prune_spec_num(s, "span", 16, 1, 1 << 20, &span, err));
    PLM_TRY(prune_spec_num(s, "sentences", 1, 1, 1 << 20, &k, err));
    PLM_TRY(prune_spec_num(s, "alpha", 0.01, 0, 1, &alpha, err));
    PLM_TRY(prune_spec_num(s, "question", 0, 0, 1, &question, err));
    if (!(alpha > 0))
        return plm_fail(err, PLM_E_ARG, "kv spec '%s': alpha must be in (0, 1]: it scales the "
                        "other tokens' attention", p->spec);
    if (span != floor(span) || k != floor(k))
        return plm_fail(err, PLM_E_ARG, "kv spec '%s': span and sentences must be whole numbers",
                        p->spec);
    autopasta *st = calloc(1, sizeof *st);
    if (!st) return plm_fail(err, PLM_E_NOMEM, "out of memory");
    p->state = st;
    st->span = (int64_t)span;
    st->fixed_span = st_fixed;
    st->sentences = (int64_t)k;
    st->alpha = alpha;
    st->question = question > 0;
    st->all = 1;
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->p[i].key, "heads")) {
            s->p[i].used = 1;
            st->all = 0;
            PLM_TRY(parse_heads(p, st, s->p[i].val, err));
        }
    return PLM_OK;
}

static plm_status begin(kv_policy *p, const kv_shape *sh, plm_error *err)
{
    autopasta *st = p->state;
    free(st->steer);
    free(st->lit);
    free(st->span_score);
    free(st->pick);
    free(st->bias);
    st->n_pos = (sh->cap > sh->n_prompt ? sh->cap : sh->n_prompt) + sh->max_new + 1;
    st->sid = st->fixed_span ? NULL : sh->sentence;
    st->n_sid = st->sid ? sh->n_prompt : 0;
    /* one score per unit: a sentence has at least one position, so n_pos bounds both */
    st->n_units = st->sid ? st->n_pos : st->n_pos / st->span + 1;
    const size_t nsp = (size_t)st->n_units;
    st->steer = calloc((size_t)sh->n_layers * (size_t)sh->n_heads, 1);
    st->lit = calloc((size_t)st->n_pos, 1);
    st->span_score = calloc(nsp, sizeof *st->span_score);
    st->pick = malloc(nsp * sizeof *st->pick);
    st->bias = malloc((size_t)sh->n_heads * (size_t)(sh->cap + 1) * sizeof *st->bias);
    if (!st->steer || !st->lit || !st->span_score || !st->pick || !st->bias)
        return plm_fail(err, PLM_E_NOMEM, "out of memory for the KV policy");
    if (st->all) memset(st->steer, 1, (size_t)sh->n_layers * (size_t)sh->n_heads);
    for (int i = 0; i < st->n_heads; i++) {
        if (st->hl[i] >= sh->n_layers || st->hh[i] >= sh->n_heads) {
            char head[32] = "";
            if (st->hh[i] >= 0) snprintf(head, sizeof head, " head %d", st->hh[i]);
            return plm_fail(err, PLM_E_ARG, "kv spec '%s': autopasta steers layer %d%s, but the "
                            "model has %d layers of %d heads", p->spec, st->hl[i], head,
                            sh->n_layers, sh->n_heads);
        }
        for (int h = 0; h < sh->n_heads; h++)
            if (st->hh[i] < 0 || st->hh[i] == h) st->steer[st->hl[i] * sh->n_heads + h] = 1;
    }
    st->ready = 0;
    st->prompt_end = st->win_start = 0;
    return PLM_OK;
}

static int needs(const kv_policy *p, int layer, int prefill, int64_t step)
{
    (void)p, (void)layer, (void)step;
    return prefill ? KV_NEED_WIN : 0;
}

/* The scoring unit (sentence or fixed span) of prompt position ps; -1 for none. */
static int64_t unit_of(const autopasta *st, int32_t ps)
{
    if (ps < 0) return -1;
    if (!st->sid) return ps / st->span;
    return ps < st->n_sid ? st->sid[ps] : -1;
}

/* After the prompt's last layer: the `sentences` best units become the highlighted positions. */
static plm_status choose(kv_policy *p, plm_error *err)
{
    autopasta *st = p->state;
    const int64_t nsp = st->win_start <= 0 ? 0 : unit_of(st, st->win_start - 1) + 1;
    memset(st->lit, 0, (size_t)st->n_pos);
    st->ready = 1;
    st->n_lit = 0;
    if (nsp <= 0) return PLM_OK; /* the window covers the prompt: nothing to highlight */
    int64_t n = prune_topk(st->span_score, nsp, st->sentences, st->pick);
    if (n < 0) return plm_fail(err, PLM_E_NOMEM, "out of memory in autopasta");
    for (int64_t i = 0; i < n; i++)
        for (int32_t q = 0; q < st->win_start; q++)
            if (unit_of(st, q) == st->pick[i]) st->lit[q] = 1, st->n_lit++;
    return PLM_OK;
}

static plm_status plan(kv_policy *p, const kv_view *v, kv_plan *out, plm_error *err)
{
    autopasta *st = p->state;
    const kv_shape *sh = &p->shape;
    const int64_t len = v->len, cap = sh->cap;
    const int group = sh->n_heads / sh->n_kv;
    out->n_keep = -1; /* steering only: every row stays */
    if (!v->prefill || len == 0) return PLM_OK;
    if (v->attn_win && v->n_win > 0 && v->n_win <= len) {
        if (v->layer == 0) { /* the prompt's extent and its window, as positions */
            memset(st->span_score, 0, (size_t)st->n_units * sizeof(float));
            st->prompt_end = 0;
            for (int64_t r = 0; r < len; r++)
                if (v->pos[r] >= st->prompt_end) st->prompt_end = v->pos[r] + 1;
            st->win_start = v->pos[len - v->n_win];
        }
        const int64_t sink = kv_or(p->c.sink, 4); /* StreamingLLM's 4 sinks */
        for (int h = 0; h < sh->n_heads; h++)
            for (int64_t r = 0; r < len; r++) {
                const int32_t ps = v->pos[(int64_t)(h / group) * cap + r];
                const int64_t u = unit_of(st, ps);
                if (ps >= sink && ps < st->win_start && u >= 0)
                    st->span_score[u] += v->attn_win[(int64_t)h * len + r];
            }
    }
    if (v->layer == sh->n_layers - 1) return choose(p, err);
    return PLM_OK;
}

static plm_status attend(kv_policy *p, int layer, int prefill, int64_t step, int64_t len,
                         int64_t n_new, const int32_t *pos, kv_attend *a, plm_error *err)
{
    (void)step, (void)err;
    autopasta *st = p->state;
    const kv_shape *sh = &p->shape;
    const int group = sh->n_heads / sh->n_kv;
    const int64_t tk = len + n_new;
    /* with nothing highlighted, scaling every prompt token would only push attention onto the
     * generated ones */
    if (prefill || !st->ready || !st->n_lit || tk > sh->cap + 1) return PLM_OK;
    int any = 0;
    for (int h = 0; h < sh->n_heads; h++) any |= st->steer[layer * sh->n_heads + h];
    if (!any) return PLM_OK;
    const float down = logf((float)st->alpha);
    for (int h = 0; h < sh->n_heads; h++) {
        float *b = st->bias + (int64_t)h * tk;
        const int on = st->steer[layer * sh->n_heads + h];
        for (int64_t r = 0; r < tk; r++) {
            /* rows the pass appends are generated tokens: never scaled (pasta.py's input_len) */
            const int32_t ps = r < len ? pos[(int64_t)(h / group) * sh->cap + r] : st->prompt_end;
            const int32_t end = st->question ? st->win_start : st->prompt_end;
            b[r] = on && ps < end && !(ps >= 0 && ps < st->n_pos && st->lit[ps]) ? down : 0.0f;
        }
    }
    a->bias = st->bias;
    return PLM_OK;
}

static int steers(const kv_policy *p)
{
    const autopasta *st = p->state;
    const kv_shape *sh = &p->shape;
    if (!st || !st->ready || !st->n_lit) return 0;
    for (int64_t i = 0; i < (int64_t)sh->n_layers * sh->n_heads; i++)
        if (st->steer[i]) return 1;
    return 0;
}

static void destroy(kv_policy *p)
{
    autopasta *st = p->state;
    if (st) {
        free(st->steer);
        free(st->lit);
        free(st->span_score);
        free(st->pick);
        free(st->bias);
    }
    free(st);
}

const kv_policy_ops kv_autopasta_ops = {
    .name = "autopasta", .parse = parse, .begin = begin, .needs = needs, .plan = plan,
    .attend = attend, .steers = steers, .destroy = destroy,
};
