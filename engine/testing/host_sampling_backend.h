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
#include "engine/sampler/sampler.h"

namespace rwkv::testing {

class HostSamplingBackend final : public Backend {
 public:
  // `inner` must keep its buffers in host memory (CpuBackend).
  explicit HostSamplingBackend(std::unique_ptr<Backend> inner) : inner_(std::move(inner)) {}

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

  absl::StatusOr<float*> Alloc(size_t floats) override { return inner_->Alloc(floats); }
  void Free(float* p) override { inner_->Free(p); }
  absl::Status Upload(const float* host, float* dst, size_t floats) override {
    return inner_->Upload(host, dst, floats);
  }
  absl::Status Download(const float* src, float* host, size_t floats) override {
    return inner_->Download(src, host, floats);
  }
  absl::Status CopyFloats(const float* src, float* dst, size_t floats) override {
    return inner_->CopyFloats(src, dst, floats);
  }
  absl::StatusOr<Matrix> UploadMatrix(const float* host, int32_t rows, int32_t cols) override {
    return inner_->UploadMatrix(host, rows, cols);
  }
  absl::StatusOr<Matrix> UploadEmbedding(const float* host, int32_t rows, int32_t cols) override {
    return inner_->UploadEmbedding(host, rows, cols);
  }
  absl::Status Sync() override { return inner_->Sync(); }
  void BeginPass(const Segment* segs, int nseg, const int32_t* tokens, int rows, const int32_t* logit_rows,
                 int nlogit) override {
    inner_->BeginPass(segs, nseg, tokens, rows, logit_rows, nlogit);
  }
  void EndPass() override { inner_->EndPass(); }
  void Embedding(const Matrix& emb, const int32_t* tokens, int n, float* x) override {
    inner_->Embedding(emb, tokens, n, x);
  }
  void LayerNorm(const float* x, int n, int C, const float* w, const float* b, float* y) override {
    inner_->LayerNorm(x, n, C, w, b, y);
  }
  void MatMul(const float* x, int n, const Matrix& w, float* y, bool accumulate) override {
    inner_->MatMul(x, n, w, y, accumulate);
  }
  void GatherRows(const float* x, const int32_t* rows, int n, int C, float* out) override {
    inner_->GatherRows(x, rows, n, C, out);
  }
  void TokenShift(const float* xx, const Segment* segs, int nseg, int C, StateRef x_prev, float* d) override {
    inner_->TokenShift(xx, segs, nseg, C, x_prev, d);
  }
  void Mix(const float* xx, const float* d, int n, int C, const float* const* mixes, float* const* outs,
           int count) override {
    inner_->Mix(xx, d, n, C, mixes, outs, count);
  }
  void Sigmoid(float* x, int64_t n) override { inner_->Sigmoid(x, n); }
  void Tanh(float* x, int64_t n) override { inner_->Tanh(x, n); }
  void ReluSquare(float* x, int64_t n) override { inner_->ReluSquare(x, n); }
  void Mul(float* x, const float* a, int64_t n) override { inner_->Mul(x, a, n); }
  void MulAdd(float* x, const float* a, const float* b, int64_t n) override { inner_->MulAdd(x, a, b, n); }
  void SigmoidBias(float* x, const float* bias, int n, int C) override { inner_->SigmoidBias(x, bias, n, C); }
  void V7Decay(float* w, const float* w0, int n, int C) override { inner_->V7Decay(w, w0, n, C); }
  void V7KeyPrep(float* k, float* kk, const float* a, const float* k_k, const float* k_a, int n, int C,
                 int N) override {
    inner_->V7KeyPrep(k, kk, a, k_k, k_a, n, C, N);
  }
  void V7ValueResidual(float* v, const float* v_first, const float* gate, const float* v0, int n,
                       int C) override {
    inner_->V7ValueResidual(v, v_first, gate, v0, n, C);
  }
  void Wkv7(const Segment* segs, int nseg, int C, int N, StateRef wkv, const float* r, const float* w,
            const float* k, const float* v, const float* kk, const float* a, float* y) override {
    inner_->Wkv7(segs, nseg, C, N, wkv, r, w, k, v, kk, a, y);
  }
  void V7Output(float* y, const float* r, const float* k, const float* v, const float* g, const float* r_k,
                const float* lnw, const float* lnb, int n, int C, int N) override {
    inner_->V7Output(y, r, k, v, g, r_k, lnw, lnb, n, C, N);
  }
  void Wkv4(const Segment* segs, int nseg, int C, StateRef aa, const float* time_first,
            const float* time_decay, const float* k, const float* v, float* y) override {
    inner_->Wkv4(segs, nseg, C, aa, time_first, time_decay, k, v, y);
  }

 private:
  std::unique_ptr<Backend> inner_;
  int64_t rows_sampled_ = 0;
};

}  // namespace rwkv::testing

#endif  // RWKV_ENGINE_TESTING_HOST_SAMPLING_BACKEND_H_
