// End-to-end: rwkv-loadgen against a real rwkv-server process.
//
// Why: the load generator's numbers are only worth something if its counts
// are exact (every request and every token accounted for, errors by code)
// and its timings come from real streams; this drives each mode against the
// tiny model on the CPU backend and checks the counts exactly.
#include <sys/wait.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <cstdio>
#include <optional>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/loadgen/load_spec.h"
#include "client/loadgen/loadgen.h"
#include "engine/testing/testdata.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/e2e/e2e_util.h"

namespace rwkv::e2e {
namespace {

namespace lg = ::rwkv::loadgen;

lg::LoadSpec Spec(const std::string& address, std::vector<std::string> args) {
  args.push_back("--server");
  args.push_back(address);
  auto spec = lg::ParseLoadSpec(args);
  EXPECT_TRUE(spec.ok()) << spec.status();
  return spec.ok() ? *spec : lg::LoadSpec();
}

// The client callback API of this gRPC (1.51 on Linux) runs every channel's
// callbacks on one shared completion queue that lives while some channel
// that used the callback API does. When a test destroys the last such
// channel, the queue is shut down while its thread may still be finishing a
// call, and gRPC aborts ("prior > 0" in grpc_cq_internal_unref). So one
// channel that made a callback call is kept for the life of the process.
void PinCallbackCompletionQueue() {
  static const bool pinned = [] {
    auto* channel = new std::shared_ptr<grpc::Channel>(
        grpc::CreateChannel("127.0.0.1:1", grpc::InsecureChannelCredentials()));
    auto* stub = pb::Inference::NewStub(*channel).release();
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    pb::GetModelInfoRequest req;
    pb::ModelInfo resp;
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    stub->async()->GetModelInfo(&ctx, &req, &resp, [&](grpc::Status) {
      std::lock_guard<std::mutex> lock(mu);
      done = true;
      cv.notify_all();
    });
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return done; });
    return true;
  }();
  (void)pinned;
}

class E2eLoadgenTest : public ::testing::Test {
 protected:
  void SetUp() override {
    RWKV_REQUIRE_SERVER();
    PinCallbackCompletionQueue();
    auto server = ServerProcess::Start(rwkv::testing::TestDataPath(kTinyModel),
                                       {"--byte-vocab", "--threads", "1", "--max-prompt-tokens", "4096"}, dir_.path());
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
  }
  TempDir dir_;
  std::unique_ptr<ServerProcess> server_;
};

TEST_F(E2eLoadgenTest, ClosedLoopCountsEveryRequestAndToken) {
  auto stub = server_->NewStub();
  const lg::LoadSpec spec = Spec(server_->address(), {"--concurrency", "4", "--requests", "12", "--prompt-tokens",
                                                      "uniform:4:40", "--max-tokens", "6", "--temperature", "0"});
  auto report = lg::RunLoad(spec, *stub);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->started, 12);
  EXPECT_EQ(report->succeeded, 12) << report->first_error;
  EXPECT_EQ(report->failed, 0);
  EXPECT_TRUE(report->errors_by_code.empty());
  EXPECT_EQ(report->generated_tokens, 12 * 6);  // end-of-text is ignored by default
  EXPECT_GE(report->prompt_tokens, 12 * 4);
  EXPECT_LE(report->prompt_tokens, 12 * 40);
  EXPECT_EQ(report->ttft.count, 12);
  EXPECT_EQ(report->itl.count, 12 * 5);  // one sample per token after the first
  // No --warmup: the steady window runs from the start to the last start, so
  // it holds some of the samples but not the drain's.
  EXPECT_GT(report->itl_steady.count, 0);
  EXPECT_LE(report->itl_steady.count, report->itl.count);
  EXPECT_EQ(report->e2e.count, 12);
  // The server's own view, from the last message's usage.
  EXPECT_EQ(report->server_ttft.count, 12);
  EXPECT_EQ(report->server_queue.count, 12);
  EXPECT_GT(report->server_ttft.p50, 0);
  EXPECT_LE(report->server_ttft.max, report->ttft.max + 1e-3);  // the server sees less than the client
  EXPECT_GT(report->ttft.p50, 0);
  EXPECT_LE(report->ttft.p50, report->ttft.p99);
  EXPECT_LE(report->itl.p50, report->itl.p90);
  EXPECT_LE(report->itl.p90, report->itl.p99);
  EXPECT_GT(report->generated_tokens_per_s, 0);
  EXPECT_NEAR(report->generated_tokens_per_s, 72 / report->wall_s, 1e-6);
  EXPECT_EQ(report->model.architecture(), "rwkv7");
}

