/* gemm_i8.c - the encoder's linear layers in int8 (compute type int8, CPUs
 * with AVX2 at least), as CTranslate2 computes them: weights quantized per
 * output row at load, each input row quantized per row on the fly, the
 * products summed exactly in int32 by VPDPBUSD (64 per instruction, four
 * times the float32 FMA rate), then scaled back to float32.
 *
 * VPDPBUSD multiplies unsigned by signed bytes, so the input is stored
 * as x + 128 and 128 * (the row's weight sum) is subtracted after. The
 * 256-bit forms: AVX-VNNI (or AVX-512's 256-bit VPDPBUSD) the same way;
 * plain AVX2 multiplies |w| by x with w's sign (VPMADDUBSW, whose 16-bit
 * pair sums cannot saturate then: 2 * 127 * 127 < 32768).
 *
 * Weights are packed for the kernel: panels of 16 output rows, in which
 * each group of 4 inputs holds the 16 rows' 4 weights side by side (64
 * bytes, one vector); the buffer ends with each row's scale and weight sum. */
#include "cpu/gemm_i8.h"

#include "common/avx2_pack.h"
#include "cpu/gemv.h"

#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define HEADER 64            /* n_out, n_in; keeps the panels 64-byte aligned */
#define PANEL 16             /* output rows per panel */
#define KERNEL_ROWS 6        /* input rows per kernel call */
#define VNNI_ATTR __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))
#define AVX2_ATTR __attribute__((target("avx2,fma,f16c")))
#define AVXVNNI_ATTR __attribute__((target("avx2,fma,f16c,avxvnni")))
#define VNNI256_ATTR __attribute__((target("avx2,fma,f16c,avx512f,avx512vl,avx512vnni")))
#define ROWS_256 4           /* input rows per 256-bit kernel call */
#define MAX_IN 8192          /* widest input row (Whisper's is 4 x 1280) */

typedef struct {
    int32_t n_out, n_in;
} i8p_header;

static int8_t *panels(void *buf) { return (int8_t *)buf + HEADER; }
static float *row_scales(void *buf, int n_out, int n_in) {
    return (float *)((char *)buf + HEADER + (size_t)n_out * n_in);
}
static int32_t *row_sums(void *buf, int n_out, int n_in) {
    return (int32_t *)(row_scales(buf, n_out, n_in) + n_out);
}

/* The kernel for this CPU: the GEMV's choice (gemv.h), at least AVX2. */
static sh_int8_path gemm_path(void) {
    sh_int8_path p = sh_int8_path_for_cpu();
    return p == SH_INT8_FLOAT ? SH_INT8_AVX2 : p;
}

bool sh_i8p_supported(int n_out, int n_in) {
    return n_out % (2 * PANEL) == 0 && n_in % 4 == 0 && n_in > 0 && n_in <= MAX_IN &&
           __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("f16c");
}

size_t sh_i8p_bytes(int n_out, int n_in) {
    return HEADER + (size_t)n_out * n_in + (size_t)n_out * (sizeof(float) + sizeof(int32_t));
}

void sh_i8p_init(void *buf, int n_out, int n_in) {
    i8p_header h = {n_out, n_in};
    memset(buf, 0, HEADER);
    memcpy(buf, &h, sizeof h);
}

/* Row j's values rounded to int8 steps of its largest / 127 (nearbyintf's
 * halves to even, as the vector conversion rounds). */
AVX2_ATTR static void round_row(int8_t *q, const float *w, int n, float inv) {
    __m256 vinv = _mm256_set1_ps(inv);
    int k = 0;
    for (; k + 32 <= n; k += 32) {
        __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(w + k), vinv));
        __m256i i1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(w + k + 8), vinv));
        __m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(w + k + 16), vinv));
        __m256i i3 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(w + k + 24), vinv));
        _mm256_storeu_si256((__m256i *)(q + k), sh_pack_i8(i0, i1, i2, i3));
    }
    for (; k < n; k++) q[k] = (int8_t)nearbyintf(w[k] * inv);
}

/* Packed matrices exist only where sh_i8p_supported said so: AVX2, and
 * rows of at most MAX_IN. */
void sh_i8p_put_row(void *buf, int j, const float *w) {
    i8p_header h;
    memcpy(&h, buf, sizeof h);
    float amax = 0.0f;
    for (int k = 0; k < h.n_in; k++) {
        float a = fabsf(w[k]);
        amax = a > amax ? a : amax;
    }
    float scale = amax / 127.0f, inv = scale > 0.0f ? 1.0f / scale : 0.0f;
    int8_t row[MAX_IN];
    round_row(row, w, h.n_in, inv);
    /* each group of 4 inputs lands next to the panel's other rows' */
    int8_t *panel = panels(buf) + (size_t)(j / PANEL) * PANEL * h.n_in;
    int32_t sum = 0;
    for (int k = 0; k < h.n_in; k += 4) {
        memcpy(panel + (size_t)(k / 4) * PANEL * 4 + (j % PANEL) * 4, row + k, 4);
        sum += row[k] + row[k + 1] + row[k + 2] + row[k + 3];
    }
    row_scales(buf, h.n_out, h.n_in)[j] = scale;
    row_sums(buf, h.n_out, h.n_in)[j] = sum;
}

