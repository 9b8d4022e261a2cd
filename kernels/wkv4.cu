// RWKV-4 WKV: one thread per (segment, channel), stepping through the
// segment's rows (the same shape as the original RWKV-4 CUDA kernel, one
// thread per (batch, channel) looping over T). The state (aa, bb, pp) is
// read from the session's slot into registers once and written back once.
// The running maximum pp keeps every exponent <= 0, so nothing overflows for
// any key size; expf (not __expf) keeps the CPU reference's accuracy.
//
// A prompt's rows are walked with the next kAhead tokens' k and v already
// loading (a register ring, fully unrolled so it is never indexed at run
// time): the recurrence only depends on (aa, bb, pp), so the global loads,
// ~0.5 us each from DRAM, overlap the exp chain instead of preceding every
// step of it.
//
// Long segments (a prompt in one pass) go instead through a chunked scan,
// since one thread per channel walking T tokens in order leaves a 132-SM card
// with C threads (60% of an RWKV-4 1.5B prefill pass went there). The state
// after n steps is a decayed copy of the state before them plus what the n
// tokens add, A' = e^(n w) A + sum_i e^((n-1-i) w) e^(k_i) v_i (the same in
// the running-max form, where pp carries the exponent), so:
//   1. per (segment, chunk of kChunk rows, channel): what the chunk adds,
//      from an empty state (aa = bb = 0, pp = -1e38);
//   2. per (segment, channel): the state entering each chunk, in order, each
//      the previous one decayed by its chunk's length and combined with its
//      sum; the last is the segment's final state, written to the slot;
//   3. per (segment, chunk, channel): the chunk's outputs from its entering
//      state, with the same per-token arithmetic as the sequential kernel.
// pp, a maximum, comes out as in the sequential walk (up to how n w is
// summed); aa and bb differ by the rounding of the combination only.
#include "kernels/wkv4.h"

#include <algorithm>
#include <climits>
#include <vector>

#include "kernels/kernel_util.cuh"
#include "kernels/segment_groups.h"
#include "kernels/wkv7.h"

