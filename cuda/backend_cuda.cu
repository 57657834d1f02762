/* The CUDA backend: one GPU, one stream, one cuBLASLt handle and workspace per instance. This file
 * owns the backend's life (creation, memory, host<->device copies, staging, error recording)
 * and the ops table; the kernels live in cu_*.cu beside it, each tested against the CPU backend
 * by tests/gpu/test_cuda_ops.c and test_cuda_decode.c. Device pointers from one instance are
 * valid in every instance on the same GPU (one primary context per process), so a model's
 * weights uploaded through one instance serve the sessions' instances: upload() therefore
 * returns only once the copy is done. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cu_internal.h"
#include "cuda/cu_kvstore.h"
#include "cuda/cu_sparse.h"

/* cuBLASLt's advice for Hopper: 32 MiB lets it pick its fastest kernels. */
#define CU_LT_WORKSPACE (32u << 20)
#define CU_STAGE_MIN (64u << 10)

void cu_fail(cu_backend *b, const char *fmt, ...)
{
    if (b->capturing) { /* nothing ran: the step runs again unrecorded and fails there */
        b->capture_bad = 1;
        return;
    }
    if (b->failed) return;
    b->failed = 1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->err, sizeof b->err, fmt, ap);
    va_end(ap);
}

int cu_check_rt(cu_backend *b, cudaError_t e, const char *expr, const char *file, int line)
{
    if (e == cudaSuccess) return 1;
    if (b->capturing) { /* e.g. a launch the capture cannot take: not the backend's failure */
        (void)cudaGetLastError();
        b->capture_bad = 1;
        return 0;
    }
    const char *f = strrchr(file, '/');
    cu_fail(b, "CUDA error on GPU %d at %s:%d (%s): %s (%s)", b->device, f ? f + 1 : file, line,
            expr, cudaGetErrorString(e), cudaGetErrorName(e));
    return 0;
}

int cu_check_blas(cu_backend *b, cublasStatus_t s, const char *expr, const char *file, int line)
{
    if (s == CUBLAS_STATUS_SUCCESS) return 1;
    const char *f = strrchr(file, '/');
    cu_fail(b, "cuBLAS error on GPU %d at %s:%d (%s): %s", b->device, f ? f + 1 : file, line,
            expr, cublasGetStatusString(s));
    return 0;
}

int cu_buf_reserve(cu_backend *b, cu_buf *buf, size_t bytes, const char *what)
{
    if (bytes <= buf->cap) return 1;
    if (b->capturing) { /* it would synchronise the stream; the step runs again unrecorded */
        b->capture_bad = 1;
        return 0;
    }
    b->buf_epoch++;
    size_t cap = buf->cap ? buf->cap : 4096;
    while (cap < bytes) cap *= 2;
    /* The old buffer may still be read by queued work. */
    if (!CU_OK(b, cudaStreamSynchronize(b->stream))) return 0;
    if (buf->p && !CU_OK(b, cudaFree(buf->p))) return 0;
    plm_mem_count_add(&b->mem, -(long long)buf->cap);
    buf->p = NULL;
    buf->cap = 0;
    cudaError_t e = cudaMalloc(&buf->p, cap);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        buf->p = NULL;
        cu_fail(b, "out of device memory for the %s scratch buffer (%zu bytes): %s", what, cap,
                cudaGetErrorString(e));
        return 0;
    }
    buf->cap = cap;
    plm_mem_count_add(&b->mem, (long long)cap);
    return 1;
}

void cu_buf_free(cu_buf *buf)
{
    if (buf->p) cudaFree(buf->p);
    buf->p = NULL;
    buf->cap = 0;
}

static void stage_free(cu_backend *b)
{
    for (int i = 0; i < CU_STAGE_SLOTS; i++) {
        if (b->stage_host[i]) cudaFreeHost(b->stage_host[i]);
        b->stage_host[i] = NULL;
    }
    b->stage_cap = 0;
}

