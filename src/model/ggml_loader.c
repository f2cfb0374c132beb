/* ggml_loader.c - reads whisper.cpp ggml model files.
 *
 * The file is mapped read-only and parsed through a bounds-checked cursor:
 * every count, size, name and shape is validated before use, so a truncated
 * or corrupted file is an error, never an out-of-bounds read. The mapping
 * stays with the model: a tensor already in the kind it is used in (half
 * or q8_0 matrices of a file of that type, aligned float32) is read where
 * it lies, so the weights are in memory once (the page cache) and load
 * time is the parse; only tensors that must change kind are converted,
 * into one aligned arena owned by the model. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/error.h"
#include "common/grow.h"
#include "common/f16.h"
#include "model/model.h"
#include "gpu/gpu_loader.h"
#include "model/quant.h"
#include "cpu/gemm_i8.h"
#include "cpu/logit_screen.h"

#define GGML_MAGIC 0x67676d6cu
#define GGML_TYPE_F32 0
#define GGML_TYPE_F16 1

/* ----------------------------------------------------------------- cursor */

typedef struct {
    const uint8_t *data;
    size_t size, pos;
} cursor;

static int take(cursor *c, void *out, size_t n) {
    if (n > c->size - c->pos) return -1;
    memcpy(out, c->data + c->pos, n);
    c->pos += n;
    return 0;
}

static int take_i32(cursor *c, int32_t *v) { return take(c, v, sizeof *v); }

static const uint8_t *skip(cursor *c, size_t n) {
    if (n > c->size - c->pos) return NULL;
    const uint8_t *p = c->data + c->pos;
    c->pos += n;
    return p;
}

/* ------------------------------------------------------------ tensor table */

/* Every tensor the model must have: where its float32 copy goes and the
 * shape it must have, in PyTorch order (outermost first). */
typedef struct {
    char name[64];
    const float **dst;           /* a float32 vector, or */
    sh_mat *mat;                 /* a matrix: */
    int keep_f16;                /* 0 encoder (float32), 1 decoder (compute type),
                                    2 cross-attention keys / values (see spec_kind) */
    int n_dims;
    int64_t shape[3];
    int found;
    /* where the file has it (first pass) */
    int type;
    const uint8_t *data;
    size_t bytes;                /* of data */
    int64_t row_len, n;
} tensor_spec;

typedef struct {
    tensor_spec *v;
    int n, cap;
} spec_list;

static int spec_add_any(spec_list *l, const char *name, const float **dst, sh_mat *mat,
                        int keep_f16, int n_dims, int64_t a, int64_t b, int64_t c3) {
    if (sh_grow((void **)&l->v, &l->cap, l->n + 1, sizeof *l->v, 64) < 0) return -1;
    tensor_spec *s = &l->v[l->n++];
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", name);
    s->dst = dst;
    s->mat = mat;
    s->keep_f16 = keep_f16;
    s->n_dims = n_dims;
    s->shape[0] = a;
    s->shape[1] = b;
    s->shape[2] = c3;
    return 0;
}

static int spec_add(spec_list *l, const char *name, const float **dst, int n_dims, int64_t a,
                    int64_t b, int64_t c3) {
    return spec_add_any(l, name, dst, NULL, 0, n_dims, a, b, c3);
}

/* Decoder matrices keep the compute type's kind (read every step); the
 * encoder's follow parse's choice (encoder_kind). */
static int spec_add_mat(spec_list *l, const char *name, sh_mat *mat, int keep_f16, int64_t a,
                        int64_t b) {
    return spec_add_any(l, name, NULL, mat, keep_f16, 2, a, b, 0);
}

