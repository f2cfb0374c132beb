/* encoder.c - the audio encoder on the CPU, float32 (its linear layers
 * int8 for the int8 compute type on CPUs with AVX2):
 * conv stem, transformer blocks, ln_post; then cross-attention K/V. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/f16.h"
#include "cpu/block_attention.h"
#include "cpu/gemm_i8.h"
#include "cpu/ops.h"
#include "cpu/runtime.h"

/* im2col for a kernel-3, padding-1 convolution over time:
 * col[t][c * 3 + k] = in[c][t * stride + k - 1], in is (n_ch, in_len)
 * when channels_first, else (in_len, n_ch). */
static void im2col(float *col, const float *in, int n_ch, int in_len, int out_len, int stride,
                   int channels_first) {
    for (int t = 0; t < out_len; t++) {
        float *row = col + (size_t)t * n_ch * 3;
        for (int c = 0; c < n_ch; c++)
            for (int k = 0; k < 3; k++) {
                int s = t * stride + k - 1;
                float v = 0.0f;
                if (s >= 0 && s < in_len)
                    v = channels_first ? in[(size_t)c * in_len + s] : in[(size_t)s * n_ch + c];
                row[c * 3 + k] = v;
            }
    }
}

/* y = x @ W^T + b over the window's positions: int8 GEMM for packed
 * weights (the quantized input goes in the im2col buffer, free by now),
 * else OpenBLAS. */
static void enc_linear(sh_runtime *rt, float *y, const float *x, sh_mat w, const float *b,
                       int n_in, int n_out) {
    int n = rt->m->hp.n_audio_ctx;
    if (w.kind == SH_MAT_I8P) sh_gemm_i8p(rt->pool, y, x, n, w.data, b, rt->enc_col);
    else sh_linear(rt->pool, y, x, n, w, b, n_in, n_out);
}

/* x = x + attn(attn_ln(x)) for the encoder (no mask; all heads at once,
 * a block of query rows at a time: cpu/block_attention.c). */
static void encoder_attention(sh_runtime *rt, const sh_block *b) {
    const sh_hparams *hp = &rt->m->hp;
    int n = hp->n_audio_ctx, d = hp->n_audio_state, n_head = hp->n_audio_head;
    float scale = 1.0f / sqrtf((float)(d / n_head));   /* (dh^-0.25)^2 on q.k */
    sh_layer_norm(rt->pool, rt->enc_h, rt->enc_x, n, d, b->attn_ln_w, b->attn_ln_b);
    enc_linear(rt, rt->enc_q, rt->enc_h, b->q_w, b->q_b, d, d);
    enc_linear(rt, rt->enc_k, rt->enc_h, b->k_w, NULL, d, d);
    enc_linear(rt, rt->enc_v, rt->enc_h, b->v_w, b->v_b, d, d);
    sh_block_attention(rt->pool, rt->n_threads, rt->enc_a, rt->enc_q, rt->enc_k, rt->enc_v, n, d,
                       n_head, scale, rt->enc_attn);
    enc_linear(rt, rt->enc_q, rt->enc_a, b->o_w, b->o_b, d, d);
    sh_add(rt->enc_x, rt->enc_q, (long)n * d);
}

/* x = x + mlp(mlp_ln(x)) */
static void encoder_mlp(sh_runtime *rt, const sh_block *b) {
    const sh_hparams *hp = &rt->m->hp;
    int n = hp->n_audio_ctx, d = hp->n_audio_state;
    sh_layer_norm(rt->pool, rt->enc_q, rt->enc_x, n, d, b->mlp_ln_w, b->mlp_ln_b);
    enc_linear(rt, rt->enc_h, rt->enc_q, b->fc1_w, b->fc1_b, d, 4 * d);
    sh_gelu(rt->pool, rt->enc_h, (long)n * 4 * d);
    enc_linear(rt, rt->enc_q, rt->enc_h, b->fc2_w, b->fc2_b, 4 * d, d);
    sh_add(rt->enc_x, rt->enc_q, (long)n * d);
}

static void compute_cross_kv(sh_runtime *rt) {
    const sh_hparams *hp = &rt->m->hp;
    int n = hp->n_audio_ctx, d = hp->n_text_state;
    for (int l = 0; l < hp->n_text_layer; l++) {
        const sh_block *b = &rt->m->w.dec[l];
        size_t off = (size_t)l * n * d;
        float *k = rt->cross_half ? rt->enc_k : (float *)rt->cross_k + off;
        float *v = rt->cross_half ? rt->enc_v : (float *)rt->cross_v + off;
        enc_linear(rt, k, rt->enc_x, b->ck_w, NULL, d, d);
        enc_linear(rt, v, rt->enc_x, b->cv_w, b->cv_b, d, d);
        if (rt->cross_half) {
            sh_floats_to_halves((uint16_t *)rt->cross_k + off, k, (size_t)n * d);
            sh_floats_to_halves((uint16_t *)rt->cross_v + off, v, (size_t)n * d);
        }
    }
}

int sh_cpu_encode(sh_runtime *rt, const float *mel) {
    const sh_hparams *hp = &rt->m->hp;
    const sh_weights *w = &rt->m->w;
    int n = hp->n_audio_ctx, d = hp->n_audio_state, n_mels = hp->n_mels;
    int n_in = 2 * n;   /* 3000 mel frames */
    /* x = gelu(conv1(mel)): (3000, d), kept in enc_h */
    im2col(rt->enc_col, mel, n_mels, n_in, n_in, 1, 1);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n_in, d, n_mels * 3, 1.0f, rt->enc_col,
                n_mels * 3, w->conv1_w, n_mels * 3, 0.0f, rt->enc_h, d);
    sh_add_bias(rt->enc_h, w->conv1_b, n_in, d);
    sh_gelu(rt->pool, rt->enc_h, (long)n_in * d);
    /* x = gelu(conv2(x)), stride 2: (1500, d) */
    im2col(rt->enc_col, rt->enc_h, d, n_in, n, 2, 0);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, d, d * 3, 1.0f, rt->enc_col, d * 3,
                w->conv2_w, d * 3, 0.0f, rt->enc_x, d);
    sh_add_bias(rt->enc_x, w->conv2_b, n, d);
    sh_gelu(rt->pool, rt->enc_x, (long)n * d);
    /* x = x + positional_embedding */
    sh_add(rt->enc_x, w->enc_pos, (long)n * d);
    for (int l = 0; l < hp->n_audio_layer; l++) {
        encoder_attention(rt, &w->enc[l]);
        encoder_mlp(rt, &w->enc[l]);
    }
    /* x = ln_post(x) */
    sh_layer_norm(rt->pool, rt->enc_x, rt->enc_x, n, d, w->enc_ln_w, w->enc_ln_b);
    compute_cross_kv(rt);
    return 0;
}
