/* fused_step.cu - the whole decoder step of one row or two as one
 * persistent kernel (Hopper and later, half weights): the greedy step's
 * latency path, and two batched windows' or two beams'.
 *
 * Why: the step as ~8 kernels a layer costs a dependent launch each
 * (~2.5-4 us) while the weights of a layer stream in ~10 us; a medium step
 * was 0.97 ms against 0.25 ms of weight reads. Here one block per SM runs
 * every phase of every layer:
 *   - each block owns a fixed slice of every matrix's rows; a warp of its
 *     own fetches the next slices into a ring of shared memory with bulk
 *     copies (TMA) as far ahead as the ring holds, so weights stream while
 *     the chain waits, and no compute thread ever waits to issue a copy;
 *     they and the cross keys are read evict-first (stream_l2), so that
 *     L2 keeps what the chain reads again from step to step;
 *   - phases hand vectors on as 64-bit words (epoch << 32 | float bits)
 *     that readers poll until the epoch is this step's: no grid barrier,
 *     one memory round trip per phase (the "LL" scheme of NCCL's
 *     low-latency protocol);
 *   - attention runs on f.splits blocks a head: a head whose keys fit one
 *     block's shared memory (self-attention's short contexts) on each of
 *     them whole, else split over key ranges, the partial softmaxes handed
 *     to all the head's blocks and merged by each;
 *   - then each block multiplies its head's output by its share of the
 *     head's columns of o (a copy of o head by head) and adds the products
 *     into fixed-point sums in L2 that count their adds: x1 and x2 arrive
 *     without a hand-over of the attention's output and a GEMV phase.
 * Half weights, or int8 ones with their per-32 scales fetched behind each
 * slice (int8_float16). Phases of a layer: qkv (layer norm inside);
 * the cross query's G x (cross_query) beside the wait for the head's q,
 * k and v; self-attention with o's and G o's head columns (x1 and the
 * cross query from sums); cross-attention with cross o's head columns
 * (x2 from sums; its keys copied by the fetching warp meanwhile:
 * ring_produce); fc1 (layer norm inside, GELU); fc2 (x3 from sums: each
 * block one column block's rows, my_fc2_rows); fc1 and fc2 on the tensor
 * cores where a block has 31-32 of their rows (mma_gemv, a build of its
 * own: MMA). Given a logits buffer (the
 * backend: tiny), the final layer norm and the logits too, the token
 * embedding's rows streamed through the ring in parts; else they and the
 * pick stay separate kernels, or (f.pick, float16: medium, large) the step
 * after a greedy choice begins with it (pick_first). All blocks must be
 * resident: launched cooperatively.
 * Two rows (ROWS, fifteenth session) share every weight slice; each has
 * its own token, caches, window, words, sums and vectors, and its own
 * half of each head's blocks (medium: 857 us a step of two rows, where
 * attention row after row in every head's blocks took 957).
 * H200, fourteenth session: a medium step ~605 us (the kernels' 0.97 ms),
 * tiny ~71 us; bench/bench_fused_step traces its phases. The sums took
 * 685 -> 664 us (medium), 80 -> 72 (tiny): a hand-over of the heads'
 * outputs and the o phase less; fc1's and fc2's slices in halves (see
 * LAYER_SLICES) 662 -> 605; with a separate counter of adds (a
 * release, then an acquire and a second round trip to read) they had lost
 * (medium 727 us), and fc2 the same way (each block's hidden rows times
 * their fc2 columns: 132 adds a sum) lost to the adds' own rate in L2
 * (medium 810 us). Sixteenth session: fc2 in four blocks of columns, a
 * run of a quarter of the blocks each, every block waiting for a quarter
 * of fc1's output and adding into x3's sums (4 adds a sum): medium 608 ->
 * 563 us, small 268 -> 241, tiny 71 -> 70; each attention's part (head_part)
 * worked out once a step: medium 565 -> 558, tiny 70.4 -> 65.9.
 * Seventeenth session: the cross query folded into the self-attention's
 * sums (its layer norm, GEMV phase and hand-over off the chain): medium
 * 556 -> 525 us; the G phase beside the query's poll and the cross keys
 * copied by the fetching warp: 524 -> 502 (tiny 65.8 -> 62.3). What
 * bounds it is the chain of hand-overs and the serial work between them
 * (ncu, medium: 12 cycles a warp between issues, stalls on barriers
 * 24%, on global loads (the polls) 21%, on the instruction cache 2%):
 * what is taken off the chain gains (64-bit divisions after each wait: medium 749 -> 730
 * us; the layer norm's four barriers down to one: 730 -> 720; attention's
 * weighted sums 27 -> 13 keys deep: 720 -> 701), while code size alone
 * does not (the six GEMV phases as one loop, 108 -> 59 KB of code: medium
 * 2% slower in bench_model). Calls instead of inlining cost more than
 * they save. */
#include <cuda_fp16.h>
#include <math.h>

#include "cuda/kernels.h"
#include "cuda/pick.cuh"
#include "cuda/ptx.cuh"
#include "cuda/warp.cuh"

#define FS_THREADS 480  /* the compute threads; one more warp fetches weights */
#define FS_BLOCK (FS_THREADS + WARP)
#define FS_SLOTS 8      /* weight slices in flight at most */
#define FS_HD 64        /* head width (every Whisper size) */
#define FS_PART (FS_HD + 2)   /* a partial softmax: max, sum, 64 weighted values */

typedef unsigned long long u64;

static_assert(FS_THREADS / WARP == 15, "sum15 and max15 read one float a compute warp");

/* The FS_THREADS / WARP (15) floats at p combined by op, by every thread
 * in the same order (broadcast loads: all lanes read the same words), so
 * that every thread gets the same bits. */
template <typename Op>
static __device__ __forceinline__ float over15(const float *p, Op op) {
    float4 a = *(const float4 *)p, b = *(const float4 *)(p + 4), c = *(const float4 *)(p + 8);
    float2 e = *(const float2 *)(p + 12);
    return op(op(op(op(a.x, a.y), op(a.z, a.w)), op(op(b.x, b.y), op(b.z, b.w))),
              op(op(op(c.x, c.y), op(c.z, c.w)), op(op(e.x, e.y), p[14])));
}

/* Their sum. */
static __device__ __forceinline__ float sum15(const float *p) {
    return over15(p, [](float x, float y) { return x + y; });
}

/* Their largest. */
static __device__ __forceinline__ float max15(const float *p) {
    return over15(p, [](float x, float y) { return fmaxf(x, y); });
}

/* Sums of v[0..N) (N 2 or 4) over the warp, transposed: each shuffle
 * carries one value where a warp_sum each took N times as many, and
 * value k ends in lane k * (WARP / N) (after the first step half the
 * lanes hold v0's pairs, half v1's, and so on). */
template <int N>
static __device__ __forceinline__ float warp_sums(const float *v) {
    static_assert(N == 2 || N == 4, "two or four values a warp");
    const int lane = threadIdx.x % WARP;
    float keep;
    if (N == 2) {
        bool hi = lane & 16;
        keep = (hi ? v[1] : v[0]) + __shfl_xor_sync(0xffffffffu, hi ? v[0] : v[1], 16);
    } else {
        bool hi = lane & 16, mid = lane & 8;
        float a = (hi ? v[2] : v[0]) + __shfl_xor_sync(0xffffffffu, hi ? v[0] : v[2], 16);
        float b = (hi ? v[3] : v[1]) + __shfl_xor_sync(0xffffffffu, hi ? v[1] : v[3], 16);
        keep = (mid ? b : a) + __shfl_xor_sync(0xffffffffu, mid ? a : b, 8);
    }
    for (int o = WARP / N / 2; o > 0; o >>= 1) keep += __shfl_xor_sync(0xffffffffu, keep, o);
    return keep;
}

/* ------------------------------------------------------------ primitives */

static __device__ __forceinline__ u64 ll_load(const u64 *p) {
    u64 v;
    asm volatile("ld.relaxed.gpu.global.b64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
    return v;
}

/* Sums that one block of each head adds its product into (o and cross o:
 * a head's output times the head's columns): 64-bit integer adds in L2,
 * each a value at 2^-24 plus one at bit 48, so a sum is the same whatever
 * order its adds arrive in (float adds would not be) and says itself when
 * all have come: readers poll it as they poll a hand-over word. Values to
 * +-2^23 (a sum's part of the residual stream). */
#define FX_ONE 16777216.0f
#define FX_COUNT (1ULL << 48)
static __device__ __forceinline__ void fx_add(long long *p, float v) {
    u64 q = (u64)__float2ll_rn(v * FX_ONE) + FX_COUNT;
    asm volatile("red.relaxed.gpu.global.add.u64 [%0], %1;" ::"l"(p), "l"(q) : "memory");
}
/* The count of adds in a sum word (its value is below 2^47 either way). */
static __device__ __forceinline__ unsigned fx_count(u64 w) { return (unsigned)((w + (FX_COUNT >> 1)) >> 48); }
static __device__ __forceinline__ float fx_value(u64 w, unsigned adds) {
    return __ll2float_rn((long long)(w - adds * FX_COUNT)) * (1.0f / FX_ONE);
}

static __device__ __forceinline__ void ll_store(u64 *p, unsigned epoch, float v) {
    u64 w = ((u64)epoch << 32) | __float_as_uint(v);
    asm volatile("st.relaxed.gpu.global.b64 [%0], %1;" ::"l"(p), "l"(w) : "memory");
}

/* Polls *p until its epoch is this step's (w holds the first load). A
 * word that never comes (a bug, a lost block) must not hang the process:
 * after a few seconds the kernel traps, the launch fails, and the run
 * moves to the CPU as after any GPU error. */
static __device__ __forceinline__ u64 ll_wait(const u64 *p, u64 w, unsigned epoch) {
    for (unsigned spins = 0; (unsigned)(w >> 32) != epoch; spins++) {
        if (spins > (1u << 22)) __trap();   /* ~4 M round trips of ~1 us */
        w = ll_load(p);
    }
    return w;
}

/* dst[i] = value of src[i] once its epoch is this step's, i < n; every
 * load of a round (WIDE a thread) issued before any is checked. WIDE to
 * fit the vector in one round, no wider: each poll of a layer
 * is inlined, and its unrolled waits are code the step must fetch. */
#define POLL_D 3        /* 3 x 480 threads cover d <= 1440 (sh_fused_plan) */
template <int WIDE>
static __device__ void ll_poll(const u64 *src, int n, unsigned epoch, float *dst) {
    const int nt = FS_THREADS;
    for (int base = 0; base < n; base += WIDE * nt) {
        u64 v[WIDE];
#pragma unroll
        for (int k = 0; k < WIDE; k++) {
            int i = base + threadIdx.x + k * nt;
            v[k] = i < n ? ll_load(src + i) : (u64)epoch << 32;
        }
        /* the first word waited for alone, then every word still stale
         * loaded again at once, round by round: the rest cost one round
         * trip after the first, not one each (waited for one by one, each
         * early load found stale cost a round trip of its own) */
        if (base + (int)threadIdx.x < n) v[0] = ll_wait(src + base + threadIdx.x, v[0], epoch);
        for (unsigned spins = 0;; spins++) {
            bool stale = false;
#pragma unroll
            for (int k = 1; k < WIDE; k++)
                if ((unsigned)(v[k] >> 32) != epoch) {   /* past n: never */
                    stale = true;
                    v[k] = ll_load(src + base + threadIdx.x + k * nt);
                }
            if (!stale) break;
            if (spins > (1u << 22)) __trap();   /* as ll_wait */
        }
#pragma unroll
        for (int k = 0; k < WIDE; k++) {
            int i = base + threadIdx.x + k * nt;
            if (i < n) dst[i] = __uint_as_float((unsigned)v[k]);
        }
    }
}

/* A barrier of the compute warps only (the fetching warp never waits). */
#define SYNC() asm volatile("bar.sync 1, %0;" ::"n"(FS_THREADS) : "memory")

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
static __device__ __forceinline__ void mbar_init(u64 *m, unsigned count = 1) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_u32(m)), "r"(count) : "memory");
}
static __device__ __forceinline__ void mbar_expect(u64 *m, unsigned bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_u32(m)),
                 "r"(bytes) : "memory");
}
static __device__ __forceinline__ void bulk_copy(void *dst, const void *src, unsigned bytes, u64 *m,
                                                 u64 policy) {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint"
                 " [%0], [%1], %2, [%3], %4;"
                 ::"r"(smem_u32(dst)), "l"(src), "r"(bytes), "r"(smem_u32(m)), "l"(policy) : "memory");
}
static __device__ __forceinline__ bool mbar_try(u64 *m, unsigned parity) {
    unsigned done;
    asm volatile("{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
                 " selp.u32 %0, 1, 0, p;\n}" : "=r"(done) : "r"(smem_u32(m)), "r"(parity) : "memory");
    return done;
}
/* A slice that never arrives traps like a word that never comes. */
static __device__ __forceinline__ void mbar_wait(u64 *m, unsigned parity) {
    for (unsigned spins = 0; !mbar_try(m, parity); spins++)
        if (spins > (1u << 22)) __trap();
}
static __device__ __forceinline__ void fence_mbar_init() {
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}
#else   /* never launched below 9.0 (sh_fused_plan) */
static __device__ __forceinline__ void mbar_init(u64 *, unsigned = 1) {}
static __device__ __forceinline__ void mbar_expect(u64 *, unsigned) {}
static __device__ __forceinline__ void bulk_copy(void *, const void *, unsigned, u64 *, u64) {}
static __device__ __forceinline__ void mbar_wait(u64 *, unsigned) {}
static __device__ __forceinline__ void fence_mbar_init() {}
#endif


