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
#include "engine/model/forwarding_backend.h"

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

class ReluCountingBackend final : public ForwardingBackend {
 public:
  explicit ReluCountingBackend(std::unique_ptr<Backend> inner) : ForwardingBackend(std::move(inner)) {}

  void StartCounting(int n_layer);
  ReluCounts StopCounting();

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
  void ReluSquare(float* x, int64_t n) override;
  // While counting, the FFN's fused relu² runs as its unfused default, which
  // calls ReluSquare above; otherwise the inner backend's own kernel runs.
  void ReluSquareMatMul(float* h, int n, const Matrix& w, float* y, bool accumulate, DType h_type) override {
    if (counting_) {
      Backend::ReluSquareMatMul(h, n, w, y, accumulate, h_type);
    } else {
      inner_->ReluSquareMatMul(h, n, w, y, accumulate, h_type);
    }
  }
  // While counting, the hidden stays fp32 (ReluSquare above reads it).
  DType FfnHiddenType(int n) const override { return counting_ ? DType::kF32 : inner_->FfnHiddenType(n); }

 private:
  bool counting_ = false;
  bool in_pass_ = false;  // a pass was forwarded to the inner backend
  int n_layer_ = 1;
  int64_t calls_ = 0;
  ReluCounts counts_;
  std::vector<float> host_;
};

}  // namespace rwkv

#endif  // RWKV_TOOLS_BENCH_COUNTING_BACKEND_H_
