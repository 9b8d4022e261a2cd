#include "client/loadgen/loadgen.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"

namespace rwkv::loadgen {
namespace {

namespace pb = ::rwkv::v1;
using Clock = std::chrono::steady_clock;

double Secs(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

std::string CodeName(grpc::StatusCode code) {
  static const char* kNames[] = {"OK",
                                 "CANCELLED",
                                 "UNKNOWN",
                                 "INVALID_ARGUMENT",
                                 "DEADLINE_EXCEEDED",
                                 "NOT_FOUND",
                                 "ALREADY_EXISTS",
                                 "PERMISSION_DENIED",
                                 "RESOURCE_EXHAUSTED",
                                 "FAILED_PRECONDITION",
                                 "ABORTED",
                                 "OUT_OF_RANGE",
                                 "UNIMPLEMENTED",
                                 "INTERNAL",
                                 "UNAVAILABLE",
                                 "DATA_LOSS",
                                 "UNAUTHENTICATED"};
  const int c = static_cast<int>(code);
  return c >= 0 && c < 17 ? kNames[c] : absl::StrCat("CODE_", c);
}

// Random prompt token ids in [1, vocab) (0 is end-of-text in the World
// vocabulary; a prompt of it would be legal, but not typical).
pb::TokenIds RandomTokens(int64_t n, int32_t vocab, std::mt19937_64& rng) {
  pb::TokenIds ids;
  ids.mutable_ids()->Reserve(static_cast<int>(n));
  std::uniform_int_distribution<int32_t> pick(vocab > 1 ? 1 : 0, std::max(vocab - 1, 0));
  for (int64_t i = 0; i < n; ++i) ids.add_ids(pick(rng));
  return ids;
}

// What one finished request measured.
struct CallResult {
  grpc::Status status;
  Clock::time_point start, end;
  bool got_first = false;
  double ttft = 0;
  std::vector<double> itl;
  std::vector<Clock::time_point> itl_at;  // when each gap's token arrived
  int64_t tokens = 0;
  int64_t prompt_tokens = 0;
  bool has_usage = false;
  double server_ttft = 0, server_queue = 0;
};

class GenerateCall;

// Collects results and decides, in closed and open mode, when to start what.
class Runner {
 public:
  Runner(const LoadSpec& spec, const std::vector<pb::Inference::StubInterface*>& stubs, int32_t vocab)
      : spec_(spec), stub_(*stubs[0]), stubs_(stubs), vocab_(vocab), rng_(spec.seed) {}

  void RunClosedOrOpen(const std::function<void(double, const std::string&)>& progress, LoadReport* report);

  // Called by a finished call (on a gRPC thread) before it deletes itself.
  void Finished(CallResult r, size_t stream, grpc::ClientContext* ctx);

 private:
  friend class GenerateCall;
  bool StopStarting(Clock::time_point now) const {
    if (spec_.requests > 0 && started_ >= spec_.requests) return true;
    return spec_.duration_s > 0 && Secs(now - t0_) >= spec_.duration_s;
  }
  // Makes one request for `stream` (closed mode: the stream's index, for
  // sticky sessions) and counts it as started; mu_ held. The caller starts it
  // with Launch after releasing mu_: gRPC may run a reaction (and so
  // Finished, which takes mu_) on the starting thread.
  GenerateCall* PrepareLocked(size_t stream);
  void Launch(GenerateCall* call);
  double ProgressLocked(Clock::time_point now) const;

  const LoadSpec& spec_;
  pb::Inference::StubInterface& stub_;  // sessions
  const std::vector<pb::Inference::StubInterface*> stubs_;  // generations: stream i on stubs_[i % size]
  const int32_t vocab_;
  std::mt19937_64 rng_;
  std::vector<std::string> sessions_;  // sticky mode: one per stream

  std::mutex mu_;
  std::condition_variable cv_;
  Clock::time_point t0_;
  bool stopping_ = false;
  int64_t started_ = 0, inflight_ = 0, dropped_ = 0;
  // Contexts of calls not yet finished, for cancellation at the end of the
  // drain. Finished erases a call's entry (under mu_) before the call is
  // deleted, and TryCancel runs under mu_, so no entry ever dangles.
  std::unordered_set<grpc::ClientContext*> live_;
  // Tokens received so far, counted as messages arrive (for the steady window).
  std::atomic<int64_t> arrived_{0};
  bool window_open_ = false;
  int64_t window_tokens0_ = 0;
  Clock::time_point window_t0_, window_t1_;
  // results
  int64_t succeeded_ = 0, failed_ = 0, prompt_tokens_ = 0, generated_ = 0;
  std::map<std::string, int64_t> errors_;
  std::string first_error_;
  std::vector<double> ttft_, itl_, e2e_, server_ttft_, server_queue_;
  std::vector<Clock::time_point> itl_at_;  // parallel to itl_
  bool any_ = false;
  Clock::time_point first_start_, last_end_;
};

class GenerateCall final : public grpc::ClientReadReactor<pb::GenerateResponse> {
 public:
  GenerateCall(Runner* runner, size_t stream, pb::GenerateRequest request, int64_t prompt_tokens)
      : runner_(runner), stream_(stream), request_(std::move(request)) {
    result_.prompt_tokens = prompt_tokens;
  }
  grpc::ClientContext* context() { return &ctx_; }
  size_t stream() const { return stream_; }

  void Start(pb::Inference::StubInterface& stub, double timeout_s) {
    ctx_.set_deadline(std::chrono::system_clock::now() +
                      std::chrono::microseconds(static_cast<int64_t>(timeout_s * 1e6)));
    result_.start = Clock::now();
    stub.async()->Generate(&ctx_, &request_, this);
    StartRead(&response_);
    StartCall();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // the stream ended; OnDone follows
    const Clock::time_point now = Clock::now();
    const int n = response_.token_ids_size();
    if (n > 0) {
      if (!result_.got_first) {
        result_.got_first = true;
        result_.ttft = Secs(now - result_.start);
      } else {
        const double gap = Secs(now - last_) / n;
        for (int i = 0; i < n; ++i) {
          result_.itl.push_back(gap);
          result_.itl_at.push_back(now);
        }
      }
      last_ = now;
      result_.tokens += n;
      runner_->arrived_.fetch_add(n, std::memory_order_relaxed);
    }
    if (response_.has_usage()) {
      result_.has_usage = true;
      result_.server_ttft = response_.usage().time_to_first_token_seconds();
      result_.server_queue = response_.usage().queue_seconds();
    }
    StartRead(&response_);
  }

  void OnDone(const grpc::Status& status) override {
    result_.status = status;
    result_.end = Clock::now();
    runner_->Finished(std::move(result_), stream_, &ctx_);
    delete this;
  }

 private:
  Runner* runner_;
  size_t stream_;
  grpc::ClientContext ctx_;
  pb::GenerateRequest request_;
  pb::GenerateResponse response_;
  Clock::time_point last_;
  CallResult result_;
};

GenerateCall* Runner::PrepareLocked(size_t stream) {
  pb::GenerateRequest req;
  const int64_t prompt = spec_.prompt_tokens.Sample(rng_);
  *req.mutable_tokens() = RandomTokens(prompt, vocab_, rng_);
  req.set_max_tokens(static_cast<int32_t>(std::min<int64_t>(spec_.max_tokens.Sample(rng_), INT32_MAX)));
  if (spec_.temperature) req.mutable_sampling()->set_temperature(*spec_.temperature);
  req.mutable_sampling()->set_seed(rng_());
  req.mutable_stop()->set_ignore_end_of_text(!spec_.stop_at_eot);
  if (stream < sessions_.size()) req.set_session_id(sessions_[stream]);
  auto* call = new GenerateCall(this, stream, std::move(req), prompt);
  ++started_;
  ++inflight_;
  live_.insert(call->context());
  return call;
}

void Runner::Launch(GenerateCall* call) {
  call->Start(*stubs_[call->stream() % stubs_.size()], spec_.request_timeout_s);
}

void Runner::Finished(CallResult r, size_t stream, grpc::ClientContext* ctx) {
  GenerateCall* next = nullptr;
  {
  std::lock_guard<std::mutex> lock(mu_);
  live_.erase(ctx);  // the call is about to be deleted: never cancel it now
  --inflight_;
  if (!any_ || r.start < first_start_) first_start_ = r.start;
  if (!any_ || r.end > last_end_) last_end_ = r.end;
  any_ = true;
  generated_ += r.tokens;
  prompt_tokens_ += r.prompt_tokens;
  if (r.status.ok()) {
    ++succeeded_;
    e2e_.push_back(Secs(r.end - r.start));
  } else {
    ++failed_;
    ++errors_[CodeName(r.status.error_code())];
    if (first_error_.empty()) {
      first_error_ = absl::StrCat(CodeName(r.status.error_code()), ": ", r.status.error_message());
    }
  }
  if (r.got_first) ttft_.push_back(r.ttft);
  if (r.has_usage) {
    server_ttft_.push_back(r.server_ttft);
    server_queue_.push_back(r.server_queue);
  }
  itl_.insert(itl_.end(), r.itl.begin(), r.itl.end());
  itl_at_.insert(itl_at_.end(), r.itl_at.begin(), r.itl_at.end());
  // Closed mode: the stream starts its next request at once.
  if (spec_.mode == LoadMode::kClosed && !stopping_ && !StopStarting(Clock::now())) next = PrepareLocked(stream);
  cv_.notify_all();
  }
  if (next != nullptr) Launch(next);
}

double Runner::ProgressLocked(Clock::time_point now) const {
  double f = 0;
  if (spec_.requests > 0) f = static_cast<double>(started_ - inflight_) / static_cast<double>(spec_.requests);
  if (spec_.duration_s > 0) f = std::max(f, Secs(now - t0_) / spec_.duration_s);
  return std::clamp(f, 0.0, 1.0);
}

void Runner::RunClosedOrOpen(const std::function<void(double, const std::string&)>& progress,
                             LoadReport* report) {
  if (spec_.sticky_sessions) {
    for (int32_t i = 0; i < spec_.concurrency; ++i) {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
      pb::CreateSessionRequest req;
      pb::Session session;
      const grpc::Status st = stub_.CreateSession(&ctx, req, &session);
      if (!st.ok()) {
        ++errors_[CodeName(st.error_code())];
        if (first_error_.empty()) first_error_ = absl::StrCat("CreateSession: ", st.error_message());
        continue;
      }
      sessions_.push_back(session.id());
    }
  }
  std::unique_lock<std::mutex> lock(mu_);
  t0_ = Clock::now();
  std::exponential_distribution<double> gap(spec_.rate > 0 ? spec_.rate : 1.0);
  Clock::time_point next_arrival = t0_;
  Clock::time_point next_progress = t0_;
  auto tick = [&](Clock::time_point now) {
    if (!window_open_ && Secs(now - t0_) >= spec_.warmup_s) {
      window_open_ = true;
      window_t0_ = now;
      window_tokens0_ = arrived_.load();
    }
    if (progress && now >= next_progress) {
      next_progress = now + std::chrono::milliseconds(200);
      const double wall = std::max(Secs(now - t0_), 1e-9);
      const std::string line =
          absl::StrFormat("%lld done, %lld in flight, %lld tokens, %.0f tok/s, %lld errors",
                          static_cast<long long>(succeeded_ + failed_), static_cast<long long>(inflight_),
                          static_cast<long long>(generated_), static_cast<double>(generated_) / wall,
                          static_cast<long long>(failed_));
      const double f = ProgressLocked(now);
      lock.unlock();
      progress(f, line);
      lock.lock();
    }
  };
  tick(t0_);  // opens the steady window now when there is no warm-up
  if (spec_.mode == LoadMode::kClosed) {
    const size_t streams = spec_.sticky_sessions ? sessions_.size() : static_cast<size_t>(spec_.concurrency);
    for (size_t i = 0; i < streams && !StopStarting(Clock::now()); ++i) {
      GenerateCall* call = PrepareLocked(i);
      lock.unlock();
      Launch(call);
      lock.lock();
    }
    while (!StopStarting(Clock::now()) && inflight_ > 0) {
      cv_.wait_for(lock, std::chrono::milliseconds(50));
      tick(Clock::now());
    }
  } else {
    while (!StopStarting(Clock::now())) {
      const Clock::time_point now = Clock::now();
      if (now >= next_arrival) {
        if (inflight_ >= spec_.max_inflight) {
          ++dropped_;
          ++started_;  // an arrival, counted against --requests
        } else {
          GenerateCall* call = PrepareLocked(SIZE_MAX);
          lock.unlock();
          Launch(call);
          lock.lock();
        }
        next_arrival += std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(gap(rng_)));
        continue;
      }
      cv_.wait_until(lock, std::min(next_arrival, now + std::chrono::milliseconds(50)));
      tick(Clock::now());
    }
  }
  // The steady window ends with the last start.
  tick(Clock::now());
  if (window_open_) {
    window_t1_ = Clock::now();
    report->steady_window_s = Secs(window_t1_ - window_t0_);
    if (report->steady_window_s > 0) {
      report->steady_tokens_per_s =
          static_cast<double>(arrived_.load() - window_tokens0_) / report->steady_window_s;
    }
  }
  // Drain: no new requests; wait for the in-flight ones, then cancel the rest.
  stopping_ = true;
  const Clock::time_point drain_end =
      Clock::now() + std::chrono::microseconds(static_cast<int64_t>(spec_.drain_s * 1e6));
  while (inflight_ > 0 && Clock::now() < drain_end) {
    cv_.wait_until(lock, std::min(drain_end, Clock::now() + std::chrono::milliseconds(50)));
    tick(Clock::now());
  }
  if (inflight_ > 0) {
    for (grpc::ClientContext* c : live_) c->TryCancel();
    cv_.wait(lock, [&] { return inflight_ == 0; });  // a cancelled call always ends
  }
  if (progress) {
    lock.unlock();
    progress(1.0, "done");
    lock.lock();
  }
  for (const std::string& id : sessions_) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    pb::SessionRequest req;
    req.set_session_id(id);
    pb::DeleteSessionResponse resp;
    (void)stub_.DeleteSession(&ctx, req, &resp);
  }
  report->started = started_ - dropped_;
  report->dropped = dropped_;
  report->succeeded = succeeded_;
  report->failed = failed_;
  report->errors_by_code = errors_;
  report->first_error = first_error_;
  report->prompt_tokens = prompt_tokens_;
  report->generated_tokens = generated_;
  report->wall_s = any_ ? Secs(last_end_ - first_start_) : 0;
  report->ttft = Summarize(std::move(ttft_));
  if (window_open_) {
    std::vector<double> steady;
    for (size_t i = 0; i < itl_.size(); ++i) {
      if (itl_at_[i] >= window_t0_ && itl_at_[i] <= window_t1_) steady.push_back(itl_[i]);
    }
    report->itl_steady = Summarize(std::move(steady));
  }
  report->itl = Summarize(std::move(itl_));
  report->e2e = Summarize(std::move(e2e_));
  report->server_ttft = Summarize(std::move(server_ttft_));
  report->server_queue = Summarize(std::move(server_queue_));
  if (report->wall_s > 0) {
    report->generated_tokens_per_s = static_cast<double>(generated_) / report->wall_s;
    report->requests_per_s = static_cast<double>(succeeded_) / report->wall_s;
  }
}

void RunContext(const LoadSpec& spec, pb::Inference::StubInterface& stub, int32_t vocab,
                const std::function<void(double, const std::string&)>& progress, LoadReport* report) {
  std::mt19937_64 rng(spec.seed);
  const int64_t total = static_cast<int64_t>(spec.context_lengths.size()) * spec.context_repeats;
  int64_t done = 0;
  const Clock::time_point t0 = Clock::now();
  // Repeats interleave the lengths (100, 10k, 100k, 100, 10k, 100k, ...) so a
  // drift of the machine over the run hits every length alike.
  for (int32_t rep = 0; rep < spec.context_repeats; ++rep) {
    for (int64_t length : spec.context_lengths) {
      LoadReport::ContextRun run;
      run.context_tokens = length;
      if (progress) {
        progress(static_cast<double>(done) / static_cast<double>(total),
                 absl::StrCat("context ", length, " (run ", rep + 1, " of ", spec.context_repeats, ")"));
      }
      pb::CreateSessionRequest create;
      *create.mutable_prompt_tokens() = RandomTokens(length, vocab, rng);
      pb::Session session;
      {
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::microseconds(static_cast<int64_t>(spec.request_timeout_s * 1e6)));
        const Clock::time_point s = Clock::now();
        const grpc::Status st = stub.CreateSession(&ctx, create, &session);
        run.prefill_s = Secs(Clock::now() - s);
        if (!st.ok()) {
          run.error = absl::StrCat("CreateSession: ", CodeName(st.error_code()), ": ", st.error_message());
          report->context_runs.push_back(std::move(run));
          ++done;
          continue;
        }
      }
      pb::GenerateRequest req;
      req.set_session_id(session.id());
      req.set_max_tokens(static_cast<int32_t>(std::min<int64_t>(spec.max_tokens.Sample(rng), INT32_MAX)));
      if (spec.temperature) req.mutable_sampling()->set_temperature(*spec.temperature);
      req.mutable_sampling()->set_seed(rng());
      req.mutable_stop()->set_ignore_end_of_text(!spec.stop_at_eot);
      {
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::microseconds(static_cast<int64_t>(spec.request_timeout_s * 1e6)));
        auto reader = stub.Generate(&ctx, req);
        pb::GenerateResponse resp;
        std::vector<double> itl;
        bool first = true;
        Clock::time_point last;
        while (reader->Read(&resp)) {
          const Clock::time_point now = Clock::now();
          const int n = resp.token_ids_size();
          if (n == 0) continue;
          if (!first) {
            for (int i = 0; i < n; ++i) itl.push_back(Secs(now - last) / n);
          }
          first = false;
          last = now;
          run.generated += n;
        }
        const grpc::Status st = reader->Finish();
        if (!st.ok()) run.error = absl::StrCat("Generate: ", CodeName(st.error_code()), ": ", st.error_message());
        run.itl = Summarize(std::move(itl));
      }
      {
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
        pb::SessionRequest del;
        del.set_session_id(session.id());
        pb::DeleteSessionResponse resp;
        (void)stub.DeleteSession(&ctx, del, &resp);
      }
      if (!run.error.empty()) {
        ++report->failed;
        if (report->first_error.empty()) report->first_error = run.error;
      } else {
        ++report->succeeded;
      }
      report->generated_tokens += run.generated;
      report->prompt_tokens += length;
      report->context_runs.push_back(std::move(run));
      ++done;
    }
  }
  report->started = total;
  report->wall_s = Secs(Clock::now() - t0);
  if (progress) progress(1.0, "done");
}

