// Sparse FFN down-projection (see ffn_sparse.h): per block, compaction of the
// active hidden units of its range, then a streamed input-major product; a
// second kernel adds the ranges' partial sums in order.
#include "kernels/ffn_sparse.h"

#include <algorithm>

#include "kernels/kernel_util.cuh"
#include "kernels/weights.cuh"

namespace rwkv::kernels {
namespace {

constexpr int kThreads = 128;
constexpr int kCols = 8 * kThreads;  // output columns per block
constexpr int kTile = 8;             // batch rows per block
constexpr int kPass = 512;           // hidden units compacted per pass (shared-memory list)
static_assert(kPass % kThreads == 0, "a pass is whole compaction rounds");
constexpr int kUnroll = 8;           // unit rows in flight per thread
constexpr size_t kMaxPartialFloats = size_t{1} << 21;  // 8 MB of partial sums at most

struct Plan {
  int nr;     // rows per tile (1, 2, 4 or 8)
  int tiles;  // batch tiles
  int ncb;    // column blocks
  int fb;     // hidden units per block
  int nfb;    // unit ranges
};

Plan make_plan(int n, int F, int C, int sm_count) {
  Plan p;
  p.nr = n >= kTile ? kTile : (n > 2 ? 4 : n);
  p.tiles = (n + p.nr - 1) / p.nr;
  p.ncb = (C + kCols - 1) / kCols;
  // About two blocks per SM, but partial sums capped at kMaxPartialFloats.
  const int target = std::max(1, 2 * std::max(sm_count, 1));
  int nfb = std::max(1, (target + p.ncb * p.tiles - 1) / (p.ncb * p.tiles));
  const int cap = static_cast<int>(std::max<size_t>(1, kMaxPartialFloats / (static_cast<size_t>(n) * C)));
  nfb = std::min({nfb, cap, (F + 31) / 32});
  p.fb = ((F + nfb - 1) / nfb + 31) / 32 * 32;
  p.nfb = (F + p.fb - 1) / p.fb;
  return p;
}

template <typename T, int NR>
__global__ void __launch_bounds__(kThreads) ffn_sparse_kernel(const float* __restrict__ h,  // (n, F)
                                                              const T* __restrict__ w,      // (F, C)
                                                              int n, int F, int C, int fb,
                                                              float* __restrict__ partial) {
  pdl_wait();  // programmatic launch: the previous kernel's writes first (kernel_util.cuh)  // (nfb, n, C)
  __shared__ int list[kPass];
  __shared__ float coef[NR][kPass];
  __shared__ int warp_count[kThreads / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int t0 = blockIdx.x * NR;
  const int nr = min(NR, n - t0);
  const int c0 = blockIdx.y * kCols + threadIdx.x * 8;
  const int f_begin = blockIdx.z * fb, f_end = min(F, f_begin + fb);
  const bool has_cols = c0 < C;
  const T* wc = w + (has_cols ? c0 : 0);

  float acc[NR][8];
#pragma unroll
  for (int r = 0; r < NR; ++r) {
#pragma unroll
    for (int k = 0; k < 8; ++k) acc[r][k] = 0.0f;
  }

  for (int pass = f_begin; pass < f_end; pass += kPass) {
    const int pass_end = min(f_end, pass + kPass);
    // The pass's coefficients, every load issued before the first is used
    // (one round trip, not one per compaction round).
    constexpr int kRounds = kPass / kThreads;
    float cf[kRounds][NR];
#pragma unroll
    for (int q = 0; q < kRounds; ++q) {
      const int f = pass + q * kThreads + static_cast<int>(threadIdx.x);
#pragma unroll
      for (int r = 0; r < NR; ++r) {
        float v = f < pass_end && r < nr ? h[static_cast<int64_t>(t0 + r) * F + f] : 0.0f;
        v = v > 0.0f ? v : 0.0f;
        cf[q][r] = v * v;  // relu², as the CPU computes it
      }
    }
    // Compaction: units with a nonzero coefficient for some row of the tile,
    // in ascending order (ballot bit order within a warp, warps in order).
    int count = 0;
#pragma unroll
    for (int q = 0; q < kRounds; ++q) {
      if (pass + q * kThreads >= pass_end) break;  // the same for every thread
      const int f = pass + q * kThreads + static_cast<int>(threadIdx.x);
      bool any = false;
#pragma unroll
      for (int r = 0; r < NR; ++r) any |= cf[q][r] != 0.0f;
      const unsigned ballot = __ballot_sync(0xffffffffu, any);
      if (lane == 0) warp_count[warp] = __popc(ballot);
      __syncthreads();
      int offset = count, total = 0;
#pragma unroll
      for (int i = 0; i < kThreads / 32; ++i) {
        offset += i < warp ? warp_count[i] : 0;
        total += warp_count[i];
      }
      if (any) {
        const int pos = offset + __popc(ballot & ((1u << lane) - 1u));
        list[pos] = f;
#pragma unroll
        for (int r = 0; r < NR; ++r) coef[r][pos] = cf[q][r];
      }
      count += total;
      __syncthreads();  // list complete; warp_count free for the next round
    }
    if (has_cols) {
      // Two groups of kUnroll unit rows in flight: the next group's loads are
      // issued before this group's products.
      int i = 0;
      uint4 cur[kUnroll];
      if (count >= kUnroll) {
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) cur[u] = load_stream(wc + static_cast<int64_t>(list[u]) * C);
      }
      for (; i + kUnroll <= count; i += kUnroll) {
        uint4 next[kUnroll];
        const bool more = i + 2 * kUnroll <= count;
        if (more) {
#pragma unroll
          for (int u = 0; u < kUnroll; ++u) next[u] = load_stream(wc + static_cast<int64_t>(list[i + kUnroll + u]) * C);
        }
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
          float wf[8];
          widen8<T>(cur[u], wf);
#pragma unroll
          for (int r = 0; r < NR; ++r) {
            const float cr = coef[r][i + u];
#pragma unroll
            for (int k = 0; k < 8; ++k) acc[r][k] = fmaf(cr, wf[k], acc[r][k]);
          }
        }
        if (more) {
#pragma unroll
          for (int u = 0; u < kUnroll; ++u) cur[u] = next[u];
        }
      }
      for (; i < count; ++i) {
        float wf[8];
        widen8<T>(load_stream(wc + static_cast<int64_t>(list[i]) * C), wf);
#pragma unroll
        for (int r = 0; r < NR; ++r) {
          const float cr = coef[r][i];
#pragma unroll
          for (int k = 0; k < 8; ++k) acc[r][k] = fmaf(cr, wf[k], acc[r][k]);
        }
      }
    }
    __syncthreads();  // the list is rewritten by the next pass
  }
  if (!has_cols) return;
#pragma unroll
  for (int r = 0; r < NR; ++r) {
    if (r >= nr) break;
    float4* out = reinterpret_cast<float4*>(partial + (static_cast<int64_t>(blockIdx.z) * n + t0 + r) * C + c0);
    out[0] = make_float4(acc[r][0], acc[r][1], acc[r][2], acc[r][3]);
    out[1] = make_float4(acc[r][4], acc[r][5], acc[r][6], acc[r][7]);
  }
}

// y (= or +=) the sum over ranges of the partial sums. A block takes 32
// float4 outputs (one per lane) and splits the ranges over its 32 warps
// (warp i sums ranges i, i + 32, ... in order), then one warp adds the 32
// warp sums in order: a fixed order (deterministic), and at most
// ceil(nfb / 32) loads per thread, all independent, instead of nfb dependent
// steps for one thread per output (which left the reduction latency-bound).
constexpr int kReduceWarps = 32;

__device__ __forceinline__ float4 add4(float4 a, float4 b) { return make_float4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w); }

