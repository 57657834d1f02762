/* Parsing visual policies and the parts of their rules that are pure arithmetic. */
#include "prune/visual.h"

#include <math.h>
#include <stdio.h>
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

/* Stage layers: given (layers=a/b/c) or defaults scaled from a reference depth; increasing,
 * at least 1 and below n_layers. */
static plm_status stage_layers(prune_spec *s, prune_visual *p, const int *dflt, int n_dflt,
                               int ref, int n_layers, plm_error *err)
{
    /* defaults scaled to this depth; on a shallow decoder colliding layers collapse */
    p->n_stages = 0;
    for (int i = 0; i < n_dflt; i++) {
        int l = (int)lround((double)dflt[i] * n_layers / ref);
        l = l < 1 ? 1 : l > n_layers - 1 ? n_layers - 1 : l;
        if (p->n_stages == 0 || l > p->stage_layer[p->n_stages - 1]) p->stage_layer[p->n_stages++] = l;
    }
    PLM_TRY(prune_spec_ints(s, "layers", p->stage_layer, PRUNE_MAX_STAGES, &p->n_stages, err));
    for (int i = 0; i < p->n_stages; i++)
        if (p->stage_layer[i] < 1 || p->stage_layer[i] > n_layers - 1 ||
            (i && p->stage_layer[i] <= p->stage_layer[i - 1]))
            return plm_fail(err, PLM_E_ARG, "pruning spec '%s': layers must increase from 1 to "
                            "%d (a stage prunes before that decoder layer)", s->text,
                            n_layers - 1);
    return PLM_OK;
}

static plm_status parse_random_grid(prune_spec *s, int n, prune_visual *p, plm_error *err)
{
    p->vis = !strcmp(s->name, "random") ? PRUNE_VIS_RANDOM : PRUNE_VIS_GRID;
    PLM_TRY(int_param(s, "tokens", n / 4, 1, n, &p->vis_tokens, err));
    if (p->vis == PRUNE_VIS_RANDOM) {
        double seed;
        PLM_TRY(prune_spec_num(s, "seed", 1, 0, 4e18, &seed, err));
        p->seed = (uint64_t)seed;
    }
    return PLM_OK;
}

/* FastV (ECCV'24, pkunlp-icler/FastV LlamaModel.forward): before layer K, keep the image tokens
 * the last prompt token attends to most in layer K-1 (head-mean); positions kept. */
static plm_status parse_fastv(prune_spec *s, int n, int n_layers, prune_visual *p, plm_error *err)
{
    int k = 0, tokens = 0;
    double ratio;
    PLM_TRY(int_param(s, "k", n_layers > 2 ? 2 : 1, 1, n_layers - 1, &k, err));
    PLM_TRY(prune_spec_num(s, "ratio", 0.5, 0, 1, &ratio, err)); /* R: the fraction dropped */
    PLM_TRY(int_param(s, "tokens", (int)lround(n * (1 - ratio)), 0, n, &tokens, err));
    p->n_stages = 1;
    p->stage_layer[0] = k;
    p->stage_count[0] = tokens;
    p->stage_score = PRUNE_STAGE_LAYER;
    p->stage_keep = PRUNE_KEEP_COUNT;
    return PLM_OK;
}

/* PyramidDrop (CVPR'25, Cooperx521/PyramidDrop pdrop_forward): before layers 8/16/24 of 32,
 * keep int(N0 * lambda^s) ranked by the last prompt token through the next layer's q/k;
 * positions renumbered contiguously. */
static plm_status parse_pyramiddrop(prune_spec *s, int n_layers, prune_visual *p, plm_error *err)
{
    static const int dflt[3] = {8, 16, 24};
    double lambda;
    PLM_TRY(prune_spec_num(s, "lambda", 0.5, 0.001, 1, &lambda, err));
    PLM_TRY(stage_layers(s, p, dflt, 3, 32, n_layers, err));
    for (int i = 0; i < p->n_stages; i++) p->stage_ratio[i] = pow(lambda, i + 1);
    p->stage_score = PRUNE_STAGE_NEXT_LAYER;
    p->stage_keep = PRUNE_KEEP_OF_ORIGINAL;
    p->renumber = 1;
    return PLM_OK;
}

