// A Backend for tests that forwards every op to a host-memory backend (the
// CPU one) and samples "in its memory" with Sampler::SampleSpecOnHost.
//
// Why: the engine's device-sampling path (logits kept in backend memory,
// rows copied to the host only when needed) must give exactly the host
// path's tokens and last logits; with this backend that is checked bit for
// bit on any machine, without a GPU (engine_test.cc). The CUDA backend's
// SampleRows is checked against the same twin in cuda_sample_test.cc.
#ifndef RWKV_ENGINE_TESTING_HOST_SAMPLING_BACKEND_H_
#define RWKV_ENGINE_TESTING_HOST_SAMPLING_BACKEND_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "engine/model/backend.h"
#include "engine/model/forwarding_backend.h"
#include "engine/sampler/sampler.h"

namespace rwkv::testing {

class HostSamplingBackend final : public ForwardingBackend {
 public:
  // `inner` must keep its buffers in host memory (CpuBackend).
  explicit HostSamplingBackend(std::unique_ptr<Backend> inner) : ForwardingBackend(std::move(inner)) {}

  // Rows sampled so far through SampleRows.
  int64_t rows_sampled() const { return rows_sampled_; }

  std::string name() const override { return inner_->name() + "+host-sampling"; }
  bool SupportsDeviceSampling() const override { return true; }
  absl::Status SampleRows(const float* logits, int vocab, const int32_t* rows, const SampleSpec* specs, int n,
                          SampledToken* out) override {
    for (int i = 0; i < n; ++i) {
      out[i] = Sampler::SampleSpecOnHost(
          specs[i], absl::MakeConstSpan(logits + static_cast<int64_t>(rows[i]) * vocab, static_cast<size_t>(vocab)));
    }
    rows_sampled_ += n;
    return absl::OkStatus();
  }

 private:
  int64_t rows_sampled_ = 0;
};

}  // namespace rwkv::testing

#endif  // RWKV_ENGINE_TESTING_HOST_SAMPLING_BACKEND_H_
