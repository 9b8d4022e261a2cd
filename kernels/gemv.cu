// Skinny products for 1..8 rows: a warp per weight row (see gemv.h).
#include "kernels/gemv.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/kernel_util.cuh"

namespace rwkv::kernels {
namespace {

constexpr int kWarps = 4;  // weight rows per block
constexpr int kUnroll = 4;  // 16-byte weight loads in flight per lane

// 16 bytes of weights, read once: no L1 allocation (x stays cached instead).
__device__ __forceinline__ uint4 load_stream(const uint4* p) {
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
// The input rounded to the weight type, as the cuBLAS path rounds it.
__device__ __forceinline__ float round_to(float v, __half) { return __half2float(__float2half_rn(v)); }
__device__ __forceinline__ float round_to(float v, __nv_bfloat16) {
  return __bfloat162float(__float2bfloat16_rn(v));
}

template <typename T, int NR>
__device__ __forceinline__ void dot8(uint4 wv, const float* __restrict__ x, int cols, int c, float (&acc)[NR]) {
  float w[8];
  const uint32_t u[4] = {wv.x, wv.y, wv.z, wv.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = to_float2(u[i], T());
    w[2 * i] = f.x;
    w[2 * i + 1] = f.y;
  }
#pragma unroll
  for (int r = 0; r < NR; ++r) {
    const float4* xp = reinterpret_cast<const float4*>(x + static_cast<int64_t>(r) * cols + c);
    const float4 a = __ldg(xp), b = __ldg(xp + 1);
    const float xs[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
#pragma unroll
    for (int i = 0; i < 8; ++i) acc[r] = fmaf(w[i], round_to(xs[i], T()), acc[r]);
  }
}

template <typename T, int NR>
__global__ void __launch_bounds__(kWarps * 32) gemv_kernel(const T* __restrict__ w,  // (rows, cols)
                                                           int rows, int cols,
                                                           const float* __restrict__ x,  // (NR, cols)
                                                           float* __restrict__ y,        // (NR, rows)
                                                           bool accumulate) {
  const int lane = threadIdx.x & 31;
  const int o = blockIdx.x * kWarps + (threadIdx.x >> 5);
  if (o >= rows) return;
  const uint4* wrow = reinterpret_cast<const uint4*>(w + static_cast<int64_t>(o) * cols);
  const int nv = cols / 8;  // 16-byte chunks in the row
  float acc[NR];
#pragma unroll
  for (int r = 0; r < NR; ++r) acc[r] = 0.0f;
  int i = lane;
  for (; i + (kUnroll - 1) * 32 < nv; i += kUnroll * 32) {
    uint4 wv[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) wv[u] = load_stream(wrow + i + u * 32);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) dot8<T, NR>(wv[u], x, cols, (i + u * 32) * 8, acc);
  }
  for (; i < nv; i += 32) dot8<T, NR>(load_stream(wrow + i), x, cols, i * 8, acc);
#pragma unroll
  for (int r = 0; r < NR; ++r) {
    const float s = warp_sum(acc[r]);
    if (lane == 0) {
      float* out = y + static_cast<int64_t>(r) * rows + o;
      *out = accumulate ? *out + s : s;
    }
  }
}

template <typename T>
cudaError_t launch_typed(const void* w, int rows, int cols, const float* x, int n, float* y, bool accumulate,
                         cudaStream_t stream) {
  const T* wt = static_cast<const T*>(w);
  const unsigned grid = static_cast<unsigned>((rows + kWarps - 1) / kWarps);
  constexpr int kBlock = kWarps * 32;
  switch (n) {
    case 1: gemv_kernel<T, 1><<<grid, kBlock, 0, stream>>>(wt, rows, cols, x, y, accumulate); break;
    case 2: gemv_kernel<T, 2><<<grid, kBlock, 0, stream>>>(wt, rows, cols, x, y, accumulate); break;
    case 3: gemv_kernel<T, 3><<<grid, kBlock, 0, stream>>>(wt, rows, cols, x, y, accumulate); break;
    case 4: gemv_kernel<T, 4><<<grid, kBlock, 0, stream>>>(wt, rows, cols, x, y, accumulate); break;
    case 5: gemv_kernel<T, 5><<<grid, kBlock, 0, stream>>>(wt, rows, cols, x, y, accumulate); break;
    case 6: gemv_kernel<T, 6><<<grid, kBlock, 0, stream>>>(wt, rows, cols, x, y, accumulate); break;
    case 7: gemv_kernel<T, 7><<<grid, kBlock, 0, stream>>>(wt, rows, cols, x, y, accumulate); break;
    case 8: gemv_kernel<T, 8><<<grid, kBlock, 0, stream>>>(wt, rows, cols, x, y, accumulate); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace

bool gemv_supported(ElemType wtype, int n, int cols, const void* w, const float* x) {
  if (wtype != ElemType::kF16 && wtype != ElemType::kBF16) return false;
  if (n < 1 || n > kGemvMaxRows || cols <= 0 || cols % 8 != 0) return false;
  return reinterpret_cast<uintptr_t>(w) % 16 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0;
}

cudaError_t launch_gemv(const void* w, ElemType wtype, int rows, int cols, const float* x, int n, float* y,
                        bool accumulate, cudaStream_t stream) {
  if (rows <= 0 || w == nullptr || x == nullptr || y == nullptr || !gemv_supported(wtype, n, cols, w, x)) {
    return cudaErrorInvalidValue;
  }
  if (wtype == ElemType::kF16) return launch_typed<__half>(w, rows, cols, x, n, y, accumulate, stream);
  return launch_typed<__nv_bfloat16>(w, rows, cols, x, n, y, accumulate, stream);
}

}  // namespace rwkv::kernels
