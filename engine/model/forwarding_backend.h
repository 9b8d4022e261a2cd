// A Backend that forwards every op to another backend it owns.
//
// Why: test and benchmark wrappers (the FFN-activity counter in tools/bench,
// the host-sampling backend in engine/testing) change one or two ops and
// must pass every other one through, including the fused ops and device
// sampling, so that what is measured or tested is the inner backend's own
// path. Deriving from this class, a wrapper overrides only what it changes;
// a new Backend op needs one forwarding line here, not one per wrapper
// (forwarding_backend_test.cc fails while one is missing).
#ifndef RWKV_ENGINE_MODEL_FORWARDING_BACKEND_H_
#define RWKV_ENGINE_MODEL_FORWARDING_BACKEND_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "engine/model/backend.h"

namespace rwkv {

class ForwardingBackend : public Backend {
 public:
  explicit ForwardingBackend(std::unique_ptr<Backend> inner) : inner_(std::move(inner)) {}
  Backend& inner() { return *inner_; }

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
  bool PadsLora() const override { return inner_->PadsLora(); }
  bool PaddedLoraPays(int n) const override { return inner_->PaddedLoraPays(n); }
  absl::StatusOr<MemoryInfo> DeviceMemory() override { return inner_->DeviceMemory(); }
  absl::StatusOr<void*> AllocHost(size_t bytes) override { return inner_->AllocHost(bytes); }
  void FreeHost(void* p) override { inner_->FreeHost(p); }
  bool HostMemoryPinned() const override { return inner_->HostMemoryPinned(); }
  void BeginPass(const Segment* segs, int nseg, const int32_t* tokens, int rows, const int32_t* logit_rows,
                 int nlogit) override {
    inner_->BeginPass(segs, nseg, tokens, rows, logit_rows, nlogit);
  }
  void EndPass() override { inner_->EndPass(); }
  int PassRowQuantum(int count) const override { return inner_->PassRowQuantum(count); }
  int64_t Wkv7ScratchBytes(int rows, int C, int N, DType state_dtype) const override {
    return inner_->Wkv7ScratchBytes(rows, C, N, state_dtype);
  }
  bool RecordsPasses() const override { return inner_->RecordsPasses(); }

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
  void SigmoidGate(float* y, float* r, int64_t n, float* out, DType out_type) override {
    inner_->SigmoidGate(y, r, n, out, out_type);
  }
  void SigmoidMulAdd(float* x, float* r, const float* t, int64_t n) override { inner_->SigmoidMulAdd(x, r, t, n); }
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
                const float* lnw, const float* lnb, int n, int C, int N, float* out, DType out_type) override {
    inner_->V7Output(y, r, k, v, g, r_k, lnw, lnb, n, C, N, out, out_type);
  }
  void Wkv7WithOutput(const Segment* segs, int nseg, int n, int C, int N, StateRef wkv, const float* r,
                      const float* w, const float* k, const float* v, const float* kk, const float* a, float* y,
                      const float* g, const float* r_k, const float* lnw, const float* lnb, float* out,
                      DType out_type) override {
    inner_->Wkv7WithOutput(segs, nseg, n, C, N, wkv, r, w, k, v, kk, a, y, g, r_k, lnw, lnb, out, out_type);
  }
  void Wkv4(const Segment* segs, int nseg, int C, StateRef aa, const float* time_first,
            const float* time_decay, const float* k, const float* v, float* y) override {
    inner_->Wkv4(segs, nseg, C, aa, time_first, time_decay, k, v, y);
  }

  absl::StatusOr<Matrix> UploadSparseInputMatrix(const float* host, int32_t rows, int32_t cols) override {
    return inner_->UploadSparseInputMatrix(host, rows, cols);
  }
  void GroupedMatMul(int n, const MatMulJob* jobs, int count) override { inner_->GroupedMatMul(n, jobs, count); }
  void V7Projections(int n, const MatMulJob* main, int n_main, const MatMulJob* lora_in, int n_in,
                     const MatMulJob* lora_out, int n_out) override {
    inner_->V7Projections(n, main, n_main, lora_in, n_in, lora_out, n_out);
  }
  void ReluSquareMatMul(float* h, int n, const Matrix& w, float* y, bool accumulate, DType h_type) override {
    inner_->ReluSquareMatMul(h, n, w, y, accumulate, h_type);
  }
  void LayerNormShiftMix(const float* x, int n, int C, const float* ln_w, const float* ln_b, const Segment* segs,
                         int nseg, StateRef x_prev, const float* const* mixes, float* const* outs, int count,
                         float* xx, float* d, DType out_type) override {
    inner_->LayerNormShiftMix(x, n, C, ln_w, ln_b, segs, nseg, x_prev, mixes, outs, count, xx, d, out_type);
  }
  DType MatMulInputType(int n) const override { return inner_->MatMulInputType(n); }
  DType FfnHiddenType(int n) const override { return inner_->FfnHiddenType(n); }
  DType LoraHiddenType(int n) const override { return inner_->LoraHiddenType(n); }
  void V7Prep(float* w, const float* w0, float* a, const float* a0, float* k, float* kk, const float* k_k,
              const float* k_a, float* v, float* v_first, const float* v_gate, const float* v0, int n, int C,
              int N) override {
    inner_->V7Prep(w, w0, a, a0, k, kk, k_k, k_a, v, v_first, v_gate, v0, n, C, N);
  }
  void V7PrepWkv7WithOutput(const Segment* segs, int nseg, int n, int C, int N, StateRef wkv, const V7PrepArgs& p,
                            const float* r, float* y, const float* g, const float* r_k, const float* lnw,
                            const float* lnb, float* out, DType out_type) override {
    inner_->V7PrepWkv7WithOutput(segs, nseg, n, C, N, wkv, p, r, y, g, r_k, lnw, lnb, out, out_type);
  }
  bool SupportsDeviceSampling() const override { return inner_->SupportsDeviceSampling(); }
  absl::Status SampleRows(const float* logits, int vocab, const int32_t* rows, const SampleSpec* specs, int n,
                          SampledToken* out) override {
    return inner_->SampleRows(logits, vocab, rows, specs, n, out);
  }

 protected:
  std::unique_ptr<Backend> inner_;
};

}  // namespace rwkv

#endif  // RWKV_ENGINE_MODEL_FORWARDING_BACKEND_H_
