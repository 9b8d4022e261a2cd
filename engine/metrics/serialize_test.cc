// Golden tests for the text exposition format 0.0.4.
//
// Why exact text: scrapers are strict (one bad escape or an invalid UTF-8
// byte fails the whole scrape), so the output is compared byte for byte, and
// then handed to promtool, the reference parser, where it is installed.
#include <limits>
#include <string>

#include "engine/metrics/promtool_test_util.h"
#include "engine/metrics/registry.h"
#include "gtest/gtest.h"

namespace rwkv::metrics {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

TEST(FormatValueTest, SpecialValuesIntegersAndShortestForm) {
  EXPECT_EQ(FormatValue(0), "0");
  EXPECT_EQ(FormatValue(-0.0), "0");
  EXPECT_EQ(FormatValue(3), "3");
  EXPECT_EQ(FormatValue(-42), "-42");
  EXPECT_EQ(FormatValue(1e6), "1000000");
  EXPECT_EQ(FormatValue(123456789012345.0), "123456789012345");
  EXPECT_EQ(FormatValue(1e15), "1e+15");
  EXPECT_EQ(FormatValue(1e20), "1e+20");
  EXPECT_EQ(FormatValue(0.25), "0.25");
  EXPECT_EQ(FormatValue(0.001), "0.001");
  EXPECT_EQ(FormatValue(1e-5), "1e-05");
  EXPECT_EQ(FormatValue(0.1 + 0.2), "0.30000000000000004");  // exact round trip
  EXPECT_EQ(FormatValue(-1.5), "-1.5");
  EXPECT_EQ(FormatValue(kInf), "+Inf");
  EXPECT_EQ(FormatValue(-kInf), "-Inf");
  EXPECT_EQ(FormatValue(kNaN), "NaN");
}

// A small registry touching every formatting rule.
void Populate(Registry& r) {
  Family<Counter>& requests = BuildCounter()
                                  .Name("test_requests_total")
                                  .Help("Requests \\ handled.\nSecond \"line\".")
                                  .Register(r);
  requests.Add({{"path", "/a\"b\\c\nd"}, {"code", "200"}}).Increment(3);
  requests.Add({{"code", "500"}, {"path", "/x"}}).Increment(0.5);

  Family<Gauge>& temp = BuildGauge()
                            .Name("test_temperature_celsius")
                            .Help("Temperature.")
                            .Labels({{"site", "lab"}})
                            .Register(r);
  temp.Add({{"room", "b"}}).Set(1e20);
  temp.Add({{"room", "a"}}).Set(-1.5);

  BuildGauge().Name("test_unused").Help("Never touched: omitted.").Register(r);

  Family<Gauge>& odd = BuildGauge().Name("test_odd").Help("Odd values.").Register(r);
  odd.Add({{"v", "pinf"}}).Set(kInf);
  odd.Add({{"v", "ninf"}}).Set(-kInf);
  odd.Add({{"v", "nan"}}).Set(kNaN);

  Family<Histogram>& lat =
      BuildHistogram().Name("test_latency_seconds").Help("Latency.").Register(r);
  Histogram& get = lat.Add({{"method", "GET"}}, Histogram::BucketBoundaries{0.125, 0.5, 1});
  for (double v : {0.125, 0.25, 0.5, 4.0}) get.Observe(v);
  lat.Add({{"method", "POST"}}, Histogram::BucketBoundaries{0.125, 0.5, 1});

  BuildCounter().Name("test_plain_total").Help("Plain.").Register(r).Add({}).Increment(7);
}

constexpr char kGolden[] =
    "# HELP test_requests_total Requests \\\\ handled.\\nSecond \"line\".\n"
    "# TYPE test_requests_total counter\n"
    "test_requests_total{code=\"200\",path=\"/a\\\"b\\\\c\\nd\"} 3\n"
    "test_requests_total{code=\"500\",path=\"/x\"} 0.5\n"
    "# HELP test_temperature_celsius Temperature.\n"
    "# TYPE test_temperature_celsius gauge\n"
    "test_temperature_celsius{room=\"a\",site=\"lab\"} -1.5\n"
    "test_temperature_celsius{room=\"b\",site=\"lab\"} 1e+20\n"
    "# HELP test_odd Odd values.\n"
    "# TYPE test_odd gauge\n"
    "test_odd{v=\"nan\"} NaN\n"
    "test_odd{v=\"ninf\"} -Inf\n"
    "test_odd{v=\"pinf\"} +Inf\n"
    "# HELP test_latency_seconds Latency.\n"
    "# TYPE test_latency_seconds histogram\n"
    "test_latency_seconds_bucket{method=\"GET\",le=\"0.125\"} 1\n"
    "test_latency_seconds_bucket{method=\"GET\",le=\"0.5\"} 3\n"
    "test_latency_seconds_bucket{method=\"GET\",le=\"1\"} 3\n"
    "test_latency_seconds_bucket{method=\"GET\",le=\"+Inf\"} 4\n"
    "test_latency_seconds_sum{method=\"GET\"} 4.875\n"
    "test_latency_seconds_count{method=\"GET\"} 4\n"
    "test_latency_seconds_bucket{method=\"POST\",le=\"0.125\"} 0\n"
    "test_latency_seconds_bucket{method=\"POST\",le=\"0.5\"} 0\n"
    "test_latency_seconds_bucket{method=\"POST\",le=\"1\"} 0\n"
    "test_latency_seconds_bucket{method=\"POST\",le=\"+Inf\"} 0\n"
    "test_latency_seconds_sum{method=\"POST\"} 0\n"
    "test_latency_seconds_count{method=\"POST\"} 0\n"
    "# HELP test_plain_total Plain.\n"
    "# TYPE test_plain_total counter\n"
    "test_plain_total 7\n";

TEST(SerializeTest, Golden) {
  Registry r;
  Populate(r);
  EXPECT_EQ(r.Serialize(), kGolden);
}

TEST(SerializeTest, EmptyRegistryIsEmpty) {
  Registry r;
  EXPECT_EQ(r.Serialize(), "");
}

TEST(SerializeTest, NoHelpLineWithoutHelp) {
  Registry r;
  BuildGauge().Name("g").Register(r).Add({}).Set(2);
  EXPECT_EQ(r.Serialize(), "# TYPE g gauge\ng 2\n");
}

TEST(SerializeTest, UnlabeledHistogram) {
  Registry r;
  Histogram& h = BuildHistogram().Name("h").Help("H.").Register(r).Add(
      {}, ExponentialBuckets(0.001, 10, 2));
  h.Observe(0.0005);
  h.Observe(0.002);
  EXPECT_EQ(r.Serialize(),
            "# HELP h H.\n# TYPE h histogram\n"
            "h_bucket{le=\"0.001\"} 1\nh_bucket{le=\"0.01\"} 2\nh_bucket{le=\"+Inf\"} 2\n"
            "h_sum 0.0025\nh_count 2\n");
}

TEST(SerializeTest, InvalidUtf8IsReplaced) {
  Registry r;
  Family<Gauge>& g = BuildGauge().Name("g").Help("bad \xff help").Register(r);
  // Valid 2-, 3- and 4-byte sequences pass; a lone continuation byte, a
  // truncated sequence, an overlong encoding and a surrogate are replaced.
  g.Add({{"v", "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80|\x80|\xe2\x82|\xc0\xaf|\xed\xa0\x80"}}).Set(1);
  EXPECT_EQ(r.Serialize(),
            "# HELP g bad \xef\xbf\xbd help\n# TYPE g gauge\n"
            "g{v=\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80|\xef\xbf\xbd|\xef\xbf\xbd\xef\xbf\xbd|"
            "\xef\xbf\xbd\xef\xbf\xbd|\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"} 1\n");
}

TEST(SerializeTest, GoldenPassesPromtool) {
  const std::string promtool = testing::FindPromtool();
  if (promtool.empty()) {
    GTEST_SKIP() << "promtool not found (Debian package \"prometheus\"; or set RWKV_PROMTOOL)";
  }
  const testing::PromtoolResult result = testing::RunPromtoolCheckMetrics(promtool, kGolden);
  EXPECT_EQ(result.exit_code, 0) << result.output;
}

TEST(SerializeTest, PromtoolRejectsBrokenText) {
  // Guards the check above: promtool must actually parse its input.
  const std::string promtool = testing::FindPromtool();
  if (promtool.empty()) GTEST_SKIP() << "promtool not found";
  const testing::PromtoolResult result =
      testing::RunPromtoolCheckMetrics(promtool, "# TYPE x gauge\nx{a=\"unterminated} 1\n");
  EXPECT_NE(result.exit_code, 0) << result.output;
}

}  // namespace
}  // namespace rwkv::metrics
