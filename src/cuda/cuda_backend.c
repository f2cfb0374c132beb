/* cuda_backend.c - the CUDA backend module (libshruti_cuda.so): weights
 * uploaded once per model, a run state per context (stream, cuBLAS and
 * cuBLASLt handles, activations, KV caches), the encoder as cuBLASLt GEMMs
 * with their bias in the epilogue (cuBLAS for float32) and the decoder as
 * GEMV kernels (cuBLAS GEMMs over 8 rows) replayed from a CUDA graph per
 * row count. The core loads this module with dlopen and calls it through
 * gpu_api.h. */
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/f16.h"
#include "cuda/kernels.h"
#include "gpu/gpu_api.h"

#define MAX_BEAMS 64
/* cuBLAS's workspace, given so that a captured step never allocates
 * (NVIDIA's advice for Hopper: 32 MiB) */
#define BLAS_WORKSPACE ((size_t)32 << 20)

/* --------------------------------------------------------------- errors */

static int fail(char *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (err) vsnprintf(err, SH_GPU_ERR, fmt, ap);
    va_end(ap);
    return code;
}

static int cuda_fail(char *err, cudaError_t e, const char *what) {
    int code = e == cudaErrorMemoryAllocation ? SHRUTI_ERR_NOMEM : SHRUTI_ERR_DEVICE;
    const char *hint = "";
    if (e == cudaErrorNoKernelImageForDevice || e == cudaErrorInvalidDeviceFunction)
        hint = " (this build has no kernels for the card's compute capability)";
    else if (e == cudaErrorInsufficientDriver)
        hint = " (the NVIDIA driver is older than the CUDA runtime of this build)";
    else if (e == cudaErrorNoDevice)
        hint = " (no CUDA device visible: check the driver and CUDA_VISIBLE_DEVICES)";
    return fail(err, code, "%s: %s%s", what, cudaGetErrorString(e), hint);
}

#define CU(call, what)                                         \
    do {                                                       \
        cudaError_t e_ = (call);                               \
        if (e_ != cudaSuccess) return cuda_fail(err, e_, what); \
    } while (0)

static int blas_fail(char *err, cublasStatus_t s, const char *what) {
    int code = s == CUBLAS_STATUS_ALLOC_FAILED ? SHRUTI_ERR_NOMEM : SHRUTI_ERR_DEVICE;
    return fail(err, code, "%s: cuBLAS status %d", what, (int)s);
}

/* Fault injection for the tests (like SQLite's): SHRUTI_CUDA_FAULT=upload
 * fails the weight upload, =state the run state, =forward:N the N-th
 * decoder step, =windows:N room for more than N batched windows, each as
 * out of memory or a device error would. */
static int fault_is(const char *what) {
    const char *f = getenv("SHRUTI_CUDA_FAULT");
    return f && strncmp(f, what, strlen(what)) == 0;
}

/* Whether the variable name is set to "0": how every switch of the
 * backend (SHRUTI_CUDA_FUSED, SHRUTI_LOGIT_SCREEN, ...) is turned off. */
static int env_off(const char *name) {
    const char *v = getenv(name);
    return v && strcmp(v, "0") == 0;
}

/* ------------------------------------------------------------ the model */

typedef struct {
    float *attn_ln_w, *attn_ln_b;
    sh_gmat qkv, o;         /* q, k, v fused: (3d, d) */
    float *qkv_b, *o_b;     /* (3d): q_b, zeros, v_b */
    float *cross_ln_w, *cross_ln_b;
    sh_gmat cq, ck, cv, co;
    float *cq_b, *cv_b, *co_b;
    float *mlp_ln_w, *mlp_ln_b;
    sh_gmat fc1, fc2;
    float *fc1_b, *fc2_b;
    /* the fused step's fc2 in blocks of columns, o and co head by head,
     * the cross query's fold (sh_fused_layer), or none */
    sh_gmat fc2_blocks, o_heads, co_heads, cq_g, cq_go_heads;
    sh_gmat fc1_swz;    /* half fc1 swizzled (SH_SWIZZLE), or none */
    float *cq_e, *cq_g1, *cq_c;
    /* half copies of the biases cuBLASLt adds into half outputs (the
     * encoder's qkv and fc1, the cross values; half activations only), or
     * NULL */
    uint16_t *qkv_b_h, *fc1_b_h, *cv_b_h;
} gblock;

struct sh_gpu_model {
    const shruti_model *m;
    int device, mode, act_half;
    sh_gpu_row_fn row;
    sh_gmat conv1, conv2;              /* (d, 3 n_mels), (d, 3 d): act kind */
    float *conv1_b, *conv2_b, *enc_pos, *enc_ln_w, *enc_ln_b;
    gblock *enc, *dec;
    sh_gmat tok_emb;                   /* decoder kind */
    /* a half tok_emb's int8 screen and its rows' bounds (kernels.h), or
     * screen.w NULL: the greedy pick reads most rows from it */
    sh_gmat screen;
    float *screen_bounds;
    float *dec_pos, *dec_ln_w, *dec_ln_b;
    /* half activations: every decoder layer's cross key weights, then
     * every layer's value weights, d x d apart (dec[l].ck and cv point
     * into it), and the values' half biases d apart: one batched GEMM
     * each a window (cross_kv); else NULL */
    uint16_t *cross_w, *cross_b_h;
    /* half activations on compute 9.0 with sm_90a code: the warpgroups a
     * block of the encoder attention's warpgroup-MMA form (found once, at
     * upload: its probe launches a kernel), else 0 */
    int flash_groups;
    void **allocs;                     /* every device allocation, for model_free */
    int n_allocs, cap_allocs;
};

static int dev_alloc(sh_gpu_model *g, size_t bytes, void **out, char *err) {
    if (g->n_allocs == g->cap_allocs) {
        int cap = g->cap_allocs ? 2 * g->cap_allocs : 256;
        void **a = realloc(g->allocs, (size_t)cap * sizeof *a);
        if (!a) return fail(err, SHRUTI_ERR_NOMEM, "out of host memory");
        g->allocs = a, g->cap_allocs = cap;
    }
    CU(cudaMalloc(out, bytes ? bytes : 16), "allocating model weights on the GPU");
    g->allocs[g->n_allocs++] = *out;
    return 0;
}

static int upload_floats(sh_gpu_model *g, const float *src, size_t n, float **out, char *err) {
    int r = dev_alloc(g, n * sizeof(float), (void **)out, err);
    if (r < 0) return r;
    CU(cudaMemcpy(*out, src, n * sizeof(float), cudaMemcpyHostToDevice), "uploading weights");
    return 0;
}

/* int8 rows of an odd count get a zero row after them: the fused step
 * fetches rows in pairs where the scales' rows are not 16 bytes long (the
 * vocabulary of tiny's token embedding). */
static size_t padding_rows(int kind, size_t n_out) { return kind == SH_GW_I8 && n_out % 2; }

static size_t gmat_bytes(int kind, size_t n_out, size_t n_in) {
    if (kind == SH_GW_F32) return n_out * n_in * 4;
    if (kind == SH_GW_F16) return n_out * n_in * 2;
    n_out += padding_rows(kind, n_out);
    return n_out * n_in + n_out * (n_in / 32) * 2;
}

/* Device memory for out's weights and (int8) scales: out->n_out rows of
 * out->n_in, and pad rows more. */
static int gmat_alloc(sh_gpu_model *g, sh_gmat *out, size_t pad, char *err) {
    size_t rows = (size_t)out->n_out + pad;
    size_t el = out->kind == SH_GW_F32 ? 4 : out->kind == SH_GW_F16 ? 2 : 1;
    int r = dev_alloc(g, rows * out->n_in * el, &out->w, err);
    if (r == 0 && out->kind == SH_GW_I8)
        r = dev_alloc(g, rows * (out->n_in / 32) * 2, (void **)&out->scales, err);
    return r;
}

/* Row r of a stack of host matrices, as float32. */
typedef struct {
    sh_gpu_model *g;
    const sh_mat *parts;
    const int *part_rows;
    int n_parts, n_in, kind;
    void *w;
    uint16_t *scales;
    int row0, row1;
} pack_job;

/* Converts rows [row0, row1) into the device layout: half, or int8 with
 * one half scale per 32 weights (q8_0's numbers, de-interleaved: taken as
 * they are from q8_0 rows, else quantized the same way). */
static void *pack_rows(void *arg) {
    pack_job *j = arg;
    int n_in = j->n_in;
    float *row = malloc((size_t)n_in * sizeof *row);
    if (!row) return arg;   /* the caller sees row == NULL via the flag below */
    for (int r = j->row0; r < j->row1; r++) {
        int p = 0, i = r;
        while (i >= j->part_rows[p]) i -= j->part_rows[p++];
        if (j->kind == SH_GW_I8 && j->parts[p].data && j->parts[p].kind == SH_MAT_Q8_0) {
            /* q8_0 blocks already: their int8 values and half scales apart */
            int nb = n_in / 32;
            const uint8_t *src = (const uint8_t *)j->parts[p].data + (size_t)i * nb * 34;
            for (int b = 0; b < nb; b++) {
                memcpy(j->scales + (size_t)r * nb + b, src + b * 34, 2);
                memcpy((int8_t *)j->w + (size_t)r * n_in + b * 32, src + b * 34 + 2, 32);
            }
            continue;
        }
        if (j->parts[p].data)
            j->g->row(j->parts[p], i, n_in, row);
        else
            memset(row, 0, (size_t)n_in * sizeof *row);
        if (j->kind == SH_GW_F32) {
            memcpy((float *)j->w + (size_t)r * n_in, row, (size_t)n_in * sizeof *row);
        } else if (j->kind == SH_GW_F16) {
            uint16_t *dst = (uint16_t *)j->w + (size_t)r * n_in;
            for (int c = 0; c < n_in; c++) dst[c] = sh_f32_to_f16(row[c]);
        } else {
            int8_t *dst = (int8_t *)j->w + (size_t)r * n_in;
            for (int b = 0; b < n_in / 32; b++) {
                const float *x = row + b * 32;
                float amax = 0.0f;
                for (int c = 0; c < 32; c++) amax = fmaxf(amax, fabsf(x[c]));
                uint16_t hs = sh_f32_to_f16(amax / 127.0f);
                float sc = sh_f16_to_f32(hs), inv = sc > 0.0f ? 1.0f / sc : 0.0f;
                j->scales[(size_t)r * (n_in / 32) + b] = hs;
                for (int c = 0; c < 32; c++) {
                    float q = nearbyintf(x[c] * inv);
                    dst[b * 32 + c] = (int8_t)(q > 127 ? 127 : q < -127 ? -127 : q);
                }
            }
        }
    }
    free(row);
    j->row1 = -1;   /* done */
    return NULL;
}

/* Uploads n_parts host matrices stacked as one (sum n_out, n_in) matrix.
 * Parts already in the device's format are copied as they are; the rest
 * are converted on all cores (the load time of a large model is mostly
 * this conversion). */
static int upload_mat_into(sh_gpu_model *g, const sh_mat *parts, const int *part_rows, int n_parts,
                           int n_in, int kind, void *into, sh_gmat *out, char *err) {
    int n_out = 0, direct = kind != SH_GW_I8;
    for (int p = 0; p < n_parts; p++) {
        n_out += part_rows[p];
        direct &= parts[p].data && parts[p].kind == (kind == SH_GW_F16 ? SH_MAT_F16 : SH_MAT_F32);
    }
    out->kind = kind, out->n_out = n_out, out->n_in = n_in, out->scales = NULL;
    size_t wbytes = kind == SH_GW_I8 ? (size_t)n_out * n_in : gmat_bytes(kind, n_out, n_in);
    size_t sbytes = (size_t)n_out * (n_in / 32) * 2;
    size_t pad = padding_rows(kind, (size_t)n_out), pad_w = pad * n_in, pad_s = pad_w / 16;
    int r = 0;
    if (into && (kind == SH_GW_I8 || pad)) return fail(err, SHRUTI_ERR_INVALID_ARG, "no room for these weights");
    if (into) out->w = into;
    else r = gmat_alloc(g, out, pad, err);
    if (r == 0 && pad_w &&
        (cudaMemset((char *)out->w + wbytes, 0, pad_w) != cudaSuccess ||
         cudaMemset((char *)out->scales + sbytes, 0, pad_s) != cudaSuccess))
        r = fail(err, SHRUTI_ERR_DEVICE, "clearing the weights' padding row");
    if (r < 0) return r;
    size_t el = kind == SH_GW_F32 ? 4 : kind == SH_GW_F16 ? 2 : 1;
    if (direct) {
        size_t at = 0;
        for (int p = 0; p < n_parts; p++) {
            size_t bytes = (size_t)part_rows[p] * n_in * el;
            CU(cudaMemcpy((char *)out->w + at, parts[p].data, bytes, cudaMemcpyHostToDevice),
               "uploading weights");
            at += bytes;
        }
        return 0;
    }
    void *packed = malloc(wbytes);
    uint16_t *scales = kind == SH_GW_I8 ? malloc(sbytes) : NULL;
    if (!packed || (kind == SH_GW_I8 && !scales)) {
        free(packed), free(scales);
        return fail(err, SHRUTI_ERR_NOMEM, "out of host memory while uploading weights");
    }
    enum { MAX_THREADS = 32 };
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int n_threads = cores < 1 ? 1 : cores > MAX_THREADS ? MAX_THREADS : (int)cores;
    if ((long)n_out * n_in < (1 << 20)) n_threads = 1;
    pack_job jobs[MAX_THREADS];
    pthread_t tid[MAX_THREADS];
    int started[MAX_THREADS] = {0}, ok = 1;
    for (int t = 0; t < n_threads; t++) {
        jobs[t] = (pack_job){g, parts, part_rows, n_parts, n_in, kind, packed, scales,
                             (int)((long)n_out * t / n_threads), (int)((long)n_out * (t + 1) / n_threads)};
        started[t] = t > 0 && pthread_create(&tid[t], NULL, pack_rows, &jobs[t]) == 0;
        if (t > 0 && !started[t]) pack_rows(&jobs[t]);
    }
    pack_rows(&jobs[0]);
    for (int t = 0; t < n_threads; t++) {
        if (started[t]) pthread_join(tid[t], NULL);
        ok &= jobs[t].row1 == -1;
    }
    cudaError_t e = cudaSuccess;
    if (ok) e = cudaMemcpy(out->w, packed, wbytes, cudaMemcpyHostToDevice);
    if (ok && e == cudaSuccess && scales)
        e = cudaMemcpy(out->scales, scales, sbytes, cudaMemcpyHostToDevice);
    free(packed), free(scales);
    if (!ok) return fail(err, SHRUTI_ERR_NOMEM, "out of host memory while uploading weights");
    if (e != cudaSuccess) return cuda_fail(err, e, "uploading weights");
    return 0;
}

static int upload_mat(sh_gpu_model *g, const sh_mat *parts, const int *part_rows, int n_parts,
                      int n_in, int kind, sh_gmat *out, char *err) {
    return upload_mat_into(g, parts, part_rows, n_parts, n_in, kind, NULL, out, err);
}

static int upload_one(sh_gpu_model *g, sh_mat w, int n_out, int n_in, int kind, sh_gmat *out,
                      char *err) {
    return upload_mat(g, &w, &n_out, 1, n_in, kind, out, err);
}

static int upload_f32_matrix(sh_gpu_model *g, const float *w, int n_out, int n_in, int kind,
                             sh_gmat *out, char *err) {
    sh_mat m = {w, SH_MAT_F32};
    return upload_one(g, m, n_out, n_in, kind, out, err);
}

