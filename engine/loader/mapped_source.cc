// MappedTensorSource: validation at Add time, conversion at Read time.
//
// Why validate up front: after Add succeeds, Read never needs to re-check
// bounds, so a hostile file fails at open with one clear message instead of
// on some later read in the middle of model construction.
#include "engine/loader/mapped_source.h"

#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/loader/binary_util.h"

namespace rwkv::loader_internal {

absl::Status Malformed(const std::string& path, std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", Av(what)));
}

MappedTensorSource::MappedTensorSource(std::unique_ptr<MappedFile> file, std::string format)
    : file_(std::move(file)), format_(std::move(format)) {}

absl::Status MappedTensorSource::Add(MappedTensor t) {
  const std::string& path = file_->path();
  if (t.name.empty()) return Malformed(path, "a tensor has an empty name");
  if (t.name.size() > kMaxNameLength) {
    return Malformed(path, absl::StrCat("tensor name of ", t.name.size(),
                                        " bytes exceeds the limit of ", kMaxNameLength));
  }
  if (tensors_.size() >= kMaxTensors) {
    return Malformed(path, absl::StrCat("more than ", kMaxTensors, " tensors"));
  }
  if (index_.contains(t.name)) {
    return Malformed(path, absl::StrCat("duplicate tensor name '", t.name, "'"));
  }
  if (t.info.shape.size() > kMaxDims) {
    return Malformed(path, absl::StrCat("tensor '", t.name, "' has ", t.info.shape.size(),
                                        " dimensions (at most ", kMaxDims, " supported)"));
  }
  if (t.layout == Layout::kTransposedLast2 && t.info.shape.size() < 2) {
    return Malformed(path, absl::StrCat("tensor '", t.name, "' cannot be transposed"));
  }
  // The product of the non-zero dims is capped too, so that no partial
  // product a consumer might form (even of an empty tensor) overflows int64.
  uint64_t numel = 1, nonzero = 1;
  for (int64_t d : t.info.shape) {
    if (d < 0) {
      return Malformed(path, absl::StrCat("tensor '", t.name, "' has a negative dimension ", d));
    }
    if (d > 0 && (!CheckedMul(nonzero, static_cast<uint64_t>(d), &nonzero) ||
                  nonzero > (uint64_t{1} << 62))) {
      return Malformed(path, absl::StrCat("tensor '", t.name, "' is impossibly large"));
    }
    numel *= static_cast<uint64_t>(d);  // <= nonzero: cannot overflow
  }
  const uint64_t bytes = numel * DTypeSize(t.info.dtype);  // < 2^64 as numel <= 2^62
  if (!RangeInside(t.offset, bytes, file_->size())) {
    return Malformed(
        path, absl::StrCat("tensor '", t.name, "' (", bytes, " bytes at offset ", t.offset,
                           ") extends past the end of the data (", file_->size(), " bytes)"));
  }
  index_.emplace(t.name, tensors_.size());
  tensors_.push_back(std::move(t));
  return absl::OkStatus();
}

std::vector<std::string> MappedTensorSource::Names() const {
  std::vector<std::string> names;
  names.reserve(tensors_.size());
  for (const MappedTensor& t : tensors_) names.push_back(t.name);
  return names;
}

const MappedTensor* MappedTensorSource::Lookup(std::string_view name) const {
  auto it = index_.find(Av(name));
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const TensorInfo* MappedTensorSource::Find(std::string_view name) const {
  const MappedTensor* t = Lookup(name);
  return t == nullptr ? nullptr : &t->info;
}

absl::Status MappedTensorSource::Read(std::string_view name, DType to, void* dst) const {
  const MappedTensor* t = Lookup(name);
  if (t == nullptr) {
    return absl::NotFoundError(absl::StrCat("no tensor '", Av(name), "' in ", Describe()));
  }
  const uint64_t numel = static_cast<uint64_t>(t->info.numel());
  if (numel == 0) return absl::OkStatus();
  if (dst == nullptr) return absl::InvalidArgumentError("Read: null destination");
  const uint8_t* src = file_->data() + t->offset;
  const DType from = t->info.dtype;
  if (t->layout == Layout::kContiguous) {
    ConvertDType(from, src, to, dst, static_cast<size_t>(numel));
    return absl::OkStatus();
  }
  // Transposed: presented (..., rows, cols) is stored as (..., cols, rows).
  const size_t nd = t->info.shape.size();
  const size_t rows = static_cast<size_t>(t->info.shape[nd - 2]);
  const size_t cols = static_cast<size_t>(t->info.shape[nd - 1]);
  const size_t matrix = rows * cols;
  const size_t batches = static_cast<size_t>(numel) / matrix;
  const size_t in_size = DTypeSize(from);
  const size_t out_size = DTypeSize(to);
  auto* out = static_cast<uint8_t*>(dst);
  // One stored row (a presented column) at a time: convert it, then scatter.
  std::vector<uint8_t> column(rows * out_size);
  for (size_t b = 0; b < batches; ++b) {
    const uint8_t* sm = src + b * matrix * in_size;
    uint8_t* dm = out + b * matrix * out_size;
    for (size_t c = 0; c < cols; ++c) {
      ConvertDType(from, sm + c * rows * in_size, to, column.data(), rows);
      for (size_t r = 0; r < rows; ++r) {
        std::memcpy(dm + (r * cols + c) * out_size, column.data() + r * out_size, out_size);
      }
    }
  }
  return absl::OkStatus();
}

const float* MappedTensorSource::TryZeroCopyF32(std::string_view name) const {
  const MappedTensor* t = Lookup(name);
  if (t == nullptr || t->info.dtype != DType::kF32 || t->layout != Layout::kContiguous ||
      file_->data() == nullptr) {
    return nullptr;
  }
  const uint8_t* p = file_->data() + t->offset;
  if (reinterpret_cast<uintptr_t>(p) % alignof(float) != 0) return nullptr;
  return reinterpret_cast<const float*>(p);
}

std::string MappedTensorSource::Describe() const {
  return absl::StrCat(format_, " ", file_->path(), " (", tensors_.size(), " tensors)");
}

}  // namespace rwkv::loader_internal
