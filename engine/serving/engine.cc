// Engine public API, the session table and lifecycle. The batched step is in
// engine_step.cc. See engine.h for the contract and engine_impl.h for the
// locking rules.
#include "engine/serving/engine.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <future>
#include <random>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/serving/engine_impl.h"

namespace rwkv {

const char* FinishReasonName(FinishReason r) {
  switch (r) {
    case FinishReason::kLength: return "length";
    case FinishReason::kStop: return "stop";
    case FinishReason::kEndOfText: return "end_of_text";
    case FinishReason::kCancelled: return "cancelled";
  }
  return "?";
}

namespace {

// 128 random bits from the OS as 32 hex characters.
std::string NewSessionId() {
  unsigned char b[16];
  bool ok = false;
  if (int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC); fd >= 0) {
    ok = read(fd, b, sizeof(b)) == static_cast<ssize_t>(sizeof(b));
    close(fd);
  }
  if (!ok) {
    std::random_device rd;
    for (unsigned char& c : b) c = static_cast<unsigned char>(rd());
  }
  std::string id;
  for (unsigned char c : b) absl::StrAppend(&id, absl::Hex(c, absl::kZeroPad2));
  return id;
}

absl::Status ValidateRequest(const GenerateRequest& r, const ModelConfig& mc, const EngineConfig& ec) {
  if (r.max_tokens < 1 || r.max_tokens > ec.max_new_tokens) {
    return absl::InvalidArgumentError(
        absl::StrFormat("max_tokens must be in [1, %d], got %d", ec.max_new_tokens, r.max_tokens));
  }
  if (r.top_logprobs < 0 || r.top_logprobs > 20) {
    return absl::InvalidArgumentError(absl::StrFormat("top_logprobs must be in [0, 20], got %d", r.top_logprobs));
  }
  if (static_cast<int64_t>(r.prompt.size()) > ec.max_prompt_tokens) {
    return absl::InvalidArgumentError(absl::StrFormat("prompt has %d tokens; the limit is %d", r.prompt.size(),
                                                      ec.max_prompt_tokens));
  }
  for (int32_t t : r.prompt) {
    if (t < 0 || t >= mc.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrFormat("prompt token id %d out of range [0, %d)", t, mc.vocab_size));
    }
  }
  return ValidateSamplingParams(r.sampling, mc.vocab_size);
}

}  // namespace

void Request::Cancel() {
  if (!cancelled.exchange(true)) impl->Wake();
}

// ------------------------------------------------------------------ EngineImpl

EngineImpl::EngineImpl(std::unique_ptr<Model> model, std::unique_ptr<Tokenizer> tokenizer, const EngineConfig& config,
           StateStore* store, ServerMetrics* metrics)
    : model_(std::move(model)),
      tokenizer_(std::move(tokenizer)),
      config_(config),
      store_(store),
      metrics_(metrics),
      dims_(StateDimsFor(model_->config())),
      offload_(model_->backend(), model_->slot_bytes(), config_.host_offload_bytes) {
  for (int32_t s = config_.state_slots - 1; s >= 0; --s) free_slots_.push_back(s);
  device_sampling_ = config_.device_sampling && model_->backend().SupportsDeviceSampling();
  // Constant: on the first scrape already, not only after the first step.
  if (metrics_) {
    metrics_->offload_memory_capacity.Set(static_cast<double>(offload_.capacity() * offload_.block_bytes()));
  }
  io_thread_ = std::thread([this] {
    for (;;) {
      std::function<void()> fn;
      {
        std::unique_lock<std::mutex> lock(io_mu_);
        io_cv_.wait(lock, [&] { return io_exit_ || !io_queue_.empty(); });
        if (io_queue_.empty()) return;
        fn = std::move(io_queue_.front());
        io_queue_.pop_front();
      }
      fn();
    }
  });
  thread_ = std::thread([this] { Loop(); });
}

EngineImpl::~EngineImpl() {
  Shutdown(absl::Now(), false);
  {
    std::lock_guard<std::mutex> lock(mu_);
    exit_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  {
    std::lock_guard<std::mutex> lock(io_mu_);
    io_exit_ = true;
  }
  io_cv_.notify_all();
  if (io_thread_.joinable()) io_thread_.join();
  if (step_log_ != nullptr) std::fclose(step_log_);
}

void EngineImpl::RunOnIo(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> lock(io_mu_);
    io_queue_.push_back(std::move(fn));
  }
  io_cv_.notify_one();
}

