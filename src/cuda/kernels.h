/* kernels.h - launchers of the CUDA kernels (kernels.cu), callable from C.
 * Every launcher enqueues on the given stream and returns nothing: errors
 * surface through cudaGetLastError and the next synchronisation.
 *
 * "act" buffers hold the inputs of cuBLAS GEMMs: float32 when act_half is
 * 0, IEEE half otherwise. Weight kinds for the GEMV: SH_GW_* below. */
#ifndef SHRUTI_CUDA_KERNELS_H
#define SHRUTI_CUDA_KERNELS_H

#include <cuda_runtime_api.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { SH_GW_F32 = 0, SH_GW_F16 = 1, SH_GW_I8 = 2 };

/* The fused step's half fc1 and fc2 copies (sh_fused_layer's fc1 and
 * fc2_blocks) are swizzled: row r's 16-byte piece p is stored at piece
 * p ^ (r % 8), so that any eight consecutive rows' pieces of one column
 * fall in different shared-memory banks, for ldmatrix (fused_step.cu). */
#define SH_SWIZZLE(r, p) ((p) ^ ((r) & 7))

/* A weight matrix on the device: (n_out, n_in) row-major; int8 weights
 * carry one half scale per 32 (n_out, n_in / 32). */
typedef struct {
    void *w;
    uint16_t *scales;
    int kind, n_out, n_in;
} sh_gmat;

/* GEMV epilogues: y = Wx + b, y += Wx + b, y = gelu(Wx + b). */
enum { SH_GEMV_STORE = 0, SH_GEMV_ACCUM = 1, SH_GEMV_GELU = 2 };

#define SH_GEMV_MAX_ROWS 8

/* Where a fused qkv GEMV also stores k and v: the caches of one layer
 * (n_beams, n_ctx, d) act; row r is beam r / n_tokens at *pos0 + r % n_tokens. */
typedef struct {
    void *k_cache, *v_cache;
    const int *pos0;
    int n_tokens, n_ctx, d, act_half;
} sh_kv_target;

/* How a GEMV may run (flags): SH_K_PDL as a programmatic dependent of the
 * previous kernel (Hopper and later: its weight loads overlap the previous
 * kernel's tail); SH_K_MMA half or int8 weights on the tensor cores (compute
 * capability 8.0 and later) for 2 rows and more, SH_K_MMA_ONE for one row
 * too. */
enum { SH_K_PDL = 1, SH_K_MMA = 2, SH_K_MMA_ONE = 4, SH_K_ATT_ROWS = 8 };

/* y (rows, n_out; row stride ldy) from x (rows, n_in; stride ldx) for
 * rows <= SH_GEMV_MAX_ROWS, each weight read once for all rows. */
void sh_k_gemv(cudaStream_t s, const sh_gmat *w, const float *x, int ldx, int rows, float *y,
               int ldy, const float *bias, int epilogue, int flags);

/* The same with the input rows layer-normalised first (ln_g, ln_b; rows *
 * n_in floats must fit in 48 KB of shared memory) and, when kv is given,
 * the k and v columns stored into the caches too. */
void sh_k_gemv_ln(cudaStream_t s, const sh_gmat *w, const float *x, int ldx, int rows, float *y,
                  int ldy, const float *bias, int epilogue, const float *ln_g, const float *ln_b,
                  const sh_kv_target *kv, int flags);

/* Widens a matrix to half (for cuBLAS when rows exceed the GEMV's). */
void sh_k_to_half(cudaStream_t s, const sh_gmat *w, uint16_t *out);
/* out: w's columns in blocks of `width` (a multiple of 64 dividing
 * n_in), for the fused step: row b * n_out + j holds w's row j, columns
 * b * width .. (b + 1) * width - 1 (half or int8, with its width / 32
 * scales), its 16-byte pieces swizzled (SH_SWIZZLE) if swizzle; out->w
 * and out->scales allocated. */