/* q_b, zeros for k (it has no bias), v_b. */
static int upload_qkv_bias(sh_gpu_model *g, const float *qb, const float *vb, int d, float **out,
                           char *err) {
    float *h = calloc((size_t)3 * d, sizeof *h);
    if (!h) return fail(err, SHRUTI_ERR_NOMEM, "out of host memory");
    memcpy(h, qb, (size_t)d * sizeof *h);
    memcpy(h + 2 * d, vb, (size_t)d * sizeof *h);
    int r = upload_floats(g, h, (size_t)3 * d, out, err);
    free(h);
    return r;
}

/* A half copy of n device floats (a bias for cuBLASLt's epilogue) into
 * *out: into, else an allocation of its own. */
static int half_copy(sh_gpu_model *g, const float *src, size_t n, uint16_t *into, uint16_t **out,
                     char *err) {
    int r = into ? 0 : dev_alloc(g, n * sizeof(uint16_t), (void **)&into, err);
    if (r < 0) return r;
    *out = into;
    sh_k_f32_to_half(0, src, *out, (long)n);
    CU(cudaStreamSynchronize(0), "copying a bias to half");
    return 0;
}

/* Where a decoder layer's cross key and value weights and the values'
 * half bias go in the model's cross_w and cross_b_h. */
typedef struct {
    uint16_t *k, *v, *b;
} cross_room;

/* A block's weights uploaded; a decoder block's cross keys and values
 * into room where there is one, else allocations of their own. */
static int upload_block(sh_gpu_model *g, const sh_block *b, int d, int decoder, int kind,
                        int act_kind, const cross_room *room, gblock *out, char *err) {
    int r;
    const sh_mat qkv[3] = {b->q_w, b->k_w, b->v_w};
    const int rows3[3] = {d, d, d};
#define UP(call) \
    if ((r = (call)) < 0) return r
    UP(upload_floats(g, b->attn_ln_w, d, &out->attn_ln_w, err));
    UP(upload_floats(g, b->attn_ln_b, d, &out->attn_ln_b, err));
    UP(upload_mat(g, qkv, rows3, 3, d, kind, &out->qkv, err));
    UP(upload_qkv_bias(g, b->q_b, b->v_b, d, &out->qkv_b, err));
    UP(upload_one(g, b->o_w, d, d, kind, &out->o, err));
    UP(upload_floats(g, b->o_b, d, &out->o_b, err));
    if (decoder) {
        UP(upload_floats(g, b->cross_ln_w, d, &out->cross_ln_w, err));
        UP(upload_floats(g, b->cross_ln_b, d, &out->cross_ln_b, err));
        UP(upload_one(g, b->cq_w, d, d, kind, &out->cq, err));
        UP(upload_floats(g, b->cq_b, d, &out->cq_b, err));
        /* cross keys/values are GEMMs over the whole window: GEMM kind */
        UP(upload_mat_into(g, &b->ck_w, &d, 1, d, act_kind, room ? room->k : NULL, &out->ck, err));
        UP(upload_mat_into(g, &b->cv_w, &d, 1, d, act_kind, room ? room->v : NULL, &out->cv, err));
        UP(upload_floats(g, b->cv_b, d, &out->cv_b, err));
        UP(upload_one(g, b->co_w, d, d, kind, &out->co, err));
        UP(upload_floats(g, b->co_b, d, &out->co_b, err));
    }
    UP(upload_floats(g, b->mlp_ln_w, d, &out->mlp_ln_w, err));
    UP(upload_floats(g, b->mlp_ln_b, d, &out->mlp_ln_b, err));
    UP(upload_one(g, b->fc1_w, 4 * d, d, kind, &out->fc1, err));
    UP(upload_floats(g, b->fc1_b, 4 * d, &out->fc1_b, err));
    UP(upload_one(g, b->fc2_w, d, 4 * d, kind, &out->fc2, err));
    UP(upload_floats(g, b->fc2_b, d, &out->fc2_b, err));
    if (act_kind == SH_GW_F16 && !decoder) {
        UP(half_copy(g, out->qkv_b, 3 * (size_t)d, NULL, &out->qkv_b_h, err));
        UP(half_copy(g, out->fc1_b, 4 * (size_t)d, NULL, &out->fc1_b_h, err));
    }
    if (act_kind == SH_GW_F16 && decoder)
        UP(half_copy(g, out->cv_b, d, room ? room->b : NULL, &out->cv_b_h, err));
#undef UP
    return 0;
}

static void kinds_for_mode(int mode, int *act_kind, int *dec_kind) {
    *act_kind = mode == SH_GPU_FLOAT32 ? SH_GW_F32 : SH_GW_F16;
    *dec_kind = mode == SH_GPU_FLOAT32 ? SH_GW_F32 : mode == SH_GPU_FLOAT16 ? SH_GW_F16 : SH_GW_I8;
}

/* Whether a float16 model's greedy picks go through the token embedding's
 * int8 screen (sh_k_screen_pick); SHRUTI_LOGIT_SCREEN=0 turns it off, as
 * the CPU's (read at load: the screen is not made then). */
static int screen_may_run(int mode, int d) {
    return !env_off("SHRUTI_LOGIT_SCREEN") && mode == SH_GPU_FLOAT16 && d % 32 == 0;
}

/* Whether the fused step's fc1 and fc2 copies are swizzled (SH_SWIZZLE)
 * for its tensor-core GEMV (sh_fused_mma_ffn; half ones on sms blocks):
 * SHRUTI_CUDA_FFN_MMA=0 never, 1 wherever a block's rows fit it (tests),
 * unset where a block has 31 or 32 of fc1's rows (H200: medium) */
static int fused_swizzle(int kind, int d, int sms) {
    const char *v = getenv("SHRUTI_CUDA_FFN_MMA");
    return kind == SH_GW_F16 && sh_fused_mma_ffn(d, sms, v ? atoi(v) != 0 : -1);
}

static uint64_t model_bytes(const shruti_model *m, int mode) {
    const sh_hparams *hp = &m->hp;
    int ak, dk;
    kinds_for_mode(mode, &ak, &dk);
    size_t da = hp->n_audio_state, dt = hp->n_text_state;
    uint64_t enc = gmat_bytes(ak, da, 3 * hp->n_mels) + gmat_bytes(ak, da, 3 * da) +
                   (uint64_t)hp->n_audio_layer * (gmat_bytes(ak, 3 * da, da) + gmat_bytes(ak, da, da) +
                                                  2 * gmat_bytes(ak, 4 * da, da));
    uint64_t dec = (uint64_t)hp->n_text_layer *
                       (gmat_bytes(dk, 3 * dt, dt) + 3 * gmat_bytes(dk, dt, dt) +
                        2 * gmat_bytes(ak, dt, dt) + 2 * gmat_bytes(dk, 4 * dt, dt)) +
                   gmat_bytes(dk, hp->n_vocab, dt);
    if (mode != SH_GPU_FLOAT32)   /* the fused step's copies: o, co, fc2, the cross query's fold */
        dec += (uint64_t)hp->n_text_layer *
               (2 * gmat_bytes(dk, dt, dt) + gmat_bytes(dk, 4 * dt, dt) +
                2 * gmat_bytes(SH_GW_F16, dt, dt) + 3 * dt * 4);
    if (dk == SH_GW_F16)   /* and at most half fc1 again, swizzled */
        dec += (uint64_t)hp->n_text_layer * gmat_bytes(dk, 4 * dt, dt);
    if (screen_may_run(mode, (int)dt))   /* the token embedding's int8 screen */
        dec += gmat_bytes(SH_GW_I8, hp->n_vocab, dt) + (uint64_t)hp->n_vocab * 8;
    uint64_t vec = ((uint64_t)hp->n_audio_ctx * da + (uint64_t)hp->n_text_ctx * dt) * 4 +
                   (uint64_t)(hp->n_audio_layer + hp->n_text_layer) * 20 * dt * 4;
    return enc + dec + vec;
}

/* Whether the fused step (half or int8 weights, Hopper and later, heads
 * of 64; not turned off by SHRUTI_CUDA_FUSED=0) may run this model: it
 * then reads o and co head by head and fc2 in blocks of columns. */
static int fused_may_run_on(const sh_hparams *hp, int mode, int cc_major) {
    return !env_off("SHRUTI_CUDA_FUSED") && mode != SH_GPU_FLOAT32 &&
           hp->n_text_state == 64 * hp->n_text_head && cc_major >= 9;
}

/* The same on the model's device. */
static int fused_may_run(const sh_gpu_model *g) {
    int cc = 0;
    return cudaDeviceGetAttribute(&cc, cudaDevAttrComputeCapabilityMajor, g->device) == cudaSuccess &&
           fused_may_run_on(&g->m->hp, g->mode, cc);
}

/* A matrix's copy in blocks of `width` columns (sh_k_col_blocks), for the
 * fused step: a head's block multiplies that head's output by o's columns
 * of it alone (width 64), and fc2's blocks one of SH_FC2_BLOCKS parts of
 * the hidden vector (width 4d / SH_FC2_BLOCKS = d); half fc1 and fc2
 * swizzled (fused_swizzle). */
static int upload_col_blocks(sh_gpu_model *g, const sh_gmat *w, int width, int swizzle,
                             sh_gmat *out, char *err) {
    *out = *w;
    out->n_out = w->n_out * (w->n_in / width), out->n_in = width;
    int r = gmat_alloc(g, out, 0, err);
    if (r < 0) return r;
    sh_k_col_blocks(0, w, width, swizzle, out);
    CU(cudaStreamSynchronize(0), "copying a matrix in blocks of columns");
    return 0;
}

/* The fused step's cross query folded into the self-attention's sums
 * (sh_fused_layer): G = cq diag(ln2_g) and G o head by head, both half,
 * and the vectors e, g1, c. cq and o go in as half (int8 ones dequantized:
 * the fold of the model the kernels run); G o is multiplied by cuBLAS in
 * float32 and rounded once. tmp: room for 2 d^2 halves and d^2 floats. */
static int fold_cross_query(sh_gpu_model *g, gblock *b, int d, cublasHandle_t blas, void *tmp,
                            char *err) {
    uint16_t *cq = tmp, *o = cq + (size_t)d * d;
    float *go = (float *)(o + (size_t)d * d);
    b->cq_g = (sh_gmat){.kind = SH_GW_F16, .n_out = d, .n_in = d};
    b->cq_go_heads = (sh_gmat){.kind = SH_GW_F16, .n_out = d * (d / 64), .n_in = 64};
    int r = gmat_alloc(g, &b->cq_g, 0, err);
    if (r == 0) r = gmat_alloc(g, &b->cq_go_heads, 0, err);
    if (r == 0) r = dev_alloc(g, 3 * (size_t)d * sizeof(float), (void **)&b->cq_e, err);
    if (r < 0) return r;
    b->cq_g1 = b->cq_e + d, b->cq_c = b->cq_e + 2 * d;
    sh_k_to_half(0, &b->cq, cq);
    sh_k_to_half(0, &b->o, o);
    sh_k_fold_cross_query(0, cq, b->cross_ln_w, b->cross_ln_b, b->cq_b, b->o_b, d, b->cq_g.w,
                          b->cq_e, b->cq_g1, b->cq_c);
    /* row-major G o is column-major (G o)^T = o^T G^T */
    const float one = 1.0f, zero = 0.0f;
    cublasStatus_t st = cublasGemmEx(blas, CUBLAS_OP_N, CUBLAS_OP_N, d, d, d, &one, o, CUDA_R_16F,
                                     d, b->cq_g.w, CUDA_R_16F, d, &zero, go, CUDA_R_32F, d,
                                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (st != CUBLAS_STATUS_SUCCESS) return blas_fail(err, st, "folding the cross query");
    /* G o in half (into cq's room, read already), then head by head */
    sh_gmat go_half = {.w = cq, .kind = SH_GW_F16, .n_out = d, .n_in = d};
    sh_k_f32_to_half(0, go, cq, (long)d * d);
    sh_k_col_blocks(0, &go_half, 64, 0, &b->cq_go_heads);
    CU(cudaStreamSynchronize(0), "folding the cross query");
    return 0;
}

/* The fused step's copies of every decoder layer's weights: o and co
 * head by head, fc2 in blocks of columns, the cross query's fold. */
static int upload_fused_copies(sh_gpu_model *g, char *err) {
    const sh_hparams *hp = &g->m->hp;
    int d = hp->n_text_state, r = 0, sms = 0;
    if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, g->device) != cudaSuccess)
        sms = 0, cudaGetLastError();   /* then unswizzled: the float loop reads them */
    cublasHandle_t blas = NULL;
    void *tmp = NULL;
    cublasStatus_t st = cublasCreate(&blas);
    if (st != CUBLAS_STATUS_SUCCESS) return blas_fail(err, st, "starting cuBLAS");
    if (cudaMalloc(&tmp, (size_t)d * d * 8) != cudaSuccess) {
        cudaGetLastError();
        cublasDestroy(blas);
        return fail(err, SHRUTI_ERR_NOMEM, "out of GPU memory folding the cross query");
    }
    const int swz = fused_swizzle(g->dec[0].fc1.kind, d, sms);   /* every layer alike */
    for (int l = 0; l < hp->n_text_layer && r == 0; l++) {
        gblock *b = &g->dec[l];
        r = upload_col_blocks(g, &b->o, 64, 0, &b->o_heads, err);
        if (r == 0) r = upload_col_blocks(g, &b->co, 64, 0, &b->co_heads, err);
        if (r == 0)
            r = upload_col_blocks(g, &b->fc2, b->fc2.n_in / SH_FC2_BLOCKS, swz, &b->fc2_blocks, err);
        if (r == 0 && swz) r = upload_col_blocks(g, &b->fc1, b->fc1.n_in, 1, &b->fc1_swz, err);
        if (r == 0) r = fold_cross_query(g, b, d, blas, tmp, err);
    }
    cudaFree(tmp);
    cublasDestroy(blas);
    return r;
}

/* The token embedding's int8 screen (sh_k_screen_build). */
static int make_screen(sh_gpu_model *g, char *err) {
    const sh_gmat *w = &g->tok_emb;
    g->screen = (sh_gmat){.kind = SH_GW_I8, .n_out = w->n_out, .n_in = w->n_in};
    int r = gmat_alloc(g, &g->screen, 0, err);
    if (r == 0) r = dev_alloc(g, (size_t)w->n_out * 2 * sizeof(float), (void **)&g->screen_bounds, err);
    if (r < 0) return r;
    sh_k_screen_build(0, w, &g->screen, g->screen_bounds);
    CU(cudaStreamSynchronize(0), "making the logits' int8 screen");
    return 0;
}

static void model_free(sh_gpu_model *g) {
    if (!g) return;
    cudaSetDevice(g->device);
    for (int i = 0; i < g->n_allocs; i++) cudaFree(g->allocs[i]);
    free(g->allocs);
    free(g->enc);
    free(g->dec);
    free(g);
}

