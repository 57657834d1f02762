/* The KV-cache policy on a session (`--kv`): after every decoder layer of the prefill and of each
 * decode step it computes what the policy asked for (attention of the pass's queries over the
 * layer's rows, host copies of K/V/Q), asks the policy for a plan, and applies it to the cache on
 * the backend (merges, then per-head compaction). Before a layer's attention it lets a sparse
 * policy restrict the rows attended or add a steering bias. prune/kv_*.c holds the rules; this
 * file only moves numbers between them and the backend. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "api/kv_store_glue.h"
#include "api/session_internal.h"
#include "prune/kv.h"
#include "prune/kv_bitmap.h"
#include "prune/kv_blocks.h"
#include "prune/kv_deltallm.h"

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
    /* Mustafar: a bitmap store per layer (n_rows 0 until a plan compresses) and the split-K
     * scratch they share */
    plm_kv_bitmap *bm;
    float *bm_work;
    /* FlexPrefill: host copies of the prefill's q and k, the pooled queries, the device mask */
    float *fq, *fk, *fpool;
    uint8_t *d_mask;
    size_t d_mask_bytes;
    /* DeltaLLM: per layer the tracked query state (device [n_heads*hd]) and a q_ref scratch */
    float **dl_state;
    float *dl_qref;
    float dl_theta;
    /* ThinK's thin keys and KIVI's int4 rows, per layer (api/kv_store_glue.c) */
    kv_stores st;
    int32_t *sentence;         /* host [n_prompt]: kv_shape.sentence */
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
    free(g->sentence);
    if (g->d_probs) op->release(s->be, g->d_probs);
    if (g->d_rows) op->release(s->be, g->d_rows);
    if (g->d_bias) op->release(s->be, g->d_bias);
    for (int l = 0; g->bm && l < g->shape.n_layers; l++) kv_bitmap_release(s->be, &g->bm[l]);
    free(g->bm);
    if (g->bm_work) op->release(s->be, g->bm_work);
    free(g->fq);
    free(g->fk);
    free(g->fpool);
    if (g->d_mask) op->release(s->be, g->d_mask);
    for (int l = 0; g->dl_state && l < g->shape.n_layers; l++)
        if (g->dl_state[l]) op->release(s->be, g->dl_state[l]);
    free(g->dl_state);
    if (g->dl_qref) op->release(s->be, g->dl_qref);
    kv_stores_release(s, &g->st);
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

/* DeltaLLM's per-layer query state starts at +inf (the first query is sent whole). */
static plm_status deltallm_begin(plm_session *s, kv_glue *g, int64_t cap)
{
    const llama_config *c = &s->m->cfg.text;
    const plm_backend_ops *op = s->be->ops;
    if (!op->attention_delta)
        return plm_fail(&s->err, PLM_E_UNSUPPORTED, "kv policy deltallm: the %s backend has no "
                        "delta attention", op->name);
    const size_t n = (size_t)c->n_heads * (size_t)c->head_dim;
    float *inf = malloc(n * sizeof *inf);
    g->dl_state = calloc((size_t)c->n_layers, sizeof *g->dl_state);
    g->dl_qref = op->alloc(s->be, (size_t)cap * n * sizeof(float));
    if (!inf || !g->dl_state || !g->dl_qref) {
        free(inf);
        return plm_fail(&s->err, PLM_E_NOMEM, "out of memory for deltallm");
    }
    for (size_t i = 0; i < n; i++) inf[i] = INFINITY;
    for (int l = 0; l < c->n_layers; l++) {
        g->dl_state[l] = op->alloc(s->be, n * sizeof(float));
        if (!g->dl_state[l]) {
            free(inf);
            return plm_fail(&s->err, PLM_E_NOMEM, "out of memory for deltallm");
        }
        op->upload(s->be, g->dl_state[l], inf, n * sizeof(float));
    }
    free(inf);
    g->dl_theta = -1; /* calibrated on the first layer's prompt queries when theta=0 */
    return PLM_OK;
}

/* 1 when a token's text ends a sentence: . ! ? (before closing quotes or brackets) or a line
 * break anywhere in it. */
static int ends_sentence(const char *t)
{
    if (strchr(t, '\n')) return 1;
    size_t n = strlen(t);
    while (n && strchr(" \t\"')]}", t[n - 1])) n--;
    return n && strchr(".!?", t[n - 1]) != NULL;
}

