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
//    memory once and read as 16-byte broadcasts;
//  - the first token's vectors (and the output stage's gate) are loaded
//    before the state and a band's state loads are all issued before its
//    shared stores, so a block waits for one memory round trip, not three
//    (H200, 1.5B decode: fp16 state B = 256 57,448 -> 59,746 tokens/s,
//    B = 960 81,384 -> 85,464; fp32 state +4-5%; docs/PERF.md, session 10).
// Other head sizes, or a pool that is not 16-byte aligned, use a plain kernel
// that updates the state in global memory.
//
// Long segments (prompts: at least kSeqMinRows rows) take a third kernel,
// wkv7_seq_kernel. The tiled kernel walks a segment's tokens with one block
// of N threads per head: only H blocks busy for one prompt (32 at 1.5B), and
// every token pays a global load of its vectors and a barrier on the critical
// path, about 1 us per token and layer. The recurrence is sequential in t but
// the N rows of a head are independent (row i needs its own row and the
// token's vectors), so the long kernel:
//  - splits a row over N/8 lanes (8 elements each, two 16-byte chunks
//    interleaved so a row group's shared reads are 128 contiguous bytes), a
//    head over N/16 blocks (N = 64: 4 blocks of 128 threads, 16 rows each),
//    i.e. 4x the blocks and 8x the threads of the tiled kernel;
//  - the per-token dot product S kk (on the recurrence's critical path) is
//    8-term partial sums in two independent chains plus log2(N/8) xor
//    shuffles, instead of a 64-term chain; S r is not on that path, so each
//    lane keeps its partial y of 8 tokens (4 for N = 32) and one halving
//    exchange sums them, one token per lane (7 shuffles for 8 tokens instead
//    of 24). That, with the group's tokens unrolled (so the compiler issues a
//    token's shared-memory loads ahead of the previous token's arithmetic),
//    took a 7.2B 4,096-token prefill from 22,677 to 24,375 tokens/s on an
//    H100 (docs/PERF.md);
//  - the token vectors arrive by cp.async into shared memory in chunks of
//    kSeqTokens tokens, double buffered (chunk c+1 is in flight while chunk c
//    is computed), one barrier per chunk instead of one per token, so no
//    global load is on the recurrence's critical path.
// Same arithmetic per element as the CPU reference (b = kk*a, then
// s*w - sa*b + v*k), only the two dot products are summed in another order;
// with fp16 state every token's new row is rounded exactly as the other
// kernels round it (same key, same column index, same old value), so the
// rounding points, and the result's independence of how a prompt is split,
// are unchanged. That is why fp16 state keeps this kernel: a chunked form
// would round once per chunk instead.
//
// With fp32 state and N = 64, a pass whose longest segment rounds up to 64
// rows or more takes the chunked (DPLR) form instead (the section "chunked
// form" below; engine/model/wkv7_chunked.h is its CPU reference): kernel A
// builds every 16-token chunk's matrices at once, kernel B walks a head's
// chunks per band of 16 rows with row products only, so nothing waits on the
// previous token. A 1.5B 4,096-token prefill: 69,464 -> 93,124 tokens/s on
// an H100 (docs/PERF.md). Its results differ from a token walk's by float
// rounding only (the op test holds it within 2e-5 (1 + |x|) of the CPU's).
#include "kernels/wkv7.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_pipeline.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "engine/model/fp16_state_rounding.h"
#include "kernels/kernel_util.cuh"
#include "kernels/segment_groups.h"
#include "kernels/v7_output.cuh"
#include "kernels/v7_prep.cuh"
#include "kernels/v7_prep.h"

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

// The inverse. fp16: a round-to-nearest conversion that saturates
// (cvt.rn.satfinite): exact for values already on the fp16 grid, and for a
// segment's last token, whose values are only step one of the rounding, it
// is step two (engine/model/fp16_state_rounding.h), so the same bits.
template <bool kHalf>
__device__ __forceinline__ uint4 pack_chunk(const float* in) {
  uint32_t words[4];
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    if constexpr (kHalf) {
      // d = {hi: a, lo: b}: element 2e in the low half, as __floats2half2_rn puts it.
      asm("cvt.rn.satfinite.f16x2.f32 %0, %1, %2;" : "=r"(words[e]) : "f"(in[2 * e + 1]), "f"(in[2 * e]));
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

// A token's vectors at thread i's channel: r, w, k, kk, a, v; with the
// output stage the gate g; with the prep (kk not read) v_first and v_gate
// where the layer has a value residual. 0 where not read.
struct Wkv7TokenVec {
  float r, w, k, kk, a, v, g, vf, vg;
};

template <bool kOut, bool kPrep>
__device__ __forceinline__ Wkv7TokenVec load_token_vec(int64_t e, const float* __restrict__ r,
                                                       const float* __restrict__ w, const float* __restrict__ k,
                                                       const float* __restrict__ v, const float* __restrict__ kk,
                                                       const float* __restrict__ a, const Wkv7OutputStage& os,
                                                       const Wkv7Prep& pp) {
  const bool residual = kPrep && pp.v0 != nullptr;
  return {r[e],        w[e], k[e], kPrep ? 0.0f : kk[e], a[e], v[e], kOut ? os.g[e] : 0.0f,
          residual ? pp.v_first[e] : 0.0f, residual ? pp.v_gate[e] : 0.0f};
}

// Rows of the tiled kernel's shared vectors: a token's r, w, k, kk, kk * a;
// with the output stage also y, v, g and the head's parameters r_k, lnw,
// lnb (loaded once); with the prep also a, v_first, v_gate and the
// parameters w0, a0, k_k, k_a, v0.
enum Wkv7Sv {
  kSvR, kSvW, kSvK, kSvKK, kSvB, kSvY, kSvV, kSvG, kSvRK, kSvLnW, kSvLnB, kSvRowsOut,
  kSvA = kSvRowsOut, kSvVF, kSvVG, kSvW0, kSvA0, kSvKk, kSvKa, kSvV0, kSvRowsPrep
};

// One token's update of thread i's row: s <- s w - sa b + v_i k, y_i (acc)
// += new s . r; fp16 state: s rounded by step one (the dither), and, with
// kCheck, whether any new value lies outside fp16's normal range (where step
// two would change it; the caller applies it).
template <int N, bool kHalf, bool kCheck>
__device__ __forceinline__ bool wkv7_row_update(float (&s)[N], float sa, float vi, uint32_t key,
                                                const float* sw, const float* sb, const float* sk, const float* sr,
                                                float& acc) {
  bool abnormal = false;
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
        s[j + e] = Fp16StateDitherTruncate(n, Fp16StateDither(key, j + e, s[j + e]));
        if constexpr (kCheck) abnormal |= !Fp16StateNormal(s[j + e]);
      } else {
        s[j + e] = n;
      }
    }
  }
  return abnormal;
}

