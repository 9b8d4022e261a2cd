// The load generator behind rwkv-loadgen: runs a LoadSpec against a server
// and measures what its clients see.
//
// Why: users judge a server by time to first token, inter-token latency and
// tokens per second at a given concurrency, measured at the client across the
// network stack, not by the engine's own step time. Streams use gRPC's
// callback API, so thousands of concurrent requests need no thread each, and
// every timestamp is taken when a message arrives on the client.
//
// Definitions (also printed in the report):
//  * TTFT: request start (just before the call is started) to the arrival of
//    the first message that carries a generated token.
//  * ITL: the gap between two consecutive token-carrying messages of one
//    request, divided by the number of tokens in the later message (one
//    sample per token, so a message with 2 tokens after 20 ms gives two 10 ms
//    samples).
//  * Throughput: generated tokens of all requests (successful or not) over
//    the wall time from the first request's start to the last one's end.
//  * sTTFT and queue: the server's time to first token and queue time from
//    the usage in each request's last message (its own clock, without the
//    client's side of the network stack).
//  * Steady throughput: tokens that arrived between --warmup seconds after
//    the start and the moment the last request was started, over that
//    window: the rate while the full load is applied, without the ramp-up
//    and the drain at the end (when fewer and fewer requests remain).
//  * ITLsw: the ITL samples whose token arrived in that same window.
#ifndef RWKV_CLIENT_LOADGEN_LOADGEN_H_
#define RWKV_CLIENT_LOADGEN_LOADGEN_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/loadgen/load_spec.h"
#include "rwkv/v1/rwkv.grpc.pb.h"

namespace rwkv::loadgen {

// Order statistics of a sample (seconds). Percentiles by linear
// interpolation between closest ranks; all zero for an empty sample.
struct Summary {
  int64_t count = 0;
  double mean = 0, min = 0, max = 0, p50 = 0, p90 = 0, p99 = 0;
};
Summary Summarize(std::vector<double> samples);
// The q-quantile (0 <= q <= 1) of sorted, non-empty `sorted`.
double Quantile(const std::vector<double>& sorted, double q);

struct LoadReport {
  LoadSpec spec;
  rwkv::v1::ModelInfo model;
  double wall_s = 0;                 // first start to last end
  int64_t started = 0, succeeded = 0, failed = 0;
  int64_t dropped = 0;               // open mode: arrivals over --max-inflight
  std::map<std::string, int64_t> errors_by_code;  // "UNAVAILABLE" -> count
  std::string first_error;           // one example message
  int64_t prompt_tokens = 0;         // sent
  int64_t generated_tokens = 0;      // received
  Summary ttft, itl, e2e;            // seconds
  // From the server's own clock, in the last message's usage: its time to
  // first token and the time the request waited for a place in the batch.
  Summary server_ttft, server_queue;
  double generated_tokens_per_s = 0, requests_per_s = 0;
  double steady_window_s = 0;        // see "Steady throughput" above
  double steady_tokens_per_s = 0;
  // The inter-token gaps whose token arrived inside that window: the load
  // fully applied, without the first wave of prompts (every stream starting
  // at once) or the drain at the end.
  Summary itl_steady;

  // Context mode: one row per (length, repeat).
  struct ContextRun {
    int64_t context_tokens = 0;
    double prefill_s = 0;            // CreateSession with the prompt
    int64_t generated = 0;
    Summary itl;
    std::string error;               // empty when the run succeeded
  };
  std::vector<ContextRun> context_runs;
};

// Runs `spec` (closed, open or context mode) against `stub`. Errors of single
// requests are counted in the report; the returned status fails only when
// the run cannot start (e.g. GetModelInfo fails: the server is not there).
// `progress` (may be empty) is called about 5 times a second with the
// fraction done and a one-line status.
absl::StatusOr<LoadReport> RunLoad(const LoadSpec& spec, rwkv::v1::Inference::StubInterface& stub,
                                   const std::function<void(double, const std::string&)>& progress = {});
// As above over several stubs (one per --connections channel): closed and
// open mode start stream i's requests on stubs[i % size]; the rest (model
// info, sessions, context mode) uses stubs[0]. At least one stub.
absl::StatusOr<LoadReport> RunLoad(const LoadSpec& spec,
                                   const std::vector<rwkv::v1::Inference::StubInterface*>& stubs,
                                   const std::function<void(double, const std::string&)>& progress = {});

// The report as JSON (one object) and as text for a terminal.
std::string ReportJson(const LoadReport& report);
std::string ReportText(const LoadReport& report);

}  // namespace rwkv::loadgen

#endif  // RWKV_CLIENT_LOADGEN_LOADGEN_H_
