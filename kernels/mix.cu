// Token-shift mixes. RWKV-7 needs six (r, w, k, v, a, g) from the same xx and
// d; one launch reads xx and d once and writes all six, instead of six
// launches each re-reading them. The pointer lists travel by value in the
// kernel parameters, so nothing is copied to the device per call.
#include "kernels/mix.h"

#include <cstdint>

#include "kernels/kernel_util.cuh"

namespace rwkv::kernels {
namespace {

struct MixArgs {
  const float* mixes[kMaxMixes];  // (C) each
  float* outs[kMaxMixes];         // (n, C) each
};

template <int kCount>
__global__ void mix_kernel(const float* __restrict__ xx,  // (n, C)
                           const float* __restrict__ d,   // (n, C)
                           int64_t total, int C, MixArgs args) {
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int c = static_cast<int>(e % C);
    const float x = xx[e], dx = d[e];
#pragma unroll
    for (int j = 0; j < kCount; ++j) args.outs[j][e] = x + dx * args.mixes[j][c];
  }
}

}  // namespace

cudaError_t launch_mix(const float* xx, const float* d, int n, int C, const float* const* mixes,
                       float* const* outs, int count, cudaStream_t stream) {
  if (n < 0 || C <= 0 || count < 1 || count > kMaxMixes || mixes == nullptr || outs == nullptr) {
    return cudaErrorInvalidValue;
  }
  if (n == 0) return cudaSuccess;
  if (xx == nullptr || d == nullptr) return cudaErrorInvalidValue;
  MixArgs args{};
  for (int j = 0; j < count; ++j) {
    if (mixes[j] == nullptr || outs[j] == nullptr) return cudaErrorInvalidValue;
    args.mixes[j] = mixes[j];
    args.outs[j] = outs[j];
  }
  const int64_t total = static_cast<int64_t>(n) * C;
  const unsigned grid = grid_for(total, 256);
  switch (count) {
    case 1: mix_kernel<1><<<grid, 256, 0, stream>>>(xx, d, total, C, args); break;
    case 2: mix_kernel<2><<<grid, 256, 0, stream>>>(xx, d, total, C, args); break;
    case 3: mix_kernel<3><<<grid, 256, 0, stream>>>(xx, d, total, C, args); break;
    case 4: mix_kernel<4><<<grid, 256, 0, stream>>>(xx, d, total, C, args); break;
    case 5: mix_kernel<5><<<grid, 256, 0, stream>>>(xx, d, total, C, args); break;
    default: mix_kernel<6><<<grid, 256, 0, stream>>>(xx, d, total, C, args); break;
  }
  return cudaGetLastError();
}

}  // namespace rwkv::kernels