/* VisionZip (CVPR'25, visionzip/clip_encoder.py): CLS + the dominant-1 patches the CLS row
 * attends to most in the feature layer, plus `contextual` merged tokens; 54 + 10 = 64. */
static plm_status parse_visionzip(prune_spec *s, int n, prune_visual *p, plm_error *err)
{
    int tokens = 0;
    PLM_TRY(int_param(s, "tokens", 64 < n ? 64 : n, 2, n + 1, &tokens, err));
    PLM_TRY(int_param(s, "contextual", (tokens * 10 + 32) / 64, 0, tokens - 1, &p->contextual,
                      err));
    p->vis = PRUNE_VIS_VISIONZIP;
    p->vis_tokens = tokens - p->contextual;
    if (p->vis_tokens < 1 || p->vis_tokens - 1 > n)
        return plm_fail(err, PLM_E_ARG, "pruning spec '%s': tokens - contextual must leave the "
                        "CLS token and at most %d patches", s->text, n);
    return PLM_OK;
}

/* VFlowOpt's three shipped configurations (llava_onevision_training_free.py, for 10%, 25% and
 * 50% layer-averaged retention): global threshold t, cell size m (on a 27x27 grid), vision keep
 * r0, and the keep ratios before the two decoder stages. */
static const struct vflowopt_preset {
    double target, t, m, r0, r1, r2;
} VFLOWOPT_PRESETS[] = {
    {0.10, 39.265, 17.387, 0.11662, 1.0, 0.6011},
    {0.25, 34.760, 15.581, 0.26510, 0.98334, 0.87733},
    {0.50, 28.683, 11.757, 0.72332, 0.74875, 0.487},
};

/* The preset for a layer-averaged fraction f: the shipped rows, linearly interpolated between
 * them ([prunelm]: the repository has no rows for other budgets); below 10% the 10% row with r0
 * scaled down. r2 is then derived from the budget by the caller. */
static struct vflowopt_preset vflowopt_preset(double f)
{
    const int n = (int)(sizeof VFLOWOPT_PRESETS / sizeof VFLOWOPT_PRESETS[0]);
    struct vflowopt_preset p = VFLOWOPT_PRESETS[0];
    if (f <= VFLOWOPT_PRESETS[0].target) {
        p.r0 *= f / VFLOWOPT_PRESETS[0].target;
        return p;
    }
    for (int i = 0; i + 1 < n; i++) {
        const struct vflowopt_preset *a = &VFLOWOPT_PRESETS[i], *b = &VFLOWOPT_PRESETS[i + 1];
        if (f <= b->target || i + 2 == n) {
            double w = (f - a->target) / (b->target - a->target);
            w = w > 1 ? 1 : w;
            p.target = f;
            p.t = a->t + w * (b->t - a->t);
            p.m = a->m + w * (b->m - a->m);
            p.r0 = a->r0 + w * (b->r0 - a->r0);
            p.r1 = a->r1 + w * (b->r1 - a->r1);
            p.r2 = a->r2 + w * (b->r2 - a->r2);
            return p;
        }
    }
    return p;
}

/* VFlowOpt (ICCV'25, sihany077/VFlowOpt): vision keep ratio r0 with grid recycling, then before
 * layers k1, k2 keep r1, r2 of the rest by the carried vision score. `tokens=N` (the
 * layer-averaged budget) picks the preset for N and derives r2 as their search does. */
