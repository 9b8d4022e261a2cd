// Encoding, strict decoding and streaming assembly of state files.
//
// Why one parser: DecodeSnapshot and SnapshotAssembler share ParseHeader and
// ValidateHeader, and EncodeSnapshot's precondition (ValidateSnapshot) runs
// the same ValidateHeader, so what the writer accepts is exactly what the
// reader accepts. Every size read from input is overflow-checked and compared
// with the bytes actually present before anything is allocated.
#include "engine/state/state_file.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "engine/state/crc32c.h"

namespace rwkv {
namespace {

// Header field offsets (see the table in state_file.h).
constexpr size_t kOffVersion = 8, kOffHeaderLen = 12, kOffArch = 16, kOffLayout = 20;
constexpr size_t kOffNLayer = 24, kOffNEmbd = 28, kOffNHead = 32, kOffHeadSize = 36;
constexpr size_t kOffVocab = 40, kOffDType = 44, kOffStateFloats = 48, kOffTokens = 56;
constexpr size_t kOffFpLen = 64, kOffMetaLen = 68, kOffStateBytes = 72, kOffLogitsBytes = 80;
constexpr size_t kOffReserved = 88, kOffHeaderCrc = 92;
static_assert(kOffHeaderCrc + 4 == kSnapshotHeaderSize);

struct Header {
  StateDims dims;
  uint32_t dtype = 0;
  uint64_t tokens_seen = 0;
  uint64_t fingerprint_len = 0;
  uint64_t metadata_len = 0;
  uint64_t state_bytes = 0;
  uint64_t logits_bytes = 0;
  uint32_t reserved = 0;
  uint64_t total = 0;  // filled by ValidateHeader
};

uint32_t Load32(const char* p) {
  const auto* u = reinterpret_cast<const uint8_t*>(p);
  return static_cast<uint32_t>(u[0]) | (static_cast<uint32_t>(u[1]) << 8) |
         (static_cast<uint32_t>(u[2]) << 16) | (static_cast<uint32_t>(u[3]) << 24);
}
uint64_t Load64(const char* p) {
  return static_cast<uint64_t>(Load32(p)) | (static_cast<uint64_t>(Load32(p + 4)) << 32);
}
void Store32(char* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xffu);
}
void Store64(char* p, uint64_t v) {
  Store32(p, static_cast<uint32_t>(v));
  Store32(p + 4, static_cast<uint32_t>(v >> 32));
}

bool CheckedAdd(uint64_t a, uint64_t b, uint64_t* out) { return !__builtin_add_overflow(a, b, out); }
bool CheckedMul(uint64_t a, uint64_t b, uint64_t* out) { return !__builtin_mul_overflow(a, b, out); }

std::string ArchName(uint32_t arch) {
  if (arch == 4) return "rwkv4";
  if (arch == 7) return "rwkv7";
  return absl::StrCat("unknown(", arch, ")");
}

absl::Status Truncated(uint64_t have, uint64_t want) {
  return absl::InvalidArgumentError(absl::StrCat("truncated state file: ", have, " of ", want, " bytes"));
}

// Checks whatever of magic, version and header length `prefix` holds.
absl::Status CheckPrefix(absl::string_view prefix) {
  const size_t n = std::min(prefix.size(), kSnapshotMagic.size());
  if (prefix.substr(0, n) != kSnapshotMagic.substr(0, n)) {
    return absl::InvalidArgumentError("not an RWKV state file (bad magic)");
  }
  if (prefix.size() >= kOffVersion + 4) {
    const uint32_t version = Load32(prefix.data() + kOffVersion);
    if (version == 0) return absl::InvalidArgumentError("invalid state file format version 0");
    if (version > kSnapshotFormatVersion) {
      return absl::FailedPreconditionError(absl::StrCat("state file format version ", version,
                                                        " is newer than this server supports (",
                                                        kSnapshotFormatVersion, ")"));
    }
  }
  if (prefix.size() >= kOffHeaderLen + 4) {
    const uint32_t header_len = Load32(prefix.data() + kOffHeaderLen);
    if (header_len != kSnapshotHeaderSize) {
      return absl::InvalidArgumentError(absl::StrCat("invalid state file header length ", header_len,
                                                     " (expected ", kSnapshotHeaderSize, ")"));
    }
  }
  return absl::OkStatus();
}

// Checks every field for sanity and mutual consistency; sets h->total.
absl::Status ValidateHeader(Header* h) {
  const StateDims& d = h->dims;
  if (h->reserved != 0) return absl::InvalidArgumentError("state header: reserved field is not 0");
  if (h->dtype == static_cast<uint32_t>(StateDType::kF16) ||
      h->dtype == static_cast<uint32_t>(StateDType::kBF16)) {
    return absl::FailedPreconditionError(absl::StrCat("state payload dtype ", h->dtype == 1 ? "f16" : "bf16",
                                                      " is not supported by this server (f32 only)"));
  }
  if (h->dtype != static_cast<uint32_t>(StateDType::kF32)) {
    return absl::InvalidArgumentError(absl::StrCat("state header: unknown dtype code ", h->dtype));
  }
  if (d.n_layer == 0 || d.n_embd == 0 || d.vocab_size == 0 || d.layout_version == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("state header: zero dimension or layout version (", d.ToString(), ")"));
  }
  if (d.layout_version == 1) {
    if (d.arch != 4 && d.arch != 7) {
      return absl::InvalidArgumentError(absl::StrCat("state header: unknown architecture code ", d.arch));
    }
    uint64_t c = 0;
    if (d.arch == 7 &&
        (d.n_head == 0 || d.head_size == 0 || !CheckedMul(d.n_head, d.head_size, &c) || c != d.n_embd)) {
      return absl::InvalidArgumentError(
          absl::StrCat("state header: n_head * head_size != n_embd (", d.ToString(), ")"));
    }
    const uint64_t want = StateFloatsFor(d);
    if (want == 0 || want != d.state_floats) {
      return absl::InvalidArgumentError(absl::StrCat("state header: ", d.state_floats,
                                                     " state floats, but the dims imply ", want, " (",
                                                     d.ToString(), ")"));
    }
  }
  if (d.state_floats == 0) return absl::InvalidArgumentError("state header: empty state");
  if (h->fingerprint_len > kMaxFingerprintBytes) {
    return absl::InvalidArgumentError(absl::StrCat("state header: fingerprint of ", h->fingerprint_len,
                                                   " bytes exceeds ", kMaxFingerprintBytes));
  }
  if (h->metadata_len > kMaxMetadataBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("state header: metadata of ", h->metadata_len, " bytes exceeds ", kMaxMetadataBytes));
  }
  uint64_t state_bytes = 0;
  if (!CheckedMul(d.state_floats, sizeof(float), &state_bytes) || state_bytes != h->state_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("state header: state section of ", h->state_bytes,
                                                   " bytes does not hold ", d.state_floats, " f32 values"));
  }
  const uint64_t logits_bytes = uint64_t{d.vocab_size} * sizeof(float);
  if (h->logits_bytes != 0 && h->logits_bytes != logits_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("state header: logits section of ", h->logits_bytes,
                                                   " bytes, expected 0 or ", logits_bytes, " (vocab_size ",
                                                   d.vocab_size, ")"));
  }
  uint64_t total = kSnapshotHeaderSize + kSnapshotTrailerSize + h->fingerprint_len + h->metadata_len;
  if (!CheckedAdd(total, h->state_bytes, &total) || !CheckedAdd(total, h->logits_bytes, &total) ||
      total > kMaxSnapshotBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("state header: declared size exceeds the limit of ", kMaxSnapshotBytes, " bytes"));
  }
  h->total = total;
  return absl::OkStatus();
}

