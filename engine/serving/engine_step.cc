// The engine thread: run commands, admit waiting requests, build one batch
// (every decoding request's next token, then prompt chunks within the token
// budget), run the model once, then sample, stream and finish (streaming
// overlaps the next step's forward: see Overlap below). Results do
// not depend on the batch: the backend computes every row independently
// (see cpu_gemm.h) and each request samples with its own seeded RNG.
//
// Device sampling (a backend that samples in its own memory, e.g. CUDA): the
// forward keeps the logits on the backend and one SampleRows call picks every
// request's token, so no [batch, vocab] copy reaches the host. A session's
// last_logits are then copied only when the host needs them: for
// top_logprobs, when its request ends (every end goes through Finish, which
// copies the row first), and before a forward that would overwrite the row
// of a session not fed in it (BeforeForward). So an idle session's
// last_logits are always right, as on the host path.
//
// Overlap: the forward on a GPU returns once queued (ForwardKeepLogits), and
// the sampling call waits for it. The per-token output work of the step
// before (detokenizing, stop strings, building and queuing the stream
// messages, latency metrics: about a millisecond at B = 1024) runs in that
// gap (FlushEmits, whose sink calls go to the I/O thread at once), so a
// sampled token reaches its stream one forward launch later. What the next step's plan and sampling read is still settled when
// the token is sampled: the stop-token check, the sampler's penalties,
// logprobs, max_tokens. A stop string found in the deferred text ends the
// request in the same step as before: its token is fed in the forward just
// launched, and the check after that forward ends it. On the host path
// (Forward returns with the logits, nothing runs beside it) the queued work
// runs just before the forward instead, so no token waits a whole forward.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <unordered_set>

#include "absl/strings/str_cat.h"
#include "engine/serving/engine_impl.h"

namespace rwkv {
namespace {
double Seconds(absl::Duration d) { return absl::ToDoubleSeconds(d); }
}  // namespace

void EngineImpl::Loop() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      auto runnable = [&] { return exit_ || !commands_.empty() || !running_.empty(); };
      if (waiting_.empty()) {
        cv_.wait(lock, [&] { return runnable() || !waiting_.empty(); });
      } else if (!runnable()) {
        // Waiting requests may become admissible when a slot frees up; the
        // step notifies, but poll too so no wake-up can be missed.
        cv_.wait_for(lock, std::chrono::milliseconds(5), runnable);
      }
      if (exit_ && commands_.empty()) return;
      while (!commands_.empty()) {
        auto cmd = std::move(commands_.front());
        commands_.pop_front();
        cmd();
      }
    }
    RunLater();
    Step();
    RunLater();
    cv_.notify_all();  // Shutdown waits for the queues to empty
  }
}

void EngineImpl::RunLater() {
  if (later_.empty()) return;
  // The sink calls (for gRPC: building and serializing each stream's message
  // and starting its write) go to the I/O thread in one batch, in order, so
  // the next step starts at once instead of after B writes: at B = 1024 on a
  // GPU those writes took about a third of every step on this thread.
  std::vector<std::function<void()>> later;
  later.swap(later_);
  RunOnIo([later = std::move(later)] {
    for (auto& fn : later) fn();
  });
}

void EngineImpl::Admit() {
  // In arrival order. A request whose session cannot get a slot now waits,
  // but requests behind it whose sessions are already resident still start
  // (they need no slot), so a full pool cannot deadlock.
  const absl::Time now = absl::Now();
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    std::shared_ptr<Request> r = *it;
    if (r->cancelled || now > r->req.deadline) {
      it = waiting_.erase(it);
      Finish(r.get(),
             r->cancelled ? absl::OkStatus() : absl::DeadlineExceededError("the request deadline passed in the queue"),
             FinishReason::kCancelled);
      continue;
    }
    if (static_cast<int32_t>(running_.size()) >= config_.max_batch || !MakeResident(r->session)) {
      ++it;  // keep scanning: later entries may be cancelled or already resident
      continue;
    }
    it = waiting_.erase(it);
    r->started = absl::Now();
    if (metrics_ && r->sink) metrics_->request_queue_time.Observe(Seconds(r->started - r->submitted));
    running_.push_back(std::move(r));
  }
}

