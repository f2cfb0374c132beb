/* gemv.c - the decoder's memory-bound products. A step multiplies a few
 * rows (one per beam) by weight matrices that do not fit in cache, so the
 * cost is reading the weights: each weight row is loaded once and used for
 * every input row. Compiled for AVX-512, AVX2+FMA and plain x86-64, chosen
 * at run time (GCC target_clones). */
#include "cpu/gemv.h"

#include "cpu/vmath.h"

#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/avx2_pack.h"
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

static inline __attribute__((always_inline)) float float_at(const float *p) {
    float f;
    memcpy(&f, p, sizeof f);
    return f;
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
    SH_SWITCH_ROWS(rows, dot_rows_fixed_##S, y, ldy, x, ldx, w, ldw, b, n_in, j0, j1, alpha) \
}

#define NO_ATTR
#define F16C_ATTR __attribute__((target("avx2,fma,f16c")))
#define AVX512_ATTR __attribute__((target("avx512f,avx512vl,fma,f16c")))
DEFINE_DOT_ROWS(, float, v8, 8, load8, load8, hsum8, float_at, NO_ATTR, SH_CLONES)
DEFINE_DOT_ROWS(_f16avx512, uint16_t, v16, 16, load16, load16h_avx512, hsum16, sh_f16_at,
                AVX512_ATTR, AVX512_ATTR)
DEFINE_DOT_ROWS(_f16c, uint16_t, v8, 8, load8, vf8_load_half, hsum8, sh_f16_at, F16C_ATTR,
                F16C_ATTR)
DEFINE_DOT_ROWS(_f16soft, uint16_t, v8, 8, load8, vf8_load_half_soft, hsum8, sh_f16_at, NO_ATTR,
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
        for (int j = j0; j < j1; j++)                                                         \
            SH_SWITCH_ROWS(rows, dot_q8_rx1##S, y, ldy, x, ldx, w, b, n_in, j, alpha)                \
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

/* -------------------------------- q8_0 weights x int8 activations */

/* As CTranslate2 and ggml do on CPUs with integer dot products: the input
 * rows are quantized on the fly to int8 (a float scale per 4 values), each
 * block of 32 is an integer dot product, scaled per lane. The products use |w| (unsigned) times x with w's
 * sign, which the u8 x s8 instructions need; neither side is ever -128. */
#define Q8_ATTR __attribute__((target("avx2,fma,f16c")))

/* Rows of x (rows x n_in) to int8 with a float scale per 4 values (d:
 * rows x n_in / 4). The integer dot product leaves the sum of each 4
 * products in its own lane, so a scale per lane costs no more than one per
 * block and keeps small activations next to large ones exact enough: one
 * scale per 32 moved language detection on the 128-bin test model. */
Q8_ATTR static void quantize_rows_q8(int8_t *q, float *d, const float *x, int ldx, int rows,
                                     int n_in) {
    const __m256 sign = _mm256_set1_ps(-0.0f), zero = _mm256_setzero_ps();
    const __m256 k127 = _mm256_set1_ps(127.0f), inv127 = _mm256_set1_ps(1.0f / 127.0f);
    for (int r = 0; r < rows; r++)
        for (int b = 0; b < n_in / 32; b++) {
            const float *xb = x + (size_t)r * ldx + b * 32;
            __m256i iv[4];
            for (int i = 0; i < 4; i++) {
                __m256 v = _mm256_loadu_ps(xb + 8 * i);
                __m256 a = _mm256_andnot_ps(sign, v);
                /* the max of each group of 4 in every lane of the group */
                a = _mm256_max_ps(a, _mm256_permute_ps(a, 0xB1));
                a = _mm256_max_ps(a, _mm256_permute_ps(a, 0x4E));
                __m256 nz = _mm256_cmp_ps(a, zero, _CMP_GT_OQ);
                __m256 inv = _mm256_and_ps(nz, _mm256_div_ps(k127, a));
                iv[i] = _mm256_cvtps_epi32(_mm256_mul_ps(v, inv));
                /* lanes 0 and 4 hold the two groups' scales */
                __m256 sc = _mm256_mul_ps(a, inv127);
                float *ds = d + ((size_t)r * n_in + b * 32 + i * 8) / 4;
                ds[0] = _mm256_cvtss_f32(sc);
                ds[1] = _mm_cvtss_f32(_mm256_extractf128_ps(sc, 1));
            }
            _mm256_storeu_si256((__m256i *)(q + (size_t)r * n_in + b * 32),
                                sh_pack_i8(iv[0], iv[1], iv[2], iv[3]));
        }
}

#define DPBUSD_VNNI512(acc, a, b) _mm256_dpbusd_epi32(acc, a, b)
#define DPBUSD_AVXVNNI(acc, a, b) _mm256_dpbusd_avx_epi32(acc, a, b)
#define DPBUSD_AVX2(acc, a, b) \
    _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1)))

