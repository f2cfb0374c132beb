/* decoder.c - the text decoder on the CPU, float32, with per-beam
 * self-attention KV caches and the window's cross-attention K/V; plus the
 * run state's lifecycle. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/f16.h"
#include "cpu/attention.h"
#include "cpu/block_attention.h"
#include "cpu/gemv.h"
#include "cpu/ops.h"
#include "cpu/runtime.h"

#define MAX_BEAMS 64

static float *alloc_floats(size_t n) {
    void *p = NULL;
    if (posix_memalign(&p, 64, (n ? n : 1) * sizeof(float)) != 0) return NULL;
    return p;
}

static int max_int(int a, int b) { return a > b ? a : b; }

int sh_cpu_runtime_init(sh_runtime *rt, const shruti_model *m, int n_threads) {
    memset(rt, 0, sizeof *rt);
    if (n_threads < 1) n_threads = 1;   /* the pool and the per-thread scratch agree */
    const sh_hparams *hp = &m->hp;
    rt->m = m;
    rt->n_threads = n_threads;
    rt->pool = sh_pool_new(n_threads);
    size_t n = (size_t)hp->n_audio_ctx, d = (size_t)hp->n_audio_state;
    size_t col = (size_t)max_int(2 * hp->n_audio_ctx * 3 * hp->n_mels, hp->n_audio_ctx * 3 * (int)d);
    rt->enc_x = alloc_floats(n * d);
    rt->enc_col = alloc_floats(col);
    rt->enc_h = alloc_floats(n * 4 * d);
    rt->enc_q = alloc_floats(n * d);
    rt->enc_k = alloc_floats(n * d);
    rt->enc_v = alloc_floats(n * d);
    rt->enc_a = alloc_floats(n * d);
    rt->enc_attn = alloc_floats(sh_block_attention_floats((int)n, (int)d, n_threads));
    size_t dt = (size_t)hp->n_text_state, L = (size_t)hp->n_text_layer;
    /* half keys and values are computed in the encoder's float scratch
     * (enc_k, enc_v) first, and widened there for a many-row step */
    rt->cross_half = m->decoder_kind != SH_MAT_F32 && hp->n_text_state <= hp->n_audio_state &&
                     (hp->n_text_state / hp->n_text_head) % 8 == 0;
    size_t cross_floats = rt->cross_half ? (L * n * dt + 1) / 2 : L * n * dt;
    rt->cross_k = alloc_floats(cross_floats);
    rt->cross_v = alloc_floats(cross_floats);
    rt->max_rows = max_int(hp->n_text_ctx, MAX_BEAMS);
    size_t rows = (size_t)rt->max_rows;
    rt->dec_x = alloc_floats(rows * dt);
    rt->dec_h = alloc_floats(rows * dt);
    rt->dec_q = alloc_floats(rows * dt);
    rt->dec_k = alloc_floats(rows * dt);
    rt->dec_v = alloc_floats(rows * dt);
    rt->dec_a = alloc_floats(rows * dt);
    rt->dec_mlp = alloc_floats(rows * 4 * dt);
    /* self-attention: one row of scores per token row; cross-attention of a
     * few rows: one band of rows per head */
    size_t score_rows = (size_t)max_int(rt->max_rows, hp->n_text_head * SH_GEMV_MAX_ROWS);
    rt->dec_scores = alloc_floats(score_rows * (size_t)max_int(hp->n_audio_ctx, hp->n_text_ctx));
    rt->dec_partial = alloc_floats((size_t)n_threads * SH_GEMV_MAX_ROWS * dt);
    rt->self_scratch = alloc_floats((size_t)n_threads * hp->n_text_head * hp->n_text_ctx);
    if (!rt->pool || !rt->enc_x || !rt->enc_col || !rt->enc_h || !rt->enc_q || !rt->enc_k ||
        !rt->enc_v || !rt->enc_a || !rt->enc_attn || !rt->cross_k || !rt->cross_v ||
        !rt->dec_x || !rt->dec_h || !rt->dec_q || !rt->dec_k || !rt->dec_v || !rt->dec_a ||
        !rt->dec_mlp || !rt->dec_scores || !rt->dec_partial || !rt->self_scratch ||
        sh_cpu_decoder_reserve(rt, 1) < 0) {
        sh_cpu_runtime_free(rt);
        return SHRUTI_ERR_NOMEM;
    }
    return 0;
}