// With several stubs (--connections), stream i's requests go to stub
// i % size: here the second "connection" leads nowhere, so its stream's
// requests fail as UNAVAILABLE while the first's succeed.
TEST_F(E2eLoadgenTest, StreamsAreSpreadOverTheConnections) {
  auto good = server_->NewStub();
  // Kept for the life of the process, as every callback channel here.
  auto* nowhere_channel = new std::shared_ptr<grpc::Channel>(
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", FreePort()), grpc::InsecureChannelCredentials()));
  auto* nowhere = pb::Inference::NewStub(*nowhere_channel).release();
  const lg::LoadSpec spec = Spec(server_->address(), {"--concurrency", "2", "--requests", "6", "--prompt-tokens",
                                                      "4", "--max-tokens", "3", "--connections", "2",
                                                      "--request-timeout", "5"});
  auto report = lg::RunLoad(spec, std::vector<pb::Inference::StubInterface*>{good.get(), nowhere});
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->started, 6);
  EXPECT_GE(report->succeeded, 1);
  EXPECT_GE(report->failed, 1);
  EXPECT_EQ(report->succeeded + report->failed, 6);
  EXPECT_EQ(report->errors_by_code["UNAVAILABLE"], report->failed) << report->first_error;
  EXPECT_EQ(report->generated_tokens, 3 * report->succeeded);
  EXPECT_FALSE(lg::RunLoad(spec, std::vector<pb::Inference::StubInterface*>{}).ok());
}

TEST_F(E2eLoadgenTest, DurationRunMeasuresTheSteadyWindow) {
  auto stub = server_->NewStub();
  const lg::LoadSpec spec = Spec(server_->address(), {"--concurrency", "3", "--duration", "0.8", "--warmup", "0.2",
                                                      "--prompt-tokens", "4", "--max-tokens", "8"});
  auto report = lg::RunLoad(spec, *stub);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->failed, 0) << report->first_error;
  EXPECT_EQ(report->succeeded, report->started);
  EXPECT_GT(report->started, 3);  // the streams kept starting requests for 0.8 s
  EXPECT_EQ(report->generated_tokens, 8 * report->succeeded);
  // The window runs from 0.2 s in to the last start (~0.8 s in).
  EXPECT_GT(report->steady_window_s, 0.5);
  EXPECT_LT(report->steady_window_s, 0.8);
  EXPECT_GT(report->steady_tokens_per_s, 0);
  EXPECT_GE(report->wall_s, 0.8);
}

TEST_F(E2eLoadgenTest, StickySessionsAreReusedAndDeleted) {
  auto stub = server_->NewStub();
  const lg::LoadSpec spec = Spec(server_->address(), {"--concurrency", "2", "--requests", "6", "--prompt-tokens",
                                                      "5", "--max-tokens", "3", "--sessions", "sticky"});
  auto report = lg::RunLoad(spec, *stub);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->succeeded, 6) << report->first_error;
  EXPECT_EQ(report->generated_tokens, 18);
  // The sessions were deleted at the end.
  grpc::ClientContext ctx;
  pb::ListSessionsResponse list;
  ASSERT_TRUE(stub->ListSessions(&ctx, pb::ListSessionsRequest(), &list).ok());
  EXPECT_EQ(list.sessions_size(), 0);
}

TEST_F(E2eLoadgenTest, OpenLoopStartsRequestsAtTheRate) {
  auto stub = server_->NewStub();
  const lg::LoadSpec spec = Spec(server_->address(), {"--mode", "open", "--rate", "40", "--requests", "20",
                                                      "--prompt-tokens", "8", "--max-tokens", "4"});
  auto report = lg::RunLoad(spec, *stub);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->started + report->dropped, 20);
  EXPECT_EQ(report->succeeded, report->started) << report->first_error;
  EXPECT_EQ(report->generated_tokens, 4 * report->succeeded);
  // 20 Poisson arrivals at 40/s take ~0.5 s on average; far more than 0.05 s.
  EXPECT_GT(report->wall_s, 0.05);
}

