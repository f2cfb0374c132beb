/* block_attention.c - the encoder's self-attention on the CPU, a block of
 * query rows at a time.
 *
 * Computed head by head as whole matrices, a 30 s window's scores are 1500
 * x 1500 floats (9 MB) per head, written by one product, read and written
 * by the softmax and read again by the second product: four trips to
 * memory that cost more than the arithmetic on a small machine. Here each
 * task takes one head and 48 query rows: their scores (48 x 1500, 288 KB)
 * are computed, softmaxed and multiplied by the values while they sit in
 * the core's cache. Tasks of all heads go over the pool in one job, so
 * nothing waits between heads either.
 *
 * The keys are first transposed (zero past the last position, up to a
 * multiple of 32) so that the score tile's inner loop reads consecutive
 * positions of one key dimension; register tiles of 6 rows x 16 columns
 * (12 accumulators) fit the 16 vector registers of AVX2, 6 x 32 in 16-float
 * vectors the 32 of AVX-512. This file is compiled with -ffp-contract=fast:
 * a * b + c on vectors becomes one FMA. */
#include "cpu/block_attention.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/vmath.h"

#define QB 48   /* query rows per task */
#define RT 6    /* rows per register tile */
#define CT 16   /* columns per register tile: two vectors */
#define KT 32   /* positions per tile of transposed keys (two AVX2 tiles, one AVX-512) */

/* positions rounded up to a whole number of wide tiles */
static int padded(int n) { return (n + 2 * CT - 1) / (2 * CT) * (2 * CT); }

/* per slot: scores (QB, np), queries (QB, dh <= d), the rows' 1 / sums */
static size_t slot_floats(int np, int d) { return (size_t)QB * ((size_t)np + (size_t)d + 16); }

size_t sh_block_attention_floats(int n, int d, int n_slots) {
    return (size_t)d * padded(n) + (size_t)d * n + (size_t)n_slots * slot_floats(padded(n), d);
}

typedef struct {
    float *out;
    const float *q, *k, *v;
    int n, np, d, n_head, dh, n_blocks, n_tasks, n_slots;
    int wide;   /* AVX-512: 16-float vectors, 32-column tiles */
    float scale;
    float *kt;        /* the keys transposed in tiles of KT positions: see pack_range */
    float *vp;        /* (n_head, n, dh): each head's values contiguous */
    float *scratch;   /* slot_floats() per slot */
    atomic_int next_task;
} battn_job;

/* The keys of head h, positions [KT t, KT t + KT), transposed: KT floats
 * per key dimension, the head's dh dimensions in a row (8 KB for dh 64), so
 * that a score tile's inner loop walks one contiguous block instead of a
 * cache line on each of 64 pages (one row of all positions per dimension:
 * slower on this project's machine, tiny 23-27 -> 22.6 ms a layer). */
static float *key_tile(const battn_job *j, int h, int t) {
    return j->kt + ((size_t)h * (j->np / KT) + t) * j->dh * KT;
}

/* A tile of KT positions per item: its transposed keys (zero past n), and
 * the positions' values regrouped head by head. */
static void pack_range(void *arg, int begin, int end) {
    const battn_job *j = arg;
    int d = j->d, dh = j->dh;
    for (int t = begin; t < end; t++) {
        int j0 = t * KT, m = j->n - j0 < KT ? j->n - j0 : KT;
        for (int c = 0; c < d; c++) {
            float *dst = key_tile(j, c / dh, t) + (c % dh) * KT;
            for (int i = 0; i < m; i++) dst[i] = j->k[(size_t)(j0 + i) * d + c];
            for (int i = m; i < KT; i++) dst[i] = 0.0f;
        }
        for (int i = j0; i < j0 + m; i++)
            for (int h = 0; h < j->n_head; h++)
                memcpy(j->vp + ((size_t)h * j->n + i) * dh, j->v + (size_t)i * d + h * dh,
                       (size_t)dh * sizeof(float));
    }
}

typedef float vf16 __attribute__((vector_size(64)));

/* acc[r][x] = sum_k a[r][k] b[k][W x .. W x + W) for RT rows of a (lda
 * apart), k_len rows of b (ldb apart) and two vectors of W floats: the
 * register tile of both products, 16 columns with 8-float vectors (AVX2),
 * 32 with 16-float ones (AVX-512: Intel's cores have two 512-bit FMA units,
 * so 8-float vectors would use half of them). */
