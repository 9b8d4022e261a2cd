// RWKV-7 output stage fused into one pass: per-head GroupNorm (ln_x, two-pass
// statistics, eps 64e-5), the "bonus" term sum_head(r*k*r_k) * v, and the
// output gate g. One warp per (row, head): the three head reductions are warp
// shuffles, and y is read and written once.
#include "kernels/v7_output.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "kernels/kernel_util.cuh"
#include "kernels/v7_output.cuh"
#include "kernels/weights.cuh"

namespace rwkv::kernels {
namespace {

constexpr int kWarpsPerBlock = 4;

// y is not __restrict__: out may be y (fp32, in place); each element is read
// by the lane that writes it, before it writes it.
__global__ void v7_output_kernel(const float* y,                 // (n, C)
                                 const float* __restrict__ r,    // (n, C)
                                 const float* __restrict__ k,    // (n, C)
                                 const float* __restrict__ v,    // (n, C)
                                 const float* __restrict__ g,    // (n, C)
                                 const float* __restrict__ r_k,  // (C)
                                 const float* __restrict__ lnw,  // (C)
                                 const float* __restrict__ lnb,  // (C)
                                 int64_t items, int C, int N,
                                 void* out,  // (n, C) of out_type; may be y (kF32)
                                 ElemType out_type) {
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
    store_elem(out, out_type, o + j, (norm + bonus * v[o + j]) * g[o + j]);
  }
}


// N = 32 V: lane holds channels [V lane, V lane + V) in registers; each input
// read once with V-wide loads, all issued before the reductions (the any-N
// kernel above reads y three times with scalar loads).
template <int V>
__global__ void v7_output_vec_kernel(const float* y, const float* __restrict__ r,
                                     const float* __restrict__ k, const float* __restrict__ v,
                                     const float* __restrict__ g, const float* __restrict__ r_k,
                                     const float* __restrict__ lnw, const float* __restrict__ lnb, int64_t items,
                                     int C, void* out, ElemType out_type) {
  pdl_wait();
  using Vec = FloatVec<V>;
  int c0;
  int64_t e;
  if (!head_lane<kWarpsPerBlock, V>(items, C, &c0, &e)) return;
  float yv[V], rv[V], kv[V], vv[V], gv[V], prk[V];
  Vec::load(yv, y + e);
  Vec::load(rv, r + e);
  Vec::load(kv, k + e);
  Vec::load(vv, v + e);
  Vec::load(gv, g + e);
  Vec::load(prk, r_k + c0);
  float pw[V], pb[V];
  Vec::load(pw, lnw + c0);
  Vec::load(pb, lnb + c0);
  v7_output_head<V>(yv, rv, kv, vv, gv, prk, pw, pb);
  store_vec<V>(out, out_type, e, yv);
}

}  // namespace

cudaError_t launch_v7_output(const float* y, const float* r, const float* k, const float* v, const float* g,
                             const float* r_k, const float* lnw, const float* lnb, int n, int C, int N, float* out,
                             ElemType out_type, cudaStream_t stream) {
  if (n < 0 || C <= 0 || N <= 0 || C % N != 0 ||
      (out_type != ElemType::kF32 && out_type != ElemType::kF16 && out_type != ElemType::kBF16)) {
    return cudaErrorInvalidValue;
  }
  if (n == 0) return cudaSuccess;
  if (y == nullptr || r == nullptr || k == nullptr || v == nullptr || g == nullptr || r_k == nullptr ||
      lnw == nullptr || lnb == nullptr || out == nullptr) {
    return cudaErrorInvalidValue;
  }
  const int64_t items = static_cast<int64_t>(n) * (C / N);
  const int64_t blocks = (items + kWarpsPerBlock - 1) / kWarpsPerBlock;
  if (blocks > 0x7fffffff) return cudaErrorInvalidValue;
  const unsigned grid = static_cast<unsigned>(blocks), block = 32 * kWarpsPerBlock;
  // The vector kernel reads a lane's V channels as one access (and writes them as one): C is a multiple of N,
  // so every head is aligned to V elements when the buffers are.
  const int V = N / 32;
  const bool vec = (N == 64 || N == 128) && aligned_floats(V, {y, r, k, v, g, r_k, lnw, lnb, out});
  if (vec && N == 64) {
    launch(v7_output_vec_kernel<2>, grid, block, 0, stream, y, r, k, v, g, r_k, lnw, lnb, items, C,
           static_cast<void*>(out), out_type);
  } else if (vec) {
    launch(v7_output_vec_kernel<4>, grid, block, 0, stream, y, r, k, v, g, r_k, lnw, lnb, items, C,
           static_cast<void*>(out), out_type);
  } else {
    launch(v7_output_kernel, grid, block, 0, stream, y, r, k, v, g, r_k, lnw, lnb, items, C, N,
           static_cast<void*>(out), out_type);
  }
  return cudaGetLastError();
}

}  // namespace rwkv::kernels
