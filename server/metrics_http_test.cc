// Tests for MetricsHttpServer over real loopback HTTP (httplib::Client).
//
// Why real sockets: the interesting failures (port taken, stop while a client
// holds a connection, content type a scraper rejects) only show up on a real
// listener, and loopback with an ephemeral port is fast and hermetic.
#include "server/metrics_http.h"

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "engine/metrics/registry.h"
#include "engine/metrics/server_metrics.h"
#include "gtest/gtest.h"
#include "httplib.h"

namespace rwkv {
namespace {

using metrics::BuildCounter;
using metrics::Registry;

std::unique_ptr<MetricsHttpServer> MustStart(Registry* registry, std::function<bool()> healthy = nullptr) {
  absl::StatusOr<std::unique_ptr<MetricsHttpServer>> server =
      MetricsHttpServer::Start("127.0.0.1:0", registry, std::move(healthy));
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? std::move(*server) : nullptr;
}

TEST(MetricsHttpServerTest, ServesMetricsWithPrometheusContentType) {
  Registry registry;
  ServerMetrics m(registry, {"tiny", "cpu", "0.1.0"});
  m.generation_tokens.Increment(42);
  m.time_to_first_token.Observe(0.3);
  auto server = MustStart(&registry);
  ASSERT_NE(server, nullptr);
  EXPECT_GT(server->port(), 0);
  EXPECT_EQ(server->host(), "127.0.0.1");

  httplib::Client cli("127.0.0.1", server->port());
  httplib::Result res = cli.Get("/metrics");
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->get_header_value("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(res->body, registry.Serialize());
  EXPECT_NE(res->body.find("rwkv_generation_tokens_total 42\n"), std::string::npos);

  // Values are read at scrape time.
  m.generation_tokens.Increment(8);
  res = cli.Get("/metrics");
  ASSERT_TRUE(res);
  EXPECT_NE(res->body.find("rwkv_generation_tokens_total 50\n"), std::string::npos);

  res = cli.Head("/metrics");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->body, "");
}

TEST(MetricsHttpServerTest, GzipWhenAsked) {
  Registry registry;
  ServerMetrics m(registry, {"tiny", "cpu", "0.1.0"});
  auto server = MustStart(&registry);
  ASSERT_NE(server, nullptr);
  httplib::Client cli("127.0.0.1", server->port());
  cli.set_decompress(false);
  httplib::Result res = cli.Get("/metrics", {{"Accept-Encoding", "gzip"}});
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->get_header_value("Content-Encoding"), "gzip");
  EXPECT_LT(res->body.size(), registry.Serialize().size());
}

TEST(MetricsHttpServerTest, HealthzFollowsCallback) {
  Registry registry;
  std::atomic<bool> healthy{true};
  auto server = MustStart(&registry, [&healthy] { return healthy.load(); });
  ASSERT_NE(server, nullptr);
  httplib::Client cli("127.0.0.1", server->port());
  httplib::Result res = cli.Get("/healthz");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->body, "ok");
  healthy = false;
  res = cli.Get("/healthz");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 503);
  EXPECT_EQ(res->body, "unhealthy");
}

TEST(MetricsHttpServerTest, HealthzWithoutCallbackIsHealthy) {
  Registry registry;
  auto server = MustStart(&registry);
  ASSERT_NE(server, nullptr);
  httplib::Client cli("127.0.0.1", server->port());
  httplib::Result res = cli.Get("/healthz");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
}

TEST(MetricsHttpServerTest, UnknownPathIs404AndWrongMethodIs405) {
  Registry registry;
  auto server = MustStart(&registry);
  ASSERT_NE(server, nullptr);
  httplib::Client cli("127.0.0.1", server->port());
  httplib::Result res = cli.Get("/nope");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 404);
  res = cli.Get("/metrics/extra");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 404);

  res = cli.Post("/metrics", "x", "text/plain");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 405);
  EXPECT_EQ(res->get_header_value("Allow"), "GET, HEAD");
  res = cli.Put("/metrics", "x", "text/plain");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 405);
  res = cli.Delete("/healthz");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 405);
}

TEST(MetricsHttpServerTest, PortInUseIsAClearError) {
  Registry registry;
  auto first = MustStart(&registry);
  ASSERT_NE(first, nullptr);
  absl::StatusOr<std::unique_ptr<MetricsHttpServer>> second =
      MetricsHttpServer::Start("127.0.0.1:" + std::to_string(first->port()), &registry, nullptr);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable) << second.status();
  EXPECT_NE(second.status().message().find("already in use"), std::string::npos) << second.status();
  // The first server is unaffected.
  httplib::Client cli("127.0.0.1", first->port());
  httplib::Result res = cli.Get("/healthz");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
}

