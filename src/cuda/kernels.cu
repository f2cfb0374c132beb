/* kernels.cu - the CUDA kernels of the Whisper forward pass: the decoder's
 * memory-bound GEMV (float32, half or int8 weights, every weight read once
 * for all rows), split-key decoder attention over the caches, layer norm,
 * softmax, GELU epilogues, im2col for the conv stem, embeddings and cache
 * moves; then the choices on the device: the greedy pick and the beams'
 * top-k under the logit masks, the logits' persistent GEMV with the
 * greedy pick folded in, and that pick through the token embedding's int8
 * screen (float16 models). The encoder's and the prompt's GEMMs are cuBLAS
 * (cuda_backend.c). */
#include <cuda_fp16.h>
#include <limits.h>
#include <math.h>
#include <string.h>

#include <type_traits>

#include "cuda/kernels.h"
#include "cuda/launch.cuh"
#include "cuda/pick.cuh"
#include "cuda/ptx.cuh"
#include "cuda/rows.cuh"
#include "cuda/warp.cuh"

/* Sum (or max) over a block of at most 1024 threads; every thread gets it. */
template <bool MAX>
static __device__ float block_reduce(float v, float *shared32) {
    int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP, n_warps = (blockDim.x + WARP - 1) / WARP;
    v = MAX ? warp_max(v) : warp_sum(v);
    __syncthreads();
    if (lane == 0) shared32[warp] = v;
    __syncthreads();
    float t = lane < n_warps ? shared32[lane] : MAX ? -INFINITY : 0.0f;
    return MAX ? warp_max(t) : warp_sum(t);
}

static __device__ float block_sum(float v, float *shared32) { return block_reduce<false>(v, shared32); }
static __device__ float block_max(float v, float *shared32) { return block_reduce<true>(v, shared32); }

static __device__ __forceinline__ void store_act(void *out, long i, float v, int act_half) {
    if (act_half)
        ((__half *)out)[i] = __float2half_rn(v);
    else
        ((float *)out)[i] = v;
}

static unsigned blocks_for(long n, int threads) { return (unsigned)((n + threads - 1) / threads); }

/* ------------------------------------------------------------------ GEMV */

template <int KIND>
static __device__ __forceinline__ void load8(const void *w, const __half *scales, int n_in, int o,
                                             int c, float *out) {
    if (KIND == SH_GW_F32) {
        const float4 *p = (const float4 *)((const float *)w + (size_t)o * n_in + c);
        float4 a = __ldg(p), b = __ldg(p + 1);
        out[0] = a.x, out[1] = a.y, out[2] = a.z, out[3] = a.w;
        out[4] = b.x, out[5] = b.y, out[6] = b.z, out[7] = b.w;
    } else if (KIND == SH_GW_F16) {
        uint4 raw = __ldg((const uint4 *)((const __half *)w + (size_t)o * n_in + c));
        const __half2 *h = (const __half2 *)&raw;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            float2 f = __half22float2(h[i]);
            out[2 * i] = f.x, out[2 * i + 1] = f.y;
        }
    } else {
        uint2 raw = __ldg((const uint2 *)((const int8_t *)w + (size_t)o * n_in + c));
        const int8_t *q = (const int8_t *)&raw;
        float sc = __half2float(scales[(size_t)o * (n_in / 32) + c / 32]);
#pragma unroll
        for (int i = 0; i < 8; i++) out[i] = (float)q[i] * sc;
    }
}

/* Two words on their way into L1 (a layer norm's gain and bias, read
 * after the norm's reductions), no registers held. */
static __device__ __forceinline__ void prefetch_l1_pair(const float *a, const float *b) {
    asm volatile("prefetch.global.L1 [%0];\n\tprefetch.global.L1 [%1];" ::"l"(a), "l"(b));
}

/* xs[0..n) = the layer norm of row (g, b), or without g the row itself,
 * n <= PER * blockDim.x; every load issued before the first use (one
 * latency). The caller syncs the block before reading xs. */
template <int PER>
static __device__ __forceinline__ void row_to_shared(const float *row, int n, const float *g,
                                                     const float *b, float *xs, float *red) {
    float v[PER], sum = 0.0f, var = 0.0f;
#pragma unroll
    for (int k = 0; k < PER; k++) {
        int i = threadIdx.x + k * blockDim.x;
        v[k] = i < n ? row[i] : 0.0f;
        /* the norm's weights on their way with the row (into L1, no
         * registers held): one latency before the products, not two */
        if (g && i < n) prefetch_l1_pair(g + i, b + i);
    }
    if (g) {
#pragma unroll
        for (int k = 0; k < PER; k++) sum += v[k];
        float mean = block_sum(sum, red) / n;
#pragma unroll
        for (int k = 0; k < PER; k++) {
            int i = threadIdx.x + k * blockDim.x;
            float t = i < n ? v[k] - mean : 0.0f;
            var += t * t;
        }
        float inv = rsqrtf(block_sum(var, red) / n + 1e-5f);
#pragma unroll
        for (int k = 0; k < PER; k++) {
            int i = threadIdx.x + k * blockDim.x;
            if (i < n) v[k] = (v[k] - mean) * inv * g[i] + b[i];
        }
    }
#pragma unroll
    for (int k = 0; k < PER; k++) {
        int i = threadIdx.x + k * blockDim.x;
        if (i < n) xs[i] = v[k];
    }
}

/* One output of a GEMV, o of input row n, and what its epilogue needs:
 * the bias and the cache position (loaded before the wait for the
 * previous kernel, gemv_out_at) and the value accumulated into (loaded
 * right after it, gemv_out_wait: its latency hides behind the work). */
struct gemv_out {
    bool on;
    int o, n, pos;
    float bias, prev;
    float *dst;
};

static __device__ __forceinline__ gemv_out gemv_out_at(bool on, int o, int n, const float *bias,
                                                       const sh_kv_target &kv) {
    gemv_out g = {on, o, n, 0, 0.0f, 0.0f, NULL};
    g.bias = bias && on ? bias[o] : 0.0f;
    g.pos = kv.k_cache && on ? *kv.pos0 + n % kv.n_tokens : 0;
    return g;
}

/* The wait for the previous kernel (programmatic dependent launch). */
static __device__ __forceinline__ void gemv_out_wait(gemv_out &g, float *y, int ldy,
                                                     int epilogue) {
    PDL_LAUNCH();
    PDL_WAIT();
    g.dst = g.on ? y + (size_t)g.n * ldy + g.o : NULL;
    g.prev = epilogue == SH_GEMV_ACCUM && g.on ? *g.dst : 0.0f;
}

/* The output's value (bias not yet added) stored, accumulated or through
 * GELU, and for a qkv product k and v also into the caches. */
static __device__ __forceinline__ void gemv_finish(const gemv_out &g, float v, int epilogue,
                                                   const sh_kv_target &kv) {
    v += g.bias;
    if (epilogue == SH_GEMV_ACCUM)
        *g.dst = g.prev + v;
    else
        *g.dst = epilogue == SH_GEMV_GELU ? gelu(v) : v;
    if (kv.k_cache && g.o >= kv.d) {
        int b = g.n / kv.n_tokens;
        size_t at = ((size_t)b * kv.n_ctx + g.pos) * kv.d + g.o % kv.d;
        store_act(g.o < 2 * kv.d ? kv.k_cache : kv.v_cache, (long)at, v, kv.act_half);
    }
}

/* One warp per output row; lanes take 8 columns at a time; each weight is
 * read once and used for all R rows of x. With LN the block first
 * normalises its R input rows into shared memory (the decoder's layer
 * norms cost no kernel of their own); with kv the k and v columns of a
 * fused qkv product also go into the self-attention caches. */
template <int KIND, int R, int LN>
__global__ void k_gemv(const void *w, const __half *scales, int n_out, int n_in, const float *x,
                       int ldx, float *y, int ldy, const float *bias, int epilogue,
                       const float *ln_g, const float *ln_b, sh_kv_target kv) {
    extern __shared__ float xs[];
    __shared__ float red[32];
    int lane = threadIdx.x % WARP;
    int o = blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP;
    /* this row's first GEMV_PREFETCH chunks, before waiting on x */
    uint4 pre[GEMV_PREFETCH][2];
    load_chunks<KIND>(w, scales, n_out, n_in, o, pre);
    /* lane r < R finishes output o of row r */
    gemv_out out = gemv_out_at(o < n_out && lane < R, o, lane, bias, kv);
    gemv_out_wait(out, y, ldy, epilogue);
    if (LN) {
        /* n_in <= 16 * blockDim.x (2048 for 128 threads) */
        for (int r = 0; r < R; r++)
            row_to_shared<16>(x + (size_t)r * ldx, n_in, ln_g, ln_b, xs + r * n_in, red);
        __syncthreads();
    }
    if (o >= n_out) return;
    const float *xin = LN ? xs : x;
    int ld = LN ? n_in : ldx;
    float acc[R];
#pragma unroll
    for (int r = 0; r < R; r++) acc[r] = 0.0f;
    dot_chunks<KIND, R>(acc, pre, xin, ld, n_in);
#pragma unroll 4
    for (int c = lane * 8 + GEMV_PREFETCH * WARP * 8; c < n_in; c += WARP * 8) {
        float wv[8];
        load8<KIND>(w, scales, n_in, o, c, wv);
        dot8<R>(acc, wv, xin, ld, c);
    }
#pragma unroll
    for (int r = 0; r < R; r++) acc[r] = warp_sum(acc[r]);
    if (lane < R) {
        float v = 0.0f;
#pragma unroll
        for (int r = 0; r < R; r++)
            if (r == lane) v = acc[r];
        gemv_finish(out, v, epilogue, kv);
    }
}

/* ------------------------------------------------- GEMV on tensor cores */

/* Half or int8 weights against 1..SH_GEMV_MAX_ROWS input rows on the
 * tensor cores. The GEMV above does R multiply-adds and R loads of x per weight,
 * so it turns compute-bound from two rows on (medium, 4 rows: fc1 29 us
 * against 11 for one); here a warp's mma.m16n8k16 takes 16 weight rows
 * against all 8 input rows at once. x goes in as two halves, hi + lo
 * (x - hi), so it keeps about 22 bits like the float GEMV's input; the
 * products are exact and summed in float32. A block owns 16 output rows;
 * its warps take the 32-column chunks in turn and meet in shared memory.
 * Column order inside a chunk is free for a dot product: lane (g, t)
 * loads 16 contiguous bytes of weight rows g and g + 8 and of x row g,
 * and feeds them to two mma k-steps as the fragment layout's columns.
 * Int8 weights become halves exactly; a chunk is one scale group, so each
 * chunk's sum is scaled once. */
#define MMA_WARPS 8
#define MMA_UNROLL 4    /* chunks a warp loads before using the first */
#define MMA_PAD 32      /* halves after each row of xs: no bank conflicts */
#define MMA_LONG 2048   /* inputs from which a GEMV takes 2 x MMA_WARPS warps */

/* Eight floats as hi and lo halves, packed in pairs. */
static __device__ __forceinline__ void split_hi_lo(const float *v, uint4 *hi, uint4 *lo) {
    unsigned *h = (unsigned *)hi, *l = (unsigned *)lo;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        __half2 a = __floats2half2_rn(v[2 * i], v[2 * i + 1]);
        __half2 b = half2_rest(make_float2(v[2 * i], v[2 * i + 1]), a);
        h[i] = *(unsigned *)&a, l[i] = *(unsigned *)&b;
    }
}

/* Layer norm of the block's input rows (all at once: one round of
 * reductions for every row), into xs as hi and lo halves. */
