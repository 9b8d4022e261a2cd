// A uniform view of the named tensors in a model file (or a synthetic model).
//
// Why: the model builder should not care whether weights come from a
// torch.save zip, a safetensors file, an rwkv.cpp .bin or a random
// generator. Every source presents tensors in BlinkDL's checkpoint
// convention: BlinkDL names, PyTorch shapes (row-major, outermost first) and
// BlinkDL's raw parameter values. Sources in another convention (rwkv.cpp)
// translate on the fly; the exceptions are spelled out in `Convention`.
#ifndef RWKV_ENGINE_LOADER_TENSOR_SOURCE_H_
#define RWKV_ENGINE_LOADER_TENSOR_SOURCE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/loader/dtype.h"

namespace rwkv {

struct TensorInfo {
  DType dtype = DType::kF32;       // element type as stored in the file
  std::vector<int64_t> shape;      // PyTorch order, outermost first
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

// Deviations from BlinkDL's raw values that a source may carry.
struct Convention {
  // RWKV-4 `att.time_decay` already holds -exp(raw) (rwkv.cpp files) rather
  // than the raw parameter (BlinkDL files).
  bool v4_time_decay_is_neg_exp = false;
};

// Read-only, thread-compatible (const methods may be called concurrently).
class TensorSource {
 public:
  virtual ~TensorSource() = default;

  // Every tensor name, in file order.
  virtual std::vector<std::string> Names() const = 0;

  // nullptr when the tensor is absent.
  virtual const TensorInfo* Find(std::string_view name) const = 0;

  // Copies the whole tensor into dst (numel elements of type `to`),
  // converting from the stored type. dst must hold exactly numel elements.
  virtual absl::Status Read(std::string_view name, DType to, void* dst) const = 0;

  // A pointer to the tensor's fp32 data inside the file mapping, when it is
  // stored as fp32, suitably aligned and needs no translation; else nullptr.
  // Valid as long as the source lives.
  virtual const float* TryZeroCopyF32(std::string_view name) const { return nullptr; }

  virtual Convention convention() const { return {}; }

  // Human-readable description for logs: format and path.
  virtual std::string Describe() const = 0;
};

// Opens a model file, choosing the reader by content (zip magic → torch.save
// .pth; "ggmf" magic → rwkv.cpp .bin; 8-byte header length + JSON →
// safetensors). `synthetic:` specs are handled a level up (engine/model).
// Errors: NOT_FOUND (no such file), INVALID_ARGUMENT (unknown or malformed
// format, with the reason), UNIMPLEMENTED (a known but unsupported feature,
// such as a quantized rwkv.cpp type, named).
absl::StatusOr<std::unique_ptr<TensorSource>> OpenTensorSource(const std::string& path);

// Individual readers (OpenTensorSource dispatches to these).
absl::StatusOr<std::unique_ptr<TensorSource>> OpenPth(const std::string& path);
absl::StatusOr<std::unique_ptr<TensorSource>> OpenSafetensors(const std::string& path);
absl::StatusOr<std::unique_ptr<TensorSource>> OpenRwkvCppBin(const std::string& path);

}  // namespace rwkv

#endif  // RWKV_ENGINE_LOADER_TENSOR_SOURCE_H_
