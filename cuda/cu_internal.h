/* Shared by the CUDA backend's files (cuda/ only): the backend struct, error recording, and the
 * launchers each file exports to backend_cuda.cu. Ops in plm_backend_ops return nothing, so a
 * failure is recorded in the backend (first one wins) and every later op is skipped: results
 * computed after a failed launch would be garbage, and CUDA's own errors are sticky anyway. */
#ifndef PLM_CUDA_CU_INTERNAL_H
#define PLM_CUDA_CU_INTERNAL_H

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

extern "C" {
#include "core/backend.h"
}

/* Host-to-device staging for ops whose small inputs arrive as host pointers (rope positions
 * and frequencies, embedding ids). Slots are reused round-robin; each slot's event says when the
 * copy out of it has run, so the host only waits on the copy made CU_STAGE_SLOTS ops ago. */
#define CU_STAGE_SLOTS 8

typedef struct cu_block { /* a block op_alloc handed out */
    void *p;
    size_t bytes;
} cu_block;

/* A device buffer that grows on demand (never shrinks until the backend is destroyed). */
typedef struct cu_buf {
    void *p;
    size_t cap;
} cu_buf;

/* Most activation rows a decode GEMV takes (cu_gemv.cu instantiates its kernels for 1..8);
 * matmuls with more run on cuBLASLt. */
#define CU_GEMV_MAX_ROWS 8

/* A cuBLASLt algorithm chosen for one matmul shape (cu_matmul.cu), so a repeated shape (a vision
 * tower has a few, 24 times each) skips the preference object and the heuristic query: host
 * time that a GEMM of a few microseconds on the GPU cannot hide. */
#define CU_LT_CACHE 64
typedef struct cu_lt_algo {
    int64_t m, n, k;
    int ab, bias;                 /* cudaDataType_t of W and x; bias epilogue */
    uint32_t al_a, al_b, al_c;    /* pointer alignments the heuristic was told */
    int state;                    /* 0 empty, 1 algo holds the choice, 2 Lt has none */
    cublasLtMatmulAlgo_t algo;
} cu_lt_algo;

/* A bf16 (or f16) copy of a float32 activation, written by the kernel that produced it
 * (norms, activations, SiLU gating) so the 16-bit GEMM that reads it next skips its rounding
 * pass: 2 bytes more written by the producer instead of 4 read + 2 written and a launch. The
 * values are the rounding pass's, bit for bit. A twin serves only the op right after the one
 * that made it, and only when no kernel ran in between: ops are the unit the model code
 * sequences, and cu_matmul runs first in every op that calls it, so the float32 rows cannot
 * have changed since. */
enum { CU_TWIN_NONE = 0, CU_TWIN_BF16 = 1, CU_TWIN_F16 = 2 };
typedef struct cu_twin {
    const float *of; /* the float32 rows it copies, or NULL: none */
    int64_t n;       /* elements */
    int kind;        /* CU_TWIN_BF16 or CU_TWIN_F16 */
    unsigned long long seq, launch; /* op_seq and n_launch when it was made */
} cu_twin;

