// Tests of the torch.save (.pth) reader: the official checkpoints, then
// hand-made archives and pickles covering each feature and each refusal.
//
// Why hand-made archives: the official files exercise only the common path
// (no zip64, no views, no odd dtypes); the builders in test_util.h produce
// the rest, including hostile zips and pickles, byte for byte.
#include <cstring>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "engine/loader/binary_util.h"
#include "engine/loader/pickle.h"
#include "engine/loader/readers.h"
#include "engine/loader/tensor_source.h"
#include "engine/loader/test_util.h"
#include "engine/testing/testdata.h"
#include "gtest/gtest.h"

namespace rwkv {
namespace {

using loader_test::BuildPth;
using loader_test::BuildStateDictPickle;
using loader_test::BuildZip;
using loader_test::F32Bytes;
using loader_test::FakeTensor;
using loader_test::Iota;
using loader_test::ReadEveryTensor;
using loader_test::WriteTempFile;
using Shape = std::vector<int64_t>;

// The RWKV-7 official_ref checkpoint's names and shapes (README).
std::map<std::string, Shape> V7Shapes() {
  std::map<std::string, Shape> m = {{"emb.weight", {512, 128}},   {"blocks.0.ln0.weight", {128}},
                                    {"blocks.0.ln0.bias", {128}}, {"ln_out.weight", {128}},
                                    {"ln_out.bias", {128}},       {"head.weight", {512, 128}}};
  for (int i = 0; i < 3; ++i) {
    const std::string b = "blocks." + std::to_string(i) + ".";
    for (const char* n :
         {"ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias", "att.ln_x.weight", "att.ln_x.bias"}) {
      m[b + n] = {128};
    }
    for (const char* n : {"att.x_r", "att.x_w", "att.x_k", "att.x_v", "att.x_a", "att.x_g",
                          "att.w0", "att.a0", "att.k_k", "att.k_a", "ffn.x_k"}) {
      m[b + n] = {1, 1, 128};
    }
    for (const char* n : {"att.w1", "att.a1"}) m[b + n] = {128, 32};
    for (const char* n : {"att.w2", "att.a2"}) m[b + n] = {32, 128};
    m[b + "att.g1"] = {128, 64};
    m[b + "att.g2"] = {64, 128};
    if (i > 0) {
      m[b + "att.v1"] = {128, 32};
      m[b + "att.v2"] = {32, 128};
      m[b + "att.v0"] = {1, 1, 128};
    }
    m[b + "att.r_k"] = {2, 64};
    for (const char* n :
         {"att.receptance.weight", "att.key.weight", "att.value.weight", "att.output.weight"}) {
      m[b + n] = {128, 128};
    }
    m[b + "ffn.key.weight"] = {512, 128};
    m[b + "ffn.value.weight"] = {128, 512};
  }
  return m;
}

std::map<std::string, Shape> V4Shapes() {
  std::map<std::string, Shape> m = {{"emb.weight", {512, 128}},   {"blocks.0.ln0.weight", {128}},
                                    {"blocks.0.ln0.bias", {128}}, {"ln_out.weight", {128}},
                                    {"ln_out.bias", {128}},       {"head.weight", {512, 128}}};
  for (int i = 0; i < 3; ++i) {
    const std::string b = "blocks." + std::to_string(i) + ".";
    for (const char* n :
         {"ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias", "att.time_decay", "att.time_first"}) {
      m[b + n] = {128};
    }
    for (const char* n : {"att.time_mix_k", "att.time_mix_v", "att.time_mix_r", "ffn.time_mix_k",
                          "ffn.time_mix_r"}) {
      m[b + n] = {1, 1, 128};
    }
    for (const char* n : {"att.key.weight", "att.value.weight", "att.receptance.weight",
                          "att.output.weight", "ffn.receptance.weight"}) {
      m[b + n] = {128, 128};
    }
    m[b + "ffn.key.weight"] = {512, 128};
    m[b + "ffn.value.weight"] = {128, 512};
  }
  return m;
}

void ExpectShapes(const TensorSource& src, const std::map<std::string, Shape>& expected,
                  DType dtype) {
  const std::vector<std::string> names = src.Names();
  EXPECT_EQ(names.size(), expected.size());
  for (const std::string& n : names) {
    auto it = expected.find(n);
    ASSERT_NE(it, expected.end()) << "unexpected tensor " << n;
    const TensorInfo* info = src.Find(n);
    ASSERT_NE(info, nullptr) << n;
    EXPECT_EQ(info->shape, it->second) << n;
    EXPECT_EQ(info->dtype, dtype) << n;
  }
}

TEST(PthReaderTest, OfficialV7) {
  for (const char* file :
       {"official_ref/rwkv7_small_A.pth", "official_ref/rwkv7_small_A_torch2.pth"}) {
    RWKV_REQUIRE_TESTDATA(file);
    absl::StatusOr<std::unique_ptr<TensorSource>> src = OpenPth(testing::TestDataPath(file));
    ASSERT_TRUE(src.ok()) << src.status();
    ExpectShapes(**src, V7Shapes(), DType::kBF16);
    EXPECT_EQ((*src)->Names().front(), "emb.weight");  // checkpoint order
    EXPECT_EQ((*src)->Find("blocks.0.att.v0"), nullptr);
    EXPECT_EQ((*src)->TryZeroCopyF32("emb.weight"), nullptr);  // bf16
    EXPECT_FALSE((*src)->convention().v4_time_decay_is_neg_exp);
    EXPECT_TRUE(absl::StrContains((*src)->Describe(), "rwkv7_small_A"));
    EXPECT_TRUE(ReadEveryTensor(**src).ok());
    // ln weights are 1 + N(0, 0.1^2): a loose sanity check of the decoded values.
    std::vector<float> w(128);
    ASSERT_TRUE((*src)->Read("blocks.1.ln1.weight", DType::kF32, w.data()).ok());
    for (float x : w) EXPECT_NEAR(x, 1.0f, 0.6f);
  }
}

TEST(PthReaderTest, OfficialV4ZeroCopy) {
  for (const char* file :
       {"official_ref/rwkv4_small_A.pth", "official_ref/rwkv4_small_A_torch2.pth"}) {
    RWKV_REQUIRE_TESTDATA(file);
    absl::StatusOr<std::unique_ptr<TensorSource>> src = OpenPth(testing::TestDataPath(file));
    ASSERT_TRUE(src.ok()) << src.status();
    ExpectShapes(**src, V4Shapes(), DType::kF32);
    for (const std::string& n : (*src)->Names()) {
      const float* p = (*src)->TryZeroCopyF32(n);
      ASSERT_NE(p, nullptr) << n;  // torch aligns storages
      std::vector<float> v(static_cast<size_t>((*src)->Find(n)->numel()));
      ASSERT_TRUE((*src)->Read(n, DType::kF32, v.data()).ok());
      EXPECT_EQ(0, std::memcmp(p, v.data(), v.size() * 4)) << n;
    }
    std::vector<float> td(128);
    ASSERT_TRUE((*src)->Read("blocks.2.att.time_decay", DType::kF32, td.data()).ok());
    for (float x : td) EXPECT_TRUE(x >= -5.0f && x <= 1.5f) << x;  // raw U(-5, 1.5)
  }
}

absl::StatusOr<std::unique_ptr<TensorSource>> OpenBytes(const std::string& name,
                                                        const std::string& bytes) {
  return OpenPth(WriteTempFile(name, bytes));
}

// Opens a one-storage state dict built from `tensors` and `storage`.
absl::StatusOr<std::unique_ptr<TensorSource>> OpenFake(const std::string& name,
                                                       const std::vector<FakeTensor>& tensors,
                                                       const std::string& storage,
                                                       bool zip64 = false) {
  return OpenBytes(name, BuildPth(BuildStateDictPickle(tensors), {{"0", storage}}, zip64));
}

TEST(PthReaderTest, ViewsOffsetsAndZip64) {
  const std::vector<float> data = Iota(20);
  const std::vector<FakeTensor> tensors = {
      {"a", "FloatStorage", "0", 20, 0, {2, 3}, {3, 1}},
      {"b", "FloatStorage", "0", 20, 6, {2, 1, 4}, {4, 99, 1}},  // size-1 dim: any stride
      {"empty", "FloatStorage", "0", 20, 20, {0, 5}, {5, 1}},
  };
  for (bool zip64 : {false, true}) {
    absl::StatusOr<std::unique_ptr<TensorSource>> src =
        OpenFake("views.pth", tensors, F32Bytes(data), zip64);
    ASSERT_TRUE(src.ok()) << src.status();
    EXPECT_EQ((*src)->Names(), (std::vector<std::string>{"a", "b", "empty"}));
    std::vector<float> b(8);
    ASSERT_TRUE((*src)->Read("b", DType::kF32, b.data()).ok());
    EXPECT_EQ(b, (std::vector<float>{6, 7, 8, 9, 10, 11, 12, 13}));
    std::vector<uint16_t> h(6);
    ASSERT_TRUE((*src)->Read("a", DType::kF16, h.data()).ok());
    EXPECT_EQ(h[5], F32ToF16(5.0f));
    EXPECT_TRUE(ReadEveryTensor(**src).ok());
    EXPECT_EQ((*src)->Read("nope", DType::kF32, b.data()).code(), absl::StatusCode::kNotFound);
  }
}

TEST(PthReaderTest, HalfAndBf16Storages) {
  std::string bytes;
  for (float f : {1.0f, -2.5f, 0.125f}) loader_test::PutLE(&bytes, F32ToBf16(f), 2);
  absl::StatusOr<std::unique_ptr<TensorSource>> src =
      OpenFake("bf16.pth", {{"x", "BFloat16Storage", "0", 3, 0, {3}, {1}}}, bytes);
  ASSERT_TRUE(src.ok()) << src.status();
  std::vector<float> v(3);
  ASSERT_TRUE((*src)->Read("x", DType::kF32, v.data()).ok());
  EXPECT_EQ(v, (std::vector<float>{1.0f, -2.5f, 0.125f}));
  EXPECT_EQ((*src)->Find("x")->dtype, DType::kBF16);
  src =
      OpenFake("f16.pth", {{"x", "HalfStorage", "0", 1, 0, {1}, {1}}}, std::string("\x00\x3c", 2));
  ASSERT_TRUE(src.ok()) << src.status();
  ASSERT_TRUE((*src)->Read("x", DType::kF32, v.data()).ok());
  EXPECT_EQ(v[0], 1.0f);
}

TEST(PthReaderTest, ParameterWrapperMetadataAndProtocol4) {
  using loader_test::pickle::Global;
  using loader_test::pickle::Int;
  using loader_test::pickle::IntTuple;
  using loader_test::pickle::Str;
  // _rebuild_parameter(_rebuild_tensor_v2(...), True, OrderedDict()), a BUILD
  // with _metadata, protocol-4 opcodes (FRAME, SHORT_BINUNICODE, MEMOIZE, STACK_GLOBAL).
  std::string p = "\x80\x04\x95" + std::string(8, '\0');
  p += "\x8c\x0b"
       "collections\x94\x8c\x0b"
       "OrderedDict\x94\x93\x94)R\x94(";
  p += Str("w") + Global("torch._utils", "_rebuild_parameter");
  p += "(" + Global("torch._utils", "_rebuild_tensor_v2") + "((" + Str("storage") +
       Global("torch", "FloatStorage") + Str("0") + Str("cpu") + Int(4) + "tQ" + Int(0) +
       IntTuple({4}) + IntTuple({1}) + "\x88" + "}" + "tR";
  p += "\x88}tR";
  p += "u}" + Str("_metadata") + "}s" + "b.";
  absl::StatusOr<std::unique_ptr<TensorSource>> src =
      OpenBytes("param.pth", BuildPth(p, {{"0", F32Bytes(Iota(4))}}));
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ((*src)->Find("w")->shape, Shape{4});
}

void ExpectError(const absl::StatusOr<std::unique_ptr<TensorSource>>& s, absl::StatusCode code,
                 const std::string& needle) {
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), code) << s.status();
  EXPECT_TRUE(absl::StrContains(s.status().message(), needle)) << s.status();
}