static __device__ void ln_rows_hi_lo(const float *x, int ldx, int rows, int n_in,
                                     const float *ln_g, const float *ln_b, __half *xh, __half *xl,
                                     int stride) {
    const int PER = 6, NT = MMA_WARPS * WARP;   /* n_in <= 1536 */
    __shared__ float part[MMA_WARPS][SH_GEMV_MAX_ROWS];
    __shared__ float stat[SH_GEMV_MAX_ROWS];
    int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    float v[SH_GEMV_MAX_ROWS][PER];
#pragma unroll
    for (int r = 0; r < SH_GEMV_MAX_ROWS; r++)
#pragma unroll
        for (int k = 0; k < PER; k++) {
            int i = threadIdx.x + k * NT;
            v[r][k] = r < rows && i < n_in ? x[(size_t)r * ldx + i] : 0.0f;
        }
    float mean[SH_GEMV_MAX_ROWS], inv[SH_GEMV_MAX_ROWS];
    for (int pass = 0; pass < 2; pass++) {
#pragma unroll
        for (int r = 0; r < SH_GEMV_MAX_ROWS; r++) {
            float s = 0.0f;
#pragma unroll
            for (int k = 0; k < PER; k++) {
                int i = threadIdx.x + k * NT;
                float t = pass ? v[r][k] - mean[r] : v[r][k];
                s += i < n_in ? (pass ? t * t : t) : 0.0f;
            }
            s = warp_sum(s);
            if (lane == 0) part[warp][r] = s;
        }
        __syncthreads();
        if (threadIdx.x < SH_GEMV_MAX_ROWS) {
            float s = 0.0f;
            for (int w = 0; w < MMA_WARPS; w++) s += part[w][threadIdx.x];
            stat[threadIdx.x] = s / n_in;
        }
        __syncthreads();
#pragma unroll
        for (int r = 0; r < SH_GEMV_MAX_ROWS; r++) {
            if (pass)
                inv[r] = rsqrtf(stat[r] + 1e-5f);
            else
                mean[r] = stat[r];
        }
        __syncthreads();   /* part and stat are reused by the next pass */
    }
#pragma unroll
    for (int k = 0; k < PER; k++) {
        int i = threadIdx.x + k * NT;
        if (i >= n_in) continue;
        float g = ln_g[i], b = ln_b[i];
#pragma unroll
        for (int r = 0; r < SH_GEMV_MAX_ROWS; r++) {
            if (r >= rows) break;
            float y = (v[r][k] - mean[r]) * inv[r] * g + b;
            __half h = __float2half_rn(y);
            xh[(size_t)r * stride + i] = h;
            xl[(size_t)r * stride + i] = __float2half_rn(y - __half2float(h));
        }
    }
    __syncthreads();
}

/* Four int8 weights as two half2 (exact: -128..127). */
static __device__ __forceinline__ void int8x4_to_half2(unsigned q, unsigned *lo, unsigned *hi) {
    /* offset binary bytes under 0x64 make halves 1024 + (q + 128); less 1152 */
    unsigned u = q ^ 0x80808080u;
    const __half2 bias = __floats2half2_rn(1152.0f, 1152.0f);
    unsigned a = __byte_perm(u, 0x64646464u, 0x5150), b = __byte_perm(u, 0x64646464u, 0x5352);
    __half2 ha = __hsub2(*(__half2 *)&a, bias), hb = __hsub2(*(__half2 *)&b, bias);
    *lo = *(unsigned *)&ha, *hi = *(unsigned *)&hb;
}

/* This lane's 8 weights of a chunk (c: its 32-column index) as raw bits:
 * half weights in 16 bytes; int8 weights in .x, .y and their row's scale
 * for the chunk (one per 32 columns) in .z. Evicted from L2 first (H200,
 * a 5-beam step: medium 1.302 -> 1.290 ms, tiny 0.202 -> 0.193). */
template <int KIND>
static __device__ __forceinline__ uint4 mma_load(const void *w, const __half *scales, int n_in,
                                                 int row, int c, int t) {
    const size_t at = (size_t)row * n_in + c * 32 + 8 * t;
    if (KIND == SH_GW_F16) return load_weights<true>((const uint4 *)((const __half *)w + at));
    uint2 q = load_weights<true>((const uint2 *)((const int8_t *)w + at));
    return make_uint4(q.x, q.y, __half_as_ushort(scales[(size_t)row * (n_in / 32) + c]), 0);
}

/* acc += weights a (rows g), b (rows g + 8) times x (hi + lo): two mma
 * k-steps of the lane's 8 columns, each with hi then lo. */
template <int KIND>
static __device__ __forceinline__ void mma_chunk(float *acc, uint4 a, uint4 b, uint4 hi, uint4 lo) {
    if (KIND == SH_GW_F16) {
        mma16816(acc, a.x, b.x, a.y, b.y, hi.x, hi.y);
        mma16816(acc, a.x, b.x, a.y, b.y, lo.x, lo.y);
        mma16816(acc, a.z, b.z, a.w, b.w, hi.z, hi.w);
        mma16816(acc, a.z, b.z, a.w, b.w, lo.z, lo.w);
        return;
    }
    /* int8: the integers exactly as halves, the chunk's sum then scaled */
    unsigned a0, a1, a2, a3, b0, b1, b2, b3;
    int8x4_to_half2(a.x, &a0, &a1), int8x4_to_half2(a.y, &a2, &a3);
    int8x4_to_half2(b.x, &b0, &b1), int8x4_to_half2(b.y, &b2, &b3);
    float part[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    mma16816(part, a0, b0, a1, b1, hi.x, hi.y);
    mma16816(part, a0, b0, a1, b1, lo.x, lo.y);
    mma16816(part, a2, b2, a3, b3, hi.z, hi.w);
    mma16816(part, a2, b2, a3, b3, lo.z, lo.w);
    float sa = __half2float(__ushort_as_half((unsigned short)a.z));
    float sb = __half2float(__ushort_as_half((unsigned short)b.z));
    acc[0] += sa * part[0], acc[1] += sa * part[1];
    acc[2] += sb * part[2], acc[3] += sb * part[3];
}

template <int KIND, int LN, int WARPS>
__global__ void __launch_bounds__(WARPS *WARP, WARPS == MMA_WARPS ? 2 : 1)
    k_gemv_mma(const void *w, const __half *scales, int n_out, int n_in, const float *x, int ldx,
               int rows, float *y, int ldy, const float *bias, int epilogue, const float *ln_g,
               const float *ln_b, sh_kv_target kv) {
    static_assert(!LN || WARPS == MMA_WARPS, "ln_rows_hi_lo takes MMA_WARPS warps");
    extern __shared__ __align__(16) unsigned char mma_smem[];   /* LN: x as below */
    __shared__ float sums[WARPS][16 * 8];
    int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP, g = lane / 4, t = lane % 4;
    int o0 = blockIdx.x * 16, n_chunks = n_in / 32, stride = n_in + MMA_PAD;
    /* rows past n_out load the last row: in bounds, never stored */
    int ra = min(o0 + g, n_out - 1), rb = min(o0 + g + 8, n_out - 1);
    uint4 ca[MMA_UNROLL], cb[MMA_UNROLL];
    /* the first chunks of weights before the wait for x */
#pragma unroll
    for (int u = 0; u < MMA_UNROLL; u++) {
        int c = warp + u * WARPS;
        if (c < n_chunks)
            ca[u] = mma_load<KIND>(w, scales, n_in, ra, c, t), cb[u] = mma_load<KIND>(w, scales, n_in, rb, c, t);
    }
    /* thread (row, n) < 128 finishes output o0 + row of input row n */
    int eo = o0 + threadIdx.x / 8, e_n = threadIdx.x % 8;
    gemv_out out = gemv_out_at(threadIdx.x < 128 && eo < n_out && e_n < rows, eo, e_n, bias, kv);
    /* LN: its gains and biases (weights) on their way before the wait,
     * as row_to_shared's */
    if (LN)
        for (int i = threadIdx.x; i < n_in; i += WARPS * WARP) prefetch_l1_pair(ln_g + i, ln_b + i);
    gemv_out_wait(out, y, ldy, epilogue);
    /* LN: the normalised rows as (rows, stride) hi halves, then lo */
    __half *xh = (__half *)mma_smem, *xl = xh + (size_t)rows * stride;
    if (LN) ln_rows_hi_lo(x, ldx, rows, n_in, ln_g, ln_b, xh, xl, stride);
    bool has_row = g < rows;   /* columns of B past the rows are zero */
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int c0 = warp; c0 < n_chunks; c0 += MMA_UNROLL * WARPS) {
        uint4 hi[MMA_UNROLL], lo[MMA_UNROLL];
        if (c0 != warp) {   /* the first round's weights came before the wait */
#pragma unroll
            for (int u = 0; u < MMA_UNROLL; u++) {
                int c = c0 + u * WARPS;
                if (c < n_chunks)
                    ca[u] = mma_load<KIND>(w, scales, n_in, ra, c, t), cb[u] = mma_load<KIND>(w, scales, n_in, rb, c, t);
            }
        }
#pragma unroll
        for (int u = 0; u < MMA_UNROLL; u++) {
            int c = c0 + u * WARPS;
            hi[u] = lo[u] = make_uint4(0, 0, 0, 0);
            if (c >= n_chunks || !has_row) continue;
            if (LN) {
                hi[u] = *(const uint4 *)(xh + (size_t)g * stride + c * 32 + 8 * t);
                lo[u] = *(const uint4 *)(xl + (size_t)g * stride + c * 32 + 8 * t);
            } else {
                const float4 *p = (const float4 *)(x + (size_t)g * ldx + c * 32 + 8 * t);
                float4 a = p[0], b = p[1];
                float v[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
                split_hi_lo(v, &hi[u], &lo[u]);
            }
        }
#pragma unroll
        for (int u = 0; u < MMA_UNROLL; u++) {
            if (c0 + u * WARPS >= n_chunks) break;
            mma_chunk<KIND>(acc, ca[u], cb[u], hi[u], lo[u]);
        }
    }
    /* acc: rows g and g + 8 of the tile, input rows 2t and 2t + 1 */
    sums[warp][g * 8 + 2 * t] = acc[0], sums[warp][g * 8 + 2 * t + 1] = acc[1];
    sums[warp][(g + 8) * 8 + 2 * t] = acc[2], sums[warp][(g + 8) * 8 + 2 * t + 1] = acc[3];
    __syncthreads();
    if (!out.on) return;
    float v = 0.0f;
#pragma unroll
    for (int k = 0; k < WARPS; k++) v += sums[k][threadIdx.x];
    gemv_finish(out, v, epilogue, kv);
}

/* The tensor-core GEMV's dynamic shared memory: with LN, the rows'
 * normalised hi and lo halves. */
static size_t mma_shared_bytes(const sh_gmat *w, int rows, int ln) {
    return ln ? (size_t)2 * rows * (w->n_in + MMA_PAD) * sizeof(__half) : 0;
}

/* Whether the tensor-core GEMV takes this product (see gemv_rows). */
static bool mma_fits(const sh_gmat *w, int rows, int ln) {
    return (w->kind == SH_GW_F16 || w->kind == SH_GW_I8) && rows <= SH_GEMV_MAX_ROWS &&
           w->n_in % 32 == 0 && (!ln || w->n_in <= 6 * MMA_WARPS * WARP) &&
           mma_shared_bytes(w, rows, ln) <= 48 * 1024;
}

template <int KIND, int LN>
static void gemv_rows(cudaStream_t s, const sh_gmat *w, const float *x, int ldx, int rows,
                      float *y, int ldy, const float *bias, int epilogue, const float *ln_g,
                      const float *ln_b, sh_kv_target kv, int flags) {
    int pdl = flags & SH_K_PDL;
    if ((flags & SH_K_MMA) && (rows > 1 || (flags & SH_K_MMA_ONE)) && mma_fits(w, rows, LN)) {
        size_t shm = mma_shared_bytes(w, rows, LN);
        const int K = KIND == SH_GW_F32 ? SH_GW_F16 : KIND;
        auto run = [&](auto warps) {
            constexpr int W = decltype(warps)::value;
            launch(pdl, k_gemv_mma<K, LN, W>, blocks_for(w->n_out, 16), W * WARP, shm, s, w->w,
                   (const __half *)w->scales, w->n_out, w->n_in, x, ldx, rows, y, ldy, bias,
                   epilogue, ln_g, ln_b, kv);
        };
        /* long rows (fc2's) over twice the warps: half the rounds of
         * loads after the wait (H200, 5-beam step: medium 1.366 -> 1.294
         * ms, large 2.40 -> 2.27, base 0.294 -> 0.280); with LN never */
        if (KIND == SH_GW_F32) return;
        if (!LN && w->n_in >= MMA_LONG)
            run(std::integral_constant<int, LN ? MMA_WARPS : 2 * MMA_WARPS>());
        else
            run(std::integral_constant<int, MMA_WARPS>());
        return;
    }
    const int threads = 128, per_block = threads / WARP;
    unsigned grid = blocks_for(w->n_out, per_block);
    size_t shm = LN ? (size_t)rows * w->n_in * sizeof(float) : 0;
    const __half *sc = (const __half *)w->scales;
#define SH_GEMV_CASE(R)                                                                        \
    case R:                                                                                    \
        launch(pdl, k_gemv<KIND, R, LN>, grid, threads, shm, s, w->w, sc, w->n_out, w->n_in, x,  \
               ldx, y, ldy, bias, epilogue, ln_g, ln_b, kv);                                   \
        break;
    switch (rows) {
        SH_GEMV_CASE(1)
        SH_GEMV_CASE(2)
        SH_GEMV_CASE(3)
        SH_GEMV_CASE(4)
        SH_GEMV_CASE(5)
        SH_GEMV_CASE(6)
        SH_GEMV_CASE(7)
        SH_GEMV_CASE(8)
    }
#undef SH_GEMV_CASE
}

template <int KIND>
static void gemv_kind(cudaStream_t s, const sh_gmat *w, const float *x, int ldx, int rows,
                      float *y, int ldy, const float *bias, int epilogue, const float *ln_g,
                      const float *ln_b, sh_kv_target kv, int flags) {
    if (ln_g)
        gemv_rows<KIND, 1>(s, w, x, ldx, rows, y, ldy, bias, epilogue, ln_g, ln_b, kv, flags);
    else
        gemv_rows<KIND, 0>(s, w, x, ldx, rows, y, ldy, bias, epilogue, ln_g, ln_b, kv, flags);
}

extern "C" void sh_k_gemv_ln(cudaStream_t s, const sh_gmat *w, const float *x, int ldx,
                             int rows, float *y, int ldy, const float *bias, int epilogue,
                             const float *ln_g, const float *ln_b, const sh_kv_target *kv,
                             int flags) {
    sh_kv_target none = {0};
    const sh_kv_target k = kv ? *kv : none;
    if (w->kind == SH_GW_F32)
        gemv_kind<SH_GW_F32>(s, w, x, ldx, rows, y, ldy, bias, epilogue, ln_g, ln_b, k, flags);
    else if (w->kind == SH_GW_F16)
        gemv_kind<SH_GW_F16>(s, w, x, ldx, rows, y, ldy, bias, epilogue, ln_g, ln_b, k, flags);
    else
        gemv_kind<SH_GW_I8>(s, w, x, ldx, rows, y, ldy, bias, epilogue, ln_g, ln_b, k, flags);
}

extern "C" void sh_k_gemv(cudaStream_t s, const sh_gmat *w, const float *x, int ldx, int rows,
                          float *y, int ldy, const float *bias, int epilogue, int flags) {
    sh_k_gemv_ln(s, w, x, ldx, rows, y, ldy, bias, epilogue, NULL, NULL, NULL, flags);
}

/* ------------------------------------------------------------ conversions */

__global__ void k_to_half(const void *w, const __half *scales, int kind, int n_in, long n,
                          __half *out) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v;
    if (kind == SH_GW_F32) {
        v = ((const float *)w)[i];
    } else if (kind == SH_GW_F16) {
        out[i] = ((const __half *)w)[i];
        return;
    } else {
        long o = i / n_in, c = i % n_in;
        v = (float)((const int8_t *)w)[i] * __half2float(scales[o * (n_in / 32) + c / 32]);
    }
    out[i] = __float2half_rn(v);
}

