// RWKV-7 per-channel prep: one warp per (row, head), as kernels/v7_key_prep.cu
// does, because the key's L2 norm is per head. Each lane owns the same
// channels in both of its passes, so a written in the first pass is read back
// by the lane that wrote it. The formulas are those of the unfused kernels
// (accurate expf, the constant e^-0.5 rounded to float once).
#include "kernels/v7_prep.h"

#include <cstdint>

#include "kernels/kernel_util.cuh"

namespace rwkv::kernels {
namespace {

constexpr int kWarpsPerBlock = 4;

__global__ void v7_prep_kernel(float* __restrict__ w, const float* __restrict__ w0, float* __restrict__ a,
                               const float* __restrict__ a0, float* __restrict__ k, float* __restrict__ kk,
                               const float* __restrict__ k_k, const float* __restrict__ k_a, float* __restrict__ v,
                               float* __restrict__ v_first, const float* __restrict__ v_gate,
                               const float* __restrict__ v0, int64_t items, int C, int N, float scale) {
  pdl_wait();  // programmatic launch: the previous kernel's writes first (kernel_util.cuh)
  const int64_t item = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (item >= items) return;
  const int H = C / N;
  const int lane = threadIdx.x & 31;
  const int h = static_cast<int>(item % H);
  const int64_t o = (item / H) * C + static_cast<int64_t>(h) * N;
  float ss = 0.0f;
  for (int j = lane; j < N; j += 32) {
    const int c = h * N + j;
    const int64_t e = o + j;
    w[e] = expf(-scale * sigmoid_f(w0[c] + w[e]));
    a[e] = sigmoid_f(a[e] + a0[c]);
    const float kv = k[e] * k_k[c];
    ss += kv * kv;
    if (v0 != nullptr) {
      const float g = sigmoid_f(v0[c] + v_gate[e]);
      v[e] += (v_first[e] - v[e]) * g;
    } else {
      v_first[e] = v[e];
    }
  }
  ss = warp_sum(ss);
  const float inv = 1.0f / fmaxf(sqrtf(ss), 1e-12f);
  for (int j = lane; j < N; j += 32) {
    const int c = h * N + j;
    const int64_t e = o + j;
    const float kv = k[e];
    kk[e] = kv * k_k[c] * inv;
    k[e] = kv * (1.0f + (a[e] - 1.0f) * k_a[c]);
  }
}

}  // namespace

cudaError_t launch_v7_prep(float* w, const float* w0, float* a, const float* a0, float* k, float* kk,
                           const float* k_k, const float* k_a, float* v, float* v_first, const float* v_gate,
                           const float* v0, int n, int C, int N, cudaStream_t stream) {
  if (n < 0 || C <= 0 || N <= 0 || C % N != 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  if (w == nullptr || w0 == nullptr || a == nullptr || a0 == nullptr || k == nullptr || kk == nullptr ||
      k_k == nullptr || k_a == nullptr || v == nullptr || v_first == nullptr || (v0 != nullptr && v_gate == nullptr)) {
    return cudaErrorInvalidValue;
  }
  const int64_t items = static_cast<int64_t>(n) * (C / N);
  const int64_t blocks = (items + kWarpsPerBlock - 1) / kWarpsPerBlock;
  if (blocks > 0x7fffffff) return cudaErrorInvalidValue;
  const float scale = 0.60653065971263342f;  // expf(-0.5f), as the CPU computes it
  launch(v7_prep_kernel, static_cast<unsigned>(blocks), 32 * kWarpsPerBlock, 0, stream, 
      w, w0, a, a0, k, kk, k_k, k_a, v, v_first, v_gate, v0, items, C, N, scale);
  return cudaGetLastError();
}

}  // namespace rwkv::kernels
