// Batched sampling: one block per row of fp32 logits, with exactly the
// semantics of Sampler::Sample (engine/sampler/sampler.cc and
// sampling_ops.cc), and no sort.
//
// Why this shape: at B = 960 the [B, 65536] logits are 252 MB, more to copy to
// the host than a decode step costs, so each row is reduced to a token where
// it lives. Every selection the CPU sampler makes is "walk the tokens in some
// order, accumulating a weight, until the sum passes a target":
//  - top_k: in (logit desc, id asc) order, count 1 each, past k - 1;
//  - top_p: in (prob desc, id asc) order (or logit order after top_k), mass,
//    until it reaches top_p * z;
//  - the draw: in the CPU's order for that path, mass, past u * z (sorted
//    order where the CPU walks a sorted candidate list, id order where it
//    walks the whole vocabulary).
// A walk in id order is a two-level prefix sum (per-warp ranges, then one
// warp's scan); a draw in id order takes z from that walk's own per-range
// sums (integers: the same z), so it is one pass over the row (and the
// winning warp's two-level walk of its range, 1/16 of it). A walk in value order is a radix select on the value's
// order-preserving 32-bit key, 8 bits per pass (per-warp shared histograms of
// the weight per digit, then one warp finds the digit where the running sum
// passes the target), followed by an id-order walk among the ties at the
// found key (skipped on the one-block path where one member has that key,
// as nearly always). So each selection is 4-5 passes over the row (256 KB at
// vocab 65536), whatever k or top_p, and gives the element the CPU's walk
// would stop at. A set's tests on the logit (the top_k bound) come before
// its exp, so the passes after a top_k selection cost little. On the
// one-block path a set of at most 256 members (top_k's k kept ids; top_p's
// candidates where the first digit's pass counts that few) is listed in
// shared memory in one pass, and every later pass over it, or a subset of
// it, goes over the list instead of the row: the same calls on the same
// members, so the same result.
// To make the same u pick the same token as the CPU, everything that decides
// a token is computed as the CPU computes it: the adjusted logits bit for bit
// (IEEE ops, no contraction), the probabilities with the same cephes expf
// (exp_nonpositive below, written with _rn intrinsics so nvcc cannot fuse a
// multiply-add), the same temperature product. Only sums differ: the GPU sums
// probabilities in fixed point (2^-46 units at vocab 65536; integers, so the
// result is deterministic and independent of the thread order), the CPU in
// float lanes and doubles. A u within ~1e-7 of a boundary between two tokens
// may therefore pick the neighbour; nothing else differs.
// The row is never written: logit adjustments are looked up through a
// per-block bitmap of the adjusted tokens and a binary search in the row's
// (sorted) adjustment list.
// Few rows: one block per row would leave most SMs idle (at B = 1 one SM
// walks the row ~17 times, ~170 us, compute bound), so a row can be split
// over `parts` blocks that run the same control flow in lockstep. Each pass
// is computed per block over a slice of the row, the partial results (fixed
// point sums, per-bin histograms, best (value, id) as one ordered 64-bit key)
// go to global scratch, the row's blocks meet at a barrier (a counter in that
// scratch; the launch is cooperative, so they are co-resident), and every
// block combines all the partials in the same integer arithmetic, so every
// decision, and the result, is exactly what one block computes. The one float
// sum (the raw log-sum-exp, per thread in id order, then a fixed tree) keeps
// the single block's 512 per-thread streams: block p of P runs the streams
// p, p + P, ..., and block 0 reduces them in the single block's tree.
#include "kernels/sample.h"

#include <cstdint>

#include "kernels/kernel_util.cuh"

namespace rwkv::kernels {
namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kBins = 256;
constexpr int kMaxVocab = 1 << 20;
constexpr int kSortedDrawMax = 256;  // sampling_ops.cc kSortCandidatesMax: top_p draws in sorted order up to this
constexpr int kListMax = 256;        // the one-block path's shortlist (Shared::list_*)
constexpr double kTopPSlack = 1e-6;  // sampling_ops.cc kTopPSlack
constexpr unsigned kFull = 0xffffffffu;
constexpr int kMaxParts = 16;  // blocks per row on the split path
constexpr int kMaxSplitRows = 64;  // rows the split path may take (scratch is per row)

// Global scratch of one row on the split path. `arrive` counts barrier
// arrivals within a launch; the last block to leave zeroes both counters, so
// the scratch is zero between launches (as allocated).
struct alignas(16) RowScratch {
  unsigned arrive;
  unsigned leave;
  unsigned pad[2];
  // Partials of one exchange; alternate buffers so that a block may write the
  // next exchange's partials while a slower one still reads this one's (a
  // buffer is rewritten only after a barrier that every reader has passed).
  uint64_t slot[2][kMaxParts * kBins];
  float lse_max[kThreads];  // per-stream online max and sum (pass 1)
  float lse_sum[kThreads];
};

// Where this block works: part `part` of `parts` blocks on one row.
struct Grid {
  int part;
  int parts;
  RowScratch* rs;
  unsigned epoch;  // barriers passed
  __device__ __forceinline__ uint64_t* buf() const { return rs->slot[epoch & 1]; }
};

// Barrier among the blocks of a row; makes every global write before it
// visible to every block after it (partials are read with __ldcg, past L1).
__device__ __forceinline__ void row_sync(Grid& g) {
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    atomicAdd(&g.rs->arrive, 1u);
    const unsigned want = (g.epoch + 1) * static_cast<unsigned>(g.parts);
    while (*reinterpret_cast<volatile unsigned*>(&g.rs->arrive) < want) {
    }
    __threadfence();
  }
  __syncthreads();
  ++g.epoch;
}

__device__ __forceinline__ float pos_inf() { return __int_as_float(0x7f800000); }
__device__ __forceinline__ float neg_inf() { return __int_as_float(static_cast<int>(0xff800000u)); }

