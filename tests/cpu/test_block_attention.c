/* test_block_attention.c - the encoder's blocked self-attention against a
 * double-precision softmax(q k^T * scale) v, head by head: position counts
 * on and off the block (48 rows) and tile (6 rows, 16 columns) edges, head
 * widths with and without a 16-column tail, 1 to 3 slots on pools of 1 and
 * 2 threads, the AVX-512 and the AVX2 tiles (SHRUTI_ATTN_TILES=narrow),
 * and score rows whose softmax overflows in float without its maximum
 * subtracted. Needs no test data. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/block_attention.h"
#include "test_util.h"

static float rnd(unsigned *s) {
    *s = *s * 1664525u + 1013904223u;
    return (float)((*s >> 8) & 0xffff) / 32768.0f - 1.0f;
}

/* Largest |got - want| over all rows and heads, the reference in double. */
static double worst_error(const float *got, const float *q, const float *k, const float *v, int n,
                          int d, int n_head, float scale) {
    int dh = d / n_head;
    double worst = 0, *p = malloc((size_t)n * sizeof *p);
    for (int h = 0; h < n_head; h++)
        for (int i = 0; i < n; i++) {
            double max = -INFINITY, sum = 0;
            for (int j = 0; j < n; j++) {
                double s = 0;
                for (int c = 0; c < dh; c++)
                    s += (double)q[(size_t)i * d + h * dh + c] * k[(size_t)j * d + h * dh + c];
                p[j] = s * scale;
                max = fmax(max, p[j]);
            }
            for (int j = 0; j < n; j++) sum += p[j] = exp(p[j] - max);
            for (int c = 0; c < dh; c++) {
                double o = 0;
                for (int j = 0; j < n; j++) o += p[j] / sum * v[(size_t)j * d + h * dh + c];
                worst = fmax(worst, fabs(o - got[(size_t)i * d + h * dh + c]));
            }
        }
    free(p);
    return worst;
}

/* One shape through slots 1-3 on pool; every output element checked. */
static void check_shape(sh_pool *pool, int threads, int n, int d, int n_head, float q_gain,
                        unsigned seed) {
    size_t nd = (size_t)n * d;
    float *q = malloc(nd * sizeof *q), *k = malloc(nd * sizeof *k), *v = malloc(nd * sizeof *v);
    float *out = malloc(nd * sizeof *out);
    for (size_t i = 0; i < nd; i++)
        q[i] = rnd(&seed) * q_gain, k[i] = rnd(&seed), v[i] = rnd(&seed);
    float scale = 1.0f / sqrtf((float)(d / n_head));
    for (int slots = 1; slots <= 3; slots++) {
        float *scratch = malloc(sh_block_attention_floats(n, d, slots) * sizeof(float));
        for (size_t i = 0; i < nd; i++) out[i] = NAN;   /* every element must be written */
        sh_block_attention(pool, slots, out, q, k, v, n, d, n_head, scale, scratch);
        double e = worst_error(out, q, k, v, n, d, n_head, scale);
        CHECK(e < 2e-5, "n %d d %d heads %d gain %g, %d slots on %d threads, %s tiles: off by %g",
              n, d, n_head, q_gain, slots, threads,
              getenv("SHRUTI_ATTN_TILES") ? "narrow" : "default", e);
        free(scratch);
    }
    free(q), free(k), free(v), free(out);
}

int main(void) {
    /* positions, width, heads: head widths 64, 16, 32, 24 (a tail of 8), 8
     * (tail only); positions 1, one short of a tile, a block and one more,
     * and the 1500 of a real window (on the cheaper width) */
    const int shapes[][3] = {{1, 64, 1},   {5, 64, 1},  {47, 64, 4}, {48, 32, 2}, {49, 128, 2},
                             {100, 48, 3}, {97, 24, 1}, {50, 40, 5}, {200, 64, 4}, {1500, 32, 2}};
    /* both tile widths: AVX-512's (where the CPU has it) and AVX2's */
    for (int round = 0; round < 4; round++) {
        int threads = 1 + round % 2;
        if (round == 2) setenv("SHRUTI_ATTN_TILES", "narrow", 1);
        sh_pool *pool = sh_pool_new(threads);
        CHECK(pool != NULL, "pool of %d threads", threads);
        if (!pool) break;
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            check_shape(pool, threads, shapes[s][0], shapes[s][1], shapes[s][2], 1.0f,
                        (unsigned)(7 + s));
        /* scores near 200: exp overflows float unless the maximum goes first */
        check_shape(pool, threads, 60, 32, 2, 50.0f, 1234u);
        sh_pool_free(pool);
    }
    return t_finish("test_block_attention");
}