#define DEFINE_DOT_Q8Q8_RX1(S, DPBUSD, ATTR)                                                 \
    static inline __attribute__((always_inline)) ATTR void dot_q8q8_rx1##S(                  \
        float *y, int ldy, const int8_t *xq, const float *xd, const uint8_t *w,               \
        const float *b, int n_in, int j, float alpha, const int R) {                          \
        int nb = n_in / 32;                                                                   \
        const uint8_t *row = w + (size_t)j * nb * Q8_BLOCK_BYTES;                             \
        __m256 acc[SH_GEMV_MAX_ROWS];                                                         \
        for (int r = 0; r < R; r++) acc[r] = _mm256_setzero_ps();                             \
        for (int k = 0; k < nb; k++) {                                                        \
            const uint8_t *blk = row + (size_t)k * Q8_BLOCK_BYTES;                            \
            float dw = block_scale_f16c(blk);                                                 \
            __m256i wv = _mm256_loadu_si256((const __m256i *)(blk + 2));                      \
            __m256i aw = _mm256_sign_epi8(wv, wv);                                            \
            for (int r = 0; r < R; r++) {                                                     \
                __m256i xv = _mm256_loadu_si256((const __m256i *)(xq + (size_t)r * n_in + k * 32)); \
                __m256i p = DPBUSD(_mm256_setzero_si256(), aw, _mm256_sign_epi8(xv, wv));      \
                __m256 sx = _mm256_loadu_ps(xd + ((size_t)r * n_in + k * 32) / 4);            \
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p),                               \
                                         _mm256_mul_ps(_mm256_set1_ps(dw), sx), acc[r]);      \
            }                                                                                 \
        }                                                                                     \
        for (int r = 0; r < R; r++)                                                           \
            y[(size_t)r * ldy + j] = alpha * hsum8((v8)acc[r]) + (b ? b[j] : 0.0f);           \
    }
