/* bench_attention.c - the encoder's self-attention on the CPU, blocked
 * (cpu/block_attention.c) against whole matrices per head (an OpenBLAS
 * product, the softmax on the pool, another product: the way before),
 * alternating in one process so that the machine's drift hits both. One
 * 30 s window's attention of one layer: 1500 positions, the width and
 * heads of tiny, base, small (all heads 64 wide). Prints the medians and
 * the largest difference between the two outputs.
 *
 * usage: bench_attention [--threads N] [--runs N] */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "common/clock.h"
#include "cpu/block_attention.h"
#include "cpu/ops.h"

static float rnd(unsigned *s) {
    *s = *s * 1664525u + 1013904223u;
    return (float)((*s >> 8) & 0xffff) / 32768.0f - 1.0f;
}

static void whole_matrices(sh_pool *pool, float *out, const float *q, const float *k,
                           const float *v, int n, int d, int n_head, float scale, float *scores) {
    int dh = d / n_head;
    for (int h = 0; h < n_head; h++) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, dh, scale, q + h * dh, d,
                    k + h * dh, d, 0.0f, scores, n);
        sh_softmax_rows(pool, scores, n, n, n);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, dh, n, 1.0f, scores, n,
                    v + h * dh, d, 0.0f, out + h * dh, d);
    }
}

int main(int argc, char **argv) {
    int threads = 2, runs = 7;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--runs")) runs = atoi(argv[i + 1]);
    }
    if (threads < 1 || runs < 1 || runs > 64) {
        fprintf(stderr, "usage: bench_attention [--threads N] [--runs 1-64]\n");
        return 2;
    }
    openblas_set_num_threads(threads);
    sh_pool *pool = sh_pool_new(threads);
    const int n = 1500, dims[][2] = {{384, 6}, {512, 8}, {768, 12}};
    const char *names[] = {"tiny", "base", "small"};
    printf("encoder self-attention, one layer, %d positions, %d threads, median of %d\n", n,
           threads, runs);
    for (int s = 0; s < 3; s++) {
        int d = dims[s][0], n_head = dims[s][1];
        size_t nd = (size_t)n * d;
        float *q = malloc(nd * 4), *k = malloc(nd * 4), *v = malloc(nd * 4);
        float *a = malloc(nd * 4), *b = malloc(nd * 4), *scores = malloc((size_t)n * n * 4);
        float *scratch = malloc(sh_block_attention_floats(n, d, threads) * 4);
        unsigned seed = 5u + (unsigned)s;
        for (size_t i = 0; i < nd; i++) q[i] = 2 * rnd(&seed), k[i] = 2 * rnd(&seed), v[i] = rnd(&seed);
        float scale = 0.125f;
        double t[2][64];
        /* a first pass each way, untimed: the buffers' pages are touched */
        whole_matrices(pool, a, q, k, v, n, d, n_head, scale, scores);
        sh_block_attention(pool, threads, b, q, k, v, n, d, n_head, scale, scratch);
        for (int r = 0; r < runs; r++) {
            double t0 = sh_now_s();
            whole_matrices(pool, a, q, k, v, n, d, n_head, scale, scores);
            double t1 = sh_now_s();
            sh_block_attention(pool, threads, b, q, k, v, n, d, n_head, scale, scratch);
            double t2 = sh_now_s();
            t[0][r] = (t1 - t0) * 1000, t[1][r] = (t2 - t1) * 1000;
        }
        double diff = 0;
        for (size_t i = 0; i < nd; i++) diff = fmax(diff, fabs(a[i] - b[i]));
        printf("  %-5s d %4d heads %2d: whole matrices %7.2f ms, blocked %7.2f ms (%.2fx), "
               "max difference %.2g\n",
               names[s], d, n_head, bench_median(t[0], runs), bench_median(t[1], runs),
               bench_median(t[0], runs) / bench_median(t[1], runs), diff);
        free(q), free(k), free(v), free(a), free(b), free(scores), free(scratch);
    }
    sh_pool_free(pool);
    return 0;
}
