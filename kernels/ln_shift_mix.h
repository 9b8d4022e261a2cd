// Launcher for LayerNorm + token shift + mixes in one kernel (the start of
// each RWKV sub-block): with xx = LayerNorm(x) and d = prev(xx) - xx (prev:
// the previous row of the same segment, or the slot's x_prev for a segment's
// first row), outs[j] = xx + d * mixes[j]; each segment's last xx row becomes
// its slot's x_prev. Neither xx nor d is written to memory.
//
// Why: unfused, this is three launches and four [n, C] round trips through
// memory per sub-block; at decode sizes each launch costs more than its work.
#ifndef RWKV_KERNELS_LN_SHIFT_MIX_H_
#define RWKV_KERNELS_LN_SHIFT_MIX_H_

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/mix.h"
#include "kernels/types.h"

namespace rwkv::kernels {

cudaError_t launch_ln_shift_mix(const float* x,                // (n, C)
                                int n, int C,
                                const float* ln_w,             // (C)
                                const float* ln_b,             // (C)
                                const SegmentDesc* segs,       // (nseg), device memory, covering rows [0, n)
                                int nseg,
                                float* x_prev,                 // (slots, slot_stride): the layer's x_prev in slot 0
                                int64_t slot_stride,
                                const float* const* mixes,     // host array of count (C) vectors
                                float* const* outs,            // host array of count (n, C) outputs
                                int count, cudaStream_t stream,
                                // the outputs' element type: fp32, or fp16/bf16 rounded to nearest
                                // even (inputs for 16-bit matrix products, no conversion pass)
                                ElemType out_type = ElemType::kF32);

}  // namespace rwkv::kernels

#endif  // RWKV_KERNELS_LN_SHIFT_MIX_H_
