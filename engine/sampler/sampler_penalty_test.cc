// Tests for Sampler's logit adjustments (logit_bias, presence/frequency
// penalties with decay, repetition penalty), stop tokens and logprobs.
//
// Why: the adjusted logits are computed by hand for small vocabularies, so
// each knob's arithmetic (and their order) is pinned exactly, including the
// lazy decay scale over long runs.
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <utility>
#include <vector>

#include "engine/sampler/sampler.h"
#include "engine/sampler/sampler_test_util.h"
#include "gtest/gtest.h"

namespace rwkv {
namespace {

using ::rwkv::testing::MakeSampler;
using ::rwkv::testing::RandomLogits;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

std::vector<float> Adjusted(const Sampler& s, const std::vector<float>& logits) {
  std::vector<float> out(logits.size());
  s.ApplyLogitAdjustments(logits, absl::MakeSpan(out));
  return out;
}

TEST(SamplerPenaltyTest, PresenceAndFrequencyUseCounts) {
  SamplingParams p;
  p.presence_penalty = 0.5f;
  p.frequency_penalty = 0.25f;
  Sampler s = MakeSampler(p, 5);
  const std::vector<float> logits = {1, 2, 3, 4, 5};
  EXPECT_EQ(Adjusted(s, logits), logits);  // nothing generated yet
  s.Accept(4);
  s.Accept(4);
  s.Accept(2);
  EXPECT_FLOAT_EQ(s.PenaltyCount(4), 2.0f);
  EXPECT_FLOAT_EQ(s.PenaltyCount(2), 1.0f);
  EXPECT_FLOAT_EQ(s.PenaltyCount(0), 0.0f);
  // logit -= presence + count * frequency, for generated tokens only.
  const std::vector<float> expected = {1, 2, 3 - 0.5f - 0.25f, 4, 5 - 0.5f - 2 * 0.25f};
  const std::vector<float> got = Adjusted(s, logits);
  for (int i = 0; i < 5; ++i) EXPECT_FLOAT_EQ(got[i], expected[i]) << i;
  EXPECT_EQ(s.num_accepted(), 3);
}

TEST(SamplerPenaltyTest, PenaltiesChangeTheGreedyChoice) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.frequency_penalty = 1.0f;
  Sampler s = MakeSampler(p, 3);
  const std::vector<float> logits = {2.5f, 2.0f, 0.0f};
  EXPECT_EQ(s.Sample(logits), 0);
  s.Accept(0);  // 0 -> 1.5
  EXPECT_EQ(s.Sample(logits), 1);
  s.Accept(1);  // 1 -> 1.0
  EXPECT_EQ(s.Sample(logits), 0);
}

TEST(SamplerPenaltyTest, CountsDecayBeforeEachNewToken) {
  SamplingParams p;
  p.penalty_decay = 0.5f;
  p.frequency_penalty = 1.0f;
  p.presence_penalty = 0.1f;
  Sampler s = MakeSampler(p, 4);
  s.Accept(1);  // {1: 1}
  EXPECT_FLOAT_EQ(s.PenaltyCount(1), 1.0f);
  s.Accept(2);  // {1: 0.5, 2: 1}
  EXPECT_FLOAT_EQ(s.PenaltyCount(1), 0.5f);
  EXPECT_FLOAT_EQ(s.PenaltyCount(2), 1.0f);
  s.Accept(1);  // {1: 1.25, 2: 0.5}
  EXPECT_FLOAT_EQ(s.PenaltyCount(1), 1.25f);
  EXPECT_FLOAT_EQ(s.PenaltyCount(2), 0.5f);
  const std::vector<float> got = Adjusted(s, {0, 0, 0, 0});
  EXPECT_FLOAT_EQ(got[0], 0.0f);
  EXPECT_FLOAT_EQ(got[1], -(0.1f + 1.25f));
  EXPECT_FLOAT_EQ(got[2], -(0.1f + 0.5f));
  EXPECT_FLOAT_EQ(got[3], 0.0f);
}

TEST(SamplerPenaltyTest, LazyDecayScaleMatchesNaiveCountsOverLongRuns) {
  // decay 0.5 drives the lazy scale below its renormalization threshold many
  // times over 3000 tokens; ChatRWKV's decay over 20000.
  for (float decay : {0.5f, 0.996f}) {
    SamplingParams p;
    p.penalty_decay = decay;
    p.presence_penalty = 0.3f;
    Sampler s = MakeSampler(p, 8);
    std::map<int32_t, double> naive;
    const int steps = decay == 0.5f ? 3000 : 20000;
    for (int i = 0; i < steps; ++i) {
      const int32_t t = (i * 7 + i / 3) % 5;  // token 5..7 never generated
      for (auto& [id, c] : naive) c *= decay;
      naive[t] += 1.0;
      s.Accept(t);
    }
    for (int32_t id = 0; id < 8; ++id) {
      const double expected = naive.count(id) ? naive[id] : 0.0;
      EXPECT_NEAR(s.PenaltyCount(id), expected, 1e-5 * (1 + expected)) << "decay " << decay;
    }
  }
}

TEST(SamplerPenaltyTest, PresenceOutlivesADecayedCount) {
  SamplingParams p;
  p.penalty_decay = 1e-6f;
  p.presence_penalty = 2.0f;
  Sampler s = MakeSampler(p, 3);
  s.Accept(0);
  for (int i = 0; i < 200; ++i) s.Accept(1);
  EXPECT_FLOAT_EQ(s.PenaltyCount(0), 0.0f);           // decayed to nothing...
  EXPECT_FLOAT_EQ(Adjusted(s, {0, 0, 0})[0], -2.0f);  // ...but still present
}

TEST(SamplerPenaltyTest, RepetitionPenaltyDividesPositiveMultipliesNegative) {
  SamplingParams p;
  p.repetition_penalty = 2.0f;
  Sampler s = MakeSampler(p, 5);
  s.Accept(0);
  s.Accept(1);
  s.Accept(4);
  const std::vector<float> got = Adjusted(s, {2.0f, -2.0f, 0.5f, 3.0f, 0.0f});
  EXPECT_FLOAT_EQ(got[0], 1.0f);
  EXPECT_FLOAT_EQ(got[1], -4.0f);
  EXPECT_FLOAT_EQ(got[2], 0.5f);  // not generated
  EXPECT_FLOAT_EQ(got[3], 3.0f);
  EXPECT_FLOAT_EQ(got[4], 0.0f);
}

TEST(SamplerPenaltyTest, RepetitionAppliesAfterPresence) {
  SamplingParams p;
  p.presence_penalty = 1.0f;
  p.repetition_penalty = 2.0f;
  Sampler s = MakeSampler(p, 2);
  s.Accept(0);
  s.Accept(1);
  const std::vector<float> got = Adjusted(s, {2.0f, 0.5f});
  EXPECT_FLOAT_EQ(got[0], (2.0f - 1.0f) / 2.0f);
  EXPECT_FLOAT_EQ(got[1], (0.5f - 1.0f) * 2.0f);  // crossed zero, so multiplied
}

TEST(SamplerPenaltyTest, LogitBiasAddsForcesAndBans) {
  SamplingParams p;
  p.logit_bias = {{0, 1.5f}, {2, -100.0f}, {3, 100.0f}};
  Sampler s = MakeSampler(p, 5);
  const std::vector<float> got = Adjusted(s, {1.0f, 2.0f, 30.0f, -20.0f, kNaN});
  EXPECT_FLOAT_EQ(got[0], 2.5f);
  EXPECT_FLOAT_EQ(got[1], 2.0f);
  EXPECT_EQ(got[2], -kInf);  // -100 is a hard ban
  EXPECT_FLOAT_EQ(got[3], 80.0f);
  EXPECT_EQ(got[4], -kInf);  // NaN counts as -inf
  // Forced: +100 wins against a 30-logit favourite, greedy or sampled.
  for (int i = 0; i < 200; ++i) ASSERT_EQ(s.Sample(std::vector<float>{1, 2, 30, -20, 0}), 3);
}

TEST(SamplerPenaltyTest, BannedTokenIsNeverDrawnWhateverTheFilters) {
  SamplingParams p;
  p.logit_bias = {{5, -100.0f}};
  p.temperature = 100.0f;  // a finite -100 bias would be only -1 here
  for (int top_k : {0, 3}) {
    for (float top_p : {1.0f, 0.99f}) {
      p.top_k = top_k;
      p.top_p = top_p;
      Sampler s = MakeSampler(p, 8);
      const std::vector<float> logits = {0, 0, 0, 0, 0, 50, 0, 0};
      for (int i = 0; i < 2000; ++i) ASSERT_NE(s.Sample(logits), 5);
    }
  }
  p.temperature = 0.0f;
  Sampler greedy = MakeSampler(p, 8);
  EXPECT_EQ(greedy.Sample(std::vector<float>{0, 0, 0, 0, 0, 50, 1, 0}), 6);
}

TEST(SamplerPenaltyTest, AllBannedFallsBackToRawArgmax) {
  SamplingParams p;
  p.logit_bias = {{0, -100.0f}, {1, -100.0f}, {2, -100.0f}};
  Sampler s = MakeSampler(p, 3);
  EXPECT_EQ(s.Sample(std::vector<float>{1.0f, 3.0f, 2.0f}), 1);
  p.temperature = 0.0f;
  Sampler g = MakeSampler(p, 3);
  EXPECT_EQ(g.Sample(std::vector<float>{1.0f, 3.0f, 2.0f}), 1);
}

TEST(SamplerPenaltyTest, MaxTrackingSurvivesPenalizingTheMaximum) {
  // The raw maximum is penalized below another token: the sampler must not
  // keep using the stale maximum (top_k=1 is exact about it).
  SamplingParams p;
  p.top_k = 1;
  p.presence_penalty = 5.0f;
  Sampler s = MakeSampler(p, 4);
  s.Accept(2);
  EXPECT_EQ(s.Sample(std::vector<float>{1.0f, 3.0f, 4.0f, 0.0f}), 1);
  p.presence_penalty = -5.0f;  // and pushed above the raw maximum
  Sampler t = MakeSampler(p, 4);
  t.Accept(3);
  EXPECT_EQ(t.Sample(std::vector<float>{1.0f, 3.0f, 4.0f, 0.0f}), 3);
}

TEST(SamplerPenaltyTest, StopTokens) {
  SamplingParams p;
  p.stop_token_ids = {7, 0, 7};
  Sampler s = MakeSampler(p, 10);
  EXPECT_TRUE(s.IsStopToken(0));
  EXPECT_TRUE(s.IsStopToken(7));
  EXPECT_FALSE(s.IsStopToken(1));
  EXPECT_FALSE(s.IsStopToken(-1));
  EXPECT_FALSE(s.IsStopToken(10));
  Sampler none = MakeSampler(SamplingParams{}, 10);
  EXPECT_FALSE(none.IsStopToken(0));
}

TEST(SamplerPenaltyTest, AcceptIgnoresOutOfRangeIds) {
  Sampler s = MakeSampler(SamplingParams{}, 4);
  s.Accept(-1);
  s.Accept(4);
  EXPECT_EQ(s.num_accepted(), 0);
}

TEST(SamplerLogprobTest, TopLogprobsMatchDoubleLogSoftmax) {
  constexpr int32_t kVocab = 65536;
  const std::vector<float> logits = RandomLogits(kVocab, 3, 4.0);
  double max = -INFINITY;
  for (float v : logits) max = std::max(max, static_cast<double>(v));
  double z = 0;
  for (float v : logits) z += std::exp(v - max);
  const double lse = max + std::log(z);
  std::vector<std::pair<int32_t, float>> top;
  Sampler::TopLogprobs(logits, 20, &top);
  ASSERT_EQ(top.size(), 20u);
  std::vector<float> sorted = logits;
  std::sort(sorted.begin(), sorted.end(), std::greater<float>());
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(logits[top[i].first], sorted[i]) << i;
    EXPECT_NEAR(top[i].second, logits[top[i].first] - lse, 1e-5 * (1 + std::abs(sorted[i] - lse)));
    EXPECT_NEAR(Sampler::TokenLogprob(logits, top[i].first), top[i].second, 1e-6);
  }
  EXPECT_NEAR(Sampler::TokenLogprob(logits, 123), logits[123] - lse, 1e-4);
  EXPECT_EQ(Sampler::TokenLogprob(logits, kVocab), -kInf);
}

TEST(SamplerLogprobTest, TiesAndShortVocabulary) {
  std::vector<std::pair<int32_t, float>> top;
  Sampler::TopLogprobs(std::vector<float>{1.0f, 2.0f, 1.0f, 2.0f}, 10, &top);
  ASSERT_EQ(top.size(), 4u);
  EXPECT_EQ(top[0].first, 1);
  EXPECT_EQ(top[1].first, 3);
  EXPECT_EQ(top[2].first, 0);
  EXPECT_EQ(top[3].first, 2);
  double total = 0;
  for (const auto& [id, lp] : top) total += std::exp(lp);
  EXPECT_NEAR(total, 1.0, 1e-6);
  Sampler::TopLogprobs(std::vector<float>{1.0f, 2.0f}, 0, &top);
  EXPECT_TRUE(top.empty());
  Sampler::TopLogprobs(std::vector<float>{kNaN, -kInf, 0.0f}, 3, &top);
  ASSERT_EQ(top.size(), 3u);
  EXPECT_EQ(top[0], (std::pair<int32_t, float>{2, 0.0f}));
  EXPECT_EQ(top[1].second, -kInf);
}

}  // namespace
}  // namespace rwkv