/* 1 when a token is only closing quotes or brackets (and spaces): it stays with the sentence it
 * closes ("green!" then '"'). */
static int only_closing(const char *t)
{
    int any = 0;
    for (; *t; t++) {
        if (strchr("\"')]}", *t)) any = 1;
        else if (*t != ' ' && *t != '\t') return 0;
    }
    return any;
}

int32_t *session_prompt_sentences(const plm_session *s)
{
    const plm_model *m = s->m;
    int32_t *sid = malloc((s->n_prompt ? s->n_prompt : 1) * sizeof *sid);
    if (!sid) return NULL;
    int32_t cur = 0;
    int prev_img = 0, next = 0; /* next: 1 after a sentence end, 2 at the image's edges */
    for (size_t i = 0; i < s->n_prompt; i++) {
        const int32_t id = s->tokens[i];
        const int img = m->cfg.has_vision && id == m->cfg.image_token_id;
        char *text = NULL;
        plm_error e;
        if (!img && plm_detokenize(m->tok, &id, 1, 0, &text, &e) != PLM_OK) text = NULL;
        if (i && img != prev_img) next = 2;
        if (next == 2 || (next == 1 && !(text && only_closing(text)))) {
            cur++;
            next = 0;
        }
        sid[i] = cur;
        if (text && ends_sentence(text)) next = 1;
        prev_img = img;
        free(text);
    }
    return sid;
}

plm_status session_kv_begin(plm_session *s, int64_t n_prompt, int64_t cap, int64_t max_new)
{
    kv_glue *g = s->kvg;
    const llama_config *c = &s->m->cfg.text;
    const plm_backend_ops *op = s->be->ops;
    glue_release(s, g);
    if (n_prompt <= (int64_t)s->n_prompt && !(g->sentence = session_prompt_sentences(s)))
        return plm_fail(&s->err, PLM_E_NOMEM, "out of memory for the prompt's sentences");
    g->shape = (kv_shape){.n_layers = c->n_layers, .n_heads = c->n_heads, .n_kv = c->n_kv,
                          .head_dim = c->head_dim, .n_prompt = n_prompt, .cap = cap,
                          .max_new = max_new, .sentence = g->sentence};
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
    g->bm = calloc((size_t)c->n_layers, sizeof *g->bm);
    if (!g->bm) return plm_fail(&s->err, PLM_E_NOMEM, "out of memory");
    PLM_TRY(kv_stores_begin(s, &g->st));
    for (kv_policy *p = g->pol; p; p = p->next)
        if (p->ops == &kv_deltallm_ops) PLM_TRY(deltallm_begin(s, g, cap));
    return kv_policy_begin(g->pol, &g->shape, &s->err);
}

int session_kv_resteer(const plm_session *s, int64_t last_pos)
{
    const kv_glue *g = s->kvg;
    if (!g) return 0;
    int steer = 0;
    for (const kv_policy *p = g->pol; p; p = p->next)
        steer |= p->ops->steers && p->ops->steers(p);
    if (!steer) return 0;
    /* the row to run again must be every layer's last, held densely (a thin, int4 or bitmap
     * store cannot give a row back) */
    const llama_config *c = &s->m->cfg.text;
    const int64_t cap = g->shape.cap;
    for (int l = 0; l < c->n_layers; l++) {
        const int len = s->kv.len[l];
        if (len < 1 || kv_stores_rows(&g->st, l) > 0 || (g->bm && g->bm[l].n_rows > 0))
            return 0;
        for (int h = 0; h < c->n_kv; h++)
            if (g->pos[((int64_t)l * c->n_kv + h) * cap + len - 1] != last_pos) return 0;
    }
    return 1;
}

void session_kv_phase(plm_session *s, int prefill, int64_t step)
{
    s->kvg->prefill = prefill;
    s->kvg->step = step;
}

/* attention summed over queries q[0..tq) (query i at absolute row q_pos0 + i) into dst; over
 * the keys as the layer's store holds them when it holds some */
