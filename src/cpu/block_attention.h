/* block_attention.h - the encoder's self-attention on the CPU, computed a
 * block of query rows at a time so that the scores never leave the cache. */
#ifndef SHRUTI_CPU_BLOCK_ATTENTION_H
#define SHRUTI_CPU_BLOCK_ATTENTION_H

#include <stddef.h>

#include "cpu/threadpool.h"

/* Floats of scratch sh_block_attention needs for n positions of width d
 * and n_slots parallel slots. */
size_t sh_block_attention_floats(int n, int d, int n_slots);

/* out = softmax(q_h k_h^T * scale) v_h for every head h, written into the
 * head's columns of out. q, k, v and out are (n, d) row-major, heads of
 * d / n_head columns side by side (d a multiple of n_head). The work is
 * shared over n_slots slots of scratch, run on pool (n_slots should be the
 * pool's thread count; any count >= 1 is correct). */
void sh_block_attention(sh_pool *pool, int n_slots, float *out, const float *q, const float *k,
                        const float *v, int n, int d, int n_head, float scale, float *scratch);

#endif
