/* launch.cuh - programmatic dependent launch (Hopper and later): the
 * device-side markers and the host-side launcher, shared by the kernels
 * (kernels.cu) and the launch-latency benchmark (bench/bench_launch.cu).
 *
 * A kernel lets the next one start early (PDL_LAUNCH) and waits for its
 * predecessor's results (PDL_WAIT) only after issuing the loads that do
 * not depend on them, the weights; so one kernel's weight fetch overlaps
 * the previous kernel. Below compute capability 9.0 both are no-ops. */
#ifndef SHRUTI_CUDA_LAUNCH_CUH
#define SHRUTI_CUDA_LAUNCH_CUH

#include <cuda_runtime.h>

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define PDL_WAIT() asm volatile("griddepcontrol.wait;" ::: "memory")
#define PDL_LAUNCH() asm volatile("griddepcontrol.launch_dependents;" :::)
#else
#define PDL_WAIT()
#define PDL_LAUNCH()
#endif

/* Launches kernel, as a programmatic dependent of the previous kernel in
 * the stream when pdl is set (compute capability 9.0 and later). */
template <typename... Params, typename... Args>
static void launch(int pdl, void (*kernel)(Params...), dim3 grid, dim3 block, size_t shm,
                   cudaStream_t s, Args... args) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid, cfg.blockDim = block, cfg.dynamicSmemBytes = shm, cfg.stream = s;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr, cfg.numAttrs = pdl ? 1 : 0;
    cudaLaunchKernelEx(&cfg, kernel, ((Params)args)...);
}

#endif
