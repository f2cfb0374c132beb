/* attention.c - the decoder's attention kernels. A decoder step attends
 * from one row per beam to 1500 cached audio positions (cross-attention)
 * or to the positions decoded so far (self-attention). The cost is reading
 * the cached keys and values, so both kernels walk the cache once, row by
 * row, computing every head (and every query row) from each cached row
 * while it is in L1. Compiled for AVX-512, AVX2+FMA and plain x86-64. */
#include "cpu/attention.h"

#include <math.h>
#include <string.h>

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
