/* Where the pruning policies meet the model: the vision stage between the vision tower and
 * the projector, and the decoder stages through the llama after-layer hook. prune/ decides;
 * this file moves the rows. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "api/session_internal.h"

plm_status plm_session_set_prune(plm_session *s, const char *spec)
{
    plm_model *m = s->m;
    s->prune_on = 0;
    if (!spec || !strcmp(spec, "none")) return PLM_OK;
    if (!m->cfg.has_vision)
        return plm_fail(&s->err, PLM_E_UNSUPPORTED, "visual pruning needs a model with a vision "
                        "tower");
    const vit_config *v = &m->cfg.vision;
    int grid = v->image_size / v->patch_size;
    PLM_TRY(prune_visual_parse(spec, vit_n_patches(v), grid, m->cfg.text.n_layers, &s->prune,
                               &s->err));
    s->prune_on = prune_visual_active(&s->prune, vit_n_patches(v));
    return PLM_OK;
}

const int32_t *plm_session_kept_patches(const plm_session *s, size_t *n, int *grid)
{
    const vit_config *v = &s->m->cfg.vision;
    *n = s->n_kept_patches;
    *grid = v->image_size / v->patch_size;
    return s->kept_patches;
}

static int vision_stage_on(const plm_session *s)
{
    return s->prune_on && s->prune.vis_score != PRUNE_SCORE_NONE;
}

int session_n_image_tokens(const plm_session *s)
{
    const vit_config *v = &s->m->cfg.vision;
    int n = vit_n_tokens(v);
    if (!vision_stage_on(s)) return n;
    int patches = vit_n_patches(v), keep = s->prune.vis_keep + s->prune.vis_recycle;
    return n - patches + (keep < patches ? keep : patches);
}

/* Patch entropy needs the pixels as the patches show them: undo the normalisation. */
static plm_status entropy_of_pixels(plm_session *s, float *out)
{
    const clip_preproc_config *pp = &s->m->pp;
    const int S = s->ph, p = s->m->cfg.vision.patch_size;
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
    prune_patch_entropy(rgb, S, p, out);
    free(rgb);
    return PLM_OK;
}

plm_status session_encode_image(plm_session *s, const float *dev_pixels, float *dev_feats,
                                float *dev_scratch)
{
    plm_model *m = s->m;
    const vit_model *vm = &m->vit;
    const vit_config *v = &m->cfg.vision;
    const plm_backend_ops *op = s->be->ops;
    s->n_kept_patches = 0;
    if (!vision_stage_on(s)) {
        vit_forward(vm, s->be, dev_pixels, dev_feats, dev_scratch);
        return PLM_OK;
    }
    const int64_t np = vit_n_patches(v), ntok = vit_n_tokens(v), dim = vit_feature_dim(vm);
    const int64_t cls_rows = ntok - np; /* 1 when the [CLS] row is kept (strategy "full") */
    /* scratch: encoder | features [ntok x dim] | CLS attention [np] | projector input/hidden */
    float *feat = dev_scratch + vit_scratch_floats(vm), *cls = feat + ntok * dim;
    float *sel = cls + np, *ph = sel + ntok * dim;
    vit_encode(vm, s->be, dev_pixels, feat, vm->n_run > 0 ? cls : NULL, dev_scratch);

    size_t host_floats = (size_t)(ntok * dim + 3 * np + (s->prune.vis_recycle + 1) * dim);
    float *hf = malloc(host_floats * sizeof *hf);
    int32_t *keep = malloc((size_t)np * sizeof *keep);
    if (!hf || !keep) {
        free(hf);
        free(keep);
        return plm_fail(&s->err, PLM_E_NOMEM, "out of memory for the vision stage");
    }
    float *hcls = hf + ntok * dim, *ent = hcls + np, *rec = ent + np;
    op->download(s->be, hf, feat, (size_t)(ntok * dim) * sizeof *hf);
    if (vm->n_run > 0) op->download(s->be, hcls, cls, (size_t)np * sizeof *hf);
    plm_status st = entropy_of_pixels(s, ent);
    int64_t nk = 0, nr = 0;
    if (st == PLM_OK) {
        prune_vis_in in = {hf + cls_rows * dim, np, dim, vm->n_run > 0 ? hcls : NULL, ent,
                           (int)(v->image_size / v->patch_size)};
        st = prune_visual_vision(&s->prune, &in, keep, &nk, rec, &nr, &s->err);
    }
    if (st == PLM_OK) {
        /* [CLS (if kept)] + kept patches in order + recycled tokens -> projector */
        if (cls_rows) op->upload(s->be, sel, hf, (size_t)dim * sizeof *hf);
        for (int64_t i = 0; i < nk; i++)
            op->upload(s->be, sel + (cls_rows + i) * dim, hf + (cls_rows + keep[i]) * dim,
                       (size_t)dim * sizeof *hf);
        if (nr) op->upload(s->be, sel + (cls_rows + nk) * dim, rec, (size_t)(nr * dim) * sizeof *hf);
        vit_project(vm, s->be, sel, cls_rows + nk + nr, dev_feats, ph);
        int32_t *kp = realloc(s->kept_patches, (size_t)(nk ? nk : 1) * sizeof *kp);
        if (!kp) {
            st = plm_fail(&s->err, PLM_E_NOMEM, "out of memory");
        } else {
            memcpy(kp, keep, (size_t)nk * sizeof *kp);
            s->kept_patches = kp;
            s->n_kept_patches = (size_t)nk;
        }
        if (cls_rows + nk + nr != session_n_image_tokens(s))
            st = plm_fail(&s->err, PLM_E_ARG, "vision stage made %lld tokens, %d expected",
                          (long long)(cls_rows + nk + nr), session_n_image_tokens(s));
    }
    free(hf);
    free(keep);
    return st;
}

