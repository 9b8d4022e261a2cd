// See e2e_util.h.
#include "tests/e2e/e2e_util.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <regex>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/testing/testdata.h"
#include "grpcpp/generic/generic_stub.h"
#include "httplib.h"

namespace rwkv::e2e {

namespace fs = std::filesystem;

namespace {

std::string EnvOr(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::string(v) : std::string(fallback);
}

std::chrono::system_clock::time_point DeadlineIn(absl::Duration d) {
  return std::chrono::system_clock::now() + absl::ToChronoMicroseconds(d);
}

}  // namespace

std::string ServerBinary() {
#ifdef RWKV_SERVER_BIN
  const std::string path = EnvOr("RWKV_SERVER_BIN", RWKV_SERVER_BIN);
#else
  const std::string path = EnvOr("RWKV_SERVER_BIN", "");
#endif
  return !path.empty() && access(path.c_str(), X_OK) == 0 ? path : "";
}

std::string LoadgenBinary() {
#ifdef RWKV_LOADGEN_BIN
  const std::string path = EnvOr("RWKV_LOADGEN_BIN", RWKV_LOADGEN_BIN);
#else
  const std::string path = EnvOr("RWKV_LOADGEN_BIN", "");
#endif
  return !path.empty() && access(path.c_str(), X_OK) == 0 ? path : "";
}

std::string ClientBinary() {
#ifdef RWKV_CLIENT_BIN
  const std::string path = EnvOr("RWKV_CLIENT_BIN", RWKV_CLIENT_BIN);
#else
  const std::string path = EnvOr("RWKV_CLIENT_BIN", "");
#endif
  return !path.empty() && access(path.c_str(), X_OK) == 0 ? path : "";
}

TempDir::TempDir() {
  std::string tmpl = (fs::temp_directory_path() / "rwkv_e2e_XXXXXX").string();
  if (mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  if (!path_.empty()) fs::remove_all(path_, ec);
}

int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  int port = -1;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

std::string ReadFileOrEmpty(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// ---------------------------------------------------------------- ServerProcess

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::Start(const std::string& model,
                                                                    const std::vector<std::string>& args,
                                                                    const fs::path& log_dir,
                                                                    const std::string& name) {
  const std::string binary = ServerBinary();
  if (binary.empty()) return absl::FailedPreconditionError("rwkv-server not built");
  std::vector<std::string> argv = {binary,
                                   "--model",
                                   model,
                                   "--listen",
                                   "127.0.0.1:0",
                                   "--metrics-listen",
                                   "127.0.0.1:0"};
  argv.insert(argv.end(), args.begin(), args.end());
  std::unique_ptr<ServerProcess> server(new ServerProcess());
  server->log_ = log_dir / (name + ".log");
  std::error_code ec;
  fs::remove(server->log_, ec);
  server->child_ = std::make_unique<ChildProcess>(argv, server->log_);
  if (server->child_->pid() <= 0) return absl::InternalError("fork failed");

  static const std::regex kListening(R"(rwkv-server: listening on (\S+:\d+))");
  static const std::regex kMetrics(R"(rwkv-server: metrics on \S+:(\d+))");
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (true) {
    const std::string log = server->Log();
    std::smatch listening, metrics;
    if (std::regex_search(log, listening, kListening) && std::regex_search(log, metrics, kMetrics)) {
      server->address_ = listening[1].str();
      server->metrics_port_ = std::stoi(metrics[1].str());
      break;
    }
    if (!server->child_->Running()) {
      return absl::InternalError(absl::StrCat("rwkv-server exited during start-up; log:\n", log));
    }
    if (absl::Now() > deadline) {
      server->child_->Kill();
      return absl::DeadlineExceededError(absl::StrCat("rwkv-server did not start in 60 s; log:\n", log));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  grpc::ChannelArguments channel_args;
  channel_args.SetMaxReceiveMessageSize(-1);
  server->channel_ = grpc::CreateCustomChannel(server->address_, grpc::InsecureChannelCredentials(), channel_args);
  if (!server->channel_->WaitForConnected(DeadlineIn(absl::Seconds(20)))) {
    server->child_->Kill();
    return absl::UnavailableError(absl::StrCat("cannot connect to ", server->address_, "; log:\n", server->Log()));
  }
  return server;
}

std::unique_ptr<pb::Inference::Stub> ServerProcess::NewStub() const { return pb::Inference::NewStub(channel_); }

absl::StatusOr<int> ServerProcess::Terminate(absl::Duration timeout) {
  child_->Signal(SIGTERM);
  const std::optional<int> status = child_->Wait(absl::ToChronoMilliseconds(timeout));
  if (!status.has_value()) {
    child_->Kill();
    return absl::DeadlineExceededError(
        absl::StrCat("rwkv-server did not exit within ", absl::FormatDuration(timeout), " of SIGTERM"));
  }
  if (WIFSIGNALED(*status)) {
    return absl::InternalError(absl::StrCat("rwkv-server died of signal ", WTERMSIG(*status)));
  }
  return WEXITSTATUS(*status);
}

// ---------------------------------------------------------------- calls

pb::GenerateRequest MakeRequest(const std::string& text, const std::string& session_id, int32_t max_tokens,
                                uint64_t seed) {
  pb::GenerateRequest request;
  request.set_text(text);
  request.set_session_id(session_id);
  request.set_max_tokens(max_tokens);
  request.mutable_sampling()->set_temperature(1.0f);
  request.mutable_sampling()->set_seed(seed);
  return request;
}

GenerateResult RunGenerate(pb::Inference::StubInterface& stub, const pb::GenerateRequest& request,
                           absl::Duration timeout) {
  GenerateResult result;
  grpc::ClientContext ctx;
  ctx.set_deadline(DeadlineIn(timeout));
  std::unique_ptr<grpc::ClientReaderInterface<pb::GenerateResponse>> reader = stub.Generate(&ctx, request);
  pb::GenerateResponse chunk;
  while (reader->Read(&chunk)) {
    ++result.chunks;
    result.text += chunk.text();
    result.tokens.insert(result.tokens.end(), chunk.token_ids().begin(), chunk.token_ids().end());
    if (chunk.finish_reason() != pb::FINISH_REASON_UNSPECIFIED) result.finish_reason = chunk.finish_reason();
    if (chunk.has_usage()) result.usage = chunk.usage();
  }
  result.status = reader->Finish();
  return result;
}

std::string Describe(const grpc::Status& status) {
  return absl::StrCat(absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code())), ": ",
                      status.error_message());
}

absl::Status ToAbsl(const grpc::Status& status) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

absl::StatusOr<pb::Session> CreateSession(pb::Inference::StubInterface& stub, const std::string& prompt) {
  grpc::ClientContext ctx;
  ctx.set_deadline(DeadlineIn(absl::Seconds(30)));
  pb::CreateSessionRequest request;
  request.set_prompt_text(prompt);
  pb::Session session;
  const grpc::Status status = stub.CreateSession(&ctx, request, &session);
  if (!status.ok()) return ToAbsl(status);
  return session;
}

absl::StatusOr<pb::Session> GetSession(pb::Inference::StubInterface& stub, const std::string& id) {
  grpc::ClientContext ctx;
  ctx.set_deadline(DeadlineIn(absl::Seconds(30)));
  pb::SessionRequest request;
  request.set_session_id(id);
  pb::Session session;
  const grpc::Status status = stub.GetSession(&ctx, request, &session);
  if (!status.ok()) return ToAbsl(status);
  return session;
}

absl::StatusOr<std::string> ExportSession(pb::Inference::StubInterface& stub, const std::string& id) {
  grpc::ClientContext ctx;
  ctx.set_deadline(DeadlineIn(absl::Seconds(30)));
  pb::SessionRequest request;
  request.set_session_id(id);
  std::unique_ptr<grpc::ClientReaderInterface<pb::StateChunk>> reader = stub.ExportSession(&ctx, request);
  std::string bytes;
  pb::StateChunk chunk;
  while (reader->Read(&chunk)) bytes += chunk.data();
  const grpc::Status status = reader->Finish();
  if (!status.ok()) return ToAbsl(status);
  return bytes;
}

absl::StatusOr<pb::Session> ImportSession(pb::Inference::StubInterface& stub, const std::string& bytes) {
  grpc::ClientContext ctx;
  ctx.set_deadline(DeadlineIn(absl::Seconds(30)));
  pb::Session session;
  std::unique_ptr<grpc::ClientWriterInterface<pb::StateChunk>> writer = stub.ImportSession(&ctx, &session);
  constexpr size_t kChunk = 64 * 1024;
  pb::StateChunk chunk;
  for (size_t offset = 0; offset < bytes.size(); offset += kChunk) {
    chunk.set_data(bytes.substr(offset, kChunk));
    if (!writer->Write(chunk)) break;
  }
  writer->WritesDone();
  const grpc::Status status = writer->Finish();
  if (!status.ok()) return ToAbsl(status);
  return session;
}

RawResult RawCall(const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
                  const std::string& request, absl::Duration timeout) {
  RawResult result;
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  ctx.set_deadline(DeadlineIn(timeout));
  // One operation in flight at a time: issue, then wait for its tag.
  auto wait = [&cq]() {
    void* tag = nullptr;
    bool ok = false;
    return cq.Next(&tag, &ok) && ok;
  };
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call = stub.PrepareCall(&ctx, method, &cq);
  call->StartCall(reinterpret_cast<void*>(1));
  if (wait()) {
    grpc::Slice slice(request);
    grpc::ByteBuffer buffer(&slice, 1);
    call->WriteLast(buffer, grpc::WriteOptions(), reinterpret_cast<void*>(2));
    if (wait()) {
      while (true) {
        grpc::ByteBuffer response;
        call->Read(&response, reinterpret_cast<void*>(3));
        if (!wait()) break;
        std::vector<grpc::Slice> slices;
        std::string bytes;
        if (response.Dump(&slices).ok()) {
          for (const grpc::Slice& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
        }
        result.responses.push_back(std::move(bytes));
      }
    }
  }
  call->Finish(&result.status, reinterpret_cast<void*>(4));
  void* tag = nullptr;
  bool ok = false;
  cq.Next(&tag, &ok);
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  return result;
}

std::string HealthCheck(const std::shared_ptr<grpc::Channel>& channel) {
  // HealthCheckRequest{service: ""} is the empty message; the answer is
  // HealthCheckResponse{status = 1}: SERVING 1, NOT_SERVING 2.
  const RawResult r = RawCall(channel, "/grpc.health.v1.Health/Check", "", absl::Seconds(10));
  if (!r.status.ok()) return absl::StrCat("error ", r.status.error_code(), ": ", r.status.error_message());
  if (r.responses.size() != 1) return "no answer";
  const std::string& a = r.responses[0];
  if (a == WireVarintField(1, 1)) return "SERVING";
  if (a == WireVarintField(1, 2)) return "NOT_SERVING";
  return absl::StrCat("unknown answer of ", a.size(), " bytes");
}

std::string FetchMetricsText(int port) {
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(2, 0);
  client.set_read_timeout(5, 0);
  httplib::Result res = client.Get("/metrics");
  return res && res->status == 200 ? res->body : std::string();
}

std::string SampleValue(const std::string& text, const std::string& sample) {
  const std::string prefix = sample + " ";
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    if (text.compare(pos, prefix.size(), prefix) == 0) {
      const std::string value = text.substr(pos + prefix.size(), end - pos - prefix.size());
      return value.substr(0, value.find(' '));  // drop an optional timestamp
    }
    pos = end + 1;
  }
  return "";
}

std::string WireVarint(uint64_t value) {
  std::string out;
  do {
    uint8_t byte = value & 0x7f;
    value >>= 7;
    if (value != 0) byte |= 0x80;
    out.push_back(static_cast<char>(byte));
  } while (value != 0);
  return out;
}

std::string WireBytesField(int field, const std::string& bytes) {
  return WireVarint(static_cast<uint64_t>(field) << 3 | 2) + WireVarint(bytes.size()) + bytes;
}

std::string WireVarintField(int field, uint64_t value) {
  return WireVarint(static_cast<uint64_t>(field) << 3) + WireVarint(value);
}

}  // namespace rwkv::e2e
