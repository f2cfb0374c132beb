/* device.c - dispatch of the forward pass to the CPU or the GPU, and the
 * move to the CPU when the GPU fails mid-work (see device.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device.h"
#include "decode/logit_filters.h"
#include "cpu/gemv.h"
#include "cpu/logit_screen.h"
#include "gpu/gpu_loader.h"

static int cpu_init(sh_run *rt) {
    if (rt->cpu_ready) return 0;
    int r = sh_cpu_runtime_init(&rt->cpu, rt->m, rt->n_threads);
    if (r == 0) rt->cpu_ready = true;
    return r;
}

static void gpu_drop(sh_run *rt) {
    if (rt->gpu) rt->gpu_api->state_free(rt->gpu);
    rt->gpu = NULL;
}

int sh_run_init(sh_run *rt, const shruti_model *m, int n_threads) {
    memset(rt, 0, sizeof *rt);
    rt->m = m;
    rt->n_threads = n_threads;
    const sh_gpu_api *api = sh_gpu_model_api(m);
    if (api) {
        char err[SH_GPU_ERR] = "";
        rt->window = malloc((size_t)m->hp.n_mels * SH_CHUNK_FRAMES * sizeof(float));
        int r = rt->window ? api->state_new(sh_gpu_model_handle(m), &rt->gpu, err)
                           : SHRUTI_ERR_NOMEM;
        if (r == 0) {
            rt->gpu_api = api;
            snprintf(rt->note, sizeof rt->note, "%s", shruti_model_device_note(m));
            return 0;
        }
        /* out of GPU memory for this context's state: this context runs on the CPU */
        snprintf(rt->note, sizeof rt->note, "on the CPU: the GPU run state failed: %s", err);
        free(rt->window);
        rt->window = NULL;
    } else {
        snprintf(rt->note, sizeof rt->note, "%s", shruti_model_device_note(m));
    }
    return cpu_init(rt);
}

void sh_run_free(sh_run *rt) {
    gpu_drop(rt);
    if (rt->cpu_ready) sh_cpu_runtime_free(&rt->cpu);
    free(rt->window);
    free(rt->pick_logits);
    free(rt->pick_idx);
    memset(rt, 0, sizeof *rt);
}

const char *sh_run_device(const sh_run *rt) { return rt->gpu ? "cuda" : "cpu"; }

/* The GPU failed with err: continue on the CPU with the current window
 * encoded there. Returns SHRUTI_ERR_DEVICE (redo the step) or the
 * CPU's own error. */
static int fall_back(sh_run *rt, int code, const char *err) {
    if (code == SHRUTI_ERR_INVALID_ARG) return code;   /* the caller's mistake, not the GPU's */
    gpu_drop(rt);
    snprintf(rt->note, sizeof rt->note, "moved to the CPU after a GPU error: %s", err);
    int r = cpu_init(rt);
    if (r == 0 && rt->has_window) r = sh_cpu_encode(&rt->cpu, rt->window);
    return r < 0 ? r : SHRUTI_ERR_DEVICE;
}

int sh_encode(sh_run *rt, const float *mel) {
    if (rt->gpu) {
        char err[SH_GPU_ERR] = "";
        memcpy(rt->window, mel, (size_t)rt->m->hp.n_mels * SH_CHUNK_FRAMES * sizeof(float));
        rt->has_window = true;
        int r = rt->gpu_api->encode(rt->gpu, mel, err);
        if (r == 0) return 0;
        r = fall_back(rt, r, err);
        return r == SHRUTI_ERR_DEVICE ? 0 : r;   /* fall_back encoded it on the CPU */
    }
    return sh_cpu_encode(&rt->cpu, mel);
}

#define ON_GPU(call)                                  \
    do {                                              \
        if (rt->gpu) {                                \
            char err[SH_GPU_ERR] = "";                \
            int r_ = rt->gpu_api->call;               \
            return r_ == 0 ? 0 : fall_back(rt, r_, err); \
        }                                             \
    } while (0)

int sh_windows_reserve(sh_run *rt, int n) {
    if (!rt->gpu || n <= 1) return 1;
    char err[SH_GPU_ERR] = "";
    int r = 0;
    /* out of GPU memory: fewer windows at once, down to one at a time */
    for (int k = n; k > 1; k /= 2) {
        if ((r = rt->gpu_api->reserve_windows(rt->gpu, k, err)) == 0) return k;
        if (r != SHRUTI_ERR_NOMEM) break;
    }
    if (r == SHRUTI_ERR_NOMEM) return 1;
    r = fall_back(rt, r, err);
    return r == SHRUTI_ERR_DEVICE ? 1 : r;   /* the CPU takes one window at a time */
}

