/* attention.c - the decoder's attention kernels. A decoder step attends
 * from one row per beam to 1500 cached audio positions (cross-attention)
 * or to the positions decoded so far (self-attention). The cost is reading
 * the cached keys and values, so both kernels walk the cache once, row by
 * row, computing every head (and every query row) from each cached row
 * while it is in L1. Compiled for AVX-512, AVX2+FMA and plain x86-64. */
#include "cpu/attention.h"

#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "common/f16.h"
#include "cpu/vmath.h"

static inline __attribute__((always_inline)) float dot(const float *a, const float *b, int n) {
    vf8 acc0 = {0}, acc1 = {0};
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        acc0 += vf8_load(a + i) * vf8_load(b + i);
        acc1 += vf8_load(a + i + 8) * vf8_load(b + i + 8);
    }
    for (; i + 8 <= n; i += 8) acc0 += vf8_load(a + i) * vf8_load(b + i);
    vf8 acc = acc0 + acc1;
    float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

SH_CLONES void sh_attn_scores(float *s, int lds, const float *q, int ldq, int rows, int n_head,
                           int dh, const float *k, int ldk, int p0, int p1, float scale) {
    for (int p = p0; p < p1; p++) {
        const float *kp = k + (size_t)p * ldk;
        for (int r = 0; r < rows; r++)
            for (int h = 0; h < n_head; h++)
                s[(size_t)(r * n_head + h) * lds + p] =
                    scale * dot(q + (size_t)r * ldq + h * dh, kp + h * dh, dh);
    }
}

SH_CLONES void sh_attn_values(float *out, int ldo, const float *s, int lds, int rows, int n_head,
                           int dh, const float *v, int ldv, int p0, int p1) {
    for (int p = p0; p < p1; p++) {
        const float *vp = v + (size_t)p * ldv;
        for (int r = 0; r < rows; r++)
            for (int h = 0; h < n_head; h++) {
                float w = s[(size_t)(r * n_head + h) * lds + p];
                float *o = out + (size_t)r * ldo + h * dh;
                const float *vh = vp + h * dh;
                int i = 0;
                vf8 wv = {w, w, w, w, w, w, w, w};
                for (; i + 8 <= dh; i += 8) vf8_store(o + i, vf8_load(o + i) + wv * vf8_load(vh + i));
                for (; i < dh; i++) o[i] += w * vh[i];
            }
    }
}

SH_CLONES void sh_attn_softmax(float *s, int lds, int n_rows, int n) {
    for (int r = 0; r < n_rows; r++) vf8_softmax_row(s + (size_t)r * lds, n);
}

/* ------------------------------------------- half keys and values */

/* The cross-attention cache in half precision (half and int8 compute
 * types): a decoder step reads all of it, so halves halve the step's
 * attention time; the window's tokens are unchanged on every golden. Each
 * cached half is widened once for all query rows (beams): R, the rows, is
 * a constant in each kernel, so their sums stay in registers. */

#define HALF_ATTR __attribute__((target("avx2,fma,f16c")))

/* R (a constant after inlining: 1 ... 8) query rows, W (1 or 2) vectors of
 * eight positions or dimensions at a time. */
#define DEFINE_HALF_ATTN(S, LOADH, ATTR)                                                      \
    static inline __attribute__((always_inline)) ATTR void scores_rows##S(                    \
        float *s, int lds, const float *q, int ldq, int n_head, int dh, const uint16_t *k,    \
        int ldk, int p0, int p1, float scale, const int R) {                                  \
        for (int p = p0; p < p1; p++)                                                         \
            for (int h = 0; h < n_head; h++) {                                                \
                const uint16_t *kh = k + (size_t)p * ldk + h * dh;                            \
                vf8 acc[SH_ATTN_MAX_ROWS];                                                    \
                for (int r = 0; r < R; r++) acc[r] = vf8_splat(0.0f);                         \
                for (int i = 0; i < dh; i += 8) {                                             \
                    vf8 kv = LOADH(kh + i);                                                   \
                    for (int r = 0; r < R; r++)                                               \
                        acc[r] += vf8_load(q + (size_t)r * ldq + h * dh + i) * kv;            \
                }                                                                             \
                for (int r = 0; r < R; r++) {                                                 \
                    vf8 a = acc[r];                                                           \
                    s[(size_t)(r * n_head + h) * lds + p] =                                   \
                        scale * (((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]))); \
                }                                                                             \
            }                                                                                 \
    }                                                                                         \
    static inline __attribute__((always_inline)) ATTR void values_rows##S(                    \
        float *out, int ldo, const float *s, int lds, int n_head, int dh, const uint16_t *v,  \
        int ldv, int p0, int p1, const int R) {                                               \
        for (int p = p0; p < p1; p++)                                                         \
            for (int h = 0; h < n_head; h++) {                                                \
                vf8 w[SH_ATTN_MAX_ROWS];                                                      \
                for (int r = 0; r < R; r++) w[r] = vf8_splat(s[(size_t)(r * n_head + h) * lds + p]); \
                for (int i = 0; i < dh; i += 8) {                                             \
                    vf8 vv = LOADH(v + (size_t)p * ldv + h * dh + i);                         \
                    for (int r = 0; r < R; r++) {                                             \
                        float *o = out + (size_t)r * ldo + h * dh + i;                        \
                        vf8_store(o, vf8_load(o) + w[r] * vv);                                \
                    }                                                                         \
                }                                                                             \
            }                                                                                 \
    }                                                                                         \
    ATTR static void scores_half##S(float *s, int lds, const float *q, int ldq, int rows,     \
                                    int n_head, int dh, const uint16_t *k, int ldk, int p0,   \
                                    int p1, float scale) {                                    \
        SH_SWITCH_ROWS(rows, scores_rows##S, s, lds, q, ldq, n_head, dh, k, ldk, p0, p1, \
                            scale)                                                            \
    }                                                                                         \
    ATTR static void values_half##S(float *out, int ldo, const float *s, int lds, int rows,   \
                                    int n_head, int dh, const uint16_t *v, int ldv, int p0,   \
                                    int p1) {                                                 \
        SH_SWITCH_ROWS(rows, values_rows##S, out, ldo, s, lds, n_head, dh, v, ldv, p0,   \
                            p1)                                                               \
    }

DEFINE_HALF_ATTN(_f16c, vf8_load_half, HALF_ATTR)
DEFINE_HALF_ATTN(_soft, vf8_load_half_soft, )

void sh_attn_scores_half(float *s, int lds, const float *q, int ldq, int rows, int n_head, int dh,
                         const uint16_t *k, int ldk, int p0, int p1, float scale) {
    if (sh_cpu_has_f16c()) scores_half_f16c(s, lds, q, ldq, rows, n_head, dh, k, ldk, p0, p1, scale);
    else scores_half_soft(s, lds, q, ldq, rows, n_head, dh, k, ldk, p0, p1, scale);
}

void sh_attn_values_half(float *out, int ldo, const float *s, int lds, int rows, int n_head,
                         int dh, const uint16_t *v, int ldv, int p0, int p1) {
    if (sh_cpu_has_f16c()) values_half_f16c(out, ldo, s, lds, rows, n_head, dh, v, ldv, p0, p1);
    else values_half_soft(out, ldo, s, lds, rows, n_head, dh, v, ldv, p0, p1);
}
