/* vmath.h - exp and erf on eight floats at once, for softmax and GELU.
 * Both are accurate to a few units in the last place of float (exp: range
 * reduction by ln 2 and a degree-6 polynomial; erf: Abramowitz & Stegun
 * 7.1.26, absolute error below 1.5e-7), far inside the tolerances that
 * keep tokens identical to the reference. */
#ifndef SHRUTI_CPU_VMATH_H
#define SHRUTI_CPU_VMATH_H

#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "common/f16.h"

/* Compile a function for AVX-512, AVX2+FMA and plain x86-64; the loader
 * picks one for the CPU at run time. */
#define SH_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))

/* The helpers below pass 256-bit vectors by value; they must always be
 * inlined into their (cloned) callers: a call would use the plain x86-64
 * ABI on one side and the AVX one on the other (at -O0 they were not
 * inlined, and a debug build crashed on AVX-512 machines). */
#define SH_VINLINE static inline __attribute__((always_inline))

/* FN(args..., R) with R the constant 1 ... 8 equal to rows: kernels that
 * unroll over a constant number of input rows (beams). */
#define SH_SWITCH_ROWS(rows, FN, ...)        \
    switch (rows) {                          \
        case 1: FN(__VA_ARGS__, 1); break;   \
        case 2: FN(__VA_ARGS__, 2); break;   \
        case 3: FN(__VA_ARGS__, 3); break;   \
        case 4: FN(__VA_ARGS__, 4); break;   \
        case 5: FN(__VA_ARGS__, 5); break;   \
        case 6: FN(__VA_ARGS__, 6); break;   \
        case 7: FN(__VA_ARGS__, 7); break;   \
        case 8: FN(__VA_ARGS__, 8); break;   \
        default: break;                      \
    }

typedef float vf8 __attribute__((vector_size(32)));
typedef int32_t vi8 __attribute__((vector_size(32)));

SH_VINLINE vf8 vf8_load(const float *p) {
    vf8 v;
    memcpy(&v, p, sizeof v);
    return v;
}

SH_VINLINE void vf8_store(float *p, vf8 v) { memcpy(p, &v, sizeof v); }

SH_VINLINE vf8 vf8_splat(float x) { return (vf8){x, x, x, x, x, x, x, x}; }