// sampling_ops.h ExpNonPositive (cephes expf), bit for bit: every product and
// sum rounded separately, as the CPU (no FMA) does.
__device__ __forceinline__ float exp_nonpositive(float x) {
  const uint32_t kMinus87 = 0xC2AE0000u;  // bits of -87.0f
  const uint32_t xbits = __float_as_uint(x);
  const float xc = __uint_as_float(xbits < kMinus87 ? xbits : kMinus87);
  const float t = __fadd_rn(__fmul_rn(xc, 1.44269504088896341f), 12582912.0f);
  const int32_t n = static_cast<int32_t>(__float_as_uint(t) - 0x4B400000u);
  const float fn = __fsub_rn(t, 12582912.0f);
  const float r = __fsub_rn(__fsub_rn(xc, __fmul_rn(fn, 0.693359375f)), __fmul_rn(fn, -2.12194440e-4f));
  float p = 1.9875691500e-4f;
  p = __fadd_rn(__fmul_rn(p, r), 1.3981999507e-3f);
  p = __fadd_rn(__fmul_rn(p, r), 8.3334519073e-3f);
  p = __fadd_rn(__fmul_rn(p, r), 4.1665795894e-2f);
  p = __fadd_rn(__fmul_rn(p, r), 1.6666665459e-1f);
  p = __fadd_rn(__fmul_rn(p, r), 5.0000001201e-1f);
  p = __fadd_rn(__fadd_rn(__fmul_rn(p, __fmul_rn(r, r)), r), 1.0f);
  const float y = __fmul_rn(p, __uint_as_float(static_cast<uint32_t>(n + 127) << 23));
  return xbits <= kMinus87 ? y : 0.0f;
}

// Order-preserving unsigned key of a non-NaN float; -0 and +0 are one key
// (the CPU compares values, where they are equal).
__device__ __forceinline__ uint32_t order_key(float v) {
  if (v == 0.0f) v = 0.0f;
  const uint32_t b = __float_as_uint(v);
  return (b & 0x80000000u) != 0 ? ~b : (b | 0x80000000u);
}

// An element is within a bound if it comes no later in (key desc, id asc).
struct Bound {
  uint32_t key;
  int32_t id;
};
__device__ __forceinline__ bool within(const Bound& b, uint32_t key, int id) {
  return key > b.key || (key == b.key && id <= b.id);
}

struct Elem {
  float x;     // adjusted logit
  float p;     // exp((x - max) / T), when computed
  uint64_t w;  // p in fixed point
  // The order keys, computed where a walk compares them (most walks compare
  // neither); kp only where p is computed (needs_p).
  __device__ __forceinline__ uint32_t kx() const { return order_key(x); }
  __device__ __forceinline__ uint32_t kp() const { return order_key(p); }
};

// The tokens a walk goes over: those within the top_k bound (on the logit
// key), with p >= pmin, within the top_p bound (on the logit or prob key),
// and, for a tie walk, with key == tie_key.
struct Set {
  bool use_k = false;
  Bound k{0, 0};
  float pmin = -1.0f;
  bool use_p = false;
  Bound pb{0, 0};
  bool pb_on_p = false;
  bool tie = false;
  uint32_t tie_key = 0;
};

struct Row {
  const float* logits;
  const LogitAdjustDesc* adj;
  int nadj;
  const uint32_t* bitmap;
  int vocab;
  float max;    // adjusted max (finite where p is used)
  float inv_t;
  float scale;  // fixed-point unit: 2^shift

  // The sanitized logit with the row's adjustments, as Sampler::Adjust
  // computes it (same operations, same order).
  __device__ __forceinline__ float adjusted(int i, float raw) const {
    float v = raw != raw ? neg_inf() : raw;
    if (nadj > 0 && ((bitmap[i >> 5] >> (i & 31)) & 1u) != 0) {
      int lo = 0, hi = nadj - 1;
      while (lo < hi) {
        const int mid = (lo + hi) >> 1;
        if (adj[mid].token < i) {
          lo = mid + 1;
        } else {
          hi = mid;
        }
      }
      const LogitAdjustDesc e = adj[lo];
      v = e.bias == neg_inf() ? neg_inf() : __fadd_rn(v, e.bias);
      v = __fsub_rn(v, e.penalty);
      if (e.repetition != 1.0f) v = v > 0.0f ? __fdiv_rn(v, e.repetition) : __fmul_rn(v, e.repetition);
    }
    return v;
  }

  // p = exp((x - max) / T) and its fixed-point weight.
  __device__ __forceinline__ void weigh(Elem& e) const {
    e.p = exp_nonpositive(__fmul_rn(__fsub_rn(e.x, max), inv_t));
    e.w = static_cast<uint64_t>(__fmul_rn(e.p, scale));
  }
};

// Whether id i (raw logit `raw`) is in set s; e gets its adjusted logit and,
// where need_p and it passes the tests on the logit, p and its weight (else
// 0). The tests on the logit come first, so an id that a top_k bound (or a
// bound or tie on the logit) leaves out costs no exp: most of a row in a
// top_k draw. Same answer, and for a member the same Elem, as computing p
// first.
__device__ __forceinline__ bool member_of(const Row& row, const Set& s, int i, float raw, bool need_p, bool order_p,
                                          Elem& e) {
  e.x = row.adjusted(i, raw);
  e.p = 0.0f;
  e.w = 0;
  if (s.use_k && !within(s.k, e.kx(), i)) return false;
  if (s.use_p && !s.pb_on_p && !within(s.pb, e.kx(), i)) return false;
  if (s.tie && !order_p && e.kx() != s.tie_key) return false;
  if (need_p) row.weigh(e);
  if (e.p < s.pmin) return false;
  if (s.use_p && s.pb_on_p && !within(s.pb, e.kp(), i)) return false;
  if (s.tie && order_p && e.kp() != s.tie_key) return false;
  return true;
}

__device__ __forceinline__ bool needs_p(const Set& s, bool order_p, bool count) {
  return !count || order_p || s.pmin >= 0.0f || (s.use_p && s.pb_on_p);
}