static int model_upload(const shruti_model *m, int device, int mode, sh_gpu_row_fn row,
                        sh_gpu_model **out, char *err) {
    const sh_hparams *hp = &m->hp;
    const sh_weights *w = &m->w;
    *out = NULL;
    int hd_a = hp->n_audio_state / hp->n_audio_head, hd_t = hp->n_text_state / hp->n_text_head;
    if (hd_a * hp->n_audio_head != hp->n_audio_state || hd_t * hp->n_text_head != hp->n_text_state ||
        (hd_t != 16 && hd_t != 32 && hd_t != 64))
        return fail(err, SHRUTI_ERR_UNSUPPORTED, "the CUDA kernels need heads of 16, 32 or 64 columns");
    if (hp->n_audio_ctx > 2048 || hp->n_text_ctx > 2048 || hp->n_text_state > 2048)
        return fail(err, SHRUTI_ERR_UNSUPPORTED, "the CUDA kernels take at most 2048 positions and widths");
    if (hp->n_vocab > SH_PICK_MAX_VOCAB)
        return fail(err, SHRUTI_ERR_UNSUPPORTED, "the CUDA kernels take at most %d tokens", SH_PICK_MAX_VOCAB);
    if (hp->n_text_state % 32 || hp->n_audio_state % 32)
        return fail(err, SHRUTI_ERR_UNSUPPORTED, "the CUDA kernels need widths divisible by 32");
    if (fault_is("upload")) return fail(err, SHRUTI_ERR_NOMEM, "injected fault: out of memory");
    CU(cudaSetDevice(device), "selecting the CUDA device");
    sh_gpu_model *g = calloc(1, sizeof *g);
    if (!g) return fail(err, SHRUTI_ERR_NOMEM, "out of host memory");
    g->m = m, g->device = device, g->mode = mode, g->row = row;
    g->act_half = mode != SH_GPU_FLOAT32;
    int ak, dk, r = 0;
    kinds_for_mode(mode, &ak, &dk);
    g->enc = calloc((size_t)hp->n_audio_layer, sizeof *g->enc);
    g->dec = calloc((size_t)hp->n_text_layer, sizeof *g->dec);
    if (!g->enc || !g->dec) {
        model_free(g);
        return fail(err, SHRUTI_ERR_NOMEM, "out of host memory");
    }
    int da = hp->n_audio_state, dt = hp->n_text_state;
#define UP(call) \
    if (r == 0) r = (call)
    UP(upload_f32_matrix(g, w->conv1_w, da, 3 * hp->n_mels, ak, &g->conv1, err));
    UP(upload_f32_matrix(g, w->conv2_w, da, 3 * da, ak, &g->conv2, err));
    UP(upload_floats(g, w->conv1_b, da, &g->conv1_b, err));
    UP(upload_floats(g, w->conv2_b, da, &g->conv2_b, err));
    UP(upload_floats(g, w->enc_pos, (size_t)hp->n_audio_ctx * da, &g->enc_pos, err));
    for (int l = 0; l < hp->n_audio_layer; l++)
        UP(upload_block(g, &w->enc[l], da, 0, ak, ak, NULL, &g->enc[l], err));
    UP(upload_floats(g, w->enc_ln_w, da, &g->enc_ln_w, err));
    UP(upload_floats(g, w->enc_ln_b, da, &g->enc_ln_b, err));
    UP(upload_one(g, w->tok_emb, hp->n_vocab, dt, dk, &g->tok_emb, err));
    UP(upload_floats(g, w->dec_pos, (size_t)hp->n_text_ctx * dt, &g->dec_pos, err));
    /* half activations: the cross keys' and values' weights of every
     * layer in one buffer, for the batched GEMMs of cross_kv */
    size_t mat = (size_t)dt * da, L = (size_t)hp->n_text_layer;
    if (ak == SH_GW_F16) {
        UP(dev_alloc(g, 2 * L * mat * 2, (void **)&g->cross_w, err));
        UP(dev_alloc(g, L * dt * 2, (void **)&g->cross_b_h, err));
    }
    for (int l = 0; l < hp->n_text_layer; l++) {
        cross_room room = {0};
        if (g->cross_w)
            room = (cross_room){g->cross_w + l * mat, g->cross_w + (L + l) * mat, g->cross_b_h + l * dt};
        UP(upload_block(g, &w->dec[l], dt, 1, dk, ak, g->cross_w ? &room : NULL, &g->dec[l], err));
    }
    UP(upload_floats(g, w->dec_ln_w, dt, &g->dec_ln_w, err));
    UP(upload_floats(g, w->dec_ln_b, dt, &g->dec_ln_b, err));
    if (fused_may_run(g)) UP(upload_fused_copies(g, err));
    if (screen_may_run(mode, dt)) UP(make_screen(g, err));
    if (r == 0 && g->act_half)
        g->flash_groups = sh_encoder_attention_groups(device, hp->n_audio_ctx, da, hp->n_audio_head);
#undef UP
    if (r < 0) {
        model_free(g);
        return r;
    }
    *out = g;
    return 0;
}

/* ------------------------------------------------------------ run state */

/* cuBLASLt's plan for one GEMM shape of the encoder: y = x w^T + bias
 * (+ y), the bias added in the GEMM's epilogue instead of a pass of its
 * own; made at first use, ok 0 where cuBLASLt has none (then the GEMM and
 * the bias pass as before). */
typedef struct {
    int m, n, k, half_out, accumulate, bias;   /* the shape it is for */
    /* batch > 1: batch GEMMs, w, x, y and the bias that many strides on */
    int batch;
    long long w_stride, x_stride, y_stride, bias_stride;
    int ok;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t a, b, d;
    cublasLtMatmulAlgo_t algo;
} lt_plan;

#define MAX_LT_PLANS 16

/* The fused step for one row count: 0 not planned yet, 1 planned, -1
 * not possible (the step stays separate kernels). */
typedef struct {
    int state;
    sh_fused_step fs;
    void *words;                    /* device: its hand-over words and epoch */
} fused_plan;

struct sh_gpu_state {
    sh_gpu_model *g;
    cudaStream_t stream;
    cublasHandle_t blas;
    /* encoder */
    float *mel;                     /* (n_mels, 3000) */
    float *conv;                    /* (3000, d) conv1 output */
    float *x;                       /* (1500, d) residual stream */
    float *y;                       /* (1500, 4d) GEMM outputs */
    void *col;                      /* act (3000, 3 max(n_mels, d)) */
    void *h;                        /* act (1500, d) normed input */
    void *big;                      /* act (1500, 4d) qkv, MLP hidden */
    void *o;                        /* act (1500, d) attention output */
    float *scores;                  /* (n_head, 1500, 1500) */
    void *probs;                    /* act, same shape */
    void *cross_k, *cross_v;        /* act (n_windows, n_text_layer, 1500, d) */
    int n_windows;                  /* windows the cross buffers hold */
    int bound;                      /* decoder row b reads window b (batched windows) */
    /* decoder */
    int n_beams;
    void *self_k, *self_v, *self_tmp;   /* act (n_text_layer, n_beams, n_text_ctx, d) */
    int max_rows;
    float *dx, *dh, *dqkv, *dq, *da, *dm;   /* (max_rows, d | 3d | 4d) */
    float *partial;                 /* split attention scratch */
    int *counters;                  /* (max_rows, n_text_head), zero between kernels */
    uint16_t *half_x, *half_w;      /* GEMM inputs for many rows */
    float *logits;                  /* (SH_GEMV_MAX_ROWS, n_vocab) */
    int *io;                        /* device: pos0, tokens, beam sources */
    int *host_io;                   /* pinned */
    float *host_logits;             /* pinned (SH_GEMV_MAX_ROWS, n_vocab) */
    unsigned *pick_banned;          /* device: the masks' suppressed tokens, a bitmap */
    int32_t *pick_ids_host;         /* the tokens it holds (n_pick_ids; -1: nothing yet) */
    int n_pick_ids;
    unsigned *banned_host;          /* the bitmap as it is made */
    sh_pick_mask host_masks[MAX_BEAMS];   /* a mask per row: the pick's launches take them */
    void *pick_scratch;             /* device: the pick's partial results */
    void *topk_scratch;             /* device: beam top-k per chunk */
    int *topk_tokens;               /* mapped (device view): (MAX_BEAMS, SH_GPU_TOP_MAX) */
    double *topk_logprobs;
    int *host_topk_tokens;          /* the same, the host's views */
    double *host_topk_logprobs;
    sh_pick_result *pick;           /* mapped host memory (device view): the greedy choices */
    sh_pick_result *host_pick;      /* the same, the host's view */
    cudaGraphExec_t step[MAX_BEAMS + 1];   /* one-token steps by rows */
    signed char eager[MAX_BEAMS + 1];   /* rows whose step could not be captured */
    /* a window's prompt (one sequence of 2..SH_GEMV_MAX_ROWS tokens) by its
     * length, captured at first use (run_prompt_graph); prompt_eager: not
     * (it could not be, or SHRUTI_CUDA_PROMPT_GRAPH=0) */
    cudaGraphExec_t prompt[SH_GEMV_MAX_ROWS + 1];
    signed char prompt_eager[SH_GEMV_MAX_ROWS + 1];
    /* the encoder of a window into each slot's cross keys, captured at
     * first use; enc_eager: not captured (it could not be, or
     * SHRUTI_CUDA_ENCODER_GRAPH=0) */
    cudaGraphExec_t enc_graph[MAX_BEAMS];
    int enc_eager;
    int cross_batch;                /* the cross keys as batched GEMMs (cross_kv) */
    void *blas_ws;                  /* cuBLAS's workspace: none is allocated inside a capture */
    cublasLtHandle_t lt;            /* the encoder's GEMMs with their bias (half activations) */
    lt_plan lt_plans[MAX_LT_PLANS];
    int n_lt_plans;
    long n_forward, fail_at;        /* fault injection */
    int pdl;                        /* programmatic dependent launches (cc >= 9.0) */
    int gemv;                       /* the GEMV's SH_K_* flags */
    int att;                        /* the cross-attention's (SH_K_PDL, SH_K_ATT_ROWS) */
    int att_wave;                   /* its blocks a wave (sh_attention_wave) */
    int flash;                      /* the encoder's attention in one kernel (cc >= 8.0, half) */
    int flash_groups;               /* its warpgroup-MMA form's warpgroups a block (0: mma.sync) */
    /* the fused step (fused_step.cu) of one row and of two, each planned
     * when first captured */
    fused_plan fused[SH_FUSED_MAX_ROWS];   /* by rows - 1 */
    int logits_fused;               /* the last step was fused: row 0's logits are made */
    int wide_grid;                  /* the logits' persistent GEMV's blocks (0: k_gemv's) */
    int wide_pick_grid;             /* its blocks with the greedy pick in it (0: the pick apart) */
    int screen_grid;                /* the pick through the int8 screen's blocks (0: none) */
    int step_direct;                /* the one-row fused step launched directly (one_row_direct) */
    void *wide_pick_scratch;        /* device: that pick's block summaries */
    int dx_raw;                     /* dx is the last step's residual, its final layer
                                       norm left to the logits' GEMV (step_leaves_raw) */
    sh_fused_layer *fused_layers;   /* device: the layer table the graphs' kernels read */
    /* the speculated step (see greedy): a one-row greedy pick writes its
     * token into io and the next step runs on it at once, while the host
     * reads the token and builds the next mask; the host's forward of that
     * token then finds it done */
    int speculate;                  /* allowed (SHRUTI_CUDA_SPECULATE is not 0) */
    cudaEvent_t picked;             /* the pick's end, ahead of the speculated step */
    int spec_live;                  /* a step of spec_token at spec_pos is enqueued */
    int spec_token, spec_pos;
    int stale;                      /* that step overwrote the last forward's outputs */
    int last_rows, last_tokens;     /* the last forward's shape; its input stays in host_io */
    long n_speculated, n_wasted;    /* speculated steps the host took, and did not */
    long n_screened;                /* greedy picks through the int8 screen */
    /* a one-row greedy pick with a speculated step after it made as that
     * step's beginning (greedy_in_step; SHRUTI_CUDA_PICK_IN_STEP=0: not) */
    int pick_in_step;
    long n_step_picks;
};

/* The suppressed tokens' bitmap: words for a vocabulary of n. */
#define BANNED_WORDS(n) (((size_t)(n) + 31) / 32)

#define IO_POS 0
#define IO_TOKENS 1
#define IO_SRC (1 + 512)
#define N_IO (IO_SRC + MAX_BEAMS)   /* pos0, tokens, beam sources */

static size_t act_size(const sh_gpu_model *g) { return g->act_half ? 2 : 4; }

/* The speculated step will not be the host's (another token or position,
 * or the caches or windows change): it ran for nothing. */
static void spec_drop(sh_gpu_state *s) {
    s->n_wasted += s->spec_live;
    s->spec_live = 0;
}

/* n graphs destroyed and their places cleared (the stream synchronized
 * first: a speculated step may be running one). */
static void destroy_graphs(sh_gpu_state *s, cudaGraphExec_t *graphs, int n) {
    cudaStreamSynchronize(s->stream);
    for (int i = 0; i < n; i++)
        if (graphs[i]) {
            cudaGraphExecDestroy(graphs[i]);
            graphs[i] = NULL;
        }
}

static void drop_graphs(sh_gpu_state *s) {
    destroy_graphs(s, s->step, MAX_BEAMS + 1);
    destroy_graphs(s, s->prompt, SH_GEMV_MAX_ROWS + 1);
}

/* The encoder's graphs, which hold the windows' cross keys' addresses. */
static void drop_encoder_graphs(sh_gpu_state *s) { destroy_graphs(s, s->enc_graph, MAX_BEAMS); }

/* The run state's device buffers with their sizes: one list to allocate,
 * free and estimate them (the self-attention caches and extra windows
 * grow later, in reserve and reserve_windows). */
typedef struct {
    void **ptr;
    size_t bytes;
} state_buf;

#define MAX_STATE_BUFS 40

/* flash: the encoder's attention runs in one kernel, which needs no
 * scores or probabilities in memory (medium: 216 MB less). */
static int state_buffers(const sh_hparams *hp, size_t a, int flash, sh_gpu_state *s,
                         state_buf *out) {
    size_t n = hp->n_audio_ctx, d = hp->n_audio_state, dt = hp->n_text_state;
    size_t cols = 3 * (size_t)(hp->n_mels > hp->n_audio_state ? hp->n_mels : hp->n_audio_state);
    size_t rows = hp->n_text_ctx > MAX_BEAMS ? hp->n_text_ctx : MAX_BEAMS;
    size_t partial = (size_t)sh_attention_partial_floats((int)rows, hp->n_text_head,
                                                         hp->n_text_state / hp->n_text_head, n);
    int k = 0;
#define BUF(field, size) out[k++] = (state_buf){(void **)&s->field, (size)}
    BUF(mel, (size_t)hp->n_mels * 3000 * 4);
    BUF(conv, 2 * n * d * 4);
    BUF(x, n * d * 4);
    BUF(y, n * 4 * d * 4);
    BUF(col, 2 * n * cols * a);
    BUF(h, n * d * a);
    BUF(big, n * 4 * d * a);
    BUF(o, n * d * a);
    BUF(scores, flash ? 0 : (size_t)hp->n_audio_head * n * n * 4);
    BUF(probs, flash ? 0 : (size_t)hp->n_audio_head * n * n * a);
    BUF(cross_k, (size_t)hp->n_text_layer * n * dt * a);
    BUF(cross_v, (size_t)hp->n_text_layer * n * dt * a);
    BUF(dx, rows * dt * 4);
    BUF(dh, rows * dt * 4);
    BUF(dqkv, rows * 3 * dt * 4);
    BUF(dq, rows * dt * 4);
    BUF(da, rows * dt * 4);
    BUF(dm, rows * 4 * dt * 4);
    BUF(partial, partial * 4);
    BUF(counters, rows * hp->n_text_head * sizeof(int));
    BUF(half_x, rows * 4 * dt * 2);
    BUF(half_w, 4 * dt * dt * 2);
    BUF(logits, (size_t)SH_GEMV_MAX_ROWS * hp->n_vocab * 4);
    BUF(io, N_IO * sizeof(int));
    BUF(blas_ws, BLAS_WORKSPACE);
    BUF(pick_banned, BANNED_WORDS(hp->n_vocab) * sizeof(unsigned));
    BUF(pick_scratch, (size_t)sh_pick_scratch_bytes(SH_GEMV_MAX_ROWS));
    BUF(wide_pick_scratch, (size_t)sh_wide_pick_scratch_bytes());
    BUF(topk_scratch, (size_t)sh_topk_scratch_bytes(SH_GEMV_MAX_ROWS));
    BUF(self_k, 0);   /* sized by reserve */
    BUF(self_v, 0);
    BUF(self_tmp, 0);
#undef BUF
    return k;
}