void EngineImpl::MaterializeLogits(Session* s) {
  if (s->kept_logits_row < 0) return;
  const int32_t row = s->kept_logits_row;
  s->kept_logits_row = -1;
  s->last_logits.resize(static_cast<size_t>(model_->config().vocab_size));
  if (!model_->DownloadKeptLogits(row, s->last_logits.data()).ok()) healthy_ = false;
}

void EngineImpl::BeforeForward(const std::vector<Session*>& fed) {
  if (!device_sampling_) return;
  for (Session* s : fed) s->kept_logits_row = -1;
  // Only sessions fed in the last forward can hold a kept row: a walk over
  // them, not over the whole table (thousands of idle sessions on a GPU).
  for (Session* s : kept_sessions_) MaterializeLogits(s);
  kept_sessions_.clear();
}

void EngineImpl::Finish(Request* r, absl::Status status, FinishReason reason) {
  // Its queued tokens go first: OnTokens before OnFinish, and the decoder and
  // stop matcher must have seen every token before the tail is taken below.
  if (r->deferred_emits > 0) FlushEmits();
  Session* s = r->session;
  // The session goes idle: its last logits must be on the host (a one-off
  // session is dropped below, so it needs none).
  if (s->ephemeral) {
    s->kept_logits_row = -1;
  } else {
    MaterializeLogits(s);
  }
  s->busy = false;
  s->last_used = absl::Now();
  GenerateUsage usage;
  usage.prompt_tokens = static_cast<int32_t>(r->prompt_pos);
  usage.generated_tokens = r->generated;
  usage.queue_time_s = r->started == absl::Time() ? Seconds(absl::Now() - r->submitted)
                                                  : Seconds(r->started - r->submitted);
  usage.time_to_first_token_s = r->first_token == absl::Time() ? 0 : Seconds(r->first_token - r->submitted);
  usage.total_time_s = Seconds(absl::Now() - r->submitted);
  std::string tail;
  if (r->decoder && !(r->stops && r->stops->stopped())) tail = r->stops->Push(r->decoder->Finish()).emit;
  if (r->stops && !r->stops->stopped()) tail += r->stops->Finish();
  if (s->ephemeral) DropSession(s);
  r->session = nullptr;
  if (metrics_ && r->sink) {
    if (status.ok()) {
      metrics_->request_success_family.Add({{"finish_reason", FinishReasonName(reason)}}).Increment();
      metrics_->e2e_request_latency.Observe(usage.total_time_s);
    } else if (status.code() == absl::StatusCode::kDeadlineExceeded) {
      metrics_->failure_timeout.Increment();
    } else {
      metrics_->failure_internal.Increment();
    }
  }
  if (r->sink) {
    Later([sink = r->sink, status, reason, tail = std::move(tail), usage] {
      sink->OnFinish(status, reason, tail, usage);
    });
  } else if (r->prefill_done) {
    Later([done = std::move(r->prefill_done), status] { done(status); });
  }
  r->sink.reset();
}

void EngineImpl::FlushEmits() {
  if (emits_.empty()) return;
  std::vector<PendingEmit> emits;
  emits.swap(emits_);
  for (PendingEmit& e : emits) {
    Request* r = e.r.get();
    --r->deferred_emits;
    if (!r->sink) continue;  // already finished (Finish flushes first, so not expected)
    const StopMatchResult m = r->stops->Push(r->decoder->Push(e.event.token));
    e.event.text = m.emit;
    // A stop string wins over max_tokens (kLength, set when the token was
    // sampled), as when this ran in that step. The token is fed in this
    // step's forward and the check after that forward ends the request: the
    // same step as when the stop was found before the step was planned.
    if (m.stopped) r->finish_after_feed = FinishReason::kStop;
    if (metrics_) {
      metrics_->generation_tokens.Increment();
      if (e.first) {
        metrics_->time_to_first_token.Observe(e.latency_s);
      } else {
        metrics_->inter_token_latency.Observe(e.latency_s);
      }
    }
    std::vector<TokenEvent> events;
    events.push_back(std::move(e.event));
    Later([sink = r->sink, events = std::move(events)]() mutable { sink->OnTokens(std::move(events)); });
  }
}