typedef struct cu_backend {
    plm_backend base;
    int device;
    int sm_major, sm_minor;
    size_t smem_optin; /* largest dynamic shared memory a block may ask for */
    cudaStream_t stream;
    cublasLtHandle_t lt;
    cublasHandle_t blas; /* fallback when cuBLASLt has no algorithm for a shape */
    void *lt_ws;
    size_t lt_ws_bytes;
    int force_gemmex; /* PLM_CUDA_GEMM=gemmex: always take the cublasGemmEx path (testing) */
    long n_matmul, n_fallback, n_twin_used; /* for cu_test_hooks.h */
    cu_lt_algo lt_cache[CU_LT_CACHE];
    unsigned lt_next; /* the entry a new shape replaces once the cache is full */

    void *stage_host[CU_STAGE_SLOTS]; /* pinned */
    cudaEvent_t stage_done[CU_STAGE_SLOTS];
    size_t stage_cap; /* bytes per slot */
    unsigned stage_next;
    cu_buf stage_dev; /* where staged bytes land; reused in stream order */

    cu_buf conv; /* activations rounded to bf16/f16 for a matmul */
    cu_buf twin_buf; /* the twin (below) the last producing kernel wrote */
    cu_twin twin;
    int twin_want; /* CU_TWIN_BF16/F16: the 16-bit type the last rounded matmul needed */
    int twin_off;  /* PLM_CUDA_TWIN=0: producers write no twins (comparisons) */
    unsigned long long op_seq; /* backend ops entered so far */
    unsigned long long n_launch; /* kernels launched so far (cu_launched) */
    cu_buf tmp;  /* copy2d through a temporary when the ranges overlap */
    cu_buf stats; /* attn_probs: per (query, head) softmax max and normaliser */
    cu_buf decode_work; /* cu_attn_decode: the splits' partial softmax states */
    cu_buf decode_count; /* cu_attn_decode: splits done per block row (0 between calls) */
    int gemv;        /* PLM_CUDA_GEMV != 0: matmuls with m <= 8 and 16-bit weights use cu_gemv */
    int pdl;         /* programmatic dependent launch (sm_90+, PLM_CUDA_PDL != 0): see cu_pdl_* */
    int n_sm;        /* streaming multiprocessors: sizes the GEMV's persistent grid */
    int attn_decode; /* PLM_CUDA_ATTN_DECODE != 0: attention with tq <= 8 uses cu_attn_decode */
    int ad_waves;    /* cu_attn_decode's grid: at most this many waves of resident blocks */
    struct cu_prof *prof; /* the kernel profile (PLM_CUDA_PROFILE), or NULL */

    /* Recording a decode step (cu_graph.cu): while capturing, a failure marks the recording
     * bad instead of the backend failed (nothing ran; the caller runs the ops again), and
     * nothing may synchronise or stage. buf_epoch counts reallocations of the device buffers
     * above, which a recording holds pointers into. */
    int capturing, capture_bad;
    unsigned buf_epoch;

    int mixed; /* set_precision: 16-bit weights, attention may run in bf16 on tensor cores */
    int attn_fp32; /* PLM_CUDA_ATTN=fp32: never the tensor-core attention (comparisons) */
    int failed;
    char err[512];
    int alloc_failed;
    char alloc_err[256];

    /* mem_held: the blocks op_alloc handed out (release looks their sizes up here) and the
     * bytes of those and of the scratch buffers above, now and at most since a reset */
    cu_block *blocks;
    size_t n_blocks, cap_blocks;
    plm_mem_count mem;
} cu_backend;

/* Records the first failure (printf-style) and marks the backend failed. */
void cu_fail(cu_backend *b, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

int cu_check_rt(cu_backend *b, cudaError_t e, const char *expr, const char *file, int line);
int cu_check_blas(cu_backend *b, cublasStatus_t s, const char *expr, const char *file, int line);

/* Each returns 1 on success; on failure records where and why and returns 0. */
#define CU_OK(b, call) cu_check_rt((b), (call), #call, __FILE__, __LINE__)
#define CU_BLAS_OK(b, call) cu_check_blas((b), (call), #call, __FILE__, __LINE__)
/* After every kernel launch: catches bad configurations at once (and earlier async faults), and
 * marks the kernel's end for the profile (cu_profile.cu). kernel: a string literal. */
int cu_launched(cu_backend *b, const char *kernel, const char *file, int line);
#define CU_LAUNCHED(b, name) cu_launched((b), (name), __FILE__, __LINE__)

/* The kernel profile (PLM_CUDA_PROFILE=FILE, cu_profile.cu): start writes nothing yet (0 with
 * the failure recorded); mark records an event after the kernel just enqueued (name: a string
 * literal; nothing while recording a graph); finish writes FILE and frees the profile. */
int cu_prof_start(cu_backend *b, const char *path);
void cu_prof_mark(cu_backend *b, const char *name);
void cu_prof_finish(cu_backend *b);

/* Copies host bytes to dst (device) through pinned staging, in stream order; host may be reused
 * on return. Returns 1, or 0 with the failure recorded. */
int cu_upload_async(cu_backend *b, void *dst, const void *host, size_t bytes);
/* Grows buf to at least bytes (synchronising the stream before freeing the old one). */
int cu_buf_reserve(cu_backend *b, cu_buf *buf, size_t bytes, const char *what);
void cu_buf_free(cu_buf *buf);

/* Copies host bytes to b->stage_dev through pinned staging on the stream; returns the device
 * pointer (valid for ops enqueued before the next cu_stage call) or NULL on failure. */
void *cu_stage(cu_backend *b, const void *host, size_t bytes);
/* Stages two arrays in one copy (an op that needs both: a second cu_stage would overwrite the
 * first); the second lands 256-byte aligned. Returns 1 on success. */
int cu_stage_pair(cu_backend *b, const void *h1, size_t n1, const void *h2, size_t n2, void **d1,
                  void **d2);

/* Grid size for a grid-stride elementwise kernel of n items. */
static inline unsigned cu_grid(int64_t n, int threads)
{
    int64_t g = (n + threads - 1) / threads;
    if (g > 65535 * 16) g = 65535 * 16; /* grid-stride loops cover the rest */
    return (unsigned)(g < 1 ? 1 : g);
}

/* Programmatic dependent launch (Hopper): a kernel launched with cu_launch_pdl may start while
 * the kernel before it in the stream is still running, once every block of that kernel has
 * called cu_pdl_trigger (or exited). It must call cu_pdl_wait before it reads anything an
 * earlier op wrote or writes anything at all; before that it may only read constant data (the
 * GEMV streams its first weights there, hiding its ramp behind the small kernels before it).
 * cu_pdl_wait waits for the previous kernel to complete with its writes visible. Both are
 * no-ops for a kernel launched normally, and on GPUs before sm_90. */
__device__ static inline void cu_pdl_wait(void)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

/* Lets the next kernel, when launched with cu_launch_pdl, be scheduled early: called near the
 * start of the kernels that precede a GEMV in a decode step. */
__device__ static inline void cu_pdl_trigger(void)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::);
#endif
}

