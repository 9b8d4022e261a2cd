// ServerMetrics: names, help texts and bucket layouts of the server's metrics.
//
// Why these buckets: latencies span three orders of magnitude between a CPU
// toy model and a loaded GPU, so the layouts are roughly logarithmic from
// 1 ms to minutes, denser where SLOs usually sit (TTFT 50 ms .. 2 s,
// inter-token 10 .. 100 ms), close to vLLM's. Batch size uses powers of two
// up to 1024, the scheduler's largest sensible batch.
#include "engine/metrics/server_metrics.h"

#include <string>
#include <string_view>

namespace rwkv {
namespace {

using metrics::BuildCounter;
using metrics::BuildGauge;
using metrics::BuildHistogram;
using metrics::Counter;
using metrics::Family;
using metrics::Gauge;
using metrics::Histogram;
using metrics::Registry;

Gauge& OneGauge(Registry& registry, const char* name, const char* help) {
  return BuildGauge().Name(name).Help(help).Register(registry).Add({});
}

Counter& OneCounter(Registry& registry, const char* name, const char* help) {
  return BuildCounter().Name(name).Help(help).Register(registry).Add({});
}

Histogram& OneHistogram(Registry& registry, const char* name, const char* help,
                        const Histogram::BucketBoundaries& buckets) {
  return BuildHistogram().Name(name).Help(help).Register(registry).Add({}, buckets);
}

Counter& Child(Family<Counter>& family, const char* label, std::string_view value) {
  return family.Add({{label, std::string(value)}});
}

}  // namespace

metrics::Histogram::BucketBoundaries TimeToFirstTokenBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
          1,     2.5,    5,     7.5,  10,   20,   40,   80,   160, 320,  600};
}

metrics::Histogram::BucketBoundaries InterTokenLatencyBuckets() {
  return {0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075,
          0.1,   0.15,   0.2,   0.3,    0.4,  0.5,   0.75, 1,     2.5,  5,    10};
}

metrics::Histogram::BucketBoundaries RequestLatencyBuckets() {
  return {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,   2.5, 5,    10,   15,
          20,   30,    45,   60,  120,  300, 600, 1200, 1800, 3600};
}

metrics::Histogram::BucketBoundaries QueueTimeBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
          1,     2.5,    5,     10,   30,    60,   120, 300,  600};
}

metrics::Histogram::BucketBoundaries StepDurationBuckets() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05,
          0.075,  0.1,   0.15,   0.25,  0.5,    1,    2.5,   5,    10};
}

metrics::Histogram::BucketBoundaries BatchSizeBuckets() {
  return metrics::ExponentialBuckets(1, 2, 11);  // 1 .. 1024
}

