// Launcher for the token shift over segments, with the x_prev state in slots.
#ifndef RWKV_KERNELS_TOKEN_SHIFT_H_
#define RWKV_KERNELS_TOKEN_SHIFT_H_

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/types.h"

namespace rwkv::kernels {

// d[r] = prev(r) - xx[r]: prev is the previous row of the same segment, or for
// a segment's first row the slot's x_prev; then the slot's x_prev becomes the
// segment's last xx row. max_rows: the largest segs[s].rows (host value).
cudaError_t launch_token_shift(const float* xx,          // (n, C)
                               const SegmentDesc* segs,  // (nseg) device
                               int nseg, int max_rows, int C,
                               float* x_prev,            // slot s at x_prev + s * slot_stride, (C) each
                               int64_t slot_stride,
                               float* d,                 // (n, C)
                               cudaStream_t stream);

}  // namespace rwkv::kernels

#endif  // RWKV_KERNELS_TOKEN_SHIFT_H_
