/* pick.cuh - the greedy pick's device pieces, shared by the pick's kernels
 * (kernels.cu) and the fused step that begins with the pick of the step
 * before (fused_step.cu): the running summaries of logits under the mask
 * (the likeliest text and timestamp tokens and their log-sum-exp), the
 * choice from a whole summary (the timestamp rule), and the int8 logit
 * screen's row products with their exact recomputation from the half rows
 * (see kernels.cu's k_screen_pick for the bound that makes them exact). */
#ifndef SHRUTI_CUDA_PICK_CUH
#define SHRUTI_CUDA_PICK_CUH

#include <cuda_fp16.h>
#include <limits.h>
#include <math.h>

#include "cuda/kernels.h"
#include "cuda/rows.cuh"
#include "cuda/warp.cuh"

/* (value, index) of the larger; ties go to the lower index, as a scan. */
static __device__ __forceinline__ void arg_merge(float &v, int &i, float v2, int i2) {
    if (v2 > v || (v2 == v && i2 < i)) v = v2, i = i2;
}

/* log-sum-exp in the running form (max m, sum s of exp(x - m)). */
static __device__ __forceinline__ void lse_merge(float &m, double &s, float m2, double s2) {
    if (m2 == -INFINITY) return;
    if (m == -INFINITY) {
        m = m2, s = s2;
    } else if (m2 > m) {
        s = s * exp((double)m - m2) + s2, m = m2;
    } else {
        s += s2 * exp((double)m2 - m);
    }
}

struct pick_acc {
    float best_v[2];   /* likeliest text [0] and timestamp [1] token */
    int best_i[2];
    float m[2];        /* log-sum-exp of text and timestamps */
    double s[2];
};

static __device__ void pick_acc_merge(pick_acc &a, const pick_acc &b) {
    for (int k = 0; k < 2; k++) {
        arg_merge(a.best_v[k], a.best_i[k], b.best_v[k], b.best_i[k]);
        lse_merge(a.m[k], a.s[k], b.m[k], b.s[k]);
    }
}

static __device__ pick_acc pick_acc_shfl(const pick_acc &a, int o) {
    pick_acc b;
    for (int k = 0; k < 2; k++) {
        b.best_v[k] = __shfl_xor_sync(0xffffffffu, a.best_v[k], o);
        b.best_i[k] = __shfl_xor_sync(0xffffffffu, a.best_i[k], o);
        b.m[k] = __shfl_xor_sync(0xffffffffu, a.m[k], o);
        b.s[k] = __shfl_xor_sync(0xffffffffu, a.s[k], o);
    }
    return b;
}

static __device__ void pick_acc_init(pick_acc &a) {
    for (int k = 0; k < 2; k++) a.best_v[k] = -INFINITY, a.best_i[k] = INT_MAX, a.m[k] = -INFINITY, a.s[k] = 0.0;
}

static __device__ void pick_acc_warp(pick_acc &a) {
    for (int o = WARP / 2; o > 0; o >>= 1) pick_acc_merge(a, pick_acc_shfl(a, o));
}

/* Where the text rows end under mask mk: its first timestamp row, or
 * n_out where it has none. */
static __device__ __forceinline__ int text_rows_end(const sh_pick_mask &mk, int n_out) {
    return mk.ts_begin >= 0 && mk.ts_begin < n_out ? mk.ts_begin : n_out;
}

/* Whether token i is suppressed: bit i of banned (the suppressed tokens
 * as a bitmap of the vocabulary, which the host rewrites only when they
 * change, before the logits' kernel) or in one of the mask's ranges. */
static __device__ __forceinline__ bool suppressed(unsigned banned_word, int i,
                                                  const sh_pick_mask &mk) {
    bool out = banned_word >> (i % 32) & 1u;
    for (int r = 0; r < mk.n_ranges; r++) out |= i >= mk.ranges[r][0] && i < mk.ranges[r][1];
    return out;
}

/* A chunk's summary while its block makes it: as pick_acc, but the sums
 * of exponentials in float (2048 terms of at most 1 each, relative to the
 * chunk's maximum: float's 1e-7 a term is far inside the 1e-4 the
 * log-probabilities are held to) and the maximum as the log-sum-exp's
 * offset. Double and its slow exp are left to the merge of the chunks. */
