// RWKV-7 WKV: one block per (head, segment), one thread per value row i of
// the head's N x N state. The session's state is read from its slot and
// written back to it in place: no gather into a batch buffer and no scatter
// back, so a batch of sessions in arbitrary slots costs the same as one in
// consecutive slots.
//
// The state is fp32 or fp16 (state_type). Either way the arithmetic is fp32
// in registers and follows the CPU reference (cpu_backend.cc) term by term:
// sa = sum_j S[i][j] kk[j], S[i][j] = S[i][j] w[j] - sa (kk[j] a[j]) + v[i] k[j],
// y[i] = sum_j S[i][j] r[j]. With fp16 state each token's new S is rounded
// back to fp16 (fp16_state_rounding.h, shared with the CPU op, so both round
// alike) while y uses the unrounded value; rounding after every token, not
// once per segment, keeps a prompt's result independent of how it is split.
//
// Tiled kernel (N = 32, 64, 128 with a 16-byte aligned pool; one pass: the
// state is read once and written once per launch, whatever the segment's
// length). Large decode batches are bound by these bytes, so:
//  - global traffic is 16-byte vectors, consecutive threads taking
//    consecutive 16-byte chunks of the head's contiguous block (fully
//    coalesced), through a shared tile of at most 16 KB (the whole head
//    except fp32 N = 128, done in row bands);
//  - thread i keeps row i in registers as fp32 (fp16 widened on load, and
//    every new value already on the fp16 grid, so the store is exact), fully
//    unrolled so the array is never indexed at run time;
//  - the tile's 16-byte chunks are XOR-swizzled by row (chunk q of row i sits
//    at q ^ (i mod 8), or q ^ ((i/2) mod 4) for 64-byte rows), so both the
//    coalesced fill and the per-row gather (one 16-byte read per chunk) hit 8
//    distinct 16-byte bank groups per quarter warp: no bank conflicts;
//  - per token the five head vectors (r, w, k, kk, kk*a) are staged in shared
//    memory once and read as 16-byte broadcasts.
// Other head sizes, or a pool that is not 16-byte aligned, use a plain kernel
// that updates the state in global memory.
#include "kernels/wkv7.h"

#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "engine/model/fp16_state_rounding.h"
#include "kernels/kernel_util.cuh"

namespace rwkv::kernels {
namespace {

constexpr int kTileBytes = 16384;

// Where logical 16-byte chunk q of tile row `row` is stored (see above).
template <int kChunks>
__device__ __forceinline__ int swizzle(int q, int row) {
  if constexpr (kChunks >= 8) {
    return q ^ (row & 7);
  } else {
    return q ^ ((row >> 1) & 3);
  }
}

// A 16-byte chunk of the state as fp32 values: 4 fp32, or 8 fp16 widened.
template <bool kHalf>
__device__ __forceinline__ void unpack_chunk(const uint4& c, float* out) {
  const uint32_t words[4] = {c.x, c.y, c.z, c.w};
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    if constexpr (kHalf) {
      __half2 h;
      memcpy(&h, &words[e], sizeof(h));
      const float2 f = __half22float2(h);
      out[2 * e] = f.x;
      out[2 * e + 1] = f.y;
    } else {
      out[e] = __uint_as_float(words[e]);
    }
  }
}

// The inverse; fp16 values are already on the fp16 grid, so the conversion is exact.
template <bool kHalf>
__device__ __forceinline__ uint4 pack_chunk(const float* in) {
  uint32_t words[4];
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    if constexpr (kHalf) {
      const __half2 h = __floats2half2_rn(in[2 * e], in[2 * e + 1]);
      memcpy(&words[e], &h, sizeof(h));
    } else {
      words[e] = __float_as_uint(in[e]);
    }
  }
  return make_uint4(words[0], words[1], words[2], words[3]);
}

// Blocks per SM the register budget must allow. At N = 64, 8 blocks of 64
// threads (128 registers each) keep the whole 64-float row and the token's
// temporaries in registers without spilling (ptxas, sm_90; unbounded it takes
// 161 registers for fp32 and 220 for fp16, i.e. 6 or 4 blocks per SM). More
// resident blocks keep more of the state's bytes in flight, which is what
// bounds large batches.
template <int N>
constexpr int kTiledMinBlocks = N == 128 ? 2 : 8;

