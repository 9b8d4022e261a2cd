// The numeric passes behind Sampler: sanitize/max, top-k selection, exp,
// and the three draws (full, top-k, top-p). Internal to engine/sampler.
//
// Why a separate file: these are the hot loops (65536 logits per token per
// session), written so GCC vectorizes them, and kept apart from the
// Sampler's bookkeeping so each can be read, tested and profiled alone.
// Every function here is deterministic: the same inputs give the same bits
// on any x86-64 clone and any standard library.
#ifndef RWKV_ENGINE_SAMPLER_SAMPLING_OPS_H_
#define RWKV_ENGINE_SAMPLER_SAMPLING_OPS_H_

#include <algorithm>
#include <bit>
#include <cstdint>
#include <vector>

#include "absl/types/span.h"

namespace rwkv::sampling_internal {

struct Cand {
  float value;
  int32_t id;
};

// Strictly better: higher value, then lower id. A total order on distinct ids.
inline bool Better(const Cand& a, const Cand& b) {
  return a.value > b.value || (a.value == b.value && a.id < b.id);
}

// v where keep, else +0. A bit mask rather than `keep ? v : 0`, which GCC
// turns into a branch around v's computation, and that stops vectorization.
inline float KeepIf(bool keep, float v) {
  return std::bit_cast<float>(std::bit_cast<uint32_t>(v) & (0u - static_cast<uint32_t>(keep)));
}

// exp(x) for x <= 0 (cephes expf): relative error ~1 ulp, exactly 1 at 0,
// exactly 0 below -87 (no denormals), 0 for -inf. Branch-free so loops over
// it vectorize.
inline float ExpNonPositive(float x) {
  // Clamp to -87 on the bits: for x <= 0 a larger magnitude has larger bits.
  // (A float select here makes GCC split the loop body into two paths.)
  constexpr uint32_t kMinus87 = std::bit_cast<uint32_t>(-87.0f);
  const uint32_t xbits = std::bit_cast<uint32_t>(x);
  const float xc = std::bit_cast<float>(std::min(xbits, kMinus87));
  // Round xc*log2(e) to the nearest integer n with the 1.5*2^23 trick.
  const float t = xc * 1.44269504088896341f + 12582912.0f;
  const int32_t n = static_cast<int32_t>(std::bit_cast<uint32_t>(t) - 0x4B400000u);
  const float fn = t - 12582912.0f;
  const float r = (xc - fn * 0.693359375f) - fn * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const float y = p * std::bit_cast<float>(static_cast<uint32_t>(n + 127) << 23);
  return KeepIf(xbits <= kMinus87, y);  // x >= -87 (and 0 for -inf)
}

// What the draws need besides the logits.
struct Filters {
  float max;    // max adjusted logit (finite)
  float inv_t;  // 1 / temperature, finite
  int32_t top_k;
  float top_p;
  float min_p;
};

// A per-thread buffer of at least n floats (valid until the thread's next
// call that asks for one). Keeps scratch out of the per-session Sampler.
float* ThreadScratchLogits(int32_t n);

// Copies `in` to `out` with NaN -> -inf; returns the maximum.
float CopySanitized(absl::Span<const float> in, float* out);

// Maximum of x[0, n) (no NaN); -inf for n == 0.
float MaxOf(const float* x, int32_t n);

// First i with x[i] == v (0 if none).
int32_t FirstIndexOf(const float* x, int32_t n, float v);

// Argmax of the raw logits, NaN skipped, ties to the lowest id; 0 if all NaN.
int32_t RawArgmax(absl::Span<const float> logits);

// The k best of x[0, n) (no NaN) by Better, best first, into *out.
void SelectTopK(const float* x, int32_t n, int32_t k, std::vector<Cand>* out);

// The draws, for u uniform in [0, 1) and x the adjusted logits (no NaN, max
// finite and equal to f.max). DrawTopP and DrawFull overwrite x.
// top_k in (0, n): the k best, then top_p and min_p on that sorted list.
int32_t DrawTopK(const float* x, int32_t n, const Filters& f, double u);
// top_p < 1, top_k off: the exact top_p set (ties to lower ids) and min_p.
int32_t DrawTopP(float* x, int32_t n, const Filters& f, double u);
// Neither: the whole softmax, min_p as a threshold.
int32_t DrawFull(float* x, int32_t n, const Filters& f, double u);

// The ids (ascending) DrawTopP would draw from, for tests.
std::vector<int32_t> TopPKeptIds(absl::Span<const float> logits, const Filters& f);

// log(sum(exp(x - max))) + max for finite max.
double LogSumExp(const float* x, int32_t n, float max);

}  // namespace rwkv::sampling_internal

#endif  // RWKV_ENGINE_SAMPLER_SAMPLING_OPS_H_
