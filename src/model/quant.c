/* quant.c - ggml's block quantization formats. A block of 32 weights keeps
 * a half-precision scale (and, for the _1 kinds, a minimum) and 4, 5 or 8
 * bits per weight; values are d * q (+ m). Files quantized by whisper.cpp
 * load by widening each block; `shruti quantize` writes them. */
#include "model/quant.h"

#include <errno.h>
#include <immintrin.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/avx2_pack.h"
#include "common/error.h"
#include "common/f16.h"

#define QK 32

int sh_ggml_type_size(int type, int *elems, int *bytes) {
    int e = QK, b;
    switch (type) {
    case SH_GGML_F32: e = 1, b = 4; break;
    case SH_GGML_F16: e = 1, b = 2; break;
    case SH_GGML_Q4_0: b = 2 + QK / 2; break;
    case SH_GGML_Q4_1: b = 4 + QK / 2; break;
    case SH_GGML_Q5_0: b = 2 + 4 + QK / 2; break;
    case SH_GGML_Q5_1: b = 4 + 4 + QK / 2; break;
    case SH_GGML_Q8_0: b = 2 + QK; break;
    default: return -1;
    }
    if (elems) *elems = e;
    if (bytes) *bytes = b;
    return 0;
}

bool sh_ggml_type_is_quantized(int type) { return type >= 2 && sh_ggml_type_size(type, 0, 0) == 0; }

int sh_ggml_type_from_name(const char *s) {
    static const struct { const char *name; int type; } names[] = {
        {"q4_0", SH_GGML_Q4_0}, {"q4_1", SH_GGML_Q4_1}, {"q5_0", SH_GGML_Q5_0},
        {"q5_1", SH_GGML_Q5_1}, {"q8_0", SH_GGML_Q8_0}, {"f16", SH_GGML_F16},
        {"f32", SH_GGML_F32}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(s, names[i].name) == 0) return names[i].type;
    return -1;
}

static float half_at(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return sh_f16_to_f32(h);
}

static void put_half(uint8_t *p, float f) {
    uint16_t h = sh_f32_to_f16(f);
    memcpy(p, &h, 2);
}

void sh_dequantize(int type, const uint8_t *src, float *dst, int64_t n) {
    int bytes = 0;
    if (sh_ggml_type_size(type, NULL, &bytes) < 0) return;
    for (int64_t b = 0; b < n / QK; b++, src += bytes, dst += QK) {
        float d = half_at(src), m = 0;
        const uint8_t *qs;
        uint32_t qh = 0;
        switch (type) {
        case SH_GGML_Q8_0:
            for (int j = 0; j < QK; j++) dst[j] = d * (float)(int8_t)src[2 + j];
            break;
        case SH_GGML_Q4_0:
        case SH_GGML_Q4_1:
            if (type == SH_GGML_Q4_1) m = half_at(src + 2);
            qs = src + (type == SH_GGML_Q4_1 ? 4 : 2);
            for (int j = 0; j < QK / 2; j++) {
                int lo = qs[j] & 0x0f, hi = qs[j] >> 4;
                if (type == SH_GGML_Q4_0) lo -= 8, hi -= 8;
                dst[j] = lo * d + m;
                dst[j + QK / 2] = hi * d + m;
            }
            break;
        case SH_GGML_Q5_0:
        case SH_GGML_Q5_1:
            if (type == SH_GGML_Q5_1) m = half_at(src + 2);
            memcpy(&qh, src + (type == SH_GGML_Q5_1 ? 4 : 2), 4);
            qs = src + (type == SH_GGML_Q5_1 ? 8 : 6);
            for (int j = 0; j < QK / 2; j++) {
                int lo = (qs[j] & 0x0f) | (int)(((qh >> j) << 4) & 0x10);
                int hi = (qs[j] >> 4) | (int)((qh >> (j + 12)) & 0x10);
                if (type == SH_GGML_Q5_0) lo -= 16, hi -= 16;
                dst[j] = lo * d + m;
                dst[j + QK / 2] = hi * d + m;
            }
            break;
        default:
            memset(dst, 0, QK * sizeof *dst);
        }
    }
}

static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* q8_0 blocks eight lanes at a time (AVX2): the same bytes as the scalar
 * loop, roundf's halves away from zero included. The loader quantizes
 * whole models this way for the int8 compute type. */
