// Engine tests on the CPU backend with small models: generation, sessions,
// persistence, admission control, offload, shutdown. The property the
// server sells is checked directly: a session's tokens do not depend on what
// else runs beside it.
#include "engine/serving/engine.h"

#include <array>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "engine/model/cpu_backend.h"
#include "engine/model/forwarding_backend.h"
#include "engine/state/state_store.h"
#include "gtest/gtest.h"

namespace rwkv {
namespace {

using namespace std::chrono_literals;

class Collect : public GenerationSink {
 public:
  void OnTokens(std::vector<TokenEvent> events) override {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& e : events) {
      tokens_.push_back(e.token);
      text_ += e.text;
      logprobs_.push_back(e.logprob);
      tops_ += static_cast<int>(e.top.size());
    }
  }
  void OnFinish(absl::Status status, FinishReason reason, std::string final_text,
                const GenerateUsage& usage) override {
    std::lock_guard<std::mutex> lock(mu_);
    text_ += final_text;
    status_ = status;
    reason_ = reason;
    usage_ = usage;
    done_.set_value();
  }
  bool Wait(std::chrono::milliseconds d = 20s) { return done_future_.wait_for(d) == std::future_status::ready; }
  std::vector<int32_t> tokens() {
    std::lock_guard<std::mutex> lock(mu_);
    return tokens_;
  }

