// A Backend that forwards every op to another one and, while counting is on,
// counts how many inputs of ReluSquare (the FFN's relu²) are positive.
//
// Why: the FFN's activity (the fraction of relu inputs above zero) decides
// how much a sparse down-projection could save, and the synthetic models are
// built so that about 20% are positive, like the peer's benchmark weights.
// The Model exposes no activations, so the benchmark wraps its backend in
// this one: with counting off it only forwards (one extra virtual call per
// op, nothing else), and with counting on it downloads each ReluSquare input
// before delegating. It wraps whatever backend is benchmarked, so the count
// comes from the very weights and arithmetic being timed (fp16 weights on
// the GPU), and costs no second model load (which for 7.2B would be minutes
// of host work).
//
// ReluSquare runs once per layer per forward pass, in layer order (inside
// ReluSquareMatMul, which runs unfused while counting), so the i-th call
// since StartCounting belongs to layer i mod n_layer.
#ifndef RWKV_TOOLS_BENCH_COUNTING_BACKEND_H_
#define RWKV_TOOLS_BENCH_COUNTING_BACKEND_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/model/backend.h"

namespace rwkv {

struct ReluCounts {
  int64_t positive = 0;
  int64_t total = 0;
  std::vector<int64_t> layer_positive, layer_total;  // per layer
  absl::Status status;                               // first failed download, if any
  double Fraction() const {
    return total > 0 ? static_cast<double>(positive) / static_cast<double>(total) : 0;
  }
};

class ReluCountingBackend final : public Backend {
 public:
  explicit ReluCountingBackend(std::unique_ptr<Backend> inner) : inner_(std::move(inner)) {}

  Backend& inner() { return *inner_; }
  void StartCounting(int n_layer);
  ReluCounts StopCounting();

  std::string name() const override { return inner_->name(); }
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
  absl::StatusOr<MemoryInfo> DeviceMemory() override { return inner_->DeviceMemory(); }
  // Passes reach the inner backend only while not counting: counting
  // downloads inside a pass, which a pass does not allow.
  void BeginPass(const Segment* segs, int nseg, const int32_t* tokens, int rows, const int32_t* logit_rows,
                 int nlogit) override {
    if (counting_) return;
    inner_->BeginPass(segs, nseg, tokens, rows, logit_rows, nlogit);
    in_pass_ = true;
  }
  void EndPass() override {
    if (!in_pass_) return;
    in_pass_ = false;
    inner_->EndPass();
  }

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
  void ReluSquare(float* x, int64_t n) override;
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
  bool SupportsDeviceSampling() const override { return inner_->SupportsDeviceSampling(); }
  absl::Status SampleRows(const float* logits, int vocab, const int32_t* rows, const SampleSpec* specs, int n,
                          SampledToken* out) override {
    return inner_->SampleRows(logits, vocab, rows, specs, n, out);
  }

  // Fused ops: forwarded, so the benchmark times the inner backend's own
  // kernels; while counting, the FFN's fused relu² runs as its unfused
  // default, which calls ReluSquare above.
  absl::StatusOr<Matrix> UploadSparseInputMatrix(const float* host, int32_t rows, int32_t cols) override {
    return inner_->UploadSparseInputMatrix(host, rows, cols);
  }
  void GroupedMatMul(int n, const MatMulJob* jobs, int count) override { inner_->GroupedMatMul(n, jobs, count); }
  void ReluSquareMatMul(float* h, int n, const Matrix& w, float* y, bool accumulate) override {
    if (counting_) {
      Backend::ReluSquareMatMul(h, n, w, y, accumulate);
    } else {
      inner_->ReluSquareMatMul(h, n, w, y, accumulate);
    }
  }
  void LayerNormShiftMix(const float* x, int n, int C, const float* ln_w, const float* ln_b, const Segment* segs,
                         int nseg, StateRef x_prev, const float* const* mixes, float* const* outs, int count,
                         float* xx, float* d) override {
    inner_->LayerNormShiftMix(x, n, C, ln_w, ln_b, segs, nseg, x_prev, mixes, outs, count, xx, d);
  }
  void V7Prep(float* w, const float* w0, float* a, const float* a0, float* k, float* kk, const float* k_k,
              const float* k_a, float* v, float* v_first, const float* v_gate, const float* v0, int n, int C,
              int N) override {
    inner_->V7Prep(w, w0, a, a0, k, kk, k_k, k_a, v, v_first, v_gate, v0, n, C, N);
  }

 private:
  std::unique_ptr<Backend> inner_;
  bool counting_ = false;
  bool in_pass_ = false;  // a pass was forwarded to the inner backend
  int n_layer_ = 1;
  int64_t calls_ = 0;
  ReluCounts counts_;
  std::vector<float> host_;
};

}  // namespace rwkv

#endif  // RWKV_TOOLS_BENCH_COUNTING_BACKEND_H_