TEST(PthReaderTest, RefusesUnsupportedTensors) {
  const std::string storage = F32Bytes(Iota(16));
  ExpectError(OpenFake("strided.pth", {{"t", "FloatStorage", "0", 16, 0, {2, 2}, {1, 2}}}, storage),
              absl::StatusCode::kUnimplemented, "not contiguous");
  ExpectError(OpenFake("f64.pth", {{"t", "DoubleStorage", "0", 2, 0, {2}, {1}}}, storage),
              absl::StatusCode::kUnimplemented, "float64");
  ExpectError(OpenFake("i64.pth", {{"t", "LongStorage", "0", 2, 0, {2}, {1}}}, storage),
              absl::StatusCode::kUnimplemented, "int64");
  ExpectError(OpenFake("weird.pth", {{"t", "WeirdStorage", "0", 2, 0, {2}, {1}}}, storage),
              absl::StatusCode::kInvalidArgument, "WeirdStorage");
  ExpectError(
      OpenFake("outside.pth", {{"t", "FloatStorage", "0", 16, 10, {2, 4}, {4, 1}}}, storage),
      absl::StatusCode::kInvalidArgument, "outside its storage");
  ExpectError(OpenFake("numel.pth", {{"t", "FloatStorage", "0", 17, 0, {2}, {1}}}, storage),
              absl::StatusCode::kInvalidArgument, "claims 17 elements");
  ExpectError(OpenFake("huge_numel.pth",
                       {{"t", "FloatStorage", "0", int64_t{1} << 62, 0, {2}, {1}}}, storage),
              absl::StatusCode::kInvalidArgument, "claims");
  ExpectError(OpenFake("huge_shape.pth",
                       {{"t",
                         "FloatStorage",
                         "0",
                         16,
                         0,
                         {int64_t{1} << 40, int64_t{1} << 40},
                         {int64_t{1} << 40, 1}}},
                       storage),
              absl::StatusCode::kInvalidArgument, "invalid shape");
  ExpectError(
      OpenFake("dims9.pth", {{"t", "FloatStorage", "0", 16, 0, Shape(9, 1), Shape(9, 1)}}, storage),
      absl::StatusCode::kInvalidArgument, "dimensions");
  ExpectError(OpenFake("dup.pth",
                       {{"t", "FloatStorage", "0", 16, 0, {2}, {1}},
                        {"t", "FloatStorage", "0", 16, 0, {2}, {1}}},
                       storage),
              absl::StatusCode::kInvalidArgument, "duplicate");
  ExpectError(OpenBytes("nostorage.pth",
                        BuildPth(BuildStateDictPickle({{"t", "FloatStorage", "7", 2, 0, {2}, {1}}}),
                                 {{"0", storage}})),
              absl::StatusCode::kInvalidArgument, "no entry archive/data/7");
  // Deflate-compressed entries are refused by name.
  ExpectError(OpenBytes("deflate.pth", BuildZip({{"archive/data.pkl", "x", 8}})),
              absl::StatusCode::kUnimplemented, "compressed (deflate)");
  ExpectError(OpenBytes("nopkl.pth", BuildZip({{"archive/other", "x"}})),
              absl::StatusCode::kInvalidArgument, "no data.pkl");
  ExpectError(OpenBytes("bigendian.pth", BuildZip({{"a/data.pkl", "x"}, {"a/byteorder", "big"}})),
              absl::StatusCode::kUnimplemented, "byte order");
}

