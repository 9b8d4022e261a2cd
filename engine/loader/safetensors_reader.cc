// Reader for the safetensors format (.safetensors / .st).
//
// Why strict: the format is a little-endian u64 header length, a JSON header
// `{"name": {"dtype", "shape", "data_offsets": [begin, end]}, ...,
// "__metadata__": {...}}` and a data region that offsets are relative to. We
// check every field (the byte count must match dtype x shape; tensors may
// not overlap or leave the file), so a bad header fails at open. Tensors are
// presented in header order.
#include <algorithm>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/loader/binary_util.h"
#include "engine/loader/json.h"
#include "engine/loader/mapped_source.h"
#include "engine/loader/readers.h"

namespace rwkv {
namespace loader_internal {
namespace {

// The reference implementation's limit on header size.
constexpr uint64_t kMaxHeaderBytes = 100 << 20;

absl::Status ParseDType(const std::string& name, const std::string& tensor, const std::string& path,
                        DType* out) {
  if (name == "F32") {
    *out = DType::kF32;
  } else if (name == "F16") {
    *out = DType::kF16;
  } else if (name == "BF16") {
    *out = DType::kBF16;
  } else {
    static constexpr const char* kKnown[] = {
        "F64",  "I64",     "U64",     "I32",     "U32",     "I16",     "U16", "I8", "U8",
        "BOOL", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4",  "C64"};
    for (const char* k : kKnown) {
      if (name == k) {
        return absl::UnimplementedError(absl::StrCat(path, ": tensor '", tensor, "' has dtype ",
                                                     name,
                                                     "; only BF16, F16 and F32 are supported"));
      }
    }
    return Malformed(path, absl::StrCat("tensor '", tensor, "' has an unknown dtype '", name, "'"));
  }
  return absl::OkStatus();
}

bool NonNegativeInt(const JsonValue& v, int64_t* out) {
  if (v.type != JsonValue::Type::kNumber || !v.is_int || v.integer < 0) return false;
  *out = v.integer;
  return true;
}

struct Span {
  uint64_t begin, end;
  size_t tensor;
};

}  // namespace

absl::StatusOr<std::unique_ptr<TensorSource>> OpenSafetensorsFile(
    std::unique_ptr<MappedFile> file) {
  const std::string path = file->path();
  const uint64_t size = file->size();
  if (size < 8) return Malformed(path, "too small for a safetensors header (truncated?)");
  const uint64_t header_len = LoadLE64(file->data());
  if (header_len > kMaxHeaderBytes) {
    return Malformed(path, absl::StrCat("safetensors header length ", header_len,
                                        " exceeds the limit of ", kMaxHeaderBytes, " bytes"));
  }
  if (header_len > size - 8) {
    return Malformed(path,
                     absl::StrCat("safetensors header length ", header_len,
                                  " runs past the end of the file (", size, " bytes; truncated?)"));
  }
  const std::string_view header(reinterpret_cast<const char*>(file->data() + 8),
                                static_cast<size_t>(header_len));
  absl::StatusOr<JsonValue> json = ParseJson(header);
  if (!json.ok())
    return Malformed(path, absl::StrCat("safetensors header: ", json.status().message()));
  if (json->type != JsonValue::Type::kObject)
    return Malformed(path, "safetensors header is not an object");

  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = size - data_start;
  auto source = std::make_unique<MappedTensorSource>(std::move(file), "safetensors");
  std::vector<Span> spans;
  for (const auto& [name, desc] : json->object) {
    if (name == "__metadata__") {
      if (desc.type != JsonValue::Type::kObject)
        return Malformed(path, "__metadata__ is not an object");
      for (const auto& [k, v] : desc.object) {
        if (v.type != JsonValue::Type::kString) {
          return Malformed(path, absl::StrCat("__metadata__ value '", k, "' is not a string"));
        }
      }
      continue;
    }
    const std::string what = absl::StrCat("tensor '", name, "'");
    if (desc.type != JsonValue::Type::kObject)
      return Malformed(path, what + " is not described by an object");
    const JsonValue* dtype = desc.Get("dtype");
    const JsonValue* shape = desc.Get("shape");
    const JsonValue* offsets = desc.Get("data_offsets");
    if (dtype == nullptr || dtype->type != JsonValue::Type::kString) {
      return Malformed(path, what + " lacks a string \"dtype\"");
    }
    if (shape == nullptr || shape->type != JsonValue::Type::kArray) {
      return Malformed(path, what + " lacks a \"shape\" array");
    }
    if (offsets == nullptr || offsets->type != JsonValue::Type::kArray ||
        offsets->array.size() != 2) {
      return Malformed(path, what + " lacks a two-element \"data_offsets\" array");
    }
    MappedTensor t;
    t.name = name;
    if (absl::Status s = ParseDType(dtype->str, name, path, &t.info.dtype); !s.ok()) return s;
    if (shape->array.size() > kMaxDims) {
      return Malformed(path, absl::StrCat(what, " has ", shape->array.size(),
                                          " dimensions (at most ", kMaxDims, " supported)"));
    }
    uint64_t numel = 1;
    for (const JsonValue& d : shape->array) {
      int64_t dim;
      if (!NonNegativeInt(d, &dim))
        return Malformed(path, what + " has a shape entry that is not a non-negative integer");
      if (!CheckedMul(numel, static_cast<uint64_t>(dim), &numel)) {
        return Malformed(path, what + " element count overflows");
      }
      t.info.shape.push_back(dim);
    }
    int64_t begin, end;
    if (!NonNegativeInt(offsets->array[0], &begin) || !NonNegativeInt(offsets->array[1], &end) ||
        end < begin) {
      return Malformed(path, what + " has invalid data_offsets");
    }
    uint64_t bytes;
    if (!CheckedMul(numel, DTypeSize(t.info.dtype), &bytes) ||
        bytes != static_cast<uint64_t>(end - begin)) {
      return Malformed(
          path, absl::StrCat(what, " has data_offsets [", begin, ", ", end, ") of ", end - begin,
                             " bytes, but its dtype and shape need ", bytes, " bytes"));
    }
    if (static_cast<uint64_t>(end) > data_size) {
      return Malformed(
          path, absl::StrCat(what, " data_offsets end ", end, " lies past the end of the data (",
                             data_size, " bytes; truncated?)"));
    }
    t.offset = data_start + static_cast<uint64_t>(begin);
    spans.push_back({static_cast<uint64_t>(begin), static_cast<uint64_t>(end), source->size()});
    if (absl::Status s = source->Add(std::move(t)); !s.ok()) return s;
  }
  // No two tensors may share bytes.
  std::sort(spans.begin(), spans.end(),
            [](const Span& a, const Span& b) { return a.begin < b.begin; });
  const std::vector<std::string> names = source->Names();
  for (size_t k = 1; k < spans.size(); ++k) {
    if (spans[k].begin < spans[k - 1].end) {
      return Malformed(path, absl::StrCat("tensors '", names[spans[k - 1].tensor], "' and '",
                                          names[spans[k].tensor], "' overlap"));
    }
  }
  return std::unique_ptr<TensorSource>(std::move(source));
}

}  // namespace loader_internal

absl::StatusOr<std::unique_ptr<TensorSource>> OpenSafetensors(const std::string& path) {
  absl::StatusOr<std::unique_ptr<MappedFile>> file = MappedFile::Open(path);
  if (!file.ok()) return file.status();
  return loader_internal::OpenSafetensorsFile(std::move(*file));
}

}  // namespace rwkv
