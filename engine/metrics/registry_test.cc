// Tests for the metric types, families, registration rules, bucket
// generators and thread safety.
//
// Why: the registry is updated from many threads on the hot path and its
// registration rules are what keep the output promtool-clean, so both the
// exact totals under contention and each rejected name are pinned here.
#include <atomic>
#include <cmath>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "engine/metrics/registry.h"
#include "gtest/gtest.h"

namespace rwkv::metrics {
namespace {

TEST(CounterTest, IncrementsAndIgnoresNegativeAndNaN) {
  Counter c;
  EXPECT_EQ(c.Value(), 0);
  c.Increment();
  c.Increment(2.5);
  c.Increment(-10);
  c.Increment(std::numeric_limits<double>::quiet_NaN());
  c.Increment(0);
  EXPECT_EQ(c.Value(), 3.5);
}

TEST(GaugeTest, SetIncrementDecrement) {
  Gauge g;
  g.Set(10);
  g.Increment();
  g.Increment(4);
  g.Decrement();
  g.Decrement(20);
  EXPECT_EQ(g.Value(), -6);
}

TEST(HistogramTest, BoundIsInclusiveAndCountsAreCumulative) {
  Histogram h({1, 2, 4});
  for (double v : {0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, -7.0}) h.Observe(v);
  const Histogram::Snapshot s = h.Collect();
  EXPECT_EQ(s.cumulative_counts, (std::vector<uint64_t>{3, 5, 7, 8}));
  EXPECT_EQ(s.count, 8u);
  EXPECT_DOUBLE_EQ(s.sum, 10.0);
}

TEST(HistogramTest, NaNGoesToInfBucketAndPoisonsSum) {
  Histogram h({1});
  h.Observe(std::numeric_limits<double>::quiet_NaN());
  const Histogram::Snapshot s = h.Collect();
  EXPECT_EQ(s.cumulative_counts, (std::vector<uint64_t>{0, 1}));
  EXPECT_TRUE(std::isnan(s.sum));
}

TEST(HistogramTest, TrailingInfIsDroppedAndEmptyBoundsWork) {
  Histogram h({1, std::numeric_limits<double>::infinity()});
  EXPECT_EQ(h.boundaries(), (Histogram::BucketBoundaries{1}));
  Histogram only_inf({});
  only_inf.Observe(3);
  EXPECT_EQ(only_inf.Collect().cumulative_counts, (std::vector<uint64_t>{1}));
}

TEST(HistogramDeathTest, RejectsBadBounds) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(Histogram({1, 1}), "strictly increasing");
  EXPECT_DEATH(Histogram({2, 1}), "strictly increasing");
  EXPECT_DEATH(Histogram({std::numeric_limits<double>::quiet_NaN()}), "must be finite");
  EXPECT_DEATH(Histogram({-std::numeric_limits<double>::infinity(), 1}), "must be finite");
}

TEST(FamilyTest, SameLabelsReturnSameInstance) {
  Registry r;
  Family<Counter>& f = BuildCounter().Name("x_total").Help("x").Register(r);
  Counter& a = f.Add({{"k", "1"}});
  Counter& b = f.Add({{"k", "2"}});
  EXPECT_NE(&a, &b);
  EXPECT_EQ(&a, &f.Add({{"k", "1"}}));
  EXPECT_TRUE(f.Has({{"k", "2"}}));
  EXPECT_FALSE(f.Has({{"k", "3"}}));
  // Histograms keep the buckets of their first Add, as prometheus-cpp does.
  Family<Histogram>& hf = BuildHistogram().Name("h_seconds").Help("h").Register(r);
  Histogram& h1 = hf.Add({}, Histogram::BucketBoundaries{1, 2});
  Histogram& h2 = hf.Add({}, Histogram::BucketBoundaries{5});
  EXPECT_EQ(&h1, &h2);
  EXPECT_EQ(h2.boundaries(), (Histogram::BucketBoundaries{1, 2}));
}

TEST(ValidateTest, MetricNames) {
  for (const char* ok : {"a", "_a", "rwkv_requests_running", "A9_b", "x_total"}) {
    EXPECT_TRUE(ValidateMetricName(ok).ok()) << ok;
  }
  for (const char* bad : {"", "9a", "a-b", "a b", "a.b", "a:b", "__a", "é", "a\n"}) {
    absl::Status s = ValidateMetricName(bad);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_NE(ValidateMetricName("a:b").message().find("recording rules"), std::string::npos);
}

TEST(ValidateTest, LabelNames) {
  for (const char* ok : {"a", "_a", "finish_reason", "le"}) {
    EXPECT_TRUE(ValidateLabelName(ok).ok()) << ok;
  }
  for (const char* bad : {"", "1a", "a-b", "a:b", "__name__"}) {
    EXPECT_FALSE(ValidateLabelName(bad).ok()) << bad;
  }
}

TEST(RegistrationTest, TypeSuffixRules) {
  Registry r;
  EXPECT_EQ(BuildCounter().Name("requests").TryRegister(r).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BuildCounter().Name("_total").TryRegister(r).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BuildGauge().Name("slots_total").TryRegister(r).status().code(),
            absl::StatusCode::kInvalidArgument);
  for (const char* suffix : {"_bucket", "_sum", "_count", "_total"}) {
    EXPECT_FALSE(BuildHistogram().Name(std::string("h") + suffix).TryRegister(r).ok()) << suffix;
    EXPECT_FALSE(BuildGauge().Name(std::string("g") + suffix).TryRegister(r).ok()) << suffix;
  }
  EXPECT_FALSE(BuildGauge().Name("bad-name").TryRegister(r).ok());
  EXPECT_FALSE(BuildGauge().Name("g").Labels({{"__x", "1"}}).TryRegister(r).ok());
  EXPECT_FALSE(BuildHistogram().Name("h").Labels({{"le", "1"}}).TryRegister(r).ok());
  EXPECT_TRUE(BuildCounter().Name("requests_total").TryRegister(r).ok());
  EXPECT_TRUE(BuildGauge().Name("g").TryRegister(r).ok());
  EXPECT_TRUE(BuildHistogram().Name("h").TryRegister(r).ok());
}

TEST(RegistrationTest, DuplicatesAndSampleNameClashesAreRejected) {
  Registry r;
  ASSERT_TRUE(BuildCounter().Name("a_total").TryRegister(r).ok());
  ASSERT_TRUE(BuildHistogram().Name("lat").TryRegister(r).ok());
  ASSERT_TRUE(BuildGauge().Name("g").TryRegister(r).ok());
  auto code = [&](absl::StatusOr<Family<Gauge>*> s) { return s.status().code(); };
  EXPECT_EQ(BuildCounter().Name("a_total").TryRegister(r).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(code(BuildGauge().Name("g").TryRegister(r)), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(code(BuildGauge().Name("a").TryRegister(r)), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(code(BuildGauge().Name("lat").TryRegister(r)), absl::StatusCode::kAlreadyExists);
  // A counter's base name is its OpenMetrics family name, so "lat_total" and
  // "g_total" clash with the histogram "lat" and the gauge "g".
  EXPECT_EQ(BuildCounter().Name("lat_total").TryRegister(r).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(BuildCounter().Name("g_total").TryRegister(r).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(BuildGauge().Name("lat_max").TryRegister(r).ok());
}

TEST(RegistrationDeathTest, RegisterAndAddAbortWithMessage) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  Registry r;
  EXPECT_DEATH(BuildCounter().Name("requests").Register(r), "rwkv metrics: .*must end in");
  BuildGauge().Name("g").Register(r);
  EXPECT_DEATH(BuildGauge().Name("g").Register(r), "rwkv metrics: ALREADY_EXISTS");
  Family<Gauge>& g = BuildGauge().Name("h").Labels({{"site", "x"}}).Register(r);
  EXPECT_DEATH(g.Add({{"bad-label", "1"}}), "label name \"bad-label\"");
  EXPECT_DEATH(g.Add({{"site", "y"}}), "already a constant label");
  Family<Histogram>& h = BuildHistogram().Name("lat").Register(r);
  EXPECT_DEATH(h.Add({{"le", "1"}}, Histogram::BucketBoundaries{1}), "reserved for buckets");
}

TEST(BucketsTest, Exponential) {
  EXPECT_EQ(ExponentialBuckets(1, 2, 5), (Histogram::BucketBoundaries{1, 2, 4, 8, 16}));
  EXPECT_EQ(ExponentialBuckets(0.001, 10, 5),
            (Histogram::BucketBoundaries{0.001, 0.01, 0.1, 1, 10}));
  EXPECT_EQ(ExponentialBuckets(3, 1.5, 1), (Histogram::BucketBoundaries{3}));
}

TEST(BucketsTest, LinearHasNoFloatNoise) {
  EXPECT_EQ(LinearBuckets(0.1, 0.1, 5), (Histogram::BucketBoundaries{0.1, 0.2, 0.3, 0.4, 0.5}));
  EXPECT_EQ(LinearBuckets(-1, 0.5, 4), (Histogram::BucketBoundaries{-1, -0.5, 0, 0.5}));
}

TEST(BucketsTest, ExponentialRange) {
  EXPECT_EQ(ExponentialBucketsRange(1, 1024, 11), ExponentialBuckets(1, 2, 11));
  const Histogram::BucketBoundaries b = ExponentialBucketsRange(0.001, 60, 12);
  ASSERT_EQ(b.size(), 12u);
  EXPECT_EQ(b.front(), 0.001);
  EXPECT_EQ(b.back(), 60);
  for (size_t i = 1; i < b.size(); ++i) EXPECT_LT(b[i - 1], b[i]);
}

TEST(BucketsDeathTest, InvalidArguments) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(ExponentialBuckets(0, 2, 3), "need start > 0");
  EXPECT_DEATH(ExponentialBuckets(1, 1, 3), "factor > 1");
  EXPECT_DEATH(ExponentialBuckets(1, 2, 0), "count >= 1");
  EXPECT_DEATH(LinearBuckets(0, 0, 3), "width > 0");
  EXPECT_DEATH(ExponentialBucketsRange(2, 1, 3), "0 < min < max");
}

TEST(ConcurrencyTest, ManyThreadsGiveExactTotals) {
  Registry r;
  Family<Counter>& counters = BuildCounter().Name("c_total").Help("c").Register(r);
  Family<Gauge>& gauges = BuildGauge().Name("g").Help("g").Register(r);
  Family<Histogram>& hists = BuildHistogram().Name("h").Help("h").Register(r);
  constexpr int kThreads = 8;
  constexpr int kIters = 50000;
  std::atomic<bool> stop{false};
  std::atomic<int> scrapes{0};
  // A scraper running alongside: output must parse and buckets stay cumulative.
  std::thread scraper([&] {
    while (!stop.load()) {
      const std::string text = r.Serialize();
      EXPECT_EQ(text.find("NaN"), std::string::npos);
      scrapes.fetch_add(1);
    }
  });
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      // Every thread looks the children up itself: Add must be race-free.
      Counter& c = counters.Add({{"k", "shared"}});
      Counter& mine = counters.Add({{"k", std::to_string(t)}});
      Gauge& g = gauges.Add({});
      Histogram& h = hists.Add({}, Histogram::BucketBoundaries{1, 2});
      for (int i = 0; i < kIters; ++i) {
        c.Increment();
        mine.Increment(2);
        g.Increment(3);
        g.Decrement(1);
        h.Observe(static_cast<double>(i % 3));  // 0, 1, 2: exact sums
      }
    });
  }
  for (auto& th : threads) th.join();
  stop.store(true);
  scraper.join();
  EXPECT_GT(scrapes.load(), 0);
  EXPECT_EQ(counters.Add({{"k", "shared"}}).Value(), kThreads * kIters);
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(counters.Add({{"k", std::to_string(t)}}).Value(), 2.0 * kIters);
  }
  EXPECT_EQ(gauges.Add({}).Value(), 2.0 * kThreads * kIters);
  const Histogram::Snapshot s = hists.Add({}, Histogram::BucketBoundaries{}).Collect();
  EXPECT_EQ(s.count, static_cast<uint64_t>(kThreads * kIters));
  // i % 3 over 50000 iterations: 16667 zeros, 16667 ones, 16666 twos.
  EXPECT_EQ(s.cumulative_counts, (std::vector<uint64_t>{kThreads * 33334ull, kThreads * 50000ull,
                                                        kThreads * 50000ull}));
  EXPECT_EQ(s.sum, kThreads * (16667.0 + 2 * 16666.0));
}

}  // namespace
}  // namespace rwkv::metrics
