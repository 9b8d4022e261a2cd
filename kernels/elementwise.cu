// Elementwise ops as grid-stride loops. One functor per op feeds a single
// kernel template, so the six ops share one launch path and one set of input
// checks. Accurate expf/tanhf (not the __expf intrinsics): these outputs feed
// the WKV recurrence, where small errors compound over tokens; the cost is
// invisible next to the matrix products.
#include "kernels/elementwise.h"

#include "kernels/kernel_util.cuh"

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
