// Tests of the state file format: round trips, corruption of every kind,
// compatibility checks and the streaming assembler.
//
// Why exhaustive on a small file: every truncation length and every bit flip
// of a real encoding is cheap to try and proves decoding never crashes and
// never accepts damaged input.
#include "engine/state/state_file.h"

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "engine/state/state_test_util.h"
#include "gtest/gtest.h"

namespace rwkv {
namespace {

using state_test::ExpectSameSnapshot;
using state_test::GetU32;
using state_test::GetU64;
using state_test::MakeSnapshot;
using state_test::PutU32;
using state_test::PutU64;
using state_test::RefreshCrcs;
using state_test::V4Dims;
using state_test::V7Dims;

bool Contains(absl::string_view haystack, absl::string_view needle) {
  return haystack.find(needle) != absl::string_view::npos;
}

SessionSnapshot Small() { return MakeSnapshot(V7Dims(1, 1, 4, 5), 1, true, R"({"k":1})", "fp-1234"); }

TEST(StateFileTest, RoundTripV7WithLogitsAndMetadata) {
  SessionSnapshot s = MakeSnapshot(V7Dims(4, 2, 64, 65536), 42, true, R"({"sampler":{"temp":0.7}})");
  s.state[0] = std::numeric_limits<float>::quiet_NaN();
  s.state[1] = -0.0f;
  s.state[2] = std::numeric_limits<float>::infinity();
  s.state[3] = std::numeric_limits<float>::denorm_min();
  s.last_logits[0] = -1e30f;
  ASSERT_TRUE(ValidateSnapshot(s).ok()) << ValidateSnapshot(s);
  const std::string bytes = EncodeSnapshot(s);
  absl::StatusOr<SessionSnapshot> d = DecodeSnapshot(bytes);
  ASSERT_TRUE(d.ok()) << d.status();
  ExpectSameSnapshot(s, *d);
  EXPECT_TRUE(std::isnan(d->state[0]));
  EXPECT_TRUE(std::signbit(d->state[1]));
  EXPECT_TRUE(CheckCompatible(*d, s.dims, s.model_fingerprint).ok());
}

TEST(StateFileTest, RoundTripV4WithoutLogits) {
  SessionSnapshot s = MakeSnapshot(V4Dims(3, 6, 13), 3, false);
  absl::StatusOr<SessionSnapshot> d = DecodeSnapshot(EncodeSnapshot(s));
  ASSERT_TRUE(d.ok()) << d.status();
  ExpectSameSnapshot(s, *d);
  EXPECT_TRUE(d->last_logits.empty());
}

TEST(StateFileTest, RoundTripRandomShapes) {
  std::mt19937 rng(99);
  for (uint32_t i = 0; i < 60; ++i) {
    const bool v7 = i % 2 == 0;
    const StateDims dims = v7 ? V7Dims(1 + rng() % 4, 1 + rng() % 4, 1 + rng() % 16, 1 + rng() % 300)
                              : V4Dims(1 + rng() % 5, 1 + rng() % 40, 1 + rng() % 300);
    std::string meta(rng() % 3 == 0 ? 0 : rng() % 2000, '\0');
    for (char& c : meta) c = static_cast<char>(rng());
    std::string fp(rng() % (kMaxFingerprintBytes + 1), '\0');
    for (char& c : fp) c = static_cast<char>(rng());
    const SessionSnapshot s = MakeSnapshot(dims, i, rng() % 2 == 0, meta, fp);
    ASSERT_TRUE(ValidateSnapshot(s).ok()) << dims.ToString();
    absl::StatusOr<SessionSnapshot> d = DecodeSnapshot(EncodeSnapshot(s));
    ASSERT_TRUE(d.ok()) << d.status() << " " << dims.ToString();
    ExpectSameSnapshot(s, *d);
  }
}

TEST(StateFileTest, EncodingMatchesDocumentedLayout) {
  const SessionSnapshot s = Small();
  const std::string b = EncodeSnapshot(s);
  const uint64_t fp = s.model_fingerprint.size(), meta = s.metadata.size();
  ASSERT_EQ(b.size(), 100 + fp + meta + 24 * 4 + 5 * 4);
  EXPECT_EQ(b.substr(0, 8), "RWKVSTAT");
  EXPECT_EQ(GetU32(b, 8), 1u);
  EXPECT_EQ(GetU32(b, 12), 96u);
  EXPECT_EQ(GetU32(b, 16), 7u);
  EXPECT_EQ(GetU32(b, 20), 1u);
  EXPECT_EQ(GetU32(b, 24), 1u);
  EXPECT_EQ(GetU32(b, 28), 4u);
  EXPECT_EQ(GetU32(b, 32), 1u);
  EXPECT_EQ(GetU32(b, 36), 4u);
  EXPECT_EQ(GetU32(b, 40), 5u);
  EXPECT_EQ(GetU32(b, 44), 0u);
  EXPECT_EQ(GetU64(b, 48), 24u);
  EXPECT_EQ(GetU64(b, 56), s.tokens_seen);
  EXPECT_EQ(GetU32(b, 64), fp);
  EXPECT_EQ(GetU32(b, 68), meta);
  EXPECT_EQ(GetU64(b, 72), 96u);
  EXPECT_EQ(GetU64(b, 80), 20u);
  EXPECT_EQ(GetU32(b, 88), 0u);
  EXPECT_EQ(GetU32(b, 92), Crc32c(absl::string_view(b).substr(0, 92)));
  EXPECT_EQ(b.substr(96, fp), s.model_fingerprint);
  EXPECT_EQ(b.substr(96 + fp, meta), s.metadata);
  float first;
  std::memcpy(&first, b.data() + 96 + fp + meta, 4);
  EXPECT_EQ(first, s.state[0]);
  EXPECT_EQ(GetU32(b, b.size() - 4), Crc32c(absl::string_view(b).substr(0, b.size() - 4)));
}

TEST(StateFileTest, EveryTruncationIsInvalidArgument) {
  const std::string b = EncodeSnapshot(Small());
  for (size_t n = 0; n < b.size(); ++n) {
    absl::StatusOr<SessionSnapshot> d = DecodeSnapshot(absl::string_view(b).substr(0, n));
    ASSERT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument) << n << " " << d.status();
    EXPECT_TRUE(Contains(d.status().message(), "truncated")) << n << " " << d.status();
  }
  std::string longer = b + "x";
  absl::StatusOr<SessionSnapshot> d = DecodeSnapshot(longer);
  EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(d.status().message(), "trailing")) << d.status();
}