void sh_k_col_blocks(cudaStream_t s, const sh_gmat *w, int width, int swizzle, sh_gmat *out);
void sh_k_f32_to_half(cudaStream_t s, const float *x, uint16_t *out, long n);
/* y (n_out) = w x for one row x, w half or int8 (the logits), through
 * the layer norm (ln_g, ln_b) when ln_g is given: a persistent grid of
 * `grid` blocks, sh_gemv_wide_grid's (0: the kernel cannot take w; with
 * pick, the grid of sh_k_gemv_wide_pick). */
int sh_gemv_wide_grid(int device, int kind, int n_in, int pick);
void sh_k_gemv_wide(cudaStream_t s, const sh_gmat *w, const float *x, float *y, const float *ln_g,
                    const float *ln_b, int grid, int pdl);
/* The fused step's cross query fold (sh_fused_layer): G = cq diag(g) as
 * half, e = G o_b, g1 = G 1, c = cq b + cq_b; cq half (d, d). */
void sh_k_fold_cross_query(cudaStream_t s, const uint16_t *cq, const float *g, const float *b,
                           const float *cq_b, const float *o_b, int d, uint16_t *G, float *e,
                           float *g1, float *c);

/* col (out_len, n_ch * 3) act from in: channel-major (n_ch, in_len) when
 * channel_major, else time-major (in_len, n_ch); kernel 3, padding 1. */
void sh_k_im2col(cudaStream_t s, const float *in, int channel_major, int n_ch, int in_len,
                 int out_len, int stride, void *col, int act_half);

/* y (rows, n) = gelu(y + b) [+ add (rows, n)], float32 in place. */
void sh_k_bias_gelu_add(cudaStream_t s, float *y, const float *b, const float *add, int rows,
                        int n);
/* y (rows, n) += b. */
void sh_k_add_bias(cudaStream_t s, float *y, const float *b, int rows, int n);
/* out act (rows, n) = f(y + b), f = gelu when gelu is set; b may be NULL. */
void sh_k_bias_act(cudaStream_t s, const float *y, const float *b, int rows, int n, int gelu,
                   void *out, int act_half);
/* y (n halves) = gelu(y), in place. */
void sh_k_gelu_half(cudaStream_t s, uint16_t *y, long n);
/* out (rows, n) = layer_norm(x) * g + b; out is act (act_half) or float. */
void sh_k_layer_norm(cudaStream_t s, const float *x, int rows, int n, const float *g,
                     const float *b, void *out, int act_half);
/* out act (rows, n) = softmax of each float row. */
void sh_k_softmax_rows(cudaStream_t s, const float *x, int rows, int n, void *out, int act_half);

/* The encoder's self-attention of every head in one kernel on the tensor
 * cores (encoder_attention.cu; compute 8.0 and later): qkv (n, 3d) half,
 * q, k, v side by side, heads of 64; out (n, d) half; groups: 0, or
 * sh_encoder_attention_groups' answer (warpgroup MMAs). -1 (nothing
 * launched) for other head widths. */
int sh_k_encoder_attention(cudaStream_t s, const uint16_t *qkv, int n, int d, int n_head,
                           uint16_t *out, int groups);
/* Warpgroups a block of the warpgroup-MMA form for that shape on device
 * (compute 9.0, a build with sm_90a code), 0 where it cannot run. */
int sh_encoder_attention_groups(int device, int n, int d, int n_head);

/* Decoder embedding: x[r] = tok_emb[tokens[r]] + pos_emb[*pos0 + r % n_tokens]. */
void sh_k_embed(cudaStream_t s, const sh_gmat *tok_emb, const float *pos_emb, const int *tokens,
                const int *pos0, int rows, int n_tokens, float *x);

/* Stores the k and v parts of qkv rows (rows, 3d) into the self caches of
 * one layer: cache (n_beams, n_ctx, d) act; row r is beam r / n_tokens at
 * position *pos0 + r % n_tokens. */
void sh_k_kv_store(cudaStream_t s, const float *qkv, int rows, int n_tokens, int d,
                   const int *pos0, int n_ctx, void *k_cache, void *v_cache, int act_half);

