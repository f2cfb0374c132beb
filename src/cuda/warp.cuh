/* warp.cuh - device helpers shared by the kernels (kernels.cu) and the
 * fused decoder step (fused_step.cu): warp-wide sum and maximum, and
 * Whisper's GELU. */
#ifndef SHRUTI_CUDA_WARP_CUH
#define SHRUTI_CUDA_WARP_CUH

#include <math.h>

#define WARP 32

static __device__ __forceinline__ float warp_sum(float v) {
    for (int o = WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

static __device__ __forceinline__ float warp_max(float v) {
    for (int o = WARP / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Whisper's GELU, the exact erf form. */
static __device__ __forceinline__ float gelu(float x) {
    return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
}

#endif
