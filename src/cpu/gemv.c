/* gemv.c - the decoder's memory-bound products. A step multiplies a few
 * rows (one per beam) by weight matrices that do not fit in cache, so the
 * cost is reading the weights: each weight row is loaded once and used for
 * every input row. Compiled for AVX-512, AVX2+FMA and plain x86-64, chosen
 * at run time (GCC target_clones). */
#include "cpu/gemv.h"

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "common/f16.h"

typedef float v8 __attribute__((vector_size(32)));

static inline v8 load8(const float *p) {
    v8 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline float hsum8(v8 v) {
    return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

/* Eight halves widened to floats: F16C where the CPU has it, else bit by
 * bit (exact either way). */
__attribute__((target("avx2,fma,f16c"))) static inline v8 load8h_f16c(const uint16_t *p) {
    __m128i h = _mm_loadu_si128((const __m128i *)p);
    return (v8)_mm256_cvtph_ps(h);
}

static inline v8 load8h_soft(const uint16_t *p) {
    v8 v;
    for (int i = 0; i < 8; i++) v[i] = sh_f16_to_f32(p[i]);
    return v;
}

#define F32_AS_FLOAT(v) (v)

/* The kernels, written once for float32 and once for half weights. */
#define DEFINE_DOT_ROWS(S, WT, LOADW, TOF, ATTR, EXPORT_ATTR) \
static inline __attribute__((always_inline)) ATTR float finish_##S(v8 acc, const WT *w, const float *x, int k, int n_in) { \
    float s = hsum8(acc); \
    for (; k < n_in; k++) s += TOF(w[k]) * x[k]; \
    return s; \
} \
 \
/* One input row against four weight rows: four independent FMA chains. */ \
static inline __attribute__((always_inline)) ATTR void dot_1x4_##S(float *y, const float *x, \
                                                          const WT *w, int ldw, const float *b, \
                                                          int n_in, int j, float alpha) { \
    const WT *w0 = w + (size_t)j * ldw, *w1 = w0 + ldw, *w2 = w1 + ldw, *w3 = w2 + ldw; \
    v8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}; \
    int k = 0; \
    size_t ahead = (size_t)32 * ldw;   /* 32 rows on: far enough to hide DRAM latency */ \
    for (; k + 8 <= n_in; k += 8) { \
        if ((k & 15) == 0) { \
            __builtin_prefetch(w0 + ahead + k); \
            __builtin_prefetch(w1 + ahead + k); \
            __builtin_prefetch(w2 + ahead + k); \
            __builtin_prefetch(w3 + ahead + k); \
        } \
        v8 xv = load8(x + k); \
        a0 += LOADW(w0 + k) * xv; \
        a1 += LOADW(w1 + k) * xv; \
        a2 += LOADW(w2 + k) * xv; \
        a3 += LOADW(w3 + k) * xv; \
    } \
    y[j] = alpha * finish_##S(a0, w0, x, k, n_in) + (b ? b[j] : 0.0f); \
    y[j + 1] = alpha * finish_##S(a1, w1, x, k, n_in) + (b ? b[j + 1] : 0.0f); \
    y[j + 2] = alpha * finish_##S(a2, w2, x, k, n_in) + (b ? b[j + 2] : 0.0f); \
    y[j + 3] = alpha * finish_##S(a3, w3, x, k, n_in) + (b ? b[j + 3] : 0.0f); \
} \
 \
/* One weight row against R input rows (R a constant after inlining). */ \
static inline __attribute__((always_inline)) ATTR void dot_rx1_##S(float *y, int ldy, const float *x, \
                                                          int ldx, const WT *w, int ldw, \
                                                          const float *b, int n_in, int j, \
                                                          float alpha, const int R) { \
    const WT *wr = w + (size_t)j * ldw; \
    v8 acc[SH_GEMV_MAX_ROWS]; \
    for (int r = 0; r < R; r++) acc[r] = (v8){0}; \
    int k = 0; \
    for (; k + 8 <= n_in; k += 8) { \
        if ((k & 15) == 0) __builtin_prefetch(wr + 16 * (size_t)ldw + k); \
        v8 wv = LOADW(wr + k); \
        for (int r = 0; r < R; r++) acc[r] += wv * load8(x + (size_t)r * ldx + k); \
    } \
    for (int r = 0; r < R; r++) \
        y[(size_t)r * ldy + j] = alpha * finish_##S(acc[r], wr, x + (size_t)r * ldx, k, n_in) + \
                                 (b ? b[j] : 0.0f); \
} \
 \
