// Turns one step's logits into the next token, for one session.
//
// Why: sampling runs on the CPU once per generated token per session, over a
// 65536-entry vocabulary, so it must cost a few passes over the logits and no
// full sort. Each session owns its Sampler: the PRNG stream and the penalty
// counts live here, so a session's tokens depend only on its seed, its params
// and its logits, never on batching or on other sessions. Copying a Sampler
// forks it (for session fork).
#ifndef RWKV_ENGINE_SAMPLER_SAMPLER_H_
#define RWKV_ENGINE_SAMPLER_SAMPLER_H_

#include <array>
#include <cstdint>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/sampler/rng.h"
#include "engine/sampler/sample_spec.h"
#include "engine/sampler/sampling_params.h"

namespace rwkv {

// Not thread-safe: one per session, used by one thread at a time (different
// Samplers may run on different threads at once). Scratch memory (about
// 1 MB at vocab 65536) is per thread, not per session: a Sampler holds only
// its params, 32 bytes of PRNG state and the penalty counts.
//
// Cost per Sample at vocab 65536 (one x86-64 core with AVX2, Release):
// greedy ~10 us, top_k=50 ~30 us, plain or min_p ~50 us, top_p 60-200 us
// (more when many tokens could fall inside top_p). A full sort would be ~4 ms.
class Sampler {
 public:
  // INVALID_ARGUMENT where ValidateSamplingParams rejects the params.
  static absl::StatusOr<Sampler> Create(SamplingParams params, int32_t vocab_size);

  Sampler(const Sampler&) = default;
  Sampler& operator=(const Sampler&) = default;
  Sampler(Sampler&&) = default;
  Sampler& operator=(Sampler&&) = default;

  // Picks the next token from `logits` (logits.size() should equal
  // vocab_size; ids beyond logits.size() in logit_bias or the counts are
  // ignored). Applies, in order: logit_bias, presence/frequency penalties,
  // repetition penalty, then greedy argmax when temperature == 0, else
  // temperature, top_k, top_p, min_p and one draw from the PRNG (exactly one
  // 64-bit draw per non-greedy call, whatever the filters keep).
  // NaN logits count as -inf. If every adjusted logit is -inf (all tokens
  // banned), falls back to the argmax of the raw logits; if some are +inf,
  // returns the lowest such id. Empty logits return 0. Never fails.
  // Does not update the penalty counts: call Accept with the token you keep.
  int32_t Sample(absl::Span<const float> logits);

  // Sampling on a device (Backend::SampleRows): fills `spec` with everything
  // Sample would do to the next row besides reading it: the adjustments
  // (logit_bias and the penalties, one entry per token, ascending ids), the
  // filters and, when temperature > 0, the draw u, consuming the same 64-bit
  // PRNG draw Sample would. The device then picks the token Sample would pick
  // with that u (up to summation order, see kernels/sample.cu). Call
  // FinishDeviceSample with the device's result before the next Prepare or
  // Sample, then Accept as usual.
  void PrepareDeviceSample(SampleSpec* spec);
  // Where the device did not use the draw (every adjusted logit was -inf, so
  // Sample would have returned the raw argmax without drawing), puts the
  // draw back, so a seeded session gets the same stream on either path.
  void FinishDeviceSample(const SampledToken& result);
  // The host twin of Backend::SampleRows: samples `logits` exactly as
  // Sample would with the spec's adjustments, filters and draw (so
  // PrepareDeviceSample + this == Sample, bit for bit), with the logprob of
  // the raw logits. For tests, and for backends whose memory is host memory.
  // Thread-safe.
  static SampledToken SampleSpecOnHost(const SampleSpec& spec, absl::Span<const float> logits);

  // Records a generated token for the penalties: every count is multiplied by
  // penalty_decay, then `token`'s count grows by 1. O(1) amortized (a lazy
  // global scale, renormalized rarely). Ids outside [0, vocab_size) are
  // ignored.
  void Accept(int32_t token);

  // Whether `token` is one of params.stop_token_ids.
  bool IsStopToken(int32_t token) const;

  // The logits Sample works from before temperature: NaN -> -inf, then
  // logit_bias, presence/frequency and repetition penalties. `out` must have
  // logits.size() elements (otherwise it is left untouched). For logprobs of
  // the processed distribution and for tests.
  void ApplyLogitAdjustments(absl::Span<const float> logits, absl::Span<float> out) const;

  // The decayed count of `token` (0 if never accepted).
  float PenaltyCount(int32_t token) const;

  // The `n` most probable tokens under log_softmax(raw_logits) as (id,
  // logprob), most probable first, ties to the lower id; min(n, size)
  // entries. NaN counts as -inf. Thread-safe.
  static void TopLogprobs(absl::Span<const float> raw_logits, int n,
                          std::vector<std::pair<int32_t, float>>* out);

  // log_softmax(raw_logits)[token]; -inf for ids out of range. Thread-safe.
  static float TokenLogprob(absl::Span<const float> raw_logits, int32_t token);

  const SamplingParams& params() const { return params_; }
  int32_t vocab_size() const { return vocab_size_; }
  // Tokens passed to Accept so far.
  int64_t num_accepted() const { return num_accepted_; }
  const Xoshiro256StarStar& rng() const { return rng_; }

 private:
  Sampler(SamplingParams params, int32_t vocab_size);

  // ApplyLogitAdjustments into `out` (same size as logits); returns max(out).
  float Adjust(absl::Span<const float> logits, float* out) const;
  // What presence/frequency subtract from a token with decayed count `count`
  // (one function, so the host and device paths round it the same way).
  float PenaltyOf(float count) const;

  SamplingParams params_;
  int32_t vocab_size_;
  std::vector<int32_t> sorted_stop_ids_;
  Xoshiro256StarStar rng_;
  // Penalty counts: the true count of t is raw_counts_[t] * count_scale_.
  // Accept multiplies the scale instead of every count.
  absl::flat_hash_map<int32_t, double> raw_counts_;
  double count_scale_ = 1.0;
  int64_t num_accepted_ = 0;
  // The PRNG before PrepareDeviceSample's draw, until FinishDeviceSample.
  bool device_draw_pending_ = false;
  std::array<uint64_t, 4> rng_before_draw_{};
};

}  // namespace rwkv

#endif  // RWKV_ENGINE_SAMPLER_SAMPLER_H_