int sh_encode_window(sh_run *rt, const float *mel, int slot) {
    if (!rt->gpu) return slot == 0 ? sh_cpu_encode(&rt->cpu, mel) : SHRUTI_ERR_INVALID_ARG;
    if (slot == 0) return sh_encode(rt, mel);
    ON_GPU(encode_window(rt->gpu, mel, slot, err));
    return 0;
}

int sh_bind_windows(sh_run *rt, bool bound) {
    if (!rt->gpu) return bound ? SHRUTI_ERR_INVALID_ARG : 0;
    ON_GPU(bind_windows(rt->gpu, bound, err));
    return 0;
}

int sh_decoder_reserve(sh_run *rt, int n_beams) {
    ON_GPU(reserve(rt->gpu, n_beams, err));
    return sh_cpu_decoder_reserve(&rt->cpu, n_beams);
}

int sh_decoder_forward(sh_run *rt, const int *tokens, int n_beams, int n_tokens, int pos0) {
    ON_GPU(forward(rt->gpu, tokens, n_beams, n_tokens, pos0, err));
    return sh_cpu_decoder_forward(&rt->cpu, tokens, n_beams, n_tokens, pos0);
}

int sh_decoder_logits(sh_run *rt, int row0, int n_rows, float *logits) {
    ON_GPU(logits(rt->gpu, row0, n_rows, logits, err));
    if (row0 < 0 || n_rows < 1 || row0 + n_rows > rt->cpu.max_rows) return SHRUTI_ERR_INVALID_ARG;
    sh_cpu_decoder_logits(&rt->cpu, rt->cpu.dec_x + (size_t)row0 * rt->m->hp.n_text_state, n_rows,
                          logits);
    return 0;
}

/* The most rows a choice takes (beams), and the tokens the logit screen
 * computes exactly in a row at most (sh_logit_screen_refine). */
#define PICK_MAX_ROWS 32
#define SCREEN_IDX(n_vocab) ((n_vocab) / 16 + 1)

/* Room for n_rows rows of logits in rt->pick_logits, and the screen's
 * token lists. */
static int pick_room(sh_run *rt, int n_rows) {
    size_t need = (size_t)n_rows * rt->m->hp.n_vocab;
    if (need > rt->pick_cap) {
        float *p = realloc(rt->pick_logits, need * sizeof *p);
        if (!p) return SHRUTI_ERR_NOMEM;
        rt->pick_logits = p, rt->pick_cap = need;
    }
    size_t idx = (size_t)PICK_MAX_ROWS * SCREEN_IDX(rt->m->hp.n_vocab);
    if (!rt->pick_idx && !(rt->pick_idx = malloc(idx * sizeof(int)))) return SHRUTI_ERR_NOMEM;
    return 0;
}

typedef struct {
    sh_run *rt;
    const float *hidden;
    const sh_logit_mask *masks;
    const sh_screen_bound *bounds;
    int k, text_end;
} screen_job;

/* Rows [begin, end) of a screened choice: the masks' ids and ranges, then
 * the exact values where the k best can be (every value when too many). */
static void screen_rows(void *arg, int begin, int end) {
    screen_job *j = arg;
    sh_run *rt = j->rt;
    int d = rt->m->hp.n_text_state, n_vocab = rt->m->hp.n_vocab;
    for (int r = begin; r < end; r++) {
        float *row = rt->pick_logits + (size_t)r * n_vocab;
        const float *h = j->hidden + (size_t)r * d;
        sh_logit_mask ids_only = j->masks[r];
        ids_only.ts_begin = -1;   /* the timestamp rule needs exact values: sh_pick_* */
        sh_apply_logit_mask(&ids_only, row, n_vocab);
        if (sh_logit_screen_refine(rt->m->logit_screen, rt->m->w.tok_emb, h, j->bounds[r],
                                   j->text_end, j->k, row,
                                   rt->pick_idx + (size_t)r * SCREEN_IDX(n_vocab)) < 0)
            sh_gemv_rows(NULL, row, n_vocab, h, d, 1, rt->m->w.tok_emb, d, NULL, d, n_vocab, 1.0f);
    }
}

/* Rows row0 .. row0 + n_rows - 1's logits into rt->pick_logits for
 * choices of k tokens each after masks: every logit in one pass (the
 * CPU's GEMV reads each weight once for all rows), or, with the model's
 * logit screen, int8 approximations with the masks' ids and ranges
 * applied, exact values wherever the k best text tokens can be, and the
 * timestamp tokens exact (the timestamp rule sums them all). */
