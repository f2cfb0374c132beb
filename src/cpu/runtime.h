/* runtime.h - the per-context run state of the CPU forward pass:
 * activations, the cross-attention keys/values of the current window and
 * the self-attention KV caches of each beam. */
#ifndef SHRUTI_CPU_RUNTIME_H
#define SHRUTI_CPU_RUNTIME_H

#include "cpu/threadpool.h"
#include "model/model.h"

typedef struct {
    const shruti_model *m;
    sh_pool *pool;
    int n_threads;

    /* encoder scratch */
    float *enc_x;        /* (n_audio_ctx, d) residual stream, then the output */
    float *enc_col;      /* im2col buffer, (3000, 3 * max(n_mels, d)) */
    float *enc_h;        /* (n_audio_ctx, 4d) normed input / MLP hidden */
    float *enc_q, *enc_k, *enc_v, *enc_a;   /* (n_audio_ctx, d) */
    float *enc_attn;     /* sh_block_attention's scratch */

    /* decoder state */
    /* (n_text_layer, n_audio_ctx, d): float32, or half (cross_half) for the
     * half and int8 compute types, since every step reads all of it */
    void *cross_k, *cross_v;
    int cross_half;
    int n_beams;                /* beams the self caches hold */
    float *self_k, *self_v;     /* (n_text_layer, n_beams, n_text_ctx, d) */
    float *self_tmp;            /* one layer's cache, for reordering */
    int max_rows;               /* rows the decoder scratch holds */
    float *dec_x, *dec_h, *dec_q, *dec_k, *dec_v, *dec_a;   /* (max_rows, d) */
    float *dec_mlp;             /* (max_rows, 4d) */
    float *dec_scores;          /* cross-attention scores, one row per (row, head) */
    float *dec_partial;         /* (n_threads, 8, d) partial attention outputs */
    float *self_scratch;        /* (n_threads, n_text_head, n_text_ctx) self-attention scores */
} sh_runtime;

int sh_cpu_runtime_init(sh_runtime *rt, const shruti_model *m, int n_threads);
void sh_cpu_runtime_free(sh_runtime *rt);

/* Encoder: mel (n_mels, 3000) -> rt->enc_x (n_audio_ctx, d); then the
 * cross-attention keys and values of every decoder layer. */
int sh_cpu_encode(sh_runtime *rt, const float *mel);

/* Makes room for n_beams self-attention caches (contents undefined). */
int sh_cpu_decoder_reserve(sh_runtime *rt, int n_beams);

/* Runs n_tokens new tokens for each of n_beams beams (tokens is
 * n_beams x n_tokens), at positions pos0 ... pos0 + n_tokens - 1, filling
 * the KV caches. Writes the final-norm hidden states to rt->dec_x
 * (n_beams * n_tokens rows). */
int sh_cpu_decoder_forward(sh_runtime *rt, const int *tokens, int n_beams, int n_tokens, int pos0);

/* logits (n_rows x n_vocab) = hidden rows @ token_embedding^T. */
void sh_cpu_decoder_logits(sh_runtime *rt, const float *hidden, int n_rows, float *logits);

/* Beam b takes the first n_pos cached positions of beam src[b]. */
int sh_cpu_decoder_reorder(sh_runtime *rt, const int *src, int n_beams, int n_pos);

/* Copies beam 0's first n_pos cached positions to beams 1 .. n_beams-1. */
void sh_cpu_decoder_broadcast(sh_runtime *rt, int n_beams, int n_pos);

#endif
