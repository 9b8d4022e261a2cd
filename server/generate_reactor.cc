// GenerateReactor: see the header for the threading and lifetime design.
#include "server/generate_reactor.h"

#include <utility>

#include "server/grpc_util.h"

namespace rwkv {

GenerateReactor::GenerateReactor(bool logprobs) : logprobs_(logprobs) {}

grpc::ServerWriteReactor<grpc::ByteBuffer>* GenerateReactor::Start(Engine* engine, GenerateCall call) {
  auto reactor = std::make_shared<GenerateReactor>(call.logprobs);
  reactor->self_ = reactor;
  // Reactions start only after this method returns the reactor to gRPC, but
  // the engine may call the sink at once, from its own thread.
  auto handle = engine->Submit(std::move(call.request), reactor);
  if (!handle.ok()) {
    Action action;
    {
      absl::MutexLock lock(&reactor->mu_);
      reactor->engine_done_ = true;
      reactor->final_status_ = ToGrpcStatus(handle.status());
      action = reactor->NextActionLocked();
    }
    reactor->Perform(action);
    return reactor.get();
  }
  bool cancel_now = false;
  {
    absl::MutexLock lock(&reactor->mu_);
    reactor->handle_ = *handle;
    cancel_now = reactor->broken_ && !reactor->engine_done_;  // OnCancel came first
  }
  if (cancel_now) (*handle)->Cancel();
  return reactor.get();
}

void GenerateReactor::OnTokens(std::vector<TokenEvent> events) {
  Action action;
  {
    absl::MutexLock lock(&mu_);
    if (finish_called_ || broken_) return;
    AppendTokenEvents(events, logprobs_, &pending_);
    has_pending_ = true;
    action = NextActionLocked();
  }
  Perform(action);
}

void GenerateReactor::OnFinish(absl::Status status, FinishReason reason, std::string final_text,
                               const GenerateUsage& usage) {
  Action action;
  {
    absl::MutexLock lock(&mu_);
    engine_done_ = true;
    if (finish_called_) return;
    pending_.mutable_text()->append(final_text);
    if (status.ok()) {
      pending_.set_finish_reason(ToProtoFinishReason(reason));
      ToProtoUsage(usage, pending_.mutable_usage());
      has_pending_ = true;  // the last message carries finish_reason and usage
      final_status_ = grpc::Status::OK;
    } else {
      // Tokens already produced are still delivered, then the error.
      has_pending_ = has_pending_ || !final_text.empty();
      final_status_ = ToGrpcStatus(status);
    }
    action = NextActionLocked();
  }
  Perform(action);
}

void GenerateReactor::OnWriteDone(bool ok) {
  Action action;
  std::shared_ptr<RequestHandle> to_cancel;
  {
    absl::MutexLock lock(&mu_);
    write_in_flight_ = false;
    if (!ok) {  // the stream is broken (client gone or call cancelled)
      broken_ = true;
      if (!engine_done_) to_cancel = handle_;
    }
    action = NextActionLocked();
  }
  if (to_cancel) to_cancel->Cancel();
  Perform(action);
}

void GenerateReactor::OnCancel() {
  Action action;
  std::shared_ptr<RequestHandle> to_cancel;
  {
    absl::MutexLock lock(&mu_);
    broken_ = true;
    if (!engine_done_) to_cancel = handle_;
    action = NextActionLocked();
  }
  if (to_cancel) to_cancel->Cancel();
  Perform(action);
}

void GenerateReactor::OnDone() {
  std::shared_ptr<GenerateReactor> self;  // may free *this when it goes out of scope
  std::shared_ptr<RequestHandle> handle;
  bool cancel = false;
  {
    absl::MutexLock lock(&mu_);
    handle = std::move(handle_);
    cancel = !engine_done_ && handle != nullptr;
    self = std::move(self_);
  }
  // Nobody is listening any more. Outside the lock: Cancel may report
  // OnFinish synchronously.
  if (cancel) handle->Cancel();
}

GenerateReactor::Action GenerateReactor::NextActionLocked() {
  Action action;
  if (finish_called_ || write_in_flight_) return action;
  if (broken_) {
    finish_called_ = true;
    action.finish = true;
    action.status = grpc::Status(grpc::StatusCode::CANCELLED, "the call was cancelled");
    return action;
  }
  if (has_pending_) {
    SerializeRawResponse(pending_, &write_buffer_);
    pending_.Clear();
    has_pending_ = false;
    write_in_flight_ = true;
    action.write = true;
    return action;
  }
  if (engine_done_) {
    finish_called_ = true;
    action.finish = true;
    action.status = final_status_;
  }
  return action;
}

void GenerateReactor::Perform(const Action& action) {
  // After Finish, gRPC may call OnDone on another thread at any moment, so
  // nothing here touches members after it.
  if (action.write) StartWrite(&write_buffer_);
  if (action.finish) Finish(action.status);
}

}  // namespace rwkv