void EngineImpl::Post(std::function<void()> command) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    commands_.push_back(std::move(command));
  }
  cv_.notify_all();
}

void EngineImpl::Later(std::function<void()> callback) { later_.push_back(std::move(callback)); }

void EngineImpl::Wake() {
  { std::lock_guard<std::mutex> lock(mu_); }
  cv_.notify_all();
}

SessionInfo EngineImpl::Info(const Session& s) const {
  return SessionInfo{s.id, s.tokens_seen, s.slot >= 0, s.busy, s.created, s.last_used};
}

absl::StatusOr<Session*> EngineImpl::Find(const std::string& id) {
  auto it = sessions_.find(id);
  if (it == sessions_.end() || it->second->ephemeral) {
    return absl::NotFoundError(absl::StrCat("session '", id, "' not found"));
  }
  return it->second.get();
}

absl::StatusOr<Session*> EngineImpl::NewSession(bool ephemeral, const std::string& id) {
  if (static_cast<int32_t>(sessions_.size()) >= config_.max_sessions) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("the session table is full (%d sessions); delete some", config_.max_sessions));
  }
  auto s = std::make_unique<Session>();
  s->id = id.empty() ? NewSessionId() : id;
  s->ephemeral = ephemeral;
  s->created = s->last_used = absl::Now();
  Session* raw = s.get();
  sessions_[raw->id] = std::move(s);
  return raw;
}

void EngineImpl::DropSession(Session* s) {
  std::erase(kept_sessions_, s);
  if (s->slot >= 0) free_slots_.push_back(s->slot);
  s->offloaded.Release();
  if (s->in_store && store_ != nullptr) {
    const std::string name = OffloadName(s->id);
    RunOnIo([store = store_, name] { (void)store->Delete(name); });
  }
  sessions_.erase(s->id);
}

absl::Status EngineImpl::NoRoomForState(const absl::Status& why) const {
  return absl::ResourceExhaustedError(absl::StrCat("no room for an idle session's state: ", why.message(),
                                                   ", and there is no --state-dir to spill to; raise "
                                                   "--offload-memory-mb or set --state-dir"));
}

absl::Status EngineImpl::Offload(Session* s) {
  if (s->slot < 0) return absl::OkStatus();
  absl::StatusOr<OffloadPool::Block> block = offload_.Acquire();
  if (block.ok()) {
    // The slot's bytes as they are: half the host bytes with fp16 state, and
    // a DMA copy into a page-locked block on a GPU.
    if (absl::Status st = model_->ReadSlotNative(s->slot, block->data()); !st.ok()) return st;
    s->offloaded = *std::move(block);
  } else if (store_ != nullptr) {
    // Under host-memory pressure the state goes to the store (synchronously:
    // the slot is reused right after).
    std::vector<float> state(static_cast<size_t>(model_->state_layout().total));
    if (absl::Status st = model_->ReadSlot(s->slot, state.data()); !st.ok()) return st;
    if (absl::Status st = store_->Save(OffloadName(s->id), SnapshotOf(s, std::move(state))); !st.ok()) return st;
    s->in_store = true;
  } else {
    return NoRoomForState(block.status());
  }
  free_slots_.push_back(s->slot);
  s->slot = -1;
  return absl::OkStatus();
}

bool EngineImpl::MakeResident(Session* s) {
  if (s->slot >= 0) return true;
  if (free_slots_.empty()) {
    // Evict the least recently used idle resident session.
    Session* victim = nullptr;
    for (auto& [id, other] : sessions_) {
      if (other->slot >= 0 && !other->busy && (victim == nullptr || other->last_used < victim->last_used)) {
        victim = other.get();
      }
    }
    if (victim == nullptr || !Offload(victim).ok()) return false;
  }
  const int32_t slot = free_slots_.back();
  absl::Status st;
  if (!s->offloaded.empty()) {
    st = model_->WriteSlotNative(slot, s->offloaded.data());
  } else if (s->in_store) {
    auto snap = store_->Load(OffloadName(s->id));
    st = snap.ok() ? model_->WriteSlot(slot, snap->state.data()) : snap.status();
    if (st.ok()) {
      (void)store_->Delete(OffloadName(s->id));
      s->in_store = false;
    }
  } else {
    st = model_->ResetSlot(slot);
  }
  if (!st.ok()) {
    healthy_ = healthy_ && st.code() != absl::StatusCode::kInternal;
    return false;
  }
  free_slots_.pop_back();
  s->offloaded.Release();  // back on the free list for the next offload
  s->slot = slot;
  return true;
}

