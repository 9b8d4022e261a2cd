// See client_commands.h. One function per command; each makes exactly one
// call, so a failure is always reported as that call's status.
#include "client/client_commands.h"

#include <cctype>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"
#include "google/protobuf/util/json_util.h"

namespace rwkv {
namespace {

namespace pb = ::rwkv::v1;

// Export and import move the state in pieces of this size (well below gRPC's
// 4 MiB message limit).
constexpr size_t kStateChunkBytes = 64 * 1024;

void ApplyDeadline(const ClientFlags& flags, grpc::ClientContext& ctx) {
  if (flags.deadline_seconds <= 0) return;
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::duration_cast<std::chrono::system_clock::duration>(
                       std::chrono::duration<double>(flags.deadline_seconds)));
}

int Fail(std::ostream& err, const grpc::Status& status) {
  err << "rwkv-client: " << DescribeStatus(status) << "\n";
  return kExitRpcError;
}

int FailLocal(std::ostream& err, const std::string& message) {
  err << "rwkv-client: " << message << "\n";
  return kExitRpcError;
}

std::string FormatUnixMillis(int64_t ms) {
  if (ms <= 0) return "-";
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::FromUnixMillis(ms), absl::UTCTimeZone());
}

// The id on the first line, then one "key: value" per line.
void PrintSession(const pb::Session& s, std::ostream& out) {
  out << s.id() << "\n"
      << "tokens_seen: " << s.tokens_seen() << "\n"
      << "resident: " << (s.resident() ? "true" : "false") << "\n"
      << "busy: " << (s.busy() ? "true" : "false") << "\n"
      << "created: " << FormatUnixMillis(s.created_unix_ms()) << "\n"
      << "last_used: " << FormatUnixMillis(s.last_used_unix_ms()) << "\n";
}

// "length" for FINISH_REASON_LENGTH.
std::string FinishReasonText(pb::FinishReason reason) {
  std::string name = pb::FinishReason_Name(reason);
  constexpr absl::string_view kPrefix = "FINISH_REASON_";
  if (absl::string_view(name).substr(0, kPrefix.size()) == kPrefix) name = name.substr(kPrefix.size());
  return absl::AsciiStrToLower(name);
}

// Per-token log-probabilities of one chunk, one line per token, for stderr.
void PrintLogprobs(const pb::GenerateResponse& chunk, int32_t top_n, std::ostream& err) {
  for (int i = 0; i < chunk.logprobs_size(); ++i) {
    const pb::TokenLogprob& lp = chunk.logprobs(i);
    err << absl::StrFormat("token %d logprob %.4f", lp.token_id(), lp.logprob());
    if (top_n > 0) {
      err << " top:";
      for (int j = i * top_n; j < (i + 1) * top_n && j < chunk.top_logprobs_size(); ++j) {
        err << absl::StrFormat(" %d:%.4f", chunk.top_logprobs(j).token_id(), chunk.top_logprobs(j).logprob());
      }
    }
    err << "\n";
  }
}

int RunGenerate(const ClientFlags& flags, pb::Inference::StubInterface& stub, std::ostream& out,
                std::ostream& err, bool out_is_terminal) {
  const pb::GenerateRequest request = BuildGenerateRequest(flags);
  grpc::ClientContext ctx;
  ApplyDeadline(flags, ctx);
  std::unique_ptr<grpc::ClientReaderInterface<pb::GenerateResponse>> reader = stub.Generate(&ctx, request);
  pb::GenerateResponse chunk;
  pb::GenerateResponse last;
  bool ends_with_newline = true;
  google::protobuf::util::JsonPrintOptions json_options;
  json_options.preserve_proto_field_names = true;
  while (reader->Read(&chunk)) {
    if (flags.json) {
      std::string line;
      if (!google::protobuf::util::MessageToJsonString(chunk, &line, json_options).ok()) line = "{}";
      out << line << "\n" << std::flush;
    } else {
      if (!chunk.text().empty()) {
        out << chunk.text() << std::flush;
        ends_with_newline = chunk.text().back() == '\n';
      }
      if (request.logprobs()) PrintLogprobs(chunk, request.top_logprobs(), err);
    }
    if (chunk.finish_reason() != pb::FINISH_REASON_UNSPECIFIED || chunk.has_usage()) last = chunk;
  }
  const grpc::Status status = reader->Finish();
  if (!flags.json && out_is_terminal && !ends_with_newline) out << "\n" << std::flush;
  if (!status.ok()) return Fail(err, status);
  if (!flags.json) {
    const pb::Usage& u = last.usage();
    err << absl::StrFormat(
        "finish_reason: %s  prompt_tokens: %d  generated_tokens: %d  time_to_first_token: %.3fs  "
        "total: %.3fs  queue: %.3fs\n",
        FinishReasonText(last.finish_reason()), u.prompt_tokens(), u.generated_tokens(),
        u.time_to_first_token_seconds(), u.total_seconds(), u.queue_seconds());
  }
  return kExitOk;
}

