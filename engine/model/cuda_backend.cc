// The CUDA backend's host side: device memory, staging of host arrays, the
// cuBLAS matrix products and one launcher call per op (kernels/).
//
// Why these choices (correctness first; the performance work is listed in
// kernels/README.md):
//  - Matrix products use cublasGemmEx with fp32 compute (CUBLAS_COMPUTE_32F,
//    default math mode, so fp32 weights get true fp32 products, no TF32).
//    cuBLAS needs both operands in one type, so with 16-bit weights the fp32
//    input is first rounded to that type (one small kernel); the output is
//    fp32 and `accumulate` is beta = 1. With 16-bit weights and at most
//    small_batch_rows rows (cuda_backend.h says why the threshold), products
//    run on kernels/gemv.cu instead, reading the fp32 input directly, several
//    per launch for GroupedMatMul; the FFN down-projection of up to
//    sparse_ffn_rows rows on kernels/ffn_sparse.cu, skipping zero hidden units. ffn.value is stored
//    input-major for that kernel, so its cuBLAS product (larger batches) is
//    the non-transposed op. Above small_batch_rows and up to skinny_rows
//    (skinny_wide_rows for products of kSkinnyWideCols or more inputs),
//    row-major 16-bit products run on kernels/skinny_gemm.cu (tensor cores,
//    input rounded to the weight type as cuBLAS sees it, grouped like the
//    GEMV); its split-K workspace grows like the other scratch buffers (so a
//    pass shape's first, uncaptured run sizes it before a graph records it),
//    and its row-tile counters are allocated and zeroed once at Init.
//  - The FFN down-projection of a 16-bit hidden with at least
//    kSplitFreeFfnMinOutputs outputs and up to split_free_ffn_rows rows runs
//    on cuBLASLt's first algorithm without a split-K reduction (one
//    heuristic query per shape, cached; no timing), where cublasGemmEx's
//    default splits K and adds a reduction kernel (7.2B B=64: +3%,
//    docs/PERF.md). Narrower products keep cublasGemmEx: at 2,048 outputs
//    the split-free choice made a 1.5B B=64 step 2.4x slower.
//  - GroupedMatMul's cuBLAS jobs: one conversion launch per 8 jobs (inputs a
//    producer already wrote in the weight type, MatMulInputType, are not
//    converted)
//    (kernels/convert.h, launch_convert_multi_from_f32; tanh/sigmoid applied
//    before rounding, the same fp32 value the in-place activation left), and
//    jobs of one product shape in one cublasGemmBatchedEx. At 17..1024 rows a
//    cuBLAS call costs ~15 us whatever its size and each conversion was its
//    own launch (docs/PERF.md). The batched call's pointer arrays live in one
//    fixed device buffer that the conversion launch fills from its kernel
//    arguments: a captured graph rewrites them on every replay, they always
//    name the input buffer where it is now (it moves when it grows, possibly
//    between a shape's eager run and its capture), and there is nothing to
//    cache or upload. The stream orders a group's products before the next
//    group's conversion, so one buffer serves every group.
//  - The fused elementwise ops (LayerNorm + shift + mixes, the RWKV-7 prep)
//    are one kernel each whatever the batch: they compute per element what
//    the unfused kernels computed.
//  - Weights are converted on the device in chunks (host fp32 -> device fp32
//    chunk -> convert kernel), rounding to nearest even exactly like the
//    host's F32ToF16/F32ToBf16, so tests can reproduce the rounded weights.
//  - The host arrays of a pass (segments, token ids, logit row ids) are
//    declared by BeginPass and copied once, in one async copy from a pinned
//    buffer into a fixed device buffer (an event says when the pinned buffer
//    may be rewritten); ops given those arrays use that copy. Other host
//    arrays go through a pinned staging buffer and an async copy on the
//    stream. The pinned space is bump-allocated and recycled only after the
//    stream has drained, so no copy reads staging memory that was overwritten.
//  - AllocHost is cudaMallocHost: the engine's offloaded session states live
//    in page-locked blocks, so the Upload and Download that move them to and
//    from a slot are DMA copies (a pageable buffer is staged by the driver).
//  - CUDA graphs (on by default): since a pass's launches depend on its shape
//    alone once its arrays live in the fixed device buffer, a shape seen a
//    second time is captured, and replayed after that. At most 512 are kept;
//    the least recently replayed one makes room for a new one. The shape is
//    the counts (rows, segments, logit rows), the longest segment rounded to
//    a power of two and which segments take the long WKV-7 kernel; with
//    pass padding (PassRowQuantum) the Model rounds the counts up and puts
//    the long segments first, so a server's steps, whatever their mix of
//    decoding sessions and prompt chunks, fall on a few shapes.
//  - This file is compiled by the host compiler; it is built from
//    kernels/CMakeLists.txt because it exists only where CUDA does.
#include "engine/model/cuda_backend.h"
#include "engine/model/cuda_env.h"
#include "engine/model/transpose.h"

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <tuple>
#include <type_traits>
#include <utility>

#include "absl/strings/str_format.h"
#include "kernels/convert.h"
#include "kernels/elementwise.h"
#include "kernels/embedding.h"
#include "kernels/ffn_sparse.h"
#include "kernels/gather_rows.h"
#include "kernels/gemv.h"
#include "kernels/launch.h"
#include "kernels/layernorm.h"
#include "kernels/lora_gemm.h"
#include "kernels/ln_shift_mix.h"
#include "kernels/mix.h"
#include "kernels/sample.h"
#include "kernels/skinny_gemm.h"
#include "kernels/token_shift.h"
#include "kernels/types.h"
#include "kernels/v7_decay.h"
#include "kernels/v7_key_prep.h"
#include "kernels/v7_output.h"
#include "kernels/v7_prep.h"
#include "kernels/v7_value_residual.h"
#include "kernels/wkv4.h"
#include "kernels/wkv7.h"

namespace rwkv {
namespace {

// The kernels read the engine's host structs byte for byte.
static_assert(sizeof(Segment) == sizeof(kernels::SegmentDesc));
static_assert(offsetof(Segment, slot) == offsetof(kernels::SegmentDesc, slot));
static_assert(offsetof(Segment, row_begin) == offsetof(kernels::SegmentDesc, row_begin));
static_assert(offsetof(Segment, rows) == offsetof(kernels::SegmentDesc, rows));
static_assert(static_cast<int>(DType::kF32) == static_cast<int>(kernels::ElemType::kF32));
static_assert(static_cast<int>(DType::kF16) == static_cast<int>(kernels::ElemType::kF16));
static_assert(static_cast<int>(DType::kBF16) == static_cast<int>(kernels::ElemType::kBF16));
static_assert(sizeof(LogitAdjustment) == sizeof(kernels::LogitAdjustDesc));
static_assert(offsetof(LogitAdjustment, token) == offsetof(kernels::LogitAdjustDesc, token));
static_assert(offsetof(LogitAdjustment, bias) == offsetof(kernels::LogitAdjustDesc, bias));
static_assert(offsetof(LogitAdjustment, penalty) == offsetof(kernels::LogitAdjustDesc, penalty));
static_assert(offsetof(LogitAdjustment, repetition) == offsetof(kernels::LogitAdjustDesc, repetition));
static_assert(std::is_same_v<cudaStream_t, CUstream_st*>);
static_assert(std::is_same_v<cublasHandle_t, cublasContext*>);
static_assert(std::is_same_v<cudaEvent_t, CUevent_st*>);
static_assert(std::is_same_v<cudaGraphExec_t, CUgraphExec_st*>);

constexpr size_t kStagingBytes = size_t{1} << 20;      // host arrays of one pass fit many times
constexpr size_t kStagingAlign = 256;
constexpr size_t kUploadChunkFloats = size_t{4} << 20;  // 16 MiB of fp32 per conversion chunk
constexpr size_t kPassBufferBytes = size_t{64} << 10;   // a pass's host arrays, grown on demand
constexpr size_t kBlasWorkspaceBytes = size_t{32} << 20;  // cuBLAS workspace when capturing graphs
constexpr size_t kMinScratchBytes = size_t{1} << 20;      // EnsureScratch's smallest allocation
constexpr size_t kMaxGraphs = 512;                       // captured pass shapes kept at once
constexpr size_t kMaxShapesSeen = 4096;                  // shapes remembered while waiting for a 2nd run
// Row-tile counters of the skinny GEMM's split-K reduction: one per 64 output
// rows of the split jobs of a launch (a launch needs a few hundred).
constexpr int kSkinnyCounters = 1 << 16;

size_t AlignUp(size_t n, size_t a) { return (n + a - 1) / a * a; }

absl::Status CudaStatus(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(
      absl::StrFormat("CUDA error in %s: %s (%s)", what, cudaGetErrorName(e), cudaGetErrorString(e)));
}

absl::Status BlasStatus(cublasStatus_t s, const char* what) {
  if (s == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(
      absl::StrFormat("cuBLAS error in %s: %s (%s)", what, cublasGetStatusName(s), cublasGetStatusString(s)));
}

kernels::ElemType ToElem(DType t) { return static_cast<kernels::ElemType>(t); }

// A product as kernels/lora_gemm.cu takes it, reading its input from x
// (16-bit, already activated).
kernels::LoraJob LoraJobOf(const MatMulJob& job, const void* x) {
  static_assert(static_cast<int>(InputAct::kTanh) == static_cast<int>(kernels::GemvAct::kTanh));
  static_assert(static_cast<int>(InputAct::kSigmoid) == static_cast<int>(kernels::GemvAct::kSigmoid));
  return kernels::LoraJob{job.w->data, x, job.y, job.w->rows, job.w->cols, job.accumulate,
                          job.y_type != DType::kF32, static_cast<kernels::GemvAct>(job.y_act)};
}

// The conversion launch's op that applies a MatMulJob activation.
kernels::ConvertOp ConvertOpOf(InputAct act) {
  return act == InputAct::kTanh      ? kernels::ConvertOp::kTanh
         : act == InputAct::kSigmoid ? kernels::ConvertOp::kSigmoid
                                     : kernels::ConvertOp::kNone;
}

cudaDataType ToCudaType(DType t) {
  switch (t) {
    case DType::kF16: return CUDA_R_16F;
    case DType::kBF16: return CUDA_R_16BF;
    case DType::kF32: break;
  }
  return CUDA_R_32F;
}

const kernels::SegmentDesc* AsDesc(const void* p) { return static_cast<const kernels::SegmentDesc*>(p); }

// The longest segment that carries a state (padding segments, slot < 0, do
// no work in the kernels that size their grid by it), at least 1: a pass of
// padding only (Model::WarmUpPasses) has the key of a decode step.
int MaxRows(const Segment* segs, int nseg) {
  int m = 1;
  for (int s = 0; s < nseg; ++s) {
    if (segs[s].slot >= 0) m = std::max(m, segs[s].rows);
  }
  return m;
}

// The smallest power of two >= n (n >= 0; 0 stays 0).
int CeilPow2(int n) {
  int p = 1;
  while (p < n) p *= 2;
  return n == 0 ? 0 : p;
}

}  // namespace

int CudaDeviceCount() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(const CudaBackendOptions& options) {
  auto b = CudaBackend::Create(options);
  if (!b.ok()) return b.status();
  return std::unique_ptr<Backend>(std::move(*b));
}

absl::StatusOr<std::unique_ptr<CudaBackend>> CudaBackend::Create(const CudaBackendOptions& options) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    (void)cudaGetLastError();
    return absl::FailedPreconditionError(absl::StrFormat(
        "no CUDA device available (%s): the CUDA backend needs an NVIDIA GPU and its driver; "
        "use the CPU backend on this machine",
        e != cudaSuccess ? absl::StrFormat("%s: %s", cudaGetErrorName(e), cudaGetErrorString(e))
                         : std::string("the runtime sees 0 devices")));
  }
  if (options.device < 0 || options.device >= count) {
    return absl::InvalidArgumentError(
        absl::StrFormat("CUDA device %d out of range: %d device(s) visible", options.device, count));
  }
  std::unique_ptr<CudaBackend> b(new CudaBackend(options));
  if (absl::Status s = b->Init(); !s.ok()) return s;
  return b;
}

