// Tests for Sampler::PrepareDeviceSample / FinishDeviceSample, the host half
// of sampling on a device.
//
// Why: the device applies the spec's adjustments and picks with the spec's u;
// it can only agree with Sample if (1) the adjustments reproduce
// ApplyLogitAdjustments bit for bit (bias, bans, penalties with decay,
// repetition, tokens with both) and (2) the draws are the very ones Sample
// consumes, including the cases where Sample draws nothing (greedy, every
// token banned). Both are checked here without a GPU; the device side is
// checked against Sample in engine/model/cuda_sample_test.cc.
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "engine/sampler/sampler.h"
#include "engine/sampler/sampler_test_util.h"
#include "gtest/gtest.h"

namespace rwkv {
namespace {

using ::rwkv::testing::ApplySpecAdjustments;
using ::rwkv::testing::MakeSampler;
using ::rwkv::testing::RandomLogits;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

void ExpectSameBits(const std::vector<float>& got, const std::vector<float>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    // Same value, or both NaN (never expected here: adjusted logits have none).
    EXPECT_TRUE(got[i] == want[i] || (std::isnan(got[i]) && std::isnan(want[i])))
        << "token " << i << ": spec gives " << got[i] << ", ApplyLogitAdjustments " << want[i];
  }
}

TEST(SamplerDeviceSpecTest, FiltersAndTemperatureAreCopied) {
  SamplingParams p;
  p.temperature = 0.7f;
  p.top_k = 40;
  p.top_p = 0.9f;
  p.min_p = 0.05f;
  Sampler s = MakeSampler(p, 100);
  SampleSpec spec;
  s.PrepareDeviceSample(&spec);
  EXPECT_EQ(spec.temperature, 0.7f);
  EXPECT_EQ(spec.inv_temperature, 1.0f / 0.7f);
  EXPECT_EQ(spec.top_k, 40);
  EXPECT_EQ(spec.top_p, 0.9f);
  EXPECT_EQ(spec.min_p, 0.05f);
  EXPECT_TRUE(spec.adjustments.empty());
  EXPECT_GE(spec.u, 0.0);
  EXPECT_LT(spec.u, 1.0);
}

TEST(SamplerDeviceSpecTest, AdjustmentsReproduceApplyLogitAdjustmentsBitForBit) {
  SamplingParams p;
  p.presence_penalty = 0.37f;
  p.frequency_penalty = 0.61f;
  p.penalty_decay = 0.93f;
  p.repetition_penalty = 1.3f;
  // 5: bias only; 7: banned and generated; 9: bias and generated; 11: ban only.
  p.logit_bias = {{9, 1.5f}, {5, 2.25f}, {7, -100.0f}, {11, -100.0f}, {13, -3.0f}};
  const int32_t vocab = 300;
  Sampler s = MakeSampler(p, vocab);
  std::vector<float> logits = RandomLogits(vocab, 7);
  logits[20] = kNaN;
  logits[21] = kInf;
  logits[22] = -kInf;
  logits[13] = kInf;  // +inf with a negative bias stays +inf
  logits[30] = 0.0f;  // repetition on a zero
  logits[31] = -0.0f;
  for (int32_t t : {9, 7, 30, 31, 20, 21, 22, 9, 9, 100, 250, 299, 9, 100}) s.Accept(t);
  SampleSpec spec;
  s.PrepareDeviceSample(&spec);
  // One entry per token, ascending.
  for (size_t i = 1; i < spec.adjustments.size(); ++i) {
    EXPECT_LT(spec.adjustments[i - 1].token, spec.adjustments[i].token);
  }
  // 5 bias entries + 10 distinct generated tokens, 2 of which (7, 9) have a bias.
  EXPECT_EQ(spec.adjustments.size(), 5u + 10u - 2u);
  std::vector<float> want(logits.size());
  s.ApplyLogitAdjustments(logits, absl::MakeSpan(want));
  ExpectSameBits(ApplySpecAdjustments(spec, logits), want);
}

TEST(SamplerDeviceSpecTest, NoPenaltyEntriesWhenPenaltiesAreOff) {
  SamplingParams p;
  p.logit_bias = {{3, 1.0f}};
  Sampler s = MakeSampler(p, 10);
  s.Accept(4);
  s.Accept(3);
  SampleSpec spec;
  s.PrepareDeviceSample(&spec);
  ASSERT_EQ(spec.adjustments.size(), 1u);
  EXPECT_EQ(spec.adjustments[0].token, 3);
  EXPECT_EQ(spec.adjustments[0].bias, 1.0f);
  EXPECT_EQ(spec.adjustments[0].penalty, 0.0f);
  EXPECT_EQ(spec.adjustments[0].repetition, 1.0f);
}

// Two samplers with one seed: one samples on the host, the other prepares
// device specs (its picks forced to the host's tokens); their PRNGs must stay
// in lockstep, and each u must be the next double of the seed's stream.
void ExpectSameDrawStream(const SamplingParams& p, const std::vector<std::vector<float>>& rows) {
  const int32_t vocab = static_cast<int32_t>(rows[0].size());
  Sampler host = MakeSampler(p, vocab);
  Sampler device = MakeSampler(p, vocab);
  Xoshiro256StarStar stream(p.seed);
  for (size_t step = 0; step < rows.size(); ++step) {
    SampleSpec spec;
    device.PrepareDeviceSample(&spec);
    const auto before = host.rng().state();
    const int32_t tok = host.Sample(rows[step]);
    const bool host_drew = host.rng().state() != before;
    if (host_drew) {
      EXPECT_EQ(spec.u, stream.NextDouble()) << "step " << step;
    }
    device.FinishDeviceSample({tok, 0.0f, host_drew});
    EXPECT_EQ(device.rng().state(), host.rng().state()) << "step " << step;
    host.Accept(tok);
    device.Accept(tok);
  }
}

TEST(SamplerDeviceSpecTest, DrawsMatchSampleStochastic) {
  SamplingParams p;
  p.temperature = 0.8f;
  p.top_p = 0.95f;
  p.seed = 1234;
  std::vector<std::vector<float>> rows;
  for (int i = 0; i < 20; ++i) rows.push_back(RandomLogits(64, 100 + i));
  ExpectSameDrawStream(p, rows);
}

TEST(SamplerDeviceSpecTest, GreedyConsumesNoDraw) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.seed = 99;
  Sampler s = MakeSampler(p, 16);
  const auto before = s.rng().state();
  SampleSpec spec;
  s.PrepareDeviceSample(&spec);
  s.FinishDeviceSample({3, 0.0f, false});
  EXPECT_EQ(s.rng().state(), before);
  std::vector<std::vector<float>> rows = {RandomLogits(16, 1), RandomLogits(16, 2)};
  ExpectSameDrawStream(p, rows);
}