// Thread i's state row s (fp32 in registers) through the segment's tokens:
// y[t, i] and the new row, fp16 state rounded after each token. sv: a
// block's shared vectors (Wkv7Sv). first: token 0's vectors, loaded by the
// caller while the state arrived. Every thread of the block (N) calls it; it
// ends with a barrier.
// With kOut (N = 64 or 128), the output stage (Wkv7OutputStage) replaces the
// write of y; its parameters are already in sv. With kPrep (and kOut), warp 0
// first applies the prep (Wkv7Prep) to the token's head with
// kernels/v7_prep.cu's vector code (its parameters are in sv too).
template <int N, typename E, bool kOut, bool kPrep>
__device__ __forceinline__ void wkv7_row_tokens(const SegmentDesc& g, int h, int C, float (&s)[N],
                                                const float* __restrict__ r, const float* __restrict__ w,
                                                const float* __restrict__ k, const float* __restrict__ v,
                                                const float* __restrict__ kk, const float* __restrict__ a,
                                                float* __restrict__ y, float (*sv)[N], const Wkv7OutputStage& os,
                                                const Wkv7Prep& pp, const Wkv7TokenVec& first) {
  static_assert(!kPrep || kOut, "the prep comes with the output stage");
  constexpr bool kHalf = std::is_same_v<E, __half>;
  const int i = threadIdx.x;
  float *sr = sv[kSvR], *sw = sv[kSvW], *sk = sv[kSvK], *skk = sv[kSvKK], *sb = sv[kSvB];
  for (int t = 0; t < g.rows; ++t) {
    const int64_t o = static_cast<int64_t>(g.row_begin + t) * C + static_cast<int64_t>(h) * N;
    const Wkv7TokenVec tv = t == 0 ? first : load_token_vec<kOut, kPrep>(o + i, r, w, k, v, kk, a, os, pp);
    sr[i] = tv.r;
    sw[i] = tv.w;
    sk[i] = tv.k;
    if constexpr (kOut) {
      sv[kSvV][i] = tv.v;
      sv[kSvG][i] = tv.g;
    }
    if constexpr (kPrep) {
      constexpr int V = N / 32;
      const bool residual = pp.v0 != nullptr;
      sv[kSvA][i] = tv.a;
      if (residual) {
        sv[kSvVF][i] = tv.vf;
        sv[kSvVG][i] = tv.vg;
      } else {
        pp.v_first[o + i] = tv.v;  // layer 0: v_first = v
      }
      __syncthreads();
      if (i < 32) {
        // kernels/v7_prep.cu's vector kernel on this head (lane l: channels
        // [V l, V l + V)), the same code on the same inputs.
        const int j0 = V * i;
        float wv[V], av[V], kv[V], vv[V], kko[V], vf[V], gv[V], pw0[V], pa0[V], pkk[V], pka[V], pv0[V];
#pragma unroll
        for (int q = 0; q < V; ++q) {
          wv[q] = sw[j0 + q], av[q] = sv[kSvA][j0 + q], kv[q] = sk[j0 + q], vv[q] = sv[kSvV][j0 + q];
          vf[q] = residual ? sv[kSvVF][j0 + q] : 0.0f, gv[q] = residual ? sv[kSvVG][j0 + q] : 0.0f;
          pw0[q] = sv[kSvW0][j0 + q], pa0[q] = sv[kSvA0][j0 + q], pkk[q] = sv[kSvKk][j0 + q];
          pka[q] = sv[kSvKa][j0 + q], pv0[q] = residual ? sv[kSvV0][j0 + q] : 0.0f;
        }
        v7_prep_head<V>(wv, av, kv, vv, kko, vf, gv, pw0, pa0, pkk, pka, pv0, residual);
#pragma unroll
        for (int q = 0; q < V; ++q) {
          sw[j0 + q] = wv[q], sk[j0 + q] = kv[q], skk[j0 + q] = kko[q], sb[j0 + q] = kko[q] * av[q];
          sv[kSvV][j0 + q] = vv[q];
        }
      }
    } else {
      skk[i] = tv.kk;
      sb[i] = tv.kk * tv.a;
    }
    __syncthreads();
    const float vi = kPrep ? sv[kSvV][i] : tv.v;
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
    // fp16 state: Fp16StateRound in its two steps, the second (subnormals,
    // saturation: a dozen instructions an element) only for a row that has
    // a value outside fp16's normal range, which it leaves as it is
    // otherwise; same bits. At large batches this kernel's instructions, not
    // only its bytes, set its time.
    // A segment's last token (every decode row) leaves step two to the
    // store's conversion (pack_chunk): no range test per element.
    if (!kHalf || t + 1 < g.rows) {
      if (wkv7_row_update<N, kHalf, true>(s, sa, vi, key, sw, sb, sk, sr, acc)) {
#pragma unroll
        for (int j = 0; j < N; ++j) s[j] = Fp16StateFinish(s[j]);
      }
    } else {
      wkv7_row_update<N, kHalf, false>(s, sa, vi, key, sw, sb, sk, sr, acc);
    }
    if constexpr (kOut) {
      // kernels/v7_output.cu's vector kernel on this head, by warp 0 (lane l:
      // channels [V l, V l + V)), from the same inputs with the same code:
      // the same bits as Wkv7 then V7Output.
      constexpr int V = N / 32;
      sv[kSvY][i] = acc;
      __syncthreads();
      if (i < 32) {
        const int j0 = V * i;
        float yv[V], rv[V], kv[V], vv[V], gv[V], prk[V], pw[V], pb[V];
#pragma unroll
        for (int q = 0; q < V; ++q) {
          yv[q] = sv[kSvY][j0 + q], rv[q] = sr[j0 + q], kv[q] = sk[j0 + q], vv[q] = sv[kSvV][j0 + q];
          gv[q] = sv[kSvG][j0 + q], prk[q] = sv[kSvRK][j0 + q], pw[q] = sv[kSvLnW][j0 + q];
          pb[q] = sv[kSvLnB][j0 + q];
        }
        v7_output_head<V>(yv, rv, kv, vv, gv, prk, pw, pb);
        store_vec<V>(os.out, os.out_type, o + j0, yv);
      }
    } else {
      y[o + i] = acc;
    }
    __syncthreads();  // the vectors are overwritten by the next token
  }
}

template <int N, typename E, bool kOut, bool kPrep>
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
                                                       float* __restrict__ y,         // (n, C)
                                                       int long_rows,  // segments this long: not ours
                                                       Wkv7OutputStage os,  // kOut: the output stage
                                                       Wkv7Prep pp) {       // kPrep: the prep
  constexpr bool kHalf = std::is_same_v<E, __half>;
  constexpr int kPerChunk = 16 / static_cast<int>(sizeof(E));  // elements per 16-byte chunk
  constexpr int kChunks = N / kPerChunk;                       // chunks per row
  constexpr int kRowBytes = N * static_cast<int>(sizeof(E));
  constexpr int kTileRows = N * kRowBytes <= kTileBytes ? N : kTileBytes / kRowBytes;
  static_assert(kChunks == 4 || kChunks % 8 == 0, "swizzle needs 4 or a multiple of 8 chunks per row");
  static_assert(N % kTileRows == 0 && kTileRows % 8 == 0, "row bands must tile the head");
  constexpr int kFill = kTileRows * kChunks / N;               // 16-byte chunks a thread moves per band
  static_assert(kTileRows * kChunks % N == 0, "a band is whole chunks per thread");
  __shared__ uint4 tile[kTileRows * kChunks];
  __shared__ __align__(16) float sv[kPrep ? kSvRowsPrep : kOut ? kSvRowsOut : kSvY][N];  // Wkv7Sv
  const int h = blockIdx.x;
  const int i = threadIdx.x;
  // The output stage's parameters and the prep's weights, read once into
  // shared memory before the wait: no kernel writes them, so these loads
  // overlap the previous kernel's tail.
  if constexpr (kOut) {
    sv[kSvRK][i] = os.r_k[h * N + i];
    sv[kSvLnW][i] = os.lnw[h * N + i];
    sv[kSvLnB][i] = os.lnb[h * N + i];
  }
  if constexpr (kPrep) {
    const int c = h * N + i;
    sv[kSvW0][i] = pp.w0[c];
    sv[kSvA0][i] = pp.a0[c];
    sv[kSvKk][i] = pp.k_k[c];
    sv[kSvKa][i] = pp.k_a[c];
    if (pp.v0 != nullptr) sv[kSvV0][i] = pp.v0[c];
  }
  pdl_wait();  // programmatic launch: the previous kernel's writes first (kernel_util.cuh)
  const SegmentDesc g = segs[blockIdx.y];
  // The long kernel's, or padding (whole block, before any barrier).
  if (g.rows >= long_rows || g.slot < 0 || g.rows == 0) return;
  // Token 0's vectors, issued before the state's loads so that both
  // latencies overlap (a decode step's segment has one token).
  const Wkv7TokenVec first = load_token_vec<kOut, kPrep>(
      static_cast<int64_t>(g.row_begin) * C + static_cast<int64_t>(h) * N + i, r, w, k, v, kk, a, os, pp);
  // The head's (N, N) block as 16-byte chunks, row after row.
  uint4* S = reinterpret_cast<uint4*>(state + g.slot * slot_stride) + static_cast<int64_t>(h) * N * kChunks;

  float s[N];  // row i of S (fp32 whatever the storage: fp16 is widened on load)
  for (int r0 = 0; r0 < N; r0 += kTileRows) {
    // A band's loads all issued before its shared stores.
    uint4 c[kFill];
#pragma unroll
    for (int u = 0; u < kFill; ++u) c[u] = S[static_cast<int64_t>(r0) * kChunks + i + u * N];
#pragma unroll
    for (int u = 0; u < kFill; ++u) {
      const int idx = i + u * N, row = idx / kChunks, q = idx % kChunks;
      tile[row * kChunks + swizzle<kChunks>(q, row)] = c[u];
    }
    __syncthreads();
    if (i >= r0 && i < r0 + kTileRows) {
      const int row = i - r0;
#pragma unroll
      for (int q = 0; q < kChunks; ++q) unpack_chunk<kHalf>(tile[row * kChunks + swizzle<kChunks>(q, row)], s + q * kPerChunk);
    }
    __syncthreads();
  }

  wkv7_row_tokens<N, E, kOut, kPrep>(g, h, C, s, r, w, k, v, kk, a, y, sv, os, pp, first);

  for (int r0 = 0; r0 < N; r0 += kTileRows) {
    if (i >= r0 && i < r0 + kTileRows) {
      const int row = i - r0;
#pragma unroll
      for (int q = 0; q < kChunks; ++q) tile[row * kChunks + swizzle<kChunks>(q, row)] = pack_chunk<kHalf>(s + q * kPerChunk);
    }
    __syncthreads();
#pragma unroll
    for (int u = 0; u < kFill; ++u) {
      const int idx = i + u * N, row = idx / kChunks, q = idx % kChunks;
      S[static_cast<int64_t>(r0) * kChunks + idx] = tile[row * kChunks + swizzle<kChunks>(q, row)];
    }
    __syncthreads();
  }
}

// ---------------------------------------------------------------- long segments

// Segments of at least this many rows take wkv7_seq_kernel. Below it the
// tiled kernel's single pass over the state is cheaper than the long
// kernel's staging (decode steps are all 1-row segments).
constexpr int kSeqMinRows = kWkv7LongRows;

// The long segments of one launch, by index into the segment list. Passed
// by value: the host knows the segment lengths, and a CUDA graph of the pass
// (keyed by which segments are long) replays the same list.
constexpr int kSeqMaxSegments = 128;
using LongSegments = SegmentGroup<kSeqMaxSegments>;