static int stage_grow(cu_backend *b, size_t bytes)
{
    size_t cap = b->stage_cap ? b->stage_cap : CU_STAGE_MIN;
    while (cap < bytes) cap *= 2;
    if (!CU_OK(b, cudaStreamSynchronize(b->stream))) return 0;
    stage_free(b);
    for (int i = 0; i < CU_STAGE_SLOTS; i++)
        if (!CU_OK(b, cudaHostAlloc(&b->stage_host[i], cap, cudaHostAllocDefault))) {
            stage_free(b);
            return 0;
        }
    b->stage_cap = cap;
    return 1;
}

static size_t align256(size_t n)
{
    return (n + 255) & ~(size_t)255;
}

/* Stages up to two host arrays in one copy (an op reads both; a second call would overwrite
 * the first in stage_dev). */
static int stage2(cu_backend *b, const void *h1, size_t n1, const void *h2, size_t n2, void **d1,
                  void **d2)
{
    if (b->capturing) { /* a recording would copy whatever the slot holds when replayed */
        b->capture_bad = 1;
        return 0;
    }
    size_t off2 = align256(n1), total = off2 + n2;
    if (total > b->stage_cap && !stage_grow(b, total)) return 0;
    if (!cu_buf_reserve(b, &b->stage_dev, total, "staging")) return 0;
    unsigned s = b->stage_next++ % CU_STAGE_SLOTS;
    /* Wait for the copy that last read this slot (CU_STAGE_SLOTS ops ago) before refilling it. */
    if (!CU_OK(b, cudaEventSynchronize(b->stage_done[s]))) return 0;
    char *h = (char *)b->stage_host[s];
    if (n1) memcpy(h, h1, n1);
    if (n2) memcpy(h + off2, h2, n2);
    if (!CU_OK(b, cudaMemcpyAsync(b->stage_dev.p, h, total, cudaMemcpyHostToDevice, b->stream)))
        return 0;
    if (!CU_OK(b, cudaEventRecord(b->stage_done[s], b->stream))) return 0;
    *d1 = b->stage_dev.p;
    if (d2) *d2 = (char *)b->stage_dev.p + off2;
    return 1;
}

int cu_upload_async(cu_backend *b, void *dst, const void *host, size_t bytes)
{
    if (!bytes) return 1;
    if (bytes > b->stage_cap && !stage_grow(b, bytes)) return 0;
    unsigned s = b->stage_next++ % CU_STAGE_SLOTS;
    if (!CU_OK(b, cudaEventSynchronize(b->stage_done[s]))) return 0;
    memcpy(b->stage_host[s], host, bytes);
    return CU_OK(b, cudaMemcpyAsync(dst, b->stage_host[s], bytes, cudaMemcpyHostToDevice,
                                    b->stream)) &&
           CU_OK(b, cudaEventRecord(b->stage_done[s], b->stream));
}

void *cu_stage(cu_backend *b, const void *host, size_t bytes)
{
    void *d = NULL;
    return stage2(b, host, bytes, NULL, 0, &d, NULL) ? d : NULL;
}

int cu_stage_pair(cu_backend *b, const void *h1, size_t n1, const void *h2, size_t n2, void **d1,
                  void **d2)
{
    return stage2(b, h1, n1, h2, n2, d1, d2);
}

/* Every op starts here: skip work on a failed backend, and make this backend's GPU current
 * (several instances may live on different GPUs in one thread). */
static cu_backend *enter(plm_backend *be)
{
    cu_backend *b = (cu_backend *)be;
    if (b->failed) return NULL;
    if (!CU_OK(b, cudaSetDevice(b->device))) return NULL;
    b->op_seq++; /* a twin serves the next op only (cu_twin) */
    return b;
}

/* ---- memory ---- */

