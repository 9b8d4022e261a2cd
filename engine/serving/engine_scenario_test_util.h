// One scripted workload for comparing the engine's host-sampling path with
// its device-sampling path (or the CPU backend with the CUDA one): every way
// a request ends, then each session's saved last logits.
//
// Why: with device sampling a session's last_logits are copied to the host
// only when needed, so a missed copy shows up only later, as a stale state
// file or as a wrong token sampled from last_logits by a request with an
// empty prompt. The script makes each end path leave a session idle and then
// reads its snapshot (ExportSession) and samples from it:
//  - a prefill-only CreateSession;
//  - a generation ending by length (the finish_after_feed feed step);
//  - an empty-prompt generation ending by a stop token;
//  - a generation ending by end-of-text or a stop token, most tokens banned;
//  - two sessions prefilling long prompts at once under a small step budget
//    (one is starved in some steps, so its kept row must be copied before
//    the next forward) with top_logprobs;
//  - a cancelled generation.
#ifndef RWKV_ENGINE_SERVING_ENGINE_SCENARIO_TEST_UTIL_H_
#define RWKV_ENGINE_SERVING_ENGINE_SCENARIO_TEST_UTIL_H_

#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "engine/serving/engine.h"
#include "engine/state/state_file.h"
#include "gtest/gtest.h"

