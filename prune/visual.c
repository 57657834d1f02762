/* Visual-token policies as configurations of one pipeline (see visual.h). The defaults and
 * rules of each method are documented in docs/methods/visual_pruning.md. */
#include "prune/visual.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static plm_status int_param(prune_spec *s, const char *key, int dflt, int lo, int hi, int *out,
                            plm_error *err)
{
    double v;
    PLM_TRY(prune_spec_num(s, key, dflt, lo, hi, &v, err));
    if (v != floor(v))
        return plm_fail(err, PLM_E_FORMAT, "pruning spec '%s': %s=%g must be a whole number",
                        s->text, key, v);
    *out = (int)v;
    return PLM_OK;
}

/* Decoder layers for staged methods: given, or the defaults scaled to the model's depth. */
static plm_status stage_layers(prune_spec *s, prune_visual *p, const int *dflt, int n_dflt,
                               int ref_layers, int n_layers, plm_error *err)
{
    p->n_stages = n_dflt;
    for (int i = 0; i < n_dflt; i++) {
        int l = dflt[i] * n_layers / ref_layers;
        p->stage_layer[i] = l < n_layers - 1 ? l : n_layers - 2;
    }
    PLM_TRY(prune_spec_ints(s, "layers", p->stage_layer, PRUNE_MAX_STAGES, &p->n_stages, err));
    for (int i = 0; i < p->n_stages; i++) {
        if (p->stage_layer[i] >= n_layers - 1 || (i && p->stage_layer[i] <= p->stage_layer[i - 1]))
            return plm_fail(err, PLM_E_ARG, "pruning spec '%s': layers must increase and stay "
                            "below the last decoder layer (%d)", s->text, n_layers - 1);
    }
    return PLM_OK;
}

static plm_status parse_method(prune_spec *s, int n, int grid, int n_layers, prune_visual *p,
                               plm_error *err)
{
    const char *m = s->name;
    int tokens = 0;
    double seed;
    if (!strcmp(m, "none")) return PLM_OK;
    if (!strcmp(m, "random") || !strcmp(m, "uniform-grid")) {
        PLM_TRY(int_param(s, "tokens", n / 4, 1, n, &tokens, err));
        p->vis_score = !strcmp(m, "random") ? PRUNE_SCORE_RANDOM : PRUNE_SCORE_GRID;
        p->vis_keep = tokens;
        if (p->vis_score == PRUNE_SCORE_RANDOM) {
            PLM_TRY(prune_spec_num(s, "seed", 1, 0, 4e18, &seed, err));
            p->seed = (uint64_t)seed;
        }
        return PLM_OK;
    }
    if (!strcmp(m, "fastv")) {
        /* FastV (ECCV'24): after layer K (2), drop the image tokens the last token attends
         * to least; R = 50% by default */
        int layer = 0;
        PLM_TRY(int_param(s, "tokens", n / 2, 1, n, &tokens, err));
        PLM_TRY(int_param(s, "layer", n_layers > 3 ? 2 : 0, 0, n_layers - 2, &layer, err));
        p->n_stages = 1;
        p->stage_layer[0] = layer;
        p->stage_keep[0] = tokens;
        return PLM_OK;
    }
    if (!strcmp(m, "pyramiddrop")) {
        /* PyramidDrop (CVPR'25): the decoder in 4 stages; at the end of each of the first
         * three, keep lambda of the image tokens (ranked by last-instruction-token attention) */
        static const int dflt[3] = {8, 16, 24};
        double ratio;
        PLM_TRY(prune_spec_num(s, "ratio", 0.5, 0.01, 1, &ratio, err));
        PLM_TRY(stage_layers(s, p, dflt, 3, 32, n_layers, err));
        double left = n;
        for (int i = 0; i < p->n_stages; i++) {
            left = ceil(left * ratio);
            p->stage_keep[i] = (int)left;
        }
        return PLM_OK;
    }
    if (!strcmp(m, "visionzip")) {
        /* VisionZip (CVPR'25): dominant tokens by CLS attention, the rest merged into a few
         * contextual tokens by similarity (54 + 10 of 64 in the paper) */
        int ctx = 0;
        PLM_TRY(int_param(s, "tokens", 64 <= n ? 64 : n, 1, n, &tokens, err));
        PLM_TRY(int_param(s, "contextual", (tokens * 10 + 32) / 64, 0, tokens - 1, &ctx, err));
        p->vis_score = PRUNE_SCORE_CLS;
        p->vis_keep = tokens - ctx;
        p->vis_recycle = ctx;
        return PLM_OK;
    }
    if (!strcmp(m, "vflowopt")) {
        /* VFlowOpt (ICCV'25): importance = CLS attention mixed with patch entropy; progressive
         * pruning; the dropped tokens recycled into a few summary tokens */
        int rec = 0;
        PLM_TRY(int_param(s, "tokens", 64 <= n ? 64 : n, 1, n, &tokens, err));
        PLM_TRY(prune_spec_num(s, "alpha", 0.3, 0, 1, &p->alpha, err));
        PLM_TRY(int_param(s, "recycle", tokens >= 16 ? tokens / 16 : 0, 0, tokens - 1, &rec, err));
        p->vis_score = PRUNE_SCORE_MIX;
        p->vis_keep = tokens - rec;
        p->vis_recycle = rec;
        /* optional decoder stages: layers=a/b with ratios in thousandths? keep it explicit */
        p->n_stages = 0;
        PLM_TRY(prune_spec_ints(s, "layers", p->stage_layer, PRUNE_MAX_STAGES, &p->n_stages, err));
        double ratio;
        PLM_TRY(prune_spec_num(s, "ratio", 0.5, 0.01, 1, &ratio, err));
        double left = tokens;
        for (int i = 0; i < p->n_stages; i++) {
            if (p->stage_layer[i] >= n_layers - 1 || (i && p->stage_layer[i] <= p->stage_layer[i - 1]))
                return plm_fail(err, PLM_E_ARG, "pruning spec '%s': layers must increase and "
                                "stay below the last decoder layer (%d)", s->text, n_layers - 1);
            left = ceil(left * ratio);
            p->stage_keep[i] = (int)left;
        }
        return PLM_OK;
    }
    (void)grid;
    return plm_fail(err, PLM_E_ARG, "pruning spec '%s': unknown method '%s' (none, random, "
                    "uniform-grid, fastv, pyramiddrop, visionzip, vflowopt)", s->text, m);
}

