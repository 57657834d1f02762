/* Decode steps recorded once as a CUDA graph and replayed (the ops table's graph_* members;
 * lm/llama.c drives them). A batch-1 step of a 7B model is ~300 launches of 2-60 us kernels:
 * launched one by one, the host's launch cost and the gaps between kernels are a sizeable part
 * of the step; replayed, the driver submits the whole step at once.
 *
 * Recording is stream capture on the backend's stream (thread-local mode: other threads and
 * their backends are not affected). Nothing runs while recording, so an op that cannot be
 * recorded (it would stage host data or grow a buffer, which synchronises) marks the recording
 * bad rather than failing the backend (cu_fail, cu_check_rt): graph_end then returns NULL and
 * the caller runs the step's ops again, unrecorded. A recording holds pointers into the
 * backend's own buffers (the decode attention's split scratch, ...): graph_launch refuses it
 * once any of them has been reallocated since (buf_epoch), and the caller records anew. */
#include <stdlib.h>

#include "cuda/cu_internal.h"
#include "cuda/cu_test_hooks.h"

typedef struct cu_graph {
    cudaGraphExec_t exec;
    unsigned epoch; /* b->buf_epoch when recorded */
} cu_graph;

int cu_op_graph_begin(plm_backend *be)
{
    cu_backend *b = (cu_backend *)be;
    if (b->failed || b->capturing || cudaSetDevice(b->device) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    if (cudaStreamBeginCapture(b->stream, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    b->capturing = 1;
    b->capture_bad = 0;
    return 1;
}

void *cu_op_graph_end(plm_backend *be)
{
    cu_backend *b = (cu_backend *)be;
    if (!b->capturing) return NULL;
    cudaGraph_t g = NULL;
    cudaError_t e = cudaStreamEndCapture(b->stream, &g);
    b->capturing = 0;
    cudaGraphExec_t exec = NULL;
    if (e == cudaSuccess && g && !b->capture_bad)
        e = cudaGraphInstantiateWithFlags(&exec, g, 0);
    if (g) cudaGraphDestroy(g);
    if (e != cudaSuccess || b->capture_bad || !exec) {
        (void)cudaGetLastError(); /* a refused recording is not the backend's failure */
        if (exec) cudaGraphExecDestroy(exec);
        return NULL;
    }
    cu_graph *cg = (cu_graph *)malloc(sizeof *cg);
    if (!cg) {
        cudaGraphExecDestroy(exec);
        return NULL;
    }
    cg->exec = exec;
    cg->epoch = b->buf_epoch;
    return cg;
}

int cu_op_graph_launch(plm_backend *be, void *graph, void *dev, const void *host, size_t bytes)
{
    cu_backend *b = (cu_backend *)be;
    const cu_graph *g = (const cu_graph *)graph;
    if (b->failed) return 1; /* download() reports it */
    if (g->epoch != b->buf_epoch) return 0;
    if (!CU_OK(b, cudaSetDevice(b->device)) || !cu_upload_async(b, dev, host, bytes)) return 1;
    CU_OK(b, cudaGraphLaunch(g->exec, b->stream));
    return 1;
}

void cu_op_graph_free(plm_backend *be, void *graph)
{
    cu_backend *b = (cu_backend *)be;
    cu_graph *g = (cu_graph *)graph;
    if (!g) return;
    /* best effort, like teardown; a replay may still be queued, and destroying a graph in
     * use is undefined */
    cudaSetDevice(b->device);
    if (!b->capturing) cudaStreamSynchronize(b->stream);
    cudaGraphExecDestroy(g->exec);
    (void)cudaGetLastError();
    free(g);
}

extern "C" void plm_cuda_buffers_moved(plm_backend *be)
{
    ((cu_backend *)be)->buf_epoch++;
}
