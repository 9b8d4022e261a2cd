// The CUDA backend: every Backend op on one GPU, fp32 activations and state,
// weights stored fp16, bf16 or fp32.
//
// Why: the server keeps every session's recurrent state in a pool of GPU
// slots and advances a whole batch of sessions per step; this backend runs
// that step on the device, reading and writing each session's state in place
// in its slot (the kernels in kernels/), with the matrix products on cuBLAS
// (16-bit weights halve the bytes a step must read; products accumulate in
// fp32 and write fp32). Each op is tested against the CPU backend op
// (cuda_backend_test.cc) and the whole model against the reference logits
// (cuda_model_test.cc).
//
// This header is plain C++: it names no CUDA type, so engine code and tools
// compile against it without nvcc. The library (rwkv_cuda_backend, declared
// in kernels/CMakeLists.txt) exists only where CMake found CUDA
// (RWKV_HAVE_CUDA). On a machine without a GPU, MakeCudaBackend returns
// FAILED_PRECONDITION with the reason; it never crashes.
//
// Errors: ops return void, so the first CUDA or cuBLAS error (including an
// op's rejected arguments) is recorded and returned by Sync() (and by every
// later call that returns a Status), as INTERNAL naming the op. The error is
// sticky: a CUDA fault can leave the context unusable, so the backend stays
// failed and the caller should mark the server unhealthy.
//
// Host arrays (segments, token ids, row ids) declared by BeginPass are copied
// to the device once per pass, in one copy into a fixed device buffer; ops
// given those same arrays use that copy. Any other host array is copied per
// call through a pinned staging buffer on the backend's stream.
//
// Matrix products: with 16-bit weights, products of up to
// options.small_batch_rows rows (default kDefaultSmallBatchRows) run on the
// GEMV family (kernels/gemv.h: fp32 input read directly, no conversion
// launch, several products per launch for GroupedMatMul), and the FFN
// down-projection of up to options.sparse_ffn_rows rows on the sparse kernel
// (kernels/ffn_sparse.h, ffn.value stored input-major); larger products, and
// all fp32 ones, run on cuBLAS (the input rounded to the weights' type first,
// unless its producer already wrote it so: MatMulInputType). So a session's logits depend, within
// the dtype's rounding, on whether its batch is above or below the threshold
// (issue #4 allows this: ~1e-2 relative and the same greedy tokens).
// Above small_batch_rows and up to options.skinny_rows rows, products with
// 16-bit row-major weights run on the tensor-core skinny GEMM
// (kernels/skinny_gemm.h: fp32 input read directly and rounded to the weight
// type as it is staged, as cuBLAS sees it; grouped launches; split-K with a
// deterministic reduction); the FFN down-projection (input-major) above
// sparse_ffn_rows is on relu² + cuBLAS. GroupedMatMul also puts LoRA-sized
// products on it up to options.skinny_lora_rows rows. On cuBLAS, a
// GroupedMatMul converts its fp32 inputs (activations applied as they are
// rounded; inputs already in the weight type are read as they are) in one
// launch (none when there is nothing to convert and no pointer array) and
// issues one call per product shape: cublasGemmBatchedEx for the jobs that
// share one (RWKV-7's r, k and v), its pointer arrays written on the device by
// that same conversion launch (so graphs capture them with no host upload).
// options.batch_invariant (or RWKV_CUDA_BATCH_INVARIANT=1) puts every product
// on cuBLAS whatever the row count, as before the small-batch kernels.
//
// CUDA graphs (options.cuda_graphs, on by default; RWKV_CUDA_GRAPHS=0 in the
// environment turns them off): a pass whose shape (rows, segment boundaries,
// logit rows; not the slots or tokens, which are read from the per-pass device
// buffer) was already run once is captured the second time and replayed from
// then on. A decode step of B sessions has one shape per B, so a server's
// steady decode replays; a shape seen once (most mixed prefill batches) is
// never captured. At most 512 graphs are kept (least recently replayed goes
// first); all are dropped whenever device memory is freed or a buffer they
// read moves.
// Not thread-safe: one thread drives a backend (any one thread; the device is
// made current on each call).
#ifndef RWKV_ENGINE_MODEL_CUDA_BACKEND_H_
#define RWKV_ENGINE_MODEL_CUDA_BACKEND_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <map>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/model/backend.h"

// The CUDA runtime's and cuBLAS's opaque handle types (cudaStream_t is
// CUstream_st*, cublasHandle_t is cublasContext*), named here so this header
// needs no CUDA include.
struct CUstream_st;
struct cublasContext;
struct CUevent_st;
struct CUgraphExec_st;

