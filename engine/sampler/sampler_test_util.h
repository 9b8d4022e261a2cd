// Shared helpers for the sampler tests: construction, a double-precision
// softmax reference and an empirical-distribution check.
//
// Why: several test files check sampled frequencies against an exact
// distribution; the tolerance rule (5 standard deviations per token, and
// exactly zero where the probability is zero) is written once here. Seeds
// are fixed, so the checks are deterministic, not flaky.
#ifndef RWKV_ENGINE_SAMPLER_SAMPLER_TEST_UTIL_H_
#define RWKV_ENGINE_SAMPLER_SAMPLER_TEST_UTIL_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/sampler/rng.h"
#include "engine/sampler/sample_spec.h"
#include "engine/sampler/sampler.h"
#include "gtest/gtest.h"

namespace rwkv::testing {

inline Sampler MakeSampler(const SamplingParams& params, int32_t vocab) {
  absl::StatusOr<Sampler> s = Sampler::Create(params, vocab);
  EXPECT_TRUE(s.ok()) << s.status();
  return *std::move(s);
}

// softmax(logits / temperature) in double.
inline std::vector<double> Softmax(const std::vector<float>& logits, double temperature = 1.0) {
  double max = -INFINITY;
  for (float v : logits) max = std::max(max, static_cast<double>(v));
  std::vector<double> p(logits.size());
  double z = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    p[i] = std::exp((logits[i] - max) / temperature);
    z += p[i];
  }
  for (double& v : p) v /= z;
  return p;
}

// Keeps only `keep` (others -> 0) and renormalizes.
inline std::vector<double> Restrict(const std::vector<double>& p, const std::vector<int>& keep) {
  std::vector<double> out(p.size(), 0.0);
  double z = 0;
  for (int i : keep) z += p[i];
  for (int i : keep) out[i] = p[i] / z;
  return out;
}

// Counts of n draws from `sampler` on fixed logits.
inline std::vector<int> Histogram(Sampler& sampler, const std::vector<float>& logits, int n) {
  std::vector<int> counts(logits.size(), 0);
  for (int i = 0; i < n; ++i) {
    const int32_t t = sampler.Sample(logits);
    EXPECT_GE(t, 0);
    EXPECT_LT(t, static_cast<int32_t>(logits.size()));
    if (t >= 0 && t < static_cast<int32_t>(logits.size())) ++counts[t];
  }
  return counts;
}

// Every token's frequency within 5 sigma of its probability; zero-probability
// tokens never drawn.
inline void ExpectMatches(const std::vector<int>& counts, const std::vector<double>& p) {
  int64_t n = 0;
  for (int c : counts) n += c;
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] == 0.0) {
      EXPECT_EQ(counts[i], 0) << "token " << i << " has probability 0";
      continue;
    }
    const double freq = static_cast<double>(counts[i]) / n;
    const double sigma = std::sqrt(p[i] * (1 - p[i]) / n);
    EXPECT_NEAR(freq, p[i], 5 * sigma + 1e-12) << "token " << i;
  }
}

// Normal(0, scale) logits from a fixed seed (Box-Muller on our own PRNG).
// The host twin of the device's adjustment step (kernels/sample.cu): the
// formula sample_spec.h documents, applied to the sanitized logits.
inline std::vector<float> ApplySpecAdjustments(const SampleSpec& spec, const std::vector<float>& logits) {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> out(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) out[i] = std::isnan(logits[i]) ? -inf : logits[i];
  for (const LogitAdjustment& a : spec.adjustments) {
    if (a.token < 0 || a.token >= static_cast<int32_t>(out.size())) continue;
    float v = out[a.token];
    v = a.bias == -inf ? -inf : v + a.bias;
    v = v - a.penalty;
    if (a.repetition != 1.0f) v = v > 0.0f ? v / a.repetition : v * a.repetition;
    out[a.token] = v;
  }
  return out;
}

inline std::vector<float> RandomLogits(int32_t n, uint64_t seed, double scale = 3.0) {
  Xoshiro256StarStar rng(seed);
  std::vector<float> out(n);
  for (float& v : out) {
    const double u1 = rng.NextDouble() + 1e-300;
    const double u2 = rng.NextDouble();
    v = static_cast<float>(scale * std::sqrt(-2 * std::log(u1)) * std::cos(6.283185307179586 * u2));
  }
  return out;
}

inline int32_t Argmax(const std::vector<float>& x) {
  return static_cast<int32_t>(std::max_element(x.begin(), x.end()) - x.begin());
}

}  // namespace rwkv::testing

#endif  // RWKV_ENGINE_SAMPLER_SAMPLER_TEST_UTIL_H_
