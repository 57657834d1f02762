/* Llama decoder: RMSNorm, RoPE, grouped-query attention over the KV cache, SiLU-gated MLP. */
#include "lm/llama.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

plm_status llama_load(llama_model *m, const llama_config *cfg, plm_wsrc *src, plm_wsrc *head,
                      plm_error *err)
{
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    const int64_t D = cfg->hidden, I = cfg->intermediate, hd = cfg->head_dim;
    const int64_t qd = (int64_t)cfg->n_heads * hd, kvd = (int64_t)cfg->n_kv * hd;
    PLM_TRY(wsrc_matrix(src, "embed_tokens.weight", cfg->vocab, D, &m->embed, err));
    PLM_TRY(wsrc_vector(src, "norm.weight", D, 0, &m->norm, err));
    if (cfg->tie_embeddings && !wsrc_find(head, "lm_head.weight")) {
        m->lm_head = m->embed;
    } else {
        PLM_TRY(wsrc_matrix(head, "lm_head.weight", cfg->vocab, D, &m->lm_head, err));
    }
    m->layers = calloc((size_t)cfg->n_layers, sizeof *m->layers);
    if (!m->layers) return plm_fail(err, PLM_E_NOMEM, "language model: out of memory");
    char n[128];
#define L_MAT(field, name, r, c, has_bias)                                                         \
    do {                                                                                           \
        snprintf(n, sizeof n, "layers.%d.%s.weight", l, name);                                     \
        PLM_TRY(wsrc_matrix(src, n, r, c, &L->field, err));                                        \
        snprintf(n, sizeof n, "layers.%d.%s.bias", l, name);                                       \
        PLM_TRY(wsrc_vector(src, n, r, !(has_bias), &L->field##_b, err));                          \
    } while (0)
    for (int l = 0; l < cfg->n_layers; l++) {
        llama_layer *L = &m->layers[l];
        snprintf(n, sizeof n, "layers.%d.input_layernorm.weight", l);
        PLM_TRY(wsrc_vector(src, n, D, 0, &L->in_norm, err));
        snprintf(n, sizeof n, "layers.%d.post_attention_layernorm.weight", l);
        PLM_TRY(wsrc_vector(src, n, D, 0, &L->post_norm, err));
        L_MAT(q, "self_attn.q_proj", qd, D, cfg->attn_bias);
        L_MAT(k, "self_attn.k_proj", kvd, D, cfg->attn_bias);
        L_MAT(v, "self_attn.v_proj", kvd, D, cfg->attn_bias);
        L_MAT(o, "self_attn.o_proj", D, qd, cfg->attn_bias);
        L_MAT(gate, "mlp.gate_proj", I, D, cfg->mlp_bias);
        L_MAT(up, "mlp.up_proj", I, D, cfg->mlp_bias);
        L_MAT(down, "mlp.down_proj", D, I, cfg->mlp_bias);
    }
#undef L_MAT
    return PLM_OK;
}

void llama_unload(llama_model *m)
{
    free(m->layers);
    m->layers = NULL;
}

plm_status llama_kv_init(llama_kv *kv, const llama_config *c, plm_backend *be, int cap,
                         plm_error *err)
{
    memset(kv, 0, sizeof *kv);
    kv->k = calloc((size_t)c->n_layers, sizeof *kv->k);
    kv->v = calloc((size_t)c->n_layers, sizeof *kv->v);
    kv->len = calloc((size_t)c->n_layers, sizeof *kv->len);
    kv->shift = calloc((size_t)c->n_layers, sizeof *kv->shift);
    if (!kv->k || !kv->v || !kv->len || !kv->shift) {
        free(kv->k);
        free(kv->v);
        free(kv->len);
        free(kv->shift);
        return plm_fail(err, PLM_E_NOMEM, "KV cache: out of memory");
    }
    kv->cap = cap;
    kv->n_layers = c->n_layers;
    size_t bytes = (size_t)cap * (size_t)c->n_kv * (size_t)c->head_dim * sizeof(float);
    for (int l = 0; l < c->n_layers; l++) {
        kv->k[l] = be->ops->alloc(be, bytes);
        kv->v[l] = be->ops->alloc(be, bytes);
        if (!kv->k[l] || !kv->v[l]) {
            double mib = (double)bytes * 2 * c->n_layers / (1 << 20);
            llama_kv_free(kv, be);
            return plm_fail(err, PLM_E_NOMEM,
                            "KV cache: out of memory for %d positions (%.0f MiB)", cap, mib);
        }
    }
    return PLM_OK;
}

void llama_kv_free(llama_kv *kv, plm_backend *be)
{
    if (kv->graph) be->ops->graph_free(be, kv->graph);
    if (kv->step_dev) be->ops->release(be, kv->step_dev);
    free(kv->step_host);
    for (int l = 0; l < kv->n_layers; l++) {
        if (kv->k && kv->k[l]) be->ops->release(be, kv->k[l]);
        if (kv->v && kv->v[l]) be->ops->release(be, kv->v[l]);
    }
    free(kv->k);
    free(kv->v);
    free(kv->len);
    free(kv->shift);
    memset(kv, 0, sizeof *kv);
}

plm_status llama_kv_shrink(llama_kv *kv, const llama_config *c, plm_backend *be, int cap,
                           plm_error *err)
{
    for (int l = 0; l < kv->n_layers; l++)
        if (kv->len[l] > cap)
            return plm_fail(err, PLM_E_ARG, "KV cache: cannot shrink to %d rows, layer %d holds "
                            "%d", cap, l, kv->len[l]);
    if (cap >= kv->cap) return PLM_OK;
    /* a recorded step names the old buffers */
    if (kv->graph) be->ops->graph_free(be, kv->graph);
    kv->graph = NULL;
    memset(kv->graph_key, 0, sizeof kv->graph_key);
    const int64_t kvd = (int64_t)c->n_kv * c->head_dim;
    const size_t bytes = (size_t)cap * (size_t)kvd * sizeof(float);
    for (int l = 0; l < kv->n_layers; l++) {
        float *nk = be->ops->alloc(be, bytes), *nv = be->ops->alloc(be, bytes);
        if (!nk || !nv) { /* keep the old buffers: still a whole, valid cache */
            if (nk) be->ops->release(be, nk);
            if (nv) be->ops->release(be, nv);
            return plm_fail(err, PLM_E_NOMEM, "KV cache: out of memory shrinking to %d rows", cap);
        }
        if (kv->len[l]) {
            be->ops->copy2d(be, nk, kvd, kv->k[l], kvd, kv->len[l], kvd);
            be->ops->copy2d(be, nv, kvd, kv->v[l], kvd, kv->len[l], kvd);
        }
        be->ops->release(be, kv->k[l]);
        be->ops->release(be, kv->v[l]);
        kv->k[l] = nk;
        kv->v[l] = nv;
    }
    kv->cap = cap;
    return PLM_OK;
}

int64_t llama_kv_rows(const llama_kv *kv)
{
    int64_t n = 0;
    for (int l = 0; l < kv->n_layers; l++) n += kv->len[l];
    return n;
}

void llama_kv_clear(llama_kv *kv)
{
    for (int l = 0; l < kv->n_layers; l++) kv->len[l] = kv->shift[l] = 0;
}

void llama_rope_inv_freq(const llama_config *c, int64_t seq_len, float *inv)
{
    const int dim = c->head_dim, half = dim / 2;
    double base = c->rope_theta;
    if (c->rope_type == ROPE_DYNAMIC && seq_len > c->rope_orig_max_pos) {
        /* transformers' dynamic NTK: grow the base with the sequence past the trained length */
        double f = c->rope_factor;
        base = base * pow(f * (double)seq_len / c->rope_orig_max_pos - (f - 1.0),
                          (double)dim / (dim - 2));
    }
    for (int i = 0; i < half; i++) {
        /* float32 like the reference: 1 / base ** (arange(0, dim, 2) / dim) */
        float e = (float)(2 * i) / (float)dim;
        inv[i] = 1.0f / powf((float)base, e);
    }
    if (c->rope_type == ROPE_LINEAR) {
        for (int i = 0; i < half; i++) inv[i] = inv[i] / (float)c->rope_factor;
    } else if (c->rope_type == ROPE_LLAMA3) {
        /* Llama 3.1: long wavelengths divided by factor, short kept, the band between
         * interpolated smoothly (transformers' _compute_llama3_parameters). */
        const float factor = (float)c->rope_factor, lo = (float)c->rope_low_freq,
                    hi = (float)c->rope_high_freq, old = (float)c->rope_orig_max_pos;
        const float lo_wave = old / lo, hi_wave = old / hi;
        for (int i = 0; i < half; i++) {
            float wave = 2.0f * (float)M_PI / inv[i];
            float f = wave > lo_wave ? inv[i] / factor : inv[i];
            if (!(wave < hi_wave) && !(wave > lo_wave)) {
                float smooth = (old / wave - lo) / (hi - lo);
                f = (1.0f - smooth) * f / factor + smooth * f;
            }
            inv[i] = f;
        }
    }
}

size_t llama_scratch_floats(const llama_config *c, int64_t t)
{
    size_t D = (size_t)c->hidden, qd = (size_t)c->n_heads * (size_t)c->head_dim;
    /* h | q, att | gate, up: the queries survive the MLP for the pruning hook */
    return (size_t)t * (D + 2 * qd + 2 * (size_t)c->intermediate);
}

/* x[t x D] += h and h = rmsnorm(x) * g, fused when the backend can. */
static void add_norm(const plm_backend_ops *op, plm_backend *be, float *h, float *x,
                     const float *g, int64_t t, int64_t D, float eps)
{
    if (op->add_rmsnorm) {
        op->add_rmsnorm(be, h, x, h, g, t, D, eps);
        return;
    }
    op->add(be, x, x, h, t * D);
    op->rmsnorm(be, h, x, g, t, D, eps);
}

/* ---- a decode step recorded once and replayed (the backend's graph ops) ---- */

static size_t step_bytes(const llama_config *c)
{
    return (size_t)(2 * c->n_layers) * sizeof(int32_t) + (size_t)(c->head_dim / 2) * sizeof(float);
}

/* Enqueues one t = 1 step without a hook, reading each layer's position and cached rows from
 * kv->step_dev: the same ops as llama_forward's fused path in the same order, but no argument
 * changes from step to step. The new K/V row goes through the up slab (free until the MLP),
 * and rope_append moves it into the cache. */
static void step_ops(const llama_model *m, plm_backend *be, llama_kv *kv, float *x,
                     float *logits, float *scratch)
{
    const plm_backend_ops *op = be->ops;
    const llama_config *c = &m->cfg;
    const int64_t D = c->hidden, I = c->intermediate, hd = c->head_dim;
    const int64_t qd = (int64_t)c->n_heads * hd, kvd = (int64_t)c->n_kv * hd;
    float *h = scratch, *q = h + D, *att = q + qd, *g = att + qd, *u = g + I;
    float *kn = u, *vn = u + kvd;
    const int32_t *dpos = kv->step_dev, *drow = dpos + c->n_layers;
    const float *dfreq = (const float *)(drow + c->n_layers);
    for (int l = 0; l < c->n_layers; l++) {
        const llama_layer *L = &m->layers[l];
        if (l) add_norm(op, be, h, x, L->in_norm, 1, D, c->rms_eps);
        else op->rmsnorm(be, h, x, L->in_norm, 1, D, c->rms_eps);
        float *const ys[3] = {q, kn, vn};
        const plm_weight *const ws[3] = {&L->q, &L->k, &L->v};
        const float *const bs[3] = {L->q_b, L->k_b, L->v_b};
        plm_matmul_n(be, 3, ys, h, ws, bs, 1);
        const plm_rope_step rs = {q, kn, vn, kv->k[l], kv->v[l], c->n_heads, c->n_kv, (int)hd,
                                  dpos + l, drow + l, dfreq};
        op->rope_append(be, &rs);
        /* tk and q_pos0 bound the step's; the attention reads them from drow */
        plm_attn_args a = {.out = att, .q = q, .k = kv->k[l], .v = kv->v[l], .tq = 1,
                           .tk = kv->cap, .q_stride = qd, .kv_stride = kvd,
                           .q_pos0 = kv->cap - 1, .n_heads = c->n_heads, .n_kv = c->n_kv,
                           .head_dim = (int)hd, .causal = 1, .scale = 1.0f / sqrtf((float)hd),
                           .q_pos0_dev = drow + l};
        op->attention(be, &a);
        op->matmul(be, h, att, &L->o, L->o_b, 1);
        add_norm(op, be, h, x, L->post_norm, 1, D, c->rms_eps);
        if (op->matmul_glu) {
            op->matmul_glu(be, g, u, h, &L->gate, L->gate_b, &L->up, L->up_b, 1);
        } else {
            op->matmul(be, g, h, &L->gate, L->gate_b, 1);
            op->matmul(be, u, h, &L->up, L->up_b, 1);
            op->silu_mul(be, g, g, u, I);
        }
        op->matmul(be, h, g, &L->down, L->down_b, 1);
    }
    add_norm(op, be, h, x, m->norm, 1, D, c->rms_eps);
    op->matmul(be, logits, h, &m->lm_head, NULL, 1);
}

/* Runs a t = 1 step without a hook as a recorded graph: records it when there is none for
 * these buffers (or the backend's moved), then replays it after copying the step's positions,
 * cache rows and RoPE frequencies. Returns 1 when the step ran that way; 0: run it unrecorded
 * (new buffers, no graph ops, a recording refused). */
static int step_graph(const llama_model *m, plm_backend *be, llama_kv *kv, float *x,
                      const int32_t *pos, float *logits, int64_t rope_len, float *scratch)
{
    const plm_backend_ops *op = be->ops;
    const llama_config *c = &m->cfg;
    const int64_t kvd = (int64_t)c->n_kv * c->head_dim;
    if (!op->graph_begin || kv->graph_state < 0) return 0;
    if (c->intermediate < 2 * kvd || c->head_dim > 1024) { /* the up slab, freq[] too small */
        kv->graph_state = -1;
        return 0;
    }
    /* Record only for buffers the step before used too: that step, run unrecorded, grew what
     * the recording needs (a recording cannot), and a caller whose buffers change every step
     * is never recorded for nothing. */
    const void *key[4] = {m, x, logits, scratch};
    if (memcmp(kv->graph_key, key, sizeof key) != 0) {
        if (kv->graph) op->graph_free(be, kv->graph);
        kv->graph = NULL;
        memcpy(kv->graph_key, key, sizeof key);
        return 0;
    }
    for (int l = 0; l < c->n_layers; l++)
        if (kv->len[l] >= kv->cap) return 0; /* no room: as the unrecorded step would */
    const size_t bytes = step_bytes(c);
    if (!kv->step_host) {
        kv->step_host = malloc(bytes);
        kv->step_dev = op->alloc(be, bytes);
        if (!kv->step_host || !kv->step_dev) {
            kv->graph_state = -1;
            return 0;
        }
    }
    int32_t *hp = kv->step_host, *hr = hp + c->n_layers;
    for (int l = 0; l < c->n_layers; l++) {
        hp[l] = pos[0] - kv->shift[l];
        hr[l] = kv->len[l];
    }
    float freq[512];
    llama_rope_inv_freq(c, rope_len, freq);
    memcpy(hr + c->n_layers, freq, (size_t)(c->head_dim / 2) * sizeof(float));
    for (int tries = 0; tries < 2; tries++) {
        if (!kv->graph) {
            if (!op->graph_begin(be)) {
                kv->graph_state = -1;
                return 0;
            }
            step_ops(m, be, kv, x, logits, scratch);
            kv->graph = op->graph_end(be);
            if (!kv->graph) {
                kv->graph_state = -1;
                return 0;
            }
        }
        if (op->graph_launch(be, kv->graph, kv->step_dev, kv->step_host, bytes)) {
            for (int l = 0; l < c->n_layers; l++) kv->len[l]++;
            return 1;
        }
        op->graph_free(be, kv->graph); /* the backend's buffers moved: record again */
        kv->graph = NULL;
    }
    return 0;
}

int64_t llama_forward(const llama_model *m, plm_backend *be, llama_kv *kv, float *x,
                      int32_t *pos, int64_t t, int64_t n_logits, float *logits,
                      int64_t rope_len, float *scratch, const llama_hook *hook)
{
    if (t == 1 && n_logits == 1 && !hook &&
        step_graph(m, be, kv, x, pos, logits, rope_len, scratch))
        return 1;
    const plm_backend_ops *op = be->ops;
    const llama_config *c = &m->cfg;
    const int64_t D = c->hidden, I = c->intermediate, hd = c->head_dim;
    const int64_t qd = (int64_t)c->n_heads * hd, kvd = (int64_t)c->n_kv * hd;
    float *h = scratch, *w = h + t * D;
    float inv_freq[512];
    llama_rope_inv_freq(c, rope_len, inv_freq);
    /* A layer's MLP output waits in h to be added to x by the next layer's input norm (one
     * fused launch), unless a hook must see x complete after each layer. */
    const int defer = op->add_rmsnorm && !(hook && hook->after_layer);
    int pending = 0;

    for (int l = 0; l < c->n_layers; l++) {
        const llama_layer *L = &m->layers[l];
        const int64_t n0 = kv->len[l];
        float *q = w, *att = w + t * qd;
        float *kc = kv->k[l] + n0 * kvd, *vc = kv->v[l] + n0 * kvd;
        if (pending) add_norm(op, be, h, x, L->in_norm, t, D, c->rms_eps);
        else op->rmsnorm(be, h, x, L->in_norm, t, D, c->rms_eps);
        pending = 0;
        float *const ys[3] = {q, kc, vc};
        const plm_weight *const ws[3] = {&L->q, &L->k, &L->v};
        const float *const bs[3] = {L->q_b, L->k_b, L->v_b};
        plm_matmul_n(be, 3, ys, h, ws, bs, t);
        const int32_t *lp = pos;
        int32_t shifted;
        if (kv->shift[l] && t == 1) { /* decoding after a renumbering stage */
            shifted = pos[0] - kv->shift[l];
            lp = &shifted;
        }
        if (op->rope_qk) {
            op->rope_qk(be, q, qd, c->n_heads, kc, kvd, c->n_kv, t, (int)hd, lp, inv_freq);
        } else {
            op->rope(be, q, t, qd, c->n_heads, (int)hd, lp, inv_freq);
            op->rope(be, kc, t, kvd, c->n_kv, (int)hd, lp, inv_freq);
        }
        plm_attn_args a = {.out = att, .q = q, .k = kv->k[l], .v = kv->v[l], .tq = t,
                           .tk = n0 + t, .q_stride = qd, .kv_stride = kvd, .q_pos0 = n0,
                           .n_heads = c->n_heads, .n_kv = c->n_kv, .head_dim = (int)hd,
                           .causal = 1, .scale = 1.0f / sqrtf((float)hd)};
        int done = hook && hook->before_attention ? hook->before_attention(hook->ctx, l, &a) : 0;
        if (done < 0) return -1;
        if (!done) op->attention(be, &a);
        kv->len[l] = (int)(n0 + t);
        op->matmul(be, h, att, &L->o, L->o_b, t);
        add_norm(op, be, h, x, L->post_norm, t, D, c->rms_eps);

        /* gate/up have their own slab so the queries outlive the MLP: a pruning hook scores
         * tokens by this layer's attention after the layer is complete. */
        float *g = w + 2 * t * qd, *u = g + t * I;
        if (op->matmul_glu) {
            op->matmul_glu(be, g, u, h, &L->gate, L->gate_b, &L->up, L->up_b, t);
        } else {
            op->matmul(be, g, h, &L->gate, L->gate_b, t);
            op->matmul(be, u, h, &L->up, L->up_b, t);
            op->silu_mul(be, g, g, u, t * I);
        }
        op->matmul(be, h, g, &L->down, L->down_b, t);
        if (defer) {
            pending = 1;
            continue;
        }
        op->add(be, x, x, h, t * D);
        if (hook && hook->after_layer) {
            llama_layer_view v = {be, l, x, pos, t, q, kv->k[l], kv->len[l], n0};
            int64_t nt = hook->after_layer(hook->ctx, &v);
            if (nt < 0) return -1;
            t = nt;
        }
    }
    if (n_logits > t) n_logits = t;
    float *last = x + (t - n_logits) * D;
    if (pending && n_logits == t) {
        add_norm(op, be, h, x, m->norm, t, D, c->rms_eps);
    } else {
        if (pending) op->add(be, x, x, h, t * D);
        op->rmsnorm(be, h, last, m->norm, n_logits, D, c->rms_eps);
    }
    op->matmul(be, logits, h, &m->lm_head, NULL, n_logits);
    return t;
}
