// Unit tests of rwkv-loadgen's parsing, distributions and statistics (no
// server; the end-to-end tests in tests/e2e/loadgen_test.cc run it against a
// real rwkv-server).
#include <cmath>
#include <random>

#include "client/loadgen/load_spec.h"
#include "client/loadgen/loadgen.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace rwkv::loadgen {
namespace {

TEST(IntDistribution, ParsesEveryForm) {
  std::mt19937_64 rng(7);
  auto fixed = IntDistribution::Parse("--x", "64");
  ASSERT_TRUE(fixed.ok()) << fixed.status();
  EXPECT_EQ(fixed->Sample(rng), 64);
  EXPECT_EQ(fixed->ToString(), "64");

  auto uni = IntDistribution::Parse("--x", "uniform:10:20");
  ASSERT_TRUE(uni.ok()) << uni.status();
  int seen_lo = 0, seen_hi = 0;
  for (int i = 0; i < 2000; ++i) {
    const int64_t v = uni->Sample(rng);
    ASSERT_GE(v, 10);
    ASSERT_LE(v, 20);
    seen_lo += v == 10;
    seen_hi += v == 20;
  }
  EXPECT_GT(seen_lo, 0);  // both ends are reachable (inclusive)
  EXPECT_GT(seen_hi, 0);
  EXPECT_EQ(uni->UpperBound(), 20);

  auto normal = IntDistribution::Parse("--x", "normal:100:10");
  ASSERT_TRUE(normal.ok()) << normal.status();
  double sum = 0;
  for (int i = 0; i < 4000; ++i) sum += static_cast<double>(normal->Sample(rng));
  EXPECT_NEAR(sum / 4000, 100, 1.5);

  auto exp = IntDistribution::Parse("--x", "exp:50");
  ASSERT_TRUE(exp.ok()) << exp.status();
  sum = 0;
  for (int i = 0; i < 4000; ++i) {
    const int64_t v = exp->Sample(rng);
    ASSERT_GE(v, 1);
    ASSERT_LE(v, exp->UpperBound());
    sum += static_cast<double>(v);
  }
  EXPECT_NEAR(sum / 4000, 50, 4);
}

TEST(IntDistribution, NeverBelowOne) {
  auto d = IntDistribution::Parse("--x", "normal:2:50");
  ASSERT_TRUE(d.ok());
  std::mt19937_64 rng(1);
  for (int i = 0; i < 1000; ++i) EXPECT_GE(d->Sample(rng), 1);
}

TEST(IntDistribution, RejectsNonsenseNamingTheFlag) {
  for (const char* bad : {"", "0", "-3", "abc", "uniform:5", "uniform:9:3", "uniform:1.5:3", "normal:0:1",
                          "normal:10:-1", "exp:0", "exp:1:2", "gamma:1:2", "uniform:1:x"}) {
    auto d = IntDistribution::Parse("--max-tokens", bad);
    ASSERT_FALSE(d.ok()) << bad;
    EXPECT_NE(d.status().message().find("--max-tokens"), std::string::npos) << d.status();
  }
}

TEST(IntDistribution, SameSeedSameSequence) {
  auto d = IntDistribution::Parse("--x", "uniform:1:1000000");
  ASSERT_TRUE(d.ok());
  std::mt19937_64 a(42), b(42), c(43);
  bool differs = false;
  for (int i = 0; i < 50; ++i) {
    const int64_t x = d->Sample(a);
    EXPECT_EQ(x, d->Sample(b));
    differs = differs || x != d->Sample(c);
  }
  EXPECT_TRUE(differs);
}

TEST(ParseLoadSpec, ClosedDefaultsAndFlags) {
  auto s = ParseLoadSpec({"--concurrency", "64", "--requests=500", "--prompt-tokens", "uniform:16:512",
                          "--max-tokens", "exp:100", "--sessions", "sticky", "--temperature", "0",
                          "--json", "-", "--no-progress", "--stop-at-eot", "--server", "host:1",
                          "--connections", "8"});
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->mode, LoadMode::kClosed);
  EXPECT_EQ(s->concurrency, 64);
  EXPECT_EQ(s->requests, 500);
  EXPECT_EQ(s->prompt_tokens.ToString(), "uniform:16:512");
  EXPECT_EQ(s->max_tokens.ToString(), "exp:100");
  EXPECT_TRUE(s->sticky_sessions);
  ASSERT_TRUE(s->temperature.has_value());
  EXPECT_EQ(*s->temperature, 0.0f);
  EXPECT_EQ(s->json_path, "-");
  EXPECT_FALSE(s->progress);
  EXPECT_TRUE(s->stop_at_eot);
  EXPECT_EQ(s->server, "host:1");
  EXPECT_EQ(s->connections, 8);
  auto d = ParseLoadSpec({"--requests", "1"});
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->connections, 1);
}