nlohmann::json SummaryJson(const Summary& s) {
  return {{"count", s.count}, {"mean", s.mean}, {"min", s.min}, {"max", s.max},
          {"p50", s.p50},     {"p90", s.p90},   {"p99", s.p99}};
}

std::string Ms(double s) { return absl::StrFormat("%.2f", s * 1e3); }

}  // namespace

double Quantile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  const double pos = std::clamp(q, 0.0, 1.0) * static_cast<double>(sorted.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  const double frac = pos - static_cast<double>(lo);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * frac;
}

Summary Summarize(std::vector<double> samples) {
  Summary s;
  if (samples.empty()) return s;
  std::sort(samples.begin(), samples.end());
  s.count = static_cast<int64_t>(samples.size());
  double sum = 0;
  for (double x : samples) sum += x;
  s.mean = sum / static_cast<double>(samples.size());
  s.min = samples.front();
  s.max = samples.back();
  s.p50 = Quantile(samples, 0.50);
  s.p90 = Quantile(samples, 0.90);
  s.p99 = Quantile(samples, 0.99);
  return s;
}

absl::StatusOr<LoadReport> RunLoad(const LoadSpec& spec, pb::Inference::StubInterface& stub,
                                   const std::function<void(double, const std::string&)>& progress) {
  return RunLoad(spec, std::vector<pb::Inference::StubInterface*>{&stub}, progress);
}