namespace rwkv {
namespace kernels {
struct GemvJob;  // kernels/gemv.h: one product of a grouped small-batch launch
struct LoraJob;  // kernels/lora_gemm.h: one product of a LoRA launch
}  // namespace kernels

// Every field below that names an RWKV_CUDA_* variable takes it from the
// environment at Init when set (engine/model/cuda_env.h: a malformed value is
// an INVALID_ARGUMENT naming it). Row thresholds given here are clamped to
// their maximum; from the environment, a value above it is an error.
struct CudaBackendOptions {
  int device = 0;                       // CUDA device ordinal
  DType weight_dtype = DType::kF16;     // how UploadMatrix stores matrices
  DType embedding_dtype = DType::kF16;  // how UploadEmbedding stores the table
  // Capture and replay forward passes as CUDA graphs (see above). The
  // environment variable RWKV_CUDA_GRAPHS (0 or 1) overrides this.
  bool cuda_graphs = true;
  // Products of up to this many rows (16-bit weights) on the small-batch
  // kernels; 0 = never (see above). The environment variable
  // RWKV_CUDA_SMALL_BATCH_ROWS overrides this; values above
  // kMaxSmallBatchRows are clamped.
  int small_batch_rows = kDefaultSmallBatchRows;
  // Every product on cuBLAS (and the FFN dense) for every row count, so that
  // a session's logits do not depend on its batch beyond cuBLAS's own
  // choice of algorithm. RWKV_CUDA_BATCH_INVARIANT (0 or 1) overrides this.
  bool batch_invariant = false;
  // With graphs on, round passes of more than 16 rows up to a few shapes
  // (Backend::PassRowQuantum: rows, segments and logit rows to a multiple of
  // 16 up to 511, then 32, 64, 128), so that a server's steps, whose mixes of
  // decoding sessions and prompt chunks rarely repeat, replay a graph
  // instead of running eagerly and recording one each time. Costs up to a
  // granule of extra rows per pass. RWKV_CUDA_PASS_PADDING (0 or 1)
  // overrides this.
  bool pass_padding = true;
  // Launch our kernels with programmatic dependent launch on sm_90 and later
  // (kernels/kernel_util.cuh): each kernel's launch overlaps the end of the
  // one before, same results. Process-wide (the last backend made decides).
  // RWKV_CUDA_PDL (0 or 1) overrides this. Passes of more than
  // kProgrammaticLaunchMaxRows rows launch without it.
  bool programmatic_launch = true;
  // The early trigger (pdl_wait) lets the next kernel's blocks take SM slots
  // while this one's last wave runs: worth it for a decode step's short
  // kernels, a loss for prompt passes of many-wave kernels. H100 (docs/PERF.md,
  // session 9): a 1.5B 4,096-row prefill 103,178 tokens/s with it, 107,183
  // without; decode at 256 and 960 sessions the same either way (51.1-51.5k,
  // 70.8-72.1k); at 64 sessions and below it pays (session 8).
  static constexpr int kProgrammaticLaunchMaxRows = 256;
  // Apply the RWKV-7 prep inside the decode WKV kernel
  // (V7PrepWkv7WithOutput), same bits. RWKV_CUDA_FUSE_PREP (0 or 1)
  // overrides this.
  bool fuse_v7_prep = true;

