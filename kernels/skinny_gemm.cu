// Tensor-core skinny products (see skinny_gemm.h).
//
// The MMA is m16n8k16 with the weights as A (16 output rows) and the batch
// as B (8 rows), so the batch is padded to 8, not 16. For A and B alike a
// lane (g = lane / 4, t = lane % 4) of the instruction holds the logical k
// pairs {2t, 2t+1} and {2t+8, 2t+9} of its row. A dot product does not care
// in which order k is enumerated, so the logical k of a 32-wide chunk is
// permuted: lane t's four logical k of step 0 are actual k 8t..8t+3, those of
// step 1 are 8t+4..8t+7. Then a lane's A fragments for both steps are one
// 16-byte load of W row g (and one of row g+8) at k 8t, and its B fragments
// one 16-byte read of the staged x row g at the same k: the weights go from
// global memory straight into registers (no shared-memory round trip, no
// ldmatrix), four lanes reading 64 contiguous bytes of a row, every byte used.
//
// Weights are streamed through a rolling register pipeline: kU chunks
// (kU x 1 KB per warp) are in flight; each chunk's slot is reloaded with the
// chunk kU ahead right after it is consumed. With 3-4 CTAs of 4 warps per SM
// that is ~48-64 KB of loads in flight per SM, above the ~25 KB that H100's
// bandwidth-latency product asks for. (cp.async/TMA into shared memory would
// add a shared-memory write and an ldmatrix per weight and buys nothing here:
// no weight is read twice.)
//
// x is staged per K slice: each thread reads 8 fp32 values, applies the
// activation, rounds to the weight type and writes 16 bytes. Staged rows are
// padded by 64 bytes, so the 8 lanes of a quarter warp (rows g, g+1; t = 0..3)
// read 8 distinct 16-byte bank groups. The first weight loads of a slice do
// not depend on x and are already in flight while it is staged.
#include "kernels/skinny_gemm.h"

#include <algorithm>

#include "kernels/kernel_util.cuh"
#include "kernels/mma.cuh"
#include "kernels/weights.cuh"