namespace rwkv::testing {

struct ScenarioSink : GenerationSink {
  void OnTokens(std::vector<TokenEvent> events) override {
    std::lock_guard<std::mutex> lock(mu);
    for (auto& e : events) {
      tokens.push_back(e.token);
      logprobs.push_back(e.logprob);
      for (auto& [id, lp] : e.top) {
        top_ids.push_back(id);
        top_logprobs.push_back(lp);
      }
    }
  }
  void OnFinish(absl::Status s, FinishReason r, std::string, const GenerateUsage&) override {
    std::lock_guard<std::mutex> lock(mu);
    status = s;
    reason = r;
    done.set_value();
  }
  bool Wait() { return future.wait_for(std::chrono::seconds(60)) == std::future_status::ready; }
  std::mutex mu;
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
  std::vector<int32_t> top_ids;
  std::vector<float> top_logprobs;
  absl::Status status;
  FinishReason reason = FinishReason::kLength;
  std::promise<void> done;
  std::shared_future<void> future = done.get_future().share();
};

// What the script observed, in order.
struct ScenarioResult {
  std::vector<std::vector<int32_t>> tokens;    // per generation
  std::vector<std::vector<float>> logprobs;    // per generation
  std::vector<std::vector<int32_t>> top_ids;   // per generation
  std::vector<std::vector<float>> top_logprobs;
  std::vector<FinishReason> reasons;           // per generation
  std::vector<std::vector<float>> last_logits; // per snapshot
  std::vector<uint64_t> tokens_seen;           // per snapshot
  // The cancelled generation (timing-dependent length): every token session
  // b has seen, and its saved last logits afterwards.
  std::vector<int32_t> cancelled_history;
  std::vector<float> cancelled_logits;
};

// The last logits a session holds after `history` (a prefill-only session).
inline std::vector<float> LastLogitsAfter(Engine& e, const std::vector<int32_t>& history) {
  std::promise<absl::StatusOr<SessionInfo>> p;
  e.CreateSession(history, [&p](absl::StatusOr<SessionInfo> v) { p.set_value(std::move(v)); });
  auto info = p.get_future().get();
  EXPECT_TRUE(info.ok()) << info.status();
  if (!info.ok()) return {};
  std::promise<absl::StatusOr<std::string>> q;
  e.ExportSession(info->id, [&q](absl::StatusOr<std::string> v) { q.set_value(std::move(v)); });
  auto bytes = q.get_future().get();
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  if (!bytes.ok()) return {};
  auto snap = DecodeSnapshot(*bytes);
  EXPECT_TRUE(snap.ok()) << snap.status();
  return snap.ok() ? snap->last_logits : std::vector<float>{};
}

// The engine needs max_batch >= 2 and a vocabulary of at least 256 tokens
// (`vocab`). `sampling` is used for every generation (greedy or seeded).
inline ScenarioResult RunScenario(Engine& e, const SamplingParams& sampling, int32_t vocab) {
  ScenarioResult out;
  auto sync_info = [&](std::function<void(Engine::Done<SessionInfo>)> call) {
    std::promise<absl::StatusOr<SessionInfo>> p;
    call([&p](absl::StatusOr<SessionInfo> v) { p.set_value(std::move(v)); });
    auto v = p.get_future().get();
    EXPECT_TRUE(v.ok()) << v.status();
    return v.ok() ? v->id : std::string();
  };
  auto snapshot = [&](const std::string& id) {
    std::promise<absl::StatusOr<std::string>> p;
    e.ExportSession(id, [&p](absl::StatusOr<std::string> v) { p.set_value(std::move(v)); });
    auto bytes = p.get_future().get();
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    auto snap = DecodeSnapshot(*bytes);
    ASSERT_TRUE(snap.ok()) << snap.status();
    out.last_logits.push_back(snap->last_logits);
    out.tokens_seen.push_back(snap->tokens_seen);
  };
  auto request = [&](std::vector<int32_t> prompt, const std::string& session, int max_tokens) {
    GenerateRequest r;
    r.prompt = std::move(prompt);
    r.session_id = session;
    r.sampling = sampling;
    r.max_tokens = max_tokens;
    r.ignore_end_of_text = true;
    return r;
  };
  auto record = [&](ScenarioSink& s) {
    std::lock_guard<std::mutex> lock(s.mu);
    out.tokens.push_back(s.tokens);
    out.logprobs.push_back(s.logprobs);
    out.top_ids.push_back(s.top_ids);
    out.top_logprobs.push_back(s.top_logprobs);
    out.reasons.push_back(s.reason);
  };
  auto run = [&](GenerateRequest r) {
    auto sink = std::make_shared<ScenarioSink>();
    auto h = e.Submit(std::move(r), sink);
    EXPECT_TRUE(h.ok()) << h.status();
    if (!h.ok()) return std::vector<int32_t>{};
    EXPECT_TRUE(sink->Wait());
    EXPECT_TRUE(sink->status.ok()) << sink->status;
    record(*sink);
    return sink->tokens;
  };

  // Prefill only.
  const std::string a = sync_info([&](auto d) { e.CreateSession({10, 20, 30, 40}, d); });
  snapshot(a);
  // Ends by length.
  run(request({50, 60}, a, 6));
  snapshot(a);
  // Empty prompt (samples from the saved last logits), ends by a stop token:
  // the third token of a free run on a fork.
  const std::string fork = sync_info([&](auto d) { e.ForkSession(a, d); });
  const std::vector<int32_t> free_run = run(request({}, fork, 5));
  GenerateRequest stop = request({}, a, 20);
  if (free_run.size() >= 3) stop.sampling.stop_token_ids = {free_run[2]};
  run(stop);
  snapshot(a);
  // Every token banned but 0 (end-of-text in the World vocabulary), 65 and
  // 66 (a stop token): ends by end-of-text or the stop token (the ban list
  // is also the longest adjustment list the device sees).
  GenerateRequest eot = request({7}, a, 20);
  eot.ignore_end_of_text = false;
  eot.sampling.stop_token_ids = {66};
  for (int32_t t = 0; t < vocab; ++t) {
    if (t != 0 && t != 65 && t != 66) eot.sampling.logit_bias.push_back({t, -100.0f});
  }
  eot.sampling.logit_bias.push_back({0, 3.0f});
  run(eot);
  snapshot(a);
  // Two long prompts at once under a small step budget, with alternatives.
  const std::string b = sync_info([&](auto d) { e.CreateSession({}, d); });
  const std::string c = sync_info([&](auto d) { e.CreateSession({}, d); });
  std::vector<int32_t> long_b, long_c;
  for (int i = 0; i < 23; ++i) {
    long_b.push_back((i * 37 + 5) % 250 + 1);
    long_c.push_back((i * 53 + 9) % 250 + 1);
  }
  GenerateRequest rb = request(long_b, b, 4), rc = request(long_c, c, 3);
  rb.top_logprobs = 3;
  auto sb = std::make_shared<ScenarioSink>(), sc = std::make_shared<ScenarioSink>();
  EXPECT_TRUE(e.Submit(rb, sb).ok());
  EXPECT_TRUE(e.Submit(rc, sc).ok());
  EXPECT_TRUE(sb->Wait());
  EXPECT_TRUE(sc->Wait());
  record(*sb);
  record(*sc);
  snapshot(b);
  snapshot(c);
  // Continue both from their saved logits.
  run(request({}, b, 3));
  run(request({}, c, 3));
  snapshot(b);
  snapshot(c);
  // Cancelled once a few tokens are out. How many come out first is timing,
  // so this is returned apart: every token session b has seen, and its
  // saved logits, which must be those after the last of them.
  {
    auto sink = std::make_shared<ScenarioSink>();
    auto h = e.Submit(request({9}, b, 1000000), sink);
    EXPECT_TRUE(h.ok());
    if (h.ok()) {
      for (int i = 0; i < 200000; ++i) {
        {
          std::lock_guard<std::mutex> lock(sink->mu);
          if (sink->tokens.size() >= 3) break;
        }
        std::this_thread::sleep_for(std::chrono::microseconds(50));
      }
      (*h)->Cancel();
      EXPECT_TRUE(sink->Wait());
      std::lock_guard<std::mutex> lock(sink->mu);
      out.cancelled_history = long_b;
      for (size_t g : {out.tokens.size() - 4, out.tokens.size() - 2}) {  // rb, then b's continuation
        out.cancelled_history.insert(out.cancelled_history.end(), out.tokens[g].begin(), out.tokens[g].end());
      }
      out.cancelled_history.push_back(9);
      out.cancelled_history.insert(out.cancelled_history.end(), sink->tokens.begin(), sink->tokens.end());
    }
    snapshot(b);
    out.cancelled_logits = out.last_logits.back();
    out.last_logits.pop_back();
    out.tokens_seen.pop_back();
  }
  return out;
}

}  // namespace rwkv::testing

#endif  // RWKV_ENGINE_SERVING_ENGINE_SCENARIO_TEST_UTIL_H_
