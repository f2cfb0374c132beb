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
 * The keys are first transposed (with zero columns up to a multiple of 16
 * positions) so that the score tile's inner loop reads 16 consecutive
 * positions of one key dimension; register tiles of 6 rows x 16 columns
 * (12 accumulators) fit the 16 vector registers of AVX2. This file is
 * compiled with -ffp-contract=fast: a * b + c on vectors becomes one FMA. */
#include "cpu/block_attention.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/vmath.h"

#define QB 48   /* query rows per task */
#define RT 6    /* rows per register tile */
#define CT 16   /* columns per register tile: two vectors */

/* positions rounded up to a whole number of wide tiles */
static int padded(int n) { return (n + 2 * CT - 1) / (2 * CT) * (2 * CT); }

/* per slot: scores (QB, np), queries (QB, dh <= d), row maxima and sums */
static size_t slot_floats(int np, int d) { return (size_t)QB * ((size_t)np + (size_t)d + 16); }

size_t sh_block_attention_floats(int n, int d, int n_slots) {
    return (size_t)d * padded(n) + (size_t)d * n + (size_t)n_slots * slot_floats(padded(n), d);
}

typedef struct {
    float *out;
    const float *q, *k, *v;
    int n, np, d, n_head, dh, n_blocks, n_tasks, n_slots;
    int wide;   /* AVX-512: 32 vector registers for wider tiles */
    float scale;
    float *kt;        /* (d, np): the keys transposed, zero past n */
    float *vp;        /* (n_head, n, dh): each head's values contiguous */
    float *scratch;   /* slot_floats() per slot */
    atomic_int next_task;
} battn_job;

/* A tile of 16 positions per item: kt[c][j] = k[j][c] (zero past n), and
 * the positions' values regrouped head by head. */
static void pack_range(void *arg, int begin, int end) {
    const battn_job *j = arg;
    int d = j->d, dh = j->dh;
    for (int t = begin; t < end; t++) {
        int j0 = t * CT, m = j->n - j0 < CT ? j->n - j0 : CT;
        for (int c = 0; c < d; c++) {
            float *dst = j->kt + (size_t)c * j->np + j0;
            for (int i = 0; i < m; i++) dst[i] = j->k[(size_t)(j0 + i) * d + c];
            for (int i = m; i < CT; i++) dst[i] = 0.0f;
        }
        for (int i = j0; i < j0 + m; i++)
            for (int h = 0; h < j->n_head; h++)
                memcpy(j->vp + ((size_t)h * j->n + i) * dh, j->v + (size_t)i * d + h * dh,
                       (size_t)dh * sizeof(float));
    }
}

/* acc[r][0..8 nv) = sum_k a[r][k] b[k][0..8 nv) for RT rows of a (lda
 * apart) and k_len rows of b (ldb apart): the one register tile of both
 * products. nv is a constant after inlining: the accumulators stay in
 * registers. */
SH_VINLINE void tile_product(vf8 (*acc)[4], const float *a, size_t lda, const float *b,
                             size_t ldb, int k_len, int nv) {
    for (int r = 0; r < RT; r++)
        for (int x = 0; x < nv; x++) acc[r][x] = vf8_splat(0.0f);
    for (int k = 0; k < k_len; k++) {
        vf8 bv[4];
        for (int x = 0; x < nv; x++) bv[x] = vf8_load(b + k * ldb + 8 * x);
        for (int r = 0; r < RT; r++) {
            float s = a[r * lda + k];   /* vector * scalar: a broadcast */
            for (int x = 0; x < nv; x++) acc[r][x] += bv[x] * s;
        }
    }
}

/* s[r][0..8 nv) = qs[r] . kt[.][0..8 nv) for RT rows; each row's running
 * maximum (a vector of lane maxima) updated when every column is a
 * position (the padding's zeros must not count). */
SH_VINLINE void tile_scores(float *s, int lds, const float *qs, int dh, const float *kt, int ldk,
                            vf8 *rmax, int all_valid, int nv) {
    vf8 acc[RT][4];
    tile_product(acc, qs, (size_t)dh, kt, (size_t)ldk, dh, nv);
    for (int r = 0; r < RT; r++)
        for (int x = 0; x < nv; x++) {
            vf8_store(s + (size_t)r * lds + 8 * x, acc[r][x]);
            if (all_valid) rmax[r] = vf8_max(rmax[r], acc[r][x]);
        }
}

/* o[r][0..8 nv) = inv[r] * sum_j p[r][j] v[j][0..8 nv) over n positions
 * (v rows dh apart), the first `rows` of RT rows stored. */
SH_VINLINE void tile_values(float *o, int ldo, int rows, const float *p, int ldp, const float *v,
                            int dh, int n, const float *inv, int nv) {
    vf8 acc[RT][4];
    tile_product(acc, p, (size_t)ldp, v, (size_t)dh, n, nv);
    for (int r = 0; r < rows; r++)
        for (int x = 0; x < nv; x++) vf8_store(o + (size_t)r * ldo + 8 * x, acc[r][x] * inv[r]);
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
    const float *kt = j->kt + (size_t)h * dh * np;
    vf8 rmax[QB];
    for (int r = 0; r < rows_pad; r++) rmax[r] = vf8_splat(-INFINITY);
    /* 32 columns a tile where there are 32 vector registers (AVX-512) */
    int wide = j->wide, step = wide ? 2 * CT : CT;
    for (int j0 = 0; j0 < np; j0 += step)
        for (int r0 = 0; r0 < rows_pad; r0 += RT) {
            float *st = s + (size_t)r0 * np + j0;
            if (wide)
                tile_scores(st, np, qs + r0 * dh, dh, kt + j0, np, rmax + r0, j0 + step <= n, 4);
            else
                tile_scores(st, np, qs + r0 * dh, dh, kt + j0, np, rmax + r0, j0 + step <= n, 2);
        }
    /* softmax: exp(s - max) here, the division by the sum at the end */
    for (int r = 0; r < rows; r++) {
        float *row = s + (size_t)r * np, max = -INFINITY;
        for (int l = 0; l < 8; l++) max = rmax[r][l] > max ? rmax[r][l] : max;
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
            tile_values(o + (size_t)r0 * d + c0, d, m, p, np, v + c0, dh, n, inv + r0, 4);
        for (int c0 = c_wide; c0 < c_tiles; c0 += CT)
            tile_values(o + (size_t)r0 * d + c0, d, m, p, np, v + c0, dh, n, inv + r0, 2);
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
    sh_pool_run(pool, j.np / CT, pack_range, &j);
    sh_pool_run(pool, n_slots, attend_range, &j);
}
