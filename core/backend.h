/* The ops table: everything model code (vision/, lm/) computes goes through it, so the CPU and
 * CUDA backends are interchangeable. Pointers passed to ops are device pointers of the backend
 * (host pointers for the CPU). Activations are float32; weights stay in their stored dtype
 * (F32, F16, BF16) and are widened inside matmul/embed. Ops are asynchronous on a device
 * backend: results are visible to the host after download(). */
#ifndef PLM_CORE_BACKEND_H
#define PLM_CORE_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/err.h"

/* A weight matrix [rows x cols] row-major (a PyTorch Linear weight is [out x in]). */
typedef struct plm_weight {
    plm_dtype dtype;
    int64_t rows, cols;
    const void *data;
} plm_weight;

typedef enum plm_act { PLM_ACT_GELU, PLM_ACT_GELU_TANH, PLM_ACT_QUICK_GELU, PLM_ACT_SILU,
                       PLM_ACT_RELU } plm_act;

typedef struct plm_backend plm_backend;

/* Attention over one sequence. q: [tq x n_heads x hd], k/v: [tk x n_kv x hd] (row strides in
 * floats given by q_stride / kv_stride), out: [tq x n_heads x hd] contiguous. Query i sits at
 * absolute position q_pos0 + i and sees keys 0..q_pos0+i when causal, all tk keys otherwise.
 * Heads share kv heads in groups of n_heads / n_kv (GQA). */
typedef struct plm_attn_args {
    float *out;
    const float *q, *k, *v;
    int64_t tq, tk, q_stride, kv_stride, q_pos0;
    int n_heads, n_kv, head_dim, causal;
    float scale;
    /* Sparse attention (KV policies; zero/NULL for dense). rows (device, [n_kv x n_rows],
     * ascending): each kv head's queries see only these key rows, all of them (causal is not
     * applied: the decode case). bias (device, [n_heads x tk]): added to the scaled logits of key
     * row j for head h (attention steering). attn_probs ignores both. */
    const int32_t *rows;
    int64_t n_rows;
    const float *bias;
    /* A recorded decode step (graph_begin; NULL otherwise): q_pos0 read from this device int
     * when the step runs, with tk = that + tq; q_pos0 and tk then only bound it. Dense, causal
     * and tq <= 8 only. Backends without graph ops never see it. */
    const int32_t *q_pos0_dev;
} plm_attn_args;

/* A decode step's RoPE and KV append with the values that change from step to step in device
 * memory, so that a recorded step replays unchanged (rope_append): rope_qk() on q [n_q heads]
 * and k_new [n_k heads] at position *pos with inv_freq (hd / 2), then the rotated k_new and
 * v_new stored as row *row of k_cache and v_cache (rows of n_k * hd floats). */
typedef struct plm_rope_step {
    float *q;
    const float *k_new, *v_new;
    float *k_cache, *v_cache;
    int n_q, n_k, hd;
    const int32_t *pos, *row;
    const float *inv_freq;
} plm_rope_step;

/* Mustafar's bitmap-compressed KV rows (prune/kv_bitmap.h: the layout, its sizes and how to
 * drive it). For kv head h and row r, K's kept channels are a head_dim-bit bitmap (`words`
 * uint64; bit d % 64 of word d / 64 = channel d) and the kept values packed in channel order
 * into a fixed slot of k_slots floats (exactly k_keep used, the rest 0); V alike. Pointers are
 * the backend's; the struct itself is host memory. */
typedef struct plm_kv_bitmap {
    int n_kv, head_dim, words;
    int k_keep, v_keep;         /* values kept per row and kv head */
    int k_slots, v_slots;       /* floats per packed row: keep rounded up to 4 (16-byte rows) */
    int64_t cap;                /* rows per kv head the store holds */
    int64_t n_rows;             /* rows [0, n_rows) of every kv head are compressed */
    uint64_t *k_bits, *v_bits;  /* [n_kv x cap x words] */
    float *k_vals, *v_vals;     /* [n_kv x cap x k_slots], [n_kv x cap x v_slots] */
    float *work;                /* split-K scratch for attend (may be shared; NULL: no split) */
    int64_t work_floats;
} plm_kv_bitmap;

/* The two ops of the bitmap store (the ops table's kv_bitmap member). */
typedef struct plm_kv_bitmap_ops {
    /* Compresses rows [r0, r1) of the dense cache k, v ([rows x kv_stride], kv head h at column
     * h * head_dim) into kb: each row keeps its k_keep (v_keep) largest-magnitude values, ties
     * to the lower channel. */
    void (*compress)(plm_backend *be, const plm_kv_bitmap *kb, const float *k, const float *v,
                     int64_t kv_stride, int64_t r0, int64_t r1);
    /* attention() with key/value rows [0, kb->n_rows) read from kb and rows [kb->n_rows, tk)
     * from a->k / a->v (their rows below n_rows are never read). Sparse fields: unsupported. */
    void (*attend)(plm_backend *be, const plm_attn_args *a, const plm_kv_bitmap *kb);
} plm_kv_bitmap_ops;

