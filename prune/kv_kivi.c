/* KIVI at 4 bits (Liu et al., ICML 2024, "KIVI: A Tuning-Free Asymmetric 2bit Quantization for
 * KV Cache", arXiv:2402.02750; code jy-yuan/KIVI, models/llama_kivi.py and quant/new_pack.py):
 * `--kv int4` or `--kv-quant int4`. The policy evicts nothing; it asks the glue to keep every
 * kv head's newest `residual` rows in float32 and to store older ones in the int4 store
 * (prune/kv_int4.h: keys per channel over `group`-token groups, values per token over
 * `group`-channel groups), `group` rows at a time. After a token policy in a chain
 * (`scissorhands:budget=512+int4`: Scissorhands reports its eviction compatible with 4-bit
 * KV quantisation, and issue 7 asks for the pair), it quantises the rows
 * that policy kept; stored rows stay stored through later evictions and merges.
 *
 * KIVI's code keeps 0..R-1 float keys (quantising R at a time, R = residual_length) and exactly
 * R float values (one value row per step); here keys and values share one boundary per head,
 * between R and R + group - 1 float rows, so a row is either wholly stored or wholly float and
 * the decode kernel reads each row from one place. Defaults: group 32 (the paper's main
 * setting), residual 128 (its R).
 *
 * Keys: group=G (1..1024; values use min(G, head_dim) channels, which must divide head_dim),
 * residual=R (rows kept float32, 0..2^24). */
#include <math.h>
#include <stdlib.h>

#include "prune/kv.h"

typedef struct kivi {
    int group;
    int64_t residual;
} kivi;

static plm_status parse(kv_policy *p, prune_spec *s, plm_error *err)
{
    if (p->c.budget > 0 || p->c.ratio > 0 || p->c.sink >= 0 || p->c.recent >= 0 ||
        p->c.window >= 0)
        return plm_fail(err, PLM_E_ARG, "kv spec '%s': int4 quantises rows and evicts none, so "
                        "budget, ratio, sink, recent and window do not apply; its keys are group "
                        "and residual (join a token policy with '+')", p->spec);
    double group, residual;
    PLM_TRY(prune_spec_num(s, "group", 32, 1, 1024, &group, err));
    PLM_TRY(prune_spec_num(s, "residual", 128, 0, 1 << 24, &residual, err));
    if (group != floor(group) || residual != floor(residual))
        return plm_fail(err, PLM_E_FORMAT, "kv spec '%s': group and residual are whole numbers",
                        p->spec);
    kivi *st = calloc(1, sizeof *st);
    if (!st) return plm_fail(err, PLM_E_NOMEM, "out of memory");
    st->group = (int)group;
    st->residual = (int64_t)residual;
    p->state = st;
    return PLM_OK;
}

static int needs(const kv_policy *p, int layer, int prefill, int64_t step)
{
    return 0; /* the quantiser reads the rows where they lie, on the device */
}

static plm_status plan(kv_policy *p, const kv_view *v, kv_plan *out, plm_error *err)
{
    const kivi *st = p->state;
    out->n_keep = -1;
    out->quant_group = st->group;
    out->quant_recent = st->residual;
    return PLM_OK;
}

static void destroy(kv_policy *p) { free(p->state); }

const kv_policy_ops kv_int4_ops = {
    .name = "int4", .parse = parse, .needs = needs, .plan = plan, .destroy = destroy,
};