__attribute__((target("avx2,fma,f16c"))) static void quantize_q8_0_avx2(const float *src,
                                                                        uint8_t *dst,
                                                                        int64_t n_blocks) {
    const __m256 sign = _mm256_set1_ps(-0.0f), half = _mm256_set1_ps(0.5f);
    const __m256 one = _mm256_set1_ps(1.0f);
    for (int64_t b = 0; b < n_blocks; b++, src += QK, dst += 2 + QK) {
        __m256 v[4], m = _mm256_setzero_ps();
        for (int i = 0; i < 4; i++) {
            v[i] = _mm256_loadu_ps(src + 8 * i);
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v[i]));
        }
        float d = sh_hmax8(m) / 127.0f, id = d ? 1.0f / d : 0.0f;
        put_half(dst, d);
        __m256 vid = _mm256_set1_ps(id);
        __m256i q[4];
        for (int i = 0; i < 4; i++) {
            __m256 x = _mm256_mul_ps(v[i], vid);
            __m256 t = _mm256_round_ps(x, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
            __m256 up = _mm256_cmp_ps(_mm256_andnot_ps(sign, _mm256_sub_ps(x, t)), half, _CMP_GE_OQ);
            t = _mm256_add_ps(t, _mm256_and_ps(up, _mm256_or_ps(one, _mm256_and_ps(sign, x))));
            q[i] = _mm256_cvttps_epi32(t);
        }
        _mm256_storeu_si256((__m256i *)(dst + 2), sh_pack_i8(q[0], q[1], q[2], q[3]));
    }
}

size_t sh_quantize(int type, const float *src, uint8_t *dst, int64_t n) {
    int bytes;
    if (sh_ggml_type_size(type, NULL, &bytes) < 0 || !sh_ggml_type_is_quantized(type)) return 0;
    uint8_t *out = dst;
    if (type == SH_GGML_Q8_0 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("f16c")) {
        quantize_q8_0_avx2(src, dst, n / QK);
        return (size_t)(n / QK) * (size_t)bytes;
    }
    for (int64_t b = 0; b < n / QK; b++, src += QK, dst += bytes) {
        float amax = 0, max = 0, lo = src[0], hi = src[0];
        for (int j = 0; j < QK; j++) {
            if (fabsf(src[j]) > amax) amax = fabsf(src[j]), max = src[j];
            lo = fminf(lo, src[j]), hi = fmaxf(hi, src[j]);
        }
        memset(dst, 0, (size_t)bytes);
        if (type == SH_GGML_Q8_0) {
            float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f;
            put_half(dst, d);
            for (int j = 0; j < QK; j++) dst[2 + j] = (uint8_t)(int8_t)roundf(src[j] * id);
        } else if (type == SH_GGML_Q4_0 || type == SH_GGML_Q5_0) {
            int levels = type == SH_GGML_Q4_0 ? 8 : 16;
            float d = max / -(float)levels, id = d ? 1.0f / d : 0.0f;
            put_half(dst, d);
            uint32_t qh = 0;
            uint8_t *qs = dst + (type == SH_GGML_Q4_0 ? 2 : 6);
            for (int j = 0; j < QK / 2; j++) {
                int a = clampi((int)(src[j] * id + levels + 0.5f), 0, 2 * levels - 1);
                int c = clampi((int)(src[j + QK / 2] * id + levels + 0.5f), 0, 2 * levels - 1);
                qs[j] = (uint8_t)((a & 0x0f) | ((c & 0x0f) << 4));
                qh |= (uint32_t)((a & 0x10) >> 4) << j;
                qh |= (uint32_t)((c & 0x10) >> 4) << (j + QK / 2);
            }
            if (type == SH_GGML_Q5_0) memcpy(dst + 2, &qh, 4);
        } else {   /* q4_1, q5_1: scale and minimum */
            int top = type == SH_GGML_Q4_1 ? 15 : 31;
            float d = (hi - lo) / top, id = d ? 1.0f / d : 0.0f;
            put_half(dst, d);
            put_half(dst + 2, lo);
            uint32_t qh = 0;
            uint8_t *qs = dst + (type == SH_GGML_Q4_1 ? 4 : 8);
            for (int j = 0; j < QK / 2; j++) {
                int a = clampi((int)((src[j] - lo) * id + 0.5f), 0, top);
                int c = clampi((int)((src[j + QK / 2] - lo) * id + 0.5f), 0, top);
                qs[j] = (uint8_t)((a & 0x0f) | ((c & 0x0f) << 4));
                qh |= (uint32_t)((a & 0x10) >> 4) << j;
                qh |= (uint32_t)((c & 0x10) >> 4) << (j + QK / 2);
            }
            if (type == SH_GGML_Q5_1) memcpy(dst + 4, &qh, 4);
        }
    }
    return (size_t)(dst - out);
}

/* ------------------------------------------------------- whole files */

/* Tensors whisper.cpp's quantize tool leaves alone (besides 1-D ones). */
static bool keep_unquantized(const char *name) {
    return strcmp(name, "encoder.conv1.bias") == 0 || strcmp(name, "encoder.conv2.bias") == 0 ||
           strcmp(name, "encoder.positional_embedding") == 0 ||
           strcmp(name, "decoder.positional_embedding") == 0;
}

