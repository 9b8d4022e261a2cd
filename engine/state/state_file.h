// The on-disk / on-the-wire format of a saved session ("state file").
//
// Why: a session's whole context is its recurrent state plus the logits of
// the last token, so saving those (and how many tokens produced them) lets a
// session resume later, on another machine, or on the other backend (CPU <->
// GPU), without re-feeding its text. The bytes come back from disks and from
// clients, so decoding trusts nothing: every size is checked against limits
// and the real input before any allocation, and a CRC-32C covers it all.
//
// Independence: this library links only rwkv_common. It describes a model by
// StateDims (defined here) instead of ModelConfig; engine/state/model_dims.h
// is the header-only bridge from ModelConfig / StateLayout.
//
// Format version 1. All integers little-endian; no padding.
//
//   offset  size  field
//   ------  ----  -----------------------------------------------------------
//        0     8  magic "RWKVSTAT"
//        8     4  format version (u32) = 1
//       12     4  header length (u32) = 96
//       16     4  arch (u32): 4 = RWKV-4, 7 = RWKV-7 (the values of rwkv::Arch)
//       20     4  state layout version (u32), kStateLayoutVersion of the writer
//       24     4  n_layer (u32)
//       28     4  n_embd (u32)
//       32     4  n_head (u32)      (RWKV-7; 0 for RWKV-4)
//       36     4  head_size (u32)   (RWKV-7; 0 for RWKV-4)
//       40     4  vocab_size (u32)
//       44     4  state dtype (u32): 0 = f32 (the only one written or read
//                 now); 1 = f16, 2 = bf16 reserved (FAILED_PRECONDITION)
//       48     8  state_floats (u64): elements in the state (StateLayout::total)
//       56     8  tokens_seen (u64)
//       64     4  F = fingerprint length (u32), <= 64
//       68     4  M = metadata length (u32), <= 65536
//       72     8  S = state section bytes (u64) = state_floats * dtype size
//       80     8  G = logits section bytes (u64): 0 or vocab_size * 4
//       88     4  reserved (u32), must be 0
//       92     4  header CRC-32C of bytes [0, 92)
//       96     F  model fingerprint (opaque bytes)
//     96+F     M  metadata (opaque bytes, e.g. JSON)
//   96+F+M     S  state, layout of engine/model/state_layout.h, fp32 LE
//        .     G  last logits, fp32 LE
//    end-4     4  CRC-32C of every preceding byte
//
// Total size = 100 + F + M + S + G, at most kMaxSnapshotBytes (4 GiB).
// When layout version is 1, arch must be 4 or 7 (RWKV-7 also needs
// n_head * head_size == n_embd) and state_floats must equal StateFloatsFor(dims);
// for other layout versions only the sizes are checked and CheckCompatible
// decides. Checksums are CRC-32C (Castagnoli, as in iSCSI; see crc32c.h).
// Any change to this table bumps the format version.
#ifndef RWKV_ENGINE_STATE_STATE_FILE_H_
#define RWKV_ENGINE_STATE_STATE_FILE_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace rwkv {

inline constexpr absl::string_view kSnapshotMagic = "RWKVSTAT";
inline constexpr uint32_t kSnapshotFormatVersion = 1;
inline constexpr size_t kSnapshotHeaderSize = 96;
inline constexpr size_t kSnapshotTrailerSize = 4;
inline constexpr size_t kMaxFingerprintBytes = 64;
inline constexpr size_t kMaxMetadataBytes = 64 * 1024;
inline constexpr uint64_t kMaxSnapshotBytes = uint64_t{4} << 30;

// Element type of the state section; same codes as rwkv::DType.
enum class StateDType : uint32_t { kF32 = 0, kF16 = 1, kBF16 = 2 };

// What a state file must agree on with the model that loads it.
struct StateDims {
  uint32_t arch = 7;  // 4 or 7 (rwkv::Arch)
  uint32_t n_layer = 0;
  uint32_t n_embd = 0;
  uint32_t n_head = 0;     // RWKV-7 only
  uint32_t head_size = 0;  // RWKV-7 only
  uint32_t vocab_size = 0;
  uint32_t layout_version = 1;  // kStateLayoutVersion
  uint64_t state_floats = 0;    // StateLayout::total

  bool operator==(const StateDims&) const = default;
  std::string ToString() const;
};