  // Where the GEMV stops paying. At n rows it does n fp32 FMAs per weight on
  // CUDA cores (plus a 16-bit widening), while cuBLAS on tensor cores does
  // not pay per row. Measured on an H100 (docs/PERF.md, 2026-11-26), whole
  // 1.5B decode steps with graphs: B=1 2.09 ms (cuBLAS 3.97), B=4 3.19,
  // B=8 4.41 (cuBLAS 4.30), B=16 6.38 (cuBLAS 4.62); at 7.2B B=8 12.7 ms
  // against 9.6 on cuBLAS. So the small-batch kernels stopped at 4 rows.
  // Since the skinny GEMM stages x four groups a round (session 10, H200,
  // per product at 4 rows: 2048x2048 GEMV 7.7 us, skinny 5.5; 4096x4096 21.3
  // / 14.4), whole 1.5B fp16-state steps with the GEMV up to 4 / 2 rows:
  // B=3 1,495 / 1,859 tokens/s, B=4 1,886 / 2,369; B=1-2 the same. So they
  // stop at 2 rows.
  static constexpr int kDefaultSmallBatchRows = 2;
  static constexpr int kMaxSmallBatchRows = 64;
  // Products of more than small_batch_rows and at most this many rows
  // (16-bit weights, row-major) on the skinny tensor-core GEMM; 0 = never.
  // The environment variable RWKV_CUDA_SKINNY_ROWS overrides this; values
  // above kMaxSkinnyRows are clamped. Batch-invariant mode ignores it.
  int skinny_rows = kDefaultSkinnyRows;
  // The kernel reads each weight once for up to 64 rows, on tensor cores.
  // Whole 1.5B decode steps on an H100 (docs/PERF.md, 2026-11-26), skinny
  // against cuBLAS above 4 rows: B=8 2.84 / 3.70 ms, B=16 3.49 / 3.84,
  // B=32 5.10 / 4.13, B=64 7.68 / 4.59. So it stopped at 16 rows. Since the
  // early launch trigger (session 9, H100, skinny up to 16 / 10 rows):
  // 1.5B fp32 state B=10 3,904 / 3,906 tokens/s, B=12 4,462 / 4,606, B=16
  // 5,365 / 6,012; 7.2B fp16 state B=10 1,360 / 1,362, B=12 1,580 / 1,671,
  // B=16 1,998 / 2,216. So it stops at 10 rows.
  static constexpr int kDefaultSkinnyRows = 10;
  static constexpr int kMaxSkinnyRows = 64;
  // Products with at least kSkinnyWideCols inputs (the 7.2B model's, C =
  // 4096) leave the skinny GEMM for cuBLAS above this many rows (and
  // skinny_rows): at that width cuBLAS's split-K kernels stream the weights
  // at ~2.8 TB/s from 8 rows, the skinny GEMM at 1.6-2.2 (each of its launches
  // just over one wave of CTAs). Whole 7.2B fp16-state steps on an H100
  // (docs/PERF.md, session 14), skinny up to 10 / 7 rows: B=8 1,198 / 1,247
  // and 1,203 / 1,252 tokens/s, B=10 1,262 / 1,496. (1.5B, C = 2048, keeps
  // skinny_rows: B=8 4,097 / 3,824 there.) RWKV_CUDA_SKINNY_WIDE_ROWS
  // overrides this; values above kMaxSkinnyRows are clamped. Batch-invariant
  // mode ignores it. LoRA-sized products follow skinny_lora_rows whatever
  // their width.
  int skinny_wide_rows = kDefaultSkinnyWideRows;
  static constexpr int kDefaultSkinnyWideRows = 7;
  static constexpr int kSkinnyWideCols = 4096;
  // Above skinny_rows and up to this many rows, GroupedMatMul still puts the
  // LoRA-sized products (a side of at most kSkinnyLoraMaxDim) on the skinny
  // GEMM: cuBLAS takes ~15 us per product whatever its size, the skinny GEMM
  // streams such a matrix in a few (H100, 2048x96 at 64 rows: 7.9 us against
  // 14.7), but, before session 10, not the LoRA "in" ones (96x2048 at 64
  // rows: 65 us against 11.3), so it was off: with 64, a whole 1.5B step at
  // B=64 took 4.87 ms against 4.26 (H200, docs/PERF.md). Since the skinny
  // GEMM stages x four groups a round (session 10, H200): 96x2048 at 32 rows
  // 9.3 us against 11.4 on cuBLAS, 128x4096 11.4 against 13.6, at 64 rows
  // 15-20 us against 11-14; whole 1.5B fp16-state steps with it off / up to
  // 32 rows: B=12 5,116 / 6,091 tokens/s, B=16 6,672 / 7,881, B=32 12,599 /
  // 13,553. So 32. RWKV_CUDA_SKINNY_LORA_ROWS overrides this (0 = never);
  // values above kMaxSkinnyRows are clamped. Batch-invariant mode ignores it.
  int skinny_lora_rows = kDefaultSkinnyLoraRows;
  static constexpr int kDefaultSkinnyLoraRows = 32;
  static constexpr int kSkinnyLoraMaxDim = 512;
  // Above the skinny rows and up to this many rows, GroupedMatMul's cuBLAS
  // path runs the LoRA-sized products (16-bit weights, row-major, a side of
  // at most kSkinnyLoraMaxDim) on kernels/lora_gemm.cu, unpadded
  // (PaddedLoraPays is false up to here): one launch for the "out" side
  // (short K) and one for the "in" side (long K, split over a thread-block
  // cluster), instead of a padded batched cuBLAS call each. The "in" side
  // writes the "out" side's input activated in 16 bits (LoraHiddenType),
  // so the "out" call has no conversion launch. RWKV_CUDA_LORA_ROWS overrides this (0 = never); values above
  // kMaxLoraGemmRows are clamped. Batch-invariant mode ignores it.
  int lora_gemm_rows = kDefaultLoraGemmRows;
  static constexpr int kDefaultLoraGemmRows = 256;
  static constexpr int kMaxLoraGemmRows = 4096;
  // The FFN down-projection (relu² of the key projection times ffn.value,
  // stored input-major) of up to this many rows on the sparse kernel
  // (kernels/ffn_sparse.h: one launch and a reduction, skipping hidden units
  // that are zero in every row); above it, relu² + conversion and cuBLAS
  // (three kernels). 0 = never. Measured on an H100 (docs/PERF.md,
  // 2026-11-27), whole decode steps with the kernel up to 4 / 8 / 16 rows:
  // 1.5B B=8 2.70 / 2.82 / 2.81 ms, B=16 3.33 / 3.33 / 3.60; 7.2B B=8 7.56 /
  // - / 8.13. At 8 rows most hidden units are active in some row, so the
  // skipping no longer pays for the kernel's slower stream. So 4.
  // RWKV_CUDA_SPARSE_FFN_ROWS overrides this; values above kMaxSparseFfnRows
  // are clamped. Batch-invariant mode ignores it.
  int sparse_ffn_rows = kDefaultSparseFfnRows;
  static constexpr int kDefaultSparseFfnRows = 4;
  static constexpr int kMaxSparseFfnRows = 64;  // kernels::kFfnSparseMaxRows
  // The FFN down-projection with a 16-bit hidden (FfnHiddenType) of up to
  // this many rows and at least kSplitFreeFfnMinOutputs outputs runs on
  // cuBLASLt's first algorithm without a split-K reduction instead of
  // cublasGemmEx's default, which splits K and adds a reduction kernel.
  // Measured on an H100 (docs/PERF.md, session 16), tokens/s with and
  // without: 7.2B (4,096 outputs) B=33 4,564 / 4,472, B=64 8,088-8,135 /
  // 7,860-7,887, B=128 13,655 / 13,379; 1.5B (2,048 outputs) B=64 9,597 /
  // 23,326 (that split-free algorithm is far slower), B=256 58,545 / 60,034.
  // So only the wide product, up to 128 rows. RWKV_CUDA_SPLIT_FREE_FFN_ROWS
  // overrides it (0 = never); batch-invariant mode ignores it.
  int split_free_ffn_rows = kDefaultSplitFreeFfnRows;
  static constexpr int kDefaultSplitFreeFfnRows = 128;
  static constexpr int kMaxSplitFreeFfnRows = 4096;
  static constexpr int kSplitFreeFfnMinOutputs = 4096;
  // RWKV-7 LoRA products padded to one width above the rows where the
  // small-batch kernels take them (Backend::PadsLora): two batched cuBLAS
  // calls a layer instead of five to seven. Costs the padded "out" copies
  // (1.5B ~100 MB, 7.2B ~500 MB). Measured (H100, fp16 state, session 12,
  // 2026-11-27), whole decode steps off -> on, tokens/s: 1.5B B=33 11.8k ->
  // 13.6k, B=64 21.0k -> 23.8k, B=256 55.5k -> 60.0k, B=960 79.1k -> 81.4k;
  // 7.2B B=64 7.42k -> 7.84k, B=256 19.9k -> 20.5k, B=960 unchanged.
  // Batch-invariant mode ignores it. RWKV_CUDA_PAD_LORA (0 or 1) overrides it.
  bool pad_lora = true;
  // Backend::V7Projections: where every LoRA product of the layer runs on
  // kernels/lora_gemm.cu (above skinny_lora_rows, up to lora_gemm_rows, the
  // hidden handed over in 16 bits), the LoRA chain ("in" then "out") runs on
  // a second stream beside the r/k/v products (a fork and a join, captured
  // into the pass's graph as two branches). The same kernels on the same
  // jobs either way (ordered or split into launches differently, perhaps:
  // each output is one fixed sequence of operations), so the same bits.
  // sm_90 only, as lora_gemm_rows. RWKV_CUDA_LORA_SIDE_STREAM (0 or 1)
  // overrides it.
  bool lora_side_stream = true;
};

// Devices the CUDA runtime can see; 0 where there is none or no driver.
int CudaDeviceCount();

// A backend on options.device. FAILED_PRECONDITION when no device (or no
// driver) is present, INVALID_ARGUMENT for a device ordinal out of range,
// INTERNAL when the device cannot be initialised.
absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(const CudaBackendOptions& options = {});

class CudaBackend final : public Backend {
 public:
  // As MakeCudaBackend, typed.
  static absl::StatusOr<std::unique_ptr<CudaBackend>> Create(const CudaBackendOptions& options);
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  std::string name() const override { return "cuda"; }
  // e.g. "cuda:0 NVIDIA H100 80GB HBM3, weights f16, embedding f16".
  std::string description() const;
  const CudaBackendOptions& options() const { return options_; }