static int pick_rows_logits(sh_run *rt, int row0, int n_rows, const sh_logit_mask *masks,
                            int k) {
    int r = pick_room(rt, n_rows);
    if (r < 0) return r;
    if (!rt->m->logit_screen || n_rows > PICK_MAX_ROWS)
        return sh_decoder_logits(rt, row0, n_rows, rt->pick_logits);
    if (row0 < 0 || n_rows < 1 || row0 + n_rows > rt->cpu.max_rows) return SHRUTI_ERR_INVALID_ARG;
    int d = rt->m->hp.n_text_state, n_vocab = rt->m->hp.n_vocab;
    screen_job j = {rt, rt->cpu.dec_x + (size_t)row0 * d, masks, NULL, k, n_vocab};
    for (int i = 0; i < n_rows; i++)
        if (masks[i].ts_begin >= 0 && masks[i].ts_begin < j.text_end) j.text_end = masks[i].ts_begin;
    sh_screen_bound bounds[PICK_MAX_ROWS];
    sh_logit_screen_scores(rt->cpu.pool, rt->m->logit_screen, j.hidden, n_rows, rt->pick_logits,
                           bounds);
    for (int r0 = 0; r0 < n_rows && j.text_end < n_vocab; r0 += SH_GEMV_MAX_ROWS) {
        int rows = n_rows - r0 < SH_GEMV_MAX_ROWS ? n_rows - r0 : SH_GEMV_MAX_ROWS;
        sh_gemv_rows(rt->cpu.pool, rt->pick_logits + (size_t)r0 * n_vocab + j.text_end, n_vocab,
                     j.hidden + (size_t)r0 * d, d, rows,
                     sh_mat_rows_from(rt->m->w.tok_emb, j.text_end, d), d, NULL, d,
                     n_vocab - j.text_end, 1.0f);
    }
    j.bounds = bounds;
    sh_pool_run(rt->cpu.pool, n_rows, screen_rows, &j);
    return 0;
}

int sh_decoder_greedy(sh_run *rt, int row0, int n_rows, const sh_logit_mask *masks,
                      int *tokens, double *logprobs) {
    ON_GPU(greedy(rt->gpu, row0, n_rows, masks, tokens, logprobs, err));
    int n_vocab = rt->m->hp.n_vocab, r = pick_rows_logits(rt, row0, n_rows, masks, 1);
    if (r < 0) return r;
    for (int k = 0; k < n_rows; k++)
        sh_pick_greedy(&masks[k], rt->pick_logits + (size_t)k * n_vocab, n_vocab, &tokens[k],
                       &logprobs[k]);
    return 0;
}

typedef struct {
    sh_run *rt;
    const sh_logit_mask *masks;
    int k, *tokens;
    double *logprobs;
} top_job;

/* Beam rows [begin, end): each row's k best (the rows in parallel: a row
 * is a few passes over the vocabulary). */
static void top_rows(void *arg, int begin, int end) {
    top_job *j = arg;
    int n_vocab = j->rt->m->hp.n_vocab;
    for (int r = begin; r < end; r++)
        sh_pick_top(&j->masks[r], j->rt->pick_logits + (size_t)r * n_vocab, n_vocab, j->k,
                    j->tokens + (size_t)r * j->k, j->logprobs + (size_t)r * j->k);
}

int sh_decoder_topk(sh_run *rt, int row0, int n_rows, const sh_logit_mask *masks, int k,
                    int *tokens, double *logprobs) {
    if (k < 1 || k > SH_GPU_TOP_MAX || k > rt->m->hp.n_vocab) return SHRUTI_ERR_INVALID_ARG;
    ON_GPU(topk(rt->gpu, row0, n_rows, masks, k, tokens, logprobs, err));
    int r = pick_rows_logits(rt, row0, n_rows, masks, k);
    if (r < 0) return r;
    top_job j = {rt, masks, k, tokens, logprobs};
    sh_pool_run(rt->cpu.pool, n_rows, top_rows, &j);
    return 0;
}

int sh_decoder_reorder(sh_run *rt, const int *src, int n_beams, int n_pos) {
    ON_GPU(reorder(rt->gpu, src, n_beams, n_pos, err));
    return sh_cpu_decoder_reorder(&rt->cpu, src, n_beams, n_pos);
}

int sh_decoder_broadcast(sh_run *rt, int n_beams, int n_pos) {
    ON_GPU(broadcast(rt->gpu, n_beams, n_pos, err));
    sh_cpu_decoder_broadcast(&rt->cpu, n_beams, n_pos);
    return 0;
}
