/* StreamingLLM (Xiao et al., ICLR 2024, "Efficient Streaming Language Models with Attention
 * Sinks", §3.2): keep the first `sink` tokens (the attention sinks, 4 by default) and a rolling
 * window of the most recent ones; everything between is evicted. Needs no attention. */
#include <stdlib.h>

#include "prune/kv.h"

typedef struct streaming {
    int32_t *keep;
} streaming;

static plm_status parse(kv_policy *p, prune_spec *s, plm_error *err)
{
    (void)s;
    PLM_TRY(kv_require_budget(p, err));
    if (p->c.recent >= 0)
        return plm_fail(err, PLM_E_ARG, "kv spec '%s': streaming keeps budget - sink recent "
                        "rows; give budget/ratio and sink only", p->spec);
    p->state = calloc(1, sizeof(streaming));
    return p->state ? PLM_OK : plm_fail(err, PLM_E_NOMEM, "out of memory");
}

static plm_status begin(kv_policy *p, const kv_shape *sh, plm_error *err)
{
    streaming *st = p->state;
    free(st->keep);
    st->keep = malloc((size_t)sh->n_kv * (size_t)sh->cap * sizeof *st->keep);
    return st->keep ? PLM_OK : plm_fail(err, PLM_E_NOMEM, "out of memory for the KV policy");
}

static int needs(const kv_policy *p, int layer, int prefill, int64_t step)
{
    return 0;
}

static plm_status plan(kv_policy *p, const kv_view *v, kv_plan *out, plm_error *err)
{
    streaming *st = p->state;
    const int64_t budget = kv_budget(p);
    out->n_keep = -1;
    if (v->len <= budget) return PLM_OK;
    const int64_t sink = kv_or(p->c.sink, 4) < budget ? kv_or(p->c.sink, 4) : budget;
    const int n_kv = p->shape.n_kv;
    for (int h = 0; h < n_kv; h++) {
        int32_t *k = st->keep + (int64_t)h * budget;
        int64_t n = 0;
        for (int64_t r = 0; r < sink; r++) k[n++] = (int32_t)r;
        for (int64_t r = v->len - (budget - sink); r < v->len; r++) k[n++] = (int32_t)r;
    }
    out->n_keep = budget;
    out->keep = st->keep;
    return PLM_OK;
}

static void destroy(kv_policy *p)
{
    streaming *st = p->state;
    if (st) free(st->keep);
    free(st);
}

const kv_policy_ops kv_streaming_ops = {
    .name = "streaming", .parse = parse, .begin = begin, .needs = needs, .plan = plan,
    .destroy = destroy,
};
