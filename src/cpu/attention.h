/* attention.h - attention over cached keys and values for a few query
 * rows, all heads in one pass over the cache. */
#ifndef SHRUTI_CPU_ATTENTION_H
#define SHRUTI_CPU_ATTENTION_H

#include <stddef.h>
#include <stdint.h>

/* s[(r * n_head + h) * lds + p] = scale * q[r][h] . k[p][h] for r < rows,
 * every head, p in [p0, p1). q rows are ldq apart, key rows ldk apart;
 * head h occupies [h * dh, (h + 1) * dh) of a row. */
void sh_attn_scores(float *s, int lds, const float *q, int ldq, int rows, int n_head, int dh,
                    const float *k, int ldk, int p0, int p1, float scale);

/* out[r][h * dh + i] += sum over p in [p0, p1) of
 * s[(r * n_head + h) * lds + p] * v[p][h * dh + i]. */
void sh_attn_values(float *out, int ldo, const float *s, int lds, int rows, int n_head, int dh,
                    const float *v, int ldv, int p0, int p1);

/* Softmax in place over [0, n) of each of n_rows rows lds apart. */
void sh_attn_softmax(float *s, int lds, int n_rows, int n);

/* The same two with half-precision keys / values (dh a multiple of 8,
 * rows <= SH_ATTN_MAX_ROWS). */
#define SH_ATTN_MAX_ROWS 8
void sh_attn_scores_half(float *s, int lds, const float *q, int ldq, int rows, int n_head, int dh,
                         const uint16_t *k, int ldk, int p0, int p1, float scale);
void sh_attn_values_half(float *out, int ldo, const float *s, int lds, int rows, int n_head,
                         int dh, const uint16_t *v, int ldv, int p0, int p1);

#endif
