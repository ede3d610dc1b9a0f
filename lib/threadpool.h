/* A small fork-join thread pool owned by a context. The calling thread takes part as
 * worker 0, so a pool of n threads starts n - 1 OS threads. */
#ifndef FREE_THREADPOOL_H
#define FREE_THREADPOOL_H

#include "status.h"

typedef struct fr_pool fr_pool;

/* fn(arg, ith, nth) is called once for every ith in [0, nth). */
typedef void (*fr_pool_fn)(void *arg, int ith, int nth);

free_status fr_pool_create(int n_threads, fr_pool **out, fr_error *err);
void fr_pool_destroy(fr_pool *pool);          /* NULL is a no-op */
int fr_pool_size(const fr_pool *pool);        /* 1 for NULL */
/* Runs fn on every thread of the pool (the caller included) and waits for all. */
void fr_pool_run(fr_pool *pool, fr_pool_fn fn, void *arg);
/* How long idle threads (and the caller waiting for the others) spin before sleeping on a
 * condition variable; default 100 us. 0 sleeps at once (lowest CPU use, highest latency). */
void fr_pool_set_spin_us(fr_pool *pool, int microseconds);

#endif
