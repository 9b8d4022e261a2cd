// A small strict JSON parser for safetensors headers.
//
// Why our own: the header is untrusted and tiny; we need exact 64-bit
// integers (offsets beyond 2^53), key order, duplicate-key rejection and a
// hard nesting limit, which are all simpler to guarantee here than to
// configure in a general library.
#ifndef RWKV_ENGINE_LOADER_JSON_H_
#define RWKV_ENGINE_LOADER_JSON_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace rwkv::loader_internal {

struct JsonValue {
  enum class Type : uint8_t { kNull, kBool, kNumber, kString, kArray, kObject };
  Type type = Type::kNull;
  bool boolean = false;
  // Numbers: `is_int` when written without fraction/exponent and within
  // int64 range; then `integer` is exact. `number` is always set.
  bool is_int = false;
  int64_t integer = 0;
  double number = 0;
  std::string str;
  std::vector<JsonValue> array;
  std::vector<std::pair<std::string, JsonValue>> object;  // in file order, unique keys

  const JsonValue* Get(std::string_view key) const {
    for (const auto& [k, v] : object) {
      if (k == key) return &v;
    }
    return nullptr;
  }
};

// Parses exactly one JSON value; surrounding whitespace is allowed, anything
// else after it is an error. Strings must be valid UTF-8. Objects may not
// repeat a key. Nesting deeper than max_depth is refused. Errors are
// INVALID_ARGUMENT with the byte offset.
absl::StatusOr<JsonValue> ParseJson(std::string_view text, int max_depth = 16);

}  // namespace rwkv::loader_internal

#endif  // RWKV_ENGINE_LOADER_JSON_H_
