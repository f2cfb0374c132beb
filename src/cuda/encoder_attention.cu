/* encoder_attention.cu - the encoder's self-attention in one kernel on the
 * tensor cores (half activations, 64-wide heads): softmax(q k^T / 8) v
 * for every head without the scores ever leaving the SM.
 *
 * Why: through cuBLAS the scores of a medium layer are 16 x 1500 x 1500
 * floats (144 MB) written, read and rewritten by a softmax kernel and read
 * again: 0.29 of a layer's 0.48 ms. Here a block takes 128 queries of one
 * head, walks the keys 64 at a time (the next tile's keys and values
 * copied into shared memory while this one is used) and keeps a running
 * maximum and sum per query (the online softmax), so the scores live in
 * registers only.
 *
 * Each warp owns 32 queries, two tiles of 16. S = q k^T is mma.m16n8k16 with the queries
 * as A (held in registers for the whole walk) and the keys as B (ldmatrix
 * from the key tile); the probabilities go back in as A of P v without a
 * trip through memory (an accumulator fragment of two 8-key tiles is an A
 * fragment of one 16-key step), v as B through ldmatrix.trans. */
#include <cuda_fp16.h>
#include <math.h>

#include "cuda/kernels.h"
#include "cuda/ptx.cuh"

#define EA_HD 64      /* head width */
#define EA_K 64       /* keys a tile */
#define EA_STRIDE 72  /* halves a row of a tile in shared memory: ldmatrix without bank conflicts */
#define EA_TILE (EA_K * EA_STRIDE)   /* halves of a key or value tile */

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

/* 2^x for the probabilities (x <= 0): the approximate instruction alone
 * (exp2f adds a denormal fix-up; the result is rounded to half anyway). */
static __device__ __forceinline__ float ea_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

/* c += a b as mma16816, but free for the compiler to schedule between the
 * shared-memory loads (no volatile: a pure function of its registers). */