int RunSessionCreate(const ClientFlags& flags, pb::Inference::StubInterface& stub, std::ostream& out,
                     std::ostream& err) {
  pb::CreateSessionRequest request;
  if (flags.prompt.has_value()) request.set_prompt_text(*flags.prompt);
  if (flags.tokens.has_value()) {
    for (int32_t id : *flags.tokens) request.mutable_prompt_tokens()->add_ids(id);
  }
  if (!flags.from_saved.empty()) request.set_saved_name(flags.from_saved);
  if (!flags.fork.empty()) request.set_fork_of(flags.fork);
  grpc::ClientContext ctx;
  ApplyDeadline(flags, ctx);
  pb::Session session;
  const grpc::Status status = stub.CreateSession(&ctx, request, &session);
  if (!status.ok()) return Fail(err, status);
  PrintSession(session, out);
  return kExitOk;
}

// get, fork and load all answer with a Session.
int RunSessionQuery(const ClientFlags& flags, pb::Inference::StubInterface& stub, std::ostream& out,
                    std::ostream& err) {
  grpc::ClientContext ctx;
  ApplyDeadline(flags, ctx);
  pb::Session session;
  grpc::Status status;
  if (flags.command == ClientCommand::kSessionLoad) {
    pb::LoadSessionRequest request;
    request.set_name(flags.operands[0]);
    status = stub.LoadSession(&ctx, request, &session);
  } else {
    pb::SessionRequest request;
    request.set_session_id(flags.operands[0]);
    status = flags.command == ClientCommand::kSessionFork ? stub.ForkSession(&ctx, request, &session)
                                                          : stub.GetSession(&ctx, request, &session);
  }
  if (!status.ok()) return Fail(err, status);
  PrintSession(session, out);
  return kExitOk;
}

int RunSessionDelete(const ClientFlags& flags, pb::Inference::StubInterface& stub, std::ostream& out,
                     std::ostream& err) {
  grpc::ClientContext ctx;
  ApplyDeadline(flags, ctx);
  pb::SessionRequest request;
  request.set_session_id(flags.operands[0]);
  pb::DeleteSessionResponse response;
  const grpc::Status status = stub.DeleteSession(&ctx, request, &response);
  if (!status.ok()) return Fail(err, status);
  out << flags.operands[0] << "\ndeleted\n";
  return kExitOk;
}

// One line per session: the id first, then its fields.
int RunSessionList(const ClientFlags& flags, pb::Inference::StubInterface& stub, std::ostream& out,
                   std::ostream& err) {
  grpc::ClientContext ctx;
  ApplyDeadline(flags, ctx);
  pb::ListSessionsResponse response;
  const grpc::Status status = stub.ListSessions(&ctx, pb::ListSessionsRequest(), &response);
  if (!status.ok()) return Fail(err, status);
  for (const pb::Session& s : response.sessions()) {
    out << s.id() << " tokens_seen=" << s.tokens_seen() << " resident=" << (s.resident() ? "true" : "false")
        << " busy=" << (s.busy() ? "true" : "false") << " last_used=" << FormatUnixMillis(s.last_used_unix_ms())
        << "\n";
  }
  return kExitOk;
}

int RunSessionSave(const ClientFlags& flags, pb::Inference::StubInterface& stub, std::ostream& out,
                   std::ostream& err) {
  grpc::ClientContext ctx;
  ApplyDeadline(flags, ctx);
  pb::SaveSessionRequest request;
  request.set_session_id(flags.operands[0]);
  request.set_name(flags.operands[1]);
  pb::SaveSessionResponse response;
  const grpc::Status status = stub.SaveSession(&ctx, request, &response);
  if (!status.ok()) return Fail(err, status);
  out << flags.operands[0] << "\nsaved: " << response.name() << " (" << response.bytes() << " bytes)\n";
  return kExitOk;
}