// Parses and validates the first kSnapshotHeaderSize bytes of `bytes`.
absl::StatusOr<Header> ParseHeader(absl::string_view bytes) {
  if (absl::Status s = CheckPrefix(bytes); !s.ok()) return s;
  if (bytes.size() < kSnapshotHeaderSize) return Truncated(bytes.size(), kSnapshotHeaderSize);
  const char* p = bytes.data();
  if (Crc32c(bytes.substr(0, kOffHeaderCrc)) != Load32(p + kOffHeaderCrc)) {
    return absl::InvalidArgumentError("checksum mismatch (corrupt) in the state file header");
  }
  Header h;
  h.dims.arch = Load32(p + kOffArch);
  h.dims.layout_version = Load32(p + kOffLayout);
  h.dims.n_layer = Load32(p + kOffNLayer);
  h.dims.n_embd = Load32(p + kOffNEmbd);
  h.dims.n_head = Load32(p + kOffNHead);
  h.dims.head_size = Load32(p + kOffHeadSize);
  h.dims.vocab_size = Load32(p + kOffVocab);
  h.dtype = Load32(p + kOffDType);
  h.dims.state_floats = Load64(p + kOffStateFloats);
  h.tokens_seen = Load64(p + kOffTokens);
  h.fingerprint_len = Load32(p + kOffFpLen);
  h.metadata_len = Load32(p + kOffMetaLen);
  h.state_bytes = Load64(p + kOffStateBytes);
  h.logits_bytes = Load64(p + kOffLogitsBytes);
  h.reserved = Load32(p + kOffReserved);
  if (absl::Status s = ValidateHeader(&h); !s.ok()) return s;
  return h;
}