static int add_block_specs(spec_list *l, sh_block *blk, const char *prefix, int d, int cross) {
    char nm[64];
    int r = 0;
#define ADD(suffix, field, nd, a, b)                                   \
    snprintf(nm, sizeof nm, "%s.%s", prefix, suffix);                  \
    r |= spec_add(l, nm, &blk->field, nd, a, b, 0);
#define MAT(suffix, field, a, b)                                       \
    snprintf(nm, sizeof nm, "%s.%s", prefix, suffix);                  \
    r |= spec_add_mat(l, nm, &blk->field, cross, a, b);
    ADD("attn_ln.weight", attn_ln_w, 1, d, 0);
    ADD("attn_ln.bias", attn_ln_b, 1, d, 0);
    MAT("attn.query.weight", q_w, d, d);
    ADD("attn.query.bias", q_b, 1, d, 0);
    MAT("attn.key.weight", k_w, d, d);
    MAT("attn.value.weight", v_w, d, d);
    ADD("attn.value.bias", v_b, 1, d, 0);
    MAT("attn.out.weight", o_w, d, d);
    ADD("attn.out.bias", o_b, 1, d, 0);
    if (cross) {
        ADD("cross_attn_ln.weight", cross_ln_w, 1, d, 0);
        ADD("cross_attn_ln.bias", cross_ln_b, 1, d, 0);
        MAT("cross_attn.query.weight", cq_w, d, d);
        ADD("cross_attn.query.bias", cq_b, 1, d, 0);
        snprintf(nm, sizeof nm, "%s.cross_attn.key.weight", prefix);
        r |= spec_add_mat(l, nm, &blk->ck_w, 2, d, d);
        snprintf(nm, sizeof nm, "%s.cross_attn.value.weight", prefix);
        r |= spec_add_mat(l, nm, &blk->cv_w, 2, d, d);
        ADD("cross_attn.value.bias", cv_b, 1, d, 0);
        MAT("cross_attn.out.weight", co_w, d, d);
        ADD("cross_attn.out.bias", co_b, 1, d, 0);
    }
    ADD("mlp_ln.weight", mlp_ln_w, 1, d, 0);
    ADD("mlp_ln.bias", mlp_ln_b, 1, d, 0);
    MAT("mlp.0.weight", fc1_w, 4 * d, d);
    ADD("mlp.0.bias", fc1_b, 1, 4 * d, 0);
    MAT("mlp.2.weight", fc2_w, d, 4 * d);
    ADD("mlp.2.bias", fc2_b, 1, d, 0);
#undef ADD
#undef MAT
    return r;
}

static int build_specs(spec_list *l, shruti_model *m) {
    const sh_hparams *hp = &m->hp;
    sh_weights *w = &m->w;
    int da = hp->n_audio_state, dt = hp->n_text_state, r = 0;
    char prefix[48];
    /* Conv biases are stored as (d, 1) by whisper.cpp's converter. */
    r |= spec_add(l, "encoder.conv1.weight", &w->conv1_w, 3, da, hp->n_mels, 3);
    r |= spec_add(l, "encoder.conv1.bias", &w->conv1_b, 2, da, 1, 0);
    r |= spec_add(l, "encoder.conv2.weight", &w->conv2_w, 3, da, da, 3);
    r |= spec_add(l, "encoder.conv2.bias", &w->conv2_b, 2, da, 1, 0);
    r |= spec_add(l, "encoder.positional_embedding", &w->enc_pos, 2, hp->n_audio_ctx, da, 0);
    for (int i = 0; i < hp->n_audio_layer; i++) {
        snprintf(prefix, sizeof prefix, "encoder.blocks.%d", i);
        r |= add_block_specs(l, &w->enc[i], prefix, da, 0);
    }
    r |= spec_add(l, "encoder.ln_post.weight", &w->enc_ln_w, 1, da, 0, 0);
    r |= spec_add(l, "encoder.ln_post.bias", &w->enc_ln_b, 1, da, 0, 0);
    r |= spec_add_mat(l, "decoder.token_embedding.weight", &w->tok_emb, 1, hp->n_vocab, dt);
    r |= spec_add(l, "decoder.positional_embedding", &w->dec_pos, 2, hp->n_text_ctx, dt, 0);
    for (int i = 0; i < hp->n_text_layer; i++) {
        snprintf(prefix, sizeof prefix, "decoder.blocks.%d", i);
        r |= add_block_specs(l, &w->dec[i], prefix, dt, 1);
    }
    r |= spec_add(l, "decoder.ln.weight", &w->dec_ln_w, 1, dt, 0, 0);
    r |= spec_add(l, "decoder.ln.bias", &w->dec_ln_b, 1, dt, 0, 0);
    return r;
}

