/* The KV-cache policy on a session (`--kv`): after every decoder layer of the prefill and of each
 * decode step it computes what the policy asked for (attention of the pass's queries over the
 * layer's rows, host copies of K/V/Q), asks the policy for a plan, and applies it to the cache on
 * the backend (merges, then per-head compaction). Before a layer's attention it lets a sparse
 * policy restrict the rows attended or add a steering bias. prune/kv_*.c holds the rules; this
 * file only moves numbers between them and the backend. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "api/session_internal.h"
#include "prune/kv.h"

struct kv_glue {
    kv_policy *pol;            /* the chain from plm_session_set_kv */
    kv_shape shape;
    int prefill;
    int64_t step;
    int32_t *pos;              /* host [n_layers x n_kv x cap] */
    float *attn, *attn_win;    /* host [n_heads x cap] */
    float *hk, *hv, *hq;       /* host copies when asked for */
    size_t hq_floats;
    int32_t *mh, *md, *ms;     /* merges as parallel arrays for mix_rows */
    float *ma, *mb;
    int64_t m_cap;
    float *d_probs;            /* device [n_heads x cap] */
    int32_t *d_rows;           /* device [n_kv x cap] */
    float *d_bias;             /* device [n_heads x cap] */
};

static void glue_release(plm_session *s, kv_glue *g)
{
    const plm_backend_ops *op = s->be->ops;
    free(g->pos);
    free(g->attn);
    free(g->attn_win);
    free(g->hk);
    free(g->hv);
    free(g->hq);
    free(g->mh);
    free(g->md);
    free(g->ms);
    free(g->ma);
    free(g->mb);
    if (g->d_probs) op->release(s->be, g->d_probs);
    if (g->d_rows) op->release(s->be, g->d_rows);
    if (g->d_bias) op->release(s->be, g->d_bias);
    kv_policy *pol = g->pol;
    memset(g, 0, sizeof *g);
    g->pol = pol;
}

void session_kv_free(plm_session *s)
{
    if (!s->kvg) return;
    glue_release(s, s->kvg);
    kv_policy_free(s->kvg->pol);
    free(s->kvg);
    s->kvg = NULL;
}

plm_status plm_session_set_kv(plm_session *s, const char *spec)
{
    kv_policy *p = NULL;
    if (spec) PLM_TRY(kv_policy_parse(spec, &p, &s->err));
    session_kv_free(s);
    if (!p) return PLM_OK;
    s->kvg = calloc(1, sizeof *s->kvg);
    if (!s->kvg) {
        kv_policy_free(p);
        return plm_fail(&s->err, PLM_E_NOMEM, "out of memory");
    }
    s->kvg->pol = p;
    return PLM_OK;
}

int session_kv_active(const plm_session *s) { return s->kvg != NULL; }

plm_status session_kv_begin(plm_session *s, int64_t n_prompt, int64_t cap, int64_t max_new)
{
    kv_glue *g = s->kvg;
    const llama_config *c = &s->m->cfg.text;
    const plm_backend_ops *op = s->be->ops;
    glue_release(s, g);
    g->shape = (kv_shape){.n_layers = c->n_layers, .n_heads = c->n_heads, .n_kv = c->n_kv,
                          .head_dim = c->head_dim, .n_prompt = n_prompt, .cap = cap,
                          .max_new = max_new};
    const size_t rows = (size_t)cap, kvd = (size_t)c->n_kv * (size_t)c->head_dim;
    g->pos = malloc((size_t)c->n_layers * (size_t)c->n_kv * rows * sizeof *g->pos);
    g->attn = malloc((size_t)c->n_heads * rows * sizeof *g->attn);
    g->attn_win = malloc((size_t)c->n_heads * rows * sizeof *g->attn_win);
    g->hk = malloc(rows * kvd * sizeof *g->hk);
    g->hv = malloc(rows * kvd * sizeof *g->hv);
    g->d_probs = op->alloc(s->be, (size_t)c->n_heads * rows * sizeof(float));
    g->d_rows = op->alloc(s->be, (size_t)c->n_kv * rows * sizeof(int32_t));
    g->d_bias = op->alloc(s->be, (size_t)c->n_heads * rows * sizeof(float));
    if (!g->pos || !g->attn || !g->attn_win || !g->hk || !g->hv || !g->d_probs || !g->d_rows ||
        !g->d_bias)
        return plm_fail(&s->err, PLM_E_NOMEM, "out of memory for the KV policy's buffers "
                        "(%lld rows)", (long long)cap);
    g->prefill = 1;
    g->step = 0;
    return kv_policy_begin(g->pol, &g->shape, &s->err);
}

void session_kv_phase(plm_session *s, int prefill, int64_t step)
{
    s->kvg->prefill = prefill;
    s->kvg->step = step;
}

