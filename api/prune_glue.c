/* Where the visual pruning policies meet the model: the vision stage (between the vision tower,
 * the projector and the prompt) and the decoder stages (the llama after-layer hook). prune/
 * decides; this file computes the scores it needs and moves the rows. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "api/session_internal.h"

plm_status plm_session_set_prune(plm_session *s, const char *spec)
{
    plm_model *m = s->m;
    s->prune_on = 0;
    s->vis_valid = 0; /* the vision stage depends on the policy */
    if (!spec || !strcmp(spec, "none")) return PLM_OK;
    if (!m->cfg.has_vision)
        return plm_fail(&s->err, PLM_E_UNSUPPORTED, "visual pruning needs a model with a vision "
                        "tower");
    const vit_config *v = &m->cfg.vision;
    PLM_TRY(prune_visual_parse(spec, v->image_size / v->patch_size, m->cfg.text.n_layers,
                               &s->prune, &s->err));
    if ((s->prune.vis == PRUNE_VIS_VISIONZIP || s->prune.vis == PRUNE_VIS_VFLOWOPT) &&
        m->vit.n_run == 0)
        return plm_fail(&s->err, PLM_E_UNSUPPORTED, "%s reads the vision tower's attention, but "
                        "this model's feature layer is the embeddings", s->prune.name);
    s->prune_on = prune_visual_active(&s->prune);
    return PLM_OK;
}

/* The patches of the image rows that reached the last layer, ascending, into out (room for
 * img_n); returns the count. */
static size_t kept_patches_into(const plm_session *s, int32_t *out)
{
    size_t m = 0;
    for (int64_t i = 0; s->img_patch && i < s->img_n; i++)
        if (s->img_patch[i] >= 0) out[m++] = s->img_patch[i];
    return m;
}

const int32_t *plm_session_kept_patches(plm_session *s, size_t *n, int *grid)
{
    const vit_config *v = &s->m->cfg.vision;
    *grid = v->image_size / v->patch_size;
    *n = 0;
    if (!s->img_patch || s->img_n <= 0) return NULL;
    int32_t *k = realloc(s->kept_list, (size_t)s->img_n * sizeof *k);
    if (!k) return NULL;
    s->kept_list = k;
    *n = s->n_kept_list = kept_patches_into(s, k);
    return k;
}
size_t session_vision_scratch(const plm_session *s)
{
    const plm_model *m = s->m;
    const vit_config *v = &m->cfg.vision;
    size_t T = (size_t)vit_n_patches(v) + 1, fd = (size_t)vit_feature_dim(&m->vit);
    size_t D = (size_t)v->hidden, Dt = (size_t)m->cfg.text.hidden;
    /* pixels | encoder | features | q, k taps | scores per head | gathered rows | projector
     * hidden | projected rows */
    return (size_t)3 * v->image_size * v->image_size + vit_scratch_floats(&m->vit) + T * fd +
           2 * T * D + (size_t)v->n_heads * T + T * (fd > D ? fd : D) +
           T * (size_t)m->vit.pcfg.hidden + T * Dt;
}

/* Patch entropy is a property of the pixels the patches show: undo the normalisation (exact:
 * the preprocessing maps each uint8 level to one float). */
plm_status session_pixels_rgb(plm_session *s, uint8_t **out)
{
    const clip_preproc_config *pp = &s->m->pp;
    const int S = s->ph;
    uint8_t *rgb = malloc((size_t)S * S * 3);
    if (!rgb) return plm_fail(&s->err, PLM_E_NOMEM, "out of memory for patch entropy");
    for (int c = 0; c < 3; c++) {
        double mean = pp->do_normalize ? pp->mean[c] : 0, sd = pp->do_normalize ? pp->std[c] : 1;
        double scale = pp->do_rescale ? pp->rescale_factor : 1;
        for (int i = 0; i < S * S; i++) {
            double v = (s->pixels[(size_t)c * S * S + i] * sd + mean) / scale;
            rgb[(size_t)i * 3 + c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v + 0.5);
        }
    }
    *out = rgb;
    return PLM_OK;
}

/* a [m x d] times b [n x d]^T into y [m x n], all device rows, on the backend's matmul (b as
 * a float32 weight): the similarity and Gram matrices of SparseVLM's raters and clusters and of
 * VFlowOpt's spread= */
static void matmul_rows(plm_session *s, float *y, const float *a, int64_t m, const float *b,
                        int64_t n, int64_t d)
{
    const plm_weight w = {PLM_F32, n, d, b};
    s->be->ops->matmul(s->be, y, a, &w, NULL, m);
}

/* A plan for n rows (prune/'s recycling rules: offsets from 0, sources counted from the
 * patches) written at off + base, src + base, behind base rows of one source each: its offsets
 * move past those rows and its sources by src_shift (the buffer's rows before the patches). */
