/* The CUDA backend's sparse attention ops (cu_attn_blocks.cu, cu_attn_delta.cu), with the
 * signatures of their plm_backend_ops members so backend_cuda.cu's table takes them as they are.
 * Each checks the backend's sticky failure and makes its GPU current, like enter() there. */
#ifndef PLM_CUDA_CU_SPARSE_H
#define PLM_CUDA_CU_SPARSE_H

#include "cuda/cu_internal.h"

void cu_attention_blocks(cu_backend *b, const plm_attn_args *a, const uint8_t *mask, int block);
void cu_attention_delta(cu_backend *b, const plm_attn_args *a, float *state, float *q_ref,
                        int64_t window, float theta);

void cu_op_attention_blocks(plm_backend *be, const plm_attn_args *a, const uint8_t *mask,
                            int block);
void cu_op_attention_delta(plm_backend *be, const plm_attn_args *a, float *state, float *q_ref,
                           int64_t window, float theta);

#endif
