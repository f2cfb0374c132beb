/* encoder_attention.cu - the encoder's self-attention in one kernel on the
 * tensor cores (half activations, 64-wide heads): softmax(q k^T / 8) v
 * for every head without the scores ever leaving the SM.
 *
 * Why: through cuBLAS the scores of a medium layer are 16 x 1500 x 1500
 * floats (144 MB) written, read and rewritten by a softmax kernel and read
 * again: 0.29 of a layer's 0.48 ms. Here a block takes 64 queries of one
 * head, walks the keys 64 at a time (the next tile's keys and values
 * copied into shared memory while this one is used) and keeps a running
 * maximum and sum per query (the online softmax), so the scores live in
 * registers only.
 *
 * Each warp owns 16 queries. S = q k^T is mma.m16n8k16 with the queries
 * as A (held in registers for the whole walk) and the keys as B (ldmatrix
 * from the key tile); the probabilities go back in as A of P v without a
 * trip through memory (an accumulator fragment of two 8-key tiles is an A
 * fragment of one 16-key step), v as B through ldmatrix.trans. */
#include <cuda_fp16.h>
#include <math.h>

#include "cuda/kernels.h"
#include "cuda/ptx.cuh"

#define EA_HD 64      /* head width */
#define EA_Q 64       /* queries a block: 4 warps of 16 */
#define EA_K 64       /* keys a tile */
#define EA_STRIDE 72  /* halves a row of a tile in shared memory: ldmatrix without bank conflicts */

/* Four 8 x 8 half matrices from shared memory (one row address a lane),
 * transposed or not, into the fragment layout of mma.m16n8k16. */
static __device__ __forceinline__ void ea_ldmatrix(unsigned *r, const __half *p, bool trans) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    if (trans)
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_u32(p)));
    else
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_u32(p)));
#else   /* never launched below 8.0 (sh_k_encoder_attention) */
    r[0] = r[1] = r[2] = r[3] = 0;
#endif
}

static __device__ __forceinline__ unsigned ea_pack(float lo, float hi) {
    __half2 h = __floats2half2_rn(lo, hi);
    return *(unsigned *)&h;
}

/* Keys and values [j0, j0 + EA_K) of head h into a tile pair (rows past n
 * repeat row n - 1: in bounds, and their scores are masked). */
static __device__ __forceinline__ void ea_load_tile(const __half *qkv, int n, int d, int h, int j0,
                                                    __half *ks, __half *vs) {
    for (int i = threadIdx.x; i < EA_K * EA_HD / 8; i += blockDim.x) {
        int r = i / (EA_HD / 8), c = (i % (EA_HD / 8)) * 8, j = min(j0 + r, n - 1);
        const __half *row = qkv + (size_t)j * 3 * d + h * EA_HD + c;
        cp_async16(ks + r * EA_STRIDE + c, row + d);
        cp_async16(vs + r * EA_STRIDE + c, row + 2 * d);
    }
    cp_async_commit();
}

__global__ void __launch_bounds__(128) k_encoder_attention(const __half *qkv, int n, int d,
                                                           __half *out) {
    __shared__ __align__(16) __half ks[2][EA_K * EA_STRIDE];
    __shared__ __align__(16) __half vs[2][EA_K * EA_STRIDE];
    int h = blockIdx.y, warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    int q0 = blockIdx.x * EA_Q + warp * 16;
    ea_load_tile(qkv, n, d, h, 0, ks[0], vs[0]);
    /* this warp's 16 queries as A fragments of the 4 16-wide steps of the head */
    unsigned qa[4][4];
    const __half *qr0 = qkv + (size_t)min(q0 + g, n - 1) * 3 * d + h * EA_HD;
    const __half *qr8 = qkv + (size_t)min(q0 + g + 8, n - 1) * 3 * d + h * EA_HD;
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
        int c = kk * 16 + 2 * t;
        qa[kk][0] = *(const unsigned *)(qr0 + c), qa[kk][1] = *(const unsigned *)(qr8 + c);
        qa[kk][2] = *(const unsigned *)(qr0 + c + 8), qa[kk][3] = *(const unsigned *)(qr8 + c + 8);
    }
    /* log2(e) / sqrt(64): scores in base 2 for exp2 */
    const float scale = 1.4426950408889634f * 0.125f;
    float o[8][4], m0 = -INFINITY, m8 = -INFINITY, l0 = 0.0f, l8 = 0.0f;
