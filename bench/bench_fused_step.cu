/* bench_fused_step.cu - the fused one-row decoder step (src/cuda/fused_step.cu)
 * alone, at the real shapes of tiny .. large with random weights (or
 * zeros: $BENCH_ZERO=1): the median step time, then one step
 * traced by block 0 phase by phase (mean over layers 1..), the figures
 * behind the README's account of where a fused step's time goes.
 *
 * Phases: the wait for the layer's input; layer norm + qkv; self-attention
 * (s:) and cross-attention (c:) in parts: the wait for q, for the keys, the
 * scores and softmax, the weighted values and the exchange and merge of the
 * head's partials, the head's columns of o; between them, the wait for
 * x1's sums with the cross query (cross_query); the wait for x2's sums;
 * layer norm; fc1; the wait for fc1's output; fc2.
 *
 * The step times are the library's kernel's; the trace comes from its
 * second build with the stamps (launched when f.trace is set), a little
 * slower, so its phases sum to a little more than the step.
 *
 * Last, medium with int8 weights (int8_float16), the step only. The step
 * is at position 100, or $BENCH_POS (self-attention over that many keys);
 * of one row, or $BENCH_ROWS (2: two rows, each its own window, as batched
 * windows); on every SM, or $BENCH_GRID blocks (as on a smaller part);
 * without the logits, or with them ($BENCH_LOGITS=1, one row: as tiny's
 * step, the final layer norm and the vocabulary's rows in the kernel); or
 * beginning with the greedy pick of the step before through the logit
 * screen ($BENCH_PICK=1, one row, float16: as medium's and large's greedy
 * steps; the pick's phases traced too). $BENCH_MMA=0 / 1 turns fc1's and
 * fc2's tensor-core GEMV off / on where the rule would not (sh_fused_mma_ffn).
 *
 * usage: bench_fused_step [size] (compute capability 9.0 or later; one size,
 *        e.g. "medium", for a profiler) */
#include "cuda/fused_step.cu"   /* the kernel itself, static in that file */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <vector>

static void *dz(size_t bytes) { void *p; cudaMalloc(&p, bytes); cudaMemset(p, 0, bytes); return p; }

/* Weights, caches and vectors of random values (small halves and bytes;
 * layer norm gains near 1), or with $BENCH_ZERO=1 zeros, as before the
 * nineteenth session: the step's time does depend on them (H200, medium,
 * the kernel before that session's reductions: 502 us with zeros, 476
 * with random values; its reductions of zeros took longer). */
static bool g_random;
static __device__ unsigned hash32(size_t i, unsigned seed) {
    unsigned x = (unsigned)i * 2654435761u ^ seed * 40503u ^ (unsigned)(i >> 32);
    x ^= x >> 16; x *= 0x7feb352du; x ^= x >> 15; x *= 0x846ca68bu; x ^= x >> 16;
    return x;
}
static __global__ void k_fill(void *p, size_t n, int type, unsigned seed, float base, float spread) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float u = (hash32(i, seed) & 0xffffff) / 16777216.0f - 0.5f;
        if (type == 0) ((__half *)p)[i] = __float2half(u * spread);
        else if (type == 1) ((float *)p)[i] = base + u * spread;
        else ((signed char *)p)[i] = (signed char)(hash32(i, seed) & 0xff);
    }
}
static unsigned g_seed = 1;
/* halves (type 0), floats (1: base + spread u) or bytes (2) */
static void *dr(size_t n, int type, float base = 0.0f, float spread = 0.1f) {
    size_t esize = type == 0 ? 2 : type == 1 ? 4 : 1;
    void *p = dz(n * esize);
    if (g_random) k_fill<<<256, 256>>>(p, n, type, g_seed++, base, spread);
    return p;
}