static void plan_after(int64_t *off, int32_t *src, int64_t base, int64_t n, int32_t src_shift)
{
    for (int64_t j = base; j < base + off[base + n]; j++) src[j] += src_shift;
    for (int64_t r = base; r <= base + n; r++) off[r] += base;
}

typedef struct vis_bufs {
    float *feat, *q, *k, *probs, *sel, *ph, *proj; /* device */
    int64_t T, np, fd, D, Dt, skip;
} vis_bufs;

/* Mean over heads (and the tq query rows) of the attention the encoder's queries rows
 * [q0, q0+tq) give every token: into host[T]. q may be a gathered copy (q_rows). */
static void encoder_attention(plm_session *s, const vis_bufs *b, const float *q, int64_t tq,
                              float *host)
{
    const vit_config *v = &s->m->cfg.vision;
    const int hd = v->hidden / v->n_heads;
    plm_attn_args a = {.out = b->probs, .q = q, .k = b->k, .v = b->k, .tq = tq, .tk = b->T,
                       .q_stride = b->D, .kv_stride = b->D, .q_pos0 = 0, .n_heads = v->n_heads,
                       .n_kv = v->n_heads, .head_dim = hd, .causal = 0,
                       .scale = 1.0f / sqrtf((float)hd)};
    s->be->ops->attn_probs(s->be, &a, 0);
    s->be->ops->download(s->be, host, b->probs, (size_t)b->T * sizeof *host);
}

/* Room for n device rows of image features (their scores, or 0s when scores is NULL): the
 * prefill copies them on the device, and the host copy is made only if asked for. */
static plm_status device_features(plm_session *s, int64_t n, const float *scores)
{
    const int64_t Dt = s->m->cfg.text.hidden;
    const size_t need = (size_t)(n ? n : 1) * (size_t)Dt;
    float *sc = realloc(s->img_scores, (size_t)(n ? n : 1) * sizeof *sc);
    if (!sc) return plm_fail(&s->err, PLM_E_NOMEM, "out of memory for image features");
    s->img_scores = sc;
    for (int64_t i = 0; i < n; i++) sc[i] = scores ? scores[i] : 0;
    PLM_TRY(session_dev_grow(s, &s->feats_dev, &s->feats_dev_floats, need, "image features"));
    s->n_feat = (size_t)n;
    s->feats_host_ok = 0;
    s->feats_dev_ok = 1;
    return PLM_OK;
}

/* Device rows [n x Dt] kept as the image features where they are (scores 0). */
static plm_status keep_device_features(plm_session *s, const float *rows, int64_t n)
{
    const int64_t Dt = s->m->cfg.text.hidden;
    PLM_TRY(device_features(s, n, NULL));
    if (n) s->be->ops->copy2d(s->be, s->feats_dev, Dt, rows, Dt, n, Dt);
    return PLM_OK;
}

/* Which patch each of the n image rows stands for: an optional leading -1 (the CLS row), the
 * kept patches, then n_merged merged tokens (-1). */
static plm_status remember_rows(plm_session *s, int cls, const int32_t *patches, int64_t np,
                                int64_t n_merged)
{
    int64_t n = cls + np + n_merged;
    int32_t *ip = realloc(s->img_patch, (size_t)(n ? n : 1) * sizeof *ip);
    if (!ip) return plm_fail(&s->err, PLM_E_NOMEM, "out of memory");
    s->img_patch = ip;
    int64_t m = 0;
    if (cls) ip[m++] = -1;
    for (int64_t i = 0; i < np; i++) ip[m++] = patches[i];
    while (m < n) ip[m++] = -1;
    return PLM_OK;
}

/* Projects device rows `sel` [n x fd] and keeps them as the image features. */
static plm_status project_and_keep(plm_session *s, const vis_bufs *b, int64_t n)
{
    vit_project(&s->m->vit, s->be, b->sel, n, b->proj, b->ph);
    return keep_device_features(s, b->proj, n);
}

/* Random patches, a grid, or all: gather [CLS?] + patches, then project. */
static plm_status stage_select(plm_session *s, const vis_bufs *b, const int32_t *patches,
                               int64_t n)
{
    int32_t *rows = malloc((size_t)(n + 1) * sizeof *rows);
    if (!rows) return plm_fail(&s->err, PLM_E_NOMEM, "out of memory");
    int64_t m = 0;
    if (!b->skip) rows[m++] = 0;
    for (int64_t i = 0; i < n; i++) rows[m++] = patches[i] + 1;
    prune_gather_rows(s->be, b->sel, b->feat, b->fd, rows, m);
    free(rows);
    PLM_TRY(remember_rows(s, !b->skip, patches, n, 0));
    return project_and_keep(s, b, m);
}

