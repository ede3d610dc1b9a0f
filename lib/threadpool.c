/* A fork-join pool tuned for many short jobs: a decoding step issues about a hundred
 * fr_pool_run calls of a few microseconds each, so a futex round trip per call would cost
 * as much as the work.
 *
 * - Workers spin on a generation counter for a short while after each job (yielding after
 *   the first microseconds), then sleep on a condition variable. The caller signals only
 *   when some worker is known to be asleep (a Dekker-style handshake on `sleepers`).
 * - Each job has one slot per thread. A worker claims its slot with a CAS before running
 *   it; the caller, once done with slot 0, claims and runs every slot not yet claimed. A
 *   worker that is asleep, descheduled or late (a loaded machine, a host's busy threads)
 *   therefore never stalls the job: at worst the caller runs it alone. Results do not
 *   change, since every slot ith still runs exactly once with the same (ith, nth).
 * - The caller waits for claimed slots the same way: spin, then a condition variable. */
#include "threadpool.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FR_CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define FR_CPU_RELAX() __asm__ __volatile__("yield")
#else
#define FR_CPU_RELAX() ((void)0)
#endif

/* How long an idle thread spins before it sleeps. Long enough to bridge the gaps between
 * the matrix products of one token (attention, norms: a few microseconds), short enough
 * that an idle context does not hold a core. */
#define FR_POOL_SPIN_US_DEFAULT 100
/* After this much pure spinning a spinner yields between checks, so that when there are
 * more runnable threads than cores the thread it waits for can run: without it an
 * oversubscribed pool loses a time slice per job. */
#define FR_POOL_PURE_SPIN_NS 10000

typedef struct fr_worker {
    /* The generation whose slot `ith` was last claimed (by the worker or the caller). */
    alignas(64) atomic_uint claimed;
    fr_pool *pool;
    int ith;
} fr_worker;

struct fr_pool {
    int n_threads;
    int n_started; /* OS threads running (n_threads - 1 once created) */
    pthread_t *threads;
    fr_worker *workers; /* workers[i] owns slot i + 1 */

    pthread_mutex_t mu;
    pthread_cond_t wake; /* workers: a new generation was published */
    pthread_cond_t done; /* caller: the last claimed slot finished */

    atomic_uint gen;     /* incremented once per job (and once at shutdown) */
    atomic_int pending;  /* slots 1..n-1 of the current job not finished */
    atomic_int sleepers; /* workers blocked (or about to block) on `wake` */
    atomic_int caller_waiting;
    atomic_bool stop;
    atomic_int spin_us;

    /* The job. Written by the caller before the release increment of gen; read only by a
     * thread that has claimed a slot of that generation, which keeps the job alive. */
    fr_pool_fn fn;
    void *arg;
};

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The condition a spinner waits for: a new generation (workers) or a finished job
 * (caller). */
static bool ready(fr_pool *pool, bool caller, unsigned seen)
{
    if (caller)
        return atomic_load_explicit(&pool->pending, memory_order_acquire) == 0;
    return atomic_load_explicit(&pool->gen, memory_order_acquire) != seen;
}

/* Spins until ready() or the spin budget is spent; true when ready. The clock is read
 * every 64 pauses, which keeps the check cheap. */
static bool spin(fr_pool *pool, bool caller, unsigned seen)
{
    int64_t budget = (int64_t)atomic_load_explicit(&pool->spin_us, memory_order_relaxed) * 1000;
    int64_t start = 0;
    for (unsigned i = 0;; i++) {
        if (ready(pool, caller, seen))
            return true;
        if ((i & 63) == 0) {
            int64_t t = now_ns();
            if (i == 0)
                start = t;
            else if (t - start >= budget)
                return false;
            else if (t - start >= FR_POOL_PURE_SPIN_NS)
                sched_yield();
        }
        FR_CPU_RELAX();
    }
}

