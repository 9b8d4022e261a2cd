// The rwkv.v1.Inference gRPC service on the callback API.
//
// Why this layer is thin: it admits a call (UNAVAILABLE while draining),
// validates the wire request into an engine request (request_convert.h),
// hands it to the Engine and reports the Engine's answer; every decision
// about sessions and scheduling is the engine's. Unary calls finish from the
// engine's completion callbacks (which run on the engine thread and must
// not block: they only fill the response and call Finish). Streaming calls
// have one reactor class each (generate_reactor.h, state_reactors.h).
//
// Methods whose request has a string field are registered raw (ByteBuffer)
// so that a request with invalid UTF-8 gets INVALID_ARGUMENT instead of
// gRPC 1.51's bare UNIMPLEMENTED (see grpc_util.h).
#ifndef RWKV_SERVER_INFERENCE_SERVICE_H_
#define RWKV_SERVER_INFERENCE_SERVICE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

#include "engine/metrics/server_metrics.h"
#include "engine/serving/engine.h"
#include "grpcpp/grpcpp.h"
#include "rwkv/v1/rwkv.grpc.pb.h"
#include "server/request_convert.h"

namespace rwkv {

namespace internal {
// The generated callback service with the string-bearing methods raw.
using InferenceServiceBase = v1::Inference::WithRawCallbackMethod_Generate<
    v1::Inference::WithRawCallbackMethod_CreateSession<v1::Inference::WithRawCallbackMethod_GetSession<
        v1::Inference::WithRawCallbackMethod_DeleteSession<v1::Inference::WithRawCallbackMethod_ForkSession<
            v1::Inference::WithRawCallbackMethod_SaveSession<v1::Inference::WithRawCallbackMethod_LoadSession<
                v1::Inference::WithRawCallbackMethod_ExportSession<
                    v1::Inference::WithRawCallbackMethod_Tokenize<v1::Inference::CallbackService>>>>>>>>>;
}  // namespace internal

struct InferenceServiceOptions {
  std::string model;                 // the model file or synthetic spec, for GetModelInfo
  std::string server_version;        // for GetModelInfo
  ServerMetrics* metrics = nullptr;  // edge rejections of Generate are counted here; may be null
  // The size of the saved state `name` for SaveSessionResponse.bytes (the
  // engine reports only success). Called on the engine's I/O thread right
  // after a save; must be quick and thread-safe. Empty: bytes is 0.
  std::function<int64_t(const std::string& name)> saved_state_bytes;
};

class InferenceService final : public internal::InferenceServiceBase {
 public:
  // `engine` (and `options.metrics`) must outlive the service and every call.
  InferenceService(Engine* engine, InferenceServiceOptions options);

  // From now on every new call gets UNAVAILABLE. Thread-safe, idempotent.
  void StartDraining() { draining_.store(true); }
  bool draining() const { return draining_.load(); }

  // Raw (ByteBuffer) methods.
  grpc::ServerWriteReactor<grpc::ByteBuffer>* Generate(grpc::CallbackServerContext* context,
                                                       const grpc::ByteBuffer* request) override;
  grpc::ServerUnaryReactor* CreateSession(grpc::CallbackServerContext* context,
                                          const grpc::ByteBuffer* request,
                                          grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetSession(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                       grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* DeleteSession(grpc::CallbackServerContext* context,
                                          const grpc::ByteBuffer* request,
                                          grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* ForkSession(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                        grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* SaveSession(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                        grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* LoadSession(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                        grpc::ByteBuffer* response) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* ExportSession(grpc::CallbackServerContext* context,
                                                            const grpc::ByteBuffer* request) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override;

  // Typed methods (their requests hold no strings).
  grpc::ServerUnaryReactor* ListSessions(grpc::CallbackServerContext* context,
                                         const v1::ListSessionsRequest* request,
                                         v1::ListSessionsResponse* response) override;
  grpc::ServerReadReactor<v1::StateChunk>* ImportSession(grpc::CallbackServerContext* context,
                                                         v1::Session* response) override;
  grpc::ServerUnaryReactor* Detokenize(grpc::CallbackServerContext* context,
                                       const v1::DetokenizeRequest* request,
                                       v1::DetokenizeResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const v1::GetModelInfoRequest* request,
                                         v1::ModelInfo* response) override;

  // The ModelInfo this server reports (also logged at start-up).
  v1::ModelInfo BuildModelInfo() const;

 private:
  // OK, or UNAVAILABLE while draining.
  absl::Status Admit() const;
  // The reactor for a unary call whose request is a `Message` in `request`:
  // parses it, or finishes the call with INVALID_ARGUMENT and returns false.
  template <typename Message>
  bool ParseUnary(const grpc::ByteBuffer* request, Message* message, grpc::ServerUnaryReactor* reactor);
  // Finishes a unary call whose engine result is a session.
  Engine::Done<SessionInfo> FinishWithSession(grpc::ServerUnaryReactor* reactor, grpc::ByteBuffer* response);

  Engine* const engine_;
  const InferenceServiceOptions options_;
  EdgeContext edge_;
  std::atomic<bool> draining_{false};
};

}  // namespace rwkv

#endif  // RWKV_SERVER_INFERENCE_SERVICE_H_