  std::mutex mu_;
  std::vector<int32_t> tokens_;
  std::vector<float> logprobs_;
  int tops_ = 0;
  std::string text_;
  absl::Status status_;
  FinishReason reason_ = FinishReason::kLength;
  GenerateUsage usage_;
  std::promise<void> done_;
  std::shared_future<void> done_future_ = done_.get_future().share();
};

std::unique_ptr<Engine> MakeEngine(EngineConfig cfg = {}, StateStore* store = nullptr,
                                   const std::string& spec = "synthetic:tiny") {
  auto model = Model::Load(spec, std::make_unique<CpuBackend>(2), {.progress = false});
  EXPECT_TRUE(model.ok()) << model.status();
  auto engine = Engine::Create(*std::move(model), MakeByteTokenizer(), cfg, store, nullptr);
  EXPECT_TRUE(engine.ok()) << engine.status();
  return engine.ok() ? *std::move(engine) : nullptr;
}

GenerateRequest Req(std::vector<int32_t> prompt, uint64_t seed, int max_tokens = 12, std::string session = "") {
  GenerateRequest r;
  r.prompt = std::move(prompt);
  r.sampling.seed = seed;
  r.sampling.temperature = 1.0f;
  r.max_tokens = max_tokens;
  r.session_id = std::move(session);
  r.ignore_end_of_text = true;
  return r;
}

std::vector<int32_t> RunGen(Engine& e, GenerateRequest r, Collect** out = nullptr) {
  auto sink = std::make_shared<Collect>();
  auto h = e.Submit(std::move(r), sink);
  EXPECT_TRUE(h.ok()) << h.status();
  if (!h.ok()) return {};
  EXPECT_TRUE(sink->Wait());
  EXPECT_TRUE(sink->status_.ok()) << sink->status_;
  return sink->tokens();
}

template <typename T>
absl::StatusOr<T> Sync(std::function<void(Engine::Done<T>)> call) {
  std::promise<absl::StatusOr<T>> p;
  call([&p](absl::StatusOr<T> v) { p.set_value(std::move(v)); });
  return p.get_future().get();
}

absl::Status SyncStatus(std::function<void(Engine::DoneStatus)> call) {
  std::promise<absl::Status> p;
  call([&p](absl::Status v) { p.set_value(std::move(v)); });
  return p.get_future().get();
}

TEST(EngineTest, OneOffGenerationStreamsMaxTokens) {
  auto e = MakeEngine();
  auto sink = std::make_shared<Collect>();
  GenerateRequest r = Req({1, 2, 3}, 5, 7);
  r.top_logprobs = 3;
  ASSERT_TRUE(e->Submit(r, sink).ok());
  ASSERT_TRUE(sink->Wait());
  EXPECT_TRUE(sink->status_.ok());
  EXPECT_EQ(sink->reason_, FinishReason::kLength);
  EXPECT_EQ(sink->tokens_.size(), 7u);
  EXPECT_EQ(sink->tops_, 21);
  for (float lp : sink->logprobs_) EXPECT_LE(lp, 0.0f);
  EXPECT_EQ(sink->usage_.prompt_tokens, 3);
  EXPECT_EQ(sink->usage_.generated_tokens, 7);
  EXPECT_GT(sink->usage_.total_time_s, 0);
}

// Records every pass's segments (slot, rows) as the engine plans them.
class PassRecorder final : public ForwardingBackend {
 public:
  using ForwardingBackend::ForwardingBackend;
  void BeginPass(const Segment* segs, int nseg, const int32_t* tokens, int rows, const int32_t* logit_rows,
                 int nlogit) override {
    {
      std::lock_guard<std::mutex> lock(mu);
      passes.emplace_back(segs, segs + nseg);
    }
    ForwardingBackend::BeginPass(segs, nseg, tokens, rows, logit_rows, nlogit);
  }
  std::vector<std::vector<Segment>> Passes() {
    std::lock_guard<std::mutex> lock(mu);
    return passes;
  }
  bool RecordsPasses() const override { return records; }
  std::mutex mu;
  std::vector<std::vector<Segment>> passes;
  bool records = false;  // what RecordsPasses says (warm-up at Engine::Create)
};

// An engine on synthetic:tiny whose backend records its passes (and says it
// records them when `records`, so Engine::Create warms it up).
struct RecordedEngine {
  std::unique_ptr<Engine> engine;
  PassRecorder* rec = nullptr;
};
RecordedEngine MakeRecordedEngine(const EngineConfig& cfg, bool records = false) {
  auto rec_owned = std::make_unique<PassRecorder>(std::make_unique<CpuBackend>(2));
  PassRecorder* rec = rec_owned.get();
  rec->records = records;
  auto model = Model::Load("synthetic:tiny", std::move(rec_owned), {.progress = false});
  EXPECT_TRUE(model.ok()) << model.status();
  if (!model.ok()) return {};
  auto engine = Engine::Create(*std::move(model), MakeByteTokenizer(), cfg, nullptr, nullptr);
  EXPECT_TRUE(engine.ok()) << engine.status();
  if (!engine.ok()) return {};
  return {*std::move(engine), rec};
}

// A prompt arriving while another session decodes gets at most
// mixed_prefill_tokens rows per step (the decoding session's step stays
// short); a prompt with nobody decoding takes the whole step budget.
TEST(EngineTest, PromptsBesideDecodingGetMixedPrefillTokens) {
  EngineConfig cfg;
  cfg.prefill_chunk = 64;
  cfg.step_token_budget = 64;
  cfg.mixed_prefill_tokens = 5;
  RecordedEngine made = MakeRecordedEngine(cfg);
  ASSERT_NE(made.engine, nullptr);
  PassRecorder* rec = made.rec;
  Engine& e = *made.engine;

  std::vector<int32_t> long_prompt;
  for (int i = 0; i < 50; ++i) long_prompt.push_back((i * 13 + 5) % 256);
  // Alone: the 50-token prompt goes in one pass.
  RunGen(e, Req(long_prompt, 1, 1));
  ASSERT_FALSE(rec->Passes().empty());
  EXPECT_EQ(rec->Passes()[0].size(), 1u);
  EXPECT_EQ(rec->Passes()[0][0].rows, 50);
  const size_t before = rec->Passes().size();

  // Beside a decoding session: 5 rows per step.
  auto decoding = std::make_shared<Collect>();
  auto handle = e.Submit(Req({7, 8, 9}, 2, 1 << 20), decoding);
  ASSERT_TRUE(handle.ok()) << handle.status();
  for (int i = 0; i < 2000 && decoding->tokens().size() < 2; ++i) std::this_thread::sleep_for(1ms);
  ASSERT_GE(decoding->tokens().size(), 2u);
  auto late = std::make_shared<Collect>();
  ASSERT_TRUE(e.Submit(Req(long_prompt, 3, 2), late).ok());
  ASSERT_TRUE(late->Wait());
  (*handle)->Cancel();
  ASSERT_TRUE(decoding->Wait());
  const std::vector<std::vector<Segment>> passes = rec->Passes();
  ASSERT_GT(passes.size(), before);
  const int32_t decoding_slot = passes[before][0].slot;  // its 3-token prompt, alone
  int mixed = 0, late_rows = 0;
  for (size_t p = before + 1; p < passes.size(); ++p) {
    bool decodes = false;
    for (const Segment& s : passes[p]) decodes |= s.slot == decoding_slot && s.rows == 1;
    for (const Segment& s : passes[p]) {
      if (s.slot == decoding_slot) continue;
      if (decodes) {
        EXPECT_LE(s.rows, 5) << "pass " << p;
        ++mixed;
      }
      late_rows += s.rows;
    }
  }
  EXPECT_GE(mixed, 10);  // 50 prompt tokens, 5 per step
  EXPECT_GE(late_rows, 50);
}

// With mixed_prefill_ratio the cap grows with the sessions decoding in the
// step: max(mixed_prefill_tokens, ceil(ratio x decoding)).
TEST(EngineTest, MixedPrefillRatioScalesTheCapWithTheDecodingSessions) {
  EngineConfig cfg;
  cfg.prefill_chunk = 64;
  cfg.step_token_budget = 64;
  cfg.mixed_prefill_tokens = 2;
  cfg.mixed_prefill_ratio = 1.5;
  RecordedEngine made = MakeRecordedEngine(cfg);
  ASSERT_NE(made.engine, nullptr);
  PassRecorder* rec = made.rec;
  Engine& e = *made.engine;

  std::vector<std::shared_ptr<Collect>> decoding;
  std::vector<std::shared_ptr<RequestHandle>> handles;
  for (int i = 0; i < 4; ++i) {
    decoding.push_back(std::make_shared<Collect>());
    auto h = e.Submit(Req({static_cast<int32_t>(7 + i)}, 10 + i, 1 << 20), decoding.back());
    ASSERT_TRUE(h.ok()) << h.status();
    handles.push_back(*h);
  }
  for (auto& d : decoding) {
    for (int i = 0; i < 2000 && d->tokens().size() < 2; ++i) std::this_thread::sleep_for(1ms);
    ASSERT_GE(d->tokens().size(), 2u);
  }
  const std::vector<std::vector<Segment>> so_far = rec->Passes();
  const size_t before = so_far.size();
  std::set<int32_t> decoders;  // the four sessions' slots, from a pass where all decode
  for (const Segment& seg : so_far.back()) decoders.insert(seg.slot);
  ASSERT_EQ(decoders.size(), 4u);
  std::vector<int32_t> long_prompt;
  for (int i = 0; i < 50; ++i) long_prompt.push_back((i * 13 + 5) % 256);
  auto late = std::make_shared<Collect>();
  ASSERT_TRUE(e.Submit(Req(long_prompt, 3, 2), late).ok());
  ASSERT_TRUE(late->Wait());
  for (auto& h : handles) h->Cancel();
  for (auto& d : decoding) ASSERT_TRUE(d->Wait());

  const std::vector<std::vector<Segment>> passes = rec->Passes();
  int late_rows = 0, at_cap = 0;
  for (size_t p = before; p < passes.size(); ++p) {
    int decoding_here = 0;
    for (const Segment& seg : passes[p]) decoding_here += decoders.count(seg.slot) > 0 && seg.rows == 1;
    for (const Segment& seg : passes[p]) {
      if (decoders.count(seg.slot) > 0) continue;
      const int cap = std::max(2, static_cast<int>(std::ceil(1.5 * decoding_here)));
      if (decoding_here > 0) {
        EXPECT_LE(seg.rows, cap) << "pass " << p << ", " << decoding_here << " decoding, slot " << seg.slot
                                 << ", " << passes[p].size() << " segments";
      }
      at_cap += decoding_here == 4 && seg.rows == 6;
      late_rows += seg.rows;
    }
  }
  EXPECT_GE(at_cap, 5);  // 50 prompt tokens, 6 per step beside 4 decoding sessions
  EXPECT_GE(late_rows, 50);
}

// The rows per pass that a 40-token prompt gets when it arrives while
// another session decodes (each pass of it checked to have that session's
// decode row), until it is fed.
std::vector<int> LatePromptRowsBesideADecodingSession(const EngineConfig& cfg) {
  RecordedEngine made = MakeRecordedEngine(cfg);
  EXPECT_NE(made.engine, nullptr);
  if (made.engine == nullptr) return {};
  Engine& e = *made.engine;
  auto decoding = std::make_shared<Collect>();
  auto handle = e.Submit(Req({7, 8, 9}, 2, 1 << 20), decoding);
  EXPECT_TRUE(handle.ok()) << handle.status();
  if (!handle.ok()) return {};
  for (int i = 0; i < 2000 && decoding->tokens().size() < 2; ++i) std::this_thread::sleep_for(1ms);
  EXPECT_GE(decoding->tokens().size(), 2u);
  const int32_t decoding_slot = made.rec->Passes()[0][0].slot;  // its 3-token prompt, alone
  const size_t before = made.rec->Passes().size();
  std::vector<int32_t> prompt;
  for (int i = 0; i < 40; ++i) prompt.push_back((i * 11 + 3) % 256);
  auto late = std::make_shared<Collect>();
  EXPECT_TRUE(e.Submit(Req(prompt, 3, 2), late).ok());
  EXPECT_TRUE(late->Wait());
  (*handle)->Cancel();
  EXPECT_TRUE(decoding->Wait());
  const std::vector<std::vector<Segment>> passes = made.rec->Passes();
  std::vector<int> rows;
  int left = 40;
  for (size_t p = before; p < passes.size() && left > 0; ++p) {
    bool decodes = false;
    for (const Segment& seg : passes[p]) decodes |= seg.slot == decoding_slot && seg.rows == 1;
    for (const Segment& seg : passes[p]) {
      if (seg.slot == decoding_slot) continue;
      EXPECT_TRUE(decodes) << "pass " << p << ": the prompt went in without the decoding session";
      rows.push_back(seg.rows);
      left -= seg.rows;
    }
  }
  return rows;
}

// With mixed_prefill_drain_steps the cap is at least the prompt tokens left
// / drain steps: a 40-token prompt beside a decoding session, cap 2, drain
// steps 4, goes in as 10, 8, 6, 4, 3, 3, 2, 2, 2 rows (ceil(left / 4), at
// least 2), not 20 steps of 2; with a prefill chunk of 4, as 4 x 7, then 3,
// 3, 2, 2, 2. Drain steps without the cap they raise are refused.
TEST(EngineTest, MixedPrefillDrainStepsRaiseTheCapWithThePromptTokensLeft) {
  EngineConfig cfg;
  cfg.prefill_chunk = 64;
  cfg.step_token_budget = 64;
  cfg.mixed_prefill_tokens = 2;
  cfg.mixed_prefill_drain_steps = 4;
  EXPECT_EQ(LatePromptRowsBesideADecodingSession(cfg), (std::vector<int>{10, 8, 6, 4, 3, 3, 2, 2, 2}));
  cfg.prefill_chunk = 4;
  EXPECT_EQ(LatePromptRowsBesideADecodingSession(cfg), (std::vector<int>{4, 4, 4, 4, 4, 4, 4, 3, 3, 2, 2, 2}));

  EngineConfig alone;
  alone.mixed_prefill_drain_steps = 8;
  auto model = Model::Load("synthetic:tiny", std::make_unique<CpuBackend>(1), {.progress = false});
  ASSERT_TRUE(model.ok()) << model.status();
  auto refused = Engine::Create(*std::move(model), MakeByteTokenizer(), alone, nullptr, nullptr);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("mixed-prefill cap, which is off"), std::string::npos) << refused.status();
}