CudaBackend::CudaBackend(const CudaBackendOptions& options) : options_(options) {}

absl::Status CudaBackend::Init() {
  if (absl::Status s = ApplyCudaEnvironment(&options_); !s.ok()) return s;
  if (absl::Status s = CudaStatus(cudaSetDevice(options_.device), "cudaSetDevice"); !s.ok()) return s;
  cudaDeviceProp prop;
  if (absl::Status s = CudaStatus(cudaGetDeviceProperties(&prop, options_.device), "cudaGetDeviceProperties");
      !s.ok()) {
    return s;
  }
  device_name_ = prop.name;
  cudaStream_t stream = nullptr;
  if (absl::Status s = CudaStatus(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
      !s.ok()) {
    return s;
  }
  stream_ = stream;
  cublasHandle_t handle = nullptr;
  if (absl::Status s = BlasStatus(cublasCreate(&handle), "cublasCreate"); !s.ok()) return s;
  cublas_ = handle;
  if (absl::Status s = BlasStatus(cublasSetStream(handle, stream), "cublasSetStream"); !s.ok()) return s;
  // Default math: fp32 products are computed in fp32 (TF32 only if asked).
  if (absl::Status s = BlasStatus(cublasSetMathMode(handle, CUBLAS_DEFAULT_MATH), "cublasSetMathMode"); !s.ok()) {
    return s;
  }
  cudaEvent_t event = nullptr;
  if (absl::Status s = CudaStatus(cudaEventCreateWithFlags(&event, cudaEventDisableTiming), "cudaEventCreate");
      !s.ok()) {
    return s;
  }
  pass_copied_ = event;
  // options_ already holds the RWKV_CUDA_* overrides (checked before any
  // device work, at the top of Init).
  graphs_enabled_ = options_.cuda_graphs;
  pass_padding_ = options_.pass_padding && graphs_enabled_;
  programmatic_ = options_.programmatic_launch && prop.major >= 9;
  kernels::set_programmatic_launch(programmatic_);
  sm_count_ = prop.multiProcessorCount;
  const bool invariant = options_.batch_invariant;
  small_rows_ = invariant ? 0 : std::clamp(options_.small_batch_rows, 0, CudaBackendOptions::kMaxSmallBatchRows);
  skinny_rows_ = invariant ? 0 : std::clamp(options_.skinny_rows, 0, CudaBackendOptions::kMaxSkinnyRows);
  skinny_lora_rows_ = invariant ? 0 : std::clamp(options_.skinny_lora_rows, 0, CudaBackendOptions::kMaxSkinnyRows);
  skinny_wide_rows_ = invariant ? 0 : std::clamp(options_.skinny_wide_rows, 0, CudaBackendOptions::kMaxSkinnyRows);
  // kernels/lora_gemm.cu's long-K side uses thread-block clusters (sm_90).
  lora_rows_ = invariant || prop.major < 9
                   ? 0
                   : std::clamp(options_.lora_gemm_rows, 0, CudaBackendOptions::kMaxLoraGemmRows);
  sparse_ffn_rows_ = invariant ? 0 : std::clamp(options_.sparse_ffn_rows, 0, CudaBackendOptions::kMaxSparseFfnRows);
  split_free_ffn_rows_ =
      invariant ? 0 : std::clamp(options_.split_free_ffn_rows, 0, CudaBackendOptions::kMaxSplitFreeFfnRows);
  pad_lora_ = !invariant && options_.pad_lora;
  if (options_.lora_side_stream && lora_rows_ > 0) {
    cudaStream_t side = nullptr;
    if (absl::Status s = CudaStatus(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking), "cudaStreamCreate (side)");
        !s.ok()) {
      return s;
    }
    side_stream_ = side;
    cudaEvent_t fork = nullptr, join = nullptr;
    if (absl::Status s = CudaStatus(cudaEventCreateWithFlags(&fork, cudaEventDisableTiming), "cudaEventCreate");
        !s.ok()) {
      return s;
    }
    side_fork_ = fork;
    if (absl::Status s = CudaStatus(cudaEventCreateWithFlags(&join, cudaEventDisableTiming), "cudaEventCreate");
        !s.ok()) {
      return s;
    }
    side_join_ = join;
  }
  {
    void* p = nullptr;
    if (absl::Status s = CudaStatus(cudaMalloc(&p, kernels::kConvertMaxPointers * sizeof(void*)),
                                    "cudaMalloc (batched product pointers)");
        !s.ok()) {
      return s;
    }
    blas_pointers_ = static_cast<void**>(p);
  }
  static_assert(CudaBackendOptions::kMaxSkinnyRows <= kernels::kSkinnyMaxRows);
  {
    void* counters = nullptr;
    if (absl::Status s = CudaStatus(cudaMalloc(&counters, kSkinnyCounters * sizeof(int)), "cudaMalloc (skinny counters)");
        !s.ok()) {
      return s;
    }
    skinny_counters_ = static_cast<int*>(counters);
    // The kernel leaves them zero after every launch. Zeroed on this stream
    // (cudaMemset would use the legacy default stream, which a non-blocking
    // stream does not wait for) and waited for.
    if (absl::Status s = CudaStatus(cudaMemsetAsync(counters, 0, kSkinnyCounters * sizeof(int), stream_),
                                    "cudaMemsetAsync (skinny counters)");
        !s.ok()) {
      return s;
    }
    if (absl::Status s = CudaStatus(cudaStreamSynchronize(stream_), "cudaStreamSynchronize (skinny counters)");
        !s.ok()) {
      return s;
    }
  }
  static_assert(CudaBackendOptions::kMaxSmallBatchRows <= kernels::kGemvMaxRows);
  static_assert(CudaBackendOptions::kMaxSparseFfnRows <= kernels::kFfnSparseMaxRows);
  if (graphs_enabled_) {
    // An explicit workspace, so that captured cuBLAS calls do not each
    // allocate their own.
    if (absl::Status s = CudaStatus(cudaMalloc(&blas_workspace_, kBlasWorkspaceBytes), "cudaMalloc (cuBLAS workspace)");
        !s.ok()) {
      return s;
    }
    if (absl::Status s = BlasStatus(cublasSetWorkspace(handle, blas_workspace_, kBlasWorkspaceBytes),
                                    "cublasSetWorkspace");
        !s.ok()) {
      return s;
    }
  }
  void* host = nullptr;
  if (absl::Status s = CudaStatus(cudaMallocHost(&host, kStagingBytes), "cudaMallocHost"); !s.ok()) return s;
  staging_host_ = static_cast<char*>(host);
  void* dev = nullptr;
  if (absl::Status s = CudaStatus(cudaMalloc(&dev, kStagingBytes), "cudaMalloc (staging)"); !s.ok()) return s;
  staging_device_ = static_cast<char*>(dev);
  staging_capacity_ = kStagingBytes;
  return absl::OkStatus();
}

// One cuBLASLt handle and, per product shape, its descriptors and the
// algorithm: cuBLASLt's first heuristic answer among the algorithms that
// need no split-K reduction (CUBLASLT_REDUCTION_SCHEME_NONE), asked once
// per shape. The answer depends on the shape, the card and the library, not
// on timings, so a shape's results are the same from run to run.
struct CudaBackend::LtPlans {
  struct Plan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
    bool ok = false;
  };
  cublasLtHandle_t handle = nullptr;
  std::map<std::tuple<int, int, int, int>, Plan> plans;  // (rows, cols, n, dtype)

  ~LtPlans() {
    for (auto& [key, p] : plans) {
      if (p.c != nullptr) (void)cublasLtMatrixLayoutDestroy(p.c);
      if (p.b != nullptr) (void)cublasLtMatrixLayoutDestroy(p.b);
      if (p.a != nullptr) (void)cublasLtMatrixLayoutDestroy(p.a);
      if (p.desc != nullptr) (void)cublasLtMatmulDescDestroy(p.desc);
    }
    if (handle != nullptr) (void)cublasLtDestroy(handle);
  }
};

CudaBackend::~CudaBackend() {
  (void)cudaSetDevice(options_.device);
  if (stream_ != nullptr) (void)cudaStreamSynchronize(stream_);
  if (graphs_enabled_ && std::getenv("RWKV_CUDA_GRAPHS_STATS") != nullptr) {
    std::fprintf(stderr, "cuda backend: %lld graphs captured, %lld passes replayed\n",
                 static_cast<long long>(graphs_captured_), static_cast<long long>(graph_replays_));
  }
  for (auto& [key, g] : graphs_) (void)cudaGraphExecDestroy(g.exec);
  graphs_.clear();
  if (pass_copied_ != nullptr) (void)cudaEventDestroy(pass_copied_);
  if (side_stream_ != nullptr) (void)cudaStreamSynchronize(side_stream_);
  if (side_fork_ != nullptr) (void)cudaEventDestroy(side_fork_);
  if (side_join_ != nullptr) (void)cudaEventDestroy(side_join_);
  if (side_stream_ != nullptr) (void)cudaStreamDestroy(side_stream_);
  if (pass_device_ != nullptr) (void)cudaFree(pass_device_);
  if (pass_host_ != nullptr) (void)cudaFreeHost(pass_host_);
  if (blas_workspace_ != nullptr) (void)cudaFree(blas_workspace_);
  if (sample_out_device_ != nullptr) (void)cudaFree(sample_out_device_);
  if (sample_scratch_ != nullptr) (void)cudaFree(sample_scratch_);
  if (sample_out_host_ != nullptr) (void)cudaFreeHost(sample_out_host_);
  for (auto& [p, bytes] : allocations_) (void)cudaFree(p);
  for (auto& [p, bytes] : host_allocations_) (void)cudaFreeHost(p);
  if (act16_ != nullptr) (void)cudaFree(act16_);
  if (act_out32_ != nullptr) (void)cudaFree(act_out32_);
  if (ffn_partial_ != nullptr) (void)cudaFree(ffn_partial_);
  if (wkv4_scratch_ != nullptr) (void)cudaFree(wkv4_scratch_);
  if (wkv7_scratch_ != nullptr) (void)cudaFree(wkv7_scratch_);
  if (skinny_partial_ != nullptr) (void)cudaFree(skinny_partial_);
  if (skinny_counters_ != nullptr) (void)cudaFree(skinny_counters_);
  if (blas_pointers_ != nullptr) (void)cudaFree(blas_pointers_);
  if (staging_device_ != nullptr) (void)cudaFree(staging_device_);
  if (staging_host_ != nullptr) (void)cudaFreeHost(staging_host_);
  if (cublas_ != nullptr) (void)cublasDestroy(cublas_);
  lt_.reset();
  if (stream_ != nullptr) (void)cudaStreamDestroy(stream_);
}