// A state row over N/8 lanes, 8 elements each. (4 elements over twice the
// lanes, more warps at one more shuffle per dot product, measured slower on
// an H100: 24,133 against 24,375 tokens/s for a 7.2B 4,096-token prefill.)
template <int N>
struct SeqShape {
  static constexpr int kElems = 8;                          // state elements per lane
  static constexpr int kLanes = N / kElems;                 // lanes per state row
  static constexpr int kThreads = N == 128 ? 256 : 128;     // per block
  static constexpr int kRows = kThreads / kLanes;           // state rows per block
  static constexpr int kBands = N / kRows;                  // blocks per head
  static constexpr int kTokens = N == 128 ? 8 : 16;         // tokens per staged chunk
  static constexpr int kGroup = kLanes < 8 ? kLanes : 8;  // tokens per y reduction (unrolled, in registers)
  static constexpr int kVec = 5 * N + kRows;                // floats staged per token: r w k kk a | v of the band
  static constexpr int kChunks16 = kVec / 4;                // 16-byte copies per token
  static_assert(kLanes <= 32 && kRows <= N && N % kRows == 0, "lane groups must tile the head");
  static_assert(kVec % 4 == 0 && kThreads % 32 == 0 && 32 % kLanes == 0, "lane groups must tile warps");
  static_assert(kTokens % kGroup == 0, "y reductions must tile a staged chunk");
  static_assert(2 * kTokens * kVec * 4 <= 48 * 1024, "static shared memory");
};

// Copies the vectors of tokens [t0, t0 + nt) of head h (and the values of
// the block's row band) into `dst` ([kTokens][kVec]) asynchronously.
template <int N>
__device__ __forceinline__ void seq_stage(float* dst, int64_t row0, int nt, int C, int h, int band,
                                          const float* __restrict__ r, const float* __restrict__ w,
                                          const float* __restrict__ k, const float* __restrict__ v,
                                          const float* __restrict__ kk, const float* __restrict__ a) {
  using S = SeqShape<N>;
  constexpr int kPerVec = N / 4;  // 16-byte chunks per head vector
  for (int idx = threadIdx.x; idx < nt * S::kChunks16; idx += S::kThreads) {
    const int t = idx / S::kChunks16, c = idx % S::kChunks16;
    const int vec = c / kPerVec;
    const int64_t o = (row0 + t) * C + static_cast<int64_t>(h) * N;
    const float* src;
    switch (vec) {
      case 0: src = r + o + 4 * c; break;
      case 1: src = w + o + 4 * (c - kPerVec); break;
      case 2: src = k + o + 4 * (c - 2 * kPerVec); break;
      case 3: src = kk + o + 4 * (c - 3 * kPerVec); break;
      case 4: src = a + o + 4 * (c - 4 * kPerVec); break;
      default: src = v + o + band * S::kRows + 4 * (c - 5 * kPerVec); break;
    }
    __pipeline_memcpy_async(dst + t * S::kVec + 4 * c, src, 16);
  }
}

