// Tests of rwkv-server's flag parsing.
#include "server/server_flags.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace rwkv {
namespace {

using ::testing::HasSubstr;

TEST(ServerFlagsTest, Defaults) {
  auto f = ParseServerFlags({});
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_TRUE(f->model.empty());
  EXPECT_EQ(f->listen, "127.0.0.1:50051");
  EXPECT_EQ(f->metrics_listen, "127.0.0.1:9090");
  EXPECT_EQ(f->backend, "auto");
  EXPECT_EQ(f->threads, 0);
  EXPECT_EQ(f->drain_seconds, 30);
  EXPECT_FALSE(f->byte_vocab);
  EXPECT_FALSE(f->help);
  const EngineConfig defaults;
  EXPECT_EQ(f->engine.state_slots, defaults.state_slots);
  EXPECT_EQ(f->engine.max_batch, defaults.max_batch);
}

TEST(ServerFlagsTest, EveryFlag) {
  auto f = ParseServerFlags({"--model",
                             "synthetic:tiny",
                             "--byte-vocab",
                             "--listen=127.0.0.1:0",
                             "--metrics-listen",
                             "off",
                             "--state-dir",
                             "/tmp/s",
                             "--max-sessions",
                             "10",
                             "--max-batch",
                             "4",
                             "--backend",
                             "cpu",
                             "--threads",
                             "2",
                             "--state-slots",
                             "8",
                             "--max-queue",
                             "3",
                             "--prefill-chunk",
                             "16",
                             "--step-tokens",
                             "64",
                             "--max-prompt-tokens",
                             "1000",
                             "--drain-seconds",
                             "2.5"});
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->model, "synthetic:tiny");
  EXPECT_TRUE(f->byte_vocab);
  EXPECT_EQ(f->listen, "127.0.0.1:0");
  EXPECT_EQ(f->metrics_listen, "off");
  EXPECT_EQ(f->state_dir, "/tmp/s");
  EXPECT_EQ(f->engine.max_sessions, 10);
  EXPECT_EQ(f->engine.max_batch, 4);
  EXPECT_EQ(f->backend, "cpu");
  EXPECT_EQ(f->threads, 2);
  EXPECT_EQ(f->engine.state_slots, 8);
  EXPECT_TRUE(f->state_slots_given);
  EXPECT_EQ(f->engine.max_queue, 3);
  EXPECT_EQ(f->engine.prefill_chunk, 16);
  EXPECT_EQ(f->engine.step_token_budget, 64);
  EXPECT_EQ(f->engine.max_prompt_tokens, 1000);
  EXPECT_EQ(f->drain_seconds, 2.5);
}

TEST(ServerFlagsTest, StatePoolFromMemoryBudget) {
  auto f = ParseServerFlags({"--state-memory-mb", "2048", "--offload-memory-mb", "100"});
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->state_memory_mb, 2048);
  EXPECT_FALSE(f->state_slots_given);
  EXPECT_EQ(f->engine.host_offload_bytes, int64_t{100} << 20);
  auto bad = ParseServerFlags({"--state-memory-mb", "0"});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("--state-memory-mb"), std::string::npos);
}

TEST(ServerFlagsTest, StateDtypeAndSlotsForTheBudget) {
  auto d = ParseServerFlags({});
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->state_dtype, "fp32");
  auto f = ParseServerFlags({"--state-dtype", "fp16", "--state-memory-mb", "100", "--max-sessions", "1000"});
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->state_dtype, "fp16");
  // 0.1B: an fp32 slot is 2433024 bytes (43 fit in 100 MiB), an fp16 one 1253376 (83 fit).
  EXPECT_EQ(*StateSlotsFor(*f, 2433024), 43);
  EXPECT_EQ(*StateSlotsFor(*f, 1253376), 83);
  f->engine.max_sessions = 50;
  EXPECT_EQ(*StateSlotsFor(*f, 1253376), 50);
  auto none = StateSlotsFor(*f, int64_t{101} << 20);
  ASSERT_FALSE(none.ok());
  EXPECT_THAT(std::string(none.status().message()), HasSubstr("holds no session: one fp16 state"));
  auto fixed = ParseServerFlags({"--state-slots", "7", "--state-dtype=fp32"});
  ASSERT_TRUE(fixed.ok());
  EXPECT_EQ(*StateSlotsFor(*fixed, int64_t{1} << 40), 7);
  auto bad = ParseServerFlags({"--state-dtype", "bf16"});
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("--state-dtype"));
  EXPECT_THAT(ServerUsage(), HasSubstr("--state-dtype"));
}

TEST(ServerFlagsTest, Help) {
  auto f = ParseServerFlags({"--help"});
  ASSERT_TRUE(f.ok());
  EXPECT_TRUE(f->help);
  EXPECT_THAT(ServerUsage(), HasSubstr("--drain-seconds"));
}

TEST(ServerFlagsTest, Errors) {
  const std::vector<std::vector<std::string>> bad = {
      {"--model"},                           // missing value
      {"--nope"},                            // unknown
      {"--max-batch", "0"},                  // below 1
      {"--max-batch", "x"},                  // not a number
      {"--threads", "-1"},                   // below 0
      {"--state-slots", "99999999999"},      // overflow
      {"--drain-seconds", "-1"},             // negative
      {"--drain-seconds", "nan"},            // not finite
      {"--backend", "tpu"},                  // unknown backend
      {"--vocab", "v.txt", "--byte-vocab"},  // conflicting vocabularies
      {"--byte-vocab=yes"},                  // takes no value
      {"--listen", ""},                      // empty
  };
  for (const auto& args : bad) {
    auto f = ParseServerFlags(args);
    EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument) << args[0];
  }
  auto f = ParseServerFlags({"--max-batch", "zero"});
  EXPECT_THAT(f.status().message(), HasSubstr("--max-batch"));
}

TEST(ServerFlagsTest, CudaIsParsedAndRejectedLater) {
  // The parser accepts the name; the binary reports "CUDA backend not built yet".
  auto f = ParseServerFlags({"--backend", "cuda"});
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->backend, "cuda");
}

}  // namespace
}  // namespace rwkv