  absl::StatusOr<float*> Alloc(size_t floats) override;
  void Free(float* p) override;
  absl::Status Upload(const float* host, float* dst, size_t floats) override;
  absl::Status Download(const float* src, float* host, size_t floats) override;
  // Stream-ordered device copy; the ranges must not overlap.
  absl::Status CopyFloats(const float* src, float* dst, size_t floats) override;
  absl::StatusOr<Matrix> UploadMatrix(const float* host, int32_t rows, int32_t cols) override;
  absl::StatusOr<Matrix> UploadEmbedding(const float* host, int32_t rows, int32_t cols) override;
  absl::Status Sync() override;
  absl::StatusOr<MemoryInfo> DeviceMemory() override;
  // Page-locked host memory (cudaMallocHost), so Upload and Download from it
  // are DMA copies. Blocks not given back are freed with the backend.
  absl::StatusOr<void*> AllocHost(size_t bytes) override;
  void FreeHost(void* p) override;
  bool HostMemoryPinned() const override { return true; }
  void BeginPass(const Segment* segs, int nseg, const int32_t* tokens, int rows, const int32_t* logit_rows,
                 int nlogit) override;
  void EndPass() override;
  // Whether passes are captured as CUDA graphs (options or environment).
  bool graphs_enabled() const { return graphs_enabled_; }
  int PassRowQuantum(int count) const override;
  // The chunked WKV-7 form's matrices (kernels/wkv7.h, wkv7_scratch_bound_floats).
  int64_t Wkv7ScratchBytes(int rows, int C, int N, DType state_dtype) const override;
  bool RecordsPasses() const override { return graphs_enabled_; }
  // The granule with pass padding on: 1 up to 16, then 16 up to 511, 32, 64,
  // and 128 from 2048. A power of two that never falls as count grows, which
  // Model::WorkspaceBytes's bound relies on.
  static int PassQuantumFor(int count);
  // Graphs captured so far and passes replayed from them (for tests and tools).
  int64_t graphs_captured() const { return graphs_captured_; }
  int64_t graph_replays() const { return graph_replays_; }
  // cublasGemmBatchedEx calls GroupedMatMul has made (several products of one
  // shape in one call), captured ones counted once.
  int64_t blas_batched_calls() const { return blas_batched_calls_; }
  // Launches of kernels/lora_gemm.cu so far (tests check the routing).
  int64_t lora_gemm_calls() const { return lora_gemm_calls_; }
  // V7Projections calls that ran the LoRA chain on the side stream
  // (CudaBackendOptions::lora_side_stream), captured ones counted once.
  int64_t lora_side_calls() const { return lora_side_calls_; }
  // cublasLtMatmul calls of the split-free FFN down-projection
  // (CudaBackendOptions::split_free_ffn_rows), captured ones counted once.
  int64_t blas_lt_calls() const { return blas_lt_calls_; }

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
  // One launch each (kernels/elementwise.cu); r is left as it was.
  void SigmoidGate(float* y, float* r, int64_t n, float* out, DType out_type) override;
  void SigmoidMulAdd(float* x, float* r, const float* t, int64_t n) override;
  void V7Decay(float* w, const float* w0, int n, int C) override;
  void V7KeyPrep(float* k, float* kk, const float* a, const float* k_k, const float* k_a, int n, int C,
                 int N) override;
  void V7ValueResidual(float* v, const float* v_first, const float* gate, const float* v0, int n,
                       int C) override;
  void Wkv7(const Segment* segs, int nseg, int C, int N, StateRef wkv, const float* r, const float* w,
            const float* k, const float* v, const float* kk, const float* a, float* y) override;
  void V7Output(float* y, const float* r, const float* k, const float* v, const float* g, const float* r_k,
                const float* lnw, const float* lnb, int n, int C, int N, float* out, DType out_type) override;
  // Decode passes (no long segment; kernels::wkv7_output_fusable): the
  // output stage inside the WKV kernel. Otherwise Wkv7 and V7Output.
  void Wkv7WithOutput(const Segment* segs, int nseg, int n, int C, int N, StateRef wkv, const float* r,
                      const float* w, const float* k, const float* v, const float* kk, const float* a, float* y,
                      const float* g, const float* r_k, const float* lnw, const float* lnb, float* out,
                      DType out_type) override;
  // Where Wkv7WithOutput fuses and launch_v7_prep would take its vector
  // kernel (kernels::wkv7_prep_fusable), and options.fuse_v7_prep: the prep
  // inside the WKV kernel too. Otherwise V7Prep and Wkv7WithOutput.
  void V7PrepWkv7WithOutput(const Segment* segs, int nseg, int n, int C, int N, StateRef wkv, const V7PrepArgs& p,
                            const float* r, float* y, const float* g, const float* r_k, const float* lnw,
                            const float* lnb, float* out, DType out_type) override;
  void Wkv4(const Segment* segs, int nseg, int C, StateRef aa, const float* time_first,
            const float* time_decay, const float* k, const float* v, float* y) override;

