// MetricsHttpServer implementation on cpp-httplib (Debian libcpp-httplib-dev).
//
// Why the extra care around httplib: by default it sets SO_REUSEPORT, so a
// second server on a taken port binds silently and steals half the scrapes;
// we set SO_REUSEADDR only, so a taken port is a clear error. bind is done on
// the caller's thread so Start() reports errors synchronously, and Start()
// waits until the accept loop runs, so an immediate Stop() cannot miss it
// (httplib's stop() is a no-op before listen starts).
#include "server/metrics_http.h"

#include <netdb.h>
#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "httplib.h"

namespace rwkv {
namespace {

struct HostPort {
  std::string host;
  int port = 0;
};

absl::StatusOr<HostPort> ParseHostPort(const std::string& host_port) {
  auto malformed = [&](const char* why) {
    return absl::InvalidArgumentError(absl::StrCat("metrics address \"", host_port,
                                                   "\" is malformed: ", why,
                                                   " (want host:port, [ipv6]:port or :port)"));
  };
  HostPort out;
  std::string port_text;
  if (!host_port.empty() && host_port[0] == '[') {
    const size_t close = host_port.find(']');
    if (close == std::string::npos) return malformed("missing ']'");
    if (close + 1 >= host_port.size() || host_port[close + 1] != ':') {
      return malformed("missing ':port' after ']'");
    }
    out.host = host_port.substr(1, close - 1);
    port_text = host_port.substr(close + 2);
    if (out.host.empty()) return malformed("empty IPv6 address");
  } else {
    const size_t colon = host_port.rfind(':');
    if (colon == std::string::npos) return malformed("no ':port'");
    out.host = host_port.substr(0, colon);
    port_text = host_port.substr(colon + 1);
    if (out.host.find(':') != std::string::npos) return malformed("IPv6 needs brackets");
    if (out.host.empty()) out.host = "0.0.0.0";
  }
  if (port_text.empty() || port_text.find_first_not_of("0123456789") != std::string::npos ||
      !absl::SimpleAtoi(port_text, &out.port) || out.port > 65535) {
    return malformed("port must be a number in 0..65535");
  }
  return out;
}

absl::Status CheckResolvable(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* result = nullptr;
  const int rc = getaddrinfo(host.c_str(), "0", &hints, &result);
  if (rc != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics address: cannot resolve host \"", host, "\": ", gai_strerror(rc)));
  }
  freeaddrinfo(result);
  return absl::OkStatus();
}

absl::Status BindError(const HostPort& hp, int err) {
  const std::string where = absl::StrCat(
      "metrics server: cannot listen on ",
      hp.host.find(':') != std::string::npos ? absl::StrCat("[", hp.host, "]") : hp.host, ":",
      hp.port, ": ");
  switch (err) {
    case EADDRINUSE:
      return absl::UnavailableError(absl::StrCat(where, "port already in use"));
    case EACCES:
      return absl::PermissionDeniedError(absl::StrCat(where, "permission denied"));
    case EADDRNOTAVAIL:
      return absl::InvalidArgumentError(absl::StrCat(where, "address not available on this host"));
    default:
      return absl::InternalError(
          absl::StrCat(where, err != 0 ? std::strerror(err) : "bind failed"));
  }
}

// SO_REUSEADDR only (httplib's default adds SO_REUSEPORT; see the top).
void SetSocketOptions(int sock) {
  int yes = 1;
  setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
}

bool IsOurPath(const std::string& path) { return path == "/metrics" || path == "/healthz"; }

}  // namespace

MetricsHttpServer::MetricsHttpServer() : server_(std::make_unique<httplib::Server>()) {}

MetricsHttpServer::~MetricsHttpServer() { Stop(); }

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(
    const std::string& host_port, metrics::Registry* registry, std::function<bool()> healthy) {
  if (registry == nullptr) return absl::InvalidArgumentError("metrics server: null registry");
  absl::StatusOr<HostPort> hp = ParseHostPort(host_port);
  if (!hp.ok()) return hp.status();
  if (absl::Status s = CheckResolvable(hp->host); !s.ok()) return s;

  std::unique_ptr<MetricsHttpServer> self(new MetricsHttpServer());
  httplib::Server& svr = *self->server_;
  svr.set_socket_options(SetSocketOptions);
  svr.new_task_queue = [] { return new httplib::ThreadPool(2); };
  svr.set_keep_alive_timeout(1);
  svr.set_read_timeout(2, 0);
  svr.set_write_timeout(5, 0);

  svr.set_pre_routing_handler([](const httplib::Request& req, httplib::Response& res) {
    if (IsOurPath(req.path) && req.method != "GET" && req.method != "HEAD") {
      res.status = 405;
      res.set_header("Allow", "GET, HEAD");
      res.set_content("method not allowed\n", "text/plain; charset=utf-8");
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  svr.Get("/metrics", [registry](const httplib::Request&, httplib::Response& res) {
    res.set_content(registry->Serialize(), kMetricsContentType);
  });
  svr.Get("/healthz", [healthy = std::move(healthy)](const httplib::Request&,
                                                     httplib::Response& res) {
    const bool ok = !healthy || healthy();
    res.status = ok ? 200 : 503;
    res.set_content(ok ? "ok" : "unhealthy", "text/plain; charset=utf-8");
  });
  svr.set_error_handler(httplib::Server::HandlerWithResponse(
      [](const httplib::Request&, httplib::Response& res) {
        if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
        res.set_content(res.status == 404 ? "not found\n" : "error\n", "text/plain; charset=utf-8");
        return httplib::Server::HandlerResponse::Handled;
      }));

  errno = 0;
  int port = hp->port;
  bool bound;
  if (hp->port == 0) {
    port = svr.bind_to_any_port(hp->host);
    bound = port > 0;
  } else {
    bound = svr.bind_to_port(hp->host, hp->port);
  }
  if (!bound) return BindError(*hp, errno);
  self->host_ = hp->host;
  self->port_ = port;

  // listen_after_bind sets is_running() first thing; wait for it (or for an
  // immediate failure) so that Stop() always finds a running loop.
  auto done = std::make_shared<std::atomic<bool>>(false);
  self->thread_ = std::thread([&svr, done] {
    svr.listen_after_bind();
    done->store(true);
  });
  while (!svr.is_running() && !done->load()) {
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  if (!svr.is_running() && done->load()) {
    self->thread_.join();
    self->stopped_ = true;
    return absl::InternalError(
        absl::StrCat("metrics server: accept loop on port ", port, " exited at start"));
  }
  return self;
}

void MetricsHttpServer::Stop() {
  std::lock_guard<std::mutex> lock(stop_mu_);
  if (stopped_) return;
  stopped_ = true;
  server_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace rwkv
