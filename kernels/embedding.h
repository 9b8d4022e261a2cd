// Launcher for the embedding gather: fp16/bf16/fp32 table rows -> fp32 rows.
#ifndef RWKV_KERNELS_EMBEDDING_H_
#define RWKV_KERNELS_EMBEDDING_H_

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/types.h"

namespace rwkv::kernels {

// x[i, :] = float(table[tokens[i], :]) for i < n. Token ids must already be
// validated against the vocabulary (the model does this on the host).
cudaError_t launch_embedding(const void* table,     // (vocab, C) of `type`
                             ElemType type,
                             const int32_t* tokens,  // (n) device
                             int n, int C,
                             float* x,               // (n, C)
                             cudaStream_t stream);

}  // namespace rwkv::kernels

#endif  // RWKV_KERNELS_EMBEDDING_H_