TEST(SamplerDeviceSpecTest, AllBannedRowGivesTheDrawBack) {
  // Every finite token banned: Sample returns the raw argmax without a draw;
  // the device reports used_draw = false and the draw is put back.
  SamplingParams p;
  p.temperature = 1.0f;
  p.seed = 5;
  for (int32_t t = 0; t < 8; ++t) p.logit_bias.push_back({t, -100.0f});
  std::vector<std::vector<float>> rows = {RandomLogits(8, 3), RandomLogits(8, 4), RandomLogits(8, 5)};
  ExpectSameDrawStream(p, rows);
  Sampler s = MakeSampler(p, 8);
  const auto before = s.rng().state();
  SampleSpec spec;
  s.PrepareDeviceSample(&spec);
  EXPECT_NE(s.rng().state(), before);  // drawn...
  s.FinishDeviceSample({0, 0.0f, false});
  EXPECT_EQ(s.rng().state(), before);  // ...and given back
}

TEST(SamplerDeviceSpecTest, UsedDrawIsKept) {
  SamplingParams p;
  p.seed = 17;
  Sampler s = MakeSampler(p, 8);
  SampleSpec spec;
  s.PrepareDeviceSample(&spec);
  const auto after = s.rng().state();
  s.FinishDeviceSample({1, 0.0f, true});
  EXPECT_EQ(s.rng().state(), after);
  Xoshiro256StarStar stream(17);
  EXPECT_EQ(spec.u, stream.NextDouble());
}

// The host twin of the device sampler: Prepare + SampleSpecOnHost must be
// Sample, token for token and draw for draw, over every filter path
// (greedy, full, top_k, top_p with few and many candidates, min_p), with
// penalties and bans, and on rows with NaN, +inf and every token banned.
TEST(SamplerDeviceSpecTest, SampleSpecOnHostIsSample) {
  struct Case {
    float temperature;
    int32_t top_k;
    float top_p;
    float min_p;
  };
  const Case cases[] = {{0, 0, 1, 0},      {1, 0, 1, 0},      {0.7f, 0, 1, 0.05f}, {1, 40, 1, 0},
                        {1.3f, 40, 0.9f, 0.02f}, {1, 0, 0.9f, 0}, {0.5f, 0, 0.5f, 0}, {2.5f, 0, 0.99f, 0},
                        {1, 3000, 0.8f, 0}, {1, 4096, 0.3f, 0.1f}};
  const int32_t vocab = 4096;
  int checked = 0;
  for (const Case& c : cases) {
    SamplingParams p;
    p.temperature = c.temperature;
    p.top_k = c.top_k;
    p.top_p = c.top_p;
    p.min_p = c.min_p;
    p.presence_penalty = 0.3f;
    p.frequency_penalty = 0.2f;
    p.repetition_penalty = 1.2f;
    p.penalty_decay = 0.99f;
    p.logit_bias = {{3, 2.0f}, {4, -100.0f}};
    p.seed = static_cast<uint64_t>(checked) + 1;
    Sampler host = MakeSampler(p, vocab);
    Sampler device = MakeSampler(p, vocab);
    for (int step = 0; step < 12; ++step) {
      std::vector<float> logits = RandomLogits(vocab, 1000 + step, step % 3 == 0 ? 1.0 : 4.0);
      if (step == 5) logits[17] = kNaN;
      if (step == 7) logits[99] = kInf;
      if (step == 9) logits.assign(vocab, kNaN);
      SampleSpec spec;
      device.PrepareDeviceSample(&spec);
      const SampledToken got = Sampler::SampleSpecOnHost(spec, logits);
      device.FinishDeviceSample(got);
      const int32_t want = host.Sample(logits);
      ASSERT_EQ(got.token, want) << "case t=" << c.temperature << " k=" << c.top_k << " p=" << c.top_p
                                 << " min_p=" << c.min_p << " step " << step;
      ASSERT_EQ(device.rng().state(), host.rng().state()) << "step " << step;
      const float lp = Sampler::TokenLogprob(logits, want);
      EXPECT_TRUE(got.logprob == lp || (std::isinf(lp) && got.logprob == lp)) << got.logprob << " vs " << lp;
      host.Accept(want);
      device.Accept(want);
      ++checked;
    }
  }
  EXPECT_EQ(checked, 120);
}

}  // namespace
}  // namespace rwkv