static void state_free(sh_gpu_state *s) {
    if (!s) return;
    cudaSetDevice(s->g->device);
    drop_graphs(s);
    drop_encoder_graphs(s);
    state_buf bufs[MAX_STATE_BUFS];
    int n = state_buffers(&s->g->m->hp, act_size(s->g), s->flash, s, bufs);
    for (int i = 0; i < n; i++)
        if (*bufs[i].ptr) cudaFree(*bufs[i].ptr);
    if (s->fused_layers) cudaFree(s->fused_layers);
    for (int r = 0; r < SH_FUSED_MAX_ROWS; r++)
        if (s->fused[r].words) cudaFree(s->fused[r].words);
    if (s->host_io) cudaFreeHost(s->host_io);
    if (s->host_logits) cudaFreeHost(s->host_logits);
    if (s->host_pick) cudaFreeHost(s->host_pick);
    if (s->host_topk_tokens) cudaFreeHost(s->host_topk_tokens);
    if (s->host_topk_logprobs) cudaFreeHost(s->host_topk_logprobs);
    free(s->pick_ids_host);
    free(s->banned_host);
    for (int i = 0; i < s->n_lt_plans; i++) {
        lt_plan *p = &s->lt_plans[i];
        if (p->desc) cublasLtMatmulDescDestroy(p->desc);
        if (p->a) cublasLtMatrixLayoutDestroy(p->a);
        if (p->b) cublasLtMatrixLayoutDestroy(p->b);
        if (p->d) cublasLtMatrixLayoutDestroy(p->d);
    }
    if (s->lt) cublasLtDestroy(s->lt);
    if (s->blas) cublasDestroy(s->blas);
    if (s->picked) cudaEventDestroy(s->picked);
    if (s->stream) cudaStreamDestroy(s->stream);
    free(s);
}

/* Whether the encoder's attention runs in one kernel (encoder_attention.cu:
 * compute 8.0+, half activations, 64-wide heads); SHRUTI_CUDA_FLASH=0 keeps
 * cuBLAS (A/B runs, tests). */
static int flash_wanted(int cc_major, int act_half, const sh_hparams *hp) {
    return cc_major >= 8 && !env_off("SHRUTI_CUDA_FLASH") && act_half &&
           hp->n_audio_state == 64 * hp->n_audio_head;
}

/* The run state's buffers, the caches of 5 beams included, on the current
 * device (the probe selected it): the scores only where the encoder's
 * attention kernel will not run (counted always, they had made medium
 * look 216 MB bigger than it is); the fused step's hand-over words and
 * sums, of one row's plan and two rows', where it may run (medium ~12 MB
 * on 132 SMs). */
static uint64_t state_bytes(const shruti_model *m, int mode) {
    const sh_hparams *hp = &m->hp;
    uint64_t a = mode == SH_GPU_FLOAT32 ? 4 : 2, sum = 0;
    int dev = 0, cc_major = 0;   /* unknown: counted as without the kernel, an upper bound */
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&cc_major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess)
        cc_major = 0;
    sh_gpu_state probe_state;
    state_buf bufs[MAX_STATE_BUFS];
    int n = state_buffers(hp, a, flash_wanted(cc_major, mode != SH_GPU_FLOAT32, hp), &probe_state,
                          bufs);
    for (int i = 0; i < n; i++) sum += bufs[i].bytes;
    int sms = 0;
    if (fused_may_run_on(hp, mode, cc_major) &&
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) == cudaSuccess)
        for (int rows = 1; rows <= SH_FUSED_MAX_ROWS; rows++)
            sum += (uint64_t)sh_fused_ll_words(hp->n_text_layer, hp->n_text_state, hp->n_text_head,
                                               sms / hp->n_text_head, rows) * 8 + 256;
    return sum + 3 * (uint64_t)hp->n_text_layer * 5 * hp->n_text_ctx * hp->n_text_state * a;
}

static int state_alloc(void **p, size_t bytes, char *err) {
    CU(cudaMalloc(p, bytes ? bytes : 16), "allocating the GPU run state");
    return 0;
}

static int reserve(sh_gpu_state *s, int n_beams, char *err);

/* Pinned host memory that kernels write in place (the greedy step's
 * choices, the beams' best tokens: no copy to queue and wait for each
 * step). */
static int mapped_alloc(void **host, void **dev, size_t bytes, char *err) {
    CU(cudaHostAlloc(host, bytes, cudaHostAllocMapped), "allocating mapped memory");
    memset(*host, 0, bytes);
    CU(cudaHostGetDevicePointer(dev, *host, 0), "mapping host memory");
    return 0;
}

static int state_new(sh_gpu_model *g, sh_gpu_state **out, char *err) {
    const sh_hparams *hp = &g->m->hp;
    *out = NULL;
    if (fault_is("state")) return fail(err, SHRUTI_ERR_NOMEM, "injected fault: out of memory");
    CU(cudaSetDevice(g->device), "selecting the CUDA device");
    sh_gpu_state *s = calloc(1, sizeof *s);
    if (!s) return fail(err, SHRUTI_ERR_NOMEM, "out of host memory");
    s->g = g;
    if (fault_is("forward:")) s->fail_at = atol(getenv("SHRUTI_CUDA_FAULT") + 8);
    int cc_major = 0;
    cudaDeviceGetAttribute(&cc_major, cudaDevAttrComputeCapabilityMajor, g->device);
    s->pdl = cc_major >= 9 && !getenv("SHRUTI_CUDA_NO_PDL");
    /* SHRUTI_CUDA_MMA: 0 keeps half GEMVs off the tensor cores, "all"
     * puts one-row GEMVs on them too */
    const char *mma = getenv("SHRUTI_CUDA_MMA");
    s->gemv = (s->pdl ? SH_K_PDL : 0) |
              (cc_major >= 8 && !env_off("SHRUTI_CUDA_MMA") ? SH_K_MMA : 0) |
              (mma && strcmp(mma, "all") == 0 ? SH_K_MMA_ONE : 0);
    s->flash = flash_wanted(cc_major, g->act_half, hp);
    /* SHRUTI_CUDA_ENCODER_WGMMA=0: the mma.sync form on compute 9.0 too (A/B runs, tests) */
    s->flash_groups = s->flash && !env_off("SHRUTI_CUDA_ENCODER_WGMMA") ? g->flash_groups : 0;
    /* rows that share a window scored together in the cross-attention
     * beyond a wave (H200, medium's 5-beam step 1.29 -> 1.24 ms);
     * SHRUTI_CUDA_ATT_ROWS=0: never, =1: whatever the grid (tests) */
    const char *att_rows = getenv("SHRUTI_CUDA_ATT_ROWS");
    s->att = (s->pdl ? SH_K_PDL : 0) | (env_off("SHRUTI_CUDA_ATT_ROWS") ? 0 : SH_K_ATT_ROWS);
    s->att_wave = att_rows && strcmp(att_rows, "1") == 0 ? 0
                                                         : sh_attention_wave(g->device, g->act_half);
    /* SHRUTI_CUDA_WIDE_LOGITS=0: the logits through k_gemv (A/B runs) */
    s->wide_grid = env_off("SHRUTI_CUDA_WIDE_LOGITS")
                       ? 0
                       : sh_gemv_wide_grid(g->device, g->tok_emb.kind, hp->n_text_state, 0);
    /* SHRUTI_CUDA_WIDE_PICK=0: the greedy pick in kernels of its own (A/B runs) */
    s->wide_pick_grid = s->wide_grid > 0 && !env_off("SHRUTI_CUDA_WIDE_PICK")
                            ? sh_gemv_wide_grid(g->device, g->tok_emb.kind, hp->n_text_state, 1)
                            : 0;
    /* SHRUTI_CUDA_STEP_DIRECT=0: the one-row fused step through its graph (A/B runs) */
    s->step_direct = !env_off("SHRUTI_CUDA_STEP_DIRECT");
    if (env_off("SHRUTI_CUDA_PROMPT_GRAPH")) memset(s->prompt_eager, 1, sizeof s->prompt_eager);
    s->enc_eager = env_off("SHRUTI_CUDA_ENCODER_GRAPH");
    s->cross_batch = !env_off("SHRUTI_CUDA_CROSS_BATCH");
    /* SHRUTI_LOGIT_SCREEN=0 here too: a state without it (A/B runs) */
    s->screen_grid = s->wide_pick_grid > 0 && g->screen.w && !env_off("SHRUTI_LOGIT_SCREEN")
                         ? sh_screen_pick_grid(g->device, hp->n_text_state, hp->n_vocab)
                         : 0;
    s->speculate = !env_off("SHRUTI_CUDA_SPECULATE");
    s->pick_in_step = !env_off("SHRUTI_CUDA_PICK_IN_STEP");
    size_t rows = hp->n_text_ctx > MAX_BEAMS ? hp->n_text_ctx : MAX_BEAMS;
    s->max_rows = (int)rows;
    int r = 0;
    cudaError_t e = cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking);
    if (e != cudaSuccess) r = cuda_fail(err, e, "creating a CUDA stream");
    cublasStatus_t bs = r == 0 ? cublasCreate(&s->blas) : CUBLAS_STATUS_SUCCESS;
    if (r == 0 && bs != CUBLAS_STATUS_SUCCESS) r = blas_fail(err, bs, "creating a cuBLAS handle");
    if (r == 0) cublasSetStream(s->blas, s->stream);
    state_buf bufs[MAX_STATE_BUFS];
    int n_bufs = state_buffers(hp, act_size(g), s->flash, s, bufs);
    for (int i = 0; i < n_bufs && r == 0; i++)
        if (bufs[i].bytes) r = state_alloc(bufs[i].ptr, bufs[i].bytes, err);
    if (r == 0 && (bs = cublasSetWorkspace(s->blas, s->blas_ws, BLAS_WORKSPACE)) != CUBLAS_STATUS_SUCCESS)
        r = blas_fail(err, bs, "giving cuBLAS its workspace");
    /* without cuBLASLt the encoder keeps its separate bias passes */
    if (r == 0 && g->act_half && cublasLtCreate(&s->lt) != CUBLAS_STATUS_SUCCESS) s->lt = NULL;
    if (r == 0 && (e = cudaEventCreateWithFlags(&s->picked, cudaEventDisableTiming)) != cudaSuccess)
        r = cuda_fail(err, e, "creating a CUDA event");
    s->n_windows = 1;
    s->n_pick_ids = -1;
    if (r == 0 && (!(s->pick_ids_host = malloc((size_t)hp->n_vocab * sizeof(int32_t))) ||
                   !(s->banned_host = malloc(BANNED_WORDS(hp->n_vocab) * sizeof(unsigned)))))
        r = fail(err, SHRUTI_ERR_NOMEM, "out of host memory");
    /* on this context's stream (non-blocking: the legacy stream's memset
     * would not be ordered before our kernels) */
    if (r == 0 && ((e = cudaMemsetAsync(s->counters, 0, rows * hp->n_text_head * sizeof(int),
                                        s->stream)) != cudaSuccess ||
                   (e = cudaMemsetAsync(s->wide_pick_scratch, 0,
                                        (size_t)sh_wide_pick_scratch_bytes(), s->stream)) !=
                       cudaSuccess ||
                   (e = cudaStreamSynchronize(s->stream)) != cudaSuccess))
        r = cuda_fail(err, e, "clearing the GPU run state");
    if (r == 0 && (e = cudaMallocHost((void **)&s->host_io, N_IO * sizeof(int))) != cudaSuccess)
        r = cuda_fail(err, e, "allocating pinned memory");
    if (r == 0 && (e = cudaMallocHost((void **)&s->host_logits,
                                      (size_t)SH_GEMV_MAX_ROWS * hp->n_vocab * 4)) != cudaSuccess)
        r = cuda_fail(err, e, "allocating pinned memory");
    if (r == 0) r = mapped_alloc((void **)&s->host_pick, (void **)&s->pick,
                                 MAX_BEAMS * sizeof(sh_pick_result), err);
    if (r == 0) r = mapped_alloc((void **)&s->host_topk_tokens, (void **)&s->topk_tokens,
                                 MAX_BEAMS * SH_GPU_TOP_MAX * sizeof(int), err);
    if (r == 0) r = mapped_alloc((void **)&s->host_topk_logprobs, (void **)&s->topk_logprobs,
                                 MAX_BEAMS * SH_GPU_TOP_MAX * sizeof(double), err);
    if (r == 0) r = reserve(s, 1, err);
    if (r < 0) {
        state_free(s);
        return r;
    }
    *out = s;
    return 0;
}

/* ---------------------------------------------------------------- GEMMs */

static cudaDataType act_type(const sh_gpu_state *s) {
    return s->g->act_half ? CUDA_R_16F : CUDA_R_32F;
}

/* Column-major cuBLAS: C (m, n) = alpha op(A) op(B) + beta C, batched by
 * strides; float32 accumulation always (no TF32 for float32 data). */
static int gemm(sh_gpu_state *s, int ta, int tb, int m, int n, int k, float alpha,
                const void *A, cudaDataType at, int lda, long long sa, const void *B,
                cudaDataType bt, int ldb, long long sb, float beta, void *C, cudaDataType ct,
                int ldc, long long sc, int batch, char *err) {
    cublasStatus_t st = cublasGemmStridedBatchedEx(
        s->blas, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k, &alpha,
        A, at, lda, sa, B, bt, ldb, sb, &beta, C, ct, ldc, sc, batch, CUBLAS_COMPUTE_32F,
        CUBLAS_GEMM_DEFAULT);
    return st == CUBLAS_STATUS_SUCCESS ? 0 : blas_fail(err, st, "GEMM");
}

/* y (rows, n_out) float32 = x (rows, n_in) act @ w^T, w of the act kind;
 * beta 1 adds to y. */
static int linear_act(sh_gpu_state *s, const sh_gmat *w, const void *x, int rows, float *y,
                      float beta, char *err) {
    return gemm(s, 1, 0, w->n_out, rows, w->n_in, 1.0f, w->w, act_type(s), w->n_in, 0, x,
                act_type(s), w->n_in, 0, beta, y, CUDA_R_32F, w->n_out, 0, 1, err);
}

/* Whether two plans are for the same GEMM. */
static int lt_same(const lt_plan *a, const lt_plan *b) {
    return a->m == b->m && a->n == b->n && a->k == b->k && a->half_out == b->half_out &&
           a->accumulate == b->accumulate && a->bias == b->bias && a->batch == b->batch &&
           a->w_stride == b->w_stride && a->x_stride == b->x_stride && a->y_stride == b->y_stride &&
           a->bias_stride == b->bias_stride;
}

/* A layout of a column-major rows x cols matrix of type t, batched as
 * want says with stride between its matrices. */