// Sum over the kLanes lanes of a row group (consecutive lanes, aligned). The
// xor butterfly leaves the bit-identical sum in every lane of the group.
template <int kLanes>
__device__ __forceinline__ float group_sum(float x) {
#pragma unroll
  for (int o = 1; o < kLanes; o <<= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// The kG per-token partial sums v[0..kG) of each lane, summed over the
// kLanes lanes of its row group, one token per lane: halving exchanges
// (lane l keeps the upper half of the tokens when its bit is set, sends the
// other half to its partner) leave lane l with token l / (kLanes / kG)'s
// partial over the lanes that differ in the high bits; a butterfly over the
// low bits finishes it. kG - 1 + log2(kLanes / kG) shuffles for kG tokens,
// against log2(kLanes) per token for a butterfly each, and none of them on
// the recurrence's critical path.
template <int kLanes, int kG>
__device__ __forceinline__ float transpose_sum(float (&v)[kG], int l) {
#pragma unroll
  for (int cnt = kG / 2; cnt >= 1; cnt /= 2) {
    const int o = cnt * (kLanes / kG);
    const bool upper = (l & o) != 0;
#pragma unroll
    for (int j = 0; j < cnt; ++j) {
      const float send = upper ? v[j] : v[j + cnt];
      const float keep = upper ? v[j + cnt] : v[j];
      v[j] = keep + __shfl_xor_sync(0xffffffffu, send, o);
    }
  }
  float x = v[0];
#pragma unroll
  for (int o = kLanes / kG / 2; o >= 1; o /= 2) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

template <int N, typename E>
__global__ void __launch_bounds__(SeqShape<N>::kThreads) wkv7_seq_kernel(
    const SegmentDesc* __restrict__ segs, const LongSegments list, int C,
    float* __restrict__ state,  // (slots, stride)
    int64_t slot_stride,
    const float* __restrict__ r, const float* __restrict__ w, const float* __restrict__ k,
    const float* __restrict__ v, const float* __restrict__ kk, const float* __restrict__ a,
    float* __restrict__ y) {
  pdl_wait();  // programmatic launch: the previous kernel's writes first (kernel_util.cuh)
  using S = SeqShape<N>;
  constexpr bool kHalf = std::is_same_v<E, __half>;
  constexpr int kElems = S::kElems;
  constexpr int kM = kElems / 4;  // 16-byte chunks of the row per lane
  constexpr int kG = S::kGroup;
  __shared__ __align__(16) float stage[2][S::kTokens * S::kVec];
  const SegmentDesc g = segs[list.index[blockIdx.y]];
  // A short one rounded into the list (wkv7_long_segments) is the tiled
  // kernel's; the whole block returns before any barrier.
  if (g.rows < kSeqMinRows || g.slot < 0) return;
  const int h = blockIdx.x / S::kBands, band = blockIdx.x % S::kBands;
  const int l = threadIdx.x % S::kLanes, rr = threadIdx.x / S::kLanes;
  const int i = band * S::kRows + rr;  // this lane group's state row
  E* Si = reinterpret_cast<E*>(state + g.slot * slot_stride) + (static_cast<int64_t>(h) * N + i) * N;

  // s[4m + e] is column 4 (l + kLanes m) + e of row i.
  float s[kElems];
#pragma unroll
  for (int m = 0; m < kM; ++m) {
    const int q = 4 * (l + S::kLanes * m);
    if constexpr (kHalf) {
      const uint2 u = *reinterpret_cast<const uint2*>(Si + q);
      __half2 h0, h1;
      memcpy(&h0, &u.x, 4);
      memcpy(&h1, &u.y, 4);
      const float2 f0 = __half22float2(h0), f1 = __half22float2(h1);
      s[4 * m] = f0.x;
      s[4 * m + 1] = f0.y;
      s[4 * m + 2] = f1.x;
      s[4 * m + 3] = f1.y;
    } else {
      const float4 f = *reinterpret_cast<const float4*>(Si + q);
      s[4 * m] = f.x;
      s[4 * m + 1] = f.y;
      s[4 * m + 2] = f.z;
      s[4 * m + 3] = f.w;
    }
  }

  const int nchunks = (g.rows + S::kTokens - 1) / S::kTokens;
  seq_stage<N>(stage[0], g.row_begin, min(S::kTokens, g.rows), C, h, band, r, w, k, v, kk, a);
  __pipeline_commit();
  for (int c = 0; c < nchunks; ++c) {
    const int t0 = c * S::kTokens;
    if (c + 1 < nchunks) {
      // Its buffer was last read in chunk c - 1, which ended with a barrier.
      seq_stage<N>(stage[(c + 1) & 1], static_cast<int64_t>(g.row_begin) + t0 + S::kTokens,
                   min(S::kTokens, g.rows - t0 - S::kTokens), C, h, band, r, w, k, v, kk, a);
    }
    __pipeline_commit();  // possibly empty, so that "all but the last group" is always chunk c
    __pipeline_wait_prior(1);
    __syncthreads();  // every thread's copies of chunk c have landed
    const float* buf = stage[c & 1];
    const int nt = min(S::kTokens, g.rows - t0);
    for (int g0 = 0; g0 < nt; g0 += kG) {
      // kG tokens unrolled: the loads of the next token are independent of
      // the state and are scheduled ahead; each token leaves its y partial
      // in yp, summed over the lanes once per group.
      float yp[kG];
#pragma unroll
      for (int tt = 0; tt < kG; ++tt) {
        yp[tt] = 0.0f;
        if (g0 + tt < nt) {  // uniform over the block
          const float* p = buf + (g0 + tt) * S::kVec;
          float rs[kElems], ws[kElems], ks[kElems], kks[kElems], as[kElems];
#pragma unroll
          for (int m = 0; m < kM; ++m) {
            const int q = 4 * (l + S::kLanes * m);
            const float4 r4 = *reinterpret_cast<const float4*>(p + q);
            const float4 w4 = *reinterpret_cast<const float4*>(p + N + q);
            const float4 k4 = *reinterpret_cast<const float4*>(p + 2 * N + q);
            const float4 kk4 = *reinterpret_cast<const float4*>(p + 3 * N + q);
            const float4 a4 = *reinterpret_cast<const float4*>(p + 4 * N + q);
            rs[4 * m] = r4.x, rs[4 * m + 1] = r4.y, rs[4 * m + 2] = r4.z, rs[4 * m + 3] = r4.w;
            ws[4 * m] = w4.x, ws[4 * m + 1] = w4.y, ws[4 * m + 2] = w4.z, ws[4 * m + 3] = w4.w;
            ks[4 * m] = k4.x, ks[4 * m + 1] = k4.y, ks[4 * m + 2] = k4.z, ks[4 * m + 3] = k4.w;
            kks[4 * m] = kk4.x, kks[4 * m + 1] = kk4.y, kks[4 * m + 2] = kk4.z, kks[4 * m + 3] = kk4.w;
            as[4 * m] = a4.x, as[4 * m + 1] = a4.y, as[4 * m + 2] = a4.z, as[4 * m + 3] = a4.w;
          }
          const float vi = p[5 * N + rr];
          // sa = (S kk)_i: two chains per lane, then the group's lanes.
          float sa0 = 0.0f, sa1 = 0.0f;
#pragma unroll
          for (int e = 0; e < kElems / 2; ++e) {
            sa0 += s[e] * kks[e];
            sa1 += s[kElems / 2 + e] * kks[kElems / 2 + e];
          }
          const float sa = group_sum<S::kLanes>(sa0 + sa1);
          uint32_t key = 0;
          if constexpr (kHalf) key = Fp16StateRowKey(h, N, i, vi);
          float y0 = 0.0f, y1 = 0.0f;
#pragma unroll
          for (int e = 0; e < kElems; ++e) {
            const int j = 4 * (l + S::kLanes * (e / 4)) + e % 4;  // the element's column
            const float b = kks[e] * as[e];
            const float n = s[e] * ws[e] - sa * b + vi * ks[e];
            if (e < kElems / 2) {
              y0 += n * rs[e];
            } else {
              y1 += n * rs[e];
            }
            if constexpr (kHalf) {
              s[e] = Fp16StateRound(n, Fp16StateDither(key, j, s[e]));
            } else {
              s[e] = n;
            }
          }
          yp[tt] = y0 + y1;
        }
      }
      const float yi = transpose_sum<S::kLanes, kG>(yp, l);
      const int tau = l / (S::kLanes / kG);  // the token this lane's sum belongs to
      if (l % (S::kLanes / kG) == 0 && g0 + tau < nt) {
        y[(static_cast<int64_t>(g.row_begin) + t0 + g0 + tau) * C + static_cast<int64_t>(h) * N + i] = yi;
      }
    }
    __syncthreads();  // chunk c's buffer is refilled by the next iteration's copies
  }

#pragma unroll
  for (int m = 0; m < kM; ++m) {
    const int q = 4 * (l + S::kLanes * m);
    if constexpr (kHalf) {
      // Every value is on the fp16 grid already: the conversion is exact.
      const __half2 h0 = __floats2half2_rn(s[4 * m], s[4 * m + 1]), h1 = __floats2half2_rn(s[4 * m + 2], s[4 * m + 3]);
      uint2 u;
      memcpy(&u.x, &h0, 4);
      memcpy(&u.y, &h1, 4);
      *reinterpret_cast<uint2*>(Si + q) = u;
    } else {
      *reinterpret_cast<float4*>(Si + q) = make_float4(s[4 * m], s[4 * m + 1], s[4 * m + 2], s[4 * m + 3]);
    }
  }
}

// ---------------------------------------------------------------- chunked (DPLR) form, fp32 state

// Long segments with fp32 state, N = 64, in chunks of kChunkL tokens, as
// engine/model/wkv7_chunked.h writes it (the CPU reference): kernel A builds
// every chunk's matrices at once (they do not depend on the state), kernel B
// walks a head's chunks in order per row band and does only the rows'
// products, none of which waits on the previous token:
//   sp, sq = S_in P^T, S_in Q^T;  y = sq + sp G1 + v G2;
//   S_out = S_in . D_end + v K2 - sp B2.
// A chunk whose cumulative decay leaves the float range (no model's decays
// do: they are >= 0.545) is flagged by kernel A and walked token by token by
// kernel B.
// Measured (ncu, H100, 1.5B layer at T = 4,096): A 230 us, B 475 us, against
// 1.62 ms for the long kernel's token walk. B is bound by latency (one
// 4-warp block per SM at 1.5B). What moved it: double buffering its chunk
// copies (cp.async), 1.93 -> 0.64 ms (the copies had been serialised global
// round trips before each chunk); then its products on the tensor cores
// with four warps a band, 660 -> 475 us (1.5B prefill 92,136 -> 101,031
// tokens/s, 7.2B 27,285 -> 29,552). Tried and dropped, slower on the same
// card: B on CUDA cores with 16 lanes a row, 86,806 against 93,124 tokens/s
// for the 1.5B prefill; A as a persistent kernel that lets B start beside it
// (programmatic launch, per-chunk ready counters), 88,158; B on the tensor
// cores with one warp a band: B 896 us, 79,877 (one warp per SM cannot keep
// a tensor core busy through the chunk's dependent mma chain).
constexpr int kChunkL = 16;
constexpr int kWkv7ChunkedMinRows = 64;  // a pass's longest segment (a power of two) from which it is used
constexpr int kChunkN = 64;
constexpr float kChunkMinDecay = 1e-30f;
// Per (segment, chunk, head): P, Q, B2, K2 [L][N]; G1, G2 [L][L]; D_end [N];
// the walk flag; padded to 16 bytes.
constexpr int kMatP = 0, kMatQ = kChunkL * kChunkN, kMatB2 = 2 * kChunkL * kChunkN, kMatK2 = 3 * kChunkL * kChunkN;
constexpr int kMatG1 = 4 * kChunkL * kChunkN, kMatG2 = kMatG1 + kChunkL * kChunkL, kMatD = kMatG2 + kChunkL * kChunkL;
constexpr int kMatFlag = kMatD + kChunkN;
constexpr int kMatFloats = (kMatFlag + 1 + 3) / 4 * 4;
// Kernel B: 16-row bands per head, warps per band (2 warps measured 98,149
// against 4 warps' 101,031 tokens/s for the 1.5B 4,096-token prefill, the
// same for 7.2B: 29,634 against 29,552; H100).
constexpr int kChunkBands = kChunkN / 16, kBandWarps = 4;

__host__ __device__ inline int ChunksOf(int rows) { return (rows + kChunkL - 1) / kChunkL; }

// Where list entry jl's chunks start in the scratch: the chunks of the long
// segments before it (computed on the device from the segments, so a CUDA
// graph of the pass stays valid for any lengths with the same key).
__device__ __forceinline__ int chunk_base(const SegmentDesc* __restrict__ segs, const LongSegments& list, int jl) {
  int off = 0;
  for (int j = 0; j < jl; ++j) {
    const SegmentDesc g = segs[list.index[j]];
    if (g.rows >= kSeqMinRows && g.slot >= 0) off += ChunksOf(g.rows);
  }
  return off;
}

// Where the tensor-core kernel B finds an element of a chunk matrix it uses
// as an mma B operand Bop (K x Nn, k the summed index): in the order the
// warp's lanes load them, one 16-byte read per lane for two k-steps of an
// n-tile. For k-step ks and n-tile nt, lane (g, t) = (lane / 4, lane % 4)
// holds b0 = Bop[8 ks + 2 t][8 nt + g] and b1 = Bop[8 ks + 2 t + 1][8 nt + g]:
// the k index runs through a k-step as 0, 2, 4, 6, 1, 3, 5, 7 instead of
// 0..7, the same permutation the A operands take, under which an m16n8
// accumulator (columns 2t, 2t + 1 in lane t) is already an A fragment.
template <int K, int Nn>
__host__ __device__ constexpr int frag_index(int kidx, int n) {
  const int nt = n >> 3, g = n & 7, ks = kidx >> 3, r = kidx & 7;
  const int lane = 4 * g + (r >> 1);
  return ((nt * (K / 16) + (ks >> 1)) * 32 + lane) * 4 + ((ks & 1) << 1) + (r & 1);
}

// frag_index's inverse: the (k, n) stored at f.
template <int K>
__device__ __forceinline__ void frag_element(int f, int& kidx, int& n) {
  const int sub = f & 3, lane = (f >> 2) & 31, blk = f >> 7;
  const int ks = 2 * (blk % (K / 16)) + (sub >> 1);
  kidx = 8 * ks + 2 * (lane & 3) + (sub & 1);
  n = 8 * (blk / (K / 16)) + (lane >> 2);
}

// Kernel A: grid (chunks, H, long segments), 256 threads. P, Q, B2, K2, G1
// and G2 go out in fragment order (frag_index) for kernel B's mma operands.
__global__ void __launch_bounds__(256) wkv7_chunk_mats_kernel(
    const SegmentDesc* __restrict__ segs, const LongSegments list, int C, const float* __restrict__ r,
    const float* __restrict__ w, const float* __restrict__ k, const float* __restrict__ kk,
    const float* __restrict__ a, float* __restrict__ mats) {
  pdl_wait();
  // Shared row stride N + 4: rows stay 16-byte aligned, and the 16-byte
  // reads of step 4 (eight rows, same columns, per quarter warp) hit
  // distinct bank groups.
  constexpr int L = kChunkL, N = kChunkN, LD = N + 4;
  __shared__ __align__(16) float sv[5][L][LD];                        // r w k kk a, then P Q Bi Ki in slots 0..3
  __shared__ __align__(16) float D[L][LD];
  __shared__ float Abk[L][L + 1], Akk[L][L + 1], Bbr[L][L + 1], Bkr[L][L + 1], W[L][L + 1], G1[L][L + 1];
  __shared__ int walk;
  const int c = blockIdx.x, h = blockIdx.y, jl = blockIdx.z;
  const SegmentDesc g = segs[list.index[jl]];
  if (g.rows < kSeqMinRows || g.slot < 0 || c * L >= g.rows) return;  // whole block, before any barrier
  const int n = min(L, g.rows - c * L);
  const int tid = threadIdx.x;
  if (tid == 0) walk = 0;
  // 1. The chunk's vectors; tokens past n are identities (w = 1, the rest 0).
  for (int e = tid; e < 5 * L * N / 4; e += 256) {
    const int q = e / (L * N / 4), t = (e / (N / 4)) % L, j = 4 * (e % (N / 4));
    const float one = q == 1 ? 1.0f : 0.0f;
    float4 x = make_float4(one, one, one, one);
    if (t < n) {
      const int64_t o = static_cast<int64_t>(g.row_begin + c * L + t) * C + static_cast<int64_t>(h) * N + j;
      const float* src = q == 0 ? r : q == 1 ? w : q == 2 ? k : q == 3 ? kk : a;
      x = *reinterpret_cast<const float4*>(src + o);
    }
    *reinterpret_cast<float4*>(&sv[q][t][j]) = x;
  }
  __syncthreads();
  // 2. Cumulative decays, one column per thread.
  if (tid < N) {
    float d = 1.0f;
    bool low = false;
    for (int t = 0; t < L; ++t) {
      d *= sv[1][t][tid];
      D[t][tid] = d;
      low = low || d < kChunkMinDecay;
    }
    if (low) walk = 1;
  }
  __syncthreads();
  float* out = mats + ((static_cast<int64_t>(chunk_base(segs, list, jl)) + c) * (C / N) + h) * kMatFloats;
  if (walk) {
    if (tid == 0) out[kMatFlag] = 1.0f;
    return;  // uniform: every thread read the same flag after the barrier
  }
  // 3. P = kk D_{t-1}, Q = r D_t, Bi = kk a / D_t, Ki = k / D_t, in place.
  constexpr int kPer = L * N / 256;  // elements per thread (the block is 256 threads)
  float pq[kPer][4];
#pragma unroll
  for (int it = 0; it < kPer; ++it) {
    const int e = tid + 256 * it, t = e / N, j = e % N;
    const float d = D[t][j], dprev = t > 0 ? D[t - 1][j] : 1.0f, inv = 1.0f / d;
    pq[it][0] = sv[3][t][j] * dprev;
    pq[it][1] = sv[0][t][j] * d;
    pq[it][2] = sv[3][t][j] * sv[4][t][j] * inv;
    pq[it][3] = sv[2][t][j] * inv;
  }
  __syncthreads();
#pragma unroll
  for (int it = 0; it < kPer; ++it) {
    const int e = tid + 256 * it, t = e / N, j = e % N;
#pragma unroll
    for (int q = 0; q < 4; ++q) sv[q][t][j] = pq[it][q];
  }
  __syncthreads();
  // 4. The four L x L matrices, one entry per thread.
  {
    const int t = tid / L, u = tid % L;
    float pb = 0.0f, pk = 0.0f, qb = 0.0f, qk = 0.0f;
#pragma unroll 4
    for (int j = 0; j < N; j += 4) {
      const float4 p = *reinterpret_cast<const float4*>(&sv[0][t][j]);
      const float4 q = *reinterpret_cast<const float4*>(&sv[1][t][j]);
      const float4 b = *reinterpret_cast<const float4*>(&sv[2][u][j]);
      const float4 kv = *reinterpret_cast<const float4*>(&sv[3][u][j]);
      pb += p.x * b.x + p.y * b.y + p.z * b.z + p.w * b.w;
      pk += p.x * kv.x + p.y * kv.y + p.z * kv.z + p.w * kv.w;
      qb += q.x * b.x + q.y * b.y + q.z * b.z + q.w * b.w;
      qk += q.x * kv.x + q.y * kv.y + q.z * kv.z + q.w * kv.w;
    }
    Abk[t][u] = u < t ? pb : 0.0f;
    Akk[t][u] = u < t ? pk : 0.0f;
    Bbr[t][u] = u <= t ? qb : 0.0f;
    Bkr[t][u] = u <= t ? qk : 0.0f;
  }
  __syncthreads();
  // 5. W = (I + Abk^T)^-1 by back substitution, an element per thread:
  // thread (q, col) (a half warp per column) holds W[q][col]'s running value;
  // at step m (from the last row up) row m is final, is broadcast over the
  // half warp, and every row above it subtracts its share. 16 steps of a
  // shuffle and an FMA, instead of one thread per column walking ~136
  // dependent shared-memory steps while the block waits.
  static_assert(L * L == 256 && L == 16, "a thread per element of W, a half warp per column");
  {
    const int q = tid % L, col = tid / L, half = threadIdx.x & 16;
    float x = q == col ? 1.0f : 0.0f;
#pragma unroll
    for (int m = L - 1; m >= 0; --m) {
      const float wm = __shfl_sync(0xffffffffu, x, half | m);
      if (q < m) x -= Abk[m][q] * wm;
    }
    W[q][col] = x;
  }
  __syncthreads();
  // 6. B2 = W (Bi . D_end) (into the Bi slot's output), G1 = -W Bbr^T.
  for (int e = tid; e < L * N; e += blockDim.x) {
    const int q = e / N, j = e % N;
    float x = 0.0f;
    for (int m = q; m < L; ++m) x += W[q][m] * sv[2][m][j];
    sv[4][q][j] = x * D[L - 1][j];  // kept for K2 (slot 4, the raw a, is free now)
  }
  {
    const int q = tid / L, t = tid % L;
    float x = 0.0f;
    for (int m = q; m < L; ++m) x += W[q][m] * Bbr[t][m];
    G1[q][t] = -x;
    out[kMatG1 + frag_index<L, L>(q, t)] = -x;
  }
  __syncthreads();
  // 7. K2 = Ki . D_end - Akk^T B2, G2 = Bkr^T + Akk^T G1; P, Q, D_end out.
  for (int e = tid; e < L * N; e += blockDim.x) {
    const int u = e / N, j = e % N;
    float x = sv[3][u][j] * D[L - 1][j];
    for (int q = u + 1; q < L; ++q) x -= Akk[q][u] * sv[4][q][j];
    sv[2][u][j] = x;  // slot 2 (Bi) was last read in step 6
  }
  {
    const int u = tid / L, t = tid % L;
    float x = Bkr[t][u];
    for (int q = u + 1; q < L; ++q) x += Akk[q][u] * G1[q][t];
    out[kMatG2 + frag_index<L, L>(u, t)] = x;
  }
  // 8. The L x N matrices out in fragment order, coalesced: P, Q (Bop = P^T,
  // k = column) from slots 0, 1; B2, K2 (k = token) from slots 4, 2.
  __syncthreads();
  for (int f = tid; f < L * N; f += 256) {
    int kidx, n;
    frag_element<N>(f, kidx, n);
    out[kMatP + f] = sv[0][n][kidx];
    out[kMatQ + f] = sv[1][n][kidx];
    frag_element<L>(f, kidx, n);
    out[kMatB2 + f] = sv[4][kidx][n];
    out[kMatK2 + f] = sv[2][kidx][n];
  }
  if (tid < N) out[kMatD + tid] = D[L - 1][tid];
  if (tid == 0) out[kMatFlag] = 0.0f;
}

// Kernel B, on the tensor cores: grid (H x kChunkBands, long segments), a
// 16-row band per block of kMmaWarps warps, warp w holding the band's state
// columns [64 w / kMmaWarps, 64 (w + 1) / kMmaWarps) as m16n8 accumulators. mma.sync m16n8k8 in TF32 split three
// ways (a = a_hi + a_lo with a_hi a rounded to TF32 and a_lo the exact rest;
// a b ~ a_lo b_hi + a_hi b_lo + a_hi b_hi, accumulated in fp32: about fp32's
// precision). Per chunk:
//   1. each warp: its k-slice (its columns) of sp = S P^T and sq = S Q^T;
//      the partial sums meet in shared memory;
//   2. y = sq + sp G1 + V G2, tokens 8 nt .. 8 nt + 7 by warp nt % kMmaWarps;
//   3. each warp: its columns of S = S . D_end + V K2 - sp B2.
// The k index of every product is permuted within each k-step (frag_index),
// so S and sp serve as A operands where they lie, with no exchange.

// a and b each summed over the four lanes of a quad (an mma row's lanes).
__device__ __forceinline__ void quad_sum2(float& a, float& b) {
  a += __shfl_xor_sync(0xffffffffu, a, 1);
  a += __shfl_xor_sync(0xffffffffu, a, 2);
  b += __shfl_xor_sync(0xffffffffu, b, 1);
  b += __shfl_xor_sync(0xffffffffu, b, 2);
}

__device__ __forceinline__ void split_tf32(float x, uint32_t& hi, uint32_t& lo) {
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(hi) : "f"(x));
  lo = __float_as_uint(x - __uint_as_float(hi));  // exact; the mma reads its top 19 bits
}

__device__ __forceinline__ void mma_tf32(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// An A operand (16 x 8) in three-way TF32.
struct AFrag {
  uint32_t hi[4], lo[4];
  // From an m16n8 accumulator (c0, c1, c2, c3) = rows (g, g, g+8, g+8),
  // columns (2t, 2t+1, 2t, 2t+1): a = (c0, c2, c1, c3), k permuted.
  __device__ __forceinline__ void from_acc(const float (&c)[4], float sign = 1.0f) {
    split_tf32(sign * c[0], hi[0], lo[0]);
    split_tf32(sign * c[2], hi[1], lo[1]);
    split_tf32(sign * c[1], hi[2], lo[2]);
    split_tf32(sign * c[3], hi[3], lo[3]);
  }
};

// d += A Bop for one k-step and n-tile; (b0, b1) Bop's pair in fp32.
__device__ __forceinline__ void mma3(float (&d)[4], const AFrag& A, float b0, float b1) {
  uint32_t bh0, bl0, bh1, bl1;
  split_tf32(b0, bh0, bl0);
  split_tf32(b1, bh1, bl1);
  mma_tf32(d, A.lo, bh0, bh1);
  mma_tf32(d, A.hi, bl0, bl1);
  mma_tf32(d, A.hi, bh0, bh1);
}

__global__ void __launch_bounds__(32 * kBandWarps) wkv7_chunk_rows_kernel(
    const SegmentDesc* __restrict__ segs, const LongSegments list, int C, float* __restrict__ state,
    int64_t slot_stride, const float* __restrict__ r, const float* __restrict__ w, const float* __restrict__ k,
    const float* __restrict__ v, const float* __restrict__ kk, const float* __restrict__ a, float* __restrict__ y,
    const float* __restrict__ mats) {
  pdl_wait();
  constexpr int L = kChunkL, N = kChunkN, kMmaWarps = kBandWarps, kThreads = 32 * kMmaWarps, kRows = 16;
  constexpr int kQ = 8 / kMmaWarps;  // the warp's state n-tiles (8 columns each)
  static_assert(kMmaWarps == 1 || kMmaWarps == 2 || kMmaWarps == 4, "warps must split 8 n-tiles evenly in pairs");
  constexpr int kBands = N / kRows;
  // The values' rows padded to 20 floats: the A-fragment reads (tokens 2t and
  // 2t + 1, rows g) hit distinct banks.
  constexpr int LDV = kRows + 4;
  __shared__ __align__(16) float smb[2][kMatFloats];
  __shared__ __align__(16) float svb[2][L][LDV];
  __shared__ __align__(16) float red[kMmaWarps][2][2][32][4];  // [warp][sp, sq][n-tile][lane][4]: partial sums
  __shared__ float walk_sum[kMmaWarps][2][kRows];                // the token walk's cross-warp sums
  const SegmentDesc seg = segs[list.index[blockIdx.y]];
  if (seg.rows < kSeqMinRows || seg.slot < 0) return;
  const int h = blockIdx.x / kBands, row0 = (blockIdx.x % kBands) * kRows;
  const int lane = threadIdx.x & 31, wp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int i0 = row0 + g, i1 = i0 + 8;  // the lane's two state rows
  float* S0 = state + seg.slot * slot_stride + (static_cast<int64_t>(h) * N + i0) * N;
  float* S1 = S0 + 8 * N;
  // S[q]: state columns 8 (kQ wp + q) + 2t (+1) of rows i0 (c0, c1) and i1 (c2, c3).
  float S[kQ][4];
#pragma unroll
  for (int q = 0; q < kQ; ++q) {
    const int col = 8 * (kQ * wp + q) + 2 * t;
    const float2 x0 = *reinterpret_cast<const float2*>(S0 + col);
    const float2 x1 = *reinterpret_cast<const float2*>(S1 + col);
    S[q][0] = x0.x, S[q][1] = x0.y, S[q][2] = x1.x, S[q][3] = x1.y;
  }
  const int H = C / N;
  const int base = chunk_base(segs, list, blockIdx.y);
  const int nchunks = ChunksOf(seg.rows);
  auto stage = [&](int c, int b) {
    const int n = min(L, seg.rows - c * L);
    const float* mat = mats + ((static_cast<int64_t>(base) + c) * H + h) * kMatFloats;
    for (int e = threadIdx.x; e < kMatFloats / 4; e += kThreads) __pipeline_memcpy_async(&smb[b][4 * e], mat + 4 * e, 16);
    constexpr int kV4 = kRows / 4;
    for (int e = threadIdx.x; e < L * kV4; e += kThreads) {
      const int tok = e / kV4, q = e % kV4;
      if (tok < n) {
        __pipeline_memcpy_async(&svb[b][tok][4 * q],
                                v + static_cast<int64_t>(seg.row_begin + c * L + tok) * C +
                                    static_cast<int64_t>(h) * N + row0 + 4 * q,
                                16);
      } else {
        *reinterpret_cast<float4*>(&svb[b][tok][4 * q]) = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      }
    }
    __pipeline_commit();
  };
  stage(0, 0);
  for (int c = 0; c < nchunks; ++c) {
    const int n = min(L, seg.rows - c * L);
    const float* sm = smb[c & 1];
    const float(*sv)[LDV] = svb[c & 1];
    if (c + 1 < nchunks) {
      stage(c + 1, (c + 1) & 1);  // its buffer's reads (chunk c - 1) ended at the barrier below
      __pipeline_wait_prior(1);
    } else {
      __pipeline_wait_prior(0);
    }
    __syncthreads();  // chunk c's copies, every thread's, are visible
    const int64_t tok0 = seg.row_begin + static_cast<int64_t>(c) * L;
    if (sm[kMatFlag] != 0.0f) {
      // Token by token; a row's dot products summed over the quad, then the warps.
      for (int tk = 0; tk < n; ++tk) {
        const int64_t o = (tok0 + tk) * C + static_cast<int64_t>(h) * N;
        float sa0 = 0.0f, sa1 = 0.0f;
#pragma unroll
        for (int q = 0; q < kQ; ++q) {
          const int64_t j = o + 8 * (kQ * wp + q) + 2 * t;
          sa0 += S[q][0] * kk[j] + S[q][1] * kk[j + 1];
          sa1 += S[q][2] * kk[j] + S[q][3] * kk[j + 1];
        }
        quad_sum2(sa0, sa1);
        if (t == 0) walk_sum[wp][0][g] = sa0, walk_sum[wp][0][g + 8] = sa1;
        __syncthreads();
        sa0 = sa1 = 0.0f;
#pragma unroll
        for (int u = 0; u < kMmaWarps; ++u) sa0 += walk_sum[u][0][g], sa1 += walk_sum[u][0][g + 8];
        const float v0 = sv[tk][g], v1 = sv[tk][g + 8];
        float y0 = 0.0f, y1 = 0.0f;
#pragma unroll
        for (int q = 0; q < kQ; ++q) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int64_t j = o + 8 * (kQ * wp + q) + 2 * t + e;
            const float b = kk[j] * a[j];
            S[q][e] = S[q][e] * w[j] - sa0 * b + v0 * k[j];
            S[q][2 + e] = S[q][2 + e] * w[j] - sa1 * b + v1 * k[j];
            y0 += S[q][e] * r[j];
            y1 += S[q][2 + e] * r[j];
          }
        }
        quad_sum2(y0, y1);
        if (t == 0) walk_sum[wp][1][g] = y0, walk_sum[wp][1][g + 8] = y1;
        __syncthreads();
        if (wp == 0 && t == 0) {
          y0 = y1 = 0.0f;
#pragma unroll
          for (int u = 0; u < kMmaWarps; ++u) y0 += walk_sum[u][1][g], y1 += walk_sum[u][1][g + 8];
          y[o + i0] = y0;
          y[o + i1] = y1;
        }
        __syncthreads();  // walk_sum is rewritten by the next token
      }
      continue;  // the barrier above ends this buffer's reads
    }
    // 1. This warp's k-slice of sp and sq: k-steps kQ wp + q (its S
    // accumulators); a 16-byte read of P and of Q per n-tile holds two.
    float sp[2][4] = {}, sq[2][4] = {};
#pragma unroll
    for (int q = 0; q < kQ; ++q) {
      const int ks = kQ * wp + q;
      AFrag A;
      A.from_acc(S[q]);
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
        const int f = ((nt * 4 + (ks >> 1)) * 32 + lane) * 4;
        const float4 P4 = *reinterpret_cast<const float4*>(sm + kMatP + f);
        const float4 Q4 = *reinterpret_cast<const float4*>(sm + kMatQ + f);
        const bool odd = (q & 1) != 0;  // ks's parity (kQ is even)
        mma3(sp[nt], A, odd ? P4.z : P4.x, odd ? P4.w : P4.y);
        mma3(sq[nt], A, odd ? Q4.z : Q4.x, odd ? Q4.w : Q4.y);
      }
    }
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
      *reinterpret_cast<float4*>(red[wp][0][nt][lane]) = make_float4(sp[nt][0], sp[nt][1], sp[nt][2], sp[nt][3]);
      *reinterpret_cast<float4*>(red[wp][1][nt][lane]) = make_float4(sq[nt][0], sq[nt][1], sq[nt][2], sq[nt][3]);
    }
    __syncthreads();
    // The whole sp (every warp needs it), in the warps' order.
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
      float4 x = *reinterpret_cast<const float4*>(red[0][0][nt][lane]);
#pragma unroll
      for (int u = 1; u < kMmaWarps; ++u) {
        const float4 p = *reinterpret_cast<const float4*>(red[u][0][nt][lane]);
        x.x += p.x, x.y += p.y, x.z += p.z, x.w += p.w;
      }
      sp[nt][0] = x.x, sp[nt][1] = x.y, sp[nt][2] = x.z, sp[nt][3] = x.w;
    }
    // A fragments over the chunk's tokens (k = u): sp, -sp and V.
    AFrag Asp[2], Anp[2], Av[2];
