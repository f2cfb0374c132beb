/* test_gemv.c - the decoder's matrix-vector kernels against a plain float
 * product of the same weights: float32, half and q8_0 matrices, 1 to 8
 * rows, one thread and a pool, and every int8 kernel this CPU has (input
 * rows quantized on the fly) within the tolerance that quantization
 * allows. Needs no test data. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/f16.h"
#include "cpu/gemm_i8.h"
#include "cpu/gemv.h"
#include "model/quant.h"
#include "test_util.h"

enum { N_OUT = 200, MAX_IN = 1536 };

static float rnd(unsigned *s) {
    *s = *s * 1664525u + 1013904223u;
    return (float)((*s >> 8) & 0xffff) / 32768.0f - 1.0f;
}

/* y = x . w^T (rows x n_out) for every row, in double; also sum |x_k w_k|
 * for the bound. */
static void reference(double *y, double *mag, const float *x, int rows, const float *w, int n_in,
                      int n_out) {
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < n_out; j++) {
            double s = 0, m = 0;
            for (int k = 0; k < n_in; k++) {
                s += (double)x[r * n_in + k] * w[j * n_in + k];
                m += fabs((double)x[r * n_in + k] * w[j * n_in + k]);
            }
            y[r * n_out + j] = s, mag[r * n_out + j] = m;
        }
}

/* Largest |y - ref| / mag over all outputs of one product. */
static double worst(sh_pool *pool, sh_mat m, const float *x, int rows, const float *bias,
                    int n_in, const double *ref, const double *mag) {
    float y[8 * N_OUT];
    sh_gemv_rows(pool, y, N_OUT, x, n_in, rows, m, n_in, bias, n_in, N_OUT, 1.0f);
    double e = 0;
    for (int i = 0; i < rows * N_OUT; i++) {
        double d = fabs(y[i] - bias[i % N_OUT] - ref[i]) / (mag[i] + 1e-30);
        e = d > e ? d : e;
    }
    return e;
}

static void check_kinds(sh_pool *pool, int n_in, const char *kernel) {
    unsigned seed = 12345u + (unsigned)n_in;
    float *w = malloc(sizeof(float) * N_OUT * n_in), *x = malloc(sizeof(float) * 8 * n_in);
    uint16_t *wh = malloc(2 * (size_t)N_OUT * n_in);
    uint8_t *wq = malloc((size_t)N_OUT * n_in / 32 * 34);
    float bias[N_OUT];
    double *ref = malloc(sizeof(double) * 8 * N_OUT), *mag = malloc(sizeof(double) * 8 * N_OUT);
    for (int i = 0; i < N_OUT * n_in; i++) w[i] = rnd(&seed);
    /* activations of very different sizes, as in a residual stream */
    for (int i = 0; i < 8 * n_in; i++) x[i] = rnd(&seed) * (i % 97 == 0 ? 40.0f : 1.0f);
    for (int j = 0; j < N_OUT; j++) bias[j] = rnd(&seed);
    for (int i = 0; i < N_OUT * n_in; i++) wh[i] = sh_f32_to_f16(w[i]);
    for (int j = 0; j < N_OUT; j++) sh_quantize(SH_GGML_Q8_0, w + (size_t)j * n_in, wq + (size_t)j * n_in / 32 * 34, n_in);
    /* what the q8_0 blocks hold, as the reference for the int8 kernels */
    float *wdq = malloc(sizeof(float) * N_OUT * n_in);
    for (int j = 0; j < N_OUT; j++) sh_dequantize(SH_GGML_Q8_0, wq + (size_t)j * n_in / 32 * 34, wdq + (size_t)j * n_in, n_in);
    for (int rows = 1; rows <= 8; rows++) {
        reference(ref, mag, x, rows, w, n_in, N_OUT);
        double e32 = worst(pool, (sh_mat){w, SH_MAT_F32}, x, rows, bias, n_in, ref, mag);
        CHECK(e32 < 1e-5, "float32 n_in %d rows %d: %g", n_in, rows, e32);
        /* halves: the half's rounding of each weight (2^-11 relative) */
        double e16 = worst(pool, (sh_mat){wh, SH_MAT_F16}, x, rows, bias, n_in, ref, mag);
        CHECK(e16 < 1e-3, "float16 n_in %d rows %d: %g", n_in, rows, e16);
        reference(ref, mag, x, rows, wdq, n_in, N_OUT);
        /* int8 inputs with a scale per 4 values: at most half a step of
         * 1/127 of the group's largest value per term */
        double e8 = worst(pool, (sh_mat){wq, SH_MAT_Q8_0}, x, rows, bias, n_in, ref, mag);
        CHECK(e8 < 5e-3, "q8_0 (%s) n_in %d rows %d: %g", kernel, n_in, rows, e8);
        if (!pool && (rows == 1 || rows == 8))
            printf("n_in %4d rows %d: float32 %.1e, float16 %.1e, q8_0 with %s %.1e\n", n_in, rows,
                   e32, e16, kernel, e8);
    }
    free(w), free(x), free(wh), free(wq), free(wdq), free(ref), free(mag);
}

