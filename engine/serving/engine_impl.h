// Internal: the engine's state and its two halves, engine.cc (public API,
// sessions, lifecycle) and engine_step.cc (admission and the batched step).
//
// Locking: `mu_` guards the session table, the queues, the slot free list
// and the offload pool. The engine thread holds it while planning a step
// and while applying its results, never during the forward or the sampling
// call (which waits for a GPU's forward). Only the engine thread touches
// the model (and so the backend). Completion callbacks and sink calls are
// collected under the lock and run after it is released.
#ifndef RWKV_ENGINE_SERVING_ENGINE_IMPL_H_
#define RWKV_ENGINE_SERVING_ENGINE_IMPL_H_

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "engine/sampler/sampler.h"
#include "engine/sampler/stop_matcher.h"
#include "engine/serving/engine.h"
#include "engine/serving/offload_pool.h"
#include "engine/state/model_dims.h"
#include "engine/state/state_file.h"
#include "engine/tokenizer/stream_decoder.h"

namespace rwkv {

struct Session {
  std::string id;
  int32_t slot = -1;               // pool slot when resident
  // Offloaded to host memory: the slot's native bytes (Model::ReadSlotNative;
  // empty: not there).
  OffloadPool::Block offloaded;
  bool in_store = false;           // offloaded to the store under OffloadName(id)
  std::vector<float> last_logits;  // after the last fed token (empty: none yet)
  // Device sampling: >= 0 while last_logits is stale and the session's logits
  // are row kept_logits_row of the model's kept logits. They are copied into
  // last_logits before anything reads them, before the next forward replaces
  // them and whenever the session's request ends (EngineImpl::MaterializeLogits).
  int32_t kept_logits_row = -1;
  int64_t tokens_seen = 0;
  bool busy = false;               // a request owns it
  bool ephemeral = false;          // a one-off generation's session
  absl::Time created, last_used;
  // A fresh (zero) state that is nowhere yet.
  bool fresh() const { return slot < 0 && offloaded.empty() && !in_store; }
};

class EngineImpl;

// A generation (or a prompt-only prefill for CreateSession).
struct Request final : RequestHandle, std::enable_shared_from_this<Request> {
  EngineImpl* impl = nullptr;
  GenerateRequest req;
  std::shared_ptr<GenerationSink> sink;            // generation
  std::function<void(absl::Status)> prefill_done;  // prefill-only
  Session* session = nullptr;
  std::atomic<bool> cancelled{false};
  bool expired = false;  // the deadline passed; finish once the pending token is fed

  // Progress (engine thread only).
  size_t prompt_pos = 0;
  int32_t generated = 0;
  int32_t pending_token = -1;  // sampled, to be fed (and emitted: EngineImpl::emits_) next step
  std::optional<FinishReason> finish_after_feed;
  int32_t deferred_emits = 0;  // entries in EngineImpl::emits_ (Finish sends them first)
  std::optional<Sampler> sampler;
  std::optional<StreamDecoder> decoder;
  std::optional<StopMatcher> stops;
  absl::Time submitted, started, first_token, last_token;

  void Cancel() override;
};

// A sampled token's output, queued by the step that sampled it and sent by
// FlushEmits during the next step, while the device runs its forward.
struct PendingEmit {
  std::shared_ptr<Request> r;
  TokenEvent event;    // token, logprob and alternatives; FlushEmits adds the text
  bool first = false;  // the request's first token
  double latency_s = 0;  // time to first token, or since the previous token
};

class EngineImpl {
 public:
  EngineImpl(std::unique_ptr<Model> model, std::unique_ptr<Tokenizer> tokenizer, const EngineConfig& config,
       StateStore* store, ServerMetrics* metrics);
  ~EngineImpl();

