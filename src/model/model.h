/* model.h - a loaded Whisper model: hyperparameters, vocabulary, special
 * tokens and float32 weights. Read-only after loading, shared by contexts. */
#ifndef SHRUTI_MODEL_H
#define SHRUTI_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "shruti.h"

#define SH_N_FFT 400
#define SH_HOP 160
#define SH_N_FREQ (SH_N_FFT / 2 + 1)   /* 201 one-sided bins */
#define SH_CHUNK_SAMPLES 480000        /* 30 s */
#define SH_CHUNK_FRAMES 3000
#define SH_MAX_LANGUAGES 100

typedef struct {
    int n_vocab;
    int n_audio_ctx, n_audio_state, n_audio_head, n_audio_layer;
    int n_text_ctx, n_text_state, n_text_head, n_text_layer;
    int n_mels;
    int ftype;
} sh_hparams;

/* Special token ids, derived from n_vocab exactly as the reference does. */
typedef struct {
    int eot, sot, translate, transcribe, sot_lm, sot_prev, no_speech, no_timestamps;
    int timestamp_begin;
    int first_language;          /* id of the first language token ("en") */
    int n_languages;             /* 0 for English-only */
} sh_special;

typedef struct {
    int n_tokens;                /* entries stored in the file (text tokens) */
    uint32_t *offset;            /* (n_tokens + 1) byte offsets into bytes */
    char *bytes;                 /* all token bytes, concatenated */
    /* byte string -> token id, for BPE encoding (open addressing) */
    int32_t *table;
    uint32_t table_mask;
} sh_vocab;

/* A weight matrix (n_out, n_in), row-major: float32, IEEE half, or q8_0
 * blocks (32 int8 weights and a half scale). The decoder reads every
 * weight each step, so its matrices stay as compact as the compute type
 * allows and are widened to float32 inside the kernels; half weights from
 * an f16 file give exactly the products of float32 ones. */
enum { SH_MAT_F32 = 0, SH_MAT_F16 = 1, SH_MAT_Q8_0 = 2,
       SH_MAT_I8P = 3 /* int8 per row, packed for the encoder's GEMM (cpu/gemm_i8.h) */ };

typedef struct {
    const void *data;
    int kind;
} sh_mat;

typedef struct {
    const float *attn_ln_w, *attn_ln_b;         /* (d) */
    sh_mat q_w, k_w, v_w, o_w;                  /* (d, d) */
    const float *q_b, *v_b, *o_b;               /* (d) */
    const float *cross_ln_w, *cross_ln_b;       /* decoder only */
    sh_mat cq_w, ck_w, cv_w, co_w;
    const float *cq_b, *cv_b, *co_b;
    const float *mlp_ln_w, *mlp_ln_b;
    sh_mat fc1_w, fc2_w;                        /* (4d, d), (d, 4d) */
    const float *fc1_b, *fc2_b;                 /* (4d), (d) */
} sh_block;

typedef struct {
    const float *conv1_w, *conv1_b;   /* (d, n_mels, 3), (d) */
    const float *conv2_w, *conv2_b;   /* (d, d, 3), (d) */
    const float *enc_pos;             /* (n_audio_ctx, d) */
    sh_block *enc;                    /* n_audio_layer */
    const float *enc_ln_w, *enc_ln_b;
    sh_mat tok_emb;                   /* (n_vocab, d), tied: embedding and logits */
    const float *dec_pos;             /* (n_text_ctx, d) */
    sh_block *dec;                    /* n_text_layer */
    const float *dec_ln_w, *dec_ln_b;
} sh_weights;

struct shruti_model {
    sh_hparams hp;
    sh_special sp;
    sh_vocab vocab;
    float *mel_filters;               /* (n_mels, 201) */
    sh_weights w;
    void *map;                        /* the mapped file: weights used in place */
    size_t map_size;
    float *arena;                     /* the weights converted at load */
    size_t arena_floats;
    char type_name[16];
    char compute_type[16];            /* effective: float32, float16, int8 */
    int decoder_kind;                 /* SH_MAT_* of the decoder's matrices */
    int encoder_kind;                 /* F32; F16 (half files, or bound for a GPU); I8P
                                         for int8 on a CPU with AVX2 */
    /* the GPU copy, when the model runs on one (gpu/gpu_loader.c) */
    void *gpu_dl;                     /* the backend module's handle */
    const void *gpu_api;              /* its sh_gpu_api */
    struct sh_gpu_model *gpu;
    /* on the CPU, an int8 copy of a half token embedding that rules
     * most tokens out of each choice (cpu/logit_screen.h), or NULL */
    struct sh_logit_screen *logit_screen;
    char device[8];                   /* "cuda" or "cpu" */
    char device_note[800];            /* where and why */
};

/* vocab.c */
int sh_vocab_build_index(sh_vocab *v);
int sh_vocab_repair_byte_tokens(sh_vocab *v);
void sh_vocab_free(sh_vocab *v);
int sh_vocab_lookup(const sh_vocab *v, const char *bytes, size_t len);
void sh_special_from_n_vocab(sh_special *sp, int n_vocab);
const char *sh_language_code(int i);
const char *sh_language_name(int i);
/* Bytes of a token (text or special); NULL if out of range. */
const char *sh_token_bytes(const shruti_model *m, int token, size_t *len, char *scratch,
                           size_t scratch_size);

#endif