/* The encoder's int8 GEMM (AVX-512 VNNI): weights per row, inputs per
 * row, so each term is off by at most half a step of 1/127 of its row's
 * largest weight and input; every row count from 1 to 13 (the kernel
 * takes 6 at a time) and a window's 1500. */
static void check_gemm_i8(sh_pool *pool) {
    const int n_out = 96, n_in = 256, max_rows = 1500;
    if (!sh_i8p_supported(n_out, n_in)) {
        printf("int8 GEMM: not on this CPU (no AVX2): the encoder stays float32\n");
        return;
    }
    unsigned seed = 777u;
    float *w = malloc(sizeof(float) * n_out * n_in), *x = malloc(sizeof(float) * max_rows * n_in);
    float *y = malloc(sizeof(float) * max_rows * n_out), bias[96], row[256];
    void *packed = NULL, *scratch = malloc(sh_gemm_i8p_scratch(max_rows, n_in));
    CHECK(posix_memalign(&packed, 64, sh_i8p_bytes(n_out, n_in)) == 0, "alloc");
    for (int i = 0; i < n_out * n_in; i++) w[i] = rnd(&seed);
    for (int i = 0; i < max_rows * n_in; i++) x[i] = rnd(&seed) * (i % 89 == 0 ? 30.0f : 1.0f);
    for (int j = 0; j < n_out; j++) bias[j] = rnd(&seed);
    sh_i8p_init(packed, n_out, n_in);
    for (int j = 0; j < n_out; j++) sh_i8p_put_row(packed, j, w + (size_t)j * n_in);
    double back = 0;   /* the packed weights read back: within half a step */
    for (int j = 0; j < n_out; j++) {
        float amax = 0;
        for (int k = 0; k < n_in; k++) amax = fmaxf(amax, fabsf(w[j * n_in + k]));
        sh_i8p_get_row(packed, j, row);
        for (int k = 0; k < n_in; k++) back = fmax(back, fabs(row[k] - w[j * n_in + k]) / amax);
    }
    CHECK(back <= 0.5 / 127 + 1e-6, "packed rows read back: %g", back);
    /* the products in double once: every count's rows are a prefix of x */
    double *ref = malloc(sizeof(double) * max_rows * n_out);
    double *mag = malloc(sizeof(double) * max_rows * n_out);
    reference(ref, mag, x, max_rows, w, n_in, n_out);
    int counts[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 1500};
    sh_int8_path kernels[] = {SH_INT8_AVX2, SH_INT8_AVXVNNI, SH_INT8_VNNI512};
    const char *names[] = {"AVX2", "256-bit VNNI", "AVX-512 VNNI"};
    int vnni = __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl");
    int has[] = {1, __builtin_cpu_supports("avxvnni") || vnni, vnni};
    for (int kk = 0; kk < 3; kk++) {
        if (!has[kk]) {
            printf("int8 GEMM %s: not on this CPU\n", names[kk]);
            continue;
        }
        double worst_rel = 0;
        for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++) {
            int rows = counts[c];
            sh_gemm_i8p_kernel(pool, y, x, rows, packed, bias, scratch, kernels[kk]);
            double e = 0;
            for (int r = 0; r < rows; r++)
                for (int j = 0; j < n_out; j++) {
                    /* |dx| <= xmax/254 and |dw| <= wmax/254 per term */
                    float xmax = 0, wmax = 0;
                    for (int k = 0; k < n_in; k++) {
                        xmax = fmaxf(xmax, fabsf(x[r * n_in + k]));
                        wmax = fmaxf(wmax, fabsf(w[j * n_in + k]));
                    }
                    double bound = n_in * (xmax * wmax) * (2.0 / 254 + 1.0 / (254.0 * 254));
                    size_t i = (size_t)r * n_out + j;
                    double d = fabs(y[i] - bias[j] - ref[i]);
                    e = fmax(e, d / bound);
                    worst_rel = fmax(worst_rel, d / (mag[i] + 1e-30));
                }
            CHECK(e <= 1.0, "int8 GEMM %s rows %d: error %g of the bound", names[kk], rows, e);
        }
        printf("int8 GEMM %s: worst error %.1e of sum |x w|, packed weights %.1e\n", names[kk],
               worst_rel, back);
    }
    free(w), free(x), free(y), free(packed), free(scratch), free(ref), free(mag);
}