struct Shared {
  uint64_t u[kWarps + 1];
  double d[kWarps + 1];
  float fv[kWarps + 1];
  int fi[kWarps + 1];
  uint64_t wsum[kWarps];
  uint64_t above, wtarget;
  uint64_t btarget;
  int found, bin, wsel, result, winner;
  // sorted_crossing's last digit on the one-block path: per exact key, the
  // members of nonzero weight and the lowest id among them.
  unsigned tie_count[kBins];
  int tie_id[kBins];
  // The one-block path's shortlist: the members of a set (at most kListMax:
  // top_k's k, or top_p's candidates when that few), as (id, raw logit), so
  // that the passes over that set or a subset of it visit them, not the row.
  int list_n;
  int list_id[kListMax];
  float list_raw[kListMax];
};

template <typename T>
__device__ __forceinline__ T warp_total(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  return v;
}

template <typename T>
__device__ __forceinline__ T warp_inclusive_scan(T v) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const T t = __shfl_up_sync(kFull, v, o);
    if (lane >= o) v += t;
  }
  return v;
}

// Block sums; every thread gets the total. End with a barrier.
__device__ uint64_t block_total(uint64_t v, Shared& sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_total(v);
  if (lane == 0) sh.u[warp] = v;
  __syncthreads();
  if (warp == 0) {
    uint64_t t = lane < kWarps ? sh.u[lane] : 0;
    t = warp_total(t);
    if (lane == 0) sh.u[kWarps] = t;
  }
  __syncthreads();
  const uint64_t r = sh.u[kWarps];
  __syncthreads();
  return r;
}

__device__ double block_total(double v, Shared& sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_total(v);
  if (lane == 0) sh.d[warp] = v;
  __syncthreads();
  if (warp == 0) {
    double t = lane < kWarps ? sh.d[lane] : 0.0;
    t = warp_total(t);
    if (lane == 0) sh.d[kWarps] = t;
  }
  __syncthreads();
  const double r = sh.d[kWarps];
  __syncthreads();
  return r;
}

// (value desc, id asc) best of the block; every thread gets it.
__device__ __forceinline__ void better_of(float& v, int& i, float ov, int oi) {
  if (ov > v || (ov == v && oi < i)) {
    v = ov;
    i = oi;
  }
}
__device__ void block_best(float& v, int& i, Shared& sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) better_of(v, i, __shfl_xor_sync(kFull, v, o), __shfl_xor_sync(kFull, i, o));
  if (lane == 0) {
    sh.fv[warp] = v;
    sh.fi[warp] = i;
  }
  __syncthreads();
  if (warp == 0) {
    float t = lane < kWarps ? sh.fv[lane] : neg_inf();
    int ti = lane < kWarps ? sh.fi[lane] : 0x7fffffff;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) better_of(t, ti, __shfl_xor_sync(kFull, t, o), __shfl_xor_sync(kFull, ti, o));
    if (lane == 0) {
      sh.fv[kWarps] = t;
      sh.fi[kWarps] = ti;
    }
  }
  __syncthreads();
  v = sh.fv[kWarps];
  i = sh.fi[kWarps];
  __syncthreads();
}

// The first element this block visits and the stride: the row in
// kThreads-strided slices, slice j to block j % parts.
template <bool kMulti>
__device__ __forceinline__ int first_of(const Grid& g) {
  return (kMulti ? g.part * kThreads : 0) + static_cast<int>(threadIdx.x);
}
template <bool kMulti>
__device__ __forceinline__ int stride_of(const Grid& g) {
  return kMulti ? g.parts * kThreads : kThreads;
}

// f(i, raw logit of i) for i = first, first + stride, ... below `end`, in
// that order, with the loads of kLoadBatch ids issued ahead of their uses:
// one load at a time left each warp waiting on memory for most of its
// cycles (ncu, H200, B = 960: 22.8 cycles an instruction, L1TEX stalls).
// The order of the calls is the loop's, so an order-dependent f (the float
// log-sum-exp) computes the same bits. 8 ahead on the one-block kernel, 4 on
// the split one (H200, us a SampleRows, against 4 on both, five runs in two
// calls: B = 960 greedy 162-167 -> 147-158, temperature 1 304-310 ->
// 268-276, top_k 1,570-1,586 -> 1,428-1,436, top_p 1,081-1,095 ->
// 1,004-1,012; 8 on the split path too made its top_p at B = 1 and 8
// slower, 85-87 -> 89-98).
template <bool kMulti>
constexpr int kLoadBatch = kMulti ? 4 : 8;
template <bool kMulti, typename F>
__device__ __forceinline__ void for_each_logit(const float* __restrict__ logits, int first, int stride, int end,
                                               F&& f) {
  constexpr int kBatch = kLoadBatch<kMulti>;
  int i = first;
  for (; i + (kBatch - 1) * stride < end; i += kBatch * stride) {
    float r[kBatch];
#pragma unroll
    for (int k = 0; k < kBatch; ++k) r[k] = __ldg(logits + i + k * stride);
#pragma unroll
    for (int k = 0; k < kBatch; ++k) f(i + k * stride, r[k]);
  }
  for (; i < end; i += stride) f(i, __ldg(logits + i));
}

// f(i, raw logit of i) over the row as for_each_logit, or, where `listed`
// (one-block path), over the shortlist, which holds every member of the set
// that the pass tests (or of a superset). What a pass computes from the
// calls (sums of integer weights and counts, histograms, the least id of a
// key) does not depend on their order, so it is the same either way.
template <bool kMulti, typename F>
__device__ __forceinline__ void for_each_candidate(const Row& row, const Grid& g, const Shared& sh, bool listed,
                                                   F&& f) {
  if (!kMulti && listed) {
    for (int j = static_cast<int>(threadIdx.x); j < sh.list_n; j += kThreads) f(sh.list_id[j], sh.list_raw[j]);
    return;
  }
  for_each_logit<kMulti>(row.logits, first_of<kMulti>(g), stride_of<kMulti>(g), row.vocab, f);
}

