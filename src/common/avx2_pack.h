/* avx2_pack.h - two AVX2 steps the int8 code repeats: the largest of
 * eight lanes, and 32 int32 lanes (four vectors, in order) narrowed to 32
 * bytes in order. For functions compiled with target("avx2"). */
#ifndef SHRUTI_COMMON_AVX2_PACK_H
#define SHRUTI_COMMON_AVX2_PACK_H

#include <immintrin.h>

#define SH_AVX2_INLINE static inline __attribute__((always_inline, target("avx2,fma,f16c")))

SH_AVX2_INLINE float sh_hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
}

/* The packs work within 128-bit halves and interleave them; the permute
 * puts the 32 bytes back in order. Saturated to int8, or to uint8. */
SH_AVX2_INLINE __m256i sh_pack_i8(__m256i a, __m256i b, __m256i c, __m256i d) {
    __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
    return _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

SH_AVX2_INLINE __m256i sh_pack_u8(__m256i a, __m256i b, __m256i c, __m256i d) {
    __m256i p = _mm256_packus_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
    return _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

#endif
