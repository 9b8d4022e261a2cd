// Device helpers for kernels that read or write 16-bit values (included only
// by .cu files): a 16-byte load that bypasses L1, fp16/bf16 <-> fp32
// conversions (rounding to nearest even), and stores in a runtime-chosen
// element type.
//
// Why: a weight is read once per call, so caching it in L1 would only evict
// the activations that are reused; the GEMV and the sparse FFN read weights
// the same way, so it is written once. The conversions are the ones every
// kernel with 16-bit inputs or outputs needs, written once.
#ifndef RWKV_KERNELS_WEIGHTS_CUH_
#define RWKV_KERNELS_WEIGHTS_CUH_

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/kernel_util.cuh"
#include "kernels/types.h"

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

// Two fp32 values rounded to nearest even and packed as a 16-bit pair (the
// inverse of to_float2).
__device__ __forceinline__ uint32_t pack2(float lo, float hi, __half) {
  const __half2 h = __floats2half2_rn(lo, hi);
  uint32_t u;
  memcpy(&u, &h, sizeof(u));
  return u;
}
__device__ __forceinline__ uint32_t pack2(float lo, float hi, __nv_bfloat16) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  uint32_t u;
  memcpy(&u, &h, sizeof(u));
  return u;
}

// One value widened, and one rounded to nearest even.
__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ __half from_f32(float v, __half) { return __float2half_rn(v); }
__device__ __forceinline__ __nv_bfloat16 from_f32(float v, __nv_bfloat16) { return __float2bfloat16_rn(v); }

// out[i] = x, out an array of t (kF32, kF16 or kBF16).
__device__ __forceinline__ void store_elem(void* out, ElemType t, int64_t i, float x) {
  switch (t) {
    case ElemType::kF16: static_cast<__half*>(out)[i] = __float2half_rn(x); break;
    case ElemType::kBF16: static_cast<__nv_bfloat16*>(out)[i] = __float2bfloat16_rn(x); break;
    default: static_cast<float*>(out)[i] = x; break;
  }
}

// V consecutive outputs x (V = 1, 2 or 4) from element i (a multiple of V)
// of an array of t: one 4/8/16-byte access (the address aligned to V
// elements of t).
template <int V>
__device__ __forceinline__ void store_vec(void* out, ElemType t, int64_t i, const float (&x)[V]) {
  if (t == ElemType::kF32) {
    FloatVec<V>::store(static_cast<float*>(out) + i, x);
    return;
  }
  if constexpr (V == 1) {
    store_elem(out, t, i, x[0]);
  } else {
    uint32_t u[V / 2];
#pragma unroll
    for (int p = 0; p < V / 2; ++p) {
      u[p] = t == ElemType::kF16 ? pack2(x[2 * p], x[2 * p + 1], __half()) : pack2(x[2 * p], x[2 * p + 1], __nv_bfloat16());
    }
    if constexpr (V == 2) {
      static_cast<uint32_t*>(out)[i / 2] = u[0];
    } else {
      reinterpret_cast<uint2*>(out)[i / 4] = make_uint2(u[0], u[1]);
    }
  }
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