absl::StatusOr<LoadReport> RunLoad(const LoadSpec& spec, const std::vector<pb::Inference::StubInterface*>& stubs,
                                   const std::function<void(double, const std::string&)>& progress) {
  if (stubs.empty() || std::find(stubs.begin(), stubs.end(), nullptr) != stubs.end()) {
    return absl::InvalidArgumentError("RunLoad needs at least one stub and no null ones");
  }
  for (auto* s : stubs) {
    if (s->async() == nullptr) return absl::InvalidArgumentError("the stub has no callback API");
  }
  pb::Inference::StubInterface& stub = *stubs[0];
  LoadReport report;
  report.spec = spec;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    const grpc::Status st = stub.GetModelInfo(&ctx, pb::GetModelInfoRequest(), &report.model);
    if (!st.ok()) {
      return absl::UnavailableError(absl::StrCat("GetModelInfo at ", spec.server, " failed: ",
                                                 CodeName(st.error_code()), ": ", st.error_message()));
    }
  }
  const int32_t vocab = report.model.vocab_size();
  if (spec.mode == LoadMode::kContext) {
    RunContext(spec, stub, vocab, progress, &report);
  } else {
    Runner runner(spec, stubs, vocab);
    runner.RunClosedOrOpen(progress, &report);
  }
  return report;
}