static tensor_spec *spec_find(spec_list *l, const char *name, size_t len) {
    for (int i = 0; i < l->n; i++)
        if (strlen(l->v[i].name) == len && memcmp(l->v[i].name, name, len) == 0)
            return &l->v[i];
    return NULL;
}

static int64_t spec_elements(const tensor_spec *s) {
    int64_t n = 1;
    for (int i = 0; i < s->n_dims; i++) n *= s->shape[i];
    return n;
}

/* ------------------------------------------------------------------ parse */

static int check_hparams(const sh_hparams *hp, shruti_error *err) {
    if (hp->n_vocab != 51864 && hp->n_vocab != 51865 && hp->n_vocab != 51866)
        return sh_error(err, SHRUTI_ERR_MODEL,
                        "n_vocab %d is not a Whisper vocabulary (51864, 51865 or 51866)",
                        hp->n_vocab);
    if (hp->n_audio_ctx != 1500)
        return sh_error(err, SHRUTI_ERR_MODEL, "n_audio_ctx %d, expected 1500", hp->n_audio_ctx);
    if (hp->n_mels != 80 && hp->n_mels != 128)
        return sh_error(err, SHRUTI_ERR_MODEL, "n_mels %d, expected 80 or 128", hp->n_mels);
    if (hp->n_text_ctx < 8 || hp->n_text_ctx > 4096)
        return sh_error(err, SHRUTI_ERR_MODEL, "n_text_ctx %d out of range", hp->n_text_ctx);
    const int dims[4][2] = {{hp->n_audio_state, hp->n_audio_head},
                            {hp->n_text_state, hp->n_text_head},
                            {hp->n_audio_layer, 1},
                            {hp->n_text_layer, 1}};
    for (int i = 0; i < 2; i++)
        if (dims[i][0] < 1 || dims[i][0] > 8192 || dims[i][1] < 1 || dims[i][1] > 256 ||
            dims[i][0] % dims[i][1] != 0)
            return sh_error(err, SHRUTI_ERR_MODEL, "bad width/heads %d/%d", dims[i][0],
                            dims[i][1]);
    for (int i = 2; i < 4; i++)
        if (dims[i][0] < 1 || dims[i][0] > 128)
            return sh_error(err, SHRUTI_ERR_MODEL, "bad layer count %d", dims[i][0]);
    if (hp->n_audio_state != hp->n_text_state)
        return sh_error(err, SHRUTI_ERR_MODEL, "audio and text widths differ (%d, %d)",
                        hp->n_audio_state, hp->n_text_state);
    return 0;
}

static int read_header(cursor *c, shruti_model *m, shruti_error *err) {
    uint32_t magic;
    int32_t hp[11];
    if (take(c, &magic, 4) < 0 || magic != GGML_MAGIC)
        return sh_error(err, SHRUTI_ERR_MODEL, "not a ggml Whisper model (bad magic)");
    if (take(c, hp, sizeof hp) < 0)
        return sh_error(err, SHRUTI_ERR_MODEL, "truncated header");
    m->hp = (sh_hparams){hp[0], hp[1], hp[2], hp[3], hp[4], hp[5], hp[6], hp[7], hp[8], hp[9],
                         hp[10]};
    return check_hparams(&m->hp, err);
}

static int read_mel_filters(cursor *c, shruti_model *m, shruti_error *err) {
    int32_t n_mel, n_fft;
    if (take_i32(c, &n_mel) < 0 || take_i32(c, &n_fft) < 0)
        return sh_error(err, SHRUTI_ERR_MODEL, "truncated mel filter header");
    if (n_mel != m->hp.n_mels || n_fft != SH_N_FREQ)
        return sh_error(err, SHRUTI_ERR_MODEL, "mel filters are %dx%d, expected %dx%d", n_mel,
                        n_fft, m->hp.n_mels, SH_N_FREQ);
    size_t n = (size_t)n_mel * (size_t)n_fft;
    m->mel_filters = malloc(n * sizeof(float));
    if (!m->mel_filters) return sh_error(err, SHRUTI_ERR_NOMEM, "out of memory");
    if (take(c, m->mel_filters, n * sizeof(float)) < 0)
        return sh_error(err, SHRUTI_ERR_MODEL, "truncated mel filters");
    for (size_t i = 0; i < n; i++)
        if (!isfinite(m->mel_filters[i]))
            return sh_error(err, SHRUTI_ERR_MODEL, "mel filters hold non-finite values");
    return 0;
}

