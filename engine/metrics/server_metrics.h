// The inference server's metric set, registered on a metrics::Registry.
//
// Why one struct: the scheduler, the HTTP front end and the state manager all
// update metrics on hot paths, so every series is registered once at start-up
// and handed out as a plain reference (no name or label look-ups per token).
// Names follow vLLM/TGI conventions with an "rwkv_" prefix and base units
// (seconds, tokens), so existing dashboards translate directly.
//
// Naming note: the "state slots total" gauge is exposed as
// rwkv_state_slots_capacity, because a "_total" suffix is reserved for
// counters (promtool lint; the registry rejects it).
#ifndef RWKV_ENGINE_METRICS_SERVER_METRICS_H_
#define RWKV_ENGINE_METRICS_SERVER_METRICS_H_

#include <string>
#include <string_view>

#include "engine/metrics/registry.h"

namespace rwkv {

// Constant facts about the running server, exposed as rwkv_info{...} 1.
struct ServerInfo {
  std::string model;    // model name or file stem
  std::string backend;  // e.g. "cpu", "cuda"
  std::string version;  // server version
};

// Histogram buckets used by ServerMetrics (exposed for tests and docs).
metrics::Histogram::BucketBoundaries TimeToFirstTokenBuckets();  // 1 ms .. 10 min
metrics::Histogram::BucketBoundaries InterTokenLatencyBuckets();  // 1 ms .. 10 s
metrics::Histogram::BucketBoundaries RequestLatencyBuckets();     // 10 ms .. 1 h
metrics::Histogram::BucketBoundaries QueueTimeBuckets();          // 1 ms .. 10 min
metrics::Histogram::BucketBoundaries StepDurationBuckets();       // 0.5 ms .. 10 s
metrics::Histogram::BucketBoundaries BatchSizeBuckets();          // 1, 2, 4, .. 1024

// Registers every series on construction (aborts if any name is already taken
// in `registry`, which must outlive this object). All members are thread-safe.
struct ServerMetrics {
  ServerMetrics(metrics::Registry& registry, const ServerInfo& server_info);
  ServerMetrics(const ServerMetrics&) = delete;
  ServerMetrics& operator=(const ServerMetrics&) = delete;

  // Label values of rwkv_request_success_total{finish_reason}.
  static constexpr std::string_view kFinishStop = "stop";      // EOS token or stop string
  static constexpr std::string_view kFinishLength = "length";  // max_tokens reached
  // Label values of rwkv_request_failure_total{reason}.
  static constexpr std::string_view kFailInvalid = "invalid_request";  // rejected input
  static constexpr std::string_view kFailOverloaded = "overloaded";    // queue full
  static constexpr std::string_view kFailCancelled = "cancelled";      // client went away
  static constexpr std::string_view kFailTimeout = "timeout";          // deadline exceeded
  static constexpr std::string_view kFailInternal = "internal";        // server error

  // Members are registered (and serialized) in declaration order.
  metrics::Gauge& info;  // rwkv_info{model,backend,version} 1

  // Requests: gauges are set (or incremented/decremented) by the scheduler.
  metrics::Gauge& requests_running;  // rwkv_requests_running
  metrics::Gauge& requests_waiting;  // rwkv_requests_waiting
  // Families, for label values beyond the pre-created ones below (their
  // Add() takes a mutex: cache the result).
  metrics::Family<metrics::Counter>& request_success_family;
  metrics::Family<metrics::Counter>& request_failure_family;
  metrics::Counter& success_stop;     // rwkv_request_success_total{finish_reason="stop"}
  metrics::Counter& success_length;   // ...{finish_reason="length"}
  metrics::Counter& failure_invalid;  // rwkv_request_failure_total{reason="invalid_request"}
  metrics::Counter& failure_overloaded;
  metrics::Counter& failure_cancelled;
  metrics::Counter& failure_timeout;
  metrics::Counter& failure_internal;

  // Tokens.
  metrics::Counter& prompt_tokens;      // rwkv_prompt_tokens_total
  metrics::Counter& generation_tokens;  // rwkv_generation_tokens_total

  // Per-request latencies, in seconds.
  metrics::Histogram& time_to_first_token;  // rwkv_time_to_first_token_seconds
  metrics::Histogram& inter_token_latency;  // rwkv_inter_token_latency_seconds
  metrics::Histogram& e2e_request_latency;  // rwkv_e2e_request_latency_seconds
  metrics::Histogram& request_queue_time;   // rwkv_request_queue_time_seconds

  // Per scheduler step.
  metrics::Histogram& batch_size;     // rwkv_batch_size (sequences in the step)
  // rwkv_step_duration_seconds: the forward call plus the sampling call, the
  // device's step time on a GPU (the forward call only queues the pass; the
  // sampling call waits for it). Lower when the host work between the two
  // outlasts the device: then the emit phase below shows it.
  metrics::Histogram& step_duration;
  // Engine-thread time by phase: rwkv_engine_seconds_total{phase}. schedule:
  // admission and planning; forward: the model pass (on a GPU only its
  // launch: ForwardKeepLogits returns once queued); sample: device sampling
  // (on a GPU including the wait for the forward); emit: everything else
  // after the forward launch: the previous step's per-token work (stop
  // strings, detokenizing, queuing stream writes), which runs while the GPU
  // computes, and the inline work after sampling.
  metrics::Family<metrics::Counter>& engine_seconds_family;
  metrics::Counter& engine_schedule_seconds;
  metrics::Counter& engine_forward_seconds;
  metrics::Counter& engine_sample_seconds;
  metrics::Counter& engine_emit_seconds;

  // Recurrent-state slots and sessions.
  metrics::Gauge& state_slots_used;      // rwkv_state_slots_used
  metrics::Gauge& state_slots_capacity;  // rwkv_state_slots_capacity
  metrics::Gauge& sessions_resident;     // rwkv_sessions_resident (state in a slot)
  metrics::Gauge& sessions_offloaded;    // rwkv_sessions_offloaded (state saved elsewhere)
  // Host offload memory (--offload-memory-mb) in whole session states:
  // rwkv_offload_memory_used_bytes (held by offloaded sessions) and
  // rwkv_offload_memory_capacity_bytes (the states that fit x their size).
  // Sessions beyond it go to the state store.
  metrics::Gauge& offload_memory_used;
  metrics::Gauge& offload_memory_capacity;
  metrics::Counter& state_saves;         // rwkv_state_saves_total
  metrics::Counter& state_loads;         // rwkv_state_loads_total

  // The success / failure counter for any label value (pre-created ones
  // without a lock; others through the family's Add).
  metrics::Counter& Success(std::string_view finish_reason);
  metrics::Counter& Failure(std::string_view reason);
};

}  // namespace rwkv

#endif  // RWKV_ENGINE_METRICS_SERVER_METRICS_H_
