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
 * fragment of one 16-key step), v as B through ldmatrix.trans.
 *
 * On compute 9.0 built for sm_90a, the same walk on warpgroup MMAs
 * (wgmma, k_encoder_attention_wg): four warps multiply 64 queries by a
 * whole key tile in one instruction each 16 dimensions, reading the
 * queries and keys straight from shared memory (no ldmatrix, no register
 * copies of the tiles), and the probabilities from registers against the
 * value tile. H200, one layer: medium 47.3 -> 35.9 us, large 50.7 -> 42.0,
 * tiny 32.3 -> 29.0 (the same bits). Tried: the next tile's scores in
 * flight during this tile's softmax (three tile pairs): slower, medium
 * 36.7 -> 38.5 us. */
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
 * repeat row n - 1: in bounds, and their scores are masked). A loop over
 * blockDim.x: unrolled over the block's threads as wg_load's, this kernel
 * was slower (H200, one layer: medium 46.8 -> 49.2 us, tiny 32.2 -> 34.2). */
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

/* ------------------------------------------------ warpgroup MMAs (sm_90a) */

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define WG_ON 1
#else
#define WG_ON 0   /* the kernel is empty: sh_encoder_attention_groups says 0 */
#endif
#define WG_TILE (EA_K * EA_HD * 2)   /* bytes of a 64 x 64 half tile: 64 rows of 128 */
#define WG_STAGES 2

/* A tile's shared-memory descriptor for wgmma: 128-byte rows whose 16-byte
 * chunk c sits at c ^ (row % 8) (the 128B swizzle; tiles 1024-aligned),
 * groups of 8 rows 1024 bytes apart. Measured against the mma.sync path:
 * the leading offset (16) is not used by these layouts. */
static __device__ __forceinline__ uint64_t wg_desc(unsigned addr) {
    return (uint64_t)((addr & 0x3FFFF) >> 4) | (uint64_t)1 << 16 | (uint64_t)(1024 >> 4) << 32 |
           (uint64_t)1 << 62;
}

static __device__ __forceinline__ void wg_fence() {
#if WG_ON
    asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
#endif
}
static __device__ __forceinline__ void wg_commit_wait() {
#if WG_ON
    asm volatile("wgmma.commit_group.sync.aligned;\nwgmma.wait_group.sync.aligned 0;" ::: "memory");
#endif
}
/* The tiles this thread wrote (the generic proxy) made visible to the
 * MMAs' reads (the async proxy). */
static __device__ __forceinline__ void wg_proxy_fence() {
#if WG_ON
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
#endif
}
/* Registers an MMA in flight writes (its accumulators) or reads (its A
 * operand), pinned on both sides of it: the compiler may neither move
 * them nor hand them to other values meanwhile. Without this, ptxas gave
 * a tile's queries' registers to the probabilities while the next tile's
 * product still had to read them. */
static __device__ __forceinline__ void wg_pin(float *r) {
#pragma unroll
    for (int i = 0; i < 32; i++) asm volatile("" : "+f"(r[i])::"memory");
}
static __device__ __forceinline__ void wg_keep(unsigned *r) {
#pragma unroll
    for (int i = 0; i < 16; i++) asm volatile("" : "+r"(r[i])::"memory");
}

/* the 32 accumulator operands, and their constraints */
#define WG_D32                                                                                   \
    "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"                                   \
    "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}"
#define WG_OUT32(d)                                                                              \
    "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),          \
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),   \
        "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]),            \
        "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]),            \
        "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])

/* s (64 x 64 floats, 32 a thread in mma.sync's accumulator layout, a 16-row
 * slice a warp) += a b^T, or with first = a b^T (s's values unread: no
 * zeroing of 32 registers a tile): a and b 64 x 16 slices of K-major tiles. */
static __device__ __forceinline__ void wg_mma_qk(float *s, uint64_t a, uint64_t b, bool first) {
#if WG_ON
    asm volatile("{\n.reg .pred p;\nsetp.eq.b32 p, %34, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 " WG_D32 ", %32, %33, p, 1, 1, 0, 0;\n}"
                 : WG_OUT32(s)
                 : "l"(a), "l"(b), "r"((int)first));
#endif
}

