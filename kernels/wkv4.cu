// RWKV-4 WKV: one thread per (segment, channel), stepping through the
// segment's rows (the same shape as the original RWKV-4 CUDA kernel, one
// thread per (batch, channel) looping over T). The state (aa, bb, pp) is
// read from the session's slot into registers once and written back once.
// The running maximum pp keeps every exponent <= 0, so nothing overflows for
// any key size; expf (not __expf) keeps the CPU reference's accuracy.
#include "kernels/wkv4.h"

#include "kernels/kernel_util.cuh"

namespace rwkv::kernels {
namespace {

constexpr int kBlock = 128;

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
  float* st = aa_base + g.slot * slot_stride + c;
  float aa = st[0], bb = st[C], pp = st[2 * C];
  const float u = time_first[c], wd = time_decay[c];
  for (int t = 0; t < g.rows; ++t) {
    const int64_t o = static_cast<int64_t>(g.row_begin + t) * C + c;
    const float kt = k[o], vt = v[o];
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