std::string CudaBackend::description() const {
  return absl::StrFormat("cuda:%d %s, weights %s, embedding %s%s%s%s%s%s, %s", options_.device, device_name_,
                         std::string(DTypeName(options_.weight_dtype)),
                         std::string(DTypeName(options_.embedding_dtype)), graphs_enabled_ ? ", graphs" : "",
                         programmatic_ ? ", programmatic launch" : "",
                         options_.fuse_v7_prep ? ", RWKV-7 prep in the WKV kernel" : "",
                         pad_lora_ ? ", padded LoRA products" : "",
                         side_stream_ != nullptr ? ", LoRA side stream" : "",
                         small_rows_ > 0 || skinny_rows_ > 0
                             ? absl::StrFormat("small-batch kernels up to %d rows, skinny GEMM up to %d rows "
                                               "(%d for %d+ inputs, LoRA products up to %d), sparse FFN up to %d rows, "
                                               "split-free FFN down-projection up to %d rows (%d+ outputs)",
                                               small_rows_, std::max(skinny_rows_, small_rows_),
                                               std::max(std::min(skinny_rows_, skinny_wide_rows_), small_rows_),
                                               CudaBackendOptions::kSkinnyWideCols,
                                               std::max({skinny_lora_rows_, skinny_rows_, small_rows_}),
                                               sparse_ffn_rows_, split_free_ffn_rows_,
                                               CudaBackendOptions::kSplitFreeFfnMinOutputs)
                             : std::string("batch-invariant (cuBLAS for every batch)"));
}

bool CudaBackend::Record(const absl::Status& s) {
  if (!s.ok() && error_.ok()) error_ = s;
  return s.ok();
}

bool CudaBackend::Begin() {
  if (!error_.ok() || replaying_) return false;
  return Record(CudaStatus(cudaSetDevice(options_.device), "cudaSetDevice"));
}

absl::Status CudaBackend::Sync() {
  if (!Begin()) return error_;
  // (Side-stream work is joined into stream_ by the op that forked it, so
  // the wait on stream_ covers it; this one is belt and braces. A failed
  // join leaves the backend failed, and Free and the destructor wait for the
  // side stream whatever the error.)
  if (side_stream_ != nullptr) Record(CudaStatus(cudaStreamSynchronize(side_stream_), "Sync (side stream)"));
  if (Record(CudaStatus(cudaStreamSynchronize(stream_), "Sync (a queued op failed)"))) staging_used_ = 0;
  return error_;
}

// ---------------------------------------------------------------- memory

absl::StatusOr<Backend::MemoryInfo> CudaBackend::DeviceMemory() {
  if (!Begin()) return error_;
  MemoryInfo m;
  if (!Record(CudaStatus(cudaMemGetInfo(&m.free_bytes, &m.total_bytes), "cudaMemGetInfo"))) return error_;
  return m;
}

absl::StatusOr<void*> CudaBackend::AllocBytes(size_t bytes) {
  if (!Begin()) return error_;
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, std::max<size_t>(bytes, 16));
  if (e == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();  // not sticky: the context stays usable
    size_t free_bytes = 0, total_bytes = 0;
    (void)cudaMemGetInfo(&free_bytes, &total_bytes);
    return absl::ResourceExhaustedError(absl::StrFormat(
        "CUDA out of memory on device %d: requested %d bytes (%.1f MiB), %d bytes (%.1f MiB) free of %.1f MiB",
        options_.device, bytes, bytes / 1048576.0, free_bytes, free_bytes / 1048576.0, total_bytes / 1048576.0));
  }
  if (!Record(CudaStatus(e, "cudaMalloc"))) return error_;
  allocations_[p] = bytes;
  return p;
}

absl::StatusOr<void*> CudaBackend::AllocHost(size_t bytes) {
  if (!Begin()) return error_;
  void* p = nullptr;
  const cudaError_t e = cudaMallocHost(&p, std::max<size_t>(bytes, 1));
  if (e == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();  // not sticky: the context stays usable
    return absl::ResourceExhaustedError(absl::StrFormat(
        "cannot page-lock %d bytes (%.1f MiB) of host memory (cudaMallocHost: %s)", bytes,
        static_cast<double>(bytes) / 1048576.0, cudaGetErrorString(e)));
  }
  if (e != cudaSuccess) {
    const absl::Status st = absl::InternalError(
        absl::StrFormat("CUDA error in cudaMallocHost of %d bytes (%.1f MiB): %s (%s)", bytes,
                        static_cast<double>(bytes) / 1048576.0, cudaGetErrorName(e), cudaGetErrorString(e)));
    Record(st);
    return st;
  }
  host_allocations_[p] = bytes;
  return p;
}

void CudaBackend::FreeHost(void* p) {
  if (p == nullptr) return;
  auto it = host_allocations_.find(p);
  if (it == host_allocations_.end()) return;
  const size_t bytes = it->second;
  host_allocations_.erase(it);
  Record(CudaStatus(cudaSetDevice(options_.device), "cudaSetDevice (FreeHost)"));
  // cudaFreeHost synchronizes the device, so no queued copy still reads p
  // (Upload and Download wait for theirs anyway).
  const cudaError_t e = cudaFreeHost(p);
  if (e != cudaSuccess) {
    Record(absl::InternalError(absl::StrFormat("CUDA error in cudaFreeHost of %d bytes: %s (%s)", bytes,
                                               cudaGetErrorName(e), cudaGetErrorString(e))));
  }
}

absl::StatusOr<float*> CudaBackend::Alloc(size_t floats) {
  auto p = AllocBytes(floats * sizeof(float));
  if (!p.ok()) return p.status();
  return static_cast<float*>(*p);
}

void CudaBackend::Free(float* p) {
  if (p == nullptr) return;
  auto it = allocations_.find(p);
  if (it == allocations_.end()) return;
  allocations_.erase(it);
  (void)cudaSetDevice(options_.device);
  // Queued ops may still use p; freeing must wait for them. Graphs may name it.
  Record(CudaStatus(cudaStreamSynchronize(stream_), "Free (a queued op failed)"));
  if (side_stream_ != nullptr) Record(CudaStatus(cudaStreamSynchronize(side_stream_), "Free (side stream)"));
  DropGraphs();
  Record(CudaStatus(cudaFree(p), "cudaFree"));
}

absl::Status CudaBackend::Upload(const float* host, float* dst, size_t floats) {
  if (!Begin() || floats == 0) return error_;
  Record(CudaStatus(cudaMemcpyAsync(dst, host, floats * sizeof(float), cudaMemcpyHostToDevice, stream_),
                    "Upload"));
  return Sync();
}

absl::Status CudaBackend::Download(const float* src, float* host, size_t floats) {
  if (!Begin() || floats == 0) return error_;
  Record(CudaStatus(cudaMemcpyAsync(host, src, floats * sizeof(float), cudaMemcpyDeviceToHost, stream_),
                    "Download"));
  return Sync();
}

absl::Status CudaBackend::CopyFloats(const float* src, float* dst, size_t floats) {
  if (!Begin() || floats == 0) return error_;
  Record(CudaStatus(cudaMemcpyAsync(dst, src, floats * sizeof(float), cudaMemcpyDeviceToDevice, stream_),
                    "CopyFloats"));
  return error_;
}

absl::StatusOr<Matrix> CudaBackend::UploadConverted(const float* host, int32_t rows, int32_t cols, DType dtype) {
  if (rows <= 0 || cols <= 0) {
    return absl::InvalidArgumentError(absl::StrFormat("matrix shape (%d, %d) must be positive", rows, cols));
  }
  const size_t count = static_cast<size_t>(rows) * static_cast<size_t>(cols);
  auto mem = AllocBytes(count * DTypeSize(dtype));
  if (!mem.ok()) return mem.status();
  char* dst = static_cast<char*>(*mem);
  if (dtype == DType::kF32) {
    Record(CudaStatus(cudaMemcpyAsync(dst, host, count * sizeof(float), cudaMemcpyHostToDevice, stream_),
                      "UploadMatrix"));
  } else {
    const size_t chunk = std::min(count, kUploadChunkFloats);
    auto tmp_mem = AllocBytes(chunk * sizeof(float));
    if (!tmp_mem.ok()) return tmp_mem.status();
    float* tmp = static_cast<float*>(*tmp_mem);
    for (size_t off = 0; off < count && error_.ok(); off += chunk) {
      const size_t n = std::min(chunk, count - off);
      // Stream-ordered: the next chunk's copy waits for this conversion.
      Record(CudaStatus(cudaMemcpyAsync(tmp, host + off, n * sizeof(float), cudaMemcpyHostToDevice, stream_),
                        "UploadMatrix"));
      Record(CudaStatus(kernels::launch_convert_from_f32(tmp, ToElem(dtype),
                                                         dst + off * DTypeSize(dtype), static_cast<int64_t>(n),
                                                         stream_),
                        "UploadMatrix conversion"));
    }
    Free(tmp);  // waits for the conversions
  }
  if (absl::Status s = Sync(); !s.ok()) return s;
  return Matrix{dst, rows, cols, dtype};
}

absl::StatusOr<Matrix> CudaBackend::UploadMatrix(const float* host, int32_t rows, int32_t cols) {
  return UploadConverted(host, rows, cols, options_.weight_dtype);
}

absl::StatusOr<Matrix> CudaBackend::UploadEmbedding(const float* host, int32_t rows, int32_t cols) {
  return UploadConverted(host, rows, cols, options_.embedding_dtype);
}

const void* CudaBackend::Stage(const void* host, size_t bytes) {
  if (capturing_) {
    // A staged copy would be recorded reading pinned memory that later passes reuse.
    Record(absl::InternalError("a host array not declared by BeginPass reached an op while capturing a graph"));
    return nullptr;
  }
  const size_t need = AlignUp(std::max<size_t>(bytes, 1), kStagingAlign);
  if (staging_used_ + need > staging_capacity_) {
    // Every earlier staged copy must have run before its space is reused.
    if (!Record(CudaStatus(cudaStreamSynchronize(stream_), "staging (a queued op failed)"))) return nullptr;
    staging_used_ = 0;
    if (need > staging_capacity_) {
      (void)cudaFreeHost(staging_host_);
      (void)cudaFree(staging_device_);
      staging_host_ = staging_device_ = nullptr;
      staging_capacity_ = 0;
      const size_t cap = AlignUp(need, kStagingBytes);
      void* h = nullptr;
      void* d = nullptr;
      if (!Record(CudaStatus(cudaMallocHost(&h, cap), "cudaMallocHost (staging)"))) return nullptr;
      staging_host_ = static_cast<char*>(h);
      if (!Record(CudaStatus(cudaMalloc(&d, cap), "cudaMalloc (staging)"))) return nullptr;
      staging_device_ = static_cast<char*>(d);
      staging_capacity_ = cap;
    }
  }
  char* h = staging_host_ + staging_used_;
  char* d = staging_device_ + staging_used_;
  std::memcpy(h, host, bytes);
  if (!Record(CudaStatus(cudaMemcpyAsync(d, h, bytes, cudaMemcpyHostToDevice, stream_), "staging copy"))) {
    return nullptr;
  }
  staging_used_ += need;
  return d;
}

bool CudaBackend::EnsureScratch(void** buf, size_t* capacity, size_t bytes, const char* what) {
  if (bytes <= *capacity) return true;
  if (capturing_) {
    return Record(absl::InternalError(absl::StrFormat("the %s would grow while capturing a graph", what)));
  }
  if (*buf != nullptr) {
    if (!Record(CudaStatus(cudaStreamSynchronize(stream_), "scratch (a queued op failed)"))) return false;
    DropGraphs();
    (void)cudaFree(*buf);
    *buf = nullptr;
    *capacity = 0;
  }
  const size_t want = std::max(bytes, kMinScratchBytes);
  if (cudaMalloc(buf, want) != cudaSuccess) {
    (void)cudaGetLastError();
    *buf = nullptr;
    return Record(absl::ResourceExhaustedError(
        absl::StrFormat("CUDA out of memory allocating the %d-byte %s", want, what)));
  }
  *capacity = want;
  return true;
}

