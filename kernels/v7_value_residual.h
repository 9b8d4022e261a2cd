// Launcher for the RWKV-7 value residual (layers > 0).
#ifndef RWKV_KERNELS_V7_VALUE_RESIDUAL_H_
#define RWKV_KERNELS_V7_VALUE_RESIDUAL_H_

#include <cuda_runtime_api.h>

namespace rwkv::kernels {

// v += (v_first - v) * sigmoid(v0[col] + gate).
cudaError_t launch_v7_value_residual(float* v,              // (n, C) in/out
                                     const float* v_first,  // (n, C) layer 0's v
                                     const float* gate,     // (n, C) (xv @ v1) @ v2
                                     const float* v0,       // (C)
                                     int n, int C, cudaStream_t stream);

}  // namespace rwkv::kernels

#endif  // RWKV_KERNELS_V7_VALUE_RESIDUAL_H_