namespace rwkv::kernels {
namespace {

constexpr int kBlock = 128;
constexpr int kAhead = 8;  // tokens whose k, v are in flight
constexpr int kChunk = 64;           // rows per chunk of the scan
constexpr int kChunkMinRows = 128;   // a pass's longest segment (a power of two) from which the scan is used
constexpr int kChunkMaxSegments = 32;  // long segments per launch group
constexpr int kPlanes = 6;            // chunk sums (aa, bb, pp) and entering states (aa, bb, pp)

using ChunkList = SegmentGroup<kChunkMaxSegments>;

// The chunks per long segment of a pass, from its longest state-carrying
// segment rounded to a power of two (what a CUDA graph key holds), or 0 when
// the pass takes the sequential kernel only.
int PassChunks(const SegmentDesc* host_segs, const int32_t* index, int count) {
  int longest = 0;
  for (int j = 0; j < count; ++j) longest = std::max(longest, host_segs[index[j]].rows);
  const int rows = CeilPow2(std::max(longest, 1));
  return count > 0 && rows >= kChunkMinRows ? (rows + kChunk - 1) / kChunk : 0;
}

// The scratch of a pass with `count` long segments of `nchunks` chunks.
size_t ScratchFloats(int count, int nchunks, int C) {
  return static_cast<size_t>(kPlanes) * std::min(count, kChunkMaxSegments) * nchunks * C;
}

// The running-max state of one channel.
struct Wkv4State {
  float aa, bb, pp;
};

// The state after one token (k, v) with decay wd: the previous state decayed,
// plus e^k v, with the larger exponent carried in pp.
__device__ __forceinline__ void wkv4_absorb(Wkv4State& s, float wd, float kt, float vt) {
  const float ww = s.pp + wd;
  const float m = fmaxf(ww, kt);
  const float e1 = expf(ww - m), e2 = expf(kt - m);
  s.aa = e1 * s.aa + e2 * vt;
  s.bb = e1 * s.bb + e2;
  s.pp = m;
}

// One token of the recurrence (the original kernel's arithmetic, which the
// CPU reference follows): its output, with the bonus u for the token itself,
// then the state absorbs it.
__device__ __forceinline__ float wkv4_step(Wkv4State& s, float u, float wd, float kt, float vt) {
  const float ww = u + kt;
  const float m = fmaxf(s.pp, ww);
  const float e1 = expf(s.pp - m), e2 = expf(ww - m);
  const float y = (e1 * s.aa + e2 * vt) / (e1 * s.bb + e2);
  wkv4_absorb(s, wd, kt, vt);
  return y;
}

// Whether list entry j of this group is a segment the scan takes.
__device__ __forceinline__ bool scanned(const SegmentDesc& g) { return g.slot >= 0 && g.rows >= kWkv7LongRows; }

__global__ void __launch_bounds__(kBlock) wkv4_chunk_sum_kernel(const SegmentDesc* __restrict__ segs,
                                                                const ChunkList list, int C,
                                                                const float* __restrict__ time_decay,
                                                                const float* __restrict__ k,
                                                                const float* __restrict__ v,
                                                                float* __restrict__ scratch, int nchunks,
                                                                int64_t plane) {
  pdl_wait();  // programmatic launch: the previous kernel's writes first (kernel_util.cuh)
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  const int q = blockIdx.y, j = blockIdx.z;
  if (c >= C) return;
  const SegmentDesc g = segs[list.index[j]];
  if (!scanned(g) || q * kChunk >= g.rows) return;
  const int t1 = min(g.rows, (q + 1) * kChunk);
  const float wd = time_decay[c];
  Wkv4State s{0.0f, 0.0f, -1e38f};
  for (int t = q * kChunk; t < t1; ++t) {
    const int64_t o = static_cast<int64_t>(g.row_begin + t) * C + c;
    wkv4_absorb(s, wd, k[o], v[o]);
  }
  const int64_t i = (static_cast<int64_t>(j) * nchunks + q) * C + c;
  scratch[i] = s.aa;
  scratch[plane + i] = s.bb;
  scratch[2 * plane + i] = s.pp;
}

__global__ void __launch_bounds__(kBlock) wkv4_chunk_scan_kernel(const SegmentDesc* __restrict__ segs,
                                                                 const ChunkList list, int C,
                                                                 float* __restrict__ aa_base, int64_t slot_stride,
                                                                 const float* __restrict__ time_decay,
                                                                 float* __restrict__ scratch, int nchunks,
                                                                 int64_t plane) {
  pdl_wait();
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  const int j = blockIdx.y;
  if (c >= C) return;
  const SegmentDesc g = segs[list.index[j]];
  if (!scanned(g)) return;
  float* st = aa_base + g.slot * slot_stride + c;
  float aa = st[0], bb = st[C], pp = st[2 * C];
  const float wd = time_decay[c];
  const int nq = (g.rows + kChunk - 1) / kChunk;
  for (int q = 0; q < nq; ++q) {
    const int64_t i = (static_cast<int64_t>(j) * nchunks + q) * C + c;
    scratch[3 * plane + i] = aa;
    scratch[4 * plane + i] = bb;
    scratch[5 * plane + i] = pp;
    const int len = min(kChunk, g.rows - q * kChunk);
    const float pd = pp + static_cast<float>(len) * wd;  // the state after len steps without input
    const float sa = scratch[i], sb = scratch[plane + i], sp = scratch[2 * plane + i];
    const float m = fmaxf(pd, sp);
    const float e1 = expf(pd - m), e2 = expf(sp - m);
    aa = e1 * aa + e2 * sa;
    bb = e1 * bb + e2 * sb;
    pp = m;
  }
  st[0] = aa;
  st[C] = bb;
  st[2 * C] = pp;
}

__global__ void __launch_bounds__(kBlock) wkv4_chunk_out_kernel(const SegmentDesc* __restrict__ segs,
                                                                const ChunkList list, int C,
                                                                const float* __restrict__ time_first,
                                                                const float* __restrict__ time_decay,
                                                                const float* __restrict__ k,
                                                                const float* __restrict__ v,
                                                                float* __restrict__ y,
                                                                const float* __restrict__ scratch, int nchunks,
                                                                int64_t plane) {
  pdl_wait();
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  const int q = blockIdx.y, j = blockIdx.z;
  if (c >= C) return;
  const SegmentDesc g = segs[list.index[j]];
  if (!scanned(g) || q * kChunk >= g.rows) return;
  const int64_t i = (static_cast<int64_t>(j) * nchunks + q) * C + c;
  Wkv4State s{scratch[3 * plane + i], scratch[4 * plane + i], scratch[5 * plane + i]};
  const float u = time_first[c], wd = time_decay[c];
  const int t1 = min(g.rows, (q + 1) * kChunk);
  for (int t = q * kChunk; t < t1; ++t) {
    const int64_t o = static_cast<int64_t>(g.row_begin + t) * C + c;
    y[o] = wkv4_step(s, u, wd, k[o], v[o]);
  }
}

__global__ void wkv4_kernel(const SegmentDesc* __restrict__ segs,  // (nseg)
                            int C, int long_rows,                  // segments of long_rows or more: the scan's
                            float* __restrict__ aa_base,           // (slots, stride)
                            int64_t slot_stride,
                            const float* __restrict__ time_first,  // (C)
                            const float* __restrict__ time_decay,  // (C)
                            const float* __restrict__ k,           // (n, C)
                            const float* __restrict__ v,           // (n, C)
                            float* __restrict__ y) {               // (n, C)
  pdl_wait();  // programmatic launch: the previous kernel's writes first (kernel_util.cuh)
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const SegmentDesc g = segs[blockIdx.y];
  if (g.slot < 0 || g.rows == 0 || g.rows >= long_rows) return;  // padding, or the scan's
  float* st = aa_base + g.slot * slot_stride + c;
  Wkv4State s{st[0], st[C], st[2 * C]};
  const float u = time_first[c], wd = time_decay[c];
  const int64_t o0 = static_cast<int64_t>(g.row_begin) * C + c;
  float kb[kAhead], vb[kAhead];
#pragma unroll
  for (int p = 0; p < kAhead; ++p) {
    if (p < g.rows) {
      kb[p] = k[o0 + static_cast<int64_t>(p) * C];
      vb[p] = v[o0 + static_cast<int64_t>(p) * C];
    }
  }
  for (int t0 = 0; t0 < g.rows; t0 += kAhead) {
#pragma unroll
    for (int p = 0; p < kAhead; ++p) {
      const int t = t0 + p;
      if (t >= g.rows) break;
      const int64_t o = o0 + static_cast<int64_t>(t) * C;
      const float kt = kb[p], vt = vb[p];
      if (t + kAhead < g.rows) {  // refill the slot just read with the token kAhead later
        kb[p] = k[o + static_cast<int64_t>(kAhead) * C];
        vb[p] = v[o + static_cast<int64_t>(kAhead) * C];
      }
      y[o] = wkv4_step(s, u, wd, kt, vt);
    }
  }
  st[0] = s.aa;
  st[C] = s.bb;
  st[2 * C] = s.pp;
}

}  // namespace

size_t wkv4_scratch_floats(const SegmentDesc* host_segs, int nseg, int C) {
  if (host_segs == nullptr || nseg <= 0 || C <= 0) return 0;
  std::vector<int32_t> index(static_cast<size_t>(nseg));
  const int count = wkv7_long_segments(host_segs, nseg, index.data());
  const int nchunks = PassChunks(host_segs, index.data(), count);
  return nchunks == 0 ? 0 : ScratchFloats(count, nchunks, C);
}

cudaError_t launch_wkv4(const SegmentDesc* segs, const SegmentDesc* host_segs, int nseg, int C, float* aa,
                        int64_t slot_stride, const float* time_first, const float* time_decay, const float* k,
                        const float* v, float* y, float* scratch, size_t scratch_floats, cudaStream_t stream) {
  if (nseg < 0 || nseg > 65535 || C <= 0 || slot_stride < 0) return cudaErrorInvalidValue;
  if (nseg == 0) return cudaSuccess;
  if (segs == nullptr || aa == nullptr || time_first == nullptr || time_decay == nullptr || k == nullptr ||
      v == nullptr || y == nullptr) {
    return cudaErrorInvalidValue;
  }
  // The long segments (those kWkv7LongRows rows or more, the list a CUDA
  // graph key holds) take the scan when the pass's longest segment is long
  // enough and the scratch was sized for it; the rest the sequential kernel.
  int long_rows = INT_MAX;
  std::vector<int32_t> index;
  int count = 0, nchunks = 0;
  if (host_segs != nullptr && scratch != nullptr) {
    index.resize(static_cast<size_t>(nseg));
    count = wkv7_long_segments(host_segs, nseg, index.data());
    nchunks = PassChunks(host_segs, index.data(), count);
    if (nchunks > 0 && scratch_floats >= ScratchFloats(count, nchunks, C)) long_rows = kWkv7LongRows;
  }
  const int cblocks = (C + kBlock - 1) / kBlock;
  launch(wkv4_kernel, dim3(cblocks, nseg), kBlock, 0, stream, segs, C, long_rows, aa, slot_stride, time_first,
         time_decay, k, v, y);
  if (cudaError_t e = cudaGetLastError(); e != cudaSuccess || long_rows == INT_MAX) return e;
  const int64_t plane = static_cast<int64_t>(std::min(count, kChunkMaxSegments)) * nchunks * C;
  return for_each_segment_group<kChunkMaxSegments>(index.data(), count, [&](const ChunkList& list) {
    launch(wkv4_chunk_sum_kernel, dim3(cblocks, nchunks, list.count), kBlock, 0, stream, segs, list, C, time_decay,
           k, v, scratch, nchunks, plane);
    launch(wkv4_chunk_scan_kernel, dim3(cblocks, list.count), kBlock, 0, stream, segs, list, C, aa, slot_stride,
           time_decay, scratch, nchunks, plane);
    launch(wkv4_chunk_out_kernel, dim3(cblocks, nchunks, list.count), kBlock, 0, stream, segs, list, C, time_first,
           time_decay, k, v, y, scratch, nchunks, plane);
    return cudaGetLastError();
  });
}

}  // namespace rwkv::kernels
