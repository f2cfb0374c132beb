/* gpu_api.h - the interface between the core library and a GPU backend
 * module (libshruti_cuda.so), which the core loads with dlopen so that the
 * shruti binary links nothing GPU-related and runs where no driver is.
 * Plain C types only: both sides are built from this one header. */
#ifndef SHRUTI_GPU_API_H
#define SHRUTI_GPU_API_H

#include <stddef.h>
#include <stdint.h>

#include "model/model.h"

#define SH_GPU_ABI_VERSION 4
#define SH_GPU_ENTRY "shruti_gpu_backend_v2"

/* How the model computes on the GPU (faster-whisper's compute types). */
enum {
    SH_GPU_FLOAT32 = 0,        /* float32 weights and activations, no TF32 */
    SH_GPU_FLOAT16 = 1,        /* half weights and GEMM inputs, float32 sums */
    SH_GPU_INT8_FLOAT16 = 2,   /* decoder int8 (per-32 scales), encoder half */
};

/* Every call returns 0 or a negative shruti status, and on failure writes
 * a message into err (size SH_GPU_ERR). SHRUTI_ERR_NOMEM means out of GPU
 * memory; SHRUTI_ERR_DEVICE any other device failure. */
#define SH_GPU_ERR 256

typedef struct sh_gpu_model sh_gpu_model;   /* weights on one device */
typedef struct sh_gpu_state sh_gpu_state;   /* one context's run state */

typedef struct {
    int index;
    char name[128];
    int cc_major, cc_minor;
    uint64_t total_bytes, free_bytes;
} sh_gpu_device;

/* Widens row i of a matrix (n columns) to float32: the core owns the
 * weight formats. */
/* The logit filters of one step in a form a device applies to its own
 * logits: tokens ids[] and the ranges [begin, end) become -inf; then, when
 * ts_begin >= 0, the text tokens [0, ts_begin) become -inf too if the
 * timestamps together (log-sum-exp) outweigh the likeliest text token. */
#define SH_MASK_RANGES 8
#define SH_GPU_TOP_MAX 33   /* beams (32) + 1 */
typedef struct {
    const int32_t *ids;
    int n_ids;
    int n_ranges;
    int ranges[SH_MASK_RANGES][2];
    int ts_begin;
} sh_logit_mask;

typedef void (*sh_gpu_row_fn)(sh_mat w, int i, int n, float *out);

typedef struct {
    int abi_version;
    const char *name;   /* "cuda" */
    /* Devices seen and the runtime/driver versions (text). */
    int (*list_devices)(sh_gpu_device *out, int max, char *versions, size_t size, char *err);
    /* A real kernel launch and a small cuBLAS GEMM on the device, checked. */
    int (*probe)(int device, char *err);
    /* Bytes the model's weights and one context's run state need. */
    uint64_t (*model_bytes)(const shruti_model *m, int mode);
    uint64_t (*state_bytes)(const shruti_model *m, int mode);
    int (*model_upload)(const shruti_model *m, int device, int mode, sh_gpu_row_fn row,
                        sh_gpu_model **out, char *err);
    void (*model_free)(sh_gpu_model *g);
    int (*state_new)(sh_gpu_model *g, sh_gpu_state **out, char *err);
    void (*state_free)(sh_gpu_state *s);
    /* The same contract as the CPU's sh_encode / sh_decoder_* (runtime.h). */
    int (*encode)(sh_gpu_state *s, const float *mel, char *err);
    /* Batched windows: room for n windows, window slot's encoding, and
     * whether decoder row b reads window b (else every row window 0). */
    int (*reserve_windows)(sh_gpu_state *s, int n, char *err);
    int (*encode_window)(sh_gpu_state *s, const float *mel, int slot, char *err);
    int (*bind_windows)(sh_gpu_state *s, int bound, char *err);
    int (*reserve)(sh_gpu_state *s, int n_beams, char *err);
    int (*forward)(sh_gpu_state *s, const int *tokens, int n_beams, int n_tokens, int pos0,
                   char *err);
    int (*logits)(sh_gpu_state *s, int row0, int n_rows, float *out, char *err);
    /* Greedy choices from rows row0 .. row0 + n_rows - 1 of the last
     * forward, row k after masks[k] (all with the ids of masks[0]): the
     * tokens and their log-probabilities; only these leave the device. */
    int (*greedy)(sh_gpu_state *s, int row0, int n_rows, const sh_logit_mask *masks,
                  int *tokens, double *logprobs, char *err);
    /* The same for beam search: the k (<= SH_GPU_TOP_MAX) likeliest tokens
     * of each row, best first (ties to the lower id), and their
     * log-probabilities; tokens and logprobs hold n_rows x k. */
    int (*topk)(sh_gpu_state *s, int row0, int n_rows, const sh_logit_mask *masks, int k,
                int *tokens, double *logprobs, char *err);
    int (*reorder)(sh_gpu_state *s, const int *src, int n_beams, int n_pos, char *err);
    int (*broadcast)(sh_gpu_state *s, int n_beams, int n_pos, char *err);
    /* Steps run ahead of the host after a one-row greedy choice (on the
     * chosen token): those its next forward took, and those it did not. */
    void (*speculated)(const sh_gpu_state *s, long *taken, long *wasted);
    /* Greedy choices made through the token embedding's int8 screen. */
    long (*screened)(const sh_gpu_state *s);
    /* Of those, the ones made at the start of the step run ahead after them. */
    long (*step_picks)(const sh_gpu_state *s);
} sh_gpu_api;

typedef const sh_gpu_api *(*sh_gpu_entry_fn)(void);

#endif
