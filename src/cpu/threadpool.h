/* threadpool.h - a small persistent pool for data-parallel loops. */
#ifndef SHRUTI_CPU_THREADPOOL_H
#define SHRUTI_CPU_THREADPOOL_H

typedef struct sh_pool sh_pool;

/* fn handles items [begin, end); called from n_threads threads at most. */
typedef void (*sh_range_fn)(void *arg, int begin, int end);

/* n_threads total, including the calling thread. NULL on failure. */
sh_pool *sh_pool_new(int n_threads);
void sh_pool_free(sh_pool *p);
/* Splits [0, n) into contiguous chunks run in parallel; returns when done. */
void sh_pool_run(sh_pool *p, int n, sh_range_fn fn, void *arg);

#endif