void sh_i8p_get_row(const void *buf, int j, float *out) {
    i8p_header h;
    memcpy(&h, buf, sizeof h);
    const int8_t *panel = panels((void *)buf) + (size_t)(j / PANEL) * PANEL * h.n_in;
    float scale = row_scales((void *)buf, h.n_out, h.n_in)[j];
    for (int k = 0; k < h.n_in; k++)
        out[k] = scale * panel[(size_t)(k / 4) * PANEL * 4 + (j % PANEL) * 4 + k % 4];
}

/* Input rows to bytes, x / scale (+ 128 for the unsigned forms), and
 * their scales. */
AVX2_ATTR static void quantize_input(uint8_t *q, float *scales, const float *x, int r0, int r1,
                                     int n_in, int offset) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256i off = _mm256_set1_epi32(offset);
    for (int r = r0; r < r1; r++) {
        const float *xr = x + (size_t)r * n_in;
        uint8_t *qr = q + (size_t)r * n_in;
        __m256 m = _mm256_setzero_ps();
        int k = 0;
        for (; k + 8 <= n_in; k += 8) m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(xr + k)));
        float amax = sh_hmax8(m);
        for (; k < n_in; k++) amax = fmaxf(amax, fabsf(xr[k]));
        float scale = amax / 127.0f, inv = scale > 0.0f ? 1.0f / scale : 0.0f;
        scales[r] = scale;
        __m256 vinv = _mm256_set1_ps(inv);
        __m256i v[4];
        for (k = 0; k + 32 <= n_in; k += 32) {
            for (int i = 0; i < 4; i++)
                v[i] = _mm256_add_epi32(
                    _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xr + k + 8 * i), vinv)), off);
            _mm256_storeu_si256((__m256i *)(qr + k), offset ? sh_pack_u8(v[0], v[1], v[2], v[3])
                                                            : sh_pack_i8(v[0], v[1], v[2], v[3]));
        }
        for (; k < n_in; k++) qr[k] = (uint8_t)((int)nearbyintf(xr[k] * inv) + offset);
    }
}

VNNI_ATTR static void quantize_input_512(uint8_t *q, float *scales, const float *x, int r0,
                                         int r1, int n_in) {
    for (int r = r0; r < r1; r++) {
        const float *xr = x + (size_t)r * n_in;
        uint8_t *qr = q + (size_t)r * n_in;
        __m512 m = _mm512_setzero_ps();
        int k = 0;
        for (; k + 16 <= n_in; k += 16) m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_loadu_ps(xr + k)));
        float amax = _mm512_reduce_max_ps(m);
        for (; k < n_in; k++) amax = fmaxf(amax, fabsf(xr[k]));
        float scale = amax / 127.0f, inv = scale > 0.0f ? 1.0f / scale : 0.0f;
        scales[r] = scale;
        __m512 vinv = _mm512_set1_ps(inv);
        __m512i off = _mm512_set1_epi32(128);
        for (k = 0; k + 16 <= n_in; k += 16) {
            __m512i v = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(xr + k), vinv)), off);
            _mm_storeu_si128((__m128i *)(qr + k), _mm512_cvtusepi32_epi8(v));
        }
        for (; k < n_in; k++) qr[k] = (uint8_t)(nearbyintf(xr[k] * inv) + 128);
    }
}

/* y rows [r, r + R) x output rows [j, j + 32): the two panels at j. */
static inline __attribute__((always_inline)) VNNI_ATTR void kernel(
    float *y, int n_out, const uint8_t *xq, const float *xs, const int8_t *w0, const float *ws,
    const int32_t *wsum, const float *bias, int n_in, int r, int j, const int R) {
    const int8_t *w1 = w0 + (size_t)PANEL * n_in;
    __m512i acc[KERNEL_ROWS][2];
    for (int i = 0; i < R; i++) acc[i][0] = acc[i][1] = _mm512_setzero_si512();
    const uint8_t *a = xq + (size_t)r * n_in;
    for (int k = 0; k < n_in; k += 4) {
        __m512i b0 = _mm512_load_si512(w0 + (size_t)k * PANEL);
        __m512i b1 = _mm512_load_si512(w1 + (size_t)k * PANEL);
        for (int i = 0; i < R; i++) {
            int32_t four;
            memcpy(&four, a + (size_t)i * n_in + k, sizeof four);
            __m512i av = _mm512_set1_epi32(four);
            acc[i][0] = _mm512_dpbusd_epi32(acc[i][0], av, b0);
            acc[i][1] = _mm512_dpbusd_epi32(acc[i][1], av, b1);
        }
    }
    for (int h = 0; h < 2; h++) {
        int jj = j + h * PANEL;
        __m512i off = _mm512_mullo_epi32(_mm512_loadu_si512(wsum + jj), _mm512_set1_epi32(128));
        __m512 sw = _mm512_loadu_ps(ws + jj);
        __m512 b = bias ? _mm512_loadu_ps(bias + jj) : _mm512_setzero_ps();
        for (int i = 0; i < R; i++) {
            __m512 v = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[i][h], off));
            __m512 s = _mm512_mul_ps(sw, _mm512_set1_ps(xs[r + i]));
            _mm512_storeu_ps(y + (size_t)(r + i) * n_out + jj, _mm512_fmadd_ps(v, s, b));
        }
    }
}


