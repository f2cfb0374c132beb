/* test_threadpool.c - every item runs exactly once, for many sizes and
 * thread counts, and pools start and stop cleanly. */
#include "cpu/threadpool.h"
#include "test_util.h"

typedef struct {
    int *hits;
} job;

static void mark(void *arg, int begin, int end) {
    job *j = arg;
    for (int i = begin; i < end; i++) __atomic_add_fetch(&j->hits[i], 1, __ATOMIC_RELAXED);
}

int main(void) {
    for (int threads = 1; threads <= 5; threads++) {
        sh_pool *p = sh_pool_new(threads);
        CHECK(p != NULL, "pool %d", threads);
        for (int n = 0; n < 200; n += 7) {
            int hits[200] = {0};
            job j = {hits};
            for (int rep = 0; rep < 3; rep++) sh_pool_run(p, n, mark, &j);
            int ok = 1;
            for (int i = 0; i < n; i++) ok &= hits[i] == 3;
            CHECK(ok, "threads %d n %d", threads, n);
        }
        sh_pool_free(p);
    }
    sh_pool_free(NULL);
    return t_finish("test_threadpool");
}