TEST(PthReaderTest, RefusesHostileZips) {
  const std::string good =
      BuildPth(BuildStateDictPickle({{"t", "FloatStorage", "0", 4, 0, {4}, {1}}}),
               {{"0", F32Bytes(Iota(4))}});
  ASSERT_TRUE(OpenBytes("good.pth", good).ok());
  const size_t eocd = good.size() - 22;
  auto patched = [&](size_t at, uint64_t v, int n) {
    std::string s = good;
    loader_test::SetLE(&s, at, v, n);
    return s;
  };
  ExpectError(OpenBytes("cd_oob.pth", patched(eocd + 16, 0x7fffffff, 4)),
              absl::StatusCode::kInvalidArgument, "outside the file");
  ExpectError(OpenBytes("cd_size.pth", patched(eocd + 12, 0xfffffff0u, 4)),
              absl::StatusCode::kInvalidArgument, "outside the file");
  ExpectError(OpenBytes("count.pth", patched(eocd + 8, 0xffff, 2)),
              absl::StatusCode::kInvalidArgument, "multi-disk");
  {
    std::string s = patched(eocd + 8, 0xffff, 2);
    loader_test::SetLE(&s, eocd + 10, 0xffff, 2);
    ExpectError(OpenBytes("count2.pth", s), absl::StatusCode::kInvalidArgument, "entries");
  }
  const size_t cd =
      loader_internal::LoadLE32(reinterpret_cast<const uint8_t*>(good.data()) + eocd + 16);
  ExpectError(OpenBytes("local_oob.pth", patched(cd + 42, 0x7ffffff0, 4)),
              absl::StatusCode::kInvalidArgument, "out of bounds");
  ExpectError(OpenBytes("entry_size.pth", patched(cd + 24, 0x7ffffff0, 4)),
              absl::StatusCode::kInvalidArgument, "");
  ExpectError(OpenBytes("no_eocd.pth", good.substr(0, good.size() - 1)),
              absl::StatusCode::kInvalidArgument, "end-of-central-directory");
  ExpectError(OpenBytes("tiny.pth", "PK\x03\x04"), absl::StatusCode::kInvalidArgument, "");
  // A zip64 locator pointing outside the file.
  std::string z64 = BuildPth(BuildStateDictPickle({{"t", "FloatStorage", "0", 4, 0, {4}, {1}}}),
                             {{"0", F32Bytes(Iota(4))}}, /*zip64=*/true);
  ASSERT_TRUE(OpenBytes("z64.pth", z64).ok());
  loader_test::SetLE(&z64, z64.size() - 22 - 20 + 8, uint64_t{1} << 62, 8);
  ExpectError(OpenBytes("z64_oob.pth", z64), absl::StatusCode::kInvalidArgument, "zip64");
}