  // ---- engine.cc ----
  absl::StatusOr<std::shared_ptr<RequestHandle>> Submit(GenerateRequest request,
                                                        std::shared_ptr<GenerationSink> sink);
  void Post(std::function<void()> command);  // runs on the engine thread, lock held
  void Later(std::function<void()> callback);  // engine thread: runs after the lock is released
  void RunLater();
  void Wake();
  SessionInfo Info(const Session& s) const;
  absl::StatusOr<Session*> Find(const std::string& id);
  absl::StatusOr<Session*> NewSession(bool ephemeral, const std::string& id = "");
  void DropSession(Session* s);
  // Moves a session's state into a pool slot, evicting an idle one if needed.
  // false when no slot can be had now.
  bool MakeResident(Session* s);
  // Moves a resident session out of its slot: into a block of offload_, or,
  // when that is full, to the store; RESOURCE_EXHAUSTED (naming
  // --offload-memory-mb) when neither has room.
  absl::Status Offload(Session* s);
  // The session's state in the host format, wherever it is.
  absl::StatusOr<std::vector<float>> ReadState(Session* s);
  // A new session holding `snap` (fork, load, import, restore). Its state
  // goes where an offloaded one would, never beyond the offload budget: a
  // block of offload_; else a free slot (resident at once); else the store;
  // else RESOURCE_EXHAUSTED naming --offload-memory-mb, and no session.
  absl::StatusOr<Session*> SessionFromSnapshot(SessionSnapshot snap, const std::string& id);
  // The error for a state that has nowhere to go (no store): `why` (the
  // offload pool's status) and the flags that make room.
  absl::Status NoRoomForState(const absl::Status& why) const;
  SessionSnapshot SnapshotOf(Session* s, std::vector<float> state) const;
  // The snapshot of session `id`, which must exist and not be busy.
  absl::StatusOr<SessionSnapshot> SnapshotOfIdle(const std::string& id);
  void Shutdown(absl::Time deadline, bool save_sessions);
  absl::Status RestoreSavedSessions();
  EngineStats Stats() const;
  void RunOnIo(std::function<void()> fn);

  // ---- engine_step.cc ----
  void Loop();
  bool Step();  // false when there was nothing to do
  // Feeds the sampled-but-unfed token of each request in one forward pass, so
  // a session cut short still holds every token it streamed.
  void FeedPending(const std::vector<Request*>& requests);
  void Admit();
  void Finish(Request* r, absl::Status status, FinishReason reason);
  // Sends every queued token (emits_), in order: detokenizes it, runs the
  // stop strings (a match ends the request as kStop once its token is fed),
  // counts it in the metrics and queues the sink's OnTokens. Step calls it
  // right after launching a forward, so this host work overlaps the device;
  // Finish calls it first when the request has tokens queued, so OnTokens
  // precede OnFinish and the decoder and stop state are complete.
  void FlushEmits();
  // Device sampling: copies a session's kept logits row into last_logits.
  void MaterializeLogits(Session* s);
  // Device sampling, before any forward: sessions about to be fed forget
  // their kept row (the forward brings a new one); every other kept row is
  // copied to its session now, while it still exists.
  void BeforeForward(const std::vector<Session*>& fed);
  void UpdateGauges();
  // One line of the step log: seconds since the engine started, the step's
  // decoding rows, prompt rows and prompt sequences, then milliseconds of
  // schedule, forward (launch), sample (and wait), emit and the whole step.
  void LogStep(absl::Time start, int decode_rows, int prompt_rows, int prompt_seqs, absl::Duration schedule,
               absl::Duration forward, absl::Duration sample, absl::Duration emit);

  std::unique_ptr<Model> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
  EngineConfig config_;
  StateStore* store_;
  ServerMetrics* metrics_;
  StateDims dims_;
  // Declared after model_ and before sessions_: the sessions give their
  // blocks back before the pool frees them through the backend, which goes
  // with the model after that.
  OffloadPool offload_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> commands_;
  std::vector<std::function<void()>> later_;  // engine thread only
  std::vector<PendingEmit> emits_;             // engine thread only: see FlushEmits
  std::unordered_map<std::string, std::unique_ptr<Session>> sessions_;
  // Sessions fed in the last device-sampling forward: the only ones whose
  // kept_logits_row may be >= 0 (BeforeForward; DropSession removes one).
  std::vector<Session*> kept_sessions_;
  absl::Time offloaded_counted_at_ = absl::InfinitePast();  // UpdateGauges
  std::vector<int32_t> free_slots_;
  std::deque<std::shared_ptr<Request>> waiting_;
  std::vector<std::shared_ptr<Request>> running_;
  Engine::WarmUp warm_up_;          // set by Engine::Create
  std::FILE* step_log_ = nullptr;   // EngineConfig::step_log_path (engine thread; closed by ~EngineImpl)
  const absl::Time started_ = absl::Now();
  bool draining_ = false;
  bool exit_ = false;
  std::atomic<bool> healthy_{true};
  bool device_sampling_ = false;  // config_.device_sampling and the backend can

  std::thread io_thread_;
  std::mutex io_mu_;
  std::condition_variable io_cv_;
  std::deque<std::function<void()>> io_queue_;
  bool io_exit_ = false;

  std::thread thread_;
};

// The step log's first line (EngineImpl::LogStep), written to an empty file.
inline constexpr char kStepLogHeader[] =
    "t_s decode_rows prompt_rows prompt_seqs schedule_ms forward_ms sample_ms emit_ms step_ms\n";

inline std::string OffloadName(const std::string& id) { return "offload-" + id; }
inline std::string LiveName(const std::string& id) { return "live-" + id; }

}  // namespace rwkv

#endif  // RWKV_ENGINE_SERVING_ENGINE_IMPL_H_
