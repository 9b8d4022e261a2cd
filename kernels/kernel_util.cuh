// Device helpers shared by the kernels (included only by .cu files).
//
// Why: every kernel needs the same few pieces (warp and block sums, the
// sigmoid written the way the CPU reference writes it, grid sizing), and
// writing them once keeps the per-op files short and the numerics uniform.
// Reductions are fp32 tree sums; the CPU reference accumulates some of them
// in double, which is why the op tests allow rtol ~1e-5 rather than bit
// equality.
#ifndef RWKV_KERNELS_KERNEL_UTIL_CUH_
#define RWKV_KERNELS_KERNEL_UTIL_CUH_

#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>
#include <utility>

#include "kernels/gemv.h"
#include "kernels/launch.h"

namespace rwkv::kernels {

// 1 / (1 + exp(-x)) with the accurate expf, as cpu_backend.cc writes it.
__device__ __forceinline__ float sigmoid_f(float x) { return 1.0f / (1.0f + expf(-x)); }

// A GemvAct (the GEMV's and the skinny GEMM's input activation, the LoRA
// GEMM's output one) as cpu_backend.cc and kernels/convert.cu write it:
// accurate tanhf / expf.
__device__ __forceinline__ float activate(float v, int act) {
  if (act == static_cast<int>(GemvAct::kTanh)) return tanhf(v);
  if (act == static_cast<int>(GemvAct::kSigmoid)) return sigmoid_f(v);
  return v;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum over the block; every thread gets the result. blockDim.x must be a
// multiple of 32 and at most 1024; `scratch` holds 32 floats. Ends with a
// barrier, so `scratch` may be reused right after.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_sum(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float t = lane < warps ? scratch[lane] : 0.0f;
  t = warp_sum(t);
  __syncthreads();
  return t;
}

// block_sum of a pair: two sums for the barriers of one. `scratch` holds 32
// float2.
__device__ __forceinline__ float2 block_sum2(float2 v, float2* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v.x = warp_sum(v.x);
  v.y = warp_sum(v.y);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float2 t = lane < warps ? scratch[lane] : make_float2(0.0f, 0.0f);
  t.x = warp_sum(t.x);
  t.y = warp_sum(t.y);
  __syncthreads();
  return t;
}

// Programmatic dependent launch (Hopper and later). A kernel launched by
// `launch` below with it on may be scheduled before the kernels ahead of it
// in the stream have finished; its blocks then wait in pdl_wait() until the
// kernel before it has finished and its writes are visible. pdl_wait()
// first triggers the next kernel's launch (griddepcontrol.launch_dependents),
// then waits (griddepcontrol.wait). The trigger takes effect once every
// block of this kernel has passed it, so the next kernel's blocks are
// scheduled (on what the running kernels leave free) as soon as this one's
// blocks are all resident, and whatever they do before their own pdl_wait()
// overlaps the kernels still running, which may be several: with one-wave
// kernels (batch 1) the launches run ahead as far as the SMs hold blocks.
// Why the trigger comes first: at batch 1 a layer is a dozen short kernels,
// and the next weight product's first loads (issued before its wait) then
// overlap the previous product's stream instead of the short kernel in
// between (H100, 2026-11-27: 1.5B batch 1 +4.8%, batch 2 +6.3%; 7.2B batch
// 1 +3.2%; against triggering after the wait; docs/PERF.md).
// So only reads of what no kernel of any pass in flight writes (weights,
// written by uploads that synchronize) may come before pdl_wait(), and no
// writes but to shared memory: the GEMV and skinny GEMM issue their first
// weight loads there, others load their per-channel parameters. Every
// kernel calls pdl_wait() on every path before it reads its inputs or
// exits, so a kernel's completion implies its predecessors', and results
// are those of plain stream order. Off below sm_90. Process-wide: the CUDA
// backend sets it at Init (CudaBackendOptions::programmatic_launch;
// kernels/launch.h).

__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// kernel<<<grid, block, smem, stream>>>(args...), with programmatic
// dependent launch when it is on. The kernel must call pdl_wait() before it
// reads anything but weights.
// Errors are also left for cudaGetLastError, as a <<<>>> launch leaves them.
template <typename... KArgs, typename... Args>
cudaError_t launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                   Args&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  if (programmatic_launch()) {
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
  }
  return cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
}

// V consecutive floats (V = 1, 2 or 4) moved as one 4-, 8- or 16-byte access;
// the address must be aligned to V floats (aligned_floats checks it on the
// host).
template <int V>
struct FloatVec;
template <>
struct FloatVec<1> {
  __device__ __forceinline__ static void load(float (&d)[1], const float* p) { d[0] = *p; }
  __device__ __forceinline__ static void store(float* p, const float (&d)[1]) { *p = d[0]; }
};
template <>
struct FloatVec<2> {
  __device__ __forceinline__ static void load(float (&d)[2], const float* p) {
    const float2 x = *reinterpret_cast<const float2*>(p);
    d[0] = x.x, d[1] = x.y;
  }
  __device__ __forceinline__ static void store(float* p, const float (&d)[2]) {
    *reinterpret_cast<float2*>(p) = make_float2(d[0], d[1]);
  }
};
template <>
struct FloatVec<4> {
  __device__ __forceinline__ static void load(float (&d)[4], const float* p) {
    const float4 x = *reinterpret_cast<const float4*>(p);
    d[0] = x.x, d[1] = x.y, d[2] = x.z, d[3] = x.w;
  }
  __device__ __forceinline__ static void store(float* p, const float (&d)[4]) {
    *reinterpret_cast<float4*>(p) = make_float4(d[0], d[1], d[2], d[3]);
  }
};

// Warp-per-(row, head) kernels with a head of N = 32 V channels, lane l
// holding channels [V l, V l + V) of it: the warp's item (row * H + head) of
// `items`, kWarps warps a block. Sets the lane's first channel within the
// row (c0, for per-channel parameters) and its offset in an [n, C] array
// (e); false past the last item.
template <int kWarps, int V>
__device__ __forceinline__ bool head_lane(int64_t items, int C, int* c0, int64_t* e) {
  constexpr int N = 32 * V;
  const int64_t item = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (item >= items) return false;
  const int H = C / N;
  *c0 = static_cast<int>(item % H) * N + V * static_cast<int>(threadIdx.x & 31);
  *e = (item / H) * C + *c0;
  return true;
}

// Whether p is 16-byte aligned (host side: a vector path's precondition).
inline bool Aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// Whether every non-null pointer is aligned to v floats.
inline bool aligned_floats(int v, std::initializer_list<const void*> ptrs) {
  for (const void* p : ptrs) {
    if (p != nullptr && reinterpret_cast<uintptr_t>(p) % (sizeof(float) * static_cast<size_t>(v)) != 0) return false;
  }
  return true;
}

// Blocks for a grid-stride loop over n elements.
inline unsigned grid_for(int64_t n, int block) {
  const int64_t blocks = (n + block - 1) / block;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > 65536 ? 65536 : blocks));
}

}  // namespace rwkv::kernels

#endif  // RWKV_KERNELS_KERNEL_UTIL_CUH_