// ---------------------------------------------------------------- passes

void CudaBackend::DropGraphs() {
  if (graphs_.empty()) return;
  if (!capturing_) (void)cudaStreamSynchronize(stream_);  // none may still run
  for (auto& [key, g] : graphs_) (void)cudaGraphExecDestroy(g.exec);
  graphs_.clear();
}

const void* CudaBackend::PassArray(const void* host, size_t bytes) const {
  if (!in_pass_ || host == nullptr) return nullptr;
  if (host == pass_segs_ && bytes == static_cast<size_t>(pass_nseg_) * sizeof(Segment)) {
    return pass_device_ + pass_segs_off_;
  }
  if (host == pass_tokens_ && bytes == static_cast<size_t>(pass_rows_) * sizeof(int32_t)) {
    return pass_device_ + pass_tokens_off_;
  }
  if (host == pass_logit_rows_ && bytes == static_cast<size_t>(pass_nlogit_) * sizeof(int32_t)) {
    return pass_device_ + pass_logit_off_;
  }
  return nullptr;
}

const void* CudaBackend::DeviceArray(const void* host, size_t bytes) {
  if (const void* d = PassArray(host, bytes); d != nullptr) return d;
  return Stage(host, bytes);
}

void CudaBackend::BeginPass(const Segment* segs, int nseg, const int32_t* tokens, int rows,
                            const int32_t* logit_rows, int nlogit) {
  if (in_pass_) EndPass();
  if (!Begin()) return;
  nseg = segs == nullptr ? 0 : std::max(nseg, 0);
  rows = tokens == nullptr ? 0 : std::max(rows, 0);
  // This thread's launches until EndPass (captured into the pass's graph too).
  kernels::set_pass_programmatic_launch(rows <= CudaBackendOptions::kProgrammaticLaunchMaxRows);
  nlogit = logit_rows == nullptr ? 0 : std::max(nlogit, 0);
  const size_t seg_bytes = static_cast<size_t>(nseg) * sizeof(Segment);
  const size_t tok_bytes = static_cast<size_t>(rows) * sizeof(int32_t);
  const size_t logit_bytes = static_cast<size_t>(nlogit) * sizeof(int32_t);
  const size_t tok_off = AlignUp(seg_bytes, kStagingAlign);
  const size_t logit_off = tok_off + AlignUp(tok_bytes, kStagingAlign);
  const size_t total = logit_off + logit_bytes;
  if (total > pass_capacity_) {
    if (!Record(CudaStatus(cudaStreamSynchronize(stream_), "BeginPass (a queued op failed)"))) return;
    DropGraphs();  // they read the old device buffer
    if (pass_host_ != nullptr) (void)cudaFreeHost(pass_host_);
    if (pass_device_ != nullptr) (void)cudaFree(pass_device_);
    pass_host_ = pass_device_ = nullptr;
    pass_capacity_ = 0;
    const size_t cap = AlignUp(total, kPassBufferBytes);
    void* h = nullptr;
    void* d = nullptr;
    if (!Record(CudaStatus(cudaMallocHost(&h, cap), "cudaMallocHost (pass arrays)"))) return;
    pass_host_ = static_cast<char*>(h);
    if (!Record(CudaStatus(cudaMalloc(&d, cap), "cudaMalloc (pass arrays)"))) return;
    pass_device_ = static_cast<char*>(d);
    pass_capacity_ = cap;
  }
  // The previous pass's copy must have read the pinned buffer before it is rewritten.
  if (!Record(CudaStatus(cudaEventSynchronize(pass_copied_), "BeginPass (a queued copy failed)"))) return;
  if (seg_bytes > 0) std::memcpy(pass_host_, segs, seg_bytes);
  if (tok_bytes > 0) std::memcpy(pass_host_ + tok_off, tokens, tok_bytes);
  if (logit_bytes > 0) std::memcpy(pass_host_ + logit_off, logit_rows, logit_bytes);
  if (total > 0) {
    if (!Record(CudaStatus(cudaMemcpyAsync(pass_device_, pass_host_, total, cudaMemcpyHostToDevice, stream_),
                           "BeginPass copy"))) {
      return;
    }
    if (!Record(CudaStatus(cudaEventRecord(pass_copied_, stream_), "BeginPass event"))) return;
  }
  in_pass_ = true;
  pass_segs_ = segs;
  pass_nseg_ = nseg;
  // Launches that size their grid by the longest segment get a power of two
  // (their blocks past a segment's end return), so it adds little to the key.
  pass_max_rows_ = CeilPow2(MaxRows(segs, nseg));
  pass_tokens_ = tokens;
  pass_rows_ = rows;
  pass_logit_rows_ = logit_rows;
  pass_nlogit_ = nlogit;
  pass_segs_off_ = 0;
  pass_tokens_off_ = tok_off;
  pass_logit_off_ = logit_off;
  if (!graphs_enabled_) return;

  // The pass's shape: everything its launches depend on. The segments, token
  // ids and logit row ids are read from the device buffer; on the host, a
  // launch depends only on the counts, the (rounded) longest segment and
  // which segments take the long WKV-7 kernel (kernels/wkv7.h).
  pass_key_.clear();
  pass_key_.push_back(rows);
  pass_key_.push_back(nseg);
  pass_key_.push_back(nlogit);
  pass_key_.push_back(pass_max_rows_);
  std::vector<int32_t> long_segments(static_cast<size_t>(nseg));
  const int nlong =
      kernels::wkv7_long_segments(reinterpret_cast<const kernels::SegmentDesc*>(segs), nseg, long_segments.data());
  pass_key_.insert(pass_key_.end(), long_segments.begin(), long_segments.begin() + nlong);
  ++pass_counter_;
  if (auto it = graphs_.find(pass_key_); it != graphs_.end()) {
    it->second.last_use = pass_counter_;
    if (Record(CudaStatus(cudaGraphLaunch(it->second.exec, stream_), "cudaGraphLaunch"))) {
      replaying_ = true;
      ++graph_replays_;
    }
    return;
  }
  if (shapes_seen_.size() >= kMaxShapesSeen) shapes_seen_.clear();
  if (++shapes_seen_[pass_key_] < 2) return;  // run eagerly the first time
  if (graphs_.size() >= kMaxGraphs) {
    // Evict the least recently replayed shape: a server's batch sizes drift,
    // and the shapes of the current load are the ones worth keeping.
    auto lru = graphs_.begin();
    for (auto it = graphs_.begin(); it != graphs_.end(); ++it) {
      if (it->second.last_use < lru->second.last_use) lru = it;
    }
    if (!Record(CudaStatus(cudaStreamSynchronize(stream_), "graph eviction (a queued op failed)"))) return;
    (void)cudaGraphExecDestroy(lru->second.exec);
    graphs_.erase(lru);
  }
  if (Record(CudaStatus(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeRelaxed), "cudaStreamBeginCapture"))) {
    capturing_ = true;
  }
}

int CudaBackend::PassQuantumFor(int count) {
  // Up to 16 rows every count has its own kernels (GEMV, skinny GEMM) and
  // decode batches that small are few; above, a granule of 16 up to 511 rows
  // (passes that reread the weights for each row tile anyway, so extra rows
  // cost little), then about 1/32 of the count up to 128: under 1/16 of the
  // pass from 256 rows.
  if (count <= 16) return 1;
  int q = 16;
  while (q < 128 && q * 32 <= count) q *= 2;
  return q;
}

int CudaBackend::PassRowQuantum(int count) const { return pass_padding_ ? PassQuantumFor(count) : 1; }

int64_t CudaBackend::Wkv7ScratchBytes(int rows, int C, int N, DType state_dtype) const {
  const size_t floats = kernels::wkv7_scratch_bound_floats(rows, C, N, ToElem(state_dtype));
  if (floats == 0) return 0;
  return static_cast<int64_t>(std::max(floats * sizeof(float), kMinScratchBytes));
}

void CudaBackend::EndPass() {
  kernels::set_pass_programmatic_launch(true);
  if (!in_pass_) return;
  in_pass_ = false;
  replaying_ = false;
  pass_segs_ = nullptr;
  pass_tokens_ = nullptr;
  pass_logit_rows_ = nullptr;
  pass_nseg_ = pass_rows_ = pass_nlogit_ = pass_max_rows_ = 0;
  if (!capturing_) return;
  capturing_ = false;
  cudaGraph_t graph = nullptr;
  const cudaError_t e = cudaStreamEndCapture(stream_, &graph);
  if (Record(CudaStatus(e, "cudaStreamEndCapture")) && error_.ok()) {
    cudaGraphExec_t exec = nullptr;
    if (Record(CudaStatus(cudaGraphInstantiate(&exec, graph, 0), "cudaGraphInstantiate"))) {
      graphs_[pass_key_] = CapturedPass{exec, pass_counter_};
      shapes_seen_.erase(pass_key_);
      ++graphs_captured_;
      // Captured work has not run yet: run it now.
      Record(CudaStatus(cudaGraphLaunch(exec, stream_), "cudaGraphLaunch"));
    }
  }
  if (graph != nullptr) (void)cudaGraphDestroy(graph);
}

// ---------------------------------------------------------------- ops

void CudaBackend::Embedding(const Matrix& emb, const int32_t* tokens, int n, float* x) {
  if (n <= 0 || !Begin()) return;
  const void* dev_tokens = DeviceArray(tokens, static_cast<size_t>(n) * sizeof(int32_t));
  if (dev_tokens == nullptr) return;
  Record(CudaStatus(kernels::launch_embedding(emb.data, ToElem(emb.dtype), static_cast<const int32_t*>(dev_tokens),
                                              n, emb.cols, x, stream_),
                    "Embedding"));
}

void CudaBackend::LayerNorm(const float* x, int n, int C, const float* w, const float* b, float* y) {
  if (Begin()) Record(CudaStatus(kernels::launch_layernorm(x, n, C, w, b, y, stream_), "LayerNorm"));
}

void CudaBackend::MatMul(const float* x, int n, const Matrix& w, float* y, bool accumulate) {
  if (n <= 0 || !Begin()) return;
  if (!w.input_major && w.dtype != DType::kF32) {
    const kernels::GemvJob job{w.data, x, y, w.rows, w.cols, kernels::GemvAct::kNone, accumulate};
    if (n <= small_rows_ && kernels::gemv_supported(ToElem(w.dtype), n, job)) {
      Record(CudaStatus(kernels::launch_gemv(ToElem(w.dtype), n, &job, 1, stream_), "MatMul (gemv)"));
      return;
    }
    if (SkinnyTakes(n, w) && kernels::skinny_gemm_supported(ToElem(w.dtype), n, job)) {
      SkinnyMatMul(w.dtype, n, &job, 1, "MatMul (skinny)");
      return;
    }
  }
  BlasMatMul(x, n, w, y, accumulate);
}

bool CudaBackend::SkinnyTakes(int n, const Matrix& w) const {
  const int rows = w.cols >= CudaBackendOptions::kSkinnyWideCols ? std::min(skinny_rows_, skinny_wide_rows_)
                                                                  : skinny_rows_;
  return n > small_rows_ && n <= rows;
}

void CudaBackend::SkinnyMatMul(DType dtype, int n, const kernels::GemvJob* jobs, int count, const char* what) {
  const kernels::SkinnyWorkspace ws = kernels::skinny_gemm_workspace(n, jobs, count, sm_count_);
  if (ws.counters > kSkinnyCounters) {
    Record(absl::InternalError(absl::StrFormat("%s: %d split row tiles exceed the %d counters", what, ws.counters,
                                               kSkinnyCounters)));
    return;
  }
  if (!EnsureScratch(&skinny_partial_, &skinny_partial_bytes_, ws.partial_floats * sizeof(float),
                     "skinny GEMM partial sums")) {
    return;
  }
  Record(CudaStatus(kernels::launch_skinny_gemm(ToElem(dtype), n, jobs, count, static_cast<float*>(skinny_partial_),
                                                skinny_partial_bytes_ / sizeof(float), skinny_counters_,
                                                kSkinnyCounters, sm_count_, stream_),
                    what));
}

