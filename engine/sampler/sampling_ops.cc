// The sampling passes: sanitize/max, selection, exp and the draws.
//
// Why this shape: with a 65536-token vocabulary a full sort per token per
// session would dominate a decode step, so each filter does the least work
// that is still exact, in a few vectorized passes over the logits:
//  - no top_k/top_p: one pass computes exp() into a scratch buffer (min_p is a
//    threshold on it) with per-block sums; the draw walks the block sums and
//    then one block. No sorting at all.
//  - top_k: a bounded heap (nth_element for k > 1024) keeps the k best
//    logits, sorted; top_p and min_p then cut that short list.
//  - top_p alone: after the exp pass the total mass is known, so only tokens
//    that could be kept are candidates; a few are sorted, many go through a
//    radix select on the bits of their probabilities that finds the exact
//    boundary without sorting.
// exp() is a small polynomial of our own (cephes expf, ~1 ulp): it
// vectorizes, and it makes probabilities independent of the libm in use. Hot
// loops get an AVX2 clone on x86-64 (no FMA, so both clones give the same
// bits). Scratch memory is per thread, so a Sampler (one per session) stays
// small. Candidate orders are total (value, then lower id), so results do not
// depend on the standard library's sort or nth_element.
#include "engine/sampler/sampling_ops.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "absl/types/span.h"

namespace rwkv::sampling_internal {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// An AVX2 clone of a hot loop, picked at load time where the CPU has it. Not
// "fma" (nor avx512f, which implies it): contracted multiply-adds would round
// differently from the default clone.
#if defined(__x86_64__) && defined(__linux__) && \
    (defined(__clang__) ? __clang_major__ >= 14 : defined(__GNUC__))
#define RWKV_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define RWKV_VECTOR_CLONES
#endif

constexpr int32_t kBlock = 1024;           // tokens per partial sum in the full draw
constexpr int32_t kHeapSelectMaxK = 1024;  // above this, top-k uses nth_element
constexpr double kTopPSlack = 1e-6;        // relative rounding slack on the top_p mass

constexpr int kLanes = 8;  // independent float accumulators: lets sums vectorize

struct Scratch {
  std::vector<float> x;             // (vocab) adjusted logits, then probabilities
  std::vector<double> block_sums;   // (ceil(vocab / kBlock))
  std::vector<Cand> cands;          // kept candidates, best first
  std::vector<Cand> pool;           // (vocab) top_p candidates, id order
  std::vector<double> hist_mass;    // (4096) radix-select histogram
  std::vector<int32_t> hist_count;  // (4096)
};

Scratch& ThreadScratch() {
  thread_local Scratch scratch;
  return scratch;
}

// NaN -> -inf, as a bit select (a float select here stays scalar).
inline float Sanitize(float v) {
  const uint32_t keep = 0u - static_cast<uint32_t>(v == v);
  return std::bit_cast<float>((std::bit_cast<uint32_t>(v) & keep) | (std::bit_cast<uint32_t>(-kInf) & ~keep));
}

// Order-preserving map of non-NaN floats to int32 (and its inverse): GCC
// vectorizes an int max reduction but not a float one without fast-math.
inline int32_t OrderKey(float v) {
  const int32_t k = std::bit_cast<int32_t>(v);
  return k ^ ((k >> 31) & 0x7FFFFFFF);
}
inline float FromOrderKey(int32_t k) { return std::bit_cast<float>(k ^ ((k >> 31) & 0x7FFFFFFF)); }

constexpr int32_t kScanChunk = 64;

// Whether any of x[0, kScanChunk) exceeds v (no early exit: vectorizes).
RWKV_VECTOR_CLONES
bool AnyAbove(const float* x, float v) {
  int any = 0;
  for (int32_t j = 0; j < kScanChunk; ++j) any |= x[j] > v;
  return any != 0;
}

// Whether any of x[0, kScanChunk) is at least v.
RWKV_VECTOR_CLONES
bool AnyAtLeast(const float* x, float v) {
  int any = 0;
  for (int32_t j = 0; j < kScanChunk; ++j) any |= x[j] >= v;
  return any != 0;
}

// For one block: x[i] <- w(exp((x[i] - max) * inv_t)) where w zeroes values
// below `min_keep`; returns the block's sum. Lane sums are float (a block is
// 1024 values <= 1), the total double.
RWKV_VECTOR_CLONES
double ExpBlock(float* x, int32_t len, float max, float inv_t, float min_keep) {
  float acc[kLanes] = {};
  int32_t i = 0;
  for (; i + kLanes <= len; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      const float p = ExpNonPositive((x[i + j] - max) * inv_t);
      const float w = KeepIf(p >= min_keep, p);
      x[i + j] = w;
      acc[j] += w;
    }
  }
  double sum = 0;
  for (; i < len; ++i) {
    const float p = ExpNonPositive((x[i] - max) * inv_t);
    x[i] = KeepIf(p >= min_keep, p);
    sum += x[i];
  }
  for (int j = 0; j < kLanes; ++j) sum += acc[j];
  return sum;
}

