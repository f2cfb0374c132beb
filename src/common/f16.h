/* f16.h - IEEE half-precision to float conversion (portable, exact), one
 * value or many. */
#ifndef SHRUTI_COMMON_F16_H
#define SHRUTI_COMMON_F16_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline float sh_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            exp = 127 - 15 + 1;
            while (!(mant & 0x400)) { mant <<= 1; exp--; }
            bits = sign | (exp << 23) | ((mant & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* Round-to-nearest-even float -> half (for writing test and bench models). */
static inline uint16_t sh_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    uint32_t sign = (x >> 16) & 0x8000;
    int32_t exp = (int32_t)((x >> 23) & 0xff) - 127 + 15;
    uint32_t mant = x & 0x7fffff;
    if (((x >> 23) & 0xff) == 0xff) return (uint16_t)(sign | 0x7c00 | (mant ? 0x200 : 0));
    if (exp >= 31) return (uint16_t)(sign | 0x7c00);
    if (exp <= 0) {
        if (exp < -10) return (uint16_t)sign;
        mant |= 0x800000;
        uint32_t shift = (uint32_t)(14 - exp);
        uint32_t half = mant >> shift, rem = mant & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t half = sign | ((uint32_t)exp << 10) | (mant >> 13);
    uint32_t rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) half++;
    return (uint16_t)half;
}

/* A half that may lie unaligned (in the mapped model file), widened. */
static inline float sh_f16_at(const void *p) {
    uint16_t h;
    memcpy(&h, p, sizeof h);
    return sh_f16_to_f32(h);
}

/* Whether the CPU converts halves in hardware (F16C, with AVX2 and FMA,
 * which the vector code around the conversions uses). */
int sh_cpu_has_f16c(void);

/* n values at once (F16C where the CPU has it, else the functions above;
 * the same results either way). src and dst may be unaligned. */
void sh_floats_to_halves(uint16_t *dst, const float *src, size_t n);
void sh_halves_to_floats(float *dst, const uint16_t *src, size_t n);

#endif
