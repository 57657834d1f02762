/* The float32 flash-attention step shared by the warp-per-row kernels (cu_attention.cu,
 * cu_attn_blocks.cu, cu_attn_delta.cu): one warp owns a query row, lane j scores key j of a
 * 32-key tile, and the row's running max m, normaliser l and output acc (dims lane, lane + 32,
 * ...) absorb the tile with FlashAttention's online softmax (Dao et al. 2022, Alg. 1). */
#ifndef PLM_CUDA_CU_FLASH_CUH
#define PLM_CUDA_CU_FLASH_CUH

#include <math.h>

#define CU_FLASH_BK 32 /* keys per tile: one per lane */

__device__ __forceinline__ float cu_warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ __forceinline__ float cu_warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* s: this lane's scaled score (-inf when its key is masked; lane 0's must be valid so the tile
 * max is finite); vs: the tile's V rows [CU_FLASH_BK][hd] in shared memory. */
template <int MAXT>
__device__ __forceinline__ void cu_flash_tile(float s, float &m, float &l, float (&acc)[MAXT],
                                              const float *vs, int hd, int lane)
{
    const float mnew = fmaxf(m, cu_warp_max(s));
    const float p = expf(s - mnew), corr = expf(m - mnew);
    l = l * corr + cu_warp_sum(p);
#pragma unroll
    for (int t = 0; t < MAXT; t++) acc[t] *= corr;
    for (int jj = 0; jj < CU_FLASH_BK; jj++) {
        const float pj = __shfl_sync(0xffffffffu, p, jj);
        const float *vr = vs + jj * hd;
#pragma unroll
        for (int t = 0; t < MAXT; t++) {
            const int d = lane + 32 * t;
            if (d < hd) acc[t] += pj * vr[d];
        }
    }
    m = mnew;
}

/* Writes a warp's finished row: o = acc / l; zero for a row that saw no key (l = 0), like the
 * CPU reference. */
template <int MAXT>
__device__ __forceinline__ void cu_flash_store(float *o, const float (&acc)[MAXT], float l, int hd,
                                               int lane)
{
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
#pragma unroll
    for (int t = 0; t < MAXT; t++) {
        const int d = lane + 32 * t;
        if (d < hd) o[d] = acc[t] * inv;
    }
}

#endif