// For one block: x[i] <- x[i] if x[i] >= keep_from else 0; returns the sum.
RWKV_VECTOR_CLONES
double MaskBlock(float* x, int32_t len, float keep_from) {
  float acc[kLanes] = {};
  int32_t i = 0;
  for (; i + kLanes <= len; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      const float w = x[i + j] >= keep_from ? x[i + j] : 0.0f;
      x[i + j] = w;
      acc[j] += w;
    }
  }
  double sum = 0;
  for (; i < len; ++i) {
    x[i] = x[i] >= keep_from ? x[i] : 0.0f;
    sum += x[i];
  }
  for (int j = 0; j < kLanes; ++j) sum += acc[j];
  return sum;
}

// Probabilities in place (zero below min_keep), per-block sums; returns the
// total.
double ExpAndBlockSums(float* x, int32_t n, float max, float inv_t, float min_keep,
                       std::vector<double>* block_sums) {
  const int32_t num_blocks = (n + kBlock - 1) / kBlock;
  block_sums->resize(num_blocks);
  double z = 0;
  for (int32_t b = 0; b < num_blocks; ++b) {
    const int32_t begin = b * kBlock;
    (*block_sums)[b] = ExpBlock(x + begin, std::min(kBlock, n - begin), max, inv_t, min_keep);
    z += (*block_sums)[b];
  }
  return z;
}

int32_t LastPositive(const float* p, int32_t len) {
  for (int32_t i = len - 1; i > 0; --i) {
    if (p[i] > 0.0f) return i;
  }
  return 0;
}

// Draws index i with probability p[i] / sum(p), given target = u * sum and the
// block sums. Walks the block sums, then one block. Rounding (a target at the
// very top of a block) falls back to its last positive entry, never to a zero
// one.
int32_t DrawBlocked(const float* p, int32_t n, const std::vector<double>& block_sums, double target) {
  double cum = 0;
  int32_t last_positive_block = 0;
  for (int32_t b = 0; b < static_cast<int32_t>(block_sums.size()); ++b) {
    const int32_t begin = b * kBlock;
    const int32_t len = std::min(kBlock, n - begin);
    if (block_sums[b] <= 0) continue;
    last_positive_block = b;
    if (cum + block_sums[b] > target) {
      const double rem = target - cum;
      double c = 0;
      for (int32_t i = 0; i < len; ++i) {
        c += p[begin + i];
        if (c > rem) return begin + i;
      }
      return begin + LastPositive(p + begin, len);
    }
    cum += block_sums[b];
  }
  const int32_t begin = last_positive_block * kBlock;
  return begin + LastPositive(p + begin, std::min(kBlock, n - begin));
}

// Draws among cands[0, m) (values are probabilities, cands[0] positive).
int32_t DrawFromCands(const std::vector<Cand>& cands, int32_t m, double u) {
  double z = 0;
  for (int32_t j = 0; j < m; ++j) z += cands[j].value;
  const double target = u * z;
  double c = 0;
  int32_t last_positive = 0;
  for (int32_t j = 0; j < m; ++j) {
    if (cands[j].value <= 0.0f) continue;
    last_positive = j;
    c += cands[j].value;
    if (c > target) return cands[j].id;
  }
  return cands[last_positive].id;
}

