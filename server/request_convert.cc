// Validation of wire requests into engine requests, and engine results back
// to wire messages (see the header for why this is its own unit).
#include "server/request_convert.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "engine/sampler/sampling_params.h"
#include "engine/state/state_store.h"
#include "engine/tokenizer/stream_decoder.h"

namespace rwkv {
namespace {

constexpr char kNoVocabulary[] = "no vocabulary loaded; send token ids";

absl::Status NoVocabulary(std::string_view what) {
  return absl::FailedPreconditionError(
      absl::StrCat(absl::string_view(what.data(), what.size()), ": ", kNoVocabulary));
}

absl::string_view AV(std::string_view s) { return absl::string_view(s.data(), s.size()); }

absl::Status CheckPromptLength(size_t n, const EdgeContext& edge, std::string_view field) {
  if (n > static_cast<size_t>(edge.max_prompt_tokens)) {
    return absl::InvalidArgumentError(absl::StrCat(AV(field), " has ", n, " tokens; the limit is ",
                                                   edge.max_prompt_tokens, " (--max-prompt-tokens)"));
  }
  return absl::OkStatus();
}

}  // namespace

uint64_t RandomSeed() {
  thread_local absl::BitGen gen;
  return absl::Uniform<uint64_t>(absl::IntervalClosed, gen, 1, UINT64_MAX);
}

absl::StatusOr<std::vector<int32_t>> EncodePromptText(const std::string& text, const EdgeContext& edge,
                                                      std::string_view field) {
  if (edge.text_tokenizer == nullptr) return NoVocabulary(field);
  if (!IsValidUtf8(text)) {
    return absl::InvalidArgumentError(absl::StrCat(AV(field), " is not valid UTF-8"));
  }
  std::vector<int32_t> ids = edge.text_tokenizer->Encode(text);
  if (absl::Status s = CheckPromptLength(ids.size(), edge, field); !s.ok()) return s;
  return ids;
}

absl::StatusOr<std::vector<int32_t>> CheckPromptIds(absl::Span<const int32_t> ids, const EdgeContext& edge,
                                                    std::string_view field) {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= edge.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat(AV(field), "[", i, "] = ", ids[i], " is out of range [0, ", edge.vocab_size, ")"));
    }
  }
  if (absl::Status s = CheckPromptLength(ids.size(), edge, field); !s.ok()) return s;
  return std::vector<int32_t>(ids.begin(), ids.end());
}

absl::StatusOr<SamplingParams> ToSamplingParams(const v1::SamplingParams& sampling,
                                                const v1::StopConditions& stop, const EdgeContext& edge) {
  SamplingParams p;
  p.temperature = sampling.has_temperature() ? sampling.temperature() : 1.0f;
  p.top_k = sampling.top_k();
  p.top_p = sampling.has_top_p() ? sampling.top_p() : 1.0f;
  p.min_p = sampling.min_p();
  p.presence_penalty = sampling.presence_penalty();
  p.frequency_penalty = sampling.frequency_penalty();
  p.penalty_decay = sampling.has_penalty_decay() ? sampling.penalty_decay() : 1.0f;
  p.repetition_penalty = sampling.has_repetition_penalty() ? sampling.repetition_penalty() : 1.0f;
  p.logit_bias.assign(sampling.logit_bias().begin(), sampling.logit_bias().end());
  std::sort(p.logit_bias.begin(), p.logit_bias.end());  // map order is unspecified; keep it deterministic
  p.stop_token_ids.assign(stop.stop_token_ids().begin(), stop.stop_token_ids().end());
  p.stop_strings.assign(stop.stop_strings().begin(), stop.stop_strings().end());
  if (!p.stop_strings.empty() && edge.text_tokenizer == nullptr) return NoVocabulary("stop_strings");
  for (size_t i = 0; i < p.stop_strings.size(); ++i) {
    if (!IsValidUtf8(p.stop_strings[i])) {
      return absl::InvalidArgumentError(absl::StrCat("stop_strings[", i, "] is not valid UTF-8"));
    }
  }
  if (sampling.seed() != 0) {
    p.seed = sampling.seed();
  } else {
    p.seed = edge.random_seed ? edge.random_seed() : RandomSeed();
  }
  if (absl::Status s = ValidateSamplingParams(p, edge.vocab_size); !s.ok()) return s;
  return p;
}

absl::StatusOr<GenerateCall> ToGenerateCall(const v1::GenerateRequest& req, const EdgeContext& edge,
                                            absl::Time deadline) {
  GenerateCall call;
  GenerateRequest& out = call.request;
  switch (req.prompt_case()) {
    case v1::GenerateRequest::kText: {
      auto ids = EncodePromptText(req.text(), edge, "text");
      if (!ids.ok()) return ids.status();
      out.prompt = *std::move(ids);
      break;
    }
    case v1::GenerateRequest::kTokens: {
      auto ids = CheckPromptIds(req.tokens().ids(), edge, "tokens.ids");
      if (!ids.ok()) return ids.status();
      out.prompt = *std::move(ids);
      break;
    }
    case v1::GenerateRequest::PROMPT_NOT_SET:
      break;  // allowed for a session that has seen tokens (the engine checks)
  }
  out.session_id = req.session_id();
  auto sampling = ToSamplingParams(req.sampling(), req.stop(), edge);
  if (!sampling.ok()) return sampling.status();
  out.sampling = *std::move(sampling);
  out.ignore_end_of_text = req.stop().ignore_end_of_text();

  out.max_tokens = req.has_max_tokens() ? req.max_tokens() : kDefaultMaxTokens;
  if (out.max_tokens < 1 || out.max_tokens > edge.max_new_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_tokens must be in [1, ", edge.max_new_tokens, "], got ", out.max_tokens));
  }
  if (req.top_logprobs() < 0 || req.top_logprobs() > kMaxTopLogprobs) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_logprobs must be in [0, ", kMaxTopLogprobs, "], got ", req.top_logprobs()));
  }
  out.top_logprobs = req.top_logprobs();
  out.deadline = deadline;
  call.logprobs = req.logprobs();
  return call;
}

