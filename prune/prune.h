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
/* A number in [lo, hi]; dflt when absent. Marks the key used. */
plm_status prune_spec_num(prune_spec *s, const char *key, double dflt, double lo, double hi,
                          double *out, plm_error *err);
/* A list of integers separated by '/' (e.g. layers=2/8/16); *n receives the count. */
plm_status prune_spec_ints(prune_spec *s, const char *key, int *vals, int max, int *n,
                           plm_error *err);
/* Fails naming the first key nothing asked for (a typo must not pass silently). */
plm_status prune_spec_check_unused(const prune_spec *s, plm_error *err);

/* ---- score providers (host arrays) ---------------------------------------------------------- */
/* Shannon entropy (bits) of the 8-bit luminance histogram of every patch of an RGB8 image
 * [size x size], row-major patches of p x p pixels: out[(size/p)^2]. */
void prune_patch_entropy(const uint8_t *rgb, int size, int patch, float *out);
/* Rescales to [0, 1] (all zeros when constant). */
void prune_norm_minmax(float *s, int64_t n);
/* out = wa * a + wb * b */
void prune_combine(float *out, const float *a, float wa, const float *b, float wb, int64_t n);

/* ---- selection -------------------------------------------------------------------------------- */
/* The k highest scores (ties: the lower index), as ascending indices. Returns k clamped to n,
 * or -1 when out of memory. */
int64_t prune_topk(const float *score, int64_t n, int64_t k, int32_t *idx);
/* k indices spread evenly over a g x g grid (a lattice, then the rest spread evenly); -1 when
 * out of memory. */
int64_t prune_uniform_grid(int g, int64_t k, int32_t *idx);
/* k distinct indices drawn uniformly from [0, n) with a seed. */
int64_t prune_random(uint64_t seed, int64_t n, int64_t k, int32_t *idx);
/* The indices of [0, n) not in keep (both ascending): returns the count. */
int64_t prune_complement(const int32_t *keep, int64_t nk, int64_t n, int32_t *out);

/* ---- recycling / merging ----------------------------------------------------------------------- */
/* Folds the dropped rows into n_out summary rows: dropped rows are split into n_out groups of
 * mutually similar rows (each joins the most cosine-similar of n_out seed rows, the seeds
 * being the highest-weighted dropped rows), and each group becomes the weight-averaged row.
 * rows: [n x dim]; drop: [nd] indices; w: per-row weights (NULL: equal). Returns the groups
 * made (<= n_out; fewer when fewer rows were dropped). out: [n_out x dim]; group_of (may be
 * NULL) receives each dropped row's group. */
int64_t prune_merge_similar(const float *rows, int64_t dim, const int32_t *drop, int64_t nd,
                            const float *w, int64_t n_out, float *out, int32_t *group_of);

/* ---- compaction on the device ------------------------------------------------------------------ */
/* dst[i] = src[idx[i]] for n rows of dim floats (dst may equal src: idx ascending makes the
 * in-place gather safe); contiguous runs of indices move as one copy. */
void prune_gather_rows(plm_backend *be, float *dst, const float *src, int64_t dim,
                       const int32_t *idx, int64_t n);
/* The same for a host array of int32 (positions). */
void prune_gather_i32(int32_t *dst, const int32_t *src, const int32_t *idx, int64_t n);

#endif
