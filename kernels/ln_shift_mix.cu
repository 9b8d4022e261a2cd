// LayerNorm + token shift + mixes: one block per row, or (1024 < C <= 4096,
// vector path) 2 or 4 blocks per row that each write their share of its
// columns. A row's shift needs the LayerNorm of the previous row of its
// segment, which the block recomputes (one more row read, from L2) rather
// than waiting for another block; the blocks of a segment's first row alone
// touch the slot's x_prev: each reads the old value of its columns, then
// writes there the LayerNorm of the segment's last row (recomputed there too
// when the segment has several rows), so no other block races it.
// LayerNorm is two-pass and written as kernels/layernorm.cu writes it.
#include "kernels/ln_shift_mix.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "kernels/kernel_util.cuh"
#include "kernels/weights.cuh"

namespace rwkv::kernels {
namespace {

struct MixArgs {
  const float* mixes[kMaxMixes];  // (C) each
  float* outs[kMaxMixes];         // (n, C) each, elements of out_type
  ElemType out_type;
};

// outs[j][i] = v in the output's element type (16-bit: rounded to nearest
// even, as kernels/convert.cu rounds).
__device__ __forceinline__ void store_out(const MixArgs& args, int j, int64_t i, float v) {
  store_elem(args.outs[j], args.out_type, i, v);
}

// Four values rounded to nearest even as 16-bit T, packed for one 8-byte store.
template <typename T>
__device__ __forceinline__ uint2 pack4(float4 v) {
  return make_uint2(pack2(v.x, v.y, T()), pack2(v.z, v.w, T()));
}

// Four consecutive outputs from element i (a multiple of 4): one 16-byte
// store for fp32, one 8-byte store for 16-bit types.
__device__ __forceinline__ void store_out4(const MixArgs& args, int j, int64_t i, float4 v) {
  switch (args.out_type) {
    case ElemType::kF16: *reinterpret_cast<uint2*>(reinterpret_cast<__half*>(args.outs[j]) + i) = pack4<__half>(v); break;
    case ElemType::kBF16:
      *reinterpret_cast<uint2*>(reinterpret_cast<__nv_bfloat16*>(args.outs[j]) + i) = pack4<__nv_bfloat16>(v);
      break;
    default: *reinterpret_cast<float4*>(args.outs[j] + i) = v; break;
  }
}

// The segment holding row r, searched with the block's threads strided over
// the list: the one thread that finds it writes *seg (shared memory); the
// caller's next barrier publishes it.
__device__ __forceinline__ void find_segment(const SegmentDesc* __restrict__ segs, int nseg, int r, int* seg) {
  for (int s = threadIdx.x; s < nseg; s += blockDim.x) {
    const SegmentDesc g = segs[s];
    if (r >= g.row_begin && r < g.row_begin + g.rows) *seg = s;
  }
}

struct RowStats {
  float mean, inv;
};

__device__ RowStats row_stats(const float* __restrict__ xi, int C, float* scratch) {
  float s = 0.0f;
  for (int c = threadIdx.x; c < C; c += blockDim.x) s += xi[c];
  const float mean = block_sum(s, scratch) / C;
  float q = 0.0f;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    const float d = xi[c] - mean;
    q += d * d;
  }
  const float var = block_sum(q, scratch) / C;
  return {mean, 1.0f / sqrtf(var + 1e-5f)};
}

template <int kCount>
__global__ void ln_shift_mix_kernel(const float* __restrict__ x,  // (n, C)
                                    int C, const float* __restrict__ ln_w, const float* __restrict__ ln_b,
                                    const SegmentDesc* __restrict__ segs, int nseg,
                                    float* __restrict__ x_prev,  // (slots, slot_stride)
                                    int64_t slot_stride, MixArgs args) {
  pdl_wait();  // programmatic launch: the previous kernel's writes first (kernel_util.cuh)
  __shared__ float scratch[32];
  __shared__ int seg_of_row;
  const int r = blockIdx.x;
  find_segment(segs, nseg, r, &seg_of_row);
  __syncthreads();
  const SegmentDesc g = segs[seg_of_row];
  const int t = r - g.row_begin;
  const float* xr = x + static_cast<int64_t>(r) * C;
  const RowStats cur = row_stats(xr, C, scratch);
  // The previous row (t > 0) or, for a first row, the segment's last row
  // (whose LayerNorm becomes x_prev); same as cur for a one-row segment.
  const int other_row = t > 0 ? r - 1 : g.row_begin + g.rows - 1;
  const float* xo = x + static_cast<int64_t>(other_row) * C;
  const RowStats other = other_row == r ? cur : row_stats(xo, C, scratch);
  float* state = x_prev + g.slot * slot_stride;
  const bool has_state = g.slot >= 0;  // a padding segment has none: its rows are never read
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    const float w = ln_w[c], b = ln_b[c];
    const float xx = (xr[c] - cur.mean) * cur.inv * w + b;
    const float xo_ln = (xo[c] - other.mean) * other.inv * w + b;
    float prev;
    if (t > 0 || !has_state) {
      prev = xo_ln;
    } else {
      prev = state[c];
      state[c] = xo_ln;
    }
    const float d = prev - xx;
#pragma unroll
    for (int j = 0; j < kCount; ++j) store_out(args, j, static_cast<int64_t>(r) * C + c, xx + d * args.mixes[j][c]);
  }
}

