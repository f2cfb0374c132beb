/* test_logit_screen.c - the int8 logit screen against every logit
 * computed from the half weights: after refining, a row's k largest
 * values are the exact k largest (same tokens, same bits, ties to the
 * lower id) and every approximation left is below them; near-ties the
 * int8 copy cannot separate, masked tokens, the timestamp range, a zero
 * input (every token tied: the whole row instead) and a NaN input. Also
 * the cases where no screen is made. Needs no test data. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/f16.h"
#include "cpu/gemv.h"
#include "cpu/logit_screen.h"
#include "test_util.h"

enum { N_ROWS = 6000, N_IN = 384, TEXT_END = 5500 };

static float rnd(unsigned *s) {
    *s = *s * 1664525u + 1013904223u;
    return (float)((*s >> 8) & 0xffff) / 32768.0f - 1.0f;
}

/* The k largest of x[0, n) (-inf excluded), ties to the lower id. */
static int top_k(const float *x, int n, int k, int *out) {
    int found = 0;
    for (int t = 0; t < n; t++) {
        if (!(x[t] > -INFINITY)) continue;
        if (found == k && !(x[t] > x[out[k - 1]])) continue;
        int p = found < k ? found++ : k - 1;
        while (p > 0 && x[out[p - 1]] < x[t]) out[p] = out[p - 1], p--;
        out[p] = t;
    }
    return found;
}

static double log_sum_exp(const float *x, int n) {
    double m = -INFINITY, s = 0;
    for (int t = 0; t < n; t++) m = x[t] > m ? x[t] : m;
    for (int t = 0; t < n; t++) s += exp(x[t] - m);
    return m + log(s);
}

/* One screened row against the exact one. */
static void check_row(const sh_logit_screen *s, sh_mat w, sh_pool *pool, const float *h, int k,
                      const char *what) {
    static float exact[N_ROWS], v[N_ROWS];
    static int idx[N_ROWS / 16];
    sh_gemv_rows(NULL, exact, N_ROWS, h, N_IN, 1, w, N_IN, NULL, N_IN, N_ROWS, 1.0f);
    sh_screen_bound bd;
    sh_logit_screen_scores(pool, s, h, 1, v, &bd);
    /* masked tokens, as the filters leave them */
    for (int t = 0; t < N_ROWS; t += 7) exact[t] = v[t] = -INFINITY;
    int n = sh_logit_screen_refine(s, w, h, bd, TEXT_END, k, v, idx);
    CHECK(n > 0 && n < N_ROWS / 16, "%s: %d tokens computed", what, n);
    int want[33], got[33];
    int nw = top_k(exact, TEXT_END, k, want), ng = top_k(v, TEXT_END, k, got);
    CHECK(nw == ng, "%s: %d vs %d best", what, ng, nw);
    for (int i = 0; i < nw && i < ng; i++)
        CHECK(want[i] == got[i] && memcmp(&exact[want[i]], &v[got[i]], sizeof(float)) == 0,
              "%s: choice %d: token %d (%g) vs %d (%g)", what, i, got[i], v[got[i]], want[i],
              exact[want[i]]);
    /* the normalizer, with the timestamp range computed exactly as the
     * caller does: the approximations move it very little */
    memcpy(v + TEXT_END, exact + TEXT_END, sizeof(float) * (N_ROWS - TEXT_END));
    double dl = fabs(log_sum_exp(v, N_ROWS) - log_sum_exp(exact, N_ROWS));
    CHECK(dl < 1e-3, "%s: log-sum-exp off by %g", what, dl);
}

int main(void) {
    unsigned seed = 7u;
    float *wf = malloc(sizeof(float) * N_ROWS * N_IN);
    uint16_t *wh = malloc(2 * (size_t)N_ROWS * N_IN);
    /* rows of different norms, and pairs of rows equal but for one value,
     * whose logits differ by less than the int8 copy can tell */
    for (int t = 0; t < N_ROWS; t++) {
        float scale = 0.02f + 0.1f * (float)(t % 13) / 13.0f;
        for (int i = 0; i < N_IN; i++) wf[t * N_IN + i] = scale * rnd(&seed);
    }
    for (int t = 100; t < 200; t += 2) {
        memcpy(wf + (t + 1) * N_IN, wf + t * N_IN, sizeof(float) * N_IN);
        wf[(t + 1) * N_IN + t % N_IN] += 1e-3f;
    }
    sh_floats_to_halves(wh, wf, (size_t)N_ROWS * N_IN);
    sh_mat w = {wh, SH_MAT_F16};
    sh_logit_screen *s = sh_logit_screen_new(w, N_ROWS, N_IN);
    if (!s) {
        printf("SKIP: no logit screen on this CPU (it needs AVX2)\n");
        return SKIP_CODE;
    }
    sh_pool *pool = sh_pool_new(2);
    float h[N_IN];
    char what[64];
    for (int trial = 0; trial < 12; trial++) {
        /* a residual-stream-like input: mostly small, a few large values */
        for (int i = 0; i < N_IN; i++) h[i] = rnd(&seed) * (i % 41 == 0 ? 12.0f : 1.0f);
        if (trial >= 6) {
            /* aim at a near-tie pair, both far above the rest */
            int t = 100 + 2 * trial;
            for (int i = 0; i < N_IN; i++) h[i] = sh_f16_at(wh + (size_t)t * N_IN + i) * 400.0f;
        }
        for (int k = 1; k <= 6; k += 5) {
            snprintf(what, sizeof what, "trial %d k %d", trial, k);
            check_row(s, w, pool, h, k, what);
        }
    }

    /* every token tied (zero input): too many to screen */
    static float v[N_ROWS];
    static int idx[N_ROWS / 16];
    sh_screen_bound bd;
    memset(h, 0, sizeof h);
    sh_logit_screen_scores(pool, s, h, 1, v, &bd);
    CHECK(sh_logit_screen_refine(s, w, h, bd, TEXT_END, 1, v, idx) == -1, "zero input screened");
    h[3] = NAN;
    sh_logit_screen_scores(pool, s, h, 1, v, &bd);
    CHECK(sh_logit_screen_refine(s, w, h, bd, TEXT_END, 1, v, idx) == -1, "NaN input screened");

    /* no screen for float32 weights, rows not made of 32-blocks, or when
     * switched off */
    CHECK(!sh_logit_screen_new((sh_mat){wf, SH_MAT_F32}, N_ROWS, N_IN), "float32 screened");
    CHECK(!sh_logit_screen_new(w, N_ROWS / 2, N_IN * 2 - 16), "n_in 752 screened");
    setenv("SHRUTI_LOGIT_SCREEN", "0", 1);
    CHECK(!sh_logit_screen_new(w, N_ROWS, N_IN), "screened with SHRUTI_LOGIT_SCREEN=0");
    unsetenv("SHRUTI_LOGIT_SCREEN");

    sh_logit_screen_free(s);
    sh_pool_free(pool);
    free(wf), free(wh);
    return t_finish("test_logit_screen");
}