/* The thin-key (ThinK) and int4 (KIVI) KV stores' op tables, defined with their stores in
 * core/backend_kvstore.h. */
typedef struct plm_kv_thin_ops plm_kv_thin_ops;
typedef struct plm_kv_int4_ops plm_kv_int4_ops;

typedef struct plm_backend_ops {
    const char *name;
    /* 1 when device pointers are host pointers: weights are then used in place (mmapped);
     * otherwise every weight matrix is uploaded once at load. */
    int host_memory;
    void (*destroy)(plm_backend *be);
    /* memory */
    void *(*alloc)(plm_backend *be, size_t bytes);
    void (*release)(plm_backend *be, void *p);
    void (*upload)(plm_backend *be, void *dst, const void *src, size_t bytes);
    void (*download)(plm_backend *be, void *dst, const void *src, size_t bytes);
    /* y[m x w.rows] = x[m x w.cols] * w^T (+ bias[w.rows] when non-NULL) */
    void (*matmul)(plm_backend *be, float *y, const float *x, const plm_weight *w,
                   const float *bias, int64_t m);
    /* y[m x n] = layernorm(x) * g + b, row-wise */
    void (*layernorm)(plm_backend *be, float *y, const float *x, const float *g, const float *b,
                      int64_t m, int64_t n, float eps);
    /* y[m x n] = x * rsqrt(mean(x^2) + eps) * g, row-wise */
    void (*rmsnorm)(plm_backend *be, float *y, const float *x, const float *g, int64_t m,
                    int64_t n, float eps);
    void (*add)(plm_backend *be, float *y, const float *a, const float *b, int64_t n);
    /* y[m x n] = x + row (the same row vector added to every row) */
    void (*add_row)(plm_backend *be, float *y, const float *x, const float *row, int64_t m,
                    int64_t n);
    void (*act)(plm_backend *be, float *y, const float *x, int64_t n, plm_act act);
    /* y = silu(gate) * up */
    void (*silu_mul)(plm_backend *be, float *y, const float *gate, const float *up, int64_t n);
    /* Rotates x[t x n_heads x hd] (row stride `stride` floats) in place by position pos[i] with
     * the rotate-half convention; inv_freq has hd/2 entries. */
    void (*rope)(plm_backend *be, float *x, int64_t t, int64_t stride, int n_heads, int hd,
                 const int32_t *pos, const float *inv_freq);
    void (*attention)(plm_backend *be, const plm_attn_args *a);
    /* The attention probabilities the queries of `a` give each key, without the values:
     * a->out (room for n_heads x tk floats either way) receives [n_heads x tk] (per_head) or
     * [tk] in its first row, each the mean over the tq queries (and over heads unless
     * per_head) of softmax(scale * q.k) over the keys that query sees.
     * This is what score providers read (CLS attention, last-token attention, column sums). */
    void (*attn_probs)(plm_backend *be, const plm_attn_args *a, int per_head);
    /* y[n x w.cols] = rows ids[] of the table w (ids already validated) */
    void (*embed)(plm_backend *be, float *y, const plm_weight *w, const int32_t *ids, int64_t n);
    /* Copies a [rows x cols] block between device buffers with the given row strides. */
    void (*copy2d)(plm_backend *be, float *dst, int64_t dst_stride, const float *src,
                   int64_t src_stride, int64_t rows, int64_t cols);
    /* out[(py*g + px) x c*p*p] = the patch at (py, px) of pixels[c x g*p x g*p], flattened in
     * (channel, row, column) order like a conv weight, with g = size / p. */
    void (*patchify)(plm_backend *be, float *out, const float *pixels, int channels, int size,
                     int patch);
    /* In place, for each of n_heads column blocks of hd floats in x [.. x stride]: row i of the
     * block = row idx[h*n + i] (host, ascending per head) for i < n. Compacts the KV cache
     * per kv head. */
    void (*gather_heads)(plm_backend *be, float *x, int64_t stride, int n_heads, int hd,
                         const int32_t *idx, int64_t n);
    /* In order, for m = 0..n-1: row dst[m] of head block head[m] = a[m] * that row + b[m] * row
     * src[m] of the same block (host arrays). Folds evicted KV rows into kept ones. */
    void (*mix_rows)(plm_backend *be, float *x, int64_t stride, int hd, const int32_t *head,
                     const int32_t *dst, const int32_t *src, const float *a, const float *b,
                     int64_t n);
    /* Row r of y [n x cols, y_stride] = the sum over j in [off[r], off[r+1]) of w[j] * row
     * src[j] of x [.. x cols, x_stride] (host arrays; y and x do not overlap). A gather (one
     * source of weight 1: an exact copy) and weighted merges in one pass: the visual
     * recycling's output rows without a round trip through the host. */
    void (*sum_rows)(plm_backend *be, float *y, int64_t y_stride, const float *x,
                     int64_t x_stride, int64_t cols, const int64_t *off, const int32_t *src,
                     const float *w, int64_t n);
    /* ---- optional: NULL where a backend has none (the CPU backend); check before calling ---- */
    /* Why the last alloc() returned NULL, with the device's free/total memory, e.g.
     * "cudaMalloc of 1024 MiB on GPU 0 failed: out of memory (free 312 MiB of 81079 MiB)";
     * NULL when the last alloc() succeeded. The string lives until the next alloc(). */
    const char *(*alloc_error)(plm_backend *be);
    /* NULL while every op has run; else the first failure ("attention: head_dim 1024 is
     * outside the CUDA kernel's 1..512", a CUDA or cuBLAS error). Sticky: once an op failed, later ops do
     * nothing and download() fills its destination with 0xff bytes (NaN as floats), so a caller
     * may check once, after download(). */
    const char *(*error)(plm_backend *be);
    /* Free and total device memory in bytes; returns 0 on success, -1 when unknown. */
    int (*mem_info)(plm_backend *be, size_t *free_bytes, size_t *total_bytes);
    /* Optional: the bytes alloc() has handed out and not yet released, now and at most since
     * the last call with reset = 1 (which then starts the peak over from now). Unlike
     * mem_info this counts what the engine asked for, not what the driver or allocator keeps;
     * a session resets it per request for plm_timings.peak_bytes. */
    void (*mem_held)(plm_backend *be, int reset, size_t *now, size_t *peak);
    /* mixed = 1: the model's weights are 16-bit, so attention may compute in bf16 on tensor
     * cores (float32 accumulation and softmax statistics), as the matrix products already do;
     * 0 (the default): attention stays float32, exact to the CPU within float rounding. */
    void (*set_precision)(plm_backend *be, int mixed);
    /* ---- optional: fused decoder ops (issue 4: fewer, bigger launches per decode step) ----
     * Each equals the composition of the ops above named in its comment, within float
     * rounding; NULL (the CPU backend): lm/llama.c composes them itself. */
    /* y[i][m x w[i]->rows] = x[m x cols] * w[i]^T (+ bias[i] when non-NULL), i < n (1..3):
     * matmul() for several projections of one input (q, k, v) in one pass. The weights share
     * dtype and cols. */
    void (*matmul_multi)(plm_backend *be, int n, float *const *y, const float *x,
                         const plm_weight *const *w, const float *const *bias, int64_t m);
    /* y[m x gate->rows] = silu(x * gate^T + gate_b) * (x * up^T + up_b) (NULL bias: none):
     * matmul(gate), matmul(up), silu_mul, with the MLP's intermediate written once. tmp
     * ([m x up->rows] floats) is scratch the op may overwrite where it does not fuse. */
    void (*matmul_glu)(plm_backend *be, float *y, float *tmp, const float *x,
                       const plm_weight *gate, const float *gate_b, const plm_weight *up,
                       const float *up_b, int64_t m);
    /* x[m x n] += h, then y = rmsnorm(x) * g (add, rmsnorm): a residual and the next norm.
     * y may be h. */
    void (*add_rmsnorm)(plm_backend *be, float *y, float *x, const float *h, const float *g,
                        int64_t m, int64_t n, float eps);
    /* x[m x n] += h, then y = layernorm(x) * g + b (add, layernorm; b may be NULL): the vision
     * tower's residual and the next norm. y may be h. */
    void (*add_layernorm)(plm_backend *be, float *y, float *x, const float *h, const float *g,
                          const float *b, int64_t m, int64_t n, float eps);
    /* rope() on q [t x n_q heads] and on k [t x n_k heads] with the same positions. */
    void (*rope_qk)(plm_backend *be, float *q, int64_t q_stride, int n_q, float *k,
                    int64_t k_stride, int n_k, int64_t t, int hd, const int32_t *pos,
                    const float *inv_freq);
    /* Decode steps recorded once and replayed (CUDA graphs), all five or none. graph_begin
     * starts recording the ops then called on be instead of running them (0: it cannot, nothing
     * changed). graph_end stops and returns the recording, or NULL when some op could not be
     * recorded: then none of the ops since graph_begin ran. graph_launch copies bytes from host
     * (reusable on return) to dev, then runs the recording, in stream order; 0 (nothing done)
     * when buffers the backend owns have moved since it was recorded: record it again.
     * rope_append is rope_qk for a recorded step (plm_rope_step). */
    int (*graph_begin)(plm_backend *be);
    void *(*graph_end)(plm_backend *be);
    int (*graph_launch)(plm_backend *be, void *graph, void *dev, const void *host, size_t bytes);
    void (*graph_free)(plm_backend *be, void *graph);
    void (*rope_append)(plm_backend *be, const plm_rope_step *a);
    /* ---- end of the fused decoder ops ---- */
    /* Block-sparse causal prefill (FlexPrefill, prune/kv_blocks.h): attention() computing only
     * the (query block, key block) tiles whose byte in mask (device, [n_heads x ceil(tq/block) x
     * ceil(tk/block)]) is non-zero. Query i (at q_pos0 + i) is in query block i / block, counted
     * from the call's first query; key j is in key block j / block, by absolute key index.
     * Masked tiles are never read; a query left with no key is zero. rows/bias: unsupported. */
    void (*attention_blocks)(plm_backend *be, const plm_attn_args *a, const uint8_t *mask,
                             int block);
    /* DeltaLLM (prune/kv_deltallm.c): causal attention() where query i scores the `window` most
     * recent keys it sees (q_pos0 + i - j < window) with its own row and every older key with
     * its delta-tracked row: per element, ref = q_i where |q_i - ref| > theta, else ref stays;
     * q_ref (device, [tq x n_heads x hd]) receives each query's ref. state (device,
     * [n_heads x hd]) carries ref between calls: fill it with +inf before a sequence's first
     * call. rows/bias: unsupported. */
    void (*attention_delta)(plm_backend *be, const plm_attn_args *a, float *state, float *q_ref,
                            int64_t window, float theta);
    /* Mustafar's bitmap-compressed KV store (prune/kv_bitmap.h): compress and attend. */
    const plm_kv_bitmap_ops *kv_bitmap;
    /* ---- KV stores of issue 7 (core/backend_kvstore.h; optional, NULL where absent) ---- */
    /* ThinK's thin-key store: keys of old rows hold only their kept channels. */
    const plm_kv_thin_ops *kv_thin;
    /* KIVI-style int4 store: old rows' keys per channel, values per token, 4 bits each. */
    const plm_kv_int4_ops *kv_int4;
} plm_backend_ops;