static unsigned wait_for_job(fr_pool *pool, unsigned seen)
{
    if (!spin(pool, false, seen)) {
        pthread_mutex_lock(&pool->mu);
        /* seq_cst store then load; the caller does the mirror image (gen, then sleepers),
         * so at least one of us sees the other and no wake-up is lost. */
        atomic_fetch_add(&pool->sleepers, 1);
        while (atomic_load(&pool->gen) == seen)
            pthread_cond_wait(&pool->wake, &pool->mu);
        atomic_fetch_sub(&pool->sleepers, 1);
        pthread_mutex_unlock(&pool->mu);
    }
    return atomic_load_explicit(&pool->gen, memory_order_acquire);
}

/* Claims slot w->ith of job g; false when someone already has, or when g is stale. While
 * job g runs, `claimed` is g - 1 (free) or g (taken): it moves only from g - 1 to g, so a
 * worker that saw g late cannot claim anything once g is over. And job g cannot finish
 * without a claimed slot, so a successful claimer may read fn and arg. */
static bool claim(fr_worker *w, unsigned g)
{
    unsigned expected = g - 1;
    return atomic_compare_exchange_strong(&w->claimed, &expected, g);
}

static void *worker_main(void *p)
{
    fr_worker *w = p;
    fr_pool *pool = w->pool;
    /* Not the current generation: a thread that starts late must still see a shutdown
     * that happened before it ran (jobs it missed were run by the caller). */
    unsigned seen = 0;
    for (;;) {
        seen = wait_for_job(pool, seen);
        if (atomic_load_explicit(&pool->stop, memory_order_acquire))
            break;
        if (!claim(w, seen))
            continue; /* the caller ran this slot already */
        pool->fn(pool->arg, w->ith, pool->n_threads);
        if (atomic_fetch_sub(&pool->pending, 1) == 1 && atomic_load(&pool->caller_waiting)) {
            /* Holding the mutex guarantees the caller is inside pthread_cond_wait (it
             * checks pending with the mutex held), so the signal cannot be missed. */
            pthread_mutex_lock(&pool->mu);
            pthread_cond_signal(&pool->done);
            pthread_mutex_unlock(&pool->mu);
        }
    }
    return NULL;
}

static void wake_workers(fr_pool *pool)
{
    if (atomic_load(&pool->sleepers) > 0) {
        pthread_mutex_lock(&pool->mu);
        pthread_cond_broadcast(&pool->wake);
        pthread_mutex_unlock(&pool->mu);
    }
}

static void shutdown_workers(fr_pool *pool)
{
    atomic_store_explicit(&pool->stop, true, memory_order_relaxed);
    atomic_fetch_add(&pool->gen, 1);
    pthread_mutex_lock(&pool->mu);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->mu);
    for (int i = 0; i < pool->n_started; i++)
        pthread_join(pool->threads[i], NULL);
    pool->n_started = 0;
}

