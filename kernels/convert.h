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
  kTanh,        // tanhf, as kernels/elementwise.cu's launch_tanh computes it
  kSigmoid,     // 1 / (1 + expf(-v)), as launch_sigmoid computes it
};

// dst[i] = round_to_nearest_even(op(src[i])) in type `to` (kF16 or kBF16;
// kF32 copies). fp16 overflow gives +-inf, as a plain cast would.
cudaError_t launch_convert_from_f32(const float* src,  // (n)
                                    ElemType to,
                                    void* dst,         // (n) of `to`
                                    int64_t n, cudaStream_t stream, ConvertOp op = ConvertOp::kNone);

// Several conversions in one launch: the inputs of a group of matrix products
// (one launch where there were one per product, plus one per activation).
constexpr int kConvertMaxBuffers = 8;
// Device pointers the launch also stores (see launch_convert_multi_from_f32).
constexpr int kConvertMaxPointers = 3 * kConvertMaxBuffers;

struct ConvertBuffer {
  const float* src = nullptr;  // (n)
  void* dst = nullptr;         // (n) of the launch's type
  int64_t n = 0;
  ConvertOp op = ConvertOp::kNone;
};

// dst = round(op(src)) for each of `count` (<= kConvertMaxBuffers) buffers,
// elementwise exactly as launch_convert_from_f32 computes it. The buffers
// must not overlap. The same launch also stores pointers[0..npointers) into
// pointer_dst (npointers <= kConvertMaxPointers; pointer_dst may be null when
// npointers is 0): the pointer arrays of the batched products that read these
// buffers, written on the device by the launch those products follow anyway,
// so that a captured graph rewrites them on every replay and no host array is
// involved.
cudaError_t launch_convert_multi_from_f32(ElemType to, const ConvertBuffer* buffers, int count,
                                          const void* const* pointers, int npointers, void** pointer_dst,
                                          cudaStream_t stream);

}  // namespace rwkv::kernels

#endif  // RWKV_KERNELS_CONVERT_H_