/* Decoder attention, split over key blocks: for row r, head h of width
 * hd = d / n_head, out[r][h*hd ..] = softmax(q k^T / sqrt(hd)) v over keys
 * [0, n_keys(r)).
 * causal: n_keys(r) = *pos0 + r % n_tokens + 1; else n_keys = n_kv. Row r
 * reads the keys of beam (or window) r / n_tokens, beam_stride elements
 * apart (0: shared by every row). partial: scratch of sh_attention_partial_floats;
 * counters: rows x n_head ints, zero before and after. flags: SH_K_PDL;
 * SH_K_ATT_ROWS lets rows that share one window (not causal, beam_stride
 * 0) be scored together, each key read once for several, where a block a
 * row would take more than wave blocks (sh_attention_wave). */
void sh_k_attention(cudaStream_t s, const float *q, int ldq, const void *k, const void *v,
                    int d, int n_head, int rows, int causal, int n_tokens, const int *pos0,
                    int n_kv, long beam_stride, int act_half, float *partial, int *counters,
                    float *out, int flags, int wave);
/* The blocks of sh_k_attention's row-by-row kernel the device runs at once
 * (64-wide heads, half or float keys). */
int sh_attention_wave(int device, int act_half);
long sh_attention_partial_floats(int rows, int n_head, int hd, int max_keys);

/* caches (n_layer, n_cache_beams, n_ctx, d): beam b < n_beams takes beam
 * src[b]'s first n_pos positions (src on the device), through tmp of the
 * same size. */
void sh_k_reorder(cudaStream_t s, void *cache, void *tmp, const int *src, int n_layer,
                  int n_beams, int n_cache_beams, int n_ctx, int d, int n_pos, int act_half);
/* beams 1 .. n_beams-1 take beam 0's first n_pos positions. */
void sh_k_broadcast(cudaStream_t s, void *cache, int n_layer, int n_beams, int n_cache_beams,
                    int n_ctx, int d, int n_pos, int act_half);

/* Greedy choices on the device (the logit filters as masks, see
 * gpu_api.h's sh_logit_mask), for n_rows (<= SH_GEMV_MAX_ROWS) rows of
 * logits (n_rows x n_vocab): the tokens of banned (the suppressed tokens
 * as a bitmap of the vocabulary, bit i % 32 of word i / 32, on the device)
 * and the row's ranges become -inf, then the timestamp rule when
 * ts_begin >= 0; out[row] gets the token and its log-probability. masks
 * are the host's (they go with the launch); out is device memory or
 * mapped host memory (the backend's: the host reads it in place).
 * Given next_io (a step's input as the decoder reads it: the position,
 * then a token a row), the choices also go there, at next_pos, so that the
 * next step can run before the host has seen them. */
typedef struct {
    int n_ranges;
    int ranges[8][2];
    int ts_begin;
} sh_pick_mask;

/* The masks as the kernels take them: by value. */
typedef struct {
    sh_pick_mask row[SH_GEMV_MAX_ROWS];
} sh_pick_masks;

typedef struct {
    double logprob;
    int token;
} sh_pick_result;

void sh_k_greedy_pick(cudaStream_t s, float *logits, int n_rows, int n_vocab,
                      const sh_pick_mask *masks, const unsigned *banned, void *scratch,
                      sh_pick_result *out, int *next_io, int next_pos, int pdl);
/* Beam search: the k (<= 33) best tokens of each row after its mask (best
 * first, ties to the lower id) and their log-probabilities, into tokens
 * and logprobs (n_rows x k, device memory). */
void sh_k_topk(cudaStream_t s, float *logits, int n_rows, int n_vocab, const sh_pick_mask *masks,
               const unsigned *banned, int k, void *scratch, int *tokens, double *logprobs, int pdl);
long sh_topk_scratch_bytes(int n_rows);

/* Device scratch the pick needs for n_rows rows (vocabularies up to
 * SH_PICK_MAX_VOCAB). */