extern "C" void sh_k_to_half(cudaStream_t s, const sh_gmat *w, uint16_t *out) {
    long n = (long)w->n_out * w->n_in;
    k_to_half<<<blocks_for(n, 256), 256, 0, s>>>(w->w, (const __half *)w->scales, w->kind,
                                                   w->n_in, n, (__half *)out);
}

/* dst = src's columns in blocks of `width`: row b * n_out + j of dst is
 * columns b * width .. (b + 1) * width - 1 of src's row j (elements of
 * esize bytes; int8 scales alike, width / 32 a row a block). A thread a
 * 16-byte piece of a row. */
__global__ void k_col_blocks(const unsigned char *src, const uint16_t *scales, int n_out, int n_in,
                             int width, int esize, int swizzle, unsigned char *dst,
                             uint16_t *dst_scales) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    int pieces = width * esize / 16, blocks = n_in / width;
    if (i >= (long)n_out * blocks * pieces) return;
    int p = (int)(i % pieces), b = (int)(i / pieces % blocks), j = (int)(i / pieces / blocks);
    const uint4 *from = (const uint4 *)(src + ((size_t)j * n_in + (size_t)b * width) * esize) + p;
    size_t row = (size_t)b * n_out + j;
    ((uint4 *)(dst + row * width * esize))[swizzle ? SH_SWIZZLE(row, p) : p] = *from;
    if (scales && p == 0) {
        int g = width / 32;
        const uint16_t *s = scales + (size_t)j * (n_in / 32) + (size_t)b * g;
        uint16_t *t = dst_scales + ((size_t)b * n_out + j) * g;
        for (int k = 0; k < g; k++) t[k] = s[k];
    }
}

extern "C" void sh_k_col_blocks(cudaStream_t s, const sh_gmat *w, int width, int swizzle,
                                sh_gmat *out) {
    int esize = w->kind == SH_GW_I8 ? 1 : 2;
    long n = (long)w->n_out * (w->n_in / width) * (width * esize / 16);
    k_col_blocks<<<blocks_for(n, 256), 256, 0, s>>>((const unsigned char *)w->w, w->scales,
                                                     w->n_out, w->n_in, width, esize, swizzle,
                                                     (unsigned char *)out->w, out->scales);
}

/* The fused step's cross query folded into the self-attention's sums
 * (sh_fused_layer): from cq (half, (d, d)), the second layer norm's
 * weights (g, b) and the biases: G = cq diag(g) rounded to half, and by
 * G as rounded (what the step multiplies) g1 = G 1 and e = G o_b; c =
 * cq b + cq_b. A warp a row. */
__global__ void k_fold_cross_query(const __half *cq, const float *g, const float *b,
                                   const float *cq_b, const float *o_b, int d, __half *G,
                                   float *e, float *g1, float *c) {
    int i = blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP, lane = threadIdx.x % WARP;
    if (i >= d) return;
    float se = 0.0f, sg = 0.0f, sc = 0.0f;
    for (int j = lane; j < d; j += WARP) {
        float w = __half2float(cq[(size_t)i * d + j]);
        __half gh = __float2half_rn(w * g[j]);
        float gw = __half2float(gh);
        G[(size_t)i * d + j] = gh;
        sg += gw, se += gw * o_b[j], sc += w * b[j];
    }
    sg = warp_sum(sg), se = warp_sum(se), sc = warp_sum(sc);
    if (lane == 0) g1[i] = sg, e[i] = se, c[i] = sc + cq_b[i];
}

extern "C" void sh_k_fold_cross_query(cudaStream_t s, const uint16_t *cq, const float *g,
                                      const float *b, const float *cq_b, const float *o_b, int d,
                                      uint16_t *G, float *e, float *g1, float *c) {
    k_fold_cross_query<<<blocks_for(d, 8), 8 * WARP, 0, s>>>((const __half *)cq, g, b, cq_b, o_b,
                                                             d, (__half *)G, e, g1, c);
}

__global__ void k_f32_to_half(const float *x, __half *out, long n) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = __float2half_rn(x[i]);
}

extern "C" void sh_k_f32_to_half(cudaStream_t s, const float *x, uint16_t *out, long n) {
    k_f32_to_half<<<blocks_for(n, 256), 256, 0, s>>>(x, (__half *)out, n);
}

/* ------------------------------------------------------------ elementwise */

__global__ void k_im2col(const float *in, int channel_major, int n_ch, int in_len, int out_len,
                         int stride, void *col, int act_half) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    long n = (long)out_len * n_ch * 3;
    if (i >= n) return;
    int t = (int)(i / (n_ch * 3)), rest = (int)(i % (n_ch * 3));
    int c = rest / 3, k = rest % 3;
    int src = t * stride + k - 1;
    float v = 0.0f;
    if (src >= 0 && src < in_len)
        v = channel_major ? in[(size_t)c * in_len + src] : in[(size_t)src * n_ch + c];
    store_act(col, i, v, act_half);
}

extern "C" void sh_k_im2col(cudaStream_t s, const float *in, int channel_major, int n_ch,
                            int in_len, int out_len, int stride, void *col, int act_half) {
    long n = (long)out_len * n_ch * 3;
    k_im2col<<<blocks_for(n, 256), 256, 0, s>>>(in, channel_major, n_ch, in_len, out_len, stride,
                                                 col, act_half);
}

/* The elementwise kernels over (rows, n) row-major: where n is a multiple
 * of 4 and every pointer 16-byte aligned (Whisper's widths, cudaMalloc'd
 * buffers), a grid row a matrix row and 4 columns a thread, with float4
 * loads and no index division; else one element a thread. The encoder's
 * medium layer spent 86 us in them at ~1 TB/s before (ncu). */
static bool quads_ok(int rows, int n, const void *a, const void *b, const void *c, const void *d) {
    uintptr_t bits = (uintptr_t)a | (uintptr_t)b | (uintptr_t)c | (uintptr_t)d;
    return n % 4 == 0 && rows <= 65535 && (bits & 15) == 0;
}

static dim3 quad_grid(int rows, int n) { return dim3((unsigned)((n / 4 + 255) / 256), (unsigned)rows); }

static __device__ __forceinline__ void store4(void *out, size_t at, float4 v, int act_half) {
    if (act_half) {
        __half2 lo = __floats2half2_rn(v.x, v.y), hi = __floats2half2_rn(v.z, v.w);
        uint2 raw;
        raw.x = *(unsigned *)&lo, raw.y = *(unsigned *)&hi;
        *(uint2 *)((__half *)out + at) = raw;
    } else {
        *(float4 *)((float *)out + at) = v;
    }
}

static __device__ __forceinline__ float4 add4(float4 a, float4 b) {
    return make_float4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w);
}

static __device__ __forceinline__ float4 gelu4(float4 v) {
    return make_float4(gelu(v.x), gelu(v.y), gelu(v.z), gelu(v.w));
}

/* The quad of columns this thread owns, or -1. */
static __device__ __forceinline__ int quad_col(int n) {
    int c = (blockIdx.x * blockDim.x + threadIdx.x) * 4;
    return c < n ? c : -1;
}

__global__ void k_bias_gelu_add4(float *y, const float *b, const float *add, int n) {
    int c = quad_col(n);
    if (c < 0) return;
    size_t at = (size_t)blockIdx.y * n + c;
    float4 v = gelu4(add4(*(const float4 *)(y + at), *(const float4 *)(b + c)));
    if (add) v = add4(v, *(const float4 *)(add + at));
    *(float4 *)(y + at) = v;
}

__global__ void k_bias_gelu_add(float *y, const float *b, const float *add, int n, long total) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    float v = gelu(y[i] + b[i % n]);
    if (add) v += add[i];
    y[i] = v;
}

extern "C" void sh_k_bias_gelu_add(cudaStream_t s, float *y, const float *b, const float *add,
                                   int rows, int n) {
    long total = (long)rows * n;
    if (quads_ok(rows, n, y, b, add, NULL))
        k_bias_gelu_add4<<<quad_grid(rows, n), 256, 0, s>>>(y, b, add, n);
    else
        k_bias_gelu_add<<<blocks_for(total, 256), 256, 0, s>>>(y, b, add, n, total);
}

__global__ void k_add_bias4(float *y, const float *b, int n) {
    int c = quad_col(n);
    if (c < 0) return;
    size_t at = (size_t)blockIdx.y * n + c;
    *(float4 *)(y + at) = add4(*(const float4 *)(y + at), *(const float4 *)(b + c));
}

__global__ void k_add_bias(float *y, const float *b, int n, long total) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < total) y[i] += b[i % n];
}

extern "C" void sh_k_add_bias(cudaStream_t s, float *y, const float *b, int rows, int n) {
    long total = (long)rows * n;
    if (quads_ok(rows, n, y, b, NULL, NULL))
        k_add_bias4<<<quad_grid(rows, n), 256, 0, s>>>(y, b, n);
    else
        k_add_bias<<<blocks_for(total, 256), 256, 0, s>>>(y, b, n, total);
}

__global__ void k_bias_act4(const float *y, const float *b, int n, int do_gelu, void *out,
                            int act_half) {
    int c = quad_col(n);
    if (c < 0) return;
    size_t at = (size_t)blockIdx.y * n + c;
    float4 v = *(const float4 *)(y + at);
    if (b) v = add4(v, *(const float4 *)(b + c));
    store4(out, at, do_gelu ? gelu4(v) : v, act_half);
}

__global__ void k_bias_act(const float *y, const float *b, int n, long total, int do_gelu,
                           void *out, int act_half) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    float v = y[i] + (b ? b[i % n] : 0.0f);
    store_act(out, i, do_gelu ? gelu(v) : v, act_half);
}

extern "C" void sh_k_bias_act(cudaStream_t s, const float *y, const float *b, int rows, int n,
                              int do_gelu, void *out, int act_half) {
    long total = (long)rows * n;
    if (quads_ok(rows, n, y, b, out, NULL))
        k_bias_act4<<<quad_grid(rows, n), 256, 0, s>>>(y, b, n, do_gelu, out, act_half);
    else
        k_bias_act<<<blocks_for(total, 256), 256, 0, s>>>(y, b, n, total, do_gelu, out, act_half);
}

/* y = gelu(y), half, in place: 8 halves a thread where the buffer is 16-byte
 * aligned and n a multiple of 8, else one. (Four loads a thread, all in
 * flight before the first is used, timed the same: H200, medium's encoder
 * 3.15 / 3.35 / 3.16 -> 3.14 / 3.19 / 3.14 ms a window.) */