plm_status prune_visual_parse(const char *spec, int n_tokens, int grid, int n_layers,
                              prune_visual *p, plm_error *err)
{
    memset(p, 0, sizeof *p);
    prune_spec s;
    PLM_TRY(prune_spec_parse(spec, &s, err));
    snprintf(p->name, sizeof p->name, "%s", s.name);
    snprintf(p->spec, sizeof p->spec, "%s", s.text);
    PLM_TRY(parse_method(&s, n_tokens, grid, n_layers, p, err));
    return prune_spec_check_unused(&s, err);
}

int prune_visual_stage_at(const prune_visual *p, int layer)
{
    for (int i = 0; i < p->n_stages; i++)
        if (p->stage_layer[i] == layer) return i;
    return -1;
}

int prune_visual_active(const prune_visual *p, int n_tokens)
{
    (void)n_tokens; /* a policy that keeps everything still runs its stages */
    return p->n_stages > 0 || p->vis_score != PRUNE_SCORE_NONE;
}

plm_status prune_visual_vision(const prune_visual *p, const prune_vis_in *in, int32_t *keep,
                               int64_t *n_keep, float *recycled, int64_t *n_recycled,
                               plm_error *err)
{
    const int64_t n = in->n;
    *n_recycled = 0;
    if (p->vis_score == PRUNE_SCORE_NONE) {
        for (int64_t i = 0; i < n; i++) keep[i] = (int32_t)i;
        *n_keep = n;
        return PLM_OK;
    }
    if ((p->vis_score == PRUNE_SCORE_CLS || p->vis_score == PRUNE_SCORE_MIX) && !in->cls_attn)
        return plm_fail(err, PLM_E_UNSUPPORTED, "%s needs the vision tower's [CLS] attention, but "
                        "the feature layer is the embeddings (no encoder layer runs)", p->name);
    float *score = malloc((size_t)n * sizeof *score), *ent = malloc((size_t)n * sizeof *ent);
    int32_t *drop = malloc((size_t)n * sizeof *drop);
    if (!score || !ent || !drop) {
        free(score); free(ent); free(drop);
        return plm_fail(err, PLM_E_NOMEM, "out of memory for pruning scores");
    }
    int64_t k = -1;
    switch (p->vis_score) {
    case PRUNE_SCORE_RANDOM: k = prune_random(p->seed, n, p->vis_keep, keep); break;
    case PRUNE_SCORE_GRID: k = prune_uniform_grid(in->grid, p->vis_keep, keep); break;
    case PRUNE_SCORE_CLS:
        memcpy(score, in->cls_attn, (size_t)n * sizeof *score);
        k = prune_topk(score, n, p->vis_keep, keep);
        break;
    case PRUNE_SCORE_ENTROPY:
        memcpy(score, in->entropy, (size_t)n * sizeof *score);
        k = prune_topk(score, n, p->vis_keep, keep);
        break;
    case PRUNE_SCORE_MIX:
        memcpy(score, in->cls_attn, (size_t)n * sizeof *score);
        memcpy(ent, in->entropy, (size_t)n * sizeof *ent);
        prune_norm_minmax(score, n);
        prune_norm_minmax(ent, n);
        prune_combine(score, score, (float)(1 - p->alpha), ent, (float)p->alpha, n);
        k = prune_topk(score, n, p->vis_keep, keep);
        break;
    case PRUNE_SCORE_NONE: break;
    }
    plm_status st = PLM_OK;
    if (k < 0) st = plm_fail(err, PLM_E_NOMEM, "out of memory selecting tokens");
    if (st == PLM_OK) {
        *n_keep = k;
        int64_t nd = prune_complement(keep, k, n, drop);
        /* recycled tokens average the dropped ones, weighted by their importance */
        int weighted = p->vis_score == PRUNE_SCORE_CLS || p->vis_score == PRUNE_SCORE_MIX ||
                       p->vis_score == PRUNE_SCORE_ENTROPY;
        int64_t r = prune_merge_similar(in->feat, in->dim, drop, nd, weighted ? score : NULL,
                                        p->vis_recycle, recycled, NULL);
        if (r < 0) st = plm_fail(err, PLM_E_NOMEM, "out of memory recycling tokens");
        else *n_recycled = r;
    }
    free(score);
    free(ent);
    free(drop);
    return st;
}
