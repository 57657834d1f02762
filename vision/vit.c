/* CLIP vision tower + LLaVA projector. Mirrors transformers' CLIPVisionTransformer: patch conv
 * (as a matmul over flattened patches), [CLS] + patches + position embeddings, pre_layrnorm,
 * pre-LN encoder layers; LLaVA reads hidden_states[vision_feature_layer], which is the output
 * of that many layers, so the layers past the deepest feature layer are never run. */
#include "vision/vit.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int vit_n_patches(const vit_config *c)
{
    int g = c->image_size / c->patch_size;
    return g * g;
}

int vit_n_tokens(const vit_config *c)
{
    return vit_n_patches(c) + (c->drop_cls ? 0 : 1);
}

int vit_resolve_layer(const vit_config *c, int idx)
{
    /* hidden_states has n_layers + 1 entries: the embeddings, then each layer's output. */
    int n = c->n_layers + 1;
    int r = idx < 0 ? n + idx : idx;
    return r < 0 || r >= n ? -1 : r;
}

plm_status vit_load(vit_model *m, const vit_config *cfg, const proj_config *pcfg,
                    plm_wsrc *vs, plm_wsrc *ps, plm_error *err)
{
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    m->pcfg = *pcfg;
    const int D = cfg->hidden, I = cfg->intermediate, p = cfg->patch_size;
    for (int i = 0; i < cfg->n_feature_layers; i++) {
        int r = vit_resolve_layer(cfg, cfg->feature_layers[i]);
        if (r < 0)
            return plm_fail(err, PLM_E_SHAPE,
                            "config.json: vision_feature_layer %d is out of range for a vision "
                            "tower of %d layers", cfg->feature_layers[i], cfg->n_layers);
        if (r > m->n_run) m->n_run = r;
    }
    PLM_TRY(wsrc_matrix(vs, "embeddings.patch_embedding.weight", D,
                        (int64_t)cfg->n_channels * p * p, &m->patch, err));
    PLM_TRY(wsrc_vector(vs, "embeddings.class_embedding", D, 0, &m->cls, err));
    PLM_TRY(wsrc_vector(vs, "embeddings.position_embedding.weight",
                        (int64_t)(vit_n_patches(cfg) + 1) * D, 0, &m->pos, err));
    PLM_TRY(wsrc_vector(vs, "pre_layrnorm.weight", D, 0, &m->pre_g, err));
    PLM_TRY(wsrc_vector(vs, "pre_layrnorm.bias", D, 0, &m->pre_b, err));
    m->layers = calloc((size_t)(m->n_run ? m->n_run : 1), sizeof *m->layers);
    if (!m->layers) return plm_fail(err, PLM_E_NOMEM, "vision tower: out of memory");
    char n[128];
#define L_MAT(field, name, r, c)                                                                   \
    do {                                                                                           \
        snprintf(n, sizeof n, "encoder.layers.%d.%s.weight", l, name);                             \
        PLM_TRY(wsrc_matrix(vs, n, r, c, &L->field, err));                                         \
        snprintf(n, sizeof n, "encoder.layers.%d.%s.bias", l, name);                               \
        PLM_TRY(wsrc_vector(vs, n, r, 0, &L->field##_b, err));                                     \
    } while (0)
#define L_NORM(g, b, name)                                                                         \
    do {                                                                                           \
        snprintf(n, sizeof n, "encoder.layers.%d.%s.weight", l, name);                             \
        PLM_TRY(wsrc_vector(vs, n, D, 0, &L->g, err));                                             \
        snprintf(n, sizeof n, "encoder.layers.%d.%s.bias", l, name);                               \
        PLM_TRY(wsrc_vector(vs, n, D, 0, &L->b, err));                                             \
    } while (0)
    for (int l = 0; l < m->n_run; l++) {
        vit_layer *L = &m->layers[l];
        L_NORM(ln1_g, ln1_b, "layer_norm1");
        L_NORM(ln2_g, ln2_b, "layer_norm2");
        char qkv_n[3][128], qkv_bn[3][128];
        static const char *const proj[3] = {"q_proj", "k_proj", "v_proj"};
        for (int i = 0; i < 3; i++) {
            const char *fmt = "encoder.layers.%d.self_attn.%s.%s";
            snprintf(qkv_n[i], sizeof qkv_n[i], fmt, l, proj[i], "weight");
            snprintf(qkv_bn[i], sizeof qkv_bn[i], fmt, l, proj[i], "bias");
        }
        const char *const wn[3] = {qkv_n[0], qkv_n[1], qkv_n[2]};
        const char *const bn[3] = {qkv_bn[0], qkv_bn[1], qkv_bn[2]};
        const int64_t rows[3] = {D, D, D};
        plm_weight qkv_w[3];
        float *qkv_b[3];
        PLM_TRY(wsrc_matrix_stack(vs, 3, wn, rows, D, qkv_w, &L->qkv, err));
        PLM_TRY(wsrc_vector_stack(vs, 3, bn, rows, L->qkv.data != NULL, qkv_b, &L->qkv_b, err));
        L->q = qkv_w[0], L->k = qkv_w[1], L->v = qkv_w[2];
        L->q_b = qkv_b[0], L->k_b = qkv_b[1], L->v_b = qkv_b[2];
        L_MAT(o, "self_attn.out_proj", D, D);
        L_MAT(fc1, "mlp.fc1", I, D);
        L_MAT(fc2, "mlp.fc2", D, I);
    }
#undef L_MAT
#undef L_NORM
    /* The projector: linear_1 -> act -> linear_2. */
    proj_config *pc = &m->pcfg;
    pc->in_dim = D * cfg->n_feature_layers;
    PLM_TRY(wsrc_matrix(ps, "linear_1.weight", pc->hidden, pc->in_dim, &m->p1, err));
    PLM_TRY(wsrc_matrix(ps, "linear_2.weight", pc->out_dim, pc->hidden, &m->p2, err));
    PLM_TRY(wsrc_vector(ps, "linear_1.bias", pc->hidden, !pc->bias, &m->p1_b, err));
    PLM_TRY(wsrc_vector(ps, "linear_2.bias", pc->out_dim, !pc->bias, &m->p2_b, err));
    return PLM_OK;
}

void vit_unload(vit_model *m)
{
    free(m->layers);
    m->layers = NULL;
}

/* Floats per token of the widest scratch slab: q|k|v, the MLP hidden, or the flattened patches. */
static size_t vit_wide(const vit_config *c)
{
    size_t T = (size_t)vit_n_patches(c) + 1, D = (size_t)c->hidden;
    size_t wide = (size_t)c->intermediate > 3 * D ? (size_t)c->intermediate : 3 * D;
    size_t patches = (size_t)vit_n_patches(c) * (size_t)c->n_channels * (size_t)c->patch_size *
                     (size_t)c->patch_size;
    return patches > T * wide ? (patches + T - 1) / T : wide;
}

size_t vit_scratch_floats(const vit_model *m)
{
    const vit_config *c = &m->cfg;
    size_t T = (size_t)vit_n_patches(c) + 1, D = (size_t)c->hidden;
    /* x, h, attn | wide | features | projector hidden */
    return 3 * T * D + T * vit_wide(c) + T * D * (size_t)c->n_feature_layers +
           T * (size_t)m->pcfg.hidden;
}

int vit_feature_dim(const vit_model *m)
{
    return m->cfg.hidden * m->cfg.n_feature_layers;
}

/* x += r, then y = layernorm(x) * g + b: one pass where the backend fuses them. */
static void add_norm(const plm_backend_ops *op, plm_backend *be, float *y, float *x,
                     const float *r, const float *g, const float *b, int64_t T, int64_t D,
                     float eps)
{
    if (op->add_layernorm) {
        op->add_layernorm(be, y, x, r, g, b, T, D, eps);
        return;
    }
    op->add(be, x, x, r, T * D);
    op->layernorm(be, y, x, g, b, T, D, eps);
}

void vit_encode(const vit_model *m, plm_backend *be, const float *pixels, float *feat,
                const vit_taps *taps, float *scratch)
{
    const plm_backend_ops *op = be->ops;
    const vit_config *c = &m->cfg;
    const int64_t Np = vit_n_patches(c), T = Np + 1, D = c->hidden;
    const int hd = c->hidden / c->n_heads;
    float *x = scratch, *h = x + T * D, *att = h + T * D, *w = att + T * D;

    /* Embeddings: row 0 is [CLS], rows 1.. the patch projections; then + positions. */
    op->patchify(be, w, pixels, c->n_channels, c->image_size, c->patch_size);
    op->matmul(be, x + D, w, &m->patch, NULL, Np);
    op->copy2d(be, x, D, m->cls, D, 1, D);
    add_norm(op, be, x, x, m->pos, m->pre_g, m->pre_b, T, D, c->ln_eps);

    const int64_t fd = D * c->n_feature_layers;
    int normed = 0; /* h already holds this layer's first norm (fused with the last add) */
    for (int l = 0; l <= m->n_run; l++) {
        for (int f = 0; f < c->n_feature_layers; f++)
            if (vit_resolve_layer(c, c->feature_layers[f]) == l)
                op->copy2d(be, feat + f * D, fd, x, D, T, D);
        if (l == m->n_run) break;
        const vit_layer *L = &m->layers[l];
        float *q = w, *k = w + T * D, *v = w + 2 * T * D;
        int64_t qs = D; /* row stride of q, k and v */
        if (!normed) op->layernorm(be, h, x, L->ln1_g, L->ln1_b, T, D, c->ln_eps);
        if (L->qkv.data) { /* one GEMM: rows of [q | k | v] */
            op->matmul(be, w, h, &L->qkv, L->qkv_b, T);
            q = w, k = w + D, v = w + 2 * D, qs = 3 * D;
        } else { /* one op where the backend fuses: the norm's bf16 twin serves all three */
            float *const ys[3] = {q, k, v};
            const plm_weight *const ws[3] = {&L->q, &L->k, &L->v};
            const float *const bs[3] = {L->q_b, L->k_b, L->v_b};
            plm_matmul_n(be, 3, ys, h, ws, bs, T);
        }
        plm_attn_args a = {.out = att, .q = q, .k = k, .v = v, .tq = T, .tk = T, .q_stride = qs,
                           .kv_stride = qs, .q_pos0 = 0, .n_heads = c->n_heads,
                           .n_kv = c->n_heads, .head_dim = hd, .causal = 0,
                           .scale = 1.0f / sqrtf((float)hd)};
        op->attention(be, &a);
        if (taps && l == m->n_run - 1) {
            op->copy2d(be, taps->q, D, q, qs, T, D);
            op->copy2d(be, taps->k, D, k, qs, T, D);
        }
        op->matmul(be, h, att, &L->o, L->o_b, T);
        add_norm(op, be, h, x, h, L->ln2_g, L->ln2_b, T, D, c->ln_eps);
        op->matmul(be, w, h, &L->fc1, L->fc1_b, T);
        op->act(be, w, w, T * c->intermediate, c->act);
        op->matmul(be, h, w, &L->fc2, L->fc2_b, T);
        normed = op->add_layernorm && l + 1 < m->n_run;
        if (normed) { /* the residual and the next layer's first norm in one pass */
            const vit_layer *N = &m->layers[l + 1];
            op->add_layernorm(be, h, x, h, N->ln1_g, N->ln1_b, T, D, c->ln_eps);
        } else {
            op->add(be, x, x, h, T * D);
        }
    }
}

void vit_project(const vit_model *m, plm_backend *be, const float *feat, int64_t n, float *out,
                 float *scratch)
{
    const plm_backend_ops *op = be->ops;
    float *ph = scratch;
    op->matmul(be, ph, feat, &m->p1, m->p1_b, n);
    op->act(be, ph, ph, n * m->pcfg.hidden, m->pcfg.act);
    op->matmul(be, out, ph, &m->p2, m->p2_b, n);
}

void vit_forward(const vit_model *m, plm_backend *be, const float *pixels, float *out,
                 float *scratch)
{
    const vit_config *c = &m->cfg;
    const int64_t T = vit_n_patches(c) + 1;
    float *feat = scratch + 3 * T * c->hidden + (size_t)T * vit_wide(c);
    float *ph = feat + T * c->hidden * c->n_feature_layers;
    vit_encode(m, be, pixels, feat, NULL, scratch);
    const int64_t skip = c->drop_cls ? 1 : 0;
    vit_project(m, be, feat + skip * vit_feature_dim(m), T - skip, out, ph);
}