// top_k active (k < n): select, convert to probabilities, cut, draw.
int32_t DrawTopKImpl(const float* x, int32_t n, const Filters& f, double u, Scratch& s) {
  std::vector<Cand>& cands = s.cands;
  SelectTopK(x, n, f.top_k, &cands);
  while (cands.size() > 1 && cands.back().value == -kInf) cands.pop_back();
  double z = 0;
  for (Cand& c : cands) {
    c.value = ExpNonPositive((c.value - f.max) * f.inv_t);
    z += c.value;
  }
  const double target_mass = f.top_p < 1.0f ? static_cast<double>(f.top_p) * z * (1.0 - kTopPSlack)
                                            : std::numeric_limits<double>::infinity();
  // cands is best first: keep the prefix up to min_p and up to top_p's mass.
  int32_t m = 0;
  double cum = 0;
  while (m < static_cast<int32_t>(cands.size()) && cands[m].value >= f.min_p) {
    cum += cands[m++].value;
    if (cum >= target_mass) break;
  }
  return DrawFromCands(cands, std::max(m, 1), u);
}

// Radix select over the bits of positive floats (monotone in value): three
// levels of 12, 12 and 8 bits. Each level histograms the mass of the current
// bucket's members and finds the sub-bucket where the running mass (from the
// top) reaches what is still needed.
struct RadixLevel {
  int shift;
  uint32_t mask;
  int buckets;  // keys used: probabilities are <= 1, so level 0 needs 0x3F9
};
constexpr RadixLevel kRadixLevels[3] = {{20, 0xFFFu, 0x3F9}, {8, 0xFFFu, 0x1000}, {0, 0xFFu, 0x100}};
constexpr size_t kSortCandidatesMax = 256;  // fewer candidates: just sort them
constexpr size_t kHistogramCopiesFrom = 1024;

inline uint32_t Bits(float v) { return std::bit_cast<uint32_t>(v); }

// Mass and count per key of members[0, count). Large sets spread over 4
// interleaved copies: runs of equal keys would otherwise serialize on one
// counter.
void BuildHistogram(const Cand* members, size_t count, const RadixLevel& lv, Scratch& s) {
  const size_t copies = count >= kHistogramCopiesFrom ? 4 : 1;
  const size_t b = static_cast<size_t>(lv.buckets);
  s.hist_mass.assign(b * copies, 0.0);
  s.hist_count.assign(b * copies, 0);
  for (size_t j = 0; j < count; ++j) {
    const size_t k = ((Bits(members[j].value) >> lv.shift) & lv.mask) + b * (j & (copies - 1));
    s.hist_mass[k] += members[j].value;
    ++s.hist_count[k];
  }
  for (size_t c = 1; c < copies; ++c) {
    for (size_t k = 0; k < b; ++k) {
      s.hist_mass[k] += s.hist_mass[c * b + k];
      s.hist_count[k] += s.hist_count[c * b + k];
    }
  }
}

bool AllSameValue(const Cand* members, size_t count) {
  for (size_t j = 1; j < count; ++j) {
    if (members[j].value != members[0].value) return false;
  }
  return true;
}

// Walks histogram buckets from the top; returns the bucket in which the
// running mass reaches `*need` and leaves in *need the mass still needed
// inside it. If it is never reached (rounding, or a min_p cut), returns the
// lowest non-empty bucket and sets *need to +inf (keep all of it).
int WalkDown(const Scratch& s, int buckets, double* need) {
  double cum = 0;
  int lowest = 0;
  for (int k = buckets - 1; k >= 0; --k) {
    if (s.hist_count[k] == 0) continue;
    lowest = k;
    if (cum + s.hist_mass[k] >= *need) {
      *need -= cum;
      return k;
    }
    cum += s.hist_mass[k];
  }
  *need = std::numeric_limits<double>::infinity();
  return lowest;
}

