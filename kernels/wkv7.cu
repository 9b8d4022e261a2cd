// RWKV-7 WKV: one block per (head, segment), one thread per value row i of
// the head's N x N state. The session's state is read from its slot and
// written back to it in place: no gather into a batch buffer and no scatter
// back, so a batch of sessions in arbitrary slots costs the same as one in
// consecutive slots.
//
// For the usual head sizes (32, 64, 128) the thread keeps its state row in
// registers (fully unrolled, so the array is never indexed at run time) and
// the state moves through a padded shared-memory tile, so global loads and
// stores are coalesced and the row reads are bank-conflict-free (row stride
// N+1). Per token the five head vectors (r, w, k, kk, kk*a) are staged in
// shared memory once and read by every thread as broadcasts. Other head
// sizes use a plain kernel that updates the state in global memory.
//
// Arithmetic follows the CPU reference term by term: sa = sum_j S[i][j] kk[j],
// S[i][j] = S[i][j] w[j] - sa (kk[j] a[j]) + v[i] k[j], y[i] = sum_j S[i][j] r[j],
// all fp32.
#include "kernels/wkv7.h"

#include "kernels/kernel_util.cuh"

namespace rwkv::kernels {
namespace {

template <int N>
__global__ void __launch_bounds__(N) wkv7_kernel(const SegmentDesc* __restrict__ segs,  // (nseg)
                                                 int C,
                                                 float* __restrict__ state,  // (slots, stride)
                                                 int64_t slot_stride,
                                                 const float* __restrict__ r,   // (n, C)
                                                 const float* __restrict__ w,   // (n, C)
                                                 const float* __restrict__ k,   // (n, C)
                                                 const float* __restrict__ v,   // (n, C)
                                                 const float* __restrict__ kk,  // (n, C)
                                                 const float* __restrict__ a,   // (n, C)
                                                 float* __restrict__ y) {       // (n, C)
  constexpr int kTileRows = N * N <= 4096 ? N : 4096 / N;  // a <= 16.5 KB tile
  __shared__ float tile[kTileRows * (N + 1)];
  __shared__ float sr[N], sw[N], sk[N], skk[N], sb[N];
  const SegmentDesc g = segs[blockIdx.y];
  const int h = blockIdx.x;
  const int i = threadIdx.x;
  float* S = state + g.slot * slot_stride + static_cast<int64_t>(h) * N * N;  // (N, N)

  float s[N];  // row i of S
  for (int r0 = 0; r0 < N; r0 += kTileRows) {
    for (int idx = i; idx < kTileRows * N; idx += N) tile[(idx / N) * (N + 1) + idx % N] = S[r0 * N + idx];
    __syncthreads();
    if (i >= r0 && i < r0 + kTileRows) {
#pragma unroll
      for (int j = 0; j < N; ++j) s[j] = tile[(i - r0) * (N + 1) + j];
    }
    __syncthreads();
  }

  for (int t = 0; t < g.rows; ++t) {
    const int64_t o = static_cast<int64_t>(g.row_begin + t) * C + static_cast<int64_t>(h) * N;
    sr[i] = r[o + i];
    sw[i] = w[o + i];
    sk[i] = k[o + i];
    skk[i] = kk[o + i];
    sb[i] = kk[o + i] * a[o + i];
    const float vi = v[o + i];
    __syncthreads();
    float sa = 0.0f;
#pragma unroll
    for (int j = 0; j < N; ++j) sa += s[j] * skk[j];
    float acc = 0.0f;
#pragma unroll
    for (int j = 0; j < N; ++j) {
      s[j] = s[j] * sw[j] - sa * sb[j] + vi * sk[j];
      acc += s[j] * sr[j];
    }
    y[o + i] = acc;
    __syncthreads();  // the vectors are overwritten by the next token
  }

  for (int r0 = 0; r0 < N; r0 += kTileRows) {
    if (i >= r0 && i < r0 + kTileRows) {
#pragma unroll
      for (int j = 0; j < N; ++j) tile[(i - r0) * (N + 1) + j] = s[j];
    }
    __syncthreads();
    for (int idx = i; idx < kTileRows * N; idx += N) S[r0 * N + idx] = tile[(idx / N) * (N + 1) + idx % N];
    __syncthreads();
  }
}

// Any head size: thread i updates row i of S directly in global memory.
__global__ void wkv7_generic_kernel(const SegmentDesc* __restrict__ segs,  // (nseg)
                                    int C, int N,
                                    float* __restrict__ state,  // (slots, stride)
                                    int64_t slot_stride,
                                    const float* __restrict__ r,   // (n, C)
                                    const float* __restrict__ w,   // (n, C)
                                    const float* __restrict__ k,   // (n, C)
                                    const float* __restrict__ v,   // (n, C)
                                    const float* __restrict__ kk,  // (n, C)
                                    const float* __restrict__ a,   // (n, C)
                                    float* __restrict__ y) {       // (n, C)
  extern __shared__ float vec[];  // (5, N): r, w, k, kk, kk*a
  float *sr = vec, *sw = vec + N, *sk = vec + 2 * N, *skk = vec + 3 * N, *sb = vec + 4 * N;
  const SegmentDesc g = segs[blockIdx.y];
  const int h = blockIdx.x;
  const int i = threadIdx.x;
  float* Si = state + g.slot * slot_stride + (static_cast<int64_t>(h) * N + i) * N;  // row i, (N)
  for (int t = 0; t < g.rows; ++t) {
    const int64_t o = static_cast<int64_t>(g.row_begin + t) * C + static_cast<int64_t>(h) * N;
    sr[i] = r[o + i];
    sw[i] = w[o + i];
    sk[i] = k[o + i];
    skk[i] = kk[o + i];
    sb[i] = kk[o + i] * a[o + i];
    const float vi = v[o + i];
    __syncthreads();
    float sa = 0.0f;
    for (int j = 0; j < N; ++j) sa += Si[j] * skk[j];
    float acc = 0.0f;
    for (int j = 0; j < N; ++j) {
      const float s = Si[j] * sw[j] - sa * sb[j] + vi * sk[j];
      Si[j] = s;
      acc += s * sr[j];
    }
    y[o + i] = acc;
    __syncthreads();
  }
}

}  // namespace

cudaError_t launch_wkv7(const SegmentDesc* segs, int nseg, int C, int N, float* state, int64_t slot_stride,
                        const float* r, const float* w, const float* k, const float* v, const float* kk,
                        const float* a, float* y, cudaStream_t stream) {
  if (nseg < 0 || nseg > 65535 || C <= 0 || N <= 0 || N > 1024 || C % N != 0 || slot_stride < 0) {
    return cudaErrorInvalidValue;
  }
  if (nseg == 0) return cudaSuccess;
  if (segs == nullptr || state == nullptr || r == nullptr || w == nullptr || k == nullptr || v == nullptr ||
      kk == nullptr || a == nullptr || y == nullptr) {
    return cudaErrorInvalidValue;
  }
  const dim3 grid(C / N, nseg);
  switch (N) {
    case 32:
      wkv7_kernel<32><<<grid, 32, 0, stream>>>(segs, C, state, slot_stride, r, w, k, v, kk, a, y);
      break;
    case 64:
      wkv7_kernel<64><<<grid, 64, 0, stream>>>(segs, C, state, slot_stride, r, w, k, v, kk, a, y);
      break;
    case 128:
      wkv7_kernel<128><<<grid, 128, 0, stream>>>(segs, C, state, slot_stride, r, w, k, v, kk, a, y);
      break;
    default:
      wkv7_generic_kernel<<<grid, N, 5 * N * sizeof(float), stream>>>(segs, C, N, state, slot_stride, r, w, k, v,
                                                                      kk, a, y);
      break;
  }
  return cudaGetLastError();
}

}  // namespace rwkv::kernels
