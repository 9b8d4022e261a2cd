// Tests of the rwkv.cpp (.bin) reader: tiny models from rwkv.cpp's test
// suite cross-checked against the independent tensor tables in
// rwkv_cpp/generated/, the BlinkDL-convention translations, and hostile files.
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "engine/loader/tensor_source.h"
#include "engine/loader/test_util.h"
#include "engine/testing/testdata.h"
#include "gtest/gtest.h"

namespace rwkv {
namespace {

using loader_test::BuildGgmf;
using loader_test::F32Bytes;
using loader_test::GgmfTensor;
using loader_test::Iota;
using loader_test::ReadEveryTensor;
using loader_test::ReadFileBytes;
using loader_test::WriteTempFile;
using Shape = std::vector<int64_t>;

// One row of generated/tensors-*.txt.
struct TableRow {
  std::string name, type;
  Shape shape;  // PyTorch order
  size_t offset;
};

std::vector<TableRow> ReadTable(const std::string& path) {
  std::vector<TableRow> rows;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> f = absl::StrSplit(line, '\t');
    if (f.size() != 6) continue;
    TableRow r{f[1], f[2], {}, 0};
    for (absl::string_view d :
         absl::StrSplit(absl::string_view(f[4]).substr(1, f[4].size() - 2), ", ")) {
      int64_t v = 0;
      EXPECT_TRUE(absl::SimpleAtoi(d, &v)) << line;
      r.shape.push_back(v);
    }
    EXPECT_TRUE(absl::SimpleAtoi(f[5], &r.offset)) << line;
    rows.push_back(std::move(r));
  }
  return rows;
}

std::vector<float> RawF32(const std::string& file, size_t offset, size_t n) {
  std::vector<float> v(n);
  std::memcpy(v.data(), file.data() + offset, n * 4);
  return v;
}

std::vector<float> ReadF32(const TensorSource& src, const std::string& name) {
  const TensorInfo* info = src.Find(name);
  EXPECT_NE(info, nullptr) << name;
  if (info == nullptr) return {};
  std::vector<float> v(static_cast<size_t>(info->numel()));
  EXPECT_TRUE(src.Read(name, DType::kF32, v.data()).ok()) << name;
  return v;
}

TEST(RwkvCppReaderTest, V4MatchesTensorTable) {
  const std::string rel = "rwkv_cpp/tiny-rwkv-4v0-660K-FP32.bin";
  RWKV_REQUIRE_TESTDATA(rel);
  RWKV_REQUIRE_TESTDATA("rwkv_cpp/generated/tensors-4v0-660K-FP32.txt");
  absl::StatusOr<std::unique_ptr<TensorSource>> src = OpenRwkvCppBin(testing::TestDataPath(rel));
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_TRUE((*src)->convention().v4_time_decay_is_neg_exp);
  EXPECT_TRUE(absl::StrContains((*src)->Describe(), "RWKV-4"));
  const std::string bytes = ReadFileBytes(testing::TestDataPath(rel));
  const std::vector<TableRow> table =
      ReadTable(testing::TestDataPath("rwkv_cpp/generated/tensors-4v0-660K-FP32.txt"));
  ASSERT_EQ(table.size(), 78u);
  std::vector<std::string> names;
  for (const TableRow& r : table) names.push_back(r.name);
  EXPECT_EQ((*src)->Names(), names);
  for (const TableRow& r : table) {
    ASSERT_EQ((*src)->Find(r.name)->shape, r.shape) << r.name;
    const size_t n = static_cast<size_t>((*src)->Find(r.name)->numel());
    EXPECT_EQ(ReadF32(**src, r.name), RawF32(bytes, r.offset, n)) << r.name;
  }
  EXPECT_EQ((*src)->Find("blocks.0.att.time_mix_k")->shape, Shape{128});         // squeezed
  for (float x : ReadF32(**src, "blocks.1.att.time_decay")) EXPECT_LT(x, 0.0f);  // -exp(raw)
}

TEST(RwkvCppReaderTest, V7TranslatesToBlinkDlConvention) {
  const std::string rel = "rwkv_cpp/tiny-rwkv-7v0-834K-FP32.bin";
  RWKV_REQUIRE_TESTDATA(rel);
  RWKV_REQUIRE_TESTDATA("rwkv_cpp/generated/tensors-7v0-834K-FP32.txt");
  absl::StatusOr<std::unique_ptr<TensorSource>> src = OpenRwkvCppBin(testing::TestDataPath(rel));
  ASSERT_TRUE(src.ok()) << src.status();
  const TensorSource& s = **src;
  EXPECT_FALSE(s.convention().v4_time_decay_is_neg_exp);
  EXPECT_EQ(s.Names().size(), 339u - 12u + 72u);
  const std::string bytes = ReadFileBytes(testing::TestDataPath(rel));
  const std::vector<TableRow> table =
      ReadTable(testing::TestDataPath("rwkv_cpp/generated/tensors-7v0-834K-FP32.txt"));
  ASSERT_EQ(table.size(), 339u);
  const int64_t c = 64;
  for (const TableRow& r : table) {
    if (absl::EndsWith(r.name, ".att.x_rwkvag")) {
      EXPECT_EQ(s.Find(r.name), nullptr);
      const std::string prefix = r.name.substr(0, r.name.size() - 8);
      const char* parts[] = {"x_r", "x_w", "x_k", "x_v", "x_a", "x_g"};
      for (size_t k = 0; k < 6; ++k) {
        ASSERT_NE(s.Find(prefix + parts[k]), nullptr) << prefix << parts[k];
        EXPECT_EQ(s.Find(prefix + parts[k])->shape, (Shape{1, 1, c}));
        EXPECT_EQ(ReadF32(s, prefix + parts[k]), RawF32(bytes, r.offset + k * c * 4, c))
            << prefix << parts[k];
      }
      continue;
    }
    const bool lora = absl::EndsWith(r.name, "1") || absl::EndsWith(r.name, "2");
    const bool is_lora = lora && absl::StrContains(r.name, ".att.") && r.name.size() > 2 &&
                         r.name[r.name.size() - 3] == '.';
    const std::vector<float> got = ReadF32(s, r.name);
    const size_t n = got.size();
    if (!is_lora) {
      EXPECT_EQ(s.Find(r.name)->shape, r.shape) << r.name;
      EXPECT_EQ(got, RawF32(bytes, r.offset, n)) << r.name;
      continue;
    }
    // LoRA: the file holds (rows, cols); the source presents (cols, rows).
    const Shape expect = {r.shape[1], r.shape[0]};
    EXPECT_EQ(s.Find(r.name)->shape, expect) << r.name;
    EXPECT_EQ(s.TryZeroCopyF32(r.name), nullptr) << r.name;
    const std::vector<float> raw = RawF32(bytes, r.offset, n);
    const size_t rows = static_cast<size_t>(r.shape[0]), cols = static_cast<size_t>(r.shape[1]);
    for (size_t i = 0; i < rows; ++i) {
      for (size_t j = 0; j < cols; ++j) ASSERT_EQ(got[j * rows + i], raw[i * cols + j]) << r.name;
    }
  }
  // As in the official .pth: w1 is (C, D), w2 is (D, C).
  EXPECT_EQ(s.Find("blocks.0.att.w1")->shape, (Shape{64, 32}));
  EXPECT_EQ(s.Find("blocks.0.att.w2")->shape, (Shape{32, 64}));
  EXPECT_EQ(s.Find("blocks.3.att.g1")->shape, (Shape{64, 32}));
  EXPECT_EQ(s.Find("blocks.0.att.v1"), nullptr);
  EXPECT_EQ(s.Find("blocks.1.att.v1")->shape, (Shape{64, 32}));
  EXPECT_EQ(s.Find("blocks.0.att.r_k")->shape, (Shape{1, 64}));
  // A transposed read into another dtype is the same transposition.
  std::vector<uint16_t> half(64 * 32);
  ASSERT_TRUE(s.Read("blocks.2.att.a1", DType::kF16, half.data()).ok());
  const std::vector<float> a1 = ReadF32(s, "blocks.2.att.a1");
  for (size_t k = 0; k < a1.size(); ++k) ASSERT_EQ(half[k], F32ToF16(a1[k]));
  EXPECT_TRUE(ReadEveryTensor(s).ok());
}

TEST(RwkvCppReaderTest, V7Fp16MatchesFp32) {
  const std::string f32 = "rwkv_cpp/tiny-rwkv-7v0-834K-FP32.bin",
                    f16 = "rwkv_cpp/tiny-rwkv-7v0-834K-FP16.bin";
  RWKV_REQUIRE_TESTDATA(f32);
  RWKV_REQUIRE_TESTDATA(f16);
  absl::StatusOr<std::unique_ptr<TensorSource>> a = OpenRwkvCppBin(testing::TestDataPath(f32));
  absl::StatusOr<std::unique_ptr<TensorSource>> b = OpenRwkvCppBin(testing::TestDataPath(f16));
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_EQ((*a)->Names(), (*b)->Names());
  size_t half_tensors = 0;
  for (const std::string& n : (*a)->Names()) {
    const TensorInfo* ia = (*a)->Find(n);
    const TensorInfo* ib = (*b)->Find(n);
    ASSERT_EQ(ia->shape, ib->shape) << n;
    EXPECT_EQ(ib->dtype,
              ib->shape.size() == 2 && !absl::EndsWith(n, ".r_k") ? DType::kF16 : DType::kF32)
        << n;
    half_tensors += ib->dtype == DType::kF16;
    const std::vector<float> va = ReadF32(**a, n), vb = ReadF32(**b, n);
    for (size_t k = 0; k < va.size(); ++k) {
      // Within fp16 rounding: half an ulp (relative 2^-11; absolute 2^-25 for subnormals).
      ASSERT_LE(std::fabs(va[k] - vb[k]), std::fabs(va[k]) * 0x1p-11f + 0x1p-25f)
          << n << "[" << k << "]";
    }
  }
  EXPECT_GT(half_tensors, 100u);
}

TEST(RwkvCppReaderTest, QuantizedFileIsUnimplemented) {
  const std::string rel = "rwkv_cpp/tiny-rwkv-6v0-3m-Q5_1.bin";
  RWKV_REQUIRE_TESTDATA(rel);
  for (auto open : {&OpenRwkvCppBin, &OpenTensorSource}) {
    absl::StatusOr<std::unique_ptr<TensorSource>> src = open(testing::TestDataPath(rel));
    ASSERT_FALSE(src.ok());
    EXPECT_EQ(src.status().code(), absl::StatusCode::kUnimplemented) << src.status();
    EXPECT_TRUE(absl::StrContains(src.status().message(), "Q5_1")) << src.status();
  }
}

TEST(RwkvCppReaderTest, V52LoadsAsASource) {
  const std::string rel = "rwkv_cpp/tiny-rwkv-5v2-730K-FP32.bin";
  RWKV_REQUIRE_TESTDATA(rel);
  absl::StatusOr<std::unique_ptr<TensorSource>> src = OpenRwkvCppBin(testing::TestDataPath(rel));
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_TRUE(absl::StrContains((*src)->Describe(), "RWKV-5.2"));
  EXPECT_FALSE((*src)->convention().v4_time_decay_is_neg_exp);
  EXPECT_EQ((*src)->Find("emb.weight")->shape, (Shape{256, 64}));
  EXPECT_NE((*src)->Find("blocks.11.att.gate.weight"), nullptr);
  EXPECT_TRUE(ReadEveryTensor(**src).ok());
}

// A minimal file: vocab 2, embed 4, one layer, plus `extra` tensors.
std::string Tiny(std::vector<GgmfTensor> extra, uint32_t n_embed = 4, uint32_t n_layer = 1,
                 uint32_t version = 101) {
  std::vector<GgmfTensor> t = {{"emb.weight", 0, {4, 2}, F32Bytes(Iota(8))},
                               {"blocks.0.ln1.weight", 0, {4}, F32Bytes(Iota(4))}};
  t.insert(t.end(), extra.begin(), extra.end());
  return BuildGgmf(2, n_embed, n_layer, t, version);
}

TEST(RwkvCppReaderTest, V6MixingMatricesUntransposed) {
  // time_maa_w1: file (5D=10, C=4) -> presented (4, 10); time_maa_w2: file (5, C=4, D=2) -> (5, 2,
  // 4).
  const std::string file = Tiny({{"blocks.0.att.time_maa_x", 0, {4}, F32Bytes(Iota(4))},
                                 {"blocks.0.att.time_maa_w1", 0, {4, 10}, F32Bytes(Iota(40))},
                                 {"blocks.0.att.time_maa_w2", 0, {2, 4, 5}, F32Bytes(Iota(40))}});
  absl::StatusOr<std::unique_ptr<TensorSource>> src = OpenRwkvCppBin(WriteTempFile("v6.bin", file));
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ((*src)->Find("blocks.0.att.time_maa_w1")->shape, (Shape{4, 10}));
  EXPECT_EQ((*src)->Find("blocks.0.att.time_maa_w2")->shape, (Shape{5, 2, 4}));
  const std::vector<float> w1 = ReadF32(**src, "blocks.0.att.time_maa_w1");
  EXPECT_EQ(w1[1 * 10 + 3], 3 * 4 + 1);  // presented [1][3] = stored [3][1]
  const std::vector<float> w2 = ReadF32(**src, "blocks.0.att.time_maa_w2");
  EXPECT_EQ(w2[2 * 8 + 1 * 4 + 3], 2 * 8 + 3 * 2 + 1);  // presented [2][1][3] = stored [2][3][1]
}

void ExpectError(const std::string& name, const std::string& bytes, absl::StatusCode code,
                 const std::string& needle) {
  absl::StatusOr<std::unique_ptr<TensorSource>> s = OpenRwkvCppBin(WriteTempFile(name, bytes));
  ASSERT_FALSE(s.ok()) << name;
  EXPECT_EQ(s.status().code(), code) << s.status();
  EXPECT_TRUE(absl::StrContains(s.status().message(), needle)) << s.status();
}

TEST(RwkvCppReaderTest, RefusesHostileFiles) {
  const auto bad = absl::StatusCode::kInvalidArgument;
  ASSERT_TRUE(OpenRwkvCppBin(WriteTempFile("tiny.bin", Tiny({}))).ok());
  std::string s = Tiny({});
  s += std::string("\x64\0\0\0\x01\0\0\0\0\0\0\0", 12);
  ExpectError("dims100.bin", s, bad, "dim_count 100");
  s = Tiny({});
  loader_test::PutLE(&s, 1, 4);
  loader_test::PutLE(&s, 0x80000000u, 4);
  loader_test::PutLE(&s, 0, 4);
  loader_test::PutLE(&s, 4, 4);
  ExpectError("key2g.bin", s, bad, "key_length 2147483648");
  ExpectError("past_eof.bin", Tiny({{"head.weight", 0, {4, 2}, F32Bytes(Iota(7))}}), bad,
              "past the end");
  ExpectError("huge_dims.bin",
              Tiny({{"x", 0, {0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}, ""}}), bad,
              "impossibly large");
  ExpectError("zero_dim.bin", Tiny({{"x", 0, {0}, ""}}), bad, "zero dimension");
  ExpectError("type99.bin", Tiny({{"x", 99, {4}, F32Bytes(Iota(4))}}), bad, "unknown data type 99");
  ExpectError("q8.bin", Tiny({{"x", 9, {32}, std::string(34, '\0')}}),
              absl::StatusCode::kUnimplemented, "Q8_0");
  ExpectError("dup.bin", Tiny({{"blocks.0.ln1.weight", 0, {4}, F32Bytes(Iota(4))}}), bad,
              "duplicate");
  ExpectError("embed.bin", Tiny({}, /*n_embed=*/5), bad, "n_embed 5");
  ExpectError("layers.bin", Tiny({}, 4, /*n_layer=*/2), bad, "n_layer 2");
  ExpectError("version.bin", Tiny({}, 4, 1, /*version=*/7), bad, "version 7");
  ExpectError("rwkvag.bin", Tiny({{"blocks.0.att.x_rwkvag", 0, {4, 5}, F32Bytes(Iota(20))}}), bad,
              "(6, 1, C)");
  ExpectError("lora.bin",
              Tiny({{"blocks.0.att.k_k", 0, {4}, F32Bytes(Iota(4))},
                    {"blocks.0.att.w1", 0, {4}, F32Bytes(Iota(4))}}),
              bad, "unexpected shape");
  ExpectError("noemb.bin", BuildGgmf(2, 4, 1, {{"blocks.0.x", 0, {4}, F32Bytes(Iota(4))}}), bad,
              "emb.weight");
  ExpectError("short.bin", Tiny({}).substr(0, 20), bad, "too small");
  ExpectError("trunc_header.bin", Tiny({}) + "\x01\0\0", bad, "truncated tensor header");
  ExpectError("magic.bin", "ggmf" + Tiny({}).substr(4), bad, "bad magic");
  ExpectError("zero_header.bin", BuildGgmf(0, 4, 1, {}), bad, "implausible header");
}

}  // namespace
}  // namespace rwkv
