// Tests of rwkv-bench-engine's pieces: flags, the floor, the peer table, the
// relu-counting backend (on the CPU, synthetic:tiny) and the host ceiling.
#include <memory>

#include "engine/model/cpu_backend.h"
#include "engine/model/model.h"
#include "gtest/gtest.h"
#include "tools/bench/bench_flags.h"
#include "tools/bench/bench_math.h"
#include "tools/bench/ceilings.h"
#include "tools/bench/counting_backend.h"

namespace rwkv {
namespace {

TEST(BenchFlagsTest, Defaults) {
  auto f = ParseBenchFlags({});
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->model, "synthetic:1.5b");
  EXPECT_EQ(f->batches, (std::vector<int32_t>{1, 8, 64, 256, 960}));
  EXPECT_EQ(f->steps, 20);
  EXPECT_EQ(f->backend, "auto");
  EXPECT_EQ(f->weight_dtype, "f16");
  EXPECT_EQ(f->state_dtype, "fp32");
  EXPECT_TRUE(f->peer.empty());
  EXPECT_EQ(f->sampling, "auto");
  EXPECT_EQ(f->context, 4);
  EXPECT_TRUE(f->prefill.empty());
  EXPECT_FALSE(f->batches_given);
  EXPECT_EQ(f->prefill_reps, 3);
  EXPECT_EQ(f->pass_rows, 1024);
  EXPECT_EQ(f->lanes, 1);
}

TEST(BenchFlagsTest, ParsesEverything) {
  auto f = ParseBenchFlags({"--model",
                            "synthetic:7.2b",
                            "--batch=1,2, 3",
                            "--steps",
                            "5",
                            "--warmup",
                            "0",
                            "--context",
                            "2",
                            "--prefill",
                            "512,4096, 16384",
                            "--prefill-reps",
                            "5",
                            "--pass-rows",
                            "4096",
                            "--backend",
                            "cpu",
                            "--weight-dtype",
                            "bf16",
                            "--state-dtype",
                            "fp16",
                            "--threads",
                            "3",
                            "--peer",
                            "albatross",
                            "--json",
                            "/tmp/x.json",
                            "--ffn-tokens",
                            "0",
                            "--copy-mib",
                            "64",
                            "--gemm-n",
                            "1024",
                            "--sampling",
                            "host",
                            "--lanes",
                            "2"});
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->model, "synthetic:7.2b");
  EXPECT_EQ(f->batches, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(f->steps, 5);
  EXPECT_EQ(f->warmup, 0);
  EXPECT_EQ(f->context, 2);
  EXPECT_EQ(f->prefill, (std::vector<int32_t>{512, 4096, 16384}));
  EXPECT_EQ(f->prefill_reps, 5);
  EXPECT_EQ(f->pass_rows, 4096);
  EXPECT_TRUE(f->batches_given);
  EXPECT_EQ(f->backend, "cpu");
  EXPECT_EQ(f->weight_dtype, "bf16");
  EXPECT_EQ(f->state_dtype, "fp16");
  EXPECT_EQ(f->threads, 3);
  EXPECT_EQ(f->peer, "albatross");
  EXPECT_EQ(f->json, "/tmp/x.json");
  EXPECT_EQ(f->ffn_tokens, 0);
  EXPECT_EQ(f->copy_mib, 64);
  EXPECT_EQ(f->gemm_n, 1024);
  EXPECT_EQ(f->sampling, "host");
  EXPECT_EQ(f->lanes, 2);
}

TEST(BenchFlagsTest, RejectsBadValues) {
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{{"--batch", "1,0"},
                                                                                    {"--batch", "x"},
                                                                                    {"--batch", ""},
                                                                                    {"--steps", "0"},
                                                                                    {"--backend", "tpu"},
                                                                                    {"--weight-dtype", "f8"},
                                                                                    {"--state-dtype", "bf16"},
                                                                                    {"--peer", "nobody"},
                                                                                    {"--steps"},
                                                                                    {"--frobnicate", "1"},
                                                                                    {"--sampling", "gpu"},
                                                                                    {"--context", "0"},
                                                                                    {"--prefill", "512,0"},
                                                                                    {"--prefill", ","},
                                                                                    {"--prefill-reps", "0"}, {"--pass-rows", "0"}, {"--pass-rows", "70000"}, {"--lanes", "0"}, {"--lanes", "17"},
                                                                                    {"--help=1"}}) {
    auto f = ParseBenchFlags(args);
    EXPECT_FALSE(f.ok()) << args[0];
    if (!f.ok()) {
      EXPECT_NE(f.status().message().find(args[0].substr(0, args[0].find('='))), std::string::npos);
    }
  }
}

TEST(BenchMathTest, FloorTakesTheLargerTerm) {
  FloorInputs in;
  in.weight_bytes = 3e9;
  in.state_bytes = 1e7;
  in.params = 1.5e9;
  in.copy_gbps = 3000;
  in.peak_tflops = 750;
  // B=1: (3e9 + 2e7) B / 3e12 B/s = 1.00667 ms; compute 3e9 / 7.5e14 = 0.004 ms.
  Floor f1 = StepFloor(in, 1);
  EXPECT_NEAR(f1.memory_ms, 1.006667, 1e-5);
  EXPECT_NEAR(f1.compute_ms, 0.004, 1e-9);
  EXPECT_TRUE(f1.memory_bound);
  EXPECT_DOUBLE_EQ(f1.ms, f1.memory_ms);
  // No state, B=1000: memory 1 ms, compute 4 ms.
  in.state_bytes = 0;
  Floor f2 = StepFloor(in, 1000);
  EXPECT_NEAR(f2.compute_ms, 4.0, 1e-9);
  EXPECT_FALSE(f2.memory_bound);
  EXPECT_DOUBLE_EQ(f2.ms, f2.compute_ms);
  // Unknown peak: bandwidth only.
  in.peak_tflops = 0;
  Floor f3 = StepFloor(in, 1000);
  EXPECT_EQ(f3.compute_ms, 0);
  EXPECT_TRUE(f3.memory_bound);
}