/* attention summed over queries q[0..tq) (query i at absolute row q_pos0 + i) into dst */
static void attn_sum(plm_session *s, int layer, const float *q, int64_t tq, int64_t q_pos0,
                     int64_t len, float *dst)
{
    kv_glue *g = s->kvg;
    const llama_config *c = &s->m->cfg.text;
    const int64_t qd = (int64_t)c->n_heads * c->head_dim, kvd = (int64_t)c->n_kv * c->head_dim;
    plm_attn_args a = {.out = g->d_probs, .q = q, .k = s->kv.k[layer], .v = s->kv.v[layer],
                       .tq = tq, .tk = len, .q_stride = qd, .kv_stride = kvd, .q_pos0 = q_pos0,
                       .n_heads = c->n_heads, .n_kv = c->n_kv, .head_dim = c->head_dim,
                       .causal = 1, .scale = 1.0f / sqrtf((float)c->head_dim)};
    s->be->ops->attn_probs(s->be, &a, 1);
    s->be->ops->download(s->be, dst, g->d_probs, (size_t)(c->n_heads * len) * sizeof(float));
    for (int64_t i = 0; i < c->n_heads * len; i++) dst[i] *= (float)tq; /* means -> sums */
}

static plm_status grow_merges(plm_session *s, int64_t n)
{
    kv_glue *g = s->kvg;
    if (n <= g->m_cap) return PLM_OK;
    int32_t *h = realloc(g->mh, (size_t)n * sizeof *h);
    if (h) g->mh = h;
    int32_t *d = realloc(g->md, (size_t)n * sizeof *d);
    if (d) g->md = d;
    int32_t *sr = realloc(g->ms, (size_t)n * sizeof *sr);
    if (sr) g->ms = sr;
    float *a = realloc(g->ma, (size_t)n * sizeof *a);
    if (a) g->ma = a;
    float *b = realloc(g->mb, (size_t)n * sizeof *b);
    if (b) g->mb = b;
    if (!h || !d || !sr || !a || !b) return plm_fail(&s->err, PLM_E_NOMEM, "out of memory");
    g->m_cap = n;
    return PLM_OK;
}

static plm_status apply(plm_session *s, int layer, const kv_plan *pl, const char *who)
{
    kv_glue *g = s->kvg;
    const llama_config *c = &s->m->cfg.text;
    const plm_backend_ops *op = s->be->ops;
    const int64_t kvd = (int64_t)c->n_kv * c->head_dim, cap = g->shape.cap;
    int64_t len = s->kv.len[layer];
    if (pl->n_chan > 0 || pl->compress_upto > 0)
        return plm_fail(&s->err, PLM_E_UNSUPPORTED, "kv policy %s: channel pruning and bitmap "
                        "compression are not wired into the cache yet", who);
    if (pl->n_merge > 0) {
        PLM_TRY(grow_merges(s, pl->n_merge));
        for (int64_t m = 0; m < pl->n_merge; m++) {
            const kv_merge *e = &pl->merge[m];
            if (e->head < 0 || e->head >= c->n_kv || e->dst < 0 || e->dst >= len || e->src < 0 ||
                e->src >= len)
                return plm_fail(&s->err, PLM_E_ARG, "kv policy %s: merge %lld names row %d/%d "
                                "of head %d, outside the layer's %lld rows", who, (long long)m,
                                e->dst, e->src, e->head, (long long)len);
            g->mh[m] = e->head;
            g->md[m] = e->dst;
            g->ms[m] = e->src;
            g->ma[m] = e->a;
            g->mb[m] = e->b;
        }
        op->mix_rows(s->be, s->kv.k[layer], kvd, c->head_dim, g->mh, g->md, g->ms, g->ma, g->mb,
                     pl->n_merge);
        op->mix_rows(s->be, s->kv.v[layer], kvd, c->head_dim, g->mh, g->md, g->ms, g->ma, g->mb,
                     pl->n_merge);
    }
    if (pl->n_keep < 0) return PLM_OK;
    if (pl->n_keep > len)
        return plm_fail(&s->err, PLM_E_ARG, "kv policy %s keeps %lld rows of %lld", who,
                        (long long)pl->n_keep, (long long)len);
    for (int h = 0; h < c->n_kv; h++)
        for (int64_t i = 0; i < pl->n_keep; i++) {
            int32_t r = pl->keep[(int64_t)h * pl->n_keep + i];
            if (r < i || r >= len || (i && r <= pl->keep[(int64_t)h * pl->n_keep + i - 1]))
                return plm_fail(&s->err, PLM_E_ARG, "kv policy %s: keep list of head %d is not "
                                "ascending within the layer's %lld rows", who, h,
                                (long long)len);
        }
    op->gather_heads(s->be, s->kv.k[layer], kvd, c->n_kv, c->head_dim, pl->keep, pl->n_keep);
    op->gather_heads(s->be, s->kv.v[layer], kvd, c->n_kv, c->head_dim, pl->keep, pl->n_keep);
    int32_t *pos = g->pos + (int64_t)layer * c->n_kv * cap;
    kv_compact_i32(pos, cap, c->n_kv, pl->keep, pl->n_keep);
    s->kv.len[layer] = (int)pl->n_keep;
    return PLM_OK;
}