static __device__ __forceinline__ void ea_mma(float *c, const unsigned *a, unsigned b0, unsigned b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

/* WARPS warps of MT 16-query tiles each: every key and value fragment a
 * warp loads from shared memory serves its MT tiles (with one tile a warp,
 * ldmatrix's shared-memory reads and not the MMAs bounded the loop). */
template <int WARPS, int MT, int STAGES>
__global__ void __launch_bounds__(WARPS * 32) k_encoder_attention(const __half *qkv, int n, int d,
                                                                   __half *out) {
    extern __shared__ __align__(16) __half tiles[];   /* STAGES x (keys, values) */
    int h = blockIdx.y, warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    int q0 = (blockIdx.x * WARPS + warp) * 16 * MT;
    int n_tiles = (n + EA_K - 1) / EA_K;
    /* the first STAGES - 1 tiles on their way (a group each, empty past the end) */
    for (int i = 0; i < STAGES - 1; i++) {
        if (i < n_tiles)
            ea_load_tile(qkv, n, d, h, i * EA_K, tiles + i * 2 * EA_TILE, tiles + (i * 2 + 1) * EA_TILE);
        else
            cp_async_commit();
    }
    /* this warp's queries as A fragments of the 4 16-wide steps of the head */
    unsigned qa[MT][4][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        const __half *qr0 = qkv + (size_t)min(q0 + mt * 16 + g, n - 1) * 3 * d + h * EA_HD;
        const __half *qr8 = qkv + (size_t)min(q0 + mt * 16 + g + 8, n - 1) * 3 * d + h * EA_HD;
#pragma unroll
        for (int kk = 0; kk < 4; kk++) {
            int c = kk * 16 + 2 * t;
            qa[mt][kk][0] = *(const unsigned *)(qr0 + c), qa[mt][kk][1] = *(const unsigned *)(qr8 + c);
            qa[mt][kk][2] = *(const unsigned *)(qr0 + c + 8);
            qa[mt][kk][3] = *(const unsigned *)(qr8 + c + 8);
        }
    }
    /* log2(e) / sqrt(64): scores in base 2 for exp2 */
    const float scale = 1.4426950408889634f * 0.125f;
    float o[MT][8][4], m0[MT], m8[MT], l0[MT], l8[MT];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        m0[mt] = m8[mt] = -INFINITY, l0[mt] = l8[mt] = 0.0f;
#pragma unroll
        for (int i = 0; i < 8; i++) o[mt][i][0] = o[mt][i][1] = o[mt][i][2] = o[mt][i][3] = 0.0f;
    }
    for (int tile = 0; tile < n_tiles; tile++) {
        int j0 = tile * EA_K;
        cp_async_wait<STAGES - 2>();   /* this tile's group */
        /* every warp is past the tile before, whose buffer the load below reuses */
        __syncthreads();
        {   /* the tile STAGES - 1 on (an empty group past the end keeps the count) */
            int next = tile + STAGES - 1, b = next % STAGES;
            if (next < n_tiles)
                ea_load_tile(qkv, n, d, h, next * EA_K, tiles + b * 2 * EA_TILE,
                             tiles + (b * 2 + 1) * EA_TILE);
            else
                cp_async_commit();
        }
        const __half *kt = tiles + (tile % STAGES) * 2 * EA_TILE, *vt = kt + EA_TILE;
        /* s = q k^T: 8 tiles of 8 keys, c[0..1] row g, c[2..3] row g + 8 */
        float s[MT][8][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int nt = 0; nt < 8; nt++) s[mt][nt][0] = s[mt][nt][1] = s[mt][nt][2] = s[mt][nt][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < 4; kk++) {
#pragma unroll
            for (int np = 0; np < 4; np++) {
                /* keys np*16 .. +15, dims kk*16 .. +15: matrices (keys lo, dims lo),
                 * (keys lo, dims hi), (keys hi, dims lo), (keys hi, dims hi) */
                int m = lane / 8, key = np * 16 + (lane % 8) + (m >> 1) * 8, dim = kk * 16 + (m & 1) * 8;
                unsigned b[4];
                ldmatrix4(b, kt + key * EA_STRIDE + dim, false);
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    ea_mma(s[mt][2 * np], qa[mt][kk], b[0], b[1]);
                    ea_mma(s[mt][2 * np + 1], qa[mt][kk], b[2], b[3]);
                }
            }
        }
        /* the online softmax, rows g and g + 8 of each query tile (a row's
         * 64 scores over 4 lanes), on the raw scores (the scale is
         * positive: the same maximum) and scaled inside the exponentials'
         * FMA; keys past n masked in the last tile only (the compares and
         * the scaling were ~a quarter of a tile's non-MMA instructions) */
        if (j0 + EA_K > n) {
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int nt = 0; nt < 8; nt++)
#pragma unroll
                    for (int e = 0; e < 4; e++)
                        if (j0 + nt * 8 + 2 * t + (e & 1) >= n) s[mt][nt][e] = -INFINITY;
        }
        unsigned pa[MT][4][4];   /* the probabilities as A fragments of 4 16-key steps */
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
            float t0 = -INFINITY, t8 = -INFINITY;
#pragma unroll
            for (int nt = 0; nt < 8; nt++) {
                t0 = fmaxf(t0, fmaxf(s[mt][nt][0], s[mt][nt][1]));
                t8 = fmaxf(t8, fmaxf(s[mt][nt][2], s[mt][nt][3]));
            }
            t0 = fmaxf(t0, __shfl_xor_sync(0xffffffffu, t0, 1));
            t0 = fmaxf(t0, __shfl_xor_sync(0xffffffffu, t0, 2));
            t8 = fmaxf(t8, __shfl_xor_sync(0xffffffffu, t8, 1));
            t8 = fmaxf(t8, __shfl_xor_sync(0xffffffffu, t8, 2));
            /* m0, m8: the running maxima, scaled */
            float n0 = fmaxf(m0[mt], t0 * scale), n8 = fmaxf(m8[mt], t8 * scale);
            float c0 = ea_exp2(m0[mt] - n0), c8 = ea_exp2(m8[mt] - n8);
            m0[mt] = n0, m8[mt] = n8;
            float r0 = 0.0f, r8 = 0.0f;
