// Whole-model tests: logits and states against the official reference code
// (shared/testdata/official_ref) and rwkv.cpp (shared/testdata/rwkv_cpp), and
// the invariances the server relies on: sequence mode == stepping, batched ==
// single, any split of a long prompt == one pass.
#include "engine/model/model.h"

#include <cmath>
#include <numeric>
#include <tuple>
#include <string>
#include <vector>

#include "engine/model/cpu_backend.h"
#include "engine/model/forwarding_backend.h"
#include "engine/testing/logit_stats.h"
#include "engine/testing/testdata.h"
#include "gtest/gtest.h"

namespace rwkv {
namespace {

using ::rwkv::testing::MaxAbsDiff;
using ::rwkv::testing::Std;

using ::rwkv::testing::ReadF32File;
using ::rwkv::testing::TestDataPath;

constexpr int kRefTokens[32] = {0,  1,  2,   3,   511, 510, 255, 256, 100, 100, 100, 7,  42, 300, 450, 12,
                                34, 56, 78,  90,  123, 234, 345, 456, 11,  22,  33,  44, 0,  499, 5,   5};

// The model on `backend` with `slots` state slots, or null (and a failure).
std::unique_ptr<Model> LoadOnOrDie(const std::string& spec, std::unique_ptr<Backend> backend, int slots) {
  auto m = Model::Load(spec, std::move(backend), {.progress = false});
  EXPECT_TRUE(m.ok()) << spec << ": " << m.status();
  if (!m.ok()) return nullptr;
  EXPECT_TRUE((*m)->AllocateSlots(slots).ok());
  return *std::move(m);
}

std::unique_ptr<Model> LoadOrDie(const std::string& spec, int slots = 4,
                                 CpuGemm gemm = CpuGemm::kBatchInvariant) {
  return LoadOnOrDie(spec, std::make_unique<CpuBackend>(2, gemm), slots);
}

// Feeds tokens one at a time into slot 0, returning logits after each.
std::vector<float> StepLogits(Model& m, const std::vector<int32_t>& tokens, int32_t slot = 0) {
  std::vector<float> all, out;
  for (int32_t t : tokens) {
    const int32_t one[1] = {t};
    ForwardRequest r{slot, absl::MakeConstSpan(one, 1), false};
    EXPECT_TRUE(m.Forward({&r, 1}, &out).ok());
    all.insert(all.end(), out.begin(), out.end());
  }
  return all;
}

// ---- official_ref: every token within 1e-4 * std(ref) --------------------

struct RefCase {
  std::string file;
  std::string stem;  // rwkv7_small_A / rwkv4_small_A
};

class OfficialRefTest : public ::testing::TestWithParam<std::tuple<RefCase, CpuGemm>> {};

TEST_P(OfficialRefTest, LogitsAndStateMatchReference) {
  const RefCase& c = std::get<0>(GetParam());
  RWKV_REQUIRE_TESTDATA("official_ref/" + c.file);
  auto m = LoadOrDie(TestDataPath("official_ref/" + c.file), 4, std::get<1>(GetParam()));
  ASSERT_NE(m, nullptr);
  const int V = m->config().vocab_size;
  ASSERT_EQ(V, 512);
  const std::vector<float> ref = ReadF32File(TestDataPath("official_ref/" + c.stem + ".logits.f32"));
  ASSERT_EQ(ref.size(), 32u * V);
  const std::vector<float> got = StepLogits(*m, std::vector<int32_t>(kRefTokens, kRefTokens + 32));
  for (int t = 0; t < 32; ++t) {
    const float* r = ref.data() + t * V;
    const double rel = MaxAbsDiff(got.data() + t * V, r, V) / Std(r, V);
    EXPECT_LT(rel, 1e-4) << "token " << t;  // the bound for fp32
  }

  // Final state, reordered from the official per-layer layout into ours.
  const std::vector<float> ref_state = ReadF32File(TestDataPath("official_ref/" + c.stem + ".state.f32"));
  std::vector<float> state(static_cast<size_t>(m->state_layout().total));
  ASSERT_TRUE(m->ReadSlot(0, state.data()).ok());
  ASSERT_EQ(ref_state.size(), state.size());
  const ModelConfig& cfg = m->config();
  const StateLayout& lay = m->state_layout();
  const int C = cfg.n_embd;
  for (int l = 0; l < cfg.n_layer; ++l) {
    const float* ours = state.data() + l * lay.per_layer;
    const float* theirs = ref_state.data() + l * lay.per_layer;
    if (cfg.arch == Arch::kV7) {  // official: att_x_prev, wkv, ffn_x_prev
      const int64_t wkv = lay.per_layer - 2 * C;
      EXPECT_LT(MaxAbsDiff(ours + lay.att_x_prev, theirs, C), 1e-4) << "layer " << l;
      EXPECT_LT(MaxAbsDiff(ours + lay.wkv, theirs + C, wkv), 1e-4) << "layer " << l;
      EXPECT_LT(MaxAbsDiff(ours + lay.ffn_x_prev, theirs + C + wkv, C), 1e-4) << "layer " << l;
    } else {  // official: ffn_x_prev, att_x_prev, aa, bb, pp
      EXPECT_LT(MaxAbsDiff(ours + lay.ffn_x_prev, theirs, C), 1e-4);
      EXPECT_LT(MaxAbsDiff(ours + lay.att_x_prev, theirs + C, C), 1e-4);
      for (int i = 0; i < 3 * C; ++i) {  // aa, bb reach ~15: relative bound
        EXPECT_NEAR(ours[lay.wkv + i], theirs[2 * C + i], 1e-4 * (1 + std::fabs(theirs[2 * C + i])))
            << "layer " << l << " i " << i;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    AllContainers, OfficialRefTest,
    ::testing::Combine(::testing::Values(RefCase{"rwkv7_small_A.pth", "rwkv7_small_A"},
                                         RefCase{"rwkv7_small_A_torch2.pth", "rwkv7_small_A"},
                                         RefCase{"rwkv7_small_A.safetensors", "rwkv7_small_A"},
                                         RefCase{"rwkv4_small_A.pth", "rwkv4_small_A"},
                                         RefCase{"rwkv4_small_A_torch2.pth", "rwkv4_small_A"},
                                         RefCase{"rwkv4_small_A.safetensors", "rwkv4_small_A"}),
                       ::testing::Values(CpuGemm::kBatchInvariant, CpuGemm::kOpenBlas)),
    [](const auto& p) {
      std::string s = std::get<0>(p.param).file;
      for (char& ch : s) {
        if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
      }
      return s + (std::get<1>(p.param) == CpuGemm::kOpenBlas ? "_openblas" : "_invariant");
    });

// ---- rwkv.cpp tiny models -------------------------------------------------

struct CppCase {
  std::string file;
  std::string tag;      // 4v0-660K / 7v0-834K
  double tolerance;     // max |diff| on logits
};

class RwkvCppTest : public ::testing::TestWithParam<CppCase> {};

TEST_P(RwkvCppTest, LogitsMatchRwkvCpp) {
  const CppCase& c = GetParam();
  RWKV_REQUIRE_TESTDATA("rwkv_cpp/" + c.file);
  auto m = LoadOrDie(TestDataPath("rwkv_cpp/" + c.file));
  ASSERT_NE(m, nullptr);
  ASSERT_EQ(m->config().vocab_size, 256);
  const std::vector<int32_t> prompt = {34, 105, 110};  // "in
  const std::vector<float> got = StepLogits(*m, prompt);
  const std::vector<float> per_token =
      ReadF32File(TestDataPath("rwkv_cpp/generated/rwkvcpp-logits-per-token-" + c.tag + ".f32"));
  const std::vector<float> expected = ReadF32File(TestDataPath("rwkv_cpp/expected-logits-" + c.tag + ".bin"));
  ASSERT_EQ(per_token.size(), 3u * 256);
  for (int t = 0; t < 3; ++t) {
    EXPECT_LT(MaxAbsDiff(got.data() + t * 256, per_token.data() + t * 256, 256), c.tolerance) << "token " << t;
  }
  EXPECT_LT(MaxAbsDiff(got.data() + 2 * 256, expected.data(), 256), c.tolerance);

  // State after the prompt; rwkv.cpp orders a layer ffn_x_prev, att_x_prev, rest.
  const std::vector<float> ref_state =
      ReadF32File(TestDataPath("rwkv_cpp/generated/rwkvcpp-state-after-prompt-" + c.tag + ".f32"));
  std::vector<float> state(static_cast<size_t>(m->state_layout().total));
  ASSERT_TRUE(m->ReadSlot(0, state.data()).ok());
  ASSERT_EQ(ref_state.size(), state.size());
  const StateLayout& lay = m->state_layout();
  const int C = m->config().n_embd;
  for (int l = 0; l < m->config().n_layer; ++l) {
    const float* ours = state.data() + l * lay.per_layer;
    const float* theirs = ref_state.data() + l * lay.per_layer;
    EXPECT_LT(MaxAbsDiff(ours + lay.ffn_x_prev, theirs, C), c.tolerance) << "layer " << l;
    EXPECT_LT(MaxAbsDiff(ours + lay.att_x_prev, theirs + C, C), c.tolerance) << "layer " << l;
    for (int64_t i = 2 * C; i < lay.per_layer; ++i) {
      EXPECT_NEAR(ours[i], theirs[i], c.tolerance * (1 + std::fabs(theirs[i]))) << "layer " << l << " i " << i;
    }
  }
}

// FP32 files: rwkv.cpp's own fp32 run, observed <= 2e-6 apart from float64.
// FP16 file: the weights are the FP32 values rounded to fp16 (max change 3e-8
// per the README, since the model was trained in fp16); we compute in fp32,
// so the same bound holds against the FP32 reference run.
INSTANTIATE_TEST_SUITE_P(TinyModels, RwkvCppTest,
                         ::testing::Values(CppCase{"tiny-rwkv-4v0-660K-FP32.bin", "4v0-660K", 1e-4},
                                           CppCase{"tiny-rwkv-7v0-834K-FP32.bin", "7v0-834K", 1e-4},
                                           CppCase{"tiny-rwkv-7v0-834K-FP16.bin", "7v0-834K", 1e-4}),
                         [](const auto& p) {
                           std::string s = p.param.file;
                           for (char& ch : s) {
                             if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           }
                           return s;
                         });

TEST(ModelLoadTest, RefusesRwkv5And6WithClearMessage) {
  RWKV_REQUIRE_TESTDATA("rwkv_cpp/tiny-rwkv-5v2-730K-FP32.bin");
  auto v5 = Model::Load(TestDataPath("rwkv_cpp/tiny-rwkv-5v2-730K-FP32.bin"), std::make_unique<CpuBackend>(1),
                        {.progress = false});
  ASSERT_FALSE(v5.ok());
  EXPECT_EQ(v5.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(v5.status().message().find("RWKV-5"), std::string::npos) << v5.status();
  EXPECT_NE(v5.status().message().find("not supported yet"), std::string::npos) << v5.status();

  auto v6 = Model::Load(TestDataPath("rwkv_cpp/tiny-rwkv-6v0-3m-Q5_1.bin"), std::make_unique<CpuBackend>(1),
                        {.progress = false});
  ASSERT_FALSE(v6.ok());
  EXPECT_EQ(v6.status().code(), absl::StatusCode::kUnimplemented) << v6.status();
}

TEST(ModelLoadTest, MissingFileAndUnknownSyntheticSize) {
  auto missing = Model::Load("/nonexistent/model.pth", std::make_unique<CpuBackend>(1), {.progress = false});
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound) << missing.status();
  auto bad = Model::Load("synthetic:13b", std::make_unique<CpuBackend>(1), {.progress = false});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("0.1b"), std::string::npos) << bad.status();
}

// ---- invariances (synthetic tiny models, both architectures) ---------------

class InvarianceTest : public ::testing::TestWithParam<std::string> {};

std::vector<int32_t> Tokens(int n, uint32_t seed, int vocab) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  uint32_t x = seed * 2654435761u + 1;
  for (auto& v : t) {
    x = x * 1664525u + 1013904223u;
    v = static_cast<int32_t>((x >> 8) % static_cast<uint32_t>(vocab));
  }
  return t;
}

TEST_P(InvarianceTest, SequenceModeEqualsStepping) {
  auto m = LoadOrDie(GetParam(), 2);
  ASSERT_NE(m, nullptr);
  const int V = m->config().vocab_size;
  const auto tokens = Tokens(40, 7, V);
  const std::vector<float> stepped = StepLogits(*m, tokens, 0);
  std::vector<float> seq;
  ForwardRequest r{1, tokens, true};
  ASSERT_TRUE(m->Forward({&r, 1}, &seq).ok());
  // Bit-identical: every op computes a row independently of the others.
  EXPECT_EQ(seq, stepped);
  std::vector<float> s0(static_cast<size_t>(m->state_layout().total)), s1(s0.size());
  ASSERT_TRUE(m->ReadSlot(0, s0.data()).ok());
  ASSERT_TRUE(m->ReadSlot(1, s1.data()).ok());
  EXPECT_EQ(s0, s1);
}

TEST_P(InvarianceTest, BatchedStepsEqualSingleSteps) {
  constexpr int B = 5;
  auto batched = LoadOrDie(GetParam(), B);
  auto single = LoadOrDie(GetParam(), 1);
  ASSERT_NE(batched, nullptr);
  const int V = batched->config().vocab_size;
  std::vector<std::vector<int32_t>> streams;
  for (int b = 0; b < B; ++b) streams.push_back(Tokens(12 + b, 100 + b, V));
  // Batched: step t advances every session that still has tokens; session 3
  // also gets its tokens two at a time (a mixed prefill/decode batch).
  std::vector<std::vector<float>> batched_last(B);
  std::vector<size_t> pos(B, 0);
  for (bool any = true; any;) {
    any = false;
    std::vector<ForwardRequest> reqs;
    std::vector<int> who;
    for (int b = 0; b < B; ++b) {
      if (pos[b] >= streams[b].size()) continue;
      const size_t take = (b == 3) ? std::min<size_t>(2, streams[b].size() - pos[b]) : 1;
      reqs.push_back({b, absl::MakeConstSpan(streams[b]).subspan(pos[b], take), false});
      who.push_back(b);
      pos[b] += take;
      any = true;
    }
    if (reqs.empty()) break;
    std::vector<float> out;
    ASSERT_TRUE(batched->Forward(reqs, &out).ok());
    for (size_t i = 0; i < who.size(); ++i) {
      batched_last[who[i]].assign(out.begin() + i * V, out.begin() + (i + 1) * V);
    }
  }
  for (int b = 0; b < B; ++b) {
    ASSERT_TRUE(single->ResetSlot(0).ok());
    const std::vector<float> solo = StepLogits(*single, streams[b], 0);
    EXPECT_EQ(batched_last[b], std::vector<float>(solo.end() - V, solo.end())) << "session " << b;
  }
}

TEST_P(InvarianceTest, LongPromptSplitAcrossPassesEqualsStepping) {
  auto m = LoadOrDie(GetParam(), 2);
  ASSERT_NE(m, nullptr);
  const int V = m->config().vocab_size;
  const auto tokens = Tokens(1100, 3, V);  // longer than one pass (1024 rows by default)
  std::vector<float> seq;
  ForwardRequest r{1, tokens, false};
  ASSERT_TRUE(m->Forward({&r, 1}, &seq).ok());
  const std::vector<float> stepped = StepLogits(*m, tokens, 0);
  EXPECT_EQ(seq, std::vector<float>(stepped.end() - V, stepped.end()));
}

// ResetSlot copies a hidden fresh slot: after tokens have moved slots 0 and
// 2, resetting slot 2 gives exactly the fresh state (zeros, and RWKV-4's pp
// at its start value) and leaves slot 0 alone; the template itself is never
// written by a forward pass (slot indices stop at num_slots()).
TEST_P(InvarianceTest, ResetSlotRestoresTheFreshStateOnly) {
  auto m = LoadOrDie(GetParam(), 3);
  ASSERT_NE(m, nullptr);
  const int64_t total = m->state_layout().total;
  std::vector<float> fresh(static_cast<size_t>(total)), before(fresh.size()), got(fresh.size());
  InitFreshState(m->config(), fresh.data());
  const std::vector<int32_t> toks = {1, 2, 3, 4, 5};
  std::vector<float> logits;
  ASSERT_TRUE(m->Forward({ForwardRequest{0, toks, false}, ForwardRequest{2, toks, false}}, &logits).ok());
  ASSERT_TRUE(m->ReadSlot(0, before.data()).ok());
  ASSERT_NE(before, fresh);
  for (int round = 0; round < 2; ++round) {
    ASSERT_TRUE(m->ResetSlot(2).ok());
    ASSERT_TRUE(m->ReadSlot(2, got.data()).ok());
    EXPECT_EQ(got, fresh) << "round " << round;
    ASSERT_TRUE(m->ReadSlot(0, got.data()).ok());
    EXPECT_EQ(got, before);
    ASSERT_TRUE(m->Forward({ForwardRequest{2, toks, false}}, &logits).ok());
  }
  EXPECT_FALSE(m->ResetSlot(3).ok());  // the template is not a slot
  EXPECT_FALSE(m->ResetSlot(-1).ok());
}

TEST_P(InvarianceTest, SyntheticWeightsAreDeterministic) {
  auto a = LoadOrDie(GetParam(), 1);
  auto b = LoadOrDie(GetParam(), 1);
  ASSERT_NE(a, nullptr);
  const auto tokens = Tokens(5, 1, a->config().vocab_size);
  EXPECT_EQ(StepLogits(*a, tokens), StepLogits(*b, tokens));
}

TEST_P(InvarianceTest, BadRequestsAreRejectedAndChangeNothing) {
  auto m = LoadOrDie(GetParam(), 2);
  ASSERT_NE(m, nullptr);
  const int V = m->config().vocab_size;
  std::vector<float> before(static_cast<size_t>(m->state_layout().total)), after(before.size());
  ASSERT_TRUE(m->ReadSlot(0, before.data()).ok());
  std::vector<float> out;
  const std::vector<int32_t> good = {1, 2}, bad_token = {1, V}, negative = {-1};
  ForwardRequest ok_req{0, good, false};
  ForwardRequest reqs_bad_token[2] = {ok_req, {1, bad_token, false}};
  EXPECT_EQ(m->Forward(reqs_bad_token, &out).code(), absl::StatusCode::kInvalidArgument);
  ForwardRequest neg[1] = {{0, negative, false}};
  EXPECT_EQ(m->Forward(neg, &out).code(), absl::StatusCode::kInvalidArgument);
  ForwardRequest dup[2] = {ok_req, ok_req};
  EXPECT_EQ(m->Forward(dup, &out).code(), absl::StatusCode::kInvalidArgument);
  ForwardRequest empty[1] = {{0, {}, false}};
  EXPECT_EQ(m->Forward(empty, &out).code(), absl::StatusCode::kInvalidArgument);
  ForwardRequest range[1] = {{7, good, false}};
  EXPECT_EQ(m->Forward(range, &out).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(m->Forward({}, &out).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(m->ReadSlot(0, after.data()).ok());
  EXPECT_EQ(before, after);  // the valid request in a rejected batch did not run
}

// ForwardKeepLogits leaves in backend memory exactly the rows Forward would
// download: same order, same count, same bits, in one pass and across passes
// (a request of over 1,024 rows first, so later rows land at an offset).
TEST_P(InvarianceTest, KeptLogitsEqualDownloadedLogits) {
  auto kept = LoadOrDie(GetParam(), 3);
  auto host = LoadOrDie(GetParam(), 3);
  ASSERT_NE(kept, nullptr);
  ASSERT_NE(host, nullptr);
  const int V = kept->config().vocab_size;
  const auto a = Tokens(4, 11, V), b = Tokens(3, 12, V), c = Tokens(1, 13, V), long_prompt = Tokens(1100, 14, V);
  const std::vector<std::vector<ForwardRequest>> calls = {
      {{0, a, false}, {1, b, true}, {2, c, false}},            // one pass, 5 rows
      {{0, long_prompt, false}, {1, b, true}, {2, c, false}},  // two passes, 5 rows, the last 4 at an offset
      {{2, c, true}},
  };
  for (size_t k = 0; k < calls.size(); ++k) {
    std::vector<float> want;
    ASSERT_TRUE(host->Forward(calls[k], &want).ok());
    ASSERT_TRUE(kept->ForwardKeepLogits(calls[k]).ok());
    const int64_t rows = static_cast<int64_t>(want.size()) / V;
    ASSERT_EQ(kept->kept_logit_rows(), rows) << "call " << k;
    for (int64_t r = 0; r < rows; ++r) {
      std::vector<float> got(static_cast<size_t>(V));
      ASSERT_TRUE(kept->DownloadKeptLogits(r, got.data()).ok());
      EXPECT_EQ(got, std::vector<float>(want.begin() + r * V, want.begin() + (r + 1) * V)) << "call " << k
                                                                                            << " row " << r;
    }
    EXPECT_EQ(kept->DownloadKeptLogits(rows, nullptr).code(), absl::StatusCode::kInvalidArgument);
  }
  // The CPU backend cannot sample in its memory; a Forward drops the kept rows.
  const int32_t row0 = 0;
  SampleSpec spec;
  SampledToken out;
  EXPECT_EQ(kept->SampleKeptLogits({&row0, 1}, {&spec, 1}, {&out, 1}).code(), absl::StatusCode::kFailedPrecondition);
  std::vector<float> sink;
  ForwardRequest one{0, c, false};
  ASSERT_TRUE(kept->Forward({&one, 1}, &sink).ok());
  EXPECT_EQ(kept->kept_logit_rows(), 0);
}

// A CPU backend that asks for padded passes (granule 4 above 3), as the CUDA
// backend does with graphs on, and counts the padding segments it is given.
class PaddingCpuBackend final : public ForwardingBackend {
 public:
  PaddingCpuBackend() : ForwardingBackend(std::make_unique<CpuBackend>(2, CpuGemm::kBatchInvariant)) {}
  int PassRowQuantum(int count) const override { return count > 3 ? 4 : 1; }
  void BeginPass(const Segment* segs, int nseg, const int32_t* tokens, int rows, const int32_t* logit_rows,
                 int nlogit) override {
    EXPECT_EQ(rows % PassRowQuantum(rows), 0);
    EXPECT_EQ(nseg % PassRowQuantum(nseg), 0);
    EXPECT_EQ(nlogit % PassRowQuantum(nlogit), 0);
    int covered = 0;
    for (int i = 0; i < nseg; ++i) {
      padding_segments += segs[i].slot < 0;
      covered += segs[i].rows;
      if (i > 0 && segs[i].slot >= 0) {
        EXPECT_LE(segs[i].rows, segs[i - 1].rows) << "longest first";
      }
    }
    EXPECT_EQ(covered, rows);  // every row in exactly one segment
    bool all_padding = true;
    for (int i = 0; i < nseg; ++i) all_padding = all_padding && segs[i].slot < 0;
    passes.push_back({rows, nseg, nlogit, all_padding});
    ForwardingBackend::BeginPass(segs, nseg, tokens, rows, logit_rows, nlogit);
  }
  bool RecordsPasses() const override { return records; }
  struct Pass {
    int rows, nseg, nlogit;
    bool all_padding;
  };
  int padding_segments = 0;
  bool records = false;  // what RecordsPasses says
  std::vector<Pass> passes;
};

// Padded passes give the same logits and states, bit for bit, as unpadded
// ones: the padding rows are computed and never read, the padding segments
// touch no state, and the segments' order in the pass does not matter.
TEST_P(InvarianceTest, PaddedPassesEqualUnpadded) {
  auto plain = LoadOrDie(GetParam(), 6);
  auto backend = std::make_unique<PaddingCpuBackend>();
  PaddingCpuBackend* padding = backend.get();
  std::unique_ptr<Model> padded = LoadOnOrDie(GetParam(), std::move(backend), 6);
  ASSERT_NE(padded, nullptr);
  ASSERT_NE(plain, nullptr);
  const int V = plain->config().vocab_size;
  const auto p5 = Tokens(5, 21, V), p9 = Tokens(9, 22, V), p2 = Tokens(2, 23, V), one = Tokens(1, 24, V),
             two = Tokens(1, 25, V), long_prompt = Tokens(1030, 26, V);
  const std::vector<std::vector<ForwardRequest>> calls = {
      {{0, p5, false}},                                                            // 5 rows -> 8
      {{0, one, false}, {1, p9, false}, {2, p2, true}, {3, two, false}},            // mixed, longest not first
      {{0, two, false}, {1, one, false}, {2, one, false}, {3, one, false}, {4, p5, false}, {5, one, true}},
      {{0, one, false}, {1, long_prompt, false}, {2, p9, true}},                   // two passes
      {{3, one, false}},                                                           // 1 row: not padded
  };
  for (size_t k = 0; k < calls.size(); ++k) {
    std::vector<float> want, got;
    ASSERT_TRUE(plain->Forward(calls[k], &want).ok());
    ASSERT_TRUE(padded->Forward(calls[k], &got).ok());
    EXPECT_EQ(got, want) << "call " << k;
  }
  EXPECT_GT(padding->padding_segments, 0);
  for (int slot = 0; slot < 6; ++slot) {
    std::vector<float> a(static_cast<size_t>(plain->state_layout().total)), b(a.size());
    ASSERT_TRUE(plain->ReadSlot(slot, a.data()).ok());
    ASSERT_TRUE(padded->ReadSlot(slot, b.data()).ok());
    EXPECT_EQ(a, b) << "slot " << slot;
  }
}

// Warm-up runs every padded decode shape up to the batch, largest first,
// twice, with padding segments only: the slots, and the passes after it, are
// as without it. A backend that records no passes gets none.
TEST_P(InvarianceTest, WarmUpPassesRunEveryDecodeShapeAndTouchNoSlot) {
  auto plain = LoadOrDie(GetParam(), 3);
  ASSERT_NE(plain, nullptr);
  auto backend = std::make_unique<PaddingCpuBackend>();
  PaddingCpuBackend* rec = backend.get();
  rec->records = true;
  std::unique_ptr<Model> padded = LoadOnOrDie(GetParam(), std::move(backend), 3);
  ASSERT_NE(padded, nullptr);
  const int V = plain->config().vocab_size;
  const auto p5 = Tokens(5, 31, V), p9 = Tokens(9, 32, V), one = Tokens(1, 33, V);
  const std::vector<ForwardRequest> first = {{0, p5, false}, {1, p9, false}, {2, one, true}};
  std::vector<float> want, got;
  ASSERT_TRUE(plain->Forward(first, &want).ok());
  ASSERT_TRUE(padded->Forward(first, &got).ok());
  ASSERT_EQ(got, want);
  const int64_t total = plain->state_layout().total;
  std::vector<std::vector<float>> before(3, std::vector<float>(static_cast<size_t>(total)));
  for (int slot = 0; slot < 3; ++slot) ASSERT_TRUE(padded->ReadSlot(slot, before[slot].data()).ok());

  rec->passes.clear();
  auto shapes = padded->WarmUpPasses(10, 40);
  ASSERT_TRUE(shapes.ok()) << shapes.status();
  // Granule 4 above 3 sessions: 1, 2, 3, 4, then 5..8 -> 8 and 9..10 -> 12.
  EXPECT_EQ(*shapes, 6);
  const std::vector<int> order = {12, 8, 4, 3, 2, 1, 12, 8, 4, 3, 2, 1};
  ASSERT_EQ(rec->passes.size(), order.size());
  for (size_t i = 0; i < order.size(); ++i) {
    const PaddingCpuBackend::Pass& p = rec->passes[i];
    EXPECT_EQ(p.rows, order[i]) << i;
    EXPECT_EQ(p.nseg, order[i]) << i;
    EXPECT_EQ(p.nlogit, order[i]) << i;
    EXPECT_TRUE(p.all_padding) << i;
  }
  for (int slot = 0; slot < 3; ++slot) {
    std::vector<float> after(static_cast<size_t>(total));
    ASSERT_TRUE(padded->ReadSlot(slot, after.data()).ok());
    EXPECT_EQ(after, before[slot]) << "slot " << slot;
  }
  const std::vector<ForwardRequest> next = {{0, one, false}, {1, one, false}, {2, p5, true}};
  ASSERT_TRUE(plain->Forward(next, &want).ok());
  ASSERT_TRUE(padded->Forward(next, &got).ok());
  EXPECT_EQ(got, want);

  EXPECT_EQ(padded->WarmUpPasses(0, 40).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(padded->WarmUpPasses(4, 0).status().code(), absl::StatusCode::kInvalidArgument);
  rec->records = false;
  rec->passes.clear();
  auto none = padded->WarmUpPasses(10, 40);
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(*none, 0);
  EXPECT_TRUE(rec->passes.empty());
}

// SetMaxPassRows moves where a forward splits into passes, not its results:
// 1,100 rows run as 2 passes by default, as 1 with 2,048 and as 4 with 300.
TEST_P(InvarianceTest, MaxPassRowsSetsThePassesNotTheResults) {
  auto backend = std::make_unique<PaddingCpuBackend>();  // granule 4 above 3, counts its passes
  PaddingCpuBackend* rec = backend.get();
  std::unique_ptr<Model> m = LoadOnOrDie(GetParam(), std::move(backend), 2);
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->max_pass_rows(), Model::kDefaultMaxPassRows);
  const int V = m->config().vocab_size;
  const auto tokens = Tokens(1100, 9, V);
  const auto one = Tokens(1, 10, V);
  std::vector<float> want;
  for (int limit : {Model::kDefaultMaxPassRows, 2048, 300}) {
    ASSERT_TRUE(m->SetMaxPassRows(limit).ok());
    ASSERT_TRUE(m->ResetSlot(0).ok());
    ASSERT_TRUE(m->ResetSlot(1).ok());
    rec->passes.clear();
    const std::vector<ForwardRequest> reqs = {{0, tokens, false}, {1, one, false}};
    std::vector<float> got;
    ASSERT_TRUE(m->Forward(reqs, &got).ok());
    const size_t want_passes = limit == 2048 ? 1 : limit == 300 ? 4 : 2;
    EXPECT_EQ(rec->passes.size(), want_passes) << limit;
    for (const auto& p : rec->passes) EXPECT_LE(p.rows, limit + 3) << limit;  // + the padding granule
    if (want.empty()) {
      want = got;
    } else {
      EXPECT_EQ(got, want) << limit;
    }
  }
  EXPECT_EQ(m->SetMaxPassRows(0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(m->SetMaxPassRows(Model::kMaxPassRowsLimit + 1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(m->max_pass_rows(), 300);
}

// A backend that says it allocates scratch for Wkv7 (as the CUDA backend does
// for its chunked form) and records what it was asked.
class Wkv7ScratchCpuBackend final : public ForwardingBackend {
 public:
  Wkv7ScratchCpuBackend() : ForwardingBackend(std::make_unique<CpuBackend>(1)) {}
  int64_t Wkv7ScratchBytes(int rows, int C, int N, DType state_dtype) const override {
    asked.push_back({rows, C, N, state_dtype});
    return 1000 * static_cast<int64_t>(rows) + 7;
  }
  struct Ask {
    int rows, C, N;
    DType state_dtype;
  };
  mutable std::vector<Ask> asked;
};

// Model::WorkspaceBytes (what a server leaves free beside its state pool)
// counts the backend's Wkv7 scratch for RWKV-7, asked with the model's
// dimensions and state type, and none for RWKV-4, which has no Wkv7.
TEST_P(InvarianceTest, WorkspaceBytesCountsTheWkv7Scratch) {
  auto plain = LoadOrDie(GetParam(), 1);
  ASSERT_NE(plain, nullptr);
  auto backend = std::make_unique<Wkv7ScratchCpuBackend>();
  Wkv7ScratchCpuBackend* scratch = backend.get();
  const std::unique_ptr<Model> with = LoadOnOrDie(GetParam(), std::move(backend), 1);
  ASSERT_NE(with, nullptr);
  const ModelConfig& c = with->config();
  for (int rows : {1, 64, 4096}) {
    scratch->asked.clear();
    const int64_t extra = with->WorkspaceBytes(rows, 1) - plain->WorkspaceBytes(rows, 1);
    if (c.arch == Arch::kV7) {
      EXPECT_EQ(extra, 1000 * static_cast<int64_t>(rows) + 7) << rows;
      ASSERT_EQ(scratch->asked.size(), 1u);
      EXPECT_EQ(scratch->asked[0].rows, rows);
      EXPECT_EQ(scratch->asked[0].C, c.n_embd);
      EXPECT_EQ(scratch->asked[0].N, c.head_size);
      EXPECT_EQ(scratch->asked[0].state_dtype, DType::kF32);
    } else {
      EXPECT_EQ(extra, 0) << rows;
      EXPECT_TRUE(scratch->asked.empty());
    }
  }
}

// A CPU backend that asks for padded RWKV-7 LoRA products (Backend::PadsLora)
// in passes of more than 3 rows.
class LoraPaddingCpuBackend final : public ForwardingBackend {
 public:
  LoraPaddingCpuBackend() : ForwardingBackend(std::make_unique<CpuBackend>(2, CpuGemm::kBatchInvariant)) {}
  bool PadsLora() const override { return true; }
  bool PaddedLoraPays(int n) const override {
    if (n > 3) ++padded_passes;
    return n > 3;
  }
  mutable int padded_passes = 0;
};

// The padded LoRA products (zero weight rows and columns up to the largest
// LoRA width) give the same logits and states, bit for bit, as the plain
// ones on the batch-invariant CPU GEMM (each output summed over its inputs
// in order: the padding adds exact zeros after the real terms), in passes
// that take them (4 rows and more) and passes that do not (1-3 rows).
TEST_P(InvarianceTest, PaddedLoraEqualsPlain) {
  auto plain = LoadOrDie(GetParam(), 3);
  ASSERT_NE(plain, nullptr);
  auto backend = std::make_unique<LoraPaddingCpuBackend>();
  LoraPaddingCpuBackend* lora = backend.get();
  std::unique_ptr<Model> padded = LoadOnOrDie(GetParam(), std::move(backend), 3);
  ASSERT_NE(padded, nullptr);
  const int V = plain->config().vocab_size;
  const auto p7 = Tokens(7, 31, V), p2 = Tokens(2, 32, V), one = Tokens(1, 33, V), p40 = Tokens(40, 34, V);
  const std::vector<std::vector<ForwardRequest>> calls = {
      {{0, p7, true}},                                    // 7 rows: padded
      {{0, one, false}, {1, p2, true}},                   // 3 rows: plain
      {{0, one, false}, {1, one, false}, {2, p40, true}},  // 42 rows: padded
      {{2, one, true}},                                   // 1 row: plain
  };
  for (size_t k = 0; k < calls.size(); ++k) {
    std::vector<float> want, got;
    ASSERT_TRUE(plain->Forward(calls[k], &want).ok());
    ASSERT_TRUE(padded->Forward(calls[k], &got).ok());
    EXPECT_EQ(got, want) << "call " << k;
  }
  // Every layer of the two padded passes asks (RWKV-7 only).
  if (plain->config().arch == Arch::kV7) {
    EXPECT_GE(lora->padded_passes, 2 * plain->config().n_layer);
  }
  for (int slot = 0; slot < 3; ++slot) {
    std::vector<float> a(static_cast<size_t>(plain->state_layout().total)), b(a.size());
    ASSERT_TRUE(plain->ReadSlot(slot, a.data()).ok());
    ASSERT_TRUE(padded->ReadSlot(slot, b.data()).ok());
    EXPECT_EQ(a, b) << "slot " << slot;
  }
}

INSTANTIATE_TEST_SUITE_P(Synthetic, InvarianceTest, ::testing::Values("synthetic:tiny", "synthetic:v4-tiny"),
                         [](const auto& p) { return p.param == "synthetic:tiny" ? "v7" : "v4"; });

}  // namespace
}  // namespace rwkv