struct chunk_acc {
    float best_v[2];   /* text [0] and timestamp [1]: the maximum, -inf for none */
    int best_i[2];
    float s[2];        /* sum of exp(x - best_v) */
};

static __device__ __forceinline__ void chunk_acc_merge(chunk_acc &a, const chunk_acc &b) {
#pragma unroll
    for (int k = 0; k < 2; k++) {
        if (b.best_v[k] == -INFINITY) continue;
        if (a.best_v[k] == -INFINITY) {
            a.best_v[k] = b.best_v[k], a.best_i[k] = b.best_i[k], a.s[k] = b.s[k];
        } else if (b.best_v[k] > a.best_v[k] || (b.best_v[k] == a.best_v[k] && b.best_i[k] < a.best_i[k])) {
            a.s[k] = a.s[k] * expf(a.best_v[k] - b.best_v[k]) + b.s[k];
            a.best_v[k] = b.best_v[k], a.best_i[k] = b.best_i[k];
        } else {
            a.s[k] += b.s[k] * expf(b.best_v[k] - a.best_v[k]);
        }
    }
}

static __device__ void chunk_acc_init(chunk_acc &a) {
    for (int k = 0; k < 2; k++) a.best_v[k] = -INFINITY, a.best_i[k] = INT_MAX, a.s[k] = 0.0f;
}

/* The warp's lanes' summaries merged (every lane holds the result); from
 * WARP / 2 / 2^k: those of each run of 2^(5-k) lanes. */
static __device__ void chunk_acc_warp(chunk_acc &a, int from = WARP / 2) {
    for (int o = from; o > 0; o >>= 1) {
        chunk_acc b;
#pragma unroll
        for (int k = 0; k < 2; k++) {
            b.best_v[k] = __shfl_xor_sync(0xffffffffu, a.best_v[k], o);
            b.best_i[k] = __shfl_xor_sync(0xffffffffu, a.best_i[k], o);
            b.s[k] = __shfl_xor_sync(0xffffffffu, a.s[k], o);
        }
        chunk_acc_merge(a, b);
    }
}

static __device__ pick_acc as_pick_acc(const chunk_acc &c) {
    pick_acc a;
    for (int k = 0; k < 2; k++)
        a.best_v[k] = c.best_v[k], a.best_i[k] = c.best_i[k], a.m[k] = c.best_v[k], a.s[k] = c.s[k];
    return a;
}

/* Whether the timestamp rule rules text out: the timestamps' probability
 * together above the likeliest text token's. */
static __device__ __forceinline__ bool pick_text_out(const pick_acc &a, int ts_begin) {
    return ts_begin >= 0 && a.m[1] != -INFINITY && log(a.s[1]) + a.m[1] > (double)a.best_v[0];
}

/* A row's greedy token from its whole summary (pick_decide's, without the
 * log-probability's sums). */
static __device__ int pick_token(const pick_acc &a, int ts_begin) {
    float best_v = a.best_v[0];
    int best_i = a.best_i[0];
    if (pick_text_out(a, ts_begin)) best_v = -INFINITY, best_i = INT_MAX;
    arg_merge(best_v, best_i, a.best_v[1], a.best_i[1]);
    return best_i == INT_MAX ? 0 : best_i;   /* everything masked: as a scan, the first */
}

/* A row's choice from its whole summary: the timestamp rule decided
 * (timestamps likelier together than any text token: text is out), the
 * greedy token and its log-probability. */
static __device__ void pick_decide(const pick_acc &a, int ts_begin, int *token, double *logprob) {
    float best_v = a.best_v[0];
    int best_i = a.best_i[0];
    float m = a.m[0];
    double s = a.s[0];
    if (pick_text_out(a, ts_begin)) best_v = -INFINITY, best_i = INT_MAX, m = -INFINITY, s = 0.0;
    arg_merge(best_v, best_i, a.best_v[1], a.best_i[1]);
    lse_merge(m, s, a.m[1], a.s[1]);
    if (best_i == INT_MAX) best_i = 0;   /* everything masked: as a scan, the first */
    *token = best_i;
    *logprob = (double)best_v - (log(s) + m);
}

/* The choice written to result (and the token to next_io, at next_pos,
 * when given). */
static __device__ void pick_choose(const pick_acc &a, int ts_begin, sh_pick_result *result,
                                   int *next_io, int row, int next_pos) {
    int token;
    double logprob;
    pick_decide(a, ts_begin, &token, &logprob);
    result->token = token;
    result->logprob = logprob;
    if (next_io) next_io[0] = next_pos, next_io[1 + row] = token;
}

