// Skinny products for small batches (see gemv.h): x staged in shared memory,
// lane groups streaming rows of W, several jobs per launch.
//
// Layout of the work: grid.y enumerates row blocks of every job (a job's
// blocks are contiguous, found by a scan of at most kGemvMaxJobs starts);
// grid.x enumerates 8-row tiles of the batch and is the fastest grid
// dimension, so the tiles of one row block run at the same time and only the
// first read of a weight line goes to DRAM. In a block, each warp holds 32/G
// lane groups of G lanes (G = 32 for long rows; fewer lanes for the short
// LoRA rows, so that lanes are not idle); a group owns kR consecutive output
// rows and walks K in 8-element chunks (chunk q goes to lane q mod G).
//
// Shared-memory layout of a staged row: a chunk's 8 values are split into
// two float4 halves stored KT/2 floats apart, so the two 16-byte reads of a
// chunk by consecutive lanes hit consecutive addresses (no bank conflicts;
// the plain layout would make them 32 bytes apart, a 2-way conflict).
#include "kernels/gemv.h"

#include "kernels/kernel_util.cuh"
#include "kernels/weights.cuh"

namespace rwkv::kernels {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kR = 2;              // output rows per lane group: each staged x value feeds kR weights
constexpr int kU = 4;              // chunks (of 8 weights) loaded per lane and step
constexpr int kTile = 8;           // batch rows per block
constexpr int kSmemFloats = 8192;  // 32 KB of staged x: K-slices of 8192 / NR values

struct JobDesc {
  const void* w;
  const float* x;
  float* y;
  int rows, cols;
  int act, accumulate;
  int group_lanes;     // G: lanes per output row, a power of two in [4, 32]
  int rows_per_block;  // kWarps * (32 / G) * kR
  int block_begin;     // first grid.y index of this job
};

struct Params {
  JobDesc jobs[kGemvMaxJobs];
  int count;
  int n;
};

// The weights of chunks q, q + G, ..., q + (kU-1) G of the kR rows (zero
// past the slice or the matrix).
template <typename T>
__device__ __forceinline__ void load_chunks(const T* const (&wrow)[kR], const bool (&live)[kR], int k0, int q, int G,
                                            int nq, uint4 (&w)[kU][kR]) {
#pragma unroll
  for (int u = 0; u < kU; ++u) {
#pragma unroll
    for (int rr = 0; rr < kR; ++rr) {
      const int qu = q + u * G;
      w[u][rr] = live[rr] && qu < nq ? load_stream(wrow[rr] + k0 + 8 * qu) : make_uint4(0, 0, 0, 0);
    }
  }
}

// acc[rr][r] += W[rr] chunk . x[r] chunk, for the chunk q of the staged slice.
template <typename T, int NR>
__device__ __forceinline__ void chunk_fma(const uint4 (&wv)[kR], const float4* __restrict__ xs, int q, int kt4,
                                          float (&acc)[kR][NR]) {
  float w[kR][8];
#pragma unroll
  for (int rr = 0; rr < kR; ++rr) widen8<T>(wv[rr], w[rr]);
#pragma unroll
  for (int r = 0; r < NR; ++r) {
    // Row r's slot is kt4 float4s: the chunks' first halves, then their second halves.
    const float4 a = xs[r * kt4 + q], b = xs[r * kt4 + kt4 / 2 + q];
    const float xv[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
#pragma unroll
    for (int rr = 0; rr < kR; ++rr) {
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[rr][r] = fmaf(w[rr][i], xv[i], acc[rr][r]);
    }
  }
}

template <typename T, int NR>
__global__ void __launch_bounds__(kThreads) gemv_kernel(const __grid_constant__ Params p) {
  __shared__ __align__(16) float xs_raw[kSmemFloats];
  constexpr int KT = kSmemFloats / NR;  // K values staged per slice (a multiple of 8 * 32)
  int j = 0;
  while (j + 1 < p.count && static_cast<int>(blockIdx.y) >= p.jobs[j + 1].block_begin) ++j;
  const JobDesc& job = p.jobs[j];
  const int rows = job.rows, cols = job.cols, G = job.group_lanes, act = job.act;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int sub = lane & (G - 1);
  const int row0 = (static_cast<int>(blockIdx.y) - job.block_begin) * job.rows_per_block +
                   (warp * (32 / G) + lane / G) * kR;
  const int t0 = blockIdx.x * NR;
  const int nr = min(NR, p.n - t0);
  const char* wbase = static_cast<const char*>(job.w);
  const float* x = job.x + static_cast<int64_t>(t0) * cols;
  const float4* xs = reinterpret_cast<const float4*>(xs_raw);

  const T* wrow[kR];
  bool live[kR];
#pragma unroll
  for (int rr = 0; rr < kR; ++rr) {
    live[rr] = row0 + rr < rows;
    wrow[rr] = reinterpret_cast<const T*>(wbase) + static_cast<int64_t>(live[rr] ? row0 + rr : 0) * cols;
  }
  float acc[kR][NR];
#pragma unroll
  for (int rr = 0; rr < kR; ++rr) {
#pragma unroll
    for (int r = 0; r < NR; ++r) acc[rr][r] = 0.0f;
  }

  // A slice's first weights do not depend on x: their loads are issued
  // before the staging barrier, so the two latencies overlap; the first
  // slice's before pdl_wait(), while the kernels before still run (weights
  // are written only by uploads, which synchronize).
  uint4 cur[kU][kR];
  load_chunks<T>(wrow, live, 0, sub, G, min(KT, cols) / 8, cur);
  pdl_wait();  // programmatic launch: the previous kernel's writes first (kernel_util.cuh)
  for (int k0 = 0; k0 < cols; k0 += KT) {
    const int kt = min(KT, cols - k0);  // a multiple of 8
    const int kt4 = kt / 4;             // float4s per staged row
    const int nq = kt / 8;              // chunks in the slice
    int q = sub;
    if (k0 > 0) {
      load_chunks<T>(wrow, live, k0, q, G, nq, cur);
      __syncthreads();  // every lane is done with the previous slice
    }
    for (int e = threadIdx.x; e < NR * kt4; e += kThreads) {
      const int r = e / kt4, q4 = e - r * kt4;
      float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);  // rows past the batch: never written out
      if (r < nr) {
        v = *reinterpret_cast<const float4*>(x + static_cast<int64_t>(r) * cols + k0 + 4 * q4);
        v.x = activate(v.x, act);
        v.y = activate(v.y, act);
        v.z = activate(v.z, act);
        v.w = activate(v.w, act);
      }
      reinterpret_cast<float4*>(xs_raw)[r * kt4 + (q4 & 1) * (kt4 / 2) + (q4 >> 1)] = v;
    }
    __syncthreads();
    // kU chunks per lane per step: kU * kR independent 16-byte loads in flight.
    for (; q < nq; q += kU * G) {
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        if (q + u * G < nq) chunk_fma<T, NR>(cur[u], xs, q + u * G, kt4, acc);
      }
      if (q + kU * G < nq) load_chunks<T>(wrow, live, k0, q + kU * G, G, nq, cur);
    }
  }

#pragma unroll
  for (int rr = 0; rr < kR; ++rr) {
#pragma unroll
    for (int r = 0; r < NR; ++r) {
      float v = acc[rr][r];
      for (int o = G / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      if (sub == 0 && live[rr] && r < nr) {
        float* out = job.y + static_cast<int64_t>(t0 + r) * rows + row0 + rr;
        *out = job.accumulate ? *out + v : v;
      }
    }
  }
}

template <typename T>
cudaError_t launch_typed(const Params& p, int nr, dim3 grid, cudaStream_t stream) {
  switch (nr) {
    case 1: launch(gemv_kernel<T, 1>, grid, kThreads, 0, stream, p); break;
    case 2: launch(gemv_kernel<T, 2>, grid, kThreads, 0, stream, p); break;
    case 4: launch(gemv_kernel<T, 4>, grid, kThreads, 0, stream, p); break;
    default: launch(gemv_kernel<T, kTile>, grid, kThreads, 0, stream, p); break;
  }
  return cudaGetLastError();
}

}  // namespace

