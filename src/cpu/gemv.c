/* gemv.c - the decoder's memory-bound products. A step multiplies a few
 * rows (one per beam) by weight matrices that do not fit in cache, so the
 * cost is reading the weights: each weight row is loaded once and used for
 * every input row. Compiled for AVX-512, AVX2+FMA and plain x86-64, chosen
 * at run time (GCC target_clones). */
#include "cpu/gemv.h"

#include <string.h>

typedef float v8 __attribute__((vector_size(32)));

static inline v8 load8(const float *p) {
    v8 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline float hsum8(v8 v) {
    return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

static inline float finish(v8 acc, const float *w, const float *x, int k, int n_in) {
    float s = hsum8(acc);
    for (; k < n_in; k++) s += w[k] * x[k];
    return s;
}

/* One input row against four weight rows: four independent FMA chains. */
static inline __attribute__((always_inline)) void dot_1x4(float *y, const float *x,
                                                          const float *w, int ldw, const float *b,
                                                          int n_in, int j, float alpha) {
    const float *w0 = w + (size_t)j * ldw, *w1 = w0 + ldw, *w2 = w1 + ldw, *w3 = w2 + ldw;
    v8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    int k = 0;
    size_t ahead = (size_t)4 * ldw;   /* the same spot of the next block */
    for (; k + 8 <= n_in; k += 8) {
        if ((k & 15) == 0) {
            __builtin_prefetch(w0 + ahead + k);
            __builtin_prefetch(w1 + ahead + k);
            __builtin_prefetch(w2 + ahead + k);
            __builtin_prefetch(w3 + ahead + k);
        }
        v8 xv = load8(x + k);
        a0 += load8(w0 + k) * xv;
        a1 += load8(w1 + k) * xv;
        a2 += load8(w2 + k) * xv;
        a3 += load8(w3 + k) * xv;
    }
    y[j] = alpha * finish(a0, w0, x, k, n_in) + (b ? b[j] : 0.0f);
    y[j + 1] = alpha * finish(a1, w1, x, k, n_in) + (b ? b[j + 1] : 0.0f);
    y[j + 2] = alpha * finish(a2, w2, x, k, n_in) + (b ? b[j + 2] : 0.0f);
    y[j + 3] = alpha * finish(a3, w3, x, k, n_in) + (b ? b[j + 3] : 0.0f);
}

/* One weight row against R input rows (R a constant after inlining). */
static inline __attribute__((always_inline)) void dot_rx1(float *y, int ldy, const float *x,
                                                          int ldx, const float *w, int ldw,
                                                          const float *b, int n_in, int j,
                                                          float alpha, const int R) {
    const float *wr = w + (size_t)j * ldw;
    v8 acc[SH_GEMV_MAX_ROWS];
    for (int r = 0; r < R; r++) acc[r] = (v8){0};
    int k = 0;
    for (; k + 8 <= n_in; k += 8) {
        if ((k & 15) == 0) __builtin_prefetch(wr + 2 * (size_t)ldw + k);
        v8 wv = load8(wr + k);
        for (int r = 0; r < R; r++) acc[r] += wv * load8(x + (size_t)r * ldx + k);
    }
    for (int r = 0; r < R; r++)
        y[(size_t)r * ldy + j] = alpha * finish(acc[r], wr, x + (size_t)r * ldx, k, n_in) +
                                 (b ? b[j] : 0.0f);
}

static inline __attribute__((always_inline)) void dot_rows_fixed(
    float *y, int ldy, const float *x, int ldx, const float *w, int ldw, const float *b, int n_in,
    int j0, int j1, float alpha, const int R) {
    int j = j0;
    if (R == 1)
        for (; j + 4 <= j1; j += 4) dot_1x4(y, x, w, ldw, b, n_in, j, alpha);
    for (; j < j1; j++) dot_rx1(y, ldy, x, ldx, w, ldw, b, n_in, j, alpha, R);
}

__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
void sh_dot_rows(float *y, int ldy, const float *x, int ldx, int rows, const float *w, int ldw,
                 const float *b, int n_in, int j0, int j1, float alpha) {
    switch (rows) {
#define CASE(R) \
    case R: dot_rows_fixed(y, ldy, x, ldx, w, ldw, b, n_in, j0, j1, alpha, R); break;
        CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) CASE(8)
#undef CASE
    default: break;
    }
}

typedef struct {
    float *y;
    const float *x, *w, *b;
    int ldy, ldx, rows, ldw, n_in;
    float alpha;
} gemv_job;

static void gemv_range(void *arg, int begin, int end) {
    gemv_job *j = arg;
    sh_dot_rows(j->y, j->ldy, j->x, j->ldx, j->rows, j->w, j->ldw, j->b, j->n_in, begin, end,
                j->alpha);
}

void sh_gemv_rows(sh_pool *pool, float *y, int ldy, const float *x, int ldx, int rows,
                  const float *w, int ldw, const float *b, int n_in, int n_out, float alpha) {
    gemv_job j = {y, x, w, b, ldy, ldx, rows, ldw, n_in, alpha};
    if ((long)n_out * n_in < 32768) gemv_range(&j, 0, n_out);
    else sh_pool_run(pool, n_out, gemv_range, &j);
}
