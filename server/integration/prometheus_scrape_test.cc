// End-to-end: a real Prometheus server scrapes MetricsHttpServer.
//
// Why: promtool checks the text, but only a real scrape proves the whole path
// (content negotiation, gzip, keep-alive, HTTP framing) works with the
// server that production uses. The test starts /usr/bin/prometheus (Debian
// package "prometheus") on loopback with a temp config and TSDB, scraping
// every second, and reads the value back through the query API. It skips
// when the binary is absent ($RWKV_PROMETHEUS overrides the path). The child
// is killed on every path: by an RAII guard on return, and by
// PR_SET_PDEATHSIG if this process dies first.
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "engine/metrics/registry.h"
#include "engine/metrics/server_metrics.h"
#include "engine/testing/child_process.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "server/metrics_http.h"

namespace rwkv {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::string FindPrometheus() {
  if (const char* env = std::getenv("RWKV_PROMETHEUS"); env != nullptr && *env != '\0') return env;
  return access("/usr/bin/prometheus", X_OK) == 0 ? "/usr/bin/prometheus" : "";
}

// A free loopback port (bound and released; fine for a test).
int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  int port = -1;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

// A temp directory removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "rwkv_prom_XXXXXX").string();
    if (mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

using ::rwkv::testing::ChildProcess;

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Polls `probe` every 100 ms until it returns true, the child exits or the
// deadline passes.
bool WaitFor(ChildProcess& child, Clock::time_point deadline, const std::function<bool()>& probe) {
  while (Clock::now() < deadline) {
    if (!child.Running()) return false;
    if (probe()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

// The value string of the first sample of an instant-query JSON answer, or "".
std::string FirstValue(const std::string& json) {
  static const std::regex kValue(R"re("value":\[[-0-9.e+]+,"([^"]+)"\])re");
  std::smatch m;
  return std::regex_search(json, m, kValue) ? m[1].str() : "";
}

TEST(PrometheusScrapeTest, RealPrometheusScrapesTheMetricsPort) {
  const std::string prometheus = FindPrometheus();
  if (prometheus.empty()) {
    GTEST_SKIP() << "/usr/bin/prometheus not found: install the Debian package \"prometheus\" "
                    "(scripts/install-deps.sh) or set RWKV_PROMETHEUS";
  }
  metrics::Registry registry;
  ServerMetrics m(registry, {"tiny \"model\"", "cpu", "0.1.0"});
  m.generation_tokens.Increment(4242);
  m.prompt_tokens.Increment(17);
  for (double v : {0.05, 0.2, 3.0}) m.time_to_first_token.Observe(v);
  m.Failure("timeout").Increment(2);
  absl::StatusOr<std::unique_ptr<MetricsHttpServer>> server =
      MetricsHttpServer::Start("127.0.0.1:0", &registry, nullptr);
  ASSERT_TRUE(server.ok()) << server.status();

  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const fs::path config = dir.path() / "prometheus.yml";
  std::ofstream(config) << "global:\n"
                           "  scrape_interval: 1s\n"
                           "  scrape_timeout: 1s\n"
                           "scrape_configs:\n"
                           "  - job_name: rwkv\n"
                           "    static_configs:\n"
                           "      - targets: ['127.0.0.1:"
                        << (*server)->port() << "']\n";
  const int web_port = FreePort();
  ASSERT_GT(web_port, 0);
  const fs::path log = dir.path() / "prometheus.log";
  ChildProcess child({prometheus, "--config.file=" + config.string(),
                      "--storage.tsdb.path=" + (dir.path() / "data").string(),
                      "--web.listen-address=127.0.0.1:" + std::to_string(web_port),
                      "--log.level=warn"},
                     log);
  ASSERT_GT(child.pid(), 0) << "fork failed";

  httplib::Client api("127.0.0.1", web_port);
  api.set_connection_timeout(1, 0);
  api.set_read_timeout(2, 0);
  const auto deadline = Clock::now() + std::chrono::seconds(25);
  ASSERT_TRUE(WaitFor(child, deadline, [&] {
    httplib::Result res = api.Get("/-/ready");
    return res && res->status == 200;
  })) << "Prometheus did not become ready; log:\n" << ReadFile(log);

  auto query = [&](const std::string& promql) {
    httplib::Params params{{"query", promql}};
    httplib::Result res = api.Get("/api/v1/query", params, httplib::Headers{});
    return res && res->status == 200 ? FirstValue(res->body) : std::string();
  };
  std::string value;
  ASSERT_TRUE(WaitFor(child, deadline, [&] {
    value = query("rwkv_generation_tokens_total");
    return !value.empty();
  })) << "no scrape landed; targets: " << [&] {
    httplib::Result res = api.Get("/api/v1/targets");
    return res ? res->body : std::string("?");
  }() << "\nlog:\n" << ReadFile(log);
  EXPECT_EQ(value, "4242");

  // The same scrape carried the rest: labels, histograms, the target's health.
  EXPECT_EQ(query("rwkv_prompt_tokens_total"), "17");
  EXPECT_EQ(query("rwkv_time_to_first_token_seconds_count"), "3");
  EXPECT_EQ(query("rwkv_time_to_first_token_seconds_bucket{le=\"0.25\"}"), "2");
  EXPECT_EQ(query("rwkv_request_failure_total{reason=\"timeout\"}"), "2");
  EXPECT_EQ(query("rwkv_info{model=\"tiny \\\"model\\\"\"}"), "1");
  EXPECT_EQ(query("up{job=\"rwkv\"}"), "1");
  EXPECT_EQ(query("scrape_samples_scraped{job=\"rwkv\"}").empty(), false);

  child.Terminate(std::chrono::seconds(5));
  EXPECT_FALSE(child.Running());
}

}  // namespace
}  // namespace rwkv