template <int N, typename E>
__global__ void __launch_bounds__(N, kTiledMinBlocks<N>) wkv7_tiled_kernel(const SegmentDesc* __restrict__ segs,  // (nseg)
                                                       int C,
                                                       float* __restrict__ state,  // (slots, stride)
                                                       int64_t slot_stride,
                                                       const float* __restrict__ r,   // (n, C)
                                                       const float* __restrict__ w,   // (n, C)
                                                       const float* __restrict__ k,   // (n, C)
                                                       const float* __restrict__ v,   // (n, C)
                                                       const float* __restrict__ kk,  // (n, C)
                                                       const float* __restrict__ a,   // (n, C)
                                                       float* __restrict__ y) {       // (n, C)
  constexpr bool kHalf = std::is_same_v<E, __half>;
  constexpr int kPerChunk = 16 / static_cast<int>(sizeof(E));  // elements per 16-byte chunk
  constexpr int kChunks = N / kPerChunk;                       // chunks per row
  constexpr int kRowBytes = N * static_cast<int>(sizeof(E));
  constexpr int kTileRows = N * kRowBytes <= kTileBytes ? N : kTileBytes / kRowBytes;
  static_assert(kChunks == 4 || kChunks % 8 == 0, "swizzle needs 4 or a multiple of 8 chunks per row");
  static_assert(N % kTileRows == 0 && kTileRows % 8 == 0, "row bands must tile the head");
  __shared__ uint4 tile[kTileRows * kChunks];
  __shared__ __align__(16) float sr[N];
  __shared__ __align__(16) float sw[N];
  __shared__ __align__(16) float sk[N];
  __shared__ __align__(16) float skk[N];
  __shared__ __align__(16) float sb[N];
  const SegmentDesc g = segs[blockIdx.y];
  const int h = blockIdx.x;
  const int i = threadIdx.x;
  // The head's (N, N) block as 16-byte chunks, row after row.
  uint4* S = reinterpret_cast<uint4*>(state + g.slot * slot_stride) + static_cast<int64_t>(h) * N * kChunks;

  float s[N];  // row i of S (fp32 whatever the storage: fp16 is widened on load)
  for (int r0 = 0; r0 < N; r0 += kTileRows) {
    for (int idx = i; idx < kTileRows * kChunks; idx += N) {
      const int row = idx / kChunks, q = idx % kChunks;
      tile[row * kChunks + swizzle<kChunks>(q, row)] = S[static_cast<int64_t>(r0) * kChunks + idx];
    }
    __syncthreads();
    if (i >= r0 && i < r0 + kTileRows) {
      const int row = i - r0;
#pragma unroll
      for (int q = 0; q < kChunks; ++q) unpack_chunk<kHalf>(tile[row * kChunks + swizzle<kChunks>(q, row)], s + q * kPerChunk);
    }
    __syncthreads();
  }

  for (int t = 0; t < g.rows; ++t) {
    const int64_t o = static_cast<int64_t>(g.row_begin + t) * C + static_cast<int64_t>(h) * N;
    sr[i] = r[o + i];
    sw[i] = w[o + i];
    sk[i] = k[o + i];
    skk[i] = kk[o + i];
    sb[i] = kk[o + i] * a[o + i];
    const float vi = v[o + i];
    __syncthreads();
    float sa = 0.0f;
#pragma unroll
    for (int j = 0; j < N; j += 4) {
      const float4 q = *reinterpret_cast<const float4*>(skk + j);
      sa += s[j] * q.x;
      sa += s[j + 1] * q.y;
      sa += s[j + 2] * q.z;
      sa += s[j + 3] * q.w;
    }
    float acc = 0.0f;
    uint32_t key = 0;
    if constexpr (kHalf) key = Fp16StateRowKey(h, N, i, vi);
#pragma unroll
    for (int j = 0; j < N; j += 4) {
      const float4 w4 = *reinterpret_cast<const float4*>(sw + j);
      const float4 b4 = *reinterpret_cast<const float4*>(sb + j);
      const float4 k4 = *reinterpret_cast<const float4*>(sk + j);
      const float4 r4 = *reinterpret_cast<const float4*>(sr + j);
      const float ws[4] = {w4.x, w4.y, w4.z, w4.w}, bs[4] = {b4.x, b4.y, b4.z, b4.w};
      const float ks[4] = {k4.x, k4.y, k4.z, k4.w}, rs[4] = {r4.x, r4.y, r4.z, r4.w};
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float n = s[j + e] * ws[e] - sa * bs[e] + vi * ks[e];
        acc += n * rs[e];
        if constexpr (kHalf) {
          s[j + e] = Fp16StateRound(n, Fp16StateDither(key, j + e, s[j + e]));
        } else {
          s[j + e] = n;
        }
      }
    }
    y[o + i] = acc;
    __syncthreads();  // the vectors are overwritten by the next token
  }

  for (int r0 = 0; r0 < N; r0 += kTileRows) {
    if (i >= r0 && i < r0 + kTileRows) {
      const int row = i - r0;
#pragma unroll
      for (int q = 0; q < kChunks; ++q) tile[row * kChunks + swizzle<kChunks>(q, row)] = pack_chunk<kHalf>(s + q * kPerChunk);
    }
    __syncthreads();
    for (int idx = i; idx < kTileRows * kChunks; idx += N) {
      const int row = idx / kChunks, q = idx % kChunks;
      S[static_cast<int64_t>(r0) * kChunks + idx] = tile[row * kChunks + swizzle<kChunks>(q, row)];
    }
    __syncthreads();
  }
}

__device__ __forceinline__ float load_state(const float* p) { return *p; }
__device__ __forceinline__ float load_state(const __half* p) { return __half2float(*p); }

