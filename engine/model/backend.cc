// The default implementations of the optional Backend methods. The fused
// ops each compose the unfused ops in the order the forward pass used to call
// them, so a backend that does not fuse (the CPU reference, a forwarding
// wrapper) computes exactly what the unfused pass computed. Host memory is
// plain aligned memory where the backend's own memory is host memory too.
#include "engine/model/backend.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_format.h"

namespace rwkv {
namespace {

// A backend broke the op contract (a programming error, never a request's):
// going on would read 16-bit data as fp32.
[[noreturn]] void AbortOnContract(const char* what) {
  std::fprintf(stderr, "fatal: %s (Backend::MatMulInputType contract)\n", what);
  std::abort();
}

}  // namespace

absl::StatusOr<void*> Backend::AllocHost(size_t bytes) {
  // aligned_alloc wants a multiple of the alignment.
  const size_t rounded = (std::max<size_t>(bytes, 1) + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded);
  if (p == nullptr) {
    return absl::ResourceExhaustedError(absl::StrFormat("out of host memory allocating %d bytes (%.1f MiB)", bytes,
                                                        static_cast<double>(bytes) / 1048576.0));
  }
  return p;
}

void Backend::FreeHost(void* p) { std::free(p); }

absl::StatusOr<Matrix> Backend::UploadSparseInputMatrix(const float* host, int32_t rows, int32_t cols) {
  return UploadMatrix(host, rows, cols);
}

void Backend::GroupedMatMul(int n, const MatMulJob* jobs, int count) {
  for (int j = 0; j < count; ++j) {
    const MatMulJob& job = jobs[j];
    // A 16-bit x comes only from a backend whose MatMulInputType said so,
    // which must then override this op (and LayerNormShiftMix).
    if (job.x_type != DType::kF32) AbortOnContract("GroupedMatMul: a 16-bit input reached the default composition");
    if (job.y_type != DType::kF32) AbortOnContract("GroupedMatMul: a 16-bit output asked of the default composition");
    if (job.y_act != InputAct::kNone) {
      AbortOnContract("GroupedMatMul: an output activation asked of the default composition");
    }
    const int64_t in = static_cast<int64_t>(n) * job.w->cols;
    // The activation runs in place, which the op's contract allows.
    float* x = const_cast<float*>(job.x);
    if (job.act == InputAct::kTanh) Tanh(x, in);
    if (job.act == InputAct::kSigmoid) Sigmoid(x, in);
    MatMul(job.x, n, *job.w, job.y, job.accumulate);
  }
}

void Backend::V7Projections(int n, const MatMulJob* main, int n_main, const MatMulJob* lora_in, int n_in,
                            const MatMulJob* lora_out, int n_out) {
  if (n_main < 0 || n_in < 0 || n_out < 0 || n_main > kMaxV7ProjectionJobs || n_in > kMaxV7ProjectionJobs ||
      n_out > kMaxV7ProjectionJobs) {
    AbortOnContract("V7Projections: more jobs in a list than kMaxV7ProjectionJobs");
  }
  MatMulJob first[2 * kMaxV7ProjectionJobs];
  std::copy(main, main + n_main, first);
  std::copy(lora_in, lora_in + n_in, first + n_main);
  GroupedMatMul(n, first, n_main + n_in);
  GroupedMatMul(n, lora_out, n_out);
}

void Backend::SigmoidGate(float* y, float* r, int64_t n, float* out, DType out_type) {
  if (out_type != DType::kF32 || out != y) AbortOnContract("SigmoidGate: the default composition writes fp32 into y");
  Sigmoid(r, n);
  Mul(y, r, n);
}

void Backend::SigmoidMulAdd(float* x, float* r, const float* t, int64_t n) {
  Sigmoid(r, n);
  MulAdd(x, r, t, n);
}

void Backend::Wkv7WithOutput(const Segment* segs, int nseg, int n, int C, int N, StateRef wkv, const float* r,
                             const float* w, const float* k, const float* v, const float* kk, const float* a, float* y,
                             const float* g, const float* r_k, const float* lnw, const float* lnb, float* out,
                             DType out_type) {
  Wkv7(segs, nseg, C, N, wkv, r, w, k, v, kk, a, y);
  V7Output(y, r, k, v, g, r_k, lnw, lnb, n, C, N, out, out_type);
}

void Backend::V7PrepWkv7WithOutput(const Segment* segs, int nseg, int n, int C, int N, StateRef wkv,
                                   const V7PrepArgs& p, const float* r, float* y, const float* g, const float* r_k,
                                   const float* lnw, const float* lnb, float* out, DType out_type) {
  V7Prep(p.w, p.w0, p.a, p.a0, p.k, p.kk, p.k_k, p.k_a, p.v, p.v_first, p.v_gate, p.v0, n, C, N);
  Wkv7WithOutput(segs, nseg, n, C, N, wkv, r, p.w, p.k, p.v, p.kk, p.a, y, g, r_k, lnw, lnb, out, out_type);
}

void Backend::ReluSquareMatMul(float* h, int n, const Matrix& w, float* y, bool accumulate, DType h_type) {
  // This composition takes fp32 only; FfnHiddenType says so by default.
  if (h_type != DType::kF32) AbortOnContract("ReluSquareMatMul: a 16-bit hidden given to the default composition");
  ReluSquare(h, static_cast<int64_t>(n) * w.cols);
  MatMul(h, n, w, y, accumulate);
}

void Backend::LayerNormShiftMix(const float* x, int n, int C, const float* ln_w, const float* ln_b,
                                const Segment* segs, int nseg, StateRef x_prev, const float* const* mixes,
                                float* const* outs, int count, float* xx, float* d, DType out_type) {
  // This composition writes fp32 only; MatMulInputType says so by default.
  if (out_type != DType::kF32) AbortOnContract("LayerNormShiftMix: 16-bit outputs asked of the default composition");
  LayerNorm(x, n, C, ln_w, ln_b, xx);
  TokenShift(xx, segs, nseg, C, x_prev, d);
  Mix(xx, d, n, C, mixes, outs, count);
}

void Backend::V7Prep(float* w, const float* w0, float* a, const float* a0, float* k, float* kk, const float* k_k,
                     const float* k_a, float* v, float* v_first, const float* v_gate, const float* v0, int n, int C,
                     int N) {
  V7Decay(w, w0, n, C);
  SigmoidBias(a, a0, n, C);
  V7KeyPrep(k, kk, a, k_k, k_a, n, C, N);
  if (v0 != nullptr) {
    V7ValueResidual(v, v_first, v_gate, v0, n, C);
  } else {
    (void)CopyFloats(v, v_first, static_cast<size_t>(n) * C);
  }
}

}  // namespace rwkv