// Streams the state into FILE; the file is removed again if the call fails.
int RunSessionExport(const ClientFlags& flags, pb::Inference::StubInterface& stub, std::ostream& out,
                     std::ostream& err) {
  const std::string& path = flags.operands[1];
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  if (!file) return FailLocal(err, absl::StrCat("cannot write ", path));
  grpc::ClientContext ctx;
  ApplyDeadline(flags, ctx);
  pb::SessionRequest request;
  request.set_session_id(flags.operands[0]);
  std::unique_ptr<grpc::ClientReaderInterface<pb::StateChunk>> reader = stub.ExportSession(&ctx, request);
  pb::StateChunk chunk;
  int64_t bytes = 0;
  bool write_failed = false;
  while (reader->Read(&chunk)) {
    file.write(chunk.data().data(), static_cast<std::streamsize>(chunk.data().size()));
    bytes += static_cast<int64_t>(chunk.data().size());
    if (!file) {
      write_failed = true;
      ctx.TryCancel();
      break;
    }
  }
  if (write_failed) {
    while (reader->Read(&chunk)) {
    }
  }
  const grpc::Status status = reader->Finish();
  file.close();
  if (write_failed || !file || !status.ok()) {
    std::remove(path.c_str());
    return write_failed || status.ok() ? FailLocal(err, absl::StrCat("cannot write ", path)) : Fail(err, status);
  }
  out << flags.operands[0] << "\nexported: " << bytes << " bytes to " << path << "\n";
  return kExitOk;
}

int RunSessionImport(const ClientFlags& flags, pb::Inference::StubInterface& stub, std::ostream& out,
                     std::ostream& err) {
  const std::string& path = flags.operands[0];
  std::ifstream file(path, std::ios::binary);
  if (!file) return FailLocal(err, absl::StrCat("cannot read ", path));
  grpc::ClientContext ctx;
  ApplyDeadline(flags, ctx);
  pb::Session session;
  std::unique_ptr<grpc::ClientWriterInterface<pb::StateChunk>> writer = stub.ImportSession(&ctx, &session);
  std::string buffer(kStateChunkBytes, '\0');
  pb::StateChunk chunk;
  while (file) {
    file.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    const std::streamsize n = file.gcount();
    if (n <= 0) break;
    chunk.set_data(buffer.data(), static_cast<size_t>(n));
    if (!writer->Write(chunk)) break;  // the server ended the call; Finish says why
  }
  if (file.bad()) {
    ctx.TryCancel();
    writer->Finish();
    return FailLocal(err, absl::StrCat("cannot read ", path));
  }
  writer->WritesDone();
  const grpc::Status status = writer->Finish();
  if (!status.ok()) return Fail(err, status);
  PrintSession(session, out);
  return kExitOk;
}

int RunTokenize(const ClientFlags& flags, pb::Inference::StubInterface& stub, std::ostream& out,
                std::ostream& err) {
  grpc::ClientContext ctx;
  ApplyDeadline(flags, ctx);
  pb::TokenizeRequest request;
  request.set_text(flags.operands[0]);
  pb::TokenizeResponse response;
  const grpc::Status status = stub.Tokenize(&ctx, request, &response);
  if (!status.ok()) return Fail(err, status);
  out << absl::StrJoin(response.token_ids(), ",") << "\n";
  return kExitOk;
}

int RunDetokenize(const ClientFlags& flags, pb::Inference::StubInterface& stub, std::ostream& out,
                  std::ostream& err) {
  absl::StatusOr<std::vector<int32_t>> ids = ParseTokenList("detokenize", absl::StrJoin(flags.operands, ","));
  if (!ids.ok()) {
    err << "rwkv-client: " << ids.status().message() << "\n";
    return kExitUsage;
  }
  grpc::ClientContext ctx;
  ApplyDeadline(flags, ctx);
  pb::DetokenizeRequest request;
  for (int32_t id : *ids) request.add_token_ids(id);
  pb::DetokenizeResponse response;
  const grpc::Status status = stub.Detokenize(&ctx, request, &response);
  if (!status.ok()) return Fail(err, status);
  out << response.text() << "\n";
  return kExitOk;
}

