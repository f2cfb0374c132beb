/* device.h - a context's run state on the CPU or the GPU, behind one set
 * of calls that the decoding code uses. When the GPU fails (out of memory,
 * a kernel or driver error) the run state moves to the CPU, re-encodes the
 * current window there and says why; calls that fail that way return
 * SHRUTI_ERR_DEVICE so that the caller redoes its window. */
#ifndef SHRUTI_DEVICE_H
#define SHRUTI_DEVICE_H

#include <stdbool.h>

#include "cpu/runtime.h"
#include "gpu/gpu_api.h"

typedef struct {
    const shruti_model *m;
    int n_threads;
    bool cpu_ready;             /* cpu is allocated */
    sh_runtime cpu;
    const sh_gpu_api *gpu_api;
    sh_gpu_state *gpu;          /* NULL on the CPU */
    float *window;              /* (n_mels, 3000) last window sent to the GPU */
    bool has_window;
    char note[SH_GPU_ERR + 64]; /* why this run state is where it is */
    float *pick_logits;         /* rows x n_vocab, for choices on the CPU */
    size_t pick_cap;            /* floats pick_logits holds */
    int *pick_idx;              /* the logit screen's token lists, one per row */
} sh_run;

int sh_run_init(sh_run *rt, const shruti_model *m, int n_threads);
void sh_run_free(sh_run *rt);
const char *sh_run_device(const sh_run *rt);

/* Encoder: mel (n_mels, 3000) -> the window's cross-attention keys/values. */
int sh_encode(sh_run *rt, const float *mel);
/* Batched windows, on the GPU: room for n windows (returns how many the
 * device takes at once: n, fewer when its memory is short, 1 on the CPU),
 * a window encoded into slot, and whether decoder row b reads window b
 * (bound) or all read window 0. */
int sh_windows_reserve(sh_run *rt, int n);
int sh_encode_window(sh_run *rt, const float *mel, int slot);
int sh_bind_windows(sh_run *rt, bool bound);

/* Makes room for n_beams self-attention caches. */
int sh_decoder_reserve(sh_run *rt, int n_beams);
/* n_tokens new tokens for each of n_beams beams (tokens: n_beams x
 * n_tokens) at positions pos0 ..., rows beam-major. */
int sh_decoder_forward(sh_run *rt, const int *tokens, int n_beams, int n_tokens, int pos0);
/* logits (n_rows x n_vocab) of rows row0 .. of the last forward. */
int sh_decoder_logits(sh_run *rt, int row0, int n_rows, float *logits);
/* Greedy choices from rows row0 .. row0 + n_rows - 1 of the last forward,
 * row k after masks[k] (which share masks[0]'s suppressed ids): the tokens
 * and their log-probabilities (on the GPU only these leave it). */
int sh_decoder_greedy(sh_run *rt, int row0, int n_rows, const sh_logit_mask *masks,
                      int *tokens, double *logprobs);
/* The same for beam search: the k likeliest tokens of each row (best
 * first, ties to the lower id) and their log-probabilities, n_rows x k. */
int sh_decoder_topk(sh_run *rt, int row0, int n_rows, const sh_logit_mask *masks, int k,
                    int *tokens, double *logprobs);
/* Beam b takes the first n_pos cached positions of beam src[b]. */
int sh_decoder_reorder(sh_run *rt, const int *src, int n_beams, int n_pos);
/* Beam 0's first n_pos cached positions to beams 1 .. n_beams-1. */
int sh_decoder_broadcast(sh_run *rt, int n_beams, int n_pos);

#endif