static int read_vocab(cursor *c, shruti_model *m, shruti_error *err) {
    int32_t n;
    if (take_i32(c, &n) < 0) return sh_error(err, SHRUTI_ERR_MODEL, "truncated vocabulary");
    if (n < 256 || n > m->hp.n_vocab)
        return sh_error(err, SHRUTI_ERR_MODEL, "vocabulary count %d out of range", n);
    sh_vocab *v = &m->vocab;
    v->n_tokens = n;
    v->offset = malloc(((size_t)n + 1) * sizeof *v->offset);
    size_t start = c->pos, total = 0;
    if (!v->offset) return sh_error(err, SHRUTI_ERR_NOMEM, "out of memory");
    /* First pass: validate lengths and size the byte buffer. */
    for (int i = 0; i < n; i++) {
        int32_t len;
        if (take_i32(c, &len) < 0 || len < 0 || len > 1024 || !skip(c, (size_t)len))
            return sh_error(err, SHRUTI_ERR_MODEL, "vocabulary entry %d is truncated or bad", i);
        v->offset[i] = (uint32_t)total;
        total += (size_t)len;
    }
    v->offset[n] = (uint32_t)total;
    v->bytes = malloc(total + 1);
    if (!v->bytes) return sh_error(err, SHRUTI_ERR_NOMEM, "out of memory");
    c->pos = start;
    for (int i = 0; i < n; i++) {
        size_t len = v->offset[i + 1] - v->offset[i];
        c->pos += 4;   /* the length, validated above */
        take(c, v->bytes + v->offset[i], len);
    }
    if (sh_vocab_repair_byte_tokens(v) < 0 || sh_vocab_build_index(v) < 0)
        return sh_error(err, SHRUTI_ERR_NOMEM, "out of memory");
    return 0;
}

static int convert_tensor(float *dst, const uint8_t *src, int type, int64_t n) {
    if (type == GGML_TYPE_F32) memcpy(dst, src, (size_t)n * sizeof(float));
    else sh_halves_to_floats(dst, (const uint16_t *)(const void *)src, (size_t)n);
    return 0;
}

/* A matrix of rows x row_len from the file's type into the arena as kind
 * (float32, half, or q8_0 blocks). Returns
 * the floats of arena used, 0 when out of memory. */
#define MAX_LOAD_THREADS 16

/* Rows [r0, r1) of a matrix converted to the stored kind. */
typedef struct {
    uint8_t *out;
    const uint8_t *src;
    int type, kind;
    int64_t row_len, r0, r1;
    size_t src_row, out_row;
    bool done;
} store_job;

static void *store_rows(void *arg) {
    store_job *j = arg;
    int64_t row_len = j->row_len;
    float *tmp = malloc((size_t)row_len * sizeof *tmp);
    if (!tmp) return NULL;
    for (int64_t i = j->r0; i < j->r1; i++) {
        const uint8_t *in = j->src + (size_t)i * j->src_row;
        if (sh_ggml_type_is_quantized(j->type)) sh_dequantize(j->type, in, tmp, row_len);
        else convert_tensor(tmp, in, j->type, row_len);
        uint8_t *o = j->out + (size_t)i * j->out_row;
        if (j->kind == SH_MAT_I8P) {
            sh_i8p_put_row(j->out, (int)i, tmp);
        } else if (j->kind == SH_MAT_F32) {
            memcpy(o, tmp, j->out_row);
        } else if (j->kind == SH_MAT_F16) {
            sh_floats_to_halves((uint16_t *)(void *)o, tmp, (size_t)row_len);
        } else {
            sh_quantize(SH_GGML_Q8_0, tmp, o, row_len);
        }
    }
    free(tmp);
    j->done = true;
    return NULL;
}