#pragma unroll
    for (int ku = 0; ku < 2; ++ku) {
      Asp[ku].from_acc(sp[ku]);
      Anp[ku].from_acc(sp[ku], -1.0f);
      const float va[4] = {sv[8 * ku + 2 * t][g], sv[8 * ku + 2 * t][g + 8], sv[8 * ku + 2 * t + 1][g],
                           sv[8 * ku + 2 * t + 1][g + 8]};
#pragma unroll
      for (int e = 0; e < 4; ++e) split_tf32(va[e], Av[ku].hi[e], Av[ku].lo[e]);
    }
    // 2. y = sq + sp G1 + V G2 for tokens 8 nt + 2t (+1), rows i0 and i1:
    // token n-tile nt by warp nt % kMmaWarps.
#pragma unroll
    for (int nt = wp; nt < 2; nt += kMmaWarps) {
      float yc[4];
      {
        float4 x = *reinterpret_cast<const float4*>(red[0][1][nt][lane]);
#pragma unroll
        for (int u = 1; u < kMmaWarps; ++u) {
          const float4 p = *reinterpret_cast<const float4*>(red[u][1][nt][lane]);
          x.x += p.x, x.y += p.y, x.z += p.z, x.w += p.w;
        }
        yc[0] = x.x, yc[1] = x.y, yc[2] = x.z, yc[3] = x.w;
      }
      const float4 G1 = *reinterpret_cast<const float4*>(sm + kMatG1 + (nt * 32 + lane) * 4);
      const float4 G2 = *reinterpret_cast<const float4*>(sm + kMatG2 + (nt * 32 + lane) * 4);
      mma3(yc, Asp[0], G1.x, G1.y);
      mma3(yc, Asp[1], G1.z, G1.w);
      mma3(yc, Av[0], G2.x, G2.y);
      mma3(yc, Av[1], G2.z, G2.w);
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int tk = 8 * nt + 2 * t + e;
        if (tk < n) {
          const int64_t o = (tok0 + tk) * C + static_cast<int64_t>(h) * N;
          y[o + i0] = yc[e];
          y[o + i1] = yc[2 + e];
        }
      }
    }
    // 3. This warp's columns of S = S . D_end + V K2 - sp B2.
