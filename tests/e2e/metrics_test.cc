// End-to-end: the metrics port of a real rwkv-server, checked by promtool and
// scraped by a real Prometheus.
//
// Why: the metrics library has its own promtool and scrape tests; these prove
// that the server wires it up: the counters move with real traffic, the
// exposition stays valid with every family the server registers, and a
// Prometheus scraping the port sees exactly the tokens this test generated.
// Each part skips with a message when its program is not installed
// (Debian package "prometheus"); $RWKV_PROMTOOL / $RWKV_PROMETHEUS override.
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <regex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "engine/metrics/promtool_test_util.h"
#include "engine/testing/testdata.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "tests/e2e/e2e_util.h"

namespace rwkv::e2e {
namespace {

namespace fs = std::filesystem;

std::string FindPrometheus() {
  if (const char* env = std::getenv("RWKV_PROMETHEUS"); env != nullptr && *env != '\0') return env;
  return access("/usr/bin/prometheus", X_OK) == 0 ? "/usr/bin/prometheus" : "";
}

// Starts a server and generates some tokens; returns how many were streamed.
int64_t GenerateSomeTokens(ServerProcess& server) {
  auto stub = server.NewStub();
  int64_t total = 0;
  for (const int n : {7, 11, 13}) {
    const GenerateResult r = RunGenerate(*stub, MakeRequest("Count me", "", n, n));
    EXPECT_TRUE(r.status.ok()) << Describe(r.status);
    total += static_cast<int64_t>(r.tokens.size());
  }
  absl::StatusOr<pb::Session> s = CreateSession(*stub, "A session");
  EXPECT_TRUE(s.ok()) << s.status();
  if (s.ok()) {
    const GenerateResult r = RunGenerate(*stub, MakeRequest(" too", s->id(), 9, 1));
    EXPECT_TRUE(r.status.ok()) << Describe(r.status);
    total += static_cast<int64_t>(r.tokens.size());
  }
  // A refused request generates nothing.
  pb::GenerateRequest bad = MakeRequest("x", "", 5, 1);
  bad.mutable_sampling()->set_top_p(2);
  EXPECT_EQ(RunGenerate(*stub, bad).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  return total;
}

// Fetches /metrics until `name` reads `want` (the counter may be bumped
// just after the stream's last message) or 5 s pass; returns the last text.
std::string FetchMetricsUntil(int port, const std::string& name, const std::string& want) {
  std::string text;
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  do {
    text = FetchMetricsText(port);
    if (SampleValue(text, name) == want) break;
    absl::SleepFor(absl::Milliseconds(50));
  } while (absl::Now() < deadline);
  return text;
}

// The value string of the first sample of an instant-query JSON answer, or "".
std::string FirstValue(const std::string& json) {
  static const std::regex kValue(R"re("value":\[[-0-9.e+]+,"([^"]+)"\])re");
  std::smatch m;
  return std::regex_search(json, m, kValue) ? m[1].str() : "";
}

TEST(E2eMetricsTest, PromtoolAcceptsTheServersMetrics) {
  RWKV_REQUIRE_SERVER();
  const std::string promtool = metrics::testing::FindPromtool();
  if (promtool.empty()) {
    GTEST_SKIP() << "promtool not found: install the Debian package \"prometheus\" or set RWKV_PROMTOOL";
  }
  TempDir dir;
  absl::StatusOr<std::unique_ptr<ServerProcess>> server =
      ServerProcess::Start(rwkv::testing::TestDataPath(kTinyModel), {"--byte-vocab", "--threads", "1"}, dir.path());
  ASSERT_TRUE(server.ok()) << server.status();
  const int64_t total = GenerateSomeTokens(**server);
  ASSERT_GT(total, 0);

  httplib::Client client("127.0.0.1", (*server)->metrics_port());
  client.set_read_timeout(5, 0);
  httplib::Result health = client.Get("/healthz");
  ASSERT_TRUE(health) << "no answer from /healthz";
  EXPECT_EQ(health->status, 200);

  const std::string text = FetchMetricsUntil((*server)->metrics_port(), "rwkv_generation_tokens_total",
                                             std::to_string(total));
  ASSERT_FALSE(text.empty()) << "no /metrics answer";
  EXPECT_EQ(SampleValue(text, "rwkv_generation_tokens_total"), std::to_string(total)) << text;
  const metrics::testing::PromtoolResult check = metrics::testing::RunPromtoolCheckMetrics(promtool, text);
  EXPECT_EQ(check.exit_code, 0) << "promtool check metrics:\n" << check.output << "\non:\n" << text;
}

// The start-up log names the offload memory (how many sessions it holds,
// whether pinned), and the offload gauges follow a session pushed out of the
// server's one slot.
TEST(E2eMetricsTest, OffloadMemoryIsLoggedAndMeasured) {
  RWKV_REQUIRE_SERVER();
  TempDir dir;
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(
      rwkv::testing::TestDataPath(kTinyModel),
      {"--byte-vocab", "--threads", "1", "--state-slots", "1", "--offload-memory-mb", "1"}, dir.path());
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string log = (*server)->Log();
  std::smatch m;
  ASSERT_TRUE(std::regex_search(log, m, std::regex(R"(state bytes per session (\d+))"))) << log;
  const int64_t block = std::stoll(m[1].str());
  ASSERT_GT(block, 0);
  const int64_t capacity = (int64_t{1} << 20) / block;
  EXPECT_NE(log.find(absl::StrCat("offload memory: ", capacity, " idle sessions x ")), std::string::npos) << log;
  EXPECT_NE(log.find("of pageable host memory, allocated as needed (--offload-memory-mb 1)"), std::string::npos)
      << log;

  const int port = (*server)->metrics_port();
  EXPECT_EQ(SampleValue(FetchMetricsText(port), "rwkv_offload_memory_capacity_bytes"),
            std::to_string(capacity * block));
  auto stub = (*server)->NewStub();
  absl::StatusOr<pb::Session> a = CreateSession(*stub, "first");
  ASSERT_TRUE(a.ok()) << a.status();
  absl::StatusOr<pb::Session> b = CreateSession(*stub, "second");  // takes the slot: a is offloaded
  ASSERT_TRUE(b.ok()) << b.status();
  const std::string text = FetchMetricsUntil(port, "rwkv_offload_memory_used_bytes", std::to_string(block));
  EXPECT_EQ(SampleValue(text, "rwkv_offload_memory_used_bytes"), std::to_string(block)) << text;
  absl::StatusOr<pb::Session> got = GetSession(*stub, a->id());
  ASSERT_TRUE(got.ok());
  EXPECT_FALSE(got->resident());
}

TEST(E2eMetricsTest, PrometheusCountsExactlyTheGeneratedTokens) {
  RWKV_REQUIRE_SERVER();
  const std::string prometheus = FindPrometheus();
  if (prometheus.empty()) {
    GTEST_SKIP() << "/usr/bin/prometheus not found: install the Debian package \"prometheus\" or set "
                    "RWKV_PROMETHEUS";
  }
  TempDir dir;
  absl::StatusOr<std::unique_ptr<ServerProcess>> server =
      ServerProcess::Start(rwkv::testing::TestDataPath(kTinyModel), {"--byte-vocab", "--threads", "1"}, dir.path());
  ASSERT_TRUE(server.ok()) << server.status();
  const int64_t total = GenerateSomeTokens(**server);
  ASSERT_GT(total, 0);
  const std::string want = std::to_string(total);

  const fs::path config = dir.path() / "prometheus.yml";
  std::ofstream(config) << "global:\n"
                           "  scrape_interval: 1s\n"
                           "  scrape_timeout: 1s\n"
                           "scrape_configs:\n"
                           "  - job_name: rwkv\n"
                           "    static_configs:\n"
                           "      - targets: ['127.0.0.1:"
                        << (*server)->metrics_port() << "']\n";
  const int web_port = FreePort();
  ASSERT_GT(web_port, 0);
  ChildProcess prom({prometheus, "--config.file=" + config.string(),
                     "--storage.tsdb.path=" + (dir.path() / "tsdb").string(),
                     "--web.listen-address=127.0.0.1:" + std::to_string(web_port), "--log.level=warn"},
                    dir.path() / "prometheus.log");
  ASSERT_GT(prom.pid(), 0) << "fork failed";

  httplib::Client api("127.0.0.1", web_port);
  api.set_connection_timeout(1, 0);
  api.set_read_timeout(2, 0);
  auto query = [&](const std::string& promql) {
    httplib::Params params{{"query", promql}};
    httplib::Result res = api.Get("/api/v1/query", params, httplib::Headers{});
    return res && res->status == 200 ? FirstValue(res->body) : std::string();
  };
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  std::string value;
  while (absl::Now() < deadline && prom.Running()) {
    value = query("rwkv_generation_tokens_total");
    if (value == want) break;
    absl::SleepFor(absl::Milliseconds(200));
  }
  EXPECT_EQ(value, want) << "Prometheus' answer for rwkv_generation_tokens_total; log:\n"
                         << ReadFileOrEmpty(dir.path() / "prometheus.log") << "\ntargets: " << [&] {
                              httplib::Result res = api.Get("/api/v1/targets");
                              return res ? res->body : std::string("?");
                            }();
  EXPECT_EQ(query("up{job=\"rwkv\"}"), "1");
  prom.Kill();
  EXPECT_FALSE(prom.Running());
}

}  // namespace
}  // namespace rwkv::e2e