/* ------------------------------------------------------------ the step */

/* A time stamp of block 0 for the trace, in the kernel launched with a
 * trace buffer only (TRACED): the stamps' ~180 cost the step 1-3% even
 * when off (H200: without them medium 799 -> 789 us, tiny 100 -> 97). */
#define TRACE(f, l, k)                                                              \
    do {                                                                            \
        if (TRACED && (f).trace && blockIdx.x == 0 && threadIdx.x == 0) {           \
            u64 t;                                                                  \
            asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));                   \
            (f).trace[(l) * 24 + (k)] = t;                                          \
        }                                                                           \
    } while (0)

enum { M_QKV, M_G, M_O, M_GO, M_CO, M_FC1, M_FC2, N_MATS };

/* A layer's weight slices in the ring, in the order they are used: qkv,
 * the cross query's G, o and G o head by head, co, then fc1 and fc2 in
 * two halves each. A whole 62-64 KB slice (medium) could be placed only
 * once the one before it was used: the ring's free room was there but
 * split at its end, and fc2's came just in time; halves fit the gaps and
 * come a phase or two early. */
#define LAYER_SLICES 9
static __device__ __forceinline__ int slice_mat(int k) { return k < 5 ? k : k < 7 ? M_FC1 : M_FC2; }
static __device__ __forceinline__ int slice_half(int k) { return k < 5 ? -1 : (k - 5) & 1; }
/* The weights' kind of matrix m: the cross query's G and G o are half
 * whatever the others are (products made at load: sh_fused_layer). */
static __device__ __forceinline__ int kind_of(int kind, int m) {
    return m == M_G || m == M_GO ? SH_GW_F16 : kind;
}

/* Where rows r0..r1 split into halves (in units of 1 << shift rows). */
static __device__ __forceinline__ int half_row(int r0, int r1, int shift) {
    return r0 + (((r1 - r0) >> shift) / 2 << shift);
}

/* This block's rows of a matrix with n_out rows. */
static __device__ __forceinline__ void my_rows(int n_out, int shift, int *r0, int *r1) {
    /* in units of 1 << shift rows (n_out a multiple of them) */
    unsigned units = (unsigned)n_out >> shift;
    *r0 = (int)(units * blockIdx.x / gridDim.x) << shift;
    *r1 = (int)(units * (blockIdx.x + 1) / gridDim.x) << shift;
}

/* The matrix of a row-sliced phase (o, G o and co come head by head: slice_at). */
static __device__ __forceinline__ const sh_gmat *mat_of(const sh_fused_layer *L, int m) {
    switch (m) {
    case M_QKV: return &L->qkv;
    case M_G: return &L->cq_g;
    case M_FC1: return &L->fc1;
    default: return &L->fc2_blocks;
    }
}

/* This block's rows of fc2's column blocks (SH_FC2_BLOCKS blocks of d
 * rows): the grid dealt into SH_FC2_BLOCKS runs of blocks, a run a column
 * block's d rows, so that each block multiplies one block's quarter of the
 * hidden vector and waits for that quarter alone. */
static __device__ __forceinline__ void my_fc2_rows(int d, int shift, int *r0, int *r1) {
    const unsigned b = blockIdx.x, g = gridDim.x, B = SH_FC2_BLOCKS;
    unsigned c = b * B / g, first = (c * g + B - 1) / B, next = ((c + 1) * g + B - 1) / B;
    unsigned units = (unsigned)d >> shift, n = next - first, k = b - first;
    *r0 = (int)(c * units + units * k / n) << shift;
    *r1 = (int)(c * units + units * (k + 1) / n) << shift;
}

/* This block's rows of row-sliced matrix m (n_out rows). */
static __device__ __forceinline__ void rows_of(int m, int n_out, int shift, int *r0, int *r1) {
    if (m == M_FC2) my_fc2_rows(n_out / SH_FC2_BLOCKS, shift, r0, r1);
    else my_rows(n_out, shift, r0, r1);
}

/* A weight slice to fetch: this block's rows of one matrix, and for int8
 * weights their scales (one half per 32), fetched right behind them. */
struct slice {
    const void *src, *scales;
    unsigned bytes, scale_bytes;
    unsigned pair;   /* a first of two: the bytes of the second, wanted with it */
};

/* The ring of weight slices in shared memory: the fetching warp fills it
 * (ring_produce), thread 0 counts the slices consumed. */
struct ring {
    unsigned char *base;
    unsigned size;
    int total;
    u64 *mbar;
    unsigned *offs;
    volatile int *consumed;
};

template <int ROWS>
static __device__ __forceinline__ bool my_head(const sh_fused_step &f, int *h, int *q, int *s);
template <int ROWS>
static __device__ __forceinline__ void my_out_rows(const sh_fused_step &f, int s, int *c0, int *c1);

/* Slice j of this block (the fetching warp makes each as it goes: a
 * table of them in shared memory took 5-8 KB of the ring): a layer's
 * LAYER_SLICES, then the parts of its vocabulary rows v0..v1. */
template <int KIND, int RS, int ROWS>
static __device__ slice slice_at(const sh_fused_step &f, int j, int v0, int v1) {
    const int layer_slices = f.n_layer * LAYER_SLICES;
    const void *w, *scales;
    int r0, r1, n_in, rows_all = 0;
    const int mi = slice_mat(j % LAYER_SLICES), half = slice_half(j % LAYER_SLICES);
    const int kind = j < layer_slices ? kind_of(KIND, mi) : KIND, esize = kind == SH_GW_F16 ? 2 : 1;
    if (j < layer_slices && (mi == M_O || mi == M_GO || mi == M_CO)) {
        /* the rows of the head's columns this block multiplies */
        const sh_fused_layer *Lj = &f.layers[j / LAYER_SLICES];
        const sh_gmat *m = mi == M_O ? &Lj->o_heads : mi == M_GO ? &Lj->cq_go_heads : &Lj->co_heads;
        int h, q, sp;
        r0 = r1 = 0;
        if (my_head<ROWS>(f, &h, &q, &sp)) {
            my_out_rows<ROWS>(f, sp, &r0, &r1);
            r0 += h * f.d, r1 += h * f.d;
        }
        w = m->w, scales = m->scales, n_in = FS_HD;
    } else if (j < layer_slices) {
        const sh_gmat *m = mat_of(&f.layers[j / LAYER_SLICES], mi);
        rows_of(mi, m->n_out, RS, &r0, &r1);
        rows_all = r1;
        if (half == 0) r1 = half_row(r0, r1, RS);
        if (half == 1) r0 = half_row(r0, r1, RS);
        w = m->w, scales = m->scales, n_in = m->n_in;
    } else {   /* a part of the token embedding, the logits' weights */
        r0 = v0 + (j - layer_slices) * f.part_rows;
        r1 = r0 + f.part_rows < v1 ? r0 + f.part_rows : v1;
        w = f.tok_emb, scales = f.tok_scales, n_in = f.d;
    }
    const int groups = n_in / 32;
    const unsigned row_bytes = n_in * esize + (kind == SH_GW_I8 ? groups * 2 : 0);
    slice sl;
    sl.src = (const unsigned char *)w + (size_t)r0 * n_in * esize;
    sl.bytes = (unsigned)(r1 - r0) * n_in * esize;
    sl.scales = kind == SH_GW_I8 ? (const uint16_t *)scales + (size_t)r0 * groups : NULL;
    sl.scale_bytes = kind == SH_GW_I8 ? (unsigned)(r1 - r0) * groups * 2 : 0;
    /* a first half: the second's rows, r1 on; o's rows: G o's same rows
     * (half), multiplied with them (attention_head) */
    sl.pair = j < layer_slices && half == 0 ? (unsigned)(rows_all - r1) * row_bytes
              : j < layer_slices && mi == M_O ? (unsigned)(r1 - r0) * FS_HD * 2
                                              : 0;
    return sl;
}

/* The first `consumed` slices have been read by every compute thread
 * (called after a SYNC): their room may be fetched into. */
static __device__ __forceinline__ void ring_release(const ring &R, int consumed) {
    if (threadIdx.x == 0) *R.consumed = consumed;
}

/* Waits for slice j and returns it. */
static __device__ const unsigned char *ring_slice(ring &R, int j) {
    mbar_wait(&R.mbar[j % FS_SLOTS], (j / FS_SLOTS) & 1);
    return R.base + R.offs[j % FS_SLOTS];
}

/* What a GEMV does with each output: a hand-over word, plain or after
 * GELU; for qkv also the cache store of k and v; for fc2's blocks an add
 * into a sum; for the logits a plain float (read after the kernel). */
enum { EP_PLAIN, EP_GELU, EP_QKV, EP_SUM, EP_LOGIT };

struct epilogue {
    int kind;
    u64 *out;
    unsigned epoch;
    float *x_out;              /* EP_LOGIT: the logits */
    __half *k_cache, *v_cache; /* EP_QKV */
    int pos;
    int d;                     /* the width (xs's rows 4d apart); EP_LOGIT: the vocabulary */
    int n_out;                 /* words from one row's outputs to the next's */
    long cache_stride;         /* EP_QKV: halves from one row's caches to the next's */
    long long *sums;           /* EP_SUM: output r adds into sums[r - sum_row0] (d a row) */
    int sum_row0;
};

/* Output r of row q. */
static __device__ __forceinline__ void finish(const epilogue &e, int q, int r, float v) {
    if (e.kind == EP_LOGIT) {
        if (r < e.d) e.x_out[r] = v;   /* d: the vocabulary (a padding row past it) */
        return;
    }
    if (e.kind == EP_SUM) {
        fx_add(e.sums + q * e.d + r - e.sum_row0, v);
        return;
    }
    if (e.kind == EP_GELU) v = gelu(v);
    ll_store(e.out + q * e.n_out + r, e.epoch, v);
    if (e.kind == EP_QKV && r >= e.d) {
        __half *cache = (r < 2 * e.d ? e.k_cache : e.v_cache) + q * e.cache_stride;
        cache[(size_t)e.pos * e.d + r % e.d] = __float2half_rn(v);
    }
}

/* Eight weights at column c of a row in shared memory as floats: half
 * weights, or int8 ones (unscaled; the caller scales their sum). */
template <int KIND>
static __device__ __forceinline__ void widen8(const unsigned char *row, int c, float *w) {
    if (KIND == SH_GW_F16) {
        uint4 raw = *(const uint4 *)(row + (size_t)c * 2);
        const __half2 *h = (const __half2 *)&raw;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            float2 f = __half22float2(h[i]);
            w[2 * i] = f.x, w[2 * i + 1] = f.y;
        }
    } else {
        uint2 raw = *(const uint2 *)(row + c);
        const int8_t *q = (const int8_t *)&raw;
#pragma unroll
        for (int i = 0; i < 8; i++) w[i] = (float)q[i];
    }
}

/* Two rows' dot products with each of ROWS inputs x (xstride floats
 * apart) over the 8 columns from c (int8 rows unscaled). */
template <int KIND, int ROWS>
static __device__ __forceinline__ void dot8_pair(const unsigned char *wa, const unsigned char *wb,
                                                 const float *x, int xstride, int c, float *da,
                                                 float *db) {
    float a[8], b[8];
    widen8<KIND>(wa, c, a);
    widen8<KIND>(wb, c, b);
#pragma unroll
    for (int q = 0; q < ROWS; q++) {
        float4 xa = *(const float4 *)(x + q * xstride + c), xb = *(const float4 *)(x + q * xstride + c + 4);
        da[q] = a[0] * xa.x + a[1] * xa.y + a[2] * xa.z + a[3] * xa.w + a[4] * xb.x + a[5] * xb.y +
                a[6] * xb.z + a[7] * xb.w;
        db[q] = b[0] * xa.x + b[1] * xa.y + b[2] * xa.z + b[3] * xa.w + b[4] * xb.x + b[5] * xb.y +
                b[6] * xb.z + b[7] * xb.w;
    }
}