// One-block path: the shortlist of the members of s, in one pass over the
// row. false (no list) where there are more than kListMax.
__device__ bool collect_list(const Row& row, const Set& s, bool order_p, Shared& sh) {
  const bool need_p = needs_p(s, order_p, true);  // p where a test needs it: membership as any pass tests it
  __syncthreads();  // every reader of a previous list is done
  if (threadIdx.x == 0) sh.list_n = 0;
  __syncthreads();
  for_each_logit<false>(row.logits, static_cast<int>(threadIdx.x), kThreads, row.vocab, [&](int i, float raw) {
    Elem e;
    if (!member_of(row, s, i, raw, need_p, order_p, e)) return;
    const int j = atomicAdd(&sh.list_n, 1);
    if (j < kListMax) {
      sh.list_id[j] = i;
      sh.list_raw[j] = raw;
    }
  });
  __syncthreads();
  return sh.list_n <= kListMax;
}

// The row's sum of each block's `v` (the same in every thread of a block).
__device__ uint64_t row_total(uint64_t v, Grid& g) {
  uint64_t* buf = g.buf();
  if (threadIdx.x == 0) __stcg(reinterpret_cast<unsigned long long*>(buf + g.part), static_cast<unsigned long long>(v));
  row_sync(g);
  uint64_t t = 0;
  for (int b = 0; b < g.parts; ++b) t += __ldcg(reinterpret_cast<const unsigned long long*>(buf + b));
  return t;
}

// Sum of the weights (or the count) of a set; `listed`: over the shortlist.
template <bool kMulti>
__device__ uint64_t set_total(const Row& row, const Set& s, bool order_p, bool count, Shared& sh, Grid& g,
                              bool listed = false) {
  const bool need_p = needs_p(s, order_p, count);
  uint64_t t = 0;
  for_each_candidate<kMulti>(row, g, sh, listed, [&](int i, float raw) {
    Elem e;
    if (member_of(row, s, i, raw, need_p, order_p, e)) t += count ? 1 : e.w;
  });
  t = block_total(t, sh);
  return kMulti ? row_total(t, g) : t;
}

// The target of a walk: a value, or the draw's target for u, taken from the
// set's total (draw_target(u, total), the total summed by the walk's own
// first pass: integers, so the same total that set_total returns).
struct Target {
  uint64_t value;
  bool draw;  // value unused: draw_target(u, total)
  double u;
};

// min(floor(u * total), total - 1): the draw's target, kept inside the total
// so that a u rounding up to the total picks the last positive token (the
// CPU's fallback) rather than nothing.
__device__ __forceinline__ uint64_t draw_target(double u, uint64_t total) {
  const double t = u * static_cast<double>(total);
  uint64_t r = t <= 0.0 ? 0 : static_cast<uint64_t>(t);
  return r >= total ? total - 1 : r;
}

// The first id (in id order) at which the running weight of the set exceeds
// the target; -1 if the total does not. Split: block p holds the p-th
// contiguous range of the row; the block whose range holds the crossing walks
// it and hands the id to the others.
template <bool kMulti>
__device__ int id_crossing(const Row& row, const Set& s, bool order_p, bool count, Target tg, Shared& sh,
                           Grid& g) {
  uint64_t target = tg.value;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const bool need_p = needs_p(s, order_p, count);
  int range_begin = 0, range_end = row.vocab;
  if (kMulti) {
    const int per_block = ((row.vocab + g.parts - 1) / g.parts + 31) & ~31;
    range_begin = min(row.vocab, g.part * per_block);
    range_end = min(row.vocab, range_begin + per_block);
  }
  const int chunk = ((range_end - range_begin + kWarps - 1) / kWarps + 31) & ~31;
  const int begin = range_begin + warp * chunk;
  const int end = min(range_end, begin + chunk);
  auto weight = [&](int i, float raw) -> uint64_t {
    Elem e;
    return member_of(row, s, i, raw, need_p, order_p, e) ? (count ? 1 : e.w) : 0;
  };
  uint64_t sum = 0;
  for_each_logit<kMulti>(row.logits, begin + lane, 32, end, [&](int i, float raw) { sum += weight(i, raw); });
  sum = warp_total(sum);
  if (lane == 0) sh.wsum[warp] = sum;
  __syncthreads();
  bool mine = true;
  if (kMulti) {
    uint64_t* buf = g.buf();
    if (threadIdx.x == 0) {
      uint64_t t = 0;
      for (int w = 0; w < kWarps; ++w) t += sh.wsum[w];
      __stcg(reinterpret_cast<unsigned long long*>(buf + g.part), static_cast<unsigned long long>(t));
    }
    row_sync(g);
    if (threadIdx.x == 0) {
      uint64_t cum = 0;
      sh.winner = -1;
      if (tg.draw) {
        uint64_t total = 0;
        for (int b = 0; b < g.parts; ++b) total += __ldcg(reinterpret_cast<const unsigned long long*>(buf + b));
        target = draw_target(tg.u, total);
      }
      for (int b = 0; b < g.parts; ++b) {
        const uint64_t v = __ldcg(reinterpret_cast<const unsigned long long*>(buf + b));
        if (cum + v > target) {
          sh.winner = b;
          sh.btarget = target - cum;
          break;
        }
        cum += v;
      }
    }
    __syncthreads();
    const int winner = sh.winner;
    target = sh.btarget;
    __syncthreads();
    if (winner < 0) return -1;  // every block saw the same partials
    mine = winner == g.part;
  }
  if (mine) {
    if (threadIdx.x == 0) {
      uint64_t cum = 0;
      sh.wsel = -1;
      sh.result = -1;
      if (!kMulti && tg.draw) {
        uint64_t total = 0;
        for (int w = 0; w < kWarps; ++w) total += sh.wsum[w];
        target = draw_target(tg.u, total);
      }
      for (int w = 0; w < kWarps; ++w) {
        if (cum + sh.wsum[w] > target) {
          sh.wsel = w;
          sh.wtarget = target - cum;
          break;
        }
        cum += sh.wsum[w];
      }
    }
    __syncthreads();
    if (warp == sh.wsel) {
      // The walk of the warp's range in two levels, not one scan of 32 ids
      // after another (chunk / 32 dependent scans, 128 at vocab 65536, while
      // the block's other warps wait): lane l sums its own
      // contiguous share [lb, le) of the range; one scan over the lanes
      // finds the share holding the crossing; the warp walks that share.
      const int share = chunk / 32;
      const int lb = min(end, begin + lane * share), le = min(end, lb + share);
      uint64_t own = 0;
      for_each_logit<kMulti>(row.logits, lb, 1, le, [&](int i, float raw) { own += weight(i, raw); });
      const uint64_t upto = warp_inclusive_scan(own);
      uint64_t t = sh.wtarget;
      const unsigned lanes = __ballot_sync(kFull, upto > t);  // not 0: the warp's total passes t
      if (lanes != 0) {
        const int src = __ffs(lanes) - 1;
        t -= __shfl_sync(kFull, upto - own, src);
        const int wb = __shfl_sync(kFull, lb, src), we = __shfl_sync(kFull, le, src);
        uint64_t cum = 0;
        for (int base = wb; base < we; base += 32) {
          const int i = base + lane;
          const uint64_t incl = warp_inclusive_scan(i < we ? weight(i, __ldg(row.logits + i)) : uint64_t{0});
          const unsigned hit = __ballot_sync(kFull, cum + incl > t);
          if (hit != 0) {
            if (lane == __ffs(hit) - 1) sh.result = i;
            break;
          }
          cum += __shfl_sync(kFull, incl, 31);
        }
      }
    }
    __syncthreads();
  }
  int r;
  if (kMulti) {
    uint64_t* buf = g.buf();
    if (mine && threadIdx.x == 0) {
      __stcg(reinterpret_cast<unsigned long long*>(buf), static_cast<unsigned long long>(static_cast<int64_t>(sh.result)));
    }
    row_sync(g);
    r = static_cast<int>(static_cast<int64_t>(__ldcg(reinterpret_cast<const unsigned long long*>(buf))));
  } else {
    r = sh.result;
  }
  __syncthreads();
  return r;
}