Header HeaderFor(const SessionSnapshot& s) {
  Header h;
  h.dims = s.dims;
  h.dtype = static_cast<uint32_t>(StateDType::kF32);
  h.tokens_seen = s.tokens_seen;
  h.fingerprint_len = s.model_fingerprint.size();
  h.metadata_len = s.metadata.size();
  h.state_bytes = uint64_t{s.state.size()} * sizeof(float);
  h.logits_bytes = uint64_t{s.last_logits.size()} * sizeof(float);
  return h;
}

void AppendFloats(const std::vector<float>& v, std::string* out) {
  if constexpr (std::endian::native == std::endian::little) {
    out->append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
  } else {
    char buf[4];
    for (float f : v) {
      Store32(buf, std::bit_cast<uint32_t>(f));
      out->append(buf, 4);
    }
  }
}

std::vector<float> ReadFloats(const char* p, uint64_t bytes) {
  std::vector<float> v(bytes / sizeof(float));
  if constexpr (std::endian::native == std::endian::little) {
    if (!v.empty()) std::memcpy(v.data(), p, v.size() * sizeof(float));
  } else {
    for (size_t i = 0; i < v.size(); ++i) v[i] = std::bit_cast<float>(Load32(p + 4 * i));
  }
  return v;
}

absl::Status Different(absl::string_view what, uint64_t got, uint64_t want) {
  return absl::FailedPreconditionError(absl::StrCat("state was made by a different model: ", what, " is ",
                                                    got, " in the state but ", want, " in this model"));
}

// Dims comparison shared by CheckCompatible and the assembler.
absl::Status CompareDims(const StateDims& got, const StateDims& want) {
  if (got.arch != want.arch) {
    return absl::FailedPreconditionError(absl::StrCat("state was made by a different model: architecture is ",
                                                      ArchName(got.arch), " in the state but ",
                                                      ArchName(want.arch), " in this model"));
  }
  if (got.layout_version != want.layout_version) {
    return absl::FailedPreconditionError(absl::StrCat("state layout version is ", got.layout_version,
                                                      " in the state but ", want.layout_version,
                                                      " in this server"));
  }
  if (got.n_layer != want.n_layer) return Different("n_layer", got.n_layer, want.n_layer);
  if (got.n_embd != want.n_embd) return Different("n_embd", got.n_embd, want.n_embd);
  if (got.n_head != want.n_head) return Different("n_head", got.n_head, want.n_head);
  if (got.head_size != want.head_size) return Different("head_size", got.head_size, want.head_size);
  if (got.vocab_size != want.vocab_size) return Different("vocab_size", got.vocab_size, want.vocab_size);
  if (got.state_floats != want.state_floats) {
    return Different("state_floats", got.state_floats, want.state_floats);
  }
  return absl::OkStatus();
}

absl::Status CompareFingerprint(absl::string_view got, absl::string_view want) {
  if (got == want) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat("state was made by a different model (fingerprint \"",
                                                    absl::CHexEscape(got), "\" in the state, \"",
                                                    absl::CHexEscape(want), "\" in this model)"));
}

}  // namespace

std::string StateDims::ToString() const {
  return absl::StrCat(ArchName(arch), " n_layer=", n_layer, " n_embd=", n_embd, " n_head=", n_head,
                      " head_size=", head_size, " vocab_size=", vocab_size,
                      " layout_version=", layout_version, " state_floats=", state_floats);
}

uint64_t StateFloatsFor(const StateDims& d) {
  if (d.layout_version != 1) return 0;
  uint64_t per_layer = 0;
  if (d.arch == 7) {
    uint64_t hnn = 0;
    if (!CheckedMul(d.n_head, d.head_size, &hnn) || !CheckedMul(hnn, d.head_size, &hnn) ||
        !CheckedAdd(hnn, uint64_t{2} * d.n_embd, &per_layer)) {
      return 0;
    }
  } else if (d.arch == 4) {
    per_layer = uint64_t{5} * d.n_embd;
  } else {
    return 0;
  }
  uint64_t total = 0;
  return CheckedMul(per_layer, d.n_layer, &total) ? total : 0;
}