void CudaBackend::LoraGemm(DType dtype, int n, const kernels::LoraJob* jobs, int count, CUstream_st* stream) {
  if (Record(CudaStatus(kernels::launch_lora_gemm(ToElem(dtype), n, jobs, count, sm_count_, stream),
                        "GroupedMatMul (LoRA)"))) {
    ++lora_gemm_calls_;
  }
}

void CudaBackend::LoraGemmList(DType dtype, int n, const kernels::LoraJob* list, int size, CUstream_st* stream) {
  // Two jobs of one launch writing one output would race (GroupedMatMul
  // runs such groups one job at a time, so this does not happen): split.
  int begin = 0;
  for (int e = 1; e <= size; ++e) {
    bool clash = false;
    for (int d = begin; d < e && e < size; ++d) clash = clash || list[d].y == list[e].y;
    if (e == size || clash) {
      LoraGemm(dtype, n, list + begin, e - begin, stream);
      begin = e;
    }
  }
}

void CudaBackend::V7Projections(int n, const MatMulJob* main, int n_main, const MatMulJob* lora_in, int n_in,
                                const MatMulJob* lora_out, int n_out) {
  if (n <= 0 || !Begin()) return;
  if (LoraChainOnSide(n, main, n_main, lora_in, n_in, lora_out, n_out)) return;
  Backend::V7Projections(n, main, n_main, lora_in, n_in, lora_out, n_out);
}

bool CudaBackend::LoraChainOnSide(int n, const MatMulJob* main, int n_main, const MatMulJob* lora_in, int n_in,
                                  const MatMulJob* lora_out, int n_out) {
  if (side_stream_ == nullptr || n <= std::max({small_rows_, skinny_rows_, skinny_lora_rows_}) || n > lora_rows_ ||
      n_in < 1 || n_out < 1 || n_in > kernels::kLoraGemmMaxJobs || n_out > kernels::kLoraGemmMaxJobs ||
      n_main > kMaxV7ProjectionJobs) {
    return false;
  }
  // Every LoRA job as GroupedMatMul would give it to lora_gemm.cu: 16-bit
  // inputs already activated, an "in" side handing a 16-bit hidden over.
  kernels::LoraJob lists[3][kernels::kLoraGemmMaxJobs];  // "in" short K, "in" long K, "out"
  int sizes[3] = {0, 0, 0};
  const DType dtype = options_.weight_dtype;
  for (int side = 0; side < 2; ++side) {
    const MatMulJob* jobs = side == 0 ? lora_in : lora_out;
    const int count = side == 0 ? n_in : n_out;
    for (int j = 0; j < count; ++j) {
      const MatMulJob& job = jobs[j];
      const Matrix& w = *job.w;
      const bool hands_over =
          side == 0 ? job.y_type == dtype : job.y_type == DType::kF32 && job.y_act == InputAct::kNone;
      if (w.dtype != dtype || w.input_major || job.x_type != dtype || job.act != InputAct::kNone || !hands_over ||
          std::min(w.rows, w.cols) > CudaBackendOptions::kSkinnyLoraMaxDim) {
        return false;
      }
      const kernels::LoraJob lj = LoraJobOf(job, job.x);
      if (!kernels::lora_gemm_supported(ToElem(dtype), n, lj)) return false;
      const int list = side == 1 ? 2 : (w.cols > kernels::kLoraGemmMaxCols ? 1 : 0);
      if (side == 1 && w.cols > kernels::kLoraGemmMaxCols) return false;  // a long "out" side: not a LoRA
      lists[list][sizes[list]++] = lj;
    }
  }
  // The two streams run at once, so no output of one side may be an input
  // or an output of the other (reading the same input is fine); the model
  // never does that, and a caller that does gets the one-stream path.
  for (int m = 0; m < n_main; ++m) {
    for (int side = 0; side < 2; ++side) {
      const MatMulJob* jobs = side == 0 ? lora_in : lora_out;
      for (int j = 0; j < (side == 0 ? n_in : n_out); ++j) {
        if (main[m].y == jobs[j].y || main[m].y == jobs[j].x || main[m].x == jobs[j].y) return false;
      }
    }
  }
  // The fork: the side stream starts after what the main stream has queued
  // (the mixes); the main stream's next op after the join.
  if (!Record(CudaStatus(cudaEventRecord(side_fork_, stream_), "V7Projections fork")) ||
      !Record(CudaStatus(cudaStreamWaitEvent(side_stream_, side_fork_, 0), "V7Projections fork wait"))) {
    return true;
  }
  // ("out" after "in" on the side stream; a failed launch leaves the
  // backend failed, so nothing reads what it did not write.) Launched
  // without the programmatic attribute: the first one's predecessor is the
  // fork, not a kernel of its stream, and a captured node with two
  // programmatic dependents (the main stream's next launch is one) is left
  // out of the question.
  const bool programmatic = kernels::pass_programmatic_launch();
  kernels::set_pass_programmatic_launch(false);
  for (int list = 0; list < 3 && error_.ok(); ++list) {
    if (sizes[list] > 0) LoraGemmList(dtype, n, lists[list], sizes[list], side_stream_);
  }
  kernels::set_pass_programmatic_launch(programmatic);
  if (error_.ok()) ++lora_side_calls_;
  const bool joined = Record(CudaStatus(cudaEventRecord(side_join_, side_stream_), "V7Projections join"));
  if (n_main > 0) GroupedMatMul(n, main, n_main);
  if (joined) Record(CudaStatus(cudaStreamWaitEvent(stream_, side_join_, 0), "V7Projections join wait"));
  return true;
}