  // Stored input-major (transposed), for the sparse FFN kernel.
  absl::StatusOr<Matrix> UploadSparseInputMatrix(const float* host, int32_t rows, int32_t cols) override;
  void GroupedMatMul(int n, const MatMulJob* jobs, int count) override;
  void V7Projections(int n, const MatMulJob* main, int n_main, const MatMulJob* lora_in, int n_in,
                     const MatMulJob* lora_out, int n_out) override;
  void ReluSquareMatMul(float* h, int n, const Matrix& w, float* y, bool accumulate, DType h_type) override;
  void LayerNormShiftMix(const float* x, int n, int C, const float* ln_w, const float* ln_b, const Segment* segs,
                         int nseg, StateRef x_prev, const float* const* mixes, float* const* outs, int count,
                         float* xx, float* d, DType out_type) override;
  // The weights' 16-bit type where products of n rows all run on cuBLAS
  // (above the GEMV, skinny and LoRA-skinny row limits), else kF32.
  DType MatMulInputType(int n) const override;
  // fp16 where MatMulInputType(n) is fp16 and n is above sparse_ffn_rows
  // (the sparse FFN reads an fp32 hidden); bf16 keeps the fp32 hidden (its
  // 8-bit mantissa would round the hidden twice as coarsely); else fp32.
  DType FfnHiddenType(int n) const override;
  // The 16-bit MatMulInputType(n) where the LoRA products run on
  // kernels/lora_gemm.cu (above the skinny rows, up to lora_gemm_rows): the
  // "in" launch writes the "out" launch's input, activated and rounded, so
  // the "out" call needs no conversion launch. kF32 elsewhere.
  DType LoraHiddenType(int n) const override;
  void V7Prep(float* w, const float* w0, float* a, const float* a0, float* k, float* kk, const float* k_k,
              const float* k_a, float* v, float* v_first, const float* v_gate, const float* v0, int n, int C,
              int N) override;
  // The largest row count that uses the small-batch kernels (0: none).
  int small_batch_rows() const { return small_rows_; }
  // The largest row count that uses the skinny GEMM (0: none; row counts up
  // to small_batch_rows() use the small-batch kernels instead).
  int skinny_rows() const { return skinny_rows_; }
  // Effective CudaBackendOptions::sparse_ffn_rows (0 in batch-invariant mode).
  int sparse_ffn_rows() const { return sparse_ffn_rows_; }
  // kernels/sample.cu, one launch for all rows: the specs and every row's
  // adjustments go up in one staged copy, the (token, logprob) pairs come
  // back in one copy.
  bool SupportsDeviceSampling() const override { return true; }
  bool PadsLora() const override { return pad_lora_; }
  // Every LoRA product on cuBLAS (GroupedMatMul): above the GEMV, skinny and
  // LoRA-on-skinny rows.
  bool PaddedLoraPays(int n) const override {
    return pad_lora_ && n > std::max({small_rows_, skinny_rows_, skinny_lora_rows_, lora_rows_});
  }
  absl::Status SampleRows(const float* logits, int vocab, const int32_t* rows, const SampleSpec* specs, int n,
                          SampledToken* out) override;