static int lt_layout(cublasLtMatrixLayout_t *out, cudaDataType t, int rows, int cols,
                     const lt_plan *want, long long stride) {
    if (cublasLtMatrixLayoutCreate(out, t, rows, cols, rows) != CUBLAS_STATUS_SUCCESS) return 0;
    if (want->batch <= 1) return 1;
    int32_t count = want->batch;
    return cublasLtMatrixLayoutSetAttribute(*out, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count,
                                            sizeof count) == CUBLAS_STATUS_SUCCESS &&
           cublasLtMatrixLayoutSetAttribute(*out, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                                            &stride, sizeof stride) == CUBLAS_STATUS_SUCCESS;
}

/* The plan for want's (m x k) x (k x n) GEMM(s) of half operands into a
 * half or float y, NULL where cuBLASLt offers none. */
static lt_plan *lt_plan_for(sh_gpu_state *s, const lt_plan *want) {
    for (int i = 0; i < s->n_lt_plans; i++)
        if (lt_same(&s->lt_plans[i], want)) return s->lt_plans[i].ok ? &s->lt_plans[i] : NULL;
    if (s->n_lt_plans == MAX_LT_PLANS) return NULL;
    lt_plan *p = &s->lt_plans[s->n_lt_plans++];
    *p = *want;
    p->ok = 0, p->desc = NULL, p->a = p->b = p->d = NULL;
    int m = want->m, n = want->n, k = want->k;
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    cublasLtEpilogue_t epi = want->bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    /* the bias of the output's type: cuBLASLt offers no epilogue adding a
     * float bias into a half output */
    cudaDataType out_type = want->half_out ? CUDA_R_16F : CUDA_R_32F, bias_type = out_type;
    uint64_t ws = BLAS_WORKSPACE;
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t found;
    int n_found = 0;
    /* w (m rows of k) is column-major k x m, taken transposed; x column-major k x n */
    int made = cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F) == 0 &&
               cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta) == 0 &&
               cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb) == 0 &&
               cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi) == 0 &&
               (!want->bias || cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
                                                              &bias_type, sizeof bias_type) == 0) &&
               (!want->bias || want->batch <= 1 ||
                cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE,
                                               &p->bias_stride, sizeof p->bias_stride) == 0) &&
               lt_layout(&p->a, CUDA_R_16F, k, m, want, want->w_stride) &&
               lt_layout(&p->b, CUDA_R_16F, k, n, want, want->x_stride) &&
               lt_layout(&p->d, out_type, m, n, want, want->y_stride) &&
               cublasLtMatmulPreferenceCreate(&pref) == 0 &&
               cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                                    sizeof ws) == 0 &&
               cublasLtMatmulAlgoGetHeuristic(s->lt, p->desc, p->a, p->b, p->d, p->d, pref, 1, &found,
                                              &n_found) == 0 &&
               n_found > 0;
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (made) p->algo = found.algo;
    p->ok = made;
    return made ? p : NULL;
}

/* Runs plan p: y = x w^T + bias (+ y), -1 where cuBLASLt refuses. */
static int lt_run(sh_gpu_state *s, lt_plan *p, const void *w, const void *x, void *y,
                  const void *bias) {
    float alpha = 1.0f, beta = p->accumulate ? 1.0f : 0.0f;
    if (bias && cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                               sizeof bias) != CUBLAS_STATUS_SUCCESS)
        return -1;
    cublasStatus_t st = cublasLtMatmul(s->lt, p->desc, &alpha, w, p->a, x, p->b, &beta, y, p->d, y,
                                       p->d, &p->algo, s->blas_ws, BLAS_WORKSPACE, s->stream);
    return st == CUBLAS_STATUS_SUCCESS ? 0 : -1;
}

/* y (rows, n_out) = x (rows, n_in) @ w^T + bias, + y when accumulating, y
 * half or float; half weights and x, the bias in cuBLASLt's epilogue. -1,
 * with nothing enqueued, where that cannot run: the caller takes the
 * GEMM and a bias pass. */
static int lt_linear(sh_gpu_state *s, const sh_gmat *w, const void *x, int rows, void *y,
                     int half_out, const void *bias, int accumulate) {
    if (!s->lt || w->kind != SH_GW_F16) return -1;
    lt_plan want = {.m = w->n_out, .n = rows, .k = w->n_in, .half_out = half_out,
                    .accumulate = accumulate, .bias = bias != NULL, .batch = 1};
    lt_plan *p = lt_plan_for(s, &want);
    return p ? lt_run(s, p, w->w, x, y, bias) : -1;
}

/* The encoder's linear layers: y = x w^T + bias into activations of the
 * run's type (out_act: half, or float in float32), or added to the float
 * residual; cuBLASLt with the bias in its epilogue where it can (half
 * activations only; into half activations bias_h, the bias in half), else
 * cuBLAS and a bias pass. gelu: GELU after the bias, on the half output
 * in place where cuBLASLt adds bias_h (H200, medium encoder: the float
 * output and its GELU pass were 24 + 11 us a layer), else on the float
 * output on its way to out_act. */
static int enc_linear(sh_gpu_state *s, const sh_gmat *w, const void *x, int rows, void *out_act,
                      float *residual, const float *bias, const uint16_t *bias_h, int gelu,
                      char *err) {
    int r;
    if (residual) {
        if (lt_linear(s, w, x, rows, residual, 0, bias, 1) == 0) return 0;
        if ((r = linear_act(s, w, x, rows, residual, 1.0f, err)) < 0) return r;
        if (bias) sh_k_add_bias(s->stream, residual, bias, rows, w->n_out);
        return 0;
    }
    if ((!bias || bias_h) && lt_linear(s, w, x, rows, out_act, 1, bias_h, 0) == 0) {
        if (gelu) sh_k_gelu_half(s->stream, out_act, (long)rows * w->n_out);
        return 0;
    }
    if (gelu && lt_linear(s, w, x, rows, s->y, 0, bias, 0) == 0) {
        sh_k_bias_act(s->stream, s->y, NULL, rows, w->n_out, 1, out_act, s->g->act_half);
        return 0;
    }
    if ((r = linear_act(s, w, x, rows, s->y, 0.0f, err)) < 0) return r;
    sh_k_bias_act(s->stream, s->y, bias, rows, w->n_out, gelu, out_act, s->g->act_half);
    return 0;
}

/* The decoder's linear layer on float32 rows: the GEMV up to
 * SH_GEMV_MAX_ROWS rows, cuBLAS beyond (half operands for half and int8
 * weights). */
static int dec_linear(sh_gpu_state *s, const sh_gmat *w, const float *x, int rows, float *y,
                      const float *bias, int epilogue, char *err) {
    if (rows <= SH_GEMV_MAX_ROWS) {
        sh_k_gemv_ln(s->stream, w, x, w->n_in, rows, y, w->n_out, bias, epilogue, NULL, NULL, NULL,
                     s->gemv);
        return 0;
    }
    float beta = epilogue == SH_GEMV_ACCUM ? 1.0f : 0.0f;
    int r;
    if (w->kind == SH_GW_F32) {
        r = gemm(s, 1, 0, w->n_out, rows, w->n_in, 1.0f, w->w, CUDA_R_32F, w->n_in, 0, x,
                 CUDA_R_32F, w->n_in, 0, beta, y, CUDA_R_32F, w->n_out, 0, 1, err);
    } else {
        const void *wh = w->w;
        if (w->kind == SH_GW_I8) {
            sh_k_to_half(s->stream, w, s->half_w);
            wh = s->half_w;
        }
        sh_k_f32_to_half(s->stream, x, s->half_x, (long)rows * w->n_in);
        r = gemm(s, 1, 0, w->n_out, rows, w->n_in, 1.0f, wh, CUDA_R_16F, w->n_in, 0, s->half_x,
                 CUDA_R_16F, w->n_in, 0, beta, y, CUDA_R_32F, w->n_out, 0, 1, err);
    }
    if (r < 0) return r;
    if (epilogue == SH_GEMV_GELU)
        sh_k_bias_gelu_add(s->stream, y, bias, NULL, rows, w->n_out);
    else if (bias)
        sh_k_add_bias(s->stream, y, bias, rows, w->n_out);
    return 0;
}

/* -------------------------------------------------------------- encoder */

/* x = x + attn(ln(x)); x = x + mlp(ln(x)) */
static int encoder_block(sh_gpu_state *s, const gblock *b, char *err) {
    const sh_hparams *hp = &s->g->m->hp;
    int n = hp->n_audio_ctx, d = hp->n_audio_state, heads = hp->n_audio_head, ah = s->g->act_half;
    int hd = d / heads;
    cudaDataType at = act_type(s);
    size_t a = act_size(s->g);
    int r;
    sh_k_layer_norm(s->stream, s->x, n, d, b->attn_ln_w, b->attn_ln_b, s->h, ah);
    if ((r = enc_linear(s, &b->qkv, s->h, n, s->big, NULL, b->qkv_b, b->qkv_b_h, 0, err)) < 0) return r;
    /* half activations, 64-wide heads: the whole attention in one kernel
     * (the scores never leave the SM); else through cuBLAS and a softmax */
    if (s->flash) {
        if (sh_k_encoder_attention(s->stream, s->big, n, d, heads, s->o, s->flash_groups) < 0)
            return fail(err, SHRUTI_ERR_DEVICE, "encoder attention: bad shape");
    } else {
        /* scores(h) = q_h k_h^T / sqrt(hd), all heads in one batched GEMM */
        const char *q = s->big, *k = (const char *)s->big + (size_t)d * a,
                   *v = (const char *)s->big + (size_t)2 * d * a;
        if ((r = gemm(s, 1, 0, n, n, hd, 1.0f / sqrtf((float)hd), k, at, 3 * d, hd, q, at, 3 * d,
                      hd, 0.0f, s->scores, CUDA_R_32F, n, (long long)n * n, heads, err)) < 0)
            return r;
        sh_k_softmax_rows(s->stream, s->scores, heads * n, n, s->probs, ah);
        /* o_h = p_h v_h, written into its hd columns of o */
        if ((r = gemm(s, 0, 0, hd, n, n, 1.0f, v, at, 3 * d, hd, s->probs, at, n,
                      (long long)n * n, 0.0f, s->o, at, d, hd, heads, err)) < 0)
            return r;
    }
    if ((r = enc_linear(s, &b->o, s->o, n, NULL, s->x, b->o_b, NULL, 0, err)) < 0) return r;
    sh_k_layer_norm(s->stream, s->x, n, d, b->mlp_ln_w, b->mlp_ln_b, s->h, ah);
    if ((r = enc_linear(s, &b->fc1, s->h, n, s->big, NULL, b->fc1_b, b->fc1_b_h, 1, err)) < 0) return r;
    if ((r = enc_linear(s, &b->fc2, s->big, n, NULL, s->x, b->fc2_b, NULL, 0, err)) < 0) return r;
    return 0;
}

/* Every decoder layer's cross keys (into ck) and values (cv, with their
 * bias) from the encoder output h, as two batched GEMMs over the weights
 * uploaded layer after layer into cross_w (H200, medium: 48 GEMMs of
 * ~7.5 us and their gaps were ~0.43 ms a window). -1 where that cannot
 * run (the caller runs them one by one). */
static int cross_kv(sh_gpu_state *s, void *ck, void *cv) {
    const sh_gpu_model *g = s->g;
    const sh_hparams *hp = &g->m->hp;
    int d = hp->n_text_state, n = hp->n_audio_ctx;
    if (!g->cross_w || !s->lt || !s->cross_batch) return -1;
    lt_plan want = {.m = d, .n = n, .k = hp->n_audio_state, .half_out = 1, .batch = hp->n_text_layer,
                    .w_stride = (long long)d * hp->n_audio_state, .x_stride = 0,
                    .y_stride = (long long)n * d};
    lt_plan *keys = lt_plan_for(s, &want);
    want.bias = 1, want.bias_stride = d;
    lt_plan *values = lt_plan_for(s, &want);
    if (!keys || !values) return -1;
    const uint16_t *vw = g->cross_w + (size_t)hp->n_text_layer * d * hp->n_audio_state;
    /* a refusal of the values after the keys ran: the caller makes both
     * again one by one (the same keys) */
    if (lt_run(s, keys, g->cross_w, s->h, ck, NULL) < 0 ||
        lt_run(s, values, vw, s->h, cv, g->cross_b_h) < 0)
        return -1;
    return 0;
}

/* The encoder over the mel window in s->mel into slot's cross keys and
 * values, enqueued. */
static int encoder_pass(sh_gpu_state *s, int slot, char *err) {
    const sh_gpu_model *g = s->g;
    const sh_hparams *hp = &g->m->hp;
    int n = hp->n_audio_ctx, d = hp->n_audio_state, n_in = 2 * n, ah = g->act_half, r;
    size_t a = act_size(g);
    /* x = gelu(conv1(mel)); x = gelu(conv2(x)) + positional_embedding */
    sh_k_im2col(s->stream, s->mel, 1, hp->n_mels, n_in, n_in, 1, s->col, ah);
    if ((r = linear_act(s, &g->conv1, s->col, n_in, s->conv, 0.0f, err)) < 0) return r;
    sh_k_bias_gelu_add(s->stream, s->conv, g->conv1_b, NULL, n_in, d);
    sh_k_im2col(s->stream, s->conv, 0, d, n_in, n, 2, s->col, ah);
    if ((r = linear_act(s, &g->conv2, s->col, n, s->x, 0.0f, err)) < 0) return r;
    sh_k_bias_gelu_add(s->stream, s->x, g->conv2_b, g->enc_pos, n, d);
    for (int l = 0; l < hp->n_audio_layer; l++)
        if ((r = encoder_block(s, &g->enc[l], err)) < 0) return r;
    /* x = ln_post(x); then every decoder layer's cross keys and values */
    sh_k_layer_norm(s->stream, s->x, n, d, g->enc_ln_w, g->enc_ln_b, s->h, ah);
    size_t layer = (size_t)n * hp->n_text_state * a;
    char *ck = (char *)s->cross_k + (size_t)slot * hp->n_text_layer * layer;
    char *cv = (char *)s->cross_v + (size_t)slot * hp->n_text_layer * layer;
    if (cross_kv(s, ck, cv) < 0)
        for (int l = 0; l < hp->n_text_layer; l++) {
            const gblock *b = &g->dec[l];
            if ((r = enc_linear(s, &b->ck, s->h, n, ck + l * layer, NULL, NULL, NULL, 0, err)) < 0) return r;
            if ((r = enc_linear(s, &b->cv, s->h, n, cv + l * layer, NULL, b->cv_b, b->cv_b_h, 0, err)) < 0) return r;
        }
    return 0;
}

/* Captures slot's encoder pass into enc_graph[slot]; where anything in
 * the capture fails, enc_eager instead (the kernels one by one from then
 * on, which report a failure of their own). */
static void encoder_capture(sh_gpu_state *s, int slot, char *err) {
    cudaGraph_t graph = NULL;
    cudaError_t e = cudaStreamBeginCapture(s->stream, cudaStreamCaptureModeThreadLocal);
    if (e == cudaSuccess) {
        int r = encoder_pass(s, slot, err);
        e = cudaStreamEndCapture(s->stream, &graph);
        if (e == cudaSuccess && r < 0) e = cudaErrorUnknown;
    }
    if (e == cudaSuccess) e = cudaGraphInstantiate(&s->enc_graph[slot], graph, 0);
    if (graph) cudaGraphDestroy(graph);
    if (e != cudaSuccess) {
        s->enc_graph[slot] = NULL;
        s->enc_eager = 1;
    }
    cudaGetLastError();
}

