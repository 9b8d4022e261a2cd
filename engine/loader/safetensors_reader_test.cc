// Tests of the safetensors reader: the official files, hand-made files and
// every refusal of a malformed header.
//
// Why one case per field: each check in the reader guards a way a header can
// lie (sizes, offsets, dtypes), and each must fail with a message naming it.
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "engine/loader/tensor_source.h"
#include "engine/loader/test_util.h"
#include "engine/testing/testdata.h"
#include "gtest/gtest.h"

namespace rwkv {
namespace {

using loader_test::BuildSafetensors;
using loader_test::F32Bytes;
using loader_test::Iota;
using loader_test::ReadEveryTensor;
using loader_test::WriteTempFile;
using Shape = std::vector<int64_t>;

TEST(SafetensorsReaderTest, OfficialFiles) {
  struct Case {
    const char* file;
    size_t count;
    DType dtype;
  };
  for (const Case& c : {Case{"official_ref/rwkv7_small_A.safetensors", 102, DType::kBF16},
                        Case{"official_ref/rwkv4_small_A.safetensors", 60, DType::kF32}}) {
    RWKV_REQUIRE_TESTDATA(c.file);
    absl::StatusOr<std::unique_ptr<TensorSource>> src =
        OpenSafetensors(testing::TestDataPath(c.file));
    ASSERT_TRUE(src.ok()) << src.status();
    EXPECT_EQ((*src)->Names().size(), c.count);
    for (const std::string& n : (*src)->Names()) EXPECT_EQ((*src)->Find(n)->dtype, c.dtype) << n;
    EXPECT_EQ((*src)->Find("emb.weight")->shape, (Shape{512, 128}));
    EXPECT_TRUE(absl::StrContains((*src)->Describe(), "safetensors"));
    EXPECT_TRUE(ReadEveryTensor(**src).ok());
    // The header is padded to 8 bytes, so fp32 data is aligned for zero-copy.
    const float* p = (*src)->TryZeroCopyF32("emb.weight");
    if (c.dtype == DType::kF32) {
      ASSERT_NE(p, nullptr);
      std::vector<float> v(512 * 128);
      ASSERT_TRUE((*src)->Read("emb.weight", DType::kF32, v.data()).ok());
      EXPECT_EQ(0, std::memcmp(p, v.data(), v.size() * 4));
    } else {
      EXPECT_EQ(p, nullptr);
    }
  }
}

absl::StatusOr<std::unique_ptr<TensorSource>> Open(const std::string& name,
                                                   const std::string& header,
                                                   const std::string& data) {
  return OpenSafetensors(WriteTempFile(name, BuildSafetensors(header, data)));
}

TEST(SafetensorsReaderTest, HandMadeFile) {
  std::string data = F32Bytes(Iota(6));
  loader_test::PutLE(&data, F32ToF16(2.0f), 2);
  loader_test::PutLE(&data, F32ToBf16(-3.0f), 2);
  const std::string header =
      R"({"__metadata__":{"format":"pt"},"b":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},)"
      R"("h":{"dtype":"F16","shape":[1],"data_offsets":[24,26]},)"
      R"("z":{"dtype":"BF16","shape":[],"data_offsets":[26,28]},)"
      R"("e":{"dtype":"F32","shape":[0,4],"data_offsets":[28,28]}}   )";
  absl::StatusOr<std::unique_ptr<TensorSource>> src = Open("hand.safetensors", header, data);
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ((*src)->Names(), (std::vector<std::string>{"b", "h", "z", "e"}));  // header order
  std::vector<float> v(6);
  ASSERT_TRUE((*src)->Read("b", DType::kF32, v.data()).ok());
  EXPECT_EQ(v, Iota(6));
  ASSERT_TRUE((*src)->Read("h", DType::kF32, v.data()).ok());
  EXPECT_EQ(v[0], 2.0f);
  ASSERT_TRUE((*src)->Read("z", DType::kF32, v.data()).ok());
  EXPECT_EQ(v[0], -3.0f);
  EXPECT_EQ((*src)->Find("z")->shape, Shape{});
  EXPECT_EQ((*src)->Find("z")->numel(), 1);
  EXPECT_EQ((*src)->Find("e")->numel(), 0);
  EXPECT_TRUE(ReadEveryTensor(**src).ok());
}

void ExpectError(const absl::StatusOr<std::unique_ptr<TensorSource>>& s, absl::StatusCode code,
                 const std::string& needle) {
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), code) << s.status();
  EXPECT_TRUE(absl::StrContains(s.status().message(), needle)) << s.status();
}