// The step log gets a header and one line per step: the prompt step, then
// the decode steps, each with its rows and non-negative phase times.
TEST(EngineTest, StepLogHasALinePerStep) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / "engine_step_log";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  EngineConfig cfg;
  cfg.step_log_path = (dir / "steps.txt").string();
  {
    auto e = MakeEngine(cfg);
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(RunGen(*e, Req({1, 2, 3}, 5, 4)).size(), 4u);
  }
  std::ifstream in(dir / "steps.txt");
  std::string header;
  ASSERT_TRUE(std::getline(in, header));
  EXPECT_EQ(header + "\n", "t_s decode_rows prompt_rows prompt_seqs schedule_ms forward_ms sample_ms emit_ms step_ms\n");
  std::vector<std::array<double, 9>> lines;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::array<double, 9> v{};
    for (double& x : v) ASSERT_TRUE(fields >> x) << line;
    for (double x : v) EXPECT_GE(x, 0) << line;
    EXPECT_GE(v[8] + 1e-3, v[5] + v[6]) << "the step covers its forward and sampling: " << line;
    lines.push_back(v);
  }
  ASSERT_GE(lines.size(), 4u);
  EXPECT_EQ(lines[0][1], 0);  // the prompt alone
  EXPECT_EQ(lines[0][2], 3);
  EXPECT_EQ(lines[0][3], 1);
  for (size_t i = 1; i < lines.size(); ++i) {
    EXPECT_EQ(lines[i][1], 1) << i;  // then one decoding row a step
    EXPECT_EQ(lines[i][2], 0) << i;
    EXPECT_GE(lines[i][0], lines[i - 1][0]) << i;
  }
  // A path that cannot be opened is refused at creation.
  cfg.step_log_path = (dir / "no-such-dir" / "steps.txt").string();
  auto model = Model::Load("synthetic:tiny", std::make_unique<CpuBackend>(1), {.progress = false});
  ASSERT_TRUE(model.ok()) << model.status();
  auto bad = Engine::Create(*std::move(model), MakeByteTokenizer(), cfg, nullptr, nullptr);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("step log"), std::string::npos) << bad.status();
  std::filesystem::remove_all(dir);
}

