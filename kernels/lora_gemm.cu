// Tensor-core RWKV-7 LoRA products for medium batches (see lora_gemm.h).
//
// The MMA is m16n8k16 with W as A (16 output columns of y a warp) and the
// batch as B (8 rows an n-tile, 4 n-tiles a warp: 8 warps, each 16 columns x
// 32 batch rows of the 64 x 64 tile, so 2 warps a scheduler at one CTA an SM;
// at 4 warps of 64 rows each, one warp a scheduler issued every ~6 cycles on
// its dependent ldmatrix / mma chain, ncu). Per 64-wide K chunk a
// stage holds the CTA's 64 W rows and 64 x rows (8 KB each, 16-bit), both
// filled by cp.async (rows beyond the matrix or the batch and K beyond cols
// zero-filled, so every MMA is whole) and XOR-swizzled by row (16-byte piece
// q of row r at q ^ (r & 7)), so the ldmatrix reads of 8 consecutive rows hit
// 8 distinct bank groups; all kStages stages are issued before the first is
// used. Products and sums are fp32 (tensor-core accumulation), K in order.
#include "kernels/lora_gemm.h"

#include <cooperative_groups.h>

#include <algorithm>
#include <cstdint>

#include "kernels/kernel_util.cuh"
#include "kernels/mma.cuh"
#include "kernels/weights.cuh"

namespace rwkv::kernels {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kTileM = 64;  // output columns (W rows) per CTA: 16 a warp, 4 column groups
constexpr int kTileN = 64;           // batch rows per CTA
constexpr int kChunk = 64;           // K per stage: 8 16-bit pieces (16 fp32 pieces) a row
constexpr int kStages = 4;
constexpr int kDeepStages = 8;  // a long launch of at most one CTA an SM (launch_lora_gemm)
constexpr int kSplits = 8;  // K ranges (one cluster's CTAs) of a long-K tile
constexpr int kWPieces = kTileM * 8;    // 16-byte pieces of W per stage
constexpr int kXPieces = kTileN * 8;    // 16-byte pieces of x per stage
constexpr size_t SmemBytes(int stages) { return static_cast<size_t>(stages) * (kWPieces + kXPieces) * 16; }
constexpr size_t kSmemBytes = SmemBytes(kStages);
static_assert(kLoraGemmMaxCols <= kChunk * 8, "K fits the chunk loop's bound");

struct JobDesc {
  const void* w;
  const void* x;
  void* y;
  int rows, cols;
  int accumulate;
  int y16;    // y in the weight type, y_act applied (LoraJob)
  int y_act;  // GemvAct
  int tile_begin;  // first CTA (blockIdx.x) of the job
};

struct Params {
  JobDesc jobs[kLoraGemmMaxJobs];
  int count;
  int n;
};

int MTiles(int rows) { return (rows + kTileM - 1) / kTileM; }

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* smem) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}

// 16 bytes global -> shared, or 16 zero bytes where !valid (src not read).
__device__ __forceinline__ void cp_async16(void* smem, const void* src, bool valid) {
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(s), "l"(src), "r"(valid ? 16 : 0) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(kPending) : "memory");
}

// Where 16-byte piece q of a 16-bit tile row lives.
__device__ __forceinline__ int slot(int row, int q) { return row * 8 + (q ^ (row & 7)); }

