// RWKV-7 output stage fused into one pass: per-head GroupNorm (ln_x, two-pass
// statistics, eps 64e-5), the "bonus" term sum_head(r*k*r_k) * v, and the
// output gate g. One warp per (row, head): the three head reductions are warp
// shuffles, and y is read and written once.
#include "kernels/v7_output.h"

#include <cstdint>

#include "kernels/kernel_util.cuh"

namespace rwkv::kernels {
namespace {

constexpr int kWarpsPerBlock = 4;

__global__ void v7_output_kernel(float* __restrict__ y,          // (n, C)
                                 const float* __restrict__ r,    // (n, C)
                                 const float* __restrict__ k,    // (n, C)
                                 const float* __restrict__ v,    // (n, C)
                                 const float* __restrict__ g,    // (n, C)
                                 const float* __restrict__ r_k,  // (C)
                                 const float* __restrict__ lnw,  // (C)
                                 const float* __restrict__ lnb,  // (C)
                                 int64_t items, int C, int N) {
  pdl_wait();  // programmatic launch: the previous kernel's writes first (kernel_util.cuh)
  const int64_t item = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (item >= items) return;
  const int H = C / N;
  const int lane = threadIdx.x & 31;
  const int h = static_cast<int>(item % H);
  const int64_t o = (item / H) * C + static_cast<int64_t>(h) * N;
  float sum = 0.0f, bonus = 0.0f;
  for (int j = lane; j < N; j += 32) {
    sum += y[o + j];
    bonus += r[o + j] * k[o + j] * r_k[h * N + j];
  }
  const float mean = warp_sum(sum) / N;
  bonus = warp_sum(bonus);
  float q = 0.0f;
  for (int j = lane; j < N; j += 32) {
    const float d = y[o + j] - mean;
    q += d * d;
  }
  const float inv = 1.0f / sqrtf(warp_sum(q) / N + 64e-5f);
  for (int j = lane; j < N; j += 32) {
    const int c = h * N + j;
    const float norm = (y[o + j] - mean) * inv * lnw[c] + lnb[c];
    y[o + j] = (norm + bonus * v[o + j]) * g[o + j];
  }
}

}  // namespace

cudaError_t launch_v7_output(float* y, const float* r, const float* k, const float* v, const float* g,
                             const float* r_k, const float* lnw, const float* lnb, int n, int C, int N,
                             cudaStream_t stream) {
  if (n < 0 || C <= 0 || N <= 0 || C % N != 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  if (y == nullptr || r == nullptr || k == nullptr || v == nullptr || g == nullptr || r_k == nullptr ||
      lnw == nullptr || lnb == nullptr) {
    return cudaErrorInvalidValue;
  }
  const int64_t items = static_cast<int64_t>(n) * (C / N);
  const int64_t blocks = (items + kWarpsPerBlock - 1) / kWarpsPerBlock;
  if (blocks > 0x7fffffff) return cudaErrorInvalidValue;
  launch(v7_output_kernel, static_cast<unsigned>(blocks), 32 * kWarpsPerBlock, 0, stream, y, r, k, v, g, r_k, lnw,
                                                                                       lnb, items, C, N);
  return cudaGetLastError();
}

}  // namespace rwkv::kernels