/* Rows [j0, j1) of w for `rows` input rows, through dot_q8q8_rx1##S. */
#define DEFINE_DOT_ROWS_Q8Q8(S, ATTR)                                                         \
    ATTR static void dot_rows_q8q8##S(float *y, int ldy, const int8_t *xq, const float *xd,   \
                                      int rows, const uint8_t *w, const float *b, int n_in,  \
                                      int j0, int j1, float alpha) {                          \
        for (int j = j0; j < j1; j++)                                                         \
            SH_SWITCH_ROWS(rows, dot_q8q8_rx1##S, y, ldy, xq, xd, w, b, n_in, j, alpha)              \
    }

#define VNNI512_ATTR __attribute__((target("avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")))
DEFINE_DOT_Q8Q8_RX1(_vnni256, DPBUSD_VNNI512, VNNI512_ATTR)

/* The AVX-512 VNNI path two blocks at a time in 512-bit registers: half
 * the instructions per weight of the 256-bit loop, whose per-row work
 * (sign, product, scales, FMA) is what a five-beam step spends its time
 * on. AVX-512 has no vpsignb: the weights' signs move to x with a masked
 * negation. An odd last block goes through the 256-bit loop. */
static inline __attribute__((always_inline)) VNNI512_ATTR void dot_q8q8_rx1_vnni512(
    float *y, int ldy, const int8_t *xq, const float *xd, const uint8_t *w, const float *b,
    int n_in, int j, float alpha, const int R) {
    int nb = n_in / 32, k = 0;
    const uint8_t *row = w + (size_t)j * nb * Q8_BLOCK_BYTES;
    __m512 acc[SH_GEMV_MAX_ROWS];
    for (int r = 0; r < R; r++) acc[r] = _mm512_setzero_ps();
    for (; k + 1 < nb; k += 2) {
        const uint8_t *b0 = row + (size_t)k * Q8_BLOCK_BYTES, *b1 = b0 + Q8_BLOCK_BYTES;
        __m512i wv = _mm512_inserti64x4(
            _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(b0 + 2))),
            _mm256_loadu_si256((const __m256i *)(b1 + 2)), 1);
        __m512 dw = _mm512_castpd_ps(_mm512_insertf64x4(
            _mm512_castps_pd(_mm512_castps256_ps512(_mm256_set1_ps(block_scale_f16c(b0)))),
            _mm256_castps_pd(_mm256_set1_ps(block_scale_f16c(b1))), 1));
        __m512i aw = _mm512_abs_epi8(wv);
        __mmask64 neg = _mm512_movepi8_mask(wv);
        for (int r = 0; r < R; r++) {
            const int8_t *xr = xq + (size_t)r * n_in + k * 32;
            __m512i xv = _mm512_loadu_si512((const void *)xr);
            xv = _mm512_mask_sub_epi8(xv, neg, _mm512_setzero_si512(), xv);
            __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), aw, xv);
            __m512 sx = _mm512_loadu_ps(xd + ((size_t)r * n_in + k * 32) / 4);
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(dw, sx), acc[r]);
        }
    }
    float tail[SH_GEMV_MAX_ROWS] = {0};
    if (k < nb) {   /* the last block alone, through a one-block view of the row */
        int n_tail = n_in - k * 32;
        for (int r = 0; r < R; r++) {
            float t;
            dot_q8q8_rx1_vnni256(&t, 0, xq + (size_t)r * n_in + k * 32,
                                 xd + ((size_t)r * n_in + k * 32) / 4,
                                 row + (size_t)k * Q8_BLOCK_BYTES, NULL, n_tail, 0, 1.0f, 1);
            tail[r] = t;
        }
    }
    for (int r = 0; r < R; r++)
        y[(size_t)r * ldy + j] = alpha * (_mm512_reduce_add_ps(acc[r]) + tail[r]) + (b ? b[j] : 0.0f);
}

DEFINE_DOT_ROWS_Q8Q8(_vnni512, VNNI512_ATTR)

#define AVXVNNI_ATTR __attribute__((target("avx2,fma,f16c,avxvnni")))
DEFINE_DOT_Q8Q8_RX1(_avxvnni, DPBUSD_AVXVNNI, AVXVNNI_ATTR)
DEFINE_DOT_ROWS_Q8Q8(_avxvnni, AVXVNNI_ATTR)
DEFINE_DOT_Q8Q8_RX1(_avx2, DPBUSD_AVX2, Q8_ATTR)
DEFINE_DOT_ROWS_Q8Q8(_avx2, Q8_ATTR)

/* Which integer dot product this CPU has (CPUID, through GCC). */
static sh_int8_path best_q8_path(void) {
    if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
          __builtin_cpu_supports("f16c")))
        return SH_INT8_FLOAT;
    if (__builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512bw"))
        return SH_INT8_VNNI512;
    if (__builtin_cpu_supports("avxvnni")) return SH_INT8_AVXVNNI;
    return SH_INT8_AVX2;
}

/* The best path, or a lesser one the CPU also has when SHRUTI_INT8_KERNEL
 * names it (float, avx2, avxvnni, vnni512: for tests and benchmarks). */
sh_int8_path sh_int8_path_for_cpu(void) {
    sh_int8_path best = best_q8_path();
    const char *want = getenv("SHRUTI_INT8_KERNEL");
    if (!want || !*want) return best;
    sh_int8_path p = strcmp(want, "float") == 0     ? SH_INT8_FLOAT
                : strcmp(want, "avx2") == 0    ? SH_INT8_AVX2
                : strcmp(want, "avxvnni") == 0 ? SH_INT8_AVXVNNI
                                               : best;
    if (p == SH_INT8_AVXVNNI && !__builtin_cpu_supports("avxvnni")) return best;
    return p <= best ? p : best;
}

