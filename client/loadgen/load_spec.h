// What rwkv-loadgen sends: the run's shape (mode, concurrency or rate, how
// long), the per-request distributions of prompt length and max tokens, and
// the parsing of its command line.
//
// Why a unit of its own: the command line is where user input enters the
// tool, so it is parsed and checked without a server (unknown flags, bad
// numbers, impossible combinations) and tested on its own; the
// distributions are seeded so two runs with the same flags send the same
// requests.
#ifndef RWKV_CLIENT_LOADGEN_LOAD_SPEC_H_
#define RWKV_CLIENT_LOADGEN_LOAD_SPEC_H_

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace rwkv::loadgen {

// A distribution of positive integers: "N" (fixed), "uniform:A:B" (A..B
// inclusive), "normal:MEAN:SD" or "exp:MEAN" (rounded, at least 1).
class IntDistribution {
 public:
  static absl::StatusOr<IntDistribution> Parse(const std::string& what, const std::string& text);
  static IntDistribution Fixed(int64_t n);

  int64_t Sample(std::mt19937_64& rng) const;
  // The largest value Sample can return (normal and exp: mean + 6 sd, capped).
  int64_t UpperBound() const;
  std::string ToString() const;

 private:
  enum class Kind { kFixed, kUniform, kNormal, kExp };
  Kind kind_ = Kind::kFixed;
  double a_ = 1, b_ = 1;
};

enum class LoadMode {
  kClosed,  // a fixed number of requests in flight; each completion starts the next
  kOpen,    // requests start at Poisson arrival times at a fixed rate, whatever is in flight
  kContext, // one session at a time: prefill a context, then time the generated tokens
};

struct LoadSpec {
  std::string server = "127.0.0.1:50051";  // --server
  // --connections N: closed/open requests spread over N gRPC channels, each
  // its own TCP connection (stream i on connection i mod N), as N clients
  // would; 1 multiplexes every stream over one HTTP/2 connection.
  int32_t connections = 1;
  LoadMode mode = LoadMode::kClosed;       // --mode closed|open|context
  int32_t concurrency = 16;                // --concurrency (closed)
  double rate = 0;                         // --rate requests/s (open; required there)
  int32_t max_inflight = 4096;             // --max-inflight (open: arrivals beyond it are dropped and counted)
  double duration_s = 0;                   // --duration S (stop starting requests after S)
  int64_t requests = 0;                    // --requests N (stop after N started)
  double drain_s = 300;                    // --drain S: wait this long for in-flight requests at the end
  double warmup_s = 0;                     // --warmup S: the steady window starts S seconds in
  IntDistribution prompt_tokens = IntDistribution::Fixed(128);  // --prompt-tokens DIST
  IntDistribution max_tokens = IntDistribution::Fixed(128);     // --max-tokens DIST
  bool sticky_sessions = false;            // --sessions sticky|ephemeral (closed: one session per stream, reused)
  std::optional<float> temperature;        // --temperature T (server default when absent)
  bool stop_at_eot = false;                // --stop-at-eot (default: ignore end-of-text so lengths hold)
  uint64_t seed = 1;                       // --seed
  double request_timeout_s = 600;          // --request-timeout S (per request deadline)
  // context mode
  std::vector<int64_t> context_lengths;    // --context-lengths 100,10000,100000
  int32_t context_repeats = 2;             // --context-repeats N
  // output
  std::string json_path;                   // --json FILE ("-" for stdout)
  bool progress = true;                    // --no-progress turns the terminal bar off
  bool help = false;
};

// Parses argv without argv[0]. INVALID_ARGUMENT naming the flag on any problem.
absl::StatusOr<LoadSpec> ParseLoadSpec(const std::vector<std::string>& args);

std::string LoadgenUsage();
const char* ModeName(LoadMode m);

}  // namespace rwkv::loadgen

#endif  // RWKV_CLIENT_LOADGEN_LOAD_SPEC_H_
