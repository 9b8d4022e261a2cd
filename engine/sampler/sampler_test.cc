// Tests for Sampler's draw: greedy, temperature, the filters (top_k, top_p,
// min_p) against exact distributions, seeds, and degenerate logits.
//
// Why: each filter is implemented by a different fast path (heap, threshold
// rounds, blocked draw), so each is checked on small vocabularies where the
// kept set can be computed by hand, and on large ones that exercise the fast
// paths' block and round boundaries.
#include "engine/sampler/sampler.h"

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <set>
#include <vector>

#include "engine/sampler/sampler_test_util.h"
#include "gtest/gtest.h"

namespace rwkv {
namespace {

using ::rwkv::testing::Argmax;
using ::rwkv::testing::ExpectMatches;
using ::rwkv::testing::Histogram;
using ::rwkv::testing::MakeSampler;
using ::rwkv::testing::RandomLogits;
using ::rwkv::testing::Restrict;
using ::rwkv::testing::Softmax;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

std::vector<float> LogitsOf(const std::vector<double>& probs) {
  std::vector<float> out;
  for (double p : probs) out.push_back(static_cast<float>(std::log(p)));
  return out;
}

TEST(SamplerTest, GreedyIsArgmaxAndConsumesNoRandomness) {
  SamplingParams p;
  p.temperature = 0.0f;
  Sampler s = MakeSampler(p, 5000);
  const auto state = s.rng().state();
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    const std::vector<float> logits = RandomLogits(5000, seed);
    EXPECT_EQ(s.Sample(logits), Argmax(logits));
  }
  EXPECT_EQ(s.rng().state(), state);
}

TEST(SamplerTest, GreedyTiesGoToLowestId) {
  SamplingParams p;
  p.temperature = 0.0f;
  Sampler s = MakeSampler(p, 6);
  EXPECT_EQ(s.Sample(std::vector<float>{1, 3, 2, 3, 3, 0}), 1);
}

TEST(SamplerTest, TinyTemperatureGivesArgmax) {
  const std::vector<float> logits = {1.0f, 2.0f, 2.1f, 0.5f, -1.0f};
  for (float t : {1e-3f, 1e-20f, 1e-40f}) {
    SamplingParams p;
    p.temperature = t;
    Sampler s = MakeSampler(p, 5);
    for (int i = 0; i < 1000; ++i) ASSERT_EQ(s.Sample(logits), 2) << "temperature " << t;
  }
}

TEST(SamplerTest, EmpiricalDistributionMatchesSoftmaxAtEachTemperature) {
  const std::vector<float> logits = {1.0f, 2.0f, 0.0f, -1.0f, 3.0f, 0.5f, -3.0f, 2.5f};
  for (float t : {1.0f, 0.5f, 2.0f, 20.0f}) {
    SamplingParams p;
    p.temperature = t;
    p.seed = 17;
    Sampler s = MakeSampler(p, 8);
    ExpectMatches(Histogram(s, logits, 100000), Softmax(logits, t));
  }
}

TEST(SamplerTest, LargeTemperatureFlattens) {
  const std::vector<float> logits = {4.0f, 2.0f, 0.0f, -2.0f};
  SamplingParams p;
  p.temperature = 100.0f;
  Sampler s = MakeSampler(p, 4);
  const std::vector<int> counts = Histogram(s, logits, 40000);
  for (int c : counts) EXPECT_NEAR(c / 40000.0, 0.25, 0.02);
}

TEST(SamplerTest, FullDrawAcrossBlocksMatchesSoftmax) {
  // Mass on tokens in different 1024-token blocks, the rest a low background.
  std::vector<float> logits(5000, -2.0f);
  logits[3] = 4.0f;
  logits[1023] = 3.0f;
  logits[1024] = 3.5f;
  logits[2048] = 2.0f;
  logits[4999] = 4.5f;
  SamplingParams p;
  p.seed = 5;
  Sampler s = MakeSampler(p, 5000);
  const std::vector<int> counts = Histogram(s, logits, 20000);
  const std::vector<double> expected = Softmax(logits);
  std::vector<int> hot = {3, 1023, 1024, 2048, 4999};
  int background = 20000;
  for (int id : hot) {
    background -= counts[id];
    EXPECT_NEAR(counts[id] / 20000.0, expected[id], 5 * std::sqrt(expected[id] * (1 - expected[id]) / 20000));
  }
  const double p_background = 4995 * expected[0];
  EXPECT_NEAR(background / 20000.0, p_background, 5 * std::sqrt(p_background * (1 - p_background) / 20000));
}

TEST(SamplerTest, TopK1IsGreedy) {
  SamplingParams p;
  p.top_k = 1;
  p.temperature = 5.0f;
  Sampler s = MakeSampler(p, 3000);
  for (uint64_t seed = 1; seed <= 200; ++seed) {
    const std::vector<float> logits = RandomLogits(3000, seed);
    ASSERT_EQ(s.Sample(logits), Argmax(logits));
  }
}

TEST(SamplerTest, TopKNeverLeavesTheTopKAndMatchesRenormalizedSoftmax) {
  const std::vector<float> logits = RandomLogits(1000, 99, 1.0);
  std::vector<int> order(1000);
  for (int i = 0; i < 1000; ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](int a, int b) { return logits[a] > logits[b]; });
  SamplingParams p;
  p.top_k = 10;
  p.seed = 3;
  Sampler s = MakeSampler(p, 1000);
  const std::vector<int> top(order.begin(), order.begin() + 10);
  ExpectMatches(Histogram(s, logits, 50000), Restrict(Softmax(logits), top));
}