TEST(SafetensorsReaderTest, RefusesMalformedHeaders) {
  const std::string data = F32Bytes(Iota(8));
  const auto bad = absl::StatusCode::kInvalidArgument;
  auto one = [&](const std::string& desc) { return R"({"t":)" + desc + "}"; };
  ExpectError(Open("s_f64.st", one(R"({"dtype":"F64","shape":[2],"data_offsets":[0,16]})"), data),
              absl::StatusCode::kUnimplemented, "F64");
  ExpectError(Open("s_i8.st", one(R"({"dtype":"I8","shape":[2],"data_offsets":[0,2]})"), data),
              absl::StatusCode::kUnimplemented, "I8");
  ExpectError(Open("s_unk.st", one(R"({"dtype":"Q9","shape":[2],"data_offsets":[0,2]})"), data),
              bad, "Q9");
  ExpectError(Open("s_oob.st", one(R"({"dtype":"F32","shape":[16],"data_offsets":[0,64]})"), data),
              bad, "past the end");
  ExpectError(
      Open(
          "s_oob2.st",
          one(R"({"dtype":"F32","shape":[1],"data_offsets":[18446744073709551612,18446744073709551616]})"),
          data),
      bad, "data_offsets");
  ExpectError(Open("s_neg.st", one(R"({"dtype":"F32","shape":[-2],"data_offsets":[0,8]})"), data),
              bad, "non-negative");
  ExpectError(Open("s_frac.st", one(R"({"dtype":"F32","shape":[2.5],"data_offsets":[0,8]})"), data),
              bad, "non-negative");
  ExpectError(
      Open("s_mismatch.st", one(R"({"dtype":"F32","shape":[3],"data_offsets":[0,8]})"), data), bad,
      "need 12 bytes");
  ExpectError(
      Open("s_reversed.st", one(R"({"dtype":"F32","shape":[0],"data_offsets":[8,0]})"), data), bad,
      "invalid data_offsets");
  ExpectError(
      Open(
          "s_overflow.st",
          one(R"({"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]})"),
          data),
      bad, "overflow");
  ExpectError(
      Open("s_empty_huge.st",
           one(R"({"dtype":"F32","shape":[2147483648,4294967296,0],"data_offsets":[0,0]})"), data),
      bad, "impossibly large");
  ExpectError(
      Open("s_dims.st", one(R"({"dtype":"F32","shape":[1,1,1,1,1,1,1,1,2],"data_offsets":[0,8]})"),
           data),
      bad, "dimensions");
  ExpectError(Open("s_overlap.st",
                   R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                   R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                   data),
              bad, "overlap");
  ExpectError(Open("s_dupkey.st",
                   R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                   R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                   data),
              bad, "duplicate");
  ExpectError(Open("s_noshape.st", one(R"({"dtype":"F32","data_offsets":[0,8]})"), data), bad,
              "shape");
  ExpectError(Open("s_nodtype.st", one(R"({"dtype":7,"shape":[2],"data_offsets":[0,8]})"), data),
              bad, "dtype");
  ExpectError(
      Open("s_offsets3.st", one(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8,9]})"), data),
      bad, "data_offsets");
  ExpectError(Open("s_notobj.st", one("[1]"), data), bad, "not described by an object");
  ExpectError(Open("s_meta.st", R"({"__metadata__":{"a":1}})", data), bad, "__metadata__");
  ExpectError(Open("s_array.st", "[]", data), bad, "not an object");
  ExpectError(Open("s_json.st", "{\"a\":", data), bad, "JSON");
  ExpectError(Open("s_deep.st", std::string(5000, '[') + std::string(5000, ']'), data), bad,
              "too deep");
  // Header lengths that do not fit the file.
  std::string huge;
  loader_test::PutLE(&huge, uint64_t{1} << 63, 8);
  ExpectError(OpenSafetensors(WriteTempFile("s_huge.st", huge + "{}")), bad, "exceeds the limit");
  std::string past;
  loader_test::PutLE(&past, 1000, 8);
  ExpectError(OpenSafetensors(WriteTempFile("s_past.st", past + "{}")), bad, "past the end");
  ExpectError(OpenSafetensors(WriteTempFile("s_short.st", "abc")), bad, "too small");
}

}  // namespace
}  // namespace rwkv