/* The encoder pass of slot as its graph, captured at first use (H200,
 * medium: ~250 kernels a window, ~1.9 us apart when launched one by one
 * under the kernel timeline; a window 4.03 / 4.05 -> 3.71 / 3.68 ms,
 * large 6.47 / 6.37 -> 6.03 / 6.16, tiny 0.53 -> 0.43 / 0.45); else
 * launched one by one. */
static int encoder_launch(sh_gpu_state *s, int slot, char *err) {
    if (!s->enc_eager && !s->enc_graph[slot]) encoder_capture(s, slot, err);
    if (s->enc_graph[slot]) {
        CU(cudaGraphLaunch(s->enc_graph[slot], s->stream), "launching the encoder");
        return 0;
    }
    return encoder_pass(s, slot, err);
}

static int encode_window(sh_gpu_state *s, const float *mel, int slot, char *err) {
    const sh_hparams *hp = &s->g->m->hp;
    spec_drop(s);
    if (slot < 0 || slot >= s->n_windows) return fail(err, SHRUTI_ERR_INVALID_ARG, "bad window slot");
    CU(cudaSetDevice(s->g->device), "selecting the CUDA device");
    CU(cudaMemcpyAsync(s->mel, mel, (size_t)hp->n_mels * 3000 * 4, cudaMemcpyHostToDevice,
                       s->stream), "copying the mel window");
    int r = encoder_launch(s, slot, err);
    if (r < 0) return r;
    CU(cudaGetLastError(), "running the encoder");
    /* errors of the encoder's kernels belong to this call */
    CU(cudaStreamSynchronize(s->stream), "running the encoder");
    return 0;
}

static int encode(sh_gpu_state *s, const float *mel, char *err) {
    return encode_window(s, mel, 0, err);
}

/* Room for n windows' cross keys and values (batched windows). */
static int reserve_windows(sh_gpu_state *s, int n, char *err) {
    if (n < 1 || n > MAX_BEAMS) return fail(err, SHRUTI_ERR_INVALID_ARG, "bad window count");
    spec_drop(s);
    if (n <= s->n_windows) return 0;
    if (fault_is("windows:") && n > atoi(getenv("SHRUTI_CUDA_FAULT") + 8))
        return fail(err, SHRUTI_ERR_NOMEM, "injected fault: out of memory for %d windows", n);
    const sh_hparams *hp = &s->g->m->hp;
    size_t bytes = (size_t)n * hp->n_text_layer * hp->n_audio_ctx * hp->n_text_state * act_size(s->g);
    CU(cudaSetDevice(s->g->device), "selecting the CUDA device");
    CU(cudaStreamSynchronize(s->stream), "waiting for the GPU");
    void *k = NULL, *v = NULL;
    cudaError_t e = cudaMalloc(&k, bytes);
    if (e == cudaSuccess) e = cudaMalloc(&v, bytes);
    if (e != cudaSuccess) {
        cudaFree(k), cudaFree(v);
        return cuda_fail(err, e, "allocating the windows' cross-attention keys");
    }
    cudaFree(s->cross_k), cudaFree(s->cross_v);   /* window 0 is encoded again by the caller */
    s->cross_k = k, s->cross_v = v, s->n_windows = n;
    drop_graphs(s);
    drop_encoder_graphs(s);
    return 0;
}

/* bound: decoder row b (beam b) attends to window b; else all to window 0. */
static int bind_windows(sh_gpu_state *s, int bound, char *err) {
    (void)err;
    spec_drop(s);
    if (s->bound != bound) drop_graphs(s);   /* the graphs hold the cross strides */
    s->bound = bound;
    return 0;
}

/* -------------------------------------------------------------- decoder */

static int reserve(sh_gpu_state *s, int n_beams, char *err) {
    if (n_beams < 1 || n_beams > MAX_BEAMS) return fail(err, SHRUTI_ERR_INVALID_ARG, "bad beam count");
    spec_drop(s);
    if (n_beams <= s->n_beams) return 0;
    const sh_hparams *hp = &s->g->m->hp;
    size_t bytes = (size_t)hp->n_text_layer * n_beams * hp->n_text_ctx * hp->n_text_state *
                   act_size(s->g);
    CU(cudaSetDevice(s->g->device), "selecting the CUDA device");
    CU(cudaStreamSynchronize(s->stream), "waiting for the GPU");
    void *k = NULL, *v = NULL, *t = NULL;
    cudaError_t e = cudaMalloc(&k, bytes);
    if (e == cudaSuccess) e = cudaMalloc(&v, bytes);
    if (e == cudaSuccess) e = cudaMalloc(&t, bytes);
    if (e != cudaSuccess) {
        cudaFree(k), cudaFree(v), cudaFree(t);
        return cuda_fail(err, e, "allocating the KV caches");
    }
    cudaFree(s->self_k), cudaFree(s->self_v), cudaFree(s->self_tmp);
    s->self_k = k, s->self_v = v, s->self_tmp = t;
    s->n_beams = n_beams;
    drop_graphs(s);   /* they hold the old cache addresses */
    return 0;
}

/* The decoder's layers over rows already embedded in dx, enqueued. */
static int decoder_layers(sh_gpu_state *s, int rows, int n_tokens, char *err) {
    const sh_gpu_model *g = s->g;
    const sh_hparams *hp = &g->m->hp;
    int d = hp->n_text_state, heads = hp->n_text_head, ctx = hp->n_text_ctx, ah = g->act_half, r;
    size_t layer = (size_t)s->n_beams * ctx * d * act_size(g);
    size_t cross = (size_t)hp->n_audio_ctx * d * act_size(g);
    const int *pos0 = s->io + IO_POS;
    /* one GEMV kernel per linear layer when the rows fit its shared memory:
     * layer norms and the cache stores ride along */
    int fused = rows <= SH_GEMV_MAX_ROWS && (size_t)rows * d * sizeof(float) <= 40 * 1024;
    for (int l = 0; l < hp->n_text_layer; l++) {
        const gblock *b = &g->dec[l];
        char *kc = (char *)s->self_k + l * layer, *vc = (char *)s->self_v + l * layer;
        /* x = x + attn(ln(x)), causal over this beam's cache */
        if (fused) {
            sh_kv_target kv = {kc, vc, pos0, n_tokens, ctx, d, ah};
            sh_k_gemv_ln(s->stream, &b->qkv, s->dx, d, rows, s->dqkv, 3 * d, b->qkv_b,
                         SH_GEMV_STORE, b->attn_ln_w, b->attn_ln_b, &kv, s->gemv);
        } else {
            sh_k_layer_norm(s->stream, s->dx, rows, d, b->attn_ln_w, b->attn_ln_b, s->dh, 0);
            if ((r = dec_linear(s, &b->qkv, s->dh, rows, s->dqkv, b->qkv_b, SH_GEMV_STORE, err)) < 0)
                return r;
            sh_k_kv_store(s->stream, s->dqkv, rows, n_tokens, d, pos0, ctx, kc, vc, ah);
        }
        sh_k_attention(s->stream, s->dqkv, 3 * d, kc, vc, d, heads, rows, 1, n_tokens, pos0, ctx,
                       (long)ctx * d, ah, s->partial, s->counters, s->da, s->pdl ? SH_K_PDL : 0, 0);
        if ((r = dec_linear(s, &b->o, s->da, rows, s->dx, b->o_b, SH_GEMV_ACCUM, err)) < 0) return r;
        /* x = x + cross_attn(ln(x), encoder output) */
        if (fused) {
            sh_k_gemv_ln(s->stream, &b->cq, s->dx, d, rows, s->dq, d, b->cq_b, SH_GEMV_STORE,
                         b->cross_ln_w, b->cross_ln_b, NULL, s->gemv);
        } else {
            sh_k_layer_norm(s->stream, s->dx, rows, d, b->cross_ln_w, b->cross_ln_b, s->dh, 0);
            if ((r = dec_linear(s, &b->cq, s->dh, rows, s->dq, b->cq_b, SH_GEMV_STORE, err)) < 0)
                return r;
        }
        sh_k_attention(s->stream, s->dq, d, (char *)s->cross_k + l * cross,
                       (char *)s->cross_v + l * cross, d, heads, rows, 0, n_tokens, pos0,
                       hp->n_audio_ctx, s->bound ? (long)hp->n_text_layer * hp->n_audio_ctx * d : 0,
                       ah, s->partial, s->counters, s->da, s->att, s->att_wave);
        if ((r = dec_linear(s, &b->co, s->da, rows, s->dx, b->co_b, SH_GEMV_ACCUM, err)) < 0)
            return r;
        /* x = x + mlp(ln(x)) */
        if (fused) {
            sh_k_gemv_ln(s->stream, &b->fc1, s->dx, d, rows, s->dm, 4 * d, b->fc1_b, SH_GEMV_GELU,
                         b->mlp_ln_w, b->mlp_ln_b, NULL, s->gemv);
        } else {
            sh_k_layer_norm(s->stream, s->dx, rows, d, b->mlp_ln_w, b->mlp_ln_b, s->dh, 0);
            if ((r = dec_linear(s, &b->fc1, s->dh, rows, s->dm, b->fc1_b, SH_GEMV_GELU, err)) < 0)
                return r;
        }
        if ((r = dec_linear(s, &b->fc2, s->dm, rows, s->dx, b->fc2_b, SH_GEMV_ACCUM, err)) < 0)
            return r;
    }
    /* x = ln(x) */
    sh_k_layer_norm(s->stream, s->dx, rows, d, g->dec_ln_w, g->dec_ln_b, s->dx, 0);
    return 0;
}

#define FUSED_MAX_LAYERS 64   /* Whisper's largest decoder has 32 */

/* Plans the fused step of `rows` rows once (its buffers) and points the
 * layer table at the current caches and cross keys; 0 when it can run,
 * -1 when not. */
static int fused_prepare(sh_gpu_state *s, int rows) {
    const sh_gpu_model *g = s->g;
    const sh_hparams *hp = &g->m->hp;
    fused_plan *p = &s->fused[rows - 1];
    if (p->state == 0) {
        p->state = -1;
        /* SHRUTI_CUDA_FUSED=0: never (the kernels' step); else wherever
         * it can run (H200, twelfth session: tiny's greedy step 0.147 ->
         * 0.130 ms, medium's 0.97 -> 0.73 ms since the fifth session) */
        /* no head-by-head copies: float32, or not Hopper (fused_may_run) */
        if (env_off("SHRUTI_CUDA_FUSED") || hp->n_text_layer > FUSED_MAX_LAYERS ||
            !g->dec[0].o_heads.w)
            return -1;
        sh_fused_step *f = &p->fs;
        memset(f, 0, sizeof *f);
        f->n_layer = hp->n_text_layer, f->d = hp->n_text_state, f->n_head = hp->n_text_head;
        f->rows = rows;
        f->kind = g->tok_emb.kind, f->tok_scales = g->tok_emb.scales;
        /* tiny's step ends with the final layer norm and row 0's logits
         * (its vocabulary rows stream through the ring after the last
         * layer: no kernel boundary, no separate GEMV launch). H200, 60 s
         * of audio, two rounds: tiny 42.3 / 41.5 -> 40.0 / 41.0 ms; but
         * medium 232.0 / 232.7 -> 232.9 / 234.8 and large 358.4 / 358.0 ->
         * 359.6 / 361.2 (a block's ~800 KB and more of rows stream slower
         * through its ring than the GEMV kernel reads them), base even. */
        f->mma_ffn = g->dec[0].fc1_swz.w != NULL;
        if (hp->n_text_state < 512 && rows == 1) {
            f->logits = s->logits;
            f->ln_g = g->dec_ln_w, f->ln_b = g->dec_ln_b;
        }
        f->n_ctx = hp->n_text_ctx, f->n_audio = hp->n_audio_ctx, f->n_vocab = hp->n_vocab;
        /* SHRUTI_CUDA_FUSED_GRID: fewer blocks than SMs (tests: the slice
         * sizes of a smaller part) */
        const char *grid = getenv("SHRUTI_CUDA_FUSED_GRID");
        f->grid = grid ? atoi(grid) : 0;
        if (sh_fused_plan(g->device, f) < 0) {
            cudaGetLastError();   /* a refused attribute must not fail the next step */
            return -1;
        }
        size_t words =
            (size_t)sh_fused_ll_words(f->n_layer, f->d, f->n_head, f->splits, rows) * 8;
        if (cudaMalloc(&p->words, words + 256) != cudaSuccess ||
            (!s->fused_layers &&
             cudaMalloc((void **)&s->fused_layers,
                        (size_t)f->n_layer * sizeof(sh_fused_layer)) != cudaSuccess) ||
            cudaMemset(p->words, 0, words) != cudaSuccess ||
            cudaMemset((char *)p->words + words, 1, 256) != cudaSuccess) {
            cudaGetLastError();
            return -1;
        }
        f->ll = p->words;
        f->epoch = (unsigned *)((char *)p->words + words);
        f->layers = s->fused_layers;
        f->tok_emb = g->tok_emb.w, f->pos_emb = g->dec_pos;
        f->token = s->io + IO_TOKENS, f->pos0 = s->io + IO_POS;
        f->x_out = s->dx;
        p->state = 1;
    }
    if (p->state < 0) return -1;
    int d = hp->n_text_state, L = hp->n_text_layer;
    /* rows' caches ctx positions apart; their windows' cross keys (bound:
     * batched windows), or one window for all (beams) */
    p->fs.cache_stride = (long)hp->n_text_ctx * d;
    p->fs.cross_stride = s->bound ? (long)L * hp->n_audio_ctx * d : 0;
    size_t layer = (size_t)s->n_beams * hp->n_text_ctx * d * 2;
    size_t cross = (size_t)hp->n_audio_ctx * d * 2;
    sh_fused_layer table[FUSED_MAX_LAYERS];
    for (int l = 0; l < L; l++) {
        const gblock *b = &g->dec[l];
        table[l] = (sh_fused_layer){
            .ln1_g = b->attn_ln_w, .ln1_b = b->attn_ln_b, .qkv_b = b->qkv_b, .o_b = b->o_b,
            .co_b = b->co_b, .ln3_g = b->mlp_ln_w, .ln3_b = b->mlp_ln_b, .fc1_b = b->fc1_b,
            .fc2_b = b->fc2_b, .qkv = b->qkv, .fc1 = b->fc1_swz.w ? b->fc1_swz : b->fc1,
            .fc2_blocks = b->fc2_blocks,
            .o_heads = b->o_heads, .co_heads = b->co_heads, .cq_g = b->cq_g,
            .cq_go_heads = b->cq_go_heads, .cq_e = b->cq_e, .cq_g1 = b->cq_g1, .cq_c = b->cq_c,
            .self_k = (char *)s->self_k + l * layer, .self_v = (char *)s->self_v + l * layer,
            .cross_k = (char *)s->cross_k + l * cross, .cross_v = (char *)s->cross_v + l * cross};
    }
    /* a graph dropped for new caches may still be reading the old table */
    if (cudaStreamSynchronize(s->stream) != cudaSuccess ||
        cudaMemcpy(s->fused_layers, table, (size_t)L * sizeof table[0], cudaMemcpyHostToDevice) !=
            cudaSuccess) {
        cudaGetLastError();
        p->state = -1;
        return -1;
    }
    return 0;
}

/* Whether a step of rows x n_tokens leaves dx its residual, the final
 * layer norm to the logits' GEMV (sh_k_gemv_wide): a fused step of one
 * row without the logits in it (H200, medium: a kernel less a step). */
