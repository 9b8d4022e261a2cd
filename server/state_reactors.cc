// ExportReactor and ImportReactor (see the header for the design).
#include "server/state_reactors.h"

#include <algorithm>
#include <utility>

#include "engine/state/model_dims.h"
#include "server/grpc_util.h"
#include "server/request_convert.h"

namespace rwkv {

// ---------------------------------------------------------------- export

ExportReactor::ExportReactor(Engine* engine, std::string session_id) {
  engine->ExportSession(std::move(session_id),
                        [this](absl::StatusOr<std::string> bytes) { OnExported(std::move(bytes)); });
}

void ExportReactor::OnExported(absl::StatusOr<std::string> bytes) {
  if (!bytes.ok()) {
    Finish(ToGrpcStatus(bytes.status()));
    return;
  }
  bytes_ = *std::move(bytes);
  WriteNextOrFinish();
}

void ExportReactor::OnWriteDone(bool ok) {
  if (!ok) {
    Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the call was cancelled"));
    return;
  }
  WriteNextOrFinish();
}

void ExportReactor::WriteNextOrFinish() {
  if (cancelled_.load()) {
    Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the call was cancelled"));
    return;
  }
  if (offset_ >= bytes_.size()) {
    Finish(grpc::Status::OK);
    return;
  }
  const size_t n = std::min(kExportChunkBytes, bytes_.size() - offset_);
  v1::StateChunk chunk;
  chunk.set_data(bytes_.data() + offset_, n);
  offset_ += n;
  SerializeRawResponse(chunk, &write_buffer_);
  StartWrite(&write_buffer_);
}

// ---------------------------------------------------------------- import

uint64_t MaxSnapshotBytesFor(const StateDims& dims) {
  return kSnapshotHeaderSize + kMaxFingerprintBytes + kMaxMetadataBytes + dims.state_floats * 4 +
         uint64_t{dims.vocab_size} * 4 + kSnapshotTrailerSize;
}

namespace {

SnapshotAssemblerOptions ImportOptions(const Engine& engine) {
  SnapshotAssemblerOptions options;
  options.expected_dims = StateDimsFor(engine.model_config());
  options.expected_fingerprint = engine.model_fingerprint();
  options.max_bytes = MaxSnapshotBytesFor(*options.expected_dims);
  return options;
}

}  // namespace

ImportReactor::ImportReactor(Engine* engine, grpc::CallbackServerContext* context, v1::Session* response)
    : engine_(engine), context_(context), response_(response), assembler_(ImportOptions(*engine)) {
  StartRead(&chunk_);
}

void ImportReactor::OnReadDone(bool ok) {
  if (ok) {
    const std::string& data = chunk_.data();
    if (absl::Status s = assembler_.Append(absl::string_view(data.data(), data.size())); !s.ok()) {
      Finish(ToGrpcStatus(s));  // rejected without reading the rest
      return;
    }
    bytes_.append(data);
    StartRead(&chunk_);
    return;
  }
  // The client half-closed (or the call broke: then nobody hears the answer,
  // and the session must not be created).
  if (context_->IsCancelled()) {
    Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the call was cancelled"));
    return;
  }
  if (absl::StatusOr<SessionSnapshot> snapshot = assembler_.Finish(); !snapshot.ok()) {
    Finish(ToGrpcStatus(snapshot.status()));
    return;
  }
  engine_->ImportSession(std::move(bytes_),
                         [this](absl::StatusOr<SessionInfo> info) { OnImported(std::move(info)); });
}

void ImportReactor::OnImported(absl::StatusOr<SessionInfo> info) {
  if (!info.ok()) {
    Finish(ToGrpcStatus(info.status()));
    return;
  }
  ToProtoSession(*info, response_);
  Finish(grpc::Status::OK);
}

}  // namespace rwkv
