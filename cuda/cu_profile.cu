/* The kernel profile (PLM_CUDA_PROFILE=FILE): the GPU machine's sandbox runs neither Nsight
 * Systems nor Nsight Compute, so the backend times its own kernels. Every launch check
 * (cu_launched, cu_launch_pdl, the cuBLAS matmul) records a CUDA event after its kernel; the
 * stream runs in order, so the time between two consecutive events is the kernel launched
 * between them, plus any copy enqueued with it and any idle time while the GPU waited for the
 * host (a host-bound stretch shows up as long "kernels"). Profiling turns early launches and
 * recorded decode steps off (an event between two kernels defeats the one, and a recording
 * cannot hold the events). At the end of a backend that timed a kernel FILE receives a table
 * per kernel name (calls, total ms, mean us, share) and then the last PROF_TRACE kernels in
 * order, so the phases of the last run (vision tower, prefill, decode steps) can be told apart;
 * of several such backends in one program, the last one freed writes it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cu_internal.h"

#define PROF_RING 1024  /* events between two reads of their times */
#define PROF_NAMES 256  /* distinct kernel names kept */
#define PROF_TRACE 8000 /* the last kernels, listed in order */

typedef struct prof_name {
    const char *name;
    long calls;
    double ms;
} prof_name;

typedef struct cu_prof cu_prof;

struct cu_prof {
    char path[1024];
    cudaEvent_t ev[PROF_RING];
    const char *name[PROF_RING]; /* the kernel that ends at ev[i] */
    int n;                       /* events pending; ev[0] only opens the batch */
    prof_name names[PROF_NAMES];
    int n_names;
    long dropped; /* kernels over PROF_NAMES names */
    float trace_us[PROF_TRACE];
    const char *trace_name[PROF_TRACE];
    long n_trace;
};

int cu_prof_start(cu_backend *b, const char *path)
{
    cu_prof *p = (cu_prof *)calloc(1, sizeof *p);
    if (!p) {
        cu_fail(b, "PLM_CUDA_PROFILE: out of host memory");
        return 0;
    }
    /* refused now rather than after the run; written at the end, by the backend that timed
     * something (a program may make a backend that only probes the GPU) */
    FILE *f = strlen(path) < sizeof p->path ? fopen(path, "a") : NULL;
    if (!f) {
        cu_fail(b, "PLM_CUDA_PROFILE: cannot open %s for writing", path);
        free(p);
        return 0;
    }
    fclose(f);
    strcpy(p->path, path);
    for (int i = 0; i < PROF_RING; i++) {
        if (cudaEventCreate(&p->ev[i]) != cudaSuccess) {
            (void)cudaGetLastError();
            for (int j = 0; j < i; j++) cudaEventDestroy(p->ev[j]);
            free(p);
            cu_fail(b, "PLM_CUDA_PROFILE: cannot create CUDA events");
            return 0;
        }
    }
    b->prof = p;
    return 1;
}

static void prof_add(cu_prof *p, const char *name, float ms)
{
    p->trace_us[p->n_trace % PROF_TRACE] = 1e3f * ms; /* a ring: the last PROF_TRACE */
    p->trace_name[p->n_trace % PROF_TRACE] = name;
    p->n_trace++;
    int i = 0;
    while (i < p->n_names && strcmp(p->names[i].name, name) != 0) i++;
    if (i == p->n_names) {
        if (p->n_names == PROF_NAMES) {
            p->dropped++;
            return;
        }
        p->names[p->n_names++].name = name;
    }
    p->names[i].calls++;
    p->names[i].ms += ms;
}

/* Reads the pending events' times. The next batch opens with a fresh event: the host spent
 * this read's time with the GPU idle, which no kernel should be charged. */
static void prof_read(cu_prof *p)
{
    if (p->n > 1 && cudaEventSynchronize(p->ev[p->n - 1]) == cudaSuccess) {
        for (int i = 1; i < p->n; i++) {
            float ms = 0.0f;
            if (cudaEventElapsedTime(&ms, p->ev[i - 1], p->ev[i]) == cudaSuccess)
                prof_add(p, p->name[i], ms);
        }
    }
    (void)cudaGetLastError();
    p->n = 0;
}

void cu_prof_mark(cu_backend *b, const char *name)
{
    cu_prof *p = b->prof;
    if (!p || b->capturing) return;
    if (p->n == PROF_RING) prof_read(p);
    if (cudaEventRecord(p->ev[p->n], b->stream) != cudaSuccess) {
        (void)cudaGetLastError();
        return;
    }
    p->name[p->n++] = name;
}

static int by_ms(const void *x, const void *y)
{
    const double a = ((const prof_name *)x)->ms, c = ((const prof_name *)y)->ms;
    return a < c ? 1 : a > c ? -1 : 0;
}

static void prof_write(cu_prof *p, FILE *out)
{
    double total = 0.0;
    for (int i = 0; i < p->n_names; i++) total += p->names[i].ms;
    qsort(p->names, (size_t)p->n_names, sizeof p->names[0], by_ms);
    fprintf(out, "# prunelm CUDA kernel profile: %ld kernels timed, %.3f ms in all%s\n",
            p->n_trace, total, p->dropped ? " (some names over the table's size left out)" : "");
    fprintf(out, "%-40s %8s %11s %10s %7s\n", "kernel", "calls", "total_ms", "mean_us",
            "share");
    for (int i = 0; i < p->n_names; i++) {
        const prof_name *n = &p->names[i];
        fprintf(out, "%-40s %8ld %11.3f %10.2f %6.1f%%\n", n->name, n->calls, n->ms,
                1e3 * n->ms / (double)n->calls, total > 0 ? 100.0 * n->ms / total : 0.0);
    }
    const long first = p->n_trace > PROF_TRACE ? p->n_trace - PROF_TRACE : 0;
    fprintf(out, "# the last %ld kernels in order: seq kernel us\n", p->n_trace - first);
    for (long i = first; i < p->n_trace; i++)
        fprintf(out, "%ld %s %.2f\n", i, p->trace_name[i % PROF_TRACE],
                p->trace_us[i % PROF_TRACE]);
    fclose(out);
}

void cu_prof_finish(cu_backend *b)
{
    cu_prof *p = b->prof;
    if (!p) return;
    prof_read(p);
    FILE *out = p->n_trace ? fopen(p->path, "w") : NULL;
    if (out) prof_write(p, out);
    for (int i = 0; i < PROF_RING; i++) cudaEventDestroy(p->ev[i]);
    (void)cudaGetLastError();
    free(p);
    b->prof = NULL;
}

int cu_launched(cu_backend *b, const char *kernel, const char *file, int line)
{
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) {
        char what[128];
        snprintf(what, sizeof what, "launch of %s", kernel);
        return cu_check_rt(b, e, what, file, line);
    }
    b->n_launch++; /* a twin made before this kernel may be stale now (cu_twin_take) */
    if (b->prof) cu_prof_mark(b, kernel);
    return 1;
}