bool EngineImpl::Step() {
  struct Planned {
    std::shared_ptr<Request> r;
    std::vector<int32_t> tokens;
    bool decode;
  };
  std::vector<Planned> plan;
  const absl::Time step_start = absl::Now();
  absl::Time forward_start, forward_end;
  absl::Duration sample_time;
  absl::Duration emit_before_forward;  // FlushEmits before the forward (counted as emit, not schedule)
  auto flush_now = [&] {
    if (emits_.empty()) return;
    const absl::Time t = absl::Now();
    FlushEmits();
    RunLater();
    emit_before_forward += absl::Now() - t;
  };
  {
    std::lock_guard<std::mutex> lock(mu_);
    Admit();
    const absl::Time now = absl::Now();
    // Drop cancelled, expired and finished requests.
    for (size_t i = 0; i < running_.size();) {
      Request* r = running_[i].get();
      std::optional<absl::Status> end;
      FinishReason reason = FinishReason::kCancelled;
      if (now > r->req.deadline) r->expired = true;
      if (r->pending_token < 0 && (r->cancelled || r->expired)) {
        end = r->expired ? absl::DeadlineExceededError("the request deadline passed") : absl::OkStatus();
      }
      if (end) {
        Finish(r, *end, reason);
        running_.erase(running_.begin() + static_cast<int64_t>(i));
      } else {
        ++i;
      }
    }
    int32_t budget = config_.step_token_budget;
    for (auto& r : running_) {
      if (r->pending_token >= 0) {
        plan.push_back({r, {r->pending_token}, true});
        --budget;
      }
    }
    // While sessions decode, prompts get at most
    // max(mixed_prefill_tokens, mixed_prefill_ratio x decoding,
    //     prompt tokens left / mixed_prefill_drain_steps) rows.
    if (!plan.empty() && (config_.mixed_prefill_tokens > 0 || config_.mixed_prefill_ratio > 0)) {
      const double by_ratio = std::ceil(config_.mixed_prefill_ratio * static_cast<double>(plan.size()));
      int32_t cap = std::max(config_.mixed_prefill_tokens,
                             static_cast<int32_t>(std::min(by_ratio, static_cast<double>(INT32_MAX))));
      if (config_.mixed_prefill_drain_steps > 0) {
        int64_t left = 0;
        for (const auto& r : running_) {
          if (r->pending_token < 0 && r->prompt_pos < r->req.prompt.size()) {
            left += static_cast<int64_t>(r->req.prompt.size() - r->prompt_pos);
          }
        }
        const int64_t steps = config_.mixed_prefill_drain_steps;
        cap = static_cast<int32_t>(std::min<int64_t>(std::max<int64_t>(cap, (left + steps - 1) / steps), INT32_MAX));
      }
      budget = std::min(budget, cap);
    }
    for (auto& r : running_) {
      if (r->pending_token >= 0 || r->prompt_pos >= r->req.prompt.size()) continue;
      const size_t left = r->req.prompt.size() - r->prompt_pos;
      const int32_t take = static_cast<int32_t>(
          std::min<size_t>({left, static_cast<size_t>(config_.prefill_chunk), static_cast<size_t>(std::max(budget, 1))}));
      if (budget <= 0 && !plan.empty()) break;
      plan.push_back({r, std::vector<int32_t>(r->req.prompt.begin() + static_cast<int64_t>(r->prompt_pos),
                                              r->req.prompt.begin() + static_cast<int64_t>(r->prompt_pos) + take),
                      false});
      budget -= take;
    }
    UpdateGauges();
  }
  // No forward to overlap with: send queued tokens now. (None are queued
  // then: a queued token is its request's pending token, which is planned.)
  if (plan.empty()) flush_now();

  // Requests with nothing to feed that must sample now (empty prompt on a
  // session with logits) are handled without a forward pass.
  std::vector<std::pair<std::shared_ptr<Request>, std::vector<float>>> to_sample;
  {
    std::unordered_set<const Request*> planned;
    planned.reserve(plan.size());
    for (const auto& p : plan) planned.insert(p.r.get());
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& r : running_) {
      if (planned.count(r.get()) == 0 && r->pending_token < 0 && r->prompt_pos >= r->req.prompt.size() && r->generated == 0 &&
          !r->finish_after_feed && r->sink) {
        to_sample.emplace_back(r, r->session->last_logits);
      }
    }
  }
  if (plan.empty() && to_sample.empty()) return false;

  forward_start = forward_end = absl::Now();  // stays so without a forward (rows sampled from saved logits)
  std::vector<float> logits;
  if (!plan.empty()) {
    std::vector<ForwardRequest> fwd;
    fwd.reserve(plan.size());
    for (auto& p : plan) fwd.push_back({p.r->session->slot, p.tokens, false});
    if (device_sampling_) {
      std::vector<Session*> fed;
      for (auto& p : plan) fed.push_back(p.r->session);
      std::lock_guard<std::mutex> lock(mu_);
      BeforeForward(fed);
    } else {
      // Forward returns with the logits on the host: nothing runs beside it,
      // so the tokens go out before it rather than a whole forward late.
      flush_now();
    }
    forward_start = absl::Now();
    absl::Status st = device_sampling_ ? model_->ForwardKeepLogits(fwd) : model_->Forward(fwd, &logits);
    forward_end = absl::Now();
    // The last step's per-token output (detokenizing, stop strings, stream
    // writes), while the device computes the forward just launched; the
    // sampling call below waits for it. The sink calls go to the I/O thread
    // at once, not after the step, so the tokens reach their streams one
    // forward launch (plus this work) after they were sampled, not one step.
    FlushEmits();
    RunLater();
    if (metrics_) metrics_->batch_size.Observe(static_cast<double>(plan.size()));
    if (!st.ok()) {
      if (metrics_) metrics_->step_duration.Observe(Seconds(forward_end - forward_start));
      std::lock_guard<std::mutex> lock(mu_);
      healthy_ = false;
      for (auto& p : plan) {
        Finish(p.r.get(), absl::InternalError(absl::StrCat("backend fault: ", st.message())),
               FinishReason::kCancelled);
        running_.erase(std::remove(running_.begin(), running_.end(), p.r), running_.end());
      }
      return true;
    }
  }

  const int32_t V = model_->config().vocab_size;
  std::unique_lock<std::mutex> lock(mu_);
  // Who samples now, from a host row or (device sampling) a kept row.
  struct ToSample {
    std::shared_ptr<Request> r;
    const float* host_row = nullptr;
    int32_t kept_row = -1;
  };
  std::vector<ToSample> sample_from;
  // Requests that end with this forward. Finished after the sampling call:
  // Finish copies a session's kept row to the host, which waits for the
  // device, and the work up to that call should overlap the device instead.
  struct Ending {
    std::shared_ptr<Request> r;
    absl::Status status;
    FinishReason reason;
  };
  std::vector<Ending> ending;
  for (size_t i = 0; i < plan.size(); ++i) {
    Planned& p = plan[i];
    Request* r = p.r.get();
    Session* s = r->session;
    const float* row = device_sampling_ ? nullptr : logits.data() + static_cast<size_t>(i) * V;
    s->tokens_seen += static_cast<int64_t>(p.tokens.size());
    s->last_used = absl::Now();
    if (device_sampling_) {
      s->kept_logits_row = static_cast<int32_t>(i);
      kept_sessions_.push_back(s);
    } else {
      s->last_logits.assign(row, row + V);
    }
    if (p.decode) {
      r->pending_token = -1;
      if (r->expired) {
        ending.push_back({p.r, absl::DeadlineExceededError("the request deadline passed"), FinishReason::kCancelled});
        continue;
      }
      if (r->finish_after_feed || r->cancelled) {
        ending.push_back({p.r, absl::OkStatus(), r->finish_after_feed.value_or(FinishReason::kCancelled)});
        continue;
      }
    } else {
      r->prompt_pos += p.tokens.size();
      if (metrics_ && r->sink) metrics_->prompt_tokens.Increment(static_cast<double>(p.tokens.size()));
      if (r->prompt_pos < r->req.prompt.size()) continue;
      if (!r->sink) {  // prefill-only (CreateSession with a prompt)
        ending.push_back({p.r, absl::OkStatus(), FinishReason::kLength});
        continue;
      }
    }
    sample_from.push_back({p.r, row, device_sampling_ ? static_cast<int32_t>(i) : -1});
  }
  for (auto& [r, row] : to_sample) sample_from.push_back({r, row.data(), -1});

  // Device sampling: every kept row in one backend call.
  std::vector<SampledToken> picked(sample_from.size());
  {
    std::vector<int32_t> rows;
    std::vector<SampleSpec> specs;
    std::vector<size_t> which;
    for (size_t j = 0; j < sample_from.size(); ++j) {
      if (sample_from[j].kept_row < 0) continue;
      rows.push_back(sample_from[j].kept_row);
      specs.emplace_back();
      sample_from[j].r->sampler->PrepareDeviceSample(&specs.back());
      which.push_back(j);
    }
    if (!rows.empty()) {
      std::vector<SampledToken> out(rows.size());
      // On a GPU this waits for the forward: without the lock, as the forward
      // (Submit, Cancel and stats must not wait on the device). Only this
      // thread touches the model and the requests' samplers.
      lock.unlock();
      const absl::Time sample_start = absl::Now();
      const absl::Status st = model_->SampleKeptLogits(rows, specs, absl::MakeSpan(out));
      sample_time = absl::Now() - sample_start;
      lock.lock();
      if (!st.ok()) {
        healthy_ = false;
        for (size_t j : which) {
          const std::shared_ptr<Request>& rp = sample_from[j].r;
          Finish(rp.get(), absl::InternalError(absl::StrCat("backend fault: ", st.message())),
                 FinishReason::kCancelled);
          running_.erase(std::remove(running_.begin(), running_.end(), rp), running_.end());
          sample_from[j].r = nullptr;
        }
      } else {
        for (size_t k = 0; k < which.size(); ++k) {
          sample_from[which[k]].r->sampler->FinishDeviceSample(out[k]);
          picked[which[k]] = out[k];
        }
      }
    }
  }
  for (Ending& e : ending) {
    Finish(e.r.get(), std::move(e.status), e.reason);
    running_.erase(std::remove(running_.begin(), running_.end(), e.r), running_.end());
  }

  // What the next step needs is done here: the stop-token check, the
  // sampler's penalties, logprobs (from logits the next forward replaces),
  // the counts and the token to feed. The rest (text, stop strings, metrics,
  // the sink call) is queued in emits_ for FlushEmits during the next
  // forward.
  for (size_t j = 0; j < sample_from.size(); ++j) {
    if (sample_from[j].r == nullptr) continue;  // failed above
    const std::shared_ptr<Request>& rp = sample_from[j].r;
    Request* r = rp.get();
    const bool on_device = sample_from[j].kept_row >= 0;
    const absl::Span<const float> lg(sample_from[j].host_row, on_device ? 0 : static_cast<size_t>(V));
    const int32_t tok = on_device ? picked[j].token : r->sampler->Sample(lg);
    const bool eot = !r->req.ignore_end_of_text && tok == tokenizer_->end_of_text_id();
    if (r->sampler->IsStopToken(tok) || eot) {
      Finish(r, absl::OkStatus(), eot ? FinishReason::kEndOfText : FinishReason::kStop);
      running_.erase(std::remove(running_.begin(), running_.end(), rp), running_.end());
      continue;
    }
    r->sampler->Accept(tok);
    PendingEmit e;
    e.r = rp;
    TokenEvent& ev = e.event;
    ev.token = tok;
    if (on_device) {
      ev.logprob = picked[j].logprob;
      if (r->req.top_logprobs > 0) {
        // The alternatives need the whole row: copy it (the session's last
        // logits are these anyway).
        MaterializeLogits(r->session);
        Sampler::TopLogprobs(r->session->last_logits, r->req.top_logprobs, &ev.top);
      }
    } else {
      ev.logprob = Sampler::TokenLogprob(lg, tok);
      if (r->req.top_logprobs > 0) Sampler::TopLogprobs(lg, r->req.top_logprobs, &ev.top);
    }
    const absl::Time now = absl::Now();
    e.first = r->generated == 0;
    e.latency_s = Seconds(now - (e.first ? r->submitted : r->last_token));
    if (e.first) r->first_token = now;
    r->last_token = now;
    ++r->generated;
    // The token is fed next step so the session's state includes it.
    r->pending_token = tok;
    // A stop string in its text (FlushEmits) makes this kStop instead.
    if (r->generated >= r->req.max_tokens) r->finish_after_feed = FinishReason::kLength;
    ++r->deferred_emits;
    emits_.push_back(std::move(e));
  }
  UpdateGauges();
  if (step_log_ != nullptr) {
    int decode_rows = 0, prompt_rows = 0, prompt_seqs = 0;
    for (const Planned& p : plan) {
      if (p.decode) {
        ++decode_rows;
      } else {
        prompt_rows += static_cast<int>(p.tokens.size());
        ++prompt_seqs;
      }
    }
    LogStep(step_start, decode_rows, prompt_rows, prompt_seqs, forward_start - step_start - emit_before_forward,
            forward_end - forward_start, sample_time, absl::Now() - forward_end - sample_time + emit_before_forward);
  }
  if (metrics_) {
    const absl::Duration forward_time = forward_end - forward_start;
    if (!plan.empty()) metrics_->step_duration.Observe(Seconds(forward_time + sample_time));
    metrics_->engine_schedule_seconds.Increment(Seconds(forward_start - step_start - emit_before_forward));
    metrics_->engine_forward_seconds.Increment(Seconds(forward_time));
    metrics_->engine_sample_seconds.Increment(Seconds(sample_time));
    metrics_->engine_emit_seconds.Increment(Seconds(absl::Now() - forward_end - sample_time + emit_before_forward));
  }
  return true;
}