#define TILE_PRODUCT(acc, V, W, a, lda, b, ldb, k_len)                   \
    do {                                                                \
        for (int r_ = 0; r_ < RT; r_++) acc[r_][0] = acc[r_][1] = (V){0}; \
        for (int k_ = 0; k_ < (k_len); k_++) {                          \
            V b0_, b1_;                                                 \
            memcpy(&b0_, (b) + k_ * (ldb), sizeof b0_);                 \
            memcpy(&b1_, (b) + k_ * (ldb) + (W), sizeof b1_);           \
            for (int r_ = 0; r_ < RT; r_++) {                           \
                float s_ = (a)[r_ * (lda) + k_];   /* a broadcast */    \
                acc[r_][0] += b0_ * s_;                                 \
                acc[r_][1] += b1_ * s_;                                 \
            }                                                           \
        }                                                               \
    } while (0)

/* s[r][0 .. 16 or 32) = qs[r] . kt[.][...] for RT rows; each row's running
 * maximum (a vector of lane maxima) updated when every column is a
 * position (the padding's zeros must not count). */
SH_VINLINE void tile_scores(float *s, int lds, const float *qs, int dh, const float *kt, int ldk,
                            vf8 *rmax, int all_valid, int wide) {
    if (wide) {
        vf16 acc[RT][2];
        TILE_PRODUCT(acc, vf16, 16, qs, (size_t)dh, kt, (size_t)ldk, dh);
        for (int r = 0; r < RT; r++) memcpy(s + (size_t)r * lds, acc[r], sizeof acc[r]);
    } else {
        vf8 acc[RT][2];
        TILE_PRODUCT(acc, vf8, 8, qs, (size_t)dh, kt, (size_t)ldk, dh);
        for (int r = 0; r < RT; r++) memcpy(s + (size_t)r * lds, acc[r], sizeof acc[r]);
    }
    if (all_valid)
        for (int r = 0; r < RT; r++)
            for (int x = 0; x < (wide ? 4 : 2); x++)
                rmax[r] = vf8_max(rmax[r], vf8_load(s + (size_t)r * lds + 8 * x));
}

/* o[r][0 .. 16 or 32) = inv[r] * sum_j p[r][j] v[j][...] over n positions
 * (v rows dh apart), the first `rows` of RT rows stored. */
SH_VINLINE void tile_values(float *o, int ldo, int rows, const float *p, int ldp, const float *v,
                            int dh, int n, const float *inv, int wide) {
    if (wide) {
        vf16 acc[RT][2];
        TILE_PRODUCT(acc, vf16, 16, p, (size_t)ldp, v, (size_t)dh, n);
        for (int r = 0; r < rows; r++) {
            vf16 o2[2] = {acc[r][0] * inv[r], acc[r][1] * inv[r]};
            memcpy(o + (size_t)r * ldo, o2, sizeof o2);
        }
    } else {
        vf8 acc[RT][2];
        TILE_PRODUCT(acc, vf8, 8, p, (size_t)ldp, v, (size_t)dh, n);
        for (int r = 0; r < rows; r++) {
            vf8 o2[2] = {acc[r][0] * inv[r], acc[r][1] * inv[r]};
            memcpy(o + (size_t)r * ldo, o2, sizeof o2);
        }
    }
}