namespace rwkv::kernels {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kTileRows = 16 * kWarps;  // output rows per CTA
constexpr int kChunk = 32;              // k per warp step (two MMAs)
constexpr int kU = 4;                   // chunks in flight per warp
constexpr int kPad = 32;                // 16-bit values of padding per staged row (64 bytes)
constexpr int kMinSplitK = 256;         // shortest K range worth a CTA: two rounds of the pipeline
// The split aims at this many CTAs per SM: one wave, since 3 fit at every
// batch size (up to 168 registers x 128 threads, held by the launch bounds; ~33-37 KB of shared memory).
constexpr int kCtasPerSm = 3;
// x groups of 8 loaded per thread before any is stored: 4 round trips to
// L2 for a full slice instead of 16. At 64 rows that takes 168 registers,
// which still lets 3 CTAs share an SM (3 x 128 x 168 <= 65,536).
constexpr int kStageBatch = 4;

// K values staged per slice at NT n-tiles: ~33 KB of shared memory for every NT.
template <int NT>
struct Slice {
  static constexpr int kK = 2048 / NT;
};
static_assert(Slice<8>::kK % (kChunk * kU) == 0, "a slice holds whole pipeline rounds");

struct JobDesc {
  const void* w;
  const float* x;
  float* y;
  int rows, cols;
  int act, accumulate;
  int splits;       // K ranges
  int kc;           // K per range, a multiple of kChunk
  int tile_begin;   // first CTA of the job
  int counter_off;  // its row tiles' counters (splits > 1)
  int64_t partial_off;  // its partial sums, [splits][n][rows] (splits > 1)
};

struct Params {
  JobDesc jobs[kSkinnyMaxJobs];
  int count;
  int n;
  float* partial;
  int* counters;
};

struct Plan {
  int kc[kSkinnyMaxJobs];
  int splits[kSkinnyMaxJobs];
  int ctas = 0;
  SkinnyWorkspace ws;
};

int RowTiles(int rows) { return (rows + kTileRows - 1) / kTileRows; }

// One K chunk for every job of the launch, sized so that the launch has
// ~kCtasPerSm CTAs per SM; it depends on the shapes, not on n (so a row's
// result does not depend on its batch).
Plan MakePlan(int n, const GemvJob* jobs, int count, int sm_count) {
  Plan p;
  int64_t work = 0;  // 64-row tiles x K
  for (int i = 0; i < count; ++i) work += static_cast<int64_t>(RowTiles(jobs[i].rows)) * jobs[i].cols;
  const int64_t target = static_cast<int64_t>(std::max(sm_count, 1)) * kCtasPerSm;
  int64_t kc = (work + target - 1) / target;
  kc = std::max<int64_t>((kc + kChunk - 1) / kChunk * kChunk, kMinSplitK);
  for (int i = 0; i < count; ++i) {
    const int cols = jobs[i].cols;
    const int splits = static_cast<int>(std::max<int64_t>(1, (cols + kc - 1) / kc));
    // Even ranges: the last one is not left with a sliver.
    const int per = (cols + splits - 1) / splits;
    p.splits[i] = splits;
    p.kc[i] = (per + kChunk - 1) / kChunk * kChunk;
    p.ctas += RowTiles(jobs[i].rows) * splits;
    if (splits > 1) {
      p.ws.partial_floats += static_cast<size_t>(splits) * n * jobs[i].rows;
      p.ws.counters += RowTiles(jobs[i].rows);
    }
  }
  return p;
}

template <typename T, int NT>
__global__ void __launch_bounds__(kThreads, kCtasPerSm) skinny_kernel(const __grid_constant__ Params p) {
  constexpr int KS = Slice<NT>::kK;
  constexpr int kStride = KS + kPad;
  constexpr int kSliceChunks = KS / kChunk;
  __shared__ __align__(16) T xs[NT * 8 * kStride];
  __shared__ int last_cta;

  int j = 0;
  while (j + 1 < p.count && static_cast<int>(blockIdx.x) >= p.jobs[j + 1].tile_begin) ++j;
  const JobDesc& job = p.jobs[j];
  const int local = static_cast<int>(blockIdx.x) - job.tile_begin;
  const int rt = local / job.splits, split = local - rt * job.splits;
  const int rows = job.rows, cols = job.cols, n = p.n;
  const int k_begin = split * job.kc;
  const int k_end = min(cols, k_begin + job.kc);
  const int nchunks = (k_end - k_begin + kChunk - 1) / kChunk;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int row_lo = rt * kTileRows + warp * 16 + g, row_hi = row_lo + 8;
  // Rows past the matrix read its last row (never stored).
  const T* w_lo = static_cast<const T*>(job.w) + static_cast<int64_t>(min(row_lo, rows - 1)) * cols + k_begin + 8 * t;
  const T* w_hi = static_cast<const T*>(job.w) + static_cast<int64_t>(min(row_hi, rows - 1)) * cols + k_begin + 8 * t;
  // This lane's 8 values of chunk c exist iff c * kChunk < k_lane. A warp whose
  // 16 rows all lie past the matrix (the last tile of a short one) loads nothing.
  const int k_lane = rt * kTileRows + warp * 16 < rows ? k_end - k_begin - 8 * t : 0;

  uint4 lo[kU], hi[kU];
#pragma unroll
  for (int u = 0; u < kU; ++u) {
    const bool ok = u * kChunk < k_lane;
    lo[u] = ok ? load_stream(w_lo + u * kChunk) : make_uint4(0, 0, 0, 0);
    hi[u] = ok ? load_stream(w_hi + u * kChunk) : make_uint4(0, 0, 0, 0);
  }
  // The first weights are in flight while the kernel before still runs (no
  // kernel of a pass writes weights); x, the split-K workspace and y after.
  pdl_wait();  // programmatic launch: the previous kernel's writes first (kernel_util.cuh)
  float acc[NT][4];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
    for (int i = 0; i < 4; ++i) acc[nt][i] = 0.0f;
  }
  const int ntiles = (n + 7) / 8;  // n-tiles holding batch rows (the rest are skipped)

