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
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "engine/metrics/registry.h"
#include "engine/metrics/server_metrics.h"
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
                                   StateStore* store = nullptr, ServerMetrics* metrics = nullptr,
                                   const EngineConfig& cfg = SmallSteps()) {
  std::unique_ptr<Backend> b = std::make_unique<CpuBackend>(2);
  if (device) {
    auto wrapped = std::make_unique<HostSamplingBackend>(std::move(b));
    *backend = wrapped.get();
    b = std::move(wrapped);
  }
  auto model = Model::Load(spec, std::move(b), {.progress = false});
  EXPECT_TRUE(model.ok()) << model.status();
  if (!model.ok()) return nullptr;
  auto engine = Engine::Create(*std::move(model), MakeByteTokenizer(), cfg, store, metrics);
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

// ---- Output deferred to the next step (FlushEmits) ----

// Only 'a'..'f' can be sampled (every other token is biased by -100), so the
// streamed text is the tokens' bytes and a stop string's place in it is a
// plain search. Penalties are on: each token must reach the sampler before
// the next step samples.
SamplingParams Letters(int32_t vocab, uint64_t seed, std::vector<std::string> stops = {}) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.presence_penalty = 0.3f;
  p.frequency_penalty = 0.1f;
  p.seed = seed;
  for (int32_t t = 0; t < vocab; ++t) {
    if (t < 'a' || t > 'f') p.logit_bias.push_back({t, -100.0f});
  }
  p.stop_strings = std::move(stops);
  return p;
}

std::string TextOf(const std::vector<int32_t>& tokens) {
  std::string s;
  for (int32_t t : tokens) s.push_back(static_cast<char>(t));
  return s;
}

GenerateRequest Gen(std::vector<int32_t> prompt, const std::string& session, int max_tokens, SamplingParams sp) {
  GenerateRequest r;
  r.prompt = std::move(prompt);
  r.session_id = session;
  r.sampling = std::move(sp);
  r.max_tokens = max_tokens;
  r.ignore_end_of_text = true;
  return r;
}