/* One head's attention for the query rows of one block. */
SH_CLONES static void attend_block(const battn_job *j, int h, int blk, float *s, float *qs,
                                   float *inv) {
    int n = j->n, np = j->np, d = j->d, dh = j->dh, i0 = blk * QB;
    int rows = n - i0 < QB ? n - i0 : QB, rows_pad = (rows + RT - 1) / RT * RT;
    /* the block's queries, scaled; rows past the end are zero (their
     * scores are computed and never used) */
    int dh8 = dh & ~7;
    for (int r = 0; r < rows_pad; r++) {
        const float *src = j->q + (size_t)(i0 + r) * d + h * dh;
        float *dst = qs + r * dh;
        if (r >= rows) {
            memset(dst, 0, (size_t)dh * sizeof *dst);
            continue;
        }
        for (int c = 0; c < dh8; c += 8) vf8_store(dst + c, vf8_load(src + c) * j->scale);
        for (int c = dh8; c < dh; c++) dst[c] = src[c] * j->scale;
    }
    vf8 rmax[QB];
    for (int r = 0; r < rows_pad; r++) rmax[r] = vf8_splat(-INFINITY);
    /* 32 columns a tile where there are 32 vector registers (AVX-512) */
    int wide = j->wide, step = wide ? 2 * CT : CT;
    for (int j0 = 0; j0 < np; j0 += step) {
        const float *kt = key_tile(j, h, j0 / KT) + j0 % KT;
        for (int r0 = 0; r0 < rows_pad; r0 += RT) {
            float *st = s + (size_t)r0 * np + j0;
            if (wide)
                tile_scores(st, np, qs + r0 * dh, dh, kt, KT, rmax + r0, j0 + step <= n, 1);
            else
                tile_scores(st, np, qs + r0 * dh, dh, kt, KT, rmax + r0, j0 + step <= n, 0);
        }
    }
    /* softmax: exp(s - max) here, the division by the sum at the end */
    for (int r = 0; r < rows; r++) {
        float *row = s + (size_t)r * np, max = vf8_hmax(rmax[r]);
        for (int i = n / step * step; i < n; i++) max = row[i] > max ? row[i] : max;
        inv[r] = 1.0f / vf8_exp_row(row, n, max);
    }
    for (int r = rows; r < rows_pad; r++) inv[r] = 0.0f;
    const float *v = j->vp + (size_t)h * n * dh;
    float *o = j->out + (size_t)i0 * d + h * dh;
    int c_wide = wide ? dh / (2 * CT) * (2 * CT) : 0, c_tiles = dh / CT * CT;
    for (int r0 = 0; r0 < rows; r0 += RT) {
        int m = rows - r0 < RT ? rows - r0 : RT;
        const float *p = s + (size_t)r0 * np;
        for (int c0 = 0; c0 < c_wide; c0 += 2 * CT)
            tile_values(o + (size_t)r0 * d + c0, d, m, p, np, v + c0, dh, n, inv + r0, 1);
        for (int c0 = c_wide; c0 < c_tiles; c0 += CT)
            tile_values(o + (size_t)r0 * d + c0, d, m, p, np, v + c0, dh, n, inv + r0, 0);
    }
    /* head widths that are not a multiple of 16 (no Whisper model has one) */
    for (int r = 0; r < rows; r++)
        for (int c = c_tiles; c < dh; c++) {
            float acc = 0.0f;
            for (int i = 0; i < n; i++) acc += s[(size_t)r * np + i] * v[(size_t)i * dh + c];
            o[(size_t)r * d + c] = acc * inv[r];
        }
}

/* Slot by slot (each slot's scratch is used by one thread at a time):
 * tasks (head, block of rows) taken one at a time from a shared counter,
 * so a thread the machine slows down does fewer of them instead of the
 * others waiting for it. Each task's output is the same whoever runs it. */
static void attend_range(void *arg, int begin, int end) {
    battn_job *j = arg;
    for (int slot = begin; slot < end; slot++) {
        float *s = j->scratch + (size_t)slot * slot_floats(j->np, j->d);
        float *qs = s + (size_t)QB * j->np, *inv = qs + (size_t)QB * j->d;
        for (int t; (t = atomic_fetch_add(&j->next_task, 1)) < j->n_tasks;)
            attend_block(j, t / j->n_blocks, t % j->n_blocks, s, qs, inv);
    }
}

void sh_block_attention(sh_pool *pool, int n_slots, float *out, const float *q, const float *k,
                        const float *v, int n, int d, int n_head, float scale, float *scratch) {
    if (n < 1 || n_head < 1 || n_slots < 1) return;
    int n_blocks = (n + QB - 1) / QB;
    battn_job j = {.out = out, .q = q, .k = k, .v = v, .n = n, .np = padded(n), .d = d,
                   .n_head = n_head, .dh = d / n_head, .n_blocks = n_blocks,
                   .n_tasks = n_head * n_blocks, .n_slots = n_slots, .scale = scale,
                   .kt = scratch};
    /* SHRUTI_ATTN_TILES=narrow: the AVX2 tiles on an AVX-512 CPU (tests) */
    const char *tiles = getenv("SHRUTI_ATTN_TILES");
    j.wide = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
             !(tiles && strcmp(tiles, "narrow") == 0);
    atomic_init(&j.next_task, 0);
    j.vp = j.kt + (size_t)d * j.np;
    j.scratch = j.vp + (size_t)d * n;
    sh_pool_run(pool, j.np / KT, pack_range, &j);
    sh_pool_run(pool, n_slots, attend_range, &j);
}