// acc (this thread's share of the CTA's 64 x 64 tile, zeroed by the caller)
// += x[n0.., kb..ke) @ W[m0.., kb..ke)^T through the cp.async pipeline. Ends
// with every stage drained and a barrier, so the caller may reuse the
// shared memory.
template <typename T, int kSt = kStages>
__device__ __forceinline__ void mma_k_range(const T* __restrict__ W, const T* __restrict__ X, int rows, int cols,
                                            int n, int m0, int n0, int kb, int ke, uint4* smem, float (&acc)[4][4]) {
  uint4* ws = smem;                   // [kSt][kWPieces], swizzled
  uint4* xs = smem + kSt * kWPieces;  // [kSt][kXPieces], swizzled
  const int nch = ke > kb ? (ke - kb + kChunk - 1) / kChunk : 0;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  // Chunk c of rows [r0, r0 + 64) of M (those below `limit`) into stage st
  // of `tiles`. Piece pc of a stage: row pc / 8, 16-byte piece pc % 8 (8
  // threads a row: coalesced).
  static_assert(kWPieces == kXPieces, "one staging routine for both operands");
  auto issue = [&](const T* __restrict__ M, int r0, int limit, uint4* tiles, int c, int st) {
#pragma unroll
    for (int i = 0; i < kWPieces / kThreads; ++i) {
      const int pc = tid + i * kThreads, r = pc >> 3, q = pc & 7, k = kb + c * kChunk + q * 8;
      const bool ok = r0 + r < limit && k < ke;
      cp_async16(tiles + st * kWPieces + slot(r, q), ok ? M + static_cast<int64_t>(r0 + r) * cols + k : M, ok);
    }
  };
  auto issue_w = [&](int c, int st) { issue(W, m0, rows, ws, c, st); };
  auto issue_x = [&](int c, int st) { issue(X, n0, n, xs, c, st); };
  // Weights first: no kernel writes them, so before the wait.
#pragma unroll
  for (int s = 0; s < kSt; ++s) {
    if (s < nch) issue_w(s, s);
  }
  pdl_wait();  // programmatic launch: the previous kernel's writes first (kernel_util.cuh)
#pragma unroll
  for (int s = 0; s < kSt; ++s) {
    if (s < nch) issue_x(s, s);
    cp_async_commit();  // one group a stage (empty past the last chunk)
  }
  const int wm = warp & 3, wn = warp >> 2;  // column group, batch half
  const int arow = wm * 16 + (lane & 15), ahi = lane >> 4;
  const int brow = (lane & 7) + ((lane >> 4) << 3), bhi = (lane >> 3) & 1;
  for (int c = 0; c < nch; ++c) {
    const int st = c % kSt;
    cp_async_wait<kSt - 1>();  // chunk c's group (one group committed per chunk since)
    __syncthreads();
    const uint4* wst = ws + st * kWPieces;
    const uint4* xst = xs + st * kXPieces;
#pragma unroll
    for (int ks = 0; ks < kChunk / 16; ++ks) {
      uint32_t a[4];
      ldmatrix_x4(a, &wst[slot(arow, 2 * ks + ahi)]);
#pragma unroll
      for (int np = 0; np < 2; ++np) {
        uint32_t bf[4];
        ldmatrix_x4(bf, &xst[slot(wn * 32 + np * 16 + brow, 2 * ks + bhi)]);
        mma(acc[2 * np], a[0], a[1], a[2], a[3], bf[0], bf[1], T());
        mma(acc[2 * np + 1], a[0], a[1], a[2], a[3], bf[2], bf[3], T());
      }
    }
    __syncthreads();  // stage st is free again
    if (c + kSt < nch) {
      issue_w(c + kSt, st);
      issue_x(c + kSt, st);
    }
    cp_async_commit();
  }
  cp_async_wait<0>();  // only empty groups remain
  __syncthreads();
}

// acc[t][i] sits at batch row 32 (warp / 4) + 8 t + 2 q (+1 for odd i) and
// output column 16 (warp % 4) + g (+8 for i >= 2) of the tile (g = lane / 4,
// q = lane % 4).
__device__ __forceinline__ int acc_row(int t, int i) {
  return (threadIdx.x >> 7) * 32 + 8 * t + 2 * ((threadIdx.x & 31) & 3) + (i & 1);
}
__device__ __forceinline__ int acc_col(int i) {
  return ((threadIdx.x >> 5) & 3) * 16 + ((threadIdx.x & 31) >> 2) + (i < 2 ? 0 : 8);
}

// Which job and which 64-column tile of it blockIdx.x / per names.
__device__ __forceinline__ const JobDesc& find_job(const Params& p, int tile, int* m0) {
  int j = 0;
  while (j + 1 < p.count && tile >= p.jobs[j + 1].tile_begin) ++j;
  *m0 = (tile - p.jobs[j].tile_begin) * kTileM;
  return p.jobs[j];
}

// kY16: the launch has jobs with a 16-bit, activated y (JobDesc::y16). A
// launch without them takes the kernel without that epilogue, whose code
// is that much shorter (measured: the "out" side's launch, all fp32, ran
// 1.1 us slower with the activation's code in it).
template <typename T, bool kY16>
__global__ void __launch_bounds__(kThreads, 3) lora_gemm_kernel(const __grid_constant__ Params p) {
  extern __shared__ uint4 smem[];
  int m0;
  const JobDesc& job = find_job(p, static_cast<int>(blockIdx.x), &m0);
  const int n0 = static_cast<int>(blockIdx.y) * kTileN;
  const int n = p.n, rows = job.rows;
  float acc[4][4];
#pragma unroll
  for (int t = 0; t < 4; ++t) acc[t][0] = acc[t][1] = acc[t][2] = acc[t][3] = 0.0f;
  mma_k_range<T>(static_cast<const T*>(job.w), static_cast<const T*>(job.x), rows, job.cols, n, m0, n0, 0, job.cols,
                 smem, acc);
#pragma unroll
  for (int t = 0; t < 4; ++t) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int r = n0 + acc_row(t, i), col = m0 + acc_col(i);
      if (kY16 && r < n && col < rows && job.y16) {
        static_cast<T*>(job.y)[static_cast<int64_t>(r) * rows + col] = from_f32(activate(acc[t][i], job.y_act), T());
      } else if (r < n && col < rows) {
        float* out = static_cast<float*>(job.y) + static_cast<int64_t>(r) * rows + col;
        *out = job.accumulate ? *out + acc[t][i] : acc[t][i];
      }
    }
  }
}