// The element at which the running weight of the set, walked in (key desc,
// id asc) order, exceeds `target` (key: the prob's if order_p, else the
// logit's). false if the total does not. With `members`, also the number of
// the set's members (counted in the first digit's pass, which visits them
// all: a pass fewer than set_total's count). `listed`: the passes go over the
// shortlist (it holds s or a superset). With `built` (one-block path, not
// listed), where the first digit's pass counts at most kListMax members, one
// pass lists them and the other digits go over the list; *built says whether
// the list now holds s.
template <bool kMulti>
__device__ bool sorted_crossing(const Row& row, const Set& s, bool order_p, bool count, uint64_t target,
                                uint64_t* hist, Shared& sh, Grid& g, Bound* out, uint64_t* members = nullptr,
                                bool listed = false, bool* built = nullptr) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const bool need_p = needs_p(s, order_p, count);
  uint32_t prefix = 0;
  uint64_t above = 0;  // weight of the set's members with a key above the prefix
  for (int digit = 3; digit >= 0; --digit) {
    const int shift = 8 * digit;
    for (int j = threadIdx.x; j < kWarps * kBins; j += kThreads) hist[j] = 0;
    if (!kMulti && digit == 0 && threadIdx.x < kBins) {
      sh.tie_count[threadIdx.x] = 0;
      sh.tie_id[threadIdx.x] = 0x7fffffff;
    }
    __syncthreads();
    uint64_t* mine = hist + warp * kBins;
    unsigned seen = 0;  // members visited (< 2^20)
    for_each_candidate<kMulti>(row, g, sh, listed, [&](int i, float raw) {
      Elem e;
      if (!member_of(row, s, i, raw, need_p, order_p, e)) return;
      ++seen;
      const uint32_t key = order_p ? e.kp() : e.kx();
      if (digit < 3 && (key >> (shift + 8)) != (prefix >> (shift + 8))) return;
      const uint64_t w = count ? 1 : e.w;
      if (w != 0) {
        const uint32_t bin = (key >> shift) & 0xFFu;
        atomicAdd(reinterpret_cast<unsigned long long*>(mine + bin), static_cast<unsigned long long>(w));
        if (!kMulti && digit == 0) {
          atomicAdd(&sh.tie_count[bin], 1u);
          atomicMin(&sh.tie_id[bin], i);
        }
      }
    });
    if ((members != nullptr || (!kMulti && built != nullptr)) && digit == 3) {
      uint64_t c = block_total(static_cast<uint64_t>(seen), sh);
      if (kMulti) c = row_total(c, g);
      if (members != nullptr) *members = c;
      if (!kMulti && built != nullptr && !listed && c <= kListMax) listed = *built = collect_list(row, s, order_p, sh);
    }
    __syncthreads();
    if (threadIdx.x < kBins) {
      uint64_t t = 0;
      for (int w = 0; w < kWarps; ++w) t += hist[w * kBins + threadIdx.x];
      hist[threadIdx.x] = t;
    }
    if (kMulti) {
      uint64_t* buf = g.buf();
      if (threadIdx.x < kBins) {
        __stcg(reinterpret_cast<unsigned long long*>(buf + g.part * kBins + threadIdx.x),
               static_cast<unsigned long long>(hist[threadIdx.x]));
      }
      row_sync(g);
      if (threadIdx.x < kBins) {
        uint64_t t = 0;
        for (int b = 0; b < g.parts; ++b) {
          t += __ldcg(reinterpret_cast<const unsigned long long*>(buf + b * kBins + threadIdx.x));
        }
        hist[threadIdx.x] = t;
      }
    }
    __syncthreads();
    if (warp == 0) {
      // Lane l holds bins 255 - 8l down to 248 - 8l: lane order is key order, highest first.
      uint64_t lane_sum = 0;
      for (int j = 0; j < 8; ++j) lane_sum += hist[kBins - 1 - 8 * lane - j];
      const uint64_t incl = warp_inclusive_scan(lane_sum);
      const unsigned hit = __ballot_sync(kFull, above + incl > target);
      if (lane == 0) sh.found = hit != 0;
      if (hit != 0 && lane == __ffs(hit) - 1) {
        uint64_t cum = above + incl - lane_sum;
        for (int j = 0; j < 8; ++j) {
          const int b = kBins - 1 - 8 * lane - j;
          if (cum + hist[b] > target) {
            sh.bin = b;
            sh.above = cum;
            break;
          }
          cum += hist[b];
        }
      }
    }
    __syncthreads();
    if (!sh.found) return false;
    prefix |= static_cast<uint32_t>(sh.bin) << shift;
    above = sh.above;
    __syncthreads();
  }
  // The crossing is among the members at key `prefix`, in id order. Where
  // one of them has a nonzero weight (nearly always), it is that one (the
  // others add nothing to the running sum); else the ties' walk. (The split
  // path always walks: the same id.)
  int id;
  if (!kMulti && sh.tie_count[prefix & 0xFFu] == 1) {
    id = sh.tie_id[prefix & 0xFFu];
  } else {
    Set ties = s;
    ties.tie = true;
    ties.tie_key = prefix;
    id = id_crossing<kMulti>(row, ties, order_p, count, Target{target - above, false, 0.0}, sh, g);
  }
  if (id < 0) return false;  // cannot happen: the ties hold the crossing
  *out = Bound{prefix, id};
  return true;
}

