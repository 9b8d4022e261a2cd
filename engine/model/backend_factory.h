// Choosing a backend by name: "cpu", "cuda" or "auto".
//
// Why one place: the server and the command-line tools offer the same
// --backend flag, and "auto" must mean the same thing everywhere (the GPU
// when one is usable, else the CPU). The CUDA backend exists only in builds
// where nvcc was found.
#ifndef RWKV_ENGINE_MODEL_BACKEND_FACTORY_H_
#define RWKV_ENGINE_MODEL_BACKEND_FACTORY_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/loader/dtype.h"
#include "engine/model/backend.h"

namespace rwkv {

struct BackendChoice {
  std::string name = "auto";           // cpu | cuda | auto
  int threads = 1;                     // CPU backend threads
  DType gpu_weight_dtype = DType::kF16;  // how the CUDA backend stores matrices
};

// INVALID_ARGUMENT for an unknown name; FAILED_PRECONDITION for "cuda" when
// this build has no CUDA backend or no GPU is usable. `note` (optional)
// receives a line for the log saying what was chosen and why.
absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(const BackendChoice& choice, std::string* note = nullptr);

// Parses "f16", "bf16" or "f32".
absl::StatusOr<DType> ParseWeightDType(const std::string& name);

// Parses a --state-dtype value: "fp32" (or "f32") or "fp16" (or "f16").
absl::StatusOr<DType> ParseStateDType(const std::string& name);

}  // namespace rwkv

#endif  // RWKV_ENGINE_MODEL_BACKEND_FACTORY_H_
