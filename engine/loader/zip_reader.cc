// Zip central-directory parsing (PKWARE APPNOTE 6.3, the subset torch uses).
//
// Why so many checks: the central directory is the first thing read from an
// untrusted archive; every count, size and offset in it is checked against
// the file size before it is used, with overflow-safe arithmetic.
#include "engine/loader/zip_reader.h"

#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/loader/binary_util.h"
#include "engine/loader/mapped_source.h"

namespace rwkv::loader_internal {
namespace {

constexpr uint32_t kLocalHeaderSig = 0x04034b50;
constexpr uint32_t kCentralSig = 0x02014b50;
constexpr uint32_t kEocdSig = 0x06054b50;
constexpr uint32_t kZip64LocatorSig = 0x07064b50;
constexpr uint32_t kZip64EocdSig = 0x06064b50;
constexpr size_t kEocdSize = 22;
constexpr size_t kZip64LocatorSize = 20;
constexpr size_t kZip64EocdSize = 56;
constexpr size_t kCentralHeaderSize = 46;
constexpr size_t kLocalHeaderSize = 30;
constexpr uint64_t kMaxEntries = 1 << 21;

std::string MethodName(uint16_t method) {
  switch (method) {
    case 8:
      return "deflate";
    case 9:
      return "deflate64";
    case 12:
      return "bzip2";
    case 14:
      return "lzma";
    case 93:
      return "zstd";
    case 95:
      return "xz";
    default:
      return absl::StrCat("method ", method);
  }
}

// Applies the zip64 extended-information extra field (id 0x0001) to the
// fields that were saturated in the central header.
absl::Status ApplyZip64Extra(const uint8_t* extra, size_t extra_len, bool need_uncompressed,
                             bool need_compressed, bool need_offset, ZipEntry* e,
                             const std::string& path) {
  ByteCursor cur(extra, extra_len);
  while (cur.remaining() >= 4) {
    uint16_t id = 0, len = 0;
    cur.ReadU16(&id);
    cur.ReadU16(&len);
    const uint8_t* body;
    if (!cur.ReadBytes(len, &body)) {
      return Malformed(path, absl::StrCat("zip entry '", e->name, "' has a truncated extra field"));
    }
    if (id != 0x0001) continue;
    ByteCursor z(body, len);
    if (need_uncompressed && !z.ReadU64(&e->uncompressed_size)) break;
    if (need_compressed && !z.ReadU64(&e->compressed_size)) break;
    if (need_offset && !z.ReadU64(&e->local_header_offset)) break;
    return absl::OkStatus();
  }
  if (!need_uncompressed && !need_compressed && !need_offset) return absl::OkStatus();
  return Malformed(path,
                   absl::StrCat("zip entry '", e->name, "' lacks its zip64 size/offset fields"));
}

}  // namespace

absl::StatusOr<ZipIndex> ZipIndex::Parse(std::span<const uint8_t> bytes, const std::string& path) {
  const uint8_t* data = bytes.data();
  const uint64_t size = bytes.size();
  if (size < kEocdSize) return Malformed(path, "too small to be a zip archive (truncated?)");

  // The end-of-central-directory record is the last 22 bytes plus a comment
  // of up to 64 KiB; take the last signature whose comment fits exactly.
  uint64_t eocd = UINT64_MAX;
  const uint64_t lowest = size - kEocdSize > 0xffff ? size - kEocdSize - 0xffff : 0;
  for (uint64_t pos = size - kEocdSize + 1; pos-- > lowest;) {
    if (LoadLE32(data + pos) == kEocdSig && pos + kEocdSize + LoadLE16(data + pos + 20) == size) {
      eocd = pos;
      break;
    }
  }
  if (eocd == UINT64_MAX) {
    return Malformed(path, "no zip end-of-central-directory record (truncated or not a zip file)");
  }
  const uint8_t* e = data + eocd;
  const uint16_t disk = LoadLE16(e + 4);
  const uint16_t cd_disk = LoadLE16(e + 6);
  uint64_t disk_entries = LoadLE16(e + 8);
  uint64_t entries = LoadLE16(e + 10);
  uint64_t cd_size = LoadLE32(e + 12);
  uint64_t cd_offset = LoadLE32(e + 16);

  // Zip64: a locator just before the EOCD points at the zip64 EOCD record.
  if (eocd >= kZip64LocatorSize && LoadLE32(data + eocd - kZip64LocatorSize) == kZip64LocatorSig) {
    const uint8_t* loc = data + eocd - kZip64LocatorSize;
    const uint64_t rec = LoadLE64(loc + 8);
    const uint32_t total_disks = LoadLE32(loc + 16);
    if (total_disks > 1) return Malformed(path, "multi-disk zip archives are not supported");
    if (!RangeInside(rec, kZip64EocdSize, eocd - kZip64LocatorSize)) {
      return Malformed(path, "zip64 end-of-central-directory offset is out of bounds");
    }
    const uint8_t* z = data + rec;
    if (LoadLE32(z) != kZip64EocdSig) {
      return Malformed(path, "bad zip64 end-of-central-directory signature");
    }
    if (LoadLE32(z + 16) != 0 || LoadLE32(z + 20) != 0) {
      return Malformed(path, "multi-disk zip archives are not supported");
    }
    disk_entries = LoadLE64(z + 24);
    entries = LoadLE64(z + 32);
    cd_size = LoadLE64(z + 40);
    cd_offset = LoadLE64(z + 48);
  } else if (disk != 0 || cd_disk != 0) {
    return Malformed(path, "multi-disk zip archives are not supported");
  }
  if (disk_entries != entries) return Malformed(path, "multi-disk zip archives are not supported");
  if (!RangeInside(cd_offset, cd_size, size)) {
    return Malformed(path, absl::StrCat("zip central directory (", cd_size, " bytes at offset ",
                                        cd_offset, ") lies outside the file (", size, " bytes)"));
  }
  if (entries > kMaxEntries || entries > cd_size / kCentralHeaderSize) {
    return Malformed(path, absl::StrCat("zip central directory claims ", entries,
                                        " entries, more than fit in ", cd_size, " bytes"));
  }

  ZipIndex index;
  index.bytes_ = bytes;
  index.path_ = path;
  index.entries_.reserve(static_cast<size_t>(entries));
  ByteCursor cur(data + cd_offset, static_cast<size_t>(cd_size));
  for (uint64_t i = 0; i < entries; ++i) {
    const uint8_t* h;
    if (!cur.ReadBytes(kCentralHeaderSize, &h) || LoadLE32(h) != kCentralSig) {
      return Malformed(path, absl::StrCat("zip central directory entry ", i, " is corrupt"));
    }
    ZipEntry entry;
    entry.method = LoadLE16(h + 10);
    entry.compressed_size = LoadLE32(h + 20);
    entry.uncompressed_size = LoadLE32(h + 24);
    const uint16_t name_len = LoadLE16(h + 28);
    const uint16_t extra_len = LoadLE16(h + 30);
    const uint16_t comment_len = LoadLE16(h + 32);
    const uint16_t start_disk = LoadLE16(h + 34);
    entry.local_header_offset = LoadLE32(h + 42);
    std::string_view name;
    const uint8_t* extra;
    if (!cur.ReadString(name_len, &name) || !cur.ReadBytes(extra_len, &extra) ||
        !cur.Skip(comment_len)) {
      return Malformed(path, absl::StrCat("zip central directory entry ", i, " is truncated"));
    }
    entry.name = std::string(name);
    if (absl::Status s = ApplyZip64Extra(extra, extra_len, entry.uncompressed_size == 0xffffffffu,
                                         entry.compressed_size == 0xffffffffu,
                                         entry.local_header_offset == 0xffffffffu, &entry, path);
        !s.ok()) {
      return s;
    }
    if (start_disk != 0 && start_disk != 0xffff) {
      return Malformed(path, "multi-disk zip archives are not supported");
    }
    if (!index.index_.emplace(entry.name, index.entries_.size()).second) {
      return Malformed(path, absl::StrCat("duplicate zip entry '", entry.name, "'"));
    }
    index.entries_.push_back(std::move(entry));
  }
  return index;
}

const ZipEntry* ZipIndex::Find(std::string_view name) const {
  auto it = index_.find(Av(name));
  return it == index_.end() ? nullptr : &entries_[it->second];
}

absl::StatusOr<uint64_t> ZipIndex::DataOffset(const ZipEntry& entry) const {
  if (entry.method != 0) {
    return absl::UnimplementedError(absl::StrCat(
        path_, ": zip entry '", entry.name, "' is compressed (", MethodName(entry.method),
        "); only uncompressed (STORED) archives, as torch.save writes, are supported"));
  }
  if (entry.compressed_size != entry.uncompressed_size) {
    return Malformed(path_, absl::StrCat("stored zip entry '", entry.name,
                                         "' has different compressed and uncompressed sizes"));
  }
  const uint64_t size = bytes_.size();
  if (!RangeInside(entry.local_header_offset, kLocalHeaderSize, size)) {
    return Malformed(path_,
                     absl::StrCat("zip entry '", entry.name, "' local header is out of bounds"));
  }
  const uint8_t* h = bytes_.data() + entry.local_header_offset;
  if (LoadLE32(h) != kLocalHeaderSig) {
    return Malformed(path_, absl::StrCat("zip entry '", entry.name, "' has a bad local header"));
  }
  const uint16_t name_len = LoadLE16(h + 26);
  const uint16_t extra_len = LoadLE16(h + 28);
  // As Python's zipfile does: the local header must name the same file.
  if (name_len != entry.name.size() ||
      !RangeInside(entry.local_header_offset + kLocalHeaderSize, name_len, size) ||
      std::memcmp(h + kLocalHeaderSize, entry.name.data(), name_len) != 0) {
    return Malformed(path_, absl::StrCat("zip entry '", entry.name,
                                         "' has a local header naming a different file"));
  }
  const uint64_t data = entry.local_header_offset + kLocalHeaderSize + name_len + extra_len;
  if (!RangeInside(data, entry.uncompressed_size, size)) {
    return Malformed(path_, absl::StrCat("zip entry '", entry.name, "' (", entry.uncompressed_size,
                                         " bytes) extends past the end of the file"));
  }
  return data;
}

}  // namespace rwkv::loader_internal