static inline __attribute__((always_inline)) ATTR void dot_rows_fixed_##S( \
    float *y, int ldy, const float *x, int ldx, const WT *w, int ldw, const float *b, int n_in, \
    int j0, int j1, float alpha, const int R) { \
    int j = j0; \
    if (R == 1) \
        for (; j + 4 <= j1; j += 4) dot_1x4_##S(y, x, w, ldw, b, n_in, j, alpha); \
    for (; j < j1; j++) dot_rx1_##S(y, ldy, x, ldx, w, ldw, b, n_in, j, alpha, R); \
} \
 \
EXPORT_ATTR \
void sh_dot_rows##S(float *y, int ldy, const float *x, int ldx, int rows, const WT *w, int ldw, \
                 const float *b, int n_in, int j0, int j1, float alpha) { \
    switch (rows) { \
        case 1: dot_rows_fixed_##S(y, ldy, x, ldx, w, ldw, b, n_in, j0, j1, alpha, 1); break; \
        case 2: dot_rows_fixed_##S(y, ldy, x, ldx, w, ldw, b, n_in, j0, j1, alpha, 2); break; \
        case 3: dot_rows_fixed_##S(y, ldy, x, ldx, w, ldw, b, n_in, j0, j1, alpha, 3); break; \
        case 4: dot_rows_fixed_##S(y, ldy, x, ldx, w, ldw, b, n_in, j0, j1, alpha, 4); break; \
        case 5: dot_rows_fixed_##S(y, ldy, x, ldx, w, ldw, b, n_in, j0, j1, alpha, 5); break; \
        case 6: dot_rows_fixed_##S(y, ldy, x, ldx, w, ldw, b, n_in, j0, j1, alpha, 6); break; \
        case 7: dot_rows_fixed_##S(y, ldy, x, ldx, w, ldw, b, n_in, j0, j1, alpha, 7); break; \
        case 8: dot_rows_fixed_##S(y, ldy, x, ldx, w, ldw, b, n_in, j0, j1, alpha, 8); break; \
    default: break; \
    } \
}

#define NO_ATTR
#define CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define F16C_ATTR __attribute__((target("avx2,fma,f16c")))
DEFINE_DOT_ROWS(, float, load8, F32_AS_FLOAT, NO_ATTR, CLONES)
DEFINE_DOT_ROWS(_f16c, uint16_t, load8h_f16c, sh_f16_to_f32, F16C_ATTR, F16C_ATTR)
DEFINE_DOT_ROWS(_f16soft, uint16_t, load8h_soft, sh_f16_to_f32, NO_ATTR, NO_ATTR)

void sh_dot_rows_f16(float *y, int ldy, const float *x, int ldx, int rows, const uint16_t *w,
                     int ldw, const float *b, int n_in, int j0, int j1, float alpha) {
    if (__builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx2") &&
        __builtin_cpu_supports("fma"))
        sh_dot_rows_f16c(y, ldy, x, ldx, rows, w, ldw, b, n_in, j0, j1, alpha);
    else
        sh_dot_rows_f16soft(y, ldy, x, ldx, rows, w, ldw, b, n_in, j0, j1, alpha);
}

typedef struct {
    float *y;
    const float *x, *b;
    sh_mat w;
    int ldy, ldx, rows, ldw, n_in;
    float alpha;
} gemv_job;

static void gemv_range(void *arg, int begin, int end) {
    gemv_job *j = arg;
    if (j->w.f16)
        sh_dot_rows_f16(j->y, j->ldy, j->x, j->ldx, j->rows, j->w.data, j->ldw, j->b, j->n_in,
                        begin, end, j->alpha);
    else
        sh_dot_rows(j->y, j->ldy, j->x, j->ldx, j->rows, j->w.data, j->ldw, j->b, j->n_in, begin,
                    end, j->alpha);
}

void sh_gemv_rows(sh_pool *pool, float *y, int ldy, const float *x, int ldx, int rows, sh_mat w,
                  int ldw, const float *b, int n_in, int n_out, float alpha) {
    gemv_job j = {y, x, b, w, ldy, ldx, rows, ldw, n_in, alpha};
    if ((long)n_out * n_in < 32768) gemv_range(&j, 0, n_out);
    else sh_pool_run(pool, n_out, gemv_range, &j);
}