int sh_quantize_model_file(const char *in_path, const char *out_path, int type,
                           shruti_error *err) {
    if (!sh_ggml_type_is_quantized(type))
        return sh_error(err, SHRUTI_ERR_INVALID_ARG, "not a quantized type");
    /* validate the input as a model first */
    shruti_model *m = shruti_model_load(in_path, err);
    if (!m) return err ? err->code : SHRUTI_ERR_MODEL;
    shruti_model_free(m);
    FILE *in = fopen(in_path, "rb");
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", out_path);
    FILE *out = in ? fopen(tmp, "wb") : NULL;
    if (!in || !out) {
        if (in) fclose(in);
        return sh_error(err, SHRUTI_ERR_IO, "cannot open %s: %s", in ? tmp : in_path,
                        strerror(errno));
    }
    int r = 0;
    int32_t hdr[12];
    if (fread(hdr, 4, 12, in) != 12) r = SHRUTI_ERR_IO;
    static const int FTYPE[] = {0, 1, 2, 3, 0, 0, 8, 9, 7};   /* ggml type -> file ftype */
    hdr[11] = 2 * 1000 + FTYPE[type];                          /* GGML_QNT_VERSION 2 */
    fwrite(hdr, 4, 12, out);
    /* mel filters and vocabulary as they are */
    int32_t n_mel, n_fft, n_vocab;
    if (r == 0 && fread(&n_mel, 4, 1, in) == 1 && fread(&n_fft, 4, 1, in) == 1) {
        fwrite(&n_mel, 4, 1, out);
        fwrite(&n_fft, 4, 1, out);
        size_t nf = (size_t)n_mel * n_fft * 4;
        char *buf = malloc(nf);
        if (!buf || fread(buf, 1, nf, in) != nf) r = SHRUTI_ERR_IO;
        else fwrite(buf, 1, nf, out);
        free(buf);
    }
    if (r == 0 && fread(&n_vocab, 4, 1, in) == 1) {
        fwrite(&n_vocab, 4, 1, out);
        for (int i = 0; r == 0 && i < n_vocab; i++) {
            int32_t len;
            char tok[1024];
            if (fread(&len, 4, 1, in) != 1 || len < 0 || len > 1024 ||
                fread(tok, 1, (size_t)len, in) != (size_t)len)
                r = SHRUTI_ERR_IO;
            fwrite(&len, 4, 1, out);
            fwrite(tok, 1, (size_t)len, out);
        }
    }
    int32_t th[3];
    while (r == 0 && fread(th, 4, 3, in) == 3) {
        int32_t n_dims = th[0], name_len = th[1], t = th[2], ne[3] = {1, 1, 1};
        char name[64] = "";
        if (fread(ne, 4, (size_t)n_dims, in) != (size_t)n_dims ||
            fread(name, 1, (size_t)name_len, in) != (size_t)name_len) {
            r = SHRUTI_ERR_IO;
            break;
        }
        int64_t n = (int64_t)ne[0] * ne[1] * ne[2];
        int eb = 0;
        if (sh_ggml_type_size(t, NULL, &eb) < 0) {
            r = SHRUTI_ERR_MODEL;
            break;
        }
        size_t size = (size_t)n * (size_t)eb;
        if (sh_ggml_type_is_quantized(t)) {
            int be = 1, bb = 0;
            sh_ggml_type_size(t, &be, &bb);
            size = (size_t)(n / be) * (size_t)bb;
        }
        uint8_t *data = malloc(size);
        if (!data || fread(data, 1, size, in) != size) {
            free(data);
            r = SHRUTI_ERR_IO;
            break;
        }
        bool quantize = n_dims == 2 && !keep_unquantized(name) && ne[0] % QK == 0 &&
                        (t == SH_GGML_F32 || t == SH_GGML_F16);
        int32_t out_type = quantize ? type : t;
        int32_t oh[3] = {n_dims, name_len, out_type};
        fwrite(oh, 4, 3, out);
        fwrite(ne, 4, (size_t)n_dims, out);
        fwrite(name, 1, (size_t)name_len, out);
        if (quantize) {
            float *f = malloc((size_t)n * sizeof *f);
            int bb = 0;
            sh_ggml_type_size(type, NULL, &bb);
            uint8_t *q = malloc((size_t)(n / QK) * (size_t)bb);
            if (!f || !q) r = SHRUTI_ERR_NOMEM;
            for (int64_t i = 0; r == 0 && i < n; i++) {
                if (t == SH_GGML_F32) memcpy(&f[i], data + 4 * i, 4);
                else f[i] = half_at(data + 2 * i);
            }
            if (r == 0) fwrite(q, 1, sh_quantize(type, f, q, n), out);
            free(f), free(q);
        } else {
            fwrite(data, 1, size, out);
        }
        free(data);
    }
    fclose(in);
    if (fclose(out) != 0 && r == 0) r = SHRUTI_ERR_IO;
    if (r == 0 && rename(tmp, out_path) != 0) r = SHRUTI_ERR_IO;
    if (r < 0) {
        remove(tmp);
        return sh_error(err, r, "cannot write %s", out_path);
    }
    return 0;
}