struct plm_backend {
    const plm_backend_ops *ops;
};

/* The bytes a backend's blocks hold, now and at most since a reset: what mem_held reports. */
typedef struct plm_mem_count {
    size_t held, peak;
} plm_mem_count;

/* held += bytes (negative: given back), raising the peak with it */
static inline void plm_mem_count_add(plm_mem_count *c, long long bytes)
{
    c->held = (size_t)((long long)c->held + bytes);
    if (c->held > c->peak) c->peak = c->held;
}

/* mem_held's answer from a count; reset starts the peak over from what is held */
static inline void plm_mem_count_report(plm_mem_count *c, int reset, size_t *now, size_t *peak)
{
    if (reset) c->peak = c->held;
    if (now) *now = c->held;
    if (peak) *peak = c->peak;
}

/* CPU backend with its own thread pool (n_threads <= 0: all cores). */
plm_status plm_backend_cpu_new(int n_threads, plm_backend **out, plm_error *err);
/* The CPU backend's kv_bitmap ops (core/backend_cpu_bitmap.c). */
extern const plm_kv_bitmap_ops plm_cpu_kv_bitmap_ops;

/* CUDA backend on one GPU (cuda/): present when built with PLM_CUDA. plm_cuda_available()
 * says whether this build has it and a usable GPU is there (filling why when not). */
int plm_cuda_available(char *why, size_t why_len);
plm_status plm_backend_cuda_new(int device, plm_backend **out, plm_error *err);
static inline void plm_backend_free(plm_backend *be)
{
    if (be) be->ops->destroy(be);
}

/* y[i] = x * w[i]^T + bias[i] for i < n (q, k and v of one input): one matmul_multi where the
 * backend has it, else n matmuls in order. */
static inline void plm_matmul_n(plm_backend *be, int n, float *const *y, const float *x,
                                const plm_weight *const *w, const float *const *bias, int64_t m)
{
    if (be->ops->matmul_multi) {
        be->ops->matmul_multi(be, n, y, x, w, bias, m);
        return;
    }
    for (int i = 0; i < n; i++) be->ops->matmul(be, y[i], x, w[i], bias[i], m);
}

#endif
