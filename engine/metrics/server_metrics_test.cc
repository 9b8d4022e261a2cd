// Tests for ServerMetrics: the series exist under the documented names, the
// bucket layouts are sane, and a fully populated set passes promtool.
//
// Why: dashboards and alerts key on these exact names, so renaming one is a
// breaking change that should fail a test; promtool's linter catches naming
// mistakes (units, suffixes) the registry's own rules do not.
#include "engine/metrics/server_metrics.h"

#include <string>
#include <vector>

#include "engine/metrics/promtool_test_util.h"
#include "engine/metrics/registry.h"
#include "gtest/gtest.h"

namespace rwkv {
namespace {

using metrics::Histogram;

bool Contains(const std::string& text, const std::string& needle) {
  return text.find(needle) != std::string::npos;
}

void Populate(ServerMetrics& m) {
  m.requests_running.Set(3);
  m.requests_waiting.Set(2);
  m.success_stop.Increment(10);
  m.success_length.Increment(4);
  m.Success("tool_call").Increment();
  m.failure_invalid.Increment();
  m.failure_overloaded.Increment(2);
  m.failure_cancelled.Increment(3);
  m.failure_timeout.Increment(4);
  m.failure_internal.Increment(5);
  m.prompt_tokens.Increment(1234);
  m.generation_tokens.Increment(567);
  m.time_to_first_token.Observe(0.12);
  m.inter_token_latency.Observe(0.021);
  m.e2e_request_latency.Observe(3.5);
  m.request_queue_time.Observe(0.004);
  m.batch_size.Observe(17);
  m.step_duration.Observe(0.018);
  m.engine_schedule_seconds.Increment(0.5);
  m.engine_forward_seconds.Increment(8);
  m.engine_sample_seconds.Increment(0.25);
  m.engine_emit_seconds.Increment(1.5);
  m.state_slots_used.Set(5);
  m.state_slots_capacity.Set(64);
  m.sessions_resident.Set(5);
  m.sessions_offloaded.Set(11);
  m.offload_memory_used.Set(6 * 1310720);
  m.offload_memory_capacity.Set(3276 * 1310720.0);
  m.state_saves.Increment(7);
  m.state_loads.Increment(6);
}

TEST(ServerMetricsTest, ExposesDocumentedSeries) {
  metrics::Registry registry;
  ServerMetrics m(registry, {"rwkv7-0.1b", "cpu", "0.1.0"});
  Populate(m);
  const std::string text = registry.Serialize();
  for (const char* line : {
           "rwkv_info{backend=\"cpu\",model=\"rwkv7-0.1b\",version=\"0.1.0\"} 1\n",
           "rwkv_requests_running 3\n",
           "rwkv_requests_waiting 2\n",
           "rwkv_request_success_total{finish_reason=\"stop\"} 10\n",
           "rwkv_request_success_total{finish_reason=\"length\"} 4\n",
           "rwkv_request_success_total{finish_reason=\"tool_call\"} 1\n",
           "rwkv_request_failure_total{reason=\"invalid_request\"} 1\n",
           "rwkv_request_failure_total{reason=\"overloaded\"} 2\n",
           "rwkv_request_failure_total{reason=\"cancelled\"} 3\n",
           "rwkv_request_failure_total{reason=\"timeout\"} 4\n",
           "rwkv_request_failure_total{reason=\"internal\"} 5\n",
           "rwkv_prompt_tokens_total 1234\n",
           "rwkv_generation_tokens_total 567\n",
           "rwkv_time_to_first_token_seconds_bucket{le=\"0.25\"} 1\n",
           "rwkv_time_to_first_token_seconds_count 1\n",
           "rwkv_inter_token_latency_seconds_sum 0.021\n",
           "rwkv_e2e_request_latency_seconds_bucket{le=\"2.5\"} 0\n",
           "rwkv_request_queue_time_seconds_bucket{le=\"0.005\"} 1\n",
           "rwkv_batch_size_bucket{le=\"16\"} 0\n",
           "rwkv_batch_size_bucket{le=\"32\"} 1\n",
           "rwkv_batch_size_bucket{le=\"1024\"} 1\n",
           "rwkv_step_duration_seconds_count 1\n",
           "rwkv_engine_seconds_total{phase=\"schedule\"} 0.5\n",
           "rwkv_engine_seconds_total{phase=\"forward\"} 8\n",
           "rwkv_engine_seconds_total{phase=\"sample\"} 0.25\n",
           "rwkv_engine_seconds_total{phase=\"emit\"} 1.5\n",
           "rwkv_state_slots_used 5\n",
           "rwkv_state_slots_capacity 64\n",
           "rwkv_sessions_resident 5\n",
           "rwkv_sessions_offloaded 11\n",
           "rwkv_offload_memory_used_bytes 7864320\n",
           "rwkv_offload_memory_capacity_bytes 4293918720\n",
           "# TYPE rwkv_offload_memory_used_bytes gauge\n",
           "rwkv_state_saves_total 7\n",
           "rwkv_state_loads_total 6\n",
           "# TYPE rwkv_batch_size histogram\n",
           "# TYPE rwkv_requests_running gauge\n",
           "# TYPE rwkv_generation_tokens_total counter\n",
       }) {
    EXPECT_TRUE(Contains(text, line)) << "missing: " << line << "in:\n" << text;
  }
}

TEST(ServerMetricsTest, FreshSetShowsZeroes) {
  // Every pre-created series is visible from the first scrape, so rate() and
  // absent() work before the first request.
  metrics::Registry registry;
  ServerMetrics m(registry, {"m", "cpu", "v"});
  const std::string text = registry.Serialize();
  EXPECT_TRUE(Contains(text, "rwkv_request_failure_total{reason=\"timeout\"} 0\n"));
  EXPECT_TRUE(Contains(text, "rwkv_generation_tokens_total 0\n"));
  EXPECT_TRUE(Contains(text, "rwkv_step_duration_seconds_bucket{le=\"+Inf\"} 0\n"));
}

TEST(ServerMetricsTest, KnownReasonsReturnCachedChildren) {
  metrics::Registry registry;
  ServerMetrics m(registry, {"m", "cpu", "v"});
  EXPECT_EQ(&m.Success(ServerMetrics::kFinishStop), &m.success_stop);
  EXPECT_EQ(&m.Success("length"), &m.success_length);
  EXPECT_EQ(&m.Failure("timeout"), &m.failure_timeout);
  EXPECT_EQ(&m.Failure("other"), &m.Failure("other"));
  EXPECT_NE(&m.Failure("other"), &m.failure_internal);
}

TEST(ServerMetricsTest, BucketLayouts) {
  struct Layout {
    const char* name;
    Histogram::BucketBoundaries buckets;
    double min_first, max_first, min_last;
  };
  const std::vector<Layout> layouts = {
      {"ttft", TimeToFirstTokenBuckets(), 0.001, 0.001, 300},
      {"itl", InterTokenLatencyBuckets(), 0.001, 0.001, 5},
      {"e2e", RequestLatencyBuckets(), 0.001, 0.01, 1800},
      {"queue", QueueTimeBuckets(), 0.001, 0.001, 300},
      {"step", StepDurationBuckets(), 0.0001, 0.001, 5},
  };
  for (const Layout& l : layouts) {
    SCOPED_TRACE(l.name);
    ASSERT_GE(l.buckets.size(), 10u);
    EXPECT_GE(l.buckets.front(), l.min_first);
    EXPECT_LE(l.buckets.front(), l.max_first);
    EXPECT_GE(l.buckets.back(), l.min_last);
    for (size_t i = 1; i < l.buckets.size(); ++i) EXPECT_LT(l.buckets[i - 1], l.buckets[i]);
  }
  EXPECT_EQ(BatchSizeBuckets(),
            (Histogram::BucketBoundaries{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024}));
}

TEST(ServerMetricsDeathTest, RegisteringTwiceAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  metrics::Registry registry;
  ServerMetrics m(registry, {"m", "cpu", "v"});
  EXPECT_DEATH(ServerMetrics(registry, {"m", "cpu", "v"}), "ALREADY_EXISTS.*rwkv_info");
}

TEST(ServerMetricsTest, FullyPopulatedSetPassesPromtool) {
  const std::string promtool = metrics::testing::FindPromtool();
  if (promtool.empty()) {
    GTEST_SKIP() << "promtool not found: install the Debian package \"prometheus\" "
                    "(scripts/install-deps.sh) or set RWKV_PROMTOOL";
  }
  metrics::Registry registry;
  ServerMetrics m(registry, {"model \"with\" quotes\\", "cuda", "0.1.0"});
  Populate(m);
  const std::string text = registry.Serialize();
  const metrics::testing::PromtoolResult result =
      metrics::testing::RunPromtoolCheckMetrics(promtool, text);
  EXPECT_EQ(result.exit_code, 0) << "promtool output:\n" << result.output << "\ninput:\n" << text;
  EXPECT_EQ(result.output, "");
}

}  // namespace
}  // namespace rwkv
