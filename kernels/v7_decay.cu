// RWKV-7 decay w = exp(-e^-0.5 * sigmoid(w0 + lora)), in (0.545, 1). Written
// exactly as the CPU reference (accurate expf, the constant e^-0.5 rounded to
// float once): the decay is raised to the power of the token count inside
// the state, so its error is the one that compounds most.
#include "kernels/v7_decay.h"

#include <cstdint>

#include "kernels/kernel_util.cuh"

namespace rwkv::kernels {
namespace {

__global__ void v7_decay_kernel(float* __restrict__ w,         // (n, C)
                                const float* __restrict__ w0,  // (C)
                                int64_t total, int C, float scale) {
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    w[e] = expf(-scale * sigmoid_f(w0[e % C] + w[e]));
  }
}

}  // namespace

cudaError_t launch_v7_decay(float* w, const float* w0, int n, int C, cudaStream_t stream) {
  if (n < 0 || C <= 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  if (w == nullptr || w0 == nullptr) return cudaErrorInvalidValue;
  const int64_t total = static_cast<int64_t>(n) * C;
  const float scale = 0.60653065971263342f;  // expf(-0.5f), as the CPU computes it
  v7_decay_kernel<<<grid_for(total, 256), 256, 0, stream>>>(w, w0, total, C, scale);
  return cudaGetLastError();
}

}  // namespace rwkv::kernels
