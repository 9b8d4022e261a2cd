// Elementwise ops as grid-stride loops. One functor per op feeds a single
// kernel template, so the six ops share one launch path and one set of input
// checks. Accurate expf/tanhf (not the __expf intrinsics): these outputs feed
// the WKV recurrence, where small errors compound over tokens; the cost is
// invisible next to the matrix products.
#include "kernels/elementwise.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

#include "kernels/kernel_util.cuh"
#include "kernels/weights.cuh"

namespace rwkv::kernels {
namespace {

struct SigmoidOp {
  __device__ float operator()(float x, int64_t) const { return sigmoid_f(x); }
};
struct TanhOp {
  __device__ float operator()(float x, int64_t) const { return tanhf(x); }
};
struct ReluSquareOp {
  __device__ float operator()(float x, int64_t) const {
    const float v = x > 0.0f ? x : 0.0f;
    return v * v;
  }
};
struct MulOp {
  const float* a;  // (n)
  __device__ float operator()(float x, int64_t e) const { return x * a[e]; }
};
struct MulAddOp {
  const float* a;  // (n)
  const float* b;  // (n)
  __device__ float operator()(float x, int64_t e) const { return x + a[e] * b[e]; }
};
struct SigmoidBiasOp {
  const float* bias;  // (C)
  int C;
  __device__ float operator()(float x, int64_t e) const { return sigmoid_f(x + bias[e % C]); }
};

template <typename Op>
__global__ void elementwise_kernel(float* x,  // (n)
                                   int64_t n, Op op) {
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < n;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    x[e] = op(x[e], e);
  }
}

template <typename Op>
cudaError_t launch(float* x, int64_t n, Op op, cudaStream_t stream) {
  if (n < 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  if (x == nullptr) return cudaErrorInvalidValue;
  elementwise_kernel<<<grid_for(n, 256), 256, 0, stream>>>(x, n, op);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_sigmoid(float* x, int64_t n, cudaStream_t stream) { return launch(x, n, SigmoidOp{}, stream); }

cudaError_t launch_tanh(float* x, int64_t n, cudaStream_t stream) { return launch(x, n, TanhOp{}, stream); }

cudaError_t launch_relu_square(float* x, int64_t n, cudaStream_t stream) {
  return launch(x, n, ReluSquareOp{}, stream);
}

namespace {

template <typename T>
__device__ __forceinline__ T relu_square_16(T v) {
  const float x = fmaxf(to_f32(v), 0.0f);
  return from_f32(x * x, T());
}

// Eight elements (16 bytes) per thread per iteration; the tail (n % 8) by
// the first threads.
template <typename T>
__global__ void relu_square_16_kernel(T* __restrict__ x, int64_t n) {
  const int64_t first = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t n8 = n / 8;
  for (int64_t e = first; e < n8; e += stride) {
    uint4 u = reinterpret_cast<const uint4*>(x)[e];
    T* h = reinterpret_cast<T*>(&u);
#pragma unroll
    for (int i = 0; i < 8; ++i) h[i] = relu_square_16(h[i]);
    reinterpret_cast<uint4*>(x)[e] = u;
  }
  for (int64_t e = 8 * n8 + first; e < n; e += stride) x[e] = relu_square_16(x[e]);
}

}  // namespace

cudaError_t launch_relu_square_16(void* x, int64_t n, ElemType t, cudaStream_t stream) {
  if (n < 0 || (t != ElemType::kF16 && t != ElemType::kBF16)) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  if (x == nullptr || (reinterpret_cast<uintptr_t>(x) & 15u) != 0) return cudaErrorInvalidValue;
  const unsigned grid = grid_for((n + 7) / 8, 256);
  if (t == ElemType::kF16) {
    relu_square_16_kernel<__half><<<grid, 256, 0, stream>>>(static_cast<__half*>(x), n);
  } else {
    relu_square_16_kernel<__nv_bfloat16><<<grid, 256, 0, stream>>>(static_cast<__nv_bfloat16*>(x), n);
  }
  return cudaGetLastError();
}

cudaError_t launch_mul(float* x, const float* a, int64_t n, cudaStream_t stream) {
  if (n > 0 && a == nullptr) return cudaErrorInvalidValue;
  return launch(x, n, MulOp{a}, stream);
}

cudaError_t launch_muladd(float* x, const float* a, const float* b, int64_t n, cudaStream_t stream) {
  if (n > 0 && (a == nullptr || b == nullptr)) return cudaErrorInvalidValue;
  return launch(x, n, MulAddOp{a, b}, stream);
}

namespace {

// Four elements (one float4 of each input) per thread per iteration where
// every buffer is 16-byte aligned, else one; the tail (n % 4) by the first
// threads. Programmatic launch (kernel_util.cuh).
template <typename Out>
__global__ void sigmoid_gate_kernel(const float* __restrict__ r, const float* y, int64_t n, void* out, bool vec) {
  pdl_wait();
  const int64_t first = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t n4 = vec ? n / 4 : 0;
  const ElemType t = std::is_same_v<Out, float> ? ElemType::kF32
                     : std::is_same_v<Out, __half> ? ElemType::kF16 : ElemType::kBF16;
  for (int64_t e = first; e < n4; e += stride) {
    const float4 a = reinterpret_cast<const float4*>(r)[e], b = reinterpret_cast<const float4*>(y)[e];
    const float g[4] = {b.x * sigmoid_f(a.x), b.y * sigmoid_f(a.y), b.z * sigmoid_f(a.z), b.w * sigmoid_f(a.w)};
    store_vec<4>(out, t, 4 * e, g);
  }
  for (int64_t e = 4 * n4 + first; e < n; e += stride) store_elem(out, t, e, y[e] * sigmoid_f(r[e]));
}

__global__ void sigmoid_muladd_kernel(float* __restrict__ x, const float* __restrict__ r,
                                      const float* __restrict__ t, int64_t n, bool vec) {
  pdl_wait();
  const int64_t first = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t n4 = vec ? n / 4 : 0;
  for (int64_t e = first; e < n4; e += stride) {
    const float4 a = reinterpret_cast<const float4*>(r)[e], b = reinterpret_cast<const float4*>(t)[e];
    float4 v = reinterpret_cast<const float4*>(x)[e];
    v.x = v.x + sigmoid_f(a.x) * b.x;
    v.y = v.y + sigmoid_f(a.y) * b.y;
    v.z = v.z + sigmoid_f(a.z) * b.z;
    v.w = v.w + sigmoid_f(a.w) * b.w;
    reinterpret_cast<float4*>(x)[e] = v;
  }
  for (int64_t e = 4 * n4 + first; e < n; e += stride) x[e] = x[e] + sigmoid_f(r[e]) * t[e];
}

}  // namespace

cudaError_t launch_sigmoid_gate(const float* r, const float* y, int64_t n, void* out, ElemType out_type,
                                cudaStream_t stream) {
  if (n < 0 || (out_type != ElemType::kF32 && out_type != ElemType::kF16 && out_type != ElemType::kBF16)) {
    return cudaErrorInvalidValue;
  }
  if (n == 0) return cudaSuccess;
  if (r == nullptr || y == nullptr || out == nullptr) return cudaErrorInvalidValue;
  // fp32: out is y or a buffer of its own; 16-bit: a buffer of its own.
  if (out == static_cast<const void*>(r) || (out_type != ElemType::kF32 && out == static_cast<const void*>(y))) {
    return cudaErrorInvalidValue;
  }
  // 16-byte loads of r and y; 16 bytes (fp32) or 8 (16-bit) stores.
  const bool vec = Aligned16(r) && Aligned16(y) &&
                   (reinterpret_cast<uintptr_t>(out) % (out_type == ElemType::kF32 ? 16u : 8u)) == 0;
  const unsigned grid = grid_for(vec ? (n + 3) / 4 : n, 256);
  switch (out_type) {
    case ElemType::kF16: launch(sigmoid_gate_kernel<__half>, grid, 256, 0, stream, r, y, n, out, vec); break;
    case ElemType::kBF16: launch(sigmoid_gate_kernel<__nv_bfloat16>, grid, 256, 0, stream, r, y, n, out, vec); break;
    default: launch(sigmoid_gate_kernel<float>, grid, 256, 0, stream, r, y, n, out, vec); break;
  }
  return cudaGetLastError();
}

cudaError_t launch_sigmoid_muladd(float* x, const float* r, const float* t, int64_t n, cudaStream_t stream) {
  if (n < 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  if (x == nullptr || r == nullptr || t == nullptr) return cudaErrorInvalidValue;
  const bool vec = Aligned16(x) && Aligned16(r) && Aligned16(t);
  launch(sigmoid_muladd_kernel, grid_for(vec ? (n + 3) / 4 : n, 256), 256, 0, stream, x, r, t, n, vec);
  return cudaGetLastError();
}

cudaError_t launch_sigmoid_bias(float* x, const float* bias, int n, int C, cudaStream_t stream) {
  if (C <= 0 || n < 0 || (n > 0 && bias == nullptr)) return cudaErrorInvalidValue;
  return launch(x, static_cast<int64_t>(n) * C, SigmoidBiasOp{bias, C}, stream);
}

}  // namespace rwkv::kernels
