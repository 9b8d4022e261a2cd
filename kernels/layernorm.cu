// LayerNorm: one block per row. Two passes over the row (mean, then the sum
// of squared deviations) rather than E[x^2] - E[x]^2, because the residual
// stream of a deep model has a large mean relative to its spread and the
// one-pass form loses digits there; the CPU reference is two-pass too. The
// row is re-read from global memory (it is in L1/L2 after the first pass).
// In-place use (y == x) is safe: each thread writes only the elements it
// reads in the last pass, after both reductions' barriers.
#include "kernels/layernorm.h"

#include "kernels/kernel_util.cuh"

namespace rwkv::kernels {
namespace {

__global__ void layernorm_kernel(const float* x,  // (n, C)
                                 int C,
                                 const float* __restrict__ w,  // (C)
                                 const float* __restrict__ b,  // (C)
                                 float* y) {
  pdl_wait();  // programmatic launch: the previous kernel's writes first (kernel_util.cuh)                   // (n, C)
  __shared__ float scratch[32];
  const float* xi = x + static_cast<int64_t>(blockIdx.x) * C;
  float* yi = y + static_cast<int64_t>(blockIdx.x) * C;
  float s = 0.0f;
  for (int c = threadIdx.x; c < C; c += blockDim.x) s += xi[c];
  const float mean = block_sum(s, scratch) / C;
  float q = 0.0f;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    const float d = xi[c] - mean;
    q += d * d;
  }
  const float var = block_sum(q, scratch) / C;
  const float inv = 1.0f / sqrtf(var + 1e-5f);
  for (int c = threadIdx.x; c < C; c += blockDim.x) yi[c] = (xi[c] - mean) * inv * w[c] + b[c];
}

}  // namespace

cudaError_t launch_layernorm(const float* x, int n, int C, const float* w, const float* b, float* y,
                             cudaStream_t stream) {
  if (n < 0 || C <= 0 || (n > 0 && (x == nullptr || w == nullptr || b == nullptr || y == nullptr))) {
    return cudaErrorInvalidValue;
  }
  if (n == 0) return cudaSuccess;
  const int block = C >= 1024 ? 512 : (C >= 256 ? 256 : 128);
  launch(layernorm_kernel, n, block, 0, stream, x, C, w, b, y);
  return cudaGetLastError();
}

}  // namespace rwkv::kernels