static void *op_alloc(plm_backend *be, size_t bytes)
{
    cu_backend *b = (cu_backend *)be;
    b->alloc_failed = 0;
    b->alloc_err[0] = 0;
    void *p = NULL;
    cudaError_t e = cudaSetDevice(b->device);
    if (e == cudaSuccess) e = cudaMalloc(&p, bytes ? bytes : 1);
    if (e == cudaSuccess) {
        if (b->n_blocks == b->cap_blocks) { /* a block not recorded is simply not counted */
            size_t cap = b->cap_blocks ? 2 * b->cap_blocks : 256;
            cu_block *nb = (cu_block *)realloc(b->blocks, cap * sizeof *nb);
            if (!nb) return p;
            b->blocks = nb;
            b->cap_blocks = cap;
        }
        b->blocks[b->n_blocks].p = p;
        b->blocks[b->n_blocks++].bytes = bytes;
        plm_mem_count_add(&b->mem, (long long)bytes);
        return p;
    }
    (void)cudaGetLastError(); /* an allocation failure is not sticky: clear it for later checks */
    size_t fr = 0, tot = 0;
    if (cudaMemGetInfo(&fr, &tot) == cudaSuccess)
        snprintf(b->alloc_err, sizeof b->alloc_err,
                 "cudaMalloc of %zu bytes (%.1f MiB) on GPU %d failed: %s (free %.1f MiB of "
                 "%.1f MiB)", bytes, bytes / 1048576.0, b->device, cudaGetErrorString(e),
                 fr / 1048576.0, tot / 1048576.0);
    else
        snprintf(b->alloc_err, sizeof b->alloc_err, "cudaMalloc of %zu bytes on GPU %d failed: %s",
                 bytes, b->device, cudaGetErrorString(e));
    (void)cudaGetLastError();
    b->alloc_failed = 1;
    return NULL;
}

static void op_release(plm_backend *be, void *p)
{
    cu_backend *b = (cu_backend *)be;
    if (!p) return;
    /* cudaFree waits for the device, so queued work reading p finishes first. */
    cudaError_t e = cudaSetDevice(b->device);
    if (e == cudaSuccess) e = cudaFree(p);
    if (e != cudaSuccess && !b->failed) cu_check_rt(b, e, "cudaFree", __FILE__, __LINE__);
    for (size_t i = b->n_blocks; i-- > 0;) /* the newest first: scratch comes and goes */
        if (b->blocks[i].p == p) {
            plm_mem_count_add(&b->mem, -(long long)b->blocks[i].bytes);
            b->blocks[i] = b->blocks[--b->n_blocks];
            break;
        }
}

static void op_mem_held(plm_backend *be, int reset, size_t *now, size_t *peak)
{
    plm_mem_count_report(&((cu_backend *)be)->mem, reset, now, peak);
}

static void op_upload(plm_backend *be, void *dst, const void *src, size_t bytes)
{
    cu_backend *b = enter(be);
    if (!b || !bytes) return;
    /* Synchronous on purpose: callers free src at once (core/weights.c), and weights uploaded
     * here are read by other instances' streams. */
    if (!CU_OK(b, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, b->stream))) return;
    CU_OK(b, cudaStreamSynchronize(b->stream));
}

static void op_download(plm_backend *be, void *dst, const void *src, size_t bytes)
{
    cu_backend *b = enter(be);
    if (b && bytes) {
        if (CU_OK(b, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, b->stream)) &&
            CU_OK(b, cudaStreamSynchronize(b->stream)))
            return;
    }
    /* A failed backend hands back NaNs rather than stale or half-computed numbers. */
    if (bytes) memset(dst, 0xff, bytes);
}

static const char *op_alloc_error(plm_backend *be)
{
    cu_backend *b = (cu_backend *)be;
    return b->alloc_failed ? b->alloc_err : NULL;
}

static const char *op_error(plm_backend *be)
{
    cu_backend *b = (cu_backend *)be;
    return b->failed ? b->err : NULL;
}

static int op_mem_info(plm_backend *be, size_t *free_bytes, size_t *total_bytes)
{
    cu_backend *b = (cu_backend *)be;
    if (cudaSetDevice(b->device) != cudaSuccess ||
        cudaMemGetInfo(free_bytes, total_bytes) != cudaSuccess) {
        (void)cudaGetLastError();
        return -1;
    }
    return 0;
}

/* ---- ops: thin wrappers so every launcher runs on a live backend with its GPU current ---- */

static void op_matmul(plm_backend *be, float *y, const float *x, const plm_weight *w,
                      const float *bias, int64_t m)
{
    cu_backend *b = enter(be);
    if (b) cu_matmul(b, y, x, w, bias, m);
}