 private:
  explicit CudaBackend(const CudaBackendOptions& options);
  absl::Status Init();

  // Makes the device current; false (skip the op) once an error is recorded.
  bool Begin();
  // Records `s` if it is the first failure. Returns s.ok().
  bool Record(const absl::Status& s);
  // Copies `bytes` of host data to the device through the pinned staging
  // buffer, ordered on the stream; nullptr (error recorded) on failure.
  const void* Stage(const void* host, size_t bytes);
  // Device memory of `bytes`, tracked for Free and the destructor.
  absl::StatusOr<void*> AllocBytes(size_t bytes);
  // Converts and uploads a host fp32 matrix into a new allocation of `dtype`.
  absl::StatusOr<Matrix> UploadConverted(const float* host, int32_t rows, int32_t cols, DType dtype);
  // Grows a scratch buffer (`*buf`, `*capacity` bytes) to at least `bytes`;
  // false (error recorded) when it cannot, e.g. while capturing a graph.
  bool EnsureScratch(void** buf, size_t* capacity, size_t bytes, const char* what);
  // The products of a GroupedMatMul that go to cuBLAS (above the small-batch
  // and skinny kernels, or every one in batch-invariant mode).
  void BlasGroup(int n, const MatMulJob* const* jobs, int count);
  // Up to kernels::kConvertMaxBuffers of them, all with weights of the
  // 16-bit `dtype`: one conversion launch for their fp32 inputs (activations
  // applied as they are rounded; inputs already of `dtype` are used as they
  // are), then one cuBLAS call per distinct product shape
  // (cublasGemmBatchedEx where several share one).
  void BlasChunk(int n, DType dtype, const MatMulJob* const* jobs, int count);
  // cuBLAS, with x rounded to the weight type first (relu² applied to it as
  // it is rounded when `relu_square_input`).
  void BlasMatMul(const float* x, int n, const Matrix& w, float* y, bool accumulate,
                  bool relu_square_input = false);
  // Whether a product of n rows with weights w goes to the skinny GEMM by
  // skinny_rows_ and skinny_wide_rows_ (not the LoRA rule).
  bool SkinnyTakes(int n, const Matrix& w) const;
  // One skinny-GEMM launch of `count` jobs with weights of `dtype`
  // (kernels/skinny_gemm.h), its workspace grown first.
  void SkinnyMatMul(DType dtype, int n, const kernels::GemvJob* jobs, int count, const char* what);
  // kernels/lora_gemm.cu on `count` jobs.
  void LoraGemm(DType dtype, int n, const kernels::LoraJob* jobs, int count, CUstream_st* stream);
  // lora_gemm launches of `size` jobs of one kind (all short or all long K),
  // split where two jobs write one output.
  void LoraGemmList(DType dtype, int n, const kernels::LoraJob* list, int size, CUstream_st* stream);
  // V7Projections' side-stream path: false (nothing launched) where a job is
  // not one lora_gemm.cu takes as it is.
  bool LoraChainOnSide(int n, const MatMulJob* main, int n_main, const MatMulJob* lora_in, int n_in,
                       const MatMulJob* lora_out, int n_out);
  // The device copy of a host array declared by BeginPass (same pointer and
  // size), or nullptr.
  const void* PassArray(const void* host, size_t bytes) const;
  // Stage() unless the array is one of the pass's.
  const void* DeviceArray(const void* host, size_t bytes);
  // Destroys every captured graph (their buffers moved or were freed).
  void DropGraphs();

