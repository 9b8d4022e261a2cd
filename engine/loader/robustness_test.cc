// Robustness sweeps: every reader, fed truncated and corrupted versions of
// real and hand-made model files, must either fail with a status or yield a
// source whose every tensor reads successfully. Run under ASan/UBSan, this
// is what proves "never a crash, UB or huge allocation".
//
// Why in memory: each mutated file is copied into an exactly-sized heap
// buffer and wrapped with MappedFile::FromUnownedMemory, so AddressSanitizer
// flags any read past its end, and tens of thousands of variants stay fast.
// Mutations use a fixed seed, so failures reproduce.
#include <cctype>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/loader/mapped_file.h"
#include "engine/loader/readers.h"
#include "engine/loader/test_util.h"
#include "engine/testing/testdata.h"
#include "gtest/gtest.h"

namespace rwkv {
namespace {

using loader_test::BuildGgmf;
using loader_test::BuildPth;
using loader_test::BuildSafetensors;
using loader_test::BuildStateDictPickle;
using loader_test::F32Bytes;
using loader_test::Iota;

struct Stats {
  size_t opened = 0;
  size_t refused = 0;
};

// Reads every tensor in its stored dtype (a plain copy, so the sweep stays
// fast; conversions are covered by the reader tests) and probes zero-copy.
absl::Status ReadAllNative(const TensorSource& src) {
  std::vector<uint8_t> buf;
  for (const std::string& name : src.Names()) {
    const TensorInfo* info = src.Find(name);
    if (info == nullptr) return absl::InternalError("listed tensor not found: " + name);
    buf.resize(static_cast<size_t>(info->numel()) * DTypeSize(info->dtype) + 1);
    if (absl::Status s = src.Read(name, info->dtype, buf.data()); !s.ok()) return s;
    if (const float* p = src.TryZeroCopyF32(name); p != nullptr && info->numel() > 0) {
      std::memcpy(buf.data(), p, static_cast<size_t>(info->numel()) * 4);
    }
  }
  return absl::OkStatus();
}

// Opens bytes [0, n) of `data` from an exactly-sized copy.
void Probe(const uint8_t* data, size_t n, const std::string& label, Stats* stats) {
  std::unique_ptr<uint8_t[]> copy(new uint8_t[n == 0 ? 1 : n]);
  if (n > 0) std::memcpy(copy.get(), data, n);
  absl::StatusOr<std::unique_ptr<TensorSource>> src =
      loader_internal::OpenAnyFile(MappedFile::FromUnownedMemory(copy.get(), n, label));
  if (!src.ok()) {
    ++stats->refused;
    ASSERT_FALSE(src.status().message().empty()) << label;
    return;
  }
  ++stats->opened;
  absl::Status read = ReadAllNative(**src);
  ASSERT_TRUE(read.ok()) << label << ": " << read;
}

// Truncates `bytes` at every offset below `dense` and at `spread` offsets
// spread through the rest, plus the last `tail` offsets.
void TruncationSweep(const std::string& bytes, const std::string& name, size_t dense, size_t spread,
                     size_t tail) {
  Stats stats;
  const auto* d = reinterpret_cast<const uint8_t*>(bytes.data());
  const size_t size = bytes.size();
  for (size_t n = 0; n < size && n < dense; ++n) {
    Probe(d, n, absl::StrCat(name, " truncated to ", n), &stats);
    if (::testing::Test::HasFatalFailure()) return;
  }
  for (size_t k = 0; k < spread; ++k) {
    const size_t n = size * k / spread;
    Probe(d, n, absl::StrCat(name, " truncated to ", n), &stats);
    if (::testing::Test::HasFatalFailure()) return;
  }
  for (size_t n = size > tail ? size - tail : 0; n < size; ++n) {
    Probe(d, n, absl::StrCat(name, " truncated to ", n), &stats);
    if (::testing::Test::HasFatalFailure()) return;
  }
  EXPECT_GT(stats.refused, 0u) << name;
}

// Byte ranges holding a file's metadata (headers, names, sizes, offsets),
// found by a deliberately simple walk that is independent of the readers.
using Ranges = std::vector<std::pair<size_t, size_t>>;

Ranges MetadataRanges(const std::string& b) {
  const auto* d = reinterpret_cast<const uint8_t*>(b.data());
  const size_t size = b.size();
  const auto u16 = [&](size_t at) { return static_cast<size_t>(d[at] | d[at + 1] << 8); };
  const auto u32 = [&](size_t at) { return static_cast<size_t>(u16(at) | u16(at + 2) << 16); };
  Ranges r;
  if (size >= 22 && b.compare(0, 4, "PK\x03\x04") == 0) {  // zip: central directory, local headers
    const size_t eocd = size - 22;
    size_t cd = u32(eocd + 16);
    r.push_back({cd, size});
    for (size_t e = 0; e < u16(eocd + 10) && cd + 46 <= eocd; ++e) {
      const size_t local = u32(cd + 42);
      if (local + 30 <= size) r.push_back({local, local + 30 + u16(local + 26) + u16(local + 28)});
      cd += 46 + u16(cd + 28) + u16(cd + 30) + u16(cd + 32);
    }
  } else if (size >= 24 && u32(0) == 0x67676d66) {  // rwkv.cpp: every tensor header
    r.push_back({0, 24});
    size_t at = 24;
    while (at + 12 <= size) {
      const size_t dims = u32(at), key = u32(at + 4), type = u32(at + 8);
      size_t numel = 1;
      for (size_t k = 0; k < dims; ++k) numel *= u32(at + 12 + 4 * k);
      const size_t header = 12 + 4 * dims + key;
      r.push_back({at, at + header});
      at += header + numel * (type == 0 ? 4 : 2);
    }
  } else if (size >= 8) {  // safetensors: the JSON header
    r.push_back({0, 8 + u32(0)});
  }
  return r;
}

// Applies `count` single-site corruptions (bit flips, random bytes, and
// 4-byte runs of 0xff / 0x7f that make huge counts), each undone before the
// next. Half the sites are in metadata, a quarter in the first 16 KiB and a
// quarter anywhere.
void CorruptionSweep(const std::string& bytes, const std::string& name, size_t count,
                     uint32_t seed) {
  std::mt19937 rng(seed);
  std::string buf = bytes;
  const size_t size = buf.size();
  const Ranges hot = MetadataRanges(bytes);
  ASSERT_FALSE(hot.empty()) << name;
  size_t hot_bytes = 0;
  for (const auto& [lo, hi] : hot) hot_bytes += hi - lo;
  const size_t head = size < 16384 ? size : 16384;
  Stats stats;
  for (size_t k = 0; k < count; ++k) {
    size_t pos = 0;
    if (k % 4 < 2) {  // a uniformly chosen metadata byte
      size_t pick = rng() % hot_bytes;
      for (const auto& [lo, hi] : hot) {
        if (pick < hi - lo) {
          pos = lo + pick;
          break;
        }
        pick -= hi - lo;
      }
    } else if (k % 4 == 2) {
      pos = rng() % head;
    } else {
      pos = rng() % size;
    }
    pos = pos < size ? pos : size - 1;
    const std::string saved = buf.substr(pos, 4);
    std::string what;
    switch (rng() % 4) {
      case 0:
      case 1: {
        const int bit = static_cast<int>(rng() % 8);
        buf[pos] = static_cast<char>(buf[pos] ^ (1 << bit));
        what = absl::StrCat("bit ", bit, " flipped");
        break;
      }
      case 2:
        buf[pos] = static_cast<char>(rng() & 0xff);
        what = "byte set";
        break;
      default: {
        const char v = (rng() & 1) ? '\xff' : '\x7f';
        for (size_t j = pos; j < size && j < pos + 4; ++j) buf[j] = v;
        what = "4 bytes set";
        break;
      }
    }
    Probe(reinterpret_cast<const uint8_t*>(buf.data()), size,
          absl::StrCat(name, ": ", what, " at ", pos), &stats);
    if (::testing::Test::HasFatalFailure()) return;
    buf.replace(pos, saved.size(), saved);
  }
  EXPECT_GT(stats.refused, count / 8) << name;
}

const char* const kRealFiles[] = {
    "official_ref/rwkv7_small_A.pth",         "official_ref/rwkv7_small_A_torch2.pth",
    "official_ref/rwkv7_small_A.safetensors", "official_ref/rwkv4_small_A.pth",
    "official_ref/rwkv4_small_A_torch2.pth",  "official_ref/rwkv4_small_A.safetensors",
    "rwkv_cpp/tiny-rwkv-4v0-660K-FP32.bin",   "rwkv_cpp/tiny-rwkv-7v0-834K-FP32.bin",
    "rwkv_cpp/tiny-rwkv-7v0-834K-FP16.bin",
};

class RealFileRobustness : public ::testing::TestWithParam<const char*> {};

TEST_P(RealFileRobustness, Truncation) {
  RWKV_REQUIRE_TESTDATA(GetParam());
  const std::string bytes = loader_test::ReadFileBytes(testing::TestDataPath(GetParam()));
  // Sanity: the intact file opens.
  Stats stats;
  Probe(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), GetParam(), &stats);
  ASSERT_EQ(stats.opened, 1u);
  TruncationSweep(bytes, GetParam(), /*dense=*/4096, /*spread=*/200, /*tail=*/64);
}

TEST_P(RealFileRobustness, Corruption) {
  RWKV_REQUIRE_TESTDATA(GetParam());
  const std::string bytes = loader_test::ReadFileBytes(testing::TestDataPath(GetParam()));
  uint32_t seed = 1;
  for (const char* c = GetParam(); *c; ++c) seed = seed * 31 + static_cast<uint8_t>(*c);
  CorruptionSweep(bytes, GetParam(), /*count=*/200, seed);
}

INSTANTIATE_TEST_SUITE_P(Files, RealFileRobustness, ::testing::ValuesIn(kRealFiles),
                         [](const ::testing::TestParamInfo<const char*>& param_info) {
                           std::string s = param_info.param;
                           for (char& c : s) {
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           }
                           return s;
                         });

// Small hand-made files are swept exhaustively: every truncation and every
// single-bit flip at every byte.
void ExhaustiveSweep(const std::string& bytes, const std::string& name) {
  Stats stats;
  Probe(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), name, &stats);
  ASSERT_EQ(stats.opened, 1u) << name;
  TruncationSweep(bytes, name, bytes.size(), 0, 0);
  std::string buf = bytes;
  for (size_t pos = 0; pos < buf.size(); ++pos) {
    for (int bit = 0; bit < 8; ++bit) {
      buf[pos] = static_cast<char>(buf[pos] ^ (1 << bit));
      Probe(reinterpret_cast<const uint8_t*>(buf.data()), buf.size(),
            absl::StrCat(name, ": bit ", bit, " flipped at ", pos), &stats);
      buf[pos] = bytes[pos];
      if (::testing::Test::HasFatalFailure()) return;
    }
  }
}