static size_t store_matrix(float *dst, const uint8_t *src, int type, int64_t row_len,
                           int64_t rows, int kind) {
    int be = 1, bb = 4;
    sh_ggml_type_size(type, &be, &bb);
    size_t src_row = (size_t)(row_len / be) * (size_t)bb;
    size_t out_row = kind == SH_MAT_F32 ? (size_t)row_len * 4
                     : kind == SH_MAT_F16 ? (size_t)row_len * 2 : (size_t)(row_len / 32) * 34;
    size_t total = out_row * (size_t)rows;
    if (kind == SH_MAT_I8P) {
        total = sh_i8p_bytes((int)rows, (int)row_len);
        sh_i8p_init(dst, (int)rows, (int)row_len);
    }
    /* converting is most of a large model's load time: rows split over the cores */
    store_job jobs[MAX_LOAD_THREADS];
    pthread_t tid[MAX_LOAD_THREADS];
    bool started[MAX_LOAD_THREADS] = {false};
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int n = (size_t)rows * (size_t)row_len < ((size_t)1 << 20) ? 1
            : cores < 1 ? 1 : cores > MAX_LOAD_THREADS ? MAX_LOAD_THREADS : (int)cores;
    bool ok = true;
    for (int t = 0; t < n; t++) {
        jobs[t] = (store_job){(uint8_t *)dst, src, type, kind, row_len, rows * t / n,
                              rows * (t + 1) / n, src_row, out_row, false};
        if (t > 0) started[t] = pthread_create(&tid[t], NULL, store_rows, &jobs[t]) == 0;
        if (t > 0 && !started[t]) store_rows(&jobs[t]);
    }
    store_rows(&jobs[0]);
    for (int t = 0; t < n; t++) {
        if (started[t]) pthread_join(tid[t], NULL);
        ok &= jobs[t].done;
    }
    return ok ? (total + 3) / 4 : 0;
}

/* Floats of the arena a tensor of this kind takes (rounded up). */
static size_t stored_floats(int kind, int64_t n, int64_t row_len) {
    size_t bytes = kind == SH_MAT_F32   ? (size_t)n * 4
                   : kind == SH_MAT_F16 ? (size_t)n * 2
                   : kind == SH_MAT_I8P ? sh_i8p_bytes((int)(n / row_len), (int)row_len)
                                        : (size_t)(n / 32) * 34;
    return (bytes + 3) / 4;
}

/* Whether a tensor can be used where it lies in the mapped file: same
 * kind, and floats aligned as floats (halves and q8_0 blocks are read
 * with unaligned loads). */
static bool usable_in_place(const tensor_spec *s, int kind) {
    if (s->mat && kind == SH_MAT_F16) return s->type == GGML_TYPE_F16;
    if (s->mat && kind == SH_MAT_Q8_0) return s->type == SH_GGML_Q8_0;
    return s->type == GGML_TYPE_F32 && (uintptr_t)s->data % sizeof(float) == 0;
}

/* The cross-attention keys and values are computed once per window from
 * the encoder's 1500 outputs, a GEMM like the encoder's: int8 packed with
 * it, else kept in the decoder's kind. */
static int spec_kind(const shruti_model *m, const tensor_spec *s) {
    if (!s->mat) return SH_MAT_F32;
    if (s->keep_f16 == 2 && m->encoder_kind == SH_MAT_I8P) return SH_MAT_I8P;
    return s->keep_f16 ? m->decoder_kind : m->encoder_kind;
}

/* First pass: every tensor header checked against the table, its data
 * located (not read). */