void CudaBackend::BlasMatMul(const float* x, int n, const Matrix& w, float* y, bool accumulate,
                             bool relu_square_input) {
  const kernels::ConvertOp input_op = relu_square_input ? kernels::ConvertOp::kReluSquare : kernels::ConvertOp::kNone;
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  const cudaDataType type = ToCudaType(w.dtype);
  const void* input = x;
  if (w.dtype != DType::kF32) {
    const int64_t count = static_cast<int64_t>(n) * w.cols;
    if (!EnsureScratch(&act16_, &act16_bytes_, static_cast<size_t>(count) * DTypeSize(w.dtype),
                       "MatMul input buffer")) {
      return;
    }
    if (!Record(CudaStatus(kernels::launch_convert_from_f32(x, ToElem(w.dtype), act16_, count, stream_, input_op),
                           "MatMul input conversion"))) {
      return;
    }
    input = act16_;
  }
  // Column-major view: y^T (rows x n) = W (rows x cols) applied to x^T
  // (cols x n). W [rows, cols] row-major is its transpose in column-major
  // (op T, ld cols); input-major W [cols, rows] is W itself (op N, ld rows).
  const bool t = !w.input_major;
  Record(BlasStatus(cublasGemmEx(cublas_, t ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N, w.rows, n, w.cols, &alpha,
                                 w.data, type, t ? w.cols : w.rows, input, type, w.cols, &beta, y, CUDA_R_32F,
                                 w.rows, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                    "MatMul"));
}

void CudaBackend::GroupedMatMul(int n, const MatMulJob* jobs, int count) {
  if (n <= 0 || count <= 0 || !Begin()) return;
  // Small and medium batches: every job the GEMV (up to small_rows_) or the
  // skinny GEMM (SkinnyTakes, and LoRA-sized jobs up to skinny_lora_rows_)
  // takes goes into shared launches (all of one weight
  // type, kGemvMaxJobs at a time); the rest to cuBLAS, grouped (BlasGroup).
  // Jobs that write one output must run in their order (a later one may add
  // to what an earlier one wrote), and the paths below reorder: grouped
  // small-batch launches first, cuBLAS after. Such a group (the layers never
  // make one) runs one job at a time.
  for (int i = 1; i < count; ++i) {
    for (int j = 0; j < i; ++j) {
      if (jobs[i].y == jobs[j].y) {
        for (int k = 0; k < count; ++k) GroupedMatMul(n, &jobs[k], 1);
        return;
      }
    }
  }
  const bool gemv = n <= small_rows_;
  const bool skinny_lora = !gemv && n <= skinny_lora_rows_;
  kernels::GemvJob batch[kernels::kGemvMaxJobs];
  int pending = 0;
  DType pending_type = DType::kF32;
  auto flush = [&]() {
    if (pending > 0 && gemv) {
      Record(CudaStatus(kernels::launch_gemv(ToElem(pending_type), n, batch, pending, stream_),
                        "GroupedMatMul (gemv)"));
    } else if (pending > 0) {
      SkinnyMatMul(pending_type, n, batch, pending, "GroupedMatMul (skinny)");
    }
    pending = 0;
  };
  blas_jobs_.clear();
  for (int i = 0; i < count; ++i) {
    const MatMulJob& job = jobs[i];
    const Matrix& w = *job.w;
    const bool lora = std::min(w.rows, w.cols) <= CudaBackendOptions::kSkinnyLoraMaxDim;
    if (job.x_type != DType::kF32 && (job.x_type != w.dtype || job.act != InputAct::kNone)) {
      Record(absl::InvalidArgumentError(absl::StrFormat(
          "GroupedMatMul: a %s input needs %s weights and no input activation", DTypeName(job.x_type),
          DTypeName(job.x_type))));
      return;
    }
    if (job.y_type != DType::kF32 && (job.y_type != job.x_type || job.accumulate)) {
      Record(absl::InvalidArgumentError(absl::StrFormat(
          "GroupedMatMul: a %s output needs a %s input and no accumulation", DTypeName(job.y_type),
          DTypeName(job.y_type))));
      return;
    }
    if (job.y_act != InputAct::kNone && job.y_type == DType::kF32) {
      Record(absl::InvalidArgumentError("GroupedMatMul: an output activation needs a 16-bit output"));
      return;
    }
    if (job.x_type == DType::kF32 && (gemv || SkinnyTakes(n, w) || (skinny_lora && lora)) && !w.input_major &&
        w.dtype != DType::kF32) {
      const kernels::GemvJob g{w.data, job.x, job.y, w.rows, w.cols, static_cast<kernels::GemvAct>(job.act),
                               job.accumulate};
      static_assert(static_cast<int>(InputAct::kTanh) == static_cast<int>(kernels::GemvAct::kTanh));
      static_assert(static_cast<int>(InputAct::kSigmoid) == static_cast<int>(kernels::GemvAct::kSigmoid));
      if (gemv ? kernels::gemv_supported(ToElem(w.dtype), n, g)
               : kernels::skinny_gemm_supported(ToElem(w.dtype), n, g)) {
        if (pending == kernels::kGemvMaxJobs || (pending > 0 && pending_type != w.dtype)) flush();
        pending_type = w.dtype;
        batch[pending++] = g;
        continue;
      }
    }
    blas_jobs_.push_back(&job);
  }
  flush();
  BlasGroup(n, blas_jobs_.data(), static_cast<int>(blas_jobs_.size()));
}

void CudaBackend::BlasGroup(int n, const MatMulJob* const* jobs, int count) {
  // fp32 weights: the activation in place (the op allows it), then the
  // product, one by one. 16-bit weights: chunks of one type, up to one
  // conversion launch's worth of jobs.
  const MatMulJob* chunk[kernels::kConvertMaxBuffers];
  for (DType dtype : {DType::kF16, DType::kBF16}) {
    int k = 0;
    for (int i = 0; i < count; ++i) {
      if (jobs[i]->w->dtype != dtype) continue;
      chunk[k++] = jobs[i];
      if (k == kernels::kConvertMaxBuffers) {
        BlasChunk(n, dtype, chunk, k);
        k = 0;
      }
    }
    if (k > 0) BlasChunk(n, dtype, chunk, k);
  }
  for (int i = 0; i < count; ++i) {
    const MatMulJob& job = *jobs[i];
    if (job.w->dtype != DType::kF32) continue;
    float* x = const_cast<float*>(job.x);
    const int64_t in = static_cast<int64_t>(n) * job.w->cols;
    if (job.act == InputAct::kTanh) Record(CudaStatus(kernels::launch_tanh(x, in, stream_), "GroupedMatMul tanh"));
    if (job.act == InputAct::kSigmoid) {
      Record(CudaStatus(kernels::launch_sigmoid(x, in, stream_), "GroupedMatMul sigmoid"));
    }
    BlasMatMul(x, n, *job.w, job.y, job.accumulate);
  }
}

void CudaBackend::BlasChunk(int n, DType dtype, const MatMulJob* const* jobs, int count) {
  static_assert(static_cast<int>(InputAct::kNone) == 0);
  const size_t esize = DTypeSize(dtype);
  // Each distinct input (same x, activation and width: RWKV-7's v and v1
  // both read xv) is converted once, into its own 256-byte-aligned range of
  // the input buffer; the activation is applied as it is rounded, which is
  // what the in-place activation followed by the conversion computed.
  kernels::ConvertBuffer conv[kernels::kConvertMaxBuffers];
  size_t conv_off[kernels::kConvertMaxBuffers];
  int job_conv[kernels::kConvertMaxBuffers];
  int nconv = 0;
  size_t total = 0;
  for (int j = 0; j < count; ++j) {
    const MatMulJob& job = *jobs[j];
    if (job.x_type == dtype) {  // written in this type by its producer (MatMulInputType): read as it is
      job_conv[j] = -1;
      continue;
    }
    const int64_t len = static_cast<int64_t>(n) * job.w->cols;
    const kernels::ConvertOp op = ConvertOpOf(job.act);
    int c = 0;
    while (c < nconv && !(conv[c].src == job.x && conv[c].n == len && conv[c].op == op)) ++c;
    if (c == nconv) {
      conv[c] = kernels::ConvertBuffer{job.x, nullptr, len, op};
      conv_off[c] = total;
      total += AlignUp(static_cast<size_t>(len) * esize, kStagingAlign);
      ++nconv;
    }
    job_conv[j] = c;
  }
  if (nconv > 0 && !EnsureScratch(&act16_, &act16_bytes_, total, "MatMul input buffer")) return;
  for (int c = 0; c < nconv; ++c) conv[c].dst = static_cast<char*>(act16_) + conv_off[c];
  auto input_of = [&](int j) -> const void* {
    return job_conv[j] < 0 ? static_cast<const void*>(jobs[j]->x) : conv[job_conv[j]].dst;
  };

  // Products of one shape (weights' shape and layout, and beta) form one
  // cuBLAS call: r, k and v are three C x C products of one group. Their
  // pointer arrays (all A, then all B, then all C of a call) go to the device
  // with the conversion launch.
  int call_of[kernels::kConvertMaxBuffers];
  int call_first[kernels::kConvertMaxBuffers], call_size[kernels::kConvertMaxBuffers];
  int ncalls = 0;
  for (int j = 0; j < count; ++j) {
    const Matrix& w = *jobs[j]->w;
    int c = 0;
    while (c < ncalls) {
      const MatMulJob& f = *jobs[call_first[c]];
      // (A job with an output activation is a call of its own: cuBLAS runs
      // it into fp32 scratch, activated and rounded after.)
      if (f.w->rows == w.rows && f.w->cols == w.cols && f.w->input_major == w.input_major &&
          f.accumulate == jobs[j]->accumulate && f.y_type == jobs[j]->y_type && f.y_act == InputAct::kNone &&
          jobs[j]->y_act == InputAct::kNone) {
        break;
      }
      ++c;
    }
    if (c == ncalls) {
      call_first[c] = j;
      call_size[c] = 0;
      ++ncalls;
    }
    call_of[j] = c;
    ++call_size[c];
  }
  // Two products of one call writing one output would race; such jobs (the
  // op does not forbid them) get calls of their own.
  for (int j = 0; j < count; ++j) {
    for (int i = 0; i < j; ++i) {
      if (call_of[i] == call_of[j] && jobs[i]->y == jobs[j]->y) {
        --call_size[call_of[j]];
        call_of[j] = ncalls;
        call_first[ncalls] = j;
        call_size[ncalls++] = 1;
        break;
      }
    }
  }
  // Calls of LoRA-sized products above the skinny rows: kernels/lora_gemm.cu
  // on the (converted) 16-bit inputs, one launch for the short-K ones (the
  // "out" side) and one for the long-K ones (the "in" side), instead of a
  // batched cuBLAS call each; either writes a 16-bit y_type, activated
  // (y_act), in its epilogue. Decided before the pointer arrays, which
  // these calls do not need, and launched after the conversion launch.
  static_assert(kernels::kConvertMaxBuffers <= kernels::kLoraGemmMaxJobs, "a chunk's jobs fit one launch a kind");
  bool call_lora[kernels::kConvertMaxBuffers] = {};
  kernels::LoraJob lists[2][kernels::kLoraGemmMaxJobs];
  int sizes[2] = {0, 0};
  if (n > std::max({small_rows_, skinny_rows_, skinny_lora_rows_}) && n <= lora_rows_) {
    for (int c = 0; c < ncalls; ++c) {
      const MatMulJob& f = *jobs[call_first[c]];
      const Matrix& w = *f.w;
      if (w.input_major || std::min(w.rows, w.cols) > CudaBackendOptions::kSkinnyLoraMaxDim) continue;
      kernels::LoraJob cj[kernels::kConvertMaxBuffers];
      int nc = 0;
      bool ok = true;
      for (int j = 0; j < count && ok; ++j) {
        if (call_of[j] != c) continue;
        cj[nc] = LoraJobOf(*jobs[j], input_of(j));
        ok = kernels::lora_gemm_supported(ToElem(dtype), n, cj[nc++]);
      }
      if (!ok) continue;
      call_lora[c] = true;
      const int kind = w.cols > kernels::kLoraGemmMaxCols ? 1 : 0;
      for (int i = 0; i < nc; ++i) lists[kind][sizes[kind]++] = cj[i];
    }
  }
  const void* pointers[kernels::kConvertMaxPointers];
  int call_ptr[kernels::kConvertMaxBuffers];
  int npointers = 0;
  for (int c = 0; c < ncalls; ++c) {
    if (call_size[c] < 2 || call_lora[c]) continue;
    call_ptr[c] = npointers;
    for (int part = 0; part < 3; ++part) {
      for (int j = 0; j < count; ++j) {
        if (call_of[j] != c) continue;
        pointers[npointers++] = part == 0   ? jobs[j]->w->data
                                : part == 1 ? input_of(j)
                                            : static_cast<const void*>(jobs[j]->y);
      }
    }
  }
  if ((nconv > 0 || npointers > 0) &&
      !Record(CudaStatus(kernels::launch_convert_multi_from_f32(ToElem(dtype), conv, nconv, pointers, npointers,
                                                                blas_pointers_, stream_),
                         "GroupedMatMul input conversion"))) {
    return;
  }

  for (int kind = 0; kind < 2; ++kind) LoraGemmList(dtype, n, lists[kind], sizes[kind], stream_);

  const cudaDataType type = ToCudaType(dtype);
  const float alpha = 1.0f, one = 1.0f, zero = 0.0f;
  for (int c = 0; c < ncalls; ++c) {
    if (call_lora[c]) continue;
    const MatMulJob& f = *jobs[call_first[c]];
    const Matrix& w = *f.w;
    // Column-major view as in BlasMatMul.
    const bool t = !w.input_major;
    const float* beta = f.accumulate ? &one : &zero;
    const cudaDataType ytype = ToCudaType(f.y_type);
    if (f.y_act != InputAct::kNone) {  // a call of its own: fp32 sums, then activated and rounded into y
      const int64_t len = static_cast<int64_t>(n) * w.rows;
      if (!EnsureScratch(&act_out32_, &act_out32_bytes_, static_cast<size_t>(len) * sizeof(float),
                         "activated product's fp32 sums")) {
        return;
      }
      if (Record(BlasStatus(cublasGemmEx(cublas_, t ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N, w.rows, n, w.cols,
                                         &alpha, w.data, type, t ? w.cols : w.rows, input_of(call_first[c]), type,
                                         w.cols, &zero, act_out32_, CUDA_R_32F, w.rows, CUBLAS_COMPUTE_32F,
                                         CUBLAS_GEMM_DEFAULT),
                            "GroupedMatMul (activated output)"))) {
        Record(CudaStatus(kernels::launch_convert_from_f32(static_cast<const float*>(act_out32_), ToElem(dtype),
                                                           f.y, len, stream_, ConvertOpOf(f.y_act)),
                          "GroupedMatMul output activation"));
      }
      continue;
    }
    if (call_size[c] == 1) {
      Record(BlasStatus(cublasGemmEx(cublas_, t ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N, w.rows, n, w.cols, &alpha,
                                     w.data, type, t ? w.cols : w.rows, input_of(call_first[c]), type,
                                     w.cols, beta, f.y, ytype, w.rows, CUBLAS_COMPUTE_32F,
                                     CUBLAS_GEMM_DEFAULT),
                        "GroupedMatMul"));
      continue;
    }
    const int b = call_size[c];
    void** arrays = blas_pointers_ + call_ptr[c];
    ++blas_batched_calls_;
    Record(BlasStatus(cublasGemmBatchedEx(cublas_, t ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N, w.rows, n, w.cols,
                                          &alpha, arrays, type, t ? w.cols : w.rows, arrays + b, type, w.cols, beta,
                                          arrays + 2 * b, ytype, w.rows, b, CUBLAS_COMPUTE_32F,
                                          CUBLAS_GEMM_DEFAULT),
                      "GroupedMatMul (batched)"));
  }
}

absl::StatusOr<Matrix> CudaBackend::UploadSparseInputMatrix(const float* host, int32_t rows, int32_t cols) {
  if (rows <= 0 || cols <= 0) {
    return absl::InvalidArgumentError(absl::StrFormat("matrix shape (%d, %d) must be positive", rows, cols));
  }
  std::vector<float> t(static_cast<size_t>(rows) * static_cast<size_t>(cols));
  Transpose(host, rows, cols, t.data());
  auto m = UploadConverted(t.data(), cols, rows, options_.weight_dtype);
  if (!m.ok()) return m.status();
  return Matrix{m->data, rows, cols, m->dtype, /*input_major=*/true};
}

void CudaBackend::ReluSquareMatMul(float* h, int n, const Matrix& w, float* y, bool accumulate, DType h_type) {
  if (n <= 0 || !Begin()) return;
  const int F = w.cols, C = w.rows;
  if (h_type != DType::kF32) {
    // h is 16-bit already (the key product wrote it so): relu² in place,
    // then cuBLAS reads it as it is.
    if (h_type != w.dtype) {
      Record(absl::InvalidArgumentError(absl::StrFormat("ReluSquareMatMul: a %s hidden needs %s weights",
                                                        DTypeName(h_type), DTypeName(h_type))));
      return;
    }
    if (!Record(CudaStatus(kernels::launch_relu_square_16(h, static_cast<int64_t>(n) * F, ToElem(h_type), stream_),
                           "ReluSquareMatMul relu² (16-bit)"))) {
      return;
    }
    if (w.input_major && n <= split_free_ffn_rows_ && C >= CudaBackendOptions::kSplitFreeFfnMinOutputs &&
        SplitFreeMatMul(w, h, n, y, accumulate)) {
      return;
    }
    const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    const cudaDataType type = ToCudaType(w.dtype);
    const bool t = !w.input_major;  // column-major view as in BlasMatMul
    Record(BlasStatus(cublasGemmEx(cublas_, t ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N, w.rows, n, w.cols, &alpha,
                                   w.data, type, t ? w.cols : w.rows, h, type, w.cols, &beta, y, CUDA_R_32F, w.rows,
                                   CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                      "ReluSquareMatMul"));
    return;
  }
  if (n <= sparse_ffn_rows_ && w.input_major &&
      kernels::ffn_sparse_supported(ToElem(w.dtype), n, F, C, w.data, h)) {
    const size_t partial = kernels::ffn_sparse_partial_floats(n, F, C, sm_count_) * sizeof(float);
    if (!EnsureScratch(&ffn_partial_, &ffn_partial_bytes_, partial, "sparse FFN partial sums")) return;
    Record(CudaStatus(kernels::launch_ffn_sparse(ToElem(w.dtype), h, n, F, C, w.data,
                                                 static_cast<float*>(ffn_partial_), y, accumulate, sm_count_,
                                                 stream_),
                      "ReluSquareMatMul (sparse)"));
    return;
  }
  if (w.dtype != DType::kF32) {
    // relu² applied as the input is rounded for cuBLAS: one pass over h
    // instead of a relu² pass and then a conversion pass.
    BlasMatMul(h, n, w, y, accumulate, /*relu_square_input=*/true);
    return;
  }
  Record(CudaStatus(kernels::launch_relu_square(h, static_cast<int64_t>(n) * F, stream_), "ReluSquareMatMul relu²"));
  MatMul(h, n, w, y, accumulate);
}

bool CudaBackend::SplitFreeMatMul(const Matrix& w, const void* h, int n, float* y, bool accumulate) {
  if (lt_ == nullptr) {
    auto lt = std::make_unique<LtPlans>();
    if (cublasLtCreate(&lt->handle) != CUBLAS_STATUS_SUCCESS) lt->handle = nullptr;
    lt_ = std::move(lt);
  }
  if (lt_->handle == nullptr) return false;
  // cuBLASLt's heuristic assumes 256-byte aligned operands (the
  // CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_* defaults): Alloc's buffers are.
  auto aligned256 = [](const void* q) { return reinterpret_cast<uintptr_t>(q) % 256 == 0; };
  if (!aligned256(w.data) || !aligned256(h) || !aligned256(y)) return false;
  // The graphs' explicit workspace where there is one (cublasGemmEx's own
  // otherwise, which cuBLASLt does not share): none without graphs. Fixed at
  // Init, so it is not part of a plan's key.
  const size_t ws = blas_workspace_ != nullptr ? kBlasWorkspaceBytes : 0;
  const auto key = std::make_tuple(w.rows, w.cols, n, static_cast<int>(w.dtype));
  auto it = lt_->plans.find(key);
  if (it == lt_->plans.end()) {
    LtPlans::Plan p;
    // Column-major view as in BlasMatMul: y^T (rows x n) = W (rows x cols,
    // input-major: leading dimension rows) times h^T (cols x n).
    const cudaDataType t = ToCudaType(w.dtype);
    cublasLtMatmulPreference_t pref = nullptr;
    bool ok = cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F) == CUBLAS_STATUS_SUCCESS &&
              cublasLtMatrixLayoutCreate(&p.a, t, w.rows, w.cols, w.rows) == CUBLAS_STATUS_SUCCESS &&
              cublasLtMatrixLayoutCreate(&p.b, t, w.cols, n, w.cols) == CUBLAS_STATUS_SUCCESS &&
              cublasLtMatrixLayoutCreate(&p.c, CUDA_R_32F, w.rows, n, w.rows) == CUBLAS_STATUS_SUCCESS &&
              cublasLtMatmulPreferenceCreate(&pref) == CUBLAS_STATUS_SUCCESS;
    const uint64_t ws64 = ws;
    const uint32_t schemes = CUBLASLT_REDUCTION_SCHEME_NONE;
    ok = ok &&
         cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws64, sizeof(ws64)) ==
             CUBLAS_STATUS_SUCCESS &&
         cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &schemes,
                                              sizeof(schemes)) == CUBLAS_STATUS_SUCCESS;
    cublasLtMatmulHeuristicResult_t r{};
    int found = 0;
    ok = ok &&
         cublasLtMatmulAlgoGetHeuristic(lt_->handle, p.desc, p.a, p.b, p.c, p.c, pref, 1, &r, &found) ==
             CUBLAS_STATUS_SUCCESS &&
         found > 0 && r.state == CUBLAS_STATUS_SUCCESS;
    if (pref != nullptr) (void)cublasLtMatmulPreferenceDestroy(pref);
    if (ok) p.algo = r.algo;
    p.ok = ok;
    it = lt_->plans.emplace(key, p).first;  // a failed shape is remembered too: cublasGemmEx takes it
  }
  LtPlans::Plan& p = it->second;
  if (!p.ok) return false;
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  const cublasStatus_t st = cublasLtMatmul(lt_->handle, p.desc, &alpha, w.data, p.a, h, p.b, &beta, y, p.c, y, p.c,
                                           &p.algo, blas_workspace_, ws, stream_);
  if (st == CUBLAS_STATUS_NOT_SUPPORTED || st == CUBLAS_STATUS_INVALID_VALUE) {
    p.ok = false;  // refused before any work was queued: cublasGemmEx takes this shape from now on
    return false;
  }
  if (Record(BlasStatus(st, "ReluSquareMatMul (split-free)"))) ++blas_lt_calls_;
  return true;
}

