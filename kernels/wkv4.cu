// RWKV-4 WKV: one thread per (segment, channel), stepping through the
// segment's rows (the same shape as the original RWKV-4 CUDA kernel, one
// thread per (batch, channel) looping over T). The state (aa, bb, pp) is
// read from the session's slot into registers once and written back once.
// The running maximum pp keeps every exponent <= 0, so nothing overflows for
// any key size; expf (not __expf) keeps the CPU reference's accuracy.
//
// A prompt's rows are walked with the next kAhead tokens' k and v already
// loading (a register ring, fully unrolled so it is never indexed at run
// time): the recurrence only depends on (aa, bb, pp), so the global loads,
// ~0.5 us each from DRAM, overlap the exp chain instead of preceding every
// step of it.
#include "kernels/wkv4.h"

#include "kernels/kernel_util.cuh"

namespace rwkv::kernels {
namespace {

constexpr int kBlock = 128;
constexpr int kAhead = 8;  // tokens whose k, v are in flight

__global__ void wkv4_kernel(const SegmentDesc* __restrict__ segs,  // (nseg)
                            int C,
                            float* __restrict__ aa_base,           // (slots, stride)
                            int64_t slot_stride,
                            const float* __restrict__ time_first,  // (C)
                            const float* __restrict__ time_decay,  // (C)
                            const float* __restrict__ k,           // (n, C)
                            const float* __restrict__ v,           // (n, C)
                            float* __restrict__ y) {               // (n, C)
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const SegmentDesc g = segs[blockIdx.y];
  if (g.slot < 0 || g.rows == 0) return;  // padding
  float* st = aa_base + g.slot * slot_stride + c;
  float aa = st[0], bb = st[C], pp = st[2 * C];
  const float u = time_first[c], wd = time_decay[c];
  const int64_t o0 = static_cast<int64_t>(g.row_begin) * C + c;
  float kb[kAhead], vb[kAhead];
#pragma unroll
  for (int p = 0; p < kAhead; ++p) {
    if (p < g.rows) {
      kb[p] = k[o0 + static_cast<int64_t>(p) * C];
      vb[p] = v[o0 + static_cast<int64_t>(p) * C];
    }
  }
  for (int t0 = 0; t0 < g.rows; t0 += kAhead) {
#pragma unroll
    for (int p = 0; p < kAhead; ++p) {
      const int t = t0 + p;
      if (t >= g.rows) break;
      const int64_t o = o0 + static_cast<int64_t>(t) * C;
      const float kt = kb[p], vt = vb[p];
      if (t + kAhead < g.rows) {  // refill the slot just read with the token kAhead later
        kb[p] = k[o + static_cast<int64_t>(kAhead) * C];
        vb[p] = v[o + static_cast<int64_t>(kAhead) * C];
      }
      float ww = u + kt;
      float q = fmaxf(pp, ww);
      float e1 = expf(pp - q);
      float e2 = expf(ww - q);
      y[o] = (e1 * aa + e2 * vt) / (e1 * bb + e2);
      ww = pp + wd;
      q = fmaxf(ww, kt);
      e1 = expf(ww - q);
      e2 = expf(kt - q);
      aa = e1 * aa + e2 * vt;
      bb = e1 * bb + e2;
      pp = q;
    }
  }
  st[0] = aa;
  st[C] = bb;
  st[2 * C] = pp;
}

}  // namespace

cudaError_t launch_wkv4(const SegmentDesc* segs, int nseg, int C, float* aa, int64_t slot_stride,
                        const float* time_first, const float* time_decay, const float* k, const float* v,
                        float* y, cudaStream_t stream) {
  if (nseg < 0 || nseg > 65535 || C <= 0 || slot_stride < 0) return cudaErrorInvalidValue;
  if (nseg == 0) return cudaSuccess;
  if (segs == nullptr || aa == nullptr || time_first == nullptr || time_decay == nullptr || k == nullptr ||
      v == nullptr || y == nullptr) {
    return cudaErrorInvalidValue;
  }
  const dim3 grid((C + kBlock - 1) / kBlock, nseg);
  wkv4_kernel<<<grid, kBlock, 0, stream>>>(segs, C, aa, slot_stride, time_first, time_decay, k, v, y);
  return cudaGetLastError();
}

}  // namespace rwkv::kernels
