/* ThinK (Xu et al., 2024, "ThinK: Thinner Key Cache by Query-Driven Pruning", arXiv:2407.21018).
 * Key caches are low-rank along the channel axis: a few channels carry most of q . k (§3.1),
 * so ThinK prunes key *channels*, not tokens. Query-driven criterion (§3.2, eq. 3): channel d of
 * a head scores ||Q_win[:, d] K[:, d]^T||_F = ||Q_win[:, d]|| * ||K[:, d]||, the size of its
 * rank-one contribution to the observation window's attention logits, and the head keeps the
 * top (1 - ratio) * head_dim channels. The official code (SalesforceAIResearch/ThinK,
 * ThinK_flash/src/kv_pruning_utils.py, key_pruner_query_driven) ranks by mean(q^2) * mean(k^2)
 * over the last 32 queries and all keys (the same order), prunes int(head_dim * ratio) channels
 * (ratio 0.4 by default) once, at the prefill, and leaves the newest recent_size = 32 prompt
 * keys and every key appended while decoding whole (they join its unpruned cache part).
 *
 * Here: the same rule after the prompt's pass of each layer, with keys held at that moment (a
 * token policy earlier in the chain has already evicted: `h2o:budget=256+think` prunes the
 * channels of the kept rows). GQA: the code repeats kv heads per query head and prunes each
 * copy on its own; we store one key row per kv head, so a kv head keeps one channel set, scored
 * with its query heads' window norms summed. Rows [0, len - recent) become thin
 * (prune/kv_thin.h); the newest `recent` prompt rows and the decode rows stay full, as in the
 * code. Keys: ratio=R (pruned share, [0, 1), default 0.4), window=N (32), recent=N (32). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "prune/kv.h"
#include "prune/kv_thin.h"

typedef struct think {
    double ratio;
    int keep;        /* channels per kv head (set in begin) */
    int32_t *chan;   /* [n_kv x keep] */
} think;

int kv_think_keep(int head_dim, double ratio)
{
    /* floor of the exact product, as int() in the code; the nudge keeps 0.4 * 10 from landing
     * on 3.9999 */
    const int pruned = (int)floor(ratio * head_dim + 1e-9);
    const int keep = head_dim - pruned;
    return keep < 1 ? 1 : keep;
}

typedef struct chan_score {
    double s;
    int d;
} chan_score;

static int by_score(const void *pa, const void *pb)
{
    const chan_score *a = pa, *b = pb;
    if (a->s != b->s) return a->s > b->s ? -1 : 1;
    return a->d - b->d;
}

static int ascending(const void *pa, const void *pb)
{
    return *(const int32_t *)pa - *(const int32_t *)pb;
}

plm_status kv_think_channels(const float *q, int64_t n_q, int64_t q_stride, const float *k,
                             int64_t len, int64_t kv_stride, int n_heads, int n_kv, int hd,
                             int keep, int32_t *chan, plm_error *err)
{
    chan_score *sc = malloc((size_t)hd * sizeof *sc);
    double *qn = malloc((size_t)hd * sizeof *qn);
    if (!sc || !qn) {
        free(sc);
        free(qn);
        return plm_fail(err, PLM_E_NOMEM, "think: out of memory");
    }
    const int group = n_heads / n_kv;
    for (int kh = 0; kh < n_kv; kh++) {
        for (int d = 0; d < hd; d++) qn[d] = 0;
        for (int g = 0; g < group; g++)
            for (int64_t i = 0; i < n_q; i++) {
                const float *x = q + i * q_stride + (int64_t)(kh * group + g) * hd;
                for (int d = 0; d < hd; d++) qn[d] += (double)x[d] * x[d];
            }
        for (int d = 0; d < hd; d++) {
            double kn = 0;
            for (int64_t r = 0; r < len; r++) {
                const double x = k[r * kv_stride + (int64_t)kh * hd + d];
                kn += x * x;
            }
            /* squared norms order channels as the norms do */
            sc[d].s = qn[d] * kn;
            sc[d].d = d;
        }
        qsort(sc, (size_t)hd, sizeof *sc, by_score);
        int32_t *out = chan + (int64_t)kh * keep;
        for (int c = 0; c < keep; c++) out[c] = sc[c].d;
        qsort(out, (size_t)keep, sizeof *out, ascending);
    }
    free(sc);
    free(qn);
    return PLM_OK;
}

