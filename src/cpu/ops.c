/* ops.c - layer norm, GELU, softmax and the OpenBLAS linear layer. */
#include "cpu/ops.h"

#include "cpu/gemm_i8.h"
#include "cpu/gemv.h"

#include <cblas.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/f16.h"
#include "model/quant.h"
#include "cpu/vmath.h"

void sh_add_bias(float *y, const float *b, int rows, int n) {
    if (!b) return;
    for (int r = 0; r < rows; r++) {
        float *row = y + (size_t)r * n;
        for (int i = 0; i < n; i++) row[i] += b[i];
    }
}

void sh_mat_row(sh_mat w, int i, int n, float *out) {
    if (w.kind == SH_MAT_F32) {
        memcpy(out, (const float *)w.data + (size_t)i * n, (size_t)n * sizeof *out);
    } else if (w.kind == SH_MAT_F16) {
        /* halves may lie unaligned in the mapped file: the bulk conversion
         * reads them as bytes */
        sh_halves_to_floats(out, (const uint16_t *)(const void *)((const uint8_t *)w.data +
                                                                  (size_t)i * n * 2), (size_t)n);
    } else if (w.kind == SH_MAT_I8P) {
        sh_i8p_get_row(w.data, i, out);
    } else {
        sh_dequantize(SH_GGML_Q8_0, (const uint8_t *)w.data + (size_t)i * (n / 32) * 34, out, n);
    }
}

/* Many rows against half or q8_0 weights: widen a band of weight rows at
 * a time and hand it to OpenBLAS, so the weights are still read once.
 * Bands of 512 rows keep the input's re-reads few (bands of 128 made
 * small's encoder 30% slower than a float32 copy; 512 ties it). */
#define F16_TILE_ROWS 512

static void linear_f16_tiled(float *y, const float *x, int rows, sh_mat w, int n_in, int n_out) {
    float *tile = malloc((size_t)F16_TILE_ROWS * n_in * sizeof *tile);
    if (!tile) { /* fall back to the GEMV, eight rows at a time */
        for (int r = 0; r < rows; r += SH_GEMV_MAX_ROWS) {
            int n = rows - r < SH_GEMV_MAX_ROWS ? rows - r : SH_GEMV_MAX_ROWS;
            sh_gemv_rows(NULL, y + (size_t)r * n_out, n_out, x + (size_t)r * n_in, n_in, n, w,
                         n_in, NULL, n_in, n_out, 1.0f);
        }
        return;
    }
    for (int j0 = 0; j0 < n_out; j0 += F16_TILE_ROWS) {
        int nj = n_out - j0 < F16_TILE_ROWS ? n_out - j0 : F16_TILE_ROWS;
        for (int j = 0; j < nj; j++) sh_mat_row(w, j0 + j, n_in, tile + (size_t)j * n_in);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, nj, n_in, 1.0f, x, n_in, tile,
                    n_in, 0.0f, y + j0, n_out);
    }
    free(tile);
}

void sh_linear(sh_pool *pool, float *y, const float *x, int rows, sh_mat w, const float *b,
               int n_in, int n_out) {
    if (rows <= SH_GEMV_MAX_ROWS) {
        sh_gemv_rows(pool, y, n_out, x, n_in, rows, w, n_in, b, n_in, n_out, 1.0f);
        return;
    }
    if (w.kind != SH_MAT_F32)
        linear_f16_tiled(y, x, rows, w, n_in, n_out);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, n_out, n_in, 1.0f, x, n_in,
                    w.data, n_in, 0.0f, y, n_out);
    sh_add_bias(y, b, rows, n_out);
}

void sh_add(float *y, const float *x, long n) {
    for (long i = 0; i < n; i++) y[i] += x[i];
}

/* ------------------------------------------------------------ layer norm */

typedef struct {
    float *y;
    const float *x, *g, *b;
    int n;
} ln_job;

static void ln_range(void *arg, int begin, int end) {
    ln_job *j = arg;
    for (int r = begin; r < end; r++) {
        const float *x = j->x + (size_t)r * j->n;
        float *y = j->y + (size_t)r * j->n;
        double mean = 0, var = 0;
        for (int i = 0; i < j->n; i++) mean += x[i];
        mean /= j->n;
        for (int i = 0; i < j->n; i++) var += (x[i] - mean) * (x[i] - mean);
        var /= j->n;
        float inv = (float)(1.0 / sqrt(var + 1e-5));
        float m = (float)mean;
        for (int i = 0; i < j->n; i++) y[i] = (x[i] - m) * inv * j->g[i] + j->b[i];
    }
}

void sh_layer_norm(sh_pool *pool, float *y, const float *x, int rows, int n, const float *g,
                   const float *b) {
    ln_job j = {y, x, g, b, n};
    if (rows < 16) ln_range(&j, 0, rows);
    else sh_pool_run(pool, rows, ln_range, &j);
}

/* ------------------------------------------------------------------ GELU */

typedef struct {
    float *x;
} gelu_job;

SH_CLONES static void gelu_range(void *arg, int begin, int end) {
    float *x = ((gelu_job *)arg)->x;
    int i = begin;
    for (; i + 8 <= end; i += 8) {
        vf8 v = vf8_load(x + i);
        vf8_store(x + i, vf8_splat(0.5f) * v *
                             (vf8_splat(1.0f) + vf8_erf(v * vf8_splat((float)M_SQRT1_2))));
    }
    for (; i < end; i++) x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * (float)M_SQRT1_2));
}

void sh_gelu(sh_pool *pool, float *x, long n) {
    gelu_job j = {x};
    if (n < 65536) gelu_range(&j, 0, (int)n);
    else sh_pool_run(pool, (int)n, gelu_range, &j);
}

/* --------------------------------------------------------------- softmax */

typedef struct {
    float *x;
    int n, ld;
} softmax_job;

SH_CLONES static void softmax_range(void *arg, int begin, int end) {
    softmax_job *j = arg;
    for (int r = begin; r < end; r++) vf8_softmax_row(j->x + (size_t)r * j->ld, j->n);
}

void sh_softmax_rows(sh_pool *pool, float *x, int rows, int n, int ld) {
    softmax_job j = {x, n, ld};
    if ((long)rows * n < 65536) softmax_range(&j, 0, rows);
    else sh_pool_run(pool, rows, softmax_range, &j);
}
