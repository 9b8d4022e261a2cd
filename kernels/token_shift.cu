// Token shift: a thread per (channel, segment, chunk of rows). The state is
// read and written in place in the session's slot (no gather/scatter), and
// without a race: only the thread that owns a segment's first row touches
// the slot's x_prev, reading the old value before writing the new one (the
// segment's last row of xx, which no thread modifies).
#include "kernels/token_shift.h"

#include "kernels/kernel_util.cuh"

namespace rwkv::kernels {
namespace {

constexpr int kRowsPerBlock = 16;
constexpr int kBlock = 128;

__global__ void token_shift_kernel(const float* __restrict__ xx,          // (n, C)
                                   const SegmentDesc* __restrict__ segs,  // (nseg)
                                   int C,
                                   float* __restrict__ x_prev,            // (slots, stride)
                                   int64_t slot_stride,
                                   float* __restrict__ d) {               // (n, C)
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const SegmentDesc g = segs[blockIdx.y];
  const int t0 = blockIdx.z * kRowsPerBlock;
  if (t0 >= g.rows || g.slot < 0) return;  // padding rows keep whatever d held
  const int t1 = min(g.rows, t0 + kRowsPerBlock);
  for (int t = t0; t < t1; ++t) {
    const int64_t r = g.row_begin + t;
    if (t == 0) {
      float* state = x_prev + g.slot * slot_stride + c;
      const float prev = *state;
      d[r * C + c] = prev - xx[r * C + c];
      *state = xx[static_cast<int64_t>(g.row_begin + g.rows - 1) * C + c];
    } else {
      d[r * C + c] = xx[(r - 1) * C + c] - xx[r * C + c];
    }
  }
}

}  // namespace

cudaError_t launch_token_shift(const float* xx, const SegmentDesc* segs, int nseg, int max_rows, int C,
                               float* x_prev, int64_t slot_stride, float* d, cudaStream_t stream) {
  if (nseg < 0 || C <= 0 || max_rows < 0 || nseg > 65535) return cudaErrorInvalidValue;
  if (nseg == 0 || max_rows == 0) return cudaSuccess;
  if (xx == nullptr || segs == nullptr || x_prev == nullptr || d == nullptr) return cudaErrorInvalidValue;
  const dim3 grid((C + kBlock - 1) / kBlock, nseg, (max_rows + kRowsPerBlock - 1) / kRowsPerBlock);
  if (grid.z > 65535) return cudaErrorInvalidValue;
  token_shift_kernel<<<grid, kBlock, 0, stream>>>(xx, segs, C, x_prev, slot_stride, d);
  return cudaGetLastError();
}

}  // namespace rwkv::kernels
