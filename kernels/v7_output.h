// Launcher for the RWKV-7 time-mix output: GroupNorm, bonus and gate.
#ifndef RWKV_KERNELS_V7_OUTPUT_H_
#define RWKV_KERNELS_V7_OUTPUT_H_

#include <cuda_runtime_api.h>

#include "kernels/types.h"

namespace rwkv::kernels {

// Per row and head h (N values):
//   out = (GroupNorm(y) * lnw + lnb + sum_head(r * k * r_k) * v) * g, eps 64e-5.
// out_type kF32: out may be y (in place); kF16 / kBF16: out holds n x C
// elements of that type (rounded to nearest even), for a product's input,
// and must not overlap y.
cudaError_t launch_v7_output(const float* y,     // (n, C) the WKV output
                             const float* r,     // (n, C)
                             const float* k,     // (n, C) gated key
                             const float* v,     // (n, C)
                             const float* g,     // (n, C)
                             const float* r_k,   // (H, N) = (C)
                             const float* lnw,   // (C) ln_x weight
                             const float* lnb,   // (C) ln_x bias
                             int n, int C, int N,
                             float* out,         // (n, C) of out_type
                             ElemType out_type, cudaStream_t stream);

}  // namespace rwkv::kernels

#endif  // RWKV_KERNELS_V7_OUTPUT_H_
