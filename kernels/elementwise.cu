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

cudaError_t launch_sigmoid_bias(float* x, const float* bias, int n, int C, cudaStream_t stream) {
  if (C <= 0 || n < 0 || (n > 0 && bias == nullptr)) return cudaErrorInvalidValue;
  return launch(x, static_cast<int64_t>(n) * C, SigmoidBiasOp{bias, C}, stream);
}

}  // namespace rwkv::kernels
