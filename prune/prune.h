/* The shared pruning primitives (DESIGN.md, "The shared pruning library"). prune/ sees scores,
 * index sets and rows of numbers, never a model: the vision side and the text KV cache build
 * their policies from the same pieces. Index sets are always sorted ascending, so compaction
 * keeps the original order. */
#ifndef PLM_PRUNE_H
#define PLM_PRUNE_H

#include <stddef.h>
#include <stdint.h>

#include "core/backend.h"
#include "core/err.h"

/* ---- spec strings: "name:key=value,key=value" or "@file" holding one ---------------------- */
#define PRUNE_MAX_PARAMS 24

typedef struct prune_spec {
    char name[32];
    int n;
    struct {
        char key[32], val[128];
        int used;
    } p[PRUNE_MAX_PARAMS];
    char text[1024]; /* the spec as given (for messages and reports) */
} prune_spec;

plm_status prune_spec_parse(const char *text, prune_spec *s, plm_error *err);
/* The spec text itself: `text`, or the first non-comment line of FILE for "@FILE". */
plm_status prune_spec_text(const char *text, char *buf, size_t n, plm_error *err);
/* A number in [lo, hi]; dflt when absent. Marks the key used. */
plm_status prune_spec_num(prune_spec *s, const char *key, double dflt, double lo, double hi,
                          double *out, plm_error *err);
/* A list of integers separated by '/' (e.g. layers=2/8/16); *n receives the count. */
plm_status prune_spec_ints(prune_spec *s, const char *key, int *vals, int max, int *n,
                           plm_error *err);
/* Fails naming the first key nothing asked for (a typo must not pass silently). */
plm_status prune_spec_check_unused(const prune_spec *s, plm_error *err);

/* ---- score providers (host arrays) ---------------------------------------------------------- */
/* Information entropy (bits) of every p x p patch of an RGB8 image [size x size]: gray =
 * round(0.3333 * (R + G + B)), a 256-bin histogram, -sum p log2(p + 1e-10) — VFlowOpt's
 * calculate_patch_entropy_vectorized. out: [(size/p)^2], row-major patches. */
void prune_patch_entropy(const uint8_t *rgb, int size, int patch, float *out);
/* In-place softmax. */
void prune_softmax(float *s, int64_t n);
/* out = a + w * b */
void prune_add_scaled(float *out, const float *a, float w, const float *b, int64_t n);
/* out = minmax(a) + w * minmax(b), each rescaled to [0, 1] first so two scores of different
 * units (a carried vision score, an attention probability) weigh as w says; out may alias b. */
void prune_blend_scores(const float *a, const float *b, double w, int64_t n, float *out);
/* VFlowOpt's "global" tokens: the indices whose received attention recv[i] exceeds t times
 * the mean. Returns their count (0 when none qualifies). */
int64_t prune_global_rows(const float *recv, int64_t n, double t, int32_t *idx);

/* SparseVLM's raters (LlamaDynamicvitModel.forward): with V the image rows and T the text rows
 * after the image (both layer-0 inputs), sim = V T^T [nv x nt] (raw dot products, computed by
 * the caller's backend), m[t] = mean over v of softmax_t(sim)[v, t]; the raters are the text
 * rows with m above its mean. idx receives their indices into T; returns the count, -1 when
 * out of memory. */
int64_t prune_raters(const float *sim, int64_t nv, int64_t nt, int32_t *idx);

/* ---- selection -------------------------------------------------------------------------------- */
/* The k highest scores (ties: the lower index), as ascending indices. Returns k clamped to n,
 * or -1 when out of memory. */
int64_t prune_topk(const float *score, int64_t n, int64_t k, int32_t *idx);
/* k indices spread evenly over a g x g grid (a lattice, then the rest spread evenly); -1 when
 * out of memory. */
int64_t prune_uniform_grid(int g, int64_t k, int32_t *idx);
/* Stratified top-k: k of the g x g indices, the best-scored of each block of an s x s
 * partition of the grid first (s*s <= k_cover, the largest such s; ties: the lower index), then
 * the highest of the rest; ascending. k_cover 0 is prune_topk. Returns k clamped to g*g, -1 when
 * out of memory. */
