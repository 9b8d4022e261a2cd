// Comparisons the model tests share: how far two logit (or state) vectors are
// apart, in units of the reference's spread.
//
// Why one header: the CPU, CUDA and fp16-state model tests all judge results
// as max |difference| / std(reference), and copies of these helpers had
// drifted (one ignored NaN); a NaN anywhere now counts as infinitely far.
#ifndef RWKV_ENGINE_TESTING_LOGIT_STATS_H_
#define RWKV_ENGINE_TESTING_LOGIT_STATS_H_

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace rwkv::testing {

// Population standard deviation of x[0..n).
inline double Std(const float* x, int64_t n) {
  if (n <= 0) return 0;
  double mean = 0, var = 0;
  for (int64_t i = 0; i < n; ++i) mean += x[i];
  mean /= static_cast<double>(n);
  for (int64_t i = 0; i < n; ++i) var += (x[i] - mean) * (x[i] - mean);
  return std::sqrt(var / static_cast<double>(n));
}

// max_i |a[i] - b[i]|; infinity if any difference is NaN.
inline double MaxAbsDiff(const float* a, const float* b, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; ++i) {
    const double d = std::fabs(static_cast<double>(a[i]) - b[i]);
    if (std::isnan(d)) return INFINITY;
    m = std::max(m, d);
  }
  return m;
}

// MaxAbsDiff(got, want) / Std(want); infinity when the sizes differ or want is empty.
inline double RelDiff(const std::vector<float>& got, const std::vector<float>& want) {
  if (got.size() != want.size() || want.empty()) return INFINITY;
  return MaxAbsDiff(got.data(), want.data(), want.size()) / Std(want.data(), static_cast<int64_t>(want.size()));
}

// Index of the largest of x[0..n) (the first one on ties).
inline int Argmax(const float* x, int n) { return static_cast<int>(std::max_element(x, x + n) - x); }
inline int Argmax(const std::vector<float>& x) { return Argmax(x.data(), static_cast<int>(x.size())); }

}  // namespace rwkv::testing

#endif  // RWKV_ENGINE_TESTING_LOGIT_STATS_H_
