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

/* One weight row against R input rows; R is a constant after inlining. */
static inline __attribute__((always_inline)) void dot_block(float *y, int ldy, const float *x,
                                                            int ldx, const float *w, int ldw,
                                                            const float *b, int n_in, int j0,
                                                            int j1, float alpha, const int R) {
    for (int j = j0; j < j1; j++) {
        const float *wr = w + (size_t)j * ldw;
        v8 acc[SH_GEMV_MAX_ROWS] = {0};
        int k = 0;
        for (; k + 8 <= n_in; k += 8) {
            v8 wv = load8(wr + k);
            for (int r = 0; r < R; r++) acc[r] += wv * load8(x + (size_t)r * ldx + k);
        }
        for (int r = 0; r < R; r++) {
            float s = hsum8(acc[r]);
            for (int kk = k; kk < n_in; kk++) s += wr[kk] * x[(size_t)r * ldx + kk];
            y[(size_t)r * ldy + j] = alpha * s + (b ? b[j] : 0.0f);
        }
    }
}

__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
void sh_dot_rows(float *y, int ldy, const float *x, int ldx, int rows, const float *w, int ldw,
                 const float *b, int n_in, int j0, int j1, float alpha) {
    switch (rows) {
#define CASE(R) \
    case R: dot_block(y, ldy, x, ldx, w, ldw, b, n_in, j0, j1, alpha, R); break;
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