TEST(SamplerTest, LargeTopKUsesSelectionAndStaysInside) {
  const std::vector<float> logits = RandomLogits(5000, 11, 0.5);
  std::vector<float> sorted = logits;
  std::sort(sorted.begin(), sorted.end(), std::greater<float>());
  const float kth = sorted[1999];
  SamplingParams p;
  p.top_k = 2000;
  p.temperature = 50.0f;  // nearly flat: the tail of the top-k is drawn often
  Sampler s = MakeSampler(p, 5000);
  int at_boundary_half = 0;
  for (int i = 0; i < 2000; ++i) {
    const int32_t t = s.Sample(logits);
    ASSERT_GE(logits[t], kth);
    at_boundary_half += logits[t] < sorted[999];
  }
  EXPECT_GT(at_boundary_half, 600);  // about half come from ranks 1000..1999
}

TEST(SamplerTest, TopKTiesAtTheBoundaryGoToLowerIds) {
  SamplingParams p;
  p.top_k = 2;
  Sampler s = MakeSampler(p, 5);
  const std::vector<float> logits = {1, 5, 1, 1, 1};
  std::set<int32_t> seen;
  for (int i = 0; i < 2000; ++i) seen.insert(s.Sample(logits));
  EXPECT_EQ(seen, (std::set<int32_t>{0, 1}));
}

TEST(SamplerTest, TopPKeepsTheSmallestPrefixReachingTheMass) {
  const std::vector<float> logits = LogitsOf({0.5, 0.25, 0.125, 0.125});
  struct Case {
    float top_p;
    std::vector<int> kept;
  };
  // 0.75 is reached exactly by {0, 1}; token 3 ties token 2 and loses (higher id).
  for (const Case& c :
       {Case{0.4f, {0}}, Case{0.5f, {0}}, Case{0.51f, {0, 1}}, Case{0.75f, {0, 1}}, Case{0.76f, {0, 1, 2}},
        Case{0.875f, {0, 1, 2}}, Case{0.876f, {0, 1, 2, 3}}, Case{1.0f, {0, 1, 2, 3}}}) {
    SamplingParams p;
    p.top_p = c.top_p;
    p.seed = 8;
    Sampler s = MakeSampler(p, 4);
    SCOPED_TRACE(c.top_p);
    ExpectMatches(Histogram(s, logits, 20000), Restrict(Softmax(logits), c.kept));
  }
}