/* Logit v of token o into one kind's running summary (best value, its
 * token, sum of exp(x - best)); tokens come in increasing o, so ties keep
 * the first. */
static __device__ __forceinline__ void take_logit(float &best_v, int &best_i, float &s, float v,
                                                  int o) {
    if (best_v == -INFINITY) {
        best_v = v, best_i = o, s = 1.0f;
    } else if (v > best_v) {
        s = s * expf(best_v - v) + 1.0f;
        best_v = v, best_i = o;
    } else {
        s += expf(v - best_v);
    }
}

/* Logit v of token o, which the mask keeps, into the summary a. */
static __device__ __forceinline__ void pick_take_kept(chunk_acc &a, float v, int o,
                                                      const sh_pick_mask &mk) {
    if (v == -INFINITY) return;
    if (mk.ts_begin >= 0 && o >= mk.ts_begin) take_logit(a.best_v[1], a.best_i[1], a.s[1], v, o);
    else take_logit(a.best_v[0], a.best_i[0], a.s[0], v, o);
}

/* Logit v of token o into the summary a, unless the mask rules it out. */
static __device__ __forceinline__ void pick_take(chunk_acc &a, float v, int o,
                                                 const sh_pick_mask &mk, const unsigned *banned) {
    if (!suppressed(__ldg(&banned[o / 32]), o, mk)) pick_take_kept(a, v, o, mk);
}

/* The relative margin for float rounding: a product's sum of n_in <= 1280
 * terms here is ~40 additions deep (2.4e-6 of |w| |x|), far inside. */
#define SCREEN_ROUNDING 1e-4f

/* A lane's chunks of an int8 row (8 weights each, c = lane * 8 + k * 256)
 * and their scales, in as few registers as they take (several rows are in
 * flight a warp). */
template <int CHUNKS>
struct screen_row {
    uint2 w[CHUNKS];
    __half s[CHUNKS];
};

template <int CHUNKS>
static __device__ __forceinline__ void screen_load(const int8_t *q, const __half *qs, int n_out,
                                                   int n_in, int o, screen_row<CHUNKS> &r) {
    if (o < n_out)
        lane_chunks<CHUNKS>(n_in, [&](int k, int c) {
            r.w[k] = load_weights<true>((const uint2 *)(q + (size_t)o * n_in + c));
            r.s[k] = qs[(size_t)o * (n_in / 32) + c / 32];
        });
}

/* x'.w' of the row (every lane gets it). */
template <int CHUNKS>
static __device__ __forceinline__ float screen_dot(const screen_row<CHUNKS> &r, const int8_t *xq,
                                                   const float *xsc, int n_in) {
    float acc = 0.0f;
    lane_chunks<CHUNKS>(n_in, [&](int k, int c) {
        uint2 xv = *(const uint2 *)(xq + c);
        int sum = __dp4a((int)r.w[k].x, (int)xv.x, 0);
        sum = __dp4a((int)r.w[k].y, (int)xv.y, sum);
        acc = fmaf((float)sum, __half2float(r.s[k]) * xsc[c / 32], acc);
    });
    return warp_sum(acc);
}

/* A half row's chunks (load_chunks') times x summed over the warp in
 * k_gemv_wide's order: the row's exact logit as it makes it. */
template <int CHUNKS>
static __device__ __forceinline__ float exact_dot(const uint4 (*raw)[2], const float *xs,
                                                  int n_in) {
    float acc = 0.0f;
    dot_chunks<SH_GW_F16, 1, CHUNKS>(&acc, raw, xs, 0, n_in);
    return warp_sum(acc);
}

template <int CHUNKS>
static __device__ __forceinline__ float exact_logit(const void *w, int n_out, int n_in, int o,
                                                    const float *xs) {
    uint4 raw[CHUNKS][2];
    load_chunks<SH_GW_F16, CHUNKS>(w, NULL, n_out, n_in, o, raw);
    return exact_dot<CHUNKS>(raw, xs, n_in);
}

/* The warp's timestamp rows' exact logits: rows text + first + j * warps
 * below n_out, row j's in lane j (ts_row holds the first's chunks, loaded
 * early; a grid with more such rows than warps loads the others here). */
