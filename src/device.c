/* device.c - dispatch of the forward pass to the CPU or the GPU, and the
 * move to the CPU when the GPU fails mid-work (see device.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device.h"
#include "decode/logit_filters.h"
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

/* Rows row0 .. row0 + n_rows - 1's logits into rt->pick_logits in one
 * pass (the CPU's GEMV reads each weight once for all rows). */
static int pick_rows_logits(sh_run *rt, int row0, int n_rows) {
    size_t need = (size_t)n_rows * rt->m->hp.n_vocab;
    if (need > rt->pick_cap) {
        float *p = realloc(rt->pick_logits, need * sizeof *p);
        if (!p) return SHRUTI_ERR_NOMEM;
        rt->pick_logits = p, rt->pick_cap = need;
    }
    return sh_decoder_logits(rt, row0, n_rows, rt->pick_logits);
}

int sh_decoder_greedy(sh_run *rt, int row0, int n_rows, const sh_logit_mask *masks,
                      int *tokens, double *logprobs) {
    ON_GPU(greedy(rt->gpu, row0, n_rows, masks, tokens, logprobs, err));
    int n_vocab = rt->m->hp.n_vocab, r = pick_rows_logits(rt, row0, n_rows);
    if (r < 0) return r;
    for (int k = 0; k < n_rows; k++)
        sh_pick_greedy(&masks[k], rt->pick_logits + (size_t)k * n_vocab, n_vocab, &tokens[k],
                       &logprobs[k]);
    return 0;
}

int sh_decoder_topk(sh_run *rt, int row0, int n_rows, const sh_logit_mask *masks, int k,
                    int *tokens, double *logprobs) {
    if (k < 1 || k > SH_GPU_TOP_MAX || k > rt->m->hp.n_vocab) return SHRUTI_ERR_INVALID_ARG;
    ON_GPU(topk(rt->gpu, row0, n_rows, masks, k, tokens, logprobs, err));
    int n_vocab = rt->m->hp.n_vocab, r = pick_rows_logits(rt, row0, n_rows);
    if (r < 0) return r;
    for (int j = 0; j < n_rows; j++)
        sh_pick_top(&masks[j], rt->pick_logits + (size_t)j * n_vocab, n_vocab, k,
                    tokens + (size_t)j * k, logprobs + (size_t)j * k);
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