// A pickle wrapped in a minimal archive.
absl::StatusOr<std::unique_ptr<TensorSource>> OpenPickle(const std::string& name,
                                                         const std::string& pkl) {
  return OpenBytes(name, BuildPth(pkl, {{"0", F32Bytes(Iota(4))}}));
}

TEST(PthReaderTest, RefusesHostilePickles) {
  using loader_test::pickle::Global;
  using loader_test::pickle::Int;
  using loader_test::pickle::IntTuple;
  using loader_test::pickle::Str;
  const std::string od = "\x80\x02" + Global("collections", "OrderedDict") + ")R";
  const auto code = absl::StatusCode::kInvalidArgument;
  ExpectError(OpenPickle("p_strlen.pth", od + "(X\xff\xff\xff\xff"
                                              "abc"),
              code, "runs past the end");
  ExpectError(OpenPickle("p_str8.pth", od + "(\x8d\xff\xff\xff\xff\xff\xff\xff\xff"), code, "");
  ExpectError(OpenPickle("p_marks.pth", od + std::string(1000000, '(')), code,
              "MARKs nested too deeply");
  ExpectError(OpenPickle("p_underflow.pth", "\x80\x02R."), code, "stack underflow");
  ExpectError(OpenPickle("p_memo.pth", od + "j\xff\xff\xff\xff."), code, "memo key");
  ExpectError(OpenPickle("p_nostop.pth", od), code, "without STOP");
  ExpectError(OpenPickle("p_opcode.pth", od + "\xff"), code, "unsupported pickle opcode");
  ExpectError(OpenPickle("p_proto.pth", "\x80\x07}."), code, "protocol");
  ExpectError(OpenPickle("p_notdict.pth", "\x80\x02]."), code, "not a state dict");
  ExpectError(OpenPickle("p_notensor.pth", od + "(" + Str("x") + Int(5) + "u."), code,
              "'x' is a int");
  ExpectError(OpenPickle("p_object.pth", od + "(" + Str("x") + Global("os", "system") + ")Ru."),
              code, "os.system");
  ExpectError(OpenPickle("p_long.pth", od + "\x8a\x09" + std::string(9, '\x01') + "."), code,
              "too large");
  ExpectError(OpenPickle("p_global.pth", od + "c" + std::string(1000, 'a')), code, "GLOBAL");
  // Deep nesting without MARKs: 200k lists each appended into the previous one.
  std::string deep = "\x80\x02";
  deep += std::string(200000, ']');
  deep += std::string(199999, 'a');
  ExpectError(OpenPickle("p_deep.pth", deep + "."), code, "not a state dict");
  // Deep tuple nesting and a self-referential list through the memo.
  ExpectError(OpenPickle("p_tuple.pth", "\x80\x02N" + std::string(300000, '\x85') + "."), code,
              "not a state dict");
  ExpectError(OpenPickle("p_cycle.pth", std::string("\x80\x02]q\x00h\x00"
                                                    "a.",
                                                    9)),
              code, "not a state dict");
}

