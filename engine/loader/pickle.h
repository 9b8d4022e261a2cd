// Interprets the pickle that torch.save writes for a state dict.
//
// Why our own: Python's pickle is a small stack machine, and a state dict
// uses only a handful of its opcodes. We evaluate those opcodes over plain
// data and recognise exactly the callables a state dict needs
// (collections.OrderedDict, torch._utils._rebuild_tensor_v2 and
// _rebuild_parameter, and torch storages through persistent ids). Nothing is
// ever executed, so a hostile pickle can at worst produce an error. Other
// callables become opaque objects, refused only if a tensor slot holds one.
#ifndef RWKV_ENGINE_LOADER_PICKLE_H_
#define RWKV_ENGINE_LOADER_PICKLE_H_

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace rwkv::loader_internal {

// One entry of the pickled state dict, before its storage is resolved.
struct PickledTensor {
  std::string name;
  std::string storage_type;    // e.g. "torch.BFloat16Storage"
  std::string storage_key;     // archive entry is <prefix>/data/<key>
  int64_t storage_numel = 0;   // elements in the storage, per the pickle
  int64_t storage_offset = 0;  // in elements
  std::vector<int64_t> shape;
  std::vector<int64_t> stride;
};

// Limits on what one pickle may build (real state dicts are far below them).
struct PickleLimits {
  size_t max_stack = 1 << 18;   // values on the stack at once
  size_t max_marks = 256;       // nested MARKs
  size_t max_memo = 1 << 20;    // memo entries
  size_t max_values = 1 << 20;  // values created overall
};

// Evaluates `pkl` and returns the top-level dict's entries in order. The
// dict must map strings to tensors. Errors are INVALID_ARGUMENT naming the
// opcode/offset or the offending entry.
absl::StatusOr<std::vector<PickledTensor>> ParseTorchStateDict(std::span<const uint8_t> pkl,
                                                               const PickleLimits& limits = {});

}  // namespace rwkv::loader_internal

#endif  // RWKV_ENGINE_LOADER_PICKLE_H_