  CudaBackendOptions options_;
  std::string device_name_;
  CUstream_st* stream_ = nullptr;
  cublasContext* cublas_ = nullptr;
  absl::Status error_;                               // first recorded error (sticky)
  std::unordered_map<void*, size_t> allocations_;    // device pointer -> bytes
  std::unordered_map<void*, size_t> host_allocations_;  // AllocHost's page-locked blocks -> bytes
  // Staging for host arrays: pinned host and device buffers of the same size,
  // bump-allocated; reset once the stream has drained (Sync, Download, or
  // when full).
  char* staging_host_ = nullptr;
  char* staging_device_ = nullptr;
  size_t staging_capacity_ = 0;
  size_t staging_used_ = 0;
  void* act16_ = nullptr;  // MatMul input rounded to the weights' 16-bit type
  size_t act16_bytes_ = 0;
  // fp32 sums of a product whose activated 16-bit output (MatMulJob::y_act)
  // cuBLAS computes, before the conversion launch that activates and rounds
  // them (BlasChunk; the LoRA kernel does it in its own epilogue).
  void* act_out32_ = nullptr;
  size_t act_out32_bytes_ = 0;
  void* ffn_partial_ = nullptr;  // the sparse FFN's partial sums
  size_t ffn_partial_bytes_ = 0;
  void* wkv4_scratch_ = nullptr;  // the RWKV-4 chunked scan's sums and entering states
  size_t wkv4_scratch_bytes_ = 0;
  void* wkv7_scratch_ = nullptr;  // WKV-7 chunk matrices (kernels/wkv7.h, wkv7_scratch_floats)
  size_t wkv7_scratch_bytes_ = 0;
  void* skinny_partial_ = nullptr;  // the skinny GEMM's split-K partial sums
  size_t skinny_partial_bytes_ = 0;
  int* skinny_counters_ = nullptr;  // its row-tile counters (zero between launches)
  int sparse_ffn_rows_ = 0;  // effective sparse_ffn_rows
  int small_rows_ = 0;   // effective small_batch_rows (0 in batch-invariant mode)
  int skinny_rows_ = 0;  // effective skinny_rows (0 in batch-invariant mode)
  int skinny_lora_rows_ = 0;  // effective skinny_lora_rows (0 in batch-invariant mode)
  int lora_rows_ = 0;  // effective lora_gemm_rows (0 in batch-invariant mode)
  int skinny_wide_rows_ = 0;  // effective skinny_wide_rows (0 in batch-invariant mode)
  bool pad_lora_ = false;     // effective pad_lora (off in batch-invariant mode)
  // The batched products' pointer arrays (kernels::kConvertMaxPointers),
  // rewritten on the device by each group's conversion launch: one buffer
  // serves every group because the stream orders each group's products
  // before the next group's conversion.
  void** blas_pointers_ = nullptr;
  int64_t blas_batched_calls_ = 0;
  int64_t lora_gemm_calls_ = 0;
  int64_t blas_lt_calls_ = 0;
  // The split-free FFN down-projection: a cuBLASLt handle and, per product
  // shape, its descriptors and the algorithm chosen (cuda_backend.cc).
  struct LtPlans;
  std::unique_ptr<LtPlans> lt_;
  int split_free_ffn_rows_ = 0;  // effective split_free_ffn_rows (0 in batch-invariant mode)
  // y (= or +=) h @ W^T on cuBLASLt for an input-major 16-bit W and a hidden
  // h of W's type; false (nothing queued: the caller runs cublasGemmEx) where
  // an operand is not 256-byte aligned or cuBLASLt offers or accepts no such
  // algorithm for the shape.
  bool SplitFreeMatMul(const Matrix& w, const void* h, int n, float* y, bool accumulate);
  std::vector<const MatMulJob*> blas_jobs_;  // GroupedMatMul's cuBLAS jobs (reused)
  int sm_count_ = 0;

