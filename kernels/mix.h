// Launcher for the token-shift mixes: up to six outputs in one launch.
#ifndef RWKV_KERNELS_MIX_H_
#define RWKV_KERNELS_MIX_H_

#include <cuda_runtime_api.h>

namespace rwkv::kernels {

inline constexpr int kMaxMixes = 6;

// outs[j] = xx + d * mixes[j] (mixes broadcast over rows), j < count <= 6.
// `mixes` and `outs` are host arrays of device pointers.
cudaError_t launch_mix(const float* xx,             // (n, C)
                       const float* d,              // (n, C)
                       int n, int C,
                       const float* const* mixes,   // count x (C)
                       float* const* outs,          // count x (n, C)
                       int count, cudaStream_t stream);

}  // namespace rwkv::kernels

#endif  // RWKV_KERNELS_MIX_H_