TEST(SamplerTest, TopPOnLargeVocabularyCutsExactlyAndBreaksTiesById) {
  // 0.4 + 0.3 + 0.2 on three scattered ids; 0.1 spread evenly over the rest.
  constexpr int32_t kVocab = 65536;
  std::vector<double> probs(kVocab, 0.1 / (kVocab - 3));
  probs[40000] = 0.4;
  probs[7] = 0.3;
  probs[65535] = 0.2;
  const std::vector<float> logits = LogitsOf(probs);
  SamplingParams p;
  p.top_p = 0.89f;
  Sampler s = MakeSampler(p, kVocab);
  std::vector<int> kept = {40000, 7, 65535};
  ExpectMatches(Histogram(s, logits, 3000), Restrict(Softmax(logits), kept));

  // 0.91 needs 0.01 more: the background ties, so the lowest ids fill it
  // (about 6554 of them), never the high ones.
  p.top_p = 0.91f;
  Sampler s2 = MakeSampler(p, kVocab);
  int background = 0;
  constexpr int kDraws = 3000;
  for (int i = 0; i < kDraws; ++i) {
    const int32_t t = s2.Sample(logits);
    if (t == 40000 || t == 7 || t == 65535) continue;
    ++background;
    ASSERT_LT(t, 6700) << "tail token beyond the top_p boundary";
  }
  // Expected 0.011 of the draws, sd 0.0019.
  EXPECT_NEAR(static_cast<double>(background) / kDraws, 0.01 / 0.91, 0.0095);
}

TEST(SamplerTest, TopPIsRelativeToTopKSurvivors) {
  const std::vector<float> logits = LogitsOf({0.4, 0.3, 0.2, 0.1});
  SamplingParams p;
  p.top_p = 0.75f;
  // Over all four: 0.4 + 0.3 < 0.75, so token 2 is kept.
  Sampler all = MakeSampler(p, 4);
  ExpectMatches(Histogram(all, logits, 20000), Restrict(Softmax(logits), {0, 1, 2}));
  // Over the top 3 (renormalized 4/9, 3/9, 2/9): 7/9 >= 0.75 already.
  p.top_k = 3;
  Sampler k3 = MakeSampler(p, 4);
  ExpectMatches(Histogram(k3, logits, 20000), Restrict(Softmax(logits), {0, 1}));
}

TEST(SamplerTest, MinPDropsTokensBelowFractionOfMax) {
  const std::vector<float> logits = LogitsOf({0.5, 0.3, 0.15, 0.05});
  struct Case {
    float min_p;
    float temperature;
    int top_k;
    float top_p;
    std::vector<int> kept;
  };
  // At T=2 the probabilities are proportional to sqrt(p): ratios to the max
  // 1, 0.775, 0.548, 0.316.
  for (const Case& c :
       {Case{0.2f, 1, 0, 1, {0, 1, 2}}, Case{0.31f, 1, 0, 1, {0, 1}}, Case{1.0f, 1, 0, 1, {0}},
        Case{0.4f, 2, 0, 1, {0, 1, 2}}, Case{0.2f, 1, 3, 1, {0, 1, 2}}, Case{0.5f, 1, 3, 1, {0, 1}},
        Case{0.2f, 1, 0, 0.99f, {0, 1, 2}}, Case{0.5f, 1, 0, 0.99f, {0, 1}}}) {
    SamplingParams p;
    p.min_p = c.min_p;
    p.temperature = c.temperature;
    p.top_k = c.top_k;
    p.top_p = c.top_p;
    Sampler s = MakeSampler(p, 4);
    SCOPED_TRACE(::testing::Message()
                 << "min_p " << c.min_p << " T " << c.temperature << " k " << c.top_k << " p " << c.top_p);
    ExpectMatches(Histogram(s, logits, 20000), Restrict(Softmax(logits, c.temperature), c.kept));
  }
}

