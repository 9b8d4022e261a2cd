// Launch groups of a pass's segments, for the kernels that take a list of
// (long) segments by value: the WKV-7 long and chunked kernels and the WKV-4
// chunked scan.
//
// Why: a kernel argument has a fixed size, so a pass with more such segments
// than one list holds runs as several launches of the same kernels; the
// grouping and the power-of-two rounding of a CUDA graph key are written once.
#ifndef RWKV_KERNELS_SEGMENT_GROUPS_H_
#define RWKV_KERNELS_SEGMENT_GROUPS_H_

#include <cuda_runtime_api.h>

#include <cstdint>

namespace rwkv::kernels {

// Up to kMax segments, by index into the pass's segment list.
template <int kMax>
struct SegmentGroup {
  int32_t count;
  int32_t index[kMax];
};

// Calls launch_group(group) for index[0, count) in groups of at most kMax, in
// order; stops at the first error and returns it.
template <int kMax, typename F>
cudaError_t for_each_segment_group(const int32_t* index, int count, F&& launch_group) {
  SegmentGroup<kMax> group;
  group.count = 0;
  for (int j = 0; j < count; ++j) {
    group.index[group.count++] = index[j];
    if (group.count == kMax || j + 1 == count) {
      if (cudaError_t e = launch_group(group); e != cudaSuccess) return e;
      group.count = 0;
    }
  }
  return cudaSuccess;
}

// The least power of two >= n (1 for n <= 1).
inline int CeilPow2(int n) {
  int p = 1;
  while (p < n) p *= 2;
  return p;
}

}  // namespace rwkv::kernels

#endif  // RWKV_KERNELS_SEGMENT_GROUPS_H_