absl::StatusOr<CreateSessionCall> ToCreateSessionCall(const v1::CreateSessionRequest& req,
                                                      const EdgeContext& edge) {
  CreateSessionCall call;
  switch (req.source_case()) {
    case v1::CreateSessionRequest::kPromptText: {
      // An empty text asks for a zero state and needs no vocabulary.
      if (req.prompt_text().empty()) break;
      auto ids = EncodePromptText(req.prompt_text(), edge, "prompt_text");
      if (!ids.ok()) return ids.status();
      call.prompt = *std::move(ids);
      break;
    }
    case v1::CreateSessionRequest::kPromptTokens: {
      auto ids = CheckPromptIds(req.prompt_tokens().ids(), edge, "prompt_tokens.ids");
      if (!ids.ok()) return ids.status();
      call.prompt = *std::move(ids);
      break;
    }
    case v1::CreateSessionRequest::kForkOf:
      if (req.fork_of().empty()) return absl::InvalidArgumentError("fork_of must name a session");
      call.kind = CreateSessionCall::Kind::kFork;
      call.source = req.fork_of();
      break;
    case v1::CreateSessionRequest::kSavedName:
      if (absl::Status s = CheckStateName(req.saved_name()); !s.ok()) return s;
      call.kind = CreateSessionCall::Kind::kLoad;
      call.source = req.saved_name();
      break;
    case v1::CreateSessionRequest::SOURCE_NOT_SET:
      break;  // a fresh session with a zero state
  }
  return call;
}

absl::Status CheckSessionId(const std::string& id) {
  if (id.empty()) return absl::InvalidArgumentError("session_id is required");
  return absl::OkStatus();
}

absl::Status CheckStateName(const std::string& name) { return ValidateStateName(name); }

absl::Status CheckSaveSession(const v1::SaveSessionRequest& req) {
  if (absl::Status s = CheckSessionId(req.session_id()); !s.ok()) return s;
  return CheckStateName(req.name());
}

absl::StatusOr<std::vector<int32_t>> TokenizeText(const std::string& text, const EdgeContext& edge) {
  if (edge.text_tokenizer == nullptr) return NoVocabulary("Tokenize");
  if (!IsValidUtf8(text)) return absl::InvalidArgumentError("text is not valid UTF-8");
  return edge.text_tokenizer->Encode(text);
}

absl::StatusOr<std::string> DetokenizeIds(absl::Span<const int32_t> ids, const EdgeContext& edge) {
  if (edge.text_tokenizer == nullptr) return NoVocabulary("Detokenize");
  auto bytes = edge.text_tokenizer->Decode(ids);
  if (!bytes.ok()) return bytes.status();
  return SanitizeUtf8(*bytes);
}

void ToProtoSession(const SessionInfo& info, v1::Session* out) {
  out->set_id(info.id);
  out->set_tokens_seen(info.tokens_seen);
  out->set_resident(info.resident);
  out->set_busy(info.busy);
  out->set_created_unix_ms(absl::ToUnixMillis(info.created));
  out->set_last_used_unix_ms(absl::ToUnixMillis(info.last_used));
}

v1::FinishReason ToProtoFinishReason(FinishReason reason) {
  switch (reason) {
    case FinishReason::kLength:
      return v1::FINISH_REASON_LENGTH;
    case FinishReason::kStop:
      return v1::FINISH_REASON_STOP;
    case FinishReason::kEndOfText:
      return v1::FINISH_REASON_END_OF_TEXT;
    case FinishReason::kCancelled:
      return v1::FINISH_REASON_CANCELLED;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

void ToProtoUsage(const GenerateUsage& usage, v1::Usage* out) {
  out->set_prompt_tokens(usage.prompt_tokens);
  out->set_generated_tokens(usage.generated_tokens);
  out->set_time_to_first_token_seconds(usage.time_to_first_token_s);
  out->set_total_seconds(usage.total_time_s);
  out->set_queue_seconds(usage.queue_time_s);
}

void AppendTokenEvents(const std::vector<TokenEvent>& events, bool logprobs, v1::GenerateResponse* out) {
  for (const TokenEvent& e : events) {
    out->mutable_text()->append(e.text);
    out->add_token_ids(e.token);
    if (logprobs) {
      v1::TokenLogprob* lp = out->add_logprobs();
      lp->set_token_id(e.token);
      lp->set_logprob(e.logprob);
    }
    for (const auto& [id, logprob] : e.top) {
      v1::TokenLogprob* lp = out->add_top_logprobs();
      lp->set_token_id(id);
      lp->set_logprob(logprob);
    }
  }
}

std::string PrintableFingerprint(std::string_view fingerprint) {
  const bool printable =
      std::all_of(fingerprint.begin(), fingerprint.end(), [](char c) { return c >= 0x20 && c < 0x7f; });
  if (printable) return std::string(fingerprint);
  return absl::BytesToHexString(AV(fingerprint));
}

}  // namespace rwkv