/* After a stage's layer: rank the image rows by the attention the last prompt token gives them
 * in this layer, keep the stage's share, compact rows and positions for the layers after. */
static int64_t after_layer(void *ctx, const llama_layer_view *v)
{
    plm_session *s = ctx;
    int stage = prune_visual_stage_at(&s->prune, v->layer);
    if (stage < 0) return v->t;
    /* a stage that keeps every token still runs, so keep-all exercises the whole path */
    const llama_config *c = &s->m->cfg.text;
    const plm_backend_ops *op = s->be->ops;
    const int64_t qd = (int64_t)c->n_heads * c->head_dim, kvd = (int64_t)c->n_kv * c->head_dim;
    plm_attn_args a = {.out = s->probs, .q = v->q + (v->t - 1) * qd, .k = v->k, .v = v->k,
                       .tq = 1, .tk = v->k_len, .q_stride = qd, .kv_stride = kvd,
                       .q_pos0 = v->q_pos0 + v->t - 1, .n_heads = c->n_heads, .n_kv = c->n_kv,
                       .head_dim = c->head_dim, .causal = 1,
                       .scale = 1.0f / sqrtf((float)c->head_dim)};
    op->attn_probs(s->be, &a, 0);
    const int64_t n = s->img_n, t = v->t;
    float *score = malloc((size_t)n * sizeof *score);
    int32_t *keep = malloc((size_t)n * sizeof *keep), *rows = malloc((size_t)t * sizeof *rows);
    if (!score || !keep || !rows) {
        free(score); free(keep); free(rows);
        s->hook_status = plm_fail(&s->err, PLM_E_NOMEM, "out of memory in a pruning stage");
        return -1;
    }
    op->download(s->be, score, s->probs + v->q_pos0 + s->img_lo, (size_t)n * sizeof *score);
    int64_t k = prune_topk(score, n, s->prune.stage_keep[stage], keep);
    if (k < 0) {
        free(score); free(keep); free(rows);
        s->hook_status = plm_fail(&s->err, PLM_E_NOMEM, "out of memory in a pruning stage");
        return -1;
    }
    int64_t m = 0;
    for (int64_t i = 0; i < s->img_lo; i++) rows[m++] = (int32_t)i;
    for (int64_t i = 0; i < k; i++) rows[m++] = (int32_t)(s->img_lo + keep[i]);
    for (int64_t i = s->img_lo + n; i < t; i++) rows[m++] = (int32_t)i;
    prune_gather_rows(s->be, v->x, v->x, c->hidden, rows, m);
    prune_gather_i32(v->pos, v->pos, rows, m);
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
    storage->ctx = s;
    return storage;
}
