/* rows.cuh - a lane's share of a weight row (eight weights a chunk, lane
 * by lane across the row): its loads and its dot products with inputs in
 * shared memory, in the one order the GEMV kernels (kernels.cu) and the
 * fused step's greedy pick (fused_step.cu) both sum in, so that a logit
 * either makes is the same to the bit. */
#ifndef SHRUTI_CUDA_ROWS_CUH
#define SHRUTI_CUDA_ROWS_CUH

#include <cuda_fp16.h>

#include "cuda/kernels.h"
#include "cuda/ptx.cuh"
#include "cuda/warp.cuh"

/* 16 or 8 bytes of weights, evicted from L2 first where STREAM (matrices
 * read once a step, together larger than L2: see l2_evict_first). */
template <bool STREAM, typename T>
static __device__ __forceinline__ T load_weights(const T *p) {
    return STREAM ? ldg_hint(p, l2_evict_first()) : __ldg(p);
}

/* Raw bits of eight weights of row o at column c (and the int8 scale). */
template <int KIND, bool STREAM = false>
static __device__ __forceinline__ void load_raw(const void *w, const __half *scales, int n_in,
                                                int o, int c, uint4 *raw) {
    if (KIND == SH_GW_F32) {
        const uint4 *p = (const uint4 *)((const float *)w + (size_t)o * n_in + c);
        raw[0] = load_weights<STREAM>(p), raw[1] = load_weights<STREAM>(p + 1);
    } else if (KIND == SH_GW_F16) {
        raw[0] = load_weights<STREAM>((const uint4 *)((const __half *)w + (size_t)o * n_in + c));
    } else {
        uint2 v = load_weights<STREAM>((const uint2 *)((const int8_t *)w + (size_t)o * n_in + c));
        raw[0].x = v.x, raw[0].y = v.y;
        raw[0].z = __half_as_ushort(scales[(size_t)o * (n_in / 32) + c / 32]);
    }
}

template <int KIND>
static __device__ __forceinline__ void widen(const uint4 *raw, float *out) {
    if (KIND == SH_GW_F32) {
        const float *f = (const float *)raw;
#pragma unroll
        for (int i = 0; i < 8; i++) out[i] = f[i];
    } else if (KIND == SH_GW_F16) {
        const __half2 *h = (const __half2 *)raw;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            float2 f = __half22float2(h[i]);
            out[2 * i] = f.x, out[2 * i + 1] = f.y;
        }
    } else {
        const int8_t *q = (const int8_t *)raw;
        float sc = __half2float(__ushort_as_half((unsigned short)raw[0].z));
#pragma unroll
        for (int i = 0; i < 8; i++) out[i] = (float)q[i] * sc;
    }
}

#define GEMV_PREFETCH 5   /* 16-byte chunks per lane: rows up to 1280 halves */

/* acc[r] += w[0..8) . x[r][c .. c+8) */
template <int R>
static __device__ __forceinline__ void dot8(float *acc, const float *wv, const float *x, int ld,
                                            int c) {
#pragma unroll
    for (int r = 0; r < R; r++) {
        const float4 *xp = (const float4 *)(x + (size_t)r * ld + c);
        float4 a = xp[0], b = xp[1];
        acc[r] += wv[0] * a.x + wv[1] * a.y + wv[2] * a.z + wv[3] * a.w + wv[4] * b.x +
                  wv[5] * b.y + wv[6] * b.z + wv[7] * b.w;
    }
}

/* f(k, c) for each of a lane's first CHUNKS chunks of 8 weights of a row
 * (c = lane * 8 + k * 256) inside n_in. */
template <int CHUNKS, typename F>
static __device__ __forceinline__ void lane_chunks(int n_in, F f) {
    const int lane = threadIdx.x % WARP;
#pragma unroll
    for (int k = 0; k < CHUNKS; k++) {
        int c = lane * 8 + k * WARP * 8;
        if (c < n_in) f(k, c);
    }
}

/* A lane's first CHUNKS chunks of eight weights of row o (none past
 * n_out), and their products with x[r] added into acc[r]. */
template <int KIND, int CHUNKS = GEMV_PREFETCH, bool STREAM = false>
static __device__ __forceinline__ void load_chunks(const void *w, const __half *scales, int n_out,
                                                   int n_in, int o, uint4 (*raw)[2]) {
    if (o < n_out)
        lane_chunks<CHUNKS>(n_in, [&](int k, int c) {
            load_raw<KIND, STREAM>(w, scales, n_in, o, c, raw[k]);
        });
}
template <int KIND, int R, int CHUNKS = GEMV_PREFETCH>
static __device__ __forceinline__ void dot_chunks(float *acc, const uint4 (*raw)[2], const float *x,
                                                  int ld, int n_in) {
    lane_chunks<CHUNKS>(n_in, [&](int k, int c) {
        float wv[8];
        widen<KIND>(raw[k], wv);
        dot8<R>(acc, wv, x, ld, c);
    });
}

#endif