free_status fr_pool_create(int n_threads, fr_pool **out, fr_error *err)
{
    if (!out)
        return fr_fail(err, FREE_ERR_INVALID_ARG, "fr_pool_create: out is NULL");
    *out = NULL;
    if (n_threads < 1 || n_threads > 1024)
        return fr_fail(err, FREE_ERR_INVALID_ARG,
                       "thread pool: n_threads %d is outside [1, 1024]", n_threads);

    fr_pool *pool = calloc(1, sizeof *pool);
    if (!pool)
        return fr_fail(err, FREE_ERR_NOMEM, "thread pool: out of memory");
    pool->n_threads = n_threads;
    atomic_init(&pool->gen, 0);
    atomic_init(&pool->pending, 0);
    atomic_init(&pool->sleepers, 0);
    atomic_init(&pool->caller_waiting, 0);
    atomic_init(&pool->stop, false);
    atomic_init(&pool->spin_us, FR_POOL_SPIN_US_DEFAULT);
    if (n_threads == 1) {
        *out = pool;
        return FREE_OK;
    }

    pool->threads = calloc((size_t)n_threads - 1, sizeof *pool->threads);
    pool->workers = aligned_alloc(64, ((size_t)n_threads - 1) * sizeof *pool->workers);
    if (!pool->threads || !pool->workers) {
        free(pool->threads);
        free(pool->workers);
        free(pool);
        return fr_fail(err, FREE_ERR_NOMEM, "thread pool: out of memory");
    }
    int rc = pthread_mutex_init(&pool->mu, NULL);
    if (rc == 0 && (rc = pthread_cond_init(&pool->wake, NULL)) != 0)
        pthread_mutex_destroy(&pool->mu);
    if (rc == 0 && (rc = pthread_cond_init(&pool->done, NULL)) != 0) {
        pthread_cond_destroy(&pool->wake);
        pthread_mutex_destroy(&pool->mu);
    }
    if (rc != 0) {
        free(pool->threads);
        free(pool->workers);
        free(pool);
        return fr_fail(err, FREE_ERR_INTERNAL, "thread pool: cannot create a mutex: %s",
                       strerror(rc));
    }

    for (int i = 0; i < n_threads - 1; i++) {
        atomic_init(&pool->workers[i].claimed, 0);
        pool->workers[i].pool = pool;
        pool->workers[i].ith = i + 1;
    }
    for (int i = 0; i < n_threads - 1; i++) {
        rc = pthread_create(&pool->threads[i], NULL, worker_main, &pool->workers[i]);
        if (rc != 0) {
            fr_pool_destroy(pool);
            return fr_fail(err, rc == EAGAIN ? FREE_ERR_NOMEM : FREE_ERR_INTERNAL,
                           "thread pool: cannot start thread %d of %d: %s", i + 2, n_threads,
                           strerror(rc));
        }
        pool->n_started++;
    }
    *out = pool;
    return FREE_OK;
}

void fr_pool_destroy(fr_pool *pool)
{
    if (!pool)
        return;
    if (pool->n_threads > 1) {
        shutdown_workers(pool);
        pthread_cond_destroy(&pool->done);
        pthread_cond_destroy(&pool->wake);
        pthread_mutex_destroy(&pool->mu);
    }
    free(pool->threads);
    free(pool->workers);
    free(pool);
}

int fr_pool_size(const fr_pool *pool)
{
    return pool ? pool->n_threads : 1;
}

void fr_pool_set_spin_us(fr_pool *pool, int microseconds)
{
    if (pool)
        atomic_store_explicit(&pool->spin_us, microseconds < 0 ? 0 : microseconds,
                              memory_order_relaxed);
}

void fr_pool_run(fr_pool *pool, fr_pool_fn fn, void *arg)
{
    if (!pool || pool->n_threads == 1) {
        fn(arg, 0, 1);
        return;
    }
    const int nth = pool->n_threads;
    pool->fn = fn;
    pool->arg = arg;
    atomic_store_explicit(&pool->pending, nth - 1, memory_order_relaxed);
    /* seq_cst: publishes the job (release) and pairs with `sleepers` in wait_for_job. */
    unsigned g = atomic_fetch_add(&pool->gen, 1) + 1;
    wake_workers(pool);

    fn(arg, 0, nth);
    for (int i = 1; i < nth; i++) {
        if (claim(&pool->workers[i - 1], g)) {
            fn(arg, i, nth);
            atomic_fetch_sub(&pool->pending, 1);
        }
    }

    if (!spin(pool, true, 0)) {
        pthread_mutex_lock(&pool->mu);
        atomic_store(&pool->caller_waiting, 1);
        while (atomic_load(&pool->pending) != 0)
            pthread_cond_wait(&pool->done, &pool->mu);
        atomic_store(&pool->caller_waiting, 0);
        pthread_mutex_unlock(&pool->mu);
    }
}