void EngineImpl::FeedPending(const std::vector<Request*>& requests) {
  std::vector<ForwardRequest> fwd;
  std::vector<Request*> fed;
  for (Request* r : requests) {
    if (r->pending_token < 0 || r->session == nullptr || r->session->slot < 0) continue;
    fwd.push_back({r->session->slot, absl::MakeConstSpan(&r->pending_token, 1), false});
    fed.push_back(r);
  }
  if (fwd.empty()) return;
  // The host path here: this runs once, at shutdown.
  std::vector<Session*> fed_sessions;
  for (Request* r : fed) fed_sessions.push_back(r->session);
  BeforeForward(fed_sessions);
  std::vector<float> logits;
  if (absl::Status st = model_->Forward(fwd, &logits); !st.ok()) {
    healthy_ = false;
    return;
  }
  const int32_t V = model_->config().vocab_size;
  for (size_t i = 0; i < fed.size(); ++i) {
    Session* s = fed[i]->session;
    s->tokens_seen += 1;
    s->last_logits.assign(logits.begin() + static_cast<int64_t>(i) * V,
                          logits.begin() + static_cast<int64_t>(i + 1) * V);
    fed[i]->pending_token = -1;
  }
}

void EngineImpl::LogStep(absl::Time start, int decode_rows, int prompt_rows, int prompt_seqs,
                         absl::Duration schedule, absl::Duration forward, absl::Duration sample,
                         absl::Duration emit) {
  auto ms = [](absl::Duration d) { return absl::ToDoubleMilliseconds(d); };
  std::fprintf(step_log_, "%.6f %d %d %d %.3f %.3f %.3f %.3f %.3f\n", absl::ToDoubleSeconds(start - started_),
               decode_rows, prompt_rows, prompt_seqs, ms(schedule), ms(forward), ms(sample), ms(emit),
               ms(absl::Now() - start));
}

void EngineImpl::UpdateGauges() {
  if (metrics_ == nullptr) return;
  metrics_->requests_running.Set(static_cast<double>(running_.size()));
  metrics_->requests_waiting.Set(static_cast<double>(waiting_.size()));
  const int32_t used = config_.state_slots - static_cast<int32_t>(free_slots_.size());
  metrics_->state_slots_used.Set(static_cast<double>(used));
  metrics_->state_slots_capacity.Set(static_cast<double>(config_.state_slots));
  metrics_->sessions_resident.Set(used);  // each resident session holds one slot
  metrics_->offload_memory_used.Set(static_cast<double>(offload_.bytes_in_use()));
  // The offloaded count walks the whole session table (thousands on a GPU):
  // at most every 100 ms, not twice a step. Prometheus scrapes every few
  // seconds; the gauge is at most that stale.
  const absl::Time now = absl::Now();
  if (now - offloaded_counted_at_ < absl::Milliseconds(100)) return;
  offloaded_counted_at_ = now;
  int offloaded = 0;
  for (auto& [id, s] : sessions_) offloaded += s->slot < 0 && !s->fresh();
  metrics_->sessions_offloaded.Set(offloaded);
}

}  // namespace rwkv