// Where the backend records passes, Engine::Create runs the decode shapes up
// to max_batch before serving (Model::WarmUpPasses), unless told not to.
TEST(EngineTest, CreateWarmsUpPassesWhereTheBackendRecordsThem) {
  for (bool warm : {true, false}) {
    EngineConfig cfg;
    cfg.max_batch = 5;
    cfg.warm_up_passes = warm;
    RecordedEngine made = MakeRecordedEngine(cfg, /*records=*/true);
    ASSERT_NE(made.engine, nullptr);
    PassRecorder* rec = made.rec;
    // The CPU backend pads nothing: one shape per batch size, run twice.
    EXPECT_EQ(made.engine->warm_up().shapes, warm ? 5 : 0);
    EXPECT_EQ(rec->Passes().size(), warm ? 10u : 0u);
    for (const auto& pass : rec->Passes()) {
      for (const Segment& seg : pass) EXPECT_LT(seg.slot, 0);
    }
    EXPECT_EQ(RunGen(*made.engine, Req({1, 2}, 3, 3)).size(), 3u);
  }
}

// A step of up to max(step_token_budget, max_batch) rows is one pass (the
// model's pass limit is raised to it): a 1,500-token prompt under a 1,500
// budget goes in one pass, under the default budget in two steps.
TEST(EngineTest, AStepIsOnePassUpToTheStepBudget) {
  for (int budget : {1500, 1024}) {
    EngineConfig cfg;
    cfg.step_token_budget = budget;
    cfg.prefill_chunk = 1500;
    RecordedEngine made = MakeRecordedEngine(cfg);
    ASSERT_NE(made.engine, nullptr);
    std::vector<int32_t> prompt;
    for (int i = 0; i < 1500; ++i) prompt.push_back((i * 7 + 1) % 256);
    EXPECT_EQ(RunGen(*made.engine, Req(prompt, 1, 1)).size(), 1u);
    const auto passes = made.rec->Passes();
    ASSERT_FALSE(passes.empty());
    EXPECT_EQ(passes[0].size(), 1u);
    EXPECT_EQ(passes[0][0].rows, budget == 1500 ? 1500 : 1024) << budget;
  }
}

