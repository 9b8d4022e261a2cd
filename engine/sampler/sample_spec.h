// What a backend needs to sample one row of logits where they live (on the
// GPU), and what it gives back.
//
// Why a separate plain header: the Sampler (engine/sampler) fills these and
// the Backend (engine/model) consumes them, and neither library should link
// the other. The spec holds everything Sampler::Sample would do to that row,
// already decided on the host: the sparse logit adjustments (logit_bias and
// the penalties of the tokens generated so far), the filters and the one
// uniform draw, so the device needs no per-session state and the PRNG stream
// stays on the host (the same seed gives the same draws on either path).
#ifndef RWKV_ENGINE_SAMPLER_SAMPLE_SPEC_H_
#define RWKV_ENGINE_SAMPLER_SAMPLE_SPEC_H_

#include <cstdint>
#include <vector>

namespace rwkv {

// One token's adjustment, applied to its sanitized logit v (NaN -> -inf) as
// Sampler::ApplyLogitAdjustments does, in this order:
//   v = bias == -inf ? -inf : v + bias;       (logit_bias; -inf bans)
//   v = v - penalty;                           (presence + count * frequency)
//   if (repetition != 1) v = v > 0 ? v / repetition : v * repetition;
// Tokens without a bias carry bias 0; tokens never generated carry penalty 0
// and repetition 1 (each step is then the identity on v).
struct LogitAdjustment {
  int32_t token = 0;
  float bias = 0.0f;
  float penalty = 0.0f;
  float repetition = 1.0f;
};

// One row to sample: the device applies `adjustments` (distinct tokens,
// ascending), then exactly the selection Sampler::Sample documents.
struct SampleSpec {
  float temperature = 1.0f;      // 0 = greedy (argmax, ties to the lowest id); u unused
  float inv_temperature = 1.0f;  // min(1 / temperature, FLT_MAX), as Sample computes it
  int32_t top_k = 0;             // 0 (or >= vocab) = off
  float top_p = 1.0f;            // 1 = off
  float min_p = 0.0f;            // 0 = off
  double u = 0.0;                // the uniform draw in [0, 1)
  std::vector<LogitAdjustment> adjustments;
};

// A device-sampled token.
struct SampledToken {
  int32_t token = 0;
  // log_softmax of the RAW logits at `token` (what TokenEvent.logprob reports).
  float logprob = 0.0f;
  // Whether Sample would have consumed the draw: false when greedy or when
  // every adjusted logit is -inf (the raw argmax is returned, no draw).
  bool used_draw = false;
};

}  // namespace rwkv

#endif  // RWKV_ENGINE_SAMPLER_SAMPLE_SPEC_H_
