// The serving engine: sessions, the state-slot pool and the continuous-
// batching scheduler, independent of any transport.
//
// Why: gRPC (server/) only validates wire messages and moves bytes; every
// decision about which session runs when, where its state lives and what a
// request produces is made here, on one engine thread, so the session table
// needs no locks and the model is only ever touched by that thread.
//
// Threading: every public method is thread-safe and non-blocking. Methods
// that need the engine thread enqueue a command and report through a
// completion callback, which runs on the engine thread (or an I/O thread for
// store operations) and must not block. Generation streams its output
// through a GenerationSink.
#ifndef RWKV_ENGINE_SERVING_ENGINE_H_
#define RWKV_ENGINE_SERVING_ENGINE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/metrics/server_metrics.h"
#include "engine/model/model.h"
#include "engine/sampler/sampling_params.h"
#include "engine/state/state_store.h"
#include "engine/tokenizer/tokenizer.h"

namespace rwkv {

class EngineImpl;

// The largest EngineConfig::mixed_prefill_ratio accepted.
inline constexpr double kMaxMixedPrefillRatio = 1000;

struct EngineConfig {
  int32_t state_slots = 64;          // resident state slots (the pool); >= max_batch is sensible
  int32_t max_sessions = 1024;       // sessions in the table (resident + offloaded)
  // Host memory for offloaded states, in blocks of one slot's native bytes
  // (Model::slot_bytes(): half with fp16 state), allocated as first needed
  // and page-locked on a GPU; beyond it, the store.
  int64_t host_offload_bytes = int64_t{4} << 30;
  int32_t max_batch = 64;            // sessions advanced per step
  int32_t prefill_chunk = 256;       // prompt tokens per session per step
  int32_t step_token_budget = 1024;  // tokens (decode + prefill) per step
  // Prompt tokens in a step that also decodes: at most
  // max(mixed_prefill_tokens, mixed_prefill_ratio x the sessions decoding in
  // it), within step_token_budget; both 0: no cap of their own. A step with
  // no session decoding may fill the whole budget with prompts. Bounds how
  // much prompts arriving under load lengthen the decoding sessions' step
  // (with the ratio, by about that fraction once a step's cost grows with
  // its rows), at the cost of their time to first token (server/README.md).
  int32_t mixed_prefill_tokens = 0;
  double mixed_prefill_ratio = 0;
  // With that cap on (either of the two above > 0; set alone it is refused):
  // the cap is also at least the prompt tokens the running requests still
  // have to feed, divided by mixed_prefill_drain_steps (0: no such floor),
  // within prefill_chunk per prompt and the step's budget. Each step then
  // takes at least that fraction of what is left, so a burst of short
  // prompts is spread over a few more steps than that, while prompts
  // arriving faster than the cap alone admits (long prompts under load) get
  // rows in proportion to the backlog (server/README.md).
  int32_t mixed_prefill_drain_steps = 0;
  // Before serving, run every decode-only pass shape up to max_batch once
  // more than a backend needs to record it (Model::WarmUpPasses: CUDA graphs
  // are then captured at start-up, not during the first steps under load).
  bool warm_up_passes = true;
  // Non-empty: one line per engine step appended to this file (its time,
  // rows and phase durations; EngineImpl::LogStep), for finding slow steps.
  std::string step_log_path;
  int32_t max_queue = 256;           // waiting requests; beyond: RESOURCE_EXHAUSTED
  int32_t max_prompt_tokens = 1 << 20;
  int32_t max_new_tokens = 1 << 20;  // cap on a request's max_tokens
  // Pick tokens on the backend where it can (Backend::SupportsDeviceSampling):
  // the step then copies no [batch, vocab] logits to the host, only the rows
  // the host needs (top_logprobs, and a session's last logits when its
  // request ends). Same tokens as host sampling except where float summation
  // order moves a boundary (kernels/sample.cu). Ignored on the CPU backend.
  bool device_sampling = true;
};

enum class FinishReason : uint8_t { kLength, kStop, kEndOfText, kCancelled };
const char* FinishReasonName(FinishReason r);  // "length", "stop", "end_of_text", "cancelled"

struct GenerateRequest {
  std::string session_id;              // empty: a one-off session, discarded at the end
  std::vector<int32_t> prompt;         // may be empty only for a session that has seen tokens
  SamplingParams sampling;
  int32_t max_tokens = 256;            // >= 1
  int32_t top_logprobs = 0;            // 0..20: alternatives per token (logprob of the chosen token is always given)
  bool ignore_end_of_text = false;     // keep going past the end-of-text token
  absl::Time deadline = absl::InfiniteFuture();
};

struct TokenEvent {
  int32_t token = 0;
  std::string text;       // UTF-8-safe text completed by this token (may be empty)
  float logprob = 0;      // log-softmax of the raw logits at the chosen token
  std::vector<std::pair<int32_t, float>> top;  // top_logprobs alternatives
};

struct GenerateUsage {
  int32_t prompt_tokens = 0;
  int32_t generated_tokens = 0;
  double time_to_first_token_s = 0;
  double total_time_s = 0;
  double queue_time_s = 0;
};

// Implemented by the transport. Called on the engine thread; must not block.
class GenerationSink {
 public:
  virtual ~GenerationSink() = default;
  // One or more tokens produced in one step.
  virtual void OnTokens(std::vector<TokenEvent> events) = 0;
  // Exactly once, last. status != OK for errors (DEADLINE_EXCEEDED, INTERNAL,
  // UNAVAILABLE on shutdown); then `reason` is meaningless. Any text still
  // held back is delivered in `final_text` (e.g. at length or cancel).
  virtual void OnFinish(absl::Status status, FinishReason reason, std::string final_text,
                        const GenerateUsage& usage) = 0;
};

// A handle to a submitted generation.
class RequestHandle {
 public:
  virtual ~RequestHandle() = default;
  // Cancels; the sink gets OnFinish(OK, kCancelled) within one step. Idempotent.
  virtual void Cancel() = 0;
};

struct SessionInfo {
  std::string id;             // 32 lowercase hex chars (128 random bits)
  int64_t tokens_seen = 0;
  bool resident = false;      // state in a pool slot (else offloaded)
  bool busy = false;          // a generation is running on it
  absl::Time created;
  absl::Time last_used;
};

struct EngineStats {
  int32_t running = 0, waiting = 0;
  int32_t slots_used = 0, slots_total = 0;
  int32_t sessions_resident = 0, sessions_offloaded = 0;  // offloaded: to host memory or the store
  int64_t offload_bytes_used = 0;  // host offload memory held by sessions (blocks in use x block bytes)
};

// The host memory idle sessions are offloaded to (EngineConfig::host_offload_bytes).
struct OffloadInfo {
  int64_t budget_bytes = 0;  // host_offload_bytes
  int64_t block_bytes = 0;   // one session's state as its slot holds it (state_bytes_per_session())
  int64_t capacity = 0;      // sessions it holds: budget_bytes / block_bytes
  bool pinned = false;       // page-locked (Backend::HostMemoryPinned): DMA copies to and from the slots
};

class Engine {
 public:
  template <typename T>
  using Done = std::function<void(absl::StatusOr<T>)>;
  using DoneStatus = std::function<void(absl::Status)>;

