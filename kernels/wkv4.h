// Launcher for the RWKV-4 WKV recurrence (running-max form) over segments.
#ifndef RWKV_KERNELS_WKV4_H_
#define RWKV_KERNELS_WKV4_H_

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/types.h"

namespace rwkv::kernels {

// Per segment and channel, for each of the segment's rows in order (u =
// time_first, w = time_decay = -exp(raw)):
//   ww = u + k; q = max(pp, ww); y = (e^(pp-q) aa + e^(ww-q) v) / (e^(pp-q) bb + e^(ww-q))
//   ww = pp + w; q = max(ww, k); aa = e^(ww-q) aa + e^(k-q) v; bb = e^(ww-q) bb + e^(k-q); pp = q
// aa, bb, pp of slot s: aa + s * slot_stride + {0, C, 2C}. Slots of different
// segments must differ.
cudaError_t launch_wkv4(const SegmentDesc* segs,  // (nseg) device
                        int nseg, int C,
                        float* aa,                // (slots, slot_stride); (3, C) at offset 0
                        int64_t slot_stride,
                        const float* time_first,  // (C)
                        const float* time_decay,  // (C)
                        const float* k,           // (n, C)
                        const float* v,           // (n, C)
                        float* y,                 // (n, C)
                        cudaStream_t stream);

}  // namespace rwkv::kernels

#endif  // RWKV_KERNELS_WKV4_H_