// Long K (the LoRA "in" products, K = C): the kSplits CTAs of a thread-block
// cluster each take one K range of the same tile; their partial tiles meet in
// shared memory and CTA s adds, for batch rows [8 s, 8 s + 8) of the tile,
// the kSplits partials in rank order over distributed shared memory (a fixed
// order: the result does not depend on scheduling, on n or on the other jobs
// of the launch).
// Thread-block clusters and cp.async.wait_group need sm_90 (the backend
// takes this path only there, CudaBackend::Init); other targets compile an
// empty body.
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 900
#define RWKV_LORA_CLUSTER __cluster_dims__(kSplits, 1, 1)
#else
#define RWKV_LORA_CLUSTER
#endif
template <typename T, int kSt, bool kY16>
__global__ void RWKV_LORA_CLUSTER __launch_bounds__(kThreads, kSt > kStages ? 1 : 3)
    lora_split_kernel(const __grid_constant__ Params p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  extern __shared__ uint4 smem[];
  namespace cg = cooperative_groups;
  cg::cluster_group cluster = cg::this_cluster();
  const int split = static_cast<int>(cluster.block_rank());
  int m0;
  const JobDesc& job = find_job(p, static_cast<int>(blockIdx.x) / kSplits, &m0);
  const int n0 = static_cast<int>(blockIdx.y) * kTileN;
  const int n = p.n, rows = job.rows, cols = job.cols;
  const int kc = ((cols + kSplits - 1) / kSplits + kChunk - 1) / kChunk * kChunk;
  const int kb = split * kc, ke = min(cols, kb + kc);
  float acc[4][4];
#pragma unroll
  for (int t = 0; t < 4; ++t) acc[t][0] = acc[t][1] = acc[t][2] = acc[t][3] = 0.0f;
  mma_k_range<T, kSt>(static_cast<const T*>(job.w), static_cast<const T*>(job.x), rows, cols, n, m0, n0, kb, ke,
                      smem, acc);
  // This CTA's partial tile, [batch row][column], in its (drained) shared memory.
  float* part = reinterpret_cast<float*>(smem);
#pragma unroll
  for (int t = 0; t < 4; ++t) {
#pragma unroll
    for (int i = 0; i < 4; ++i) part[acc_row(t, i) * kTileM + acc_col(i)] = acc[t][i];
  }
  cluster.sync();
  {
    constexpr int kRowsPerRank = kTileN / kSplits;
    static_assert(kRowsPerRank * (kTileM / 2) == kThreads, "one float2 of the tile a thread");
    const int lr = split * kRowsPerRank + threadIdx.x / (kTileM / 2), lc = 2 * (threadIdx.x % (kTileM / 2));
    float2 s = make_float2(0.0f, 0.0f);
#pragma unroll
    for (int r = 0; r < kSplits; ++r) {
      const float2 v = *reinterpret_cast<const float2*>(cluster.map_shared_rank(part + lr * kTileM + lc, r));
      s.x += v.x, s.y += v.y;
    }
    const int row = n0 + lr, col = m0 + lc;
    if (kY16 && row < n && col < rows && job.y16) {  // rows % 4 == 0: both columns or none
      T* out = static_cast<T*>(job.y) + static_cast<int64_t>(row) * rows + col;
      out[0] = from_f32(activate(s.x, job.y_act), T());
      out[1] = from_f32(activate(s.y, job.y_act), T());
    } else if (row < n && col < rows) {
      float2* out = reinterpret_cast<float2*>(static_cast<float*>(job.y) + static_cast<int64_t>(row) * rows + col);
      if (job.accumulate) {
        const float2 o = *out;
        s = make_float2(o.x + s.x, o.y + s.y);
      }
      *out = s;
    }
  }
  cluster.sync();  // no CTA leaves while another still reads its shared memory
#endif
}
#undef RWKV_LORA_CLUSTER

