/* The CPU backend's sparse attention ops, each in its own file (core/backend_cpu_blocks.c,
 * core/backend_cpu_delta.c) and wired into backend_cpu.c's ops table. They are the references
 * the CUDA kernels are tested against; see core/backend.h for what they compute. */
#ifndef PLM_CORE_BACKEND_CPU_SPARSE_H
#define PLM_CORE_BACKEND_CPU_SPARSE_H

#include "core/backend.h"

void cpu_attention_blocks(plm_backend *be, const plm_attn_args *a, const uint8_t *mask,
                          int block);
void cpu_attention_delta(plm_backend *be, const plm_attn_args *a, float *state, float *q_ref,
                         int64_t window, float theta);

#endif