__global__ void k_gelu_half8(__half *y, long n8) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n8) return;
    uint4 raw = ((uint4 *)y)[i];
    __half2 *h = (__half2 *)&raw;
#pragma unroll
    for (int k = 0; k < 4; k++) {
        float2 f = __half22float2(h[k]);
        h[k] = __floats2half2_rn(gelu(f.x), gelu(f.y));
    }
    ((uint4 *)y)[i] = raw;
}

__global__ void k_gelu_half(__half *y, long n) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = __float2half(gelu(__half2float(y[i])));
}

extern "C" void sh_k_gelu_half(cudaStream_t s, uint16_t *y, long n) {
    if (n % 8 == 0 && (uintptr_t)y % 16 == 0)
        k_gelu_half8<<<blocks_for(n / 8, 256), 256, 0, s>>>((__half *)y, n / 8);
    else
        k_gelu_half<<<blocks_for(n, 256), 256, 0, s>>>((__half *)y, n);
}

/* A warp a row, the row in registers (n a multiple of 128, at most
 * LN_MAX_QUADS x 128): the row read once instead of three times and no
 * block barriers; the same two passes (mean, then squared deviations).
 * Q: n / 128 known at compile time (every Whisper width), the gains and
 * biases then loaded with the row rather than after the two reductions
 * (a second round trip to L2 on each row's path); 0: any n, loaded late. */
#define LN_MAX_QUADS 16
#define LN_WARPS 4
#define LN_WARP_ROWS 256   /* rows from which the warp kernel is used */
template <int Q>
__global__ void k_layer_norm_warp(const float *x, int rows, int n, const float *g, const float *b,
                                  void *out, int act_half) {
    constexpr int QM = Q ? Q : LN_MAX_QUADS;
    int row = blockIdx.x * LN_WARPS + threadIdx.x / WARP, lane = threadIdx.x % WARP, q = Q ? Q : n / 128;
    if (row >= rows) return;
    const float4 *xr = (const float4 *)(x + (size_t)row * n);
    const float4 *g4 = (const float4 *)g, *b4 = (const float4 *)b;
    float4 v[QM], gg[QM], bb[QM];
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < QM; k++)
        if (k < q) {
            v[k] = xr[k * WARP + lane];
            if (Q) gg[k] = g4[k * WARP + lane], bb[k] = b4[k * WARP + lane];
        }
#pragma unroll
    for (int k = 0; k < QM; k++)
        if (k < q) s += v[k].x + v[k].y + v[k].z + v[k].w;
    float mean = warp_sum(s) / n, var = 0.0f;
#pragma unroll
    for (int k = 0; k < QM; k++)
        if (k < q) {
            float a = v[k].x - mean, bq = v[k].y - mean, c = v[k].z - mean, d = v[k].w - mean;
            var += a * a + bq * bq + c * c + d * d;
        }
    float inv = rsqrtf(warp_sum(var) / n + 1e-5f);
#pragma unroll
    for (int k = 0; k < QM; k++)
        if (k < q) {
            int c4 = k * WARP + lane;
            float4 gk = Q ? gg[k] : g4[c4], bk = Q ? bb[k] : b4[c4];
            float4 o = make_float4((v[k].x - mean) * inv * gk.x + bk.x, (v[k].y - mean) * inv * gk.y + bk.y,
                                   (v[k].z - mean) * inv * gk.z + bk.z, (v[k].w - mean) * inv * gk.w + bk.w);
            store4(out, (size_t)row * n + (size_t)c4 * 4, o, act_half);
        }
}

/* One block per row; two passes over the row (mean, then variance). */
__global__ void k_layer_norm(const float *x, int n, const float *g, const float *b, void *out,
                             int act_half) {
    __shared__ float red[32];
    const float *row = x + (size_t)blockIdx.x * n;
    float s = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += row[i];
    float mean = block_sum(s, red) / n;
    float v = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float t = row[i] - mean;
        v += t * t;
    }
    float inv = rsqrtf(block_sum(v, red) / n + 1e-5f);
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        store_act(out, (size_t)blockIdx.x * n + i, (row[i] - mean) * inv * g[i] + b[i], act_half);
}

typedef void (*layer_norm_fn)(const float *, int, int, const float *, const float *, void *, int);
static layer_norm_fn layer_norm_warp_kernel(int quads) {
    switch (quads) {
    case 3: return k_layer_norm_warp<3>;     /* tiny */
    case 4: return k_layer_norm_warp<4>;     /* base */
    case 6: return k_layer_norm_warp<6>;     /* small */
    case 8: return k_layer_norm_warp<8>;     /* medium */
    case 10: return k_layer_norm_warp<10>;   /* large */
    default: return k_layer_norm_warp<0>;
    }
}

extern "C" void sh_k_layer_norm(cudaStream_t s, const float *x, int rows, int n, const float *g,
                                const float *b, void *out, int act_half) {
    /* the decoder's few rows keep the block a row: there the row's
     * latency counts, not the bandwidth (tiny's minute 47.4 -> 48.3 ms
     * with the warp kernel for its final norm) */
    if (rows >= LN_WARP_ROWS && n % 128 == 0 && n <= LN_MAX_QUADS * 128 && quads_ok(1, n, x, g, b, out))
        layer_norm_warp_kernel(n / 128)<<<(rows + LN_WARPS - 1) / LN_WARPS, LN_WARPS * WARP, 0, s>>>(
            x, rows, n, g, b, out, act_half);
    else
        k_layer_norm<<<rows, 256, 0, s>>>(x, n, g, b, out, act_half);
}

__global__ void k_softmax_rows(const float *x, int n, void *out, int act_half) {
    __shared__ float red[32];
    const float *row = x + (size_t)blockIdx.x * n;
    float m = -INFINITY;
    for (int i = threadIdx.x; i < n; i += blockDim.x) m = fmaxf(m, row[i]);
    m = block_max(m, red);
    float s = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += __expf(row[i] - m);
    float inv = 1.0f / block_sum(s, red);
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        store_act(out, (size_t)blockIdx.x * n + i, __expf(row[i] - m) * inv, act_half);
}

extern "C" void sh_k_softmax_rows(cudaStream_t s, const float *x, int rows, int n, void *out,
                                  int act_half) {
    k_softmax_rows<<<rows, 256, 0, s>>>(x, n, out, act_half);
}

/* --------------------------------------------------------------- decoder */

__global__ void k_embed(const void *w, const __half *scales, int kind, const float *pos_emb,
                        const int *tokens, const int *pos0, int n_tokens, int d, float *x) {
    int r = blockIdx.x, tok = tokens[r], pos = *pos0 + r % n_tokens;
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        size_t at = (size_t)tok * d + i;
        float e;
        if (kind == SH_GW_F32)
            e = ((const float *)w)[at];
        else if (kind == SH_GW_F16)
            e = __half2float(((const __half *)w)[at]);
        else
            e = (float)((const int8_t *)w)[at] * __half2float(scales[at / 32]);
        x[(size_t)r * d + i] = e + pos_emb[(size_t)pos * d + i];
    }
}

extern "C" void sh_k_embed(cudaStream_t s, const sh_gmat *e, const float *pos_emb,
                           const int *tokens, const int *pos0, int rows, int n_tokens, float *x) {
    k_embed<<<rows, 256, 0, s>>>(e->w, (const __half *)e->scales, e->kind, pos_emb, tokens, pos0,
                                 n_tokens, e->n_in, x);
}

__global__ void k_kv_store(const float *qkv, int n_tokens, int d, const int *pos0, int n_ctx,
                           void *kc, void *vc, int act_half) {
    int r = blockIdx.x, b = r / n_tokens, pos = *pos0 + r % n_tokens;
    const float *row = qkv + (size_t)r * 3 * d;
    size_t at = ((size_t)b * n_ctx + pos) * d;
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        store_act(kc, at + i, row[d + i], act_half);
        store_act(vc, at + i, row[2 * d + i], act_half);
    }
}

extern "C" void sh_k_kv_store(cudaStream_t s, const float *qkv, int rows, int n_tokens, int d,
                              const int *pos0, int n_ctx, void *k_cache, void *v_cache,
                              int act_half) {
    k_kv_store<<<rows, 256, 0, s>>>(qkv, n_tokens, d, pos0, n_ctx, k_cache, v_cache, act_half);
}

/* Attention: block (split, head, row) scores ATT_CHUNK keys, one per
 * thread, and leaves its max, its sum of exponentials and its weighted
 * values in partial (hd + 2 floats); the last block merges the splits. Head width hd: a multiple of 8 dividing ATT_CHUNK. */
#define ATT_CHUNK 128
#define MAX_SPLITS 16   /* keys up to 2048 */

/* The last block of a (row, head) to finish merges the splits, for its
 * nq rows from r0: counter (zero, and left zero) counts the finished
 * blocks. */
template <int HD>
static __device__ void combine_if_last(const float *partial, int n_split, int *counter,
                                       float *result, int d, int r0, int nq, int h) {
    __shared__ int last;
    int t = threadIdx.x, part = HD + 2;
    __syncthreads();
    if (t == 0) {
        __threadfence();   /* this block's partial before its count */
        last = atomicAdd(counter, 1) == n_split - 1;
    }
    __syncthreads();
    if (!last) return;
    __threadfence();
    for (int i = 0; i < nq && t < HD; i++) {
        const float *pp = partial + ((size_t)(r0 + i) * gridDim.y + h) * n_split * part;
        /* all the splits' numbers loaded before any is used */
        float ms[MAX_SPLITS], ls[MAX_SPLITS], as[MAX_SPLITS], m = -INFINITY, l = 0.0f, a = 0.0f;
#pragma unroll
        for (int s = 0; s < MAX_SPLITS; s++) {
            bool in = s < n_split;
            ms[s] = in ? __ldcg(pp + s * part + HD) : -INFINITY;
            ls[s] = in ? __ldcg(pp + s * part + HD + 1) : 0.0f;
            as[s] = in ? __ldcg(pp + s * part + t) : 0.0f;
        }
#pragma unroll
        for (int s = 0; s < MAX_SPLITS; s++) m = fmaxf(m, ms[s]);
#pragma unroll
        for (int s = 0; s < MAX_SPLITS; s++) {
            float w = ls[s] > 0.0f ? __expf(ms[s] - m) : 0.0f;
            l += w * ls[s];
            a += w * as[s];
        }
        result[(size_t)(r0 + i) * d + h * HD + t] = a / l;
    }
    if (t == 0) *counter = 0;
}

/* A block's keys and values go through shared memory with 16-byte
 * loads, all issued before the first use: the kernel is latency bound
 * otherwise. Head width HD is a template constant so the loops unroll. */
