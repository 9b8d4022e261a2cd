// Architecture and dimensions of an RWKV model, read from tensor names and
// shapes.
//
// Why: nothing about a checkpoint is hard-coded. The version comes from which
// tensors exist (the same rule rwkv.cpp's converter uses) and every dimension
// from the shapes, so any released size (and the tiny test models) loads.
#ifndef RWKV_ENGINE_MODEL_MODEL_CONFIG_H_
#define RWKV_ENGINE_MODEL_MODEL_CONFIG_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "engine/loader/tensor_source.h"

namespace rwkv {

enum class Arch : uint8_t { kV4 = 4, kV7 = 7 };

struct ModelConfig {
  Arch arch = Arch::kV7;
  int32_t n_layer = 0;
  int32_t n_embd = 0;     // C
  int32_t vocab_size = 0;
  int32_t ffn_dim = 0;    // usually 4C
  // RWKV-7 only.
  int32_t head_size = 0;  // N (64 in releases)
  int32_t n_head = 0;     // H = C / N
  int32_t d_w = 0, d_a = 0, d_v = 0, d_g = 0;  // LoRA ranks

  int64_t ParamCount() const;          // every weight element (embedding and head included)
  int64_t MatmulParamCount() const;    // weights read by a decode step (embedding excluded)
  std::string ArchName() const { return arch == Arch::kV7 ? "rwkv7" : "rwkv4"; }
  std::string ToString() const;
};

// Detects the architecture and dimensions. Errors: UNIMPLEMENTED for RWKV-5/6
// ("not supported yet"), INVALID_ARGUMENT for missing tensors or inconsistent
// shapes (naming the tensor and the expected shape).
absl::StatusOr<ModelConfig> DetectModelConfig(const TensorSource& source);

}  // namespace rwkv

#endif  // RWKV_ENGINE_MODEL_MODEL_CONFIG_H_