/* o += p v: p 64 x 16 in registers (mma.sync's A layout, a warp's 16 rows),
 * v 16 rows of a tile whose rows run along o's columns (transposed). */
static __device__ __forceinline__ void wg_mma_pv(float *o, const unsigned *p, uint64_t v) {
#if WG_ON
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 " WG_D32
                 ", {%32,%33,%34,%35}, %36, p, 1, 1, 1;\n}"
                 : WG_OUT32(o)
                 : "r"(p[0]), "r"(p[1]), "r"(p[2]), "r"(p[3]), "l"(v));
#endif
}

/* Rows [j0, j0 + 64) of a head's column block at col (q, or k with KV:
 * then v's too, d on, into the tile WG_TILE on) into a swizzled tile (rows
 * past n repeat row n - 1); threads t0, t0 + NT, ... NT known at compile
 * time: the loop unrolled, its divisions shifts, each address made once
 * for k and v (H200, one layer, against a loop over blockDim.x, k's and
 * v's apart: medium 36.6 -> 32.8 us, large 43.9 -> 40.2, tiny 29.1 -> 25.3;
 * unrolled alone 34.9, 41.8, 26.4). */
template <int NT, bool KV>
static __device__ __forceinline__ void wg_load(const __half *qkv, int n, int d, int col, int j0,
                                               unsigned char *tile, int t0) {
#pragma unroll
    for (int i0 = 0; i0 < EA_K * 8; i0 += NT) {
        int i = i0 + t0, r = i / 8, c = i % 8, j = min(j0 + r, n - 1);
        if (EA_K * 8 % NT == 0 || i < EA_K * 8) {
            unsigned char *to = tile + r * 128 + ((c ^ (r & 7)) << 4);
            const __half *from = qkv + (size_t)j * 3 * d + col + c * 8;
            cp_async16(to, from);
            if (KV) cp_async16(to + WG_TILE, from + d);
        }
    }
}

/* WGS warpgroups of 64 queries a block, one head (blockIdx.y): the key and
 * value tiles (WG_STAGES pairs) shared by the warpgroups, each its own
 * queries' tile. The online softmax as k_encoder_attention's, on the same
 * accumulator layout; not one helper for both: k_encoder_attention with
 * its softmax as that helper's call was 9% slower (H200, one layer:
 * medium 47.3 -> 51.5 us, tiny 32.3 -> 35.6; ptxas scheduled it apart). */
