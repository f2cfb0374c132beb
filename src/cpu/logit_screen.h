/* logit_screen.h - greedy and beam choices without reading the whole
 * half-precision token embedding every step (see logit_screen.c). */
#ifndef SHRUTI_CPU_LOGIT_SCREEN_H
#define SHRUTI_CPU_LOGIT_SCREEN_H

#include "cpu/threadpool.h"
#include "model/model.h"

typedef struct sh_logit_screen sh_logit_screen;

/* An int8 copy of w (n_rows x n_in half weights, n_in a multiple of 32)
 * and each row's error bound terms. NULL when w is not half, the CPU has
 * no integer dot products, SHRUTI_LOGIT_SCREEN=0, or out of memory: the
 * caller then computes every logit. */
sh_logit_screen *sh_logit_screen_new(sh_mat w, int n_rows, int n_in);
void sh_logit_screen_free(sh_logit_screen *s);

/* The coefficients of one input row's error bound: for every token t,
 * |exact_t - approx_t| <= a * err_t + b * norm_t. */
typedef struct {
    float a, b;
} sh_screen_bound;

/* Approximate logits of n input rows h (n x n_in) into v (n x n_rows)
 * and each row's bound. */
void sh_logit_screen_scores(sh_pool *pool, const sh_logit_screen *s, const float *h, int n,
                            float *v, sh_screen_bound *bound);

/* One row v of approximations (masked tokens already -inf): the tokens
 * of [0, text_end) that may be among its k largest get their exact logits
 * from w (the half weights); the caller computes [text_end, n_rows)
 * exactly. Afterwards v's k largest are exact and the others below them.
 * Returns the tokens computed, or -1 when over a sixteenth of the
 * vocabulary would be (the caller computes the whole row instead).
 * idx: room for n_rows / 16 ints. */
int sh_logit_screen_refine(const sh_logit_screen *s, sh_mat w, const float *h,
                           sh_screen_bound bound, int text_end, int k, float *v, int *idx);

#endif