#pragma unroll
    for (int i = 0; i < 8; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
    int n_tiles = (n + EA_K - 1) / EA_K;
    for (int tile = 0; tile < n_tiles; tile++) {
        int buf = tile & 1, j0 = tile * EA_K;
        /* the next tile on its way before this one is waited for */
        if (tile + 1 < n_tiles)
            ea_load_tile(qkv, n, d, h, j0 + EA_K, ks[buf ^ 1], vs[buf ^ 1]);
        else
            cp_async_commit();   /* an empty group keeps wait_group 1 meaning "this tile" */
        cp_async_wait<1>();   /* this tile's group */
        __syncthreads();
        const __half *kt = ks[buf], *vt = vs[buf];
        /* s = q k^T: 8 tiles of 8 keys, c[0..1] row g, c[2..3] row g + 8 */
        float s[8][4];
#pragma unroll
        for (int nt = 0; nt < 8; nt++) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < 4; kk++) {
#pragma unroll
            for (int np = 0; np < 4; np++) {
                /* keys np*16 .. +15, dims kk*16 .. +15: matrices (keys lo, dims lo),
                 * (keys lo, dims hi), (keys hi, dims lo), (keys hi, dims hi) */
                int m = lane / 8, key = np * 16 + (lane % 8) + (m >> 1) * 8, dim = kk * 16 + (m & 1) * 8;
                unsigned b[4];
                ea_ldmatrix(b, kt + key * EA_STRIDE + dim, false);
                mma16816(s[2 * np], qa[kk], b[0], b[1]);
                mma16816(s[2 * np + 1], qa[kk], b[2], b[3]);
            }
        }
        /* the online softmax, rows g and g + 8 (a row's 64 scores over 4
         * lanes), on the raw scores (the scale is positive: the same
         * maximum) and scaled inside the exponentials' FMA; keys past n
         * masked in the last tile only (the compares and the scaling were
         * ~a quarter of a tile's non-MMA instructions) */
        if (j0 + EA_K > n) {
#pragma unroll
            for (int nt = 0; nt < 8; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    if (j0 + nt * 8 + 2 * t + (e & 1) >= n) s[nt][e] = -INFINITY;
        }
        float t0 = -INFINITY, t8 = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < 8; nt++) {
            t0 = fmaxf(t0, fmaxf(s[nt][0], s[nt][1]));
            t8 = fmaxf(t8, fmaxf(s[nt][2], s[nt][3]));
        }
        t0 = fmaxf(t0, __shfl_xor_sync(0xffffffffu, t0, 1));
        t0 = fmaxf(t0, __shfl_xor_sync(0xffffffffu, t0, 2));
        t8 = fmaxf(t8, __shfl_xor_sync(0xffffffffu, t8, 1));
        t8 = fmaxf(t8, __shfl_xor_sync(0xffffffffu, t8, 2));
        /* m0, m8: the running maxima, scaled */
        float n0 = fmaxf(m0, t0 * scale), n8 = fmaxf(m8, t8 * scale);
        float c0 = exp2f(m0 - n0), c8 = exp2f(m8 - n8);
        m0 = n0, m8 = n8;
        float r0 = 0.0f, r8 = 0.0f;
#pragma unroll
        for (int nt = 0; nt < 8; nt++) {
            s[nt][0] = exp2f(fmaf(s[nt][0], scale, -n0)), s[nt][1] = exp2f(fmaf(s[nt][1], scale, -n0));
            s[nt][2] = exp2f(fmaf(s[nt][2], scale, -n8)), s[nt][3] = exp2f(fmaf(s[nt][3], scale, -n8));
            r0 += s[nt][0] + s[nt][1], r8 += s[nt][2] + s[nt][3];
            o[nt][0] *= c0, o[nt][1] *= c0, o[nt][2] *= c8, o[nt][3] *= c8;
        }
        l0 = l0 * c0 + r0, l8 = l8 * c8 + r8;   /* this lane's share; summed at the end */
        /* o += p v: 4 steps of 16 keys, 8 tiles of 8 dims */
#pragma unroll
        for (int ks16 = 0; ks16 < 4; ks16++) {
            unsigned pa[4] = {ea_pack(s[2 * ks16][0], s[2 * ks16][1]),
                              ea_pack(s[2 * ks16][2], s[2 * ks16][3]),
                              ea_pack(s[2 * ks16 + 1][0], s[2 * ks16 + 1][1]),
                              ea_pack(s[2 * ks16 + 1][2], s[2 * ks16 + 1][3])};
#pragma unroll
            for (int dp = 0; dp < 4; dp++) {
                /* keys ks16*16 .. +15 (rows), dims dp*16 .. +15: matrices (keys lo,
                 * dims lo), (keys hi, dims lo), (keys lo, dims hi), (keys hi, dims hi) */
                int m = lane / 8, key = ks16 * 16 + (lane % 8) + (m & 1) * 8, dim = dp * 16 + (m >> 1) * 8;
                unsigned b[4];
                ea_ldmatrix(b, vt + key * EA_STRIDE + dim, true);
                mma16816(o[2 * dp], pa, b[0], b[1]);
                mma16816(o[2 * dp + 1], pa, b[2], b[3]);
            }
        }
        __syncthreads();   /* this buffer is refilled two tiles on */
    }
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l8 += __shfl_xor_sync(0xffffffffu, l8, 1);
    l8 += __shfl_xor_sync(0xffffffffu, l8, 2);
    float i0 = 1.0f / l0, i8 = 1.0f / l8;
#pragma unroll
    for (int nt = 0; nt < 8; nt++) {
        int c = h * EA_HD + nt * 8 + 2 * t;
        if (q0 + g < n) *(unsigned *)(out + (size_t)(q0 + g) * d + c) = ea_pack(o[nt][0] * i0, o[nt][1] * i0);
        if (q0 + g + 8 < n)
            *(unsigned *)(out + (size_t)(q0 + g + 8) * d + c) = ea_pack(o[nt][2] * i8, o[nt][3] * i8);
    }
}

extern "C" int sh_k_encoder_attention(cudaStream_t s, const uint16_t *qkv, int n, int d,
                                      int n_head, uint16_t *out) {
    if (d != n_head * EA_HD || n < 1) return -1;
    dim3 grid((n + EA_Q - 1) / EA_Q, n_head);
    k_encoder_attention<<<grid, 128, 0, s>>>((const __half *)qkv, n, d, (__half *)out);
    return 0;
}
