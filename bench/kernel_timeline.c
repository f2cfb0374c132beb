/* kernel_timeline.c - what the GPU ran and when, for any CUDA program, on a
 * machine without Nsight Systems: preloaded (LD_PRELOAD), it has CUPTI
 * record every kernel's start and end, and at exit it prints per kernel
 * its count and mean time, and per pair of kernels that follow each other
 * on a stream the mean gap between the first one's end and the second
 * one's start (negative: the second started early, as programmatic
 * dependent launches let it). Copies count as runs too, named by their
 * direction ("[copy host to device]"). That is where a decoder step's time goes
 * between its kernels: launches, graph boundaries, the host.
 *
 * KERNEL_TIMELINE_OUT=FILE also writes every kernel as a line: start and
 * end (ns, the GPU's clock), stream, name.
 *
 * usage: LD_PRELOAD=build/libkernel_timeline.so build/bench_model --device cuda medium */
#define _POSIX_C_SOURCE 200809L
#include <cupti.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BUFFER_BYTES (8u << 20)
#define MAX_NAMES 256
#define MAX_PAIRS 1024
#define SHOWN 30

typedef struct {
    uint64_t start, end;
    uint32_t stream;
    int name;   /* index into names */
} kernel_run;

/* The recorder's state: one per process, by the nature of a preloaded
 * tool (CUPTI's callbacks carry no user pointer). */
static struct {
    kernel_run *runs;
    size_t n, cap;
    const char *names[MAX_NAMES];   /* CUPTI's, shared by a kernel's records */
    int n_names;
    unsigned long dropped;
    int on;   /* CUPTI records kernels */
    pthread_mutex_t lock;   /* CUPTI hands buffers back on its own thread */
} g = {.lock = PTHREAD_MUTEX_INITIALIZER};

static int name_index(const char *name) {
    for (int i = 0; i < g.n_names; i++)
        if (g.names[i] == name || strcmp(g.names[i], name) == 0) return i;
    if (g.n_names == MAX_NAMES) return MAX_NAMES - 1;   /* the rest share the last */
    g.names[g.n_names] = name;
    return g.n_names++;
}

/* A run of a kernel or a copy, by its name. */
static void record(uint64_t start, uint64_t end, uint32_t stream, const char *name) {
    if (g.n == g.cap) {
        size_t cap = g.cap ? 2 * g.cap : 65536;
        kernel_run *more = realloc(g.runs, cap * sizeof *more);
        if (!more) {
            g.dropped++;
            return;
        }
        g.runs = more, g.cap = cap;
    }
    g.runs[g.n++] = (kernel_run){start, end, stream, name_index(name)};
}

/* A copy as a run of its own, named by its direction: what the host sends
 * between kernels shows in the gaps. */
static void record_copy(const CUpti_ActivityMemcpy6 *c) {
    static const char *names[] = {"[copy ?]", "[copy host to device]", "[copy device to host]",
                                  "[copy host to host]", "[copy device to device]"};
    int kind = c->copyKind == CUPTI_ACTIVITY_MEMCPY_KIND_HTOD   ? 1
               : c->copyKind == CUPTI_ACTIVITY_MEMCPY_KIND_DTOH ? 2
               : c->copyKind == CUPTI_ACTIVITY_MEMCPY_KIND_HTOH ? 3
               : c->copyKind == CUPTI_ACTIVITY_MEMCPY_KIND_DTOD ? 4
                                                                 : 0;
    record(c->start, c->end, c->streamId, names[kind]);
}

static void CUPTIAPI buffer_requested(uint8_t **buffer, size_t *size, size_t *max_records) {
    *buffer = aligned_alloc(8, BUFFER_BYTES);
    *size = *buffer ? BUFFER_BYTES : 0;
    *max_records = 0;
}

static void CUPTIAPI buffer_completed(CUcontext ctx, uint32_t stream, uint8_t *buffer, size_t size,
                                      size_t valid) {
    (void)ctx, (void)stream, (void)size;
    CUpti_Activity *a = NULL;
    pthread_mutex_lock(&g.lock);
    while (cuptiActivityGetNextRecord(buffer, valid, &a) == CUPTI_SUCCESS)
        if (a->kind == CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) {
            const CUpti_ActivityKernel10 *k = (const CUpti_ActivityKernel10 *)a;
            record(k->start, k->end, k->streamId, k->name);
        } else if (a->kind == CUPTI_ACTIVITY_KIND_MEMCPY) {
            record_copy((const CUpti_ActivityMemcpy6 *)a);
        }
    pthread_mutex_unlock(&g.lock);
    free(buffer);
}

static int by_start(const void *a, const void *b) {
    const kernel_run *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start;
}

/* A name as printed: at most 70 characters. */
static const char *shown(int i) {
    static char buf[2][72];
    static int k;
    k ^= 1;
    snprintf(buf[k], sizeof buf[k], "%s", g.names[i]);
    return buf[k];
}