  for (int c0 = 0; c0 < nchunks; c0 += kU) {
    if (c0 % kSliceChunks == 0) {
      // Stage x[0:8 NT, ks : ks + width) (zeros past n and past the K range).
      const int ks = k_begin + c0 * kChunk;
      const int width = min(KS, (k_end - ks + kChunk * kU - 1) / (kChunk * kU) * (kChunk * kU));
      const int groups = width / 8;
      if (c0 > 0) __syncthreads();  // every warp is done with the previous slice
      // kStageBatch groups per thread per round, all loads issued before the
      // first use: a full slice (2048 groups of 8) is 16 groups per thread,
      // so 4 round trips to L2 instead of 16.
      const int total = NT * 8 * groups, act = job.act;
      for (int e0 = threadIdx.x; e0 < total; e0 += kStageBatch * kThreads) {
        float4 a[kStageBatch], b[kStageBatch];
#pragma unroll
        for (int i = 0; i < kStageBatch; ++i) {
          const int e = e0 + i * kThreads;
          const int r = e / groups, k = ks + 8 * (e - r * groups);
          a[i] = b[i] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
          if (e < total && r < n && k < k_end) {
            const float* src = job.x + static_cast<int64_t>(r) * cols + k;
            a[i] = *reinterpret_cast<const float4*>(src);
            b[i] = *reinterpret_cast<const float4*>(src + 4);
          }
        }
#pragma unroll
        for (int i = 0; i < kStageBatch; ++i) {
          const int e = e0 + i * kThreads;
          if (e >= total) break;
          const int r = e / groups, q = e - r * groups;
          // Zeros (past n or the K range) stay zeros: no activation of padding.
          const bool real = r < n && ks + 8 * q < k_end;
          uint4 v = make_uint4(0, 0, 0, 0);
          if (real) {
            v.x = pack2(activate(a[i].x, act), activate(a[i].y, act), T());
            v.y = pack2(activate(a[i].z, act), activate(a[i].w, act), T());
            v.z = pack2(activate(b[i].x, act), activate(b[i].y, act), T());
            v.w = pack2(activate(b[i].z, act), activate(b[i].w, act), T());
          }
          *reinterpret_cast<uint4*>(&xs[r * kStride + 8 * q]) = v;
        }
      }
      __syncthreads();
    }
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const int c = c0 + u;
      const T* xrow = &xs[g * kStride + (c % kSliceChunks) * kChunk + 8 * t];
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        if (nt < ntiles) {
          const uint4 xv = *reinterpret_cast<const uint4*>(xrow + nt * 8 * kStride);
          mma(acc[nt], lo[u].x, hi[u].x, lo[u].y, hi[u].y, xv.x, xv.y, T());
          mma(acc[nt], lo[u].z, hi[u].z, lo[u].w, hi[u].w, xv.z, xv.w, T());
        }
      }
      const int cn = c + kU;
      const bool ok = cn * kChunk < k_lane;
      lo[u] = ok ? load_stream(w_lo + cn * kChunk) : make_uint4(0, 0, 0, 0);
      hi[u] = ok ? load_stream(w_hi + cn * kChunk) : make_uint4(0, 0, 0, 0);
    }
  }

  // acc[nt] = {y[b][row_lo], y[b+1][row_lo], y[b][row_hi], y[b+1][row_hi]}, b = 8 nt + 2t.
  if (job.splits == 1) {
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int b = nt * 8 + 2 * t + (i & 1), r = i < 2 ? row_lo : row_hi;
        if (b < n && r < rows) {
          float* out = job.y + static_cast<int64_t>(b) * rows + r;
          *out = job.accumulate ? *out + acc[nt][i] : acc[nt][i];
        }
      }
    }
    return;
  }
  float* part = p.partial + job.partial_off;
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int b = nt * 8 + 2 * t + (i & 1), r = i < 2 ? row_lo : row_hi;
      if (b < n && r < rows) __stcg(part + (static_cast<int64_t>(split) * n + b) * rows + r, acc[nt][i]);
    }
  }
  // The last CTA of the row tile to finish adds the partial sums, in split
  // order whichever CTA that is.
  __threadfence();
  __syncthreads();
  int* counter = p.counters + job.counter_off + rt;
  if (threadIdx.x == 0) last_cta = atomicAdd(counter, 1) == job.splits - 1;
  __syncthreads();
  if (!last_cta) return;
  __threadfence();
  const int splits = job.splits;
  // Four rows a thread as float4s where the layout allows (every model
  // matrix): up to kSumBatch splits' loads in flight at once, summed in split
  // order as the scalar loop does, so the bits are the same.
  if ((rows & 3) == 0 && (job.partial_off & 3) == 0 && (reinterpret_cast<uintptr_t>(p.partial) & 15) == 0 &&
      (reinterpret_cast<uintptr_t>(job.y) & 15) == 0) {
    constexpr int kQ = kTileRows / 4;  // float4s of a row tile
    constexpr int kSumBatch = 8;
    for (int e = threadIdx.x; e < n * kQ; e += kThreads) {
      const int b = e / kQ, r = rt * kTileRows + 4 * (e - b * kQ);
      if (r >= rows) continue;  // rows % 4 == 0: all four or none
      const float* src = part + static_cast<int64_t>(b) * rows + r;
      const int64_t split_stride = static_cast<int64_t>(n) * rows;
      float4 s = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      for (int sp0 = 0; sp0 < splits; sp0 += kSumBatch) {
        float4 v[kSumBatch];
#pragma unroll
        for (int i = 0; i < kSumBatch; ++i) {
          if (sp0 + i < splits) v[i] = __ldcg(reinterpret_cast<const float4*>(src + (sp0 + i) * split_stride));
        }
#pragma unroll
        for (int i = 0; i < kSumBatch; ++i) {
          if (sp0 + i < splits) s.x += v[i].x, s.y += v[i].y, s.z += v[i].z, s.w += v[i].w;
        }
      }
      float4* out = reinterpret_cast<float4*>(job.y + static_cast<int64_t>(b) * rows + r);
      if (job.accumulate) {
        const float4 o = *out;
        s = make_float4(o.x + s.x, o.y + s.y, o.z + s.z, o.w + s.w);
      }
      *out = s;
    }
  } else {
    for (int e = threadIdx.x; e < n * kTileRows; e += kThreads) {
      const int b = e / kTileRows, r = rt * kTileRows + (e - b * kTileRows);
      if (r >= rows) continue;
      float s = 0.0f;
      for (int sp = 0; sp < splits; ++sp) s += __ldcg(part + (static_cast<int64_t>(sp) * n + b) * rows + r);
      float* out = job.y + static_cast<int64_t>(b) * rows + r;
      *out = job.accumulate ? *out + s : s;
    }
  }
  if (threadIdx.x == 0) *counter = 0;  // ready for the next launch
}

