#include "core/pool.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#define POOL_MAX_THREADS 256

typedef struct pool_worker {
    plm_pool *pool;
    int idx; /* chunk index this worker runs: 1 .. n_workers */
    pthread_t thread;
} pool_worker;

struct plm_pool {
    int n_threads; /* workers + the caller */
    int n_workers; /* workers started */
    pool_worker *workers;
    pthread_mutex_t mu;
    pthread_cond_t work_cv, done_cv;
    /* The current job, guarded by mu. A new job bumps gen. */
    uint64_t gen;
    int stop;
    plm_pool_fn fn;
    void *ctx;
    int64_t n;
    int n_chunks;
    int pending; /* worker chunks not yet finished */
};

/* Chunk i of [0, n) split k ways: the first n % k chunks get one extra element. */
static void chunk_range(int64_t n, int k, int i, int64_t *begin, int64_t *end)
{
    int64_t base = n / k, rem = n % k;
    *begin = base * i + (i < rem ? i : rem);
    *end = *begin + base + (i < rem ? 1 : 0);
}

static void *worker_main(void *arg)
{
    pool_worker *w = arg;
    plm_pool *p = w->pool;
    uint64_t seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->gen == seen) pthread_cond_wait(&p->work_cv, &p->mu);
        if (p->stop) break;
        seen = p->gen;
        if (w->idx >= p->n_chunks) continue;
        plm_pool_fn fn = p->fn;
        void *ctx = p->ctx;
        int64_t begin, end;
        chunk_range(p->n, p->n_chunks, w->idx, &begin, &end);
        pthread_mutex_unlock(&p->mu);
        fn(ctx, begin, end);
        pthread_mutex_lock(&p->mu);
        if (--p->pending == 0) pthread_cond_signal(&p->done_cv);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

plm_pool *plm_pool_new(int n_threads)
{
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)(n < POOL_MAX_THREADS ? n : POOL_MAX_THREADS) : 1;
    }
    if (n_threads > POOL_MAX_THREADS) n_threads = POOL_MAX_THREADS;
    plm_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n_threads = n_threads;
    if (pthread_mutex_init(&p->mu, NULL) != 0) {
        free(p);
        return NULL;
    }
    if (pthread_cond_init(&p->work_cv, NULL) != 0) {
        pthread_mutex_destroy(&p->mu);
        free(p);
        return NULL;
    }
    if (pthread_cond_init(&p->done_cv, NULL) != 0) {
        pthread_cond_destroy(&p->work_cv);
        pthread_mutex_destroy(&p->mu);
        free(p);
        return NULL;
    }
    if (n_threads > 1) {
        p->workers = calloc((size_t)n_threads - 1, sizeof *p->workers);
        if (!p->workers) {
            plm_pool_free(p);
            return NULL;
        }
        for (int i = 0; i < n_threads - 1; i++) {
            pool_worker *w = &p->workers[i];
            w->pool = p;
            w->idx = i + 1;
            if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
                plm_pool_free(p);
                return NULL;
            }
            p->n_workers++;
        }
    }
    return p;
}

void plm_pool_free(plm_pool *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_workers; i++) pthread_join(p->workers[i].thread, NULL);
    free(p->workers);
    pthread_cond_destroy(&p->done_cv);
    pthread_cond_destroy(&p->work_cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

int plm_pool_size(const plm_pool *p)
{
    return p->n_threads;
}

void plm_pool_for(plm_pool *p, int64_t n, plm_pool_fn fn, void *ctx)
{
    if (n <= 0) return;
    int k = p->n_threads;
    if ((int64_t)k > n) k = (int)n;
    if (k <= 1) {
        fn(ctx, 0, n);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->n = n;
    p->n_chunks = k;
    p->pending = k - 1;
    p->gen++;
    pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->mu);

    int64_t begin, end;
    chunk_range(n, k, 0, &begin, &end);
    fn(ctx, begin, end);

    pthread_mutex_lock(&p->mu);
    while (p->pending > 0) pthread_cond_wait(&p->done_cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
}
