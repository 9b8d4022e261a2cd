// The TensorSource that all file readers produce: a validated table of
// tensors whose bytes live in one MappedFile.
//
// Why: the three container formats differ only in how the table is found.
// Once each reader has located every tensor's bytes, lookup, bounds checks,
// dtype conversion, zero-copy access and the rwkv.cpp layout translations
// are the same code, tested once.
#ifndef RWKV_ENGINE_LOADER_MAPPED_SOURCE_H_
#define RWKV_ENGINE_LOADER_MAPPED_SOURCE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "engine/loader/mapped_file.h"
#include "engine/loader/tensor_source.h"

namespace rwkv::loader_internal {

// How a tensor's stored bytes map to the presented (PyTorch-order) tensor.
enum class Layout : uint8_t {
  // Stored row-major in exactly the presented shape.
  kContiguous,
  // Stored with the last two dimensions swapped (each matrix of a batch
  // transposed); presented un-transposed. Needs >= 2 dimensions.
  kTransposedLast2,
};

struct MappedTensor {
  std::string name;
  TensorInfo info;      // presented dtype (as stored) and shape
  uint64_t offset = 0;  // byte offset of element 0 in the file
  Layout layout = Layout::kContiguous;
};

class MappedTensorSource : public TensorSource {
 public:
  MappedTensorSource(std::unique_ptr<MappedFile> file, std::string format);

  // Validates and appends a tensor: name length and uniqueness, dims
  // (<= kMaxDims, each >= 0), element count without overflow, and that every
  // byte lies inside the file. Errors are INVALID_ARGUMENT naming the tensor
  // and the file.
  absl::Status Add(MappedTensor tensor);

  void set_convention(Convention c) { convention_ = c; }
  size_t size() const { return tensors_.size(); }
  const MappedFile& file() const { return *file_; }

  // TensorSource:
  std::vector<std::string> Names() const override;
  const TensorInfo* Find(std::string_view name) const override;
  absl::Status Read(std::string_view name, DType to, void* dst) const override;
  const float* TryZeroCopyF32(std::string_view name) const override;
  Convention convention() const override { return convention_; }
  std::string Describe() const override;

 private:
  const MappedTensor* Lookup(std::string_view name) const;

  std::unique_ptr<MappedFile> file_;
  std::string format_;
  Convention convention_;
  std::vector<MappedTensor> tensors_;
  absl::flat_hash_map<std::string, size_t> index_;
};

// Builds the uniform error for malformed files: "<path>: <what>".
absl::Status Malformed(const std::string& path, std::string_view what);

}  // namespace rwkv::loader_internal

#endif  // RWKV_ENGINE_LOADER_MAPPED_SOURCE_H_