ServerMetrics::ServerMetrics(Registry& registry, const ServerInfo& server_info)
    : info(BuildGauge()
               .Name("rwkv_info")
               .Help("Server information; the value is always 1.")
               .Register(registry)
               .Add({{"model", server_info.model},
                     {"backend", server_info.backend},
                     {"version", server_info.version}})),
      requests_running(OneGauge(registry, "rwkv_requests_running",
                                "Requests currently in a batch (prefill or decode).")),
      requests_waiting(OneGauge(registry, "rwkv_requests_waiting",
                                "Requests queued, waiting for a batch slot.")),
      request_success_family(
          BuildCounter()
              .Name("rwkv_request_success_total")
              .Help("Requests finished successfully, by finish reason (stop: EOS or stop "
                    "string; length: max_tokens).")
              .Register(registry)),
      request_failure_family(
          BuildCounter()
              .Name("rwkv_request_failure_total")
              .Help("Requests that failed, by reason (invalid_request, overloaded, cancelled, "
                    "timeout, internal).")
              .Register(registry)),
      success_stop(Child(request_success_family, "finish_reason", kFinishStop)),
      success_length(Child(request_success_family, "finish_reason", kFinishLength)),
      failure_invalid(Child(request_failure_family, "reason", kFailInvalid)),
      failure_overloaded(Child(request_failure_family, "reason", kFailOverloaded)),
      failure_cancelled(Child(request_failure_family, "reason", kFailCancelled)),
      failure_timeout(Child(request_failure_family, "reason", kFailTimeout)),
      failure_internal(Child(request_failure_family, "reason", kFailInternal)),
      prompt_tokens(OneCounter(registry, "rwkv_prompt_tokens_total",
                               "Prompt (prefill) tokens processed.")),
      generation_tokens(OneCounter(registry, "rwkv_generation_tokens_total",
                                   "Tokens generated (decoded).")),
      time_to_first_token(OneHistogram(registry, "rwkv_time_to_first_token_seconds",
                                       "Time from request arrival to its first generated token.",
                                       TimeToFirstTokenBuckets())),
      inter_token_latency(OneHistogram(registry, "rwkv_inter_token_latency_seconds",
                                       "Time between consecutive generated tokens of a request.",
                                       InterTokenLatencyBuckets())),
      e2e_request_latency(OneHistogram(registry, "rwkv_e2e_request_latency_seconds",
                                       "Time from request arrival to its last token.",
                                       RequestLatencyBuckets())),
      request_queue_time(OneHistogram(registry, "rwkv_request_queue_time_seconds",
                                      "Time a request waited before its first scheduler step.",
                                      QueueTimeBuckets())),
      batch_size(OneHistogram(registry, "rwkv_batch_size",
                              "Sequences in one scheduler step.", BatchSizeBuckets())),
      step_duration(OneHistogram(registry, "rwkv_step_duration_seconds",
                                 "Wall time of one scheduler step's model forward pass and sampling.",
                                 StepDurationBuckets())),
      engine_seconds_family(BuildCounter()
                                .Name("rwkv_engine_seconds_total")
                                .Help("Engine-thread time by phase (schedule: admission and planning; forward: "
                                      "the model pass, on a GPU only its launch; sample: device sampling, on a "
                                      "GPU including the wait for the forward; emit: everything else after the "
                                      "forward launch, chiefly per-token output work, which overlaps the GPU).")
                                .Register(registry)),
      engine_schedule_seconds(Child(engine_seconds_family, "phase", "schedule")),
      engine_forward_seconds(Child(engine_seconds_family, "phase", "forward")),
      engine_sample_seconds(Child(engine_seconds_family, "phase", "sample")),
      engine_emit_seconds(Child(engine_seconds_family, "phase", "emit")),
      state_slots_used(OneGauge(registry, "rwkv_state_slots_used",
                                "Recurrent-state slots holding a session.")),
      state_slots_capacity(OneGauge(registry, "rwkv_state_slots_capacity",
                                    "Recurrent-state slots available in total.")),
      sessions_resident(OneGauge(registry, "rwkv_sessions_resident",
                                 "Sessions whose state is resident in a slot.")),
      sessions_offloaded(OneGauge(registry, "rwkv_sessions_offloaded",
                                  "Sessions whose state is offloaded out of the slots.")),
      offload_memory_used(OneGauge(registry, "rwkv_offload_memory_used_bytes",
                                   "Host memory holding offloaded session states (page-locked on a GPU).")),
      offload_memory_capacity(OneGauge(registry, "rwkv_offload_memory_capacity_bytes",
                                       "Host memory for offloaded session states: whole states that fit "
                                       "--offload-memory-mb.")),
      state_saves(OneCounter(registry, "rwkv_state_saves_total",
                             "Session states saved (offloaded) out of a slot.")),
      state_loads(OneCounter(registry, "rwkv_state_loads_total",
                             "Session states loaded back into a slot.")) {
  info.Set(1);
}

metrics::Counter& ServerMetrics::Success(std::string_view finish_reason) {
  if (finish_reason == kFinishStop) return success_stop;
  if (finish_reason == kFinishLength) return success_length;
  return Child(request_success_family, "finish_reason", finish_reason);
}

metrics::Counter& ServerMetrics::Failure(std::string_view reason) {
  if (reason == kFailInvalid) return failure_invalid;
  if (reason == kFailOverloaded) return failure_overloaded;
  if (reason == kFailCancelled) return failure_cancelled;
  if (reason == kFailTimeout) return failure_timeout;
  if (reason == kFailInternal) return failure_internal;
  return Child(request_failure_family, "reason", reason);
}

}  // namespace rwkv
