// Launcher for the RWKV-7 key preparation (per-head L2 norm and key gate).
#ifndef RWKV_KERNELS_V7_KEY_PREP_H_
#define RWKV_KERNELS_V7_KEY_PREP_H_

#include <cuda_runtime_api.h>

namespace rwkv::kernels {

// kk = (k * k_k) / max(||k * k_k||_2 over each head's N values, 1e-12);
// then k = k * (1 + (a - 1) * k_a). C must be a multiple of N.
cudaError_t launch_v7_key_prep(float* k,          // (n, C) in/out
                               float* kk,         // (n, C) out
                               const float* a,    // (n, C)
                               const float* k_k,  // (C)
                               const float* k_a,  // (C)
                               int n, int C, int N, cudaStream_t stream);

}  // namespace rwkv::kernels

#endif  // RWKV_KERNELS_V7_KEY_PREP_H_
