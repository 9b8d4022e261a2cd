// Little-endian loads and overflow-checked arithmetic for the file readers.
//
// Why: every reader parses untrusted bytes (a truncated download, a corrupt
// disk, a hostile file). All offsets and sizes read from a file go through
// these helpers so that a bounds check is never skipped and never overflows.
// Loads use memcpy, so unaligned data (rwkv.cpp files) is fine.
#ifndef RWKV_ENGINE_LOADER_BINARY_UTIL_H_
#define RWKV_ENGINE_LOADER_BINARY_UTIL_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "absl/strings/string_view.h"

namespace rwkv::loader_internal {

// This abseil build has its own string_view type; std::string_view needs an
// explicit hop to reach StrCat and absl's heterogeneous hash lookups.
inline absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

inline uint16_t LoadLE16(const uint8_t* p) {
  return static_cast<uint16_t>(p[0] | (static_cast<uint16_t>(p[1]) << 8));
}
inline uint32_t LoadLE32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}
inline uint64_t LoadLE64(const uint8_t* p) {
  return static_cast<uint64_t>(LoadLE32(p)) | (static_cast<uint64_t>(LoadLE32(p + 4)) << 32);
}

// a + b and a * b, false on overflow.
inline bool CheckedAdd(uint64_t a, uint64_t b, uint64_t* out) {
  return !__builtin_add_overflow(a, b, out);
}
inline bool CheckedMul(uint64_t a, uint64_t b, uint64_t* out) {
  return !__builtin_mul_overflow(a, b, out);
}

// True when [offset, offset + length) lies inside [0, total).
inline bool RangeInside(uint64_t offset, uint64_t length, uint64_t total) {
  return offset <= total && length <= total - offset;
}

// Sequential reader over a byte range; every read is bounds-checked and a
// failed read leaves the position unchanged.
class ByteCursor {
 public:
  ByteCursor(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  size_t pos() const { return pos_; }
  size_t remaining() const { return size_ - pos_; }
  bool at_end() const { return pos_ == size_; }
  const uint8_t* here() const { return data_ + pos_; }

  bool ReadU8(uint8_t* v) {
    if (remaining() < 1) return false;
    *v = data_[pos_++];
    return true;
  }
  bool ReadU16(uint16_t* v) {
    if (remaining() < 2) return false;
    *v = LoadLE16(data_ + pos_);
    pos_ += 2;
    return true;
  }
  bool ReadU32(uint32_t* v) {
    if (remaining() < 4) return false;
    *v = LoadLE32(data_ + pos_);
    pos_ += 4;
    return true;
  }
  bool ReadU64(uint64_t* v) {
    if (remaining() < 8) return false;
    *v = LoadLE64(data_ + pos_);
    pos_ += 8;
    return true;
  }
  // Points *v at the next n bytes and skips them.
  bool ReadBytes(uint64_t n, const uint8_t** v) {
    if (n > remaining()) return false;
    *v = data_ + pos_;
    pos_ += static_cast<size_t>(n);
    return true;
  }
  bool ReadString(uint64_t n, std::string_view* v) {
    const uint8_t* p;
    if (!ReadBytes(n, &p)) return false;
    *v = std::string_view(reinterpret_cast<const char*>(p), static_cast<size_t>(n));
    return true;
  }
  bool Skip(uint64_t n) {
    const uint8_t* p;
    return ReadBytes(n, &p);
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// Limits shared by all readers. Real checkpoints are far below each of them.
inline constexpr size_t kMaxTensors = 1 << 20;
inline constexpr size_t kMaxNameLength = 1024;
inline constexpr size_t kMaxDims = 8;

}  // namespace rwkv::loader_internal

#endif  // RWKV_ENGINE_LOADER_BINARY_UTIL_H_