void CudaBackend::LayerNormShiftMix(const float* x, int n, int C, const float* ln_w, const float* ln_b,
                                    const Segment* segs, int nseg, StateRef x_prev, const float* const* mixes,
                                    float* const* outs, int count, float* /*xx*/, float* /*d*/, DType out_type) {
  if (n <= 0 || nseg <= 0 || !Begin()) return;
  const void* dev_segs = DeviceArray(segs, static_cast<size_t>(nseg) * sizeof(Segment));
  if (dev_segs == nullptr) return;
  Record(CudaStatus(kernels::launch_ln_shift_mix(x, n, C, ln_w, ln_b, AsDesc(dev_segs), nseg, x_prev.base,
                                                 x_prev.slot_stride, mixes, outs, count, stream_, ToElem(out_type)),
                    "LayerNormShiftMix"));
}

DType CudaBackend::MatMulInputType(int n) const {
  const DType w = options_.weight_dtype;
  if (w != DType::kF16 && w != DType::kBF16) return DType::kF32;
  return n > small_rows_ && n > skinny_rows_ && n > skinny_lora_rows_ ? w : DType::kF32;
}

DType CudaBackend::FfnHiddenType(int n) const {
  return MatMulInputType(n) == DType::kF16 && n > sparse_ffn_rows_ ? DType::kF16 : DType::kF32;
}

DType CudaBackend::LoraHiddenType(int n) const {
  return n <= lora_rows_ ? MatMulInputType(n) : DType::kF32;
}

void CudaBackend::V7Prep(float* w, const float* w0, float* a, const float* a0, float* k, float* kk,
                         const float* k_k, const float* k_a, float* v, float* v_first, const float* v_gate,
                         const float* v0, int n, int C, int N) {
  if (Begin()) {
    Record(CudaStatus(kernels::launch_v7_prep(w, w0, a, a0, k, kk, k_k, k_a, v, v_first, v_gate, v0, n, C, N,
                                              stream_),
                      "V7Prep"));
  }
}

void CudaBackend::GatherRows(const float* x, const int32_t* rows, int n, int C, float* out) {
  if (n <= 0 || !Begin()) return;
  const void* dev_rows = DeviceArray(rows, static_cast<size_t>(n) * sizeof(int32_t));
  if (dev_rows == nullptr) return;
  Record(CudaStatus(
      kernels::launch_gather_rows(x, static_cast<const int32_t*>(dev_rows), n, C, out, stream_), "GatherRows"));
}

void CudaBackend::TokenShift(const float* xx, const Segment* segs, int nseg, int C, StateRef x_prev, float* d) {
  if (nseg <= 0 || !Begin()) return;
  const void* dev_segs = DeviceArray(segs, static_cast<size_t>(nseg) * sizeof(Segment));
  if (dev_segs == nullptr) return;
  const int max_rows = in_pass_ && segs == pass_segs_ ? pass_max_rows_ : MaxRows(segs, nseg);
  Record(CudaStatus(kernels::launch_token_shift(xx, AsDesc(dev_segs), nseg, max_rows, C, x_prev.base,
                                                x_prev.slot_stride, d, stream_),
                    "TokenShift"));
}

void CudaBackend::Mix(const float* xx, const float* d, int n, int C, const float* const* mixes,
                      float* const* outs, int count) {
  if (Begin()) Record(CudaStatus(kernels::launch_mix(xx, d, n, C, mixes, outs, count, stream_), "Mix"));
}

void CudaBackend::Sigmoid(float* x, int64_t n) {
  if (Begin()) Record(CudaStatus(kernels::launch_sigmoid(x, n, stream_), "Sigmoid"));
}

void CudaBackend::Tanh(float* x, int64_t n) {
  if (Begin()) Record(CudaStatus(kernels::launch_tanh(x, n, stream_), "Tanh"));
}

void CudaBackend::ReluSquare(float* x, int64_t n) {
  if (Begin()) Record(CudaStatus(kernels::launch_relu_square(x, n, stream_), "ReluSquare"));
}

void CudaBackend::Mul(float* x, const float* a, int64_t n) {
  if (Begin()) Record(CudaStatus(kernels::launch_mul(x, a, n, stream_), "Mul"));
}

void CudaBackend::MulAdd(float* x, const float* a, const float* b, int64_t n) {
  if (Begin()) Record(CudaStatus(kernels::launch_muladd(x, a, b, n, stream_), "MulAdd"));
}

void CudaBackend::SigmoidGate(float* y, float* r, int64_t n, float* out, DType out_type) {
  if (Begin()) {
    Record(CudaStatus(kernels::launch_sigmoid_gate(r, y, n, out, ToElem(out_type), stream_), "SigmoidGate"));
  }
}

void CudaBackend::SigmoidMulAdd(float* x, float* r, const float* t, int64_t n) {
  if (Begin()) Record(CudaStatus(kernels::launch_sigmoid_muladd(x, r, t, n, stream_), "SigmoidMulAdd"));
}

void CudaBackend::SigmoidBias(float* x, const float* bias, int n, int C) {
  if (Begin()) Record(CudaStatus(kernels::launch_sigmoid_bias(x, bias, n, C, stream_), "SigmoidBias"));
}

void CudaBackend::V7Decay(float* w, const float* w0, int n, int C) {
  if (Begin()) Record(CudaStatus(kernels::launch_v7_decay(w, w0, n, C, stream_), "V7Decay"));
}

void CudaBackend::V7KeyPrep(float* k, float* kk, const float* a, const float* k_k, const float* k_a, int n, int C,
                            int N) {
  if (Begin()) Record(CudaStatus(kernels::launch_v7_key_prep(k, kk, a, k_k, k_a, n, C, N, stream_), "V7KeyPrep"));
}