// The same op with each thread holding kV float4 of the row in registers
// (C % 4 == 0, 16-byte aligned vectors and slot stride). Why: at decode
// sizes this op is latency-bound, one block per row, and the scalar kernel
// above walks the row four times with dependent loads (sum, variance, then
// x, the previous row and x_prev per column). Here every load that does not
// depend on the segment (the row, the LayerNorm parameters) is issued
// first, the statistics come from registers, and x_prev is read once: on an
// H100 the scalar kernel took ~13 us per call for one row of 2048 and ~120
// us for 960 rows (ncu, docs/PERF.md).
// The weights (LayerNorm parameters; with kV = 1 or kSplit also the mix
// vectors) are loaded before pdl_wait(), while the kernel before still runs.
// kSplit: gridDim.y = kV blocks per row; each computes the row's statistics
// (all of the row, from L2) and the outputs of its own kV-th of the columns
// (v == blockIdx.y): the state reads and the output stores spread over kV
// SMs, and each block's reductions are over 8 warps instead of up to 32. At
// decode sizes this kernel sits between two weight reads, so its latency is
// a step's: the split measured 1-2% faster at batch 1 and 8 (launch below).
template <int kCount, int kV, bool kSplit>
__global__ void __launch_bounds__(kSplit ? 256 : (kV == 1 ? 1024 : 512))
    ln_shift_mix_vec_kernel(const float* __restrict__ x,  // (n, C)
                            int C, const float* __restrict__ ln_w, const float* __restrict__ ln_b,
                            const SegmentDesc* __restrict__ segs, int nseg,
                            float* __restrict__ x_prev,  // (slots, slot_stride)
                            int64_t slot_stride, MixArgs args, bool prefetch_prev_row) {
  __shared__ float2 scratch[32];
  __shared__ int seg_of_row;
  const int r = blockIdx.x;
  const int C4 = C >> 2;
  const float4 zero = make_float4(0.f, 0.f, 0.f, 0.f);
  float4 xv[kV], wv[kV], bv[kV], ov[kV];
  // With one float4 of outputs per thread (kV == 1, or this block's slice),
  // the mix vectors are loaded into registers before the wait.
  constexpr bool kOwnOne = kV == 1 || kSplit;
  constexpr int kMixRegs = kOwnOne ? kCount : 1;
  const int own = kSplit ? static_cast<int>(blockIdx.y) : 0;  // the v this block writes (kOwnOne)
  const int own_c4 = threadIdx.x + own * blockDim.x;
  float4 mv[kMixRegs];
  // The LayerNorm parameters of the columns this block writes (kSplit: its
  // own slice; the statistics need the row, not the parameters).
#pragma unroll
  for (int v = 0; v < kV; ++v) {
    const int c4 = threadIdx.x + v * blockDim.x;
    const bool in = c4 < C4 && (!kSplit || v == own);
    wv[v] = in ? reinterpret_cast<const float4*>(ln_w)[c4] : zero;
    bv[v] = in ? reinterpret_cast<const float4*>(ln_b)[c4] : zero;
  }
  if constexpr (kOwnOne) {
#pragma unroll
    for (int j = 0; j < kCount; ++j) {
      mv[j] = own_c4 < C4 ? reinterpret_cast<const float4*>(args.mixes[j])[own_c4] : zero;
    }
  }
  pdl_wait();  // programmatic launch: the previous kernel's writes first (kernel_util.cuh)
  const float4* x4 = reinterpret_cast<const float4*>(x + static_cast<int64_t>(r) * C);
  // Prompts (rows of a segment after its first): the previous row is the
  // other row to normalise; its load goes out with this row's, before the
  // segment is known (it is not needed, and not read, for a segment's first
  // row). Decode passes (a row per segment) skip it.
  const bool spec = prefetch_prev_row && r > 0;
  const float4* p4 = reinterpret_cast<const float4*>(x + static_cast<int64_t>(spec ? r - 1 : r) * C);
#pragma unroll
  for (int v = 0; v < kV; ++v) {
    const int c4 = threadIdx.x + v * blockDim.x;
    const bool in = c4 < C4;
    xv[v] = in ? x4[c4] : zero;
    ov[v] = in && spec ? p4[c4] : zero;
  }
  find_segment(segs, nseg, r, &seg_of_row);
  __syncthreads();
  const SegmentDesc g = segs[seg_of_row];
  const int t = r - g.row_begin;
  const int other_row = t > 0 ? r - 1 : g.row_begin + g.rows - 1;
  const bool has_state = g.slot >= 0;  // a padding segment has none: its rows are never read
  const bool from_state = t == 0 && has_state;
  float4* state4 = reinterpret_cast<float4*>(x_prev + g.slot * slot_stride);
  if (other_row == r) {
#pragma unroll
    for (int v = 0; v < kV; ++v) ov[v] = xv[v];
  } else if (other_row != r - 1 || !spec) {  // uniform over the block
    const float4* o4 = reinterpret_cast<const float4*>(x + static_cast<int64_t>(other_row) * C);
#pragma unroll
    for (int v = 0; v < kV; ++v) {
      const int c4 = threadIdx.x + v * blockDim.x;
      ov[v] = c4 < C4 ? o4[c4] : zero;
    }
  }
  // A segment's first row: the old x_prev, read before the statistics.
  float4 pv[1] = {zero};
  if constexpr (kOwnOne) {
    if (from_state && own_c4 < C4) pv[0] = state4[own_c4];
  }
  // Both rows' statistics in two reductions (sums, then squared deviations:
  // two-pass, as kernels/layernorm.cu), each of a pair.
  float2 s = make_float2(0.0f, 0.0f);
#pragma unroll
  for (int v = 0; v < kV; ++v) {
    s.x += (xv[v].x + xv[v].y) + (xv[v].z + xv[v].w);
    s.y += (ov[v].x + ov[v].y) + (ov[v].z + ov[v].w);
  }
  s = block_sum2(s, scratch);
  const float mean = s.x / C, omean = s.y / C;
  float2 q = make_float2(0.0f, 0.0f);
#pragma unroll
  for (int v = 0; v < kV; ++v) {
    if (threadIdx.x + v * blockDim.x < C4) {
      float a = xv[v].x - mean, b = xv[v].y - mean, c = xv[v].z - mean, d = xv[v].w - mean;
      q.x += (a * a + b * b) + (c * c + d * d);
      a = ov[v].x - omean, b = ov[v].y - omean, c = ov[v].z - omean, d = ov[v].w - omean;
      q.y += (a * a + b * b) + (c * c + d * d);
    }
  }
  q = block_sum2(q, scratch);
  const RowStats cur{mean, 1.0f / sqrtf(q.x / C + 1e-5f)};
  const RowStats other{omean, 1.0f / sqrtf(q.y / C + 1e-5f)};
#pragma unroll
  for (int v = 0; v < kV; ++v) {
    const int c4 = threadIdx.x + v * blockDim.x;
    if (c4 >= C4 || (kSplit && v != own)) continue;
    float4 xx, xo;
    xx.x = (xv[v].x - cur.mean) * cur.inv * wv[v].x + bv[v].x;
    xx.y = (xv[v].y - cur.mean) * cur.inv * wv[v].y + bv[v].y;
    xx.z = (xv[v].z - cur.mean) * cur.inv * wv[v].z + bv[v].z;
    xx.w = (xv[v].w - cur.mean) * cur.inv * wv[v].w + bv[v].w;
    xo.x = (ov[v].x - other.mean) * other.inv * wv[v].x + bv[v].x;
    xo.y = (ov[v].y - other.mean) * other.inv * wv[v].y + bv[v].y;
    xo.z = (ov[v].z - other.mean) * other.inv * wv[v].z + bv[v].z;
    xo.w = (ov[v].w - other.mean) * other.inv * wv[v].w + bv[v].w;
    float4 prev;
    if (!from_state) {
      prev = xo;
    } else {
      if constexpr (kOwnOne) {
        prev = pv[0];
      } else {
        prev = state4[c4];
      }
      state4[c4] = xo;
    }
    const float4 d = make_float4(prev.x - xx.x, prev.y - xx.y, prev.z - xx.z, prev.w - xx.w);
#pragma unroll
    for (int j = 0; j < kCount; ++j) {
      float4 m;
      if constexpr (kOwnOne) {
        m = mv[j];
      } else {
        m = reinterpret_cast<const float4*>(args.mixes[j])[c4];
      }
      store_out4(args, j, static_cast<int64_t>(r) * C + 4 * c4,
                 make_float4(xx.x + d.x * m.x, xx.y + d.y * m.y, xx.z + d.z * m.z, xx.w + d.w * m.w));
    }
  }
}

