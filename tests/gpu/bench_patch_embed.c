/* The patch embedding of CLIP ViT-L/14 at 336 px (issue 4: "through cuDNN or as a GEMM,
 * whichever is faster; measure both"):
 *   bench_patch_embed OUT.txt
 * A 3 x 336 x 336 float32 image and a [1024 x 3 x 14 x 14] convolution weight, stride 14.
 * 1. prunelm's path (vision/vit.c): the backend's patchify (im2col, [576 x 588]) + matmul with
 *    the weight as stored (bf16 and float32 rows), timed with plm_cuda_time_ops (cold L2).
 * 2. cuDNN: cudnnConvolutionForward, NCHW float32 image in, NHWC output (token-major like
 *    prunelm's [576 x 1024]); float32 and bf16 filters (bf16: image and output bf16 too, the
 *    image converted beforehand and not timed, in cuDNN's favour); the algorithm cuDNN's own
 *    search finds fastest; timed between CUDA events after a 256 MiB write that evicts L2.
 * Every time is the median of 50 runs. Self-check: each cuDNN output matches prunelm's float32
 * result (relative L2 <= 1e-2: TF32 / bf16 tensor cores). Prints the table (and writes it to
 * OUT.txt), "N passed, M failed" last; exits 1 on a failed check. cuDNN is linked into this
 * benchmark only: the library keeps whichever path this measures faster. */
#include <cuda_runtime.h>
#include <cudnn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "core/dtype.h"
#include "cuda/cu_test_hooks.h"
#include "tests/gpu/gpu_util.h"
#include "tests/gpu/bench_util.h"
#include "tests/support/compare.h"

#define RUNS 50
#define C_IN 3
#define SIZE 336
#define PATCH 14
#define GRID (SIZE / PATCH)
#define NP (GRID * GRID)
#define K (C_IN * PATCH * PATCH)
#define D 1024

static void die(const char *what, const char *why)
{
    emit("FAIL %s: %s\n%d passed, %d failed\n", what, why, n_pass, n_fail + 1);
    exit(1);
}

#define CUDA_OK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) die(#x, cudaGetErrorString(e_)); } while (0)
#define DNN_OK(x) do { cudnnStatus_t s_ = (x); if (s_ != CUDNN_STATUS_SUCCESS) die(#x, cudnnGetErrorString(s_)); } while (0)

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static float median(float *ms, int n)
{
    qsort(ms, (size_t)n, sizeof *ms, cmp_float);
    return ms[n / 2];
}

/* prunelm's path on its own backend */
typedef struct gemm_path {
    plm_backend *be;
    float *pixels, *cols, *y;
    plm_weight w;
} gemm_path;

static void gemm_run(void *ctx)
{
    const gemm_path *g = ctx;
    g->be->ops->patchify(g->be, g->cols, g->pixels, C_IN, SIZE, PATCH);
    g->be->ops->matmul(g->be, g->y, g->cols, &g->w, NULL, NP);
}

/* One cuDNN configuration: data type of filter, image and output. */
typedef struct dnn_path {
    cudnnHandle_t h;
    cudnnTensorDescriptor_t x, y;
    cudnnFilterDescriptor_t w;
    cudnnConvolutionDescriptor_t conv;
    cudnnConvolutionFwdAlgo_t algo;
    void *dx, *dw, *dy, *ws;
    size_t ws_bytes;
} dnn_path;