absl::StatusOr<std::vector<float>> EngineImpl::ReadState(Session* s) {
  std::vector<float> state(static_cast<size_t>(model_->state_layout().total));
  if (s->slot >= 0) {
    if (absl::Status st = model_->ReadSlot(s->slot, state.data()); !st.ok()) return st;
  } else if (!s->offloaded.empty()) {
    model_->NativeToHostState(s->offloaded.data(), state.data());
  } else if (s->in_store) {
    auto snap = store_->Load(OffloadName(s->id));
    if (!snap.ok()) return snap.status();
    state = std::move(snap->state);
  } else {
    InitFreshState(model_->config(), state.data());
  }
  return state;
}

SessionSnapshot EngineImpl::SnapshotOf(Session* s, std::vector<float> state) const {
  SessionSnapshot snap;
  snap.dims = dims_;
  snap.model_fingerprint = model_->fingerprint();
  snap.tokens_seen = static_cast<uint64_t>(s->tokens_seen);
  snap.state = std::move(state);
  snap.last_logits = s->last_logits;
  return snap;
}

absl::StatusOr<SessionSnapshot> EngineImpl::SnapshotOfIdle(const std::string& id) {
  auto s = Find(id);
  if (!s.ok()) return s.status();
  if ((*s)->busy) return absl::FailedPreconditionError(absl::StrCat("session '", id, "' is busy with a generation"));
  auto state = ReadState(*s);
  if (!state.ok()) return state.status();
  return SnapshotOf(*s, *std::move(state));
}

absl::StatusOr<Session*> EngineImpl::SessionFromSnapshot(SessionSnapshot snap, const std::string& id) {
  if (absl::Status st = CheckCompatible(snap, dims_, model_->fingerprint()); !st.ok()) return st;
  // Where an offloaded state would go, so an import never takes host memory
  // beyond --offload-memory-mb. A free slot before the store: it costs no
  // disk write, and the session would need one on its next request anyway.
  absl::StatusOr<OffloadPool::Block> block = offload_.Acquire();
  const bool to_slot = !block.ok() && !free_slots_.empty();
  if (!block.ok() && !to_slot && store_ == nullptr) return NoRoomForState(block.status());
  auto made = NewSession(false, id);
  if (!made.ok()) return made.status();
  Session* s = *made;
  s->tokens_seen = static_cast<int64_t>(snap.tokens_seen);
  s->last_logits = snap.last_logits;
  absl::Status st;
  if (block.ok()) {
    model_->HostToNativeState(snap.state.data(), block->data());
    s->offloaded = *std::move(block);
  } else if (to_slot) {
    st = model_->WriteSlot(free_slots_.back(), snap.state.data());
    if (st.ok()) {
      s->slot = free_slots_.back();
      free_slots_.pop_back();
    } else {
      healthy_ = healthy_ && st.code() != absl::StatusCode::kInternal;
    }
  } else {
    st = store_->Save(OffloadName(s->id), snap);
    s->in_store = st.ok();
  }
  if (!st.ok()) {
    DropSession(s);
    return st;
  }
  return s;
}

