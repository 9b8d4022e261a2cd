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

namespace rwkv::kernels {

// 1 / (1 + exp(-x)) with the accurate expf, as cpu_backend.cc writes it.
__device__ __forceinline__ float sigmoid_f(float x) { return 1.0f / (1.0f + expf(-x)); }

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

// Blocks for a grid-stride loop over n elements.
inline unsigned grid_for(int64_t n, int block) {
  const int64_t blocks = (n + block - 1) / block;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > 65536 ? 65536 : blocks));
}

}  // namespace rwkv::kernels

#endif  // RWKV_KERNELS_KERNEL_UTIL_CUH_
