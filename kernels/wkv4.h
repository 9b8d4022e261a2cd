// Launcher for the RWKV-4 WKV recurrence (running-max form) over segments.
#ifndef RWKV_KERNELS_WKV4_H_
#define RWKV_KERNELS_WKV4_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "kernels/types.h"

namespace rwkv::kernels {

// Per segment and channel, for each of the segment's rows in order (u =
// time_first, w = time_decay = -exp(raw)):
//   ww = u + k; q = max(pp, ww); y = (e^(pp-q) aa + e^(ww-q) v) / (e^(pp-q) bb + e^(ww-q))
//   ww = pp + w; q = max(ww, k); aa = e^(ww-q) aa + e^(k-q) v; bb = e^(ww-q) bb + e^(k-q); pp = q
// aa, bb, pp of slot s: aa + s * slot_stride + {0, C, 2C}. Slots of different
// segments must differ.
// With the segments in host memory (host_segs, may be null) and a scratch of
// at least wkv4_scratch_floats floats, a pass whose longest segment has 128
// rows or more runs its long segments (wkv7_long_segments's list) as a
// chunked scan (wkv4.cu); the launches depend only on that list and the
// longest segment rounded to a power of two, as a CUDA graph of the pass does.
cudaError_t launch_wkv4(const SegmentDesc* segs,       // (nseg) device
                        const SegmentDesc* host_segs,  // (nseg) host, or null: the sequential kernel only
                        int nseg, int C,
                        float* aa,                // (slots, slot_stride); (3, C) at offset 0
                        int64_t slot_stride,
                        const float* time_first,  // (C)
                        const float* time_decay,  // (C)
                        const float* k,           // (n, C)
                        const float* v,           // (n, C)
                        float* y,                 // (n, C)
                        float* scratch,           // device, scratch_floats floats (may be null)
                        size_t scratch_floats,
                        cudaStream_t stream);

// The scratch the chunked scan of these segments takes (0: none, the
// sequential kernel runs them all).
size_t wkv4_scratch_floats(const SegmentDesc* host_segs, int nseg, int C);

}  // namespace rwkv::kernels

#endif  // RWKV_KERNELS_WKV4_H_