std::string ReportJson(const LoadReport& r) {
  const LoadSpec& s = r.spec;
  nlohmann::json j;
  j["config"] = {{"server", s.server},
                 {"mode", ModeName(s.mode)},
                 {"concurrency", s.concurrency},
                 {"connections", s.connections},
                 {"rate", s.rate},
                 {"duration_s", s.duration_s},
                 {"requests", s.requests},
                 {"prompt_tokens", s.prompt_tokens.ToString()},
                 {"max_tokens", s.max_tokens.ToString()},
                 {"sessions", s.sticky_sessions ? "sticky" : "ephemeral"},
                 {"seed", s.seed}};
  j["model"] = {{"model", r.model.model()},         {"architecture", r.model.architecture()},
                {"backend", r.model.backend()},     {"weight_dtype", r.model.weight_dtype()},
                {"n_layer", r.model.n_layer()},     {"n_embd", r.model.n_embd()},
                {"params", r.model.params()}};
  j["wall_s"] = r.wall_s;
  j["requests"] = {{"started", r.started},     {"succeeded", r.succeeded}, {"failed", r.failed},
                   {"dropped", r.dropped},     {"errors_by_code", r.errors_by_code},
                   {"first_error", r.first_error}};
  j["tokens"] = {{"prompt", r.prompt_tokens}, {"generated", r.generated_tokens}};
  j["throughput"] = {{"generated_tokens_per_s", r.generated_tokens_per_s},
                     {"requests_per_s", r.requests_per_s},
                     {"steady_tokens_per_s", r.steady_tokens_per_s},
                     {"steady_window_s", r.steady_window_s}};
  j["ttft_s"] = SummaryJson(r.ttft);
  j["itl_s"] = SummaryJson(r.itl);
  j["itl_steady_s"] = SummaryJson(r.itl_steady);
  j["e2e_s"] = SummaryJson(r.e2e);
  j["server_ttft_s"] = SummaryJson(r.server_ttft);
  j["server_queue_s"] = SummaryJson(r.server_queue);
  if (s.mode == LoadMode::kContext) {
    nlohmann::json runs = nlohmann::json::array();
    for (const auto& c : r.context_runs) {
      runs.push_back({{"context_tokens", c.context_tokens},
                      {"prefill_s", c.prefill_s},
                      {"prefill_tokens_per_s", c.prefill_s > 0 ? static_cast<double>(c.context_tokens) / c.prefill_s : 0},
                      {"generated", c.generated},
                      {"itl_s", SummaryJson(c.itl)},
                      {"error", c.error}});
    }
    j["context_runs"] = runs;
  }
  return j.dump(2) + "\n";
}

