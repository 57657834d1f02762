/* Mustafar ("Mustafar: Promoting Unstructured Sparsity for KV Cache Pruning in LLM Inference",
 * 2025, arXiv:2505.22913): no token is evicted; instead every K and V row older than a local
 * window is pruned per token by magnitude (each row keeps its largest-|x| 1 - sparsity share
 * of values, K and V with their own sparsity) and moved to a bitmap-compressed store that the
 * decode attention reads directly (prune/kv_bitmap.h). As in the paper's code
 * (models/llama_mustafar_kernel.py), the newest rows stay dense and are compressed in batches:
 * after the prefill, rows [0, floor((len - window) / batch) * batch); then each time `batch`
 * more rows have left the window. Its defaults: residual_length 128, batches of 256, K and V
 * sparsity 0.5.
 *
 * Keys: sparsity=S (both, default 0.5), k_sparsity=, v_sparsity= (override one), window=N
 * (dense recent rows, default 128), batch=N (rows compressed at a time, default 256). */
#include <math.h>
#include <stdlib.h>

#include "prune/kv.h"

typedef struct mustafar {
    double sk, sv;
    int64_t window, batch;
    int64_t *done; /* [n_layers]: rows compressed so far */
} mustafar;

static plm_status whole(prune_spec *s, const char *key, double dflt, double *out,
                        plm_error *err)
{
    PLM_TRY(prune_spec_num(s, key, dflt, 1, 1 << 24, out, err));
    if (*out != floor(*out))
        return plm_fail(err, PLM_E_FORMAT, "kv spec '%s': %s must be a whole number", s->text,
                        key);
    return PLM_OK;
}

static plm_status parse(kv_policy *p, prune_spec *s, plm_error *err)
{
    if (p->c.budget > 0 || p->c.ratio > 0 || p->c.sink >= 0 || p->c.recent >= 0)
        return plm_fail(err, PLM_E_ARG, "kv spec '%s': mustafar evicts no row, so budget, ratio, "
                        "sink and recent do not apply; its keys are sparsity, k_sparsity, "
                        "v_sparsity, window and batch", p->spec);
    double sp, sk, sv, batch;
    /* Sparsity 1 would keep nothing; the store keeps at least one value per row anyway. */
    PLM_TRY(prune_spec_num(s, "sparsity", 0.5, 0, 0.99, &sp, err));
    PLM_TRY(prune_spec_num(s, "k_sparsity", sp, 0, 0.99, &sk, err));
    PLM_TRY(prune_spec_num(s, "v_sparsity", sp, 0, 0.99, &sv, err));
    PLM_TRY(whole(s, "batch", 256, &batch, err));
    mustafar *st = calloc(1, sizeof *st);
    if (!st) return plm_fail(err, PLM_E_NOMEM, "out of memory");
    st->sk = sk;
    st->sv = sv;
    st->window = kv_or(p->c.window, 128);
    st->batch = (int64_t)batch;
    p->state = st;
    return PLM_OK;
}

static plm_status begin(kv_policy *p, const kv_shape *sh, plm_error *err)
{
    mustafar *st = p->state;
    free(st->done);
    st->done = calloc((size_t)(sh->n_layers > 0 ? sh->n_layers : 1), sizeof *st->done);
    return st->done ? PLM_OK : plm_fail(err, PLM_E_NOMEM, "out of memory for the KV policy");
}

static int needs(const kv_policy *p, int layer, int prefill, int64_t step)
{
    return 0; /* magnitude pruning looks at the rows themselves, on the device */
}

static plm_status plan(kv_policy *p, const kv_view *v, kv_plan *out, plm_error *err)
{
    mustafar *st = p->state;
    if (v->layer < 0 || v->layer >= p->shape.n_layers)
        return plm_fail(err, PLM_E_ARG, "mustafar: layer %d of %d", v->layer,
                        p->shape.n_layers);
    out->n_keep = -1;
    out->n_merge = 0;
    out->compress_upto = 0;
    int64_t *done = &st->done[v->layer];
    /* An earlier policy in a chain may have shortened the layer; rows stay compressed only
     * while they exist. */
    if (*done > v->len) *done = v->len;
    const int64_t old = v->len - st->window;
    const int64_t upto = old > 0 ? old / st->batch * st->batch : 0;
    if (upto > *done) {
        out->compress_upto = upto;
        out->sparsity_k = (float)st->sk;
        out->sparsity_v = (float)st->sv;
        *done = upto;
    }
    return PLM_OK;
}

static void destroy(kv_policy *p)
{
    mustafar *st = p->state;
    if (st) free(st->done);
    free(st);
}

const kv_policy_ops kv_mustafar_ops = {
    .name = "mustafar", .parse = parse, .begin = begin, .needs = needs, .plan = plan,
    .destroy = destroy,
};
