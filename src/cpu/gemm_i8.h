/* gemm_i8.h - int8 matrix products for the encoder's linear layers
 * (AVX-512 VNNI, AVX-VNNI, AVX2), weights packed at load (SH_MAT_I8P). */
#ifndef SHRUTI_CPU_GEMM_I8_H
#define SHRUTI_CPU_GEMM_I8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cpu/gemv.h"
#include "cpu/threadpool.h"

/* Whether this CPU and shape take the int8 product (n_out a multiple of
 * 32, n_in of 4, AVX2 at least; AVX-VNNI and AVX-512 VNNI chosen at run
 * time). */
bool sh_i8p_supported(int n_out, int n_in);

/* A packed matrix: sh_i8p_bytes of 64-byte aligned memory, initialised,
 * then each row put (rows may be put from several threads). */
size_t sh_i8p_bytes(int n_out, int n_in);
void sh_i8p_init(void *buf, int n_out, int n_in);
void sh_i8p_put_row(void *buf, int j, const float *w);
/* Row j as the float32 values it stands for. */
void sh_i8p_get_row(const void *buf, int j, float *out);

/* y (rows x n_out) = x (rows x n_in) @ W^T + bias (may be NULL); scratch
 * holds sh_gemm_i8p_scratch bytes (4-byte aligned). */
size_t sh_gemm_i8p_scratch(int rows, int n_in);
void sh_gemm_i8p(sh_pool *pool, float *y, const float *x, int rows, const void *w,
                 const float *bias, void *scratch);

/* The same with a given kernel, for tests: SH_INT8_VNNI512 (needs AVX-512
 * VNNI), SH_INT8_AVXVNNI (the 256-bit VPDPBUSD: AVX-VNNI, or AVX-512 VNNI's
 * 256-bit form), SH_INT8_AVX2. */
void sh_gemm_i8p_kernel(sh_pool *pool, float *y, const float *x, int rows, const void *w,
                        const float *bias, void *scratch, sh_int8_path kernel);

#endif