/* y = W x + bias for this block's rows, W from shared memory (rows r0..r1
 * of n_in, those from rm on in a second slice Wb; int8 rows followed by
 * their scales), x in shared memory (ROWS inputs xstride floats apart),
 * the bias from bias_fetch; one code for every GEMV phase, the epilogue
 * saying what each output becomes. warp0 > 0: on the warps from warp0 on
 * only (the others busy meanwhile), without a bias. (Three rows a warp at
 * once where fc1 and fc2 give a block 31-32 rows on 15 warps, so that no
 * warp takes a second round: their GEMVs shorter, the step longer, H200
 * medium 524 -> 537 us.) */
template <int KIND, int ROWS>
static __device__ __forceinline__ void gemv_rows(const unsigned char *Wa, const unsigned char *Wb,
                                                 int r0, int rm, int r1, int n_in, const float *x,
                                                 int xstride, float bias, const epilogue &e,
                                                 int warp0 = 0) {
    int warp = threadIdx.x / WARP - warp0, lane = threadIdx.x % WARP, nw = FS_THREADS / WARP - warp0;
    const int esize = KIND == SH_GW_F16 ? 2 : 1, groups = n_in / 32;
    /* a row's weights and (int8) scales in whichever slice holds it */
    auto row_at = [&](int r) {
        return r < rm ? Wa + (size_t)(r - r0) * n_in * esize : Wb + (size_t)(r - rm) * n_in * esize;
    };
    auto scales_at = [&](int r) {
        return r < rm ? (const __half *)(Wa + (size_t)(rm - r0) * n_in) + (size_t)(r - r0) * groups
                      : (const __half *)(Wb + (size_t)(r1 - rm) * n_in) + (size_t)(r - rm) * groups;
    };
    /* rows r0 + warp + k * nw, two at a time: each load of x serves both */
    int pair = r1 - r0 > nw;
    for (int r = r0 + warp, k = 0; r < r1; r += (1 + pair) * nw, k += 1 + pair) {
        int r2 = pair && r + nw < r1 ? r + nw : r;   /* a lone row is done twice */
        const unsigned char *wa = row_at(r), *wb = row_at(r2);
        float acc_a[ROWS], acc_b[ROWS];
#pragma unroll
        for (int q = 0; q < ROWS; q++) acc_a[q] = acc_b[q] = 0.0f;
        if (KIND == SH_GW_F16) {
            /* not unrolled: fewer instructions to fetch (H200: medium 789 ->
             * 780 us a step, tiny 97 -> 95; int8 so went 791 -> 805 us) */
#pragma unroll 1
            for (int c = lane * 8; c < n_in; c += WARP * 8) {
                float da[ROWS], db[ROWS];
                dot8_pair<KIND, ROWS>(wa, wb, x, xstride, c, da, db);
#pragma unroll
                for (int q = 0; q < ROWS; q++) acc_a[q] += da[q], acc_b[q] += db[q];
            }
        } else {
            const __half *sa = scales_at(r), *sb = scales_at(r2);
            for (int c = lane * 8; c < n_in; c += WARP * 8) {
                float da[ROWS], db[ROWS];
                dot8_pair<KIND, ROWS>(wa, wb, x, xstride, c, da, db);
                /* each lane's 8 columns lie in one scale group */
                float ga = __half2float(sa[c / 32]), gb = __half2float(sb[c / 32]);
#pragma unroll
                for (int q = 0; q < ROWS; q++) acc_a[q] += da[q] * ga, acc_b[q] += db[q] * gb;
            }
        }
        /* the 2 ROWS sums at once (warp_sums: row a's input q in lane
         * 8 q or 16 q, row b's 16 lanes on), each finished by its lane */
        float v[2 * ROWS];
#pragma unroll
        for (int q = 0; q < ROWS; q++) v[q] = acc_a[q], v[ROWS + q] = acc_b[q];
        const float sum = warp_sums<2 * ROWS>(v);
        const bool b_row = lane >= WARP / 2;
        const float bias_r = __shfl_sync(0xffffffffu, bias, b_row ? (k + 1) & (WARP - 1) : k);
        if (lane % (WARP / 2 / ROWS) == 0 && (!b_row || r2 != r))
            finish(e, lane / (WARP / 2 / ROWS) % ROWS, b_row ? r2 : r, sum + bias_r);
    }
}

/* The same on the tensor cores, for half fc1 and fc2 (their copies
 * swizzled: SH_SWIZZLE, row r0 of the slices being the matrix's row r0)
 * of at most 32 rows a block (f.mma_ffn: sh_fused_mma_ffn): each warp
 * takes both 16-row tiles over its own 16-column steps (warp, warp + 15,
 * ...), the weights as A (ldmatrix: the swizzle puts a tile's eight rows
 * of one column in eight different banks, where rows of 2 KB would share
 * four) and x as B, whose column 2q is x's row q as its nearest halves and
 * 2q + 1 what those leave (about the float GEMV's 22 bits of x, as
 * k_gemv_mma); the warps' sums meet in red (15 x ROWS x 32 floats) after a
 * barrier and are added in warp order, one thread an output (its bias
 * from mma_bias). Where a block has 31 or 32 rows (medium on 123-132 SMs)
 * the float loop's pairs on 15 warps take two rounds: H200, medium, fc1's
 * phase 1.68 -> 1.31 us, fc2's 1.65 -> 1.35 us a layer. */
#define MMA_STEPS 6   /* a warp's steps: d <= 1440 (sh_fused_plan) */
#define MMA_ROWS 32   /* a block's rows at most: two tiles (red: 15 x ROWS x 32 floats) */
static __device__ __forceinline__ unsigned split_half2(float2 v, bool rest) {
    __half2 h = __floats2half2_rn(v.x, v.y);
    if (rest) h = half2_rest(v, h);
    return *(const unsigned *)&h;
}
template <int ROWS>
static __device__ __forceinline__ void mma_gemv(const unsigned char *Wa, const unsigned char *Wb,
                                                int r0, int rm, int r1, int n_in, const float *x,
                                                int xstride, float bias, const epilogue &e,
                                                float *red) {
    const int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP, nw = FS_THREADS / WARP;
    const int steps = n_in >> 4, row_bytes = n_in * 2, half = lane >> 4, rows = r1 - r0;
    const bool two = rows > 16;
    /* B: x's column g (this lane's: g = lane / 4) at rows 2 (lane % 4) + 0, 1, 8, 9 */
    const int g = lane >> 2;
    const bool feeds = g < 2 * ROWS;
    const float *xq = x + (feeds ? g >> 1 : 0) * xstride + 2 * (lane & 3);
    /* this lane's ldmatrix row of each tile (rows 0-7, 8-15, 0-7, 8-15 at
     * columns 0, 0, 8, 8 for lanes 0-7, ..., 24-31; past the rows the last
     * one, whose outputs go nowhere) and its swizzle */
    unsigned at[2], key[2];
#pragma unroll
    for (int t = 0; t < 2; t++) {
        int i = t * 16 + (lane & 7) + (lane & 8);
        int r = r0 + (i < rows ? i : rows - 1);
        at[t] = smem_u32(r < rm ? Wa + (r - r0) * row_bytes : Wb + (r - rm) * row_bytes);
        key[t] = r & 7;
    }
    float c[2][4] = {};
#pragma unroll
    for (int s = 0; s < MMA_STEPS; s++) {
        const int k = warp + s * nw;
        if (k >= steps) break;
        unsigned b0 = 0u, b1 = 0u, a[4];
        if (feeds) {
            float2 v0 = *(const float2 *)(xq + k * 16), v1 = *(const float2 *)(xq + k * 16 + 8);
            b0 = split_half2(v0, g & 1), b1 = split_half2(v1, g & 1);
        }
        ldmatrix4(a, at[0] + (SH_SWIZZLE(key[0], 2 * k + half) << 4), false);
        mma16816(c[0], a, b0, b1);
        if (two) {
            ldmatrix4(a, at[1] + (SH_SWIZZLE(key[1], 2 * k + half) << 4), false);
            mma16816(c[1], a, b0, b1);
        }
    }
    /* C's rows g and g + 8 at columns 2 (lane % 4) and + 1: x's row lane % 4 */
    if ((lane & 3) < ROWS) {
        float *mine = red + (warp * ROWS + (lane & 3)) * MMA_ROWS + g;
        mine[0] = c[0][0] + c[0][1], mine[8] = c[0][2] + c[0][3];
        if (two) mine[16] = c[1][0] + c[1][1], mine[24] = c[1][2] + c[1][3];
    }
    SYNC();
    const int q = threadIdx.x / MMA_ROWS, r = threadIdx.x % MMA_ROWS;
    if (q < ROWS && r < rows) {
        float sum = 0.0f;
#pragma unroll
        for (int w = 0; w < FS_THREADS / WARP; w++) sum += red[(w * ROWS + q) * MMA_ROWS + r];
        finish(e, q, r0 + r, sum + bias);
    }
}

/* The bias of the output this thread finishes in mma_gemv's phase of
 * matrix m, loaded before the wait. */
static __device__ float mma_bias(const float *bias, int m, int n_out, int shift) {
    int r0, r1;
    rows_of(m, n_out, shift, &r0, &r1);
    const int r = r0 + threadIdx.x % MMA_ROWS;
    return threadIdx.x < SH_FUSED_MAX_ROWS * MMA_ROWS && r < r1 ? bias[r] : 0.0f;
}

/* Rows r0..r1 of weight slice `used` times xs (ROWS inputs xstride
 * floats apart), then the slice's room released to the fetching warp. */
template <int KIND, int ROWS>
static __device__ __forceinline__ void gemv_slice(ring &R, int &used, int r0, int r1, int n_in,
                                                  const float *xs, int xstride, float bias,
                                                  const epilogue &e) {
    const unsigned char *W = ring_slice(R, used);
    gemv_rows<KIND, ROWS>(W, W, r0, r1, r1, n_in, xs, xstride, bias, e);
    SYNC();
    ring_release(R, ++used);
}

/* A GEMV phase: this block's rows of matrix m of n_out rows (rows_of),
 * from one slice, or (halves: fc1, fc2) from two (LAYER_SLICES). */
template <int KIND, int ROWS, bool MMA = false>
static __device__ __forceinline__ void gemv_phase(ring &R, int &used, int m, int n_out, int shift,
                                                  int n_in, const float *xs, int xstride,
                                                  float bias, const epilogue &e,
                                                  bool halves = false, float *red = NULL) {
    int r0, r1;
    rows_of(m, n_out, shift, &r0, &r1);
    if (!halves) {
        gemv_slice<KIND, ROWS>(R, used, r0, r1, n_in, xs, xstride, bias, e);
        return;
    }
    const unsigned char *Wa = ring_slice(R, used), *Wb = ring_slice(R, used + 1);
    const int rm = half_row(r0, r1, shift);
    if (MMA)   /* fc1 and fc2, swizzled (f.mma_ffn) */
        mma_gemv<ROWS>(Wa, Wb, r0, rm, r1, n_in, xs, xstride, bias, e, red);
    else
        gemv_rows<KIND, ROWS>(Wa, Wb, r0, rm, r1, n_in, xs, xstride, bias, e);
    SYNC();
    used += 2;
    ring_release(R, used);
}

/* Shared memory besides the ring. */
struct work {
    float *x;       /* (d a row) the residual stream as this block last read it */
    float *xs;      /* (4d a row) the current GEMV input */
    float *sc;      /* (max_keys) attention scores, then (groups, 64) sums, then
                       the head's partial softmaxes being merged */
    float *red;     /* (RED_FLOATS) reductions */
    void *uni;      /* attention keys and values (of the block's row) */
    u64 *cross_ready;           /* the cross-attention's keys have come (cross_issue) */
    volatile int *cross_go;     /* layers whose cross keys may come: their room is free */
    struct pick_report *report; /* the pick's hand-over to the fetching warp */
};

/* What the compute warps tell the fetching warp of a step that begins
 * with the pick: when the screen's rows are read (go: the ring may fill,
 * the memory was theirs till then), and block 0's choice (ready), which
 * that warp writes out to the host, so that the host's slow write and its
 * fence stay off the step's chain. */
struct pick_report {
    volatile int go, ready, stopped;   /* stopped: the choice ended the step (f.pick.stops) */
    chunk_acc acc;   /* the whole summary: the log-probability is made from it there */
};

/* A head's blocks a row: f.splits / ROWS (ROWS a constant: no division
 * on the chain). */
template <int ROWS>
static __device__ __forceinline__ int per_row(const sh_fused_step &f) {
    return ROWS == 1 ? f.splits : f.splits / ROWS;
}

/* Blocks of a row a head's keys are split over: as few as hold them
 * (short self-attention contexts need no merge at all), at most
 * per_row. */
template <int ROWS>
static __device__ __forceinline__ int splits_for(const sh_fused_step &f, int n_keys) {
    int s = (n_keys + f.max_keys - 1) / f.max_keys, per = per_row<ROWS>(f);
    return s < per ? s : per;
}