int64_t session_kv_after_layer(plm_session *s, const llama_layer_view *v)
{
    kv_glue *g = s->kvg;
    const llama_config *c = &s->m->cfg.text;
    const plm_backend_ops *op = s->be->ops;
    const int l = v->layer;
    const int64_t cap = g->shape.cap, kvd = (int64_t)c->n_kv * c->head_dim,
                  qd = (int64_t)c->n_heads * c->head_dim;
    /* the rows this pass appended carry the positions of the tokens that entered the layer */
    int32_t *pos = g->pos + (int64_t)l * c->n_kv * cap;
    for (int h = 0; h < c->n_kv; h++)
        for (int64_t i = 0; i < v->t; i++) pos[(int64_t)h * cap + v->q_pos0 + i] = v->pos[i];
    plm_status st = PLM_OK;
    for (kv_policy *p = g->pol; p && st == PLM_OK; p = p->next) {
        const int64_t len = s->kv.len[l];
        const int need = p->ops->needs ? p->ops->needs(p, l, g->prefill, g->step) : 0;
        kv_view kv = {.layer = l, .prefill = g->prefill, .step = g->step, .len = len,
                      .n_new = v->t, .pos = pos};
        /* a policy earlier in the chain may have dropped rows: the new ones are still last */
        if (kv.n_new > len) kv.n_new = len;
        if (need & KV_NEED_ATTN) {
            attn_sum(s, l, v->q, v->t, len - v->t, len, g->attn);
            kv.attn = g->attn;
        }
        if ((need & KV_NEED_WIN) && g->prefill) {
            int64_t w = kv_window(p) < v->t ? kv_window(p) : v->t;
            attn_sum(s, l, v->q + (v->t - w) * qd, w, len - w, len, g->attn_win);
            kv.attn_win = g->attn_win;
            kv.n_win = w;
        }
        if (need & KV_NEED_KV) {
            op->download(s->be, g->hk, s->kv.k[l], (size_t)(len * kvd) * sizeof(float));
            op->download(s->be, g->hv, s->kv.v[l], (size_t)(len * kvd) * sizeof(float));
            kv.k = g->hk;
            kv.v = g->hv;
        }
        if (need & KV_NEED_Q) {
            size_t n = (size_t)(v->t * qd);
            if (n > g->hq_floats) {
                float *q = realloc(g->hq, n * sizeof *q);
                if (!q) {
                    st = plm_fail(&s->err, PLM_E_NOMEM, "out of memory");
                    break;
                }
                g->hq = q;
                g->hq_floats = n;
            }
            op->download(s->be, g->hq, v->q, n * sizeof(float));
            kv.q = g->hq;
        }
        kv_plan pl = {.n_keep = -1};
        st = p->ops->plan(p, &kv, &pl, &s->err);
        if (st == PLM_OK) st = apply(s, l, &pl, p->ops->name);
    }
    if (st != PLM_OK) {
        s->hook_status = st;
        return -1;
    }
    return v->t;
}

int session_kv_before_attention(plm_session *s, int layer, plm_attn_args *a)
{
    kv_glue *g = s->kvg;
    const llama_config *c = &s->m->cfg.text;
    const plm_backend_ops *op = s->be->ops;
    const int64_t cap = g->shape.cap, len = a->tk - a->tq;
    for (kv_policy *p = g->pol; p; p = p->next) {
        if (!p->ops->attend) continue;
        kv_attend at = {0};
        plm_status st = p->ops->attend(p, layer, g->prefill, g->step, len, a->tq,
                                       g->pos + (int64_t)layer * c->n_kv * cap, &at, &s->err);
        if (st != PLM_OK) {
            s->hook_status = st;
            return -1;
        }
        if (at.n_rows > 0) {
            if (a->tq != 1 || at.n_rows > a->tk) {
                s->hook_status = plm_fail(&s->err, PLM_E_ARG, "kv policy %s: sparse rows are for "
                                          "decode steps within the layer's rows", p->ops->name);
                return -1;
            }
            op->upload(s->be, g->d_rows, at.rows,
                       (size_t)(c->n_kv * at.n_rows) * sizeof(int32_t));
            a->rows = g->d_rows;
            a->n_rows = at.n_rows;
        }
        if (at.bias) {
            op->upload(s->be, g->d_bias, at.bias, (size_t)(c->n_heads * a->tk) * sizeof(float));
            a->bias = g->d_bias;
        }
    }
    return 0;
}
