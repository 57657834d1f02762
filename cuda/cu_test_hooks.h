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

#ifdef __cplusplus
}
#endif

#endif
