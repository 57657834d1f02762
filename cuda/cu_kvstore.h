/* The CUDA backend's thin-key (cu_kv_think.cu) and int4 (cu_kv_int4.cu) KV store ops, for
 * backend_cuda.cu's table (core/backend_kvstore.h has what they compute). */
#ifndef PLM_CUDA_CU_KVSTORE_H
#define PLM_CUDA_CU_KVSTORE_H

#include "cuda/cu_internal.h"

extern "C" {
#include "core/backend_kvstore.h"
}

extern const plm_kv_thin_ops cu_kv_thin_ops;
extern const plm_kv_int4_ops cu_kv_int4_ops;

#endif