void sh_cpu_runtime_free(sh_runtime *rt) {
    if (rt->pool) sh_pool_free(rt->pool);
    void *bufs[] = {rt->enc_x,   rt->enc_col, rt->enc_h,  rt->enc_q,   rt->enc_k,
                     rt->enc_v,   rt->enc_a,   rt->enc_attn, rt->cross_k, rt->cross_v,
                     rt->self_k,  rt->self_v,  rt->self_tmp,   rt->dec_x,   rt->dec_h,
                     rt->dec_q,   rt->dec_k,   rt->dec_v,  rt->dec_a,   rt->dec_mlp,
                     rt->dec_scores, rt->dec_partial, rt->self_scratch};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    memset(rt, 0, sizeof *rt);
}

int sh_cpu_decoder_reserve(sh_runtime *rt, int n_beams) {
    if (n_beams < 1 || n_beams > MAX_BEAMS) return SHRUTI_ERR_INVALID_ARG;
    if (n_beams <= rt->n_beams) return 0;
    const sh_hparams *hp = &rt->m->hp;
    size_t per_layer = (size_t)n_beams * hp->n_text_ctx * hp->n_text_state;
    size_t total = per_layer * hp->n_text_layer;
    float *k = alloc_floats(total), *v = alloc_floats(total), *tmp = alloc_floats(per_layer);
    if (!k || !v || !tmp) {
        free(k), free(v), free(tmp);
        return SHRUTI_ERR_NOMEM;
    }
    free(rt->self_k), free(rt->self_v), free(rt->self_tmp);
    rt->self_k = k;
    rt->self_v = v;
    rt->self_tmp = tmp;
    rt->n_beams = n_beams;
    return 0;
}

/* Cache of layer l, beam b: (n_text_ctx, d). */
static float *cache_at(const sh_runtime *rt, float *base, int l, int b) {
    const sh_hparams *hp = &rt->m->hp;
    return base + (((size_t)l * rt->n_beams + b) * hp->n_text_ctx) * hp->n_text_state;
}

/* Self-attention of rows (beam b, new token t at position pos0 + t) over
 * that beam's cache [0, pos0 + t], causal. q/k/v already projected. The
 * job has one item per thread; item i takes every n_items-th row and its
 * own scratch. */
typedef struct {
    sh_runtime *rt;
    int layer, n_tokens, pos0, rows, n_items;
} self_attn_job;

static void self_attn_range(void *arg, int begin, int end) {
    self_attn_job *j = arg;
    sh_runtime *rt = j->rt;
    const sh_hparams *hp = &rt->m->hp;
    int d = hp->n_text_state, n_head = hp->n_text_head, dh = d / n_head, ctx = hp->n_text_ctx;
    float scale = 1.0f / sqrtf((float)dh);
    for (int item = begin; item < end; item++) {
        float *s = rt->self_scratch + (size_t)item * n_head * ctx;
        for (int row = item; row < j->rows; row += j->n_items) {
            int b = row / j->n_tokens, t = row % j->n_tokens, n_keys = j->pos0 + t + 1;
            const float *kc = cache_at(rt, rt->self_k, j->layer, b);
            const float *vc = cache_at(rt, rt->self_v, j->layer, b);
            float *out = rt->dec_a + (size_t)row * d;
            sh_attn_scores(s, ctx, rt->dec_q + (size_t)row * d, d, 1, n_head, dh, kc, d, 0,
                           n_keys, scale);
            sh_attn_softmax(s, ctx, n_head, n_keys);
            memset(out, 0, (size_t)d * sizeof *out);
            sh_attn_values(out, d, s, ctx, 1, n_head, dh, vc, d, 0, n_keys);
        }
    }
}