TEST(PthReaderTest, PickleLimits) {
  using loader_internal::ParseTorchStateDict;
  using loader_internal::PickleLimits;
  const auto bytes = [](const std::string& s) {
    return std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size());
  };
  PickleLimits small;
  small.max_stack = 100;
  small.max_values = 1000;
  small.max_memo = 10;
  small.max_marks = 4;
  std::string many_values = "\x80\x02";
  for (int k = 0; k < 1001; ++k) many_values += "N0";
  absl::StatusOr<std::vector<loader_internal::PickledTensor>> r =
      ParseTorchStateDict(bytes(many_values + "}."), small);
  EXPECT_TRUE(absl::StrContains(r.status().message(), "too many values")) << r.status();
  r = ParseTorchStateDict(bytes("\x80\x02" + std::string(101, 'N') + "."), small);
  EXPECT_TRUE(absl::StrContains(r.status().message(), "stack too deep")) << r.status();
  std::string memo = "\x80\x02N";
  for (int k = 0; k < 11; ++k) memo += "q" + std::string(1, static_cast<char>(k));
  r = ParseTorchStateDict(bytes(memo + "."), small);
  EXPECT_TRUE(absl::StrContains(r.status().message(), "memo too large")) << r.status();
  r = ParseTorchStateDict(bytes("\x80\x02(((((N."), small);
  EXPECT_TRUE(absl::StrContains(r.status().message(), "MARKs nested too deeply")) << r.status();
  r = ParseTorchStateDict(bytes("\x80\x02}."), small);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->empty());
}

}  // namespace
}  // namespace rwkv
