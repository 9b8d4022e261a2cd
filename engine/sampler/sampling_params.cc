// Validation of SamplingParams.
//
// Why: the sampler runs on the engine thread for every token and must not
// fail there, so every range is checked once at admission. Each check is
// written as "value inside range" (not "value outside range") so that NaN,
// which fails every comparison, is rejected by the same test.
#include "engine/sampler/sampling_params.h"

#include <cstdint>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace rwkv {
namespace {

absl::Status RangeError(absl::string_view name, absl::string_view range, float value) {
  return absl::InvalidArgumentError(absl::StrCat(name, " must be in ", range, ", got ", value));
}

}  // namespace

absl::Status ValidateSamplingParams(const SamplingParams& p, int32_t vocab_size) {
  if (vocab_size <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("vocab_size must be positive, got ", vocab_size));
  }
  if (!(p.temperature >= 0.0f && p.temperature <= kMaxTemperature)) {
    return RangeError("temperature", "[0, 100] (0 = greedy)", p.temperature);
  }
  if (p.top_k < 0 || p.top_k > vocab_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_k must be in [0, ", vocab_size, "] (0 = off), got ", p.top_k));
  }
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) {
    return RangeError("top_p", "(0, 1]", p.top_p);
  }
  if (!(p.min_p >= 0.0f && p.min_p <= 1.0f)) {
    return RangeError("min_p", "[0, 1]", p.min_p);
  }
  if (!(p.presence_penalty >= -kMaxAbsPenalty && p.presence_penalty <= kMaxAbsPenalty)) {
    return RangeError("presence_penalty", "[-10, 10]", p.presence_penalty);
  }
  if (!(p.frequency_penalty >= -kMaxAbsPenalty && p.frequency_penalty <= kMaxAbsPenalty)) {
    return RangeError("frequency_penalty", "[-10, 10]", p.frequency_penalty);
  }
  if (!(p.penalty_decay > 0.0f && p.penalty_decay <= 1.0f)) {
    return RangeError("penalty_decay", "(0, 1]", p.penalty_decay);
  }
  if (!(p.repetition_penalty >= 1.0f && p.repetition_penalty <= kMaxRepetitionPenalty)) {
    return RangeError("repetition_penalty", "[1, 10]", p.repetition_penalty);
  }
  absl::flat_hash_set<int32_t> biased;
  biased.reserve(p.logit_bias.size());
  for (size_t i = 0; i < p.logit_bias.size(); ++i) {
    const auto& [id, bias] = p.logit_bias[i];
    if (id < 0 || id >= vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("logit_bias[", i, "] token id must be in [0, ", vocab_size, "), got ", id));
    }
    if (!(bias >= -kMaxAbsLogitBias && bias <= kMaxAbsLogitBias)) {
      return RangeError(absl::StrCat("logit_bias[", i, "] bias"), "[-100, 100]", bias);
    }
    if (!biased.insert(id).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("logit_bias has a duplicate token id ", id, " at index ", i));
    }
  }
  for (size_t i = 0; i < p.stop_token_ids.size(); ++i) {
    const int32_t id = p.stop_token_ids[i];
    if (id < 0 || id >= vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("stop_token_ids[", i, "] must be in [0, ", vocab_size, "), got ", id));
    }
  }
  if (p.stop_strings.size() > kMaxStopStrings) {
    return absl::InvalidArgumentError(absl::StrCat("stop_strings must have at most ", kMaxStopStrings,
                                                   " entries, got ", p.stop_strings.size()));
  }
  for (size_t i = 0; i < p.stop_strings.size(); ++i) {
    const std::string& s = p.stop_strings[i];
    if (s.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("stop_strings[", i, "] must be non-empty"));
    }
    if (s.size() > kMaxStopStringBytes) {
      return absl::InvalidArgumentError(absl::StrCat("stop_strings[", i, "] must be at most ",
                                                     kMaxStopStringBytes, " bytes, got ", s.size()));
    }
  }
  return absl::OkStatus();
}

}  // namespace rwkv
