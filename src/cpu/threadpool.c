/* threadpool.c - persistent worker threads for the elementwise parts of the
 * forward pass (softmax, GELU, layer norm, attention heads). GEMMs go to
 * OpenBLAS, which has threads of its own. Workers sleep on a condition
 * variable between jobs; each job is split into one chunk per thread. */
#include "cpu/threadpool.h"

#include <pthread.h>
#include <stdlib.h>

struct sh_pool {
    int n_threads;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t work, done;
    unsigned generation;
    int pending;       /* workers still running the current job */
    int stop;
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

static void *worker(void *raw) {
    worker_arg *wa = raw;
    sh_pool *p = wa->pool;
    int index = wa->index;
    free(wa);
    unsigned seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->generation == seen) pthread_cond_wait(&p->work, &p->mu);
        if (p->stop) break;
        seen = p->generation;
        pthread_mutex_unlock(&p->mu);
        run_chunk(p, index);
        pthread_mutex_lock(&p->mu);
        if (--p->pending == 0) pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

sh_pool *sh_pool_new(int n_threads) {
    sh_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n_threads = n_threads < 1 ? 1 : n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work, NULL);
    pthread_cond_init(&p->done, NULL);
    p->threads = calloc((size_t)p->n_threads, sizeof *p->threads);
    if (!p->threads) {
        sh_pool_free(p);
        return NULL;
    }
    for (int i = 1; i < p->n_threads; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (!wa) {
            p->n_threads = i;
            sh_pool_free(p);
            return NULL;
        }
        wa->pool = p;
        wa->index = i;
        if (pthread_create(&p->threads[i], NULL, worker, wa) != 0) {
            free(wa);
            p->n_threads = i;
            sh_pool_free(p);
            return NULL;
        }
    }
    return p;
}

void sh_pool_free(sh_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n_threads; i++)
        if (p->threads) pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->work);
    pthread_cond_destroy(&p->done);
    free(p->threads);
    free(p);
}

int sh_pool_threads(const sh_pool *p) { return p->n_threads; }

void sh_pool_run(sh_pool *p, int n, sh_range_fn fn, void *arg) {
    if (n <= 0) return;
    if (p->n_threads == 1 || n == 1) {
        fn(arg, 0, n);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->arg = arg;
    p->n = n;
    p->pending = p->n_threads - 1;
    p->generation++;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
    run_chunk(p, 0);
    pthread_mutex_lock(&p->mu);
    while (p->pending > 0) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}
