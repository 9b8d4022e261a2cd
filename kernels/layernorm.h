// Launcher for LayerNorm over rows (fp32, two-pass statistics, eps 1e-5).
#ifndef RWKV_KERNELS_LAYERNORM_H_
#define RWKV_KERNELS_LAYERNORM_H_

#include <cuda_runtime_api.h>

namespace rwkv::kernels {

// y[i] = (x[i] - mean_i) / sqrt(var_i + 1e-5) * w + b for i < n. y may equal x.
cudaError_t launch_layernorm(const float* x,  // (n, C)
                             int n, int C,
                             const float* w,  // (C)
                             const float* b,  // (C)
                             float* y,        // (n, C)
                             cudaStream_t stream);

}  // namespace rwkv::kernels

#endif  // RWKV_KERNELS_LAYERNORM_H_
