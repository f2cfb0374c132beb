/* ptx.cuh - the PTX the kernels (kernels.cu), the fused decoder step
 * (fused_step.cu) and the encoder's attention (encoder_attention.cu) share:
 * shared-memory addresses, 16-byte asynchronous copies into shared memory,
 * loads under an L2 eviction policy, ldmatrix and the half tensor-core
 * product. The copies and the product exist from compute capability 8.0;
 * below it they are empty, for kernels that are never launched there, and
 * the loads plain. */
#ifndef SHRUTI_CUDA_PTX_CUH
#define SHRUTI_CUDA_PTX_CUH

#include <cuda_fp16.h>

/* A shared-memory pointer as the 32-bit address PTX wants. */
static __device__ __forceinline__ unsigned smem_u32(const void *p) {
    return (unsigned)__cvta_generic_to_shared(p);
}

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
/* 16 bytes from global into shared memory, asynchronously (cp.async). */
static __device__ __forceinline__ void cp_async16(void *dst, const void *src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(smem_u32(dst)), "l"(src) : "memory");
}
/* An L2 policy for data read once in a pass that is larger than L2 (a
 * step's weights, the cross keys, the token embedding's rows): evicted
 * first, so that what a step reads again (the self-attention caches, the
 * hand-over words and sums, biases, norms) stays in L2 across steps
 * (twenty-sixth session: medium step 461 -> 445 us). Not volatile: the
 * compiler may make it once for a loop. */
static __device__ __forceinline__ unsigned long long l2_evict_first() {
    unsigned long long p;
    asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(p));
    return p;
}
/* The default policy, as a value for the same hinted copies. */
static __device__ __forceinline__ unsigned long long l2_evict_normal() {
    unsigned long long p;
    asm("createpolicy.fractional.L2::evict_normal.b64 %0, 1.0;" : "=l"(p));
    return p;
}
/* cp_async16 under an L2 policy. */
static __device__ __forceinline__ void cp_async16(void *dst, const void *src,
                                                  unsigned long long policy) {
    asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2;"
                 ::"r"(smem_u32(dst)), "l"(src), "l"(policy) : "memory");
}
/* 8 and 16 read-only bytes under an L2 policy. */
static __device__ __forceinline__ uint2 ldg_hint(const uint2 *p, unsigned long long policy) {
    uint2 v;
    asm volatile("ld.global.nc.L2::cache_hint.v2.u32 {%0,%1}, [%2], %3;"
                 : "=r"(v.x), "=r"(v.y) : "l"(p), "l"(policy));
    return v;
}
static __device__ __forceinline__ uint4 ldg_hint(const uint4 *p, unsigned long long policy) {
    uint4 v;
    asm volatile("ld.global.nc.L2::cache_hint.v4.u32 {%0,%1,%2,%3}, [%4], %5;"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p), "l"(policy));
    return v;
}
/* An arrival on the mbarrier once every copy this thread issued so far
 * has landed (the barrier's count includes it: noinc). */
static __device__ __forceinline__ void cp_async_arrive_noinc(unsigned long long *mbar) {
    asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];" ::"r"(smem_u32(mbar)) : "memory");
}
/* Closes the group of copies issued since the last commit. */
static __device__ __forceinline__ void cp_async_commit() {
    asm volatile("cp.async.commit_group;" ::: "memory");
}
/* Waits until at most N committed groups are still in flight. */
template <int N>
static __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}
/* c += a b: a 16 x 16 half (row), b 16 x 8 half (col), c 16 x 8 float,
 * in the fragment layout of mma.m16n8k16. */
static __device__ __forceinline__ void mma16816(float *c, unsigned a0, unsigned a1, unsigned a2,
                                                unsigned a3, unsigned b0, unsigned b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
/* Four 8 x 8 half matrices from shared memory (one row address a lane:
 * lanes 8 i .. 8 i + 7 give matrix i's rows), transposed or not, into
 * r[i] in the fragment layout of mma.m16n8k16. */
static __device__ __forceinline__ void ldmatrix4(unsigned *r, unsigned at, bool trans) {
    if (trans)
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(at));
    else
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(at));
}
#else
static __device__ __forceinline__ unsigned long long l2_evict_first() { return 0; }
static __device__ __forceinline__ unsigned long long l2_evict_normal() { return 0; }
static __device__ __forceinline__ void cp_async16(void *, const void *, unsigned long long) {}
static __device__ __forceinline__ uint2 ldg_hint(const uint2 *p, unsigned long long) { return __ldg(p); }
static __device__ __forceinline__ uint4 ldg_hint(const uint4 *p, unsigned long long) { return __ldg(p); }
static __device__ __forceinline__ void ldmatrix4(unsigned *r, unsigned, bool) {
    r[0] = r[1] = r[2] = r[3] = 0;
}
static __device__ __forceinline__ void cp_async16(void *, const void *) {}
static __device__ __forceinline__ void cp_async_arrive_noinc(unsigned long long *) {}
static __device__ __forceinline__ void cp_async_commit() {}
template <int N>
static __device__ __forceinline__ void cp_async_wait() {}
static __device__ __forceinline__ void mma16816(float *, unsigned, unsigned, unsigned, unsigned,
                                                unsigned, unsigned) {}
#endif

/* What the halves h (v rounded) leave of the floats v: with h, about 22
 * bits of v for the half tensor-core products (k_gemv_mma, the fused
 * step's mma_gemv). */
static __device__ __forceinline__ __half2 half2_rest(float2 v, __half2 h) {
    float2 back = __half22float2(h);
    return __floats2half2_rn(v.x - back.x, v.y - back.y);
}

/* The same from a pointer into shared memory. */
static __device__ __forceinline__ void ldmatrix4(unsigned *r, const void *p, bool trans) {
    ldmatrix4(r, smem_u32(p), trans);
}

/* The same with a's four registers in an array. */
static __device__ __forceinline__ void mma16816(float *c, const unsigned *a, unsigned b0,
                                                unsigned b1) {
    mma16816(c, a[0], a[1], a[2], a[3], b0, b1);
}

#endif