absl::StatusOr<std::shared_ptr<RequestHandle>> EngineImpl::Submit(GenerateRequest request,
                                                            std::shared_ptr<GenerationSink> sink) {
  if (absl::Status st = ValidateRequest(request, model_->config(), config_); !st.ok()) {
    if (metrics_) metrics_->failure_invalid.Increment();
    return st;
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (draining_) return absl::UnavailableError("the server is shutting down");
  if (!healthy_) return absl::UnavailableError("the engine is unhealthy after a backend fault");
  const auto live = std::count_if(waiting_.begin(), waiting_.end(), [](const auto& w) { return !w->cancelled; });
  if (live >= config_.max_queue) {
    if (metrics_) metrics_->failure_overloaded.Increment();
    return absl::ResourceExhaustedError(
        absl::StrFormat("the request queue is full (%d waiting); retry later", config_.max_queue));
  }
  Session* session;
  if (request.session_id.empty()) {
    if (request.prompt.empty()) return absl::InvalidArgumentError("the prompt is empty");
    auto s = NewSession(true);
    if (!s.ok()) {
      if (metrics_) metrics_->failure_overloaded.Increment();
      return s.status();
    }
    session = *s;
  } else {
    auto s = Find(request.session_id);
    if (!s.ok()) return s.status();
    session = *s;
    if (session->busy) {
      return absl::FailedPreconditionError(
          absl::StrCat("session '", session->id, "' is busy with another generation"));
    }
    if (request.prompt.empty() && session->last_logits.empty()) {
      return absl::InvalidArgumentError("the prompt is empty and the session has seen no tokens yet");
    }
  }
  session->busy = true;
  auto r = std::make_shared<Request>();
  r->impl = this;
  r->session = session;
  r->sink = std::move(sink);
  r->submitted = absl::Now();
  auto sampler = Sampler::Create(request.sampling, model_->config().vocab_size);
  r->sampler.emplace(*std::move(sampler));  // validated above
  r->decoder.emplace(*tokenizer_);
  r->stops.emplace(request.sampling.stop_strings);
  r->req = std::move(request);
  waiting_.push_back(r);
  cv_.notify_all();
  return std::shared_ptr<RequestHandle>(r);
}

void EngineImpl::Shutdown(absl::Time deadline, bool save_sessions) {
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (exit_) return;
    draining_ = true;
    cv_.notify_all();
    // Let running and waiting generations finish until the deadline.
    while ((!running_.empty() || !waiting_.empty()) && absl::Now() < deadline) {
      cv_.wait_for(lock, std::chrono::milliseconds(20));
    }
  }
  // Cut whatever is left and save live sessions, on the engine thread.
  std::promise<void> done;
  Post([this, save_sessions, &done] {
    for (auto& r : waiting_) r->cancelled = true;
    for (auto& r : running_) r->cancelled = true;
    std::vector<std::shared_ptr<Request>> all(waiting_.begin(), waiting_.end());
    all.insert(all.end(), running_.begin(), running_.end());
    waiting_.clear();
    running_.clear();
    std::vector<Request*> cut;
    for (auto& r : all) cut.push_back(r.get());
    FeedPending(cut);
    // Finish sends each request's queued tokens (FlushEmits) before its end.
    for (auto& r : all) Finish(r.get(), absl::UnavailableError("the server is shutting down"), FinishReason::kCancelled);
    if (save_sessions && store_ != nullptr) {
      for (auto& [id, s] : sessions_) {
        if (s->ephemeral) continue;
        auto state = ReadState(s.get());
        absl::Status st = state.ok() ? store_->Save(LiveName(id), SnapshotOf(s.get(), *std::move(state)))
                                     : state.status();
        if (!st.ok()) std::fprintf(stderr, "rwkv: could not save session %s: %s\n", id.c_str(),
                                   std::string(st.message()).c_str());
      }
    }
    Later([&done] { done.set_value(); });
  });
  done.get_future().wait();
}

absl::Status EngineImpl::RestoreSavedSessions() {
  if (store_ == nullptr) return absl::OkStatus();
  auto entries = store_->List();
  if (!entries.ok()) return entries.status();
  std::promise<absl::Status> result;
  std::vector<std::pair<std::string, SessionSnapshot>> loaded;
  for (const StateEntry& e : *entries) {
    if (!absl::StartsWith(e.name, "live-")) continue;
    auto snap = store_->Load(e.name);
    if (!snap.ok()) return snap.status();
    loaded.emplace_back(e.name.substr(5), *std::move(snap));
  }
  Post([this, &loaded, &result] {
    absl::Status st;
    for (auto& [id, snap] : loaded) {
      if (sessions_.count(id)) continue;
      auto s = SessionFromSnapshot(std::move(snap), id);
      if (!s.ok()) st.Update(s.status());
    }
    Later([&result, st] { result.set_value(st); });
  });
  return result.get_future().get();
}

EngineStats EngineImpl::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  EngineStats st;
  st.running = static_cast<int32_t>(running_.size());
  st.waiting = static_cast<int32_t>(waiting_.size());
  st.slots_total = config_.state_slots;
  st.slots_used = config_.state_slots - static_cast<int32_t>(free_slots_.size());
  st.offload_bytes_used = offload_.bytes_in_use();
  for (auto& [id, s] : sessions_) {
    if (s->slot >= 0) {
      ++st.sessions_resident;
    } else if (!s->fresh()) {
      ++st.sessions_offloaded;
    }
  }
  return st;
}

}  // namespace rwkv