TEST(BenchMathTest, PeerTable) {
  auto p = PeerLookup("albatross", "synthetic:1.5b", 960);
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->fp16_state_tps, 80009);
  EXPECT_EQ(p->fp32_state_tps, 15780);
  auto q = PeerLookup("albatross", "synthetic:7.2b", 1);
  ASSERT_TRUE(q.has_value());
  EXPECT_EQ(q->fp32_state_tps, 199);
  EXPECT_FALSE(PeerLookup("albatross", "synthetic:7.2b", 2).has_value());
  EXPECT_FALSE(PeerLookup("albatross", "synthetic:0.1b", 1).has_value());
  EXPECT_FALSE(PeerLookup("", "synthetic:1.5b", 1).has_value());
  EXPECT_EQ(PeerTpsForState(*p, false), 15780);
  EXPECT_EQ(PeerTpsForState(*p, true), 80009);
  EXPECT_DOUBLE_EQ(TargetFactor(1), 1.1);
  EXPECT_DOUBLE_EQ(TargetFactor(8), 1.25);
}

TEST(BenchMathTest, PrefillTargets) {
  auto t = PrefillTargetLookup("albatross", "synthetic:7.2b", 4096);
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->tps, 30000);
  EXPECT_DOUBLE_EQ(t->peak_fraction, 0.40);
  auto v4 = PrefillTargetLookup("albatross", "synthetic:v4-1.5b", 4096);
  ASSERT_TRUE(v4.has_value());
  EXPECT_EQ(v4->tps, 96500);
  EXPECT_EQ(v4->peak_fraction, 0);
  EXPECT_EQ(PrefillTargetLookup("albatross", "synthetic:1.5b", 4096)->tps, 56000);
  EXPECT_EQ(PrefillTargetLookup("albatross", "synthetic:v4-7.2b", 4096)->tps, 36200);
  EXPECT_FALSE(PrefillTargetLookup("albatross", "synthetic:1.5b", 512).has_value());
  EXPECT_FALSE(PrefillTargetLookup("", "synthetic:1.5b", 4096).has_value());
  // 2 * params * T: 1.5e9 params, 4096 tokens -> 12.288 TFLOP.
  EXPECT_DOUBLE_EQ(PrefillFlops(1.5e9, 4096), 1.2288e13);
}

TEST(CountingBackendTest, CountsEveryReluInputAndKeepsResults) {
  auto counting = std::make_unique<ReluCountingBackend>(std::make_unique<CpuBackend>(2));
  ReluCountingBackend* counter = counting.get();
  auto wrapped = Model::Load("synthetic:tiny", std::move(counting));
  ASSERT_TRUE(wrapped.ok()) << wrapped.status();
  auto plain = Model::Load("synthetic:tiny", std::make_unique<CpuBackend>(2));
  ASSERT_TRUE(plain.ok()) << plain.status();
  const ModelConfig& c = (*wrapped)->config();
  ASSERT_TRUE((*wrapped)->AllocateSlots(2).ok());
  ASSERT_TRUE((*plain)->AllocateSlots(2).ok());
  const std::vector<int32_t> a = {1, 2, 3}, b = {4, 5};
  const std::vector<ForwardRequest> reqs = {{0, a, false}, {1, b, false}};
  std::vector<float> got, want;
  counter->StartCounting(c.n_layer);
  ASSERT_TRUE((*wrapped)->Forward(reqs, &got).ok());
  const ReluCounts counts = counter->StopCounting();
  ASSERT_TRUE(counts.status.ok());
  ASSERT_TRUE((*plain)->Forward(reqs, &want).ok());
  EXPECT_EQ(got, want);  // the wrapper changes nothing
  EXPECT_EQ(counts.total, int64_t{5} * c.ffn_dim * c.n_layer);
  ASSERT_EQ(counts.layer_total.size(), static_cast<size_t>(c.n_layer));
  for (int64_t t : counts.layer_total) EXPECT_EQ(t, int64_t{5} * c.ffn_dim);
  EXPECT_GT(counts.Fraction(), 0.0);
  EXPECT_LT(counts.Fraction(), 1.0);
  // Counting off: nothing is counted.
  counter->StartCounting(c.n_layer);
  (void)counter->StopCounting();
  ASSERT_TRUE((*wrapped)->Forward(reqs, &got).ok());
  counter->StartCounting(c.n_layer);
  EXPECT_EQ(counter->StopCounting().total, 0);
}

TEST(CeilingsTest, HostBandwidthIsPositive) {
  const Ceilings c = MeasureHostCeilings(2, size_t{8} << 20, 2);
  EXPECT_GT(c.copy_gbps, 0.1);
  EXPECT_EQ(c.peak_tflops, 0);
  EXPECT_FALSE(c.copy_method.empty());
}

}  // namespace
}  // namespace rwkv