absl::Status ValidateSnapshot(const SessionSnapshot& s) {
  Header h = HeaderFor(s);
  if (s.state.size() != s.dims.state_floats) {
    return absl::InvalidArgumentError(absl::StrCat("snapshot holds ", s.state.size(),
                                                   " state floats but its dims say ", s.dims.state_floats));
  }
  return ValidateHeader(&h);
}

std::string EncodeSnapshot(const SessionSnapshot& s) {
  const Header h = HeaderFor(s);
  std::string out;
  out.reserve(kSnapshotHeaderSize + kSnapshotTrailerSize + h.fingerprint_len + h.metadata_len +
              h.state_bytes + h.logits_bytes);
  out.resize(kSnapshotHeaderSize);
  char* p = out.data();
  std::memcpy(p, kSnapshotMagic.data(), kSnapshotMagic.size());
  Store32(p + kOffVersion, kSnapshotFormatVersion);
  Store32(p + kOffHeaderLen, kSnapshotHeaderSize);
  Store32(p + kOffArch, s.dims.arch);
  Store32(p + kOffLayout, s.dims.layout_version);
  Store32(p + kOffNLayer, s.dims.n_layer);
  Store32(p + kOffNEmbd, s.dims.n_embd);
  Store32(p + kOffNHead, s.dims.n_head);
  Store32(p + kOffHeadSize, s.dims.head_size);
  Store32(p + kOffVocab, s.dims.vocab_size);
  Store32(p + kOffDType, h.dtype);
  Store64(p + kOffStateFloats, s.dims.state_floats);
  Store64(p + kOffTokens, s.tokens_seen);
  Store32(p + kOffFpLen, static_cast<uint32_t>(h.fingerprint_len));
  Store32(p + kOffMetaLen, static_cast<uint32_t>(h.metadata_len));
  Store64(p + kOffStateBytes, h.state_bytes);
  Store64(p + kOffLogitsBytes, h.logits_bytes);
  Store32(p + kOffReserved, 0);
  Store32(p + kOffHeaderCrc, Crc32c(absl::string_view(out).substr(0, kOffHeaderCrc)));
  out.append(s.model_fingerprint);
  out.append(s.metadata);
  AppendFloats(s.state, &out);
  AppendFloats(s.last_logits, &out);
  char crc[4];
  Store32(crc, Crc32c(out));
  out.append(crc, 4);
  return out;
}

absl::StatusOr<SessionSnapshot> DecodeSnapshot(absl::string_view bytes) {
  absl::StatusOr<Header> h = ParseHeader(bytes);
  if (!h.ok()) return h.status();
  if (bytes.size() < h->total) return Truncated(bytes.size(), h->total);
  if (bytes.size() > h->total) {
    return absl::InvalidArgumentError(absl::StrCat("state file has ", bytes.size() - h->total,
                                                   " trailing bytes after its declared ", h->total));
  }
  const size_t body = static_cast<size_t>(h->total) - kSnapshotTrailerSize;
  if (Crc32c(bytes.substr(0, body)) != Load32(bytes.data() + body)) {
    return absl::InvalidArgumentError("checksum mismatch (corrupt) in the state file payload");
  }
  SessionSnapshot s;
  s.dims = h->dims;
  s.tokens_seen = h->tokens_seen;
  size_t pos = kSnapshotHeaderSize;
  s.model_fingerprint.assign(bytes.data() + pos, h->fingerprint_len);
  pos += h->fingerprint_len;
  s.metadata.assign(bytes.data() + pos, h->metadata_len);
  pos += h->metadata_len;
  s.state = ReadFloats(bytes.data() + pos, h->state_bytes);
  pos += h->state_bytes;
  s.last_logits = ReadFloats(bytes.data() + pos, h->logits_bytes);
  return s;
}

