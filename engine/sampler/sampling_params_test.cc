// Tests for ValidateSamplingParams: every parameter's valid edges pass, and
// every invalid value (including NaN and infinities) is rejected with a
// message naming the parameter and its range.
#include "engine/sampler/sampling_params.h"

#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"

namespace rwkv {
namespace {

constexpr int32_t kVocab = 1000;
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

TEST(ValidateSamplingParamsTest, DefaultsAreValid) {
  EXPECT_TRUE(ValidateSamplingParams(SamplingParams{}, kVocab).ok());
}

TEST(ValidateSamplingParamsTest, EdgesOfEveryRangeAreValid) {
  std::vector<std::function<void(SamplingParams&)>> edits = {
      [](SamplingParams& p) { p.temperature = 0.0f; },
      [](SamplingParams& p) { p.temperature = 100.0f; },
      [](SamplingParams& p) { p.temperature = 1e-30f; },
      [](SamplingParams& p) { p.top_k = kVocab; },
      [](SamplingParams& p) { p.top_k = 1; },
      [](SamplingParams& p) { p.top_p = 1e-7f; },
      [](SamplingParams& p) { p.top_p = 1.0f; },
      [](SamplingParams& p) { p.min_p = 0.0f; },
      [](SamplingParams& p) { p.min_p = 1.0f; },
      [](SamplingParams& p) { p.presence_penalty = -10.0f; },
      [](SamplingParams& p) { p.presence_penalty = 10.0f; },
      [](SamplingParams& p) { p.frequency_penalty = -10.0f; },
      [](SamplingParams& p) { p.frequency_penalty = 10.0f; },
      [](SamplingParams& p) { p.penalty_decay = 1e-6f; },
      [](SamplingParams& p) { p.penalty_decay = 1.0f; },
      [](SamplingParams& p) { p.repetition_penalty = 1.0f; },
      [](SamplingParams& p) { p.repetition_penalty = 10.0f; },
      [](SamplingParams& p) {
        p.logit_bias = {{0, -100.0f}, {kVocab - 1, 100.0f}};
      },
      [](SamplingParams& p) {
        p.stop_token_ids = {0, kVocab - 1, 0};
      },
      [](SamplingParams& p) { p.stop_strings = std::vector<std::string>(16, std::string(256, 'x')); },
      [](SamplingParams& p) { p.seed = ~uint64_t{0}; },
  };
  for (size_t i = 0; i < edits.size(); ++i) {
    SamplingParams p;
    edits[i](p);
    EXPECT_TRUE(ValidateSamplingParams(p, kVocab).ok())
        << "edit " << i << ": " << ValidateSamplingParams(p, kVocab);
  }
}

struct InvalidCase {
  std::string name;
  std::function<void(SamplingParams&)> edit;
  std::string expected_message;  // a substring of the error message
};

TEST(ValidateSamplingParamsTest, EveryInvalidValueNamesItsParameter) {
  const std::vector<InvalidCase> cases = {
      {"temperature<0", [](SamplingParams& p) { p.temperature = -0.1f; }, "temperature must be in [0, 100]"},
      {"temperature>100", [](SamplingParams& p) { p.temperature = 100.5f; },
       "temperature must be in [0, 100] (0 = greedy), got 100.5"},
      {"temperature nan", [](SamplingParams& p) { p.temperature = kNaN; },
       "temperature must be in [0, 100] (0 = greedy), got nan"},
      {"temperature inf", [](SamplingParams& p) { p.temperature = kInf; }, "temperature"},
      {"top_k<0", [](SamplingParams& p) { p.top_k = -1; }, "top_k must be in [0, 1000] (0 = off), got -1"},
      {"top_k>vocab", [](SamplingParams& p) { p.top_k = kVocab + 1; }, "top_k must be in [0, 1000]"},
      {"top_p=0", [](SamplingParams& p) { p.top_p = 0.0f; }, "top_p must be in (0, 1], got 0"},
      {"top_p>1", [](SamplingParams& p) { p.top_p = 1.5f; }, "top_p must be in (0, 1], got 1.5"},
      {"top_p<0", [](SamplingParams& p) { p.top_p = -0.5f; }, "top_p must be in (0, 1]"},
      {"top_p nan", [](SamplingParams& p) { p.top_p = kNaN; }, "top_p must be in (0, 1], got nan"},
      {"top_p -inf", [](SamplingParams& p) { p.top_p = -kInf; }, "top_p"},
      {"min_p<0", [](SamplingParams& p) { p.min_p = -0.01f; }, "min_p must be in [0, 1]"},
      {"min_p>1", [](SamplingParams& p) { p.min_p = 1.01f; }, "min_p must be in [0, 1]"},
      {"min_p nan", [](SamplingParams& p) { p.min_p = kNaN; }, "min_p must be in [0, 1], got nan"},
      {"presence<-10", [](SamplingParams& p) { p.presence_penalty = -10.5f; },
       "presence_penalty must be in [-10, 10], got -10.5"},
      {"presence>10", [](SamplingParams& p) { p.presence_penalty = 11.0f; }, "presence_penalty"},
      {"presence nan", [](SamplingParams& p) { p.presence_penalty = kNaN; }, "presence_penalty"},
      {"presence inf", [](SamplingParams& p) { p.presence_penalty = kInf; }, "presence_penalty"},
      {"frequency<-10", [](SamplingParams& p) { p.frequency_penalty = -11.0f; },
       "frequency_penalty must be in [-10, 10]"},
      {"frequency>10", [](SamplingParams& p) { p.frequency_penalty = 10.01f; }, "frequency_penalty"},
      {"frequency nan", [](SamplingParams& p) { p.frequency_penalty = kNaN; }, "frequency_penalty"},
      {"decay=0", [](SamplingParams& p) { p.penalty_decay = 0.0f; },
       "penalty_decay must be in (0, 1], got 0"},
      {"decay>1", [](SamplingParams& p) { p.penalty_decay = 1.001f; }, "penalty_decay"},
      {"decay<0", [](SamplingParams& p) { p.penalty_decay = -0.5f; }, "penalty_decay"},
      {"decay nan", [](SamplingParams& p) { p.penalty_decay = kNaN; }, "penalty_decay"},
      {"repetition<1", [](SamplingParams& p) { p.repetition_penalty = 0.9f; },
       "repetition_penalty must be in [1, 10], got 0.9"},
      {"repetition=0", [](SamplingParams& p) { p.repetition_penalty = 0.0f; }, "repetition_penalty"},
      {"repetition>10", [](SamplingParams& p) { p.repetition_penalty = 10.5f; }, "repetition_penalty"},
      {"repetition nan", [](SamplingParams& p) { p.repetition_penalty = kNaN; }, "repetition_penalty"},
      {"repetition inf", [](SamplingParams& p) { p.repetition_penalty = kInf; }, "repetition_penalty"},
      {"bias id<0",
       [](SamplingParams& p) {
         p.logit_bias = {{1, 1.0f}, {-1, 1.0f}};
       },
       "logit_bias[1] token id must be in [0, 1000), got -1"},
      {"bias id>=vocab",
       [](SamplingParams& p) {
         p.logit_bias = {{kVocab, 1.0f}};
       },
       "logit_bias[0] token id must be in [0, 1000), got 1000"},
      {"bias<-100",
       [](SamplingParams& p) {
         p.logit_bias = {{3, -100.5f}};
       },
       "logit_bias[0] bias must be in [-100, 100], got -100.5"},
      {"bias>100",
       [](SamplingParams& p) {
         p.logit_bias = {{3, 101.0f}};
       },
       "logit_bias[0] bias must be in [-100, 100]"},
      {"bias nan",
       [](SamplingParams& p) {
         p.logit_bias = {{3, kNaN}};
       },
       "logit_bias[0] bias must be in [-100, 100], got nan"},
      {"bias -inf",
       [](SamplingParams& p) {
         p.logit_bias = {{3, -kInf}};
       },
       "logit_bias[0] bias"},
      {"bias duplicate",
       [](SamplingParams& p) {
         p.logit_bias = {{3, 1.0f}, {4, 1.0f}, {3, 2.0f}};
       },
       "logit_bias has a duplicate token id 3 at index 2"},
      {"stop id<0",
       [](SamplingParams& p) {
         p.stop_token_ids = {0, -5};
       },
       "stop_token_ids[1] must be in [0, 1000), got -5"},
      {"stop id>=vocab", [](SamplingParams& p) { p.stop_token_ids = {kVocab}; },
       "stop_token_ids[0] must be in [0, 1000)"},
      {"too many stop strings", [](SamplingParams& p) { p.stop_strings = std::vector<std::string>(17, "x"); },
       "stop_strings must have at most 16 entries, got 17"},
      {"empty stop string",
       [](SamplingParams& p) {
         p.stop_strings = {"a", ""};
       },
       "stop_strings[1] must be non-empty"},
      {"long stop string", [](SamplingParams& p) { p.stop_strings = {std::string(257, 'x')}; },
       "stop_strings[0] must be at most 256 bytes, got 257"},
  };
  for (const InvalidCase& c : cases) {
    SamplingParams p;
    c.edit(p);
    const absl::Status st = ValidateSamplingParams(p, kVocab);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_NE(std::string(st.message()).find(c.expected_message), std::string::npos)
        << c.name << ": got \"" << st.message() << "\"";
  }
}

TEST(ValidateSamplingParamsTest, RejectsNonPositiveVocab) {
  const absl::Status st = ValidateSamplingParams(SamplingParams{}, 0);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(st.message()).find("vocab_size"), std::string::npos);
}

}  // namespace
}  // namespace rwkv
