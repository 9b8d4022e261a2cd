// Launcher for batched token sampling over rows of fp32 logits in device
// memory (what Sampler::Sample does on the host, for many rows at once).
// Plain C++: the structs are read byte for byte from host arrays the CUDA
// backend copies over (it static_asserts their layout).
#ifndef RWKV_KERNELS_SAMPLE_H_
#define RWKV_KERNELS_SAMPLE_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace rwkv::kernels {

// Mirrors rwkv::LogitAdjustment (engine/sampler/sample_spec.h).
struct LogitAdjustDesc {
  int32_t token;
  float bias;        // -inf bans
  float penalty;     // subtracted
  float repetition;  // 1 = none
};

// One row to sample.
struct SampleRowDesc {
  double u;                // uniform draw in [0, 1)
  int32_t row;             // row of `logits`
  int32_t top_k;           // 0 or >= vocab: off
  float temperature;       // 0: greedy
  float inv_temperature;   // min(1 / temperature, FLT_MAX)
  float top_p;             // 1: off
  float min_p;             // 0: off
  int32_t adj_begin;       // first of this row's adjustments (distinct tokens, ascending)
  int32_t adj_count;
};

struct SampleResultDesc {
  int32_t token;
  float logprob;      // log_softmax(raw row)[token]
  int32_t used_draw;  // 1 when the draw u was consumed (as Sampler::Sample would)
};

// Device scratch the split path needs for n rows (0 where n is too many for
// it). Zero it once when allocated; every launch leaves it zero again.
size_t sample_scratch_bytes(int n);

// For each i < n, samples row specs[i].row of `logits` into results[i], with
// exactly Sampler::Sample's semantics (see sample.cu). Vocabularies up to
// 2^20 tokens.
// parts: blocks per row. 0 chooses: several (up to 16, about one block per
// SM) for few rows when `scratch` holds sample_scratch_bytes(n), else one.
// 1 forces one block per row. Every choice gives the same results, bit for
// bit. More than 1 needs the scratch, and n * parts blocks resident at once
// (the launch is cooperative and fails, rather than hangs, otherwise).
// No host synchronization; the scratch may be shared by launches on one
// stream, not by concurrent ones.
cudaError_t launch_sample(const float* logits,              // (rows, vocab), read only
                          int vocab,
                          const SampleRowDesc* specs,       // (n) device
                          const LogitAdjustDesc* adjust,    // (sum of adj_count) device
                          int n,
                          SampleResultDesc* results,        // (n) device
                          void* scratch,                    // device, zeroed once; may be null (then parts <= 1)
                          size_t scratch_bytes,
                          int parts,
                          cudaStream_t stream);

}  // namespace rwkv::kernels

#endif  // RWKV_KERNELS_SAMPLE_H_
