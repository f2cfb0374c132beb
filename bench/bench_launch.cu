/* bench_launch.cu - what a chain of dependent kernels costs on this GPU:
 * the floor under the decoder step, which is a chain of ~8 small kernels a
 * layer replayed from a CUDA graph (see the README's GPU section).
 *
 * For a graph of 256 kernels, each depending on the one before, it prints
 * the time a kernel for: empty kernels; kernels whose every block first
 * reads the 4 KB vector the previous kernel wrote (as a GEMV reads its
 * input); kernels whose blocks count themselves in and the last one sums
 * what all wrote (as the split attention merges). Each at several grid
 * sizes, with and without programmatic dependent launch (Hopper and
 * later; without it elsewhere the two agree). Then the host's round trip
 * per step: a small graph, with a 16-byte copy each way, and with three
 * kernels more, each followed by a stream synchronisation.
 *
 * usage: bench_launch (no arguments; best of 6 replays each) */
#include <cuda_runtime.h>
#include <stdio.h>
#include <time.h>

#include "cuda/launch.cuh"


#define CHAIN 256
#define VEC 1024

__global__ void k_empty(float *buf, int i) {
    PDL_LAUNCH();
    PDL_WAIT();
    if (blockIdx.x == 0 && threadIdx.x == 0) buf[i] = buf[i - 1] + 1.0f;
}

/* Every block reads the vector the previous kernel wrote, sums it and
 * writes one element of the next. */
__global__ void k_read_vector(float *vec, int i) {
    __shared__ float part[32];
    PDL_LAUNCH();
    PDL_WAIT();
    const float *in = vec + (i & 1) * VEC;
    float s = 0.0f;
    for (int k = threadIdx.x; k < VEC; k += blockDim.x) s += in[k];
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        float t = 0.0f;
        for (int w = 0; w < (int)blockDim.x / 32; w++) t += part[w];
        vec[((i + 1) & 1) * VEC + blockIdx.x % VEC] = t * 1e-9f;
    }
}

/* Each block writes a value and counts itself in; the last sums them all. */
__global__ void k_last_sums(float *buf, int i, float *part, unsigned *count) {
    __shared__ bool last;
    PDL_LAUNCH();
    PDL_WAIT();
    if (threadIdx.x == 0) {
        part[blockIdx.x] = buf[i - 1] + blockIdx.x;
        __threadfence();
        last = atomicAdd(&count[i], 1u) == gridDim.x - 1;
    }
    __syncthreads();
    if (!last) return;
    __threadfence();
    float s = 0.0f;
    for (int b = threadIdx.x; b < (int)gridDim.x; b += blockDim.x) s += ((volatile float *)part)[b];
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (threadIdx.x == 0) buf[i] = s * 1e-9f, count[i] = 0;
}


static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

/* Best of 6 replays (after one untimed) of a graph, in microseconds. */
static double replay_us(cudaGraphExec_t exec, cudaStream_t s) {
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0), cudaEventCreate(&e1);
    float best = 1e30f;
    for (int r = 0; r < 7; r++) {
        cudaEventRecord(e0, s);
        cudaGraphLaunch(exec, s);
        cudaEventRecord(e1, s);
        cudaEventSynchronize(e1);
        float ms;
        cudaEventElapsedTime(&ms, e0, e1);
        if (r > 0 && ms < best) best = ms;
    }
    cudaEventDestroy(e0), cudaEventDestroy(e1);
    return best * 1000.0;
}

int main(void) {
    float *buf, *vec, *part;
    unsigned *count;
    cudaStream_t s;
    if (cudaMalloc(&buf, (CHAIN + 16) * sizeof(float)) != cudaSuccess) {
        fprintf(stderr, "bench_launch: no usable GPU\n");
        return 1;
    }
    cudaMalloc(&vec, 2 * VEC * sizeof(float));
    cudaMalloc(&part, 4096 * sizeof(float));
    cudaMalloc(&count, (CHAIN + 16) * sizeof(unsigned));
    cudaMemset(buf, 0, (CHAIN + 16) * sizeof(float));
    cudaMemset(vec, 0, 2 * VEC * sizeof(float));
    cudaMemset(count, 0, (CHAIN + 16) * sizeof(unsigned));
    cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    cudaDeviceProp prop;
    cudaGetDeviceProperties(&prop, 0);
    printf("%s, %d SMs; a chain of %d dependent kernels in a graph, 128 threads a block\n",
           prop.name, prop.multiProcessorCount, CHAIN);
    const char *names[] = {"empty", "read the previous vector", "last block sums"};
    const int grids[] = {1, 132, 264, 528, 1024};
    for (int kind = 0; kind < 3; kind++)
        for (int gi = 0; gi < 5; gi++)
            for (int pdl = 0; pdl < 2; pdl++) {
                int grid = grids[gi];
                cudaGraph_t g;
                cudaGraphExec_t exec;
                cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal);
                for (int i = 1; i <= CHAIN; i++) {
                    if (kind == 0) launch(pdl, k_empty, grid, 128, 0, s, buf, i);
                    if (kind == 1) launch(pdl, k_read_vector, grid, 128, 0, s, vec, i);
                    if (kind == 2) launch(pdl, k_last_sums, grid, 128, 0, s, buf, i, part, count);
                }
                cudaStreamEndCapture(s, &g);
                if (cudaGraphInstantiate(&exec, g, 0) != cudaSuccess) {
                    fprintf(stderr, "bench_launch: %s\n", cudaGetErrorString(cudaGetLastError()));
                    return 1;
                }
                double us = replay_us(exec, s) / CHAIN;
                printf("  %-26s grid %4d  %s: %.2f us a kernel\n", names[kind], grid,
                       pdl ? "dependent launch" : "plain           ", us);
                cudaGraphExecDestroy(exec);
                cudaGraphDestroy(g);
            }
    /* the host's round trip per step */
    int *host, *dev;
    cudaMallocHost(&host, 64);
    cudaMalloc(&dev, 64);
    cudaGraph_t g;
    cudaGraphExec_t exec;
    cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal);
    for (int i = 1; i <= 8; i++) launch(1, k_empty, 132, 128, 0, s, buf, i);
    cudaStreamEndCapture(s, &g);
    cudaGraphInstantiate(&exec, g, 0);
    const char *steps[] = {"graph of 8 kernels", "+ 16-byte copy each way", "+ 3 kernels more"};
    for (int v = 0; v < 3; v++) {
        double best = 1e30;
        for (int r = 0; r < 5; r++) {
            cudaStreamSynchronize(s);
            double t0 = now_us();
            for (int n = 0; n < 200; n++) {
                if (v >= 1) cudaMemcpyAsync(dev, host, 16, cudaMemcpyHostToDevice, s);
                cudaGraphLaunch(exec, s);
                if (v >= 2)
                    for (int k = 0; k < 3; k++) launch(1, k_empty, 132, 128, 0, s, buf, 9 + k);
                if (v >= 1) cudaMemcpyAsync(host, dev, 16, cudaMemcpyDeviceToHost, s);
                cudaStreamSynchronize(s);
            }
            double us = (now_us() - t0) / 200;
            if (us < best) best = us;
        }
        printf("  host round trip, %-24s %.2f us\n", steps[v], best);
    }
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) {
        fprintf(stderr, "bench_launch: %s\n", cudaGetErrorString(e));
        return 1;
    }
    return 0;
}
