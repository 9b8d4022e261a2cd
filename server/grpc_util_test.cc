// Tests of the status mapping and of raw request parsing.
#include "server/grpc_util.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rwkv/v1/rwkv.pb.h"

namespace rwkv {
namespace {

using ::testing::HasSubstr;

grpc::ByteBuffer BufferOf(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

TEST(StatusMappingTest, EveryCodeMapsOneToOneWithItsMessage) {
  for (int code = 1; code <= 16; ++code) {
    const absl::Status s(static_cast<absl::StatusCode>(code), "why " + std::to_string(code));
    const grpc::Status g = ToGrpcStatus(s);
    EXPECT_EQ(static_cast<int>(g.error_code()), code);
    EXPECT_EQ(g.error_message(), "why " + std::to_string(code));
    EXPECT_EQ(FromGrpcStatus(g), s);
  }
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK).ok());
  EXPECT_EQ(ToGrpcStatus(absl::InvalidArgumentError("x")).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(ToGrpcStatus(absl::FailedPreconditionError("x")).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(ToGrpcStatus(absl::ResourceExhaustedError("x")).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(ToGrpcStatus(absl::UnavailableError("x")).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST(StatusMappingTest, UnknownCodeBecomesUnknown) {
  const absl::Status odd(static_cast<absl::StatusCode>(99), "odd");
  EXPECT_EQ(ToGrpcStatus(odd).error_code(), grpc::StatusCode::UNKNOWN);
}

TEST(RawProtoTest, RoundTrip) {
  v1::GenerateRequest req;
  req.set_text("héllo");
  req.set_max_tokens(5);
  grpc::ByteBuffer buffer;
  SerializeRawResponse(req, &buffer);
  v1::GenerateRequest parsed;
  ASSERT_TRUE(ParseRawRequest(buffer, &parsed).ok());
  EXPECT_EQ(parsed.text(), "héllo");
  EXPECT_EQ(parsed.max_tokens(), 5);
  // The buffer is not consumed: it parses again.
  v1::GenerateRequest again;
  EXPECT_TRUE(ParseRawRequest(buffer, &again).ok());
}

TEST(RawProtoTest, InvalidUtf8IsInvalidArgument) {
  // Field 1 (text), length-delimited, one byte 0xFF: what a client that does
  // not check UTF-8 sends. Protobuf refuses to parse it.
  const grpc::ByteBuffer buffer = BufferOf(std::string("\x0a\x01\xff", 3));
  v1::GenerateRequest parsed;
  const absl::Status s = ParseRawRequest(buffer, &parsed);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("rwkv.v1.GenerateRequest"));
  EXPECT_THAT(s.message(), HasSubstr("UTF-8"));
}

TEST(RawProtoTest, GarbageIsInvalidArgument) {
  const grpc::ByteBuffer buffer = BufferOf(std::string("\xff\xff\xff\xff", 4));
  v1::SessionRequest parsed;
  EXPECT_EQ(ParseRawRequest(buffer, &parsed).code(), absl::StatusCode::kInvalidArgument);
}

TEST(RawProtoTest, EmptyBufferIsTheDefaultMessage) {
  v1::SessionRequest parsed;
  EXPECT_TRUE(ParseRawRequest(BufferOf(""), &parsed).ok());
  EXPECT_TRUE(parsed.session_id().empty());
}

}  // namespace
}  // namespace rwkv