// Limits out of range are refused at creation with a message naming them.
TEST(EngineTest, BadLimitsAreRefused) {
  for (int which = 0; which < 7; ++which) {
    EngineConfig cfg;
    if (which == 0) cfg.mixed_prefill_tokens = -1;
    if (which == 1) cfg.prefill_chunk = 0;
    if (which == 2) cfg.step_token_budget = 0;
    if (which == 3) cfg.mixed_prefill_ratio = -0.5;
    if (which == 4) cfg.mixed_prefill_ratio = std::nan("");
    if (which == 5) cfg.mixed_prefill_ratio = 1e9;
    if (which == 6) cfg.mixed_prefill_drain_steps = -1;
    auto model = Model::Load("synthetic:tiny", std::make_unique<CpuBackend>(1), {.progress = false});
    ASSERT_TRUE(model.ok()) << model.status();
    auto engine = Engine::Create(*std::move(model), MakeByteTokenizer(), cfg, nullptr, nullptr);
    ASSERT_FALSE(engine.ok()) << which;
    EXPECT_EQ(engine.status().code(), absl::StatusCode::kInvalidArgument) << which;
    EXPECT_NE(engine.status().message().find("mixed prefill tokens and drain steps >= 0"), std::string::npos)
        << engine.status();
  }
}