template <int HD, int HALF>
__global__ void k_attention_split(const float *q, int ldq, const void *k, const void *v, int d,
                                  int causal, int n_tokens, const int *pos0, int n_kv,
                                  long beam_stride, float *partial, int n_split, int *counters,
                                  float *result) {
    typedef typename std::conditional<HALF, __half, float>::type T;
    const int PER16 = 16 / sizeof(T);            /* elements per 16-byte word */
    const int WORDS = HD / PER16;                /* words per key row */
    __shared__ float qs[HD];
    __shared__ float p[ATT_CHUNK];
    __shared__ float red[32];
    __shared__ float acc[ATT_CHUNK];
    __shared__ uint4 vs[ATT_CHUNK * WORDS];
    int split = blockIdx.x, h = blockIdx.y, r = blockIdx.z, t = threadIdx.x, part = HD + 2;
    PDL_LAUNCH();
    int n_keys = causal ? *pos0 + r % n_tokens + 1 : n_kv;
    /* keys and values before fresh are the window's (cross) or earlier
     * steps' (self): loaded before the wait; this step's own, from *pos0
     * on, are written by the previous kernel: loaded after it */
    int fresh = causal ? *pos0 : n_kv;
    long base = (long)(r / n_tokens) * beam_stride;   /* this row's beam or window */
    int j0 = split * ATT_CHUNK;
    float *out = partial + (((size_t)r * gridDim.y + h) * n_split + split) * part;
    if (j0 >= n_keys) {   /* past the keys of this row: an empty split */
        PDL_WAIT();
        if (t == 0) out[HD] = -INFINITY, out[HD + 1] = 0.0f;
        if (t < HD) out[t] = 0.0f;
        combine_if_last<HD>(partial, n_split, counters + (size_t)r * gridDim.y + h, result, d, r,
                            1, h);
        return;
    }
    int n_here = min(ATT_CHUNK, n_keys - j0);
    /* values of this chunk into shared memory, coalesced */
    const T *vb = (const T *)v + base + (size_t)j0 * d + h * HD;
    uint4 vw[WORDS];
    /* this thread's key: every word loaded before any is used */
    float score = -INFINITY;
    uint4 kw[WORDS];
    int j = j0 + t;
    const uint4 *kp = (const uint4 *)((const T *)k + base + (size_t)j * d + h * HD);
    for (int after = 0; after < 2; after++) {
        if (after) PDL_WAIT();
#pragma unroll
        for (int c = 0; c < WORDS; c++) {
            int w = t + c * ATT_CHUNK;
            if (w < n_here * WORDS && (j0 + w / WORDS >= fresh) == after)
                vw[c] = *(const uint4 *)(vb + (size_t)(w / WORDS) * d + (w % WORDS) * PER16);
        }
        if (j < n_keys && (j >= fresh) == after) {
#pragma unroll
            for (int c = 0; c < WORDS; c++) kw[c] = kp[c];
        }
    }
    float qv = t < HD ? q[(size_t)r * ldq + h * HD + t] : 0.0f;
    /* only now the stores, which wait for their loads: one memory latency in all */
#pragma unroll
    for (int c = 0; c < WORDS; c++) {
        int w = t + c * ATT_CHUNK;
        if (w < n_here * WORDS) vs[w] = vw[c];
    }
    if (t < HD) qs[t] = qv * rsqrtf((float)HD);
    __syncthreads();
    if (j < n_keys) {
        float sum = 0.0f;
#pragma unroll
        for (int c = 0; c < WORDS; c++) {
            const T *e = (const T *)&kw[c];
#pragma unroll
            for (int i = 0; i < PER16; i++) sum += (float)e[i] * qs[c * PER16 + i];
        }
        score = sum;
    }
    float m = block_max(score, red);
    float e = j < n_keys ? __expf(score - m) : 0.0f;
    p[t] = e;
    float l = block_sum(e, red);   /* its barriers also publish p and vs */
    /* weighted values: thread (group, dim) sums every n_groups-th key */
    const int n_groups = ATT_CHUNK / HD;
    int dim = t % HD, group = t / HD;
    const T *vsh = (const T *)vs;
    float a = 0.0f;
#pragma unroll 4
    for (int jj = group; jj < n_here; jj += n_groups) a += p[jj] * (float)vsh[jj * HD + dim];
    acc[t] = a;
    __syncthreads();
    if (t < HD) {
        float sum = 0.0f;
#pragma unroll
        for (int g = 0; g < n_groups; g++) sum += acc[g * HD + t];
        out[t] = sum;
    }
    if (t == 0) out[HD] = m, out[HD + 1] = l;
    combine_if_last<HD>(partial, n_split, counters + (size_t)r * gridDim.y + h, result, d, r, 1,
                        h);
}

/* Rows of one window that k_attention_rows scores at once: two (eight
 * made each block too long: medium's 5-beam step 1.29 -> 1.42 ms). */
#define ATT_ROWS 2

/* Cross-attention of rows that all read one window (a prompt's tokens, a
 * beam search's beams): block (split, head, group of up to ATT_ROWS rows)
 * loads its ATT_CHUNK keys and values once for all its rows, where
 * k_attention_split's blocks load them once a row (medium's 4-token
 * prompt: 768 blocks, two waves on 132 SMs, every key read 4 times).
 * Thread t scores key t against each row's query; the rows' maxima and
 * sums share their barriers. */
template <int HD, int HALF>
__global__ void k_attention_rows(const float *q, int ldq, const void *k, const void *v, int d,
                                 int rows, int n_kv, float *partial, int n_split, int *counters,
                                 float *result) {
    typedef typename std::conditional<HALF, __half, float>::type T;
    const int PER16 = 16 / sizeof(T), WORDS = HD / PER16, WARPS = ATT_CHUNK / WARP;
    __shared__ float qs[ATT_ROWS][HD];
    __shared__ float p[ATT_ROWS][ATT_CHUNK];
    __shared__ float acc[ATT_ROWS][ATT_CHUNK];
    __shared__ float red_max[ATT_ROWS][WARPS], red_sum[ATT_ROWS][WARPS];
    __shared__ uint4 vs[ATT_CHUNK * WORDS];
    const int split = blockIdx.x, h = blockIdx.y, r0 = blockIdx.z * ATT_ROWS, t = threadIdx.x;
    const int nq = min(ATT_ROWS, rows - r0), part = HD + 2, lane = t % WARP, warp = t / WARP;
    PDL_LAUNCH();
    const int j0 = split * ATT_CHUNK, n_here = min(ATT_CHUNK, n_kv - j0), j = j0 + t;
    /* the window's keys and values (the encoder's) before the wait; every
     * word loaded before any is used */
    const T *vb = (const T *)v + (size_t)j0 * d + h * HD;
    uint4 vw[WORDS], kw[WORDS];
#pragma unroll
    for (int c = 0; c < WORDS; c++) {
        int w = t + c * ATT_CHUNK;
        if (w < n_here * WORDS)
            vw[c] = *(const uint4 *)(vb + (size_t)(w / WORDS) * d + (w % WORDS) * PER16);
    }
    if (j < n_kv) {
        const uint4 *kp = (const uint4 *)((const T *)k + (size_t)j * d + h * HD);
#pragma unroll
        for (int c = 0; c < WORDS; c++) kw[c] = kp[c];
    }
    PDL_WAIT();   /* the queries are the previous kernel's */
    for (int x = t; x < ATT_ROWS * HD; x += ATT_CHUNK)
        qs[x / HD][x % HD] = x / HD < nq ? q[(size_t)(r0 + x / HD) * ldq + h * HD + x % HD] *
                                               rsqrtf((float)HD)
                                         : 0.0f;
#pragma unroll
    for (int c = 0; c < WORDS; c++) {
        int w = t + c * ATT_CHUNK;
        if (w < n_here * WORDS) vs[w] = vw[c];
    }
    __syncthreads();
    float sc[ATT_ROWS];
#pragma unroll
    for (int i = 0; i < ATT_ROWS; i++) sc[i] = 0.0f;
    if (j < n_kv) {
#pragma unroll
        for (int c = 0; c < WORDS; c++) {
            const T *e = (const T *)&kw[c];
#pragma unroll
            for (int x = 0; x < PER16; x++) {
                float kx = (float)e[x];
#pragma unroll
                for (int i = 0; i < ATT_ROWS; i++) sc[i] += kx * qs[i][c * PER16 + x];
            }
        }
    }
    /* each row's max, then its exponentials' sum, over the block */
    float m[ATT_ROWS], l[ATT_ROWS];
#pragma unroll
    for (int i = 0; i < ATT_ROWS; i++) {
        float top = warp_max(j < n_kv ? sc[i] : -INFINITY);
        if (lane == 0) red_max[i][warp] = top;
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < ATT_ROWS; i++) {
        m[i] = red_max[i][0];
#pragma unroll
        for (int w = 1; w < WARPS; w++) m[i] = fmaxf(m[i], red_max[i][w]);
        float e = j < n_kv ? __expf(sc[i] - m[i]) : 0.0f;
        p[i][t] = e;
        e = warp_sum(e);
        if (lane == 0) red_sum[i][warp] = e;
    }
    __syncthreads();   /* also publishes p */
#pragma unroll
    for (int i = 0; i < ATT_ROWS; i++) {
        l[i] = 0.0f;
#pragma unroll
        for (int w = 0; w < WARPS; w++) l[i] += red_sum[i][w];
    }
    /* weighted values: thread (group, dim) sums every n_groups-th key,
     * each value read once for all the rows */
    const int n_groups = ATT_CHUNK / HD, dim = t % HD, group = t / HD;
    const T *vsh = (const T *)vs;
    float a[ATT_ROWS] = {};
#pragma unroll 2
    for (int jj = group; jj < n_here; jj += n_groups) {
        float vv = (float)vsh[jj * HD + dim];
#pragma unroll
        for (int i = 0; i < ATT_ROWS; i++) a[i] += p[i][jj] * vv;
    }
#pragma unroll
    for (int i = 0; i < ATT_ROWS; i++) acc[i][t] = a[i];
    __syncthreads();
    for (int i = 0; i < nq; i++) {
        float *out = partial + (((size_t)(r0 + i) * gridDim.y + h) * n_split + split) * part;
        if (t < HD) {
            float sum = 0.0f;
#pragma unroll
            for (int g = 0; g < n_groups; g++) sum += acc[i][g * HD + t];
            out[t] = sum;
        }
        if (t == 0) out[HD] = m[i], out[HD + 1] = l[i];
    }
    combine_if_last<HD>(partial, n_split, counters + (size_t)r0 * gridDim.y + h, result, d, r0,
                        nq, h);
}

extern "C" int sh_attention_wave(int device, int act_half) {
    int sms = 0, per = 0;
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    if (act_half)
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per, k_attention_split<64, 1>, ATT_CHUNK, 0);
    else
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per, k_attention_split<64, 0>, ATT_CHUNK, 0);
    cudaGetLastError();
    return sms > 0 && per > 0 ? sms * per : INT_MAX;   /* unknown: row by row always */
}

extern "C" long sh_attention_partial_floats(int rows, int n_head, int hd, int max_keys) {
    long n_split = (max_keys + ATT_CHUNK - 1) / ATT_CHUNK;
    return (long)rows * n_head * n_split * (hd + 2);
}

extern "C" void sh_k_attention(cudaStream_t s, const float *q, int ldq, const void *k,
                               const void *v, int d, int n_head, int rows, int causal,
                               int n_tokens, const int *pos0, int n_kv, long beam_stride,
                               int act_half, float *partial, int *counters, float *out, int flags,
                               int wave) {
    int n_split = (n_kv + ATT_CHUNK - 1) / ATT_CHUNK;   /* n_kv: the most keys any row has */
    int hd = d / n_head, pdl = flags & SH_K_PDL;
    /* rows of one window in blocks of ATT_ROWS where a block a row would
     * take more than one wave (medium's 4-token prompt: 768 blocks, 528 a
     * wave on an H200); within one wave the grouping only lengthens each
     * block (tiny's 5 beams: 360 blocks, a step 0.19 -> 0.20 ms) */
    int shared = (flags & SH_K_ATT_ROWS) && !causal && beam_stride == 0 && rows > 1 &&
                 (long)n_split * n_head * rows > wave;
    dim3 grid(n_split, n_head, shared ? (rows + ATT_ROWS - 1) / ATT_ROWS : rows);
#define SH_ATT_CASE(HD)                                                                        \
    case HD:                                                                                   \
        if (shared && act_half)                                                                \
            launch(pdl, k_attention_rows<HD, 1>, grid, ATT_CHUNK, 0, s, q, ldq, k, v, d, rows,  \
                   n_kv, partial, n_split, counters, out);                                     \
        else if (shared)                                                                       \
            launch(pdl, k_attention_rows<HD, 0>, grid, ATT_CHUNK, 0, s, q, ldq, k, v, d, rows,  \
                   n_kv, partial, n_split, counters, out);                                     \
        else if (act_half)                                                                     \
            launch(pdl, k_attention_split<HD, 1>, grid, ATT_CHUNK, 0, s, q, ldq, k, v, d,      \
                   causal, n_tokens, pos0, n_kv, beam_stride, partial, n_split, counters, out); \
        else                                                                                   \
            launch(pdl, k_attention_split<HD, 0>, grid, ATT_CHUNK, 0, s, q, ldq, k, v, d,      \
                   causal, n_tokens, pos0, n_kv, beam_stride, partial, n_split, counters, out); \
        break;
    switch (hd) {
        SH_ATT_CASE(16)
        SH_ATT_CASE(32)
        SH_ATT_CASE(64)
    }
#undef SH_ATT_CASE
}

/* ----------------------------------------------------------- cache moves */

__global__ void k_gather_beams(const char *from, char *to, const int *src, int n_beams,
                               int n_cache_beams, size_t beam_bytes, size_t copy_bytes,
                               int to_src) {
    /* blockIdx.y = layer * n_beams + beam; 16-byte words */
    int lb = blockIdx.y, l = lb / n_beams, b = lb % n_beams;
    size_t layer_bytes = beam_bytes * n_cache_beams;
    size_t from_off = l * layer_bytes + (size_t)(to_src ? b : src[b]) * beam_bytes;
    size_t to_off = l * layer_bytes + (size_t)b * beam_bytes;
    for (size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * 16; i < copy_bytes;
         i += (size_t)gridDim.x * blockDim.x * 16)
        *(uint4 *)(to + to_off + i) = *(const uint4 *)(from + from_off + i);
}

