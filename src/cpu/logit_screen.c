/* logit_screen.c - the greedy and beam choices of a half-precision model
 * without reading its whole token embedding every step.
 *
 * The logits projection is the decoder's largest matrix (51865 x d: two
 * thirds of the bytes tiny's step reads, half of base's), and a step is
 * bound by memory bandwidth. An int8 copy (q8_0, half the bytes) gives
 * every logit within a bound proven per token: with w the half row, w' its
 * int8 row, h the input and h' the input as the int8 kernel quantizes it,
 *   |h.w - h'.w'| <= |h| |w - w'| + |w'| |h - h'|   (Cauchy-Schwarz),
 * |w - w'| and |w| + |w - w'| >= |w'| measured per row at load, |h| and a
 * bound on |h - h'| (half a quantization step per value) per step, plus a
 * margin for float rounding. Only the tokens this bound cannot rule out of
 * the k best, and the timestamp tokens whose sum the timestamp rule needs,
 * are computed from the half weights. The choices are exactly those of the
 * full product; the log-probabilities' normalizer takes the int8 values
 * of the unlikely tokens (each within its bound, the errors of many tokens
 * averaging out). */
#include "cpu/logit_screen.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/f16.h"
#include "cpu/gemv.h"
#include "cpu/vmath.h"
#include "gpu/gpu_api.h"
#include "model/quant.h"

struct sh_logit_screen {
    uint8_t *q8;    /* (n_rows, n_in) q8_0 blocks */
    float *err;     /* per row: |w - w'| */
    float *norm;    /* per row: |w| + |w - w'|, at least |w'| */
    int n_rows, n_in;
};

/* The relative margin for float rounding in either product: their
 * rounding errors are below 1e-5 of |w'| |h| for rows up to 2048 wide. */
#define ROUNDING_MARGIN 1e-4f

void sh_logit_screen_free(sh_logit_screen *s) {
    if (!s) return;
    free(s->q8);
    free(s->err);
    free(s->norm);
    free(s);
}

/* |w|^2 and |w - w'|^2 of a row and its q8_0 blocks, eight lanes of
 * float (rounded up by the caller: float sums of a few thousand squares
 * are within 1e-4 of exact). */
typedef int8_t vb8 __attribute__((vector_size(8)));

SH_CLONES static void row_norms(const float *w, const uint8_t *q, int n_in, float *w2, float *e2) {
    vf8 sw = vf8_splat(0.0f), se = vf8_splat(0.0f);
    for (int b = 0; b < n_in / 32; b++, q += 34) {
        vf8 d = vf8_splat(sh_f16_at(q));
        for (int i = 0; i < 32; i += 8) {
            vb8 qi;
            memcpy(&qi, q + 2 + i, sizeof qi);
            vf8 x = vf8_load(w + b * 32 + i), back = __builtin_convertvector(qi, vf8);
            vf8 e = x - d * back;
            sw += x * x;
            se += e * e;
        }
    }
    *w2 = *e2 = 0;
    for (int l = 0; l < 8; l++) *w2 += sw[l], *e2 += se[l];
}

/* Row t's int8 blocks and its two norms, rounded up so that the bound
 * stays a bound. */
static void screen_row(sh_logit_screen *s, const uint16_t *w, int t, float *row) {
    uint8_t *q = s->q8 + (size_t)t * (s->n_in / 32) * 34;
    sh_halves_to_floats(row, w + (size_t)t * s->n_in, (size_t)s->n_in);
    sh_quantize(SH_GGML_Q8_0, row, q, s->n_in);
    float w2, e2;
    row_norms(row, q, s->n_in, &w2, &e2);
    s->err[t] = sqrtf(e2) * 1.001f;
    s->norm[t] = (sqrtf(w2) + sqrtf(e2)) * 1.001f;
}

sh_logit_screen *sh_logit_screen_new(sh_mat w, int n_rows, int n_in) {
    const char *env = getenv("SHRUTI_LOGIT_SCREEN");
    if ((env && strcmp(env, "0") == 0) || w.kind != SH_MAT_F16 || n_in % 32 != 0 ||
        n_in > 8192 || n_rows < 1 || sh_int8_path_for_cpu() < SH_INT8_AVX2)
        return NULL;
    sh_logit_screen *s = calloc(1, sizeof *s);
    float *row = malloc((size_t)n_in * sizeof *row);
    if (!s || !row) goto fail;
    s->n_rows = n_rows, s->n_in = n_in;
    s->q8 = malloc((size_t)n_rows * (n_in / 32) * 34);
    s->err = malloc((size_t)n_rows * sizeof *s->err);
    s->norm = malloc((size_t)n_rows * sizeof *s->norm);
    if (!s->q8 || !s->err || !s->norm) goto fail;
    for (int t = 0; t < n_rows; t++) screen_row(s, w.data, t, row);
    free(row);
    return s;
fail:
    free(row);
    sh_logit_screen_free(s);
    return NULL;
}