__global__ void __launch_bounds__(32 * kReduceWarps) ffn_reduce_kernel(const float4* __restrict__ partial,  // (nfb, n*C/4)
                                                                        int nfb, int64_t total4,
                                                                        float4* __restrict__ y, bool accumulate) {
  pdl_wait();  // programmatic launch: the previous kernel's writes first (kernel_util.cuh)
  __shared__ float4 sums[kReduceWarps][32];
  const int lane = threadIdx.x, wy = threadIdx.y;
  const int64_t e = static_cast<int64_t>(blockIdx.x) * 32 + lane;
  float4 s = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  if (e < total4) {
#pragma unroll 4
    for (int b = wy; b < nfb; b += kReduceWarps) s = add4(s, partial[b * total4 + e]);
  }
  sums[wy][lane] = s;
  __syncthreads();
  if (wy != 0 || e >= total4) return;
  float4 t = sums[0][lane];
  for (int i = 1; i < kReduceWarps; ++i) t = add4(t, sums[i][lane]);
  y[e] = accumulate ? add4(y[e], t) : t;
}

template <typename T>
cudaError_t launch_typed(const Plan& p, const float* h, int n, int F, int C, const void* w, float* partial,
                         cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(p.tiles), static_cast<unsigned>(p.ncb), static_cast<unsigned>(p.nfb));
  const T* wt = static_cast<const T*>(w);
  switch (p.nr) {
    case 1: launch(ffn_sparse_kernel<T, 1>, grid, kThreads, 0, stream, h, wt, n, F, C, p.fb, partial); break;
    case 2: launch(ffn_sparse_kernel<T, 2>, grid, kThreads, 0, stream, h, wt, n, F, C, p.fb, partial); break;
    case 4: launch(ffn_sparse_kernel<T, 4>, grid, kThreads, 0, stream, h, wt, n, F, C, p.fb, partial); break;
    default: launch(ffn_sparse_kernel<T, kTile>, grid, kThreads, 0, stream, h, wt, n, F, C, p.fb, partial); break;
  }
  return cudaGetLastError();
}

}  // namespace