template <int kV, bool kSplit>
void launch_vec(int count, dim3 grid, int block, cudaStream_t stream, const float* x, int C,
                const float* ln_w, const float* ln_b, const SegmentDesc* segs, int nseg, float* x_prev,
                int64_t slot_stride, const MixArgs& args, bool prefetch_prev_row) {
#define RWKV_LSM_VEC(K)                                                                                          \
  launch(ln_shift_mix_vec_kernel<K, kV, kSplit>, grid, block, 0, stream, x, C, ln_w, ln_b, segs, nseg, x_prev,     \
         slot_stride, args, prefetch_prev_row)
  switch (count) {
    case 1: RWKV_LSM_VEC(1); break;
    case 2: RWKV_LSM_VEC(2); break;
    case 3: RWKV_LSM_VEC(3); break;
    case 4: RWKV_LSM_VEC(4); break;
    case 5: RWKV_LSM_VEC(5); break;
    default: RWKV_LSM_VEC(6); break;
  }
#undef RWKV_LSM_VEC
}

}  // namespace

cudaError_t launch_ln_shift_mix(const float* x, int n, int C, const float* ln_w, const float* ln_b,
                                const SegmentDesc* segs, int nseg, float* x_prev, int64_t slot_stride,
                                const float* const* mixes, float* const* outs, int count, cudaStream_t stream,
                                ElemType out_type) {
  if (n < 0 || C <= 0 || nseg < 0 || count < 1 || count > kMaxMixes || mixes == nullptr || outs == nullptr ||
      (out_type != ElemType::kF32 && out_type != ElemType::kF16 && out_type != ElemType::kBF16)) {
    return cudaErrorInvalidValue;
  }
  if (n == 0) return cudaSuccess;
  if (x == nullptr || ln_w == nullptr || ln_b == nullptr || segs == nullptr || nseg == 0 || x_prev == nullptr) {
    return cudaErrorInvalidValue;
  }
  MixArgs args{};
  args.out_type = out_type;
  for (int j = 0; j < count; ++j) {
    if (mixes[j] == nullptr || outs[j] == nullptr) return cudaErrorInvalidValue;
    args.mixes[j] = mixes[j];
    args.outs[j] = outs[j];
  }
  const unsigned grid = static_cast<unsigned>(n);
  bool vec = C % 4 == 0 && C / 4 <= 2048 && slot_stride % 4 == 0 && Aligned16(x) && Aligned16(ln_w) &&
             Aligned16(ln_b) && Aligned16(x_prev);
  for (int j = 0; j < count && vec; ++j) vec = Aligned16(mixes[j]) && Aligned16(outs[j]);
  if (vec) {
    // Up to C = 1024, one block per row of one float4 per thread; C = 1028
    // to 4096, 2 or 4 blocks per row of 256 threads (kSplit); beyond, one
    // block of 512 threads with up to 4 float4 each (84 registers: 1024
    // threads of that would not fit an SM's register file).
    // A pass with more rows than segments has prompts in it: prefetch each
    // row's predecessor (kernel comment).
    const int C4 = C / 4;
    const bool prefetch = n > nseg;
    if (C4 > 256 && C4 <= 1024) {
      // 256 threads with 2 or 4 float4 each, as many blocks per row (kSplit).
      // H100, 2026-11-27: 7.2B (C = 4096) batch 1 +1.9%, batch 8 +1.2%;
      // 1.5B (C = 2048) batch 1 +0.9%, batch 8 +0.5%, against one block
      // of C / 4 threads per row (docs/PERF.md).
      if (C4 <= 512) {
        launch_vec<2, true>(count, dim3(grid, 2), 256, stream, x, C, ln_w, ln_b, segs, nseg, x_prev, slot_stride,
                            args, prefetch);
      } else {
        launch_vec<4, true>(count, dim3(grid, 4), 256, stream, x, C, ln_w, ln_b, segs, nseg, x_prev, slot_stride,
                            args, prefetch);
      }
    } else if (C4 <= 1024) {
      launch_vec<1, false>(count, dim3(grid), (C4 + 31) / 32 * 32, stream, x, C, ln_w, ln_b, segs, nseg, x_prev,
                           slot_stride, args, prefetch);
    } else {
      launch_vec<4, false>(count, dim3(grid), 512, stream, x, C, ln_w, ln_b, segs, nseg, x_prev, slot_stride, args,
                           prefetch);
    }
    return cudaGetLastError();
  }
  const int block = C >= 1024 ? 512 : (C >= 256 ? 256 : 128);
  switch (count) {
    case 1: launch(ln_shift_mix_kernel<1>, grid, block, 0, stream, x, C, ln_w, ln_b, segs, nseg, x_prev, slot_stride, args); break;
    case 2: launch(ln_shift_mix_kernel<2>, grid, block, 0, stream, x, C, ln_w, ln_b, segs, nseg, x_prev, slot_stride, args); break;
    case 3: launch(ln_shift_mix_kernel<3>, grid, block, 0, stream, x, C, ln_w, ln_b, segs, nseg, x_prev, slot_stride, args); break;
    case 4: launch(ln_shift_mix_kernel<4>, grid, block, 0, stream, x, C, ln_w, ln_b, segs, nseg, x_prev, slot_stride, args); break;
    case 5: launch(ln_shift_mix_kernel<5>, grid, block, 0, stream, x, C, ln_w, ln_b, segs, nseg, x_prev, slot_stride, args); break;
    default: launch(ln_shift_mix_kernel<6>, grid, block, 0, stream, x, C, ln_w, ln_b, segs, nseg, x_prev, slot_stride, args); break;
  }
  return cudaGetLastError();
}

}  // namespace rwkv::kernels
