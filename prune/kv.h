/* KV-cache policies (`--kv NAME:key=value,...`): each one decides, after every decoder layer of
 * every forward pass, which cached rows to keep and which to fold into others, and optionally
 * how the next passes attend. The policy sees host arrays only (attention it asked for,
 * positions, copies of K/V when it asks); api/kv_glue.c computes those inputs on the backend
 * and applies the plan there, so a policy is backend-free and testable on hand-made numbers.
 *
 * Cache model (lm/llama.h): per layer, K and V rows [len x n_kv*head_dim]. Every kv head of a
 * layer holds the same number of rows, but not necessarily the same tokens: row r of head h is
 * token pos[h*cap + r]. Keys are stored after RoPE, so attention over a head's rows does not
 * depend on which tokens they are; rows stay in ascending position order per head because a keep
 * list is ascending and new rows are appended at the end. Layers may hold different counts. */
#ifndef PLM_PRUNE_KV_H
#define PLM_PRUNE_KV_H

#include "prune/prune.h"

/* What a policy asks to be computed for its plan (bit flags). */
enum {
    KV_NEED_ATTN = 1, /* kv_view.attn: every query of the pass */
    KV_NEED_WIN = 2,  /* kv_view.attn_win: only the last `window` queries of the prompt */
    KV_NEED_KV = 4,   /* kv_view.k / v: host copies of the layer's cache */
    KV_NEED_Q = 8,    /* kv_view.q: host copy of the pass's queries */
};

typedef struct kv_shape {
    int n_layers, n_heads, n_kv, head_dim;
    int64_t n_prompt;   /* tokens in the prompt (before any visual pruning) */
    int64_t cap;        /* row capacity of every layer (and the row stride of kv_view.pos) */
    int64_t max_new;    /* decode steps the generation may take */
    /* [n_prompt] or NULL: the sentence each prompt position belongs to, non-decreasing (the glue
     * starts a new one after a token ending in . ! ? or a line break, and around the image). */
    const int32_t *sentence;
} kv_shape;

/* One layer after one forward pass appended its rows and ran its attention. */
typedef struct kv_view {
    int layer;
    int prefill;          /* 1: the prompt pass; 0: one decode step */
    int64_t step;         /* decode steps done before this pass (0 in the prefill) */
    int64_t len;          /* rows held per kv head, the n_new new ones last */
    int64_t n_new;
    const int32_t *pos;   /* [n_kv x cap]: the token position of each row */
    /* [n_heads x len]: attention each row received, summed over the pass's queries (so a row
     * of one decode step sums to 1 per head). Causal: a prompt query sees the rows before it. */
    const float *attn;
    const float *attn_win; /* [n_heads x len], the last n_win prompt queries only */
    int64_t n_win;
    const float *k, *v;   /* [len x n_kv*head_dim] (keys after RoPE); rows a store holds
                             compressed read as the attention reads them (prune/kv_thin.h,
                             prune/kv_int4.h) */
    const float *q;       /* [n_q x n_heads*head_dim] (after RoPE): the pass's queries, the
                             newest last */
    int64_t n_q;
} kv_view;

/* row dst of head `head` = a * row dst + b * row src, for K and V alike. Applied in order and
 * before the keep list, so several sources may fold into one row. */
typedef struct kv_merge {
    int32_t head, dst, src;
    float a, b;
} kv_merge;

/* A policy's answer for one layer. Buffers belong to the policy (reused between calls). */
typedef struct kv_plan {
    int64_t n_keep;     /* rows kept per kv head; -1: keep every row */
    const int32_t *keep;/* [n_kv x n_keep], ascending per head */
    int64_t n_merge;
    const kv_merge *merge;
    /* ThinK (prune/kv_think.c): rows [0, chan_upto) of every kv head keep only these key
     * channels ([n_kv x n_chan], ascending; given once, at the prefill) in the thin-key store
     * (prune/kv_thin.h), and queries score them over those channels only. */
    int64_t n_chan;
    const int32_t *chan;
    int64_t chan_upto;
    /* KIVI int4 (prune/kv_kivi.c): > 0: every kv head keeps its newest quant_recent rows in
     * float32 and stores older ones 4-bit (prune/kv_int4.h), quant_group rows at a time. */
    int quant_group;
    int64_t quant_recent;
    /* Mustafar: rows [0, compress_upto) of every head move to the bitmap-compressed store,
     * each K row keeping its largest-magnitude (1 - sparsity_k) share of values, V likewise.
     * Rows already compressed stay so; 0: nothing new. */
    int64_t compress_upto;
    float sparsity_k, sparsity_v;
} kv_plan;

/* How one layer's next attention runs (sparse-attention policies). Host arrays owned by the
 * policy; NULL fields mean dense. */
typedef struct kv_attend {
    int64_t n_rows;        /* > 0: each kv head attends to rows[h*n_rows ..] only (ascending) */
    const int32_t *rows;
    const float *bias;     /* [n_heads x (len + n_new)] added to the attention logits of
                              every query of the pass (steering) */
} kv_attend;

typedef struct kv_policy kv_policy;