static void op_layernorm(plm_backend *be, float *y, const float *x, const float *g,
                         const float *bias, int64_t m, int64_t n, float eps)
{
    cu_backend *b = enter(be);
    if (b) cu_layernorm(b, y, x, g, bias, m, n, eps);
}

static void op_rmsnorm(plm_backend *be, float *y, const float *x, const float *g, int64_t m,
                       int64_t n, float eps)
{
    cu_backend *b = enter(be);
    if (b) cu_rmsnorm(b, y, x, g, m, n, eps);
}

static void op_add(plm_backend *be, float *y, const float *a, const float *c, int64_t n)
{
    cu_backend *b = enter(be);
    if (b) cu_add(b, y, a, c, n);
}

static void op_add_row(plm_backend *be, float *y, const float *x, const float *row, int64_t m,
                       int64_t n)
{
    cu_backend *b = enter(be);
    if (b) cu_add_row(b, y, x, row, m, n);
}

static void op_act(plm_backend *be, float *y, const float *x, int64_t n, plm_act act)
{
    cu_backend *b = enter(be);
    if (b) cu_act(b, y, x, n, act);
}

static void op_silu_mul(plm_backend *be, float *y, const float *gate, const float *up, int64_t n)
{
    cu_backend *b = enter(be);
    if (b) cu_silu_mul(b, y, gate, up, -1, n);
}

static void op_rope(plm_backend *be, float *x, int64_t t, int64_t stride, int n_heads, int hd,
                    const int32_t *pos, const float *inv_freq)
{
    cu_backend *b = enter(be);
    if (b) cu_rope(b, x, t, stride, n_heads, hd, pos, inv_freq);
}

static void op_attention(plm_backend *be, const plm_attn_args *a)
{
    cu_backend *b = enter(be);
    if (b) cu_attention(b, a);
}

static void op_attn_probs(plm_backend *be, const plm_attn_args *a, int per_head)
{
    cu_backend *b = enter(be);
    if (b) cu_attn_probs(b, a, per_head);
}

static void op_embed(plm_backend *be, float *y, const plm_weight *w, const int32_t *ids,
                     int64_t n)
{
    cu_backend *b = enter(be);
    if (b) cu_embed(b, y, w, ids, n);
}

static void op_copy2d(plm_backend *be, float *dst, int64_t dst_stride, const float *src,
                      int64_t src_stride, int64_t rows, int64_t cols)
{
    cu_backend *b = enter(be);
    if (b) cu_copy2d(b, dst, dst_stride, src, src_stride, rows, cols);
}

static void op_patchify(plm_backend *be, float *out, const float *pixels, int channels, int size,
                        int patch)
{
    cu_backend *b = enter(be);
    if (b) cu_patchify(b, out, pixels, channels, size, patch);
}

static void op_gather_heads(plm_backend *be, float *x, int64_t stride, int n_heads, int hd,
                            const int32_t *idx, int64_t n)
{
    cu_backend *b = enter(be);
    if (b) cu_gather_heads(b, x, stride, n_heads, hd, idx, n);
}

static void op_mix_rows(plm_backend *be, float *x, int64_t stride, int hd, const int32_t *head,
                        const int32_t *dst, const int32_t *src, const float *a, const float *bw,
                        int64_t n)
{
    cu_backend *b = enter(be);
    if (b) cu_mix_rows(b, x, stride, hd, head, dst, src, a, bw, n);
}

static void op_sum_rows(plm_backend *be, float *y, int64_t y_stride, const float *x,
                        int64_t x_stride, int64_t cols, const int64_t *off, const int32_t *src,
                        const float *w, int64_t n)
{
    cu_backend *b = enter(be);
    if (b) cu_sum_rows(b, y, y_stride, x, x_stride, cols, off, src, w, n);
}

/* ---- fused decoder ops: the decode kernels where they apply, else the ops they fuse ---- */

static bool gemv_on(const cu_backend *b, int64_t m)
{
    return m >= 1 && m <= CU_GEMV_MAX_ROWS && b->gemv && !b->force_gemmex;
}

static void op_matmul_multi(plm_backend *be, int n, float *const *y, const float *x,
                            const plm_weight *const *w, const float *const *bias, int64_t m)
{
    cu_backend *b = enter(be);
    if (!b || (gemv_on(b, m) && cu_gemv_multi(b, n, y, x, w, bias, m))) return;
    for (int i = 0; i < n; i++) cu_matmul(b, y[i], x, w[i], bias[i], m);
}

