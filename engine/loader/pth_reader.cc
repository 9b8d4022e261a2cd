// Reader for BlinkDL .pth checkpoints: the zip archive torch.save writes.
//
// Why this shape: the archive holds `<stem>/data.pkl` (a pickled state dict
// whose tensors name their storages by key) and one STORED entry
// `<stem>/data/<key>` per storage. We parse the zip directory, evaluate the
// pickle with our restricted interpreter, then point each tensor straight at
// its bytes inside the mapping (zero-copy). torch 1.13 and 2.x archives
// differ only in extra bookkeeping entries, which we ignore (except
// `byteorder`, which must say little-endian when present).
#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/loader/binary_util.h"
#include "engine/loader/mapped_source.h"
#include "engine/loader/pickle.h"
#include "engine/loader/readers.h"
#include "engine/loader/zip_reader.h"

namespace rwkv {
namespace loader_internal {
namespace {

// Maps a torch storage class to our dtype. On failure names the dtype.
absl::Status StorageDType(const std::string& storage_type, const std::string& tensor,
                          const std::string& path, DType* out) {
  struct Known {
    const char* type;
    const char* dtype;
  };
  static constexpr Known kUnsupported[] = {
      {"torch.DoubleStorage", "float64"},
      {"torch.LongStorage", "int64"},
      {"torch.IntStorage", "int32"},
      {"torch.ShortStorage", "int16"},
      {"torch.CharStorage", "int8"},
      {"torch.ByteStorage", "uint8"},
      {"torch.BoolStorage", "bool"},
      {"torch.ComplexFloatStorage", "complex64"},
      {"torch.ComplexDoubleStorage", "complex128"},
      {"torch.QInt8Storage", "qint8"},
      {"torch.QUInt8Storage", "quint8"},
      {"torch.QInt32Storage", "qint32"},
      {"torch.UntypedStorage", "untyped bytes"},
      {"torch.storage.UntypedStorage", "untyped bytes"},
  };
  if (storage_type == "torch.FloatStorage") {
    *out = DType::kF32;
  } else if (storage_type == "torch.HalfStorage") {
    *out = DType::kF16;
  } else if (storage_type == "torch.BFloat16Storage") {
    *out = DType::kBF16;
  } else {
    for (const Known& k : kUnsupported) {
      if (storage_type == k.type) {
        return absl::UnimplementedError(
            absl::StrCat(path, ": tensor '", tensor, "' has dtype ", k.dtype, " (", storage_type,
                         "); only bf16, fp16 and fp32 tensors are supported"));
      }
    }
    return Malformed(path, absl::StrCat("tensor '", tensor, "' has an unknown storage type '",
                                        storage_type, "'"));
  }
  return absl::OkStatus();
}

// Row-major contiguity; strides of size-1 dimensions do not matter.
bool IsContiguous(const std::vector<int64_t>& shape, const std::vector<int64_t>& stride) {
  uint64_t expected = 1;
  for (size_t k = shape.size(); k-- > 0;) {
    if (shape[k] == 0) return true;  // empty tensors have no layout
    if (shape[k] != 1 && stride[k] != static_cast<int64_t>(expected)) return false;
    if (!CheckedMul(expected, static_cast<uint64_t>(shape[k]), &expected)) return false;
  }
  return true;
}

std::string ShapeString(const std::vector<int64_t>& v) {
  std::string s = "(";
  for (size_t k = 0; k < v.size(); ++k) absl::StrAppend(&s, k ? ", " : "", v[k]);
  return s + ")";
}

}  // namespace

absl::StatusOr<std::unique_ptr<TensorSource>> OpenPthFile(std::unique_ptr<MappedFile> file) {
  const std::string path = file->path();
  absl::StatusOr<ZipIndex> zip = ZipIndex::Parse(file->bytes(), path);
  if (!zip.ok()) return zip.status();

  // The pickle is `<stem>/data.pkl`; every other entry is found relative to it.
  const ZipEntry* pkl_entry = nullptr;
  std::string prefix;
  for (const ZipEntry& e : zip->entries()) {
    if (!absl::EndsWith(e.name, "data.pkl")) continue;
    const std::string stem = e.name.substr(0, e.name.size() - 8);
    if (!stem.empty() && (stem.back() != '/' || stem.find('/') != stem.size() - 1)) continue;
    if (pkl_entry != nullptr) return Malformed(path, "zip archive holds more than one data.pkl");
    pkl_entry = &e;
    prefix = stem;
  }
  if (pkl_entry == nullptr) {
    return Malformed(path, "zip archive has no data.pkl, so it is not a torch.save checkpoint");
  }
  if (const ZipEntry* bo = zip->Find(prefix + "byteorder"); bo != nullptr) {
    absl::StatusOr<uint64_t> off = zip->DataOffset(*bo);
    if (!off.ok()) return off.status();
    const std::string_view order(reinterpret_cast<const char*>(file->data() + *off),
                                 static_cast<size_t>(bo->uncompressed_size));
    if (order != "little") {
      return absl::UnimplementedError(absl::StrCat(path, ": checkpoint byte order is '",
                                                   Av(order.substr(0, 16)),
                                                   "'; only little-endian is supported"));
    }
  }
  absl::StatusOr<uint64_t> pkl_off = zip->DataOffset(*pkl_entry);
  if (!pkl_off.ok()) return pkl_off.status();
  absl::StatusOr<std::vector<PickledTensor>> tensors = ParseTorchStateDict(std::span<const uint8_t>(
      file->data() + *pkl_off, static_cast<size_t>(pkl_entry->uncompressed_size)));
  if (!tensors.ok()) {
    return absl::Status(tensors.status().code(), absl::StrCat(path, ": ", pkl_entry->name, ": ",
                                                              tensors.status().message()));
  }
  if (tensors->size() > kMaxTensors) return Malformed(path, "too many tensors");

  auto source = std::make_unique<MappedTensorSource>(std::move(file), "torch.save zip (.pth)");
  for (PickledTensor& t : *tensors) {
    DType dtype = DType::kF32;
    if (absl::Status s = StorageDType(t.storage_type, t.name, path, &dtype); !s.ok()) return s;
    const std::string entry_name = absl::StrCat(prefix, "data/", t.storage_key);
    const ZipEntry* entry = zip->Find(entry_name);
    if (entry == nullptr) {
      return Malformed(path,
                       absl::StrCat("tensor '", t.name, "' refers to storage '", t.storage_key,
                                    "', but the archive has no entry ", entry_name));
    }
    absl::StatusOr<uint64_t> data = zip->DataOffset(*entry);
    if (!data.ok()) return data.status();
    const uint64_t es = DTypeSize(dtype);
    uint64_t storage_bytes;
    if (!CheckedMul(static_cast<uint64_t>(t.storage_numel), es, &storage_bytes) ||
        storage_bytes > entry->uncompressed_size) {
      return Malformed(
          path, absl::StrCat("storage '", t.storage_key, "' of tensor '", t.name, "' claims ",
                             t.storage_numel, " elements but its entry holds ",
                             entry->uncompressed_size, " bytes"));
    }
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d < 0 || !CheckedMul(numel, static_cast<uint64_t>(d), &numel)) {
        return Malformed(path, absl::StrCat("tensor '", t.name, "' has an invalid shape ",
                                            ShapeString(t.shape)));
      }
    }
    if (!IsContiguous(t.shape, t.stride)) {
      return absl::UnimplementedError(absl::StrCat(
          path, ": tensor '", t.name, "' is not contiguous (shape ", ShapeString(t.shape),
          ", stride ", ShapeString(t.stride), "); re-save it with .contiguous()"));
    }
    if (numel > 0 && !RangeInside(static_cast<uint64_t>(t.storage_offset), numel,
                                  static_cast<uint64_t>(t.storage_numel))) {
      return Malformed(path, absl::StrCat("tensor '", t.name, "' (", numel, " elements at offset ",
                                          t.storage_offset, ") lies outside its storage of ",
                                          t.storage_numel, " elements"));
    }
    MappedTensor mt;
    mt.name = std::move(t.name);
    mt.info.dtype = dtype;
    mt.info.shape = std::move(t.shape);
    // storage_offset * es <= storage_bytes (checked above) unless the tensor is empty.
    mt.offset = *data + (numel > 0 ? static_cast<uint64_t>(t.storage_offset) * es : 0);
    if (absl::Status s = source->Add(std::move(mt)); !s.ok()) return s;
  }
  return std::unique_ptr<TensorSource>(std::move(source));
}

}  // namespace loader_internal

absl::StatusOr<std::unique_ptr<TensorSource>> OpenPth(const std::string& path) {
  absl::StatusOr<std::unique_ptr<MappedFile>> file = MappedFile::Open(path);
  if (!file.ok()) return file.status();
  return loader_internal::OpenPthFile(std::move(*file));
}

}  // namespace rwkv