/* x = x + attn(attn_ln(x)) with the KV cache */
static void decoder_self_attention(sh_runtime *rt, int l, int n_beams, int n_tokens, int pos0) {
    const sh_hparams *hp = &rt->m->hp;
    const sh_block *b = &rt->m->w.dec[l];
    int d = hp->n_text_state, rows = n_beams * n_tokens;
    sh_layer_norm(rt->pool, rt->dec_h, rt->dec_x, rows, d, b->attn_ln_w, b->attn_ln_b);
    sh_linear(rt->pool, rt->dec_q, rt->dec_h, rows, b->q_w, b->q_b, d, d);
    sh_linear(rt->pool, rt->dec_k, rt->dec_h, rows, b->k_w, NULL, d, d);
    sh_linear(rt->pool, rt->dec_v, rt->dec_h, rows, b->v_w, b->v_b, d, d);
    for (int bm = 0; bm < n_beams; bm++) {
        size_t src = (size_t)bm * n_tokens * d, dst = (size_t)pos0 * d;
        memcpy(cache_at(rt, rt->self_k, l, bm) + dst, rt->dec_k + src,
               (size_t)n_tokens * d * sizeof(float));
        memcpy(cache_at(rt, rt->self_v, l, bm) + dst, rt->dec_v + src,
               (size_t)n_tokens * d * sizeof(float));
    }
    int n_items = rows * (pos0 + n_tokens) < 4096 ? 1 : rt->n_threads;
    self_attn_job j = {rt, l, n_tokens, pos0, rows, n_items};
    sh_pool_run(rt->pool, n_items, self_attn_range, &j);
    sh_linear(rt->pool, rt->dec_q, rt->dec_a, rows, b->o_w, b->o_b, d, d);
    sh_add(rt->dec_x, rt->dec_q, (long)rows * d);
}

/* Cross-attention of a few rows: the 1500 cached positions are split
 * into one band per thread; phase 0 scores every head of every row,
 * phase 1 (after the softmax) sums each band's values into its own
 * partial output. */
typedef struct {
    sh_runtime *rt;
    int layer, rows, phase, n_items;
} cross_job;

static void cross_band_range(void *arg, int begin, int end) {
    cross_job *j = arg;
    sh_runtime *rt = j->rt;
    const sh_hparams *hp = &rt->m->hp;
    int d = hp->n_text_state, n = hp->n_audio_ctx, n_head = hp->n_text_head, dh = d / n_head;
    float scale = 1.0f / sqrtf((float)dh);
    size_t off = (size_t)j->layer * n * d;
    for (int item = begin; item < end; item++) {
        int p0 = (int)((long)item * n / j->n_items), p1 = (int)((long)(item + 1) * n / j->n_items);
        if (j->phase == 0) {
            if (rt->cross_half)
                sh_attn_scores_half(rt->dec_scores, n, rt->dec_q, d, j->rows, n_head, dh,
                                    (const uint16_t *)rt->cross_k + off, d, p0, p1, scale);
            else
                sh_attn_scores(rt->dec_scores, n, rt->dec_q, d, j->rows, n_head, dh,
                               (const float *)rt->cross_k + off, d, p0, p1, scale);
        } else {
            float *partial = rt->dec_partial + (size_t)item * SH_GEMV_MAX_ROWS * d;
            memset(partial, 0, (size_t)j->rows * d * sizeof *partial);
            if (rt->cross_half)
                sh_attn_values_half(partial, d, rt->dec_scores, n, j->rows, n_head, dh,
                                    (const uint16_t *)rt->cross_v + off, d, p0, p1);
            else
                sh_attn_values(partial, d, rt->dec_scores, n, j->rows, n_head, dh,
                               (const float *)rt->cross_v + off, d, p0, p1);
        }
    }
}

