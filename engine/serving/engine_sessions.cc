// The Engine facade and the session commands. Each command runs on the
// engine thread (it may touch the model's slots); store I/O runs on the I/O
// thread so a large save never stalls decoding.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <future>

#include "absl/strings/str_cat.h"
#include "engine/serving/engine_impl.h"

namespace rwkv {

Engine::Engine(std::unique_ptr<EngineImpl> impl) : impl_(std::move(impl)) {}
Engine::~Engine() = default;

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(std::unique_ptr<Model> model,
                                                       std::unique_ptr<Tokenizer> tokenizer,
                                                       const EngineConfig& config, StateStore* store,
                                                       ServerMetrics* metrics) {
  if (model == nullptr || tokenizer == nullptr) return absl::InvalidArgumentError("engine needs a model and a tokenizer");
  if (config.state_slots < 1 || config.max_batch < 1 || config.max_sessions < 1 || config.prefill_chunk < 1 ||
      config.mixed_prefill_tokens < 0 || config.mixed_prefill_drain_steps < 0 || config.step_token_budget < 1 ||
      config.max_queue < 0 || config.max_prompt_tokens < 1 || config.max_new_tokens < 1 ||
      !(config.mixed_prefill_ratio >= 0 && config.mixed_prefill_ratio <= kMaxMixedPrefillRatio)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "engine limits must be positive (state slots, max batch, max sessions, prefill chunk, step tokens; "
        "mixed prefill tokens and drain steps >= 0, mixed prefill ratio in [0, ",
        kMaxMixedPrefillRatio, "])"));
  }
  if (config.mixed_prefill_drain_steps > 0 && config.mixed_prefill_tokens == 0 && config.mixed_prefill_ratio == 0) {
    return absl::InvalidArgumentError(
        "mixed prefill drain steps raise the mixed-prefill cap, which is off: set mixed prefill tokens or ratio too");
  }
  if (tokenizer->vocab_size() > model->config().vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("the ", tokenizer->name(), " vocabulary has ",
                                                   tokenizer->vocab_size(), " tokens but the model only ",
                                                   model->config().vocab_size));
  }
  if (absl::Status st = model->AllocateSlots(config.state_slots); !st.ok()) return st;
  // A step (its decoding sessions and prompt chunks within the step budget)
  // in one pass, as the state pool's plan assumed (WorkspaceBytes).
  const int step_rows = std::min(std::max(config.step_token_budget, config.max_batch), Model::kMaxPassRowsLimit);
  if (absl::Status st = model->SetMaxPassRows(std::max(Model::kDefaultMaxPassRows, step_rows)); !st.ok()) {
    return st;
  }
  WarmUp warm_up;
  if (config.warm_up_passes) {
    const absl::Time start = absl::Now();
    auto shapes = model->WarmUpPasses(config.max_batch, step_rows);
    if (!shapes.ok()) return shapes.status();
    warm_up = WarmUp{*shapes, absl::ToDoubleSeconds(absl::Now() - start)};
  }
  std::FILE* step_log = nullptr;
  if (!config.step_log_path.empty()) {
    step_log = std::fopen(config.step_log_path.c_str(), "a");
    if (step_log == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("cannot open the step log '", config.step_log_path,
                                                     "' for appending: ", std::strerror(errno)));
    }
    if (std::fseek(step_log, 0, SEEK_END) == 0 && std::ftell(step_log) == 0) std::fputs(kStepLogHeader, step_log);
  }
  auto impl = std::make_unique<EngineImpl>(std::move(model), std::move(tokenizer), config, store, metrics);
  impl->step_log_ = step_log;
  impl->warm_up_ = warm_up;
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

const ModelConfig& Engine::model_config() const { return impl_->model_->config(); }
const Tokenizer& Engine::tokenizer() const { return *impl_->tokenizer_; }
const EngineConfig& Engine::config() const { return impl_->config_; }
std::string Engine::model_fingerprint() const { return impl_->model_->fingerprint(); }
int64_t Engine::state_bytes_per_session() const {
  return impl_->model_->slot_bytes();
}
OffloadInfo Engine::offload_info() const {
  const OffloadPool& pool = impl_->offload_;
  return OffloadInfo{pool.budget_bytes(), pool.block_bytes(), pool.capacity(), pool.pinned()};
}
std::string Engine::backend_name() const { return impl_->model_->backend().name(); }
std::string Engine::weight_dtype() const { return std::string(DTypeName(impl_->model_->weight_dtype())); }
bool Engine::healthy() const { return impl_->healthy_; }
EngineStats Engine::stats() const { return impl_->Stats(); }
Engine::WarmUp Engine::warm_up() const { return impl_->warm_up_; }