static void dnn_setup(dnn_path *p, cudnnHandle_t h, cudnnDataType_t t, const void *x_host,
                      const void *w_host, size_t elem, char *algo_name, size_t n_algo_name)
{
    p->h = h;
    DNN_OK(cudnnCreateTensorDescriptor(&p->x));
    DNN_OK(cudnnCreateTensorDescriptor(&p->y));
    DNN_OK(cudnnCreateFilterDescriptor(&p->w));
    DNN_OK(cudnnCreateConvolutionDescriptor(&p->conv));
    DNN_OK(cudnnSetTensor4dDescriptor(p->x, CUDNN_TENSOR_NCHW, t, 1, C_IN, SIZE, SIZE));
    DNN_OK(cudnnSetFilter4dDescriptor(p->w, t, CUDNN_TENSOR_NCHW, D, C_IN, PATCH, PATCH));
    DNN_OK(cudnnSetConvolution2dDescriptor(p->conv, 0, 0, PATCH, PATCH, 1, 1,
                                           CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    DNN_OK(cudnnSetConvolutionMathType(p->conv, CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION));
    DNN_OK(cudnnSetTensor4dDescriptor(p->y, CUDNN_TENSOR_NHWC, t, 1, D, GRID, GRID));
    CUDA_OK(cudaMalloc(&p->dx, (size_t)C_IN * SIZE * SIZE * elem));
    CUDA_OK(cudaMalloc(&p->dw, (size_t)D * K * elem));
    CUDA_OK(cudaMalloc(&p->dy, (size_t)NP * D * elem));
    CUDA_OK(cudaMemcpy(p->dx, x_host, (size_t)C_IN * SIZE * SIZE * elem, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(p->dw, w_host, (size_t)D * K * elem, cudaMemcpyHostToDevice));
    cudnnConvolutionFwdAlgoPerf_t perf[8];
    int n = 0;
    DNN_OK(cudnnFindConvolutionForwardAlgorithm(h, p->x, p->w, p->conv, p->y, 8, &n, perf));
    int best = -1;
    for (int i = 0; i < n; i++)
        if (perf[i].status == CUDNN_STATUS_SUCCESS) {
            best = i;
            break;
        }
    if (best < 0) die("cuDNN", "no forward algorithm for this convolution");
    p->algo = perf[best].algo;
    snprintf(algo_name, n_algo_name, "algo %d", (int)p->algo);
    DNN_OK(cudnnGetConvolutionForwardWorkspaceSize(h, p->x, p->w, p->conv, p->y, p->algo,
                                                   &p->ws_bytes));
    p->ws = NULL;
    if (p->ws_bytes) CUDA_OK(cudaMalloc(&p->ws, p->ws_bytes));
}

static void dnn_run(const dnn_path *p)
{
    const float one = 1, zero = 0;
    DNN_OK(cudnnConvolutionForward(p->h, &one, p->x, p->dx, p->w, p->dw, p->conv, p->algo, p->ws,
                                   p->ws_bytes, &zero, p->y, p->dy));
}

static float dnn_time(const dnn_path *p, void *flush, size_t flush_bytes)
{
    cudaEvent_t a, b;
    CUDA_OK(cudaEventCreate(&a));
    CUDA_OK(cudaEventCreate(&b));
    float ms[RUNS];
    dnn_run(p); /* warm-up */
    for (int i = 0; i < RUNS; i++) {
        CUDA_OK(cudaMemsetAsync(flush, i & 0xff, flush_bytes, 0));
        CUDA_OK(cudaEventRecord(a, 0));
        dnn_run(p);
        CUDA_OK(cudaEventRecord(b, 0));
        CUDA_OK(cudaEventSynchronize(b));
        CUDA_OK(cudaEventElapsedTime(&ms[i], a, b));
    }
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    return median(ms, RUNS);
}

static void dnn_free(dnn_path *p)
{
    cudaFree(p->dx);
    cudaFree(p->dw);
    cudaFree(p->dy);
    cudaFree(p->ws);
    cudnnDestroyTensorDescriptor(p->x);
    cudnnDestroyTensorDescriptor(p->y);
    cudnnDestroyFilterDescriptor(p->w);
    cudnnDestroyConvolutionDescriptor(p->conv);
}

/* Times prunelm's patchify + matmul with the weight in dtype t; y_host gets the output. */
static float gemm_time(plm_backend *be, plm_dtype t, const float *x, const float *w32,
                       const uint16_t *w16, float *y_host)
{
    const plm_backend_ops *o = be->ops;
    gemm_path g = {.be = be};
    const size_t wb = (size_t)D * K * (t == PLM_BF16 ? 2 : 4);
    g.pixels = o->alloc(be, (size_t)C_IN * SIZE * SIZE * 4);
    g.cols = o->alloc(be, (size_t)NP * K * 4);
    g.y = o->alloc(be, (size_t)NP * D * 4);
    void *dw = o->alloc(be, wb);
    if (!g.pixels || !g.cols || !g.y || !dw) die("backend alloc", "out of device memory");
    o->upload(be, g.pixels, x, (size_t)C_IN * SIZE * SIZE * 4);
    o->upload(be, dw, t == PLM_BF16 ? (const void *)w16 : (const void *)w32, wb);
    g.w = (plm_weight){t, D, K, dw};
    float ms[RUNS];
    gemm_run(&g); /* warm-up: cuBLASLt's algorithm choice */
    if (plm_cuda_time_ops(be, gemm_run, &g, RUNS, ms) != 0) die("plm_cuda_time_ops", o->error(be));
    o->download(be, y_host, g.y, (size_t)NP * D * 4);
    o->release(be, g.pixels);
    o->release(be, g.cols);
    o->release(be, g.y);
    o->release(be, dw);
    return median(ms, RUNS);
}

int main(int argc, char **argv)
{
    char why[256];
    plm_backend *gpu;
    bench_start(argc, argv, NULL, &gpu, why, sizeof why);
    const size_t nx = (size_t)C_IN * SIZE * SIZE, nw = (size_t)D * K, ny = (size_t)NP * D;
    float *x = xmalloc(nx * 4), *w = xmalloc(nw * 4), *y_ref = xmalloc(ny * 4);
    float *y = xmalloc(ny * 4), *y16 = xmalloc(ny * 4);
    uint16_t *x16 = xmalloc(nx * 2), *w16 = xmalloc(nw * 2), *yb = xmalloc(ny * 2);
    rng = 0x5eed1234u;
    for (size_t i = 0; i < nx; i++) x16[i] = plm_f32_to_bf16(x[i] = 2 * frand());
    for (size_t i = 0; i < nw; i++) w16[i] = plm_f32_to_bf16(w[i] = frand() / sqrtf((float)K));

    emit("Patch embedding, CLIP ViT-L/14 at %d px: [%d x %d] x [%d x %d]^T, median of %d "
         "runs (ms)\n", SIZE, NP, K, D, K, RUNS);
    emit("| path | weight | time ms | note |\n|---|---|---|---|\n");
    float t32 = gemm_time(gpu, PLM_F32, x, w, NULL, y_ref);
    emit("| prunelm patchify + matmul | float32 | %.4f | cold L2 |\n", t32);
    float tb = gemm_time(gpu, PLM_BF16, x, NULL, w16, y16);
    emit("| prunelm patchify + matmul | bf16 | %.4f | cold L2 |\n", tb);

    cudnnHandle_t h;
    DNN_OK(cudnnCreate(&h));
    void *flush;
    const size_t flush_bytes = (size_t)256 << 20;
    CUDA_OK(cudaMalloc(&flush, flush_bytes));
    char algo[32];
    dnn_path p32, p16;
    dnn_setup(&p32, h, CUDNN_DATA_FLOAT, x, w, 4, algo, sizeof algo);
    float d32 = dnn_time(&p32, flush, flush_bytes);
    CUDA_OK(cudaMemcpy(y, p32.dy, ny * 4, cudaMemcpyDeviceToHost));
    emit("| cuDNN convolution (NCHW in, NHWC out) | float32 | %.4f | %s, cold L2 |\n", d32, algo);
    dnn_setup(&p16, h, CUDNN_DATA_BFLOAT16, x16, w16, 2, algo, sizeof algo);
    float d16 = dnn_time(&p16, flush, flush_bytes);
    CUDA_OK(cudaMemcpy(yb, p16.dy, ny * 2, cudaMemcpyDeviceToHost));
    emit("| cuDNN convolution (NCHW in, NHWC out) | bf16 (image and output too) | %.4f | %s, "
         "cold L2, image conversion not timed |\n", d16, algo);
    float *ybf = xmalloc(ny * 4);
    for (size_t i = 0; i < ny; i++) ybf[i] = plm_bf16_to_f32(yb[i]);

    double e;
    e = rel_l2(y16, y_ref, ny);
    check_tol(e <= 1e-2, "prunelm bf16 weight vs float32", e, 1e-2);
    e = rel_l2(y, y_ref, ny);
    check_tol(e <= 1e-2, "cuDNN float32 vs prunelm float32", e, 1e-2);
    e = rel_l2(ybf, y_ref, ny);
    check_tol(e <= 1e-2, "cuDNN bf16 vs prunelm float32", e, 1e-2);
    const float best_dnn = d32 < d16 ? d32 : d16, best_gemm = t32 < tb ? t32 : tb;
    emit("faster: %s (%.4f ms against %.4f ms)\n", best_gemm <= best_dnn ? "GEMM" : "cuDNN",
         best_gemm <= best_dnn ? best_gemm : best_dnn, best_gemm <= best_dnn ? best_dnn : best_gemm);

    dnn_free(&p32);
    dnn_free(&p16);
    cudaFree(flush);
    cudnnDestroy(h);
    plm_backend_free(gpu);
    free(x); free(w); free(y_ref); free(y); free(y16); free(x16); free(w16); free(yb); free(ybf);
    const int status = bench_finish(bench_out);
    fclose(bench_out);
    return status;
}
