// A read-only memory mapping of a whole file.
//
// Why: model files are many GB; mapping them lets the readers parse headers
// in place and hand out tensor data without copying (the page cache backs
// it, and pages not read are never loaded). The same class can also wrap
// bytes already in memory, so the readers (and their tests) have one input
// type.
//
// Caveat: like every mmap reader, a file truncated by another process while
// mapped makes later accesses fault (SIGBUS). Model files are not expected
// to change while loaded.
#ifndef RWKV_ENGINE_LOADER_MAPPED_FILE_H_
#define RWKV_ENGINE_LOADER_MAPPED_FILE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "absl/status/statusor.h"

namespace rwkv {

class MappedFile {
 public:
  // Maps `path` read-only. Errors: NOT_FOUND (no such file),
  // PERMISSION_DENIED, INVALID_ARGUMENT (a directory or not a regular file),
  // INTERNAL (other system errors, with errno text). An empty file maps to
  // size() == 0.
  static absl::StatusOr<std::unique_ptr<MappedFile>> Open(const std::string& path);

  // Wraps bytes held in memory (owned by the returned object).
  static std::unique_ptr<MappedFile> FromBytes(std::string bytes, std::string name);

  // Wraps memory owned by the caller, which must outlive the returned object.
  static std::unique_ptr<MappedFile> FromUnownedMemory(const void* data, size_t size,
                                                       std::string name);

  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  // Start of the bytes (page-aligned for real mappings); nullptr when empty.
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  std::span<const uint8_t> bytes() const { return {data_, size_}; }
  // The path given to Open (or the name given to the wrappers).
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;

  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  bool is_mmap_ = false;
  std::string owned_;
  std::string path_;
};

}  // namespace rwkv

#endif  // RWKV_ENGINE_LOADER_MAPPED_FILE_H_