// The kept set of top_p (with min_p), top_k off. After the exp pass, the
// candidates are the tokens that could be kept. Few: they are sorted and the
// kept prefix is left in s.cands (returns its length). Many: a radix select
// finds the exact boundary probability tau of the smallest most-probable set
// with mass >= top_p (ties at tau going to the lowest ids), everything else
// in x is set to 0 and s.block_sums are recomputed (returns -1). No full sort.
int32_t KeepTopP(float* x, int32_t n, const Filters& f, Scratch& s) {
  const double z = ExpAndBlockSums(x, n, f.max, f.inv_t, 0.0f, &s.block_sums);
  double need = static_cast<double>(f.top_p) * z * (1.0 - kTopPSlack);
  // Tokens below `lowest` are never kept: min_p drops them, or (below the
  // guarantee) the tokens above them already weigh more than top_p.
  const float guarantee = static_cast<float>((1.0 - f.top_p) * z / n);
  const float lowest = std::max({f.min_p, guarantee, std::numeric_limits<float>::denorm_min()});
  // Candidates in id order, collected branch-free into a pool that only grows.
  if (s.pool.size() < static_cast<size_t>(n)) s.pool.resize(n);
  Cand* members = s.pool.data();
  size_t count = 0;
  auto collect = [&](int32_t begin, int32_t end) {
    for (int32_t i = begin; i < end; ++i) {
      members[count] = {x[i], i};
      count += x[i] >= lowest;
    }
  };
  int32_t i = 0;
  for (; i + kScanChunk <= n; i += kScanChunk) {
    if (AnyAtLeast(x + i, lowest)) collect(i, i + kScanChunk);
  }
  collect(i, n);
  if (count <= kSortCandidatesMax) {
    std::sort(members, members + count, Better);
    size_t m = 0;
    double cum = 0;
    while (m < count) {
      cum += members[m++].value;
      if (cum >= need) break;
    }
    s.cands.assign(members, members + m);
    return static_cast<int32_t>(m);
  }
  // Narrow the candidates to the bucket holding the boundary, level by
  // level, until they are all equal (ties at tau) or a bucket is kept whole.
  bool keep_all = false;
  for (const RadixLevel& lv : kRadixLevels) {
    if (AllSameValue(members, count)) break;
    BuildHistogram(members, count, lv, s);
    const uint32_t k = static_cast<uint32_t>(WalkDown(s, lv.buckets, &need));
    keep_all = std::isinf(need);
    size_t kept = 0;  // keep bucket k's members, in order
    for (size_t j = 0; j < count; ++j) {
      members[kept] = members[j];
      kept += ((Bits(members[j].value) >> lv.shift) & lv.mask) == k;
    }
    count = kept;
    if (keep_all) break;
  }
  float tau = members[0].value;
  if (keep_all) {
    // The boundary bucket is kept whole: its smallest member is tau.
    for (size_t j = 1; j < count; ++j) tau = std::min(tau, members[j].value);
  } else {
    // members are the ties at tau, in id order: keep just enough of them.
    double cum = 0;
    size_t keep = 0;
    while (keep < count && cum < need) cum += members[keep++].value;
    for (size_t j = std::max<size_t>(keep, 1); j < count; ++j) x[members[j].id] = 0.0f;
  }
  for (size_t b = 0; b < s.block_sums.size(); ++b) {
    const int32_t begin = static_cast<int32_t>(b) * kBlock;
    s.block_sums[b] = MaskBlock(x + begin, std::min(kBlock, n - begin), tau);
  }
  return -1;
}

int32_t DrawTopPImpl(float* x, int32_t n, const Filters& f, double u, Scratch& s) {
  const int32_t m = KeepTopP(x, n, f, s);
  if (m >= 0) return DrawFromCands(s.cands, m, u);
  double total = 0;
  for (double b : s.block_sums) total += b;
  return DrawBlocked(x, n, s.block_sums, u * total);
}

// Neither top_k nor top_p: one exp pass (min_p as a threshold), blocked draw.
int32_t DrawFullImpl(float* x, int32_t n, const Filters& f, double u, Scratch& s) {
  const double z = ExpAndBlockSums(x, n, f.max, f.inv_t, f.min_p, &s.block_sums);
  return DrawBlocked(x, n, s.block_sums, u * z);
}

}  // namespace

float* ThreadScratchLogits(int32_t n) {
  Scratch& s = ThreadScratch();
  if (s.x.size() < static_cast<size_t>(n)) s.x.resize(n);
  return s.x.data();
}

// Maximum of x[0, n) (no NaN); -inf for n == 0.
RWKV_VECTOR_CLONES
float MaxOf(const float* x, int32_t n) {
  int32_t m = OrderKey(-kInf);
  for (int32_t i = 0; i < n; ++i) m = std::max(m, OrderKey(x[i]));
  return FromOrderKey(m);
}

// Copies `in` to `out` with NaN -> -inf; returns the maximum. (Two simple
// loops vectorize; one fused loop does not, for fear of aliasing.)
RWKV_VECTOR_CLONES
float CopySanitized(absl::Span<const float> in, float* out) {
  const int32_t n = static_cast<int32_t>(in.size());
  const float* src = in.data();
  for (int32_t i = 0; i < n; ++i) out[i] = Sanitize(src[i]);
  return MaxOf(out, n);
}

