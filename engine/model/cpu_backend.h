// The fp32 CPU backend: the numerical reference for every other backend.
//
// Why: CI and GPU-less machines run the whole product on it, and each CUDA
// op is checked against the op here. Weights are stored fp32. Matrix
// products use either the batch-invariant packed GEMM (cpu_gemm.h, the
// default: a row's result never depends on the other rows of the batch) or
// OpenBLAS (sometimes faster on long prompts, but its rounding of a row
// depends on the batch). The recurrences are split over sessions and heads
// on a small thread pool.
#ifndef RWKV_ENGINE_MODEL_CPU_BACKEND_H_
#define RWKV_ENGINE_MODEL_CPU_BACKEND_H_

#include <memory>
#include <unordered_map>

#include "engine/model/backend.h"
#include "engine/model/cpu_gemm.h"
#include "engine/model/thread_pool.h"

namespace rwkv {

enum class CpuGemm : uint8_t {
  kBatchInvariant,  // own packed kernel: results independent of batching
  kOpenBlas,        // OpenBLAS sgemm/sgemv
};

class CpuBackend final : public Backend {
 public:
  // threads: worker threads for the matrix products and the pool (>= 1).
  // wkv7_chunk: when > 0, RWKV-7 segments of at least kWkv7ChunkMinRows rows
  // with fp32 state run the recurrence in chunks of this many tokens
  // (engine/model/wkv7_chunked.h, the form of the GPU's chunked kernel: the
  // same function of the inputs up to rounding, and on a CPU core about as
  // fast as the token walk). Off by default: token by token, a prompt fed in
  // one forward gives bit for bit what stepping gives (model_test's
  // invariance tests), which the chunked form does only up to rounding. fp16
  // state is always token by token (it rounds after every token).
  explicit CpuBackend(int threads, CpuGemm gemm = CpuGemm::kBatchInvariant, int wkv7_chunk = 0);
  static constexpr int kWkv7ChunkMinRows = 8;
  ~CpuBackend() override;

  std::string name() const override { return "cpu"; }
  int threads() const { return pool_.threads(); }

  absl::StatusOr<float*> Alloc(size_t floats) override;
  void Free(float* p) override;
  absl::Status Upload(const float* host, float* dst, size_t floats) override;
  absl::Status Download(const float* src, float* host, size_t floats) override;
  absl::Status CopyFloats(const float* src, float* dst, size_t floats) override;
  absl::StatusOr<Matrix> UploadMatrix(const float* host, int32_t rows, int32_t cols) override;
  absl::StatusOr<Matrix> UploadEmbedding(const float* host, int32_t rows, int32_t cols) override;
  absl::Status Sync() override { return absl::OkStatus(); }

  void Embedding(const Matrix& emb, const int32_t* tokens, int n, float* x) override;
  void LayerNorm(const float* x, int n, int C, const float* w, const float* b, float* y) override;
  void MatMul(const float* x, int n, const Matrix& w, float* y, bool accumulate) override;
  void GatherRows(const float* x, const int32_t* rows, int n, int C, float* out) override;
  void TokenShift(const float* xx, const Segment* segs, int nseg, int C, StateRef x_prev, float* d) override;
  void Mix(const float* xx, const float* d, int n, int C, const float* const* mixes, float* const* outs,
           int count) override;
  void Sigmoid(float* x, int64_t n) override;
  void Tanh(float* x, int64_t n) override;
  void ReluSquare(float* x, int64_t n) override;
  void Mul(float* x, const float* a, int64_t n) override;
  void MulAdd(float* x, const float* a, const float* b, int64_t n) override;
  void SigmoidBias(float* x, const float* bias, int n, int C) override;
  void V7Decay(float* w, const float* w0, int n, int C) override;
  void V7KeyPrep(float* k, float* kk, const float* a, const float* k_k, const float* k_a, int n, int C,
                 int N) override;
  void V7ValueResidual(float* v, const float* v_first, const float* gate, const float* v0, int n,
                       int C) override;
  void Wkv7(const Segment* segs, int nseg, int C, int N, StateRef wkv, const float* r, const float* w,
            const float* k, const float* v, const float* kk, const float* a, float* y) override;
  void V7Output(float* y, const float* r, const float* k, const float* v, const float* g, const float* r_k,
                const float* lnw, const float* lnb, int n, int C, int N, float* out, DType out_type) override;
  void Wkv4(const Segment* segs, int nseg, int C, StateRef aa, const float* time_first,
            const float* time_decay, const float* k, const float* v, float* y) override;

 private:
  // Wkv7 with fp16 state (wkv.dtype == kF16).
  void Wkv7Fp16State(const Segment* segs, int nseg, int C, int N, StateRef wkv, const float* r, const float* w,
                     const float* k, const float* v, const float* kk, const float* a, float* y);

  ThreadPool pool_;
  CpuGemm gemm_;
  int wkv7_chunk_;
  std::unordered_map<float*, size_t> allocations_;  // pointer -> floats
};

}  // namespace rwkv

#endif  // RWKV_ENGINE_MODEL_CPU_BACKEND_H_