static void cross_attention_few_rows(sh_runtime *rt, int l, int rows) {
    const sh_hparams *hp = &rt->m->hp;
    int d = hp->n_text_state, n = hp->n_audio_ctx, n_items = rt->n_threads;
    cross_job j = {rt, l, rows, 0, n_items};
    sh_pool_run(rt->pool, n_items, cross_band_range, &j);
    sh_softmax_rows(rt->pool, rt->dec_scores, rows * hp->n_text_head, n, n);
    j.phase = 1;
    sh_pool_run(rt->pool, n_items, cross_band_range, &j);
    for (int r = 0; r < rows; r++) {
        float *out = rt->dec_a + (size_t)r * d;
        memcpy(out, rt->dec_partial + (size_t)r * d, (size_t)d * sizeof *out);
        for (int i = 1; i < n_items; i++)
            sh_add(out, rt->dec_partial + ((size_t)i * SH_GEMV_MAX_ROWS + r) * d, d);
    }
}

/* x = x + cross_attn(cross_attn_ln(x), audio) */
static void decoder_cross_attention(sh_runtime *rt, int l, int rows) {
    const sh_hparams *hp = &rt->m->hp;
    const sh_block *b = &rt->m->w.dec[l];
    int d = hp->n_text_state, n = hp->n_audio_ctx, n_head = hp->n_text_head, dh = d / n_head;
    int width = max_int(hp->n_audio_ctx, hp->n_text_ctx);
    float scale = 1.0f / sqrtf((float)dh);
    sh_layer_norm(rt->pool, rt->dec_h, rt->dec_x, rows, d, b->cross_ln_w, b->cross_ln_b);
    sh_linear(rt->pool, rt->dec_q, rt->dec_h, rows, b->cq_w, b->cq_b, d, d);
    if (rows <= SH_GEMV_MAX_ROWS) {
        cross_attention_few_rows(rt, l, rows);
    } else {
        /* many rows (a prompt): OpenBLAS on float keys and values */
        size_t off = (size_t)l * n * d;
        const float *ck = (const float *)rt->cross_k + off, *cv = (const float *)rt->cross_v + off;
        if (rt->cross_half) {
            sh_halves_to_floats(rt->enc_k, (const uint16_t *)rt->cross_k + off, (size_t)n * d);
            sh_halves_to_floats(rt->enc_v, (const uint16_t *)rt->cross_v + off, (size_t)n * d);
            ck = rt->enc_k, cv = rt->enc_v;
        }
        for (int h = 0; h < n_head; h++) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, n, dh, scale,
                        rt->dec_q + h * dh, d, ck + h * dh, d, 0.0f, rt->dec_scores, width);
            sh_softmax_rows(rt->pool, rt->dec_scores, rows, n, width);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, dh, n, 1.0f,
                        rt->dec_scores, width, cv + h * dh, d, 0.0f, rt->dec_a + h * dh, d);
        }
    }
    sh_linear(rt->pool, rt->dec_q, rt->dec_a, rows, b->co_w, b->co_b, d, d);
    sh_add(rt->dec_x, rt->dec_q, (long)rows * d);
}

/* x = x + mlp(mlp_ln(x)) */
static void decoder_mlp(sh_runtime *rt, int l, int rows) {
    const sh_block *b = &rt->m->w.dec[l];
    int d = rt->m->hp.n_text_state;
    sh_layer_norm(rt->pool, rt->dec_h, rt->dec_x, rows, d, b->mlp_ln_w, b->mlp_ln_b);
    sh_linear(rt->pool, rt->dec_mlp, rt->dec_h, rows, b->fc1_w, b->fc1_b, d, 4 * d);
    sh_gelu(rt->pool, rt->dec_mlp, (long)rows * 4 * d);
    sh_linear(rt->pool, rt->dec_q, rt->dec_mlp, rows, b->fc2_w, b->fc2_b, 4 * d, d);
    sh_add(rt->dec_x, rt->dec_q, (long)rows * d);
}

