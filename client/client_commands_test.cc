// The client commands against an in-process fake Inference service: what
// each command sends, what it prints, and how it reports errors.
#include "client/client_commands.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "grpcpp/grpcpp.h"
#include "rwkv/v1/rwkv.grpc.pb.h"

namespace rwkv {
namespace {

namespace pb = ::rwkv::v1;

constexpr char kId[] = "0123456789abcdef0123456789abcdef";

// Answers from canned data and records the last requests.
class FakeInference final : public pb::Inference::Service {
 public:
  grpc::Status Generate(grpc::ServerContext*, const pb::GenerateRequest* request,
                        grpc::ServerWriter<pb::GenerateResponse>* writer) override {
    {
      absl::MutexLock lock(&mu_);
      last_generate_ = *request;
    }
    if (request->session_id() == "missing") {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "session missing not found");
    }
    pb::GenerateResponse chunk;
    chunk.set_text("Hello");
    chunk.add_token_ids(1);
    chunk.add_logprobs()->set_token_id(1);
    writer->Write(chunk);
    chunk.Clear();
    chunk.set_text(", world");
    chunk.add_token_ids(2);
    chunk.add_logprobs()->set_token_id(2);
    chunk.set_finish_reason(pb::FINISH_REASON_LENGTH);
    chunk.mutable_usage()->set_prompt_tokens(3);
    chunk.mutable_usage()->set_generated_tokens(2);
    writer->Write(chunk);
    return grpc::Status::OK;
  }
  grpc::Status CreateSession(grpc::ServerContext*, const pb::CreateSessionRequest* request,
                             pb::Session* session) override {
    absl::MutexLock lock(&mu_);
    last_create_ = *request;
    session->set_id(kId);
    session->set_tokens_seen(static_cast<int64_t>(request->prompt_text().size()));
    return grpc::Status::OK;
  }
  grpc::Status GetSession(grpc::ServerContext*, const pb::SessionRequest* request, pb::Session* session) override {
    if (request->session_id() != kId) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "session " + request->session_id() + " not found");
    }
    session->set_id(kId);
    session->set_tokens_seen(42);
    session->set_resident(true);
    return grpc::Status::OK;
  }
  grpc::Status ListSessions(grpc::ServerContext*, const pb::ListSessionsRequest*,
                            pb::ListSessionsResponse* response) override {
    response->add_sessions()->set_id(kId);
    response->add_sessions()->set_id("ffffffffffffffffffffffffffffffff");
    return grpc::Status::OK;
  }
  grpc::Status ExportSession(grpc::ServerContext*, const pb::SessionRequest*,
                             grpc::ServerWriter<pb::StateChunk>* writer) override {
    pb::StateChunk chunk;
    for (int i = 0; i < 3; ++i) {
      chunk.set_data(std::string(100000, static_cast<char>('a' + i)));
      writer->Write(chunk);
    }
    return grpc::Status::OK;
  }
  grpc::Status ImportSession(grpc::ServerContext*, grpc::ServerReader<pb::StateChunk>* reader,
                             pb::Session* session) override {
    pb::StateChunk chunk;
    std::string bytes;
    while (reader->Read(&chunk)) bytes += chunk.data();
    absl::MutexLock lock(&mu_);
    imported_ = bytes;
    session->set_id(kId);
    return grpc::Status::OK;
  }
  grpc::Status Tokenize(grpc::ServerContext*, const pb::TokenizeRequest* request,
                        pb::TokenizeResponse* response) override {
    for (char c : request->text()) response->add_token_ids(static_cast<unsigned char>(c));
    return grpc::Status::OK;
  }
  grpc::Status GetModelInfo(grpc::ServerContext*, const pb::GetModelInfoRequest*, pb::ModelInfo* info) override {
    info->set_architecture("rwkv7");
    info->set_n_layer(12);
    info->set_params(834000);
    return grpc::Status::OK;
  }

  pb::GenerateRequest last_generate() {
    absl::MutexLock lock(&mu_);
    return last_generate_;
  }
  pb::CreateSessionRequest last_create() {
    absl::MutexLock lock(&mu_);
    return last_create_;
  }
  std::string imported() {
    absl::MutexLock lock(&mu_);
    return imported_;
  }

 private:
  absl::Mutex mu_;
  pb::GenerateRequest last_generate_ ABSL_GUARDED_BY(mu_);
  pb::CreateSessionRequest last_create_ ABSL_GUARDED_BY(mu_);
  std::string imported_ ABSL_GUARDED_BY(mu_);
};

class ClientCommandsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port, 0);
    stub_ = pb::Inference::NewStub(
        grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  }
  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown();
  }

  // Parses `args`, runs the command and keeps its output.
  int Run(const std::vector<std::string>& args) {
    out_.str("");
    err_.str("");
    absl::StatusOr<ClientFlags> flags = ParseClientFlags(args);
    EXPECT_TRUE(flags.ok()) << flags.status();
    if (!flags.ok()) return kExitUsage;
    return RunClientCommand(*flags, *stub_, out_, err_);
  }

  FakeInference service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<pb::Inference::Stub> stub_;
  std::ostringstream out_, err_;
};

TEST_F(ClientCommandsTest, GenerateStreamsTextAndReportsUsage) {
  ASSERT_EQ(Run({"generate", "--prompt", "Hi", "--max-tokens", "2", "--seed", "5", "--stop", "x",
                 "--temperature", "0"}),
            kExitOk)
      << err_.str();
  EXPECT_EQ(out_.str(), "Hello, world");
  EXPECT_NE(err_.str().find("finish_reason: length"), std::string::npos) << err_.str();
  EXPECT_NE(err_.str().find("generated_tokens: 2"), std::string::npos) << err_.str();
  const pb::GenerateRequest sent = service_.last_generate();
  EXPECT_EQ(sent.text(), "Hi");
  EXPECT_EQ(sent.max_tokens(), 2);
  EXPECT_EQ(sent.sampling().seed(), 5u);
  ASSERT_TRUE(sent.sampling().has_temperature());
  EXPECT_EQ(sent.sampling().temperature(), 0.0f);
  EXPECT_FALSE(sent.sampling().has_top_p());
  ASSERT_EQ(sent.stop().stop_strings_size(), 1);
  EXPECT_FALSE(sent.logprobs());
}

