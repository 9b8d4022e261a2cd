// Tests of OpenTensorSource: format sniffing, errors for non-model files, and
// that the three official containers of each model hold identical tensors.
//
// Why the cross-container check: the same reference logits apply to all three
// files of a model, which holds only if every reader decodes bit-identically.
#include <map>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "engine/loader/tensor_source.h"
#include "engine/loader/test_util.h"
#include "engine/testing/testdata.h"
#include "gtest/gtest.h"

namespace rwkv {
namespace {

using loader_test::WriteTempFile;

TEST(OpenTest, DispatchesByContent) {
  struct Case {
    const char* file;
    const char* format;
  };
  for (const Case& c : {Case{"official_ref/rwkv7_small_A.pth", "torch.save"},
                        Case{"official_ref/rwkv4_small_A_torch2.pth", "torch.save"},
                        Case{"official_ref/rwkv7_small_A.safetensors", "safetensors"},
                        Case{"rwkv_cpp/tiny-rwkv-4v0-660K-FP32.bin", "rwkv.cpp"}}) {
    RWKV_REQUIRE_TESTDATA(c.file);
    absl::StatusOr<std::unique_ptr<TensorSource>> src =
        OpenTensorSource(testing::TestDataPath(c.file));
    ASSERT_TRUE(src.ok()) << c.file << ": " << src.status();
    EXPECT_TRUE(absl::StrContains((*src)->Describe(), c.format)) << (*src)->Describe();
    EXPECT_TRUE(absl::StrContains((*src)->Describe(), c.file)) << (*src)->Describe();
  }
}

TEST(OpenTest, RefusesNonModelFiles) {
  absl::StatusOr<std::unique_ptr<TensorSource>> s = OpenTensorSource("/nonexistent/model.pth");
  EXPECT_EQ(s.status().code(), absl::StatusCode::kNotFound) << s.status();
  for (auto open : {&OpenPth, &OpenSafetensors, &OpenRwkvCppBin}) {
    EXPECT_EQ(open("/nonexistent/model").status().code(), absl::StatusCode::kNotFound);
  }
  const std::string empty = WriteTempFile("empty.bin", "");
  s = OpenTensorSource(empty);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(s.status().message(), "empty")) << s.status();
  for (const std::string& junk :
       {std::string("hello, world, this is text"), std::string("PK"), std::string(7, '\0'),
        std::string("\xff\xff\xff\xff\xff\xff\xff\x7f{", 9)}) {
    const std::string path = WriteTempFile("junk.bin", junk);
    s = OpenTensorSource(path);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << s.status();
    EXPECT_TRUE(absl::StrContains(s.status().message(), "unrecognised model file format"))
        << s.status();
    EXPECT_TRUE(absl::StrContains(s.status().message(), path)) << s.status();
  }
  // A safetensors file with no tensors is well-formed (the model builder reports what is missing).
  s = OpenTensorSource(WriteTempFile("no_tensors.st", std::string("\x02\0\0\0\0\0\0\0{}", 10)));
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_TRUE((*s)->Names().empty());
}

// Every tensor's stored bytes, by name.
std::map<std::string, std::pair<TensorInfo, std::string>> Contents(const TensorSource& src) {
  std::map<std::string, std::pair<TensorInfo, std::string>> m;
  for (const std::string& n : src.Names()) {
    const TensorInfo& info = *src.Find(n);
    std::string bytes(static_cast<size_t>(info.numel()) * DTypeSize(info.dtype), '\0');
    EXPECT_TRUE(src.Read(n, info.dtype, bytes.data()).ok()) << n;
    m[n] = {info, bytes};
  }
  return m;
}

TEST(OpenTest, OfficialContainersAreBitIdentical) {
  for (const std::string model : {"official_ref/rwkv7_small_A", "official_ref/rwkv4_small_A"}) {
    std::vector<std::map<std::string, std::pair<TensorInfo, std::string>>> all;
    for (const std::string suffix : {".pth", "_torch2.pth", ".safetensors"}) {
      RWKV_REQUIRE_TESTDATA(model + suffix);
      absl::StatusOr<std::unique_ptr<TensorSource>> src =
          OpenTensorSource(testing::TestDataPath(model + suffix));
      ASSERT_TRUE(src.ok()) << src.status();
      all.push_back(Contents(**src));
    }
    ASSERT_EQ(all[0].size(), model.find("rwkv7") != std::string::npos ? 102u : 60u);
    for (size_t k = 1; k < all.size(); ++k) {
      ASSERT_EQ(all[k].size(), all[0].size());
      for (const auto& [name, v] : all[0]) {
        auto it = all[k].find(name);
        ASSERT_NE(it, all[k].end()) << name;
        EXPECT_EQ(it->second.first.shape, v.first.shape) << name;
        EXPECT_EQ(it->second.first.dtype, v.first.dtype) << name;
        EXPECT_TRUE(it->second.second == v.second) << model << " container " << k << ": " << name;
      }
    }
  }
}

}  // namespace
}  // namespace rwkv