long sh_pick_scratch_bytes(int n_rows);
#define SH_PICK_MAX_VOCAB 131072
/* sh_k_gemv_wide's logits of one row and the greedy pick of
 * sh_k_greedy_pick on them, in one kernel (grid: sh_gemv_wide_grid's with
 * pick). scratch: sh_wide_pick_scratch_bytes of device memory,
 * its first 4 bytes zero before the first pick (each pick leaves them
 * so). */
long sh_wide_pick_scratch_bytes(void);
void sh_k_gemv_wide_pick(cudaStream_t s, const sh_gmat *w, const float *x, float *y,
                         const float *ln_g, const float *ln_b, int grid, const sh_pick_mask *mask,
                         const unsigned *banned, void *scratch, sh_pick_result *out, int *next_io,
                         int next_pos, int pdl);

/* The token embedding's int8 screen (kernels.cu): screen (an int8 sh_gmat
 * of w's shape, w->n_in a multiple of 32) and bounds (2 n_out floats: a
 * row's |w - w'| and a bound of |w'|) from the half matrix w.
 * sh_k_screen_pick: sh_k_gemv_wide_pick's choice to the bit through it,
 * reading the half rows only where the screen cannot rule them out (and
 * the timestamp rows); the logits are not stored. grid:
 * sh_screen_pick_grid's (0: a shape it cannot take). */
void sh_k_screen_build(cudaStream_t s, const sh_gmat *w, const sh_gmat *screen, float *bounds);
int sh_screen_pick_grid(int device, int n_in, int n_out);
void sh_k_screen_pick(cudaStream_t s, const sh_gmat *w, const sh_gmat *screen, const float *bounds,
                      const float *x, const float *ln_g, const float *ln_b, int grid,
                      const sh_pick_mask *mask, const unsigned *banned, void *scratch,
                      sh_pick_result *out, int *next_io, int next_pos, int pdl);

/* The fused decoder step of one or two rows (fused_step.cu; compute
 * capability 9.0+, half or int8 weights, head width 64): embedding, every
 * layer, the final residual into x_out (d floats a row); or, one row given
 * logits, the final layer norm (into x_out) and the logits too. */
/* fc2 as blocks of its columns: a block of the step multiplies one
 * block's worth of the hidden vector (d of 4d), so it waits for that
 * quarter alone, and adds its products into x3's sums (4 adds a sum) */
#define SH_FC2_BLOCKS 4
typedef struct {
    const float *ln1_g, *ln1_b, *qkv_b, *o_b, *co_b;
    const float *ln3_g, *ln3_b, *fc1_b, *fc2_b;
    sh_gmat qkv, fc1;   /* fc1: half, a swizzled copy (SH_SWIZZLE) */
    /* fc2's columns in SH_FC2_BLOCKS blocks of d, (SH_FC2_BLOCKS d, d),
     * half ones swizzled; o and cross o head by head, (n_head d, 64)
     * (sh_k_col_blocks) */
    sh_gmat fc2_blocks, o_heads, co_heads;
    /* the cross query folded into the self-attention's sums (made at load,
     * sh_k_fold_cross_query): G = cq diag(ln2_g), (d, d); G o head by
     * head, (n_head d, 64); both half whatever the others' kind; e = G o_b,
     * g1 = G 1, c = cq ln2_b + cq_b (d floats each) */
    sh_gmat cq_g, cq_go_heads;
    const float *cq_e, *cq_g1, *cq_c;
    void *self_k, *self_v;            /* this layer's caches (beam 0 first), half */
    const void *cross_k, *cross_v;    /* this layer's window 0, half (n_audio, d) */
} sh_fused_layer;

/* The greedy pick a fused step of one row can begin with (float16 with
 * the logit screen): the choice from the step before's row x, as
 * sh_k_screen_pick makes it, which the step then runs on (the pick and the
 * step one kernel). Block 0 writes the choice to result (the
 * log-probability, then the token: the host polls the token, -1 until
 * then) and to next_io as the pick's kernel does. */