// Every ModelInfo field as "name: value", in proto order.
int RunInfo(const ClientFlags& flags, pb::Inference::StubInterface& stub, std::ostream& out, std::ostream& err) {
  grpc::ClientContext ctx;
  ApplyDeadline(flags, ctx);
  pb::ModelInfo info;
  const grpc::Status status = stub.GetModelInfo(&ctx, pb::GetModelInfoRequest(), &info);
  if (!status.ok()) return Fail(err, status);
  const google::protobuf::Descriptor* descriptor = info.GetDescriptor();
  const google::protobuf::Reflection* reflection = info.GetReflection();
  for (int i = 0; i < descriptor->field_count(); ++i) {
    const google::protobuf::FieldDescriptor* field = descriptor->field(i);
    out << field->name() << ": ";
    switch (field->cpp_type()) {
      case google::protobuf::FieldDescriptor::CPPTYPE_STRING:
        out << reflection->GetString(info, field);
        break;
      case google::protobuf::FieldDescriptor::CPPTYPE_INT32:
        out << reflection->GetInt32(info, field);
        break;
      case google::protobuf::FieldDescriptor::CPPTYPE_INT64:
        out << reflection->GetInt64(info, field);
        break;
      default:
        out << "?";
        break;
    }
    out << "\n";
  }
  return kExitOk;
}

}  // namespace

pb::GenerateRequest BuildGenerateRequest(const ClientFlags& flags) {
  pb::GenerateRequest request;
  if (flags.prompt.has_value()) request.set_text(*flags.prompt);
  if (flags.tokens.has_value()) {
    for (int32_t id : *flags.tokens) request.mutable_tokens()->add_ids(id);
  }
  request.set_session_id(flags.session);
  if (flags.max_tokens.has_value()) request.set_max_tokens(*flags.max_tokens);
  pb::SamplingParams& s = *request.mutable_sampling();
  if (flags.temperature.has_value()) s.set_temperature(*flags.temperature);
  if (flags.top_p.has_value()) s.set_top_p(*flags.top_p);
  s.set_top_k(flags.top_k);
  s.set_min_p(flags.min_p);
  s.set_presence_penalty(flags.presence_penalty);
  s.set_frequency_penalty(flags.frequency_penalty);
  if (flags.penalty_decay.has_value()) s.set_penalty_decay(*flags.penalty_decay);
  if (flags.repetition_penalty.has_value()) s.set_repetition_penalty(*flags.repetition_penalty);
  s.set_seed(flags.seed);
  pb::StopConditions& stop = *request.mutable_stop();
  for (const std::string& str : flags.stop) stop.add_stop_strings(str);
  for (int32_t id : flags.stop_tokens) stop.add_stop_token_ids(id);
  stop.set_ignore_end_of_text(flags.ignore_end_of_text);
  if (flags.logprobs.has_value()) {
    request.set_logprobs(true);
    request.set_top_logprobs(*flags.logprobs);
  }
  return request;
}

std::string DescribeStatus(const grpc::Status& status) {
  const std::string code = absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code()));
  if (status.error_message().empty()) return code;
  return absl::StrCat(code, ": ", status.error_message());
}

int RunClientCommand(const ClientFlags& flags, pb::Inference::StubInterface& stub, std::ostream& out,
                     std::ostream& err, bool out_is_terminal) {
  switch (flags.command) {
    case ClientCommand::kGenerate:
      return RunGenerate(flags, stub, out, err, out_is_terminal);
    case ClientCommand::kSessionCreate:
      return RunSessionCreate(flags, stub, out, err);
    case ClientCommand::kSessionGet:
    case ClientCommand::kSessionFork:
    case ClientCommand::kSessionLoad:
      return RunSessionQuery(flags, stub, out, err);
    case ClientCommand::kSessionDelete:
      return RunSessionDelete(flags, stub, out, err);
    case ClientCommand::kSessionList:
      return RunSessionList(flags, stub, out, err);
    case ClientCommand::kSessionSave:
      return RunSessionSave(flags, stub, out, err);
    case ClientCommand::kSessionExport:
      return RunSessionExport(flags, stub, out, err);
    case ClientCommand::kSessionImport:
      return RunSessionImport(flags, stub, out, err);
    case ClientCommand::kTokenize:
      return RunTokenize(flags, stub, out, err);
    case ClientCommand::kDetokenize:
      return RunDetokenize(flags, stub, out, err);
    case ClientCommand::kInfo:
      return RunInfo(flags, stub, out, err);
    case ClientCommand::kHelp:
      out << ClientUsage();
      return kExitOk;
  }
  return kExitUsage;
}

}  // namespace rwkv
