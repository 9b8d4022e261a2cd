// The RWKV_CUDA_* overrides: well-formed values land in the options, and a
// malformed one is an error naming it, with nothing changed. Pure host code:
// runs everywhere.
#include "engine/model/cuda_env.h"

#include <cstdlib>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace rwkv {
namespace {

constexpr const char* kVars[] = {"RWKV_CUDA_GRAPHS",          "RWKV_CUDA_PASS_PADDING", "RWKV_CUDA_BATCH_INVARIANT",
                                 "RWKV_CUDA_PDL",             "RWKV_CUDA_SMALL_BATCH_ROWS", "RWKV_CUDA_SKINNY_ROWS",
                                 "RWKV_CUDA_SKINNY_LORA_ROWS", "RWKV_CUDA_SPARSE_FFN_ROWS", "RWKV_CUDA_FUSE_PREP",
                                 "RWKV_CUDA_PAD_LORA",        "RWKV_CUDA_SKINNY_WIDE_ROWS", "RWKV_CUDA_SPLIT_FREE_FFN_ROWS",
                                 "RWKV_CUDA_LORA_ROWS",       "RWKV_CUDA_LORA_SIDE_STREAM"};

class CudaEnvTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* v : kVars) unsetenv(v);
  }
  void TearDown() override { SetUp(); }
};

TEST_F(CudaEnvTest, UnsetAndEmptyLeaveTheOptions) {
  CudaBackendOptions o;
  o.skinny_rows = 7;
  setenv("RWKV_CUDA_GRAPHS", "", 1);
  ASSERT_TRUE(ApplyCudaEnvironment(&o).ok());
  EXPECT_TRUE(o.cuda_graphs);
  EXPECT_EQ(o.skinny_rows, 7);
  EXPECT_EQ(o.small_batch_rows, CudaBackendOptions::kDefaultSmallBatchRows);
}

TEST_F(CudaEnvTest, WellFormedValuesApply) {
  CudaBackendOptions o;
  setenv("RWKV_CUDA_GRAPHS", "0", 1);
  setenv("RWKV_CUDA_PASS_PADDING", "0", 1);
  setenv("RWKV_CUDA_BATCH_INVARIANT", "1", 1);
  setenv("RWKV_CUDA_PDL", "0", 1);
  setenv("RWKV_CUDA_SMALL_BATCH_ROWS", "0", 1);
  setenv("RWKV_CUDA_SKINNY_ROWS", "64", 1);
  setenv("RWKV_CUDA_SKINNY_LORA_ROWS", "32", 1);
  setenv("RWKV_CUDA_SKINNY_WIDE_ROWS", "12", 1);
  setenv("RWKV_CUDA_SPARSE_FFN_ROWS", "16", 1);
  setenv("RWKV_CUDA_FUSE_PREP", "0", 1);
  setenv("RWKV_CUDA_PAD_LORA", "0", 1);
  setenv("RWKV_CUDA_SPLIT_FREE_FFN_ROWS", "0", 1);
  setenv("RWKV_CUDA_LORA_ROWS", "960", 1);
  setenv("RWKV_CUDA_LORA_SIDE_STREAM", "0", 1);
  ASSERT_TRUE(ApplyCudaEnvironment(&o).ok());
  EXPECT_FALSE(o.lora_side_stream);
  EXPECT_EQ(o.split_free_ffn_rows, 0);
  EXPECT_EQ(o.lora_gemm_rows, 960);
  EXPECT_FALSE(o.pad_lora);
  EXPECT_FALSE(o.fuse_v7_prep);
  EXPECT_FALSE(o.cuda_graphs);
  EXPECT_FALSE(o.pass_padding);
  EXPECT_TRUE(o.batch_invariant);
  EXPECT_FALSE(o.programmatic_launch);
  EXPECT_EQ(o.small_batch_rows, 0);
  EXPECT_EQ(o.skinny_rows, 64);
  EXPECT_EQ(o.skinny_lora_rows, 32);
  EXPECT_EQ(o.skinny_wide_rows, 12);
  EXPECT_EQ(o.sparse_ffn_rows, 16);
}

TEST_F(CudaEnvTest, MalformedValuesAreNamedAndChangeNothing) {
  const std::vector<std::pair<const char*, const char*>> bad = {
      {"RWKV_CUDA_GRAPHS", "yes"},        {"RWKV_CUDA_GRAPHS", "10"},         {"RWKV_CUDA_PASS_PADDING", "true"},
      {"RWKV_CUDA_BATCH_INVARIANT", "2"}, {"RWKV_CUDA_PDL", "on"}, {"RWKV_CUDA_SKINNY_ROWS", "sixteen"}, {"RWKV_CUDA_SKINNY_ROWS", "65"},
      {"RWKV_CUDA_SKINNY_ROWS", "-1"},    {"RWKV_CUDA_SMALL_BATCH_ROWS", "4x"}, {"RWKV_CUDA_SKINNY_LORA_ROWS", "1e3"},
      {"RWKV_CUDA_SPARSE_FFN_ROWS", "65"}, {"RWKV_CUDA_FUSE_PREP", "no"}, {"RWKV_CUDA_PAD_LORA", "2"},
      {"RWKV_CUDA_SKINNY_WIDE_ROWS", "65"}, {"RWKV_CUDA_SKINNY_WIDE_ROWS", "seven"},
      {"RWKV_CUDA_SPLIT_FREE_FFN_ROWS", "4097"}, {"RWKV_CUDA_SPLIT_FREE_FFN_ROWS", "-1"},
      {"RWKV_CUDA_LORA_ROWS", "4097"}, {"RWKV_CUDA_LORA_ROWS", "all"}, {"RWKV_CUDA_LORA_SIDE_STREAM", "2"},
  };
  for (const auto& [name, value] : bad) {
    SetUp();
    setenv("RWKV_CUDA_GRAPHS", "0", 1);  // well-formed, but must not land either
    setenv(name, value, 1);
    CudaBackendOptions o;
    o.skinny_rows = 9;
    const absl::Status s = ApplyCudaEnvironment(&o);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << name << "=" << value;
    EXPECT_NE(std::string(s.message()).find(std::string(name) + "=" + value), std::string::npos) << s;
    EXPECT_TRUE(o.cuda_graphs) << name << "=" << value;
    EXPECT_EQ(o.skinny_rows, 9) << name << "=" << value;
  }
}

}  // namespace
}  // namespace rwkv
