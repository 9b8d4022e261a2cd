// Reactors of the two state-streaming calls: ExportSession (server stream
// of StateChunk) and ImportSession (client stream of StateChunk).
//
// Why streams: a session state is megabytes (hundreds for the large models),
// above gRPC's default message limit, so it moves as a sequence of chunks.
// Import validates while the bytes arrive (SnapshotAssembler): a foreign,
// oversized or malformed state is rejected on the chunk that shows it,
// before the rest is buffered, and memory never exceeds the largest state
// this model can have.
//
// Finish rule: each reactor finishes exactly once, from the event that ends
// it: the engine's completion callback (which the engine always calls), a
// failed write or read, or a rejected chunk. OnCancel only records the
// cancellation; the pending operation then ends the call promptly (a write
// or read completes with ok=false, an engine operation reports back), so no
// call outlives the engine's answer and none is finished twice.
#ifndef RWKV_SERVER_STATE_REACTORS_H_
#define RWKV_SERVER_STATE_REACTORS_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

#include "engine/serving/engine.h"
#include "engine/state/state_file.h"
#include "grpcpp/grpcpp.h"
#include "rwkv/v1/rwkv.pb.h"

namespace rwkv {

// Bytes per StateChunk in exports.
inline constexpr size_t kExportChunkBytes = 256 * 1024;

// Streams engine->ExportSession(id) as StateChunk messages. Deletes itself.
class ExportReactor final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  // `engine` must outlive the call. The engine operation starts here.
  ExportReactor(Engine* engine, std::string session_id);

  void OnWriteDone(bool ok) override;
  void OnCancel() override { cancelled_.store(true); }
  void OnDone() override { delete this; }

 private:
  void OnExported(absl::StatusOr<std::string> bytes);  // engine callback
  void WriteNextOrFinish();

  std::atomic<bool> cancelled_{false};
  // Set once by OnExported before the first write; then only the write
  // chain (one write in flight) reads them.
  std::string bytes_;
  size_t offset_ = 0;
  grpc::ByteBuffer write_buffer_;
};

// The most bytes a state file of a model with `dims` can have (header,
// largest fingerprint and metadata, state, logits, trailer).
uint64_t MaxSnapshotBytesFor(const StateDims& dims);

// Assembles a client stream of StateChunk and imports it. Deletes itself.
class ImportReactor final : public grpc::ServerReadReactor<v1::StateChunk> {
 public:
  // Rejects chunks as soon as they show a state `engine`'s model cannot load.
  ImportReactor(Engine* engine, grpc::CallbackServerContext* context, v1::Session* response);

  void OnReadDone(bool ok) override;
  void OnDone() override { delete this; }

 private:
  void OnImported(absl::StatusOr<SessionInfo> info);  // engine callback

  Engine* const engine_;
  grpc::CallbackServerContext* const context_;
  v1::Session* const response_;
  SnapshotAssembler assembler_;  // validates the stream as it arrives
  std::string bytes_;            // the raw bytes, handed to the engine at the end
  v1::StateChunk chunk_;         // the read in flight
};

}  // namespace rwkv

#endif  // RWKV_SERVER_STATE_REACTORS_H_