std::string ReportText(const LoadReport& r) {
  const LoadSpec& s = r.spec;
  std::string out = absl::StrFormat(
      "rwkv-loadgen: %s (%s, %s, %s weights) at %s\n", r.model.model(), r.model.architecture(),
      r.model.backend(), r.model.weight_dtype(), s.server);
  if (s.mode == LoadMode::kContext) {
    absl::StrAppend(&out, "mode context: per length, a session prefilled with L random tokens, then ",
                    s.max_tokens.ToString(), " tokens generated alone\n");
    absl::StrAppend(&out, "  context   prefill s  prefill tok/s  tokens  ITL p50 ms  p90 ms  p99 ms  mean ms\n");
    for (const auto& c : r.context_runs) {
      if (!c.error.empty()) {
        absl::StrAppend(&out, absl::StrFormat("  %7lld   error: %s\n", static_cast<long long>(c.context_tokens), c.error));
        continue;
      }
      absl::StrAppend(&out, absl::StrFormat("  %7lld  %10.3f  %13.0f  %6lld  %10s  %6s  %6s  %7s\n",
                                            static_cast<long long>(c.context_tokens), c.prefill_s,
                                            c.prefill_s > 0 ? static_cast<double>(c.context_tokens) / c.prefill_s : 0,
                                            static_cast<long long>(c.generated), Ms(c.itl.p50), Ms(c.itl.p90),
                                            Ms(c.itl.p99), Ms(c.itl.mean)));
    }
  } else {
    absl::StrAppend(&out, "mode ", ModeName(s.mode),
                    s.mode == LoadMode::kClosed ? absl::StrCat(", concurrency ", s.concurrency)
                                                : absl::StrCat(", ", s.rate, " requests/s"),
                    ", prompt tokens ", s.prompt_tokens.ToString(), ", max tokens ", s.max_tokens.ToString(),
                    ", sessions ", s.sticky_sessions ? "sticky" : "ephemeral", ", connections ", s.connections,
                    "\n");
    absl::StrAppend(&out, absl::StrFormat("requests: %lld started, %lld succeeded, %lld failed, %lld dropped\n",
                                          static_cast<long long>(r.started), static_cast<long long>(r.succeeded),
                                          static_cast<long long>(r.failed), static_cast<long long>(r.dropped)));
    absl::StrAppend(&out, absl::StrFormat("generated: %lld tokens in %.3f s = %.1f tokens/s (%.2f requests/s)\n",
                                          static_cast<long long>(r.generated_tokens), r.wall_s,
                                          r.generated_tokens_per_s, r.requests_per_s));
    absl::StrAppend(&out, absl::StrFormat("steady: %.1f tokens/s over %.3f s (from %.1f s in to the last start)\n",
                                          r.steady_tokens_per_s, r.steady_window_s, s.warmup_s));
    auto row = [&](const char* name, const Summary& m) {
      absl::StrAppend(&out, absl::StrFormat("%-5s ms  p50 %9s  p90 %9s  p99 %9s  mean %9s  max %9s  (n=%lld)\n", name,
                                            Ms(m.p50), Ms(m.p90), Ms(m.p99), Ms(m.mean), Ms(m.max),
                                            static_cast<long long>(m.count)));
    };
    row("TTFT", r.ttft);
    row("ITL", r.itl);
    if (r.itl_steady.count > 0) row("ITLsw", r.itl_steady);
    row("E2E", r.e2e);
    row("sTTFT", r.server_ttft);
    row("queue", r.server_queue);
  }
  if (!r.errors_by_code.empty()) {
    absl::StrAppend(&out, "errors:");
    for (const auto& [code, n] : r.errors_by_code) absl::StrAppend(&out, " ", code, "=", n);
    absl::StrAppend(&out, "\n  e.g. ", r.first_error, "\n");
  }
  return out;
}

}  // namespace rwkv::loadgen