/* Eight halves (unaligned) widened: F16C, or bit by bit (exact either way). */
__attribute__((target("avx2,fma,f16c"))) SH_VINLINE vf8 vf8_load_half(const uint16_t *p) {
    return (vf8)_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

SH_VINLINE vf8 vf8_load_half_soft(const uint16_t *p) {
    vf8 v;
    for (int i = 0; i < 8; i++) v[i] = sh_f16_at(p + i);
    return v;
}

/* mask ? a : b, lane by lane (mask lanes all ones or all zeros) */
SH_VINLINE vf8 vf8_select(vi8 mask, vf8 a, vf8 b) {
    return (vf8)((mask & (vi8)a) | (~mask & (vi8)b));
}

/* Whether any lane of a comparison is set. */
SH_VINLINE int vi8_any(vi8 m) {
    uint64_t u[4];
    memcpy(u, &m, sizeof u);
    return (u[0] | u[1] | u[2] | u[3]) != 0;
}

SH_VINLINE vf8 vf8_max(vf8 a, vf8 b) { return vf8_select(a > b, a, b); }
SH_VINLINE vf8 vf8_min(vf8 a, vf8 b) { return vf8_select(a < b, a, b); }

/* exp(x); inputs below -87.3 give 0 (as expf underflows there). */
SH_VINLINE vf8 vf8_exp(vf8 x) {
    const vf8 lo = vf8_splat(-87.33654f), hi = vf8_splat(88.3762626647949f);
    vi8 under = x < lo;
    x = vf8_min(vf8_max(x, lo), hi);
    vf8 fx = x * vf8_splat(1.44269504088896341f);           /* x / ln 2 */
    /* round to nearest: add +-0.5, then truncate */
    vf8 half = vf8_select(fx >= 0, vf8_splat(0.5f), vf8_splat(-0.5f));
    vi8 n = __builtin_convertvector(fx + half, vi8);
    vf8 fn = __builtin_convertvector(n, vf8);
    vf8 r = x - fn * vf8_splat(0.693359375f) + fn * vf8_splat(2.12194440e-4f);
    vf8 r2 = r * r;
    vf8 p = vf8_splat(1.9875691500e-4f);
    p = p * r + vf8_splat(1.3981999507e-3f);
    p = p * r + vf8_splat(8.3334519073e-3f);
    p = p * r + vf8_splat(4.1665795894e-2f);
    p = p * r + vf8_splat(1.6666665459e-1f);
    p = p * r + vf8_splat(5.0000001201e-1f);
    p = p * r2 + r + vf8_splat(1.0f);
    vi8 bits = (n + 127) << 23;                              /* 2^n */
    vf8 scale;
    memcpy(&scale, &bits, sizeof scale);
    vf8 y = p * scale;
    return (vf8)((vi8)y & ~under);
}

/* erf(x), Abramowitz & Stegun 7.1.26 with the sign restored. */
SH_VINLINE vf8 vf8_erf(vf8 x) {
    vi8 sign = (vi8)x & (vi8)vf8_splat(-0.0f);
    vf8 ax = (vf8)((vi8)x & ~(vi8)vf8_splat(-0.0f));
    vf8 t = vf8_splat(1.0f) / (vf8_splat(1.0f) + vf8_splat(0.3275911f) * ax);
    vf8 y = vf8_splat(1.061405429f);
    y = y * t + vf8_splat(-1.453152027f);
    y = y * t + vf8_splat(1.421413741f);
    y = y * t + vf8_splat(-0.284496736f);
    y = y * t + vf8_splat(0.254829592f);
    y = vf8_splat(1.0f) - y * t * vf8_exp(-ax * ax);
    return (vf8)((vi8)y | sign);
}

/* The largest lane (NaN lanes skipped, as the scalar comparison does). */
SH_VINLINE float vf8_hmax(vf8 v) {
    float max = -INFINITY;
    for (int i = 0; i < 8; i++) max = v[i] > max ? v[i] : max;
    return max;
}

/* row[0..n) = exp(row - max) in place; returns their sum. */
SH_VINLINE float vf8_exp_row(float *row, int n, float max) {
    int n8 = n & ~7;
    vf8 vmax = vf8_splat(max), vsum = vf8_splat(0.0f);
    for (int i = 0; i < n8; i += 8) {
        vf8 e = vf8_exp(vf8_load(row + i) - vmax);
        vf8_store(row + i, e);
        vsum += e;
    }
    float sum = ((vsum[0] + vsum[4]) + (vsum[1] + vsum[5])) + ((vsum[2] + vsum[6]) + (vsum[3] + vsum[7]));
    for (int i = n8; i < n; i++) sum += row[i] = expf(row[i] - max);
    return sum;
}

/* Softmax of one row in place (the caller compiles it per target). */
SH_VINLINE void vf8_softmax_row(float *row, int n) {
    int n8 = n & ~7;
    /* the maximum eight lanes at a time (NaNs skipped, as the scalar
     * comparison does) */
    vf8 vm = vf8_splat(-INFINITY);
    for (int i = 0; i < n8; i += 8) vm = vf8_max(vf8_load(row + i), vm);
    float max = vf8_hmax(vm);
    for (int i = n8; i < n; i++) max = row[i] > max ? row[i] : max;
    float inv = 1.0f / vf8_exp_row(row, n, max);
    vf8 vinv = vf8_splat(inv);
    for (int i = 0; i < n8; i += 8) vf8_store(row + i, vf8_load(row + i) * vinv);
    for (int i = n8; i < n; i++) row[i] *= inv;
}

#endif