typedef struct {
    const void *q;                    /* NULL: no pick; else the screen's int8 rows (n_vocab, d) */
    const uint16_t *qs;               /* their half scales, one per 32 */
    const float *bounds;              /* two floats a row (sh_k_screen_build) */
    const float *x;                   /* the row chosen from (d floats) */
    const float *ln_g, *ln_b;         /* its final layer norm, or NULL: x is normed */
    const unsigned *banned;           /* the suppressed tokens' bitmap */
    sh_pick_mask mask;
    sh_pick_result *result;
    int *next_io;
    int next_pos;                     /* the step's position */
    int stops, stop_token;            /* stops: a choice of stop_token (the end of text, where
                                         decoding stops) ends the step, its layers not run */
} sh_step_pick;

typedef struct {
    int n_layer, d, n_head, n_ctx, n_audio;
    int kind;                         /* the weights: SH_GW_F16, or SH_GW_I8 (d % 128 == 0) */
    const sh_fused_layer *layers;     /* device memory, n_layer */
    const void *tok_emb;              /* (n_vocab, d) of kind (int8: a zero row after an odd n_vocab) */
    const uint16_t *tok_scales;       /* int8: half (n_vocab, d / 32) */
    const float *pos_emb;             /* (n_ctx, d) */
    const int *token, *pos0;          /* device */
    unsigned long long *ll;           /* sh_fused_ll_words, zero at first */
    unsigned *epoch;                  /* device, non-zero at first */
    float *x_out;                     /* the last residual, or with logits the normed one */
    /* NULL, or the step ends with the final layer norm (ln_g, ln_b) and
     * the logits (n_vocab floats) from tok_emb */
    float *logits;
    const float *ln_g, *ln_b;
    int n_vocab;                      /* the logits' or the pick's vocabulary */
    sh_step_pick pick;                /* pick.q NULL, or the step begins with that pick */
    /* stops: a one-row step without the pick whose token is stop_token
     * (a pick kernel's choice of the end of text, this step speculated
     * behind it) runs nothing and changes nothing, as if not launched */
    int stops, stop_token;
    unsigned long long *trace;        /* NULL, or 24 stamps a layer (block 0; bench: a
                                         second build of the kernel, stamps and all) */
    int grid;   /* blocks: 0 for one an SM; fewer plans as on a part with that many SMs */
    /* rows stepped at once (0 or 1: one; 2: two, each its own token, caches
     * and window, at one position: batched windows, two beams), without
     * logits; row r's caches and cross keys r times these halves on */
    int rows;
    long cache_stride, cross_stride;
    /* set by sh_fused_plan */
    int splits, max_keys, uni_bytes, sc_floats;
    int part_rows;                    /* the logits' weight rows a slice */
    unsigned ring_bytes;
    size_t smem;
    int row_shift;                    /* a block's rows in units of 1 << row_shift */
    int mma_ffn;                      /* fc1 and fc2 swizzled (SH_SWIZZLE), on the tensor cores */
    int stream_l2;                    /* the layers' slices and cross keys evicted from L2 first */
} sh_fused_step;

/* Fills in f's launch shape from its sizes; -1 where the device or the
 * model cannot run it (then the step stays separate kernels). */
#define SH_FUSED_MAX_ROWS 2
int sh_fused_plan(int device, sh_fused_step *f);
/* Whether a model of width d takes fc1 and fc2 on the tensor cores in the
 * fused step on sms blocks (their copies then swizzled, f->mma_ffn): where
 * a block has 31 or 32 of fc1's rows (the float loop's pairs on 15 warps
 * would take two rounds), or with force 1 wherever its rows fit (tests);
 * force 0 never, -1 that rule. */
int sh_fused_mma_ffn(int d, int sms, int force);
long sh_fused_ll_words(int n_layer, int d, int n_head, int splits, int rows);
void sh_k_fused_step(cudaStream_t s, const sh_fused_step *f);
/* Whether planned step f (one row) can begin with the greedy pick of its
 * vocabulary, f->n_vocab (a lane of its warps a text row). */
int sh_fused_can_pick(const sh_fused_step *f);

/* The probe: out[i] = i * 3 + 1 for i < n. */
void sh_k_probe(cudaStream_t s, int *out, int n);

#ifdef __cplusplus
}
#endif

#endif