extern "C" void sh_k_reorder(cudaStream_t s, void *cache, void *tmp, const int *src, int n_layer,
                             int n_beams, int n_cache_beams, int n_ctx, int d, int n_pos,
                             int act_half) {
    size_t el = act_half ? 2 : 4;
    size_t beam_bytes = (size_t)n_ctx * d * el, copy = (size_t)n_pos * d * el;
    dim3 grid(blocks_for((long)(copy / 16), 256) < 64 ? blocks_for((long)(copy / 16), 256) : 64,
              n_layer * n_beams);
    k_gather_beams<<<grid, 256, 0, s>>>((const char *)cache, (char *)tmp, src, n_beams,
                                        n_cache_beams, beam_bytes, copy, 0);
    k_gather_beams<<<grid, 256, 0, s>>>((const char *)tmp, (char *)cache, src, n_beams,
                                        n_cache_beams, beam_bytes, copy, 1);
}

__global__ void k_broadcast(char *cache, int n_beams, int n_cache_beams, size_t beam_bytes,
                            size_t copy_bytes) {
    int lb = blockIdx.y, l = lb / (n_beams - 1), b = 1 + lb % (n_beams - 1);
    size_t layer = l * beam_bytes * n_cache_beams;
    for (size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * 16; i < copy_bytes;
         i += (size_t)gridDim.x * blockDim.x * 16)
        *(uint4 *)(cache + layer + b * beam_bytes + i) = *(const uint4 *)(cache + layer + i);
}

extern "C" void sh_k_broadcast(cudaStream_t s, void *cache, int n_layer, int n_beams,
                               int n_cache_beams, int n_ctx, int d, int n_pos, int act_half) {
    if (n_beams < 2) return;
    size_t el = act_half ? 2 : 4;
    size_t beam_bytes = (size_t)n_ctx * d * el, copy = (size_t)n_pos * d * el;
    unsigned gx = blocks_for((long)(copy / 16), 256);
    dim3 grid(gx < 64 ? gx : 64, n_layer * (n_beams - 1));
    k_broadcast<<<grid, 256, 0, s>>>((char *)cache, n_beams, n_cache_beams, beam_bytes, copy);
}

__global__ void k_probe(int *out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = i * 3 + 1;
}

extern "C" void sh_k_probe(cudaStream_t s, int *out, int n) {
    k_probe<<<blocks_for(n, 128), 128, 0, s>>>(out, n);
}

/* ---------------------------------------------------------- greedy pick */

#define PICK_THREADS 256
#define PICK_PER 8                              /* logits per thread */
#define PICK_CHUNK (PICK_THREADS * PICK_PER)    /* logits per block */
#define PICK_MAX_CHUNKS 64                      /* vocabularies up to 131072 */

/* This block's chunk of a row's logits under its mask, for the greedy
 * pick and the beams' top-k alike: v[k] is logit c0 + k * PICK_THREADS + t,
 * or -inf where the mask suppresses it or past the vocabulary. The
 * bitmap's words are read before waiting on the logits' kernel; every
 * load is issued before the first use. */
static __device__ void load_masked_chunk(const float *all_logits, int n_vocab,
                                         const sh_pick_mask &mk, const unsigned *banned, int row,
                                         int c0, float (&v)[PICK_PER]) {
    int t = threadIdx.x;
    unsigned words[PICK_PER];
#pragma unroll
    for (int k = 0; k < PICK_PER; k++) {
        int i = c0 + k * PICK_THREADS + t;
        words[k] = i < n_vocab ? __ldg(&banned[i / 32]) : 0u;
    }
    PDL_WAIT();   /* the logits come from the kernel before */
    PDL_LAUNCH();
    const float *logits = all_logits + (size_t)row * n_vocab;
#pragma unroll
    for (int k = 0; k < PICK_PER; k++) {
        int i = c0 + k * PICK_THREADS + t;
        v[k] = i < n_vocab ? logits[i] : -INFINITY;
    }
#pragma unroll
    for (int k = 0; k < PICK_PER; k++) {
        int i = c0 + k * PICK_THREADS + t;
        if (i >= n_vocab || suppressed(words[k], i, mk)) v[k] = -INFINITY;
    }
}

/* The chunk's text and timestamp summaries (likeliest token, log-sum-exp)
 * from v (as load_masked_chunk leaves it): this thread's, then its warp's,
 * left in warp_acc[warp] for the block's first warp to merge. */
static __device__ void summarise_chunk(const float (&v)[PICK_PER], int c0, int n_vocab, int ts,
                                       chunk_acc *warp_acc) {
    int t = threadIdx.x;
    chunk_acc a;
    chunk_acc_init(a);
    /* this thread's maxima first, then its sums of exponentials */
#pragma unroll
    for (int k = 0; k < PICK_PER; k++) {
        int i = c0 + k * PICK_THREADS + t, kind = i >= ts;
        if (i < n_vocab) arg_merge(a.best_v[kind], a.best_i[kind], v[k], i);
    }
#pragma unroll
    for (int k = 0; k < PICK_PER; k++) {
        int i = c0 + k * PICK_THREADS + t, kind = i >= ts;
        if (i < n_vocab && v[k] != -INFINITY) a.s[kind] += expf(v[k] - a.best_v[kind]);
    }
    chunk_acc_warp(a);
    if (t % WARP == 0) warp_acc[t / WARP] = a;
}

/* The block's summary from its warps' (warp_acc, after a barrier), merged
 * by warp 0 in a tree (3 steps where one thread took 7): lane 0's. */
static __device__ chunk_acc block_summary(const chunk_acc *warp_acc) {
    const int lane = threadIdx.x % WARP, n = PICK_THREADS / WARP;
    static_assert(n == 8, "a tree of 8 warps' summaries");
    chunk_acc c;
    if (lane < n) c = warp_acc[lane];
    else chunk_acc_init(c);
    chunk_acc_warp(c, n / 2);
    return c;
}

/* block_summary as a pick_acc, for the merges of the chunks (warp 0). */
static __device__ pick_acc merge_warps(const chunk_acc *warp_acc) {
    return as_pick_acc(block_summary(warp_acc));
}

/* Block (chunk, row): the mask applied to PICK_CHUNK logits of the row,
 * which are summarised (text and timestamps apart: their likeliest token
 * and log-sum-exp) into partial[row][chunk]. Every load is issued before
 * the first use. */
__global__ void k_pick_partial(const float *all_logits, int n_vocab,
                               const __grid_constant__ sh_pick_masks masks, const unsigned *banned,
                               pick_acc *partial) {
    __shared__ chunk_acc warp_acc[PICK_THREADS / WARP];
    int row = blockIdx.y, c0 = blockIdx.x * PICK_CHUNK, t = threadIdx.x;
    const sh_pick_mask &mk = masks.row[row];
    float v[PICK_PER];
    load_masked_chunk(all_logits, n_vocab, mk, banned, row, c0, v);
    summarise_chunk(v, c0, n_vocab, mk.ts_begin >= 0 ? mk.ts_begin : n_vocab, warp_acc);
    __syncthreads();
    if (t >= WARP) return;
    pick_acc a = merge_warps(warp_acc);
    if (t == 0) partial[(size_t)row * gridDim.x + blockIdx.x] = a;
}

/* A warp per row: the chunks' summaries merged, the timestamp rule decided
 * (timestamps likelier together than any text token: text is out), the
 * greedy token and its log-probability written to out[row]. */
__global__ void k_pick_final(const pick_acc *partial, int n_chunks,
                             const __grid_constant__ sh_pick_masks masks, sh_pick_result *results,
                             int *next_io, int next_pos) {
    int row = blockIdx.x, lane = threadIdx.x;
    int ts_begin = masks.row[row].ts_begin;
    PDL_WAIT();
    pick_acc a;
    pick_acc_init(a);
    for (int c = lane; c < n_chunks; c += WARP) pick_acc_merge(a, partial[(size_t)row * n_chunks + c]);
    pick_acc_warp(a);
    if (lane == 0) pick_choose(a, ts_begin, &results[row], next_io, row, next_pos);
}

extern "C" long sh_pick_scratch_bytes(int n_rows) {
    return (long)n_rows * PICK_MAX_CHUNKS * (long)sizeof(pick_acc);
}

/* The host's masks of n_rows rows as the pick's kernels take them: by
 * value, with the launch (in the kernels' parameters when they start,
 * where a read of host memory would wait ~2 us on the step's path). */
static sh_pick_masks masks_by_value(const sh_pick_mask *masks, int n_rows) {
    sh_pick_masks m;
    memset(&m, 0, sizeof m);
    memcpy(m.row, masks, (size_t)n_rows * sizeof *masks);
    return m;
}

extern "C" void sh_k_greedy_pick(cudaStream_t s, float *logits, int n_rows, int n_vocab,
                                 const sh_pick_mask *masks, const unsigned *banned, void *scratch,
                                 sh_pick_result *out, int *next_io, int next_pos, int pdl) {
    int n_chunks = (n_vocab + PICK_CHUNK - 1) / PICK_CHUNK;
    /* the caller checks the vocabulary and takes the rows 8 at a time */
    if (n_chunks > PICK_MAX_CHUNKS || n_rows < 1 || n_rows > SH_GEMV_MAX_ROWS) return;
    pick_acc *partial = (pick_acc *)scratch;
    sh_pick_masks m = masks_by_value(masks, n_rows);
    launch(pdl, k_pick_partial, dim3(n_chunks, n_rows), dim3(PICK_THREADS), 0, s, logits, n_vocab,
           m, banned, partial);
    launch(pdl, k_pick_final, dim3(n_rows), dim3(WARP), 0, s, partial, n_chunks, m, out, next_io,
           next_pos);
}

/* ------------------------------------------------------ the logits' GEMV */

/* The greedy pick folded into the logits' GEMV (one row, see k_gemv_wide):
 * each warp summarises its rows under the mask once its loop is done, each
 * block leaves its warps' merged in the scratch, and the block that
 * finishes last merges the blocks' and chooses, as k_pick_final: no kernel
 * and no launch between the logits and the next step. */
typedef struct {
    sh_pick_mask mask;
    const unsigned *banned;   /* the suppressed tokens' bitmap (device) */
    void *scratch;            /* sh_wide_pick_scratch_bytes, count zero between picks */
    sh_pick_result *result;   /* device or mapped host memory */
    int *next_io;             /* as sh_k_greedy_pick's, or NULL */
    int next_pos;
} wide_pick;

#define WIDE_THREADS 256
static_assert(WIDE_THREADS == PICK_THREADS, "a block's warps merge as the pick's");
#define WIDE_PICK_MAX_BLOCKS 4096
#define WIDE_PICK_COUNT_BYTES 256   /* the count of finished blocks, then their summaries */

/* A summary another block left in the scratch, read from L2 (this SM's L1
 * may hold the last step's). */
static __device__ chunk_acc chunk_acc_load_l2(const chunk_acc *p) {
    chunk_acc a;
    for (int k = 0; k < 2; k++)
        a.best_v[k] = __ldcg(&p->best_v[k]), a.best_i[k] = __ldcg(&p->best_i[k]), a.s[k] = __ldcg(&p->s[k]);
    return a;
}

/* The block's arrival at the count: its summary (this thread's writes)
 * released before it, the other blocks' acquired with it, in one
 * instruction where __threadfence (fence.sc) and an atomic took two. */
static __device__ __forceinline__ unsigned count_arrive(unsigned *count) {
    unsigned before;
    asm volatile("atom.acq_rel.gpu.global.add.u32 %0, [%1], 1;" : "=r"(before) : "l"(count) : "memory");
    return before;
}

/* The block's warps' summaries merged into the scratch; the last block to
 * arrive merges every block's and chooses, then zeroes the count. The
 * merges are float's, as a chunk's (the blocks' sums are ~100 terms each,
 * relative to their maxima): double is left to the choice's logarithms. */
static __device__ void wide_pick_finish(const chunk_acc &a, const wide_pick &pk) {
    __shared__ chunk_acc warp_acc[WIDE_THREADS / WARP];
    __shared__ bool last;
    const int t = threadIdx.x, lane = t % WARP;
    unsigned *count = (unsigned *)pk.scratch;
    chunk_acc *parts = (chunk_acc *)((char *)pk.scratch + WIDE_PICK_COUNT_BYTES);
    if (lane == 0) warp_acc[t / WARP] = a;
    __syncthreads();
    if (t < WARP) {
        chunk_acc c = block_summary(warp_acc);
        if (t == 0) parts[blockIdx.x] = c, last = count_arrive(count) == gridDim.x - 1;
    }
    __syncthreads();
    if (!last) return;
    chunk_acc m;
    chunk_acc_init(m);
    for (int c = t; c < (int)gridDim.x; c += WIDE_THREADS) chunk_acc_merge(m, chunk_acc_load_l2(parts + c));
    chunk_acc_warp(m);
    if (lane == 0) warp_acc[t / WARP] = m;
    __syncthreads();
    if (t >= WARP) return;
    chunk_acc c = block_summary(warp_acc);
    if (t != 0) return;
    *count = 0;   /* for the next pick; the kernel's end orders it */
    pick_choose(as_pick_acc(c), pk.mask.ts_begin, pk.result, pk.next_io, 0, pk.next_pos);
}