// Every sink call in order: the tokens and text as they stream, the end, and
// any OnTokens after OnFinish (there must be none).
struct OrderSink : GenerationSink {
  void OnTokens(std::vector<TokenEvent> events) override {
    std::lock_guard<std::mutex> lock(mu);
    if (finishes > 0) ++tokens_after_finish;
    for (auto& e : events) {
      tokens.push_back(e.token);
      text += e.text;
    }
  }
  void OnFinish(absl::Status s, FinishReason r, std::string final_text, const GenerateUsage& u) override {
    std::lock_guard<std::mutex> lock(mu);
    text += final_text;
    status = s;
    reason = r;
    usage = u;
    if (++finishes == 1) done.set_value();
  }
  bool Wait() { return future.wait_for(std::chrono::seconds(60)) == std::future_status::ready; }
  size_t Streamed() {
    std::lock_guard<std::mutex> lock(mu);
    return tokens.size();
  }
  // Waits (up to a minute) until n tokens have streamed.
  bool WaitForTokens(size_t n) {
    for (int i = 0; i < 60000; ++i) {
      if (Streamed() >= n) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return false;
  }
  std::mutex mu;
  std::vector<int32_t> tokens;
  std::string text;
  absl::Status status;
  FinishReason reason = FinishReason::kLength;
  GenerateUsage usage;
  int finishes = 0;
  int tokens_after_finish = 0;
  std::promise<void> done;
  std::shared_future<void> future = done.get_future().share();
};

std::string NewSession(Engine& e, std::vector<int32_t> prompt) {
  std::promise<absl::StatusOr<SessionInfo>> p;
  e.CreateSession(std::move(prompt), [&p](absl::StatusOr<SessionInfo> v) { p.set_value(std::move(v)); });
  auto v = p.get_future().get();
  EXPECT_TRUE(v.ok()) << v.status();
  return v.ok() ? v->id : std::string();
}

int64_t TokensSeen(Engine& e, const std::string& id) {
  std::promise<absl::StatusOr<SessionInfo>> p;
  e.GetSession(id, [&p](absl::StatusOr<SessionInfo> v) { p.set_value(std::move(v)); });
  auto v = p.get_future().get();
  EXPECT_TRUE(v.ok()) << v.status();
  return v.ok() ? v->tokens_seen : -1;
}

std::vector<int32_t> RunToEnd(Engine& e, GenerateRequest r) {
  auto sink = std::make_shared<OrderSink>();
  auto h = e.Submit(std::move(r), sink);
  EXPECT_TRUE(h.ok()) << h.status();
  if (!h.ok() || !sink->Wait()) return {};
  std::lock_guard<std::mutex> lock(sink->mu);
  EXPECT_TRUE(sink->status.ok()) << sink->status;
  return sink->tokens;
}

// A stop string is now found one step after its token is sampled (while the
// next forward runs). The outcome must be as when it was found at once: the
// tokens of a free run (same seed, no stop strings) up to the one that
// completes the stop, that token fed (tokens_seen, and a continuation equal
// to one from a fresh prefill of that history), the text before the stop and
// finish reason stop, also where max_tokens ends the request at that same
// token. The cases run at once, so several stops fall in the same steps.
TEST_P(EngineDeviceSamplingTest, StopStringsCutAFreeRunAtTheStop) {
  HostSamplingBackend* backend = nullptr;
  auto host = MakeEngine(GetParam(), false, nullptr);
  auto dev = MakeEngine(GetParam(), true, &backend);
  ASSERT_NE(host, nullptr);
  ASSERT_NE(dev, nullptr);
  const int32_t vocab = host->model_config().vocab_size;
  const std::vector<int32_t> history = {10, 20, 30};
  // The free run, from a session's saved logits (empty prompt), as every case.
  auto free_sink = std::make_shared<OrderSink>();
  ASSERT_TRUE(host->Submit(Gen({}, NewSession(*host, history), 40, Letters(vocab, 5)), free_sink).ok());
  ASSERT_TRUE(free_sink->Wait());
  const std::vector<int32_t> free_run = free_sink->tokens;
  ASSERT_EQ(free_run.size(), 40u);
  const std::string text = TextOf(free_run);
  ASSERT_EQ(free_sink->text, text);
  const std::string stop = text.substr(12, 3);
  const size_t at = text.find(stop);
  const size_t k = at + stop.size();  // tokens streamed: up to the one that completes the stop
  ASSERT_GE(k, 3u);
  struct Case {
    std::vector<std::string> stops;
    int max_tokens;
    size_t want_tokens;
    std::string want_text;
    FinishReason want_reason;
  };
  const std::vector<Case> cases = {
      {{stop}, 40, k, text.substr(0, at), FinishReason::kStop},
      // The stop completes on the last token max_tokens allows: stop, not length.
      {{"zz", stop}, static_cast<int>(k), k, text.substr(0, at), FinishReason::kStop},
      // One token short of the stop: length, and the start of the stop
      // string, held back by the matcher, comes in the final text.
      {{stop}, static_cast<int>(k) - 1, k - 1, text.substr(0, k - 1), FinishReason::kLength},
      // The first token (sampled from the saved logits, in a step without a
      // forward) completes the stop.
      {{text.substr(0, 1)}, 40, 1, "", FinishReason::kStop},
  };
  for (Engine* e : {host.get(), dev.get()}) {
    SCOPED_TRACE(e == host.get() ? "host sampling" : "device sampling");
    std::vector<std::string> ids;
    std::vector<std::shared_ptr<OrderSink>> sinks;
    for (const Case& c : cases) {
      ids.push_back(NewSession(*e, history));
      sinks.push_back(std::make_shared<OrderSink>());
      ASSERT_TRUE(e->Submit(Gen({}, ids.back(), c.max_tokens, Letters(vocab, 5, c.stops)), sinks.back()).ok());
    }
    for (size_t i = 0; i < cases.size(); ++i) {
      SCOPED_TRACE(::testing::Message() << "case " << i);
      const Case& c = cases[i];
      ASSERT_TRUE(sinks[i]->Wait());
      const std::vector<int32_t> want(free_run.begin(), free_run.begin() + static_cast<int64_t>(c.want_tokens));
      {
        OrderSink& s = *sinks[i];
        std::lock_guard<std::mutex> lock(s.mu);
        EXPECT_TRUE(s.status.ok()) << s.status;
        EXPECT_EQ(s.reason, c.want_reason);
        EXPECT_EQ(s.tokens, want);
        EXPECT_EQ(s.text, c.want_text);
        EXPECT_EQ(s.finishes, 1);
        EXPECT_EQ(s.tokens_after_finish, 0);
        EXPECT_EQ(s.usage.generated_tokens, static_cast<int32_t>(c.want_tokens));
      }
      EXPECT_EQ(TokensSeen(*e, ids[i]), static_cast<int64_t>(history.size() + c.want_tokens));
      // The session's state and last logits are those after exactly these tokens.
      std::vector<int32_t> seen = history;
      seen.insert(seen.end(), want.begin(), want.end());
      const SamplingParams next = Letters(vocab, 8);
      EXPECT_EQ(RunToEnd(*e, Gen({}, ids[i], 6, next)), RunToEnd(*host, Gen({}, NewSession(*host, seen), 6, next)));
    }
  }
  EXPECT_GT(backend->rows_sampled(), 40) << "the device path was not taken";
}

// The text a sink must have received for `tokens` (each one byte) under
// `stops`: everything before the first stop string, which fires at the first
// byte where any is complete (the longest ending there wins). `stop_at`: the
// bytes up to the end of that stop string (0: none).
std::string WantText(const std::vector<int32_t>& tokens, const std::vector<std::string>& stops, size_t* stop_at) {
  const std::string full = TextOf(tokens);
  *stop_at = 0;
  for (size_t end = 1; end <= full.size(); ++end) {
    size_t longest = 0;
    for (const std::string& s : stops) {
      if (!s.empty() && s.size() <= end && full.compare(end - s.size(), s.size(), s) == 0) {
        longest = std::max(longest, s.size());
      }
    }
    if (longest > 0) {
      *stop_at = end;
      return full.substr(0, end - longest);
    }
  }
  return full;
}

// Every way a generation ends, many at once on both paths: each sink gets
// its OnTokens before exactly one OnFinish; the text is the streamed tokens'
// bytes cut at the first stop string (what the matcher held back arriving in
// the final text), and a stop string ends the stream at the token that
// completes it; a stop token is never streamed; and every session holds
// every token it streamed, including the generations cut by cancel, deadline
// and shutdown.
TEST_P(EngineDeviceSamplingTest, SinkCallsKeepTheirOrderHoweverAGenerationEnds) {
  EngineConfig cfg = SmallSteps();
  cfg.max_batch = 16;
  cfg.step_token_budget = 64;
  for (bool device : {false, true}) {
    SCOPED_TRACE(device ? "device sampling" : "host sampling");
    HostSamplingBackend* backend = nullptr;
    auto e = MakeEngine(GetParam(), device, &backend, nullptr, nullptr, cfg);
    ASSERT_NE(e, nullptr);
    const int32_t vocab = e->model_config().vocab_size;
    struct G {
      std::string id;
      GenerateRequest req;
      std::shared_ptr<OrderSink> sink;
      std::shared_ptr<RequestHandle> handle;
    };
    std::vector<G> gens;
    auto submit = [&](GenerateRequest r) {
      G g;
      g.id = NewSession(*e, {});
      r.session_id = g.id;
      g.req = r;
      g.sink = std::make_shared<OrderSink>();
      auto h = e->Submit(std::move(r), g.sink);
      EXPECT_TRUE(h.ok()) << h.status();
      if (h.ok()) g.handle = *h;
      gens.push_back(std::move(g));
    };
    // Cut by cancel, by the deadline and by shutdown. Their stop strings
    // never match ('z' is never sampled), but the matcher holds back text
    // that could start one, which the end must release.
    submit(Gen({7}, "", 1000000, Letters(vocab, 1, {"cz"})));
    GenerateRequest timed = Gen({8}, "", 1000000, Letters(vocab, 2, {"dz", "adz"}));
    timed.deadline = absl::Now() + absl::Milliseconds(50);
    submit(timed);
    submit(Gen({9}, "", 1000000, Letters(vocab, 3, {"abz"})));
    // Ended by stop strings, a stop token or max_tokens.
    const std::vector<std::vector<std::string>> stop_sets = {{"cab"}, {"fa", "dd"}, {"bcd", "eee", "ab"}, {}};
    for (int i = 0; i < 12; ++i) {
      GenerateRequest r = Gen({i + 1}, "", 5 + 3 * i, Letters(vocab, 100 + i, stop_sets[i % 4]));
      if (i % 3 == 1) r.sampling.stop_token_ids = {'e'};
      submit(r);
    }
    for (size_t i = 3; i < gens.size(); ++i) ASSERT_TRUE(gens[i].sink->Wait());
    ASSERT_TRUE(gens[0].sink->WaitForTokens(3));
    gens[0].handle->Cancel();
    ASSERT_TRUE(gens[0].sink->Wait());
    ASSERT_TRUE(gens[1].sink->Wait());
    ASSERT_TRUE(gens[2].sink->WaitForTokens(5));
    e->Shutdown(absl::Now(), false);

    for (size_t i = 0; i < gens.size(); ++i) {
      SCOPED_TRACE(::testing::Message() << "generation " << i);
      G& g = gens[i];
      ASSERT_TRUE(g.sink->Wait());
      std::lock_guard<std::mutex> lock(g.sink->mu);
      const OrderSink& s = *g.sink;
      EXPECT_EQ(s.finishes, 1);
      EXPECT_EQ(s.tokens_after_finish, 0);
      size_t stop_at = 0;
      EXPECT_EQ(s.text, WantText(s.tokens, g.req.sampling.stop_strings, &stop_at));
      if (stop_at > 0) {
        EXPECT_EQ(stop_at, s.tokens.size()) << "tokens streamed after the stop string";
        EXPECT_EQ(s.reason, FinishReason::kStop);
      }
      for (int32_t t : g.req.sampling.stop_token_ids) {
        EXPECT_EQ(std::count(s.tokens.begin(), s.tokens.end(), t), 0) << "a stop token was streamed";
      }
      EXPECT_EQ(s.usage.generated_tokens, static_cast<int32_t>(s.tokens.size()));
      switch (i) {
        case 0:
          EXPECT_TRUE(s.status.ok()) << s.status;
          EXPECT_EQ(s.reason, FinishReason::kCancelled);
          break;
        case 1:
          EXPECT_EQ(s.status.code(), absl::StatusCode::kDeadlineExceeded) << s.status;
          break;
        case 2:
          EXPECT_EQ(s.status.code(), absl::StatusCode::kUnavailable) << s.status;
          break;
        default:
          EXPECT_TRUE(s.status.ok()) << s.status;
          if (s.reason == FinishReason::kLength) {
            EXPECT_EQ(s.tokens.size(), static_cast<size_t>(g.req.max_tokens));
          } else {
            EXPECT_EQ(s.reason, FinishReason::kStop);
          }
      }
      // The prompt token, then every streamed token; except that the
      // deadline of generation 1 (50 ms) may pass before its prompt is fed
      // on a loaded machine, and then it has seen nothing (the engine drops
      // an expired request before feeding it; a deadline set in the past
      // makes that happen every time).
      const int64_t seen = TokensSeen(*e, g.id);
      if (!(i == 1 && s.tokens.empty() && seen == 0)) {
        EXPECT_EQ(seen, static_cast<int64_t>(1 + s.tokens.size()));
      }
    }
    EXPECT_GE(gens[0].sink->Streamed(), 3u);
    EXPECT_GE(gens[2].sink->Streamed(), 5u);
    if (device) {
      EXPECT_GT(backend->rows_sampled(), 40) << "the device path was not taken";
    }
  }
}

// The per-token metrics, now recorded one step late (FlushEmits), still
// count every streamed token once: tokens, one time to first token per
// request that streamed, one inter-token latency per further token; and each
// phase of the engine thread's time is recorded (sample only where the
// backend samples).
TEST_P(EngineDeviceSamplingTest, MetricsCountEveryStreamedToken) {
  for (bool device : {false, true}) {
    SCOPED_TRACE(device ? "device sampling" : "host sampling");
    metrics::Registry registry;
    ServerMetrics m(registry, {"tiny", "cpu", "test"});
    HostSamplingBackend* backend = nullptr;
    auto e = MakeEngine(GetParam(), device, &backend, nullptr, &m);
    ASSERT_NE(e, nullptr);
    const int32_t vocab = e->model_config().vocab_size;
    std::vector<std::shared_ptr<OrderSink>> sinks;
    for (int i = 0; i < 6; ++i) {
      sinks.push_back(std::make_shared<OrderSink>());
      ASSERT_TRUE(e->Submit(Gen({i + 1, 2}, "", 4 + 5 * i, Letters(vocab, 40 + i, {"fe"})), sinks.back()).ok());
    }
    sinks.push_back(std::make_shared<OrderSink>());
    auto cancelled = e->Submit(Gen({3}, "", 1000000, Letters(vocab, 50)), sinks.back());
    ASSERT_TRUE(cancelled.ok());
    ASSERT_TRUE(sinks.back()->WaitForTokens(3));
    (*cancelled)->Cancel();
    uint64_t total = 0, streamed = 0;
    for (auto& s : sinks) {
      ASSERT_TRUE(s->Wait());
      total += s->Streamed();
      streamed += s->Streamed() > 0 ? 1 : 0;
    }
    EXPECT_EQ(m.generation_tokens.Value(), static_cast<double>(total));
    EXPECT_EQ(m.time_to_first_token.Collect().count, streamed);
    EXPECT_EQ(m.inter_token_latency.Collect().count, total - streamed);
    EXPECT_GT(m.step_duration.Collect().count, 0u);
    EXPECT_GT(m.engine_schedule_seconds.Value(), 0);
    EXPECT_GT(m.engine_forward_seconds.Value(), 0);
    EXPECT_GT(m.engine_emit_seconds.Value(), 0);
    if (device) {
      EXPECT_GT(m.engine_sample_seconds.Value(), 0);
    } else {
      EXPECT_EQ(m.engine_sample_seconds.Value(), 0);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Synthetic, EngineDeviceSamplingTest, ::testing::Values("synthetic:tiny", "synthetic:v4-tiny"),
                         [](const auto& p) { return p.param == "synthetic:tiny" ? "v7" : "v4"; });

}  // namespace
}  // namespace rwkv
