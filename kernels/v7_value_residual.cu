// RWKV-7 value residual: every layer after the first pulls its value toward
// layer 0's, by a learned per-token gate. One pass, elementwise.
#include "kernels/v7_value_residual.h"

#include <cstdint>

#include "kernels/kernel_util.cuh"

namespace rwkv::kernels {
namespace {

__global__ void v7_value_residual_kernel(float* __restrict__ v,              // (n, C)
                                         const float* __restrict__ v_first,  // (n, C)
                                         const float* __restrict__ gate,     // (n, C)
                                         const float* __restrict__ v0,       // (C)
                                         int64_t total, int C) {
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float g = sigmoid_f(v0[e % C] + gate[e]);
    v[e] += (v_first[e] - v[e]) * g;
  }
}

}  // namespace

cudaError_t launch_v7_value_residual(float* v, const float* v_first, const float* gate, const float* v0, int n,
                                     int C, cudaStream_t stream) {
  if (n < 0 || C <= 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  if (v == nullptr || v_first == nullptr || gate == nullptr || v0 == nullptr) return cudaErrorInvalidValue;
  const int64_t total = static_cast<int64_t>(n) * C;
  v7_value_residual_kernel<<<grid_for(total, 256), 256, 0, stream>>>(v, v_first, gate, v0, total, C);
  return cudaGetLastError();
}

}  // namespace rwkv::kernels