template <typename T, int kSt, bool kY16>
cudaError_t launch_split(const Params& p, int tiles, cudaStream_t stream) {
  // Above the 48 KB default; per call (the attribute is per device, and a
  // call costs less than the launch), as kernels/sample.cu does.
  const cudaError_t attr = cudaFuncSetAttribute(lora_split_kernel<T, kSt, kY16>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                static_cast<int>(SmemBytes(kSt)));
  if (attr != cudaSuccess) return attr;
  const unsigned ny = static_cast<unsigned>((p.n + kTileN - 1) / kTileN);
  launch(lora_split_kernel<T, kSt, kY16>, dim3(static_cast<unsigned>(tiles * kSplits), ny), kThreads, SmemBytes(kSt), stream,
         p);
  return cudaGetLastError();
}

template <typename T, bool kY16>
cudaError_t launch_typed(const Params& p, int tiles, bool split, bool deep, cudaStream_t stream) {
  if (split) {
    return deep ? launch_split<T, kDeepStages, kY16>(p, tiles, stream) : launch_split<T, kStages, kY16>(p, tiles, stream);
  }
  const cudaError_t attr = cudaFuncSetAttribute(lora_gemm_kernel<T, kY16>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                static_cast<int>(kSmemBytes));
  if (attr != cudaSuccess) return attr;
  const unsigned ny = static_cast<unsigned>((p.n + kTileN - 1) / kTileN);
  launch(lora_gemm_kernel<T, kY16>, dim3(static_cast<unsigned>(tiles), ny), kThreads, kSmemBytes, stream, p);
  return cudaGetLastError();
}

}  // namespace

bool lora_gemm_supported(ElemType wtype, int n, const LoraJob& job) {
  if (wtype != ElemType::kF16 && wtype != ElemType::kBF16) return false;
  if (n < 1 || n > (1 << 20) || job.rows <= 0 || job.rows % 4 != 0 || job.cols <= 0 || job.cols % 8 != 0) {
    return false;
  }
  if (job.w == nullptr || job.x == nullptr || job.y == nullptr) return false;
  if ((job.y16 && job.accumulate) || (job.y_act != GemvAct::kNone && !job.y16)) {
    return false;
  }
  return Aligned16(job.w) && Aligned16(job.x) && Aligned16(job.y);
}

cudaError_t launch_lora_gemm(ElemType wtype, int n, const LoraJob* jobs, int count, int sm_count,
                             cudaStream_t stream) {
  if (jobs == nullptr || count < 1 || count > kLoraGemmMaxJobs) return cudaErrorInvalidValue;
  const bool split = jobs[0].cols > kLoraGemmMaxCols;
  for (int i = 0; i < count; ++i) {
    if (!lora_gemm_supported(wtype, n, jobs[i]) || (jobs[i].cols > kLoraGemmMaxCols) != split) {
      return cudaErrorInvalidValue;
    }
  }
  Params p{};
  p.count = count;
  p.n = n;
  int tile = 0, chunks = 0;
  bool y16 = false;
  for (int i = 0; i < count; ++i) {
    const LoraJob& job = jobs[i];
    y16 = y16 || job.y16;
    p.jobs[i] = JobDesc{job.w,  job.x,  job.y, job.rows, job.cols, job.accumulate,
                        job.y16, static_cast<int>(job.y_act), tile};
    tile += MTiles(job.rows);
    chunks = std::max(chunks, ((job.cols + kSplits - 1) / kSplits + kChunk - 1) / kChunk);
  }
  // A long launch of at most one CTA an SM (the 7.2B model's "in" side at 64
  // rows: 112 CTAs of 8 chunks each) has no use for room for 3 CTAs an SM:
  // there all of a CTA's chunks are in flight from the start (kDeepStages).
  // More CTAs keep kStages. Either way the sums are the same sequence.
  const int64_t ctas = static_cast<int64_t>(tile) * kSplits * ((n + kTileN - 1) / kTileN);
  const bool deep = split && chunks > kStages && ctas <= sm_count;
  if (wtype == ElemType::kF16) {
    return y16 ? launch_typed<__half, true>(p, tile, split, deep, stream)
               : launch_typed<__half, false>(p, tile, split, deep, stream);
  }
  return y16 ? launch_typed<__nv_bfloat16, true>(p, tile, split, deep, stream)
             : launch_typed<__nv_bfloat16, false>(p, tile, split, deep, stream);
}

}  // namespace rwkv::kernels
