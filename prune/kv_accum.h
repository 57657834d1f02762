/* Per-row accumulators and grouping primitives shared by the KV policies that keep history
 * (Scissorhands, KVCrush, EMS, D2O). Host arrays only, no allocation unless a function says so.
 *
 * Row state layout: [n_kv x stride] per layer, row r of kv head h at h*stride + r (stride = the
 * cache capacity), compacted with kv_compact_* from kv.h (or kv_compact_u64 below) to the keep
 * list a policy returns. A pass appends its n_new rows last, so rows [len - n_new, len) are new. */
#ifndef PLM_PRUNE_KV_ACCUM_H
#define PLM_PRUNE_KV_ACCUM_H

#include <stdint.h>

#include "prune/kv.h"

/* ---- running and decayed sums ---------------------------------------------------------------- */
/* st[h][r] = decay * st[h][r] + add[h*len + r] for the old rows, and = add for the n_new new
 * ones: decay 1 is a running sum (H2O), decay < 1 an exponentially decayed one. */
void kv_rows_accum(float *st, int64_t stride, int n_kv, const float *add, int64_t len,
                   int64_t n_new, float decay);
/* out [n_kv x len] = rows [0, len) of st, contiguous per head (the selectors' layout). */
void kv_rows_gather(const float *st, int64_t stride, int n_kv, int64_t len, float *out);

/* Attention a row would have received from this pass's queries had every query attended
 * uniformly: query i (0-based, i >= len - n_new) sees rows [0, i], so row r expects
 * sum over i >= max(r, len - n_new) of 1/(i+1). A decode step gives 1/len to every row. */
void kv_uniform_share(int64_t len, int64_t n_new, float *out);

/* ---- persistence counters over a history window (Scissorhands §4.1) -------------------------- */
/* Each row keeps the last 64*words observations as bits (1: unimportant), newest lowest. */
#define KV_HIST_MAX_WORDS 4
/* Shifts every row's history by one observation per head: bit = score[h*len + r] <
 * expect[r] * scale; the n_new new rows start from an empty history. */
void kv_hist_push(uint64_t *hist, int words, int64_t stride, int n_kv, int64_t len,
                  int64_t n_new, const float *score, const float *expect, float scale);
/* count [n_kv x len] = unimportant observations among each row's last `window` ones. */
void kv_hist_count(const uint64_t *hist, int words, int64_t stride, int n_kv, int64_t len,
                   int window, float *count);
/* kv_compact_* for rows of `words` 64-bit words. */
void kv_compact_u64(uint64_t *st, int words, int64_t stride, int n_kv, const int32_t *keep,
                    int64_t n_keep);

/* The n_keep rows of one head to keep by `cost` (lower kept), first `sink` and last `recent`
 * always kept, ties broken toward keeping the newer row (Scissorhands drops the older of two
 * equally unimportant tokens). keep ascending; returns n_keep clamped to len, -1 when out of
 * memory. */
int64_t kv_keep_lowest(const float *cost, int64_t len, int64_t n_keep, int64_t sink,
                       int64_t recent, int32_t *keep);

/* ---- binary head signatures and Hamming grouping (KVCrush §3) -------------------------------- */
#define KV_SIG_MAX_WORDS 4 /* up to 256 heads */
/* sig [len x words]: bit b of row r set when score[b*len + r] is among the top half (len / 2) of
 * row b of score [n_bits x len] (ties: the lower row). Returns 0, -1 when out of memory. */
int kv_head_signature(const float *score, int n_bits, int64_t len, int words, uint64_t *sig);

enum { KV_ANCHOR_RANDOM, KV_ANCHOR_MEAN, KV_ANCHOR_ALTERNATE, KV_ANCHOR_ZEROS, KV_ANCHOR_ONES };
/* The anchor a candidates' signatures are measured against: random bits (xorshift from *seed,
 * advanced), the candidates' majority bit per head (mean > 0.5), 0101..., all 0, all 1. */
void kv_anchor(int mode, const uint64_t *sig, int words, int n_bits, const int32_t *cand,
               int64_t nc, uint64_t *seed, uint64_t *anchor);
/* Sorts the candidates (row indices into sig) by Hamming distance to anchor (stable) and takes
 * k at the stride nc / k from the closest: one representative per bucket of similar head
 * behaviour. out ascending; returns k clamped to nc, -1 when out of memory. */
int64_t kv_hamming_pick(const uint64_t *sig, int words, const int32_t *cand, int64_t nc,
                        const uint64_t *anchor, int64_t k, int32_t *out);

/* ---- similarity merge ------------------------------------------------------------------------ */
/* For kv head h of keys [len x n_kv*hd]: for each src row, the dst row (an entry of dst) whose
 * key is most cosine-similar (ties: the earlier entry), and that similarity. Returns 0, or -1
 * when out of memory (nothing written). */
int kv_cos_nearest(const float *k, int n_kv, int hd, int h, const int32_t *src, int64_t ns,
                   const int32_t *dst, int64_t nd, int32_t *best, float *sim);

/* Folds sources into targets as weighted means, as kv_merge entries for head `head`:
 *   row t = (w_self[t] * row t + sum_i w[i] * row src_i) / den_t,
 *   den_t = w_self[t] + sum_i (count ? 1 : w[i])   over the sources i with tgt[i] == t.
 * count = 0 is a normalised weighted average (EMS); count = 1 with w_self = 1 is D2O's
 * scatter mean of similarity-weighted sources; every den_t must be > 0. w_self is indexed by
 * row; scratch holds len floats. Writes the n entries to out (a target's first entry rescales
 * it, the later ones only add) and returns n. */
int64_t kv_merge_weighted(int32_t head, const int32_t *src, const int32_t *tgt, const float *w,
                          int64_t n, const float *w_self, int count, int64_t len, float *scratch,
                          kv_merge *out);

/* Exponential moving average of a threshold: the first value is taken as is (D2O §3.3). */
static inline float kv_ema(float prev, int have, float x, float alpha, float beta)
{
    return have ? alpha * prev + beta * x : x;
}

/* ---- spec helpers ---------------------------------------------------------------------------- */
/* A word-valued key (e.g. anchor=mean): the index of its value in names[n], dflt when absent.
 * Marks the key used; fails naming the choices. */
plm_status kv_spec_choice(prune_spec *s, const char *key, const char *const *names, int n,
                          int dflt, int *out, plm_error *err);

#endif