/* VisionZip: CLS + the dominant patches by CLS attention + contextual merges, then project. */
static plm_status stage_visionzip(plm_session *s, const vis_bufs *b)
{
    const prune_visual *p = &s->prune;
    const vit_config *v = &s->m->cfg.vision;
    const int hd = v->hidden / v->n_heads;
    const int64_t np = b->np, T = b->T;
    float *att = malloc((size_t)T * sizeof *att), *hk = malloc((size_t)(T * b->D) * sizeof *hk);
    float *keys = malloc((size_t)(np * hd) * 4), *w = malloc((size_t)T * sizeof *w);
    int32_t *dom = malloc((size_t)np * sizeof *dom), *rem = malloc((size_t)np * sizeof *rem);
    int32_t *src = malloc((size_t)T * sizeof *src);
    int64_t *off = malloc((size_t)(T + 2) * sizeof *off);
    plm_status st = PLM_OK;
    if (!att || !hk || !keys || !w || !dom || !rem || !src || !off) {
        st = plm_fail(&s->err, PLM_E_NOMEM, "out of memory for VisionZip");
        goto out;
    }
    encoder_attention(s, b, b->q, 1, att); /* the [CLS] row */
    int64_t nd = prune_topk(att + 1, np, p->vis_tokens - 1, dom);
    int64_t nr = nd >= 0 ? prune_complement(dom, nd, np, rem) : 0;
    /* the key metric: head-mean of the feature layer's keys, per patch */
    s->be->ops->download(s->be, hk, b->k, (size_t)(T * b->D) * sizeof *hk);
    for (int64_t j = 0; j < np; j++)
        for (int d = 0; d < hd; d++) {
            float a = 0;
            for (int h = 0; h < v->n_heads; h++) a += hk[(1 + j) * b->D + (int64_t)h * hd + d];
            keys[j * hd + d] = a / (float)v->n_heads;
        }
    /* rows [CLS, dominant patches in raster order, contextual tokens in target order] as sums
     * of the feature rows (patch i is row 1 + i), composed on the device */
    const int64_t base = 1 + (nd > 0 ? nd : 0);
    off[0] = 0, src[0] = 0, w[0] = 1.0f;
    for (int64_t i = 0; i < nd; i++) off[1 + i] = 1 + i, src[1 + i] = 1 + dom[i], w[1 + i] = 1.0f;
    int64_t nc = nd >= 0 ? prune_visionzip_merge(keys, hd, rem, nr, p->contextual, off + base,
                                                 src + base, w + base) : -1;
    if (nd < 0 || nc < 0) {
        st = plm_fail(&s->err, PLM_E_NOMEM, "out of memory for VisionZip");
        goto out;
    }
    plan_after(off, src, base, nc, 1);
    s->be->ops->sum_rows(s->be, b->sel, b->fd, b->feat, b->fd, b->fd, off, src, w, base + nc);
    st = remember_rows(s, 1, dom, nd, nc);
    if (st == PLM_OK) st = project_and_keep(s, b, base + nc);
out:
    free(att); free(hk); free(keys); free(w); free(dom); free(rem); free(src); free(off);
    return st;
}

/* VFlowOpt: the attention "global" patches pay each patch (+ alpha * softmax(entropy)),
 * projection, then grid-cell recycling of the lowest-scored on the projected rows. */