static plm_status attn_sum(plm_session *s, int layer, const float *q, int64_t tq, int64_t q_pos0,
                           int64_t len, float *dst)
{
    kv_glue *g = s->kvg;
    const llama_config *c = &s->m->cfg.text;
    const int64_t qd = (int64_t)c->n_heads * c->head_dim, kvd = (int64_t)c->n_kv * c->head_dim;
    plm_attn_args a = {.out = g->d_probs, .q = q, .k = s->kv.k[layer], .v = s->kv.v[layer],
                       .tq = tq, .tk = len, .q_stride = qd, .kv_stride = kvd, .q_pos0 = q_pos0,
                       .n_heads = c->n_heads, .n_kv = c->n_kv, .head_dim = c->head_dim,
                       .causal = 1, .scale = 1.0f / sqrtf((float)c->head_dim)};
    if (kv_stores_rows(&g->st, layer) > 0) PLM_TRY(kv_stores_probs(s, &g->st, layer, &a));
    else s->be->ops->attn_probs(s->be, &a, 1);
    s->be->ops->download(s->be, dst, g->d_probs, (size_t)(c->n_heads * len) * sizeof(float));
    for (int64_t i = 0; i < c->n_heads * len; i++) dst[i] *= (float)tq; /* means -> sums */
    return PLM_OK;
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
    plm_kv_bitmap *kb = &g->bm[layer];
    const int stored = kv_stores_has(&g->st, layer);
    if ((pl->compress_upto > 0 && stored) ||
        ((pl->n_chan > 0 || pl->quant_group > 0) && kb->n_rows > 0))
        return plm_fail(&s->err, PLM_E_UNSUPPORTED, "kv policy %s: mustafar's bitmap store and "
                        "the think / int4 stores cannot share layer %d", who, layer);
    if (pl->compress_upto > kb->n_rows) {
        if (!op->kv_bitmap)
            return plm_fail(&s->err, PLM_E_UNSUPPORTED, "kv policy %s: the %s backend has no "
                            "bitmap store", who, op->name);
        if (!kb->cap) {
            PLM_TRY(kv_bitmap_init(kb, c->n_kv, c->head_dim, cap, pl->sparsity_k,
                                   pl->sparsity_v, &s->err));
            PLM_TRY(kv_bitmap_alloc(s->be, kb, &s->err));
            if (!g->bm_work) {
                int64_t n = kv_bitmap_work_floats(c->n_heads, c->head_dim, 1);
                g->bm_work = op->alloc(s->be, (size_t)n * sizeof(float));
                if (!g->bm_work)
                    return plm_fail(&s->err, PLM_E_NOMEM, "out of memory for the bitmap store");
            }
            kb->work = g->bm_work;
            kb->work_floats = kv_bitmap_work_floats(c->n_heads, c->head_dim, 1);
        }
        PLM_TRY(kv_bitmap_compress(s->be, kb, s->kv.k[layer], s->kv.v[layer], kvd,
                                   pl->compress_upto, &s->err));
    }
    if (kb->n_rows > 0 && (pl->n_keep >= 0 || pl->n_merge > 0))
        return plm_fail(&s->err, PLM_E_ARG, "kv policy %s changes rows of layer %d after some "
                        "were bitmap-compressed; put mustafar last in the chain", who, layer);
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
        if (stored) {
            PLM_TRY(kv_stores_mix(s, &g->st, layer, g->mh, g->md, g->ms, g->ma, g->mb,
                                  pl->n_merge));
        } else {
            op->mix_rows(s->be, s->kv.k[layer], kvd, c->head_dim, g->mh, g->md, g->ms, g->ma,
                         g->mb, pl->n_merge);
            op->mix_rows(s->be, s->kv.v[layer], kvd, c->head_dim, g->mh, g->md, g->ms, g->ma,
                         g->mb, pl->n_merge);
        }
    }
    if (pl->n_keep < 0) return kv_stores_plan(s, &g->st, layer, pl, who);
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
    if (stored) PLM_TRY(kv_stores_compact(s, &g->st, layer, pl->keep, pl->n_keep));
    int32_t *pos = g->pos + (int64_t)layer * c->n_kv * cap;
    kv_compact_i32(pos, cap, c->n_kv, pl->keep, pl->n_keep);
    s->kv.len[layer] = (int)pl->n_keep;
    return kv_stores_plan(s, &g->st, layer, pl, who);
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
                      .n_new = v->t, .pos = pos, .n_q = v->t};
        /* a policy earlier in the chain may have dropped rows: the new ones are still last */
        if (kv.n_new > len) kv.n_new = len;
        if (need & KV_NEED_ATTN) {
            st = attn_sum(s, l, v->q, v->t, len - v->t, len, g->attn);
            if (st != PLM_OK) break;
            kv.attn = g->attn;
        }
        if ((need & KV_NEED_WIN) && g->prefill) {
            int64_t w = kv_window(p) < v->t ? kv_window(p) : v->t;
            st = attn_sum(s, l, v->q + (v->t - w) * qd, w, len - w, len, g->attn_win);
            if (st != PLM_OK) break;
            kv.attn_win = g->attn_win;
            kv.n_win = w;
        }
        if (need & KV_NEED_KV) {
            op->download(s->be, g->hk, s->kv.k[l], (size_t)(len * kvd) * sizeof(float));
            op->download(s->be, g->hv, s->kv.v[l], (size_t)(len * kvd) * sizeof(float));
            st = kv_stores_download(s, &g->st, l, g->hk, g->hv, kvd);
            if (st != PLM_OK) break;
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

/* rows [n x width] of a device array with row stride `stride` into contiguous host memory: one
 * transfer when the rows are already contiguous (the decoder's queries are), else one per row */
static void download_rows(plm_session *s, float *dst, const float *src, int64_t n, int64_t width,
                          int64_t stride)
{
    const plm_backend_ops *op = s->be->ops;
    if (stride == width) {
        op->download(s->be, dst, src, (size_t)(n * width) * sizeof(float));
        return;
    }
    for (int64_t i = 0; i < n; i++)
        op->download(s->be, dst + i * width, src + i * stride, (size_t)width * sizeof(float));
}

/* FlexPrefill (prune/kv_flexprefill.c): the policy picks each head's key blocks from the last
 * query block and the pooled queries (host copies), then the block-sparse op runs. */
static plm_status flex_attend(plm_session *s, kv_policy *p, plm_attn_args *a)
{
    kv_glue *g = s->kvg;
    const llama_config *c = &s->m->cfg.text;
    const plm_backend_ops *op = s->be->ops;
    if (!op->attention_blocks)
        return plm_fail(&s->err, PLM_E_UNSUPPORTED, "flexprefill: the %s backend has no "
                        "block-sparse attention", op->name);
    const int64_t qd = (int64_t)c->n_heads * c->head_dim, kvd = (int64_t)c->n_kv * c->head_dim;
    const int64_t tq = a->tq, tk = a->tk;
    float *fq = realloc(g->fq, (size_t)(tq * qd) * sizeof *fq);
    if (fq) g->fq = fq;
    float *fk = realloc(g->fk, (size_t)(tk * kvd) * sizeof *fk);
    if (fk) g->fk = fk;
    float *fp = realloc(g->fpool, (size_t)(tq * qd) * sizeof *fp);
    if (fp) g->fpool = fp;
    if (!fq || !fk || !fp) return plm_fail(&s->err, PLM_E_NOMEM, "out of memory in flexprefill");
    download_rows(s, fq, a->q, tq, qd, a->q_stride);
    op->download(s->be, fk, a->k, (size_t)(tk * kvd) * sizeof(float));
    const uint8_t *mask = NULL;
    int block = 0;
    block = kv_flexprefill_block(p); /* the pooled queries are per block of the policy's size */
    const int64_t n_last = tq < block ? tq : block;
    kv_pool_rows(fq, tq, qd, qd, block, fp);
    PLM_TRY(kv_flexprefill_decide(p, fq + (tq - n_last) * qd, fp, fk, tq, tk, &mask, &block,
                                  &s->err));
    const size_t nb = (size_t)c->n_heads * (size_t)((tq + block - 1) / block) *
                      (size_t)((tk + block - 1) / block);
    if (nb > g->d_mask_bytes) {
        if (g->d_mask) op->release(s->be, g->d_mask);
        g->d_mask = op->alloc(s->be, nb);
        g->d_mask_bytes = g->d_mask ? nb : 0;
        if (!g->d_mask) return plm_fail(&s->err, PLM_E_NOMEM, "out of memory for the mask");
    }
    op->upload(s->be, g->d_mask, mask, nb);
    op->attention_blocks(s->be, a, g->d_mask, block);
    return PLM_OK;
}

/* DeltaLLM (prune/kv_deltallm.c): far keys are scored with delta-tracked queries. theta=0
 * calibrates the threshold once, on the first layer's prompt queries, to the target sparsity. */
static plm_status delta_attend(plm_session *s, kv_policy *p, int layer, plm_attn_args *a)
{
    kv_glue *g = s->kvg;
    const llama_config *c = &s->m->cfg.text;
    const plm_backend_ops *op = s->be->ops;
    int64_t window;
    float theta;
    double sparsity;
    kv_deltallm_params(p, &window, &theta, &sparsity);
    if (theta <= 0) {
        if (g->dl_theta < 0) {
            const int64_t qd = (int64_t)c->n_heads * c->head_dim;
            float *q = malloc((size_t)(a->tq * qd) * sizeof *q);
            if (!q) return plm_fail(&s->err, PLM_E_NOMEM, "out of memory in deltallm");
            download_rows(s, q, a->q, a->tq, qd, a->q_stride);
            g->dl_theta = kv_deltallm_calibrate(q, a->tq, qd, c->n_heads, c->head_dim, sparsity);
            free(q);
            if (g->dl_theta < 0) return plm_fail(&s->err, PLM_E_NOMEM, "out of memory in deltallm");
        }
        theta = g->dl_theta;
    }
    op->attention_delta(s->be, a, g->dl_state[layer], g->dl_qref, window, theta);
    return PLM_OK;
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
    const int sparse = a->rows || a->bias;
    if (kv_stores_rows(&g->st, layer) > 0) {
        plm_status st = PLM_OK;
        if (sparse)
            st = plm_fail(&s->err, PLM_E_ARG, "the think / int4 stores cannot combine with "
                          "sparse rows or steering");
        for (kv_policy *p = g->pol; p && st == PLM_OK; p = p->next)
            if (p->ops == &kv_deltallm_ops || (p->ops == &kv_flexprefill_ops && a->tq > 1))
                st = plm_fail(&s->err, PLM_E_ARG, "%s cannot attend over the think / int4 "
                              "stores", p->ops->name);
        if (st == PLM_OK) st = kv_stores_attend(s, &g->st, layer, a);
        if (st != PLM_OK) {
            s->hook_status = st;
            return -1;
        }
        return 1;
    }
    for (kv_policy *p = g->pol; p; p = p->next) {
        plm_status st = PLM_OK;
        int done = 0;
        if (p->ops == &kv_flexprefill_ops && g->prefill && a->tq > 1) {
            st = sparse ? plm_fail(&s->err, PLM_E_ARG, "flexprefill cannot combine with sparse "
                                   "rows or steering") : flex_attend(s, p, a);
            done = 1;
        } else if (p->ops == &kv_deltallm_ops) {
            st = sparse ? plm_fail(&s->err, PLM_E_ARG, "deltallm cannot combine with sparse rows "
                                   "or steering") : delta_attend(s, p, layer, a);
            done = 1;
        }
        if (st != PLM_OK) {
            s->hook_status = st;
            return -1;
        }
        if (done) return 1;
    }
    if (g->bm[layer].n_rows > 0) {
        plm_status st = sparse ? plm_fail(&s->err, PLM_E_ARG, "mustafar cannot combine with "
                                          "sparse rows or steering")
                               : kv_bitmap_attend(s->be, a, &g->bm[layer], &s->err);
        if (st != PLM_OK) {
            s->hook_status = st;
            return -1;
        }
        return 1;
    }
    return 0;
}

uint64_t session_kv_bytes(const plm_session *s)
{
    const llama_config *c = &s->m->cfg.text;
    const uint64_t row = 2u * (uint64_t)c->n_kv * (uint64_t)c->head_dim * sizeof(float);
    uint64_t n = 0;
    for (int l = 0; l < c->n_layers; l++) {
        if (s->kvg && kv_stores_has(&s->kvg->st, l)) {
            n += kv_stores_bytes(s, &s->kvg->st, l, s->kv.len[l]);
            continue;
        }
        const plm_kv_bitmap *kb = s->kvg && s->kvg->bm ? &s->kvg->bm[l] : NULL;
        int64_t dense = s->kv.len[l] - (kb ? kb->n_rows : 0);
        n += (uint64_t)dense * row;
        if (kb && kb->n_rows) n += kv_bitmap_bytes(kb, kb->n_rows);
    }
    return n;
}