__device__ static inline uint32_t smem_addr(const void *p)
{
    return (uint32_t)__cvta_generic_to_shared(p);
}

/* Asynchronous copies global -> shared (cp.async, sm_80+): 16 or 8 bytes, or as many zero
 * bytes when !ok (src-size 0: nothing is read). A thread's copies become groups at
 * cp_async_commit; cp_async_wait<N> waits until at most N of its groups are in flight, after
 * which a barrier (__syncwarp, __syncthreads) shows the data to the other threads. */
__device__ static inline void cp_async16(void *dst, const void *src, bool ok)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)),
                 "l"(src), "r"(ok ? 16 : 0)
                 : "memory");
}
__device__ static inline void cp_async8(void *dst, const void *src, bool ok)
{
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(smem_addr(dst)),
                 "l"(src), "r"(ok ? 8 : 0)
                 : "memory");
}
__device__ static inline void cp_async_commit(void)
{
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N> __device__ static inline void cp_async_wait(void)
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
__device__ static inline void cp_async_wait_all(void) { cp_async_wait<0>(); }

/* Launches kernel<<<grid, block, smem, b->stream>>>(args...), with programmatic stream
 * serialization when b->pdl; returns 1, or 0 with the failure recorded. */
template <typename... KArgs, typename... Args>
static inline int cu_launch_pdl(cu_backend *b, const char *name, void (*kernel)(KArgs...),
                                dim3 grid, dim3 block, size_t smem, Args... args)
{
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = b->stream;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = at;
    cfg.numAttrs = b->pdl ? 1 : 0;
    cudaError_t e = cudaLaunchKernelEx(&cfg, kernel, args...);
    if (!cu_check_rt(b, e, name, __FILE__, __LINE__)) return 0;
    b->n_launch++;
    if (b->prof) cu_prof_mark(b, name);
    return 1;
}

/* ---- launchers (one file each) ---- */
void cu_matmul(cu_backend *b, float *y, const float *x, const plm_weight *w, const float *bias,
               int64_t m);
void cu_layernorm(cu_backend *b, float *y, const float *x, const float *g, const float *bias,
                  int64_t m, int64_t n, float eps);
void cu_add_layernorm(cu_backend *b, float *y, float *x, const float *h, const float *g,
                      const float *bias, int64_t m, int64_t n, float eps);
void cu_rmsnorm(cu_backend *b, float *y, const float *x, const float *g, int64_t m, int64_t n,
                float eps);
void cu_add(cu_backend *b, float *y, const float *a, const float *c, int64_t n);
void cu_add_row(cu_backend *b, float *y, const float *x, const float *row, int64_t m, int64_t n);
void cu_act(cu_backend *b, float *y, const float *x, int64_t n, plm_act act);
/* rows: of the n elements, or -1 when the op does not say (judges whether to write a twin) */
void cu_silu_mul(cu_backend *b, float *y, const float *gate, const float *up, int64_t rows,
                 int64_t n);
void cu_embed(cu_backend *b, float *y, const plm_weight *w, const int32_t *ids, int64_t n);
void cu_copy2d(cu_backend *b, float *dst, int64_t dst_stride, const float *src,
               int64_t src_stride, int64_t rows, int64_t cols);
void cu_patchify(cu_backend *b, float *out, const float *pixels, int channels, int size,
                 int patch);
void cu_rope(cu_backend *b, float *x, int64_t t, int64_t stride, int n_heads, int hd,
             const int32_t *pos, const float *inv_freq);
void cu_attention(cu_backend *b, const plm_attn_args *a);
/* The decode kernels (cu_gemv.cu, cu_attn_decode.cu): 1 when they took the op (done, or the
 * failure recorded), 0 when the shape is theirs not to take and the caller goes on. */
int cu_gemv(cu_backend *b, float *y, const float *x, const plm_weight *w, const float *bias,
            int64_t m);
int cu_attn_decode(cu_backend *b, const plm_attn_args *a);
/* The GEMV over several weights sharing x: y[i] = x w[i]^T (+ bias[i]), i < n <= 3, in one
 * launch (q, k, v); and the MLP's y = silu(x gate^T + gb) * (x up^T + ub) with the two rows of a
 * pair in one warp. 1 when taken; 0 (nothing enqueued) when some weight does not suit the
 * vector kernel and the caller composes cu_matmul calls instead. */
int cu_gemv_multi(cu_backend *b, int n, float *const *y, const float *x,
                  const plm_weight *const *w, const float *const *bias, int64_t m);
int cu_gemv_glu(cu_backend *b, float *y, const float *x, const plm_weight *gate,
                const float *gate_b, const plm_weight *up, const float *up_b, int64_t m);
/* x += h, y = rmsnorm(x) * g (cu_norm.cu); rope on q and k heads in one launch (cu_rope.cu). */
void cu_add_rmsnorm(cu_backend *b, float *y, float *x, const float *h, const float *g,
                    int64_t m, int64_t n, float eps);
void cu_rope_qk(cu_backend *b, float *q, int64_t q_stride, int n_q, float *k, int64_t k_stride,
                int n_k, int64_t t, int hd, const int32_t *pos, const float *inv_freq);
void cu_rope_append(cu_backend *b, const plm_rope_step *a);
/* The graph ops of the ops table (cu_graph.cu). */
int cu_op_graph_begin(plm_backend *be);
void *cu_op_graph_end(plm_backend *be);
int cu_op_graph_launch(plm_backend *be, void *graph, void *dev, const void *host, size_t bytes);
void cu_op_graph_free(plm_backend *be, void *graph);
/* The bf16 tensor-core attention (cu_attention_tc.cu): runs a and returns 1 when b->mixed and
 * the call suits it (dense, tq >= 16, head_dim 64 or 128, 16-byte aligned rows); else 0. */
int cu_attention_tc(cu_backend *b, const plm_attn_args *a);
void cu_attn_probs(cu_backend *b, const plm_attn_args *a, int per_head);
void cu_gather_heads(cu_backend *b, float *x, int64_t stride, int n_heads, int hd,
                     const int32_t *idx, int64_t n);
void cu_mix_rows(cu_backend *b, float *x, int64_t stride, int hd, const int32_t *head,
                 const int32_t *dst, const int32_t *src, const float *a, const float *bw,
                 int64_t n);
void cu_sum_rows(cu_backend *b, float *y, int64_t y_stride, const float *x, int64_t x_stride,
                 int64_t cols, const int64_t *off, const int32_t *src, const float *w, int64_t n);
/* Stages a merge list (head | dst | src | a | b, each n 4-byte words) in one copy: the device
 * block (valid as cu_stage's) or NULL, failure recorded with `what` in the message. */
char *cu_stage_merges(cu_backend *b, const int32_t *head, const int32_t *dst,
                      const int32_t *src, const float *a, const float *bw, int64_t n,
                      const char *what);
/* Converts n floats to bf16 (bf16 != 0) or f16 into dst (device), on b's stream. */
int cu_round_activations(cu_backend *b, void *dst, const float *src, int64_t n, int bf16);

/* Producers of twins (see cu_twin): cu_twin_begin returns where the kernel about to be launched
 * should write the twin of y (n elements in `rows` rows; rows < 0: unknown), and its kind, or
 * NULL when none is wanted (decode-sized rows, float32 weights, switched off, or no room while
 * recording); cu_twin_done, after the launch, makes it available. cu_twin_take returns the twin
 * of x when the current op may use it, else NULL. */
void *cu_twin_begin(cu_backend *b, const float *y, int64_t rows, int64_t n, int *kind);
void cu_twin_done(cu_backend *b);
const void *cu_twin_take(cu_backend *b, const float *x, int64_t n, int kind);

/* Writes element i of a twin (kind as cu_twin_begin gave it; tw NULL: nothing); cu_matmul.cu's
 * rounding pass writes through it too. f16 saturates rather than overflowing to inf: one large
 * activation would otherwise turn a whole output row into inf/NaN. */
__device__ static inline void cu_twin_store(void *tw, int kind, int64_t i, float v)
{
    if (!tw) return;
    if (kind == CU_TWIN_BF16) {
        ((__nv_bfloat16 *)tw)[i] = __float2bfloat16_rn(v);
    } else {
        if (v > 65504.0f) v = 65504.0f; /* NaN fails both tests and stays NaN: bugs show */
        else if (v < -65504.0f) v = -65504.0f;
        ((__half *)tw)[i] = __float2half_rn(v);
    }
}
/* The bitmap KV store's ops (cu_kv_bitmap.cu; Mustafar, prune/kv_bitmap.h). */
extern const plm_kv_bitmap_ops cu_kv_bitmap_ops;

#endif