static plm_status stage_vflowopt(plm_session *s, const vis_bufs *b)
{
    const prune_visual *p = &s->prune;
    const vit_config *v = &s->m->cfg.vision;
    const int64_t np = b->np, T = b->T, Dt = b->Dt, c0 = !b->skip; /* a kept [CLS] row first */
    const int g = v->image_size / v->patch_size;
    float *att = malloc((size_t)T * sizeof *att), *ent = malloc((size_t)np * sizeof *ent);
    float *score = malloc((size_t)(np + 1) * sizeof *score), *w = malloc((size_t)T * sizeof *w);
    int32_t *glob = malloc((size_t)np * sizeof *glob), *keep = malloc((size_t)T * sizeof *keep);
    int32_t *src = malloc((size_t)T * sizeof *src);
    int64_t *off = malloc((size_t)(T + 1) * sizeof *off);
    uint8_t *rgb = NULL;
    plm_status st = PLM_OK;
    if (!att || !ent || !score || !w || !glob || !keep || !src || !off) {
        st = plm_fail(&s->err, PLM_E_NOMEM, "out of memory for VFlowOpt");
        goto out;
    }
    /* pass 1: attention each patch receives, averaged over all patch queries */
    encoder_attention(s, b, b->q + b->D, np, att);
    int64_t ng = prune_global_rows(att + 1, np, p->t, glob);
    if (ng > 0) { /* pass 2: only the global patches' rows (none qualify: keep pass 1) */
        for (int64_t i = 0; i < ng; i++) glob[i] += 1;
        prune_gather_rows(s->be, b->sel, b->q, b->D, glob, ng);
        encoder_attention(s, b, b->sel, ng, att);
    }
    st = session_pixels_rgb(s, &rgb);
    if (st != PLM_OK) goto out;
    prune_patch_entropy(rgb, g * v->patch_size, v->patch_size, ent);
    prune_vflowopt_score(p, att + 1, ent, np, score + 1);
    /* VFlowOpt recycles on the projector's output: project every token first; the rows stay
     * on the device, only the plan of which to keep and merge is made here */
    vit_project(&s->m->vit, s->be, b->feat + b->skip * b->fd, T - b->skip, b->proj, b->ph);
    int64_t n_drop = llround(np * (1 - p->r0)) + (int64_t)(np / (p->m * p->m));
    int64_t n_keep = np - n_drop > 0 ? np - n_drop : 0, nt;
    if (p->spread >= 0) { /* [prunelm] coverage of the projected features */
        float *gram = malloc((size_t)(np * np) * sizeof *gram);
        const float *d_prow = b->proj + c0 * Dt;
        nt = -1;
        if (gram && session_dev_grow(s, &s->work, &s->work_floats, (size_t)(np * np),
                                     "a Gram matrix") == PLM_OK) {
            matmul_rows(s, s->work, d_prow, np, d_prow, np, Dt);
            s->be->ops->download(s->be, gram, s->work, (size_t)(np * np) * sizeof *gram);
            nt = prune_spread_select(gram, score + 1, np, n_keep, p->spread, glob);
        }
        free(gram);
    } else {
        nt = prune_topk_cover(score + 1, g, n_keep, llround(p->cover * (double)n_keep), glob);
    }
    int64_t nk = nt < 0 ? -1 : prune_grid_recycle(score + 1, g, glob, nt, p->m, keep + c0,
                                                   off + c0, src + c0, w + c0);
    if (nk < 0) {
        st = plm_fail(&s->err, PLM_E_NOMEM, "out of memory for VFlowOpt");
        goto out;
    }
    /* rows of b->proj: [CLS?] + patches; the plan counts patches */
    float top = 0;
    for (int64_t i = 0; i < np; i++) top = score[1 + i] > top ? score[1 + i] : top;
    if (c0) {
        plan_after(off, src, 1, nk, 1);
        off[0] = 0, src[0] = 0, w[0] = 1.0f;
        score[0] = top + 1; /* a kept [CLS] row is never dropped later */
    }
    for (int64_t r = 0; r < nk; r++) score[c0 + r] = score[1 + keep[c0 + r]];
    st = remember_rows(s, (int)c0, keep + c0, nk, 0);
    if (st == PLM_OK) st = device_features(s, c0 + nk, score);
    if (st == PLM_OK)
        s->be->ops->sum_rows(s->be, s->feats_dev, Dt, b->proj, Dt, Dt, off, src, w, c0 + nk);
out:
    free(att); free(ent); free(score); free(w); free(glob); free(keep); free(src); free(off);
    free(rgb);
    return st;
}

/* The vision tower recorded once (a CUDA graph where the backend has the graph ops) and then
 * replayed with each image's pixels copied in: its ~420 kernels are launch-bound otherwise
 * (4.3 ms of kernels for the 7B's ViT-L, eval/results/gpu_session_2026-12-07b.md). As
 * lm/llama.c's step_graph: records only for buffers the run before used too (that run, op by
 * op, grew what the recording needs); returns 1 when the tower ran so, 0: run it op by op. */
static int encode_recorded(plm_session *s, float *pix, float *feat, const vit_taps *taps,
                           float *enc, size_t pix_bytes)
{
    const plm_backend_ops *op = s->be->ops;
    if (!op->graph_begin || s->vit_graph_off) return 0;
    const void *key[3] = {s->m, pix, taps ? taps->q : NULL};
    if (memcmp(s->vit_graph_key, key, sizeof key) != 0) {
        if (s->vit_graph) op->graph_free(s->be, s->vit_graph);
        s->vit_graph = NULL;
        memcpy(s->vit_graph_key, key, sizeof key);
        return 0;
    }
    for (int tries = 0; tries < 2; tries++) {
        s->t.vision_graph = s->vit_graph ? 1 : 2;
        if (!s->vit_graph) {
            if (!op->graph_begin(s->be)) {
                s->vit_graph_off = 1;
                return 0;
            }
            vit_encode(&s->m->vit, s->be, pix, feat, taps, enc);
            s->vit_graph = op->graph_end(s->be);
            if (!s->vit_graph) { /* nothing ran: the caller runs the tower */
                s->vit_graph_off = 1;
                return 0;
            }
        }
        if (op->graph_launch(s->be, s->vit_graph, pix, s->pixels, pix_bytes)) return 1;
        op->graph_free(s->be, s->vit_graph); /* the backend's buffers moved: record again */
        s->vit_graph = NULL;
    }
    return 0;
}

