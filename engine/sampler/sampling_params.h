// The per-request sampling parameters and their validation.
//
// Why: every knob a client can turn on the sampler lives in one plain struct,
// checked once at admission (INVALID_ARGUMENT naming the parameter and its
// valid range) so that the sampler itself can assume sane values and never
// has to fail or crash mid-generation. The penalty knobs follow ChatRWKV's
// pipeline (alpha_presence, alpha_frequency, alpha_decay), which is what RWKV
// users know; repetition_penalty follows the HF/CTRL convention.
#ifndef RWKV_ENGINE_SAMPLER_SAMPLING_PARAMS_H_
#define RWKV_ENGINE_SAMPLER_SAMPLING_PARAMS_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace rwkv {

// Valid ranges, written once; the comments on SamplingParams refer to them.
inline constexpr float kMaxTemperature = 100.0f;
inline constexpr float kMaxAbsPenalty = 10.0f;  // presence/frequency
inline constexpr float kMaxRepetitionPenalty = 10.0f;
inline constexpr float kMaxAbsLogitBias = 100.0f;
inline constexpr size_t kMaxStopStrings = 16;
inline constexpr size_t kMaxStopStringBytes = 256;

// Order in which Sampler::Sample applies them: logit_bias, presence and
// frequency penalties, repetition penalty, temperature, top_k, top_p, min_p,
// then one random draw. Defaults leave the model's distribution untouched
// (plain sampling at temperature 1).
//
// Penalties count only *generated* tokens (those passed to Sampler::Accept),
// never prompt tokens, as ChatRWKV does.
struct SamplingParams {
  // [0, 100]. 0 = greedy: argmax of the biased/penalized logits, ties going to
  // the lowest token id; no random number is consumed. Otherwise logits are
  // divided by it before the softmax.
  float temperature = 1.0f;

  // [0, vocab_size]; 0 = off. Keep only the k highest logits (ties to the
  // lower id). k >= the number of finite logits is the same as off.
  int32_t top_k = 0;

  // (0, 1]; 1 = off. Keep the smallest set of most probable tokens (ties to
  // the lower id) whose probability mass, renormalized over the top_k
  // survivors, reaches top_p (up to a relative rounding slack of 1e-6). The
  // most probable token is always kept.
  float top_p = 1.0f;

  // [0, 1]; 0 = off. Drop tokens whose probability (after temperature) is
  // below min_p times the largest probability. 1 keeps only the maximum (and
  // any exact ties).
  float min_p = 0.0f;

  // [-10, 10] each (ChatRWKV alpha_presence / alpha_frequency). For every
  // token generated so far: logit -= presence_penalty + count *
  // frequency_penalty, where count is the decayed count below. A token stays
  // "present" forever once generated, however small its count has decayed.
  // Negative values encourage repetition.
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;

  // (0, 1] (ChatRWKV alpha_decay; ChatRWKV uses 0.996). After each generated
  // token every count is multiplied by this, then the new token's count grows
  // by 1. 1 = plain counts.
  float penalty_decay = 1.0f;

  // [1, 10]; 1 = off (HF/CTRL style). For every token generated so far, a
  // positive logit is divided by it and a non-positive one multiplied, after
  // the presence/frequency penalties. Values below 1 (which reward
  // repetition) are rejected: they make degenerate loops likely.
  float repetition_penalty = 1.0f;

  // (token id, bias) pairs: ids in [0, vocab_size), no duplicates; bias in
  // [-100, 100], added to the logit. A bias of exactly -100 bans the token
  // (its logit becomes -inf) whatever the temperature.
  std::vector<std::pair<int32_t, float>> logit_bias;

  // Ids in [0, vocab_size); duplicates are harmless. Sampler::IsStopToken
  // reports them; the end-of-text token (0 for RWKV World) is the caller's
  // policy and is not implied here.
  std::vector<int32_t> stop_token_ids;

  // At most 16, each non-empty and at most 256 bytes. Matched on the decoded
  // byte stream by StopMatcher; the stop string itself is not emitted.
  std::vector<std::string> stop_strings;

  // Seeds the sampler's own PRNG (xoshiro256**, seeded through splitmix64).
  // The same seed, params and logits give the same tokens on any platform
  // and whatever else runs in the batch. 0 is an ordinary seed: a server
  // that wants fresh randomness per request must pick a seed itself.
  uint64_t seed = 0;
};

// OK, or INVALID_ARGUMENT whose message names the offending parameter, its
// valid range and the value, e.g. "top_p must be in (0, 1], got 1.5". NaN and
// infinities are rejected everywhere. vocab_size must be positive.
// Thread-safe.
absl::Status ValidateSamplingParams(const SamplingParams& p, int32_t vocab_size);

}  // namespace rwkv

#endif  // RWKV_ENGINE_SAMPLER_SAMPLING_PARAMS_H_