TEST_F(ClientCommandsTest, GenerateJsonPrintsOneObjectPerChunk) {
  ASSERT_EQ(Run({"generate", "--tokens", "1,2", "--json", "--logprobs", "0"}), kExitOk) << err_.str();
  const std::string out = out_.str();
  ASSERT_EQ(std::count(out.begin(), out.end(), '\n'), 2) << out;
  EXPECT_NE(out.find("\"text\":\"Hello\""), std::string::npos) << out;
  EXPECT_NE(out.find("\"finish_reason\":\"FINISH_REASON_LENGTH\""), std::string::npos) << out;
  EXPECT_NE(out.find("\"token_ids\":[2]"), std::string::npos) << out;
  EXPECT_TRUE(service_.last_generate().logprobs());
  EXPECT_EQ(service_.last_generate().tokens().ids_size(), 2);
}

TEST_F(ClientCommandsTest, RpcErrorsAreReadableAndExitOne) {
  EXPECT_EQ(Run({"generate", "--session", "missing"}), kExitRpcError);
  EXPECT_EQ(err_.str(), "rwkv-client: NOT_FOUND: session missing not found\n");
  EXPECT_EQ(Run({"session", "get", "nope"}), kExitRpcError);
  EXPECT_EQ(err_.str(), "rwkv-client: NOT_FOUND: session nope not found\n");
  EXPECT_EQ(out_.str(), "");
  // Unimplemented on the fake.
  EXPECT_EQ(Run({"session", "delete", kId}), kExitRpcError);
  EXPECT_EQ(err_.str().rfind("rwkv-client: UNIMPLEMENTED", 0), 0u) << err_.str();
}

TEST_F(ClientCommandsTest, SessionCommandsPrintTheIdFirst) {
  ASSERT_EQ(Run({"session", "create", "--prompt", "abc"}), kExitOk) << err_.str();
  EXPECT_EQ(out_.str().substr(0, 33), std::string(kId) + "\n");
  EXPECT_NE(out_.str().find("tokens_seen: 3\n"), std::string::npos) << out_.str();
  EXPECT_EQ(service_.last_create().prompt_text(), "abc");

  ASSERT_EQ(Run({"session", "create", "--from-saved", "snap"}), kExitOk) << err_.str();
  EXPECT_EQ(service_.last_create().saved_name(), "snap");

  ASSERT_EQ(Run({"session", "get", kId}), kExitOk) << err_.str();
  EXPECT_EQ(out_.str().substr(0, 33), std::string(kId) + "\n");
  EXPECT_NE(out_.str().find("tokens_seen: 42\nresident: true\nbusy: false\n"), std::string::npos) << out_.str();

  ASSERT_EQ(Run({"session", "list"}), kExitOk) << err_.str();
  const std::string list = out_.str();
  EXPECT_EQ(list.substr(0, 33), std::string(kId) + " ");
  EXPECT_EQ(std::count(list.begin(), list.end(), '\n'), 2) << list;
}

TEST_F(ClientCommandsTest, ExportAndImportMoveTheExactBytes) {
  const std::filesystem::path file =
      std::filesystem::temp_directory_path() / ("rwkv_client_test_" + std::to_string(getpid()) + ".state");
  ASSERT_EQ(Run({"session", "export", kId, file.string()}), kExitOk) << err_.str();
  EXPECT_NE(out_.str().find("exported: 300000 bytes"), std::string::npos) << out_.str();
  std::ifstream in(file, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(bytes.size(), 300000u);
  ASSERT_EQ(Run({"session", "import", file.string()}), kExitOk) << err_.str();
  EXPECT_EQ(service_.imported(), bytes);
  EXPECT_EQ(out_.str().substr(0, 33), std::string(kId) + "\n");
  std::filesystem::remove(file);

  EXPECT_EQ(Run({"session", "import", "/nonexistent/file"}), kExitRpcError);
  EXPECT_NE(err_.str().find("cannot read /nonexistent/file"), std::string::npos) << err_.str();
}

TEST_F(ClientCommandsTest, TokenizeAndInfo) {
  ASSERT_EQ(Run({"tokenize", "AB"}), kExitOk) << err_.str();
  EXPECT_EQ(out_.str(), "65,66\n");
  ASSERT_EQ(Run({"info"}), kExitOk) << err_.str();
  EXPECT_NE(out_.str().find("architecture: rwkv7\nn_layer: 12\n"), std::string::npos) << out_.str();
  EXPECT_NE(out_.str().find("params: 834000\n"), std::string::npos) << out_.str();
}

TEST(ClientCommandsNoServerTest, UnreachableServerIsUnavailable) {
  auto stub = pb::Inference::NewStub(grpc::CreateChannel("127.0.0.1:1", grpc::InsecureChannelCredentials()));
  absl::StatusOr<ClientFlags> flags = ParseClientFlags({"info", "--deadline", "5"});
  ASSERT_TRUE(flags.ok());
  std::ostringstream out, err;
  EXPECT_EQ(RunClientCommand(*flags, *stub, out, err), kExitRpcError);
  EXPECT_EQ(err.str().rfind("rwkv-client: UNAVAILABLE", 0), 0u) << err.str();
}

}  // namespace
}  // namespace rwkv