plm_status session_encode_image(plm_session *s, float *dev_scratch)
{
    plm_model *m = s->m;
    const vit_model *vm = &m->vit;
    const vit_config *v = &m->cfg.vision;
    vis_bufs b;
    b.np = vit_n_patches(v);
    b.T = b.np + 1;
    b.fd = vit_feature_dim(vm);
    b.D = v->hidden;
    b.Dt = m->cfg.text.hidden;
    b.skip = v->drop_cls ? 1 : 0;
    float *pix = dev_scratch, *enc = pix + (size_t)3 * v->image_size * v->image_size;
    b.feat = enc + vit_scratch_floats(vm);
    b.q = b.feat + b.T * b.fd;
    b.k = b.q + b.T * b.D;
    b.probs = b.k + b.T * b.D;
    b.sel = b.probs + (int64_t)v->n_heads * b.T;
    b.ph = b.sel + b.T * (b.fd > b.D ? b.fd : b.D);
    b.proj = b.ph + b.T * vm->pcfg.hidden;
    const size_t pix_bytes = (size_t)3 * s->ph * s->pw * sizeof(float);
    const prune_vis_mode mode = s->prune_on ? s->prune.vis : PRUNE_VIS_NONE;
    vit_taps taps = {b.q, b.k};
    const vit_taps *tp = mode >= PRUNE_VIS_VISIONZIP ? &taps : NULL;
    if (!encode_recorded(s, pix, b.feat, tp, enc, pix_bytes)) {
        s->t.vision_graph = 0;
        s->be->ops->upload(s->be, pix, s->pixels, pix_bytes);
        vit_encode(vm, s->be, pix, b.feat, tp, enc);
    }
    int32_t *idx = malloc((size_t)b.np * sizeof *idx);
    if (!idx) return plm_fail(&s->err, PLM_E_NOMEM, "out of memory");
    int64_t n = -1;
    plm_status st = PLM_OK;
    switch (mode) {
    case PRUNE_VIS_NONE:
        for (n = 0; n < b.np; n++) idx[n] = (int32_t)n;
        st = stage_select(s, &b, idx, n);
        break;
    case PRUNE_VIS_RANDOM:
    case PRUNE_VIS_GRID:
        n = mode == PRUNE_VIS_RANDOM ? prune_random(s->prune.seed, b.np, s->prune.vis_tokens, idx)
                                     : prune_uniform_grid((int)lround(sqrt((double)b.np)),
                                                          s->prune.vis_tokens, idx);
        st = n < 0 ? plm_fail(&s->err, PLM_E_NOMEM, "out of memory")
                   : stage_select(s, &b, idx, n);
        break;
    case PRUNE_VIS_VISIONZIP: st = stage_visionzip(s, &b); break;
    case PRUNE_VIS_VFLOWOPT: st = stage_vflowopt(s, &b); break;
    }
    free(idx);
    return st;
}

/* PyramidDrop ranks with the next layer's view: its input norm, q and k projections and RoPE
 * applied to the hidden states entering it, then the last row's attention. */
static void next_layer_scores(plm_session *s, const llama_layer_view *v, int next)
{
    const llama_model *lm = &s->m->llm;
    const llama_config *c = &lm->cfg;
    const llama_layer *L = &lm->layers[next];
    const plm_backend_ops *op = s->be->ops;
    const int64_t D = c->hidden, qd = (int64_t)c->n_heads * c->head_dim,
                  kvd = (int64_t)c->n_kv * c->head_dim, t = v->t;
    float *h = s->stage_buf, *k = h + t * D, *q = k + t * kvd;
    float inv[512];
    llama_rope_inv_freq(c, s->rope_len, inv);
    op->rmsnorm(s->be, h, v->x, L->in_norm, t, D, c->rms_eps);
    op->matmul(s->be, k, h, &L->k, L->k_b, t);
    op->matmul(s->be, q, h + (t - 1) * D, &L->q, L->q_b, 1);
    op->rope(s->be, k, t, kvd, c->n_kv, c->head_dim, v->pos, inv);
    op->rope(s->be, q, 1, qd, c->n_heads, c->head_dim, v->pos + t - 1, inv);
    plm_attn_args a = {.out = s->probs, .q = q, .k = k, .v = k, .tq = 1, .tk = t,
                       .q_stride = qd, .kv_stride = kvd, .q_pos0 = t - 1, .n_heads = c->n_heads,
                       .n_kv = c->n_kv, .head_dim = c->head_dim, .causal = 1,
                       .scale = 1.0f / sqrtf((float)c->head_dim)};
    op->attn_probs(s->be, &a, 0);
}