absl::Status CheckCompatible(const SessionSnapshot& s, const StateDims& expected,
                             absl::string_view expected_fingerprint) {
  if (s.state.size() != s.dims.state_floats ||
      (!s.last_logits.empty() && s.last_logits.size() != s.dims.vocab_size)) {
    return absl::InvalidArgumentError(absl::StrCat("snapshot is inconsistent: ", s.state.size(),
                                                   " state floats and ", s.last_logits.size(), " logits for ",
                                                   s.dims.ToString()));
  }
  if (absl::Status st = CompareDims(s.dims, expected); !st.ok()) return st;
  return CompareFingerprint(s.model_fingerprint, expected_fingerprint);
}

std::vector<absl::string_view> SplitIntoChunks(absl::string_view bytes, size_t chunk_size) {
  chunk_size = std::max<size_t>(chunk_size, 1);
  std::vector<absl::string_view> chunks;
  chunks.reserve(bytes.size() / chunk_size + 1);
  for (size_t pos = 0; pos < bytes.size(); pos += chunk_size) {
    chunks.push_back(bytes.substr(pos, chunk_size));
  }
  return chunks;
}

SnapshotAssembler::SnapshotAssembler(SnapshotAssemblerOptions options) : options_(std::move(options)) {}

std::optional<uint64_t> SnapshotAssembler::declared_size() const {
  if (declared_ == 0) return std::nullopt;
  return declared_;
}

absl::Status SnapshotAssembler::Fail(absl::Status s) {
  status_ = s;
  std::string().swap(buffer_);  // release the memory now
  return s;
}

absl::Status SnapshotAssembler::Append(absl::string_view chunk) {
  if (finished_) return absl::FailedPreconditionError("SnapshotAssembler: Append after Finish");
  if (!status_.ok()) return status_;
  received_ += chunk.size();
  if (declared_ == 0) {
    const size_t take = std::min(chunk.size(), kSnapshotHeaderSize - buffer_.size());
    buffer_.append(chunk.data(), take);
    chunk.remove_prefix(take);
    if (absl::Status s = CheckPrefix(buffer_); !s.ok()) return Fail(s);
    if (buffer_.size() < kSnapshotHeaderSize) return absl::OkStatus();
    absl::StatusOr<Header> h = ParseHeader(buffer_);
    if (!h.ok()) return Fail(h.status());
    // A state of another model is FAILED_PRECONDITION even when it is also
    // larger than this model's states, so compare dims before the size cap.
    if (options_.expected_dims.has_value()) {
      if (absl::Status s = CompareDims(h->dims, *options_.expected_dims); !s.ok()) return Fail(s);
    }
    if (h->total > options_.max_bytes) {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("state import of ", h->total, " bytes exceeds the limit of ", options_.max_bytes)));
    }
    declared_ = h->total;
    fingerprint_len_ = static_cast<uint32_t>(h->fingerprint_len);
  }
  if (chunk.size() > declared_ - buffer_.size()) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("state import has more bytes than the ", declared_, " its header declares")));
  }
  const size_t needed = buffer_.size() + chunk.size();
  if (needed > buffer_.capacity()) {
    // Grow geometrically, but never past the declared size, and only as data arrives.
    buffer_.reserve(static_cast<size_t>(
        std::min<uint64_t>(declared_, std::max<uint64_t>(needed, 2 * uint64_t{buffer_.capacity()}))));
  }
  buffer_.append(chunk.data(), chunk.size());
  if (!fingerprint_checked_ && options_.expected_fingerprint.has_value() &&
      buffer_.size() >= kSnapshotHeaderSize + fingerprint_len_) {
    fingerprint_checked_ = true;
    absl::string_view fp = absl::string_view(buffer_).substr(kSnapshotHeaderSize, fingerprint_len_);
    if (absl::Status s = CompareFingerprint(fp, *options_.expected_fingerprint); !s.ok()) return Fail(s);
  }
  return absl::OkStatus();
}

absl::StatusOr<SessionSnapshot> SnapshotAssembler::Finish() {
  if (finished_) return absl::FailedPreconditionError("SnapshotAssembler: Finish called twice");
  finished_ = true;
  if (!status_.ok()) return status_;
  if (declared_ == 0) {
    if (buffer_.empty()) return absl::InvalidArgumentError("truncated state import: no bytes received");
    return Truncated(buffer_.size(), kSnapshotHeaderSize);
  }
  if (buffer_.size() < declared_) return Truncated(buffer_.size(), declared_);
  std::string bytes = std::move(buffer_);
  buffer_.clear();
  absl::StatusOr<SessionSnapshot> s = DecodeSnapshot(bytes);
  return s;
}

}  // namespace rwkv