TEST(SamplerTest, SameSeedSameSequenceDifferentSeedDifferent) {
  const std::vector<float> logits = RandomLogits(1000, 4, 1.0);
  SamplingParams p;
  p.seed = 1234;
  p.top_p = 0.95f;
  Sampler a = MakeSampler(p, 1000);
  Sampler b = MakeSampler(p, 1000);
  p.seed = 1235;
  Sampler c = MakeSampler(p, 1000);
  int differ = 0;
  for (int i = 0; i < 1000; ++i) {
    const int32_t ta = a.Sample(logits);
    ASSERT_EQ(ta, b.Sample(logits)) << "draw " << i;
    differ += ta != c.Sample(logits);
  }
  EXPECT_GT(differ, 900);
}

TEST(SamplerTest, InterleavedSamplersMatchEachAlone) {
  const std::vector<float> la = RandomLogits(2000, 1);
  const std::vector<float> lb = RandomLogits(2000, 2);
  SamplingParams pa;
  pa.seed = 1;
  pa.presence_penalty = 0.5f;
  SamplingParams pb;
  pb.seed = 2;
  pb.top_k = 40;
  auto run_alone = [](const SamplingParams& p, const std::vector<float>& logits) {
    Sampler s = MakeSampler(p, 2000);
    std::vector<int32_t> out;
    for (int i = 0; i < 500; ++i) {
      out.push_back(s.Sample(logits));
      s.Accept(out.back());
    }
    return out;
  };
  const std::vector<int32_t> alone_a = run_alone(pa, la);
  const std::vector<int32_t> alone_b = run_alone(pb, lb);
  Sampler a = MakeSampler(pa, 2000);
  Sampler b = MakeSampler(pb, 2000);
  for (int i = 0; i < 500; ++i) {
    const int32_t tb = b.Sample(lb);  // b first, to be sure order does not matter
    b.Accept(tb);
    const int32_t ta = a.Sample(la);
    a.Accept(ta);
    ASSERT_EQ(ta, alone_a[i]);
    ASSERT_EQ(tb, alone_b[i]);
  }
}

TEST(SamplerTest, CopyForksTheStream) {
  const std::vector<float> logits = RandomLogits(500, 6, 1.0);
  Sampler a = MakeSampler(SamplingParams{}, 500);
  a.Sample(logits);
  Sampler b = a;
  for (int i = 0; i < 100; ++i) ASSERT_EQ(a.Sample(logits), b.Sample(logits));
}

TEST(SamplerTest, DegenerateLogitsStillGiveValidIds) {
  Sampler s = MakeSampler(SamplingParams{}, 4);
  EXPECT_EQ(s.Sample(std::vector<float>{-kInf, -kInf, -kInf, -kInf}), 0);
  EXPECT_EQ(s.Sample(std::vector<float>{kNaN, kNaN, kNaN, kNaN}), 0);
  for (int i = 0; i < 100; ++i) {
    const int32_t t = s.Sample(std::vector<float>{kNaN, 1.0f, kNaN, 1.0f});
    EXPECT_TRUE(t == 1 || t == 3);
  }
  EXPECT_EQ(s.Sample(std::vector<float>{0.0f, kInf, 5.0f, kInf}), 1);
  EXPECT_EQ(s.Sample(std::vector<float>{}), 0);
  // Shorter than the vocabulary: out-of-range biases are ignored.
  SamplingParams p;
  p.logit_bias = {{3, 50.0f}};
  Sampler short_logits = MakeSampler(p, 4);
  EXPECT_LT(short_logits.Sample(std::vector<float>{0.0f, 1.0f}), 2);
}