absl::StatusOr<std::shared_ptr<RequestHandle>> Engine::Submit(GenerateRequest request,
                                                              std::shared_ptr<GenerationSink> sink) {
  return impl_->Submit(std::move(request), std::move(sink));
}

void Engine::Shutdown(absl::Time deadline, bool save_sessions) { impl_->Shutdown(deadline, save_sessions); }
absl::Status Engine::RestoreSavedSessions() { return impl_->RestoreSavedSessions(); }

void Engine::CreateSession(std::vector<int32_t> prompt, Done<SessionInfo> done) {
  EngineImpl* impl = impl_.get();
  for (int32_t t : prompt) {
    if (t < 0 || t >= impl->model_->config().vocab_size) {
      done(absl::InvalidArgumentError(absl::StrCat("prompt token id ", t, " out of range")));
      return;
    }
  }
  if (static_cast<int64_t>(prompt.size()) > impl->config_.max_prompt_tokens) {
    done(absl::InvalidArgumentError(absl::StrCat("prompt has ", prompt.size(), " tokens; the limit is ",
                                                 impl->config_.max_prompt_tokens)));
    return;
  }
  impl->Post([impl, prompt = std::move(prompt), done = std::move(done)]() mutable {
    if (impl->draining_) {
      impl->Later([done] { done(absl::UnavailableError("the server is shutting down")); });
      return;
    }
    auto s = impl->NewSession(false);
    if (!s.ok()) {
      impl->Later([done, st = s.status()] { done(st); });
      return;
    }
    Session* session = *s;
    if (prompt.empty()) {
      impl->Later([done, info = impl->Info(*session)] { done(info); });
      return;
    }
    // Feed the prompt through the scheduler like any request.
    session->busy = true;
    auto r = std::make_shared<Request>();
    r->impl = impl;
    r->session = session;
    r->submitted = absl::Now();
    r->req.prompt = std::move(prompt);
    const std::string id = session->id;
    r->prefill_done = [impl, id, done](absl::Status st) {
      if (!st.ok()) {
        done(st);
        return;
      }
      // Runs outside the lock on the engine thread: read the info under it.
      std::lock_guard<std::mutex> lock(impl->mu_);
      auto found = impl->Find(id);
      if (!found.ok()) {
        done(found.status());
      } else {
        done(impl->Info(**found));
      }
    };
    impl->waiting_.push_back(std::move(r));
  });
}

void Engine::GetSession(std::string id, Done<SessionInfo> done) {
  EngineImpl* impl = impl_.get();
  impl->Post([impl, id = std::move(id), done = std::move(done)] {
    auto s = impl->Find(id);
    absl::StatusOr<SessionInfo> out = s.ok() ? absl::StatusOr<SessionInfo>(impl->Info(**s)) : s.status();
    impl->Later([done, out] { done(out); });
  });
}

void Engine::ListSessions(Done<std::vector<SessionInfo>> done) {
  EngineImpl* impl = impl_.get();
  impl->Post([impl, done = std::move(done)] {
    std::vector<SessionInfo> all;
    for (auto& [id, s] : impl->sessions_) {
      if (!s->ephemeral) all.push_back(impl->Info(*s));
    }
    std::sort(all.begin(), all.end(), [](const SessionInfo& a, const SessionInfo& b) {
      return a.created < b.created || (a.created == b.created && a.id < b.id);
    });
    impl->Later([done, all = std::move(all)] { done(all); });
  });
}