static int find_tensors(cursor *c, spec_list *specs, shruti_error *err) {
    int n_found = 0;
    while (c->pos < c->size) {
        int32_t n_dims, name_len, type, ne[4] = {1, 1, 1, 1};
        if (take_i32(c, &n_dims) < 0 || take_i32(c, &name_len) < 0 || take_i32(c, &type) < 0)
            return sh_error(err, SHRUTI_ERR_MODEL, "truncated tensor header");
        if (n_dims < 1 || n_dims > 3 || name_len < 1 || name_len > 63)
            return sh_error(err, SHRUTI_ERR_MODEL, "bad tensor header (dims %d, name %d)",
                            n_dims, name_len);
        for (int i = 0; i < n_dims; i++)
            if (take_i32(c, &ne[i]) < 0 || ne[i] < 1)
                return sh_error(err, SHRUTI_ERR_MODEL, "bad tensor dimensions");
        const char *name = (const char *)skip(c, (size_t)name_len);
        if (!name) return sh_error(err, SHRUTI_ERR_MODEL, "truncated tensor name");
        tensor_spec *s = spec_find(specs, name, (size_t)name_len);
        if (!s)
            return sh_error(err, SHRUTI_ERR_MODEL, "unexpected tensor '%.*s'", name_len, name);
        if (s->found)
            return sh_error(err, SHRUTI_ERR_MODEL, "tensor '%s' appears twice", s->name);
        if (n_dims != s->n_dims)
            return sh_error(err, SHRUTI_ERR_MODEL, "tensor '%s' has %d dims, expected %d",
                            s->name, n_dims, s->n_dims);
        for (int i = 0; i < n_dims; i++) /* ggml lists sizes innermost first */
            if (ne[i] != s->shape[n_dims - 1 - i])
                return sh_error(err, SHRUTI_ERR_MODEL, "tensor '%s' has a wrong shape",
                                s->name);
        int block_elems, block_bytes;
        if (sh_ggml_type_size(type, &block_elems, &block_bytes) < 0)
            return sh_error(err, SHRUTI_ERR_UNSUPPORTED,
                            "tensor '%s' has ggml type %d, which this build does not read "
                            "(f32, f16, q4_0, q4_1, q5_0, q5_1, q8_0)", s->name, type);
        if (sh_ggml_type_is_quantized(type) && (!s->mat || ne[0] % block_elems != 0))
            return sh_error(err, SHRUTI_ERR_MODEL, "tensor '%s' cannot be quantized", s->name);
        s->n = spec_elements(s);
        s->bytes = (size_t)(s->n / block_elems) * (size_t)block_bytes;
        s->data = skip(c, s->bytes);
        if (!s->data) return sh_error(err, SHRUTI_ERR_MODEL, "tensor '%s' is truncated", s->name);
        s->type = type;
        s->row_len = ne[0];
        s->found = 1;
        n_found++;
    }
    if (n_found != specs->n) {
        for (int i = 0; i < specs->n; i++)
            if (!specs->v[i].found)
                return sh_error(err, SHRUTI_ERR_MODEL, "model file is missing tensor '%s'%s",
                                specs->v[i].name, n_found ? " (truncated?)" : "");
    }
    return 0;
}

/* A converted tensor's pages of the file are not read again: out of the
 * process's memory with them (the page cache keeps them). */
static void drop_converted(const tensor_spec *s) {
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)s->data + page - 1) & ~(page - 1);
    uintptr_t b = ((uintptr_t)s->data + s->bytes) & ~(page - 1);
    if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
}

/* Second pass: each tensor used in place or converted into the arena. */
static int read_tensors(cursor *c, shruti_model *m, spec_list *specs, shruti_error *err) {
    int r = find_tensors(c, specs, err);
    if (r < 0) return r;
    size_t total = 0;
    for (int i = 0; i < specs->n; i++) {
        const tensor_spec *s = &specs->v[i];
        int kind = spec_kind(m, s);
        if (!usable_in_place(s, kind))
            total += (stored_floats(kind, s->n, s->row_len) + 15) & ~(size_t)15;
    }
    /* each converted tensor starts 64-byte aligned */
    if (posix_memalign((void **)&m->arena, 64, (total ? total : 16) * sizeof(float)) != 0)
        return sh_error(err, SHRUTI_ERR_NOMEM, "out of memory for %zu MB of weights",
                        total * 4 >> 20);
    m->arena_floats = total;
    size_t used = 0;
    for (int i = 0; i < specs->n; i++) {
        tensor_spec *s = &specs->v[i];
        int kind = spec_kind(m, s);
        const void *where = s->data;
        if (!usable_in_place(s, kind)) {
            float *dst = m->arena + used;
            if (!s->mat) convert_tensor(dst, s->data, s->type, s->n);
            else if (store_matrix(dst, s->data, s->type, s->row_len, s->n / s->row_len, kind) == 0)
                return sh_error(err, SHRUTI_ERR_NOMEM, "out of memory");
            used += (stored_floats(kind, s->n, s->row_len) + 15) & ~(size_t)15;
            where = dst;
            drop_converted(s);
        }
        if (s->mat) *s->mat = (sh_mat){where, kind};
        else *s->dst = where;
    }
    return 0;
}

