/* gemv.h - matrix products for a few rows (decoder steps: one row per
 * beam), reading each weight once for all rows. */
#ifndef SHRUTI_CPU_GEMV_H
#define SHRUTI_CPU_GEMV_H

#include <stdint.h>

#include "cpu/threadpool.h"
#include "model/model.h"

#define SH_GEMV_MAX_ROWS 8

/* y[r][j] = alpha * dot(x[r], w[j]) + (b ? b[j] : 0) for r < rows
 * (<= SH_GEMV_MAX_ROWS) and j in [j0, j1); single-threaded. */
void sh_dot_rows(float *y, int ldy, const float *x, int ldx, int rows, const float *w, int ldw,
                 const float *b, int n_in, int j0, int j1, float alpha);

/* The same with half-precision weights, widened in the kernel. */
void sh_dot_rows_f16(float *y, int ldy, const float *x, int ldx, int rows, const uint16_t *w,
                     int ldw, const float *b, int n_in, int j0, int j1, float alpha);

/* The same with q8_0 blocks (n_in a multiple of 32, rows packed). */
void sh_dot_rows_q8(float *y, int ldy, const float *x, int ldx, int rows, const uint8_t *w,
                    const float *b, int n_in, int j0, int j1, float alpha);

/* The integer dot products this CPU has (CPUID), or a lesser one the CPU
 * also has when SHRUTI_INT8_KERNEL names it (float, avx2, avxvnni,
 * vnni512; for tests and benchmarks). */
typedef enum { SH_INT8_FLOAT, SH_INT8_AVX2, SH_INT8_AVXVNNI, SH_INT8_VNNI512 } sh_int8_path;
sh_int8_path sh_int8_path_for_cpu(void);

/* The kernel q8_0 matrices use on this CPU: "int8 AVX-512 VNNI",
 * "int8 AVX-VNNI", "int8 AVX2" (input rows quantized to int8 blocks on
 * the fly), or a float one on CPUs without AVX2. */
const char *sh_int8_kernel_name(void);

/* The same over j in [0, n_out), split across the pool's threads. */
void sh_gemv_rows(sh_pool *pool, float *y, int ldy, const float *x, int ldx, int rows, sh_mat w,
                  int ldw, const float *b, int n_in, int n_out, float alpha);

/* Rows j0 ... of w (rows of n_in values; not for SH_MAT_I8P). */
static inline sh_mat sh_mat_rows_from(sh_mat w, int j0, int n_in) {
    size_t row_bytes = w.kind == SH_MAT_F32 ? (size_t)n_in * 4
                     : w.kind == SH_MAT_F16 ? (size_t)n_in * 2
                                            : (size_t)n_in / 32 * 34;
    return (sh_mat){(const uint8_t *)w.data + (size_t)j0 * row_bytes, w.kind};
}

/* y[idx[i]] = dot(x, w[idx[i]]) for one input row and n_idx chosen weight
 * rows, each the value sh_gemv_rows gives it for one row; single-threaded. */
void sh_gemv_row_at(float *y, const float *x, sh_mat w, int ldw, int n_in, const int *idx,
                    int n_idx);

#endif
