// Synthetic models: deterministic random weights with the real dimensions.
//
// Why: benchmarks and machines without a model file still need a model of
// the real shape. `synthetic:<size>` builds a TensorSource in BlinkDL's
// convention (bf16 values, like released checkpoints), generated on demand
// from a counter-based hash of (tensor name, element index), so the same
// spec gives bit-identical weights everywhere and no memory is held until a
// backend reads the tensors.
//
// Sizes: RWKV-7 `0.1b 0.4b 1.5b 2.9b 7.2b` (the released World/G1 dims,
// vocab 65536) and `tiny` (L=2 C=128 vocab=512); RWKV-4 `v4-0.1b v4-0.4b
// v4-1.5b v4-2.9b v4-7.2b` (same L and C as the RWKV-7 sizes) and `v4-tiny`.
//
// Activity: every activation is O(1), and the FFN is built like the peer's
// benchmark weights: ln2 weight 1 and bias 0.1, ffn.x_k = 0.5, each ffn.key
// row N(0, 2/C) plus a constant -theta/(0.1 C) with theta set so that about
// 20% of relu inputs are positive, ffn.value N(0, 1/(0.2*4C)).
#ifndef RWKV_ENGINE_MODEL_SYNTHETIC_H_
#define RWKV_ENGINE_MODEL_SYNTHETIC_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/loader/tensor_source.h"

namespace rwkv {

// spec: "synthetic:<size>". INVALID_ARGUMENT for an unknown size (the message
// lists the known ones).
absl::StatusOr<std::unique_ptr<TensorSource>> OpenSynthetic(const std::string& spec);

// The known size names.
std::vector<std::string> SyntheticSizes();

}  // namespace rwkv

#endif  // RWKV_ENGINE_MODEL_SYNTHETIC_H_