static void run(const char *name, int d, int H, int L, int kind, int pos, int rows) {
    sh_fused_step f = {};
    f.n_layer = L, f.d = d, f.n_head = H, f.n_ctx = 448, f.n_audio = 1500, f.kind = kind;
    f.rows = rows;
    const char *g = getenv("BENCH_GRID");   /* fewer blocks than SMs */
    f.grid = g ? atoi(g) : 0;
    const char *lg = getenv("BENCH_LOGITS");   /* the step with the logits, as tiny's */
    const int n_vocab = 51865, with_logits = lg && atoi(lg) && rows == 1;
    if (with_logits) {
        f.logits = (float *)dz((size_t)n_vocab * 4), f.n_vocab = n_vocab;
        f.ln_g = f.ln_b = (const float *)dz(d * 4);
    }
    /* the step that begins with the greedy pick of the step before, as
     * medium's and large's (BENCH_PICK=1: the screen's rows random, their
     * bounds 0, timestamps from 50364) */
    const char *bp = getenv("BENCH_PICK");
    const int with_pick = bp && atoi(bp) && rows == 1 && !with_logits && kind == SH_GW_F16;
    if (with_pick) {
        f.n_vocab = n_vocab;
        sh_step_pick &pk = f.pick;
        pk.q = dr((size_t)n_vocab * d, 2);
        pk.qs = (const uint16_t *)dr((size_t)n_vocab * d / 32, 0, 0.0f, 0.001f);
        pk.bounds = (const float *)dz((size_t)n_vocab * 8);
        pk.ln_g = (const float *)dr(d, 1, 1.0f, 0.2f), pk.ln_b = (const float *)dr(d, 1);
        pk.banned = (const unsigned *)dz(n_vocab / 8 + 4);
        pk.mask.ts_begin = 50364;
        pk.result = (sh_pick_result *)dz(sizeof(sh_pick_result));
        pk.next_pos = pos;
    }
    f.cache_stride = (long)448 * d, f.cross_stride = (long)L * 1500 * d;
    /* fc1 and fc2 on the tensor cores where the backend would swizzle them */
    int sms = 0;
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
    const char *mm = getenv("BENCH_MMA");   /* 0 / 1: force it off / on (as SHRUTI_CUDA_FFN_MMA) */
    f.mma_ffn = kind == SH_GW_F16 && sh_fused_mma_ffn(d, f.grid ? f.grid : sms, mm ? atoi(mm) : -1);
    if (sh_fused_plan(0, &f) < 0) {
        printf("%s: the fused step cannot run on this device\n", name);
        return;
    }
    std::vector<sh_fused_layer> ls(L);
    auto mat_of = [&](int o, int i, int k) {
        sh_gmat m = {}; m.w = dr((size_t)o * i, k == SH_GW_I8 ? 2 : 0); m.kind = k; m.n_out = o; m.n_in = i;
        if (k == SH_GW_I8) m.scales = (uint16_t *)dr((size_t)o * (i / 32), 0, 0.0f, 0.001f);
        return m;
    };
    auto mat = [&](int o, int i) { return mat_of(o, i, kind); };
    /* every layer's cross keys of row 0's window, then row 1's, as the
     * backend's batched windows */
    char *ck = (char *)dr((size_t)rows * L * 1500 * d, 0, 0.0f, 2.0f), *cv = (char *)dr((size_t)rows * L * 1500 * d, 0, 0.0f, 2.0f);
    for (int l = 0; l < L; l++) {
        sh_fused_layer &x = ls[l];
        x.ln1_g = x.ln3_g = (const float *)dr(d, 1, 1.0f, 0.2f);
        x.ln1_b = x.ln3_b = (const float *)dr(d, 1);
        x.qkv_b = (const float *)dr(3 * d, 1); x.o_b = x.co_b = x.fc2_b = (const float *)dr(d, 1);
        x.fc1_b = (const float *)dr(4 * d, 1);
        x.qkv = mat(3 * d, d); x.fc1 = mat(4 * d, d); x.fc2_blocks = mat(4 * d, d);
        x.o_heads = mat(d, d); x.co_heads = mat(d, d);
        x.cq_g = mat_of(d, d, SH_GW_F16); x.cq_go_heads = mat_of(d, d, SH_GW_F16);
        x.cq_e = x.cq_g1 = x.cq_c = (const float *)dr(d, 1);
        x.self_k = dr((size_t)rows * 448 * d, 0, 0.0f, 2.0f); x.self_v = dr((size_t)rows * 448 * d, 0, 0.0f, 2.0f);
        x.cross_k = ck + (size_t)l * 1500 * d * 2; x.cross_v = cv + (size_t)l * 1500 * d * 2;
    }
    sh_fused_layer *dl = (sh_fused_layer *)dz(L * sizeof(sh_fused_layer));
    cudaMemcpy(dl, ls.data(), L * sizeof(sh_fused_layer), cudaMemcpyHostToDevice);
    size_t vocab_rows = with_logits || with_pick ? n_vocab + 1 : 1;   /* int8: the padding row */
    f.layers = dl; f.tok_emb = dr(vocab_rows * d, kind == SH_GW_I8 ? 2 : 0);
    f.tok_scales = (const uint16_t *)dr(vocab_rows * d / 32, 0, 0.0f, 0.001f);
    f.pos_emb = (const float *)dr(448 * d, 1);
    int *io = (int *)dz(16); cudaMemcpy(io, &pos, 4, cudaMemcpyHostToDevice);
    f.pos0 = io; f.token = io + 1;   /* tokens 0 */
    size_t words = sh_fused_ll_words(L, d, H, f.splits, f.rows) * 8;
    f.ll = (unsigned long long *)dz(words + 256); cudaMemset((char *)f.ll + words, 1, 256);
    f.epoch = (unsigned *)((char *)f.ll + words);
    f.x_out = (float *)dz(rows * d * 4);
    if (with_pick) f.pick.x = f.x_out;
    unsigned long long *tr = (unsigned long long *)dz((L + 1) * 24 * 8);
    cudaStream_t s; cudaStreamCreate(&s);
    cudaEvent_t e0, e1; cudaEventCreate(&e0); cudaEventCreate(&e1);
    for (int i = 0; i < 5; i++) sh_k_fused_step(s, &f);
    cudaError_t e = cudaStreamSynchronize(s);
    if (e != cudaSuccess) { printf("%s: %s\n", name, cudaGetErrorString(e)); exit(1); }
    std::vector<float> t;
    for (int r = 0; r < 7; r++) {
        cudaEventRecord(e0, s);
        for (int i = 0; i < 20; i++) sh_k_fused_step(s, &f);
        cudaEventRecord(e1, s); cudaEventSynchronize(e1);
        float ms; cudaEventElapsedTime(&ms, e0, e1); t.push_back(ms * 1000 / 20);
    }
    std::sort(t.begin(), t.end());
    printf("%s%s%s%s: grid %d splits %d ring %u KB smem %zu KB: step %.1f us (median of 7)\n", name, rows > 1 ? ", 2 rows" : "", with_logits ? ", logits" : with_pick ? ", pick first" : "", f.mma_ffn ? ", fc1/fc2 mma" : "", f.grid, f.splits, f.ring_bytes >> 10, f.smem >> 10, t[3]);
    f.trace = tr;
    sh_k_fused_step(s, &f); cudaStreamSynchronize(s);
    std::vector<unsigned long long> h((L + 1) * 24);
    cudaMemcpy(h.data(), tr, h.size() * 8, cudaMemcpyDeviceToHost);
    // order of stamps within a layer
    int order[] = {0, 1, 22, 2, 4, 8, 13, 14, 23, 3, 5, 18, 19, 20, 21, 6, 7, 9, 15, 16, 10, 11, 17, 12};
    const char *lab[] = {"poll x+sync", "ln+qkv slice", "qkv", "s:poll q", "s:kv wait", "s:softmax", "s:sums+merge", "s:o slices", "s:o cols", "wait x1+moments", "c:poll q", "c:kv wait", "c:softmax", "c:part+merge", "c:co slice", "c:co cols", "wait x2", "ln", "fc1 slices", "fc1", "poll hid", "fc2 slices", "fc2"};
    const int NK = 23;
    double acc[NK] = {0};
    int n = 0;
    for (int l = 1; l < L; l++, n++)
        for (int k = 0; k < NK; k++) acc[k] += (double)(h[l * 24 + order[k + 1]] - h[l * 24 + order[k]]);
    printf("  per layer (ns, mean of layers 1..):");
    double tot = 0;
    for (int k = 0; k < NK; k++) { printf(" %s %.0f,", lab[k], acc[k] / n); tot += acc[k] / n; }
    printf(" total %.0f\n", tot);
    if (with_pick) {   /* the pick's phases, stamped as a layer after the last */
        const char *pl[] = {"x+ln+quantize", "ts rows", "screen rows", "again", "summary", "poll", "merge"};
        printf("  pick (ns):");
        for (int k = 0; k < 7; k++) printf(" %s %.0f,", pl[k], (double)(h[L * 24 + k + 1] - h[L * 24 + k]));
        printf(" to layer 0 %.0f\n", (double)(h[0] - h[L * 24 + 7]));
    }
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    struct { const char *name; int d, H, L, kind; } sizes[] = {
        {"tiny", 384, 6, 4, SH_GW_F16},       {"base", 512, 8, 6, SH_GW_F16},
        {"small", 768, 12, 12, SH_GW_F16},    {"medium", 1024, 16, 24, SH_GW_F16},
        {"large", 1280, 20, 32, SH_GW_F16},   {"medium int8", 1024, 16, 24, SH_GW_I8}};
    const char *zero = getenv("BENCH_ZERO");
    g_random = !(zero && atoi(zero));
    const char *at = getenv("BENCH_POS");
    int pos = at ? atoi(at) : 100;
    if (pos < 0 || pos > 447) {   /* the caches hold 448 positions */
        fprintf(stderr, "BENCH_POS must be 0..447\n");
        return 2;
    }
    const char *r = getenv("BENCH_ROWS");
    int rows = r ? atoi(r) : 1;
    if (rows < 1 || rows > SH_FUSED_MAX_ROWS) {
        fprintf(stderr, "BENCH_ROWS must be 1..%d\n", SH_FUSED_MAX_ROWS);
        return 2;
    }
    for (const auto &z : sizes)   /* all, or the one named (for a profiler) */
        if (argc < 2 || strcmp(argv[1], z.name) == 0) run(z.name, z.d, z.H, z.L, z.kind, pos, rows);
    return 0;
}