// Running sum >= need (the CPU's top_p test) as "running sum > target".
__device__ __forceinline__ uint64_t need_target(double need) {
  const double c = ceil(need);
  return c <= 1.0 ? 0 : static_cast<uint64_t>(c) - 1;
}

// One step of a stream's online log-sum-exp (shared by both paths so that
// they compile to the same arithmetic).
__device__ __forceinline__ void lse_step(float raw, float& run_max, float& run_sum) {
  if (raw != neg_inf() && raw != pos_inf()) {
    if (raw > run_max) {
      run_sum = run_sum * expf(run_max - raw) + 1.0f;
      run_max = raw;
    } else {
      run_sum += expf(raw - run_max);
    }
  }
}

// (value desc, id asc) as one unsigned key, larger is better: the exact
// combine of block_best results across blocks (the value is re-read from the
// id, so -0 and +0 come back as the element's own).
__device__ __forceinline__ uint64_t best_key(float v, int i) {
  return (static_cast<uint64_t>(order_key(v)) << 32) | static_cast<uint32_t>(0x7fffffff - i);
}
__device__ __forceinline__ int best_id(uint64_t key) {
  return 0x7fffffff - static_cast<int>(static_cast<uint32_t>(key));
}

// Grid: `parts` consecutive blocks per row (kMulti), else one. The one-block
// kernel (many rows: each row's block is one of many) keeps to 3 blocks an
// SM (<= 40 registers; when that bound was set ptxas gave it 38 without
// spilling, where, unbounded, it took 64 and so only 2 blocks an SM: H100,
// B = 960, greedy 249-252 -> 309-315 us, top_k 3,319-3,330 -> 4,173-4,191);
// the split kernel to 2 (64 registers, as it had: its cooperative grid needs
// all its blocks resident at once). Since session 22's passes ptxas spills a
// few dozen bytes of the one-block kernel at that bound (42 stored, 88
// loaded with the loads 8 ahead and the shortlist); the timings in
// for_each_logit's comment and docs/PERF.md (session 23) include them.
constexpr int kMinBlocks(bool multi) { return multi ? 2 : 3; }
template <bool kMulti>
__global__ void __launch_bounds__(kThreads, kMinBlocks(kMulti))
    sample_kernel(const float* __restrict__ logits,  // (rows, vocab)
                  int vocab, float scale,
                  const SampleRowDesc* __restrict__ specs,  // (n)
                  const LogitAdjustDesc* __restrict__ adjust,
                  SampleResultDesc* __restrict__ results,  // (n)
                  int parts, RowScratch* __restrict__ scratch) {
  extern __shared__ uint64_t dyn[];
  uint64_t* hist = dyn;                                            // (kWarps, kBins)
  uint32_t* bitmap = reinterpret_cast<uint32_t*>(dyn + kWarps * kBins);  // (ceil(vocab / 32))
  __shared__ Shared sh;
  const int row_index = kMulti ? static_cast<int>(blockIdx.x) / parts : static_cast<int>(blockIdx.x);
  Grid g{0, 1, nullptr, 0};
  if (kMulti) g = Grid{static_cast<int>(blockIdx.x) % parts, parts, scratch + row_index, 0};
  const SampleRowDesc spec = specs[row_index];
  const int words = (vocab + 31) >> 5;

  Row row;
  row.logits = logits + static_cast<int64_t>(spec.row) * vocab;
  row.adj = adjust + spec.adj_begin;
  row.nadj = spec.adj_count;
  row.bitmap = bitmap;
  row.vocab = vocab;
  row.max = 0.0f;
  row.inv_t = spec.inv_temperature;
  row.scale = scale;
  if (row.nadj > 0) {
    for (int j = threadIdx.x; j < words; j += kThreads) bitmap[j] = 0;
    __syncthreads();
    for (int j = threadIdx.x; j < row.nadj; j += kThreads) {
      const int t = row.adj[j].token;
      if (t >= 0 && t < vocab) atomicOr(bitmap + (t >> 5), 1u << (t & 31));
    }
    __syncthreads();
  }

  // Pass 1: the raw argmax (NaN skipped) and max, the +inf count, the raw
  // log-sum-exp (online: per-thread max and rescaled sum), the adjusted max
  // and its lowest id.
  float raw_v = neg_inf(), adj_v = neg_inf();
  int raw_i = 0x7fffffff, adj_i = 0x7fffffff;
  float run_max = neg_inf(), run_sum = 0.0f;
  uint64_t num_inf = 0;
  for_each_logit<kMulti>(row.logits, first_of<kMulti>(g), stride_of<kMulti>(g), vocab, [&](int i, float raw) {
    if (raw == raw) {
      better_of(raw_v, raw_i, raw, i);
      num_inf += raw == pos_inf();
      if (!kMulti) lse_step(raw, run_max, run_sum);
    }
    better_of(adj_v, adj_i, row.adjusted(i, raw), i);
  });
  float finite_max = run_max;
  double lse_sum = 0.0;
  if (!kMulti) {
    int unused = 0;
    block_best(finite_max, unused, sh);
  }
  block_best(raw_v, raw_i, sh);
  block_best(adj_v, adj_i, sh);
  num_inf = block_total(num_inf, sh);
  if (!kMulti) {
    lse_sum = block_total(run_max == neg_inf() ? 0.0 : static_cast<double>(run_sum) * exp(static_cast<double>(run_max) -
                                                                                          static_cast<double>(finite_max)),
                          sh);
  } else {
    // The single block's thread t stream (ids t, t + kThreads, ...), whole and
    // in order; block 0 reduces them at the end.
    for (int t = threadIdx.x * parts + g.part; t < kThreads; t += kThreads * parts) {
      float m = neg_inf(), z = 0.0f;
      // Loads batched ahead of the dependent sum: a few streams per block, so latency, not throughput, bounds this.
      constexpr int kBatch = 8;
      for (int base = t; base < vocab; base += kBatch * kThreads) {
        float r[kBatch];
#pragma unroll
        for (int k = 0; k < kBatch; ++k) {
          const int i = base + k * kThreads;
          r[k] = i < vocab ? __ldg(row.logits + i) : neg_inf();
        }
#pragma unroll
        for (int k = 0; k < kBatch; ++k) {
          if (r[k] == r[k]) lse_step(r[k], m, z);
        }
      }
      __stcg(g.rs->lse_max + t, m);
      __stcg(g.rs->lse_sum + t, z);
    }
    uint64_t* buf = g.buf();
    if (threadIdx.x == 0) {
      auto* b = reinterpret_cast<unsigned long long*>(buf + 3 * g.part);
      __stcg(b, static_cast<unsigned long long>(best_key(raw_v, raw_i)));
      __stcg(b + 1, static_cast<unsigned long long>(best_key(adj_v, adj_i)));
      __stcg(b + 2, static_cast<unsigned long long>(num_inf));
    }
    row_sync(g);
    uint64_t raw_k = 0, adj_k = 0;
    num_inf = 0;
    for (int b = 0; b < parts; ++b) {
      const auto* p = reinterpret_cast<const unsigned long long*>(buf + 3 * b);
      const uint64_t rk = __ldcg(p), ak = __ldcg(p + 1);
      raw_k = rk > raw_k ? rk : raw_k;
      adj_k = ak > adj_k ? ak : adj_k;
      num_inf += __ldcg(p + 2);
    }
    raw_i = best_id(raw_k);
    adj_i = best_id(adj_k);
    raw_v = raw_i == 0x7fffffff ? neg_inf() : __ldg(row.logits + raw_i);
    adj_v = adj_i == 0x7fffffff ? neg_inf() : row.adjusted(adj_i, __ldg(row.logits + adj_i));
  }

  int token = 0;
  bool used_draw = false;
  const float m = adj_v;
  if (m == neg_inf()) {
    token = raw_i == 0x7fffffff ? 0 : raw_i;  // every token banned: the raw argmax (Sample draws nothing)
  } else if (spec.temperature == 0.0f) {
    token = adj_i;
  } else if (m == pos_inf()) {
    token = adj_i;  // the lowest +inf id; the draw is consumed
    used_draw = true;
  } else {
    used_draw = true;
    row.max = m;
    const bool topk_path = spec.top_k > 0 && spec.top_k < vocab;
    if (topk_path) {
      // DrawTopK: the k best logits, their probabilities, the min_p and top_p
      // prefix of that list, a draw in that order.
      Set all;
      Bound kb{0, 0};
      sorted_crossing<kMulti>(row, all, false, true, static_cast<uint64_t>(spec.top_k - 1), hist, sh, g, &kb);
      Set s;
      s.use_k = true;
      s.k = kb;
      // One-block path, k <= kListMax: the k kept ids listed in one pass (no
      // exp), and every pass below goes over them.
      const bool listed = !kMulti && spec.top_k <= kListMax && collect_list(row, s, false, sh);
      const uint64_t zk = set_total<kMulti>(row, s, false, false, sh, g, listed);
      s.pmin = spec.min_p;
      if (spec.top_p < 1.0f) {
        const double need = static_cast<double>(spec.top_p) * static_cast<double>(zk) * (1.0 - kTopPSlack);
        Bound pb{0, 0};
        if (sorted_crossing<kMulti>(row, s, false, false, need_target(need), hist, sh, g, &pb, nullptr, listed)) {
          s.use_p = true;
          s.pb = pb;
          s.pb_on_p = false;
        }
      }
      const uint64_t z = set_total<kMulti>(row, s, false, false, sh, g, listed);
      Bound pick{0, 0};
      sorted_crossing<kMulti>(row, s, false, false, draw_target(spec.u, z), hist, sh, g, &pick, nullptr, listed);
      token = pick.id;
    } else if (spec.top_p < 1.0f) {
      // DrawTopP: candidates are the probs >= max(min_p, the guarantee);
      // the smallest most probable set reaching top_p * z; a draw in sorted
      // order for few candidates, in id order for many.
      Set none;
      const uint64_t z = set_total<kMulti>(row, none, true, false, sh, g);
      const double need = static_cast<double>(spec.top_p) * static_cast<double>(z) * (1.0 - kTopPSlack);
      const float guarantee =
          static_cast<float>((1.0 - static_cast<double>(spec.top_p)) * (static_cast<double>(z) / scale) / vocab);
      Set s;
      s.pmin = fmaxf(fmaxf(spec.min_p, guarantee), __uint_as_float(1u));
      uint64_t candidates = 0;  // the members of s, counted by the walk's first pass
      bool listed = false;      // one-block path, at most kListMax candidates: listed by the walk
      Bound pb{0, 0};
      if (sorted_crossing<kMulti>(row, s, true, false, need_target(need), hist, sh, g, &pb, &candidates, false,
                                  &listed)) {
        s.use_p = true;
        s.pb = pb;
        s.pb_on_p = true;
      }
      if (candidates <= kSortedDrawMax) {
        const uint64_t zk = set_total<kMulti>(row, s, true, false, sh, g, listed);
        Bound pick{0, 0};
        sorted_crossing<kMulti>(row, s, true, false, draw_target(spec.u, zk), hist, sh, g, &pick, nullptr, listed);
        token = pick.id;
      } else {
        // The set's total from the walk's own first pass: one pass fewer.
        token = id_crossing<kMulti>(row, s, true, false, Target{0, true, spec.u}, sh, g);
      }
    } else {
      // DrawFull: every prob (zero below min_p), a draw in id order.
      Set s;
      s.pmin = spec.min_p;
      token = id_crossing<kMulti>(row, s, false, false, Target{0, true, spec.u}, sh, g);
    }
    if (token < 0) token = adj_i;  // unreachable: every draw target is below its total
  }

  if (kMulti) {
    // Every block has passed its last barrier once it counts itself out; the
    // last one out leaves the counters zero for the next launch.
    if (threadIdx.x == 0) {
      if (atomicAdd(&g.rs->leave, 1u) == static_cast<unsigned>(parts - 1)) {
        g.rs->arrive = 0;
        g.rs->leave = 0;
        __threadfence();
      }
    }
    if (g.part != 0) return;
    // The single block's finite max and tree sum over the same per-thread streams.
    float sm = __ldcg(g.rs->lse_max + threadIdx.x);
    const float sz = __ldcg(g.rs->lse_sum + threadIdx.x);
    finite_max = sm;
    int unused = 0;
    block_best(finite_max, unused, sh);
    lse_sum = block_total(
        sm == neg_inf() ? 0.0 : static_cast<double>(sz) * exp(static_cast<double>(sm) - static_cast<double>(finite_max)),
        sh);
  }

  if (threadIdx.x == 0) {
    const float raw = __ldg(row.logits + token);
    const float v = raw != raw ? neg_inf() : raw;
    float lp;
    if (raw_v == pos_inf()) {
      lp = v == pos_inf() ? -logf(static_cast<float>(num_inf)) : neg_inf();
    } else if (raw_v == neg_inf()) {
      lp = neg_inf();
    } else {
      const double lse = static_cast<double>(finite_max) + log(lse_sum);
      lp = static_cast<float>(static_cast<double>(v) - lse);
    }
    results[row_index] = SampleResultDesc{token, lp, used_draw ? 1 : 0};
  }
}

