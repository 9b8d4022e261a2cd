// Device helpers for kernels that stream 16-bit weights (included only by
// .cu files): a 16-byte load that bypasses L1, and the half2/bfloat162 ->
// float2 widening.
//
// Why: a weight is read once per call, so caching it in L1 would only evict
// the activations that are reused; the GEMV and the sparse FFN read weights
// the same way, so it is written once.
#ifndef RWKV_KERNELS_WEIGHTS_CUH_
#define RWKV_KERNELS_WEIGHTS_CUH_

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace rwkv::kernels {

__device__ __forceinline__ uint4 load_stream(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

__device__ __forceinline__ float2 to_float2(uint32_t u, __half) {
  __half2 h;
  memcpy(&h, &u, sizeof(h));
  return __half22float2(h);
}
__device__ __forceinline__ float2 to_float2(uint32_t u, __nv_bfloat16) {
  __nv_bfloat162 h;
  memcpy(&h, &u, sizeof(h));
  return __bfloat1622float2(h);
}

// The 8 weights of a 16-byte load, widened to fp32.
template <typename T>
__device__ __forceinline__ void widen8(uint4 v, float (&w)[8]) {
  const uint32_t u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = to_float2(u[i], T());
    w[2 * i] = f.x;
    w[2 * i + 1] = f.y;
  }
}

}  // namespace rwkv::kernels

#endif  // RWKV_KERNELS_WEIGHTS_CUH_