/* |h| and a bound on |h - h'|: the kernel quantizes groups of 4 values to
 * int8 with a step of max|group| / 127, each value within half a step
 * (0.502: the step and the scaled value are rounded floats too). */
static sh_screen_bound bound_for(const float *h, int n_in) {
    double h2 = 0, d2 = 0;
    for (int g = 0; g < n_in; g += 4) {
        float amax = 0;
        for (int i = g; i < g + 4; i++) {
            h2 += (double)h[i] * h[i];
            amax = fabsf(h[i]) > amax ? fabsf(h[i]) : amax;
        }
        double half_step = 0.502 * amax / 127.0;
        d2 += 4 * half_step * half_step;
    }
    float hn = (float)(sqrt(h2) * (1 + 1e-6)), dh = (float)(sqrt(d2) * (1 + 1e-6));
    return (sh_screen_bound){hn, dh + ROUNDING_MARGIN * (hn + dh)};
}

void sh_logit_screen_scores(sh_pool *pool, const sh_logit_screen *s, const float *h, int n,
                            float *v, sh_screen_bound *bound) {
    sh_mat q = {s->q8, SH_MAT_Q8_0};
    for (int r0 = 0; r0 < n; r0 += SH_GEMV_MAX_ROWS) {
        int rows = n - r0 < SH_GEMV_MAX_ROWS ? n - r0 : SH_GEMV_MAX_ROWS;
        sh_gemv_rows(pool, v + (size_t)r0 * s->n_rows, s->n_rows, h + (size_t)r0 * s->n_in,
                     s->n_in, rows, q, s->n_in, NULL, s->n_in, s->n_rows, 1.0f);
    }
    for (int r = 0; r < n; r++) bound[r] = bound_for(h + (size_t)r * s->n_in, s->n_in);
}

/* lo into best[0, k) (descending), the last dropping out, when it beats it. */
static inline __attribute__((always_inline)) void best_insert(float *best, int k, float lo) {
    if (!(lo > best[k - 1])) return;
    int p = k - 1;
    while (p > 0 && best[p - 1] < lo) best[p] = best[p - 1], p--;
    best[p] = lo;
}

/* The k-th largest lower bound v_t - e_t over [0, n) (-inf when fewer
 * than k tokens are unmasked): the k-th best exact logit is at least it. */
SH_CLONES static float kth_lower_bound(const sh_logit_screen *s, sh_screen_bound bd,
                                       const float *v, int n, int k) {
    float best[SH_GPU_TOP_MAX];
    for (int i = 0; i < k; i++) best[i] = -INFINITY;
    vf8 va = vf8_splat(bd.a), vb = vf8_splat(bd.b);
    int t = 0;
    for (; t + 8 <= n; t += 8) {
        vf8 lo = vf8_load(v + t) - (va * vf8_load(s->err + t) + vb * vf8_load(s->norm + t));
        if (!vi8_any(lo > vf8_splat(best[k - 1]))) continue;
        for (int i = 0; i < 8; i++) best_insert(best, k, lo[i]);
    }
    for (; t < n; t++) best_insert(best, k, v[t] - (bd.a * s->err[t] + bd.b * s->norm[t]));
    return best[k - 1];
}

/* The unmasked tokens of [0, n) whose upper bound v_t + e_t reaches lo,
 * into idx; returns their count, or -1 past max. */
SH_CLONES static int candidates(const sh_logit_screen *s, sh_screen_bound bd, const float *v,
                                int n, float lo, int *idx, int max) {
    int count = 0;
    vf8 va = vf8_splat(bd.a), vb = vf8_splat(bd.b), vlo = vf8_splat(lo);
    vf8 none = vf8_splat(-INFINITY);
    int t = 0;
    for (; t + 8 <= n; t += 8) {
        vf8 x = vf8_load(v + t);
        vf8 hi = x + (va * vf8_load(s->err + t) + vb * vf8_load(s->norm + t));
        vi8 in = (hi >= vlo) & (x > none);
        if (!vi8_any(in)) continue;
        for (int i = 0; i < 8; i++)
            if (in[i]) {
                if (count == max) return -1;
                idx[count++] = t + i;
            }
    }
    for (; t < n; t++)
        if (v[t] > -INFINITY && v[t] + (bd.a * s->err[t] + bd.b * s->norm[t]) >= lo) {
            if (count == max) return -1;
            idx[count++] = t;
        }
    return count;
}

int sh_logit_screen_refine(const sh_logit_screen *s, sh_mat w, const float *h,
                           sh_screen_bound bound, int text_end, int k, float *v, int *idx) {
    if (!isfinite(bound.a) || !isfinite(bound.b) || k < 1 || k > SH_GPU_TOP_MAX) return -1;
    if (text_end < 0 || text_end > s->n_rows) text_end = s->n_rows;
    float lo = kth_lower_bound(s, bound, v, text_end, k);
    int n = candidates(s, bound, v, text_end, lo, idx, s->n_rows / 16);
    if (n < 0) return -1;
    sh_gemv_row_at(v, h, w, s->n_in, s->n_in, idx, n);
    return n;
}