/* The 256-bit kernel: input rows [r, r + R) x the 16 output rows of one
 * panel (two vectors of 8). */
#define DEFINE_KERNEL_256(S, ATTR, STEP)                                                      \
    static inline __attribute__((always_inline)) ATTR void kernel_256##S(                    \
        float *y, int n_out, const uint8_t *xq, const float *xs, const int8_t *w0,            \
        const float *ws, const int32_t *wsum, const float *bias, int n_in, int r, int j,      \
        const int R, int offset) {                                                            \
        __m256i acc[ROWS_256][2];                                                             \
        for (int i = 0; i < R; i++) acc[i][0] = acc[i][1] = _mm256_setzero_si256();          \
        const uint8_t *a = xq + (size_t)r * n_in;                                             \
        for (int k = 0; k < n_in; k += 4) {                                                   \
            __m256i b0 = _mm256_load_si256((const __m256i *)(w0 + (size_t)k * PANEL));        \
            __m256i b1 = _mm256_load_si256((const __m256i *)(w0 + (size_t)k * PANEL + 32));   \
            for (int i = 0; i < R; i++) {                                                     \
                int32_t four;                                                                 \
                memcpy(&four, a + (size_t)i * n_in + k, sizeof four);                         \
                __m256i av = _mm256_set1_epi32(four);                                         \
                STEP(acc[i][0], av, b0);                                                      \
                STEP(acc[i][1], av, b1);                                                      \
            }                                                                                 \
        }                                                                                     \
        for (int h = 0; h < 2; h++) {                                                         \
            int jj = j + h * 8;                                                               \
            __m256i off = _mm256_mullo_epi32(_mm256_loadu_si256((const __m256i *)(wsum + jj)), \
                                             _mm256_set1_epi32(offset));                     \
            __m256 sw = _mm256_loadu_ps(ws + jj);                                             \
            __m256 b = bias ? _mm256_loadu_ps(bias + jj) : _mm256_setzero_ps();               \
            for (int i = 0; i < R; i++) {                                                     \
                __m256 v = _mm256_cvtepi32_ps(_mm256_sub_epi32(acc[i][h], off));              \
                __m256 s = _mm256_mul_ps(sw, _mm256_set1_ps(xs[r + i]));                      \
                _mm256_storeu_ps(y + (size_t)(r + i) * n_out + jj, _mm256_fmadd_ps(v, s, b)); \
            }                                                                                 \
        }                                                                                     \
    }

/* acc += bytes of a (unsigned) times bytes of b (signed), four per lane */
#define STEP_AVXVNNI(acc, a, b) (acc) = _mm256_dpbusd_avx_epi32(acc, a, b)
#define STEP_VNNI256(acc, a, b) (acc) = _mm256_dpbusd_epi32(acc, a, b)
/* the same with a signed: |b| times a with b's sign, in 16-bit pairs */
#define STEP_AVX2(acc, a, b)                                                                  \
    (acc) = _mm256_add_epi32(                                                                 \
        acc, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(b, b),                   \
                                                    _mm256_sign_epi8(a, b)),                  \
                               _mm256_set1_epi16(1)))

DEFINE_KERNEL_256(_avxvnni, AVXVNNI_ATTR, STEP_AVXVNNI)
DEFINE_KERNEL_256(_vnni256, VNNI256_ATTR, STEP_VNNI256)
DEFINE_KERNEL_256(_avx2, AVX2_ATTR, STEP_AVX2)

typedef struct {
    float *y;
    uint8_t *xq;          /* the input quantized, and its row scales */
    float *xs;
    const float *x, *bias;
    const void *w;
    int rows, n_in, n_out;
    sh_int8_path path;
} gemm_job;

static void quantize_range(void *arg, int begin, int end) {
    gemm_job *g = arg;
    if (g->path == SH_INT8_VNNI512) quantize_input_512(g->xq, g->xs, g->x, begin, end, g->n_in);
    else quantize_input(g->xq, g->xs, g->x, begin, end, g->n_in, g->path == SH_INT8_AVX2 ? 0 : 128);
}