#pragma unroll
            for (int nt = 0; nt < 8; nt++) {
                float *v = s[mt][nt];
                v[0] = ea_exp2(fmaf(v[0], scale, -n0)), v[1] = ea_exp2(fmaf(v[1], scale, -n0));
                v[2] = ea_exp2(fmaf(v[2], scale, -n8)), v[3] = ea_exp2(fmaf(v[3], scale, -n8));
                r0 += v[0] + v[1], r8 += v[2] + v[3];
                o[mt][nt][0] *= c0, o[mt][nt][1] *= c0, o[mt][nt][2] *= c8, o[mt][nt][3] *= c8;
            }
            l0[mt] = l0[mt] * c0 + r0, l8[mt] = l8[mt] * c8 + r8;   /* this lane's share */
#pragma unroll
            for (int ks16 = 0; ks16 < 4; ks16++) {
                pa[mt][ks16][0] = ea_pack(s[mt][2 * ks16][0], s[mt][2 * ks16][1]);
                pa[mt][ks16][1] = ea_pack(s[mt][2 * ks16][2], s[mt][2 * ks16][3]);
                pa[mt][ks16][2] = ea_pack(s[mt][2 * ks16 + 1][0], s[mt][2 * ks16 + 1][1]);
                pa[mt][ks16][3] = ea_pack(s[mt][2 * ks16 + 1][2], s[mt][2 * ks16 + 1][3]);
            }
        }
        /* o += p v: 4 steps of 16 keys, 8 tiles of 8 dims */
#pragma unroll
        for (int ks16 = 0; ks16 < 4; ks16++) {
#pragma unroll
            for (int dp = 0; dp < 4; dp++) {
                /* keys ks16*16 .. +15 (rows), dims dp*16 .. +15: matrices (keys lo,
                 * dims lo), (keys hi, dims lo), (keys lo, dims hi), (keys hi, dims hi) */
                int m = lane / 8, key = ks16 * 16 + (lane % 8) + (m & 1) * 8, dim = dp * 16 + (m >> 1) * 8;
                unsigned b[4];
                ldmatrix4(b, vt + key * EA_STRIDE + dim, true);
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    ea_mma(o[mt][2 * dp], pa[mt][ks16], b[0], b[1]);
                    ea_mma(o[mt][2 * dp + 1], pa[mt][ks16], b[2], b[3]);
                }
            }
        }
    }
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        float a0 = l0[mt], a8 = l8[mt];
        a0 += __shfl_xor_sync(0xffffffffu, a0, 1);
        a0 += __shfl_xor_sync(0xffffffffu, a0, 2);
        a8 += __shfl_xor_sync(0xffffffffu, a8, 1);
        a8 += __shfl_xor_sync(0xffffffffu, a8, 2);
        float i0 = 1.0f / a0, i8 = 1.0f / a8;
        int r = q0 + mt * 16 + g;
#pragma unroll
        for (int nt = 0; nt < 8; nt++) {
            int c = h * EA_HD + nt * 8 + 2 * t;
            if (r < n) *(unsigned *)(out + (size_t)r * d + c) = ea_pack(o[mt][nt][0] * i0, o[mt][nt][1] * i0);
            if (r + 8 < n)
                *(unsigned *)(out + (size_t)(r + 8) * d + c) = ea_pack(o[mt][nt][2] * i8, o[mt][nt][3] * i8);
        }
    }
}

extern "C" int sh_k_encoder_attention(cudaStream_t s, const uint16_t *qkv, int n, int d,
                                      int n_head, uint16_t *out) {
    if (d != n_head * EA_HD || n < 1) return -1;
    /* H200 (bench, one layer): medium 53.2 -> 52.3 us, large-v3 62.6 ->
     * 53.3, tiny 40.8 -> 36.3 with two query tiles a warp; three or four
     * tiles in flight instead of two changed nothing */
    const int warps = 4, tiles_a_warp = 2, stages = 2, queries = warps * 16 * tiles_a_warp;
    size_t smem = (size_t)stages * 2 * EA_TILE * sizeof(__half);   /* under the 48 KB default */
    k_encoder_attention<warps, tiles_a_warp, stages>
        <<<dim3((n + queries - 1) / queries, n_head), warps * 32, smem, s>>>((const __half *)qkv, n, d,
                                                                             (__half *)out);
    return 0;
}