static int given(const prune_spec *s, const char *key)
{
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->p[i].key, key)) return 1;
    return 0;
}

static plm_status parse(kv_policy *p, prune_spec *s, plm_error *err)
{
    /* `ratio` is a common key (the budget's share of the prompt); ThinK's ratio is the pruned
     * share of the channels, so it is read from the common slot and the budget left unset. */
    if (p->c.budget > 0 || p->c.sink >= 0)
        return plm_fail(err, PLM_E_ARG, "kv spec '%s': think prunes key channels, not rows, so "
                        "budget and sink do not apply (its keys: ratio, window, recent); join it "
                        "to a token policy with '+', e.g. h2o:budget=256+think", p->spec);
    const double ratio = given(s, "ratio") ? p->c.ratio : 0.4;
    if (!(ratio >= 0 && ratio < 1))
        return plm_fail(err, PLM_E_ARG, "kv spec '%s': think's ratio (pruned share of the key "
                        "channels) must be in [0, 1)", p->spec);
    if (p->c.window == 0)
        return plm_fail(err, PLM_E_ARG, "kv spec '%s': think needs a window of at least one "
                        "query", p->spec);
    think *st = calloc(1, sizeof *st);
    if (!st) return plm_fail(err, PLM_E_NOMEM, "out of memory");
    st->ratio = ratio;
    p->c.ratio = 0; /* not a row budget */
    p->state = st;
    return PLM_OK;
}

static plm_status begin(kv_policy *p, const kv_shape *sh, plm_error *err)
{
    think *st = p->state;
    free(st->chan);
    st->keep = kv_think_keep(sh->head_dim, st->ratio);
    st->chan = malloc((size_t)sh->n_kv * (size_t)st->keep * sizeof *st->chan);
    return st->chan ? PLM_OK : plm_fail(err, PLM_E_NOMEM, "out of memory for the KV policy");
}

static int needs(const kv_policy *p, int layer, int prefill, int64_t step)
{
    return prefill ? KV_NEED_Q | KV_NEED_KV : 0;
}

static plm_status plan(kv_policy *p, const kv_view *v, kv_plan *out, plm_error *err)
{
    think *st = p->state;
    const kv_shape *sh = &p->shape;
    out->n_keep = -1;
    if (!v->prefill) return PLM_OK; /* decode rows stay whole (see the top) */
    if (!v->q || !v->k)
        return plm_fail(err, PLM_E_ARG, "think: layer %d came without queries or keys",
                        v->layer);
    const int64_t qd = (int64_t)sh->n_heads * sh->head_dim;
    const int64_t kvd = (int64_t)sh->n_kv * sh->head_dim;
    const int64_t w = kv_window(p) < v->n_q ? kv_window(p) : v->n_q;
    PLM_TRY(kv_think_channels(v->q + (v->n_q - w) * qd, w, qd, v->k, v->len, kvd, sh->n_heads,
                              sh->n_kv, sh->head_dim, st->keep, st->chan, err));
    const int64_t upto = v->len - kv_or(p->c.recent, 32);
    out->n_chan = st->keep;
    out->chan = st->chan;
    out->chan_upto = upto > 0 ? upto : 0;
    return PLM_OK;
}

static void destroy(kv_policy *p)
{
    think *st = p->state;
    if (st) free(st->chan);
    free(st);
}

const kv_policy_ops kv_think_ops = {
    .name = "think", .parse = parse, .begin = begin, .needs = needs, .plan = plan,
    .destroy = destroy,
};