TEST(ParseLoadSpec, OpenAndContextModes) {
  auto open = ParseLoadSpec({"--mode", "open", "--rate", "12.5", "--duration", "30"});
  ASSERT_TRUE(open.ok()) << open.status();
  EXPECT_EQ(open->mode, LoadMode::kOpen);
  EXPECT_DOUBLE_EQ(open->rate, 12.5);
  auto ctx = ParseLoadSpec({"--mode", "context", "--context-lengths", "100, 10000,100000", "--max-tokens", "64"});
  ASSERT_TRUE(ctx.ok()) << ctx.status();
  EXPECT_EQ(ctx->context_lengths, (std::vector<int64_t>{100, 10000, 100000}));
}

TEST(ParseLoadSpec, RejectsBadCommandLines) {
  const std::vector<std::vector<std::string>> bad = {
      {"--requests", "10", "--bogus"},
      {"--requests"},
      {"--requests", "0"},
      {"--concurrency", "x", "--requests", "1"},
      {"--concurrency", "8"},                            // no --duration / --requests
      {"--mode", "open", "--duration", "5"},             // no --rate
      {"--rate", "5", "--duration", "5"},                // --rate without open mode
      {"--mode", "open", "--rate", "5", "--duration", "5", "--sessions", "sticky"},
      {"--mode", "context"},                             // no lengths
      {"--mode", "context", "--context-lengths", "10,0"},
      {"--context-lengths", "10", "--requests", "1"},   // lengths outside context mode
      {"--mode", "sideways", "--requests", "1"},
      {"--stop-at-eot=1", "--requests", "1"},
      {"--duration", "nan"},
      {"--connections", "0", "--requests", "1"},
      {"--connections", "5000", "--requests", "1"},
  };
  for (const auto& args : bad) {
    auto s = ParseLoadSpec(args);
    std::string joined;
    for (const auto& a : args) joined += a + " ";
    EXPECT_FALSE(s.ok()) << joined;
  }
}

TEST(Stats, QuantilesInterpolate) {
  std::vector<double> v;
  for (int i = 1; i <= 101; ++i) v.push_back(i);  // 1..101
  const Summary s = Summarize(v);
  EXPECT_EQ(s.count, 101);
  EXPECT_DOUBLE_EQ(s.p50, 51);
  EXPECT_DOUBLE_EQ(s.p90, 91);
  EXPECT_DOUBLE_EQ(s.p99, 100);
  EXPECT_DOUBLE_EQ(s.min, 1);
  EXPECT_DOUBLE_EQ(s.max, 101);
  EXPECT_DOUBLE_EQ(s.mean, 51);
  EXPECT_DOUBLE_EQ(Quantile({1.0, 3.0}, 0.5), 2.0);
  EXPECT_EQ(Summarize({}).count, 0);
  // Order of the input does not matter.
  EXPECT_DOUBLE_EQ(Summarize({5, 1, 4, 2, 3}).p50, 3);
}

TEST(Report, JsonCarriesEveryNumber) {
  LoadReport r;
  auto spec = ParseLoadSpec({"--concurrency", "4", "--requests", "8"});
  ASSERT_TRUE(spec.ok());
  r.spec = *spec;
  r.started = 8;
  r.succeeded = 7;
  r.failed = 1;
  r.errors_by_code["UNAVAILABLE"] = 1;
  r.first_error = "UNAVAILABLE: gone";
  r.generated_tokens = 700;
  r.wall_s = 2;
  r.generated_tokens_per_s = 350;
  r.ttft = Summarize({0.1, 0.2, 0.3});
  r.itl = Summarize({0.01, 0.02});
  const nlohmann::json j = nlohmann::json::parse(ReportJson(r));
  EXPECT_EQ(j["config"]["mode"], "closed");
  EXPECT_EQ(j["config"]["concurrency"], 4);
  EXPECT_EQ(j["requests"]["failed"], 1);
  EXPECT_EQ(j["requests"]["errors_by_code"]["UNAVAILABLE"], 1);
  EXPECT_EQ(j["tokens"]["generated"], 700);
  EXPECT_DOUBLE_EQ(j["throughput"]["generated_tokens_per_s"].get<double>(), 350);
  EXPECT_DOUBLE_EQ(j["ttft_s"]["p50"].get<double>(), 0.2);
  EXPECT_EQ(j["itl_s"]["count"], 2);
  const std::string text = ReportText(r);
  EXPECT_NE(text.find("350.0 tokens/s"), std::string::npos) << text;
  EXPECT_NE(text.find("UNAVAILABLE=1"), std::string::npos) << text;
}

}  // namespace
}  // namespace rwkv::loadgen