/* Every head has f.splits blocks (f.n_head * f.splits <= the grid), dealt
 * to the rows: per_row blocks a row of each head, so that the rows'
 * attention runs side by side. A head's keys in one range (short
 * self-attention contexts): each of a row's blocks takes all of them, so
 * none waits for another's. Else the row's first S blocks take a range
 * each and hand their partial softmaxes to all of the row's. The block's
 * head h, row q and place s among the row's blocks. */
template <int ROWS>
static __device__ __forceinline__ bool my_head(const sh_fused_step &f, int *h, int *q, int *s) {
    int per = per_row<ROWS>(f), k = blockIdx.x % f.splits;
    *h = blockIdx.x / f.splits;
    *q = ROWS == 1 ? 0 : (k >= per) + (k >= 2 * per);   /* 2: a spare block (odd splits) */
    *s = k - *q * per;
    return (int)blockIdx.x < f.n_head * f.splits && *q < ROWS;
}

/* This block's head, row, place among the row's blocks, and key range
 * [p0, p1) of n_keys; false when the block scores no keys. */
template <int ROWS>
static __device__ bool my_keys(const sh_fused_step &f, int n_keys, int *h, int *q, int *s, int *p0,
                               int *p1) {
    int S = splits_for<ROWS>(f, n_keys), k;
    if (!my_head<ROWS>(f, h, q, s) || (S > 1 && *s >= S)) return false;
    k = S == 1 ? 0 : *s;
    *p0 = (int)((unsigned)n_keys * k / S), *p1 = (int)((unsigned)n_keys * (k + 1) / S);
    return true;
}

/* The rows of o (or cross o) whose head columns block s of a row's blocks
 * multiplies: in units of 4 (int8 rows' scales then fill 16 bytes). */
template <int ROWS>
static __device__ __forceinline__ void my_out_rows(const sh_fused_step &f, int s, int *c0, int *c1) {
    unsigned units = (unsigned)f.d / 4, per = per_row<ROWS>(f);
    *c0 = (int)(units * s / per) * 4, *c1 = (int)(units * (s + 1) / per) * 4;
}

/* A block's part in one of the step's two attentions (self-attention
 * over pos + 1 keys, cross-attention over the window), the same in every
 * layer: my_keys', my_head's and my_out_rows' answers, worked out once a
 * step into shared memory (their divisions sat on the chain of every
 * layer's two attentions). */
struct head_part {
    int keys, head;        /* my_keys' and my_head's answers */
    int h, q, s, p0, p1;   /* the head, row, place among the row's blocks, key range */
    int S;                 /* splits_for */
    int c0, c1;            /* my_out_rows */
};

template <int ROWS>
static __device__ head_part head_part_of(const sh_fused_step &f, int n_keys) {
    head_part P = {};
    P.S = splits_for<ROWS>(f, n_keys);
    P.keys = my_keys<ROWS>(f, n_keys, &P.h, &P.q, &P.s, &P.p0, &P.p1);
    P.head = my_head<ROWS>(f, &P.h, &P.q, &P.s);
    if (P.head) my_out_rows<ROWS>(f, P.s, &P.c0, &P.c1);
    return P;
}

/* Starts copying this block's keys and values into shared memory (a
 * phase before they are needed), threads t0, t0 + nt, ... of the block:
 * of its row, whose caches are stride halves on from row 0's (kmem, vmem;
 * f.cache_stride, or f.cross_stride: 0 when the rows share a window).
 * The newest key of a self-attention (fresh) is not in memory yet and is
 * left out. STREAM (the cross keys, 147 MB a medium step): evicted from L2
 * first where f.stream_l2, leaving it to the self-attention's caches. */
template <bool STREAM>
static __device__ void attention_fetch(const sh_fused_step &f, const work &W, const head_part &P,
                                       const void *kmem, const void *vmem, long stride, int n_keys,
                                       int fresh, int t0, int nt) {
    if (!P.keys) return;
    const int h = P.h, q = P.q, p0 = P.p0, p1 = P.p1;
    int stored = fresh && p1 == n_keys ? p1 - 1 : p1;
    __half *ks = (__half *)W.uni, *vs = ks + (size_t)f.max_keys * FS_HD;
    const __half *kr = (const __half *)kmem + q * stride, *vr = (const __half *)vmem + q * stride;
    const u64 policy = l2_evict_first();
    /* 8 chunks of 16 bytes a key row of the head */
    for (int i = t0; i < (stored - p0) * 8; i += nt) {
        int p = p0 + i / 8, c = (i % 8) * 8;
        size_t at = (size_t)p * f.d + h * FS_HD + c;
        /* the plain copy where not streaming: the hinted one with
         * l2_evict_normal was slower (H200: small 191.5 -> 193.0 us) */
        if (STREAM && f.stream_l2) {
            cp_async16(ks + (size_t)(p - p0) * FS_HD + c, kr + at, policy);
            cp_async16(vs + (size_t)(p - p0) * FS_HD + c, vr + at, policy);
        } else {
            cp_async16(ks + (size_t)(p - p0) * FS_HD + c, kr + at);
            cp_async16(vs + (size_t)(p - p0) * FS_HD + c, vr + at);
        }
    }
}

/* The fetching warp: lane 0 issues the weight slices' bulk copies in
 * consumption order (layer by layer, LAYER_SLICES a layer) while there
 * is room in the ring; and the whole warp, as soon as the self-attention
 * has read its keys from their room (cross_go), copies the
 * cross-attention's keys and values into it, each lane arriving on
 * cross_ready when its copies have landed. Those copies' issue had taken
 * the compute warps 0.76 us a medium layer on the chain (between the
 * self-attention's weighted sums and its output). The warp runs as one
 * (every lane the same decisions, lane 0's reads broadcast): lanes left
 * spinning beside lane 0 kept it from placing slices (int8 medium 542 ->
 * 552 us a step). crossed: the layers whose cross keys were issued. */
static __device__ void cross_issue(int &crossed, const sh_fused_step &f, const work &W,
                                   const head_part &P) {
    int go = __shfl_sync(0xffffffffu, *W.cross_go, 0);
    for (; crossed < go; crossed++) {
        const sh_fused_layer *L = &f.layers[crossed];
        attention_fetch<true>(f, W, P, L->cross_k, L->cross_v, f.cross_stride, f.n_audio, 0,
                              threadIdx.x % WARP, WARP);
        cp_async_arrive_noinc(W.cross_ready);
    }
}

/* Block 0's fetching warp writes the pick's choice out once the compute
 * warps have it (pick_report): the log-probability, then the token the
 * host polls, then next_io. True once written. */
static __device__ bool pick_report_out(const sh_fused_step &f, const work &W) {
    if (!__shfl_sync(0xffffffffu, W.report->ready, 0)) return false;
    if (threadIdx.x % WARP == 0) {
        volatile sh_pick_result *r = f.pick.result;
        int token;
        double logprob;
        pick_decide(as_pick_acc(W.report->acc), f.pick.mask.ts_begin, &token, &logprob);
        r->logprob = logprob;
        __threadfence_system();
        r->token = token;
        if (f.pick.next_io) f.pick.next_io[0] = f.pick.next_pos, f.pick.next_io[1] = token;
        __threadfence_system();
    }
    __syncwarp();
    return true;
}

/* Whether this step begins with the greedy pick of the step before
 * (float16, one row, f.pick given: pick_first). */
template <int KIND, int ROWS>
static __device__ __forceinline__ bool begins_with_pick(const sh_fused_step &f) {
    return KIND == SH_GW_F16 && ROWS == 1 && f.pick.q;
}

template <int KIND, int RS, int ROWS>
static __device__ void ring_produce(const ring &R, const sh_fused_step &f, int v0, int v1,
                                    const work &W, const head_part &P) {
    const int n_layer_slices = f.n_layer * LAYER_SLICES, lane = threadIdx.x % WARP;
    int crossed = 0;
    unsigned head = 0, tail = 0, ends[FS_SLOTS], spins = 0;
    int seen = 0;
    /* every slice is read once a step: first out of L2, so that what the
     * step reads again stays there (l2_evict_first). The token embedding's
     * parts since the thirteenth session (tiny 60 s 37.2 / 38.3 -> 34.9 /
     * 34.2 ms); the layers' where f.stream_l2 (twenty-sixth session:
     * medium 461 -> 445 us a step with the cross keys' copies and the
     * screen's rows, either alone no faster; tiny, whose layers fit L2,
     * keeps them there) */
    const u64 layers = f.stream_l2 ? l2_evict_first() : l2_evict_normal(),
              vocab = l2_evict_first();
    /* a step that begins with the pick: the memory is the screen's rows'
     * till they are read; block 0 then writes the choice out */
    const bool pick = begins_with_pick<KIND, ROWS>(f);
    bool reported = !pick || blockIdx.x != 0;
    /* between and after the copies: the cross keys' copies due, and the
     * choice for the host once the screen has made it */
    auto tend = [&]() {
        cross_issue(crossed, f, W, P);
        if (!reported) reported = pick_report_out(f, W);
    };
    /* a step that stopped at its choice: the choice out, then every copy
     * issued lands before the block leaves (the ring is its shared memory) */
    auto stopped = [&]() { return pick && __shfl_sync(0xffffffffu, W.report->stopped, 0); };
    auto drain = [&](int issued) {
        while (!reported) reported = pick_report_out(f, W);
        if (lane == 0)
            for (int k = *R.consumed; k < issued; k++)
                mbar_wait(&R.mbar[k % FS_SLOTS], (k / FS_SLOTS) & 1);
        __syncwarp();
    };
    for (; pick && !__shfl_sync(0xffffffffu, W.report->go, 0); spins++) {
        if (spins > (1u << 26)) __trap();
        __nanosleep(32);
    }
    spins = 0;
    for (int j = 0; j < R.total; j++) {
        if (stopped()) {
            drain(j);
            return;
        }
        slice sl = slice_at<KIND, RS, ROWS>(f, j, v0, v1);
        const u64 policy = j < n_layer_slices ? layers : vocab;
        unsigned start, total = sl.bytes + sl.scale_bytes;
        /* where bytes go from at: there, or the next lap's start if they
         * would cross the ring's end */
        auto place = [&](unsigned at, unsigned bytes) {
            return at % R.size + bytes > R.size ? at + R.size - at % R.size : at;
        };
        for (;;) {
            int c = __shfl_sync(0xffffffffu, *R.consumed, 0);
            for (; seen < c; seen++) tail = ends[seen % FS_SLOTS];
            /* a first of two (a half, o's rows) is placed only with room
             * for the second too: they are used together */
            start = place(head, total);
            unsigned end = start + total;
            if (sl.pair) end = place(end, sl.pair) + sl.pair;
            if (c == j) {
                /* none left to consume: the whole ring is free, the gap
                 * skipped to its start too (counted as used, a slice larger
                 * than the ring less that gap could never be placed: large
                 * on 144-170 SMs, medium on 108); a pair that would not fit
                 * before the end starts a lap */
                if (end - start > R.size) start = place(head, R.size), end = start + total + sl.pair;
                tail = start;
            }
            if (j - c < FS_SLOTS - (sl.pair != 0) && end - tail <= R.size) break;
            if (stopped()) {
                drain(j);
                return;
            }
            if (++spins > (1u << 26)) __trap();   /* seconds: a lost consumer */
            tend();
            __nanosleep(32);
        }
        int slot = j % FS_SLOTS;
        ends[slot] = start + total;
        head = start + total;
        if (lane == 0) {
            R.offs[slot] = start % R.size;
            mbar_expect(&R.mbar[slot], total);   /* none: arrived at once */
            if (sl.bytes) bulk_copy(R.base + start % R.size, sl.src, sl.bytes, &R.mbar[slot], policy);
            if (sl.scale_bytes)
                bulk_copy(R.base + start % R.size + sl.bytes, sl.scales, sl.scale_bytes,
                          &R.mbar[slot], policy);
        }
        __syncwarp();
        tend();
    }
    /* every slice placed: the last layers' cross keys (and the choice) */
    for (spins = 0; crossed < f.n_layer || !reported; spins++) {
        if (spins > (1u << 26)) __trap();
        tend();
        __nanosleep(64);
    }
}

/* sums[c0 + j] += Wh[j] . a for this block's rows of a head's columns of o
 * (Wh: the rows in shared memory, 64 weights each, int8 ones followed by
 * their 2 scales a row), a the head's output (64, shared); 8 lanes a row. */
