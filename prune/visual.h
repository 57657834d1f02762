/* Visual-token policies. Every method is one configuration of the same pipeline built from the
 * primitives in prune.h:
 *   vision stage  (between the vision tower and the projector): score the patches (CLS
 *                 attention, patch entropy, their mix, random, a uniform grid), keep the top
 *                 ones, recycle the rest into a few similarity-merged summary tokens;
 *   decoder stages (after chosen decoder layers): score the image tokens by the attention the
 *                 last prompt token gives them in that layer, keep the top ones for the layers
 *                 that follow, optionally recycling the dropped hidden states.
 * The model side (api/) feeds scores and rows in and applies the index sets; nothing here knows
 * a model. */
#ifndef PLM_PRUNE_VISUAL_H
#define PLM_PRUNE_VISUAL_H

#include "prune/prune.h"

#define PRUNE_MAX_STAGES 8

typedef enum prune_score {
    PRUNE_SCORE_NONE,      /* no vision stage */
    PRUNE_SCORE_CLS,       /* [CLS] attention in the last vision layer run */
    PRUNE_SCORE_ENTROPY,   /* patch information entropy */
    PRUNE_SCORE_MIX,       /* alpha * entropy + (1 - alpha) * CLS attention, both min-max scaled */
    PRUNE_SCORE_RANDOM,
    PRUNE_SCORE_GRID,
} prune_score;

typedef struct prune_visual {
    char name[32];
    char spec[1024];
    /* vision stage */
    prune_score vis_score;
    double alpha;             /* entropy weight for PRUNE_SCORE_MIX */
    int vis_keep;             /* tokens kept (before recycling); <= 0: resolved from budget */
    int vis_recycle;          /* summary tokens made from the dropped ones */
    uint64_t seed;
    /* decoder stages: after layer stage_layer[i], keep stage_keep[i] image tokens */
    int n_stages;
    int stage_layer[PRUNE_MAX_STAGES];
    int stage_keep[PRUNE_MAX_STAGES];
    int stage_recycle[PRUNE_MAX_STAGES];
} prune_visual;

/* Parses a --prune spec for a model whose vision tower yields n_tokens image tokens on a g x g
 * patch grid and whose decoder has n_layers layers. Methods and parameters (all optional):
 *   none
 *   random:tokens=N,seed=S           uniform-grid:tokens=N
 *   fastv:tokens=N,layer=K           (FastV: last-token attention after decoder layer K)
 *   pyramiddrop:layers=A/B/C,ratio=L (each stage keeps ratio of the image tokens it gets)
 *   visionzip:tokens=N,contextual=C  (CLS-dominant tokens + C merged contextual tokens)
 *   vflowopt:tokens=N,alpha=A,recycle=R,layers=..,ratios=.. (see README)
 *   sparsevlm:tokens=N,layers=..,recycle=R
 * A spec may also be @FILE. Unknown methods and parameters are refused. */
plm_status prune_visual_parse(const char *spec, int n_tokens, int grid, int n_layers,
                              prune_visual *p, plm_error *err);

/* Inputs of the vision stage (host arrays, over the n patch tokens; CLS excluded). */
typedef struct prune_vis_in {
    const float *feat;       /* [n x dim] */
    int64_t n, dim;
    const float *cls_attn;   /* [n] or NULL when unavailable */
    const float *entropy;    /* [n] */
    int grid;
} prune_vis_in;

/* Runs the vision stage: keep (ascending indices into feat, room for n) and recycled rows
 * (room for vis_recycle x dim). */
plm_status prune_visual_vision(const prune_visual *p, const prune_vis_in *in, int32_t *keep,
                               int64_t *n_keep, float *recycled, int64_t *n_recycled,
                               plm_error *err);

/* The stage that runs after decoder layer `layer`, or -1. */
int prune_visual_stage_at(const prune_visual *p, int layer);

/* Whether the policy has any stage to run (not "none"); a stage keeping every token still
 * runs, which is how keep-all is tested to reproduce the unpruned model. */
int prune_visual_active(const prune_visual *p, int n_tokens);

#endif