template <int CHUNKS>
static __device__ float screen_ts_rows(const void *w, int n_out, int n_in, int text, int first,
                                       int warps, uint4 (*ts_row)[2], const float *xs) {
    const int lane = threadIdx.x % WARP;
    float v_ts = -INFINITY;
    int j = 0;
    for (int o = text + first; o < n_out; o += warps, j++) {
        if (j > 0) load_chunks<SH_GW_F16, CHUNKS>(w, NULL, n_out, n_in, o, ts_row);
        float acc = exact_dot<CHUNKS>(ts_row, xs, n_in);
        if (j == lane) v_ts = acc;
    }
    return v_ts;
}

/* The warp's text rows' screened logits x'.w': rows first + j * warps
 * below text, row j's in lane j. AHEAD rows in flight (rows holds the
 * first AHEAD, loaded early): the warp's few rows (~16-27) would each
 * wait a whole memory latency otherwise. */
template <int CHUNKS, int AHEAD>
static __device__ float screen_text_rows(const int8_t *q, const __half *qs, int text, int n_in,
                                         int first, int warps, screen_row<CHUNKS> (&rows)[AHEAD],
                                         const int8_t *xq, const float *xsc) {
    const int lane = threadIdx.x % WARP;
    float v = -INFINITY;
    for (int j0 = 0; first + j0 * warps < text; j0 += AHEAD) {
#pragma unroll
        for (int i = 0; i < AHEAD; i++) {
            const int o = first + (j0 + i) * warps;
            if (o >= text) break;
            float acc = screen_dot(rows[i], xq, xsc, n_in);
            screen_load(q, qs, text, n_in, o + AHEAD * warps, rows[i]);
            if (j0 + i == lane) v = acc;
        }
    }
    return v;
}

/* How far a row's screened logit may be from its exact one: |x| |w - w'|
 * + |x - x'| |w'| and the rounding margin (bd: the row's bounds as
 * k_screen_build made them; x_norm, q_err: quantize_x's). */
static __device__ __forceinline__ float screen_bound(float x_norm, float q_err, float2 bd) {
    return x_norm * bd.x + (q_err + SCREEN_ROUNDING * (2.0f * x_norm + q_err)) * bd.y;
}

/* The half rows of the lanes in keep (rows first + lane * warps) on their
 * way into L2: their exact logits come next, after the block agrees on
 * its lower bound. */
static __device__ void screen_prefetch_rows(const void *w, int n_in, int first, int warps,
                                            unsigned keep) {
    const int lane = threadIdx.x % WARP;
    for (; keep; keep &= keep - 1) {
        const char *row = (const char *)w + (size_t)(first + (__ffs(keep) - 1) * warps) * n_in * 2;
        for (int at = lane * 128; at < n_in * 2; at += WARP * 128)
            asm volatile("prefetch.global.L2 [%0];" ::"l"(row + at));
    }
}

/* x (xs, n_in floats) as int8 with a float scale per 32 (xq, xsc), each
 * of n_warps warps a block of 32 at a time; every thread gets |x| and
 * |x - x'|, rounded up. sync: a barrier of those warps. */
template <typename Barrier>
static __device__ void quantize_x(const float *xs, int n_in, int8_t *xq, float *xsc, float *red,
                                  float *x_norm, float *q_err, int n_warps, Barrier sync) {
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    float x2 = 0.0f, e2 = 0.0f;
    for (int b = warp; b < n_in / 32; b += n_warps) {
        /* any rounding of k is measured in e2 (with s as the dot uses it) */
        float v = xs[b * 32 + lane], amax = warp_max(fabsf(v)), s = amax / 127.0f;
        float k = amax > 0.0f ? fminf(fmaxf(rintf(v * (127.0f / amax)), -127.0f), 127.0f) : 0.0f;
        xq[b * 32 + lane] = (int8_t)k;
        if (lane == 0) xsc[b] = s;
        x2 += v * v, e2 += (v - k * s) * (v - k * s);
    }
    x2 = warp_sum(x2), e2 = warp_sum(e2);
    if (lane == 0) red[warp] = x2, red[16 + warp] = e2;
    sync();
    float a = lane < n_warps ? red[lane] : 0.0f, b = lane < n_warps ? red[16 + lane] : 0.0f;
    *x_norm = sqrtf(warp_sum(a)) * 1.001f, *q_err = sqrtf(warp_sum(b)) * 1.001f;
}

#endif
