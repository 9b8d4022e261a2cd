// Flag parsing of rwkv-infer: values, defaults and the errors a user sees.
#include "tools/infer_flags.h"

#include "gtest/gtest.h"

namespace rwkv {
namespace {

absl::StatusOr<InferFlags> Parse(std::vector<std::string> a) { return ParseInferFlags(a); }

TEST(InferFlagsTest, ParsesEverything) {
  auto f = Parse({"--model", "synthetic:tiny", "--tokens", "1,2,3", "--max-tokens=5", "--threads", "2",
                  "--temperature", "0.5", "--top-k", "10", "--top-p", "0.9", "--min-p", "0.05",
                  "--presence-penalty", "0.3", "--frequency-penalty", "0.2", "--penalty-decay", "0.996",
                  "--repetition-penalty", "1.1", "--logit-bias", "5:-2.5", "--stop-token", "0", "--stop",
                  "\n\n", "--seed", "42", "--dump-logits", "/tmp/x"});
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->model, "synthetic:tiny");
  EXPECT_EQ(*f->tokens, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(f->max_tokens, 5);
  EXPECT_EQ(f->threads, 2);
  EXPECT_FLOAT_EQ(f->sampling.temperature, 0.5f);
  EXPECT_EQ(f->sampling.top_k, 10);
  EXPECT_FLOAT_EQ(f->sampling.top_p, 0.9f);
  EXPECT_FLOAT_EQ(f->sampling.min_p, 0.05f);
  EXPECT_FLOAT_EQ(f->sampling.presence_penalty, 0.3f);
  EXPECT_FLOAT_EQ(f->sampling.frequency_penalty, 0.2f);
  EXPECT_FLOAT_EQ(f->sampling.penalty_decay, 0.996f);
  EXPECT_FLOAT_EQ(f->sampling.repetition_penalty, 1.1f);
  ASSERT_EQ(f->sampling.logit_bias.size(), 1u);
  EXPECT_EQ(f->sampling.logit_bias[0].first, 5);
  EXPECT_FLOAT_EQ(f->sampling.logit_bias[0].second, -2.5f);
  EXPECT_EQ(f->sampling.stop_token_ids, (std::vector<int32_t>{0}));
  EXPECT_EQ(f->sampling.stop_strings, (std::vector<std::string>{"\n\n"}));
  EXPECT_EQ(f->sampling.seed, 42u);
  EXPECT_EQ(f->dump_logits, "/tmp/x");
}

TEST(InferFlagsTest, StateDtype) {
  auto d = Parse({"--model", "synthetic:tiny"});
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->state_dtype, "fp32");
  auto f = Parse({"--model", "synthetic:tiny", "--state-dtype", "fp16"});
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->state_dtype, "fp16");
  auto bad = Parse({"--state-dtype=f8"});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("--state-dtype"), std::string::npos) << bad.status();
}

TEST(InferFlagsTest, ErrorsNameTheFlag) {
  struct Case {
    std::vector<std::string> args;
    std::string needle;
  };
  const Case cases[] = {
      {{"--model", "m", "--max-tokens", "-1"}, "--max-tokens"},
      {{"--model", "m", "--max-tokens"}, "missing value"},
      {{"--model", "m", "--temperature", "hot"}, "--temperature"},
      {{"--model", "m", "--temperature", "nan"}, "--temperature"},
      {{"--model", "m", "--tokens", "1,x"}, "--tokens"},
      {{"--model", "m", "--tokens", "-3"}, "--tokens"},
      {{"--model", "m", "--logit-bias", "5"}, "--logit-bias"},
      {{"--model", "m", "--seed", "-1"}, "--seed"},
      {{"--model", "m", "--threads", "0"}, "--threads"},
      {{"--model", "m", "--bogus"}, "unknown flag"},
      {{"--model", "m", "--prompt", "a", "--prompt-file", "f"}, "at most one"},
      {{"--model", "m", "--vocab", "v", "--byte-vocab"}, "not both"},
      {{"--tokenize", "--prompt", "a"}, "needs a vocabulary"},
      {{"--tokenize", "--byte-vocab"}, "needs --prompt"},
      {{"--tokens", "1"}, "--model is required"},
      {{"--model", "m", "--byte-vocab=1"}, "takes no value"},
      {{"--model", "m", "--cpu-gemm", "mkl"}, "--cpu-gemm"},
  };
  for (const Case& c : cases) {
    auto f = Parse(c.args);
    ASSERT_FALSE(f.ok()) << c.needle;
    EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(f.status().message().find(c.needle), std::string::npos) << f.status();
  }
}

TEST(InferFlagsTest, TokenizeNeedsNoModel) {
  auto f = Parse({"--tokenize", "--byte-vocab", "--prompt", "hi"});
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_TRUE(f->tokenize);
  EXPECT_TRUE(f->model.empty());
}

}  // namespace
}  // namespace rwkv
