// Small gRPC glue shared by the service and its reactors: status mapping,
// raw (ByteBuffer) request parsing and response serialization, and reactors
// that only report an error.
//
// Why raw messages: protobuf rejects a proto3 string field holding invalid
// UTF-8 while parsing, before any handler runs, and gRPC 1.51's callback API
// then answers with a bare UNIMPLEMENTED. The API promises INVALID_ARGUMENT
// for invalid UTF-8, so every method whose request has a string field is
// registered raw and parses its request here, where a parse failure becomes a
// clear INVALID_ARGUMENT.
#ifndef RWKV_SERVER_GRPC_UTIL_H_
#define RWKV_SERVER_GRPC_UTIL_H_

#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/impl/codegen/proto_utils.h"  // SerializationTraits for protobuf messages
#include "grpcpp/support/byte_buffer.h"

namespace rwkv {

// absl::Status -> grpc::Status with the same code (the two enums agree value
// for value) and message. Unknown codes become UNKNOWN. Thread-safe.
grpc::Status ToGrpcStatus(const absl::Status& status);

// The inverse, for tests and for reporting gRPC-side failures in logs.
absl::Status FromGrpcStatus(const grpc::Status& status);

// Parses a raw request. INVALID_ARGUMENT naming the message type when the
// bytes are not a valid message (typically: a string field with invalid UTF-8).
template <typename Message>
absl::Status ParseRawRequest(const grpc::ByteBuffer& bytes, Message* message) {
  grpc::ByteBuffer copy(bytes);  // Deserialize consumes its input; this shares the slices
  const grpc::Status s = grpc::SerializationTraits<Message>::Deserialize(&copy, message);
  if (!s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("malformed ", message->GetTypeName(),
                     ": the request does not parse (string fields must be valid UTF-8)"));
  }
  return absl::OkStatus();
}

// Serializes a response into a raw buffer (replacing what it held).
template <typename Message>
void SerializeRawResponse(const Message& message, grpc::ByteBuffer* out) {
  out->Clear();  // the serializer requires an empty buffer
  bool own_buffer = false;
  // Serialization of an in-memory message fails only on a >2 GiB message,
  // which this service never builds.
  (void)grpc::SerializationTraits<Message>::Serialize(message, out, &own_buffer);
}

// A server-streaming reactor that finishes at once with `status` (no
// messages) and deletes itself when done.
template <typename Response>
class FailedWriteReactor final : public grpc::ServerWriteReactor<Response> {
 public:
  explicit FailedWriteReactor(grpc::Status status) { this->Finish(std::move(status)); }
  void OnDone() override { delete this; }
};

// A client-streaming reactor that finishes at once with `status` without
// reading, and deletes itself when done.
template <typename Request>
class FailedReadReactor final : public grpc::ServerReadReactor<Request> {
 public:
  explicit FailedReadReactor(grpc::Status status) { this->Finish(std::move(status)); }
  void OnDone() override { delete this; }
};

}  // namespace rwkv

#endif  // RWKV_SERVER_GRPC_UTIL_H_