TEST(EngineTest, ConcurrentSessionsEqualTheirSoloRuns) {
  EngineConfig cfg;
  cfg.state_slots = 24;
  cfg.max_batch = 24;
  cfg.prefill_chunk = 3;  // prompts are chunked differently when alone vs together
  auto e = MakeEngine(cfg);
  constexpr int kN = 20;
  std::vector<std::shared_ptr<Collect>> sinks;
  for (int i = 0; i < kN; ++i) {
    sinks.push_back(std::make_shared<Collect>());
    std::vector<int32_t> prompt;
    for (int j = 0; j <= i % 7; ++j) prompt.push_back((i * 31 + j * 7) % 256);
    ASSERT_TRUE(e->Submit(Req(prompt, 100 + i, 10 + i % 5), sinks.back()).ok());
  }
  for (auto& s : sinks) ASSERT_TRUE(s->Wait());
  auto solo = MakeEngine();
  for (int i = 0; i < kN; ++i) {
    std::vector<int32_t> prompt;
    for (int j = 0; j <= i % 7; ++j) prompt.push_back((i * 31 + j * 7) % 256);
    EXPECT_EQ(sinks[i]->tokens(), RunGen(*solo, Req(prompt, 100 + i, 10 + i % 5))) << "session " << i;
  }
}

TEST(EngineTest, SessionContinuesAndForkMatches) {
  auto e = MakeEngine();
  auto s = Sync<SessionInfo>([&](auto d) { e->CreateSession({10, 20, 30}, d); });
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->tokens_seen, 3);
  auto first = RunGen(*e, Req({}, 1, 5, s->id));  // empty prompt: samples from the session's logits
  EXPECT_EQ(first.size(), 5u);
  auto info = Sync<SessionInfo>([&](auto d) { e->GetSession(s->id, d); });
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->tokens_seen, 8);  // every generated token is fed
  auto fork = Sync<SessionInfo>([&](auto d) { e->ForkSession(s->id, d); });
  ASSERT_TRUE(fork.ok());
  EXPECT_NE(fork->id, s->id);
  EXPECT_EQ(fork->tokens_seen, 8);
  EXPECT_EQ(RunGen(*e, Req({40}, 9, 6, s->id)), RunGen(*e, Req({40}, 9, 6, fork->id)));

  // Same as one uninterrupted one-off run over the concatenated tokens.
  std::vector<int32_t> all = {10, 20, 30};
  auto again = MakeEngine();
  auto t = Sync<SessionInfo>([&](auto d) { again->CreateSession({10, 20, 30}, d); });
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(RunGen(*again, Req({}, 1, 5, t->id)), first);
}

TEST(EngineTest, ErrorsAreClearAndLoseNothing) {
  EngineConfig cfg;
  cfg.max_prompt_tokens = 8;
  auto e = MakeEngine(cfg);
  auto s = Sync<SessionInfo>([&](auto d) { e->CreateSession({}, d); });
  ASSERT_TRUE(s.ok());
  auto code = [&](GenerateRequest r) { return e->Submit(std::move(r), std::make_shared<Collect>()).status().code(); };
  EXPECT_EQ(code(Req({1}, 1, 4, "0123456789abcdef0123456789abcdef")), absl::StatusCode::kNotFound);
  EXPECT_EQ(code(Req({}, 1, 4)), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Req({}, 1, 4, s->id)), absl::StatusCode::kInvalidArgument);  // fresh session, no prompt
  EXPECT_EQ(code(Req(std::vector<int32_t>(9, 1), 1, 4)), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Req({600}, 1, 4)), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Req({1}, 1, 0)), absl::StatusCode::kInvalidArgument);
  GenerateRequest bad = Req({1}, 1, 4);
  bad.sampling.top_p = 2;
  auto st = e->Submit(bad, std::make_shared<Collect>()).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("top_p"), std::string::npos);
  // Busy session.
  auto long_run = std::make_shared<Collect>();
  auto h = e->Submit(Req({1, 2}, 1, 100000, s->id), long_run);
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(code(Req({1}, 1, 4, s->id)), absl::StatusCode::kFailedPrecondition);
  (*h)->Cancel();
  ASSERT_TRUE(long_run->Wait(5s));
  EXPECT_EQ(long_run->reason_, FinishReason::kCancelled);
  // The session is intact and usable.
  EXPECT_EQ(RunGen(*e, Req({3}, 2, 3, s->id)).size(), 3u);
}

