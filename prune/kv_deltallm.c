/* DeltaLLM (Qi, Gao, Ren, Chen, 2025, "DeltaLLM: A Training-Free Framework Exploiting Temporal
 * Sparsity for Efficient Edge LLM Inference", arXiv 2507.19608). The abstract's two parts:
 * a delta matrix that makes attention temporally sparse (consecutive queries differ little, so
 * small changes are zeroed, ~60% sparsity in the prefill), and a hybrid attention that keeps
 * full attention inside a local context window and uses the delta approximation outside it.
 * We read the delta as a delta network over the queries (Gao et al.'s DeltaRNN lineage): each
 * query element is sent on only when it moved by more than theta since it was last sent, so the
 * scores of far keys are updated by a sparse delta, and they equal the tracked query's product
 * with the key. The paper's method section was not available to us; docs/methods/kv/
 * deltallm.md lists what is reconstructed. Like FlexPrefill, it evicts nothing.
 *
 * Keys: local=N (keys within N positions of a query scored exactly, default 128), theta=T
 * (delta threshold; default 0: calibrate on the prompt's queries to sparsity=S, default 0.6,
 * the paper's reported prefill sparsity). Neither default is the paper's. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "prune/kv.h"
#include "prune/kv_deltallm.h"

int64_t kv_delta_track(const float *q, int64_t tq, int64_t q_stride, int n_heads, int hd,
                       float theta, float *state, float *q_ref)
{
    const int64_t width = (int64_t)n_heads * hd;
    int64_t sent = 0;
    for (int64_t i = 0; i < tq; i++)
        for (int64_t e = 0; e < width; e++) {
            const float v = q[i * q_stride + e];
            if (fabsf(v - state[e]) > theta) {
                state[e] = v;
                sent++;
            }
            if (q_ref) q_ref[i * width + e] = state[e];
        }
    return sent;
}

void kv_deltallm_attention(const plm_attn_args *a, const float *q_ref, int64_t window)
{
    const int hd = a->head_dim, group = a->n_heads / a->n_kv;
    double *s = malloc((size_t)(a->tk > 0 ? a->tk : 1) * sizeof *s);
    if (!s) return;
    for (int64_t i = 0; i < a->tq; i++)
        for (int h = 0; h < a->n_heads; h++) {
            const int kh = h / group;
            const int64_t pos = a->q_pos0 + i;
            int64_t nk = a->causal ? pos + 1 : a->tk;
            if (nk > a->tk) nk = a->tk;
            const float *qo = a->q + i * a->q_stride + (int64_t)h * hd;
            const float *qr = q_ref + (i * a->n_heads + h) * hd;
            double mx = -INFINITY, sum = 0;
            for (int64_t j = 0; j < nk; j++) {
                /* hybrid attention: exact inside the local window, tracked query outside */
                const float *qq = pos - j >= window ? qr : qo;
                const float *k = a->k + j * a->kv_stride + (int64_t)kh * hd;
                double d = 0;
                for (int t = 0; t < hd; t++) d += (double)qq[t] * k[t];
                s[j] = d * a->scale;
                mx = s[j] > mx ? s[j] : mx;
            }
            for (int64_t j = 0; j < nk; j++) sum += (s[j] = exp(s[j] - mx));
            float *o = a->out + (i * a->n_heads + h) * hd;
            for (int t = 0; t < hd; t++) {
                double acc = 0;
                for (int64_t j = 0; j < nk; j++)
                    acc += s[j] * a->v[j * a->kv_stride + (int64_t)kh * hd + t];
                o[t] = nk > 0 ? (float)(acc / sum) : 0.0f;
            }
        }
    free(s);
}

float kv_deltallm_calibrate(const float *q, int64_t tq, int64_t q_stride, int n_heads, int hd,
                            double sparsity)
{
    const int64_t width = (int64_t)n_heads * hd;
    float *st = malloc((size_t)width * sizeof *st);
    if (!st) return -1;
    const double total = (double)tq * (double)width;
    /* Sparsity grows with theta; bisect between 0 and the largest change seen. */
    float lo = 0, hi = 0;
    for (int64_t i = 1; i < tq; i++)
        for (int64_t e = 0; e < width; e++) {
            const float d = fabsf(q[i * q_stride + e] - q[(i - 1) * q_stride + e]);
            hi = d > hi ? d : hi;
        }
    hi = hi * 2 + 1e-6f;
    for (int it = 0; it < 60 && hi - lo > 1e-4f * hi; it++) {
        const float mid = 0.5f * (lo + hi);
        for (int64_t e = 0; e < width; e++) st[e] = INFINITY;
        const double sp = 1.0 - (double)kv_delta_track(q, tq, q_stride, n_heads, hd, mid, st,
                                                        NULL) / total;
        if (sp >= sparsity) hi = mid;
        else lo = mid;
    }
    free(st);
    return hi;
}

typedef struct deltallm {
    int64_t window;
    float theta;
    double sparsity;
} deltallm;

static plm_status parse(kv_policy *p, prune_spec *s, plm_error *err)
{
    if (p->c.budget || p->c.ratio > 0 || p->c.sink >= 0 || p->c.recent >= 0)
        return plm_fail(err, PLM_E_ARG, "kv spec '%s': deltallm evicts nothing; it takes "
                        "local, theta and sparsity, not budget/ratio/sink/recent", p->spec);
    deltallm *d = calloc(1, sizeof *d);
    if (!d) return plm_fail(err, PLM_E_NOMEM, "out of memory");
    p->state = d;
    double w, t;
    PLM_TRY(prune_spec_num(s, "local", 128, 1, 1 << 30, &w, err));
    PLM_TRY(prune_spec_num(s, "theta", 0, 0, 1e6, &t, err));
    PLM_TRY(prune_spec_num(s, "sparsity", 0.6, 0, 1, &d->sparsity, err));
    d->window = (int64_t)w;
    d->theta = (float)t;
    if ((double)d->window != w)
        return plm_fail(err, PLM_E_ARG, "kv spec '%s': local must be a whole number", p->spec);
    return PLM_OK;
}

void kv_deltallm_params(const kv_policy *p, int64_t *window, float *theta, double *sparsity)
{
    const deltallm *d = p->state;
    *window = d->window;
    *theta = d->theta;
    *sparsity = d->sparsity;
}

static int needs(const kv_policy *p, int layer, int prefill, int64_t step)
{
    return 0;
}

static plm_status plan(kv_policy *p, const kv_view *v, kv_plan *out, plm_error *err)
{
    out->n_keep = -1; /* the full cache stays: DeltaLLM changes how attention is computed */
    return PLM_OK;
}

static plm_status attend(kv_policy *p, int layer, int prefill, int64_t step, int64_t len,
                         int64_t n_new, const int32_t *pos, kv_attend *a, plm_error *err)
{
    /* Dense: the approximation is per query (its tracked row), which kv_attend's per-head bias
     * cannot express; the glue runs attention_delta instead (docs/methods/kv/deltallm.md). */
    return PLM_OK;
}

static void destroy(kv_policy *p)
{
    free(p->state);
}

const kv_policy_ops kv_deltallm_ops = {
    .name = "deltallm",
    .parse = parse,
    .needs = needs,
    .plan = plan,
    .attend = attend,
    .destroy = destroy,
};