  // The current pass (BeginPass .. EndPass): its host arrays, and their copy
  // in pass_device_ (one pinned buffer and one device buffer, reused by every
  // pass; pass_copied_ marks when the pinned one may be rewritten).
  bool in_pass_ = false;
  const Segment* pass_segs_ = nullptr;
  int pass_nseg_ = 0;
  int pass_max_rows_ = 0;
  const int32_t* pass_tokens_ = nullptr;
  int pass_rows_ = 0;
  const int32_t* pass_logit_rows_ = nullptr;
  int pass_nlogit_ = 0;
  size_t pass_segs_off_ = 0, pass_tokens_off_ = 0, pass_logit_off_ = 0;
  char* pass_host_ = nullptr;
  char* pass_device_ = nullptr;
  size_t pass_capacity_ = 0;
  CUevent_st* pass_copied_ = nullptr;
  // CudaBackendOptions::lora_side_stream: the side stream, and the fork and
  // join events (null where off).
  CUstream_st* side_stream_ = nullptr;
  CUevent_st* side_fork_ = nullptr;
  CUevent_st* side_join_ = nullptr;
  int64_t lora_side_calls_ = 0;

  // CUDA graphs: one executable graph per pass shape; a shape is captured the
  // second time it is seen.
  bool graphs_enabled_ = false;
  bool pass_padding_ = false;  // graphs on and options_.pass_padding (or the environment)
  bool programmatic_ = false;  // options_.programmatic_launch on an sm_90+ device
  bool capturing_ = false;  // the pass's ops are being recorded
  bool replaying_ = false;  // the pass was launched from a graph: ops do nothing
  std::vector<int32_t> pass_key_;
  struct CapturedPass {
    CUgraphExec_st* exec = nullptr;
    int64_t last_use = 0;  // pass counter at its last replay, for LRU eviction
  };
  std::map<std::vector<int32_t>, CapturedPass> graphs_;
  int64_t pass_counter_ = 0;
  std::map<std::vector<int32_t>, int> shapes_seen_;
  void* blas_workspace_ = nullptr;
  int64_t graphs_captured_ = 0;
  int64_t graph_replays_ = 0;

  // SampleRows: the packed host specs, and the results' device and pinned
  // host buffers (grown on demand).
  std::vector<char> sample_pack_;
  void* sample_out_device_ = nullptr;
  void* sample_out_host_ = nullptr;
  size_t sample_out_bytes_ = 0;
  // The split sampler's per-row scratch (zeroed when allocated; kernels leave it zero).
  void* sample_scratch_ = nullptr;
  size_t sample_scratch_bytes_ = 0;
};

}  // namespace rwkv

#endif  // RWKV_ENGINE_MODEL_CUDA_BACKEND_H_