TEST_F(E2eLoadgenTest, ErrorsAreCountedByCode) {
  auto stub = server_->NewStub();
  // Prompts over the server's --max-prompt-tokens 4096 are refused.
  const lg::LoadSpec spec =
      Spec(server_->address(), {"--concurrency", "3", "--requests", "5", "--prompt-tokens", "5000", "--max-tokens", "2"});
  auto report = lg::RunLoad(spec, *stub);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->succeeded, 0);
  EXPECT_EQ(report->failed, 5);
  ASSERT_EQ(report->errors_by_code.count("INVALID_ARGUMENT"), 1u);
  EXPECT_EQ(report->errors_by_code.at("INVALID_ARGUMENT"), 5);
  EXPECT_NE(report->first_error.find("--max-prompt-tokens"), std::string::npos) << report->first_error;
  EXPECT_EQ(report->generated_tokens, 0);
  EXPECT_TRUE(server_->Running());
}

TEST_F(E2eLoadgenTest, ContextModeReportsEachLength) {
  auto stub = server_->NewStub();
  const lg::LoadSpec spec = Spec(server_->address(), {"--mode", "context", "--context-lengths", "10,300",
                                                      "--context-repeats", "2", "--max-tokens", "5"});
  auto report = lg::RunLoad(spec, *stub);
  ASSERT_TRUE(report.ok()) << report.status();
  ASSERT_EQ(report->context_runs.size(), 4u);
  const int64_t expected[] = {10, 300, 10, 300};  // repeats interleave the lengths
  for (size_t i = 0; i < 4; ++i) {
    const auto& run = report->context_runs[i];
    EXPECT_TRUE(run.error.empty()) << run.error;
    EXPECT_EQ(run.context_tokens, expected[i]);
    EXPECT_EQ(run.generated, 5);
    EXPECT_EQ(run.itl.count, 4);
    EXPECT_GT(run.prefill_s, 0);
  }
  EXPECT_EQ(report->succeeded, 4);
}

TEST_F(E2eLoadgenTest, BinaryWritesJsonAndFlagsFailures) {
  const std::string bin = LoadgenBinary();
  if (bin.empty()) GTEST_SKIP() << "rwkv-loadgen was not built";
  const std::filesystem::path json = dir_.path() / "report.json";
  const std::filesystem::path log = dir_.path() / "loadgen.log";
  {
    ChildProcess p({bin, "--server", server_->address(), "--concurrency", "2", "--requests", "4", "--prompt-tokens",
                    "6", "--max-tokens", "3", "--json", json.string()},
                   log);
    const std::optional<int> code = p.Wait(std::chrono::seconds(120));
    ASSERT_TRUE(code.has_value()) << "rwkv-loadgen did not exit";
    ASSERT_TRUE(WIFEXITED(*code)) << "wait status " << *code;
    EXPECT_EQ(WEXITSTATUS(*code), 0) << ReadFileOrEmpty(log);
  }
  const nlohmann::json j = nlohmann::json::parse(ReadFileOrEmpty(json));
  EXPECT_EQ(j["requests"]["succeeded"], 4);
  EXPECT_EQ(j["tokens"]["generated"], 12);
  EXPECT_EQ(j["itl_s"]["count"], 8);
  EXPECT_NE(ReadFileOrEmpty(log).find("tokens/s"), std::string::npos);
  // A server that is not there: a clear message and a non-zero exit.
  {
    const std::filesystem::path log2 = dir_.path() / "loadgen2.log";
    ChildProcess p({bin, "--server", absl::StrCat("127.0.0.1:", FreePort()), "--requests", "1"}, log2);
    const std::optional<int> code = p.Wait(std::chrono::seconds(120));
    ASSERT_TRUE(code.has_value()) << "rwkv-loadgen did not exit";
    ASSERT_TRUE(WIFEXITED(*code)) << "wait status " << *code;
    EXPECT_EQ(WEXITSTATUS(*code), 1);
    EXPECT_NE(ReadFileOrEmpty(log2).find("GetModelInfo"), std::string::npos) << ReadFileOrEmpty(log2);
  }
}

}  // namespace
}  // namespace rwkv::e2e