const char *sh_int8_kernel_name(void) {
    static const char *names[] = {"float (no AVX2)", "int8 AVX2", "int8 AVX-VNNI",
                                  "int8 AVX-512 VNNI"};
    return names[sh_int8_path_for_cpu()];
}

typedef struct {
    float *y;
    const float *x, *b;
    sh_mat w;
    int ldy, ldx, rows, ldw, n_in;
    float alpha;
    sh_int8_path path;
    const int8_t *xq;    /* q8 paths: x quantized, and its scales (one per 4) */
    const float *xd;
} gemv_job;

static void gemv_range(void *arg, int begin, int end) {
    gemv_job *j = arg;
    if (j->w.kind == SH_MAT_Q8_0 && j->xq) {
        if (j->path == SH_INT8_VNNI512)
            dot_rows_q8q8_vnni512(j->y, j->ldy, j->xq, j->xd, j->rows, j->w.data, j->b, j->n_in,
                                  begin, end, j->alpha);
        else if (j->path == SH_INT8_AVXVNNI)
            dot_rows_q8q8_avxvnni(j->y, j->ldy, j->xq, j->xd, j->rows, j->w.data, j->b, j->n_in,
                                  begin, end, j->alpha);
        else
            dot_rows_q8q8_avx2(j->y, j->ldy, j->xq, j->xd, j->rows, j->w.data, j->b, j->n_in,
                               begin, end, j->alpha);
    } else if (j->w.kind == SH_MAT_Q8_0)
        sh_dot_rows_q8(j->y, j->ldy, j->x, j->ldx, j->rows, j->w.data, j->b, j->n_in, begin, end,
                       j->alpha);
    else if (j->w.kind == SH_MAT_F16)
        sh_dot_rows_f16(j->y, j->ldy, j->x, j->ldx, j->rows, j->w.data, j->ldw, j->b, j->n_in,
                        begin, end, j->alpha);
    else
        sh_dot_rows(j->y, j->ldy, j->x, j->ldx, j->rows, j->w.data, j->ldw, j->b, j->n_in, begin,
                    end, j->alpha);
}

/* The quantized input: at most 8 rows of 4 x 2048 (the widest input). */
enum { MAX_Q8_IN = SH_GEMV_MAX_ROWS * 8192 };

/* A job for rows x (rows x n_in); q8_0 weights on a CPU with integer dot
 * products get x quantized into xq / xd (MAX_Q8_IN and MAX_Q8_IN / 4). */
static gemv_job gemv_job_for(float *y, int ldy, const float *x, int ldx, int rows, sh_mat w,
                             int ldw, const float *b, int n_in, float alpha, int8_t *xq,
                             float *xd) {
    gemv_job j = {y, x, b, w, ldy, ldx, rows, ldw, n_in, alpha, SH_INT8_FLOAT, NULL, NULL};
    if (w.kind == SH_MAT_Q8_0 && (j.path = sh_int8_path_for_cpu()) >= SH_INT8_AVX2 &&
        rows * n_in <= MAX_Q8_IN) {
        quantize_rows_q8(xq, xd, x, ldx, rows, n_in);
        j.xq = xq, j.xd = xd;
    }
    return j;
}

void sh_gemv_rows(sh_pool *pool, float *y, int ldy, const float *x, int ldx, int rows, sh_mat w,
                  int ldw, const float *b, int n_in, int n_out, float alpha) {
    int8_t xq[MAX_Q8_IN] __attribute__((aligned(32)));
    float xd[MAX_Q8_IN / 4];
    gemv_job j = gemv_job_for(y, ldy, x, ldx, rows, w, ldw, b, n_in, alpha, xq, xd);
    if (!pool || (long)n_out * n_in < 32768) gemv_range(&j, 0, n_out);
    else sh_pool_run(pool, n_out, gemv_range, &j);
}

void sh_gemv_row_at(float *y, const float *x, sh_mat w, int ldw, int n_in, const int *idx,
                    int n_idx) {
    int8_t xq[MAX_Q8_IN] __attribute__((aligned(32)));
    float xd[MAX_Q8_IN / 4];
    gemv_job j = gemv_job_for(y, 0, x, n_in, 1, w, ldw, NULL, n_in, 1.0f, xq, xd);
    for (int i = 0; i < n_idx; i++) gemv_range(&j, idx[i], idx[i] + 1);
}