plm_status session_pick_raters(plm_session *s, const float *x, int64_t t)
{
    s->n_raters = 0;
    if (!s->prune_on || s->prune.stage_score != PRUNE_STAGE_RATERS || s->img_n == 0) return PLM_OK;
    const plm_backend_ops *op = s->be->ops;
    const int64_t D = s->m->cfg.text.hidden, nv = s->img_n, t0 = s->img_lo + nv, nt = t - t0;
    if (nt <= 0) return PLM_OK;
    int32_t *r = realloc(s->raters, (size_t)nt * sizeof *r);
    if (r) s->raters = r;
    float *sim = malloc((size_t)(nv * nt) * sizeof *sim);
    if (!r || !sim || session_dev_grow(s, &s->work, &s->work_floats, (size_t)(nv * nt),
                                       "rater similarities") != PLM_OK) {
        free(sim);
        return plm_fail(&s->err, PLM_E_NOMEM, "out of memory for raters");
    }
    matmul_rows(s, s->work, x + s->img_lo * D, nv, x + t0 * D, nt, D);
    op->download(s->be, sim, s->work, (size_t)(nv * nt) * sizeof *sim);
    int64_t k = prune_raters(sim, nv, nt, r);
    free(sim);
    if (k < 0) return plm_fail(&s->err, PLM_E_NOMEM, "out of memory for raters");
    s->n_raters = k;
    /* rater_scores keeps one row of probabilities per rater, each call of attn_probs using
     * n_heads rows from its own as scratch */
    return session_dev_grow(s, &s->probs, &s->probs_floats,
                            (size_t)(k + s->m->cfg.text.n_heads) * (size_t)t, "attention scores");
}

/* SparseVLM's score: the mean over the raters (text rows after the image) of the head-mean
 * attention each gives the image rows in this layer; the last row when there is no rater. */
static int rater_scores(plm_session *s, const llama_layer_view *v, float *score)
{
    const llama_config *c = &s->m->cfg.text;
    const int64_t qd = (int64_t)c->n_heads * c->head_dim, n = s->img_n, tk = v->k_len;
    const int64_t text0 = s->img_lo + n, nr = s->n_raters ? s->n_raters : 1;
    /* every rater's row of probabilities side by side on the device (session_pick_raters made
     * room: a call's scratch overwrites only the rows after its own), then one download: a
     * round trip per rater waited on the device each time */
    float *rows = malloc((size_t)(nr * tk) * sizeof *rows);
    if (!rows) return 0;
    for (int64_t i = 0; i < nr; i++) {
        int64_t q = s->n_raters ? text0 + s->raters[i] : v->t - 1;
        plm_attn_args a = {.out = s->probs + i * tk, .q = v->q + q * qd, .k = v->k, .v = v->k,
                           .tq = 1, .tk = tk, .q_stride = qd,
                           .kv_stride = (int64_t)c->n_kv * c->head_dim, .q_pos0 = v->q_pos0 + q,
                           .n_heads = c->n_heads, .n_kv = c->n_kv, .head_dim = c->head_dim,
                           .causal = 1, .scale = 1.0f / sqrtf((float)c->head_dim)};
        s->be->ops->attn_probs(s->be, &a, 0);
    }
    s->be->ops->download(s->be, rows, s->probs, (size_t)(nr * tk) * sizeof *rows);
    const int64_t base = v->q_pos0 + s->img_lo;
    for (int64_t j = 0; j < n; j++) score[j] = 0;
    for (int64_t i = 0; i < nr; i++)
        for (int64_t j = 0; j < n; j++) score[j] += rows[i * tk + base + j] / (float)nr;
    free(rows);
    return 1;
}

/* SparseVLM's recycling after a selection: the top 30% (+1) of the dropped image rows by score
 * are clustered (DPC-kNN) into int(count / 10) + 1 merged rows placed after the kept ones;
 * then the text. Positions are renumbered contiguously. Returns the new row count. */