bool gemv_supported(ElemType wtype, int n, const GemvJob& job) {
  if (wtype != ElemType::kF16 && wtype != ElemType::kBF16) return false;
  if (n < 1 || n > kGemvMaxRows || job.rows <= 0 || job.cols <= 0 || job.cols % 8 != 0) return false;
  if (job.w == nullptr || job.x == nullptr || job.y == nullptr) return false;
  return reinterpret_cast<uintptr_t>(job.w) % 16 == 0 && reinterpret_cast<uintptr_t>(job.x) % 16 == 0;
}

cudaError_t launch_gemv(ElemType wtype, int n, const GemvJob* jobs, int count, cudaStream_t stream) {
  if (jobs == nullptr || count < 1 || count > kGemvMaxJobs) return cudaErrorInvalidValue;
  Params p{};
  p.count = count;
  p.n = n;
  int blocks = 0;
  for (int i = 0; i < count; ++i) {
    const GemvJob& job = jobs[i];
    if (!gemv_supported(wtype, n, job)) return cudaErrorInvalidValue;
    const int chunks = job.cols / 8;
    int G = 32;  // the fewest lanes (>= 4) that still give each lane a chunk
    while (G > 4 && G / 2 >= chunks) G /= 2;
    const int rows_per_block = kWarps * (32 / G) * kR;
    p.jobs[i] = {job.w,         job.x, job.y, job.rows, job.cols, static_cast<int>(job.act), job.accumulate ? 1 : 0,
                 G,             rows_per_block, blocks};
    blocks += (job.rows + rows_per_block - 1) / rows_per_block;
  }
  if (blocks > 65535) return cudaErrorInvalidValue;
  const int nr = n >= kTile ? kTile : (n > 2 ? 4 : n);
  const dim3 grid(static_cast<unsigned>((n + nr - 1) / nr), static_cast<unsigned>(blocks));
  if (wtype == ElemType::kF16) return launch_typed<__half>(p, nr, grid, stream);
  return launch_typed<__nv_bfloat16>(p, nr, grid, stream);
}

}  // namespace rwkv::kernels