static void op_matmul_glu(plm_backend *be, float *y, float *tmp, const float *x,
                          const plm_weight *gate, const float *gate_b, const plm_weight *up,
                          const float *up_b, int64_t m)
{
    cu_backend *b = enter(be);
    if (!b || (gemv_on(b, m) && cu_gemv_glu(b, y, x, gate, gate_b, up, up_b, m))) return;
    cu_matmul(b, y, x, gate, gate_b, m);
    cu_matmul(b, tmp, x, up, up_b, m);
    cu_silu_mul(b, y, y, tmp, m, m * gate->rows);
}

static void op_add_rmsnorm(plm_backend *be, float *y, float *x, const float *h, const float *g,
                           int64_t m, int64_t n, float eps)
{
    cu_backend *b = enter(be);
    if (b) cu_add_rmsnorm(b, y, x, h, g, m, n, eps);
}

static void op_add_layernorm(plm_backend *be, float *y, float *x, const float *h, const float *g,
                             const float *bias, int64_t m, int64_t n, float eps)
{
    cu_backend *b = enter(be);
    if (b) cu_add_layernorm(b, y, x, h, g, bias, m, n, eps);
}

static void op_rope_qk(plm_backend *be, float *q, int64_t q_stride, int n_q, float *k,
                       int64_t k_stride, int n_k, int64_t t, int hd, const int32_t *pos,
                       const float *inv_freq)
{
    cu_backend *b = enter(be);
    if (b) cu_rope_qk(b, q, q_stride, n_q, k, k_stride, n_k, t, hd, pos, inv_freq);
}

static void op_rope_append(plm_backend *be, const plm_rope_step *a)
{
    cu_backend *b = enter(be);
    if (b) cu_rope_append(b, a);
}

static void op_set_precision(plm_backend *be, int mixed)
{
    ((cu_backend *)be)->mixed = mixed;
}

static void op_destroy(plm_backend *be)
{
    cu_backend *b = (cu_backend *)be;
    if (!b) return;
    /* Teardown is best effort: errors here have nowhere to go. */
    cudaSetDevice(b->device);
    if (b->stream) cudaStreamSynchronize(b->stream);
    cu_prof_finish(b);
    stage_free(b);
    for (int i = 0; i < CU_STAGE_SLOTS; i++)
        if (b->stage_done[i]) cudaEventDestroy(b->stage_done[i]);
    cu_buf_free(&b->stage_dev);
    cu_buf_free(&b->conv);
    cu_buf_free(&b->twin_buf);
    cu_buf_free(&b->tmp);
    cu_buf_free(&b->stats);
    cu_buf_free(&b->decode_work);
    cu_buf_free(&b->decode_count);
    if (b->lt_ws) cudaFree(b->lt_ws);
    if (b->lt) cublasLtDestroy(b->lt);
    if (b->blas) cublasDestroy(b->blas);
    if (b->stream) cudaStreamDestroy(b->stream);
    (void)cudaGetLastError();
    free(b->blocks);
    free(b);
}

/* Filled by name, not position: the table grows as ops are added to core/backend.h, and an op
 * this backend lacks stays NULL rather than shifting the others. fused = 0 leaves out the fused
 * decoder ops, so lm/llama.c composes them (PLM_CUDA_FUSED=0: comparisons, benchmarks); graph = 0
 * the recorded decode steps (PLM_CUDA_GRAPH=0). */
