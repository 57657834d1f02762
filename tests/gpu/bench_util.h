/* What the GPU benchmarks share around their measurements: the backends and the OUT file at the
 * start, device buffers, the PASS/FAIL tally and the closing "N passed, M failed" that sets the
 * exit status. Static in the header, like gpu_util.h. OUT files come in two kinds, kept as they
 * were: a log of every line (bench_decode, bench_patch_embed: emit, check_tol, the tally in OUT
 * too) or the table alone (the others: check and the tally on stdout only). */
#ifndef PLM_TESTS_GPU_BENCH_UTIL_H
#define PLM_TESTS_GPU_BENCH_UTIL_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/backend.h"

static int n_pass, n_fail;
static FILE *bench_out; /* OUT.txt once bench_start has opened it; emit copies lines there */

/* The CUDA backend, and the CPU one where cpu is not NULL; why gets plm_cuda_available's line
 * (the device, or why there is none), which the benchmarks print. 0 when one is missing. */
static inline int bench_backends(plm_backend **cpu, plm_backend **gpu, char *why, size_t n_why)
{
    plm_error err;
    return plm_cuda_available(why, n_why) &&
           (!cpu || plm_backend_cpu_new(0, cpu, &err) == PLM_OK) &&
           plm_backend_cuda_new(0, gpu, &err) == PLM_OK;
}

/* For `bench_x OUT.txt`: the backends (as bench_backends) and bench_out, or an exit: 2 on a bad
 * command line or an unwritable OUT, 1 with one failed check when there is no CUDA. */
static inline void bench_start(int argc, char **argv, plm_backend **cpu, plm_backend **gpu,
                               char *why, size_t n_why)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s OUT.txt\n", argv[0]);
        exit(2);
    }
    if (!bench_backends(cpu, gpu, why, n_why)) {
        printf("FAIL no CUDA backend: %s\n0 passed, 1 failed\n", why);
        exit(1);
    }
    bench_out = fopen(argv[1], "w");
    if (!bench_out) {
        fprintf(stderr, "%s: cannot open for writing\n", argv[1]);
        exit(2);
    }
}

/* A line (at most 511 characters) on stdout and in OUT, both flushed: a run that dies halfway
 * keeps the rows it printed. */
static inline void emit(const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fputs(line, stdout);
    fflush(stdout);
    if (bench_out) {
        fputs(line, bench_out);
        fflush(bench_out);
    }
}

/* A check whose line goes to stdout only. */
static inline void check(int ok, const char *what)
{
    if (ok) n_pass++;
    else n_fail++;
    printf("%s %s\n", ok ? "PASS" : "FAIL", what);
    fflush(stdout);
}

/* A check with its error and tolerance, emitted. */
static inline void check_tol(int ok, const char *what, double err, double tol)
{
    if (ok) n_pass++;
    else n_fail++;
    emit("%s %s err=%.3g (tol %.0e)\n", ok ? "PASS" : "FAIL", what, err, tol);
}

/* For a program that writes its table only at the end (OUT.md): path gets fmt's text; a failed
 * write is a failed check. */
static inline void bench_save(const char *path, const char *fmt, ...)
{
    FILE *f = fopen(path, "w");
    va_list ap;
    va_start(ap, fmt);
    if (!f || vfprintf(f, fmt, ap) < 0 || fclose(f) != 0) {
        printf("FAIL writing %s\n", path);
        n_fail++;
    }
    va_end(ap);
}

/* "N passed, M failed" on stdout, and in log where it is not NULL; the exit status. */
static inline int bench_finish(FILE *log)
{
    printf("%d passed, %d failed\n", n_pass, n_fail);
    fflush(stdout);
    if (log) fprintf(log, "%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}

#endif
