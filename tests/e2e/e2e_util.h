// Helpers for the end-to-end tests: rwkv-server as a real child process,
// gRPC calls through the generated stubs (and raw bytes through a generic
// stub), temp directories and free ports.
//
// Why: every e2e test starts the real binary on 127.0.0.1 port 0 and must
// never leave it behind. ChildProcess kills (SIGKILL) and reaps its child on
// every path out of a test (destructor), and the child asks the kernel to
// kill it if the test process dies first (PR_SET_PDEATHSIG). Every wait here
// is bounded.
#ifndef RWKV_TESTS_E2E_E2E_UTIL_H_
#define RWKV_TESTS_E2E_E2E_UTIL_H_

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/testing/child_process.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "rwkv/v1/rwkv.grpc.pb.h"

namespace rwkv::e2e {

namespace pb = ::rwkv::v1;

// The rwkv-server binary: $RWKV_SERVER_BIN, else the build's; "" if none.
std::string ServerBinary();
// The rwkv-client binary likewise ($RWKV_CLIENT_BIN).
std::string ClientBinary();
// The rwkv-loadgen binary likewise ($RWKV_LOADGEN_BIN).
std::string LoadgenBinary();

// The tiny RWKV-7 model (byte vocabulary) and an RWKV-4 one, under the test data root.
inline constexpr char kTinyModel[] = "rwkv_cpp/tiny-rwkv-7v0-834K-FP32.bin";
inline constexpr char kTinyModelV4[] = "rwkv_cpp/tiny-rwkv-4v0-660K-FP32.bin";

// A temp directory, removed with its contents on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// A free loopback TCP port (bound, then released).
int FreePort();

std::string ReadFileOrEmpty(const std::filesystem::path& path);

// Forked children are killed and reaped on every path (engine/testing/child_process.h).
using ::rwkv::testing::ChildProcess;

// A running rwkv-server, started with --listen and --metrics-listen on
// 127.0.0.1 port 0 (the ports are read from its log).
class ServerProcess {
 public:
  // Starts `ServerBinary() --model <model> <args...>` and waits (at most
  // 60 s) until it prints both of its address lines. The log goes to
  // `log_dir`/<name>.log. Errors carry the log.
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Start(const std::string& model,
                                                              const std::vector<std::string>& args,
                                                              const std::filesystem::path& log_dir,
                                                              const std::string& name = "server");
  ~ServerProcess() = default;

  const std::string& address() const { return address_; }  // "127.0.0.1:PORT"
  int metrics_port() const { return metrics_port_; }
  std::shared_ptr<grpc::Channel> channel() const { return channel_; }
  std::unique_ptr<pb::Inference::Stub> NewStub() const;
  bool Running() { return child_->Running(); }
  ChildProcess& child() { return *child_; }
  std::string Log() const { return ReadFileOrEmpty(log_); }

  // SIGTERM, then waits up to `timeout` for the exit. Returns the exit code;
  // DEADLINE_EXCEEDED (and SIGKILL) if it does not exit, INTERNAL if it died of a signal.
  absl::StatusOr<int> Terminate(absl::Duration timeout);
  // SIGKILL now.
  void Kill() { child_->Kill(); }

 private:
  ServerProcess() = default;
  std::unique_ptr<ChildProcess> child_;
  std::filesystem::path log_;
  std::string address_;
  int metrics_port_ = 0;
  std::shared_ptr<grpc::Channel> channel_;
};

// The result of one Generate stream.
struct GenerateResult {
  grpc::Status status;
  std::vector<int32_t> tokens;
  std::string text;
  pb::FinishReason finish_reason = pb::FINISH_REASON_UNSPECIFIED;
  pb::Usage usage;
  int chunks = 0;
};

// A request at temperature 1 (unless changed) with the given seed.
pb::GenerateRequest MakeRequest(const std::string& text, const std::string& session_id, int32_t max_tokens,
                                uint64_t seed);

// Runs one Generate stream to its end (deadline `timeout`).
GenerateResult RunGenerate(pb::Inference::StubInterface& stub, const pb::GenerateRequest& request,
                           absl::Duration timeout = absl::Seconds(60));

// CreateSession with a text prompt (empty: zero state).
absl::StatusOr<pb::Session> CreateSession(pb::Inference::StubInterface& stub, const std::string& prompt);
absl::StatusOr<pb::Session> GetSession(pb::Inference::StubInterface& stub, const std::string& id);
// ExportSession's bytes.
absl::StatusOr<std::string> ExportSession(pb::Inference::StubInterface& stub, const std::string& id);
// ImportSession from bytes, in 64 KiB chunks.
absl::StatusOr<pb::Session> ImportSession(pb::Inference::StubInterface& stub, const std::string& bytes);

// "NOT_FOUND: message" for a status.
std::string Describe(const grpc::Status& status);

// grpc::Status → absl::Status (same code and message).
absl::Status ToAbsl(const grpc::Status& status);

// One call through a generic stub with hand-made request bytes: writes
// `request`, half-closes, reads every response. Works for unary and
// server-streaming methods, e.g. "/rwkv.v1.Inference/Generate".
struct RawResult {
  grpc::Status status;
  std::vector<std::string> responses;
};
RawResult RawCall(const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
                  const std::string& request, absl::Duration timeout = absl::Seconds(30));

// grpc.health.v1.Health/Check for the whole server: "SERVING", "NOT_SERVING", or the error.
std::string HealthCheck(const std::shared_ptr<grpc::Channel>& channel);

// GET http://127.0.0.1:<port>/metrics: the body, or "" on failure.
std::string FetchMetricsText(int port);
// The value of the sample written exactly `sample` (a name with its labels,
// e.g. rwkv_batch_size_bucket{le="8"}) in exposition text, or "".
std::string SampleValue(const std::string& text, const std::string& sample);

// Protobuf wire-format pieces, to build requests the C++ API would refuse.
std::string WireVarint(uint64_t value);
std::string WireBytesField(int field, const std::string& bytes);
std::string WireVarintField(int field, uint64_t value);

}  // namespace rwkv::e2e

// Skips unless the server binary and the tiny model are there.
#define RWKV_REQUIRE_SERVER()                                                                      \
  do {                                                                                             \
    if (::rwkv::e2e::ServerBinary().empty()) {                                                     \
      GTEST_SKIP() << "rwkv-server was not built (or set RWKV_SERVER_BIN)";                        \
    }                                                                                              \
    RWKV_REQUIRE_TESTDATA(::rwkv::e2e::kTinyModel);                                                \
  } while (0)

#endif  // RWKV_TESTS_E2E_E2E_UTIL_H_