// Blocks per row for n rows: enough to give every SM about one block, at most
// kMaxParts; 1 (the one-block path) where n rows already fill half the GPU.
int auto_parts(int n) {
  int device = 0, sms = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
    return 1;
  }
  const int p = sms / n;
  return p < 2 ? 1 : (p > kMaxParts ? kMaxParts : p);
}

}  // namespace

size_t sample_scratch_bytes(int n) {
  return n > 0 && n <= kMaxSplitRows ? static_cast<size_t>(n) * sizeof(RowScratch) : 0;
}

cudaError_t launch_sample(const float* logits, int vocab, const SampleRowDesc* specs, const LogitAdjustDesc* adjust,
                          int n, SampleResultDesc* results, void* scratch, size_t scratch_bytes, int parts,
                          cudaStream_t stream) {
  if (n < 0 || vocab <= 0 || vocab > kMaxVocab || parts < 0 || parts > kMaxParts) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  if (logits == nullptr || specs == nullptr || results == nullptr) return cudaErrorInvalidValue;
  // Fixed-point probabilities: each <= 2^shift, their sum over the vocabulary < 2^63.
  int bits = 0;
  while ((1 << bits) < vocab) ++bits;
  const float scale = ldexpf(1.0f, 62 - bits);
  const size_t smem = sizeof(uint64_t) * kWarps * kBins + sizeof(uint32_t) * static_cast<size_t>((vocab + 31) / 32);
  const bool have_scratch = scratch != nullptr && scratch_bytes >= sample_scratch_bytes(n) && sample_scratch_bytes(n) > 0;
  if (parts == 0) parts = have_scratch ? auto_parts(n) : 1;
  if (parts > 1 && !have_scratch) return cudaErrorInvalidValue;
  // The default limit, 48 KB, is on static and dynamic shared memory
  // together: above it (a vocabulary above ~93,500) the launch needs the
  // attribute. The static part as compiled (the runtime's count, which
  // rounds for the dynamic array's alignment: sizeof(Shared) is 8 bytes
  // short of it), the larger of the two kernels'.
  static const size_t static_smem = [] {
    cudaFuncAttributes one{}, split{};
    if (cudaFuncGetAttributes(&one, sample_kernel<false>) != cudaSuccess ||
        cudaFuncGetAttributes(&split, sample_kernel<true>) != cudaSuccess) {
      return size_t{48 * 1024};  // unknown: always set the attribute
    }
    return one.sharedSizeBytes > split.sharedSizeBytes ? one.sharedSizeBytes : split.sharedSizeBytes;
  }();
  if (smem + static_smem > 48 * 1024) {
    cudaError_t e =
        cudaFuncSetAttribute(sample_kernel<false>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (e == cudaSuccess) {
      e = cudaFuncSetAttribute(sample_kernel<true>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               static_cast<int>(smem));
    }
    if (e != cudaSuccess) return e;
  }
  if (parts == 1) {
    sample_kernel<false><<<n, kThreads, smem, stream>>>(logits, vocab, scale, specs, adjust, results, 1, nullptr);
    return cudaGetLastError();
  }
  // Cooperative: the runtime refuses (rather than hangs) a grid whose blocks
  // cannot all be resident at once, which the row barriers need. Captures
  // into a graph as a cooperative kernel node.
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(static_cast<unsigned>(n * parts));
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeCooperative;
  attr[0].val.cooperative = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  return cudaLaunchKernelEx(&cfg, sample_kernel<true>, logits, vocab, scale, specs, adjust, results, parts,
                            static_cast<RowScratch*>(scratch));
}

}  // namespace rwkv::kernels
