// A minimal reader for the zip archives torch.save writes.
//
// Why our own: torch.save stores every entry uncompressed (STORED), so only
// the central directory has to be parsed; a general zip library would add a
// dependency and decompression code we must not use anyway. Zip64 records
// are supported because checkpoints over 4 GB need them.
#ifndef RWKV_ENGINE_LOADER_ZIP_READER_H_
#define RWKV_ENGINE_LOADER_ZIP_READER_H_

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"

namespace rwkv::loader_internal {

struct ZipEntry {
  std::string name;
  uint16_t method = 0;  // 0 = STORED
  uint64_t compressed_size = 0;
  uint64_t uncompressed_size = 0;
  uint64_t local_header_offset = 0;
};

class ZipIndex {
 public:
  // Parses the end-of-central-directory record (and its zip64 form) and the
  // central directory of `bytes`. Errors are INVALID_ARGUMENT prefixed with
  // `path`. Multi-disk archives and duplicate entry names are refused.
  static absl::StatusOr<ZipIndex> Parse(std::span<const uint8_t> bytes, const std::string& path);

  const std::vector<ZipEntry>& entries() const { return entries_; }
  const ZipEntry* Find(std::string_view name) const;

  // Locates the entry's data through its local header: returns the absolute
  // byte offset of the data, after checking that the entry is STORED (else
  // UNIMPLEMENTED naming the method) and lies inside the file.
  absl::StatusOr<uint64_t> DataOffset(const ZipEntry& entry) const;

 private:
  std::span<const uint8_t> bytes_;
  std::string path_;
  std::vector<ZipEntry> entries_;
  absl::flat_hash_map<std::string, size_t> index_;
};

}  // namespace rwkv::loader_internal

#endif  // RWKV_ENGINE_LOADER_ZIP_READER_H_