static void guess_type_name(shruti_model *m) {
    static const struct { int d, layers; const char *name; } sizes[] = {
        {384, 4, "tiny"}, {512, 6, "base"}, {768, 12, "small"}, {1024, 24, "medium"},
        {1280, 32, "large"}, {1280, 4, "large-turbo"}};
    const char *name = "custom";
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        if (m->hp.n_text_state == sizes[i].d && m->hp.n_text_layer == sizes[i].layers)
            name = sizes[i].name;
    snprintf(m->type_name, sizeof m->type_name, "%s", name);
}

/* The decoder's matrix kind for a compute type; auto follows the file. */
static int choose_decoder_kind(shruti_model *m, const char *compute_type, shruti_error *err) {
    const char *ct = compute_type && *compute_type ? compute_type : "auto";
    int kind;
    if (strcmp(ct, "auto") == 0 || strcmp(ct, "default") == 0) {
        int ftype = m->hp.ftype % 1000;   /* quantized files add 1000 x version */
        kind = ftype == 0 ? SH_MAT_F32 : ftype == 7 ? SH_MAT_Q8_0 : SH_MAT_F16;
    } else if (strcmp(ct, "float32") == 0) {
        kind = SH_MAT_F32;
    } else if (strcmp(ct, "float16") == 0 || strcmp(ct, "bfloat16") == 0) {
        kind = SH_MAT_F16;
    } else if (strncmp(ct, "int8", 4) == 0 && (ct[4] == '\0' || strcmp(ct + 4, "_float32") == 0 ||
                                               strcmp(ct + 4, "_float16") == 0 ||
                                               strcmp(ct + 4, "_bfloat16") == 0)) {
        kind = SH_MAT_Q8_0;
    } else {
        return sh_error(err, SHRUTI_ERR_INVALID_ARG, "unknown compute type '%s' (auto, float32, "
                        "float16, int8, int8_float32, int8_float16)", ct);
    }
    if (kind == SH_MAT_Q8_0 && m->hp.n_text_state % 32 != 0) kind = SH_MAT_F16;
    m->decoder_kind = kind;
    snprintf(m->compute_type, sizeof m->compute_type, "%s",
             kind == SH_MAT_F32 ? "float32" : kind == SH_MAT_F16 ? "float16" : "int8");
    return 0;
}

static int parse(cursor *c, shruti_model *m, const char *compute_type, bool gpu_likely,
                 shruti_error *err) {
    int r;
    spec_list specs = {0};
    if ((r = read_header(c, m, err)) < 0) return r;
    if ((r = choose_decoder_kind(m, compute_type, err)) < 0) return r;
    /* The encoder's matrices stay half where the file has them so and the
     * compute type is not float32: used in place, widened a band of rows at
     * a time for OpenBLAS on the CPU (as fast as a float32 copy, which
     * would double their memory), taken as they are by a GPU. */
    bool half_file = m->hp.ftype % 1000 == GGML_TYPE_F16;
    m->encoder_kind = m->decoder_kind != SH_MAT_F32 && (gpu_likely || half_file) ? SH_MAT_F16
                                                                                : SH_MAT_F32;
    /* int8 on a CPU with integer dot products: the encoder's GEMMs too */
    if (!gpu_likely && m->decoder_kind == SH_MAT_Q8_0 &&
        sh_i8p_supported(m->hp.n_audio_state, 4 * m->hp.n_audio_state))
        m->encoder_kind = SH_MAT_I8P;
    sh_special_from_n_vocab(&m->sp, m->hp.n_vocab);
    if ((r = read_mel_filters(c, m, err)) < 0) return r;
    if ((r = read_vocab(c, m, err)) < 0) return r;
    m->w.enc = calloc((size_t)m->hp.n_audio_layer, sizeof(sh_block));
    m->w.dec = calloc((size_t)m->hp.n_text_layer, sizeof(sh_block));
    if (!m->w.enc || !m->w.dec || build_specs(&specs, m) != 0) {
        free(specs.v);
        return sh_error(err, SHRUTI_ERR_NOMEM, "out of memory");
    }
    r = read_tensors(c, m, &specs, err);
    free(specs.v);
    if (r < 0) return r;
    guess_type_name(m);
    return 0;
}