#pragma unroll
    for (int q = 0; q < kQ; ++q) {
      const int nt = kQ * wp + q;
      const float2 D2 = *reinterpret_cast<const float2*>(sm + kMatD + 8 * nt + 2 * t);
      S[q][0] *= D2.x, S[q][1] *= D2.y, S[q][2] *= D2.x, S[q][3] *= D2.y;
      const float4 K4 = *reinterpret_cast<const float4*>(sm + kMatK2 + (nt * 32 + lane) * 4);
      const float4 B4 = *reinterpret_cast<const float4*>(sm + kMatB2 + (nt * 32 + lane) * 4);
      mma3(S[q], Av[0], K4.x, K4.y);
      mma3(S[q], Av[1], K4.z, K4.w);
      mma3(S[q], Anp[0], B4.x, B4.y);
      mma3(S[q], Anp[1], B4.z, B4.w);
    }
    __syncthreads();  // this buffer's and red's reads are done before they are rewritten
  }
#pragma unroll
  for (int q = 0; q < kQ; ++q) {
    const int col = 8 * (kQ * wp + q) + 2 * t;
    *reinterpret_cast<float2*>(S0 + col) = make_float2(S[q][0], S[q][1]);
    *reinterpret_cast<float2*>(S1 + col) = make_float2(S[q][2], S[q][3]);
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
                                    float* __restrict__ y) {
  pdl_wait();  // programmatic launch: the previous kernel's writes first (kernel_util.cuh)       // (n, C)
  constexpr bool kHalf = std::is_same_v<E, __half>;
  extern __shared__ float vec[];  // (5, N): r, w, k, kk, kk*a
  float *sr = vec, *sw = vec + N, *sk = vec + 2 * N, *skk = vec + 3 * N, *sb = vec + 4 * N;
  const SegmentDesc g = segs[blockIdx.y];
  if (g.slot < 0 || g.rows == 0) return;  // padding
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

template <int N, typename E>
cudaError_t launch_seq(const SegmentDesc* segs, const int32_t* index, int count, int C, float* state,
                       int64_t slot_stride, const float* r, const float* w, const float* k, const float* v,
                       const float* kk, const float* a, float* y, cudaStream_t stream) {
  using S = SeqShape<N>;
  return for_each_segment_group<kSeqMaxSegments>(index, count, [&](const LongSegments& list) {
    const dim3 grid((C / N) * S::kBands, list.count);
    launch(wkv7_seq_kernel<N, E>, grid, S::kThreads, 0, stream, segs, list, C, state, slot_stride, r, w, k, v, kk, a,
           y);
    return cudaGetLastError();
  });
}

// The longest long segment of the list, rounded up to a power of two (the
// CUDA graph key's), or 0 when the chunked form is not used for this pass.
int ChunkedLongest(const SegmentDesc* host_segs, const int32_t* index, int count) {
  int longest = 0;
  for (int j = 0; j < count; ++j) longest = std::max(longest, host_segs[index[j]].rows);
  const int p = CeilPow2(std::max(longest, 1));
  return count > 0 && p >= kWkv7ChunkedMinRows ? p : 0;
}

// Floats of chunk matrices for a pass of `rows` rows with `count` long
// segments: their chunks are at most rows / L + count, a bound that depends
// only on what the graph key holds.
size_t ChunkedFloats(int rows, int count, int H) {
  return (static_cast<size_t>(rows) / kChunkL + static_cast<size_t>(count)) * H * kMatFloats;
}

// The scratch floats the chunked form needs for this pass (its long segments
// index[0, count)), or 0 when it does not take the pass. One launch group
// holds at most kSeqMaxSegments segments; the groups reuse the scratch in
// stream order.
size_t ChunkedNeed(const SegmentDesc* host_segs, int nseg, const int32_t* index, int count, int C, int N,
                   ElemType state_type) {
  if (N != kChunkN || C % N != 0 || state_type != ElemType::kF32) return 0;
  if (ChunkedLongest(host_segs, index, count) == 0) return 0;
  int rows = 0;
  for (int s = 0; s < nseg; ++s) rows += host_segs[s].rows;
  return ChunkedFloats(rows, std::min(count, kSeqMaxSegments), C / N);
}

cudaError_t launch_chunked(const SegmentDesc* segs, const int32_t* index, int count, int longest, int C,
                           float* state, int64_t slot_stride, const float* r, const float* w, const float* k,
                           const float* v, const float* kk, const float* a, float* y, float* mats,
                           cudaStream_t stream) {
  const int H = C / kChunkN;
  return for_each_segment_group<kSeqMaxSegments>(index, count, [&](const LongSegments& list) {
    launch(wkv7_chunk_mats_kernel, dim3(ChunksOf(longest), H, list.count), 256, 0, stream, segs, list, C, r, w, k, kk,
           a, mats);
    if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
    launch(wkv7_chunk_rows_kernel, dim3(H * kChunkBands, list.count), 32 * kBandWarps, 0, stream, segs, list, C, state,
           slot_stride, r, w, k, v, kk, a, y, mats);
    return cudaGetLastError();
  });
}

// The short segments' launch (the tiled kernel), with or without the output
// stage (and the prep).
template <int N, typename E>
cudaError_t launch_short(bool with_output, bool with_prep, dim3 grid, const SegmentDesc* segs, int C, float* state,
                         int64_t slot_stride, const float* r, const float* w, const float* k, const float* v,
                         const float* kk, const float* a, float* y, int long_rows, const Wkv7OutputStage& os,
                         const Wkv7Prep& pp, cudaStream_t stream) {
  if (with_prep && !with_output) return cudaErrorInvalidValue;
  if constexpr (N == 64 || N == 128) {
    if (with_prep) {
      launch(wkv7_tiled_kernel<N, E, true, true>, grid, N, 0, stream, segs, C, state, slot_stride, r, w, k, v, kk, a,
             y, long_rows, os, pp);
      return cudaGetLastError();
    }
    if (with_output) {
      launch(wkv7_tiled_kernel<N, E, true, false>, grid, N, 0, stream, segs, C, state, slot_stride, r, w, k, v, kk, a,
             y, long_rows, os, pp);
      return cudaGetLastError();
    }
  } else if (with_output) {
    return cudaErrorInvalidValue;  // wkv7_output_fusable said no
  }
  launch(wkv7_tiled_kernel<N, E, false, false>, grid, N, 0, stream, segs, C, state, slot_stride, r, w, k, v, kk, a, y,
         long_rows, os, pp);
  return cudaGetLastError();
}

template <typename E>
cudaError_t launch_typed(const SegmentDesc* segs, const SegmentDesc* host_segs, int nseg, int C, int N,
                         float* state, int64_t slot_stride, const float* r, const float* w, const float* k,
                         const float* v, const float* kk, const float* a, float* y, float* scratch,
                         size_t scratch_floats, cudaStream_t stream, const Wkv7OutputStage* output_stage,
                         const Wkv7Prep* prep) {
  const dim3 grid(C / N, nseg);
  // Every head block starts on a 16-byte boundary when the pool and the slot
  // stride are aligned (head blocks are N*N elements, a multiple of 16 bytes).
  const bool aligned = Aligned16(state) && slot_stride % 4 == 0;
  if (aligned && (N == 32 || N == 64 || N == 128)) {
    // Long segments go to the long kernel when the host list is known and
    // the vectors allow 16-byte copies (rows of C floats, C a multiple of N).
    int long_rows = INT_MAX;
    if (host_segs != nullptr && Aligned16(r) && Aligned16(w) && Aligned16(k) && Aligned16(v) && Aligned16(kk) &&
        Aligned16(a)) {
      std::vector<int32_t> index(static_cast<size_t>(nseg));
      const int count = wkv7_long_segments(host_segs, nseg, index.data());
      if (count > 0) {
        long_rows = kSeqMinRows;
        cudaError_t e = cudaSuccess;
        const int32_t* ix = index.data();
        // fp32 state, N = 64, a pass whose longest segment is long enough
        // and scratch for its chunks: the chunked form.
        const size_t need =
            ChunkedNeed(host_segs, nseg, ix, count, C, N, std::is_same_v<E, float> ? ElemType::kF32 : ElemType::kF16);
        if (need > 0 && scratch != nullptr && scratch_floats >= need) {
          e = launch_chunked(segs, ix, count, ChunkedLongest(host_segs, ix, count), C, state, slot_stride, r, w, k, v,
                             kk, a, y, scratch, stream);
          if (e != cudaSuccess) return e;
        } else switch (N) {
          case 32: e = launch_seq<32, E>(segs, ix, count, C, state, slot_stride, r, w, k, v, kk, a, y, stream); break;
          case 64: e = launch_seq<64, E>(segs, ix, count, C, state, slot_stride, r, w, k, v, kk, a, y, stream); break;
          default: e = launch_seq<128, E>(segs, ix, count, C, state, slot_stride, r, w, k, v, kk, a, y, stream); break;
        }
        if (e != cudaSuccess) return e;
      }
    }
    // The short segments (all of them without a long kernel launch); blocks
    // of long segments return at once.
    const Wkv7OutputStage os = output_stage != nullptr ? *output_stage : Wkv7OutputStage{};
    const Wkv7Prep pp = prep != nullptr ? *prep : Wkv7Prep{};
    const bool out = output_stage != nullptr, pr = prep != nullptr;
    switch (N) {
      case 32: return launch_short<32, E>(out, pr, grid, segs, C, state, slot_stride, r, w, k, v, kk, a, y, long_rows, os, pp, stream);
      case 64: return launch_short<64, E>(out, pr, grid, segs, C, state, slot_stride, r, w, k, v, kk, a, y, long_rows, os, pp, stream);
      default: return launch_short<128, E>(out, pr, grid, segs, C, state, slot_stride, r, w, k, v, kk, a, y, long_rows, os, pp, stream);
    }
  }
  if (output_stage != nullptr) return cudaErrorInvalidValue;  // wkv7_output_fusable said no
  launch(wkv7_generic_kernel<E>, grid, N, 5 * N * sizeof(float), stream, segs, C, N, state, slot_stride, r, w, k, v,
                                                                     kk, a, y);
  return cudaGetLastError();
}

}  // namespace

