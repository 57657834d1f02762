/* A small fixed thread pool for the CPU backend. Workers persist between calls; one caller
 * thread uses a pool at a time (a session's pool belongs to the session). */
#ifndef PLM_CORE_POOL_H
#define PLM_CORE_POOL_H

#include <stdint.h>

typedef struct plm_pool plm_pool;

typedef void (*plm_pool_fn)(void *ctx, int64_t begin, int64_t end);

/* Starts n_threads - 1 workers (the caller is the n-th thread); n_threads <= 0 means the number
 * of online CPUs. Returns NULL if memory or threads cannot be had. */
plm_pool *plm_pool_new(int n_threads);
/* Stops and joins the workers. NULL is a no-op. */
void plm_pool_free(plm_pool *p);
/* Threads that take part in plm_pool_for, the caller included. */
int plm_pool_size(const plm_pool *p);
/* Splits [0, n) into at most plm_pool_size(p) contiguous, non-empty chunks, runs fn on each (the
 * caller runs the first) and returns when all are done. n <= 0 does nothing; n == 1 or a
 * one-thread pool runs fn inline.
 * fn must not call plm_pool_for on the same pool. */
void plm_pool_for(plm_pool *p, int64_t n, plm_pool_fn fn, void *ctx);

#endif