shruti_model_params shruti_model_default_params(void) {
    shruti_model_params p = {"auto", "auto", 0};
    return p;
}

shruti_model *shruti_model_load(const char *path, shruti_error *err) {
    shruti_model_params p = shruti_model_default_params();
    return shruti_model_load_with_params(path, &p, err);
}

shruti_model *shruti_model_load_with_params(const char *path, const shruti_model_params *params,
                                            shruti_error *err) {
    sh_error_clear(err);
    if (!path) {
        sh_error(err, SHRUTI_ERR_INVALID_ARG, "no model path given");
        return NULL;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        sh_error(err, SHRUTI_ERR_IO, "cannot open model '%s': %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        sh_error(err, SHRUTI_ERR_IO, "model '%s' is not a regular file", path);
        return NULL;
    }
    if (st.st_size == 0) {
        close(fd);
        sh_error(err, SHRUTI_ERR_MODEL, "model '%s' is empty", path);
        return NULL;
    }
    /* Bound for a GPU, every page is copied to the device at once: mapped
     * in one go (faulting 4 KB pages one by one costs more). On the CPU
     * pages come in as they are used, so that those of tensors converted
     * at load can be let go after (drop_converted), keeping the peak low. */
    const char *device = params && params->device ? params->device : "auto";
    bool gpu_likely = strcmp(device, "cpu") != 0 && sh_gpu_driver_present();
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ,
                     MAP_PRIVATE | (gpu_likely ? MAP_POPULATE : 0), fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        sh_error(err, SHRUTI_ERR_IO, "cannot map model '%s': %s", path, strerror(errno));
        return NULL;
    }
    shruti_model *m = calloc(1, sizeof *m);
    if (!m) {
        munmap(map, (size_t)st.st_size);
        sh_error(err, SHRUTI_ERR_NOMEM, "out of memory");
        return NULL;
    }
    cursor c = {map, (size_t)st.st_size, 0};
    shruti_error local;
    m->map = map;
    m->map_size = (size_t)st.st_size;
    int r = parse(&c, m, params ? params->compute_type : NULL, gpu_likely, &local);
    if (r < 0) {
        sh_error(err, local.code, "%s: %s", path, local.message);
        shruti_model_free(m);
        return NULL;
    }
    if (sh_gpu_attach(m, params ? params->device : NULL, params ? params->device_index : 0,
                      err) < 0) {
        shruti_model_free(m);
        return NULL;
    }
    if (strcmp(m->device, "cpu") == 0)   /* NULL (every logit computed) when it does not apply */
        m->logit_screen = sh_logit_screen_new(m->w.tok_emb, m->hp.n_vocab, m->hp.n_text_state);
    return m;
}

void shruti_model_free(shruti_model *m) {
    if (!m) return;
    sh_gpu_detach(m);
    sh_logit_screen_free(m->logit_screen);
    sh_vocab_free(&m->vocab);
    free(m->mel_filters);
    free(m->w.enc);
    free(m->w.dec);
    free(m->arena);
    if (m->map) munmap(m->map, m->map_size);
    free(m);
}

bool shruti_model_is_multilingual(const shruti_model *m) { return m->sp.n_languages > 0; }
int shruti_model_n_vocab(const shruti_model *m) { return m->hp.n_vocab; }
int shruti_model_n_mels(const shruti_model *m) { return m->hp.n_mels; }
const char *shruti_model_type(const shruti_model *m) { return m->type_name; }
const char *shruti_model_compute_type(const shruti_model *m) { return m->compute_type; }