typedef struct kv_policy_ops {
    const char *name;
    /* Reads the policy's own keys from s (the common ones are parsed already). */
    plm_status (*parse)(kv_policy *p, prune_spec *s, plm_error *err);
    /* Before a generation: size the state. Called again for every new prompt. */
    plm_status (*begin)(kv_policy *p, const kv_shape *shape, plm_error *err);
    /* KV_NEED_* for this layer and pass (may depend on step: recycled attention asks for
     * attention only on its full steps). */
    int (*needs)(const kv_policy *p, int layer, int prefill, int64_t step);
    /* After the layer ran: what to keep and merge. plan->n_keep = -1 and no merges when nothing
     * changes. The policy updates its own per-row state to the plan it returns. */
    plm_status (*plan)(kv_policy *p, const kv_view *v, kv_plan *plan, plm_error *err);
    /* Optional: before the layer's attention in the next pass (len = rows held before that
     * pass appends; n_new = rows it appends). Fills *a or leaves it dense. */
    plm_status (*attend)(kv_policy *p, int layer, int prefill, int64_t step, int64_t len,
                         int64_t n_new, const int32_t *pos, kv_attend *a, plm_error *err);
    /* Optional: 1 when attend will steer the passes after the prefill (AutoPASTA once it has
     * chosen its spans): the glue then runs the last prompt token again, steered, so that the
     * first answer token is steered too. */
    int (*steers)(const kv_policy *p);
    void (*destroy)(kv_policy *p);
} kv_policy_ops;

/* The parameters every token-budget policy shares (README "KV-cache policies"). */
typedef struct kv_common {
    int64_t budget;     /* budget=N: rows per kv head kept per layer; 0: from ratio */
    double ratio;       /* ratio=r: budget = ceil(r * prompt tokens) when budget == 0 (0: none) */
    int64_t sink;       /* sink=N: first rows always kept (attention sinks); -1: not given */
    int64_t recent;     /* recent=N: last rows always kept; -1: not given */
    int64_t window;     /* window=N: observation window (last prompt queries); -1: not given */
} kv_common;

/* A common key's value, or dflt when the spec did not give it. */
static inline int64_t kv_or(int64_t v, int64_t dflt) { return v >= 0 ? v : dflt; }

struct kv_policy {
    const kv_policy_ops *ops;
    kv_common c;
    kv_shape shape;
    char spec[1024];
    void *state;        /* the policy's own */
    kv_policy *next;    /* composition: `--kv snapkv:ratio=0.2+think:ratio=0.5` runs both, the
                           first's plan applied before the next one plans */
};

/* Parses `--kv SPEC` (or @FILE): one policy or several joined by '+'. Unknown policies and keys
 * are refused. *out is freed with kv_policy_free (the whole chain). "none" gives NULL. */
plm_status kv_policy_parse(const char *spec, kv_policy **out, plm_error *err);
void kv_policy_free(kv_policy *p);
/* Calls ops->begin after resolving the budget against the prompt. */
plm_status kv_policy_begin(kv_policy *p, const kv_shape *shape, plm_error *err);
/* Rows per kv head a layer may keep (budget resolved; INT64_MAX when the policy has none). */
int64_t kv_budget(const kv_policy *p);
/* The observation window (window=, 32 by default) KV_NEED_WIN is computed over. */
int64_t kv_window(const kv_policy *p);
/* Fails unless budget= or ratio= was given (for the token-budget policies' parse). */
plm_status kv_require_budget(const kv_policy *p, plm_error *err);

/* ---- shared selection (prune/kv_select.c) ---------------------------------------------------- */
/* For each kv head: the first `sink` rows, the last `recent` rows and the highest-scored of the
 * rest up to `budget` rows in all; score [n_kv x len] (higher = keep). keep [n_kv x budget]
 * ascending. Returns the rows kept per head (min(budget, len)), -1 when out of memory. */
int64_t kv_select_topk(const float *score, int n_kv, int64_t len, int64_t budget, int64_t sink,
                        int64_t recent, int32_t *keep);
/* Sums per-query-head scores [n_heads x len] into kv heads [n_kv x len] (GQA groups). */
void kv_heads_sum(const float *per_head, int n_heads, int n_kv, int64_t len, float *out);
/* Compacts a per-row state array [n_kv x stride] to the keep list (in place, per head). */
void kv_compact_f32(float *state, int64_t stride, int n_kv, const int32_t *keep, int64_t n_keep);
void kv_compact_i32(int32_t *state, int64_t stride, int n_kv, const int32_t *keep,
                    int64_t n_keep);

/* Sparse rows for a decode step (kv_attend.rows): per kv head the rows marked in mark
 * [n_kv x len] (1 = attend), then the row the step appends (index len). Every head must list as
 * many, so heads with fewer marks are padded with their newest unmarked rows (mark is updated).
 * rows: [n_kv x (n + 1)]. Returns n + 1, or 0 when that would be every row (dense is the same
 * and cheaper). */
int64_t kv_rows_from_marks(uint8_t *mark, int n_kv, int64_t len, int32_t *rows);

/* Registry: one ops table per policy file. */
extern const kv_policy_ops kv_streaming_ops, kv_h2o_ops, kv_snapkv_ops, kv_scissorhands_ops,
    kv_think_ops, kv_mustafar_ops, kv_kvcrush_ops, kv_ems_ops, kv_d2o_ops, kv_delta_ops,
    kv_recycled_ops, kv_flexprefill_ops, kv_deltallm_ops, kv_autopasta_ops, kv_int4_ops;

#endif
