// Tests for the sampling passes: exp accuracy, sanitize/max, first-index,
// top-k selection and the exact top_p kept set, each against a plain
// reference (std::exp, std::sort, a full sort of the probabilities).
//
// Why: the passes are written for the vectorizer (bit tricks, chunked early
// exits, radix select), so each is checked at sizes that hit every chunk and
// path boundary, with ties, against code that is obviously right.
#include "engine/sampler/sampling_ops.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "engine/sampler/rng.h"
#include "gtest/gtest.h"

namespace rwkv::sampling_internal {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

std::vector<float> Uniform(int32_t n, uint64_t seed, float lo, float hi, float step = 0.0f) {
  Xoshiro256StarStar rng(seed);
  std::vector<float> out(n);
  for (float& v : out) {
    v = lo + static_cast<float>((hi - lo) * rng.NextDouble());
    if (step > 0) v = std::round(v / step) * step;  // quantized: many exact ties
  }
  return out;
}

TEST(SamplingOpsTest, ExpNonPositiveMatchesStdExp) {
  EXPECT_EQ(ExpNonPositive(0.0f), 1.0f);
  EXPECT_EQ(ExpNonPositive(-0.0f), 1.0f);
  EXPECT_EQ(ExpNonPositive(-87.5f), 0.0f);
  EXPECT_EQ(ExpNonPositive(-1000.0f), 0.0f);
  EXPECT_EQ(ExpNonPositive(-kInf), 0.0f);
  double worst = 0;
  for (int i = 0; i <= 870000; ++i) {
    const float x = -static_cast<float>(i) * 1e-4f;
    const double ref = std::exp(static_cast<double>(x));
    worst = std::max(worst, std::abs(ExpNonPositive(x) - ref) / ref);
  }
  EXPECT_LT(worst, 3e-7);  // ~2 ulp of float
}

TEST(SamplingOpsTest, CopySanitizedAndMaxOf) {
  for (int32_t n : {1, 7, 8, 9, 1000, 1025}) {
    std::vector<float> in = Uniform(n, n, -5, 5);
    in[n / 2] = kNaN;
    std::vector<float> out(n);
    const float max = CopySanitized(in, out.data());
    float ref = -kInf;
    for (int32_t i = 0; i < n; ++i) {
      if (i == n / 2) {
        EXPECT_EQ(out[i], -kInf);
      } else {
        EXPECT_EQ(out[i], in[i]);
        ref = std::max(ref, in[i]);
      }
    }
    EXPECT_EQ(max, ref) << n;
    EXPECT_EQ(MaxOf(out.data(), n), ref);
  }
  const std::vector<float> special = {-kInf, -0.0f, -kInf, kInf, 3.0f};
  EXPECT_EQ(MaxOf(special.data(), 5), kInf);
  EXPECT_EQ(MaxOf(special.data(), 3), 0.0f);
  EXPECT_EQ(MaxOf(special.data(), 1), -kInf);
  EXPECT_EQ(MaxOf(special.data(), 0), -kInf);
}

TEST(SamplingOpsTest, FirstIndexOfAcrossChunks) {
  std::vector<float> x(2000, 0.0f);
  for (int32_t pos : {0, 255, 256, 257, 1023, 1999}) {
    std::fill(x.begin(), x.end(), 0.0f);
    x[pos] = 1.0f;
    x[1999] = 1.0f;
    EXPECT_EQ(FirstIndexOf(x.data(), 2000, 1.0f), pos);
  }
  EXPECT_EQ(FirstIndexOf(x.data(), 2000, 5.0f), 0);
}

TEST(SamplingOpsTest, RawArgmaxSkipsNaN) {
  EXPECT_EQ(RawArgmax(std::vector<float>{kNaN, 1, 3, 3}), 2);
  EXPECT_EQ(RawArgmax(std::vector<float>{-kInf, -kInf}), 0);
  EXPECT_EQ(RawArgmax(std::vector<float>{kNaN, -kInf}), 1);
}

TEST(SamplingOpsTest, SelectTopKMatchesSortWithTies) {
  for (int32_t n : {10, 1000, 5000}) {
    const std::vector<float> x = Uniform(n, 7 + n, -4, 4, 0.25f);
    std::vector<Cand> ref;
    for (int32_t i = 0; i < n; ++i) ref.push_back({x[i], i});
    std::sort(ref.begin(), ref.end(), Better);
    for (int32_t k : {1, 5, 64, 1024, 1025, 3000, n, n + 10}) {
      std::vector<Cand> got;
      SelectTopK(x.data(), n, k, &got);
      const size_t expected = static_cast<size_t>(std::min(k, n));
      ASSERT_EQ(got.size(), expected) << n << " " << k;
      for (size_t j = 0; j < expected; ++j) {
        ASSERT_EQ(got[j].id, ref[j].id) << "n " << n << " k " << k << " rank " << j;
        ASSERT_EQ(got[j].value, ref[j].value);
      }
    }
  }
}

// Checks a top_p kept set against a full sort of the same float
// probabilities: it must be the first |kept| tokens of (p desc, id asc), all
// at least min_p, reaching the mass unless min_p stopped it, and minimal.
void CheckTopP(const std::vector<float>& logits, const Filters& f) {
  const int32_t n = static_cast<int32_t>(logits.size());
  std::vector<Cand> ref;
  double z = 0;
  for (int32_t i = 0; i < n; ++i) {
    const float p = ExpNonPositive((logits[i] - f.max) * f.inv_t);
    ref.push_back({p, i});
    z += p;
  }
  std::sort(ref.begin(), ref.end(), Better);
  const std::vector<int32_t> kept = TopPKeptIds(logits, f);
  const size_t m = kept.size();
  ASSERT_GE(m, 1u);
  std::vector<int32_t> prefix;
  double mass = 0;
  for (size_t j = 0; j < m; ++j) {
    prefix.push_back(ref[j].id);
    mass += ref[j].value;
    EXPECT_GE(ref[j].value, f.min_p);
  }
  std::sort(prefix.begin(), prefix.end());
  ASSERT_EQ(kept, prefix) << "not the most probable prefix (n " << n << ")";
  const double target = static_cast<double>(f.top_p) * z;
  const bool min_p_stopped = m < ref.size() && ref[m].value < f.min_p;
  if (!min_p_stopped && m < ref.size() && ref[m].value > 0) {
    EXPECT_GE(mass, target * (1 - 1e-5)) << "kept too little (n " << n << ", top_p " << f.top_p << ")";
  }
  if (m > 1) {
    EXPECT_LT(mass - ref[m - 1].value, target * (1 + 1e-5)) << "not minimal (n " << n << ")";
  }
}

TEST(SamplingOpsTest, TopPKeptSetIsExactOnRandomCases) {
  Xoshiro256StarStar rng(31);
  for (int iter = 0; iter < 300; ++iter) {
    const int32_t sizes[] = {3, 100, 300, 2000, 65536};
    const int32_t n = sizes[rng.Next() % 5];
    const float scale = static_cast<float>(0.1 + 10 * rng.NextDouble());
    const float step = rng.Next() % 3 == 0 ? 0.5f : 0.0f;  // a third with heavy ties
    const std::vector<float> logits = Uniform(n, rng.Next(), -scale, scale, step);
    Filters f;
    f.max = *std::max_element(logits.begin(), logits.end());
    f.inv_t = static_cast<float>(0.2 + 3 * rng.NextDouble());
    f.top_k = 0;
    f.top_p = static_cast<float>(0.01 + 0.98 * rng.NextDouble());
    f.min_p = rng.Next() % 2 ? 0.0f : static_cast<float>(0.3 * rng.NextDouble());
    SCOPED_TRACE(::testing::Message() << "iter " << iter);
    CheckTopP(logits, f);
  }
}

TEST(SamplingOpsTest, TopPAllTiedKeepsLowestIds) {
  const std::vector<float> logits(10000, 1.0f);
  Filters f{1.0f, 1.0f, 0, 0.25f, 0.0f};
  const std::vector<int32_t> kept = TopPKeptIds(logits, f);
  ASSERT_EQ(kept.size(), 2500u);
  EXPECT_EQ(kept.front(), 0);
  EXPECT_EQ(kept.back(), 2499);
}

}  // namespace
}  // namespace rwkv::sampling_internal
