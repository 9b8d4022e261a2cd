// Launcher for the RWKV-7 decay.
#ifndef RWKV_KERNELS_V7_DECAY_H_
#define RWKV_KERNELS_V7_DECAY_H_

#include <cuda_runtime_api.h>

namespace rwkv::kernels {

// w = exp(-exp(-0.5) * sigmoid(w0[col] + w)) in place.
cudaError_t launch_v7_decay(float* w,         // (n, C)
                            const float* w0,  // (C)
                            int n, int C, cudaStream_t stream);

}  // namespace rwkv::kernels

#endif  // RWKV_KERNELS_V7_DECAY_H_