template <typename T>
cudaError_t launch_typed(const Params& p, int ctas, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(ctas));
  if (p.n <= 8) {
    launch(skinny_kernel<T, 1>, grid, kThreads, 0, stream, p);
  } else if (p.n <= 16) {
    launch(skinny_kernel<T, 2>, grid, kThreads, 0, stream, p);
  } else if (p.n <= 32) {
    launch(skinny_kernel<T, 4>, grid, kThreads, 0, stream, p);
  } else {
    launch(skinny_kernel<T, 8>, grid, kThreads, 0, stream, p);
  }
  return cudaGetLastError();
}

}  // namespace

bool skinny_gemm_supported(ElemType wtype, int n, const GemvJob& job) {
  if (wtype != ElemType::kF16 && wtype != ElemType::kBF16) return false;
  if (n < 1 || n > kSkinnyMaxRows || job.rows <= 0 || job.cols <= 0 || job.cols % 8 != 0) return false;
  if (job.w == nullptr || job.x == nullptr || job.y == nullptr) return false;
  return reinterpret_cast<uintptr_t>(job.w) % 16 == 0 && reinterpret_cast<uintptr_t>(job.x) % 16 == 0;
}

SkinnyWorkspace skinny_gemm_workspace(int n, const GemvJob* jobs, int count, int sm_count) {
  if (jobs == nullptr || count < 1 || count > kSkinnyMaxJobs) return {};
  return MakePlan(n, jobs, count, sm_count).ws;
}

cudaError_t launch_skinny_gemm(ElemType wtype, int n, const GemvJob* jobs, int count, float* partial,
                               size_t partial_floats, int* counters, int counter_capacity, int sm_count,
                               cudaStream_t stream) {
  if (jobs == nullptr || count < 1 || count > kSkinnyMaxJobs) return cudaErrorInvalidValue;
  for (int i = 0; i < count; ++i) {
    if (!skinny_gemm_supported(wtype, n, jobs[i])) return cudaErrorInvalidValue;
  }
  const Plan plan = MakePlan(n, jobs, count, sm_count);
  if (plan.ws.partial_floats > partial_floats || plan.ws.counters > counter_capacity) return cudaErrorInvalidValue;
  if ((plan.ws.counters > 0 || plan.ws.partial_floats > 0) && (partial == nullptr || counters == nullptr)) {
    return cudaErrorInvalidValue;
  }
  Params p{};
  p.count = count;
  p.n = n;
  p.partial = partial;
  p.counters = counters;
  int tile = 0, counter = 0;
  int64_t off = 0;
  for (int i = 0; i < count; ++i) {
    const GemvJob& job = jobs[i];
    p.jobs[i] = JobDesc{job.w,          job.x,        job.y, job.rows, job.cols, static_cast<int>(job.act),
                        job.accumulate, plan.splits[i], plan.kc[i], tile,   counter,  off};
    tile += RowTiles(job.rows) * plan.splits[i];
    if (plan.splits[i] > 1) {
      counter += RowTiles(job.rows);
      off += static_cast<int64_t>(plan.splits[i]) * n * job.rows;
    }
  }
  if (wtype == ElemType::kF16) return launch_typed<__half>(p, plan.ctas, stream);
  return launch_typed<__nv_bfloat16>(p, plan.ctas, stream);
}

}  // namespace rwkv::kernels