size_t wkv7_scratch_floats(const SegmentDesc* host_segs, int nseg, int C, int N, ElemType state_type) {
  if (host_segs == nullptr || nseg <= 0 || N != kChunkN || C % N != 0 || state_type != ElemType::kF32) return 0;
  std::vector<int32_t> index(static_cast<size_t>(nseg));
  const int count = wkv7_long_segments(host_segs, nseg, index.data());
  return ChunkedNeed(host_segs, nseg, index.data(), count, C, N, state_type);
}

size_t wkv7_scratch_bound_floats(int rows, int C, int N, ElemType state_type) {
  // The form takes passes whose longest segment rounds up to kWkv7ChunkedMinRows.
  if (CeilPow2(std::max(rows, 1)) < kWkv7ChunkedMinRows || N != kChunkN || C % N != 0 ||
      state_type != ElemType::kF32) {
    return 0;
  }
  // A launch group's long segments number at most min(segments, kSeqMaxSegments), segments <= rows.
  return ChunkedFloats(rows, std::min(rows, kSeqMaxSegments), C / N);
}

int wkv7_long_segments(const SegmentDesc* host_segs, int nseg, int32_t* index) {
  int count = 0;
  bool prefix = true;  // the long ones are segments 0 .. count-1
  for (int s = 0; s < nseg; ++s) {
    if (host_segs[s].rows < kSeqMinRows || host_segs[s].slot < 0) continue;
    prefix = prefix && s == count;
    index[count++] = s;
  }
  if (prefix && count > 0) {
    int rounded = 1;
    while (rounded < count) rounded *= 2;
    rounded = rounded < nseg ? rounded : nseg;
    for (; count < rounded; ++count) index[count] = count;
  }
  return count;
}