// Any head size and alignment: thread i updates row i of S in global memory.
template <typename E>
__global__ void wkv7_generic_kernel(const SegmentDesc* __restrict__ segs,  // (nseg)
                                    int C, int N,
                                    float* __restrict__ state,  // (slots, stride)
                                    int64_t slot_stride,
                                    const float* __restrict__ r,   // (n, C)
                                    const float* __restrict__ w,   // (n, C)
                                    const float* __restrict__ k,   // (n, C)
                                    const float* __restrict__ v,   // (n, C)
                                    const float* __restrict__ kk,  // (n, C)
                                    const float* __restrict__ a,   // (n, C)
                                    float* __restrict__ y) {       // (n, C)
  constexpr bool kHalf = std::is_same_v<E, __half>;
  extern __shared__ float vec[];  // (5, N): r, w, k, kk, kk*a
  float *sr = vec, *sw = vec + N, *sk = vec + 2 * N, *skk = vec + 3 * N, *sb = vec + 4 * N;
  const SegmentDesc g = segs[blockIdx.y];
  const int h = blockIdx.x;
  const int i = threadIdx.x;
  E* Si = reinterpret_cast<E*>(state + g.slot * slot_stride) + (static_cast<int64_t>(h) * N + i) * N;  // row i
  for (int t = 0; t < g.rows; ++t) {
    const int64_t o = static_cast<int64_t>(g.row_begin + t) * C + static_cast<int64_t>(h) * N;
    sr[i] = r[o + i];
    sw[i] = w[o + i];
    sk[i] = k[o + i];
    skk[i] = kk[o + i];
    sb[i] = kk[o + i] * a[o + i];
    const float vi = v[o + i];
    __syncthreads();
    float sa = 0.0f;
    for (int j = 0; j < N; ++j) sa += load_state(Si + j) * skk[j];
    float acc = 0.0f;
    uint32_t key = 0;
    if constexpr (kHalf) key = Fp16StateRowKey(h, N, i, vi);
    for (int j = 0; j < N; ++j) {
      const E old = Si[j];
      const float x = load_state(&old) * sw[j] - sa * sb[j] + vi * sk[j];
      acc += x * sr[j];
      if constexpr (kHalf) {
        Si[j] = __float2half_rn(Fp16StateRound(x, Fp16StateDither(key, j, load_state(&old))));
      } else {
        Si[j] = x;
      }
    }
    y[o + i] = acc;
    __syncthreads();
  }
}

template <typename E>
cudaError_t launch_typed(const SegmentDesc* segs, int nseg, int C, int N, float* state, int64_t slot_stride,
                         const float* r, const float* w, const float* k, const float* v, const float* kk,
                         const float* a, float* y, cudaStream_t stream) {
  const dim3 grid(C / N, nseg);
  // Every head block starts on a 16-byte boundary when the pool and the slot
  // stride are aligned (head blocks are N*N elements, a multiple of 16 bytes).
  const bool aligned = reinterpret_cast<uintptr_t>(state) % 16 == 0 && slot_stride % 4 == 0;
  if (aligned) {
    switch (N) {
      case 32:
        wkv7_tiled_kernel<32, E><<<grid, 32, 0, stream>>>(segs, C, state, slot_stride, r, w, k, v, kk, a, y);
        return cudaGetLastError();
      case 64:
        wkv7_tiled_kernel<64, E><<<grid, 64, 0, stream>>>(segs, C, state, slot_stride, r, w, k, v, kk, a, y);
        return cudaGetLastError();
      case 128:
        wkv7_tiled_kernel<128, E><<<grid, 128, 0, stream>>>(segs, C, state, slot_stride, r, w, k, v, kk, a, y);
        return cudaGetLastError();
      default:
        break;
    }
  }
  wkv7_generic_kernel<E><<<grid, N, 5 * N * sizeof(float), stream>>>(segs, C, N, state, slot_stride, r, w, k, v,
                                                                     kk, a, y);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_wkv7(const SegmentDesc* segs, int nseg, int C, int N, ElemType state_type, float* state,
                        int64_t slot_stride, const float* r, const float* w, const float* k, const float* v,
                        const float* kk, const float* a, float* y, cudaStream_t stream) {
  if (nseg < 0 || nseg > 65535 || C <= 0 || N <= 0 || N > 1024 || C % N != 0 || slot_stride < 0 ||
      (state_type != ElemType::kF32 && state_type != ElemType::kF16)) {
    return cudaErrorInvalidValue;
  }
  if (nseg == 0) return cudaSuccess;
  if (segs == nullptr || state == nullptr || r == nullptr || w == nullptr || k == nullptr || v == nullptr ||
      kk == nullptr || a == nullptr || y == nullptr) {
    return cudaErrorInvalidValue;
  }
  if (state_type == ElemType::kF16) {
    return launch_typed<__half>(segs, nseg, C, N, state, slot_stride, r, w, k, v, kk, a, y, stream);
  }
  return launch_typed<float>(segs, nseg, C, N, state, slot_stride, r, w, k, v, kk, a, y, stream);
}

}  // namespace rwkv::kernels