/* Items are pairs of panels (32 output rows); each runs all input rows. */
#define DEFINE_RANGE_256(S, ATTR)                                                             \
    ATTR static void gemm_range_256##S(void *arg, int begin, int end) {                       \
        gemm_job *g = arg;                                                                    \
        void *w = (void *)g->w;                                                               \
        const float *ws = row_scales(w, g->n_out, g->n_in);                                   \
        const int32_t *wsum = row_sums(w, g->n_out, g->n_in);                                 \
        int offset = g->path == SH_INT8_AVX2 ? 0 : 128;                                       \
        for (int p = 2 * begin; p < 2 * end; p++) {                                           \
            int j = p * PANEL;                                                                \
            const int8_t *w0 = panels(w) + (size_t)j * g->n_in;                               \
            int r = 0;                                                                        \
            for (; r + ROWS_256 <= g->rows; r += ROWS_256)                                    \
                kernel_256##S(g->y, g->n_out, g->xq, g->xs, w0, ws, wsum, g->bias, g->n_in,  \
                              r, j, ROWS_256, offset);                                        \
            for (; r < g->rows; r++)                                                          \
                kernel_256##S(g->y, g->n_out, g->xq, g->xs, w0, ws, wsum, g->bias, g->n_in,  \
                              r, j, 1, offset);                                               \
        }                                                                                     \
    }

DEFINE_RANGE_256(_avxvnni, AVXVNNI_ATTR)
DEFINE_RANGE_256(_vnni256, VNNI256_ATTR)
DEFINE_RANGE_256(_avx2, AVX2_ATTR)

VNNI_ATTR static void gemm_range_512(void *arg, int begin, int end) {
    gemm_job *g = arg;
    void *w = (void *)g->w;
    const float *ws = row_scales(w, g->n_out, g->n_in);
    const int32_t *wsum = row_sums(w, g->n_out, g->n_in);
    for (int item = begin; item < end; item++) {
        int j = item * 2 * PANEL;
        const int8_t *w0 = panels(w) + (size_t)j * g->n_in;
        int r = 0;
        for (; r + KERNEL_ROWS <= g->rows; r += KERNEL_ROWS)
            kernel(g->y, g->n_out, g->xq, g->xs, w0, ws, wsum, g->bias, g->n_in, r, j, KERNEL_ROWS);
        switch (g->rows - r) {
            case 1: kernel(g->y, g->n_out, g->xq, g->xs, w0, ws, wsum, g->bias, g->n_in, r, j, 1); break;
            case 2: kernel(g->y, g->n_out, g->xq, g->xs, w0, ws, wsum, g->bias, g->n_in, r, j, 2); break;
            case 3: kernel(g->y, g->n_out, g->xq, g->xs, w0, ws, wsum, g->bias, g->n_in, r, j, 3); break;
            case 4: kernel(g->y, g->n_out, g->xq, g->xs, w0, ws, wsum, g->bias, g->n_in, r, j, 4); break;
            case 5: kernel(g->y, g->n_out, g->xq, g->xs, w0, ws, wsum, g->bias, g->n_in, r, j, 5); break;
            default: break;
        }
    }
}

size_t sh_gemm_i8p_scratch(int rows, int n_in) {
    return (size_t)rows * n_in + (size_t)rows * sizeof(float);
}

void sh_gemm_i8p_kernel(sh_pool *pool, float *y, const float *x, int rows, const void *w,
                        const float *bias, void *scratch, sh_int8_path kernel) {
    i8p_header h;
    memcpy(&h, w, sizeof h);
    uint8_t *q = scratch;
    float *scales = (float *)(q + (size_t)rows * h.n_in);
    if (kernel == SH_INT8_FLOAT) kernel = SH_INT8_AVX2;
    gemm_job g = {y, q, scales, x, bias, w, rows, h.n_in, h.n_out, kernel};
    sh_range_fn range = gemm_range_256_avx2;
    if (kernel == SH_INT8_VNNI512) range = gemm_range_512;
    /* the 256-bit VPDPBUSD: AVX-VNNI's encoding, or AVX-512's */
    if (kernel == SH_INT8_AVXVNNI)
        range = __builtin_cpu_supports("avxvnni") ? gemm_range_256_avxvnni : gemm_range_256_vnni256;
    sh_pool_run(pool, rows, quantize_range, &g);
    sh_pool_run(pool, h.n_out / (2 * PANEL), range, &g);
}

void sh_gemm_i8p(sh_pool *pool, float *y, const float *x, int rows, const void *w,
                 const float *bias, void *scratch) {
    sh_gemm_i8p_kernel(pool, y, x, rows, w, bias, scratch, gemm_path());
}