cudaError_t launch_wkv7(const SegmentDesc* segs, const SegmentDesc* host_segs, int nseg, int C, int N,
                        ElemType state_type, float* state,
                        int64_t slot_stride, const float* r, const float* w, const float* k, const float* v,
                        const float* kk, const float* a, float* y, float* scratch, size_t scratch_floats,
                        cudaStream_t stream, const Wkv7OutputStage* output_stage, const Wkv7Prep* prep) {
  if (nseg < 0 || nseg > 65535 || C <= 0 || N <= 0 || N > 1024 || C % N != 0 || slot_stride < 0 ||
      (state_type != ElemType::kF32 && state_type != ElemType::kF16)) {
    return cudaErrorInvalidValue;
  }
  if (nseg == 0) return cudaSuccess;
  if (segs == nullptr || state == nullptr || r == nullptr || w == nullptr || k == nullptr || v == nullptr ||
      kk == nullptr || a == nullptr || y == nullptr) {
    return cudaErrorInvalidValue;
  }
  if (output_stage != nullptr &&
      (output_stage->g == nullptr || output_stage->r_k == nullptr || output_stage->lnw == nullptr ||
       output_stage->lnb == nullptr || output_stage->out == nullptr ||
       (output_stage->out_type != ElemType::kF32 && output_stage->out_type != ElemType::kF16 &&
        output_stage->out_type != ElemType::kBF16) ||
       !wkv7_output_fusable(host_segs, nseg, N, state, slot_stride, y, r, k, v, *output_stage))) {
    return cudaErrorInvalidValue;
  }
  if (prep != nullptr && (output_stage == nullptr || !wkv7_prep_fusable(N, w, a, k, v, kk, *prep))) {
    return cudaErrorInvalidValue;
  }
  if (state_type == ElemType::kF16) {
    return launch_typed<__half>(segs, host_segs, nseg, C, N, state, slot_stride, r, w, k, v, kk, a, y, scratch,
                                scratch_floats, stream, output_stage, prep);
  }
  return launch_typed<float>(segs, host_segs, nseg, C, N, state, slot_stride, r, w, k, v, kk, a, y, scratch,
                             scratch_floats, stream, output_stage, prep);
}

bool wkv7_output_fusable(const SegmentDesc* host_segs, int nseg, int N, const float* state, int64_t slot_stride,
                         const float* y, const float* r, const float* k, const float* v, const Wkv7OutputStage& os) {
  // Where launch_v7_output takes its vector kernel (whose code the fused
  // stage runs) and the tiled kernel its aligned path.
  if (host_segs == nullptr || nseg <= 0 || (N != 64 && N != 128) || !Aligned16(state) || slot_stride % 4 != 0 ||
      !aligned_floats(N / 32, {y, r, k, v, os.g, os.r_k, os.lnw, os.lnb, os.out})) {
    return false;
  }
  for (int j = 0; j < nseg; ++j) {
    if (host_segs[j].rows >= kSeqMinRows && host_segs[j].slot >= 0) return false;
  }
  return true;
}

bool wkv7_prep_fusable(int N, const float* w, const float* a, const float* k, const float* v, const float* kk,
                       const Wkv7Prep& p) {
  // Where launch_v7_prep takes its vector kernel, whose code the fused prep runs.
  return v7_prep_vectorized(N, w, p.w0, a, p.a0, k, kk, p.k_k, p.k_a, v, p.v_first, p.v_gate, p.v0);
}

}  // namespace rwkv::kernels
