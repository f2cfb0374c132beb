/* ops.h - the float32 building blocks of the forward pass. */
#ifndef SHRUTI_CPU_OPS_H
#define SHRUTI_CPU_OPS_H

#include "cpu/threadpool.h"
#include "model/model.h"

/* y (rows x n_out) = x (rows x n_in) @ W^T + b; W is (n_out x n_in),
 * b may be NULL. OpenBLAS for many rows, the pool's GEMV for a few. */
void sh_linear(sh_pool *pool, float *y, const float *x, int rows, sh_mat w, const float *b,
               int n_in, int n_out);

/* Row i of w as float32 into out (n floats). */
void sh_mat_row(sh_mat w, int i, int n, float *out);

/* y = LayerNorm(x) * g + b over rows of n (eps 1e-5); y may equal x. */
void sh_layer_norm(sh_pool *pool, float *y, const float *x, int rows, int n, const float *g,
                   const float *b);

/* x = GELU(x), the exact erf form. */
void sh_gelu(sh_pool *pool, float *x, long n);

/* Row-wise softmax in place over the first n_valid of each row of width n
 * (the rest, if any, set to 0). */
void sh_softmax_rows(sh_pool *pool, float *x, int rows, int n, int ld);

/* y += x elementwise. */
void sh_add(float *y, const float *x, long n);

/* y[r] += b for each row (bias broadcast). */
void sh_add_bias(float *y, const float *b, int rows, int n);

#endif
