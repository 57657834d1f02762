#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/pool.h"

typedef struct sum_ctx {
    atomic_llong sum;
    atomic_int calls;
    atomic_int empty_calls;
    unsigned char *seen; /* one byte per index: visits */
} sum_ctx;

static void sum_range(void *p, int64_t begin, int64_t end)
{
    sum_ctx *c = p;
    long long s = 0;
    for (int64_t i = begin; i < end; i++) {
        s += i;
        if (c->seen) c->seen[i]++;
    }
    atomic_fetch_add(&c->sum, s);
    atomic_fetch_add(&c->calls, 1);
    if (begin >= end) atomic_fetch_add(&c->empty_calls, 1);
}

/* Runs a sum over [0, n) and checks every index is visited exactly once. */
static void check_sum(plm_pool *p, int64_t n)
{
    sum_ctx c;
    atomic_init(&c.sum, 0);
    atomic_init(&c.calls, 0);
    atomic_init(&c.empty_calls, 0);
    c.seen = calloc((size_t)n + 1, 1);
    plm_pool_for(p, n, sum_range, &c);
    cr_assert_eq(atomic_load(&c.sum), (long long)(n * (n - 1) / 2), "n=%lld threads=%d",
                 (long long)n, plm_pool_size(p));
    for (int64_t i = 0; i < n; i++) cr_assert_eq(c.seen[i], 1, "index %lld", (long long)i);
    int want_calls = n <= 0 ? 0 : n < plm_pool_size(p) ? (int)n : plm_pool_size(p);
    cr_assert_eq(atomic_load(&c.calls), want_calls, "n=%lld", (long long)n);
    cr_assert_eq(atomic_load(&c.empty_calls), 0);
    free(c.seen);
}

Test(pool, sums_ranges_with_1_2_4_threads)
{
    const int threads[] = {1, 2, 4};
    const int64_t ns[] = {0, 1, 7, 1000003};
    for (int t = 0; t < 3; t++) {
        plm_pool *p = plm_pool_new(threads[t]);
        cr_assert_not_null(p);
        cr_assert_eq(plm_pool_size(p), threads[t]);
        for (int k = 0; k < 4; k++) check_sum(p, ns[k]);
        plm_pool_free(p);
    }
}

Test(pool, reused_across_many_calls)
{
    plm_pool *p = plm_pool_new(4);
    for (int64_t i = 0; i < 3000; i++) check_sum(p, i % 23);
    check_sum(p, 100000);
    plm_pool_free(p);
}

typedef struct tid_ctx {
    pthread_mutex_t mu;
    pthread_t ids[16];
    int n;
} tid_ctx;

static void record_thread(void *p, int64_t begin, int64_t end)
{
    tid_ctx *c = p;
    pthread_mutex_lock(&c->mu);
    c->ids[c->n++] = pthread_self();
    pthread_mutex_unlock(&c->mu);
}

/* Chunks are assigned to threads, not taken from a queue: each runs on its own thread. */
Test(pool, caller_and_workers_share_the_work)
{
    plm_pool *p = plm_pool_new(4);
    tid_ctx c = {.n = 0};
    pthread_mutex_init(&c.mu, NULL);
    plm_pool_for(p, 4, record_thread, &c);
    cr_assert_eq(c.n, 4);
    int has_caller = 0;
    for (int i = 0; i < 4; i++) {
        has_caller |= pthread_equal(c.ids[i], pthread_self()) != 0;
        for (int j = 0; j < i; j++)
            cr_assert(!pthread_equal(c.ids[i], c.ids[j]), "chunks %d and %d on one thread", i, j);
    }
    cr_assert(has_caller, "the calling thread runs a chunk");
    pthread_mutex_destroy(&c.mu);
    plm_pool_free(p);
}

Test(pool, defaults_to_online_cpus)
{
    plm_pool *p = plm_pool_new(0);
    cr_assert_not_null(p);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    cr_assert_eq(plm_pool_size(p), n > 0 ? (int)n : 1);
    check_sum(p, 12345);
    plm_pool_free(p);
    plm_pool_free(NULL);
}

Test(pool, pools_are_independent)
{
    plm_pool *a = plm_pool_new(2), *b = plm_pool_new(3);
    check_sum(a, 999);
    check_sum(b, 999);
    plm_pool_free(a);
    check_sum(b, 5);
    plm_pool_free(b);
}