TEST(HandMadeRobustness, ExhaustiveSmallFiles) {
  const std::string pkl = BuildStateDictPickle({{"a", "FloatStorage", "0", 6, 0, {2, 3}, {3, 1}},
                                                {"b", "HalfStorage", "1", 4, 1, {3}, {1}}});
  const std::string h16 = std::string("\x00\x3c\x00\x40\x00\x42\x00\x44", 8);
  ExhaustiveSweep(BuildPth(pkl, {{"0", F32Bytes(Iota(6))}, {"1", h16}}), "tiny.pth");
  ExhaustiveSweep(BuildPth(pkl, {{"0", F32Bytes(Iota(6))}, {"1", h16}}, /*zip64=*/true),
                  "tiny_zip64.pth");
  ExhaustiveSweep(BuildSafetensors(R"({"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},)"
                                   R"("b":{"dtype":"BF16","shape":[2],"data_offsets":[24,28]}})",
                                   F32Bytes(Iota(7))),
                  "tiny.safetensors");
  ExhaustiveSweep(BuildGgmf(2, 4, 1,
                            {{"emb.weight", 1, {4, 2}, std::string(16, '\x3c')},
                             {"blocks.0.att.x_rwkvag", 0, {4, 1, 6}, F32Bytes(Iota(24))},
                             {"blocks.0.att.w1", 0, {4, 3}, F32Bytes(Iota(12))}}),
                  "tiny_v7.bin");
}

}  // namespace
}  // namespace rwkv