static plm_backend_ops make_ops(int fused, int graph)
{
    plm_backend_ops o;
    memset(&o, 0, sizeof o);
    o.name = "cuda";
    o.host_memory = 0;
    o.destroy = op_destroy;
    o.alloc = op_alloc;
    o.release = op_release;
    o.upload = op_upload;
    o.download = op_download;
    o.matmul = op_matmul;
    o.layernorm = op_layernorm;
    o.rmsnorm = op_rmsnorm;
    o.add = op_add;
    o.add_row = op_add_row;
    o.act = op_act;
    o.silu_mul = op_silu_mul;
    o.rope = op_rope;
    o.attention = op_attention;
    o.attn_probs = op_attn_probs;
    o.gather_heads = op_gather_heads;
    o.mix_rows = op_mix_rows;
    o.sum_rows = op_sum_rows;
    o.embed = op_embed;
    o.copy2d = op_copy2d;
    o.patchify = op_patchify;
    o.alloc_error = op_alloc_error;
    o.error = op_error;
    o.mem_info = op_mem_info;
    o.mem_held = op_mem_held;
    o.set_precision = op_set_precision;
    o.kv_bitmap = &cu_kv_bitmap_ops;
    o.kv_thin = &cu_kv_thin_ops;
    o.kv_int4 = &cu_kv_int4_ops;
    o.attention_blocks = cu_op_attention_blocks;
    o.attention_delta = cu_op_attention_delta;
    if (fused) {
        o.matmul_multi = op_matmul_multi;
        o.matmul_glu = op_matmul_glu;
        o.add_rmsnorm = op_add_rmsnorm;
        o.add_layernorm = op_add_layernorm;
        o.rope_qk = op_rope_qk;
    }
    if (graph) {
        o.graph_begin = cu_op_graph_begin;
        o.graph_end = cu_op_graph_end;
        o.graph_launch = cu_op_graph_launch;
        o.graph_free = cu_op_graph_free;
        o.rope_append = op_rope_append;
    }
    return o;
}

/* [fused][graph] */
static const plm_backend_ops cuda_ops[2][2] = {{make_ops(0, 0), make_ops(0, 1)},
                                               {make_ops(1, 0), make_ops(1, 1)}};

extern "C" int plm_cuda_available(char *why, size_t why_len)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    (void)cudaGetLastError();
    if (e != cudaSuccess) {
        if (why && why_len)
            snprintf(why, why_len, "no CUDA GPU found: cudaGetDeviceCount says %s (%s)",
                     cudaGetErrorString(e), cudaGetErrorName(e));
        return 0;
    }
    if (n == 0) {
        if (why && why_len) snprintf(why, why_len, "no CUDA GPU found: cudaGetDeviceCount says 0");
        return 0;
    }
    if (why && why_len) snprintf(why, why_len, "%d CUDA GPU%s", n, n == 1 ? "" : "s");
    return 1;
}

/* Fills b's handles and buffers; on failure b->err says what failed. */
static int setup(cu_backend *b)
{
    if (!CU_OK(b, cudaSetDevice(b->device))) return 0;
    /* Non-blocking: the legacy default stream must not serialise us with other instances. */
    if (!CU_OK(b, cudaStreamCreateWithFlags(&b->stream, cudaStreamNonBlocking))) return 0;
    for (int i = 0; i < CU_STAGE_SLOTS; i++)
        if (!CU_OK(b, cudaEventCreateWithFlags(&b->stage_done[i], cudaEventDisableTiming)))
            return 0;
    if (!stage_grow(b, CU_STAGE_MIN)) return 0;
    if (!CU_BLAS_OK(b, cublasLtCreate(&b->lt))) return 0;
    b->lt_ws_bytes = CU_LT_WORKSPACE;
    if (!CU_OK(b, cudaMalloc(&b->lt_ws, b->lt_ws_bytes))) return 0;
    plm_mem_count_add(&b->mem, (long long)b->lt_ws_bytes);
    if (!CU_BLAS_OK(b, cublasCreate(&b->blas))) return 0;
    if (!CU_BLAS_OK(b, cublasSetStream(b->blas, b->stream))) return 0;
    /* Default math: no TF32 for float32 products, so F32 checkpoints match the CPU closely. */
    if (!CU_BLAS_OK(b, cublasSetMathMode(b->blas, CUBLAS_DEFAULT_MATH))) return 0;
    if (!CU_BLAS_OK(b, cublasSetWorkspace(b->blas, b->lt_ws, b->lt_ws_bytes))) return 0;
    const char *g = getenv("PLM_CUDA_GEMM");
    b->force_gemmex = g && strcmp(g, "gemmex") == 0;
    /* The decode kernels are on unless set to 0 (comparisons, benchmarks). */
    const char *gv = getenv("PLM_CUDA_GEMV"), *ad = getenv("PLM_CUDA_ATTN_DECODE");
    /* on by default: alone it reads the weights a little slower than cuBLASLt (2.0 vs 2.2 TB/s
     * on the H100) but saves the bf16 rounding pass before every cuBLAS call, and the 7B decoded
     * 120 tokens/s with it against 112 without (eval/results/bench_7b_2026-11-23.md) */
    b->gemv = !(gv && strcmp(gv, "0") == 0);
    b->attn_decode = !(ad && strcmp(ad, "0") == 0);
    /* PLM_CUDA_DECODE_WAVES=2: the decode attention's grid planned as two waves, as before
     * 2026-12-07 (comparisons) */
    const char *dw = getenv("PLM_CUDA_DECODE_WAVES");
    b->ad_waves = dw && atoi(dw) >= 1 && atoi(dw) <= 4 ? atoi(dw) : 1;
    const char *tw = getenv("PLM_CUDA_TWIN");
    b->twin_off = tw && strcmp(tw, "0") == 0;
    const char *at = getenv("PLM_CUDA_ATTN");
    b->attn_fp32 = at && strcmp(at, "fp32") == 0;
    /* Programmatic dependent launch needs Hopper; PLM_CUDA_PDL=0 turns it off (comparisons). */
    const char *pd = getenv("PLM_CUDA_PDL");
    b->pdl = b->sm_major >= 9 && !(pd && strcmp(pd, "0") == 0);
    if (!CU_OK(b, cudaDeviceGetAttribute(&b->n_sm, cudaDevAttrMultiProcessorCount, b->device)))
        return 0;
    return 1;
}

