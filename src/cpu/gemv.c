/* gemv.c - the decoder's memory-bound products. A step multiplies a few
 * rows (one per beam) by weight matrices that do not fit in cache, so the
 * cost is reading the weights: each weight row is loaded once and used for
 * every input row. Compiled for AVX-512, AVX2+FMA and plain x86-64, chosen
 * at run time (GCC target_clones). */
#include "cpu/gemv.h"

#include "cpu/vmath.h"

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

typedef float v16 __attribute__((vector_size(64)));

__attribute__((target("avx512f,avx512vl,fma,f16c"))) static inline v16 load16(const float *p) {
    v16 v;
    memcpy(&v, p, sizeof v);
    return v;
}

__attribute__((target("avx512f,avx512vl,fma,f16c"))) static inline float hsum16(v16 v) {
    v8 lo = {v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]};
    v8 hi = {v[8], v[9], v[10], v[11], v[12], v[13], v[14], v[15]};
    return hsum8(lo + hi);
}

__attribute__((target("avx512f,avx512vl,fma,f16c"))) static inline v16 load16h_avx512(const uint16_t *p) {
    __m256i h = _mm256_loadu_si256((const __m256i *)p);
    return (v16)_mm512_cvtph_ps(h);
}

static inline v8 load8h_soft(const uint16_t *p) {
    v8 v;
    for (int i = 0; i < 8; i++) v[i] = sh_f16_to_f32(p[i]);
    return v;
}

#define F32_AS_FLOAT(v) (v)

/* The kernels, written once for float32 and once for half weights. */
#define DEFINE_DOT_ROWS(S, WT, VT, VN, LOADX, LOADW, HSUM, TOF, ATTR, EXPORT_ATTR) \
static inline __attribute__((always_inline)) ATTR float finish_##S(VT acc, const WT *w, const float *x, int k, int n_in) { \
    float s = HSUM(acc); \
    for (; k < n_in; k++) s += TOF(w[k]) * x[k]; \
    return s; \
} \
 \
/* One input row against one weight row, four independent FMA chains: the \
 * weights stream through in one sequential pass. */ \
static inline __attribute__((always_inline)) ATTR void dot_1x1_##S(float *y, const float *x, \
                                                          const WT *w, int ldw, const float *b, \
                                                          int n_in, int j, float alpha) { \
    const WT *wr = w + (size_t)j * ldw; \
    VT a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}; \
    int k = 0; \
    for (; k + 4 * VN <= n_in; k += 4 * VN) { \
        a0 += LOADW(wr + k) * LOADX(x + k); \
        a1 += LOADW(wr + k + VN) * LOADX(x + k + VN); \
        a2 += LOADW(wr + k + 2 * VN) * LOADX(x + k + 2 * VN); \
        a3 += LOADW(wr + k + 3 * VN) * LOADX(x + k + 3 * VN); \
    } \
    for (; k + VN <= n_in; k += VN) a0 += LOADW(wr + k) * LOADX(x + k); \
    y[j] = alpha * finish_##S((a0 + a1) + (a2 + a3), wr, x, k, n_in) + (b ? b[j] : 0.0f); \
} \
 \
/* One weight row against R input rows (R a constant after inlining). */ \
static inline __attribute__((always_inline)) ATTR void dot_rx1_##S(float *y, int ldy, const float *x, \
                                                          int ldx, const WT *w, int ldw, \
                                                          const float *b, int n_in, int j, \
                                                          float alpha, const int R) { \
    const WT *wr = w + (size_t)j * ldw; \
    VT acc[SH_GEMV_MAX_ROWS]; \
    for (int r = 0; r < R; r++) acc[r] = (VT){0}; \
    int k = 0; \
    for (; k + VN <= n_in; k += VN) { \
        VT wv = LOADW(wr + k); \
        for (int r = 0; r < R; r++) acc[r] += wv * LOADX(x + (size_t)r * ldx + k); \
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
        for (; j < j1; j++) dot_1x1_##S(y, x, w, ldw, b, n_in, j, alpha); \
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
#define F16C_ATTR __attribute__((target("avx2,fma,f16c")))
#define AVX512_ATTR __attribute__((target("avx512f,avx512vl,fma,f16c")))
DEFINE_DOT_ROWS(, float, v8, 8, load8, load8, hsum8, F32_AS_FLOAT, NO_ATTR, SH_CLONES)
DEFINE_DOT_ROWS(_f16avx512, uint16_t, v16, 16, load16, load16h_avx512, hsum16, sh_f16_to_f32,
                AVX512_ATTR, AVX512_ATTR)
DEFINE_DOT_ROWS(_f16c, uint16_t, v8, 8, load8, load8h_f16c, hsum8, sh_f16_to_f32, F16C_ATTR,
                F16C_ATTR)
DEFINE_DOT_ROWS(_f16soft, uint16_t, v8, 8, load8, load8h_soft, hsum8, sh_f16_to_f32, NO_ATTR,
                NO_ATTR)

void sh_dot_rows_f16(float *y, int ldy, const float *x, int ldx, int rows, const uint16_t *w,
                     int ldw, const float *b, int n_in, int j0, int j1, float alpha) {
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("f16c"))
        sh_dot_rows_f16avx512(y, ldy, x, ldx, rows, w, ldw, b, n_in, j0, j1, alpha);
    else if (__builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx2") &&
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