TEST(EngineTest, QueueFullThenCancelFreesCapacity) {
  EngineConfig cfg;
  cfg.state_slots = 2;
  cfg.max_batch = 2;
  cfg.max_queue = 2;
  auto e = MakeEngine(cfg);
  std::vector<std::shared_ptr<RequestHandle>> handles;
  std::vector<std::shared_ptr<Collect>> sinks;
  for (int i = 0; i < 4; ++i) {  // 2 running + 2 waiting
    sinks.push_back(std::make_shared<Collect>());
    auto h = e->Submit(Req({1}, i, 1000000), sinks.back());
    ASSERT_TRUE(h.ok()) << i << h.status();
    handles.push_back(*h);
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(e->Submit(Req({1}, 9, 4), std::make_shared<Collect>()).status().code(),
            absl::StatusCode::kResourceExhausted);
  for (auto& h : handles) h->Cancel();
  EXPECT_EQ(RunGen(*e, Req({1}, 9, 4)).size(), 4u);
  for (auto& s : sinks) {
    ASSERT_TRUE(s->Wait(5s));
    EXPECT_EQ(s->reason_, FinishReason::kCancelled);
  }
}

TEST(EngineTest, MoreSessionsThanSlotsOffloadAndResume) {
  EngineConfig cfg;
  cfg.state_slots = 3;
  cfg.max_batch = 3;
  auto e = MakeEngine(cfg);
  auto solo = MakeEngine();
  std::vector<std::string> ids, solo_ids;
  for (int i = 0; i < 8; ++i) {
    auto s = Sync<SessionInfo>([&](auto d) { e->CreateSession({i + 1, i + 2}, d); });
    ASSERT_TRUE(s.ok()) << s.status();
    ids.push_back(s->id);
    auto t = Sync<SessionInfo>([&](auto d) { solo->CreateSession({i + 1, i + 2}, d); });
    solo_ids.push_back(t->id);
  }
  // Two rounds over all sessions, concurrently: each must evict and restore.
  for (int round = 0; round < 2; ++round) {
    std::vector<std::shared_ptr<Collect>> sinks;
    for (int i = 0; i < 8; ++i) {
      sinks.push_back(std::make_shared<Collect>());
      ASSERT_TRUE(e->Submit(Req({7}, 50 + i, 4, ids[i]), sinks.back()).ok());
    }
    for (int i = 0; i < 8; ++i) {
      ASSERT_TRUE(sinks[i]->Wait());
      EXPECT_EQ(sinks[i]->tokens(), RunGen(*solo, Req({7}, 50 + i, 4, solo_ids[i]))) << round << " " << i;
    }
  }
  EngineStats st = e->stats();
  EXPECT_EQ(st.slots_total, 3);
  EXPECT_EQ(st.sessions_resident + st.sessions_offloaded, 8);
}

TEST(EngineTest, SaveLoadExportImportAndForeignState) {
  const std::string dir = ::testing::TempDir() + "/engine_store";
  auto store = DirectoryStateStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  auto e = MakeEngine({}, store->get());
  auto s = Sync<SessionInfo>([&](auto d) { e->CreateSession({5, 6, 7}, d); });
  ASSERT_TRUE(s.ok());
  ASSERT_TRUE(SyncStatus([&](auto d) { e->SaveSession(s->id, "snap", d); }).ok());
  EXPECT_EQ(SyncStatus([&](auto d) { e->SaveSession(s->id, "../x", d); }).code(),
            absl::StatusCode::kInvalidArgument);
  auto bytes = Sync<std::string>([&](auto d) { e->ExportSession(s->id, d); });
  ASSERT_TRUE(bytes.ok());
  const auto expected = RunGen(*e, Req({8}, 3, 6, s->id));

  auto loaded = Sync<SessionInfo>([&](auto d) { e->LoadSession("snap", d); });
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->tokens_seen, 3);
  EXPECT_EQ(RunGen(*e, Req({8}, 3, 6, loaded->id)), expected);
  auto imported = Sync<SessionInfo>([&](auto d) { e->ImportSession(*bytes, d); });
  ASSERT_TRUE(imported.ok());
  EXPECT_EQ(RunGen(*e, Req({8}, 3, 6, imported->id)), expected);

  std::string corrupt = *bytes;
  corrupt[corrupt.size() / 2] ^= 1;
  EXPECT_EQ(Sync<SessionInfo>([&](auto d) { e->ImportSession(corrupt, d); }).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Sync<SessionInfo>([&](auto d) { e->ImportSession(bytes->substr(0, 100), d); }).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Sync<SessionInfo>([&](auto d) { e->LoadSession("missing", d); }).status().code(),
            absl::StatusCode::kNotFound);
  auto other = MakeEngine({}, nullptr, "synthetic:v4-tiny");
  auto foreign = Sync<SessionInfo>([&](auto d) { other->ImportSession(*bytes, d); });
  EXPECT_EQ(foreign.status().code(), absl::StatusCode::kFailedPrecondition) << foreign.status();
}