static plm_status parse_vflowopt(prune_spec *s, int n, int n_layers, prune_visual *p,
                                 plm_error *err)
{
    static const int dflt[2] = {9, 18}; /* of 28 (Qwen2-7B); scaled to this decoder */
    p->vis = PRUNE_VIS_VFLOWOPT;
    double tokens, r1, r2;
    PLM_TRY(prune_spec_num(s, "tokens", -1, 1, n, &tokens, err));
    struct vflowopt_preset pr = vflowopt_preset(tokens > 0 ? tokens / n : 0.10);
    PLM_TRY(prune_spec_num(s, "r0", pr.r0, 0.001, 1, &p->r0, err));
    PLM_TRY(prune_spec_num(s, "t", pr.t, 0, 1000, &p->t, err));
    /* [prunelm] with tokens=N the recycling cells default to about N (round(sqrt N) a side):
     * the dropped patches then survive as a coarse, importance-weighted picture of the whole
     * image rather than as a few cell means beside densely kept object patches, which this
     * project's model miscounts; VFlowOpt's own search (prunelm tune, their objective) lands on
     * m = 3 for 64 tokens too. Without tokens=, the shipped row's m scaled to the grid. */
    const double m_dflt = tokens > 0 ? sqrt((double)n) / fmax(1.0, round(sqrt(tokens)))
                                     : pr.m * sqrt(n / 729.0);
    PLM_TRY(prune_spec_num(s, "m", m_dflt, 1, 1000, &p->m, err));
    PLM_TRY(prune_spec_num(s, "alpha", 0, -10, 10, &p->alpha, err));
    PLM_TRY(prune_spec_num(s, "beta", 0, 0, 100, &p->beta, err));
    PLM_TRY(prune_spec_num(s, "cover", 0, 0, 1, &p->cover, err));
    PLM_TRY(prune_spec_num(s, "spread", -1, -1, 100, &p->spread, err));
    PLM_TRY(stage_layers(s, p, dflt, 2, 28, n_layers, err));
    PLM_TRY(prune_spec_num(s, "r1", pr.r1, 0.001, 1, &r1, err));
    PLM_TRY(prune_spec_num(s, "r2", pr.r2, 0.001, 1, &r2, err));
    if (tokens > 0) {
        if (p->n_stages != 2)
            return plm_fail(err, PLM_E_ARG, "pruning spec '%s': tokens= derives r2 and needs "
                            "exactly two layers", s->text);
        /* avg = [r0 k1 + r0 r1 (k2 - k1) + r0 r1 r2 (L - k2)] / L, solved for r2 */
        double L = n_layers, k1 = p->stage_layer[0], k2 = p->stage_layer[1], target = tokens / n;
        r2 = (L * target - k1 * p->r0 - (k2 - k1) * p->r0 * r1) / ((L - k2) * p->r0 * r1);
        if (r2 <= 0)
            return plm_fail(err, PLM_E_ARG, "pruning spec '%s': r0=%g and r1=%g already keep "
                            "more than %g tokens on average; lower them", s->text, p->r0, r1,
                            tokens);
        if (r2 > 1) r2 = 1;
        p->target = tokens;
    }
    for (int i = 0; i < p->n_stages; i++) p->stage_ratio[i] = i == 0 ? r1 : i == 1 ? r2 : 1;
    p->stage_score = PRUNE_STAGE_VISION;
    p->stage_keep = PRUNE_KEEP_OF_CURRENT;
    return PLM_OK;
}

/* SparseVLM (ICML'25, Gumpest/SparseVLMs v1.5): after layers 2, 6 and 15 of 32 keep the image
 * tokens the rater text tokens attend to most, by the per-budget lists tuned for 576 tokens;
 * recycle the most relevant dropped ones; positions renumbered contiguously. */
static plm_status parse_sparsevlm(prune_spec *s, int n, int n_layers, prune_visual *p,
                                  plm_error *err)
{
    static const int dflt[3] = {3, 7, 16}; /* pruned before these: scored at 2, 6, 15 */
    static const struct { int tokens, keep[3]; } LISTS[] = {
        {64, {66, 30, 17}}, {128, {303, 110, 36}}, {192, {300, 200, 110}}};
    int tokens = 0;
    PLM_TRY(int_param(s, "tokens", 128, 1, 100000, &tokens, err));
    int li = -1;
    for (int i = 0; i < 3; i++)
        if (LISTS[i].tokens == tokens) li = i;
    PLM_TRY(stage_layers(s, p, dflt, 3, 32, n_layers, err));
    int keep[PRUNE_MAX_STAGES], nk = 0;
    PLM_TRY(prune_spec_ints(s, "keep", keep, PRUNE_MAX_STAGES, &nk, err));
    if (nk == 0) {
        if (li < 0)
            return plm_fail(err, PLM_E_ARG, "pruning spec '%s': SparseVLM ships keep lists for "
                            "tokens=64, 128 and 192; give keep=a/b/c for another budget", s->text);
        for (int i = 0; i < 3; i++) /* the lists are for 576 tokens: scale to this grid */
            keep[i] = (int)lround(LISTS[li].keep[i] * (double)n / 576) > 0
                          ? (int)lround(LISTS[li].keep[i] * (double)n / 576) : 1;
        nk = 3;
    }
    if (nk < p->n_stages)
        return plm_fail(err, PLM_E_ARG, "pruning spec '%s': %d keep counts for %d layers",
                        s->text, nk, p->n_stages);
    for (int i = 0; i < p->n_stages; i++) p->stage_count[i] = keep[i];
    p->stage_score = PRUNE_STAGE_RATERS;
    p->stage_keep = PRUNE_KEEP_COUNT;
    p->renumber = 1;
    p->recycle = 1;
    return PLM_OK;
}