static int64_t recycle_rows(plm_session *s, const llama_layer_view *v, const float *score,
                            const int32_t *keep, int64_t nk)
{
    const llama_config *c = &s->m->cfg.text;
    const plm_backend_ops *op = s->be->ops;
    const int64_t D = c->hidden, n = s->img_n, t = v->t, lo = s->img_lo;
    const int64_t n_text = t - lo - n;
    int32_t *drop = malloc((size_t)(n ? n : 1) * sizeof *drop);
    float *dscore = malloc((size_t)(n ? n : 1) * sizeof *dscore);
    int64_t nd = drop ? prune_complement(keep, nk, n, drop) : 0;
    int64_t ncand = nd ? (int64_t)(0.3 * nd) + 1 : 0, nc = ncand ? ncand / 10 + 1 : 0;
    const size_t nc1 = (size_t)(ncand ? ncand : 1);
    int32_t *cand = malloc(nc1 * sizeof *cand), *src = malloc(nc1 * sizeof *src);
    float *w = malloc(nc1 * sizeof *w);
    int64_t *off = malloc((nc1 + 1) * sizeof *off);
    int32_t *rows = malloc((size_t)(lo + nk + 1) * sizeof *rows);
    float *gram = malloc((size_t)(ncand ? ncand * ncand : 1) * sizeof *gram);
    /* the candidates gathered on the device, their Gram matrix there (it alone comes back for
     * the clustering), and the merged rows summed there */
    const size_t work = (size_t)((ncand + nc) * D + ncand * ncand);
    float *d_c = ncand && session_dev_grow(s, &s->work, &s->work_floats, work,
                                           "recycled rows") == PLM_OK ? s->work : NULL;
    float *d_merged = d_c ? d_c + ncand * D : NULL;
    int ok = drop && dscore && cand && src && w && off && rows && gram && (d_c || !ncand);
    if (ok && ncand) {
        for (int64_t i = 0; i < nd; i++) dscore[i] = score[drop[i]];
        ok = prune_topk(dscore, nd, ncand, cand) == ncand;
        for (int64_t i = 0; ok && i < ncand; i++) cand[i] = (int32_t)(lo + drop[cand[i]]);
        if (ok) { /* cand: now the candidates' rows of x (ascending, as drop and cand were) */
            float *d_gram = d_merged + nc * D;
            prune_gather_rows(s->be, d_c, v->x, D, cand, ncand);
            matmul_rows(s, d_gram, d_c, ncand, d_c, ncand, D);
            op->download(s->be, gram, d_gram, (size_t)(ncand * ncand) * sizeof *gram);
        }
        ok = ok && prune_dpc_knn_merge(gram, ncand, D, nc, 5, off, src, w) == nc;
        if (ok) op->sum_rows(s->be, d_merged, D, d_c, D, D, off, src, w, nc);
    }
    free(gram);
    if (!ok) {
        free(drop); free(dscore); free(cand); free(src); free(w); free(off); free(rows);
        s->hook_status = plm_fail(&s->err, PLM_E_NOMEM, "out of memory recycling tokens");
        return -1;
    }
    /* [prefix | kept image rows | merged | text]: park the text, compact, insert, restore */
    float *park = s->stage_buf;
    if (n_text) op->copy2d(s->be, park, D, v->x + (lo + n) * D, D, n_text, D);
    int64_t m = 0;
    for (int64_t i = 0; i < lo; i++) rows[m++] = (int32_t)i;
    for (int64_t i = 0; i < nk; i++) rows[m++] = (int32_t)(lo + keep[i]);
    prune_gather_rows(s->be, v->x, v->x, D, rows, m);
    if (nc) op->copy2d(s->be, v->x + m * D, D, d_merged, D, nc, D);
    if (n_text) op->copy2d(s->be, v->x + (m + nc) * D, D, park, D, n_text, D);
    int64_t total = m + nc + n_text;
    for (int64_t i = 0; i < total; i++) v->pos[i] = (int32_t)(v->q_pos0 + i);
    for (int l = v->layer + 1; l < c->n_layers; l++) s->pending_shift[l] += (int32_t)(t - total);
    for (int64_t i = 0; i < nk; i++) s->img_patch[i] = s->img_patch[keep[i]];
    for (int64_t i = 0; i < nc; i++) s->img_patch[nk + i] = -1;
    s->img_n = nk + nc;
    free(drop); free(dscore); free(cand); free(src); free(w); free(off); free(rows);
    return total;
}

/* After layer l, for the stage pruning before layer l + 1: rank the image rows, keep the
 * stage's share, compact rows, positions and carried scores for the layers after. */
