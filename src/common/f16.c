/* f16.c - bulk conversions between float and half: the model loader
 * widens every half tensor it converts, the CPU stores its cross-attention
 * cache in half. F16C does 8 at a time where the CPU has it. */
#include "common/f16.h"

#include <immintrin.h>

#define F16C_ATTR __attribute__((target("avx2,fma,f16c")))

int sh_cpu_has_f16c(void) {
    return __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx2") &&
           __builtin_cpu_supports("fma");
}

F16C_ATTR static void to_half_f16c(uint16_t *dst, const float *src, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) {
        uint16_t h = sh_f32_to_f16(src[i]);
        memcpy(dst + i, &h, sizeof h);
    }
}

F16C_ATTR static void to_float_f16c(float *dst, const uint16_t *src, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++) dst[i] = sh_f16_at(src + i);
}

void sh_floats_to_halves(uint16_t *dst, const float *src, size_t n) {
    if (sh_cpu_has_f16c()) {
        to_half_f16c(dst, src, n);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        uint16_t h = sh_f32_to_f16(src[i]);
        memcpy(dst + i, &h, sizeof h);
    }
}

void sh_halves_to_floats(float *dst, const uint16_t *src, size_t n) {
    if (sh_cpu_has_f16c()) {
        to_float_f16c(dst, src, n);
        return;
    }
    for (size_t i = 0; i < n; i++) dst[i] = sh_f16_at(src + i);
}
