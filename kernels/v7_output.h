// Launcher for the RWKV-7 time-mix output: GroupNorm, bonus and gate.
#ifndef RWKV_KERNELS_V7_OUTPUT_H_
#define RWKV_KERNELS_V7_OUTPUT_H_

#include <cuda_runtime_api.h>

namespace rwkv::kernels {

// Per row and head h (N values):
//   y = (GroupNorm(y) * lnw + lnb + sum_head(r * k * r_k) * v) * g, eps 64e-5.
cudaError_t launch_v7_output(float* y,           // (n, C) in/out: the WKV output
                             const float* r,     // (n, C)
                             const float* k,     // (n, C) gated key
                             const float* v,     // (n, C)
                             const float* g,     // (n, C)
                             const float* r_k,   // (H, N) = (C)
                             const float* lnw,   // (C) ln_x weight
                             const float* lnb,   // (C) ln_x bias
                             int n, int C, int N, cudaStream_t stream);

}  // namespace rwkv::kernels

#endif  // RWKV_KERNELS_V7_OUTPUT_H_