// First i with x[i] == v (0 if none). Checks 256 at a time without an early
// exit inside, so the check vectorizes.
RWKV_VECTOR_CLONES
int32_t FirstIndexOf(const float* x, int32_t n, float v) {
  constexpr int32_t kChunk = 256;
  int32_t i = 0;
  for (; i + kChunk <= n; i += kChunk) {
    int any = 0;
    for (int32_t j = 0; j < kChunk; ++j) any |= x[i + j] == v;
    if (any) break;
  }
  for (; i < n; ++i) {
    if (x[i] == v) return i;
  }
  return 0;
}

// Argmax of the raw logits, NaN skipped, ties to the lowest id; 0 if all NaN.
int32_t RawArgmax(absl::Span<const float> logits) {
  int32_t best = 0;
  float best_v = -kInf;
  bool found = false;
  for (int32_t i = 0; i < static_cast<int32_t>(logits.size()); ++i) {
    const float v = logits[i];
    if (std::isnan(v)) continue;
    if (!found || v > best_v) {
      best = i;
      best_v = v;
      found = true;
    }
  }
  return best;
}

// The k best of x[0, n) (no NaN) by Better, best first, into *out.
void SelectTopK(const float* x, int32_t n, int32_t k, std::vector<Cand>* out) {
  out->clear();
  k = std::min(k, n);
  if (k <= 0) return;
  if (k <= kHeapSelectMaxK) {
    // A heap whose front is the worst kept candidate. Ids arrive in
    // increasing order, so a newcomer beats the front only by value.
    for (int32_t i = 0; i < k; ++i) {
      out->push_back({x[i], i});
      std::push_heap(out->begin(), out->end(), Better);
    }
    float worst = out->front().value;
    auto offer = [&](int32_t i) {
      if (x[i] <= worst) return;
      std::pop_heap(out->begin(), out->end(), Better);
      out->back() = {x[i], i};
      std::push_heap(out->begin(), out->end(), Better);
      worst = out->front().value;
    };
    int32_t i = k;
    for (; i + kScanChunk <= n; i += kScanChunk) {
      if (AnyAbove(x + i, worst)) {
        for (int32_t j = i; j < i + kScanChunk; ++j) offer(j);
      }
    }
    for (; i < n; ++i) offer(i);
    std::sort_heap(out->begin(), out->end(), Better);
    return;
  }
  out->resize(n);
  for (int32_t i = 0; i < n; ++i) (*out)[i] = {x[i], i};
  if (k < n) std::nth_element(out->begin(), out->begin() + k, out->end(), Better);
  out->resize(k);
  std::sort(out->begin(), out->end(), Better);
}

// log(sum(exp(x - max))) + max for finite max.
double LogSumExp(const float* x, int32_t n, float max) {
  double sum = 0;
  float buf[kBlock];
  for (int32_t begin = 0; begin < n; begin += kBlock) {
    const int32_t len = std::min(kBlock, n - begin);
    std::copy(x + begin, x + begin + len, buf);
    sum += ExpBlock(buf, len, max, 1.0f, 0.0f);
  }
  return static_cast<double>(max) + std::log(sum);
}

int32_t DrawTopK(const float* x, int32_t n, const Filters& f, double u) {
  return DrawTopKImpl(x, n, f, u, ThreadScratch());
}

int32_t DrawTopP(float* x, int32_t n, const Filters& f, double u) {
  return DrawTopPImpl(x, n, f, u, ThreadScratch());
}

int32_t DrawFull(float* x, int32_t n, const Filters& f, double u) {
  return DrawFullImpl(x, n, f, u, ThreadScratch());
}

std::vector<int32_t> TopPKeptIds(absl::Span<const float> logits, const Filters& f) {
  const int32_t n = static_cast<int32_t>(logits.size());
  std::vector<float> x(logits.begin(), logits.end());
  Scratch& s = ThreadScratch();
  const int32_t m = KeepTopP(x.data(), n, f, s);
  std::vector<int32_t> ids;
  if (m >= 0) {
    for (int32_t j = 0; j < m; ++j) ids.push_back(s.cands[j].id);
    std::sort(ids.begin(), ids.end());
  } else {
    for (int32_t i = 0; i < n; ++i) {
      if (x[i] > 0.0f) ids.push_back(i);
    }
  }
  return ids;
}

}  // namespace rwkv::sampling_internal
