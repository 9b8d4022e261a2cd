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
  // Prompts beside decoding sessions: no cap beyond --step-tokens.
  EXPECT_EQ(f->engine.mixed_prefill_tokens, 0);
  EXPECT_EQ(f->engine.mixed_prefill_ratio, 0);
  EXPECT_EQ(f->engine.mixed_prefill_drain_steps, 0);
  EXPECT_TRUE(f->engine.step_log_path.empty());
  EXPECT_EQ(f->state_memory_mb, 0);  // chosen at start-up from the backend's memory
  EXPECT_TRUE(f->given.empty());
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
                             "--mixed-prefill-tokens",
                             "24",
                             "--mixed-prefill-ratio",
                             "0.75",
                             "--mixed-prefill-drain-steps",
                             "6",
                             "--step-log",
                             "/tmp/steps.txt",
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
  EXPECT_EQ(f->engine.mixed_prefill_tokens, 24);
  EXPECT_EQ(f->engine.mixed_prefill_ratio, 0.75);
  EXPECT_EQ(f->engine.mixed_prefill_drain_steps, 6);
  EXPECT_EQ(f->engine.step_log_path, "/tmp/steps.txt");
  EXPECT_EQ(f->engine.max_prompt_tokens, 1000);
  EXPECT_EQ(f->drain_seconds, 2.5);
}

TEST(ServerFlagsTest, StatePoolFromMemoryBudget) {
  auto f = ParseServerFlags({"--state-memory-mb", "2048", "--offload-memory-mb", "100"});
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->state_memory_mb, 2048);
  EXPECT_FALSE(f->state_slots_given);
  EXPECT_EQ(f->given, (std::set<std::string>{"--state-memory-mb", "--offload-memory-mb"}));
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
  auto plan = [](const ServerFlags& flags, int64_t slot, std::optional<int64_t> device = std::nullopt) {
    return PlanStatePool(flags, slot, device, [](int rows, int logit_rows) { return int64_t{rows + logit_rows} << 20; });
  };
  EXPECT_EQ(plan(*f, 2433024)->slots, 43);
  EXPECT_EQ(plan(*f, 1253376)->slots, 83);
  EXPECT_EQ(plan(*f, 1253376)->max_sessions, 1000);
  f->engine.max_sessions = 50;
  EXPECT_EQ(plan(*f, 1253376)->slots, 50);  // --max-sessions was given: it caps the pool
  auto none = plan(*f, int64_t{101} << 20);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(none.status().message()), HasSubstr("holds no session"));
  EXPECT_THAT(std::string(none.status().message()), HasSubstr("one fp16 state"));
  auto fixed = ParseServerFlags({"--state-slots", "7", "--state-dtype=fp32"});
  ASSERT_TRUE(fixed.ok());
  EXPECT_EQ(plan(*fixed, int64_t{1} << 40)->slots, 7);

  // Defaults: 512 MB on the host, no cap at 1024 sessions; on a device, 90% of
  // what is free less the workspace (here rows + logit rows MiB) and 1 GiB,
  // and a batch of 256.
  auto def = ParseServerFlags({});
  ASSERT_TRUE(def.ok());
  auto host = plan(*def, int64_t{1} << 16);  // 64 KiB states: 8192 fit in 512 MB
  ASSERT_TRUE(host.ok()) << host.status();
  EXPECT_EQ(host->slots, 8192);
  EXPECT_EQ(host->max_sessions, 8192);
  EXPECT_EQ(host->max_batch, 64);
  EXPECT_THAT(host->note, HasSubstr("512 MB"));
  const int64_t free_bytes = int64_t{80} << 30;
  auto dev = plan(*def, int64_t{13} << 20, free_bytes);
  ASSERT_TRUE(dev.ok()) << dev.status();
  EXPECT_EQ(dev->max_batch, 256);
  // rows = max(step tokens 1024, batch 256) = 1024, logit rows 256: 1280 MiB of workspace.
  const int64_t budget = (free_bytes - (int64_t{1280} << 20) - (int64_t{1} << 30)) / 10 * 9;
  EXPECT_EQ(dev->slots, budget / (int64_t{13} << 20));
  EXPECT_GE(dev->slots, 2000);  // issue #4: 2,000 1.5B sessions (13 MB each) on an 80 GB card
  EXPECT_EQ(dev->max_sessions, dev->slots);
  EXPECT_THAT(dev->note, HasSubstr("90% of the 80.0 GiB free"));
  auto given = ParseServerFlags({"--max-batch", "32", "--state-memory-mb", "1024"});
  ASSERT_TRUE(given.ok());
  auto dev_given = plan(*given, int64_t{1} << 20, free_bytes);
  EXPECT_EQ(dev_given->max_batch, 32);
  EXPECT_EQ(dev_given->slots, 1024);
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
      {"--mixed-prefill-tokens", "-1"},      // below 0 (0 = no cap)
      {"--mixed-prefill-ratio", "-0.5"},     // below 0
      {"--mixed-prefill-ratio", "nan"},      // not a number in range
      {"--mixed-prefill-ratio", "1e9"},      // above the largest accepted
      {"--mixed-prefill-ratio", "half"},     // not a number
      {"--mixed-prefill-drain-steps", "-2"},  // below 0 (0 = no floor)
      {"--step-log", ""},                    // empty
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