// The state size layout version 1 implies for `dims` (ignores
// dims.state_floats): v7 n_layer * (2 n_embd + n_head head_size^2), v4
// n_layer * 5 n_embd. 0 for another layout version or arch, or on overflow.
uint64_t StateFloatsFor(const StateDims& dims);

struct SessionSnapshot {
  StateDims dims;
  std::string model_fingerprint;  // opaque, <= kMaxFingerprintBytes
  uint64_t tokens_seen = 0;
  std::vector<float> state;        // dims.state_floats values
  std::vector<float> last_logits;  // empty, or dims.vocab_size values
  std::string metadata;            // opaque, <= kMaxMetadataBytes
};

// OK when EncodeSnapshot(s) would decode again: dims sane and consistent,
// section sizes match them, limits respected. INVALID_ARGUMENT otherwise.
absl::Status ValidateSnapshot(const SessionSnapshot& s);

// The encoding of `s` (see the table above). Precondition: ValidateSnapshot(s)
// is OK; otherwise the bytes are produced anyway and DecodeSnapshot rejects them.
std::string EncodeSnapshot(const SessionSnapshot& s);

// Strict inverse of EncodeSnapshot. Errors (never a crash, whatever `bytes`):
//   INVALID_ARGUMENT  "not an RWKV state file" (magic), "truncated",
//                     "checksum mismatch (corrupt)", sizes inconsistent with
//                     dims, limits exceeded, trailing bytes;
//   FAILED_PRECONDITION  a newer format version, or a reserved dtype.
// Memory is allocated only after the header checks out and the input is
// known to hold every declared byte.
absl::StatusOr<SessionSnapshot> DecodeSnapshot(absl::string_view bytes);

// FAILED_PRECONDITION when `s` cannot be loaded into a model with `expected`
// dims and fingerprint, naming what differs (architecture, a dimension, the
// layout version, or "state was made by a different model" for the
// fingerprint). INVALID_ARGUMENT when `s` is internally inconsistent.
absl::Status CheckCompatible(const SessionSnapshot& s, const StateDims& expected,
                             absl::string_view expected_fingerprint);

// Views of consecutive pieces of `bytes`, each chunk_size bytes (the last may
// be shorter). chunk_size 0 is treated as 1. Empty input gives no chunks.
std::vector<absl::string_view> SplitIntoChunks(absl::string_view bytes, size_t chunk_size);

struct SnapshotAssemblerOptions {
  // Imports declaring more bytes are rejected when the header arrives.
  uint64_t max_bytes = kMaxSnapshotBytes;
  // When set, a foreign header (dims) is rejected as soon as it is complete.
  std::optional<StateDims> expected_dims;
  // When set, a foreign fingerprint is rejected as soon as it is complete.
  std::optional<std::string> expected_fingerprint;
};

// Decodes a snapshot arriving in chunks (e.g. a gRPC client stream). The
// header is validated as soon as its 96 bytes are in, so foreign or oversized
// imports fail on the chunk that completes it; memory never exceeds the
// declared size, and buffer capacity grows with the data actually received.
// After an error every call returns that error. Not thread-safe.
class SnapshotAssembler {
 public:
  SnapshotAssembler() : SnapshotAssembler(SnapshotAssemblerOptions()) {}
  explicit SnapshotAssembler(SnapshotAssemblerOptions options);

  SnapshotAssembler(const SnapshotAssembler&) = delete;
  SnapshotAssembler& operator=(const SnapshotAssembler&) = delete;

  // Errors as DecodeSnapshot / CheckCompatible, plus INVALID_ARGUMENT for
  // bytes beyond the declared size or over options.max_bytes.
  absl::Status Append(absl::string_view chunk);

  // The decoded snapshot (checksum verified; compatibility checked when
  // expected values were given). INVALID_ARGUMENT "truncated" when fewer
  // bytes than declared arrived. Callable once.
  absl::StatusOr<SessionSnapshot> Finish();

  uint64_t bytes_received() const { return received_; }
  // The total size the header declares, once the header is in.
  std::optional<uint64_t> declared_size() const;

 private:
  absl::Status Fail(absl::Status s);

  SnapshotAssemblerOptions options_;
  std::string buffer_;
  uint64_t received_ = 0;
  uint64_t declared_ = 0;  // 0 until the header is parsed
  uint32_t fingerprint_len_ = 0;
  bool fingerprint_checked_ = false;
  bool finished_ = false;
  absl::Status status_;
};

}  // namespace rwkv

#endif  // RWKV_ENGINE_STATE_STATE_FILE_H_
