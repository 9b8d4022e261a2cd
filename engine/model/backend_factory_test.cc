// Backend selection: names, the CPU fallback of "auto", and clear errors.
#include "engine/model/backend_factory.h"

#include "gtest/gtest.h"

namespace rwkv {
namespace {

TEST(BackendFactoryTest, CpuAndAutoAlwaysGiveABackend) {
  std::string note;
  auto cpu = MakeBackend({"cpu", 2, DType::kF16}, &note);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  EXPECT_EQ((*cpu)->name(), "cpu");
  EXPECT_NE(note.find("backend cpu, 2 threads"), std::string::npos) << note;
  auto any = MakeBackend({"auto", 1, DType::kF16}, &note);
  ASSERT_TRUE(any.ok()) << any.status();
  EXPECT_TRUE((*any)->name() == "cpu" || (*any)->name() == "cuda");
  EXPECT_NE(note.find("backend " + (*any)->name()), std::string::npos) << note;
}

TEST(BackendFactoryTest, CudaEitherWorksOrSaysWhy) {
  auto cuda = MakeBackend({"cuda", 1, DType::kF16});
  if (cuda.ok()) {
    EXPECT_EQ((*cuda)->name(), "cuda");
  } else {
    EXPECT_EQ(cuda.status().code(), absl::StatusCode::kFailedPrecondition) << cuda.status();
    EXPECT_FALSE(cuda.status().message().empty());
  }
}

TEST(BackendFactoryTest, BadNames) {
  EXPECT_EQ(MakeBackend({"tpu", 1, DType::kF16}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseWeightDType("f16").value(), DType::kF16);
  EXPECT_EQ(ParseWeightDType("bf16").value(), DType::kBF16);
  EXPECT_EQ(ParseWeightDType("f32").value(), DType::kF32);
  EXPECT_EQ(ParseWeightDType("int8").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseStateDType("fp32").value(), DType::kF32);
  EXPECT_EQ(ParseStateDType("fp16").value(), DType::kF16);
  EXPECT_EQ(ParseStateDType("f16").value(), DType::kF16);
  EXPECT_EQ(ParseStateDType("bf16").status().code(), absl::StatusCode::kInvalidArgument);
}

#ifdef RWKV_HAVE_CUDA_BACKEND
// A malformed RWKV_CUDA_* override fails the CUDA and auto choices with its
// name (no quiet fall back to the CPU); the CPU choice does not read them.
TEST(BackendFactoryTest, MalformedCudaEnvironmentIsAnError) {
  setenv("RWKV_CUDA_SKINNY_ROWS", "sixteen", 1);
  for (const char* name : {"cuda", "auto"}) {
    auto b = MakeBackend({name, 1, DType::kF16});
    EXPECT_EQ(b.status().code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_NE(b.status().message().find("RWKV_CUDA_SKINNY_ROWS=sixteen"), std::string::npos) << b.status();
  }
  EXPECT_TRUE(MakeBackend({"cpu", 1, DType::kF16}).ok());
  unsetenv("RWKV_CUDA_SKINNY_ROWS");
}
#endif

}  // namespace
}  // namespace rwkv