/* q8_0 blocks as ggml defines them (d = max |x| / 127, q = roundf(x / d)):
 * the loader's vector quantizer must write the same bytes, ties included. */
static void check_q8_0_bytes(void) {
    enum { N = 32 * 64 };
    float x[N];
    uint8_t got[N / 32 * 34], want[N / 32 * 34];
    unsigned seed = 99u;
    for (int i = 0; i < N; i++) x[i] = rnd(&seed) * (i % 7 == 0 ? 5.0f : 1.0f);
    /* a block whose step is 1 (largest 127) and values on halves: ties */
    for (int i = 0; i < 32; i++) x[i] = i == 0 ? 127.0f : (float)(i - 16) + 0.5f;
    for (int i = 32; i < 64; i++) x[i] = 0.0f;
    sh_quantize(SH_GGML_Q8_0, x, got, N);
    for (int b = 0; b < N / 32; b++) {
        const float *v = x + b * 32;
        float amax = 0;
        for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(v[i]));
        float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f;
        uint16_t h = sh_f32_to_f16(d);
        memcpy(want + b * 34, &h, 2);
        for (int i = 0; i < 32; i++) want[b * 34 + 2 + i] = (uint8_t)(int8_t)roundf(v[i] * id);
    }
    CHECK(memcmp(got, want, sizeof got) == 0, "q8_0 bytes differ from ggml's definition");
}

int main(void) {
    const char *kernels[] = {"float", "avx2", "avxvnni", "vnni512"};
    sh_pool *pool = sh_pool_new(3);
    CHECK(pool != NULL, "pool");
    printf("this CPU's int8 kernel: %s\n", sh_int8_kernel_name());
    for (size_t i = 0; i < sizeof kernels / sizeof kernels[0]; i++) {
        setenv("SHRUTI_INT8_KERNEL", kernels[i], 1);
        const char *name = sh_int8_kernel_name();
        /* 416: an odd number of 32-weight blocks (the 512-bit int8 loop
         * takes two at a time) */
        const int widths[] = {384, 416, 1536};
        for (size_t w = 0; w < sizeof widths / sizeof widths[0]; w++) {
            check_kinds(NULL, widths[w], name);
            check_kinds(pool, widths[w], name);
        }
    }
    unsetenv("SHRUTI_INT8_KERNEL");
    check_gemm_i8(pool);
    check_q8_0_bytes();
    sh_pool_free(pool);
    return t_finish("test_gemv");
}
