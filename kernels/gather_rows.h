// Launcher for the row gather (the rows whose logits are wanted).
#ifndef RWKV_KERNELS_GATHER_ROWS_H_
#define RWKV_KERNELS_GATHER_ROWS_H_

#include <cuda_runtime_api.h>

#include <cstdint>

namespace rwkv::kernels {

// out[i] = x[rows[i]] for i < n; `out` must not overlap `x`.
cudaError_t launch_gather_rows(const float* x,        // (any, C)
                               const int32_t* rows,   // (n) device
                               int n, int C,
                               float* out,            // (n, C)
                               cudaStream_t stream);

}  // namespace rwkv::kernels

#endif  // RWKV_KERNELS_GATHER_ROWS_H_
