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

static inline __attribute__((always_inline)) v8 load8(const float *p) {
    v8 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline __attribute__((always_inline)) float hsum8(v8 v) {
    return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

/* Eight halves widened to floats: F16C where the CPU has it, else bit by
 * bit (exact either way). */
__attribute__((target("avx2,fma,f16c"))) static inline __attribute__((always_inline)) v8 load8h_f16c(const uint16_t *p) {
    __m128i h = _mm_loadu_si128((const __m128i *)p);
    return (v8)_mm256_cvtph_ps(h);
}

typedef float v16 __attribute__((vector_size(64)));

__attribute__((target("avx512f,avx512vl,fma,f16c"))) static inline __attribute__((always_inline)) v16 load16(const float *p) {
    v16 v;
    memcpy(&v, p, sizeof v);
    return v;
}

__attribute__((target("avx512f,avx512vl,fma,f16c"))) static inline __attribute__((always_inline)) float hsum16(v16 v) {
    v8 lo = {v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]};
    v8 hi = {v[8], v[9], v[10], v[11], v[12], v[13], v[14], v[15]};
    return hsum8(lo + hi);
}

__attribute__((target("avx512f,avx512vl,fma,f16c"))) static inline __attribute__((always_inline)) v16 load16h_avx512(const uint16_t *p) {
    __m256i h = _mm256_loadu_si256((const __m256i *)p);
    return (v16)_mm512_cvtph_ps(h);
}

/* Halves may lie unaligned in the mapped model file: read through memcpy. */
static inline __attribute__((always_inline)) uint16_t half_at(const uint16_t *p) {
    uint16_t h;
    memcpy(&h, p, sizeof h);
    return h;
}

static inline __attribute__((always_inline)) float half_to_float_at(const uint16_t *p) {
    return sh_f16_to_f32(half_at(p));
}

static inline __attribute__((always_inline)) float float_at(const float *p) {
    float f;
    memcpy(&f, p, sizeof f);
    return f;
}

static inline __attribute__((always_inline)) v8 load8h_soft(const uint16_t *p) {
    v8 v;
    for (int i = 0; i < 8; i++) v[i] = half_to_float_at(p + i);
    return v;
}


/* The kernels, written once for float32 and once for half weights. */
#define DEFINE_DOT_ROWS(S, WT, VT, VN, LOADX, LOADW, HSUM, TOF, ATTR, EXPORT_ATTR) \
static inline __attribute__((always_inline)) ATTR float finish_##S(VT acc, const WT *w, const float *x, int k, int n_in) { \
    float s = HSUM(acc); \
    for (; k < n_in; k++) s += TOF(w + k) * x[k]; \
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
DEFINE_DOT_ROWS(, float, v8, 8, load8, load8, hsum8, float_at, NO_ATTR, SH_CLONES)
DEFINE_DOT_ROWS(_f16avx512, uint16_t, v16, 16, load16, load16h_avx512, hsum16, half_to_float_at,
                AVX512_ATTR, AVX512_ATTR)
DEFINE_DOT_ROWS(_f16c, uint16_t, v8, 8, load8, load8h_f16c, hsum8, half_to_float_at, F16C_ATTR,
                F16C_ATTR)
DEFINE_DOT_ROWS(_f16soft, uint16_t, v8, 8, load8, load8h_soft, hsum8, half_to_float_at, NO_ATTR,
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

/* ---------------------------------------------------- q8_0 weights */

/* Blocks of 32 weights: a half-precision scale, then 32 int8 values. */
#define Q8_BLOCK_BYTES 34
typedef int8_t vb8 __attribute__((vector_size(8)));

SH_VINLINE vf8 load8q_soft(const uint8_t *p) {
    vb8 b;
    memcpy(&b, p, sizeof b);
    return __builtin_convertvector(b, vf8);
}

/* Eight int8 widened to floats with AVX2 (GCC scalarizes the portable form). */
__attribute__((target("avx2,fma,f16c"))) SH_VINLINE vf8 load8q_avx2(const uint8_t *p) {
    __m128i b = _mm_loadl_epi64((const __m128i *)p);
    return (vf8)_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
}

static inline __attribute__((always_inline)) float block_scale_soft(const uint8_t *blk) {
    uint16_t h;
    memcpy(&h, blk, 2);
    return sh_f16_to_f32(h);
}

__attribute__((target("avx2,fma,f16c"))) static inline __attribute__((always_inline)) float block_scale_f16c(const uint8_t *blk) {
    uint16_t h;
    memcpy(&h, blk, 2);
    return _cvtsh_ss(h);
}

/* R input rows against weight row j: per block, the 32 products summed
 * in four lanes of eight, then scaled once by the block's d. */
#define DEFINE_DOT_Q8(S, LOADQ, SCALE, ATTR)                                                       \
    static inline __attribute__((always_inline)) ATTR void dot_q8_rx1##S(                    \
        float *y, int ldy, const float *x, int ldx, const uint8_t *w, const float *b,         \
        int n_in, int j, float alpha, const int R) {                                          \
        int n_blocks = n_in / 32;                                                             \
        const uint8_t *row = w + (size_t)j * n_blocks * Q8_BLOCK_BYTES;                       \
        vf8 acc[SH_GEMV_MAX_ROWS];                                                            \
        for (int r = 0; r < R; r++) acc[r] = vf8_splat(0.0f);                                 \
        for (int k = 0; k < n_blocks; k++) {                                                  \
            const uint8_t *blk = row + (size_t)k * Q8_BLOCK_BYTES;                            \
            vf8 d = vf8_splat(SCALE(blk));                                                    \
            vf8 w0 = LOADQ(blk + 2), w1 = LOADQ(blk + 10), w2 = LOADQ(blk + 18),              \
                w3 = LOADQ(blk + 26);                                                         \
            for (int r = 0; r < R; r++) {                                                     \
                const float *xr = x + (size_t)r * ldx + k * 32;                               \
                vf8 s = w0 * vf8_load(xr) + w1 * vf8_load(xr + 8) + w2 * vf8_load(xr + 16) + \
                        w3 * vf8_load(xr + 24);                                               \
                acc[r] += d * s;                                                              \
            }                                                                                 \
        }                                                                                     \
        for (int r = 0; r < R; r++)                                                           \
            y[(size_t)r * ldy + j] = alpha * hsum8(acc[r]) + (b ? b[j] : 0.0f);               \
    }                                                                                         \
    ATTR static void dot_rows_q8##S(float *y, int ldy, const float *x, int ldx, int rows,    \
                                    const uint8_t *w, const float *b, int n_in, int j0,       \
                                    int j1, float alpha) {                                    \
        for (int j = j0; j < j1; j++) switch (rows) {                                         \
            case 1: dot_q8_rx1##S(y, ldy, x, ldx, w, b, n_in, j, alpha, 1); break;            \
            case 2: dot_q8_rx1##S(y, ldy, x, ldx, w, b, n_in, j, alpha, 2); break;            \
            case 3: dot_q8_rx1##S(y, ldy, x, ldx, w, b, n_in, j, alpha, 3); break;            \
            case 4: dot_q8_rx1##S(y, ldy, x, ldx, w, b, n_in, j, alpha, 4); break;            \
            case 5: dot_q8_rx1##S(y, ldy, x, ldx, w, b, n_in, j, alpha, 5); break;            \
            case 6: dot_q8_rx1##S(y, ldy, x, ldx, w, b, n_in, j, alpha, 6); break;            \
            case 7: dot_q8_rx1##S(y, ldy, x, ldx, w, b, n_in, j, alpha, 7); break;            \
            case 8: dot_q8_rx1##S(y, ldy, x, ldx, w, b, n_in, j, alpha, 8); break;            \
            default: break;                                                                   \
            }                                                                                 \
    }