size_t ffn_sparse_partial_floats(int n, int F, int C, int sm_count) {
  if (n <= 0 || F <= 0 || C <= 0) return 0;
  const Plan p = make_plan(n, F, C, sm_count);
  return static_cast<size_t>(p.nfb) * n * C;
}

bool ffn_sparse_supported(ElemType wtype, int n, int F, int C, const void* w, const float* h) {
  if (wtype != ElemType::kF16 && wtype != ElemType::kBF16) return false;
  if (n < 1 || n > kFfnSparseMaxRows || F <= 0 || C <= 0 || C % 8 != 0) return false;
  if (w == nullptr || h == nullptr) return false;
  return reinterpret_cast<uintptr_t>(w) % 16 == 0 && reinterpret_cast<uintptr_t>(h) % 16 == 0;
}

cudaError_t launch_ffn_sparse(ElemType wtype, const float* h, int n, int F, int C, const void* w, float* partial,
                              float* y, bool accumulate, int sm_count, cudaStream_t stream) {
  if (!ffn_sparse_supported(wtype, n, F, C, w, h) || partial == nullptr || y == nullptr ||
      reinterpret_cast<uintptr_t>(partial) % 16 != 0 || reinterpret_cast<uintptr_t>(y) % 16 != 0) {
    return cudaErrorInvalidValue;
  }
  const Plan p = make_plan(n, F, C, sm_count);
  if (p.ncb > 65535 || p.nfb > 65535) return cudaErrorInvalidValue;
  const cudaError_t e = wtype == ElemType::kF16 ? launch_typed<__half>(p, h, n, F, C, w, partial, stream)
                                                : launch_typed<__nv_bfloat16>(p, h, n, F, C, w, partial, stream);
  if (e != cudaSuccess) return e;
  const int64_t total4 = static_cast<int64_t>(n) * C / 4;
  const int64_t blocks = (total4 + 31) / 32;
  if (blocks > 0x7fffffff) return cudaErrorInvalidValue;
  launch(ffn_reduce_kernel, static_cast<unsigned>(blocks), dim3(32, kReduceWarps), 0, stream, 
      reinterpret_cast<const float4*>(partial), p.nfb, total4, reinterpret_cast<float4*>(y), accumulate);
  return cudaGetLastError();
}

}  // namespace rwkv::kernels