void Engine::DeleteSession(std::string id, DoneStatus done) {
  EngineImpl* impl = impl_.get();
  impl->Post([impl, id = std::move(id), done = std::move(done)] {
    auto s = impl->Find(id);
    absl::Status st = s.status();
    if (s.ok() && (*s)->busy) {
      st = absl::FailedPreconditionError(absl::StrCat("session '", id, "' is busy with a generation"));
    } else if (s.ok()) {
      impl->DropSession(*s);
      if (impl->store_ != nullptr) {
        impl->RunOnIo([store = impl->store_, name = LiveName(id)] { (void)store->Delete(name); });
      }
    }
    impl->Later([done, st] { done(st); });
  });
}

void Engine::ForkSession(std::string id, Done<SessionInfo> done) {
  EngineImpl* impl = impl_.get();
  impl->Post([impl, id = std::move(id), done = std::move(done)] {
    absl::StatusOr<SessionInfo> out = [&]() -> absl::StatusOr<SessionInfo> {
      auto snap = impl->SnapshotOfIdle(id);
      if (!snap.ok()) return snap.status();
      auto fork = impl->SessionFromSnapshot(*std::move(snap), "");
      if (!fork.ok()) return fork.status();
      return impl->Info(**fork);
    }();
    impl->Later([done, out] { done(out); });
  });
}

void Engine::SaveSession(std::string id, std::string name, DoneStatus done) {
  EngineImpl* impl = impl_.get();
  if (impl->store_ == nullptr) {
    done(absl::FailedPreconditionError("the server has no state directory (start it with --state-dir)"));
    return;
  }
  if (absl::Status st = ValidateStateName(name); !st.ok()) {
    done(st);
    return;
  }
  impl->Post([impl, id = std::move(id), name = std::move(name), done = std::move(done)]() mutable {
    auto snap = impl->SnapshotOfIdle(id);
    if (!snap.ok()) {
      impl->Later([done, st = snap.status()] { done(st); });
      return;
    }
    impl->RunOnIo([impl, name = std::move(name), snap = *std::move(snap), done = std::move(done)] {
      absl::Status st = impl->store_->Save(name, snap);
      if (st.ok() && impl->metrics_) impl->metrics_->state_saves.Increment();
      done(st);
    });
  });
}

void Engine::LoadSession(std::string name, Done<SessionInfo> done) {
  EngineImpl* impl = impl_.get();
  if (impl->store_ == nullptr) {
    done(absl::FailedPreconditionError("the server has no state directory (start it with --state-dir)"));
    return;
  }
  impl->RunOnIo([impl, name = std::move(name), done = std::move(done)]() mutable {
    auto snap = impl->store_->Load(name);
    if (!snap.ok()) {
      done(snap.status());
      return;
    }
    impl->Post([impl, snap = *std::move(snap), done = std::move(done)]() mutable {
      auto s = impl->SessionFromSnapshot(std::move(snap), "");
      absl::StatusOr<SessionInfo> out = s.ok() ? absl::StatusOr<SessionInfo>(impl->Info(**s)) : s.status();
      if (s.ok() && impl->metrics_) impl->metrics_->state_loads.Increment();
      impl->Later([done, out] { done(out); });
    });
  });
}

void Engine::ExportSession(std::string id, Done<std::string> done) {
  EngineImpl* impl = impl_.get();
  impl->Post([impl, id = std::move(id), done = std::move(done)]() mutable {
    auto snap = impl->SnapshotOfIdle(id);
    if (!snap.ok()) {
      impl->Later([done, st = snap.status()] { done(st); });
      return;
    }
    impl->RunOnIo([snap = *std::move(snap), done = std::move(done)] { done(EncodeSnapshot(snap)); });
  });
}

void Engine::ImportSession(std::string bytes, Done<SessionInfo> done) {
  EngineImpl* impl = impl_.get();
  impl->RunOnIo([impl, bytes = std::move(bytes), done = std::move(done)]() mutable {
    auto snap = DecodeSnapshot(bytes);
    if (!snap.ok()) {
      done(snap.status());
      return;
    }
    impl->Post([impl, snap = *std::move(snap), done = std::move(done)]() mutable {
      auto s = impl->SessionFromSnapshot(std::move(snap), "");
      absl::StatusOr<SessionInfo> out = s.ok() ? absl::StatusOr<SessionInfo>(impl->Info(**s)) : s.status();
      if (s.ok() && impl->metrics_) impl->metrics_->state_loads.Increment();
      impl->Later([done, out] { done(out); });
    });
  });
}

}  // namespace rwkv