DEFINE_DOT_Q8(_avx2, load8q_avx2, block_scale_f16c, __attribute__((target("avx2,fma,f16c"))))
DEFINE_DOT_Q8(_soft, load8q_soft, block_scale_soft, )

void sh_dot_rows_q8(float *y, int ldy, const float *x, int ldx, int rows, const uint8_t *w,
                    const float *b, int n_in, int j0, int j1, float alpha) {
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("f16c"))
        dot_rows_q8_avx2(y, ldy, x, ldx, rows, w, b, n_in, j0, j1, alpha);
    else
        dot_rows_q8_soft(y, ldy, x, ldx, rows, w, b, n_in, j0, j1, alpha);
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
    if (j->w.kind == SH_MAT_Q8_0)
        sh_dot_rows_q8(j->y, j->ldy, j->x, j->ldx, j->rows, j->w.data, j->b, j->n_in, begin, end,
                       j->alpha);
    else if (j->w.kind == SH_MAT_F16)
        sh_dot_rows_f16(j->y, j->ldy, j->x, j->ldx, j->rows, j->w.data, j->ldw, j->b, j->n_in,
                        begin, end, j->alpha);
    else
        sh_dot_rows(j->y, j->ldy, j->x, j->ldx, j->rows, j->w.data, j->ldw, j->b, j->n_in, begin,
                    end, j->alpha);
}

void sh_gemv_rows(sh_pool *pool, float *y, int ldy, const float *x, int ldx, int rows, sh_mat w,
                  int ldw, const float *b, int n_in, int n_out, float alpha) {
    gemv_job j = {y, x, b, w, ldy, ldx, rows, ldw, n_in, alpha};
    if (!pool || (long)n_out * n_in < 32768) gemv_range(&j, 0, n_out);
    else sh_pool_run(pool, n_out, gemv_range, &j);
}
