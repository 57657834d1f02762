/* Visual-token policies, each one configuration of the same pipeline built from prune.h and
 * following the official code of its method (docs/methods/visual_pruning.md):
 *   vision stage  (the vision tower's output, before or after the projector): select patches
 *                 by a score (VFlowOpt's global-token attention + entropy, VisionZip's CLS
 *                 attention, random, a uniform grid) and recycle the dropped ones;
 *   decoder stages (before chosen decoder layers): keep the image tokens ranked highest by the
 *                 last prompt token's attention (FastV: that layer's; PyramidDrop: the next
 *                 layer's q/k) or by the carried vision score (VFlowOpt).
 * The model side (api/) computes scores, moves rows and applies the index sets; nothing here
 * knows a model. */
#ifndef PLM_PRUNE_VISUAL_H
#define PLM_PRUNE_VISUAL_H

#include "prune/prune.h"

#define PRUNE_MAX_STAGES 8

typedef enum prune_vis_mode {
    PRUNE_VIS_NONE,
    PRUNE_VIS_RANDOM,     /* random patches (before the projector) */
    PRUNE_VIS_GRID,       /* a uniform grid of patches */
    PRUNE_VIS_VISIONZIP,  /* CLS + dominant patches by CLS attention, contextual merges */
    PRUNE_VIS_VFLOWOPT,   /* global-token attention + entropy, grid-cell recycling (after
                             the projector) */
} prune_vis_mode;

typedef enum prune_stage_score {
    PRUNE_STAGE_LAYER,      /* FastV: the last prompt token's attention in the layer just run */
    PRUNE_STAGE_NEXT_LAYER, /* PyramidDrop: the same token through the next layer's norm, q, k */
    PRUNE_STAGE_VISION,     /* VFlowOpt: the vision-stage score, carried along */
    PRUNE_STAGE_RATERS,     /* SparseVLM: the attention of the rater text tokens, this layer */
} prune_stage_score;

typedef enum prune_stage_keep {
    PRUNE_KEEP_COUNT,       /* keep stage_count[i] tokens (FastV) */
    PRUNE_KEEP_OF_ORIGINAL, /* keep int(N0 * stage_ratio[i]) (PyramidDrop) */
    PRUNE_KEEP_OF_CURRENT,  /* drop round(N * (1 - stage_ratio[i])) of those left (VFlowOpt) */
} prune_stage_keep;

typedef struct prune_visual {
    char name[32];
    char spec[1024];
    prune_vis_mode vis;
    int vis_tokens;            /* random/grid: patches kept; visionzip: dominant incl. CLS */
    int contextual;            /* visionzip: merged contextual tokens */
    double r0, t, m, alpha;    /* vflowopt: vision keep ratio, global threshold, cell size,
                                  entropy weight */
    double beta;               /* vflowopt [prunelm]: weight of the last prompt token's
                                  attention beside the carried score at decoder stages (0: the
                                  official carried score alone) */
    double cover;              /* vflowopt [prunelm]: share of the vision stage's kept patches
                                  chosen one per block of the image (the best-scored patch of
                                  each), the rest by score alone (0: the official top-k) */
    double spread;             /* vflowopt [prunelm]: >= 0 keeps the vision stage's patches by
                                  prune_spread_select with this score exponent (-1: off) */
    uint64_t seed;
    int n_stages;
    int stage_layer[PRUNE_MAX_STAGES]; /* pruned before this decoder layer */
    int stage_count[PRUNE_MAX_STAGES];
    double stage_ratio[PRUNE_MAX_STAGES];
    prune_stage_score stage_score;
    prune_stage_keep stage_keep;
    int renumber;              /* positions renumbered contiguously after a stage */
    int recycle;               /* SparseVLM: the most relevant dropped tokens are clustered
                                  into a few merged tokens placed after the kept ones */
    double target;             /* vflowopt tokens=N: image rows per decoder layer on average,
                                  which the last stage binds (0: none) */
} prune_visual;

/* Parses a --prune spec for a model whose vision tower has g x g patches and whose decoder has
 * n_layers layers (see README "Visual token pruning" for every method and parameter). Unknown
 * methods and parameters are refused; a spec may be @FILE. */
plm_status prune_visual_parse(const char *spec, int grid, int n_layers, prune_visual *p,
                              plm_error *err);

/* The stage pruning before decoder layer `layer`, or -1. */
int prune_visual_stage_before(const prune_visual *p, int layer);
/* Image tokens a stage keeps out of n (n0 entered the decoder). done: the image rows the
 * decoder layers before the stage processed, summed over those layers; with a target, the last
 * stage keeps what brings the average over the n_layers layers to it (the vision stage's
 * recycled and global rows, which the ratios do not count, are paid for there). */
int64_t prune_visual_stage_keep(const prune_visual *p, int stage, int64_t n, int64_t n0,
                                int64_t done, int n_layers);

/* Whether the policy has any stage (not "none"); a stage keeping every token still runs, which
 * is how keep-all is tested to reproduce the unpruned model. */
int prune_visual_active(const prune_visual *p);

/* VFlowOpt's vision score: attention the global tokens pay each patch (attn_global, [n]) +
 * alpha * softmax(patch entropy). */
void prune_vflowopt_score(const prune_visual *p, const float *attn_global, const float *entropy,
                          int64_t n, float *score);

#endif
