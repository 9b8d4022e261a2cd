// Wire messages (rwkv.v1) <-> typed engine requests and results.
//
// Why: the request pipeline is admit -> validate -> schedule -> stream, and
// this file is the "validate" step. Every wire request is checked here and
// turned into a plain engine struct (defaults filled in, text tokenized, the
// seed chosen) before the engine sees it, so the engine never handles a
// protobuf and the checks can be unit-tested without a server or a model.
// The engine validates again what it owns (session state, queue limits);
// checks here exist to give clear messages early and to enforce what only
// the wire knows (unset optional fields, UTF-8, a missing vocabulary).
// All functions are pure apart from the injected seed source: thread-safe.
#ifndef RWKV_SERVER_REQUEST_CONVERT_H_
#define RWKV_SERVER_REQUEST_CONVERT_H_

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "engine/serving/engine.h"
#include "engine/tokenizer/tokenizer.h"
#include "rwkv/v1/rwkv.pb.h"

namespace rwkv {

inline constexpr int32_t kDefaultMaxTokens = 256;
inline constexpr int32_t kMaxTopLogprobs = 20;

// What validation needs to know about the running server.
struct EdgeContext {
  // The tokenizer for text, or nullptr when no vocabulary is loaded (text
  // input is then FAILED_PRECONDITION and outputs carry token ids only).
  const Tokenizer* text_tokenizer = nullptr;
  int32_t vocab_size = 0;  // the model's
  int32_t max_prompt_tokens = 1 << 20;
  int32_t max_new_tokens = 1 << 20;  // cap on max_tokens
  // Picks the seed for a request that asks for seed 0 (a random one). Must
  // be thread-safe and never return 0. Empty: RandomSeed().
  std::function<uint64_t()> random_seed;
};

// A fresh random nonzero 64-bit seed. Thread-safe.
uint64_t RandomSeed();

// A validated Generate call: the engine request plus what only the
// transport uses (which log-probabilities go on the wire).
struct GenerateCall {
  GenerateRequest request;
  bool logprobs = false;  // send each token's log-probability
};

// Validates `req` into an engine request with `deadline`. Errors:
// INVALID_ARGUMENT (invalid UTF-8, token ids out of range, sampling values
// out of range, max_tokens < 1 or above the cap, top_logprobs outside 0..20,
// a prompt over max_prompt_tokens); FAILED_PRECONDITION (text or stop
// strings without a vocabulary).
absl::StatusOr<GenerateCall> ToGenerateCall(const v1::GenerateRequest& req, const EdgeContext& edge,
                                            absl::Time deadline);

// Sampling parameters and stop conditions with the proto's defaults applied
// (unset temperature / top_p / penalty_decay / repetition_penalty -> 1) and
// seed 0 replaced by edge.random_seed(). Validated with ValidateSamplingParams.
absl::StatusOr<SamplingParams> ToSamplingParams(const v1::SamplingParams& sampling,
                                                const v1::StopConditions& stop, const EdgeContext& edge);

// Text -> ids (FAILED_PRECONDITION without a vocabulary, INVALID_ARGUMENT for
// invalid UTF-8 or more than max_prompt_tokens ids). `field` names the field
// in error messages.
absl::StatusOr<std::vector<int32_t>> EncodePromptText(const std::string& text, const EdgeContext& edge,
                                                      std::string_view field);
// Wire ids -> ids (INVALID_ARGUMENT for ids outside [0, vocab_size) or more
// than max_prompt_tokens).
absl::StatusOr<std::vector<int32_t>> CheckPromptIds(absl::Span<const int32_t> ids, const EdgeContext& edge,
                                                    std::string_view field);

// A validated CreateSession call.
struct CreateSessionCall {
  enum class Kind { kPrompt, kFork, kLoad };
  Kind kind = Kind::kPrompt;
  std::vector<int32_t> prompt;  // kPrompt (may be empty: a zero state)
  std::string source;           // kFork: the session id; kLoad: the saved name
};
absl::StatusOr<CreateSessionCall> ToCreateSessionCall(const v1::CreateSessionRequest& req,
                                                      const EdgeContext& edge);

// INVALID_ARGUMENT "session_id is required" when empty. Unknown ids are the
// engine's NOT_FOUND.
absl::Status CheckSessionId(const std::string& id);

// Checks a SaveSession request: session id present and a valid state name.
absl::Status CheckSaveSession(const v1::SaveSessionRequest& req);
// Checks a saved-state name (ValidateStateName's rule, INVALID_ARGUMENT).
absl::Status CheckStateName(const std::string& name);

// Tokenize / Detokenize with the same rules as prompts.
absl::StatusOr<std::vector<int32_t>> TokenizeText(const std::string& text, const EdgeContext& edge);
// Decoded text with invalid UTF-8 replaced by U+FFFD. INVALID_ARGUMENT for an
// id out of range; FAILED_PRECONDITION without a vocabulary.
absl::StatusOr<std::string> DetokenizeIds(absl::Span<const int32_t> ids, const EdgeContext& edge);

// ---- engine results -> wire ----
void ToProtoSession(const SessionInfo& info, v1::Session* out);
v1::FinishReason ToProtoFinishReason(FinishReason reason);
void ToProtoUsage(const GenerateUsage& usage, v1::Usage* out);
// Appends the events' text, ids and (as requested) log-probabilities to `out`.
void AppendTokenEvents(const std::vector<TokenEvent>& events, bool logprobs, v1::GenerateResponse* out);

// The fingerprint as a proto string (which must be UTF-8): as is when it is
// printable ASCII, else lowercase hex.
std::string PrintableFingerprint(std::string_view fingerprint);

}  // namespace rwkv

#endif  // RWKV_SERVER_REQUEST_CONVERT_H_
