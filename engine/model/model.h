// A loaded RWKV model: weights on a backend, a pool of state slots, and the
// forward pass written once against the Backend interface.
//
// Why: the same code runs a single decode step, a batch of B sessions one
// token each, a prompt of T tokens, or any mix (a list of segments), and it
// gives the same logits and states for a session whichever way its tokens
// arrive. Slots are addressed by index; which session owns which slot is the
// caller's business (the engine's state pool, later).
// Thread-compatible: one thread calls a Model at a time.
#ifndef RWKV_ENGINE_MODEL_MODEL_H_
#define RWKV_ENGINE_MODEL_MODEL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/loader/tensor_source.h"
#include "engine/model/backend.h"
#include "engine/model/model_config.h"
#include "engine/model/state_layout.h"

namespace rwkv {

struct ModelLoadOptions {
  bool progress = true;  // progress bar on stderr while loading (only if stderr is a terminal)
  // How the slot pool stores the RWKV-7 wkv matrices: kF32 (exact, the
  // default) or kF16 (half the bytes per session; rounding in
  // fp16_state_rounding.h). RWKV-4 takes kF32 only: INVALID_ARGUMENT
  // otherwise. The slot APIs speak fp32 either way.
  DType state_dtype = DType::kF32;
};

// One session's tokens in a forward call.
struct ForwardRequest {
  int32_t slot = 0;
  absl::Span<const int32_t> tokens;  // at least one
  bool all_logits = false;           // logits after every token (else after the last only)
};

class Model {
 public:
  ~Model();

  // Loads "synthetic:<size>" or a model file (.pth, .safetensors/.st,
  // rwkv.cpp .bin) onto `backend`.
  static absl::StatusOr<std::unique_ptr<Model>> Load(const std::string& spec, std::unique_ptr<Backend> backend,
                                                     const ModelLoadOptions& options = {});
  // Builds from an already opened source (tests, tools).
  static absl::StatusOr<std::unique_ptr<Model>> FromSource(const TensorSource& source,
                                                           std::unique_ptr<Backend> backend,
                                                           const ModelLoadOptions& options = {});

  const ModelConfig& config() const { return config_; }
  // The host format of a session's state (fp32), whatever the slots hold.
  const StateLayout& state_layout() const { return layout_; }
  // How a slot holds it (its "native" layout), and what one slot costs in
  // backend memory: the size of a native block (ReadSlotNative), about half
  // the host format's with fp16 state.
  const SlotLayout& slot_layout() const { return slot_; }
  DType state_dtype() const { return slot_.wkv_dtype; }
  int64_t slot_bytes() const { return static_cast<int64_t>(slot_.bytes()); }
  Backend& backend() { return *backend_; }
  // Bytes of the weights a step reads (every matrix and vector; the
  // embedding table, of which a step reads only its tokens' rows, excluded).
  int64_t weight_bytes() const { return weight_bytes_; }
  // Backend bytes the forward workspace takes for passes of up to `rows`
  // rows and `logit_rows` logit rows (what EnsureWorkspace allocates).
  int64_t WorkspaceBytes(int rows, int logit_rows) const;
  // 16 hex chars identifying the weights (a hash of every tensor's name,
  // shape and a sample of its values after loading), so a state saved by one
  // model is refused by another.
  const std::string& fingerprint() const { return fingerprint_; }
  // How the backend stores the matrices (f32 on the CPU; f16/bf16/f32 on CUDA).
  DType weight_dtype() const { return head_.dtype; }

  // ---- state slots ----
  // (Re)allocates the pool with n slots, all fresh. Existing states are lost.
  // The backend holds one more slot's worth: a fresh state that ResetSlot
  // copies from.
  absl::Status AllocateSlots(int32_t n);
  int32_t num_slots() const { return num_slots_; }
  // Makes a slot fresh again (a copy within the backend; stream-ordered on a GPU).
  absl::Status ResetSlot(int32_t slot);
  // Copies a slot's state to / from host memory in the host format
  // (state_layout().total floats), converting from / to an fp16 slot.
  absl::Status ReadSlot(int32_t slot, float* host) const;
  absl::Status WriteSlot(int32_t slot, const float* host);
  // Copies a slot's native bytes (slot_layout().total floats, slot_bytes()
  // bytes) to / from host memory as they are, with no conversion: what the
  // engine offloads an idle session to, so that an fp16-state session takes
  // half the host bytes and comes back bit for bit. From memory of
  // backend().AllocHost the copy is a DMA transfer on a GPU.
  absl::Status ReadSlotNative(int32_t slot, float* native) const;
  absl::Status WriteSlotNative(int32_t slot, const float* native);
  // Converts a native block (as ReadSlotNative gives it) to the host format
  // and back (SlotToHostState / HostToSlotState: native -> host -> native
  // gives back the same bytes).
  void NativeToHostState(const float* native, float* host) const;
  void HostToNativeState(const float* host, float* native) const;
  // A device copy of the slot's native bytes (no rounding).
  absl::Status CopySlot(int32_t from, int32_t to);

  // ---- forward ----
  // Advances each request's slot through its tokens. Slots must be distinct.
  // `logits` receives, in request order, one row of vocab_size floats per
  // token for all_logits requests, else one row per request.
  // INVALID_ARGUMENT for bad tokens, slots or empty requests (nothing runs).
  absl::Status Forward(absl::Span<const ForwardRequest> requests, std::vector<float>* logits);