int64_t prune_topk_cover(const float *score, int g, int64_t k, int64_t k_cover, int32_t *idx);
/* Greedy farthest-point selection of k of n rows by their Gram matrix (gram [n x n], rows
 * rows^T; cosine distances from it): the best-scored row first, then each time the row whose
 * cosine distance to the nearest chosen one, times its min-max normalised score to the power
 * w, is largest (w 0: pure coverage of the feature space). Ascending. Returns k clamped to n,
 * -1 when out of memory. */
int64_t prune_spread_select(const float *gram, const float *score, int64_t n, int64_t k,
                            double w, int32_t *idx);
/* k distinct indices drawn uniformly from [0, n) with a seed. */
int64_t prune_random(uint64_t seed, int64_t n, int64_t k, int32_t *idx);
/* The indices of [0, n) not in keep (both ascending): returns the count. */
int64_t prune_complement(const int32_t *keep, int64_t nk, int64_t n, int32_t *out);

/* ---- recycling / merging ----------------------------------------------------------------------- */
/* VFlowOpt's vision-stage recycling (prepare_inputs_labels_for_multimodal), as a plan of
 * weighted row sums: of a g x g grid, the nk tokens top (any order; theirs: the highest-scored)
 * are kept as they are; the others are grouped by m x m cells (cell = floor(row/m),
 * floor(col/m), m may be fractional); each cell's score-weighted mean row takes the slot of the
 * cell's highest-scored dropped token, which is kept. keep receives the surviving indices
 * (ascending); output row r = the sum over j in [off[r], off[r+1]) of w[j] * row src[j] (a
 * kept token: itself, weight 1), as the backend's sum_rows applies it. off has room for
 * g*g + 1, src and w for g*g. Returns the row count, -1 when out of memory. */
int64_t prune_grid_recycle(const float *score, int g, const int32_t *top, int64_t nk, double m,
                           int32_t *keep, int64_t *off, int32_t *src, float *w);
/* VisionZip's contextual tokens (apply_info), as a plan of weighted row sums: among the
 * remaining tokens rem[0..nr) (ascending), c targets are taken at a uniform stride; every other
 * remaining token joins the target whose key (keys [n x kd], L2-normalised here) is most
 * cosine-similar; contextual row j = the target's row + the mean of its members' rows: the sum
 * over i in [off[j], off[j+1]) of w[i] * row src[i], as the backend's sum_rows applies it. off
 * has room for c + 1, src and w for nr. Returns c (clamped to nr), -1 when out of memory. */
int64_t prune_visionzip_merge(const float *keys, int64_t kd, const int32_t *rem, int64_t nr,
                              int64_t c, int64_t *off, int32_t *src, float *w);

/* SparseVLM's recycling clusters (cluster_and_merge, DPC-kNN as in TCFormer): with
 * dist = ||a - b|| / sqrt(d), density = exp(-mean squared distance to the knn nearest (itself
 * included)), delta = distance to the nearest denser row (the largest distance for the
 * densest), the k rows of highest density x delta are the centres; every row joins its nearest
 * centre; merged row c = the plain mean of cluster c's rows, planned as weighted row sums:
 * the sum over j in [off[c], off[c+1]) of w[j] * row src[j] (the backend's sum_rows). Ties in
 * density break by index (theirs by a 1e-6 random jitter). gram [n x n] = rows rows^T of the n
 * rows of d floats (the caller's backend computes it; the distances come from it). off has
 * room for k + 1, src and w for n. Returns k (clamped to n), -1 when out of memory. */
int64_t prune_dpc_knn_merge(const float *gram, int64_t n, int64_t d, int64_t k, int knn,
                            int64_t *off, int32_t *src, float *w);

/* ---- compaction on the device ------------------------------------------------------------------ */
/* dst[i] = src[idx[i]] for n rows of dim floats (dst may equal src: idx ascending makes the
 * in-place gather safe); contiguous runs of indices move as one copy. */
void prune_gather_rows(plm_backend *be, float *dst, const float *src, int64_t dim,
                       const int32_t *idx, int64_t n);
/* The same for a host array of int32 (positions). */
void prune_gather_i32(int32_t *dst, const int32_t *src, const int32_t *idx, int64_t n);

#endif
