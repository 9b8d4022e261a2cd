// Sampler: logit adjustments, penalty counts and dispatch to the draws.
//
// Why: the per-session state (params, PRNG, decayed counts) and the order of
// operations live here; the numeric passes are in sampling_ops.cc. Penalties
// touch only the tokens that were generated (a sparse map), and the decay is
// a lazy global scale, so Accept is O(1) and Sample adds O(distinct tokens)
// to the passes over the vocabulary.
#include "engine/sampler/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "engine/sampler/sampling_ops.h"

namespace rwkv {
namespace {

using sampling_internal::Cand;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr double kMinCountScale = 1e-150;  // renormalize the lazy count scale below this

// log_softmax value of `v` given the sanitized logits' max and their lse
// (lse only meaningful for finite max); `num_inf` = count of +inf logits.
float LogprobOf(float v, float max, double lse, int32_t num_inf) {
  if (max == kInf) return v == kInf ? -std::log(static_cast<float>(num_inf)) : -kInf;
  if (max == -kInf) return -kInf;
  return static_cast<float>(static_cast<double>(v) - lse);
}

}  // namespace

absl::StatusOr<Sampler> Sampler::Create(SamplingParams params, int32_t vocab_size) {
  if (absl::Status st = ValidateSamplingParams(params, vocab_size); !st.ok()) return st;
  return Sampler(std::move(params), vocab_size);
}

Sampler::Sampler(SamplingParams params, int32_t vocab_size)
    : params_(std::move(params)), vocab_size_(vocab_size), rng_(params_.seed) {
  sorted_stop_ids_ = params_.stop_token_ids;
  std::sort(sorted_stop_ids_.begin(), sorted_stop_ids_.end());
  sorted_stop_ids_.erase(std::unique(sorted_stop_ids_.begin(), sorted_stop_ids_.end()),
                         sorted_stop_ids_.end());
}

float Sampler::Adjust(absl::Span<const float> logits, float* out) const {
  const int32_t n = static_cast<int32_t>(logits.size());
  const float raw_max = sampling_internal::CopySanitized(logits, out);
  for (const auto& [id, bias] : params_.logit_bias) {
    if (id >= n) continue;
    out[id] = bias <= -kMaxAbsLogitBias ? -kInf : out[id] + bias;
  }
  const float presence = params_.presence_penalty;
  const float frequency = params_.frequency_penalty;
  const float repetition = params_.repetition_penalty;
  const bool penalize = presence != 0.0f || frequency != 0.0f || repetition != 1.0f;
  if (penalize) {
    for (const auto& [id, raw_count] : raw_counts_) {
      if (id >= n) continue;
      float v = out[id] - PenaltyOf(static_cast<float>(raw_count * count_scale_));
      if (repetition != 1.0f) v = v > 0.0f ? v / repetition : v * repetition;
      out[id] = v;
    }
  }
  // The raw maximum still stands unless a token that held it went down.
  float max = raw_max;
  bool stale = false;
  auto check = [&](int32_t id) {
    if (id >= n) return;
    const float raw = std::isnan(logits[id]) ? -kInf : logits[id];
    if (raw == raw_max && out[id] < raw_max) stale = true;
    max = out[id] > max ? out[id] : max;
  };
  for (const auto& [id, bias] : params_.logit_bias) check(id);
  if (penalize) {
    for (const auto& [id, raw_count] : raw_counts_) check(id);
  }
  return stale ? sampling_internal::MaxOf(out, n) : max;
}

float Sampler::PenaltyOf(float count) const {
  return params_.presence_penalty + count * params_.frequency_penalty;
}

void Sampler::PrepareDeviceSample(SampleSpec* spec) {
  spec->temperature = params_.temperature;
  spec->inv_temperature =
      params_.temperature == 0.0f ? 1.0f : std::min(1.0f / params_.temperature, std::numeric_limits<float>::max());
  spec->top_k = params_.top_k;
  spec->top_p = params_.top_p;
  spec->min_p = params_.min_p;
  // One entry per token, merging its bias and its penalty in Adjust's order.
  std::vector<LogitAdjustment>& adj = spec->adjustments;
  adj.clear();
  adj.reserve(params_.logit_bias.size() + raw_counts_.size());
  for (const auto& [id, bias] : params_.logit_bias) {
    if (id < 0 || id >= vocab_size_) continue;
    adj.push_back({id, bias <= -kMaxAbsLogitBias ? -kInf : bias, 0.0f, 1.0f});
  }
  // A token with both a bias and a count gets one entry (bias first, then
  // the penalty, as Adjust applies them): find it among the sorted bias entries.
  auto by_token = [](const LogitAdjustment& x, const LogitAdjustment& y) { return x.token < y.token; };
  std::sort(adj.begin(), adj.end(), by_token);
  const size_t num_bias = adj.size();
  const bool penalize = params_.presence_penalty != 0.0f || params_.frequency_penalty != 0.0f ||
                        params_.repetition_penalty != 1.0f;
  if (penalize) {
    for (const auto& [id, raw_count] : raw_counts_) {
      if (id < 0 || id >= vocab_size_) continue;
      const float penalty = PenaltyOf(static_cast<float>(raw_count * count_scale_));
      auto it = std::lower_bound(adj.begin(), adj.begin() + static_cast<int64_t>(num_bias),
                                 LogitAdjustment{id, 0.0f, 0.0f, 1.0f}, by_token);
      if (it != adj.begin() + static_cast<int64_t>(num_bias) && it->token == id) {
        it->penalty = penalty;
        it->repetition = params_.repetition_penalty;
      } else {
        adj.push_back({id, 0.0f, penalty, params_.repetition_penalty});
      }
    }
    std::sort(adj.begin(), adj.end(), by_token);
  }
  device_draw_pending_ = params_.temperature != 0.0f;
  if (device_draw_pending_) {
    rng_before_draw_ = rng_.state();
    spec->u = rng_.NextDouble();
  } else {
    spec->u = 0.0;
  }
}

void Sampler::FinishDeviceSample(const SampledToken& result) {
  if (device_draw_pending_ && !result.used_draw) rng_.set_state(rng_before_draw_);
  device_draw_pending_ = false;
}

void Sampler::ApplyLogitAdjustments(absl::Span<const float> logits, absl::Span<float> out) const {
  if (out.size() != logits.size()) return;
  Adjust(logits, out.data());
}

namespace {

// Sample's selection on the adjusted logits x (max = their maximum): the
// fallbacks, greedy, then one draw (`draw()`, called only where Sample
// consumes one; *drew says whether it was) and the filters.
template <typename Draw>
int32_t Pick(absl::Span<const float> logits, float* x, float max, float temperature, float inv_t, int32_t top_k,
             float top_p, float min_p, Draw&& draw, bool* drew) {
  const int32_t n = static_cast<int32_t>(logits.size());
  *drew = false;
  if (max == -kInf) return sampling_internal::RawArgmax(logits);
  if (temperature == 0.0f) return sampling_internal::FirstIndexOf(x, n, max);
  const double u = draw();
  *drew = true;
  if (max == kInf) return sampling_internal::FirstIndexOf(x, n, max);

  sampling_internal::Filters f;
  f.max = max;
  f.inv_t = inv_t;
  f.top_k = top_k;
  f.top_p = top_p;
  f.min_p = min_p;
  if (f.top_k > 0 && f.top_k < n) return sampling_internal::DrawTopK(x, n, f, u);
  if (f.top_p < 1.0f) return sampling_internal::DrawTopP(x, n, f, u);
  return sampling_internal::DrawFull(x, n, f, u);
}

}  // namespace

int32_t Sampler::Sample(absl::Span<const float> logits) {
  const int32_t n = static_cast<int32_t>(logits.size());
  if (n == 0) return 0;
  float* x = sampling_internal::ThreadScratchLogits(n);
  const float max = Adjust(logits, x);
  bool drew = false;
  const float inv_t =
      params_.temperature == 0.0f ? 1.0f : std::min(1.0f / params_.temperature, std::numeric_limits<float>::max());
  return Pick(logits, x, max, params_.temperature, inv_t, params_.top_k,
              params_.top_p, params_.min_p, [this] { return rng_.NextDouble(); }, &drew);
}

SampledToken Sampler::SampleSpecOnHost(const SampleSpec& spec, absl::Span<const float> logits) {
  SampledToken out;
  const int32_t n = static_cast<int32_t>(logits.size());
  if (n == 0) return out;
  float* x = sampling_internal::ThreadScratchLogits(n);
  sampling_internal::CopySanitized(logits, x);
  for (const LogitAdjustment& a : spec.adjustments) {
    if (a.token < 0 || a.token >= n) continue;
    float v = x[a.token];
    v = a.bias == -kInf ? -kInf : v + a.bias;
    v = v - a.penalty;
    if (a.repetition != 1.0f) v = v > 0.0f ? v / a.repetition : v * a.repetition;
    x[a.token] = v;
  }
  const float max = sampling_internal::MaxOf(x, n);
  out.token = Pick(logits, x, max, spec.temperature, spec.inv_temperature, spec.top_k, spec.top_p, spec.min_p,
                   [&spec] { return spec.u; }, &out.used_draw);
  out.logprob = TokenLogprob(logits, out.token);
  return out;
}

void Sampler::Accept(int32_t token) {
  if (token < 0 || token >= vocab_size_) return;
  ++num_accepted_;
  count_scale_ *= params_.penalty_decay;
  if (count_scale_ < kMinCountScale) {
    for (auto& [id, raw_count] : raw_counts_) raw_count *= count_scale_;
    count_scale_ = 1.0;
  }
  raw_counts_[token] += 1.0 / count_scale_;
}

bool Sampler::IsStopToken(int32_t token) const {
  return std::binary_search(sorted_stop_ids_.begin(), sorted_stop_ids_.end(), token);
}

float Sampler::PenaltyCount(int32_t token) const {
  auto it = raw_counts_.find(token);
  return it == raw_counts_.end() ? 0.0f : static_cast<float>(it->second * count_scale_);
}

void Sampler::TopLogprobs(absl::Span<const float> raw_logits, int n,
                          std::vector<std::pair<int32_t, float>>* out) {
  out->clear();
  const int32_t size = static_cast<int32_t>(raw_logits.size());
  if (size == 0 || n <= 0) return;
  float* x = sampling_internal::ThreadScratchLogits(size);
  const float max = sampling_internal::CopySanitized(raw_logits, x);
  const int32_t num_inf = max == kInf ? static_cast<int32_t>(std::count(x, x + size, kInf)) : 0;
  const double lse = std::isfinite(max) ? sampling_internal::LogSumExp(x, size, max) : 0.0;
  std::vector<Cand> top;
  sampling_internal::SelectTopK(x, size, n, &top);
  out->reserve(top.size());
  for (const Cand& c : top) out->emplace_back(c.id, LogprobOf(c.value, max, lse, num_inf));
}

float Sampler::TokenLogprob(absl::Span<const float> raw_logits, int32_t token) {
  const int32_t size = static_cast<int32_t>(raw_logits.size());
  if (token < 0 || token >= size) return -kInf;
  float* x = sampling_internal::ThreadScratchLogits(size);
  const float max = sampling_internal::CopySanitized(raw_logits, x);
  const int32_t num_inf = max == kInf ? static_cast<int32_t>(std::count(x, x + size, kInf)) : 0;
  const double lse = std::isfinite(max) ? sampling_internal::LogSumExp(x, size, max) : 0.0;
  return LogprobOf(x[token], max, lse, num_inf);
}

}  // namespace rwkv