TEST(SamplerTest, RandomValidParamsNeverLeaveTheVocabulary) {
  Xoshiro256StarStar rng(77);
  auto uniform = [&](double lo, double hi) { return lo + (hi - lo) * rng.NextDouble(); };
  constexpr int32_t kVocab = 300;
  for (int iter = 0; iter < 3000; ++iter) {
    SamplingParams p;
    p.temperature = rng.Next() % 4 == 0 ? 0.0f : static_cast<float>(uniform(1e-6, 100));
    p.top_k = static_cast<int32_t>(rng.Next() % (kVocab + 1));
    p.top_p = static_cast<float>(uniform(1e-6, 1.0));
    if (rng.Next() % 3 == 0) p.top_p = 1.0f;
    p.min_p = rng.Next() % 2 ? 0.0f : static_cast<float>(uniform(0, 1));
    p.presence_penalty = static_cast<float>(uniform(-10, 10));
    p.frequency_penalty = static_cast<float>(uniform(-10, 10));
    p.penalty_decay = static_cast<float>(uniform(1e-6, 1));
    p.repetition_penalty = static_cast<float>(uniform(1, 10));
    for (int j = 0; j < 5; ++j) {
      p.logit_bias.push_back({static_cast<int32_t>(j * 60 + rng.Next() % 60),
                              rng.Next() % 2 ? -100.0f : static_cast<float>(uniform(-100, 100))});
    }
    p.seed = rng.Next();
    Sampler s = MakeSampler(p, kVocab);
    std::vector<float> logits = RandomLogits(kVocab, rng.Next(), uniform(0, 30));
    const uint64_t pattern = rng.Next() % 4;
    for (int32_t i = 0; i < kVocab; ++i) {
      if (pattern == 1 && i % 3 == 0) logits[i] = -kInf;
      if (pattern == 2 && i % 7 == 0) logits[i] = kNaN;
      if (pattern == 3 && i != 17) logits[i] = -kInf;
    }
    for (int step = 0; step < 5; ++step) {
      const int32_t t = s.Sample(logits);
      ASSERT_GE(t, 0);
      ASSERT_LT(t, kVocab);
      s.Accept(t);
    }
  }
}

// Not a benchmark gate: prints per-token cost at the production vocabulary
// size so regressions are visible in the test log.
TEST(SamplerTest, ReportsCostAtFullVocabulary) {
  constexpr int32_t kVocab = 65536;
  const std::vector<float> logits = RandomLogits(kVocab, 21, 3.0);
  struct Config {
    const char* name;
    SamplingParams params;
  };
  std::vector<Config> configs(6);
  configs[0].name = "greedy";
  configs[0].params.temperature = 0.0f;
  configs[1].name = "plain T=1";
  configs[2].name = "top_k=50";
  configs[2].params.top_k = 50;
  configs[3].name = "top_p=0.9";
  configs[3].params.top_p = 0.9f;
  configs[4].name = "top_k=50 top_p=0.9 min_p=0.05";
  configs[4].params.top_k = 50;
  configs[4].params.top_p = 0.9f;
  configs[4].params.min_p = 0.05f;
  configs[5].name = "top_p=0.9 + penalties";
  configs[5].params.top_p = 0.9f;
  configs[5].params.presence_penalty = 0.4f;
  configs[5].params.frequency_penalty = 0.4f;
  configs[5].params.penalty_decay = 0.996f;
  for (Config& c : configs) {
    Sampler s = MakeSampler(c.params, kVocab);
    double best_us = 1e30;  // best of 5 batches: the least disturbed by other load
    for (int batch = 0; batch < 5; ++batch) {
      constexpr int kIters = 20;
      const auto start = std::chrono::steady_clock::now();
      for (int i = 0; i < kIters; ++i) s.Accept(s.Sample(logits));
      const std::chrono::duration<double, std::micro> took = std::chrono::steady_clock::now() - start;
      best_us = std::min(best_us, took.count() / kIters);
    }
    std::printf("  Sample, vocab 65536, %-32s %8.1f us/token\n", c.name, best_us);
  }
}

}  // namespace
}  // namespace rwkv