int sh_cpu_decoder_forward(sh_runtime *rt, const int *tokens, int n_beams, int n_tokens, int pos0) {
    const sh_hparams *hp = &rt->m->hp;
    const sh_weights *w = &rt->m->w;
    int d = hp->n_text_state, rows = n_beams * n_tokens;
    if (n_beams < 1 || n_beams > rt->n_beams || n_tokens < 1 || rows > rt->max_rows ||
        pos0 < 0 || pos0 + n_tokens > hp->n_text_ctx)
        return SHRUTI_ERR_INVALID_ARG;
    /* x = token_embedding(tokens) + positional_embedding[pos] */
    for (int r = 0; r < rows; r++) {
        int tok = tokens[r], pos = pos0 + r % n_tokens;
        if (tok < 0 || tok >= hp->n_vocab) return SHRUTI_ERR_INVALID_ARG;
        const float *p = w->dec_pos + (size_t)pos * d;
        float *x = rt->dec_x + (size_t)r * d;
        sh_mat_row(w->tok_emb, tok, d, x);
        for (int i = 0; i < d; i++) x[i] += p[i];
    }
    for (int l = 0; l < hp->n_text_layer; l++) {
        decoder_self_attention(rt, l, n_beams, n_tokens, pos0);
        decoder_cross_attention(rt, l, rows);
        decoder_mlp(rt, l, rows);
    }
    /* x = ln(x) */
    sh_layer_norm(rt->pool, rt->dec_x, rt->dec_x, rows, d, w->dec_ln_w, w->dec_ln_b);
    return 0;
}

void sh_cpu_decoder_logits(sh_runtime *rt, const float *hidden, int n_rows, float *logits) {
    const sh_hparams *hp = &rt->m->hp;
    /* logits = x @ token_embedding^T (tied embedding) */
    sh_linear(rt->pool, logits, hidden, n_rows, rt->m->w.tok_emb, NULL, hp->n_text_state, hp->n_vocab);
}

int sh_cpu_decoder_reorder(sh_runtime *rt, const int *src, int n_beams, int n_pos) {
    const sh_hparams *hp = &rt->m->hp;
    size_t bytes = (size_t)n_pos * hp->n_text_state * sizeof(float);
    size_t ctx = (size_t)hp->n_text_ctx * hp->n_text_state;
    if (n_beams > rt->n_beams) return SHRUTI_ERR_INVALID_ARG;
    for (int b = 0; b < n_beams; b++)
        if (src[b] < 0 || src[b] >= rt->n_beams) return SHRUTI_ERR_INVALID_ARG;
    /* A beam that keeps its own rows is not touched; a source that is
     * itself overwritten goes through self_tmp first (every save before
     * any write). Beam search mostly keeps beams or copies a few. */
    bool saved[MAX_BEAMS] = {false};
    for (int b = 0; b < n_beams; b++) {
        int from = src[b];
        saved[from] |= from != b && from < n_beams && src[from] != from;
    }
    for (int l = 0; l < hp->n_text_layer; l++) {
        float *caches[2] = {rt->self_k, rt->self_v};
        for (int c = 0; c < 2; c++) {
            for (int b = 0; b < n_beams; b++)
                if (saved[b]) memcpy(rt->self_tmp + b * ctx, cache_at(rt, caches[c], l, b), bytes);
            for (int b = 0; b < n_beams; b++) {
                if (src[b] == b) continue;
                const float *from = saved[src[b]] ? rt->self_tmp + src[b] * ctx
                                                  : cache_at(rt, caches[c], l, src[b]);
                memcpy(cache_at(rt, caches[c], l, b), from, bytes);
            }
        }
    }
    return 0;
}

void sh_cpu_decoder_broadcast(sh_runtime *rt, int n_beams, int n_pos) {
    const sh_hparams *hp = &rt->m->hp;
    size_t row = (size_t)n_pos * hp->n_text_state;
    for (int l = 0; l < hp->n_text_layer; l++)
        for (int b = 1; b < n_beams; b++) {
            memcpy(cache_at(rt, rt->self_k, l, b), cache_at(rt, rt->self_k, l, 0),
                   row * sizeof(float));
            memcpy(cache_at(rt, rt->self_v, l, b), cache_at(rt, rt->self_v, l, 0),
                   row * sizeof(float));
        }
}