static int step_leaves_raw(const sh_gpu_state *s, int rows, int n_tokens) {
    return rows == 1 && n_tokens == 1 && s->fused[0].state > 0 && !s->fused[0].fs.logits &&
           s->wide_grid > 0;
}

static int enqueue_step(sh_gpu_state *s, int rows, int n_tokens, char *err) {
    const sh_gpu_model *g = s->g;
    if (n_tokens == 1 && rows <= SH_FUSED_MAX_ROWS && s->fused[rows - 1].state > 0) {
        const sh_fused_step *f = &s->fused[rows - 1].fs;
        sh_k_fused_step(s->stream, f);
        /* else the step made the final layer norm and the logits, or the
         * logits' GEMV makes the norm */
        if (!f->logits && !step_leaves_raw(s, rows, n_tokens))
            sh_k_layer_norm(s->stream, s->dx, rows, g->m->hp.n_text_state, g->dec_ln_w,
                            g->dec_ln_b, s->dx, 0);
        return 0;
    }
    sh_k_embed(s->stream, &g->tok_emb, g->dec_pos, s->io + IO_TOKENS, s->io + IO_POS, rows,
               n_tokens, s->dx);
    return decoder_layers(s, rows, n_tokens, err);
}

/* Whether the one-row step is its fused kernel launched directly rather
 * than its graph of that one kernel, and the logits' kernel after it a
 * programmatic dependent of it: H200, medium, the gaps between the two
 * 3.2 -> 1.6 us and 2.1 -> 0.2 us a step (kernel timeline); 60 s 164.1 ->
 * 162.5 ms. (The step as a dependent of the pick too gained nothing: the
 * host's event between them.) The graph is still made first: it prepares
 * the fused plan, and it stays the way for every other row count. */
static int one_row_direct(const sh_gpu_state *s) {
    return s->step_direct && s->pdl && s->step[1] && s->fused[0].state > 0 && !s->fused[0].fs.logits &&
           s->wide_grid > 0;
}

/* The captured one-token step of rows (step[rows]) enqueued: its graph,
 * or for one row its fused kernel alone (one_row_direct). */
static int launch_captured(sh_gpu_state *s, int rows, char *err) {
    if (rows == 1 && one_row_direct(s)) {
        sh_k_fused_step(s->stream, &s->fused[0].fs);
        CU(cudaGetLastError(), "launching the decoder step");
        return 0;
    }
    CU(cudaGraphLaunch(s->step[rows], s->stream), "launching the decoder step");
    return 0;
}

/* The step speculated behind a one-row pick's kernel, as launch_captured
 * enqueues it; where that is the fused kernel alone, one that runs nothing
 * on the end of text, where decoding stops (a window's last step had run
 * for nothing: H200, medium int8_float16, ~0.5 ms a window). *stops: 1
 * then. */
static int launch_speculated(sh_gpu_state *s, int *stops, char *err) {
    *stops = one_row_direct(s);
    if (!*stops) return launch_captured(s, 1, err);
    sh_fused_step f = s->fused[0].fs;
    f.stops = 1, f.stop_token = s->g->m->sp.eot;
    sh_k_fused_step(s->stream, &f);
    CU(cudaGetLastError(), "launching the decoder step");
    return 0;
}

/* One-token steps replay a captured graph, one per row count (beams,
 * batched windows: over SH_GEMV_MAX_ROWS rows their GEMMs are cuBLAS's,
 * ~25 launches a layer that the graph launches at once): the steps
 * differ only in the tokens and position, which live in io. */
static int run_step_graph(sh_gpu_state *s, int rows, char *err) {
    while (!s->step[rows]) {
        /* a step cuBLAS would not let be captured runs launch by launch */
        if (s->eager[rows]) return enqueue_step(s, rows, 1, err);
        /* a fused step that cannot be captured falls back to the kernels */
        int fused = rows <= SH_FUSED_MAX_ROWS && fused_prepare(s, rows) == 0;
        cudaGraph_t graph;
        CU(cudaStreamBeginCapture(s->stream, cudaStreamCaptureModeThreadLocal), "capturing a graph");
        int r = enqueue_step(s, rows, 1, err);
        cudaError_t e = cudaStreamEndCapture(s->stream, &graph);
        if (r < 0 && rows <= SH_GEMV_MAX_ROWS) return r;
        if (r == 0 && e == cudaSuccess) {
            e = cudaGraphInstantiate(&s->step[rows], graph, 0);
            cudaGraphDestroy(graph);
        }
        if (r == 0 && e == cudaSuccess) break;
        s->step[rows] = NULL;
        cudaGetLastError();
        if (rows > SH_GEMV_MAX_ROWS) s->eager[rows] = 1;
        else if (!fused) return cuda_fail(err, e, "capturing the decoder step");
        else s->fused[rows - 1].state = -1;
    }
    return launch_captured(s, rows, err);
}

/* A window's prompt of n_tokens (one sequence: the start of transcript
 * and its language and task tokens, 2..SH_GEMV_MAX_ROWS) replays a graph
 * captured at its first use, as one-token steps do: launched one by one,
 * its ~8 kernels a layer had cost the host's launch time each (H200,
 * medium, the prompt and the step after it 1.604 -> 1.542 ms). A prompt
 * that cannot be captured runs launch by launch from then on. */
static int run_prompt_graph(sh_gpu_state *s, int n_tokens, char *err) {
    cudaGraphExec_t *exec = &s->prompt[n_tokens];
    if (!*exec && !s->prompt_eager[n_tokens]) {
        cudaGraph_t graph = NULL;
        CU(cudaStreamBeginCapture(s->stream, cudaStreamCaptureModeThreadLocal), "capturing a graph");
        int r = enqueue_step(s, n_tokens, n_tokens, err);
        cudaError_t e = cudaStreamEndCapture(s->stream, &graph);
        if (r == 0 && e == cudaSuccess) e = cudaGraphInstantiate(exec, graph, 0);
        if (graph) cudaGraphDestroy(graph);
        if (r < 0) return r;
        if (e != cudaSuccess) {
            *exec = NULL;
            cudaGetLastError();
            s->prompt_eager[n_tokens] = 1;
        }
    }
    if (!*exec) return enqueue_step(s, n_tokens, n_tokens, err);
    CU(cudaGraphLaunch(*exec, s->stream), "launching the prompt");
    return 0;
}

/* Whether a step of rows x n_tokens leaves row 0's logits made. */
static int step_fuses_logits(const sh_gpu_state *s, int rows, int n_tokens) {
    return rows == 1 && n_tokens == 1 && s->fused[0].state > 0 && s->fused[0].fs.logits;
}

/* The step whose input host_io holds, enqueued. */
static int launch_step(sh_gpu_state *s, int rows, int n_tokens, char *err) {
    CU(cudaMemcpyAsync(s->io, s->host_io, (size_t)(IO_TOKENS + rows) * sizeof(int),
                       cudaMemcpyHostToDevice, s->stream), "copying tokens");
    s->logits_fused = s->dx_raw = 0;
    int r = n_tokens == 1 && rows <= MAX_BEAMS ? run_step_graph(s, rows, err)
            : rows == n_tokens && rows <= SH_GEMV_MAX_ROWS ? run_prompt_graph(s, n_tokens, err)
                                                           : enqueue_step(s, rows, n_tokens, err);
    if (r < 0) return r;
    s->logits_fused = step_fuses_logits(s, rows, n_tokens);
    s->dx_raw = step_leaves_raw(s, rows, n_tokens);
    CU(cudaGetLastError(), "running the decoder");
    return 0;
}

static int forward(sh_gpu_state *s, const int *tokens, int n_beams, int n_tokens, int pos0,
                   char *err) {
    const sh_hparams *hp = &s->g->m->hp;
    int rows = n_beams * n_tokens;
    if (n_beams < 1 || n_beams > s->n_beams || n_tokens < 1 || rows > s->max_rows || rows > 512 ||
        pos0 < 0 || pos0 + n_tokens > hp->n_text_ctx)
        return fail(err, SHRUTI_ERR_INVALID_ARG, "bad decoder step");
    for (int r = 0; r < rows; r++)
        if (tokens[r] < 0 || tokens[r] >= hp->n_vocab)
            return fail(err, SHRUTI_ERR_INVALID_ARG, "token %d out of range", tokens[r]);
    if (s->fail_at && ++s->n_forward == s->fail_at)
        return fail(err, SHRUTI_ERR_DEVICE, "injected fault: a failed kernel");
    CU(cudaSetDevice(s->g->device), "selecting the CUDA device");
    if (s->spec_live && rows == 1 && pos0 == s->spec_pos && tokens[0] == s->spec_token) {
        /* speculated: enqueued behind the pick, which wrote its input to
         * io; host_io's last copy ended before the pick */
        s->spec_live = s->stale = 0;
        s->n_speculated++;
        s->host_io[IO_POS] = pos0, s->host_io[IO_TOKENS] = tokens[0];
        s->last_rows = s->last_tokens = 1;
        s->logits_fused = step_fuses_logits(s, 1, 1);
        s->dx_raw = step_leaves_raw(s, 1, 1);
        return 0;
    }
    spec_drop(s);
    s->stale = 0;
    /* the previous step's copy of io must be done before io is rewritten */
    CU(cudaStreamSynchronize(s->stream), "running the decoder");
    s->host_io[IO_POS] = pos0;
    memcpy(s->host_io + IO_TOKENS, tokens, (size_t)rows * sizeof(int));
    s->last_rows = rows, s->last_tokens = n_tokens;
    return launch_step(s, rows, n_tokens, err);
}

/* A read of the last forward's outputs (logits, choices): when a
 * speculated step has overwritten them, that forward runs again (its input
 * is still in host_io; the positions it writes hold what they held). */
static int settle(sh_gpu_state *s, char *err) {
    spec_drop(s);
    if (!s->stale) return 0;
    s->stale = 0;
    CU(cudaSetDevice(s->g->device), "selecting the CUDA device");
    return launch_step(s, s->last_rows, s->last_tokens, err);
}

/* A greedy pick to fold into a logits pass of one row. */
typedef struct {
    const sh_pick_mask *mask;
    sh_pick_result *out;
    int *next_io;
    int next_pos;
} pass_pick;

/* Logits of up to SH_GEMV_MAX_ROWS rows from row, into s->logits; with
 * pick, the greedy choice too where the logits' persistent GEMV can make
 * it: 1 when it does. */
static int logits_pass(sh_gpu_state *s, int row, int n, const pass_pick *pick) {
    if (s->logits_fused && row == 0 && n == 1) return 0;   /* the fused step made them */
    s->logits_fused = 0;
    const sh_gpu_model *g = s->g;
    int d = g->m->hp.n_text_state;
    if (s->dx_raw && (row != 0 || n != 1)) {   /* row 0 alone is stepped: never so */
        sh_k_layer_norm(s->stream, s->dx, 1, d, g->dec_ln_w, g->dec_ln_b, s->dx, 0);
        s->dx_raw = 0;
    }
    /* a programmatic dependent only of a fused step launched directly
     * (one_row_direct), not of the step's graph */
    if (n == 1 && s->wide_grid > 0) {
        const float *x = s->dx + (size_t)row * d, *ln_g = s->dx_raw ? g->dec_ln_w : NULL,
                    *ln_b = s->dx_raw ? g->dec_ln_b : NULL;
        if (pick && s->screen_grid > 0) {
            sh_k_screen_pick(s->stream, &g->tok_emb, &g->screen, g->screen_bounds, x, ln_g, ln_b,
                             s->screen_grid, pick->mask, s->pick_banned,
                             s->wide_pick_scratch, pick->out, pick->next_io, pick->next_pos,
                             one_row_direct(s));
            s->n_screened++;
            return 1;
        }
        if (pick && s->wide_pick_grid > 0) {
            sh_k_gemv_wide_pick(s->stream, &g->tok_emb, x, s->logits, ln_g, ln_b,
                                s->wide_pick_grid, pick->mask, s->pick_banned, s->wide_pick_scratch,
                                pick->out, pick->next_io, pick->next_pos, one_row_direct(s));
            return 1;
        }
        sh_k_gemv_wide(s->stream, &g->tok_emb, x, s->logits, ln_g, ln_b, s->wide_grid, 0);
        return 0;
    }
    sh_k_gemv(s->stream, &g->tok_emb, s->dx + (size_t)row * d, d, n, s->logits, g->m->hp.n_vocab,
              NULL, SH_GEMV_STORE, s->gemv & ~SH_K_PDL);
    return 0;
}

static int logits(sh_gpu_state *s, int row0, int n_rows, float *out, char *err) {
    const sh_gpu_model *g = s->g;
    int n_vocab = g->m->hp.n_vocab;
    if (row0 < 0 || n_rows < 1 || row0 + n_rows > s->max_rows)
        return fail(err, SHRUTI_ERR_INVALID_ARG, "bad logit rows");
    CU(cudaSetDevice(g->device), "selecting the CUDA device");
    int r = settle(s, err);
    if (r < 0) return r;
    /* logits = x @ token_embedding^T, at most SH_GEMV_MAX_ROWS rows a pass */
    for (int r0 = 0; r0 < n_rows; r0 += SH_GEMV_MAX_ROWS) {
        int n = n_rows - r0 < SH_GEMV_MAX_ROWS ? n_rows - r0 : SH_GEMV_MAX_ROWS;
        logits_pass(s, row0 + r0, n, NULL);
        size_t bytes = (size_t)n * n_vocab * sizeof(float);
        CU(cudaMemcpyAsync(s->host_logits, s->logits, bytes, cudaMemcpyDeviceToHost, s->stream),
           "copying logits");
        CU(cudaStreamSynchronize(s->stream), "computing logits");
        memcpy(out + (size_t)r0 * n_vocab, s->host_logits, bytes);
    }
    return 0;
}

/* The rows' masks to the device (through the pinned buffer) and the
 * suppressed ids when they changed (they change per window at most). */
static int send_masks(sh_gpu_state *s, int row0, int n_rows, const sh_logit_mask *masks,
                      char *err) {
    int n_vocab = s->g->m->hp.n_vocab;
    if (row0 < 0 || n_rows < 1 || n_rows > MAX_BEAMS || row0 + n_rows > s->max_rows)
        return fail(err, SHRUTI_ERR_INVALID_ARG, "bad rows to choose from");
    const sh_logit_mask *m0 = &masks[0];
    if (m0->n_ids < 0 || m0->n_ids > n_vocab)
        return fail(err, SHRUTI_ERR_INVALID_ARG, "bad logit mask");
    for (int i = 0; i < m0->n_ids; i++)
        if (m0->ids[i] < 0 || m0->ids[i] >= n_vocab)
            return fail(err, SHRUTI_ERR_INVALID_ARG, "token %d out of range", m0->ids[i]);
    sh_pick_mask *pm = s->host_masks;
    for (int k = 0; k < n_rows; k++) {
        const sh_logit_mask *mk = &masks[k];
        if (mk->n_ranges < 0 || mk->n_ranges > SH_MASK_RANGES || mk->ts_begin > n_vocab)
            return fail(err, SHRUTI_ERR_INVALID_ARG, "bad logit mask");
        pm[k] = (sh_pick_mask){.n_ranges = mk->n_ranges, .ts_begin = mk->ts_begin};
        memcpy(pm[k].ranges, mk->ranges, sizeof pm[k].ranges);
    }
    CU(cudaSetDevice(s->g->device), "selecting the CUDA device");
    size_t id_bytes = (size_t)m0->n_ids * sizeof(int32_t);   /* ids may be NULL when 0 */
    if (m0->n_ids != s->n_pick_ids ||
        (id_bytes && memcmp(m0->ids, s->pick_ids_host, id_bytes) != 0)) {
        /* the kernels read the suppressed tokens as a bitmap, made here
         * when they change (once a transcription, as a rule) */
        if (id_bytes) memcpy(s->pick_ids_host, m0->ids, id_bytes);
        s->n_pick_ids = -1;
        size_t words = BANNED_WORDS(n_vocab);
        memset(s->banned_host, 0, words * sizeof(unsigned));
        for (int i = 0; i < m0->n_ids; i++) s->banned_host[m0->ids[i] / 32] |= 1u << (m0->ids[i] % 32);
        CU(cudaMemcpyAsync(s->pick_banned, s->banned_host, words * sizeof(unsigned),
                           cudaMemcpyHostToDevice, s->stream), "copying the suppressed tokens");
        s->n_pick_ids = m0->n_ids;
    }
    return 0;
}

