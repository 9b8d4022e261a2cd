// Header-only bridge from the model library's types to StateDims.
//
// Why separate: rwkv_state links only rwkv_common so that importing and
// exporting states needs no backend. Code that has a ModelConfig (the
// session manager) includes this header and links rwkv_model itself; nothing
// here needs a definition from rwkv_model (StateLayout::For is inline).
#ifndef RWKV_ENGINE_STATE_MODEL_DIMS_H_
#define RWKV_ENGINE_STATE_MODEL_DIMS_H_

#include <cstdint>

#include "engine/loader/dtype.h"
#include "engine/model/model_config.h"
#include "engine/model/state_layout.h"
#include "engine/state/state_file.h"

namespace rwkv {

static_assert(static_cast<uint32_t>(Arch::kV4) == 4 && static_cast<uint32_t>(Arch::kV7) == 7,
              "state files store rwkv::Arch values");
static_assert(static_cast<uint32_t>(DType::kF32) == static_cast<uint32_t>(StateDType::kF32) &&
                  static_cast<uint32_t>(DType::kF16) == static_cast<uint32_t>(StateDType::kF16) &&
                  static_cast<uint32_t>(DType::kBF16) == static_cast<uint32_t>(StateDType::kBF16),
              "StateDType codes are rwkv::DType codes");

// The dims a state of model `c` carries (layout version kStateLayoutVersion).
inline StateDims StateDimsFor(const ModelConfig& c) {
  StateDims d;
  d.arch = static_cast<uint32_t>(c.arch);
  d.n_layer = static_cast<uint32_t>(c.n_layer);
  d.n_embd = static_cast<uint32_t>(c.n_embd);
  d.n_head = static_cast<uint32_t>(c.n_head);
  d.head_size = static_cast<uint32_t>(c.head_size);
  d.vocab_size = static_cast<uint32_t>(c.vocab_size);
  d.layout_version = kStateLayoutVersion;
  d.state_floats = static_cast<uint64_t>(StateLayout::For(c).total);
  return d;
}

}  // namespace rwkv

#endif  // RWKV_ENGINE_STATE_MODEL_DIMS_H_