TEST(StateFileTest, EveryBitFlipIsDetected) {
  const std::string b = EncodeSnapshot(Small());
  int checksum_hits = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string c = b;
      c[i] = static_cast<char>(c[i] ^ (1 << bit));
      absl::StatusOr<SessionSnapshot> d = DecodeSnapshot(c);
      ASSERT_FALSE(d.ok()) << "flip at byte " << i << " bit " << bit << " went undetected";
      const absl::StatusCode code = d.status().code();
      ASSERT_TRUE(code == absl::StatusCode::kInvalidArgument || code == absl::StatusCode::kFailedPrecondition)
          << d.status();
      if (i >= kSnapshotHeaderSize) {
        EXPECT_TRUE(Contains(d.status().message(), "checksum mismatch (corrupt)")) << i << " " << d.status();
      }
      checksum_hits += Contains(d.status().message(), "checksum mismatch (corrupt)");
    }
  }
  EXPECT_GT(checksum_hits, 0);
}

TEST(StateFileTest, WrongMagic) {
  for (const std::string& junk : {std::string("GGUF\3\0\0\0 and more bytes"), std::string("{\"json\": true}"),
                                  std::string("X"), std::string(200, '\0')}) {
    absl::StatusOr<SessionSnapshot> d = DecodeSnapshot(junk);
    EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(Contains(d.status().message(), "not an RWKV state file")) << d.status();
  }
  std::string b = EncodeSnapshot(Small());
  b[7] = 'X';
  EXPECT_TRUE(Contains(DecodeSnapshot(b).status().message(), "not an RWKV state file"));
}

