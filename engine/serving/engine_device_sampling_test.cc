// The engine's device-sampling path on any machine: a CPU backend that
// "samples in its memory" with the host twin (testing/host_sampling_backend.h)
// against the plain CPU backend (host path). Everything must be identical,
// bit for bit: tokens, logprobs, top_logprobs, and every idle session's saved
// last logits, whichever way its request ended.
//
// Why: with device sampling the step never copies the logits to the host,
// and a session's last logits are copied only when its request ends or a
// forward would overwrite them; this is where a missed copy would show (a
// stale state file, or a wrong token sampled from last_logits later).
#include <chrono>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "engine/model/cpu_backend.h"
#include "engine/serving/engine.h"
#include "engine/serving/engine_scenario_test_util.h"
#include "engine/state/state_store.h"
#include "engine/testing/host_sampling_backend.h"
#include "gtest/gtest.h"

namespace rwkv {
namespace {

using ::rwkv::testing::HostSamplingBackend;
using ::rwkv::testing::RunScenario;
using ::rwkv::testing::ScenarioResult;

EngineConfig SmallSteps() {
  EngineConfig cfg;
  cfg.max_batch = 4;
  cfg.prefill_chunk = 4;
  cfg.step_token_budget = 6;  // two 23-token prompts at once: one is starved in some steps
  return cfg;
}

std::unique_ptr<Engine> MakeEngine(const std::string& spec, bool device, HostSamplingBackend** backend,
                                   StateStore* store = nullptr) {
  std::unique_ptr<Backend> b = std::make_unique<CpuBackend>(2);
  if (device) {
    auto wrapped = std::make_unique<HostSamplingBackend>(std::move(b));
    *backend = wrapped.get();
    b = std::move(wrapped);
  }
  auto model = Model::Load(spec, std::move(b), {.progress = false});
  EXPECT_TRUE(model.ok()) << model.status();
  if (!model.ok()) return nullptr;
  auto engine = Engine::Create(*std::move(model), MakeByteTokenizer(), SmallSteps(), store, nullptr);
  EXPECT_TRUE(engine.ok()) << engine.status();
  return engine.ok() ? *std::move(engine) : nullptr;
}

// The store name Shutdown saves a live session under (engine_impl.h LiveName).
std::string LiveNameForTest(const std::string& id) { return "live-" + id; }

class EngineDeviceSamplingTest : public ::testing::TestWithParam<std::string> {};

void ExpectIdentical(const ScenarioResult& host, const ScenarioResult& dev) {
  EXPECT_EQ(dev.tokens, host.tokens);
  EXPECT_EQ(dev.logprobs, host.logprobs);
  EXPECT_EQ(dev.top_ids, host.top_ids);
  EXPECT_EQ(dev.top_logprobs, host.top_logprobs);
  EXPECT_EQ(dev.reasons, host.reasons);
  EXPECT_EQ(dev.tokens_seen, host.tokens_seen);
  ASSERT_EQ(dev.last_logits.size(), host.last_logits.size());
  for (size_t i = 0; i < host.last_logits.size(); ++i) {
    EXPECT_FALSE(host.last_logits[i].empty()) << "snapshot " << i;
    EXPECT_EQ(dev.last_logits[i], host.last_logits[i]) << "snapshot " << i;
  }
}

TEST_P(EngineDeviceSamplingTest, SameTokensAndLastLogitsAsHostSampling) {
  for (bool greedy : {true, false}) {
    SCOPED_TRACE(greedy ? "greedy" : "seeded, top_p 0.9, penalties");
    SamplingParams p;
    if (greedy) {
      p.temperature = 0.0f;
    } else {
      p.temperature = 1.1f;
      p.top_p = 0.9f;
      p.presence_penalty = 0.2f;
      p.frequency_penalty = 0.1f;
      p.seed = 77;
    }
    HostSamplingBackend* backend = nullptr;
    auto host = MakeEngine(GetParam(), false, nullptr);
    auto dev = MakeEngine(GetParam(), true, &backend);
    ASSERT_NE(host, nullptr);
    ASSERT_NE(dev, nullptr);
    const int32_t vocab = 512;
    const ScenarioResult want = RunScenario(*host, p, vocab);
    const ScenarioResult got = RunScenario(*dev, p, vocab);
    EXPECT_GT(backend->rows_sampled(), 20) << "the device path was not taken";
    ExpectIdentical(want, got);
    // After the cancelled generation, the saved logits are those after every
    // token the session saw (checked on each engine against a fresh prefill
    // of that history on the host path).
    EXPECT_EQ(got.cancelled_logits, testing::LastLogitsAfter(*host, got.cancelled_history));
    EXPECT_EQ(want.cancelled_logits, testing::LastLogitsAfter(*host, want.cancelled_history));
  }
}

TEST_P(EngineDeviceSamplingTest, ShutdownSavesRightLogitsForCutGenerations) {
  // Shutdown cuts a decoding session (FeedPending feeds its last token in a
  // host forward) and one still prefilling a long prompt (not fed there: its
  // kept row must be copied before that forward). Both saved states must hold
  // the logits after every token they saw.
  const std::string dir = ::testing::TempDir() + "/engine_device_shutdown_" + GetParam().substr(10);
  std::filesystem::remove_all(dir);
  auto store = DirectoryStateStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  HostSamplingBackend* backend = nullptr;
  auto dev = MakeEngine(GetParam(), true, &backend, store->get());
  auto ref = MakeEngine(GetParam(), false, nullptr);
  ASSERT_NE(dev, nullptr);
  ASSERT_NE(ref, nullptr);
  auto create = [&]() {
    std::promise<absl::StatusOr<SessionInfo>> p;
    dev->CreateSession({}, [&p](absl::StatusOr<SessionInfo> v) { p.set_value(std::move(v)); });
    auto v = p.get_future().get();
    EXPECT_TRUE(v.ok()) << v.status();
    return v.ok() ? v->id : std::string();
  };
  const std::string prefilling = create(), decoding = create();
  std::vector<int32_t> long_prompt;
  for (int i = 0; i < 4000; ++i) long_prompt.push_back((i * 31 + 7) % 250 + 1);
  GenerateRequest slow;
  slow.prompt = long_prompt;
  slow.session_id = prefilling;
  slow.sampling.temperature = 0.0f;
  slow.max_tokens = 1000000;
  GenerateRequest fast = slow;
  fast.prompt = {5};
  fast.session_id = decoding;
  auto slow_sink = std::make_shared<testing::ScenarioSink>(), fast_sink = std::make_shared<testing::ScenarioSink>();
  ASSERT_TRUE(dev->Submit(slow, slow_sink).ok());
  ASSERT_TRUE(dev->Submit(fast, fast_sink).ok());
  for (int i = 0; i < 200000; ++i) {
    {
      std::lock_guard<std::mutex> lock(fast_sink->mu);
      if (fast_sink->tokens.size() >= 3) break;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  dev->Shutdown(absl::Now(), true);
  ASSERT_TRUE(slow_sink->Wait());
  ASSERT_TRUE(fast_sink->Wait());

  auto saved_prefilling = (*store)->Load(LiveNameForTest(prefilling));
  auto saved_decoding = (*store)->Load(LiveNameForTest(decoding));
  ASSERT_TRUE(saved_prefilling.ok()) << saved_prefilling.status();
  ASSERT_TRUE(saved_decoding.ok()) << saved_decoding.status();
  // The prefilling session saw a prefix of its prompt.
  const size_t seen = static_cast<size_t>(saved_prefilling->tokens_seen);
  ASSERT_GT(seen, 0u) << "the long prompt had not started: the test proves nothing";
  ASSERT_LT(seen, long_prompt.size()) << "the long prompt finished before shutdown: the test proves nothing";
  EXPECT_EQ(saved_prefilling->last_logits,
            testing::LastLogitsAfter(*ref, std::vector<int32_t>(long_prompt.begin(), long_prompt.begin() + seen)));
  // The decoding session saw its prompt and every streamed token.
  std::vector<int32_t> history = {5};
  history.insert(history.end(), fast_sink->tokens.begin(), fast_sink->tokens.end());
  EXPECT_EQ(saved_decoding->tokens_seen, history.size());
  EXPECT_EQ(saved_decoding->last_logits, testing::LastLogitsAfter(*ref, history));
}

INSTANTIATE_TEST_SUITE_P(Synthetic, EngineDeviceSamplingTest, ::testing::Values("synthetic:tiny", "synthetic:v4-tiny"),
                         [](const auto& p) { return p.param == "synthetic:tiny" ? "v7" : "v4"; });

}  // namespace
}  // namespace rwkv
