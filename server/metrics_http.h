// The metrics side port: GET /metrics (Prometheus text format) and
// GET /healthz, served by cpp-httplib on its own thread.
//
// Why a separate port and server: scrapes and health probes must keep
// answering when the main API port is saturated or draining, and they need no
// auth, streaming or JSON. The httplib types stay out of this header so users
// of the class need not compile httplib.h (and its OpenSSL headers).
#ifndef RWKV_SERVER_METRICS_HTTP_H_
#define RWKV_SERVER_METRICS_HTTP_H_

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "engine/metrics/registry.h"

namespace httplib {
class Server;
}  // namespace httplib

namespace rwkv {

// Routes:
//   GET|HEAD /metrics  200, registry text, Content-Type kMetricsContentType
//   GET|HEAD /healthz  200 "ok" when healthy() (or no callback), else 503 "unhealthy"
//   other methods on those two paths: 405 with "Allow: GET, HEAD"
//   anything else: 404
// Responses are gzip-compressed when the client asks for it (Prometheus does).
class MetricsHttpServer {
 public:
  static constexpr char kMetricsContentType[] = "text/plain; version=0.0.4; charset=utf-8";

  // Binds `host_port` synchronously and starts serving on a new thread.
  // host_port: "127.0.0.1:9100", "[::1]:9100", "localhost:0", ":9100" (all
  // IPv4 interfaces). Port 0 picks a free port (see port()). Errors:
  // INVALID_ARGUMENT for a malformed or unresolvable address or a null
  // registry, UNAVAILABLE when the port is in use, PERMISSION_DENIED for a
  // privileged port, INTERNAL otherwise. `registry` must outlive the server;
  // `healthy` (may be empty) is called on the server thread per /healthz and
  // must be thread-safe.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(const std::string& host_port,
                                                                   metrics::Registry* registry,
                                                                   std::function<bool()> healthy);

  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;
  ~MetricsHttpServer();  // Stop()

  // Stops accepting, finishes in-flight requests and joins the thread.
  // Idempotent and thread-safe. Returns within about a second even with idle
  // keep-alive clients (keep-alive and read timeouts are short).
  void Stop();

  const std::string& host() const { return host_; }
  int port() const { return port_; }  // the bound port, also when 0 was asked

 private:
  MetricsHttpServer();

  std::unique_ptr<httplib::Server> server_;
  std::string host_;
  int port_ = 0;
  std::thread thread_;
  std::mutex stop_mu_;
  bool stopped_ = false;
};

}  // namespace rwkv

#endif  // RWKV_SERVER_METRICS_HTTP_H_