extern "C" plm_status plm_backend_cuda_new(int device, plm_backend **out, plm_error *err)
{
    *out = NULL;
    char why[256];
    if (!plm_cuda_available(why, sizeof why)) return plm_fail(err, PLM_E_DEVICE, "%s", why);
    int n = 0;
    cudaGetDeviceCount(&n);
    if (device < 0 || device >= n)
        return plm_fail(err, PLM_E_DEVICE, "CUDA device %d does not exist: this machine has %d "
                        "GPU%s (0..%d)", device, n, n == 1 ? "" : "s", n - 1);
    cudaDeviceProp prop;
    cudaError_t e = cudaGetDeviceProperties(&prop, device);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return plm_fail(err, PLM_E_DEVICE, "CUDA device %d: cudaGetDeviceProperties says %s",
                        device, cudaGetErrorString(e));
    }
    /* bf16 tensor-core GEMMs and the kernels' bf16 conversions need Ampere or newer. */
    if (prop.major < 8)
        return plm_fail(err, PLM_E_DEVICE, "CUDA device %d (%s) has compute capability %d.%d; "
                        "prunelm's CUDA backend needs 8.0 or newer", device, prop.name,
                        prop.major, prop.minor);
    cu_backend *b = (cu_backend *)calloc(1, sizeof *b);
    if (!b) return plm_fail(err, PLM_E_NOMEM, "cuda backend: out of memory");
    const char *fu = getenv("PLM_CUDA_FUSED"), *gr = getenv("PLM_CUDA_GRAPH");
    const char *prof = getenv("PLM_CUDA_PROFILE");
    prof = prof && *prof ? prof : NULL;
    /* a profile times kernels one by one: no recorded steps (see cu_profile.cu) */
    const int graph = !(gr && strcmp(gr, "0") == 0) && !prof;
    b->base.ops = &cuda_ops[!(fu && strcmp(fu, "0") == 0)][graph];
    b->device = device;
    b->sm_major = prop.major;
    b->sm_minor = prop.minor;
    b->smem_optin = prop.sharedMemPerBlockOptin;
    if (!setup(b) || (prof && !cu_prof_start(b, prof))) {
        plm_status st = plm_fail(err, PLM_E_DEVICE, "CUDA device %d (%s): %s", device, prop.name,
                                 b->err);
        op_destroy(&b->base);
        return st;
    }
    if (b->prof) b->pdl = 0; /* a profile times kernels one by one: no early launches either */
    *out = &b->base;
    return PLM_OK;
}