template <int KIND>
static __device__ void head_columns_add(const unsigned char *Wh, int c0, int c1, const float *a,
                                        long long *sums) {
    const int esize = KIND == SH_GW_F16 ? 2 : 1, n = c1 - c0;
    int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP, sub = lane / 8, sl = lane % 8;
    const __half *scales = (const __half *)(Wh + (size_t)n * FS_HD * esize);
    float ar[8];
#pragma unroll
    for (int i = 0; i < 8; i++) ar[i] = a[sl * 8 + i];
    for (int base = warp * 4; base < n; base += FS_THREADS / WARP * 4) {
        int r = base + sub;
        float v = 0.0f;
        if (r < n) {
            float w[8];
            widen8<KIND>(Wh + (size_t)r * FS_HD * esize, sl * 8, w);
#pragma unroll
            for (int i = 0; i < 8; i++) v += w[i] * ar[i];
            if (KIND == SH_GW_I8) v *= __half2float(scales[r * 2 + sl / 4]);
        }
        v += __shfl_xor_sync(0xffffffffu, v, 4);
        v += __shfl_xor_sync(0xffffffffu, v, 2);
        v += __shfl_xor_sync(0xffffffffu, v, 1);
        if (r < n && sl == 0) fx_add(sums + c0 + r, v);
    }
}

/* The self-attention's query of this block's head and row (into W.xs),
 * and where the block's keys end with the newest (not in the cache yet),
 * its key and value (into the keys' room, rounded as the cache holds
 * them), from the qkv words (3d a row); the loads in flight at once: one
 * round trip where the query's and then the key's took two. Threads below
 * FS_HD (the G phase runs on the other warps meanwhile). */
template <int ROWS>
static __device__ void attention_poll(const sh_fused_step &f, const work &W, const head_part &P,
                                      int n_keys, const u64 *words, unsigned epoch) {
    if (!P.keys) return;
    const int d = f.d, j = threadIdx.x, row = P.p1 - 1 - P.p0;
    const bool newest = P.p1 == n_keys;
    const u64 *qw = words + (size_t)P.q * 3 * d + P.h * FS_HD + j, *kw = qw + d, *vw = kw + d;
    u64 q = ll_load(qw), k = newest ? ll_load(kw) : 0, v = newest ? ll_load(vw) : 0;
    W.xs[j] = __uint_as_float((unsigned)ll_wait(qw, q, epoch));
    if (newest) {
        __half *ks = (__half *)W.uni, *vs = ks + (size_t)f.max_keys * FS_HD;
        k = ll_wait(kw, k, epoch);
        v = ll_wait(vw, v, epoch);
        ks[(size_t)row * FS_HD + j] = __float2half_rn(__uint_as_float((unsigned)k));
        vs[(size_t)row * FS_HD + j] = __float2half_rn(__uint_as_float((unsigned)v));
    }
}

/* One head of attention of one row (this block's: my_head) over the keys
 * attention_fetch started, the query in W.xs (attention_poll's, or
 * cross_query's): this block's key range as a partial softmax; with the
 * head's keys in more than one range, the partials handed over as words
 * (parts, a row's after another's) and merged by every block of the
 * row's; then the head's output times this block's rows of the head's
 * columns of o (the next weight slice), added into the row's sums
 * (n_head adds a sum), and with go_sums the same with G o's columns (the
 * slice after) into those.
 * Every block consumes the slices, heads or not. The self-attention
 * (fresh) waits for its keys' copies (attention_fetch) and once they are
 * read lets the cross-attention's come into their room (cross_issue); the
 * cross-attention waits for those (layer l_). */
template <int KIND, int ROWS, bool TRACED>
static __device__ void attention_head(const sh_fused_step &f, const work &W, ring &R, int &used,
                                      unsigned epoch, const head_part &P, int n_keys, int fresh,
                                      u64 *parts, long long *sums, long long *go_sums, int l_) {
    const int h = P.h, q = P.q, s = P.s, p0 = P.p0, p1 = P.p1, S = P.S, d = f.d;
    bool freed = false;
    const size_t part_row = (size_t)f.n_head * f.splits * FS_PART;   /* a row's partials */
    float *a = W.xs + FS_HD;   /* the head's output */
    if (P.keys) {
        __half *ks = (__half *)W.uni, *vs = ks + (size_t)f.max_keys * FS_HD;
        float *qv = W.xs;   /* the query: attention_poll's, or cross_query's */
        TRACE(f, l_, fresh ? 4 : 18);
        if (fresh) {
            cp_async_commit();
            cp_async_wait<0>();
        } else {
            mbar_wait(W.cross_ready, l_ & 1);
        }
        SYNC();
        TRACE(f, l_, fresh ? 8 : 19);
        int n = p1 - p0, warp = threadIdx.x / WARP, lane = threadIdx.x % WARP, nw = FS_THREADS / WARP;
        /* scores: 8 lanes a key (8 dimensions a lane), 4 keys a warp at once */
        int sub = lane / 8, sl = lane % 8;
        float qr[8];
#pragma unroll
        for (int i = 0; i < 8; i++) qr[i] = qv[sl * 8 + i];
        float m = -INFINITY;
        for (int base = warp * 4; base < n; base += nw * 4) {
            int p = base + sub;
            float dot = 0.0f;
            if (p < n) {
                uint4 raw = *(const uint4 *)(ks + (size_t)p * FS_HD + sl * 8);
                const __half2 *kh = (const __half2 *)&raw;
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    float2 k = __half22float2(kh[i]);
                    dot += qr[2 * i] * k.x + qr[2 * i + 1] * k.y;
                }
            }
            dot += __shfl_xor_sync(0xffffffffu, dot, 4);
            dot += __shfl_xor_sync(0xffffffffu, dot, 2);
            dot += __shfl_xor_sync(0xffffffffu, dot, 1);
            dot *= 0.125f;   /* 1 / sqrt(64) */
            if (p < n) {
                if (sl == 0) W.sc[p] = dot;
                m = fmaxf(m, dot);
            }
        }
        m = warp_max(m);
        if (lane == 0) W.red[warp] = m;
        SYNC();
        m = max15(W.red);
        TRACE(f, l_, fresh ? 13 : 20);
        /* a warp a group, each a strided share of the keys, two of the 64
         * dimensions a lane (15 keys deep where 64-thread groups were 27);
         * the exponentials are made where they are used */
        int pr = threadIdx.x % WARP, grp = threadIdx.x / WARP, n_grp = FS_THREADS / WARP;
        float2 acc = make_float2(0.0f, 0.0f);
        float l = 0.0f;
        for (int p = grp; p < n; p += n_grp) {
            float e = __expf(W.sc[p] - m);
            l += e;
            float2 v = __half22float2(((const __half2 *)(vs + (size_t)p * FS_HD))[pr]);
            acc.x += e * v.x;
            acc.y += e * v.y;
        }
        float *sum = W.sc + f.max_keys;   /* (n_grp, 64) */
        ((float2 *)(sum + grp * FS_HD))[pr] = acc;
        if (pr == 0) W.red[16 + grp] = l;
        SYNC();
        /* the keys and values read: the cross-attention's may come */
        if (fresh && threadIdx.x == 0) *W.cross_go = l_ + 1;
        freed = true;
        if (threadIdx.x < FS_HD) {
            float t = 0.0f, total = 0.0f;
            for (int g = 0; g < n_grp; g++) t += sum[g * FS_HD + threadIdx.x], total += W.red[16 + g];
            if (S == 1) {
                a[threadIdx.x] = t / total;   /* the whole head: no partial */
            } else {
                u64 *mine = parts + q * part_row + (size_t)(h * f.splits + s) * FS_PART;
                ll_store(mine + 2 + threadIdx.x, epoch, n ? t : 0.0f);
                if (threadIdx.x == 0) {
                    ll_store(mine, epoch, n ? m : -INFINITY);
                    ll_store(mine + 1, epoch, n ? total : 0.0f);
                }
            }
        }
    }
    if (fresh && !freed && threadIdx.x == 0) *W.cross_go = l_ + 1;
    if (S > 1 && P.head) {
        /* every partial of the head, merged here (after a barrier: the
         * room of the scores and sums; sh_fused_plan sizes it to hold them) */
        float *pm = W.sc;
        SYNC();
        ll_poll<2>(parts + q * part_row + (size_t)h * f.splits * FS_PART, S * FS_PART, epoch, pm);
        SYNC();
        if (threadIdx.x < FS_HD) {
            float M = -INFINITY;
            for (int k = 0; k < S; k++) M = fmaxf(M, pm[k * FS_PART]);
            float L = 0.0f, t = 0.0f;
            for (int k = 0; k < S; k++) {
                float e = __expf(pm[k * FS_PART] - M);
                L += pm[k * FS_PART + 1] * e;
                t += pm[k * FS_PART + 2 + threadIdx.x] * e;
            }
            a[threadIdx.x] = t / L;
        }
    }
    SYNC();
    TRACE(f, l_, fresh ? 14 : 21);
    const unsigned char *Wh = ring_slice(R, used);
    if (TRACED && f.trace && go_sums) ring_slice(R, used + 1);
    TRACE(f, l_, fresh ? 23 : 6);   /* the slices' wait (trace) */
    if (P.head) head_columns_add<KIND>(Wh, P.c0, P.c1, a, sums + (size_t)q * d);
    if (go_sums) {
        const unsigned char *Wg = ring_slice(R, used + 1);
        if (P.head) head_columns_add<SH_GW_F16>(Wg, P.c0, P.c1, a, go_sums + (size_t)q * d);
    }
    SYNC();
    used += go_sums ? 2 : 1;
    ring_release(R, used);
}

/* Offsets of one layer's hand-over words in f.ll, the attention
 * partials' among them; each vector once a row, row after row. */
struct layer_words {
    u64 *qkv, *hid;
    u64 *self_part, *cross_part;   /* (rows, n_head, splits, FS_PART) */
};

static __host__ __device__ long words_per_layer(int d, int n_head, int splits, int rows) {
    return rows * (7L * d + 2L * n_head * splits * FS_PART);
}

static __device__ layer_words words_of(const sh_fused_step &f, int l) {
    long d = f.d, rows = f.rows;
    u64 *w = f.ll + (size_t)l * words_per_layer(f.d, f.n_head, f.splits, f.rows);
    layer_words L;
    L.qkv = w, w += rows * 3 * d;
    L.hid = w, w += rows * 4 * d;
    L.self_part = w, L.cross_part = w + rows * f.n_head * f.splits * FS_PART;
    return L;
}

/* A layer's sums (x1 - x, the cross query's G x1 less G o_b, x2 - x1 and
 * x3 - x2 less their biases, each word counting its adds: fx_add; d words
 * a row), for one parity of the epoch:
 * a step adds into its own parity's and clears the other's for the next
 * step (the last one's, all read); after every layer's words in f.ll. */
struct layer_sums {
    long long *x1, *cq, *x2, *x3;
};

#define SUM_WORDS(d, rows) (4L * (d) * (rows))

static __device__ long long *sums_base(const sh_fused_step &f, unsigned parity) {
    return (long long *)f.ll +
           (size_t)f.n_layer * words_per_layer(f.d, f.n_head, f.splits, f.rows) +
           (size_t)parity * f.n_layer * SUM_WORDS(f.d, f.rows);
}

static __device__ layer_sums sums_of(const sh_fused_step &f, unsigned parity, int l) {
    long long *w = sums_base(f, parity) + (size_t)l * SUM_WORDS(f.d, f.rows);
    layer_sums S;
    const size_t n = (size_t)f.d * f.rows;
    S.x1 = w, S.cq = w + n, S.x2 = w + 2 * n, S.x3 = w + 3 * n;
    return S;
}

/* The layer norm's weights for the elements this thread normalises,
 * loaded before the wait for the input. */
struct ln_params {
    float g[3], b[3];
};

static __device__ ln_params ln_fetch(const float *g, const float *b, int d) {
    ln_params p;
#pragma unroll
    for (int k = 0; k < 3; k++) {
        int i = threadIdx.x + k * FS_THREADS;
        p.g[k] = i < d ? g[i] : 0.0f;
        p.b[k] = i < d ? b[i] : 0.0f;
    }
    return p;
}

/* Sums of v[0..N) (N 2 or 4) over the compute threads, in place; every
 * thread gets them. Called right after a barrier of the compute threads
 * (no one still reads red, N * 16 floats). The warps' sums by transposed
 * shuffles, then every thread reads the 15 warps' sums itself (broadcast
 * loads) where every warp shuffled them again. */
template <int N>
static __device__ void block_sums(float *v, float *red) {
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    float mine = warp_sums<N>(v);
    if (lane % (WARP / N) == 0) red[lane / (WARP / N) * 16 + warp] = mine;
    SYNC();
#pragma unroll
    for (int k = 0; k < N; k++) v[k] = sum15(red + k * 16);
}

/* The layer norm's mean and 1 / spread of x, row by row, d <= 3 *
 * FS_THREADS (x d floats a row, shared; called after a barrier): from one
 * reduction of the sums of (x - x0) and its squares, every row's at once,
 * one barrier where two passes took four; the shift by an element of x
 * keeps E[c^2] - E[c]^2 from cancelling when the mean is large against
 * the spread. */
