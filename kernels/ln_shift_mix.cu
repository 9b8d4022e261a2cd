// LayerNorm + token shift + mixes: one block per row. A row's shift needs the
// LayerNorm of the previous row of its segment, which the block recomputes
// (one more row read, from L2) rather than waiting for another block; the
// block of a segment's first row alone touches the slot's x_prev: it reads the
// old value, then writes the LayerNorm of the segment's last row (recomputed
// there too when the segment has several rows), so no other block races it.
// LayerNorm is two-pass and written as kernels/layernorm.cu writes it.
#include "kernels/ln_shift_mix.h"

#include "kernels/kernel_util.cuh"

namespace rwkv::kernels {
namespace {

struct MixArgs {
  const float* mixes[kMaxMixes];  // (C) each
  float* outs[kMaxMixes];         // (n, C) each
};

struct RowStats {
  float mean, inv;
};

__device__ RowStats row_stats(const float* __restrict__ xi, int C, float* scratch) {
  float s = 0.0f;
  for (int c = threadIdx.x; c < C; c += blockDim.x) s += xi[c];
  const float mean = block_sum(s, scratch) / C;
  float q = 0.0f;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    const float d = xi[c] - mean;
    q += d * d;
  }
  const float var = block_sum(q, scratch) / C;
  return {mean, 1.0f / sqrtf(var + 1e-5f)};
}

template <int kCount>
__global__ void ln_shift_mix_kernel(const float* __restrict__ x,  // (n, C)
                                    int C, const float* __restrict__ ln_w, const float* __restrict__ ln_b,
                                    const SegmentDesc* __restrict__ segs, int nseg,
                                    float* __restrict__ x_prev,  // (slots, slot_stride)
                                    int64_t slot_stride, MixArgs args) {
  __shared__ float scratch[32];
  __shared__ int seg_of_row;
  const int r = blockIdx.x;
  for (int s = threadIdx.x; s < nseg; s += blockDim.x) {
    if (r >= segs[s].row_begin && r < segs[s].row_begin + segs[s].rows) seg_of_row = s;
  }
  __syncthreads();
  const SegmentDesc g = segs[seg_of_row];
  const int t = r - g.row_begin;
  const float* xr = x + static_cast<int64_t>(r) * C;
  const RowStats cur = row_stats(xr, C, scratch);
  // The previous row (t > 0) or, for a first row, the segment's last row
  // (whose LayerNorm becomes x_prev); same as cur for a one-row segment.
  const int other_row = t > 0 ? r - 1 : g.row_begin + g.rows - 1;
  const float* xo = x + static_cast<int64_t>(other_row) * C;
  const RowStats other = other_row == r ? cur : row_stats(xo, C, scratch);
  float* state = x_prev + g.slot * slot_stride;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    const float w = ln_w[c], b = ln_b[c];
    const float xx = (xr[c] - cur.mean) * cur.inv * w + b;
    const float xo_ln = (xo[c] - other.mean) * other.inv * w + b;
    float prev;
    if (t > 0) {
      prev = xo_ln;
    } else {
      prev = state[c];
      state[c] = xo_ln;
    }
    const float d = prev - xx;
#pragma unroll
    for (int j = 0; j < kCount; ++j) args.outs[j][static_cast<int64_t>(r) * C + c] = xx + d * args.mixes[j][c];
  }
}

}  // namespace

cudaError_t launch_ln_shift_mix(const float* x, int n, int C, const float* ln_w, const float* ln_b,
                                const SegmentDesc* segs, int nseg, float* x_prev, int64_t slot_stride,
                                const float* const* mixes, float* const* outs, int count, cudaStream_t stream) {
  if (n < 0 || C <= 0 || nseg < 0 || count < 1 || count > kMaxMixes || mixes == nullptr || outs == nullptr) {
    return cudaErrorInvalidValue;
  }
  if (n == 0) return cudaSuccess;
  if (x == nullptr || ln_w == nullptr || ln_b == nullptr || segs == nullptr || nseg == 0 || x_prev == nullptr) {
    return cudaErrorInvalidValue;
  }
  MixArgs args{};
  for (int j = 0; j < count; ++j) {
    if (mixes[j] == nullptr || outs[j] == nullptr) return cudaErrorInvalidValue;
    args.mixes[j] = mixes[j];
    args.outs[j] = outs[j];
  }
  const int block = C >= 1024 ? 512 : (C >= 256 ? 256 : 128);
  const unsigned grid = static_cast<unsigned>(n);
  switch (count) {
    case 1: ln_shift_mix_kernel<1><<<grid, block, 0, stream>>>(x, C, ln_w, ln_b, segs, nseg, x_prev, slot_stride, args); break;
    case 2: ln_shift_mix_kernel<2><<<grid, block, 0, stream>>>(x, C, ln_w, ln_b, segs, nseg, x_prev, slot_stride, args); break;
    case 3: ln_shift_mix_kernel<3><<<grid, block, 0, stream>>>(x, C, ln_w, ln_b, segs, nseg, x_prev, slot_stride, args); break;
    case 4: ln_shift_mix_kernel<4><<<grid, block, 0, stream>>>(x, C, ln_w, ln_b, segs, nseg, x_prev, slot_stride, args); break;
    case 5: ln_shift_mix_kernel<5><<<grid, block, 0, stream>>>(x, C, ln_w, ln_b, segs, nseg, x_prev, slot_stride, args); break;
    default: ln_shift_mix_kernel<6><<<grid, block, 0, stream>>>(x, C, ln_w, ln_b, segs, nseg, x_prev, slot_stride, args); break;
  }
  return cudaGetLastError();
}

}  // namespace rwkv::kernels