TEST(StateFileTest, FutureVersionIsFailedPrecondition) {
  std::string b = EncodeSnapshot(Small());
  PutU32(&b, 8, 2);
  RefreshCrcs(&b);
  absl::StatusOr<SessionSnapshot> d = DecodeSnapshot(b);
  EXPECT_EQ(d.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(Contains(d.status().message(), "version 2")) << d.status();
  // Even a bare 12-byte prefix is enough to tell.
  EXPECT_EQ(DecodeSnapshot(b.substr(0, 12)).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(StateFileTest, ReservedAndUnknownDType) {
  std::string b = EncodeSnapshot(Small());
  PutU32(&b, 44, 1);  // f16: reserved for a future writer
  RefreshCrcs(&b);
  absl::StatusOr<SessionSnapshot> d = DecodeSnapshot(b);
  EXPECT_EQ(d.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(Contains(d.status().message(), "f16")) << d.status();
  PutU32(&b, 44, 9);
  RefreshCrcs(&b);
  EXPECT_EQ(DecodeSnapshot(b).status().code(), absl::StatusCode::kInvalidArgument);
}

// Each patch keeps both checksums valid, so the size validation is what fires.
TEST(StateFileTest, SectionsInconsistentWithDims) {
  const std::string good = EncodeSnapshot(Small());
  struct Patch {
    const char* what;
    size_t offset;
    uint64_t value;
    bool wide;
  };
  const Patch patches[] = {
      {"state_floats vs dims", 48, 25, true},  {"state bytes vs floats", 72, 100, true},
      {"logits vs vocab", 80, 16, true},       {"n_embd vs heads", 28, 8, false},
      {"n_layer vs state", 24, 2, false},      {"zero vocab", 40, 0, false},
      {"unknown arch", 16, 6, false},          {"fingerprint too long", 64, 65, false},
      {"metadata too long", 68, 65537, false}, {"reserved", 88, 1, false},
      {"header length", 12, 128, false},
  };
  for (const Patch& p : patches) {
    std::string b = good;
    if (p.wide) {
      PutU64(&b, p.offset, p.value);
    } else {
      PutU32(&b, p.offset, static_cast<uint32_t>(p.value));
    }
    RefreshCrcs(&b);
    absl::StatusOr<SessionSnapshot> d = DecodeSnapshot(b);
    EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument) << p.what << ": " << d.status();
    EXPECT_FALSE(Contains(d.status().message(), "checksum")) << p.what << ": " << d.status();
  }
}

TEST(StateFileTest, CheckCompatibleNamesTheDifference) {
  const SessionSnapshot s = MakeSnapshot(V7Dims(2, 2, 4, 10), 5, true);
  const StateDims dims = s.dims;
  EXPECT_TRUE(CheckCompatible(s, dims, s.model_fingerprint).ok());
  struct Case {
    StateDims want;
    const char* needle;
  };
  std::vector<Case> cases;
  cases.push_back({V4Dims(2, 8, 10), "architecture"});
  cases.push_back({V7Dims(3, 2, 4, 10), "n_layer"});
  cases.push_back({V7Dims(2, 4, 4, 10), "n_embd"});
  cases.push_back({V7Dims(2, 2, 4, 11), "vocab_size"});
  StateDims heads = dims;
  heads.n_head = 1;
  heads.head_size = 8;
  cases.push_back({heads, "n_head"});
  StateDims layout = dims;
  layout.layout_version = 2;
  cases.push_back({layout, "layout version"});
  for (const Case& c : cases) {
    absl::Status st = CheckCompatible(s, c.want, s.model_fingerprint);
    EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << c.needle;
    EXPECT_TRUE(Contains(st.message(), c.needle)) << st;
  }
  absl::Status st = CheckCompatible(s, dims, "another-model");
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(Contains(st.message(), "state was made by a different model")) << st;
  EXPECT_TRUE(Contains(st.message(), "fingerprint")) << st;
  SessionSnapshot broken = s;
  broken.state.pop_back();
  EXPECT_EQ(CheckCompatible(broken, dims, s.model_fingerprint).code(), absl::StatusCode::kInvalidArgument);
}

TEST(StateFileTest, ValidateSnapshotRejectsWhatDecodeWould) {
  const SessionSnapshot good = Small();
  EXPECT_TRUE(ValidateSnapshot(good).ok());
  SessionSnapshot s = good;
  s.state.push_back(0);
  EXPECT_EQ(ValidateSnapshot(s).code(), absl::StatusCode::kInvalidArgument);
  s = good;
  s.last_logits.pop_back();
  EXPECT_EQ(ValidateSnapshot(s).code(), absl::StatusCode::kInvalidArgument);
  s = good;
  s.model_fingerprint.assign(kMaxFingerprintBytes + 1, 'f');
  EXPECT_EQ(ValidateSnapshot(s).code(), absl::StatusCode::kInvalidArgument);
  s = good;
  s.metadata.assign(kMaxMetadataBytes + 1, 'm');
  EXPECT_EQ(ValidateSnapshot(s).code(), absl::StatusCode::kInvalidArgument);
  s = good;
  s.dims.n_layer = 0;
  EXPECT_EQ(ValidateSnapshot(s).code(), absl::StatusCode::kInvalidArgument);
  s = good;
  s.metadata.assign(kMaxMetadataBytes, 'm');  // the limit itself is fine
  EXPECT_TRUE(ValidateSnapshot(s).ok());
  EXPECT_TRUE(DecodeSnapshot(EncodeSnapshot(s)).ok());
}

TEST(StateFileTest, SplitIntoChunks) {
  EXPECT_TRUE(SplitIntoChunks("", 4).empty());
  std::vector<absl::string_view> c = SplitIntoChunks("abcdefghij", 4);
  ASSERT_EQ(c.size(), 3u);
  EXPECT_EQ(c[0], "abcd");
  EXPECT_EQ(c[2], "ij");
  EXPECT_EQ(SplitIntoChunks("abc", 0).size(), 3u);
  EXPECT_EQ(SplitIntoChunks("abc", 100).size(), 1u);
}

TEST(SnapshotAssemblerTest, ChunkedEqualsOneShot) {
  for (const SessionSnapshot& s : {Small(), MakeSnapshot(V7Dims(2, 2, 32, 3000), 8, true, "meta"),
                                   MakeSnapshot(V4Dims(2, 16, 50), 9, false)}) {
    const std::string b = EncodeSnapshot(s);
    absl::StatusOr<SessionSnapshot> one = DecodeSnapshot(b);
    ASSERT_TRUE(one.ok()) << one.status();
    for (size_t chunk : {size_t{1}, size_t{7}, size_t{4096}, b.size()}) {
      SnapshotAssemblerOptions opt;
      opt.expected_dims = s.dims;
      opt.expected_fingerprint = s.model_fingerprint;
      SnapshotAssembler a(opt);
      for (absl::string_view piece : SplitIntoChunks(b, chunk)) {
        ASSERT_TRUE(a.Append(piece).ok()) << chunk;
      }
      EXPECT_EQ(a.bytes_received(), b.size());
      ASSERT_EQ(a.declared_size(), std::optional<uint64_t>(b.size()));
      absl::StatusOr<SessionSnapshot> got = a.Finish();
      ASSERT_TRUE(got.ok()) << got.status();
      ExpectSameSnapshot(*one, *got);
    }
  }
}

// Feeds `b` in chunks of 7 and returns the index of the first failing Append
// (or -1), with its status.
int FirstFailure(SnapshotAssembler* a, absl::string_view b, absl::Status* st) {
  std::vector<absl::string_view> chunks = SplitIntoChunks(b, 7);
  for (size_t i = 0; i < chunks.size(); ++i) {
    *st = a->Append(chunks[i]);
    if (!st->ok()) return static_cast<int>(i);
  }
  return -1;
}

TEST(SnapshotAssemblerTest, RejectsForeignHeaderOnTheChunkThatCompletesIt) {
  const SessionSnapshot s = MakeSnapshot(V7Dims(2, 2, 32, 3000), 8, true);
  const std::string b = EncodeSnapshot(s);
  absl::Status st;
  {
    SnapshotAssemblerOptions opt;
    opt.expected_dims = V7Dims(2, 2, 32, 4000);  // another vocabulary
    SnapshotAssembler a(opt);
    EXPECT_EQ(FirstFailure(&a, b, &st), (96 - 1) / 7);
    EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_TRUE(Contains(st.message(), "vocab_size")) << st;
    EXPECT_EQ(a.Append("more").code(), absl::StatusCode::kFailedPrecondition);  // sticky
    EXPECT_EQ(a.Finish().status().code(), absl::StatusCode::kFailedPrecondition);
  }
  {
    SnapshotAssemblerOptions opt;
    opt.expected_fingerprint = "other";
    SnapshotAssembler a(opt);
    const int last_fp_byte = static_cast<int>(96 + s.model_fingerprint.size() - 1);
    EXPECT_EQ(FirstFailure(&a, b, &st), last_fp_byte / 7);
    EXPECT_TRUE(Contains(st.message(), "state was made by a different model")) << st;
  }
  {
    SnapshotAssembler a;
    EXPECT_EQ(FirstFailure(&a, "NOTSTATE-and-more", &st), 0);
    EXPECT_TRUE(Contains(st.message(), "not an RWKV state file")) << st;
  }
  {
    std::string future = b;
    PutU32(&future, 8, 3);
    SnapshotAssembler a;
    EXPECT_EQ(FirstFailure(&a, future, &st), 11 / 7);
    EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  }
  {
    SnapshotAssemblerOptions opt;
    opt.max_bytes = b.size() - 1;
    SnapshotAssembler a(opt);
    EXPECT_EQ(FirstFailure(&a, b, &st), (96 - 1) / 7);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(Contains(st.message(), "limit")) << st;
  }
}

TEST(SnapshotAssemblerTest, TruncatedExtraAndCorruptImports) {
  const std::string b = EncodeSnapshot(Small());
  for (size_t n : {size_t{0}, size_t{5}, size_t{95}, size_t{96}, b.size() - 1}) {
    SnapshotAssembler a;
    ASSERT_TRUE(a.Append(absl::string_view(b).substr(0, n)).ok()) << n;
    absl::StatusOr<SessionSnapshot> got = a.Finish();
    EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument) << n;
    EXPECT_TRUE(Contains(got.status().message(), "truncated")) << got.status();
    EXPECT_EQ(a.Finish().status().code(), absl::StatusCode::kFailedPrecondition);  // once only
  }
  {
    SnapshotAssembler a;
    ASSERT_TRUE(a.Append(b).ok());
    absl::Status st = a.Append("x");
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(Contains(st.message(), "more bytes")) << st;
  }
  {
    std::string corrupt = b;
    corrupt[b.size() - 10] ^= 0x01;
    SnapshotAssembler a;
    for (absl::string_view piece : SplitIntoChunks(corrupt, 7)) ASSERT_TRUE(a.Append(piece).ok());
    absl::StatusOr<SessionSnapshot> got = a.Finish();
    EXPECT_TRUE(Contains(got.status().message(), "checksum mismatch (corrupt)")) << got.status();
  }
}

}  // namespace
}  // namespace rwkv