template <int ROWS>
static __device__ void ln_moments(const float *x, int d, float *red, float *mean, float *inv) {
    float t[2 * ROWS], x0[ROWS];
#pragma unroll
    for (int r = 0; r < ROWS; r++) {
        x0[r] = x[r * d];
        t[2 * r] = t[2 * r + 1] = 0.0f;
#pragma unroll
        for (int k = 0; k < 3; k++) {
            int i = threadIdx.x + k * FS_THREADS;
            float c = i < d ? x[r * d + i] - x0[r] : 0.0f;
            t[2 * r] += c;
            t[2 * r + 1] += c * c;
        }
    }
    block_sums<2 * ROWS>(t, red);
    const float inv_d = 1.0f / d;
#pragma unroll
    for (int r = 0; r < ROWS; r++) {
        float ms = t[2 * r] * inv_d, var = fmaxf(t[2 * r + 1] * inv_d - ms * ms, 0.0f);
        mean[r] = x0[r] + ms;
        inv[r] = rsqrtf(var + 1e-5f);
    }
}

/* xs = layer_norm(x) * g + b, row by row (xs 4d floats a row). */
template <int ROWS>
static __device__ void layer_norm(const float *x, int d, const ln_params &p, float *xs, float *red) {
    float mean[ROWS], inv[ROWS];
    ln_moments<ROWS>(x, d, red, mean, inv);
#pragma unroll
    for (int r = 0; r < ROWS; r++)
#pragma unroll
        for (int k = 0; k < 3; k++) {
            int i = threadIdx.x + k * FS_THREADS;
            if (i < d) xs[r * 4 * d + i] = (x[r * d + i] - mean[r]) * inv[r] * p.g[k] + p.b[k];
        }
    SYNC();
}

/* Lane k of each warp holds the bias of the warp's k-th row of [r0, r1)
 * (rows r0 + warp + k * warps), loaded before the wait. */
static __device__ float bias_fetch(const float *bias, int n_out, int shift) {
    int r0, r1, warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    my_rows(n_out, shift, &r0, &r1);
    int r = r0 + warp + lane * (FS_THREADS / WARP);
    return r < r1 ? bias[r] : 0.0f;
}

/* x[i] += bias[i] + sums[i] once `adds` blocks have added theirs (each
 * thread its own elements, i < d <= 3 * FS_THREADS, row by row: x and sums
 * d a row; bias loaded before the wait). */
struct vec3 {
    float v[3];
};
static __device__ vec3 vec_fetch(const float *p, int d) {
    vec3 r;
#pragma unroll
    for (int k = 0; k < 3; k++) {
        int i = threadIdx.x + k * FS_THREADS;
        r.v[k] = i < d ? p[i] : 0.0f;
    }
    return r;
}
template <int ROWS>
static __device__ void sums_wait(const long long *sums, unsigned adds, const vec3 &bias, int d,
                                 float *x) {
    const u64 *w = (const u64 *)sums;
    u64 q[ROWS][3];
#pragma unroll
    for (int r = 0; r < ROWS; r++)
#pragma unroll
        for (int k = 0; k < 3; k++) {   /* every load in flight at once */
            int i = threadIdx.x + k * FS_THREADS;
            q[r][k] = i < d ? ll_load(w + r * d + i) : adds * FX_COUNT;
        }
#pragma unroll
    for (int r = 0; r < ROWS; r++)
#pragma unroll
        for (int k = 0; k < 3; k++) {
            int i = threadIdx.x + k * FS_THREADS;
            for (unsigned spins = 0; fx_count(q[r][k]) != adds; spins++) {
                if (spins > (1u << 22)) __trap();   /* as ll_wait */
                q[r][k] = ll_load(w + r * d + i);
            }
            if (i < d) x[r * d + i] += bias.v[k] + fx_value(q[r][k], adds);
        }
}

/* The cross-attention's query of this block's head and row, with x1
 * (x += o_b + x1's sums, as sums_wait): the layer norm of x1 and the
 * cross query's GEMV folded into the sums. cq ln(x1) + cq_b is
 * inv G (x1 - mean) + c with G = cq diag(ln2_g) and c = cq ln2_b + cq_b;
 * G x1 is G x (the G phase) + G o_b + the self-attention's heads times
 * G o's columns of them, all but G o_b added into the cq sums (n_head + 1
 * adds a sum). So q = inv (S + e - mean g1) + c, e = G o_b and g1 = G 1
 * made at load (sh_fused_layer): a GEMV phase and its hand-over less on
 * the chain, the query's words of the head polled with x1's. */
template <int ROWS>
static __device__ void cross_query(const sh_fused_step &f, const work &W, const head_part &P,
                                   const sh_fused_layer *L, const layer_sums &S) {
    const int d = f.d, j = threadIdx.x, at = P.h * FS_HD + j;
    const bool mine = P.head && j < FS_HD;
    const u64 *word = (const u64 *)S.cq + (size_t)P.q * d + at;
    u64 w = 0;
    float e = 0.0f, g1 = 0.0f, c = 0.0f;
    if (mine) w = ll_load(word), e = L->cq_e[at], g1 = L->cq_g1[at], c = L->cq_c[at];
    sums_wait<ROWS>(S.x1, f.n_head, vec_fetch(L->o_b, d), d, W.x);
    SYNC();
    float mean[ROWS], inv[ROWS];
    ln_moments<ROWS>(W.x, d, W.red, mean, inv);
    if (!mine) return;
    const unsigned adds = f.n_head + 1;
    for (unsigned spins = 0; fx_count(w) != adds; spins++) {
        if (spins > (1u << 22)) __trap();   /* as ll_wait */
        w = ll_load(word);
    }
    float m = mean[0], v = inv[0];
#pragma unroll
    for (int r = 1; r < ROWS; r++)
        if (P.q == r) m = mean[r], v = inv[r];
    W.xs[j] = v * (fx_value(w, adds) + e - m * g1) + c;   /* attention_head's query */
}

/* Shared memory: x (d a row), xs (4d a row), red (RED_FLOATS), sc
 * (sc_floats), uni (uni_bytes: the block's row's keys), the ring's
 * barriers and offsets, the ring. */
#define RED_FLOATS (2 * SH_FUSED_MAX_ROWS * WARP)   /* layer_norm's sums: 2 a row */
static __host__ __device__ size_t barriers_offset(const sh_fused_step &f) {
    return ((size_t)5 * f.d * f.rows + RED_FLOATS + f.sc_floats) * 4 + f.uni_bytes;
}
static __host__ __device__ size_t parts_offset(const sh_fused_step &f) {
    return barriers_offset(f) + FS_SLOTS * 12 + 16;   /* the two head_parts */
}
static __host__ __device__ size_t cross_offset(const sh_fused_step &f) {
    return (parts_offset(f) + 2 * sizeof(head_part) + 7) / 8 * 8;   /* cross_ready, cross_go */
}
static __host__ __device__ size_t report_offset(const sh_fused_step &f) {
    return cross_offset(f) + 16;
}
static __host__ __device__ size_t ring_offset(const sh_fused_step &f) {
    size_t at = report_offset(f) + sizeof(pick_report);
    return (at + 127) / 128 * 128;
}

/* ------------------------------------------- the pick of the step before */

/* A step of one row can begin with the greedy pick of the step before
 * (f.pick: float16, the logit screen), as kernels.cu's k_screen_pick makes
 * it, over this grid's warps instead of a kernel of its own, which cost
 * its launch, its ramp and its last block's merge between two steps. Each
 * block sums up its warps' rows (text rows a lane each, timestamp rows
 * exactly; the rows the screen's bound cannot rule out computed again from
 * the half rows) and hands its summary on as words; every block merges all
 * of them in one order, so every block steps the same token. The fetching
 * warp waits with the ring till the rows are read (the memory is theirs),
 * then writes block 0's choice out to the host off the step's chain.
 * H200, medium: the pick in the step ~26 us (bench_fused_step), where the
 * pick's kernel and the gaps around it took ~32; a greedy step 0.499 ->
 * 0.488 ms. */
#define PICK_CHUNKS 5   /* a lane's chunks of a row: rows up to 1280 wide (large) */
#define PICK_AHEAD 3    /* screen rows in flight a warp (H200, medium 60 s: 2 157.5, 3 157.2 ms) */
#define PICK_WORDS 6    /* a block's summary: chunk_acc's six values */
#define PICK_MAX_GRID FS_THREADS   /* a compute thread a block's summary (pick_merge) */

/* The pick's room in shared memory: W.uni, free until the first layer's
 * keys are copied into it. */
struct pick_room {
    int n_again;
    int again_row[FS_THREADS];   /* a block's rows to compute again (a lane a row) */
    float again_value[FS_THREADS];
};

/* The blocks' summaries, after the sums in f.ll. */
static __device__ u64 *pick_words(const sh_fused_step &f) {
    return f.ll + (size_t)f.n_layer * (words_per_layer(f.d, f.n_head, f.splits, f.rows) +
                                       2 * SUM_WORDS(f.d, f.rows));
}

/* (value, index) of the larger over the warp, ties to the lower index:
 * every lane gets the same. */
static __device__ __forceinline__ void warp_argmax(float &v, int &i) {
    for (int o = WARP / 2; o > 0; o >>= 1)
        arg_merge(v, i, __shfl_xor_sync(0xffffffffu, v, o), __shfl_xor_sync(0xffffffffu, i, o));
}

/* The block's summary of what each compute thread holds of each kind
 * (text 0, timestamps 1): a best value b (-inf: none), its token i and
 * the sum s of exp(x - b) of its logits. The maxima first, then each
 * thread's sum rescaled to them and added: one exponential a thread where
 * merging running summaries took one a merge (H200, medium: ~1.2 us a
 * warp's five). Every thread gets the same bits; two barriers, and red
 * (96 floats) free again only after the next. */
static __device__ chunk_acc block_summarise(const float (&b)[2], const int (&i)[2],
                                            const float (&s)[2], float *red) {
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP, nw = FS_THREADS / WARP;
    chunk_acc c;
#pragma unroll
    for (int k = 0; k < 2; k++) {
        float v = b[k];
        int at = i[k];
        warp_argmax(v, at);
        if (lane == 0) red[32 * k + warp] = v, red[32 * k + 16 + warp] = __int_as_float(at);
    }
    SYNC();
#pragma unroll
    for (int k = 0; k < 2; k++) {
        c.best_v[k] = -INFINITY, c.best_i[k] = INT_MAX;
        for (int w = 0; w < nw; w++)
            arg_merge(c.best_v[k], c.best_i[k], red[32 * k + w], __float_as_int(red[32 * k + 16 + w]));
    }
    float e[2];
#pragma unroll
    for (int k = 0; k < 2; k++) e[k] = b[k] == -INFINITY ? 0.0f : s[k] * expf(b[k] - c.best_v[k]);
    block_sums<2>(e, red + 64);
    c.s[0] = e[0], c.s[1] = e[1];
    return c;
}

/* Every block's summary (its words in W.sc after the poll: best values,
 * tokens, sums) merged in one order, so that every block gets the same
 * bits; the token, and block 0's summary to its fetching warp (the
 * log-probability and the host's copy are made there). */
template <bool TRACED>
static __device__ int pick_merge(const sh_fused_step &f, const work &W, unsigned epoch) {
    const int tid = threadIdx.x, G = gridDim.x;
    ll_poll<2>(pick_words(f), PICK_WORDS * G, epoch, W.sc);
    SYNC();
    TRACE(f, f.n_layer, 6);
    float b[2] = {-INFINITY, -INFINITY}, s[2] = {0.0f, 0.0f};
    int i[2] = {INT_MAX, INT_MAX};
    if (tid < G)
        for (int k = 0; k < 2; k++) {
            const float *w = W.sc + PICK_WORDS * tid;
            b[k] = w[k], i[k] = __float_as_int(w[2 + k]), s[k] = w[4 + k];
        }
    chunk_acc c = block_summarise(b, i, s, W.red);
    const int token = pick_token(as_pick_acc(c), f.pick.mask.ts_begin);
    if (blockIdx.x == 0 && tid == 0) {
        W.report->acc = c;
        __threadfence_block();
        W.report->ready = 1;
    }
    TRACE(f, f.n_layer, 7);
    return token;
}

/* The pick's input, x (this thread's elements of f.pick.x, loaded
 * first: the screen's rows queue behind them), through its final layer
 * norm when given, into W.xs; then quantized per 32 (xq, xsc: the rest of
 * xs). */