TEST(EngineTest, ShutdownSavesLiveSessionsAndRestoreResumes) {
  const std::string dir = ::testing::TempDir() + "/engine_live";
  std::filesystem::remove_all(dir);
  auto store = DirectoryStateStore::Open(dir);
  ASSERT_TRUE(store.ok());
  std::string id;
  std::vector<int32_t> expected;
  {
    auto ref = MakeEngine();
    auto s = Sync<SessionInfo>([&](auto d) { ref->CreateSession({9, 8}, d); });
    RunGen(*ref, Req({1}, 4, 3, s->id));
    expected = RunGen(*ref, Req({2}, 5, 5, s->id));
  }
  {
    auto e = MakeEngine({}, store->get());
    auto s = Sync<SessionInfo>([&](auto d) { e->CreateSession({9, 8}, d); });
    id = s->id;
    RunGen(*e, Req({1}, 4, 3, id));
    e->Shutdown(absl::Now() + absl::Seconds(5), true);
    EXPECT_EQ(e->Submit(Req({1}, 1, 1), std::make_shared<Collect>()).status().code(),
              absl::StatusCode::kUnavailable);
  }
  auto e2 = MakeEngine({}, store->get());
  ASSERT_TRUE(e2->RestoreSavedSessions().ok());
  auto info = Sync<SessionInfo>([&](auto d) { e2->GetSession(id, d); });
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->tokens_seen, 6);
  EXPECT_EQ(RunGen(*e2, Req({2}, 5, 5, id)), expected);
}

TEST(EngineTest, CutGenerationsKeepEveryStreamedTokenInTheState) {
  const std::string dir = ::testing::TempDir() + "/engine_cut";
  std::filesystem::remove_all(dir);
  auto store = DirectoryStateStore::Open(dir);
  ASSERT_TRUE(store.ok());
  std::string id, id2;
  size_t streamed = 0, streamed2 = 0;
  {
    auto e = MakeEngine({}, store->get());
    auto s = Sync<SessionInfo>([&](auto d) { e->CreateSession({1, 2}, d); });
    auto s2 = Sync<SessionInfo>([&](auto d) { e->CreateSession({3}, d); });
    id = s->id;
    id2 = s2->id;
    // A deadline cuts one generation...
    GenerateRequest timed = Req({4}, 3, 1000000, id2);
    timed.deadline = absl::Now() + absl::Milliseconds(100);
    auto timed_sink = std::make_shared<Collect>();
    ASSERT_TRUE(e->Submit(timed, timed_sink).ok());
    ASSERT_TRUE(timed_sink->Wait(10s));
    EXPECT_EQ(timed_sink->status_.code(), absl::StatusCode::kDeadlineExceeded);
    streamed2 = timed_sink->tokens().size();
    auto info2 = Sync<SessionInfo>([&](auto d) { e->GetSession(id2, d); });
    EXPECT_EQ(info2->tokens_seen, static_cast<int64_t>(1 + 1 + streamed2));
    // ... and shutdown cuts another.
    auto sink = std::make_shared<Collect>();
    ASSERT_TRUE(e->Submit(Req({5}, 3, 1000000, id), sink).ok());
    while (sink->tokens().size() < 5) std::this_thread::sleep_for(1ms);
    e->Shutdown(absl::Now(), true);
    ASSERT_TRUE(sink->Wait(10s));
    EXPECT_EQ(sink->status_.code(), absl::StatusCode::kUnavailable);
    streamed = sink->tokens().size();
  }
  auto e2 = MakeEngine({}, store->get());
  ASSERT_TRUE(e2->RestoreSavedSessions().ok());
  auto info = Sync<SessionInfo>([&](auto d) { e2->GetSession(id, d); });
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->tokens_seen, static_cast<int64_t>(2 + 1 + streamed));
}

TEST(EngineTest, StopStringAndStopToken) {
  auto e = MakeEngine();
  const auto free_run = RunGen(*e, Req({1, 2}, 11, 20));
  ASSERT_EQ(free_run.size(), 20u);
  GenerateRequest r = Req({1, 2}, 11, 20);
  r.sampling.stop_token_ids = {free_run[4]};
  auto sink = std::make_shared<Collect>();
  ASSERT_TRUE(e->Submit(r, sink).ok());
  ASSERT_TRUE(sink->Wait());
  EXPECT_EQ(sink->reason_, FinishReason::kStop);
  EXPECT_LE(sink->tokens_.size(), 4u);
}

}  // namespace
}  // namespace rwkv