static int64_t after_layer(void *ctx, const llama_layer_view *v)
{
    plm_session *s = ctx;
    const prune_visual *p = &s->prune;
    s->img_layer_sum += s->img_n; /* the image rows this layer processed */
    int stage = prune_visual_stage_before(p, v->layer + 1);
    if (stage < 0) return v->t;
    const llama_config *c = &s->m->cfg.text;
    const plm_backend_ops *op = s->be->ops;
    const int64_t n = s->img_n, t = v->t;
    /* img_layer_sum counts this layer already: the rows layers 0..layer processed */
    int64_t want = prune_visual_stage_keep(p, stage, n, s->img_n0, s->img_layer_sum, c->n_layers);
    float *score = malloc((size_t)(n ? n : 1) * sizeof *score);
    int32_t *keep = malloc((size_t)(n ? n : 1) * sizeof *keep), *rows = malloc((size_t)t * 4);
    if (!score || !keep || !rows) {
        free(score); free(keep); free(rows);
        s->hook_status = plm_fail(&s->err, PLM_E_NOMEM, "out of memory in a pruning stage");
        return -1;
    }
    const int text_too = p->stage_score == PRUNE_STAGE_VISION && p->beta > 0;
    if (p->stage_score == PRUNE_STAGE_VISION && !text_too) {
        memcpy(score, s->img_scores, (size_t)n * sizeof *score);
    } else {
        int64_t base = 0;
        if (p->stage_score == PRUNE_STAGE_LAYER || text_too) {
            const int64_t qd = (int64_t)c->n_heads * c->head_dim;
            plm_attn_args a = {.out = s->probs, .q = v->q + (t - 1) * qd, .k = v->k, .v = v->k,
                               .tq = 1, .tk = v->k_len, .q_stride = qd,
                               .kv_stride = (int64_t)c->n_kv * c->head_dim,
                               .q_pos0 = v->q_pos0 + t - 1, .n_heads = c->n_heads,
                               .n_kv = c->n_kv, .head_dim = c->head_dim, .causal = 1,
                               .scale = 1.0f / sqrtf((float)c->head_dim)};
            op->attn_probs(s->be, &a, 0);
            base = v->q_pos0; /* this layer's cache holds earlier chunks first */
        } else if (p->stage_score == PRUNE_STAGE_NEXT_LAYER) {
            next_layer_scores(s, v, v->layer + 1);
        } else {
            if (!rater_scores(s, v, score)) {
                free(score); free(keep); free(rows);
                s->hook_status = plm_fail(&s->err, PLM_E_NOMEM, "out of memory for raters");
                return -1;
            }
            base = -1;
        }
        if (base >= 0)
            op->download(s->be, score, s->probs + base + s->img_lo, (size_t)n * sizeof *score);
        if (text_too) prune_blend_scores(s->img_scores, score, p->beta, n, score);
    }
    int64_t k = prune_topk(score, n, want, keep);
    if (k < 0) {
        free(score); free(keep); free(rows);
        s->hook_status = plm_fail(&s->err, PLM_E_NOMEM, "out of memory in a pruning stage");
        return -1;
    }
    if (p->recycle) {
        int64_t m = recycle_rows(s, v, score, keep, k);
        free(score); free(keep); free(rows);
        return m;
    }
    int64_t m = 0;
    for (int64_t i = 0; i < s->img_lo; i++) rows[m++] = (int32_t)i;
    for (int64_t i = 0; i < k; i++) rows[m++] = (int32_t)(s->img_lo + keep[i]);
    for (int64_t i = s->img_lo + n; i < t; i++) rows[m++] = (int32_t)i;
    prune_gather_rows(s->be, v->x, v->x, c->hidden, rows, m);
    prune_gather_i32(v->pos, v->pos, rows, m);
    for (int64_t i = 0; i < k; i++) {
        s->img_scores[i] = score[keep[i]];
        s->img_patch[i] = s->img_patch[keep[i]]; /* keep[] ascending: safe in place */
    }
    if (p->renumber) {
        /* contiguous positions from here on; decoding later shifts these layers alike */
        for (int64_t i = 0; i < m; i++) v->pos[i] = (int32_t)(v->q_pos0 + i);
        for (int l = v->layer + 1; l < c->n_layers; l++) s->pending_shift[l] += (int32_t)(t - m);
    }
    s->img_n = k;
    free(score);
    free(keep);
    free(rows);
    return m;
}

const llama_hook *session_prefill_hook(plm_session *s, llama_hook *storage)
{
    if (!s->prune_on || s->prune.n_stages == 0 || !s->has_image) return NULL;
    storage->after_layer = after_layer;
    storage->before_attention = NULL;
    storage->ctx = s;
    return storage;
}

size_t session_stage_scratch(const plm_session *s, int64_t t)
{
    const llama_config *c = &s->m->cfg.text;
    if (s->prune_on && s->prune.recycle) return (size_t)t * (size_t)c->hidden; /* parked text */
    if (!s->prune_on || s->prune.stage_score != PRUNE_STAGE_NEXT_LAYER) return 0;
    return (size_t)t * ((size_t)c->hidden + (size_t)c->n_kv * c->head_dim) +
           (size_t)c->n_heads * c->head_dim;
}

plm_status plm_session_save_mask(plm_session *s, const char *png_path)
{
    if (!s->pixels)
        return plm_fail(&s->err, PLM_E_ARG, "%s: the last prompt had no image", png_path);
    /* its own list: a pointer the caller holds from plm_session_kept_patches stays valid */
    int32_t *kept = malloc((size_t)(s->img_n > 0 ? s->img_n : 1) * sizeof *kept);
    if (!kept) return plm_fail(&s->err, PLM_E_NOMEM, "out of memory");
    size_t n = kept_patches_into(s, kept);
    uint8_t *rgb;
    plm_status st = session_pixels_rgb(s, &rgb);
    if (st == PLM_OK) {
        img_patch_overlay(rgb, s->ph, s->m->cfg.vision.patch_size, kept, n);
        st = img_write_png(png_path, rgb, s->pw, s->ph, &s->err);
        free(rgb);
    }
    free(kept);
    return st;
}
