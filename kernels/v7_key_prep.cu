// RWKV-7 key preparation: one warp per (row, head), so the head's L2 norm is
// a warp shuffle reduction with no shared memory or block barrier, whatever
// the head size. kk is computed from k before k is gated, matching the CPU
// reference order.
#include "kernels/v7_key_prep.h"

#include <cstdint>

#include "kernels/kernel_util.cuh"

namespace rwkv::kernels {
namespace {

constexpr int kWarpsPerBlock = 4;

__global__ void v7_key_prep_kernel(float* __restrict__ k,          // (n, C)
                                   float* __restrict__ kk,         // (n, C)
                                   const float* __restrict__ a,    // (n, C)
                                   const float* __restrict__ k_k,  // (C)
                                   const float* __restrict__ k_a,  // (C)
                                   int64_t items, int C, int N) {
  const int64_t item = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (item >= items) return;
  const int H = C / N;
  const int lane = threadIdx.x & 31;
  const int h = static_cast<int>(item % H);
  const int64_t o = (item / H) * C + static_cast<int64_t>(h) * N;
  float ss = 0.0f;
  for (int j = lane; j < N; j += 32) {
    const float v = k[o + j] * k_k[h * N + j];
    ss += v * v;
  }
  ss = warp_sum(ss);
  const float inv = 1.0f / fmaxf(sqrtf(ss), 1e-12f);
  for (int j = lane; j < N; j += 32) {
    const int c = h * N + j;
    const float kv = k[o + j];
    kk[o + j] = kv * k_k[c] * inv;
    k[o + j] = kv * (1.0f + (a[o + j] - 1.0f) * k_a[c]);
  }
}

}  // namespace

cudaError_t launch_v7_key_prep(float* k, float* kk, const float* a, const float* k_k, const float* k_a, int n,
                               int C, int N, cudaStream_t stream) {
  if (n < 0 || C <= 0 || N <= 0 || C % N != 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  if (k == nullptr || kk == nullptr || a == nullptr || k_k == nullptr || k_a == nullptr) {
    return cudaErrorInvalidValue;
  }
  const int64_t items = static_cast<int64_t>(n) * (C / N);
  const int64_t blocks = (items + kWarpsPerBlock - 1) / kWarpsPerBlock;
  if (blocks > 0x7fffffff) return cudaErrorInvalidValue;
  v7_key_prep_kernel<<<static_cast<unsigned>(blocks), 32 * kWarpsPerBlock, 0, stream>>>(k, kk, a, k_k, k_a,
                                                                                         items, C, N);
  return cudaGetLastError();
}

}  // namespace rwkv::kernels