  // Takes the model (its slots are allocated here), the tokenizer, an
  // optional store (nullptr: save/load/offload-to-store unavailable) and
  // optional metrics (nullptr: none). Starts the engine thread.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(std::unique_ptr<Model> model,
                                                        std::unique_ptr<Tokenizer> tokenizer,
                                                        const EngineConfig& config, StateStore* store,
                                                        ServerMetrics* metrics);
  ~Engine();  // Shutdown() then joins

  const ModelConfig& model_config() const;
  const Tokenizer& tokenizer() const;
  const EngineConfig& config() const;
  std::string model_fingerprint() const;   // identifies the weights; stored in state files
  int64_t state_bytes_per_session() const;
  OffloadInfo offload_info() const;  // constant
  std::string backend_name() const;
  std::string weight_dtype() const;        // "f32", "f16" or "bf16"

  // ---- generation ----
  // Validates synchronously (INVALID_ARGUMENT: parameters, token ids, empty
  // prompt on a fresh session, prompt over max_prompt_tokens; NOT_FOUND:
  // unknown session; FAILED_PRECONDITION: session busy; RESOURCE_EXHAUSTED:
  // queue full or no room for a one-off session; UNAVAILABLE: shutting down).
  // On success the sink will get OnTokens* then exactly one OnFinish.
  absl::StatusOr<std::shared_ptr<RequestHandle>> Submit(GenerateRequest request,
                                                        std::shared_ptr<GenerationSink> sink);

  // ---- sessions ----
  // Creates a session: fresh, or fed with `prompt` (completes after prefill).
  void CreateSession(std::vector<int32_t> prompt, Done<SessionInfo> done);
  void GetSession(std::string id, Done<SessionInfo> done);
  void ListSessions(Done<std::vector<SessionInfo>> done);
  void DeleteSession(std::string id, DoneStatus done);
  // A new session with a copy of `id`'s state and last logits.
  // A new session's state (fork, load, import, restore) is held where an
  // offloaded one would be: in the host offload memory, else a free slot,
  // else the store; with none of them, RESOURCE_EXHAUSTED naming
  // --offload-memory-mb (never beyond host_offload_bytes).
  void ForkSession(std::string id, Done<SessionInfo> done);
  // Saves `id` in the store under `name` (overwrites).
  void SaveSession(std::string id, std::string name, DoneStatus done);
  // A new session from the stored state `name` (FAILED_PRECONDITION if it was
  // made by another model).
  void LoadSession(std::string name, Done<SessionInfo> done);
  // The session's state in the state-file format (see engine/state).
  void ExportSession(std::string id, Done<std::string> done);
  // A new session from exported bytes.
  void ImportSession(std::string bytes, Done<SessionInfo> done);

  // ---- lifecycle ----
  // Stops admitting work (UNAVAILABLE), lets running generations finish until
  // `deadline`, then cuts the rest (OnFinish with UNAVAILABLE), and if
  // `save_sessions` saves every live session to the store under its id.
  // Blocks until done. Idempotent.
  void Shutdown(absl::Time deadline, bool save_sessions);
  // Sessions saved by a previous Shutdown are restored (same ids) by this
  // (those with no room: RESOURCE_EXHAUSTED, the others restored).
  absl::Status RestoreSavedSessions();
  bool healthy() const;  // false after a backend fault
  EngineStats stats() const;
  // What EngineConfig::warm_up_passes did at creation (0 shapes: nothing, as
  // on a backend that records no passes).
  struct WarmUp {
    int shapes = 0;
    double seconds = 0;
  };
  WarmUp warm_up() const;

 private:
  explicit Engine(std::unique_ptr<EngineImpl> impl);
  std::unique_ptr<EngineImpl> impl_;
};

}  // namespace rwkv

#endif  // RWKV_ENGINE_SERVING_ENGINE_H_
