// InferenceService: admission, validation and the unary methods (see the
// header for the design).
#include "server/inference_service.h"

#include <chrono>
#include <utility>
#include <vector>

#include "absl/time/clock.h"
#include "server/generate_reactor.h"
#include "server/grpc_util.h"
#include "server/id_only_tokenizer.h"
#include "server/state_reactors.h"

namespace rwkv {
namespace {

// The call's deadline as an absl::Time (InfiniteFuture when it has none).
absl::Time CallDeadline(const grpc::CallbackServerContext& context) {
  const auto deadline = context.deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
  return absl::FromChrono(deadline);
}

grpc::ServerUnaryReactor* FinishNow(grpc::ServerUnaryReactor* reactor, const absl::Status& status) {
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

}  // namespace

InferenceService::InferenceService(Engine* engine, InferenceServiceOptions options)
    : engine_(engine), options_(std::move(options)) {
  const Tokenizer& tokenizer = engine_->tokenizer();
  edge_.text_tokenizer = HasVocabulary(tokenizer) ? &tokenizer : nullptr;
  edge_.vocab_size = engine_->model_config().vocab_size;
  edge_.max_prompt_tokens = engine_->config().max_prompt_tokens;
  edge_.max_new_tokens = engine_->config().max_new_tokens;
}

absl::Status InferenceService::Admit() const {
  if (draining_.load()) return absl::UnavailableError("the server is shutting down");
  return absl::OkStatus();
}

template <typename Message>
bool InferenceService::ParseUnary(const grpc::ByteBuffer* request, Message* message,
                                  grpc::ServerUnaryReactor* reactor) {
  absl::Status s = Admit();
  if (s.ok()) s = ParseRawRequest(*request, message);
  if (!s.ok()) {
    reactor->Finish(ToGrpcStatus(s));
    return false;
  }
  return true;
}

Engine::Done<SessionInfo> InferenceService::FinishWithSession(grpc::ServerUnaryReactor* reactor,
                                                              grpc::ByteBuffer* response) {
  // Runs on the engine thread: fill the response and finish, nothing more.
  return [reactor, response](absl::StatusOr<SessionInfo> info) {
    if (!info.ok()) {
      reactor->Finish(ToGrpcStatus(info.status()));
      return;
    }
    v1::Session session;
    ToProtoSession(*info, &session);
    SerializeRawResponse(session, response);
    reactor->Finish(grpc::Status::OK);
  };
}

// ---------------------------------------------------------------- generate

grpc::ServerWriteReactor<grpc::ByteBuffer>* InferenceService::Generate(grpc::CallbackServerContext* context,
                                                                       const grpc::ByteBuffer* request) {
  if (absl::Status s = Admit(); !s.ok()) {
    return new FailedWriteReactor<grpc::ByteBuffer>(ToGrpcStatus(s));
  }
  v1::GenerateRequest wire;
  absl::StatusOr<GenerateCall> call = absl::InvalidArgumentError("unparsed");
  if (absl::Status parsed = ParseRawRequest(*request, &wire); !parsed.ok()) {
    call = parsed;
  } else {
    call = ToGenerateCall(wire, edge_, CallDeadline(*context));
  }
  if (!call.ok()) {
    if (options_.metrics != nullptr) options_.metrics->failure_invalid.Increment();
    return new FailedWriteReactor<grpc::ByteBuffer>(ToGrpcStatus(call.status()));
  }
  return GenerateReactor::Start(engine_, *std::move(call));
}

// ---------------------------------------------------------------- sessions

grpc::ServerUnaryReactor* InferenceService::CreateSession(grpc::CallbackServerContext* context,
                                                          const grpc::ByteBuffer* request,
                                                          grpc::ByteBuffer* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  v1::CreateSessionRequest wire;
  if (!ParseUnary(request, &wire, reactor)) return reactor;
  absl::StatusOr<CreateSessionCall> call = ToCreateSessionCall(wire, edge_);
  if (!call.ok()) return FinishNow(reactor, call.status());
  switch (call->kind) {
    case CreateSessionCall::Kind::kPrompt:
      engine_->CreateSession(std::move(call->prompt), FinishWithSession(reactor, response));
      break;
    case CreateSessionCall::Kind::kFork:
      engine_->ForkSession(std::move(call->source), FinishWithSession(reactor, response));
      break;
    case CreateSessionCall::Kind::kLoad:
      engine_->LoadSession(std::move(call->source), FinishWithSession(reactor, response));
      break;
  }
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::GetSession(grpc::CallbackServerContext* context,
                                                       const grpc::ByteBuffer* request,
                                                       grpc::ByteBuffer* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  v1::SessionRequest wire;
  if (!ParseUnary(request, &wire, reactor)) return reactor;
  if (absl::Status s = CheckSessionId(wire.session_id()); !s.ok()) return FinishNow(reactor, s);
  engine_->GetSession(wire.session_id(), FinishWithSession(reactor, response));
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::ListSessions(grpc::CallbackServerContext* context,
                                                         const v1::ListSessionsRequest* /*request*/,
                                                         v1::ListSessionsResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::Status s = Admit(); !s.ok()) return FinishNow(reactor, s);
  engine_->ListSessions([reactor, response](absl::StatusOr<std::vector<SessionInfo>> sessions) {
    if (!sessions.ok()) {
      reactor->Finish(ToGrpcStatus(sessions.status()));
      return;
    }
    for (const SessionInfo& info : *sessions) ToProtoSession(info, response->add_sessions());
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::DeleteSession(grpc::CallbackServerContext* context,
                                                          const grpc::ByteBuffer* request,
                                                          grpc::ByteBuffer* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  v1::SessionRequest wire;
  if (!ParseUnary(request, &wire, reactor)) return reactor;
  if (absl::Status s = CheckSessionId(wire.session_id()); !s.ok()) return FinishNow(reactor, s);
  engine_->DeleteSession(wire.session_id(), [reactor, response](absl::Status status) {
    if (status.ok()) SerializeRawResponse(v1::DeleteSessionResponse(), response);
    reactor->Finish(ToGrpcStatus(status));
  });
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::ForkSession(grpc::CallbackServerContext* context,
                                                        const grpc::ByteBuffer* request,
                                                        grpc::ByteBuffer* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  v1::SessionRequest wire;
  if (!ParseUnary(request, &wire, reactor)) return reactor;
  if (absl::Status s = CheckSessionId(wire.session_id()); !s.ok()) return FinishNow(reactor, s);
  engine_->ForkSession(wire.session_id(), FinishWithSession(reactor, response));
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::SaveSession(grpc::CallbackServerContext* context,
                                                        const grpc::ByteBuffer* request,
                                                        grpc::ByteBuffer* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  v1::SaveSessionRequest wire;
  if (!ParseUnary(request, &wire, reactor)) return reactor;
  if (absl::Status s = CheckSaveSession(wire); !s.ok()) return FinishNow(reactor, s);
  const std::string name = wire.name();
  engine_->SaveSession(wire.session_id(), name, [this, reactor, response, name](absl::Status status) {
    if (status.ok()) {
      v1::SaveSessionResponse out;
      out.set_name(name);
      if (options_.saved_state_bytes) out.set_bytes(options_.saved_state_bytes(name));
      SerializeRawResponse(out, response);
    }
    reactor->Finish(ToGrpcStatus(status));
  });
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::LoadSession(grpc::CallbackServerContext* context,
                                                        const grpc::ByteBuffer* request,
                                                        grpc::ByteBuffer* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  v1::LoadSessionRequest wire;
  if (!ParseUnary(request, &wire, reactor)) return reactor;
  if (absl::Status s = CheckStateName(wire.name()); !s.ok()) return FinishNow(reactor, s);
  engine_->LoadSession(wire.name(), FinishWithSession(reactor, response));
  return reactor;
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* InferenceService::ExportSession(
    grpc::CallbackServerContext* /*context*/, const grpc::ByteBuffer* request) {
  v1::SessionRequest wire;
  absl::Status s = Admit();
  if (s.ok()) s = ParseRawRequest(*request, &wire);
  if (s.ok()) s = CheckSessionId(wire.session_id());
  if (!s.ok()) return new FailedWriteReactor<grpc::ByteBuffer>(ToGrpcStatus(s));
  return new ExportReactor(engine_, wire.session_id());
}

grpc::ServerReadReactor<v1::StateChunk>* InferenceService::ImportSession(grpc::CallbackServerContext* context,
                                                                         v1::Session* response) {
  if (absl::Status s = Admit(); !s.ok()) return new FailedReadReactor<v1::StateChunk>(ToGrpcStatus(s));
  return new ImportReactor(engine_, context, response);
}

// ---------------------------------------------------------------- tokens, info

grpc::ServerUnaryReactor* InferenceService::Tokenize(grpc::CallbackServerContext* context,
                                                     const grpc::ByteBuffer* request,
                                                     grpc::ByteBuffer* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  v1::TokenizeRequest wire;
  if (!ParseUnary(request, &wire, reactor)) return reactor;
  absl::StatusOr<std::vector<int32_t>> ids = TokenizeText(wire.text(), edge_);
  if (!ids.ok()) return FinishNow(reactor, ids.status());
  v1::TokenizeResponse out;
  out.mutable_token_ids()->Assign(ids->begin(), ids->end());
  SerializeRawResponse(out, response);
  return FinishNow(reactor, absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceService::Detokenize(grpc::CallbackServerContext* context,
                                                       const v1::DetokenizeRequest* request,
                                                       v1::DetokenizeResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::Status s = Admit(); !s.ok()) return FinishNow(reactor, s);
  absl::StatusOr<std::string> text = DetokenizeIds(request->token_ids(), edge_);
  if (!text.ok()) return FinishNow(reactor, text.status());
  response->set_text(*std::move(text));
  return FinishNow(reactor, absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceService::GetModelInfo(grpc::CallbackServerContext* context,
                                                         const v1::GetModelInfoRequest* /*request*/,
                                                         v1::ModelInfo* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::Status s = Admit(); !s.ok()) return FinishNow(reactor, s);
  *response = BuildModelInfo();
  return FinishNow(reactor, absl::OkStatus());
}

v1::ModelInfo InferenceService::BuildModelInfo() const {
  const ModelConfig& c = engine_->model_config();
  v1::ModelInfo info;
  info.set_architecture(c.ArchName());
  info.set_n_layer(c.n_layer);
  info.set_n_embd(c.n_embd);
  info.set_n_head(c.n_head);
  info.set_head_size(c.head_size);
  info.set_vocab_size(c.vocab_size);
  info.set_ffn_dim(c.ffn_dim);
  const std::string backend = engine_->backend_name();
  info.set_weight_dtype(engine_->weight_dtype());
  info.set_state_bytes_per_session(engine_->state_bytes_per_session());
  info.set_backend(backend);
  info.set_server_version(options_.server_version);
  info.set_model(options_.model);
  info.set_tokenizer(engine_->tokenizer().name());
  info.set_params(c.ParamCount());
  info.set_model_fingerprint(PrintableFingerprint(engine_->model_fingerprint()));
  return info;
}

}  // namespace rwkv