void CudaBackend::V7ValueResidual(float* v, const float* v_first, const float* gate, const float* v0, int n,
                                  int C) {
  if (Begin()) {
    Record(CudaStatus(kernels::launch_v7_value_residual(v, v_first, gate, v0, n, C, stream_), "V7ValueResidual"));
  }
}

void CudaBackend::Wkv7(const Segment* segs, int nseg, int C, int N, StateRef wkv, const float* r, const float* w,
                       const float* k, const float* v, const float* kk, const float* a, float* y) {
  if (nseg <= 0 || !Begin()) return;
  const void* dev_segs = DeviceArray(segs, static_cast<size_t>(nseg) * sizeof(Segment));
  if (dev_segs == nullptr) return;
  const auto* host = reinterpret_cast<const kernels::SegmentDesc*>(segs);
  const size_t scratch_floats = kernels::wkv7_scratch_floats(host, nseg, C, N, ToElem(wkv.dtype));
  if (scratch_floats > 0 &&
      !EnsureScratch(&wkv7_scratch_, &wkv7_scratch_bytes_, scratch_floats * sizeof(float), "WKV-7 chunk matrices")) {
    return;
  }
  Record(CudaStatus(kernels::launch_wkv7(AsDesc(dev_segs), host, nseg, C, N, ToElem(wkv.dtype), wkv.base,
                                         wkv.slot_stride, r, w, k, v, kk, a, y, static_cast<float*>(wkv7_scratch_),
                                         wkv7_scratch_bytes_ / sizeof(float), stream_),
                    "Wkv7"));
}

void CudaBackend::Wkv7WithOutput(const Segment* segs, int nseg, int n, int C, int N, StateRef wkv, const float* r,
                                 const float* w, const float* k, const float* v, const float* kk, const float* a,
                                 float* y, const float* g, const float* r_k, const float* lnw, const float* lnb,
                                 float* out, DType out_type) {
  const auto* host = reinterpret_cast<const kernels::SegmentDesc*>(segs);
  const kernels::Wkv7OutputStage stage{g, r_k, lnw, lnb, out, ToElem(out_type)};
  if (nseg <= 0 || !kernels::wkv7_output_fusable(host, nseg, N, wkv.base, wkv.slot_stride, y, r, k, v, stage)) {
    Backend::Wkv7WithOutput(segs, nseg, n, C, N, wkv, r, w, k, v, kk, a, y, g, r_k, lnw, lnb, out, out_type);
    return;
  }
  if (!Begin()) return;
  const void* dev_segs = DeviceArray(segs, static_cast<size_t>(nseg) * sizeof(Segment));
  if (dev_segs == nullptr) return;
  Record(CudaStatus(kernels::launch_wkv7(AsDesc(dev_segs), host, nseg, C, N, ToElem(wkv.dtype), wkv.base,
                                         wkv.slot_stride, r, w, k, v, kk, a, y, nullptr, 0, stream_, &stage),
                    "Wkv7WithOutput"));
}

void CudaBackend::V7PrepWkv7WithOutput(const Segment* segs, int nseg, int n, int C, int N, StateRef wkv,
                                       const V7PrepArgs& p, const float* r, float* y, const float* g,
                                       const float* r_k, const float* lnw, const float* lnb, float* out,
                                       DType out_type) {
  const auto* host = reinterpret_cast<const kernels::SegmentDesc*>(segs);
  const kernels::Wkv7OutputStage stage{g, r_k, lnw, lnb, out, ToElem(out_type)};
  const kernels::Wkv7Prep prep{p.w0, p.a0, p.k_k, p.k_a, p.v_first, p.v_gate, p.v0};
  if (!options_.fuse_v7_prep || nseg <= 0 ||
      !kernels::wkv7_output_fusable(host, nseg, N, wkv.base, wkv.slot_stride, y, r, p.k, p.v, stage) ||
      !kernels::wkv7_prep_fusable(N, p.w, p.a, p.k, p.v, p.kk, prep)) {
    Backend::V7PrepWkv7WithOutput(segs, nseg, n, C, N, wkv, p, r, y, g, r_k, lnw, lnb, out, out_type);
    return;
  }
  if (!Begin()) return;
  const void* dev_segs = DeviceArray(segs, static_cast<size_t>(nseg) * sizeof(Segment));
  if (dev_segs == nullptr) return;
  Record(CudaStatus(kernels::launch_wkv7(AsDesc(dev_segs), host, nseg, C, N, ToElem(wkv.dtype), wkv.base,
                                         wkv.slot_stride, r, p.w, p.k, p.v, p.kk, p.a, y, nullptr, 0, stream_, &stage,
                                         &prep),
                    "V7PrepWkv7WithOutput"));
}

void CudaBackend::V7Output(float* y, const float* r, const float* k, const float* v, const float* g,
                           const float* r_k, const float* lnw, const float* lnb, int n, int C, int N, float* out,
                           DType out_type) {
  if (!Begin()) return;
  Record(CudaStatus(
      kernels::launch_v7_output(y, r, k, v, g, r_k, lnw, lnb, n, C, N, out, ToElem(out_type), stream_),
      "V7Output"));
}

void CudaBackend::Wkv4(const Segment* segs, int nseg, int C, StateRef aa, const float* time_first,
                       const float* time_decay, const float* k, const float* v, float* y) {
  if (nseg <= 0 || !Begin()) return;
  const void* dev_segs = DeviceArray(segs, static_cast<size_t>(nseg) * sizeof(Segment));
  if (dev_segs == nullptr) return;
  // Long prompts take the chunked scan, whose scratch grows like the others
  // (a pass shape's first, uncaptured run sizes it).
  const auto* host = reinterpret_cast<const kernels::SegmentDesc*>(segs);
  const size_t scratch_floats = kernels::wkv4_scratch_floats(host, nseg, C);
  if (scratch_floats > 0 &&
      !EnsureScratch(&wkv4_scratch_, &wkv4_scratch_bytes_, scratch_floats * sizeof(float), "WKV-4 chunk scan")) {
    return;
  }
  Record(CudaStatus(kernels::launch_wkv4(AsDesc(dev_segs), host, nseg, C, aa.base, aa.slot_stride, time_first,
                                         time_decay, k, v, y, static_cast<float*>(wkv4_scratch_),
                                         wkv4_scratch_bytes_ / sizeof(float), stream_),
                    "Wkv4"));
}

// ---------------------------------------------------------------- sampling

absl::Status CudaBackend::SampleRows(const float* logits, int vocab, const int32_t* rows, const SampleSpec* specs,
                                     int n, SampledToken* out) {
  if (!Begin()) return error_;
  if (n <= 0) return absl::OkStatus();
  if (in_pass_) return absl::FailedPreconditionError("SampleRows inside a forward pass");
  if (logits == nullptr || rows == nullptr || specs == nullptr || out == nullptr || vocab <= 0) {
    return absl::InvalidArgumentError("SampleRows: null array or empty vocabulary");
  }
  // One host block: the row descriptors, then every row's adjustments.
  size_t num_adj = 0;
  for (int i = 0; i < n; ++i) {
    if (rows[i] < 0) return absl::InvalidArgumentError(absl::StrFormat("SampleRows: row %d is negative", rows[i]));
    num_adj += specs[i].adjustments.size();
  }
  const size_t desc_bytes = static_cast<size_t>(n) * sizeof(kernels::SampleRowDesc);
  const size_t adj_off = AlignUp(desc_bytes, alignof(kernels::LogitAdjustDesc));
  const size_t total = adj_off + num_adj * sizeof(kernels::LogitAdjustDesc);
  if (num_adj > static_cast<size_t>(0x7fffffff)) return absl::InvalidArgumentError("SampleRows: too many adjustments");
  sample_pack_.resize(total);
  auto* desc = reinterpret_cast<kernels::SampleRowDesc*>(sample_pack_.data());
  int32_t adj_begin = 0;
  for (int i = 0; i < n; ++i) {
    const SampleSpec& sp = specs[i];
    const int32_t count = static_cast<int32_t>(sp.adjustments.size());
    desc[i] = kernels::SampleRowDesc{sp.u, rows[i], sp.top_k, sp.temperature, sp.inv_temperature, sp.top_p,
                                     sp.min_p, adj_begin, count};
    if (count > 0) {
      std::memcpy(sample_pack_.data() + adj_off + static_cast<size_t>(adj_begin) * sizeof(kernels::LogitAdjustDesc),
                  sp.adjustments.data(), static_cast<size_t>(count) * sizeof(kernels::LogitAdjustDesc));
    }
    adj_begin += count;
  }
  const size_t out_bytes = static_cast<size_t>(n) * sizeof(kernels::SampleResultDesc);
  if (out_bytes > sample_out_bytes_) {
    if (!Record(CudaStatus(cudaStreamSynchronize(stream_), "SampleRows (a queued op failed)"))) return error_;
    if (sample_out_device_ != nullptr) (void)cudaFree(sample_out_device_);
    if (sample_out_host_ != nullptr) (void)cudaFreeHost(sample_out_host_);
    sample_out_device_ = sample_out_host_ = nullptr;
    sample_out_bytes_ = 0;
    const size_t cap = AlignUp(out_bytes, size_t{4096});
    if (!Record(CudaStatus(cudaMalloc(&sample_out_device_, cap), "cudaMalloc (sample results)"))) return error_;
    if (!Record(CudaStatus(cudaMallocHost(&sample_out_host_, cap), "cudaMallocHost (sample results)"))) {
      return error_;
    }
    sample_out_bytes_ = cap;
  }
  // Grows with the largest small batch seen (at most 64 rows, ~4.5 MB), so rarely.
  const size_t scratch_bytes = kernels::sample_scratch_bytes(n);
  if (scratch_bytes > sample_scratch_bytes_) {
    if (!Record(CudaStatus(cudaStreamSynchronize(stream_), "SampleRows (a queued op failed)"))) return error_;
    if (sample_scratch_ != nullptr) (void)cudaFree(sample_scratch_);
    sample_scratch_ = nullptr;
    sample_scratch_bytes_ = 0;
    if (!Record(CudaStatus(cudaMalloc(&sample_scratch_, scratch_bytes), "cudaMalloc (sample scratch)"))) return error_;
    if (!Record(CudaStatus(cudaMemsetAsync(sample_scratch_, 0, scratch_bytes, stream_), "cudaMemset (sample scratch)"))) {
      return error_;
    }
    sample_scratch_bytes_ = scratch_bytes;
  }
  const char* dev = static_cast<const char*>(Stage(sample_pack_.data(), total));
  if (dev == nullptr) return error_;
  if (!Record(CudaStatus(
          kernels::launch_sample(logits, vocab, reinterpret_cast<const kernels::SampleRowDesc*>(dev),
                                 reinterpret_cast<const kernels::LogitAdjustDesc*>(dev + adj_off), n,
                                 static_cast<kernels::SampleResultDesc*>(sample_out_device_), sample_scratch_,
                                 sample_scratch_bytes_, /*parts=*/0, stream_),
          "SampleRows"))) {
    return error_;
  }
  if (!Record(CudaStatus(cudaMemcpyAsync(sample_out_host_, sample_out_device_, out_bytes, cudaMemcpyDeviceToHost,
                                         stream_),
                         "SampleRows download"))) {
    return error_;
  }
  if (absl::Status st = Sync(); !st.ok()) return st;
  const auto* res = static_cast<const kernels::SampleResultDesc*>(sample_out_host_);
  for (int i = 0; i < n; ++i) out[i] = SampledToken{res[i].token, res[i].logprob, res[i].used_draw != 0};
  return absl::OkStatus();
}

}  // namespace rwkv
