// See backend_factory.h.
#include "engine/model/backend_factory.h"

#include "absl/strings/str_cat.h"
#include "engine/model/cpu_backend.h"
#ifdef RWKV_HAVE_CUDA_BACKEND
#include "engine/model/cuda_backend.h"
#include "engine/model/cuda_env.h"
#endif

namespace rwkv {

absl::StatusOr<DType> ParseWeightDType(const std::string& name) {
  if (name == "f16") return DType::kF16;
  if (name == "bf16") return DType::kBF16;
  if (name == "f32") return DType::kF32;
  return absl::InvalidArgumentError(absl::StrCat("weight dtype must be f16, bf16 or f32, got '", name, "'"));
}

absl::StatusOr<DType> ParseStateDType(const std::string& name) {
  if (name == "fp32" || name == "f32") return DType::kF32;
  if (name == "fp16" || name == "f16") return DType::kF16;
  return absl::InvalidArgumentError(absl::StrCat("state dtype must be fp32 or fp16, got '", name, "'"));
}

absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(const BackendChoice& choice, std::string* note) {
  if (choice.name != "cpu" && choice.name != "cuda" && choice.name != "auto") {
    return absl::InvalidArgumentError(absl::StrCat("backend must be cpu, cuda or auto, got '", choice.name, "'"));
  }
  std::string why;
  if (choice.name != "cpu") {
#ifdef RWKV_HAVE_CUDA_BACKEND
    CudaBackendOptions options;
    options.weight_dtype = choice.gpu_weight_dtype;
    options.embedding_dtype = choice.gpu_weight_dtype;
    // A malformed RWKV_CUDA_* override is the operator's mistake: say so,
    // even under auto (not "no usable GPU" and a silent fall back to the CPU).
    if (absl::Status s = ApplyCudaEnvironment(&options); !s.ok()) return s;
    auto cuda = CudaBackend::Create(options);
    if (cuda.ok()) {
      if (note != nullptr) *note = absl::StrCat("backend cuda: ", (*cuda)->description());
      return std::unique_ptr<Backend>(*std::move(cuda));
    }
    if (choice.name == "cuda") return cuda.status();
    why = absl::StrCat(" (no usable GPU: ", cuda.status().message(), ")");
#else
    if (choice.name == "cuda") {
      return absl::FailedPreconditionError(
          "this build has no CUDA backend (nvcc was not found when it was configured)");
    }
    why = " (built without CUDA)";
#endif
  }
  if (note != nullptr) *note = absl::StrCat("backend cpu, ", choice.threads, " threads", why);
  return std::unique_ptr<Backend>(std::make_unique<CpuBackend>(choice.threads));
}

}  // namespace rwkv
