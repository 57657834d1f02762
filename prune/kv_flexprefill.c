/* FlexPrefill (Lai et al., ICLR 2025, "FlexPrefill: A Context-Aware Sparse Attention Mechanism
 * for Efficient Long-Sequence Inference"): a sparse *prefill*, not an eviction policy. Per layer
 * and head, from the last query block's attention, it picks query-aware or vertical-slash tiles
 * whose estimated attention mass reaches gamma (§3.2, §3.3), and the prompt's attention computes
 * only those tiles (the backend's attention_blocks op). The cache keeps every row.
 *
 * Keys (defaults from the official RULER scripts for Llama-3.1-8B, experiments/scripts/
 * flex_prefill/ruler.sh: block_size=128, min_budget=1024, gamma=0.95, tau=0.1):
 *   gamma=0.95       attention mass the chosen tiles must cover
 *   tau=0.1          sqrt-JS threshold below which a head is query-aware
 *   block=128        tile side (queries and keys)
 *   min_budget=1024  tokens every head computes at least (rounded up to blocks)
 *   max_budget=0     tokens at most (0: no cap)
 *
 * kv.h's kv_attend cannot carry a block mask yet, and attend() runs before the layer's queries
 * exist, so the policy answers through kv_flexprefill_decide (prune/kv_blocks.h), which the glue
 * calls with the prefill's last-block queries, pooled queries and keys before the attention. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "prune/kv.h"
#include "prune/kv_blocks.h"

typedef struct flexprefill {
    kv_fp_params p;
    uint8_t *mask;      /* [n_heads x n_qb x n_kb] for the prompt given to begin */
    size_t mask_cap;
    kv_fp_head *heads;  /* [n_heads]: the last decision, for reports and tests */
} flexprefill;

static plm_status parse(kv_policy *p, prune_spec *s, plm_error *err)
{
    if (p->c.budget || p->c.ratio > 0 || p->c.sink >= 0 || p->c.recent >= 0)
        return plm_fail(err, PLM_E_ARG, "kv spec '%s': flexprefill evicts nothing; it takes "
                        "gamma, tau, block, min_budget and max_budget, not budget/ratio/sink/"
                        "recent", p->spec);
    flexprefill *f = calloc(1, sizeof *f);
    if (!f) return plm_fail(err, PLM_E_NOMEM, "out of memory");
    p->state = f;
    double block, minb, maxb;
    PLM_TRY(prune_spec_num(s, "gamma", 0.95, 0, 1, &f->p.gamma, err));
    PLM_TRY(prune_spec_num(s, "tau", 0.1, 0, 1, &f->p.tau, err));
    PLM_TRY(prune_spec_num(s, "block", 128, 1, 4096, &block, err));
    PLM_TRY(prune_spec_num(s, "min_budget", 1024, 0, 1 << 30, &minb, err));
    PLM_TRY(prune_spec_num(s, "max_budget", 0, 0, 1 << 30, &maxb, err));
    f->p.block = (int)block;
    f->p.min_budget = (int64_t)minb;
    f->p.max_budget = (int64_t)maxb;
    if ((double)f->p.block != block)
        return plm_fail(err, PLM_E_ARG, "kv spec '%s': block must be a whole number", p->spec);
    if (f->p.max_budget > 0 && f->p.max_budget < f->p.min_budget)
        return plm_fail(err, PLM_E_ARG, "kv spec '%s': max_budget %lld is below min_budget %lld",
                        p->spec, (long long)f->p.max_budget, (long long)f->p.min_budget);
    return PLM_OK;
}

static plm_status begin(kv_policy *p, const kv_shape *sh, plm_error *err)
{
    flexprefill *f = p->state;
    const int64_t nb = (sh->n_prompt + f->p.block - 1) / f->p.block;
    size_t need;
    if (!plm_mul_ok((size_t)nb, (size_t)nb, &need) ||
        !plm_mul_ok(need, (size_t)sh->n_heads, &need))
        return plm_fail(err, PLM_E_LIMIT, "flexprefill: %lld prompt tokens in blocks of %d make "
                        "too large a mask", (long long)sh->n_prompt, f->p.block);
    if (need > f->mask_cap) {
        free(f->mask);
        f->mask = malloc(need ? need : 1);
        f->mask_cap = f->mask ? need : 0;
    }
    free(f->heads);
    f->heads = calloc((size_t)sh->n_heads, sizeof *f->heads);
    if (!f->mask || !f->heads)
        return plm_fail(err, PLM_E_NOMEM, "flexprefill: out of memory for a %zu-byte mask", need);
    return PLM_OK;
}

static int needs(const kv_policy *p, int layer, int prefill, int64_t step)
{
    return 0; /* its inputs come before the attention (kv_flexprefill_decide), not after */
}

static plm_status plan(kv_policy *p, const kv_view *v, kv_plan *out, plm_error *err)
{
    out->n_keep = -1; /* a sparse prefill: every row stays */
    return PLM_OK;
}

static plm_status attend(kv_policy *p, int layer, int prefill, int64_t step, int64_t len,
                         int64_t n_new, const int32_t *pos, kv_attend *a, plm_error *err)
{
    /* Dense: kv_attend has no block mask; see kv_flexprefill_decide. Decode steps stay dense
     * in the paper too (FlexPrefill sparsifies the prefill only, §3). */
    return PLM_OK;
}

int kv_flexprefill_block(const kv_policy *p)
{
    return ((const flexprefill *)p->state)->p.block;
}

plm_status kv_flexprefill_decide(kv_policy *p, const float *q_last, const float *q_pool,
                                 const float *k, int64_t tq, int64_t tk, const uint8_t **mask,
                                 int *block, plm_error *err)
{
    flexprefill *f = p->state;
    const kv_shape *sh = &p->shape;
    if (tq <= 0 || tk < tq || tk > sh->n_prompt)
        return plm_fail(err, PLM_E_ARG, "flexprefill: %lld queries over %lld keys do not fit "
                        "the %lld-token prompt", (long long)tq, (long long)tk,
                        (long long)sh->n_prompt);
    const kv_fp_shape s = {
        .n_heads = sh->n_heads, .n_kv = sh->n_kv, .head_dim = sh->head_dim, .tq = tq, .tk = tk,
        .q_stride = (int64_t)sh->n_heads * sh->head_dim,
        .k_stride = (int64_t)sh->n_kv * sh->head_dim,
        .scale = 1.0f / sqrtf((float)sh->head_dim), .block = f->p.block,
    };
    PLM_TRY(kv_flexprefill_mask(&s, &f->p, q_last, q_pool, k, f->mask, f->heads, err));
    *mask = f->mask;
    *block = f->p.block;
    return PLM_OK;
}

static void destroy(kv_policy *p)
{
    flexprefill *f = p->state;
    if (f) {
        free(f->mask);
        free(f->heads);
    }
    free(f);
}

const kv_policy_ops kv_flexprefill_ops = {
    .name = "flexprefill",
    .parse = parse,
    .begin = begin,
    .needs = needs,
    .plan = plan,
    .attend = attend,
    .destroy = destroy,
};
