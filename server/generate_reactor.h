// The reactor of one Generate call: engine tokens -> a stream of
// GenerateResponse messages.
//
// Why this shape: the engine produces tokens on its own thread through a
// GenerationSink whose callbacks must never block, while gRPC allows one
// write in flight per stream and a client may read slowly or vanish. So the
// sink only appends to a pending message under a mutex; whoever finds no
// write in flight (the sink, or OnWriteDone) serializes the pending message
// and starts the next write. Tokens that arrive while a write is in flight
// are coalesced into the next message, so a slow reader costs memory
// proportional to its backlog of text, never a blocked engine thread.
//
// Lifetime: the reactor is both the gRPC reactor and the engine's sink, held
// by shared_ptr: by itself until gRPC's OnDone, and by the engine until it
// drops the sink. Whichever lets go last frees it, so neither side can touch
// a dead object. Finish is called exactly once, from whichever event ends the
// stream first (the engine's OnFinish after the last write, a failed write,
// or OnCancel), and after it the sink's callbacks are ignored. gRPC calls
// (StartWrite, Finish) are made outside the mutex.
#ifndef RWKV_SERVER_GENERATE_REACTOR_H_
#define RWKV_SERVER_GENERATE_REACTOR_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "engine/serving/engine.h"
#include "grpcpp/grpcpp.h"
#include "rwkv/v1/rwkv.pb.h"
#include "server/request_convert.h"

namespace rwkv {

class GenerateReactor final : public grpc::ServerWriteReactor<grpc::ByteBuffer>, public GenerationSink {
 public:
  // Submits `call` to `engine` and returns the reactor for gRPC to drive. A
  // synchronous rejection by the engine finishes the stream at once with the
  // engine's status. `engine` must outlive the call.
  static grpc::ServerWriteReactor<grpc::ByteBuffer>* Start(Engine* engine, GenerateCall call);

  // Use Start(). Public only for std::make_shared.
  explicit GenerateReactor(bool logprobs);

  // GenerationSink (engine thread; never block).
  void OnTokens(std::vector<TokenEvent> events) override;
  void OnFinish(absl::Status status, FinishReason reason, std::string final_text,
                const GenerateUsage& usage) override;

  // grpc::ServerWriteReactor.
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  // What to do after the mutex is released.
  struct Action {
    bool write = false;
    bool finish = false;
    grpc::Status status;
  };

  // Decides the next gRPC operation: a write of the pending message when no
  // write is in flight, else nothing; Finish once the stream has ended and
  // everything queued is written (or at once when it is broken).
  Action NextActionLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Perform(const Action& action);

  const bool logprobs_;
  std::shared_ptr<GenerateReactor> self_;  // released in OnDone

  absl::Mutex mu_;
  std::shared_ptr<RequestHandle> handle_ ABSL_GUARDED_BY(mu_);
  v1::GenerateResponse pending_ ABSL_GUARDED_BY(mu_);  // not yet written
  bool has_pending_ ABSL_GUARDED_BY(mu_) = false;
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool engine_done_ ABSL_GUARDED_BY(mu_) = false;   // OnFinish seen (or submit failed)
  grpc::Status final_status_ ABSL_GUARDED_BY(mu_);  // valid when engine_done_
  bool broken_ ABSL_GUARDED_BY(mu_) = false;        // cancelled or a write failed
  bool finish_called_ ABSL_GUARDED_BY(mu_) = false;
  // The message being written: only touched when no write is in flight.
  grpc::ByteBuffer write_buffer_;
};

}  // namespace rwkv

#endif  // RWKV_SERVER_GENERATE_REACTOR_H_
