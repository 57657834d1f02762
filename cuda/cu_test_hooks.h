/* Test-only view into the CUDA backend (plain C, no CUDA headers), for tests/gpu: not part of
 * the ops table, and not for model code. */
#ifndef PLM_CUDA_CU_TEST_HOOKS_H
#define PLM_CUDA_CU_TEST_HOOKS_H

#include "core/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Matmuls run on this CUDA backend so far, and how many of them took the cublasGemmEx
 * fallback because cuBLASLt had no algorithm (or PLM_CUDA_GEMM=gemmex forced it). */
void plm_cuda_gemm_counts(plm_backend *be, long *n_matmul, long *n_fallback);
/* Matmuls that read a producer's bf16/f16 twin instead of rounding their input (cu_twin). */
long plm_cuda_twin_uses(plm_backend *be);

/* For benchmarks (cuda/cu_timing.cu). Times fn(ctx), which enqueues ops on be, n times: before
 * each run the GPU reads a 256 MiB buffer (so L2 holds none of the op's inputs) and then idles
 * while the host enqueues the run, and ms[i] receives the milliseconds between CUDA events on
 * be's stream around run i. Returns 0, or -1 on a CUDA failure (be's error() says which). */
int plm_cuda_time_ops(plm_backend *be, void (*fn)(void *ctx), void *ctx, int n, float *ms);
/* Enqueues a device-to-device cudaMemcpyAsync of bytes on be's stream (the bandwidth
 * reference). */
void plm_cuda_copy_d2d(plm_backend *be, void *dst, const void *src, size_t bytes);

/* Runs be's attention(a) n times on its stream, timing each call between two CUDA events;
 * ms[i] receives call i's milliseconds. Returns 0, or -1 when the backend failed (error()). */
int plm_cuda_time_attention(plm_backend *be, const plm_attn_args *a, int n, float *ms);

/* As if be had reallocated its scratch buffers: recordings made before (graph_begin) are
 * refused by graph_launch from now on. */
void plm_cuda_buffers_moved(plm_backend *be);

#ifdef __cplusplus
}
#endif

#endif
