/* threadpool.c - persistent worker threads for the parallel loops of the
 * forward pass (GEMV, softmax, GELU, layer norm, attention heads). GEMMs
 * go to OpenBLAS, which has threads of its own.
 *
 * A decoder step runs a few dozen short loops, so waking sleeping threads
 * for each would cost more than the work: after a job, workers spin for a
 * few tens of microseconds watching for the next one, then sleep on a
 * condition variable. Each job is split into one chunk per thread. */
#include "cpu/threadpool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

#define SPIN_LIMIT 2000   /* pauses before sleeping: about 40 us */

struct sh_pool {
    int n_threads;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t work;
    atomic_uint generation;   /* bumped once per job */
    atomic_int pending;       /* workers still running the current job */
    atomic_int n_sleeping;
    atomic_int stop;
    sh_range_fn fn;
    void *arg;
    int n;
};

static void run_chunk(sh_pool *p, int i) {
    int chunk = (p->n + p->n_threads - 1) / p->n_threads;
    int begin = i * chunk, end = begin + chunk;
    if (end > p->n) end = p->n;
    if (begin < end) p->fn(p->arg, begin, end);
}

typedef struct {
    sh_pool *pool;
    int index;
} worker_arg;

/* Waits until the generation moves past seen (or stop); returns it. */
static unsigned wait_for_job(sh_pool *p, unsigned seen) {
    int spins = 0;
    unsigned g;
    while ((g = atomic_load(&p->generation)) == seen && !atomic_load(&p->stop)) {
        if (++spins < SPIN_LIMIT) {
            cpu_relax();
            continue;
        }
        pthread_mutex_lock(&p->mu);
        atomic_fetch_add(&p->n_sleeping, 1);
        while (atomic_load(&p->generation) == seen && !atomic_load(&p->stop))
            pthread_cond_wait(&p->work, &p->mu);
        atomic_fetch_sub(&p->n_sleeping, 1);
        pthread_mutex_unlock(&p->mu);
        spins = 0;
    }
    return g;
}

static void *worker(void *raw) {
    worker_arg *wa = raw;
    sh_pool *p = wa->pool;
    int index = wa->index;
    free(wa);
    unsigned seen = 0;
    for (;;) {
        seen = wait_for_job(p, seen);
        if (atomic_load(&p->stop)) break;
        run_chunk(p, index);
        atomic_fetch_sub(&p->pending, 1);
    }
    return NULL;
}

sh_pool *sh_pool_new(int n_threads) {
    sh_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n_threads = n_threads < 1 ? 1 : n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work, NULL);
    atomic_init(&p->generation, 0);
    atomic_init(&p->pending, 0);
    atomic_init(&p->n_sleeping, 0);
    atomic_init(&p->stop, 0);
    p->threads = calloc((size_t)p->n_threads, sizeof *p->threads);
    if (!p->threads) {
        sh_pool_free(p);
        return NULL;
    }
    for (int i = 1; i < p->n_threads; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (!wa || (wa->pool = p, wa->index = i,
                    pthread_create(&p->threads[i], NULL, worker, wa) != 0)) {
            free(wa);
            p->n_threads = i;   /* join only the threads that started */
            sh_pool_free(p);
            return NULL;
        }
    }
    return p;
}

void sh_pool_free(sh_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, 1);
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n_threads; i++)
        if (p->threads) pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->work);
    free(p->threads);
    free(p);
}

void sh_pool_run(sh_pool *p, int n, sh_range_fn fn, void *arg) {
    if (n <= 0) return;
    if (p->n_threads == 1 || n == 1) {
        fn(arg, 0, n);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    p->n = n;
    atomic_store(&p->pending, p->n_threads - 1);
    atomic_fetch_add(&p->generation, 1);   /* publishes fn, arg, n */
    if (atomic_load(&p->n_sleeping) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->work);
        pthread_mutex_unlock(&p->mu);
    }
    run_chunk(p, 0);
    while (atomic_load(&p->pending) > 0) cpu_relax();
}