static __device__ void pick_input(const sh_fused_step &f, const work &W, const float (&x)[3],
                                  const ln_params &ln, int8_t *xq, float *xsc, float *x_norm,
                                  float *q_err) {
    const int d = f.d;
    float *to = f.pick.ln_g ? W.x : W.xs;
#pragma unroll
    for (int k = 0; k < 3; k++) {
        int i = threadIdx.x + k * FS_THREADS;
        if (i < d) to[i] = x[k];
    }
    SYNC();
    if (f.pick.ln_g) layer_norm<1>(W.x, d, ln, W.xs, W.red);
    quantize_x(W.xs, d, xq, xsc, W.red, x_norm, q_err, FS_THREADS / WARP, [] { SYNC(); });
    SYNC();
}

/* The pick (f.pick) over this grid: k_screen_pick's rows, a lane a text
 * row (first + lane * warps of the warp's), its summary handed on. */
template <bool TRACED>
static __device__ int pick_first(const sh_fused_step &f, const work &W, unsigned epoch) {
    TRACE(f, f.n_layer, 0);
    const sh_step_pick &pk = f.pick;
    const sh_pick_mask &mk = pk.mask;
    const int d = f.d, n_out = f.n_vocab, tid = threadIdx.x, lane = tid % WARP, warp = tid / WARP;
    const int nw = FS_THREADS / WARP, warps = gridDim.x * nw, first = blockIdx.x * nw + warp;
    const int text = text_rows_end(mk, n_out);
    const int8_t *q = (const int8_t *)pk.q;
    const __half *qs = (const __half *)pk.qs;
    pick_room *room = (pick_room *)W.uni;
    int8_t *xq = (int8_t *)(W.xs + 2 * d);
    float *xsc = W.xs + 3 * d;
    /* x first, then every load that does not need it */
    float x[3];
#pragma unroll
    for (int k = 0; k < 3; k++) x[k] = tid + k * FS_THREADS < d ? pk.x[tid + k * FS_THREADS] : 0.0f;
    ln_params ln = {};
    if (pk.ln_g) ln = ln_fetch(pk.ln_g, pk.ln_b, d);
    const int mine = first + lane * warps, mine_ts = text + mine;
    const bool has = mine < text, has_ts = mine_ts < n_out;
    const float2 bd = has ? ((const float2 *)pk.bounds)[mine] : make_float2(0.0f, 0.0f);
    const unsigned banned_word = has ? __ldg(&pk.banned[mine / 32]) : 0u;
    const unsigned banned_ts = has_ts ? __ldg(&pk.banned[mine_ts / 32]) : 0u;
    uint4 ts_row[PICK_CHUNKS][2];
    load_chunks<SH_GW_F16, PICK_CHUNKS>(f.tok_emb, NULL, n_out, d, text + first, ts_row);
    if (tid == 0) room->n_again = 0;   /* ordered by pick_input's barriers */
    float x_norm, q_err;
    pick_input(f, W, x, ln, xq, xsc, &x_norm, &q_err);
    TRACE(f, f.n_layer, 1);
    screen_row<PICK_CHUNKS> rows[PICK_AHEAD];
#pragma unroll
    for (int i = 0; i < PICK_AHEAD; i++) screen_load(q, qs, text, d, first + i * warps, rows[i]);
    const float *xs = W.xs;
    const float v_ts = screen_ts_rows<PICK_CHUNKS>(f.tok_emb, n_out, d, text, first, warps, ts_row, xs);
    TRACE(f, f.n_layer, 2);
    float v = screen_text_rows(q, qs, text, d, first, warps, rows, xq, xsc);
    TRACE(f, f.n_layer, 3);
    /* the rows the block's best lower bound keeps, computed again */
    const bool out = !has || suppressed(banned_word, mine, mk);
    const float bound = screen_bound(x_norm, q_err, bd);
    const float warp_lower = warp_max(out ? -INFINITY : v - bound);
    screen_prefetch_rows(f.tok_emb, d, first, warps,
                         __ballot_sync(0xffffffffu, !out && v + bound >= warp_lower));
    if (lane == 0) W.red[WARP + warp] = warp_lower;
    SYNC();
    if (tid == 0) W.report->go = 1;   /* the rows are read: the ring may fill */
    const float lower = max15(W.red + WARP);
    const bool again = !out && v + bound >= lower;
    int slot = -1;
    if (again) slot = atomicAdd(&room->n_again, 1), room->again_row[slot] = mine;
    SYNC();
    for (int c = warp; c < room->n_again; c += nw) {
        float exact = exact_logit<PICK_CHUNKS>(f.tok_emb, n_out, d, room->again_row[c], xs);
        if (lane == 0) room->again_value[c] = exact;
    }
    SYNC();
    TRACE(f, f.n_layer, 4);
    if (slot >= 0) v = room->again_value[slot];
    /* the block's summary, handed on: thread k word k */
    const bool ts_in = has_ts && !suppressed(banned_ts, mine_ts, mk) && v_ts != -INFINITY;
    const float b[2] = {out ? -INFINITY : v, ts_in ? v_ts : -INFINITY}, one[2] = {1.0f, 1.0f};
    const int at[2] = {mine, mine_ts};
    chunk_acc c = block_summarise(b, at, one, W.red);
    if (tid < PICK_WORDS) {
        const float words[PICK_WORDS] = {c.best_v[0], c.best_v[1], __int_as_float(c.best_i[0]),
                                         __int_as_float(c.best_i[1]), c.s[0], c.s[1]};
        ll_store(pick_words(f) + PICK_WORDS * blockIdx.x + tid, epoch, words[tid]);
    }
    TRACE(f, f.n_layer, 5);
    return pick_merge<TRACED>(f, W, epoch);
}

/* RS: rows dealt in units of 1 << RS (sh_fused_step.row_shift), a
 * constant so that each instance keeps its own code (a run-time shift cost
 * medium int8 2.5% a step). */
template <int KIND, int RS, int ROWS, bool TRACED, bool MMA>
__global__ void __launch_bounds__(FS_BLOCK, 1) k_fused_step(sh_fused_step f) {
    extern __shared__ __align__(128) unsigned char smem[];
    const int d = f.d, tid = threadIdx.x, rs = RS;
    work W;
    W.x = (float *)smem;
    W.xs = W.x + ROWS * d;
    W.red = W.xs + ROWS * 4 * d;
    W.sc = W.red + RED_FLOATS;
    W.uni = W.sc + f.sc_floats;
    ring R;
    R.mbar = (u64 *)(smem + barriers_offset(f));
    R.offs = (unsigned *)(R.mbar + FS_SLOTS);
    R.consumed = (volatile int *)(R.offs + FS_SLOTS);
    R.base = smem + ring_offset(f);
    R.size = f.ring_bytes;
    int v0 = 0, v1 = 0;   /* this block's vocabulary rows, when it makes logits */
    /* in pairs the vocabulary takes its padding row (int8 weights of an
     * odd row count have one, zero) */
    const bool logits = ROWS == 1 && f.logits;
    if (logits) my_rows(RS ? (f.n_vocab + 1) & ~1 : f.n_vocab, RS, &v0, &v1);
    const int n_parts = logits ? (v1 - v0 + f.part_rows - 1) / f.part_rows : 0;
    R.total = f.n_layer * LAYER_SLICES + n_parts;
    const bool pick = begins_with_pick<KIND, ROWS>(f);
    /* decoding stops at this token: no layer to run (a window's last step
     * behind the pick's kernel, ~0.5 ms medium int8), and nothing written,
     * so the epoch and the sums stay the next launch's */
    if (ROWS == 1 && !pick && f.stops && *f.token == f.stop_token) return;
    const unsigned epoch = *f.epoch;
    const int pos = pick ? f.pick.next_pos : *f.pos0;
    head_part *parts = (head_part *)(smem + parts_offset(f));   /* self-, cross-attention */
    W.cross_ready = (u64 *)(smem + cross_offset(f));
    W.cross_go = (volatile int *)(W.cross_ready + 1);
    W.report = (pick_report *)(smem + report_offset(f));
    if (tid == 0) {
        for (int s = 0; s < FS_SLOTS; s++) mbar_init(&R.mbar[s]);
        mbar_init(W.cross_ready, WARP);   /* the fetching warp's lanes (cross_issue) */
        *W.cross_go = 0;
        W.report->go = W.report->ready = W.report->stopped = 0;
        *R.consumed = 0;
        parts[0] = head_part_of<ROWS>(f, pos + 1);
    }
    if (tid == WARP) parts[1] = head_part_of<ROWS>(f, f.n_audio);
    fence_mbar_init();
    __syncthreads();   /* the whole block, once */
    if (tid >= FS_THREADS) {
        ring_produce<KIND, RS, ROWS>(R, f, v0, v1, W, parts[1]);
        return;
    }
    const unsigned parity = epoch & 1;
    {   /* the next step's sums cleared (this parity's last use, all read) */
        long long *next = sums_base(f, parity ^ 1);
        long n = (long)f.n_layer * SUM_WORDS(d, ROWS);
        for (long i = (long)blockIdx.x * FS_THREADS + tid; i < n; i += (long)gridDim.x * FS_THREADS)
            next[i] = 0;
    }
    const int picked = pick ? pick_first<TRACED>(f, W, epoch) : 0;
    if (pick && f.pick.stops && picked == f.pick.stop_token) {
        /* the end of text: decoding stops at this choice, so the step on
         * it would be work for nothing (a window's last, ~0.45 ms medium);
         * every block has read the epoch (block 0 has all their words) */
        if (tid == 0) W.report->stopped = 1;
        if (blockIdx.x == 0 && tid == 0) *f.epoch = epoch + 1;
        return;
    }
    /* the embedding, every block all of it, row by row */
    for (int q = 0; q < ROWS; q++) {
        const int token = pick ? picked : f.token[q];
        for (int i = tid; i < d; i += FS_THREADS) {
            size_t at = (size_t)token * d + i;
            float e = KIND == SH_GW_F16 ? __half2float(((const __half *)f.tok_emb)[at])
                                        : (float)((const int8_t *)f.tok_emb)[at] *
                                              __half2float(((const __half *)f.tok_scales)[at / 32]);
            W.x[q * d + i] = e + f.pos_emb[(size_t)pos * d + i];
        }
    }
    SYNC();
    int used = 0;   /* weight slices consumed */
    const float *fc2_b = NULL;   /* the layer before's, added to x3's sums */
    for (int l = 0; l < f.n_layer; l++) {
        const sh_fused_layer Lc = f.layers[l], *L = &Lc;
        layer_words Wd = words_of(f, l);
        /* qkv = W ln(x) + b; k, v also into the cache at pos */
        TRACE(f, l, 0);
        attention_fetch<false>(f, W, parts[0], L->self_k, L->self_v, f.cache_stride, pos + 1, 1,
                               tid, FS_THREADS);
        ln_params ln = ln_fetch(L->ln1_g, L->ln1_b, d);
        float bias = bias_fetch(L->qkv_b, 3 * d, rs);
        if (l > 0)
            sums_wait<ROWS>(sums_of(f, parity, l - 1).x3, SH_FC2_BLOCKS, vec_fetch(fc2_b, d), d, W.x);
        SYNC();
        TRACE(f, l, 1);
        layer_norm<ROWS>(W.x, d, ln, W.xs, W.red);
        if (TRACED && f.trace) { ring_slice(R, used); TRACE(f, l, 22); }   /* slice wait (trace) */
        epilogue e = {EP_QKV, Wd.qkv, epoch, NULL, (__half *)L->self_k, (__half *)L->self_v,
                      pos, d, 3 * d, f.cache_stride};
        gemv_phase<KIND, ROWS>(R, used, M_QKV, 3 * d, rs, d, W.xs, 4 * d, bias, e);
        TRACE(f, l, 2);
        /* the cross query's G x into its sums (cross_query) on warps 2..
         * while warps 0 and 1 wait for the head's q, k and v */
        layer_sums Sm = sums_of(f, parity, l);
        {
            int r0, r1;
            my_rows(d, rs, &r0, &r1);
            const unsigned char *G = ring_slice(R, used);
            e = (epilogue){EP_SUM};
            e.d = d, e.sums = Sm.cq, e.sum_row0 = 0;
            if (tid < FS_HD) attention_poll<ROWS>(f, W, parts[0], pos + 1, Wd.qkv, epoch);
            else gemv_rows<SH_GW_F16, ROWS>(G, G, r0, r1, r1, d, W.x, d, 0.0f, e, FS_HD / WARP);
            SYNC();
            ring_release(R, ++used);
        }
        /* self-attention over positions 0..pos: x1 = x + b + the heads'
         * outputs times o's columns of them, and the cross query's part
         * times G o's (added into sums) */
        attention_head<KIND, ROWS, TRACED>(f, W, R, used, epoch, parts[0], pos + 1, 1,
                                           Wd.self_part, Sm.x1, Sm.cq, l);
        TRACE(f, l, 3);
        /* x1, and the cross query from its sums */
        cross_query<ROWS>(f, W, parts[1], L, Sm);
        TRACE(f, l, 5);
        /* cross-attention over the window: x2 = x1 + b + its heads' part */
        attention_head<KIND, ROWS, TRACED>(f, W, R, used, epoch, parts[1], f.n_audio, 0,
                                           Wd.cross_part, Sm.x2, NULL, l);
        TRACE(f, l, 7);
        /* hid = gelu(W ln(x2) + b) */
        ln = ln_fetch(L->ln3_g, L->ln3_b, d);
        bias = MMA ? mma_bias(L->fc1_b, M_FC1, 4 * d, rs) : bias_fetch(L->fc1_b, 4 * d, rs);
        sums_wait<ROWS>(Sm.x2, f.n_head, vec_fetch(L->co_b, d), d, W.x);
        SYNC();
        TRACE(f, l, 9);
        layer_norm<ROWS>(W.x, d, ln, W.xs, W.red);
        TRACE(f, l, 15);
        if (TRACED && f.trace) { ring_slice(R, used); ring_slice(R, used + 1); TRACE(f, l, 16); }
        e = (epilogue){EP_GELU, Wd.hid, epoch, NULL, NULL, NULL, 0, d, 4 * d};
        gemv_phase<KIND, ROWS, MMA>(R, used, M_FC1, 4 * d, rs, d, W.xs, 4 * d, bias, e, true, W.sc);
        TRACE(f, l, 10);
        /* x3 = x2 + b + W hid: this block's rows of one of fc2's column
         * blocks (my_fc2_rows) times that block's quarter of hid, added
         * into x3's sums (SH_FC2_BLOCKS adds a sum; b where they are read) */
        int r0, r1;
        my_fc2_rows(d, rs, &r0, &r1);
        const int quarter = r0 / d * d;   /* where its quarter of hid starts */
        for (int q = 0; q < ROWS; q++)
            ll_poll<POLL_D>(Wd.hid + q * 4 * d + quarter, d, epoch, W.xs + q * 4 * d + quarter);
        SYNC();
        TRACE(f, l, 11);
        if (TRACED && f.trace) { ring_slice(R, used); ring_slice(R, used + 1); TRACE(f, l, 17); }
        e = (epilogue){EP_SUM};
        e.d = d, e.sums = Sm.x3, e.sum_row0 = quarter;
        gemv_phase<KIND, ROWS, MMA>(R, used, M_FC2, 4 * d, rs, d, W.xs + quarter, 4 * d, 0.0f, e,
                                    true, W.sc);
        TRACE(f, l, 12);
        fc2_b = L->fc2_b;
    }
    /* x3 of the last layer: the final layer norm's input (logits), else
     * x_out, from block 0 (every block's adds have come once it has it) */
    ln_params ln_f = {};
    if (logits) ln_f = ln_fetch(f.ln_g, f.ln_b, d);   /* before the wait */
    if (logits || blockIdx.x == 0)
        sums_wait<ROWS>(sums_of(f, parity, f.n_layer - 1).x3, SH_FC2_BLOCKS, vec_fetch(fc2_b, d), d,
                        W.x);
    if (!logits && blockIdx.x == 0)
        for (int q = 0; q < ROWS; q++)
            for (int k = 0; k < 3; k++) {   /* each thread the elements sums_wait gave it */
                int i = tid + k * FS_THREADS;
                if (i < d) f.x_out[q * d + i] = W.x[q * d + i];
            }
    if (logits) {
        /* the final layer norm (block 0 keeps its output in x_out), then
         * logits = token_embedding x, this block's rows part by part */
        SYNC();
        layer_norm<1>(W.x, d, ln_f, W.xs, W.red);
        if (blockIdx.x == 0)
            for (int i = tid; i < d; i += FS_THREADS) f.x_out[i] = W.xs[i];
        epilogue e = {EP_LOGIT};
        e.x_out = f.logits, e.d = f.n_vocab;
        for (int r0 = v0; r0 < v1; r0 += f.part_rows) {
            int r1 = r0 + f.part_rows < v1 ? r0 + f.part_rows : v1;
            gemv_slice<KIND, 1>(R, used, r0, r1, d, W.xs, 4 * d, 0.0f, e);
        }
    }
    /* every block has read the epoch: block 0 cannot get here before all
     * blocks added their part of the last layer's x3 */
    if (blockIdx.x == 0 && tid == 0) *f.epoch = epoch + 1;
}