/* Where the step after a greedy pick of rows row0 .. may be speculated
 * (its position), or -1: one row, the last of a one-sequence forward, the
 * one-row step's graph already made, room left in the text context. The
 * greedy decoder feeds the token it was given back next, all but once a
 * window (at its end), so the step is rarely for nothing. */
static int speculation_pos(const sh_gpu_state *s, int row0, int n_rows) {
    int next = s->host_io[IO_POS] + s->last_tokens;
    int one_sequence = s->last_rows == s->last_tokens;
    if (!s->speculate || n_rows != 1 || !one_sequence || row0 != s->last_rows - 1 || !s->step[1] ||
        next >= s->g->m->hp.n_text_ctx)
        return -1;
    return next;
}

/* A step of token at pos now runs ahead of the host, over the last
 * forward's outputs (see greedy). */
static void spec_begun(sh_gpu_state *s, int token, int pos) {
    s->spec_live = s->stale = 1;
    s->spec_token = token, s->spec_pos = pos;
}

/* Whether the one-row pick of row0 can be the beginning of the step
 * speculated after it (sh_step_pick): the screen's pick, the fused step
 * launched directly, a lane of its warps a vocabulary row. */
static int step_may_pick(const sh_gpu_state *s, int row0) {
    return s->pick_in_step && s->screen_grid > 0 && one_row_direct(s) && (!s->dx_raw || row0 == 0) &&
           sh_fused_can_pick(&s->fused[0].fs);
}

/* greedy's one-row choice made by the speculated step itself, at its
 * start: one kernel for the pick and the step after it, where the pick's
 * own kernel, its launch and its last block's merge stood between the
 * steps (H200, medium: a greedy step 0.499 -> 0.488 ms). The choice lands in
 * mapped host memory while the step runs on: the host polls it, and the
 * step's end (or its failure) ends the wait too. A choice of the end of
 * text ends the step there: decoding stops at it, and a window's last step
 * had run for nothing (H200, medium: ~0.45 ms a window). */
static int greedy_in_step(sh_gpu_state *s, int row0, int next_pos, int *token, double *logprob,
                          char *err) {
    const sh_gpu_model *g = s->g;
    const int d = g->m->hp.n_text_state;
    sh_fused_step f = s->fused[0].fs;
    f.pick = (sh_step_pick){.q = g->screen.w, .qs = g->screen.scales, .bounds = g->screen_bounds,
                            .x = s->dx + (size_t)row0 * d,
                            .ln_g = s->dx_raw ? g->dec_ln_w : NULL,
                            .ln_b = s->dx_raw ? g->dec_ln_b : NULL, .banned = s->pick_banned,
                            .mask = s->host_masks[0], .result = s->pick, .next_io = s->io,
                            .next_pos = next_pos, .stops = 1, .stop_token = g->m->sp.eot};
    volatile sh_pick_result *host = s->host_pick;
    host->token = -1;
    sh_k_fused_step(s->stream, &f);
    CU(cudaGetLastError(), "launching the decoder step");
    CU(cudaEventRecord(s->picked, s->stream), "choosing the next token");
    while (host->token < 0) {
        cudaError_t e = cudaEventQuery(s->picked);
        if (e == cudaSuccess && host->token < 0)
            return fail(err, SHRUTI_ERR_DEVICE, "the decoder step made no choice");
        if (e != cudaSuccess && e != cudaErrorNotReady) CU(e, "choosing the next token");
    }
    *token = host->token, *logprob = host->logprob;
    s->n_screened++, s->n_step_picks++;
    /* the end of text stopped the step at its choice: nothing ran ahead */
    if (*token != f.pick.stop_token) spec_begun(s, *token, next_pos);
    return 0;
}

/* Greedy choices on the device: logits of the rows, the masks, argmax and
 * log-softmax there; 16 bytes a row come back instead of the logits. */
static int greedy(sh_gpu_state *s, int row0, int n_rows, const sh_logit_mask *masks,
                  int *tokens, double *logprobs, char *err) {
    int n_vocab = s->g->m->hp.n_vocab, r = settle(s, err);
    if (r == 0) r = send_masks(s, row0, n_rows, masks, err);
    if (r < 0) return r;
    int next_pos = speculation_pos(s, row0, n_rows);
    if (next_pos >= 0 && step_may_pick(s, row0))
        return greedy_in_step(s, row0, next_pos, tokens, logprobs, err);
    for (int r0 = 0; r0 < n_rows; r0 += SH_GEMV_MAX_ROWS) {
        int n = n_rows - r0 < SH_GEMV_MAX_ROWS ? n_rows - r0 : SH_GEMV_MAX_ROWS;
        pass_pick pick = {s->host_masks + r0, s->pick + r0, next_pos >= 0 ? s->io : NULL, next_pos};
        if (!logits_pass(s, row0 + r0, n, n == 1 ? &pick : NULL))
            sh_k_greedy_pick(s->stream, s->logits, n, n_vocab, pick.mask, s->pick_banned,
                             s->pick_scratch, pick.out, pick.next_io, next_pos, s->pdl);
    }
    /* the choices land in mapped host memory */
    const sh_pick_result *host = s->host_pick;
    if (next_pos >= 0) {
        int stops;
        CU(cudaEventRecord(s->picked, s->stream), "choosing the next token");
        if ((r = launch_speculated(s, &stops, err)) < 0) return r;
        CU(cudaEventSynchronize(s->picked), "choosing the next token");
        /* the end of text stopped the step ahead: nothing ran on it */
        if (!stops || host[0].token != s->g->m->sp.eot) spec_begun(s, host[0].token, next_pos);
    } else {
        CU(cudaStreamSynchronize(s->stream), "choosing the next tokens");
    }
    for (int k = 0; k < n_rows; k++) tokens[k] = host[k].token, logprobs[k] = host[k].logprob;
    return 0;
}

/* Beam search's k best tokens per row on the device: k tokens and
 * log-probabilities a row come back instead of the logits. */
static int topk(sh_gpu_state *s, int row0, int n_rows, const sh_logit_mask *masks, int k,
                int *tokens, double *logprobs, char *err) {
    int n_vocab = s->g->m->hp.n_vocab;
    if (k < 1 || k > SH_GPU_TOP_MAX) return fail(err, SHRUTI_ERR_INVALID_ARG, "bad k");
    int r = settle(s, err);
    if (r == 0) r = send_masks(s, row0, n_rows, masks, err);
    if (r < 0) return r;
    for (int r0 = 0; r0 < n_rows; r0 += SH_GEMV_MAX_ROWS) {
        int n = n_rows - r0 < SH_GEMV_MAX_ROWS ? n_rows - r0 : SH_GEMV_MAX_ROWS;
        logits_pass(s, row0 + r0, n, NULL);
        sh_k_topk(s->stream, s->logits, n, n_vocab, s->host_masks + r0, s->pick_banned, k,
                  s->topk_scratch, s->topk_tokens + (size_t)r0 * k,
                  s->topk_logprobs + (size_t)r0 * k, s->pdl);
    }
    size_t n_out = (size_t)n_rows * k;
    /* the candidates land in mapped host memory */
    CU(cudaStreamSynchronize(s->stream), "choosing the beam candidates");
    memcpy(tokens, s->host_topk_tokens, n_out * sizeof *tokens);
    memcpy(logprobs, s->host_topk_logprobs, n_out * sizeof *logprobs);
    return 0;
}

static int move_caches(sh_gpu_state *s, const int *src, int n_beams, int n_pos, char *err) {
    const sh_hparams *hp = &s->g->m->hp;
    if (n_beams < 1 || n_beams > s->n_beams || n_pos < 0 || n_pos > hp->n_text_ctx)
        return fail(err, SHRUTI_ERR_INVALID_ARG, "bad cache move");
    spec_drop(s);
    if (n_pos == 0) return 0;
    CU(cudaSetDevice(s->g->device), "selecting the CUDA device");
    void *caches[2] = {s->self_k, s->self_v};
    if (src) {
        CU(cudaStreamSynchronize(s->stream), "running the decoder");
        memcpy(s->host_io + IO_SRC, src, (size_t)n_beams * sizeof(int));
        CU(cudaMemcpyAsync(s->io + IO_SRC, s->host_io + IO_SRC, (size_t)n_beams * sizeof(int),
                           cudaMemcpyHostToDevice, s->stream), "copying beam sources");
    }
    for (int c = 0; c < 2; c++) {
        if (src)
            sh_k_reorder(s->stream, caches[c], s->self_tmp, s->io + IO_SRC, hp->n_text_layer,
                         n_beams, s->n_beams, hp->n_text_ctx, hp->n_text_state, n_pos,
                         s->g->act_half);
        else
            sh_k_broadcast(s->stream, caches[c], hp->n_text_layer, n_beams, s->n_beams,
                           hp->n_text_ctx, hp->n_text_state, n_pos, s->g->act_half);
    }
    CU(cudaGetLastError(), "moving the KV caches");
    return 0;
}

static int reorder(sh_gpu_state *s, const int *src, int n_beams, int n_pos, char *err) {
    int identity = 1;
    for (int b = 0; b < n_beams; b++) identity &= src[b] == b;
    return identity ? 0 : move_caches(s, src, n_beams, n_pos, err);
}

static int broadcast(sh_gpu_state *s, int n_beams, int n_pos, char *err) {
    return n_beams < 2 ? 0 : move_caches(s, NULL, n_beams, n_pos, err);
}

static void speculated(const sh_gpu_state *s, long *taken, long *wasted) {
    *taken = s->n_speculated, *wasted = s->n_wasted + s->spec_live;
}

static long screened(const sh_gpu_state *s) { return s->n_screened; }

static long step_picks(const sh_gpu_state *s) { return s->n_step_picks; }

/* ------------------------------------------------------ devices, probe */

static int list_devices(sh_gpu_device *out, int max, char *versions, size_t size, char *err) {
    int rt = 0, drv = 0, n = 0;
    cudaRuntimeGetVersion(&rt);
    cudaDriverGetVersion(&drv);
    if (versions)
        snprintf(versions, size, "CUDA runtime %d.%d, driver supports %d.%d", rt / 1000,
                 rt % 1000 / 10, drv / 1000, drv % 1000 / 10);
    CU(cudaGetDeviceCount(&n), "counting CUDA devices");
    for (int i = 0; i < n && i < max; i++) {
        struct cudaDeviceProp p;
        CU(cudaGetDeviceProperties(&p, i), "reading device properties");
        memset(&out[i], 0, sizeof out[i]);
        out[i].index = i;
        snprintf(out[i].name, sizeof out[i].name, "%.127s", p.name);
        out[i].cc_major = p.major, out[i].cc_minor = p.minor;
        out[i].total_bytes = p.totalGlobalMem;
        size_t fr = 0, tot = 0;
        if (cudaSetDevice(i) == cudaSuccess && cudaMemGetInfo(&fr, &tot) == cudaSuccess)
            out[i].free_bytes = fr;
    }
    return n;
}

static int probe(int device, char *err) {
    int n = 0;
    CU(cudaGetDeviceCount(&n), "counting CUDA devices");
    if (device < 0 || device >= n)
        return fail(err, SHRUTI_ERR_INVALID_ARG, "CUDA device %d does not exist (%d seen)", device, n);
    CU(cudaSetDevice(device), "selecting the CUDA device");
    int *d_out = NULL, host[256];
    CU(cudaMalloc((void **)&d_out, sizeof host), "allocating on the GPU");
    sh_k_probe(0, d_out, 256);
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess) e = cudaMemcpy(host, d_out, sizeof host, cudaMemcpyDeviceToHost);
    cudaFree(d_out);
    if (e != cudaSuccess) return cuda_fail(err, e, "launching a test kernel");
    for (int i = 0; i < 256; i++)
        if (host[i] != i * 3 + 1) return fail(err, SHRUTI_ERR_DEVICE, "the test kernel computed wrong values");
    /* C = A B for 16x16 A = 2 I: C must be 2 B */
    cublasHandle_t h;
    cublasStatus_t bs = cublasCreate(&h);
    if (bs != CUBLAS_STATUS_SUCCESS) return blas_fail(err, bs, "creating a cuBLAS handle");
    float a[256] = {0}, b[256], c[256];
    for (int i = 0; i < 256; i++) b[i] = (float)(i % 7), a[i] = i % 17 == 0 ? 2.0f : 0.0f;
    float *da = NULL, *db = NULL, *dc = NULL, one = 1.0f, zero = 0.0f;
    e = cudaMalloc((void **)&da, sizeof a);
    if (e == cudaSuccess) e = cudaMalloc((void **)&db, sizeof b);
    if (e == cudaSuccess) e = cudaMalloc((void **)&dc, sizeof c);
    if (e == cudaSuccess) e = cudaMemcpy(da, a, sizeof a, cudaMemcpyHostToDevice);
    if (e == cudaSuccess) e = cudaMemcpy(db, b, sizeof b, cudaMemcpyHostToDevice);
    if (e == cudaSuccess)
        bs = cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 16, 16, 16, &one, da, 16, db, 16, &zero, dc, 16);
    if (e == cudaSuccess && bs == CUBLAS_STATUS_SUCCESS)
        e = cudaMemcpy(c, dc, sizeof c, cudaMemcpyDeviceToHost);
    cudaFree(da), cudaFree(db), cudaFree(dc);
    cublasDestroy(h);
    if (e != cudaSuccess) return cuda_fail(err, e, "running a test GEMM");
    if (bs != CUBLAS_STATUS_SUCCESS) return blas_fail(err, bs, "running a test GEMM");
    for (int i = 0; i < 256; i++)
        if (c[i] != 2.0f * b[i]) return fail(err, SHRUTI_ERR_DEVICE, "the test GEMM computed wrong values");
    return 0;
}

/* ------------------------------------------------------------ the table */

static const sh_gpu_api api = {
    .abi_version = SH_GPU_ABI_VERSION,
    .name = "cuda",
    .list_devices = list_devices,
    .probe = probe,
    .model_bytes = model_bytes,
    .state_bytes = state_bytes,
    .model_upload = model_upload,
    .model_free = model_free,
    .state_new = state_new,
    .state_free = state_free,
    .encode = encode,
    .encode_window = encode_window,
    .reserve_windows = reserve_windows,
    .bind_windows = bind_windows,
    .reserve = reserve,
    .forward = forward,
    .logits = logits,
    .greedy = greedy,
    .topk = topk,
    .reorder = reorder,
    .broadcast = broadcast,
    .speculated = speculated,
    .screened = screened,
    .step_picks = step_picks,
};

__attribute__((visibility("default"))) const sh_gpu_api *shruti_gpu_backend_v2(void) { return &api; }