TEST(MetricsHttpServerTest, MalformedAddresses) {
  Registry registry;
  for (const char* bad : {"", "nonsense", "127.0.0.1", "127.0.0.1:", "127.0.0.1:abc", "127.0.0.1:70000",
                          "127.0.0.1:-1", "127.0.0.1:+80", "[::1", "[::1]80", "[]:80", "::1:80"}) {
    absl::StatusOr<std::unique_ptr<MetricsHttpServer>> s = MetricsHttpServer::Start(bad, &registry, nullptr);
    ASSERT_FALSE(s.ok()) << bad;
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << bad << ": " << s.status();
    EXPECT_NE(s.status().message().find("malformed"), std::string::npos) << s.status();
  }
  EXPECT_EQ(MetricsHttpServer::Start("127.0.0.1:0", nullptr, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(MetricsHttpServerTest, LocalhostAndIpv6) {
  Registry registry;
  absl::StatusOr<std::unique_ptr<MetricsHttpServer>> s =
      MetricsHttpServer::Start("localhost:0", &registry, nullptr);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_GT((*s)->port(), 0);

  s = MetricsHttpServer::Start("[::1]:0", &registry, nullptr);
  if (!s.ok()) GTEST_SKIP() << "no IPv6 loopback here: " << s.status();
  httplib::Client cli("::1", (*s)->port());
  httplib::Result res = cli.Get("/healthz");
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 200);
}

TEST(MetricsHttpServerTest, StopIsIdempotentAndClosesThePort) {
  Registry registry;
  auto server = MustStart(&registry);
  ASSERT_NE(server, nullptr);
  const int port = server->port();
  server->Stop();
  server->Stop();
  httplib::Client cli("127.0.0.1", port);
  cli.set_connection_timeout(1, 0);
  EXPECT_FALSE(cli.Get("/healthz"));
  server.reset();  // destructor after Stop
  // The port can be bound again right away (SO_REUSEADDR).
  absl::StatusOr<std::unique_ptr<MetricsHttpServer>> again =
      MetricsHttpServer::Start("127.0.0.1:" + std::to_string(port), &registry, nullptr);
  EXPECT_TRUE(again.ok()) << again.status();
}

TEST(MetricsHttpServerTest, StopIsPromptWithAnIdleKeepAliveClient) {
  Registry registry;
  auto server = MustStart(&registry);
  ASSERT_NE(server, nullptr);
  httplib::Client cli("127.0.0.1", server->port());
  cli.set_keep_alive(true);
  ASSERT_TRUE(cli.Get("/metrics"));
  const auto start = std::chrono::steady_clock::now();
  server->Stop();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(seconds, 3.0);
}

TEST(MetricsHttpServerTest, StartStopLoop) {
  // Stop right after Start must never hang (httplib's stop() before its
  // accept loop runs would be lost).
  Registry registry;
  for (int i = 0; i < 50; ++i) {
    auto server = MustStart(&registry);
    ASSERT_NE(server, nullptr);
  }
}

TEST(MetricsHttpServerTest, ConcurrentScrapesWhileUpdating) {
  Registry registry;
  ServerMetrics m(registry, {"tiny", "cpu", "0.1.0"});
  auto server = MustStart(&registry);
  ASSERT_NE(server, nullptr);
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    while (!stop.load()) {
      m.generation_tokens.Increment();
      m.inter_token_latency.Observe(0.01);
    }
  });
  std::vector<std::thread> scrapers;
  std::atomic<int> ok{0};
  for (int t = 0; t < 4; ++t) {
    scrapers.emplace_back([&] {
      httplib::Client cli("127.0.0.1", server->port());
      for (int i = 0; i < 20; ++i) {
        httplib::Result res = cli.Get("/metrics");
        if (res && res->status == 200 &&
            res->body.find("rwkv_generation_tokens_total") != std::string::npos) {
          ok.fetch_add(1);
        }
      }
    });
  }
  for (auto& t : scrapers) t.join();
  stop = true;
  writer.join();
  EXPECT_EQ(ok.load(), 80);
}

}  // namespace
}  // namespace rwkv