typedef struct {
    int from, to;
    unsigned long count;
    double gap_ns;
} kernel_pair;

static void write_runs(const char *path) {
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "kernel timeline: cannot write %s\n", path);
        return;
    }
    for (size_t i = 0; i < g.n; i++)
        fprintf(f, "%llu %llu %u %s\n", (unsigned long long)g.runs[i].start,
                (unsigned long long)g.runs[i].end, g.runs[i].stream, g.names[g.runs[i].name]);
    if (fclose(f) != 0) fprintf(stderr, "kernel timeline: cannot write %s\n", path);
    else fprintf(stderr, "kernel timeline: %zu kernels written to %s\n", g.n, path);
}

static void summarise(void) {
    static unsigned long count[MAX_NAMES];
    static double total[MAX_NAMES];
    static kernel_pair pairs[MAX_PAIRS];
    int n_pairs = 0;
    qsort(g.runs, g.n, sizeof *g.runs, by_start);
    for (size_t i = 0; i < g.n; i++) {
        const kernel_run *r = &g.runs[i];
        count[r->name]++, total[r->name] += (double)(r->end - r->start);
        const kernel_run *prev = NULL;   /* the kernel before it on its stream */
        for (size_t j = i; j-- > 0 && i - j < 64;)
            if (g.runs[j].stream == r->stream) {
                prev = &g.runs[j];
                break;
            }
        if (!prev) continue;
        int p = 0;
        while (p < n_pairs && !(pairs[p].from == prev->name && pairs[p].to == r->name)) p++;
        if (p == n_pairs) {
            if (n_pairs == MAX_PAIRS) continue;
            pairs[n_pairs++] = (kernel_pair){prev->name, r->name, 0, 0.0};
        }
        pairs[p].count++, pairs[p].gap_ns += (double)r->start - (double)prev->end;
    }
    fprintf(stderr, "kernel timeline: %zu kernels (%lu not recorded)\n", g.n, g.dropped);
    fprintf(stderr, "  count     mean us   total ms  kernel\n");
    for (int shown_n = 0; shown_n < SHOWN; shown_n++) {   /* by total time, largest first */
        int best = -1;
        for (int i = 0; i < g.n_names; i++)
            if (count[i] && (best < 0 || total[i] > total[best])) best = i;
        if (best < 0) break;
        fprintf(stderr, "  %7lu %10.2f %10.2f  %s\n", count[best], total[best] / count[best] / 1e3,
                total[best] / 1e6, shown(best));
        count[best] = 0;
    }
    fprintf(stderr, "  count  mean gap us  kernel -> next kernel on its stream\n");
    for (int shown_n = 0; shown_n < SHOWN; shown_n++) {   /* by count, largest first */
        int best = -1;
        for (int p = 0; p < n_pairs; p++)
            if (pairs[p].count && (best < 0 || pairs[p].count > pairs[best].count)) best = p;
        if (best < 0) break;
        fprintf(stderr, "  %7lu %10.2f  %s\n             -> %s\n", pairs[best].count,
                pairs[best].gap_ns / pairs[best].count / 1e3, shown(pairs[best].from),
                shown(pairs[best].to));
        pairs[best].count = 0;
    }
}

__attribute__((constructor)) static void timeline_start(void) {
    g.on = cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed) == CUPTI_SUCCESS &&
           cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) == CUPTI_SUCCESS &&
           cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMCPY) == CUPTI_SUCCESS;
    if (!g.on) fprintf(stderr, "kernel timeline: CUPTI would not record kernels\n");
}

/* The records still in CUPTI's buffers, handed back: flushes until the
 * count stops growing (the buffers may come back on CUPTI's thread after
 * the flush returns). */
static size_t flush_records(void) {
    size_t n = (size_t)-1;
    for (int quiet = 0; quiet < 3;) {
        cuptiActivityFlushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
        struct timespec pause = {0, 50 * 1000 * 1000};
        nanosleep(&pause, NULL);
        pthread_mutex_lock(&g.lock);
        quiet = g.n == n ? quiet + 1 : 0;
        n = g.n;
        pthread_mutex_unlock(&g.lock);
    }
    return n;
}

__attribute__((destructor)) static void timeline_end(void) {
    /* a process that ran no kernel (a wrapper such as timeout, which the
     * preload reaches too) says nothing and leaves the file alone */
    if (!g.on || flush_records() == 0) return;
    cuptiActivityDisable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
    cuptiActivityDisable(CUPTI_ACTIVITY_KIND_MEMCPY);
    pthread_mutex_lock(&g.lock);
    const char *out = getenv("KERNEL_TIMELINE_OUT");
    if (out && *out) write_runs(out);
    summarise();
    pthread_mutex_unlock(&g.lock);
}
