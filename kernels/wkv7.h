// Launcher for the RWKV-7 WKV recurrence over a batch of segments, reading
// and writing each session's state in place in its slot.
#ifndef RWKV_KERNELS_WKV7_H_
#define RWKV_KERNELS_WKV7_H_

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/types.h"

namespace rwkv::kernels {

// Per segment, per head h, for each of the segment's rows in order:
//   S = S diag(w) - (S kk)(kk a)^T + v k^T;  y = S r
// with S the head's (N value, N key) block of the segment's slot: elements
// of `state_type` (kF32, or kF16: fp32 arithmetic, the new S rounded to fp16
// after every token as engine/model/fp16_state_rounding.h says) starting at
// h * N * N elements past state + slot * slot_stride. All vectors are (n, C)
// with the head's values at columns [h*N, h*N + N). C must be a multiple of
// N, and N <= 1024. Slots of different segments must differ. N of 32, 64 or
// 128 with `state` 16-byte aligned and slot_stride a multiple of 4 take the
// fast, coalesced kernel; anything else a plain one. `host_segs`, the same
// list in host memory (may be null), lets segments of kWkv7LongRows rows or
// more (prompt chunks) take the long-segment kernel when the six vectors are
// 16-byte aligned too; it is read during the call only, and the launches
// depend on it only through which segments are that long. Padding segments
// (slot -1) are skipped; so are empty ones.
constexpr int kWkv7LongRows = 8;

// The segments launch_wkv7 gives the long-segment kernel (by index, in
// `index`, which has room for nseg; returns how many): those of
// kWkv7LongRows rows or more that are not padding. When they are the first k
// of the list (the Model puts the longest first), the first
// min(CeilPow2(k), nseg) go instead, and the long kernel skips the short ones
// among them on the device (the tiled kernel takes them): the launches are
// then the same for every k up to that power of two, and so is a CUDA graph
// of the pass.
int wkv7_long_segments(const SegmentDesc* host_segs, int nseg, int32_t* index);

// The RWKV-7 output stage (kernels/v7_output.h) applied by the WKV kernel
// as it finishes each token of a head, instead of writing y:
//   out = (GroupNorm(y) * lnw + lnb + sum_head(r * k * r_k) * v) * g.
// out holds (n, C) elements of out_type (kF32: it may be y; fp16/bf16:
// rounded to nearest even, not overlapping y). Decode passes: see
// wkv7_output_fusable.
struct Wkv7OutputStage {
  const float* g;    // (n, C)
  const float* r_k;  // (C)
  const float* lnw;  // (C)
  const float* lnb;  // (C)
  void* out;
  ElemType out_type;
};

// The RWKV-7 prep (kernels/v7_prep.h) applied by the WKV kernel to each
// token of a head before its step, with the output stage: w, a, k and v are
// then as the products left them (kk is not read), and the kernel uses what
// launch_v7_prep would have written (same code, same bits) without writing
// it back, except v_first where v0 is null (layer 0: v_first = v). Buffers
// are (n, C) like the vectors, parameters (C).
struct Wkv7Prep {
  const float* w0;
  const float* a0;
  const float* k_k;
  const float* k_a;
  float* v_first;
  const float* v_gate;  // null with v0
  const float* v0;      // null: layer 0
};

// Whether launch_wkv7 applies an output stage for these arguments: no
// segment long (kWkv7LongRows; a decode pass), N = 64 or 128, the state
// 16-byte aligned and its slot stride a multiple of 4, and y, r, k, v and
// the stage's buffers aligned to N / 32 floats (where launch_v7_output
// takes its vector kernel). The fused stage runs that kernel's code on the
// same inputs, so out gets the same bits as Wkv7 then V7Output.
bool wkv7_output_fusable(const SegmentDesc* host_segs, int nseg, int N, const float* state, int64_t slot_stride,
                         const float* y, const float* r, const float* k, const float* v, const Wkv7OutputStage& os);

// Whether launch_wkv7 may apply this prep (with a fusable output stage):
// N = 64 or 128 and every buffer aligned to N / 32 floats, where
// launch_v7_prep takes the vector kernel whose code the fused prep runs.
// kk: the buffer launch_v7_prep would write (checked as it checks it).
bool wkv7_prep_fusable(int N, const float* w, const float* a, const float* k, const float* v, const float* kk,
                       const Wkv7Prep& prep);

cudaError_t launch_wkv7(const SegmentDesc* segs,       // (nseg) device
                        const SegmentDesc* host_segs,  // (nseg) host copy, or null
                        int nseg, int C, int N,
                        ElemType state_type,      // kF32 or kF16
                        float* state,             // (slots, slot_stride); layer block of (H, N, N) at offset 0
                        int64_t slot_stride,      // in 4-byte units, whatever state_type
                        const float* r,           // (n, C)
                        const float* w,           // (n, C) decay in (0, 1)
                        const float* k,           // (n, C)
                        const float* v,           // (n, C)
                        const float* kk,          // (n, C) normalised key
                        const float* a,           // (n, C) in-context learning rate
                        float* y,                 // (n, C)
                        float* scratch,           // wkv7_scratch_floats(...) floats, or null
                        size_t scratch_floats,
                        cudaStream_t stream,
                        // null, or the output stage to apply instead of writing y (only where
                        // wkv7_output_fusable; cudaErrorInvalidValue otherwise)
                        const Wkv7OutputStage* output_stage = nullptr,
                        // null, or the prep to apply first (only with output_stage; N = 64 or 128;
                        // cudaErrorInvalidValue otherwise)
                        const Wkv7Prep* prep = nullptr);

// Scratch for the chunked (DPLR) form of long segments (fp32 state, N = 64,
// a pass whose longest segment rounds up to 64 rows or more): floats of
// per-chunk matrices (engine/model/wkv7_chunked.h), 0 when the pass does not
// use it. Without that much scratch launch_wkv7 takes the token-by-token long
// kernel. Depends only on the pass's row count, its long segments' count and
// its longest segment rounded to a power of two (a CUDA graph key's).
size_t wkv7_scratch_floats(const SegmentDesc* host_segs, int nseg, int C, int N, ElemType state_type);

// The most wkv7_scratch_floats returns for any pass of at most `rows` rows.
size_t wkv7_scratch_bound_floats(int rows, int C, int N, ElemType state_type);

}  // namespace rwkv::kernels

#endif  // RWKV_KERNELS_WKV7_H_
