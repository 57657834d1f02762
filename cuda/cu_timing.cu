/* Benchmark hooks (cu_test_hooks.h): event timing of ops on a backend's stream with a cold L2,
 * and a device-to-device copy as the bandwidth reference. Not used by the library itself. */
#include "cuda/cu_internal.h"
#include "cuda/cu_test_hooks.h"

#define TM_FLUSH_BYTES ((size_t)256 << 20) /* over 5x an H100's or H200's 50 MiB L2 */
#define TM_IDLE_NS 200000                  /* the host enqueues the timed run meanwhile */

/* Reads the buffer so that L2 then holds its (clean) lines and none of the op's; the store
 * never happens (the words are all zero) but keeps the loads alive. */
__global__ void k_tm_flush(const uint4 *buf, size_t n, unsigned *sink)
{
    unsigned acc = 0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const uint4 v = buf[i];
        acc |= v.x | v.y | v.z | v.w;
    }
    if (acc == 0xdeadbeefu) *sink = acc;
}

__global__ void k_tm_idle(long long ns)
{
    const long long t0 = clock64();
    /* clock64 counts SM cycles (~1.7-2 GHz); 2 cycles per ns overestimates: idles longer */
    while (clock64() - t0 < 2 * ns) __nanosleep(1000);
}

extern "C" int plm_cuda_time_ops(plm_backend *be, void (*fn)(void *ctx), void *ctx, int n,
                                 float *ms)
{
    cu_backend *b = (cu_backend *)be;
    if (b->failed || !CU_OK(b, cudaSetDevice(b->device))) return -1;
    void *flush = NULL;
    cudaEvent_t e0 = NULL, e1 = NULL;
    int ret = -1;
    if (!CU_OK(b, cudaMalloc(&flush, TM_FLUSH_BYTES)) ||
        !CU_OK(b, cudaMemsetAsync(flush, 0, TM_FLUSH_BYTES, b->stream)) ||
        !CU_OK(b, cudaEventCreate(&e0)) || !CU_OK(b, cudaEventCreate(&e1)))
        goto out;
    for (int i = 0; i < n; i++) {
        k_tm_flush<<<1024, 256, 0, b->stream>>>((const uint4 *)flush, TM_FLUSH_BYTES / 16,
                                                 (unsigned *)flush);
        if (!CU_LAUNCHED(b, "k_tm_flush")) goto out;
        k_tm_idle<<<1, 1, 0, b->stream>>>(TM_IDLE_NS);
        if (!CU_LAUNCHED(b, "k_tm_idle") || !CU_OK(b, cudaEventRecord(e0, b->stream))) goto out;
        fn(ctx);
        if (b->failed || !CU_OK(b, cudaEventRecord(e1, b->stream)) ||
            !CU_OK(b, cudaEventSynchronize(e1)) || !CU_OK(b, cudaEventElapsedTime(&ms[i], e0, e1)))
            goto out;
    }
    ret = 0;
out:
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    if (flush) {
        cudaStreamSynchronize(b->stream);
        cudaFree(flush);
    }
    return ret;
}

extern "C" void plm_cuda_copy_d2d(plm_backend *be, void *dst, const void *src, size_t bytes)
{
    cu_backend *b = (cu_backend *)be;
    if (b->failed || !CU_OK(b, cudaSetDevice(b->device))) return;
    CU_OK(b, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, b->stream));
}