  // ---- forward with the logits left in backend memory ----
  // Why: a server sampling on the GPU needs only a few logit rows on the
  // host (top_logprobs, the last logits of a session that goes idle); the
  // rest never leave the device.
  // As Forward, but the logit rows (same order and count) stay in backend
  // memory: "kept" until the next Forward or ForwardKeepLogits call, which
  // replaces them. A single-pass call leaves them in the workspace (no copy);
  // a call of several passes (over max_pass_rows() rows) copies each pass's rows into a
  // buffer for the whole call.
  // Returns once the work is queued on the backend, without waiting for the
  // device (a CPU backend has finished by then): the engine does host work
  // while a GPU computes. Whatever reads results next (SampleKeptLogits,
  // DownloadKeptLogits, ReadSlot, Forward) waits for it, and a device fault
  // in the queued work is reported there.
  absl::Status ForwardKeepLogits(absl::Span<const ForwardRequest> requests);
  // Rows kept by the last ForwardKeepLogits (0 after a Forward).
  int64_t kept_logit_rows() const { return kept_rows_; }
  // Samples kept rows on the backend: out[i] from rows[i] as specs[i] says.
  // FAILED_PRECONDITION where the backend cannot (SupportsDeviceSampling),
  // INVALID_ARGUMENT for a row out of range or mismatched sizes.
  absl::Status SampleKeptLogits(absl::Span<const int32_t> rows, absl::Span<const SampleSpec> specs,
                                absl::Span<SampledToken> out);
  // Copies kept row `row` (vocab_size floats) to host memory.
  absl::Status DownloadKeptLogits(int64_t row, float* host);

  // ---- pass size ----
  // Rows of one pass (default 1,024): a forward of more rows runs as several
  // passes, each reading every weight once more (and, keeping logits, copying
  // its rows and waiting for the device between them). A server whose steps
  // take up to N rows (its batch, its step budget) sets N, so a step is one
  // pass; the workspace grows to the largest pass run (WorkspaceBytes says
  // how much). INVALID_ARGUMENT outside [1, kMaxPassRowsLimit].
  static constexpr int kDefaultMaxPassRows = 1024;
  static constexpr int kMaxPassRowsLimit = 1 << 16;
  absl::Status SetMaxPassRows(int rows);
  int max_pass_rows() const { return max_pass_rows_; }

  // ---- start-up ----
  // Why: the CUDA backend records a pass shape as a CUDA graph the second
  // time it runs it; a server would otherwise pay for the recording (and the
  // eager first run) during its first steps under load.
  // Where the backend records passes (Backend::RecordsPasses), sizes the
  // workspace for passes of up to `max_rows` rows (at most max_pass_rows()) and
  // `max_batch` logit rows, then runs the pass of every decode-only shape of
  // 1..max_batch sessions (one token each, logits for each; counts as padded,
  // largest first) twice, with padding segments only: no slot is read or
  // written; kept logits are dropped. Returns the number of shapes run (0
  // where the backend records nothing: nothing runs).
  absl::StatusOr<int> WarmUpPasses(int max_batch, int max_rows);

 private:
  struct Layer;
  Model() = default;
  absl::Status LoadWeights(const TensorSource& src, const ModelLoadOptions& options);
  absl::Status EnsureWorkspace(int rows, int logit_rows);
  // Forward into `host_logits`, or (null) into the kept logits.
  absl::Status RunForward(absl::Span<const ForwardRequest> requests, std::vector<float>* host_logits);
  // One pass: pads its rows, segments and logit rows (Backend::PassRowQuantum),
  // sizes the workspace and runs the layers and the head between BeginPass and
  // EndPass. Leaves the logits in logits_ (padded rows after the real ones).
  absl::Status RunPass(std::vector<Segment>& segs, std::vector<int32_t>& tokens, int rows,
                       std::vector<int32_t>& logit_rows);
  void LayerV7(int l, int n, const std::vector<Segment>& segs);
  void LayerV4(int l, int n, const std::vector<Segment>& segs);

  ModelConfig config_;
  StateLayout layout_;
  SlotLayout slot_;
  std::unique_ptr<Backend> backend_;
  int64_t weight_bytes_ = 0;
  std::string fingerprint_;

  Matrix emb_, head_;
  float* ln_out_w_ = nullptr;
  float* ln_out_b_ = nullptr;
  std::vector<Layer> layers_;

  float* state_ = nullptr;  // [num_slots][slot_.total]
  int32_t num_slots_ = 0;

  int max_pass_rows_ = kDefaultMaxPassRows;

  // The width the RWKV-7 LoRA products are padded to where the backend pads
  // them (Backend::PadsLora; the largest of d_w, d_a, d_v, d_g), else 0.
  int lora_width_ = 0;

  // Workspace, sized for ws_rows_ rows.
  int ws_rows_ = 0;
  int ws_logit_rows_ = 0;
  std::vector<float*> ws_;
  float *x_ = nullptr, *xx_ = nullptr, *d_ = nullptr;
  float *mix_[6] = {}, *r_ = nullptr, *k_ = nullptr, *v_ = nullptr, *w_ = nullptr, *a_ = nullptr,
        *g_ = nullptr, *kk_ = nullptr, *vfirst_ = nullptr, *y_ = nullptr, *lora_[4] = {},
        *ffn_ = nullptr, *tmp_ = nullptr, *logit_in_ = nullptr, *logits_ = nullptr;

  // Kept logits: kept_rows_ rows at kept_ (logits_ after a single pass, else
  // kept_buf_, which holds kept_buf_rows_ rows).
  const float* kept_ = nullptr;
  int64_t kept_rows_ = 0;
  float* kept_buf_ = nullptr;
  int64_t kept_buf_rows_ = 0;
};

// The number of worker threads to use by default (hardware concurrency).
int DefaultThreads();

}  // namespace rwkv

#endif  // RWKV_ENGINE_MODEL_MODEL_H_
