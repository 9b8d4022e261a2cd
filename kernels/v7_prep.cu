// RWKV-7 per-channel prep: one warp per (row, head), as kernels/v7_key_prep.cu
// does, because the key's L2 norm is per head. Each lane owns the same
// channels in both of its passes, so a written in the first pass is read back
// by the lane that wrote it. The formulas are those of the unfused kernels
// (accurate expf, the constant e^-0.5 rounded to float once).
#include "kernels/v7_prep.h"

#include <cstdint>

#include "kernels/kernel_util.cuh"
#include "kernels/v7_prep.cuh"

namespace rwkv::kernels {
namespace {

constexpr int kWarpsPerBlock = 4;

// Any N: a lane walks channels lane, lane + 32, ...
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

// N = 32 V: lane holds channels [V lane, V lane + V) in registers, one
// V-wide load of each input, all issued before the key's reduction, one
// V-wide store of each output (the any-N kernel reads k and a twice and
// issues scalar accesses: ~2 TB/s on an H100 at 7.2B prefill shapes).
template <int V>
__global__ void v7_prep_vec_kernel(float* __restrict__ w, const float* __restrict__ w0, float* __restrict__ a,
                                   const float* __restrict__ a0, float* __restrict__ k, float* __restrict__ kk,
                                   const float* __restrict__ k_k, const float* __restrict__ k_a,
                                   float* __restrict__ v, float* __restrict__ v_first,
                                   const float* __restrict__ v_gate, const float* __restrict__ v0, int64_t items,
                                   int C) {
  using Vec = FloatVec<V>;
  int c0;
  int64_t e;
  // The parameters (weights) are loaded before pdl_wait(), while the kernel
  // before still runs; every thread waits before it returns.
  const bool live = head_lane<kWarpsPerBlock, V>(items, C, &c0, &e);
  float pw0[V], pa0[V], pkk[V], pka[V];
  if (live) {
    Vec::load(pw0, w0 + c0);
    Vec::load(pa0, a0 + c0);
    Vec::load(pkk, k_k + c0);
    Vec::load(pka, k_a + c0);
  }
  pdl_wait();
  if (!live) return;
  float wv[V], av[V], kv[V], vv[V], vf[V], gv[V], pv0[V], kko[V];
  Vec::load(wv, w + e);
  Vec::load(av, a + e);
  Vec::load(kv, k + e);
  Vec::load(vv, v + e);
  const bool residual = v0 != nullptr;
  if (residual) {
    Vec::load(vf, v_first + e);
    Vec::load(gv, v_gate + e);
    Vec::load(pv0, v0 + c0);
  }
  v7_prep_head<V>(wv, av, kv, vv, kko, vf, gv, pw0, pa0, pkk, pka, pv0, residual);
  Vec::store(residual ? v + e : v_first + e, vv);
  Vec::store(w + e, wv);
  Vec::store(a + e, av);
  Vec::store(kk + e, kko);
  Vec::store(k + e, kv);
}

}  // namespace

bool v7_prep_vectorized(int N, const float* w, const float* w0, const float* a, const float* a0, const float* k,
                        const float* kk, const float* k_k, const float* k_a, const float* v, const float* v_first,
                        const float* v_gate, const float* v0) {
  if ((N != 64 && N != 128) || w == nullptr || w0 == nullptr || a == nullptr || a0 == nullptr || k == nullptr ||
      kk == nullptr || k_k == nullptr || k_a == nullptr || v == nullptr || v_first == nullptr ||
      (v0 != nullptr && v_gate == nullptr)) {
    return false;
  }
  // The vector kernels read a lane's V channels as one access: C is a multiple of N, so every head is aligned
  // to V floats when the buffers are.
  return aligned_floats(N / 32, {w, w0, a, a0, k, kk, k_k, k_a, v, v_first, v_gate, v0});
}

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
  const float scale = kV7DecayScale;
  const unsigned grid = static_cast<unsigned>(blocks), block = 32 * kWarpsPerBlock;
  const bool vec = v7_prep_vectorized(N, w, w0, a, a0, k, kk, k_k, k_a, v, v_first, v_gate, v0);
  if (vec && N == 64) {
    launch(v7_prep_vec_kernel<2>, grid, block, 0, stream, w, w0, a, a0, k, kk, k_k, k_a, v, v_first, v_gate, v0,
           items, C);
  } else if (vec) {
    launch(v7_prep_vec_kernel<4>, grid, block, 0, stream, w, w0, a, a0, k, kk, k_k, k_a, v, v_first, v_gate, v0,
           items, C);
  } else {
    launch(v7_prep_kernel, grid, block, 0, stream, w, w0, a, a0, k, kk, k_k, k_a, v, v_first, v_gate, v0, items, C,
           N, scale);
  }
  return cudaGetLastError();
}

}  // namespace rwkv::kernels