/* ------------------------------------------------------------ the host */

extern "C" long sh_fused_ll_words(int n_layer, int d, int n_head, int splits, int rows) {
    return (long)n_layer * (words_per_layer(d, n_head, splits, rows) + 2 * SUM_WORDS(d, rows)) +
           PICK_WORDS * PICK_MAX_GRID;
}

extern "C" int sh_fused_can_pick(const sh_fused_step *f) {
    long warps = (long)f->grid * (FS_THREADS / WARP);
    /* a lane a text row and a timestamp row; the summaries in sc; the
     * room in uni; rows of at most PICK_CHUNKS chunks */
    return f->rows == 1 && f->kind == SH_GW_F16 && !f->logits && f->grid <= PICK_MAX_GRID &&
           warps * WARP >= f->n_vocab && f->sc_floats >= PICK_WORDS * f->grid &&
           f->uni_bytes >= (int)sizeof(pick_room) && f->d <= PICK_CHUNKS * WARP * 8 &&
           f->d % 32 == 0;
}

/* The kernel for the rows, with the trace's stamps or without. */
template <int KIND, int RS, bool MMA = false>
static void (*rows_kernel(int rows, int traced))(sh_fused_step) {
    if (rows == 2)
        return traced ? k_fused_step<KIND, RS, 2, true, MMA> : k_fused_step<KIND, RS, 2, false, MMA>;
    return traced ? k_fused_step<KIND, RS, 1, true, MMA> : k_fused_step<KIND, RS, 1, false, MMA>;
}

/* The kernel for the weights' kind, row unit and rows, and whether fc1
 * and fc2 take the tensor cores (its own build: with both GEMVs in one
 * kernel the float one's step took 462 -> 469 us, medium on the H200). */
static void (*step_kernel(const sh_fused_step *f, int traced))(sh_fused_step) {
    if (f->kind == SH_GW_I8 && f->row_shift) return rows_kernel<SH_GW_I8, 1>(f->rows, traced);
    if (f->kind == SH_GW_I8) return rows_kernel<SH_GW_I8, 0>(f->rows, traced);
    if (f->mma_ffn) return rows_kernel<SH_GW_F16, 0, true>(f->rows, traced);
    return rows_kernel<SH_GW_F16, 0>(f->rows, traced);
}

/* Whether every block's rows of fc1 and fc2 fit mma_gemv on a grid of
 * sms blocks (my_rows, my_fc2_rows). */
static bool mma_rows_fit(int d, int sms) {
    int run = sms / SH_FC2_BLOCKS;
    return (4 * d + sms - 1) / sms <= MMA_ROWS && run > 0 && (d + run - 1) / run <= MMA_ROWS;
}

extern "C" int sh_fused_mma_ffn(int d, int sms, int force) {
    if (force == 0 || !mma_rows_fit(d, sms)) return 0;
    return force > 0 || 4 * d > 2 * (FS_THREADS / WARP) * sms;
}

extern "C" int sh_fused_plan(int device, sh_fused_step *f) {
    int cc = 0, sms = 0, max_smem = 0;
    if (cudaDeviceGetAttribute(&cc, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess ||
        cudaDeviceGetAttribute(&max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) !=
            cudaSuccess)
        return -1;
    if (cc < 9 || f->d % FS_HD || f->d / FS_HD != f->n_head || f->d > 3 * FS_THREADS) return -1;
    if (f->rows < 1) f->rows = 1;
    if (f->rows > SH_FUSED_MAX_ROWS || (f->rows > 1 && f->logits)) return -1;
    if (f->grid > 0 && f->grid < sms) sms = f->grid;   /* fewer blocks: as on a smaller part */
    if (sms < SH_FC2_BLOCKS) return -1;   /* a run of blocks for each of fc2's column blocks */
    /* int8 slices' scales must start and end on 16 bytes for the bulk
     * copies: n_in / 16 bytes a row, a multiple of 16 when n_in is of 256;
     * d % 256 == 128 (tiny's 384) deals rows in pairs, 16-byte multiples
     * for every matrix (the odd vocabulary with the padding row the upload
     * gives int8 matrices of odd rows) */
    if (f->kind != SH_GW_F16 && !(f->kind == SH_GW_I8 && f->d % 128 == 0)) return -1;
    f->row_shift = f->kind == SH_GW_I8 && f->d % 256 != 0;
    /* every block some of fc2's rows: its adds are what block 0's last
     * wait counts (see the epoch's increment) */
    if ((f->d >> f->row_shift) < (sms + SH_FC2_BLOCKS - 1) / SH_FC2_BLOCKS) return -1;
    f->grid = sms;
    /* the layers' weights (15 d x d a layer, int8 ones with their scales;
     * G and G o half) and the rows' cross keys, against half of L2 */
    int l2 = 0;
    cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, device);
    double weight_bytes = f->kind == SH_GW_F16 ? 30.0 : 13.0 * 1.0625 + 4.0;
    double layer_bytes = weight_bytes * f->d * f->d + 4.0 * f->n_audio * f->d * f->rows;
    f->stream_l2 = layer_bytes * f->n_layer > 0.5 * l2;
    f->splits = sms / f->n_head;
    int per = f->splits / f->rows;   /* a head's blocks a row */
    if (per < 1) return -1;
    int keys_audio = (f->n_audio + per - 1) / per;
    int keys_self = (f->n_ctx + per - 1) / per;
    f->max_keys = keys_audio > keys_self ? keys_audio : keys_self;
    f->max_keys = (f->max_keys + 31) / 32 * 32;
    /* a head's partials are merged where its scores and sums were: room
     * for the most ranges a head's keys take */
    int ranges = (f->n_audio > f->n_ctx ? f->n_audio : f->n_ctx) / f->max_keys + 1;
    if (ranges > per) ranges = per;
    f->sc_floats = f->max_keys + (FS_THREADS / WARP) * FS_HD;
    if (f->sc_floats < ranges * FS_PART) f->sc_floats = (ranges * FS_PART + 31) / 32 * 32;
    /* the tensor-core GEMV (mma_gemv): 32 rows of fc1 and fc2 a block at
     * most, and its warp sums */
    if (f->mma_ffn && !mma_rows_fit(f->d, sms)) return -1;
    if (f->mma_ffn && f->sc_floats < (FS_THREADS / WARP) * f->rows * MMA_ROWS)
        f->sc_floats = (FS_THREADS / WARP) * f->rows * MMA_ROWS;
    /* the logits' weights (the token embedding) in parts of about 64 KB:
     * a block's ~400 rows are 300 KB (tiny) to 1 MB (large), more than
     * the ring; parts stream through it like the layers' slices */
    long row_bytes = f->kind == SH_GW_I8 ? f->d + f->d / 16 : 2L * f->d;
    f->part_rows = (int)(65536 / row_bytes) >> f->row_shift << f->row_shift;
    size_t kv = (size_t)2 * f->max_keys * FS_HD * 2;
    f->uni_bytes = (int)((kv + 127) / 128 * 128);
    size_t fixed = ring_offset(*f);
    long ring = ((long)max_smem - (long)fixed) / 128 * 128;
    /* the largest slice must fit: fc1's or fc2's rows of this block (d
     * wide both; fc2's a column block's d rows over its run of blocks) */
    long run = sms / SH_FC2_BLOCKS, rows_fc1 = (4L * f->d + sms - 1) / sms + 1;
    long rows_fc2 = ((long)f->d + run - 1) / run + 1;
    long largest = (rows_fc1 > rows_fc2 ? rows_fc1 : rows_fc2) * f->d * 2;
    if (f->logits && f->part_rows * row_bytes > largest) largest = f->part_rows * row_bytes;
    if (ring < largest) return -1;
    f->ring_bytes = (unsigned)ring;
    f->smem = fixed + (size_t)ring;
    for (int traced = 0; traced < 2; traced++) {
        void (*kernel)(sh_fused_step) = step_kernel(f, traced);
        if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 (int)f->smem) != cudaSuccess)
            return -1;
        int per_sm = 0;
        if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, FS_BLOCK, f->smem) !=
                cudaSuccess ||
            per_sm < 1)
            return -1;
    }
    return 0;
}

extern "C" void sh_k_fused_step(cudaStream_t s, const sh_fused_step *f) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(f->grid), cfg.blockDim = dim3(FS_BLOCK);
    cfg.dynamicSmemBytes = f->smem, cfg.stream = s;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeCooperative;
    attr[0].val.cooperative = 1;
    cfg.attrs = attr, cfg.numAttrs = 1;
    cudaLaunchKernelEx(&cfg, step_kernel(f, f->trace != NULL), *f);
}