plm_status prune_visual_parse(const char *spec, int grid, int n_layers, prune_visual *p,
                              plm_error *err)
{
    memset(p, 0, sizeof *p);
    prune_spec s;
    PLM_TRY(prune_spec_parse(spec, &s, err));
    snprintf(p->name, sizeof p->name, "%s", s.name);
    snprintf(p->spec, sizeof p->spec, "%s", s.text);
    const int n = grid * grid;
    const char *m = s.name;
    if (!strcmp(m, "none")) {
    } else if (!strcmp(m, "random") || !strcmp(m, "uniform-grid")) {
        PLM_TRY(parse_random_grid(&s, n, p, err));
    } else if (!strcmp(m, "fastv")) {
        PLM_TRY(parse_fastv(&s, n, n_layers, p, err));
    } else if (!strcmp(m, "pyramiddrop")) {
        PLM_TRY(parse_pyramiddrop(&s, n_layers, p, err));
    } else if (!strcmp(m, "visionzip")) {
        PLM_TRY(parse_visionzip(&s, n, p, err));
    } else if (!strcmp(m, "vflowopt")) {
        PLM_TRY(parse_vflowopt(&s, n, n_layers, p, err));
    } else if (!strcmp(m, "sparsevlm")) {
        PLM_TRY(parse_sparsevlm(&s, n, n_layers, p, err));
    } else {
        return plm_fail(err, PLM_E_ARG, "pruning spec '%s': unknown method '%s' (none, random, "
                        "uniform-grid, fastv, pyramiddrop, visionzip, vflowopt, sparsevlm)",
                        s.text, m);
    }
    return prune_spec_check_unused(&s, err);
}

int prune_visual_stage_before(const prune_visual *p, int layer)
{
    for (int i = 0; i < p->n_stages; i++)
        if (p->stage_layer[i] == layer) return i;
    return -1;
}

int64_t prune_visual_stage_keep(const prune_visual *p, int stage, int64_t n, int64_t n0,
                                int64_t done, int n_layers)
{
    int64_t k = n;
    const int left = n_layers - p->stage_layer[stage];
    if (p->target > 0 && stage == p->n_stages - 1 && left > 0) {
        k = (int64_t)floor((p->target * n_layers - (double)done) / left);
        if (k < 1) k = 1; /* the stage keeps a token while it has one */
        return k > n ? n : k;
    }
    switch (p->stage_keep) {
    case PRUNE_KEEP_COUNT: k = p->stage_count[stage]; break;
    case PRUNE_KEEP_OF_ORIGINAL: k = (int64_t)(n0 * p->stage_ratio[stage]); break;
    case PRUNE_KEEP_OF_CURRENT: k = n - (int64_t)llround(n * (1 - p->stage_ratio[stage])); break;
    }
    return k < 0 ? 0 : k > n ? n : k;
}

int prune_visual_active(const prune_visual *p)
{
    return p->n_stages > 0 || p->vis != PRUNE_VIS_NONE;
}

void prune_vflowopt_score(const prune_visual *p, const float *attn_global, const float *entropy,
                          int64_t n, float *score)
{
    /* score = attention + alpha * softmax(entropy); the shipped configurations use alpha 0 */
    float *sm = score; /* softmax computed in place into score, then the attention added */
    memcpy(sm, entropy, (size_t)n * sizeof *sm);
    prune_softmax(sm, n);
    for (int64_t i = 0; i < n; i++) score[i] = attn_global[i] + (float)p->alpha * sm[i];
}