template <int WGS>
__global__ void __launch_bounds__(WGS * 128) k_encoder_attention_wg(const __half *qkv, int n, int d,
                                                                     __half *out) {
    extern __shared__ __align__(1024) unsigned char wg_smem[];
    const int h = blockIdx.y, wg = threadIdx.x / 128, warp = threadIdx.x / 32 % 4;
    const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int q0 = (blockIdx.x * WGS + wg) * 64, n_tiles = (n + EA_K - 1) / EA_K;
    /* 1024-aligned in the shared space: the swizzle's period */
    unsigned char *tiles = wg_smem + ((1024u - (smem_u32(wg_smem) & 1023u)) & 1023u);
    unsigned char *qtile = tiles + WG_STAGES * 2 * WG_TILE + wg * WG_TILE;
    wg_load<128, false>(qkv, n, d, h * EA_HD, q0, qtile, threadIdx.x % 128);
    for (int i = 0; i < WG_STAGES - 1; i++) {
        if (i < n_tiles) {
            wg_load<WGS * 128, true>(qkv, n, d, d + h * EA_HD, i * EA_K, tiles + 2 * i * WG_TILE,
                                     threadIdx.x);
        }
        cp_async_commit();
    }
    const uint64_t qd = wg_desc(smem_u32(qtile));
    const float scale = 1.4426950408889634f * 0.125f;   /* log2(e) / sqrt(64) */
    float o[32], m0 = -INFINITY, m8 = -INFINITY, l0 = 0.0f, l8 = 0.0f;
#pragma unroll
    for (int i = 0; i < 32; i++) o[i] = 0.0f;
    for (int tile = 0; tile < n_tiles; tile++) {
        const int j0 = tile * EA_K;
        cp_async_wait<WG_STAGES - 2>();
        wg_proxy_fence();
        __syncthreads();
        {
            int next = tile + WG_STAGES - 1, b = next % WG_STAGES;
            if (next < n_tiles) {
                wg_load<WGS * 128, true>(qkv, n, d, d + h * EA_HD, next * EA_K, tiles + 2 * b * WG_TILE,
                                         threadIdx.x);
            }
            cp_async_commit();
        }
        /* a 64 x 16 slice 32 bytes on: the descriptor's address field
         * (bytes / 16) 2 on; 16 rows on: 128 */
        const uint64_t kd = wg_desc(smem_u32(tiles + (tile % WG_STAGES) * 2 * WG_TILE)),
                       vd = kd + (WG_TILE >> 4);
        /* s[4 j + e]: row g (e < 2) or g + 8 of the warp's 16, key j0 + 8 j + 2 t + (e & 1) */
        float s[32];
        wg_fence();
#pragma unroll
        for (int kk = 0; kk < 4; kk++) wg_mma_qk(s, qd + 2 * kk, kd + 2 * kk, kk == 0);
        wg_commit_wait();
        wg_pin(s);
        if (j0 + EA_K > n) {
#pragma unroll
            for (int j = 0; j < 8; j++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    if (j0 + j * 8 + 2 * t + (e & 1) >= n) s[4 * j + e] = -INFINITY;
        }
        float t0 = -INFINITY, t8 = -INFINITY;
#pragma unroll
        for (int j = 0; j < 8; j++) {
            t0 = fmaxf(t0, fmaxf(s[4 * j], s[4 * j + 1]));
            t8 = fmaxf(t8, fmaxf(s[4 * j + 2], s[4 * j + 3]));
        }
        t0 = fmaxf(t0, __shfl_xor_sync(0xffffffffu, t0, 1));
        t0 = fmaxf(t0, __shfl_xor_sync(0xffffffffu, t0, 2));
        t8 = fmaxf(t8, __shfl_xor_sync(0xffffffffu, t8, 1));
        t8 = fmaxf(t8, __shfl_xor_sync(0xffffffffu, t8, 2));
        float n0 = fmaxf(m0, t0 * scale), n8 = fmaxf(m8, t8 * scale);
        float c0 = ea_exp2(m0 - n0), c8 = ea_exp2(m8 - n8);
        m0 = n0, m8 = n8;
        float r0 = 0.0f, r8 = 0.0f;
#pragma unroll
        for (int j = 0; j < 8; j++) {
            float *v = s + 4 * j;
            v[0] = ea_exp2(fmaf(v[0], scale, -n0)), v[1] = ea_exp2(fmaf(v[1], scale, -n0));
            v[2] = ea_exp2(fmaf(v[2], scale, -n8)), v[3] = ea_exp2(fmaf(v[3], scale, -n8));
            r0 += v[0] + v[1], r8 += v[2] + v[3];
            o[4 * j] *= c0, o[4 * j + 1] *= c0, o[4 * j + 2] *= c8, o[4 * j + 3] *= c8;
        }
        l0 = l0 * c0 + r0, l8 = l8 * c8 + r8;
        /* two 8-key accumulator tiles are one 16-key A fragment */
        unsigned pa[4][4];
#pragma unroll
        for (int ks = 0; ks < 4; ks++)
#pragma unroll
            for (int i = 0; i < 4; i++) pa[ks][i] = ea_pack(s[8 * ks + 2 * i], s[8 * ks + 2 * i + 1]);
        wg_pin(o);
        wg_fence();
#pragma unroll
        for (int ks = 0; ks < 4; ks++) wg_mma_pv(o, pa[ks], vd + ks * (16 * 128 >> 4));
        wg_commit_wait();
        wg_pin(o);
        wg_keep(&pa[0][0]);
    }
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l8 += __shfl_xor_sync(0xffffffffu, l8, 1);
    l8 += __shfl_xor_sync(0xffffffffu, l8, 2);
    const float i0 = 1.0f / l0, i8 = 1.0f / l8;
    const int r = q0 + warp * 16 + g;
#pragma unroll
    for (int j = 0; j < 8; j++) {
        int c = h * EA_HD + j * 8 + 2 * t;
        if (r < n) *(unsigned *)(out + (size_t)r * d + c) = ea_pack(o[4 * j] * i0, o[4 * j + 1] * i0);
        if (r + 8 < n)
            *(unsigned *)(out + (size_t)(r + 8) * d + c) = ea_pack(o[4 * j + 2] * i8, o[4 * j + 3] * i8);
    }
}

/* Whether this build's kernels have the warpgroup MMAs (sm_90a code). */
__global__ void k_wg_built(int *on) { *on = WG_ON; }

static size_t wg_smem_bytes(int wgs) { return (size_t)(WG_STAGES * 2 + wgs) * WG_TILE + 1024; }

typedef void (*wg_fn)(const __half *, int, int, __half *);
static wg_fn wg_kernel(int wgs) {
    switch (wgs) {
    case 1: return k_encoder_attention_wg<1>;
    case 2: return k_encoder_attention_wg<2>;
    case 3: return k_encoder_attention_wg<3>;
    case 4: return k_encoder_attention_wg<4>;
    default: return NULL;
    }
}

extern "C" int sh_encoder_attention_groups(int device, int n, int d, int n_head) {
    int major = 0, minor = 0, sms = 0, *on = NULL, built = 0;
    if (d != n_head * EA_HD || n < 1 ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess ||
        major != 9 || minor != 0)
        return 0;
    if (cudaMalloc(&on, sizeof *on) != cudaSuccess) return 0;
    k_wg_built<<<1, 1>>>(on);
    if (cudaMemcpy(&built, on, sizeof built, cudaMemcpyDeviceToHost) != cudaSuccess) built = 0;
    cudaFree(on);
    if (!built) return 0;
    /* the fewest 64-query units on the busiest SM; among those, blocks of
     * 1, 3, 2, 4 warpgroups in that order (H200, one layer, since the
     * loads were unrolled: medium 1 32.1 us against 3 32.9, large 1 39.9
     * against 2 40.4 and 4 40.3, tiny 1 25.0 against 2 25.5; with the loads
     * as a loop 3, 2, 4, 1 had been the order: medium 3 35.9 against 1 37.0) */
    static const int order[4] = {1, 3, 2, 4};
    int best = 0;
    long best_units = 0;
    for (int k = 0; k < 4; k++) {
        int wgs = order[k], per_sm = 0;
        cudaFuncSetAttribute(wg_kernel(wgs), cudaFuncAttributeMaxDynamicSharedMemorySize,
                             (int)wg_smem_bytes(wgs));
        if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, wg_kernel(wgs), wgs * 128,
                                                          wg_smem_bytes(wgs)) != cudaSuccess ||
            per_sm < 1)
            continue;
        long blocks = (long)n_head * ((n + 64 * wgs - 1) / (64 * wgs));
        long waves = (blocks + (long)sms * per_sm - 1) / ((long)sms * per_sm);
        long busiest = waves > 1 ? (long)per_sm : (blocks + sms - 1) / sms;
        long units = waves * busiest * wgs;
        if (!best || units < best_units) best = wgs, best_units = units;
    }
    cudaGetLastError();   /* a refused attribute or launch is not the run's error */
    return best;
}

extern "C" int sh_k_encoder_attention(cudaStream_t s, const uint16_t *qkv, int n, int d,
                                      int n_head, uint16_t *out, int groups) {
    if (d != n_head * EA_HD || n < 1) return -1;
    if (wg_kernel(groups)) {
        wg_kernel(groups)<<<dim3((n + 64 * groups - 1) / (64 * groups), n_head), groups * 128,
                            wg_smem_bytes(groups), s>>>((const __half *)qkv, n, d, (__half *)out);
        return 0;
    }
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
