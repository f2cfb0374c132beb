/* test_attention.c - the half-precision attention kernels against the
 * float32 ones on the same (widened) keys and values: 1 to 8 query rows,
 * head widths 64 and 32, bands of positions that start and end anywhere.
 * Needs no test data. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/f16.h"
#include "cpu/attention.h"
#include "test_util.h"

enum { N_POS = 300, D = 256 };

static float rnd(unsigned *s) {
    *s = *s * 1664525u + 1013904223u;
    return (float)((*s >> 8) & 0xffff) / 32768.0f - 1.0f;
}

int main(void) {
    unsigned seed = 99u;
    static float q[SH_ATTN_MAX_ROWS * D], kf[N_POS * D], vf[N_POS * D];
    static uint16_t kh[N_POS * D], vh[N_POS * D];
    for (int i = 0; i < N_POS * D; i++) {
        kh[i] = sh_f32_to_f16(rnd(&seed));
        vh[i] = sh_f32_to_f16(rnd(&seed));
        kf[i] = sh_f16_to_f32(kh[i]);
        vf[i] = sh_f16_to_f32(vh[i]);
    }
    for (int i = 0; i < SH_ATTN_MAX_ROWS * D; i++) q[i] = rnd(&seed);
    static float s_want[SH_ATTN_MAX_ROWS * 8 * N_POS], s_got[SH_ATTN_MAX_ROWS * 8 * N_POS];
    static float o_want[SH_ATTN_MAX_ROWS * D], o_got[SH_ATTN_MAX_ROWS * D];
    const int bands[][2] = {{0, N_POS}, {7, 150}, {151, 152}, {290, 300}};
    for (int dh = 32; dh <= 64; dh *= 2) {
        int n_head = D / dh;
        for (int rows = 1; rows <= SH_ATTN_MAX_ROWS; rows++)
            for (int b = 0; b < 4; b++) {
                int p0 = bands[b][0], p1 = bands[b][1];
                memset(s_want, 0, sizeof s_want), memset(s_got, 0, sizeof s_got);
                sh_attn_scores(s_want, N_POS, q, D, rows, n_head, dh, kf, D, p0, p1, 0.125f);
                sh_attn_scores_half(s_got, N_POS, q, D, rows, n_head, dh, kh, D, p0, p1, 0.125f);
                double es = 0;
                for (int i = 0; i < rows * n_head * N_POS; i++)
                    es = fmax(es, fabs(s_want[i] - s_got[i]));
                CHECK(es < 1e-5, "scores dh %d rows %d band %d-%d: off by %g", dh, rows, p0, p1, es);
                /* the values, weighted by the scores just computed */
                for (int i = 0; i < rows * D; i++) o_want[i] = o_got[i] = 0.5f;
                sh_attn_values(o_want, D, s_want, N_POS, rows, n_head, dh, vf, D, p0, p1);
                sh_attn_values_half(o_got, D, s_want, N_POS, rows, n_head, dh, vh, D, p0, p1);
                double ev = 0;
                for (int i = 0; i < rows * D; i++) ev = fmax(ev, fabs(o_want[i] - o_got[i]));
                CHECK(ev < 1e-4, "values dh %d rows %d band %d-%d: off by %g", dh, rows, p0, p1, ev);
            }
    }
    return t_finish("test_attention");
}
