// Launcher for fp32 -> fp16/bf16 conversion (weights at upload, and matrix
// product inputs for 16-bit weights).
#ifndef RWKV_KERNELS_CONVERT_H_
#define RWKV_KERNELS_CONVERT_H_

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/types.h"

namespace rwkv::kernels {

// What is applied to each value before rounding.
enum class ConvertOp {
  kNone,
  kReluSquare,  // max(v, 0)^2: the FFN's activation fused into its down-projection's input
};

// dst[i] = round_to_nearest_even(op(src[i])) in type `to` (kF16 or kBF16;
// kF32 copies). fp16 overflow gives +-inf, as a plain cast would.
cudaError_t launch_convert_from_f32(const float* src,  // (n)
                                    ElemType to,
                                    void* dst,         // (n) of `to`
                                    int64_t n, cudaStream_t stream, ConvertOp op = ConvertOp::kNone);

}  // namespace rwkv::kernels

#endif  // RWKV_KERNELS_CONVERT_H_