/* One input row against a wide half or int8 matrix (the logits: the token
 * embedding's 51865 rows), the layer norm first when ln_g is given. A
 * persistent grid: each warp takes rows o, o + warps, ... and loads the
 * next row's weights before it uses the current one's, so every warp keeps
 * two rows in flight from start to end. (k_gemv, a warp a row and ~13000
 * blocks, read medium's 106 MB of half embedding at 65% of the memory's
 * peak, ncu.) The layer norm here, each block over the whole row, spares
 * the fused step's final one its kernel. n_in <= GEMV_PREFETCH * 256.
 * With PICK, the greedy choice too (wide_pick). */
template <int KIND, int PICK>
__global__ void __launch_bounds__(WIDE_THREADS) k_gemv_wide(const void *w, const __half *scales,
                                                            int n_out, int n_in, const float *x,
                                                            float *y, const float *ln_g,
                                                            const float *ln_b,
                                                            const __grid_constant__ wide_pick pk) {
    extern __shared__ float xs[];   /* n_in floats */
    __shared__ float red[32];
    const int lane = threadIdx.x % WARP, per_block = WIDE_THREADS / WARP;
    const int warps = gridDim.x * per_block;
    int o = blockIdx.x * per_block + threadIdx.x / WARP;
    uint4 cur[GEMV_PREFETCH][2], nxt[GEMV_PREFETCH][2];
    load_chunks<KIND, GEMV_PREFETCH, true>(w, scales, n_out, n_in, o, cur);
    PDL_LAUNCH();
    PDL_WAIT();
    row_to_shared<8>(x, n_in, ln_g, ln_b, xs, red);   /* n_in <= 8 * WIDE_THREADS */
    __syncthreads();
    const int first = o;
    for (; o < n_out; o += warps) {
        load_chunks<KIND, GEMV_PREFETCH, true>(w, scales, n_out, n_in, o + warps, nxt);
        float acc = 0.0f;
        dot_chunks<KIND, 1>(&acc, cur, xs, 0, n_in);
        acc = warp_sum(acc);
        if (lane == 0) y[o] = acc;
#pragma unroll
        for (int k = 0; k < GEMV_PREFETCH; k++) cur[k][0] = nxt[k][0];
    }
    if (PICK) {
        /* the warp's logits summarised after its loop, a row a lane, so
         * that nothing of the pick stays live through the weights' stream */
        __syncwarp();   /* lane 0's stores, before the lanes read them */
        chunk_acc a;
        chunk_acc_init(a);
        for (int r = first + lane * warps; r < n_out; r += WARP * warps)
            pick_take(a, y[r], r, pk.mask, pk.banned);
        chunk_acc_warp(a);
        wide_pick_finish(a, pk);
    }
}

/* The instance for half or int8 weights, with the pick or without. */
typedef void (*gemv_wide_fn)(const void *, const __half *, int, int, const float *, float *,
                             const float *, const float *, wide_pick);
static gemv_wide_fn gemv_wide_for(int kind, int pick) {
    if (pick) return kind == SH_GW_F16 ? k_gemv_wide<SH_GW_F16, 1> : k_gemv_wide<SH_GW_I8, 1>;
    return kind == SH_GW_F16 ? k_gemv_wide<SH_GW_F16, 0> : k_gemv_wide<SH_GW_I8, 0>;
}

extern "C" int sh_gemv_wide_grid(int device, int kind, int n_in, int pick) {
    int sms = 0, per_sm = 0;
    if (kind == SH_GW_F32 || n_in > GEMV_PREFETCH * WARP * 8 ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess)
        return 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, gemv_wide_for(kind, pick), WIDE_THREADS,
                                                      n_in * sizeof(float)) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    int grid = sms * per_sm;
    return pick && grid > WIDE_PICK_MAX_BLOCKS ? 0 : grid;
}

extern "C" void sh_k_gemv_wide(cudaStream_t s, const sh_gmat *w, const float *x, float *y,
                               const float *ln_g, const float *ln_b, int grid, int pdl) {
    wide_pick none;
    memset(&none, 0, sizeof none);
    launch(pdl, gemv_wide_for(w->kind, 0), grid, WIDE_THREADS, w->n_in * sizeof(float), s,
           w->w, (const __half *)w->scales, w->n_out, w->n_in, x, y, ln_g, ln_b, none);
}

extern "C" long sh_wide_pick_scratch_bytes(void) {
    return WIDE_PICK_COUNT_BYTES + (long)WIDE_PICK_MAX_BLOCKS * (long)sizeof(chunk_acc);
}

extern "C" void sh_k_gemv_wide_pick(cudaStream_t s, const sh_gmat *w, const float *x, float *y,
                                    const float *ln_g, const float *ln_b, int grid,
                                    const sh_pick_mask *mask, const unsigned *banned, void *scratch,
                                    sh_pick_result *out, int *next_io, int next_pos, int pdl) {
    wide_pick pk = {*mask, banned, scratch, out, next_io, next_pos};
    launch(pdl, gemv_wide_for(w->kind, 1), grid, WIDE_THREADS, w->n_in * sizeof(float), s, w->w,
           (const __half *)w->scales, w->n_out, w->n_in, x, y, ln_g, ln_b, pk);
}

/* ---------------------------------------------- the logits' int8 screen */

/* The greedy pick of a half token embedding w without reading all of it:
 * its int8 copy w' (a half scale per 32, made at load: sh_k_screen_build)
 * times an int8 copy x' of the input (a float scale per 32, made per pick)
 * gives every logit within a bound proven per row,
 *   |x.w - x'.w'| <= |x| |w - w'| + |x - x'| |w'|   (Cauchy-Schwarz),
 * plus a margin for float rounding in either product. Half the bytes of
 * the step's largest read (medium: 106 MB a step), and four products an
 * instruction (dp4a) where each half weight took a conversion and an FMA.
 * Only the rows this bound cannot rule out of their block's best are
 * computed again from w and x, by the same warp code as k_gemv_wide's, so
 * the choice is the full product's to the bit (ties included); timestamp
 * rows, whose sum the timestamp rule compares, are always computed so. The
 * log-probability's normalizer takes the int8 values of the other text
 * rows (each within its bound, their errors averaging out), as the CPU's
 * screen does (cpu/logit_screen.c). */

/* Rows in flight a warp (H200, medium: 2 as fast as 4, whose registers
 * leave two blocks an SM where 2 leaves three) */
#define SCREEN_AHEAD 2

/* A warp a row: w' and the row's bounds (|w - w'|, and |w| + |w - w'| >=
 * |w'|, both rounded up) of row o (n_in a multiple of 32: a lane a block of
 * 32 at a time). Scales as half of max |w| / 127; w - w' measured with the
 * scale as stored, so any rounding of it stays inside the bound. */
__global__ void k_screen_build(const __half *w, int n_out, int n_in, int8_t *q, __half *qs,
                               float2 *bounds) {
    const int lane = threadIdx.x % WARP;
    const int o = blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP;
    if (o >= n_out) return;
    float err2 = 0.0f, w2 = 0.0f;
    for (int b = lane; b < n_in / 32; b += WARP) {
        const __half *row = w + (size_t)o * n_in + b * 32;
        float v[32], amax = 0.0f;
#pragma unroll
        for (int i = 0; i < 32; i++) v[i] = __half2float(row[i]), amax = fmaxf(amax, fabsf(v[i]));
        __half sh = __float2half_rn(amax / 127.0f);
        float sc = __half2float(sh);
        int8_t *dst = q + (size_t)o * n_in + b * 32;
#pragma unroll
        for (int i = 0; i < 32; i++) {
            float k = sc > 0.0f ? fminf(fmaxf(rintf(v[i] / sc), -127.0f), 127.0f) : 0.0f;
            float e = v[i] - k * sc;
            dst[i] = (int8_t)k;
            err2 += e * e, w2 += v[i] * v[i];
        }
        qs[(size_t)o * (n_in / 32) + b] = sh;
    }
    err2 = warp_sum(err2), w2 = warp_sum(w2);
    /* float sums of squares are within 1e-4 of exact: 1.001 rounds up */
    float err = sqrtf(err2) * 1.001f;
    if (lane == 0) bounds[o] = make_float2(err, (sqrtf(w2) * 1.001f + err) * 1.001f);
}

extern "C" void sh_k_screen_build(cudaStream_t s, const sh_gmat *w, const sh_gmat *screen,
                                  float *bounds) {
    k_screen_build<<<blocks_for(w->n_out, 256 / WARP), 256, 0, s>>>(
        (const __half *)w->w, w->n_out, w->n_in, (int8_t *)screen->w, (__half *)screen->scales,
        (float2 *)bounds);
}

/* As k_gemv_wide<SH_GW_F16, 1> through the screen (q, qs: w' as an int8
 * matrix; bounds its rows'), for grids of at least a warp per 32 rows: row
 * first + j * warps of the warp's text rows (below ts_begin, or all
 * without the timestamp rule) and of its timestamp rows is lane j's, its
 * value held in that lane. The text rows' values x'.w', the timestamp
 * rows' exact; then each block's lower bound of its best text row (the
 * largest value less bound), its text rows whose value plus bound reaches
 * it computed again exactly (the block's best exact row is one of them,
 * and so the row's best is), and the pick as wide_pick_finish. y is not
 * written. */
template <int CHUNKS>
__global__ void __launch_bounds__(WIDE_THREADS, CHUNKS < 5 ? 3 : 2) k_screen_pick(const void *w, const void *q,
                                                              const __half *qs, const float2 *bounds,
                                                              int n_out, int n_in, const float *x,
                                                              const float *ln_g, const float *ln_b,
                                                              const __grid_constant__ wide_pick pk) {
    extern __shared__ float xs[];   /* n_in floats, then n_in / 32 scales, then n_in int8 */
    __shared__ float red[32];
    __shared__ int n_again, again_row[WIDE_THREADS];   /* the rows to compute again */
    __shared__ float again_value[WIDE_THREADS];
    float *xsc = xs + n_in;
    int8_t *xq = (int8_t *)(xsc + n_in / 32);
    const int lane = threadIdx.x % WARP, per_block = WIDE_THREADS / WARP;
    const int warps = gridDim.x * per_block, first = blockIdx.x * per_block + threadIdx.x / WARP;
    const sh_pick_mask &mk = pk.mask;
    const int text = text_rows_end(mk, n_out);
    screen_row<CHUNKS> rows[SCREEN_AHEAD];
    const int8_t *q8 = (const int8_t *)q;
#pragma unroll
    for (int i = 0; i < SCREEN_AHEAD; i++) screen_load(q8, qs, text, n_in, first + i * warps, rows[i]);
    /* this lane's rows and what it needs of them, before the wait */
    const int mine = first + lane * warps, mine_ts = text + mine;
    const bool has = mine < text, has_ts = mine_ts < n_out;
    const float2 bd = has ? bounds[mine] : make_float2(0.0f, 0.0f);
    const unsigned banned_word = has ? __ldg(&pk.banned[mine / 32]) : 0u;
    /* the warp's first timestamp row too: made before the text rows */
    uint4 ts_row[CHUNKS][2];
    load_chunks<SH_GW_F16, CHUNKS>(w, NULL, n_out, n_in, text + first, ts_row);
    if (threadIdx.x == 0) n_again = 0;   /* ordered by row_to_shared's barriers */
    PDL_LAUNCH();
    PDL_WAIT();
    row_to_shared<8>(x, n_in, ln_g, ln_b, xs, red);   /* n_in <= 8 * WIDE_THREADS */
    __syncthreads();
    float x_norm, q_err;
    quantize_x(xs, n_in, xq, xsc, red, &x_norm, &q_err, (int)(blockDim.x / WARP),
               [] { __syncthreads(); });
    __syncthreads();
    const float v_ts = screen_ts_rows<CHUNKS>(w, n_out, n_in, text, first, warps, ts_row, xs);
    float v = screen_text_rows(q8, qs, text, n_in, first, warps, rows, xq, xsc);
    const bool out = !has || suppressed(banned_word, mine, mk);
    const float bound = screen_bound(x_norm, q_err, bd);
    /* the rows the warp's own best lower bound keeps (a superset of those
     * the block's will) on their way into L2 while the block agrees */
    const float warp_lower = warp_max(out ? -INFINITY : v - bound);
    screen_prefetch_rows(w, n_in, first, warps,
                         __ballot_sync(0xffffffffu, !out && v + bound >= warp_lower));
    const float lower = block_max(out ? -INFINITY : v - bound, red);
    const bool again = !out && v + bound >= lower;
    /* the block's rows to compute again, dealt over its warps (most
     * blocks have a few, not all in one warp) */
    int slot = -1;
    if (again) slot = atomicAdd(&n_again, 1), again_row[slot] = mine;
    __syncthreads();
    for (int c = threadIdx.x / WARP; c < n_again; c += per_block) {
        float exact = exact_logit<CHUNKS>(w, n_out, n_in, again_row[c], xs);
        if (lane == 0) again_value[c] = exact;
    }
    __syncthreads();
    if (slot >= 0) v = again_value[slot];
    chunk_acc a;
    chunk_acc_init(a);
    if (!out) pick_take_kept(a, v, mine, mk);   /* its suppression known: out */
    if (has_ts) pick_take(a, v_ts, mine_ts, mk, pk.banned);
    chunk_acc_warp(a);
    wide_pick_finish(a, pk);
}

