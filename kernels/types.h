// Plain types shared by the kernel launchers and the CUDA backend.
//
// Why: the kernels know nothing of the engine (no absl, no sessions), yet
// they read the engine's segment list and weight dtypes. These mirrors have
// the same layout and values as rwkv::Segment and rwkv::DType; the backend
// static_asserts that, so the host arrays can be copied to the device as is.
// Plain C++: includable from code compiled without nvcc.
#ifndef RWKV_KERNELS_TYPES_H_
#define RWKV_KERNELS_TYPES_H_

#include <cstdint>

namespace rwkv::kernels {

// One session's rows in a batch (mirrors rwkv::Segment).
struct SegmentDesc {
  int32_t slot;       // state slot of the session; -1: padding (no state; kernels skip it)
  int32_t row_begin;  // first row of the segment in the batch
  int32_t rows;       // rows of this session (>= 1; >= 0 for padding)
};

// Element type of a weight table (mirrors rwkv::DType values).
enum class ElemType : uint8_t { kF32 = 0, kF16 = 1, kBF16 = 2 };

}  // namespace rwkv::kernels

#endif  // RWKV_KERNELS_TYPES_H_
