// Helpers shared by the state tests: snapshot builders, header patching,
// fresh temp directories.
//
// Why: the robustness tests hand-craft headers (huge sizes, future versions)
// that pass the header checksum, so the check under test is the one that
// fires; patching a real encoding and refreshing its CRCs does that simply.
#ifndef RWKV_ENGINE_STATE_STATE_TEST_UTIL_H_
#define RWKV_ENGINE_STATE_STATE_TEST_UTIL_H_

#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "engine/state/crc32c.h"
#include "engine/state/state_file.h"
#include "gtest/gtest.h"

namespace rwkv::state_test {

inline StateDims V7Dims(uint32_t n_layer, uint32_t n_head, uint32_t head_size, uint32_t vocab) {
  StateDims d;
  d.arch = 7;
  d.n_layer = n_layer;
  d.n_head = n_head;
  d.head_size = head_size;
  d.n_embd = n_head * head_size;
  d.vocab_size = vocab;
  d.state_floats = StateFloatsFor(d);
  return d;
}

inline StateDims V4Dims(uint32_t n_layer, uint32_t n_embd, uint32_t vocab) {
  StateDims d;
  d.arch = 4;
  d.n_layer = n_layer;
  d.n_embd = n_embd;
  d.vocab_size = vocab;
  d.state_floats = StateFloatsFor(d);
  return d;
}

inline SessionSnapshot MakeSnapshot(const StateDims& dims, uint32_t seed, bool with_logits,
                                    std::string metadata = "", std::string fingerprint = "model-fp-0001") {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 3.0f);
  SessionSnapshot s;
  s.dims = dims;
  s.model_fingerprint = std::move(fingerprint);
  s.tokens_seen = (uint64_t{seed} << 33) + 12345;
  s.state.resize(dims.state_floats);
  for (float& f : s.state) f = dist(rng);
  if (with_logits) {
    s.last_logits.resize(dims.vocab_size);
    for (float& f : s.last_logits) f = dist(rng);
  }
  s.metadata = std::move(metadata);
  return s;
}

// Bitwise equality (NaN payloads and -0 included).
inline void ExpectSameSnapshot(const SessionSnapshot& a, const SessionSnapshot& b) {
  EXPECT_EQ(a.dims, b.dims);
  EXPECT_EQ(a.model_fingerprint, b.model_fingerprint);
  EXPECT_EQ(a.tokens_seen, b.tokens_seen);
  EXPECT_EQ(a.metadata, b.metadata);
  ASSERT_EQ(a.state.size(), b.state.size());
  ASSERT_EQ(a.last_logits.size(), b.last_logits.size());
  auto same_bits = [](const std::vector<float>& x, const std::vector<float>& y) {
    return x.empty() || std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0;
  };
  EXPECT_TRUE(same_bits(a.state, b.state));
  EXPECT_TRUE(same_bits(a.last_logits, b.last_logits));
}

inline void PutU32(std::string* b, size_t off, uint32_t v) {
  for (int i = 0; i < 4; ++i) (*b)[off + i] = static_cast<char>((v >> (8 * i)) & 0xffu);
}
inline void PutU64(std::string* b, size_t off, uint64_t v) {
  PutU32(b, off, static_cast<uint32_t>(v));
  PutU32(b, off + 4, static_cast<uint32_t>(v >> 32));
}
inline uint32_t GetU32(const std::string& b, size_t off) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(static_cast<uint8_t>(b[off + i])) << (8 * i);
  return v;
}
inline uint64_t GetU64(const std::string& b, size_t off) {
  return GetU32(b, off) | (uint64_t{GetU32(b, off + 4)} << 32);
}

// Recomputes the header CRC (bytes 92..95) and, when the buffer is long
// enough to hold it whole, the trailing CRC.
inline void RefreshCrcs(std::string* b, bool trailer = true) {
  PutU32(b, 92, Crc32c(absl::string_view(*b).substr(0, 92)));
  if (trailer && b->size() >= kSnapshotHeaderSize + 4) {
    PutU32(b, b->size() - 4, Crc32c(absl::string_view(*b).substr(0, b->size() - 4)));
  }
}

// An empty directory private to the running test.
inline std::string FreshDir(const std::string& tag) {
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::filesystem::path p = std::filesystem::path(::testing::TempDir()) /
                            ("rwkv_state_" + std::string(info->test_suite_name()) + "_" + info->name() + "_" +
                             tag + "_" + std::to_string(::getpid()));
  std::error_code ec;
  std::filesystem::permissions(p, std::filesystem::perms::owner_all, std::filesystem::perm_options::add, ec);
  std::filesystem::remove_all(p, ec);
  return p.string();
}

}  // namespace rwkv::state_test

#endif  // RWKV_ENGINE_STATE_STATE_TEST_UTIL_H_