static size_t screen_smem(int n_in) { return (size_t)n_in * 4 + (size_t)n_in / 32 * 4 + n_in; }

/* The instance for rows of n_in (a lane's chunks of 8: n_in / 256 rounded
 * up, so that only those take registers), or NULL. */
typedef void (*screen_fn)(const void *, const void *, const __half *, const float2 *, int, int,
                          const float *, const float *, const float *, wide_pick);
static screen_fn screen_for(int n_in) {
    switch ((n_in + WARP * 8 - 1) / (WARP * 8)) {
    case 1: return k_screen_pick<1>;
    case 2: return k_screen_pick<2>;
    case 3: return k_screen_pick<3>;
    case 4: return k_screen_pick<4>;
    case 5: return k_screen_pick<5>;
    default: return NULL;
    }
}

extern "C" int sh_screen_pick_grid(int device, int n_in, int n_out) {
    int sms = 0, per_sm = 0;
    if (n_in % 32 || !screen_for(n_in) ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess)
        return 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, screen_for(n_in), WIDE_THREADS,
                                                      screen_smem(n_in)) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    int grid = sms * per_sm;
    /* a lane a row: at most 32 rows a warp */
    if ((long)grid * (WIDE_THREADS / WARP) * WARP < n_out) return 0;
    return grid > WIDE_PICK_MAX_BLOCKS ? 0 : grid;
}

extern "C" void sh_k_screen_pick(cudaStream_t s, const sh_gmat *w, const sh_gmat *screen,
                                 const float *bounds, const float *x, const float *ln_g,
                                 const float *ln_b, int grid, const sh_pick_mask *mask,
                                 const unsigned *banned, void *scratch, sh_pick_result *out,
                                 int *next_io, int next_pos, int pdl) {
    wide_pick pk = {*mask, banned, scratch, out, next_io, next_pos};
    launch(pdl, screen_for(w->n_in), grid, WIDE_THREADS, screen_smem(w->n_in), s, (const void *)w->w,
           (const void *)screen->w, (const __half *)screen->scales, (const float2 *)bounds,
           w->n_out, w->n_in, x, ln_g, ln_b, pk);
}

/* ------------------------------------------------------------- beam top-k */

/* Beam search wants each row's k likeliest tokens (k <= TOPK_MAX) after
 * the mask, best first and ties to the lower id, as a scan keeps them.
 * Blocks of 2048 logits keep their text and timestamp candidates apart
 * (the timestamp rule, decided only when every chunk is in, may rule text
 * out), then one block per row merges the chunks. A top-k is k rounds of
 * a warp-wide "best remaining" (value, then id); a taken entry becomes
 * (-inf, INT_MAX), which loses to any real one, -inf ones included. */
#define TOPK_MAX 33

static __device__ __forceinline__ bool ranks_before(float va, int ia, float vb, int ib) {
    return va > vb || (va == vb && ia < ib);
}

/* The warp's k best of its lanes' PER entries each, into out (lane 0
 * writes); the entries taken are marked. */
template <int PER>
static __device__ void warp_top(float (&v)[PER], int (&ix)[PER], int k, float *out_v, int *out_i) {
    int lane = threadIdx.x % WARP;
    for (int r = 0; r < k; r++) {
        float bv = -INFINITY;
        int bi = INT_MAX, slot = -1;
#pragma unroll
        for (int j = 0; j < PER; j++)
            if (ranks_before(v[j], ix[j], bv, bi)) bv = v[j], bi = ix[j], slot = j;
        float wv = bv;
        int wi = bi;
        for (int o = WARP / 2; o > 0; o >>= 1) {
            float ov = __shfl_xor_sync(0xffffffffu, wv, o);
            int oi = __shfl_xor_sync(0xffffffffu, wi, o);
            if (ranks_before(ov, oi, wv, wi)) wv = ov, wi = oi;
        }
        if (bi == wi && slot >= 0 && wi != INT_MAX) {
#pragma unroll
            for (int j = 0; j < PER; j++)
                if (j == slot) v[j] = -INFINITY, ix[j] = INT_MAX;
        }
        if (lane == 0) out_v[r] = wv, out_i[r] = wi;
    }
}

#define TOPK_THREADS PICK_THREADS   /* the chunk is loaded as the pick loads it */
#define TOPK_WARPS (TOPK_THREADS / WARP)

/* The block's k best of n candidates in shared memory (cv, ci), into
 * (out_v, out_i): each warp its share, then warp 0 over the warps' lists.
 * n <= TOPK_THREADS * PER. */
template <int PER>
static __device__ void block_top(const float *cv, const int *ci, int n, int k, float *wv, int *wi,
                                 float *out_v, int *out_i) {
    int t = threadIdx.x, warp = t / WARP;
    float v[PER];
    int ix[PER];
#pragma unroll
    for (int j = 0; j < PER; j++) {
        int at = t + j * TOPK_THREADS;
        v[j] = at < n ? cv[at] : -INFINITY;
        ix[j] = at < n ? ci[at] : INT_MAX;
    }
    warp_top<PER>(v, ix, k, wv + warp * TOPK_MAX, wi + warp * TOPK_MAX);
    __syncthreads();
    if (warp == 0) {
        const int PER2 = (TOPK_WARPS * TOPK_MAX + WARP - 1) / WARP;
        float v2[PER2];
        int i2[PER2];
#pragma unroll
        for (int j = 0; j < PER2; j++) {
            int at = t + j * WARP, w = at / TOPK_MAX, r = at % TOPK_MAX;
            bool in = at < TOPK_WARPS * TOPK_MAX && r < k;
            v2[j] = in ? wv[w * TOPK_MAX + r] : -INFINITY;
            i2[j] = in ? wi[w * TOPK_MAX + r] : INT_MAX;
        }
        warp_top<PER2>(v2, i2, k, out_v, out_i);
    }
    __syncthreads();
}

struct topk_part {
    float v[2][TOPK_MAX];   /* text [0] and timestamp [1] candidates */
    int i[2][TOPK_MAX];
    float m[2];             /* their log-sum-exps */
    double s[2];
};

/* Block (chunk, row): the masked chunk's k best text and timestamp
 * candidates and log-sum-exps. */
__global__ void k_topk_partial(const float *all_logits, int n_vocab,
                               const __grid_constant__ sh_pick_masks masks, const unsigned *banned,
                               int k, topk_part *parts) {
    __shared__ float cv[PICK_CHUNK];
    __shared__ int ci[PICK_CHUNK];
    __shared__ float wv[TOPK_WARPS * TOPK_MAX];
    __shared__ int wi[TOPK_WARPS * TOPK_MAX];
    __shared__ chunk_acc warp_acc[TOPK_WARPS];
    int row = blockIdx.y, c0 = blockIdx.x * PICK_CHUNK, t = threadIdx.x;
    const sh_pick_mask &mk = masks.row[row];
    float v[PICK_PER];
    load_masked_chunk(all_logits, n_vocab, mk, banned, row, c0, v);
    int ts = mk.ts_begin >= 0 ? mk.ts_begin : n_vocab;
    /* the log-sum-exps of text and timestamps over the block, as the pick's */
    summarise_chunk(v, c0, n_vocab, ts, warp_acc);
    topk_part *out = parts + (size_t)row * gridDim.x + blockIdx.x;
    /* text, then timestamp candidates, each through shared memory */
    for (int kind = 0; kind < 2; kind++) {
#pragma unroll
        for (int j = 0; j < PICK_PER; j++) {
            int jj = j * TOPK_THREADS + t, i = c0 + jj;
            bool in = i < n_vocab && (i >= ts) == kind;
            cv[jj] = in ? v[j] : -INFINITY;
            ci[jj] = in ? i : INT_MAX;
        }
        __syncthreads();
        block_top<PICK_PER>(cv, ci, PICK_CHUNK, k, wv, wi, out->v[kind], out->i[kind]);
    }
    if (t < WARP) {
        pick_acc a = merge_warps(warp_acc);
        if (t == 0)
            for (int kind = 0; kind < 2; kind++) out->m[kind] = a.m[kind], out->s[kind] = a.s[kind];
    }
}

/* Block row: the chunks merged, the timestamp rule decided, the k best
 * with their log-probabilities written to tokens / logprobs (row x k). */
__global__ void k_topk_final(const topk_part *parts, int n_chunks,
                             const __grid_constant__ sh_pick_masks masks, int k, int *tokens,
                             double *logprobs) {
    __shared__ float cv[2 * PICK_MAX_CHUNKS * TOPK_MAX];
    __shared__ int ci[2 * PICK_MAX_CHUNKS * TOPK_MAX];
    __shared__ float wv[TOPK_WARPS * TOPK_MAX], best_v[TOPK_MAX];
    __shared__ int wi[TOPK_WARPS * TOPK_MAX], best_i[TOPK_MAX];
    __shared__ bool text_out;
    __shared__ double lse;
    int row = blockIdx.x, t = threadIdx.x;
    const topk_part *p = parts + (size_t)row * n_chunks;
    int ts_begin = masks.row[row].ts_begin;
    PDL_WAIT();
    if (t == 0) {
        float m[2] = {-INFINITY, -INFINITY}, max_text = -INFINITY;
        double s[2] = {0.0, 0.0};
        for (int c = 0; c < n_chunks; c++) {
            for (int kind = 0; kind < 2; kind++) lse_merge(m[kind], s[kind], p[c].m[kind], p[c].s[kind]);
            max_text = fmaxf(max_text, p[c].v[0][0]);
        }
        text_out = ts_begin >= 0 && m[1] != -INFINITY && log(s[1]) + m[1] > (double)max_text;
        if (text_out) m[0] = -INFINITY, s[0] = 0.0;
        lse_merge(m[0], s[0], m[1], s[1]);
        lse = log(s[0]) + m[0];
    }
    __syncthreads();
    /* candidates: every chunk's timestamps and its text; when the rule
     * puts text out, the k lowest ids stand in for it (all -inf then, as
     * a scan keeps them) */
    int n_part = n_chunks * k, n_cand = text_out ? n_part + k : 2 * n_part;
    for (int at = t; at < n_cand; at += TOPK_THREADS) {
        int kind = at < n_part ? 1 : 0, c = at % n_part / k, r = at % n_part % k;
        bool stand_in = text_out && kind == 0;
        cv[at] = stand_in ? -INFINITY : p[c].v[kind][r];
        ci[at] = stand_in ? at - n_part : p[c].i[kind][r];
    }
    __syncthreads();
    const int PER = (2 * PICK_MAX_CHUNKS * TOPK_MAX + TOPK_THREADS - 1) / TOPK_THREADS;
    block_top<PER>(cv, ci, n_cand, k, wv, wi, best_v, best_i);
    if (t < k) {
        tokens[(size_t)row * k + t] = best_i[t];
        logprobs[(size_t)row * k + t] = (double)best_v[t] - lse;
    }
}

extern "C" long sh_topk_scratch_bytes(int n_rows) {
    return (long)n_rows * PICK_MAX_CHUNKS * (long)sizeof(topk_part);
}

extern "C" void sh_k_topk(cudaStream_t s, float *logits, int n_rows, int n_vocab,
                          const sh_pick_mask *masks, const unsigned *banned, int k, void *scratch,
                          int *tokens, double *logprobs, int pdl) {
    int n_chunks = (n_vocab + PICK_CHUNK - 1) / PICK_CHUNK;
    if (n_chunks > PICK_MAX_CHUNKS || k < 1 || k > TOPK_MAX || n_rows < 1 ||
        n_rows > SH_GEMV_MAX_ROWS)
        return;
    topk_part *parts = (topk_part *)scratch;
    sh_pick_masks m = masks_by_value(masks, n_rows);
    launch(pdl, k_topk_partial, dim3(n_chunks, n_rows), dim3(TOPK_THREADS), 0, s, logits, n_vocab,
           m, banned, k, parts);
    launch(pdl, k_topk_final, dim3(n_rows), dim3(TOPK_THREADS), 0, s, parts, n_chunks, m, k,
           tokens, logprobs);
}
