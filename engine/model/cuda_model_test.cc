// Whole-model tests of the CUDA backend: the forward pass of model.cc on the
// GPU against the official reference logits and rwkv.cpp (fp32 weights),
// against the CPU backend by greedy tokens (16-bit weights), and batching
// invariance (a session's logits in a batch equal its solo run within the
// dtype's tolerance). Each test skips, naming the reason, where there is no
// GPU or no test data.
//
// Tolerances and why:
//  - fp32 weights: the CPU tests' bounds (1e-4 * std(ref) per token against
//    the official code, 1e-4 absolute against rwkv.cpp): fp32 throughout,
//    only the summation order differs.
//  - 16-bit weights: greedy tokens must agree for 64 steps. Where they differ,
//    the CPU's two candidates must be within twice that step's measured
//    |gpu - cpu| logit difference (a near tie, which rounding may flip); the
//    run then continues on the CPU's token. The logit drift itself is only
//    sanity-bounded (fp16 0.05 * std, bf16 0.25 * std: weights and matrix
//    inputs are rounded to 2^-11 resp. 2^-8, over every layer).
//  - batching, default mode: with 16-bit weights the kernel family changes
//    with the row count (small-batch GEMV/sparse FFN on fp32 inputs up to
//    small_batch_rows rows; above, the skinny tensor-core GEMM up to
//    skinny_rows and cuBLAS beyond, both on inputs rounded to the weight
//    type), so a batched session and its solo run differ by the input
//    rounding carried through the model. Issue #4's bar: ~1e-2 relative for
//    fp16/bf16 and the same greedy tokens. Written as 20 unit roundoffs of
//    the weight type (fp16 2^-11: 1e-2 * std; bf16 2^-8: 8e-2 * std, the
//    same bar in units of its 8x coarser rounding; the earlier GEMV, which
//    rounded inputs like cuBLAS, already measured 1.4e-2 in bf16), plus
//    greedy tokens fed in a batch equal to the solo run's, where a flip is
//    allowed only on a near tie (the solo's top two within twice the step's
//    measured logit difference). fp32 weights stay on cuBLAS: 1e-4 * std.
//  - batching, batch-invariant mode (cuBLAS for every product): only
//    cuBLAS's choice of algorithm for the row count changes the summation
//    order: 1e-4 * std for fp32, 1e-3 * std for 16-bit weights.
//  - released dimensions (synthetic 0.1b): relative to the CPU's own spread
//    for the same arithmetic (see the comment above that test).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <tuple>
#include <vector>

#include "engine/loader/dtype.h"
#include "engine/model/cpu_backend.h"
#include "engine/model/cuda_backend.h"
#include "engine/model/model.h"
#include "engine/testing/logit_stats.h"
#include "engine/testing/testdata.h"
#include "gtest/gtest.h"

namespace rwkv {
namespace {

using ::rwkv::testing::Argmax;
using ::rwkv::testing::MaxAbsDiff;
using ::rwkv::testing::Std;

using ::rwkv::testing::ReadF32File;
using ::rwkv::testing::TestDataPath;

#define RWKV_REQUIRE_GPU()                                                                             \
  do {                                                                                                 \
    if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device: " << MakeCudaBackend().status();     \
  } while (0)

constexpr int kRefTokens[32] = {0,  1,  2,   3,   511, 510, 255, 256, 100, 100, 100, 7,  42, 300, 450, 12,
                                34, 56, 78,  90,  123, 234, 345, 456, 11,  22,  33,  44, 0,  499, 5,   5};

std::unique_ptr<Model> LoadOn(const std::string& spec, std::unique_ptr<Backend> backend, int slots) {
  auto m = Model::Load(spec, std::move(backend), {.progress = false});
  EXPECT_TRUE(m.ok()) << spec << ": " << m.status();
  if (!m.ok()) return nullptr;
  EXPECT_TRUE((*m)->AllocateSlots(slots).ok());
  return *std::move(m);
}

// invariant: CudaBackendOptions::batch_invariant (cuBLAS for every product).
std::unique_ptr<Model> LoadGpu(const std::string& spec, DType dtype, int slots = 4, bool invariant = false) {
  auto b = MakeCudaBackend(
      {.device = 0, .weight_dtype = dtype, .embedding_dtype = dtype, .batch_invariant = invariant});
  EXPECT_TRUE(b.ok()) << b.status();
  if (!b.ok()) return nullptr;
  return LoadOn(spec, *std::move(b), slots);
}

std::unique_ptr<Model> LoadCpu(const std::string& spec, int slots = 4) {
  return LoadOn(spec, std::make_unique<CpuBackend>(2), slots);
}

std::vector<float> Forward(Model& m, int32_t slot, const std::vector<int32_t>& tokens, bool all) {
  std::vector<float> out;
  ForwardRequest r{slot, tokens, all};
  const absl::Status s = m.Forward({&r, 1}, &out);
  EXPECT_TRUE(s.ok()) << s;
  return out;
}

// Feeds tokens one at a time into `slot`, returning the logits after each.
std::vector<float> StepLogits(Model& m, const std::vector<int32_t>& tokens, int32_t slot = 0) {
  std::vector<float> all;
  for (int32_t t : tokens) {
    const std::vector<float> out = Forward(m, slot, {t}, false);
    all.insert(all.end(), out.begin(), out.end());
  }
  return all;
}

std::string Sanitise(std::string s) {
  for (char& ch : s) {
    if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
  }
  return s;
}

// ---- (b) fp32 weights against the official reference and rwkv.cpp ---------

struct RefCase {
  std::string file, stem;
};

class CudaOfficialRefTest : public ::testing::TestWithParam<RefCase> {};

TEST_P(CudaOfficialRefTest, Fp32LogitsAndStateMatchReference) {
  RWKV_REQUIRE_GPU();
  const RefCase& c = GetParam();
  RWKV_REQUIRE_TESTDATA("official_ref/" + c.file);
  auto m = LoadGpu(TestDataPath("official_ref/" + c.file), DType::kF32);
  ASSERT_NE(m, nullptr);
  const int V = m->config().vocab_size;
  const std::vector<float> ref = ReadF32File(TestDataPath("official_ref/" + c.stem + ".logits.f32"));
  ASSERT_EQ(ref.size(), 32u * V);
  const std::vector<float> got = StepLogits(*m, std::vector<int32_t>(kRefTokens, kRefTokens + 32));
  double worst = 0;
  for (int t = 0; t < 32; ++t) {
    const float* r = ref.data() + t * V;
    const double rel = MaxAbsDiff(got.data() + t * V, r, V) / Std(r, V);
    worst = std::max(worst, rel);
    EXPECT_LT(rel, 1e-4) << "token " << t;
  }
  std::printf("[ maxerr ] %s fp32: max |logit diff| / std(ref) = %.3g over 32 tokens\n", c.file.c_str(), worst);

  // Final state, reordered from the official per-layer layout into ours.
  const std::vector<float> ref_state = ReadF32File(TestDataPath("official_ref/" + c.stem + ".state.f32"));
  std::vector<float> state(static_cast<size_t>(m->state_layout().total));
  ASSERT_TRUE(m->ReadSlot(0, state.data()).ok());
  ASSERT_EQ(ref_state.size(), state.size());
  const ModelConfig& cfg = m->config();
  const StateLayout& lay = m->state_layout();
  const int C = cfg.n_embd;
  double worst_state = 0;
  for (int l = 0; l < cfg.n_layer; ++l) {
    const float* ours = state.data() + l * lay.per_layer;
    const float* theirs = ref_state.data() + l * lay.per_layer;
    if (cfg.arch == Arch::kV7) {  // official: att_x_prev, wkv, ffn_x_prev
      const int64_t wkv = lay.per_layer - 2 * C;
      worst_state = std::max({worst_state, MaxAbsDiff(ours + lay.att_x_prev, theirs, C),
                              MaxAbsDiff(ours + lay.wkv, theirs + C, wkv),
                              MaxAbsDiff(ours + lay.ffn_x_prev, theirs + C + wkv, C)});
    } else {  // official: ffn_x_prev, att_x_prev, aa, bb, pp (aa, bb reach ~15: relative)
      worst_state = std::max({worst_state, MaxAbsDiff(ours + lay.ffn_x_prev, theirs, C),
                              MaxAbsDiff(ours + lay.att_x_prev, theirs + C, C)});
      for (int i = 0; i < 3 * C; ++i) {
        const double d = std::fabs(static_cast<double>(ours[lay.wkv + i]) - theirs[2 * C + i]);
        worst_state = std::max(worst_state, d / (1 + std::fabs(theirs[2 * C + i])));
      }
    }
  }
  EXPECT_LT(worst_state, 1e-4);
  std::printf("[ maxerr ] %s fp32: max state diff = %.3g\n", c.file.c_str(), worst_state);
}

// The same 32 tokens as one prompt (one Forward, logits of every row): the
// prefill path (a 32-row segment: the long-segment WKV kernel for RWKV-7)
// against the reference's step-by-step logits and final state.
TEST_P(CudaOfficialRefTest, Fp32PromptInOneForwardMatchesReference) {
  RWKV_REQUIRE_GPU();
  const RefCase& c = GetParam();
  RWKV_REQUIRE_TESTDATA("official_ref/" + c.file);
  auto m = LoadGpu(TestDataPath("official_ref/" + c.file), DType::kF32);
  ASSERT_NE(m, nullptr);
  const int V = m->config().vocab_size;
  const std::vector<float> ref = ReadF32File(TestDataPath("official_ref/" + c.stem + ".logits.f32"));
  ASSERT_EQ(ref.size(), 32u * V);
  const std::vector<float> got = Forward(*m, 0, std::vector<int32_t>(kRefTokens, kRefTokens + 32), true);
  ASSERT_EQ(got.size(), ref.size());
  double worst = 0;
  for (int t = 0; t < 32; ++t) {
    const double rel = MaxAbsDiff(got.data() + t * V, ref.data() + t * V, V) / Std(ref.data() + t * V, V);
    worst = std::max(worst, rel);
    EXPECT_LT(rel, 1e-4) << "token " << t;
  }
  const std::vector<float> ref_state = ReadF32File(TestDataPath("official_ref/" + c.stem + ".state.f32"));
  std::vector<float> state(static_cast<size_t>(m->state_layout().total));
  ASSERT_TRUE(m->ReadSlot(0, state.data()).ok());
  ASSERT_EQ(ref_state.size(), state.size());
  // Layouts differ per layer, but both hold the same multiset of values in
  // each layer's block: compare the wkv part, which the prefill path changes.
  const ModelConfig& cfg = m->config();
  const StateLayout& lay = m->state_layout();
  const int C = cfg.n_embd;
  double worst_state = 0;
  for (int l = 0; l < cfg.n_layer; ++l) {
    const float* ours = state.data() + l * lay.per_layer;
    const float* theirs = ref_state.data() + l * lay.per_layer;
    if (cfg.arch == Arch::kV7) {  // official: att_x_prev, wkv, ffn_x_prev
      worst_state = std::max(worst_state, MaxAbsDiff(ours + lay.wkv, theirs + C, lay.per_layer - 2 * C));
    } else {  // official: ffn_x_prev, att_x_prev, aa, bb, pp
      for (int i = 0; i < 3 * C; ++i) {
        const double d = std::fabs(static_cast<double>(ours[lay.wkv + i]) - theirs[2 * C + i]);
        worst_state = std::max(worst_state, d / (1 + std::fabs(theirs[2 * C + i])));
      }
    }
  }
  EXPECT_LT(worst_state, 1e-4);
  std::printf("[ maxerr ] %s fp32, 32-token prompt in one forward: logits %.3g of std, state %.3g\n",
              c.file.c_str(), worst, worst_state);
}

INSTANTIATE_TEST_SUITE_P(Models, CudaOfficialRefTest,
                         ::testing::Values(RefCase{"rwkv7_small_A.pth", "rwkv7_small_A"},
                                           RefCase{"rwkv4_small_A.pth", "rwkv4_small_A"}),
                         [](const auto& p) { return Sanitise(p.param.file); });

struct CppCase {
  std::string file, tag;
};

class CudaRwkvCppTest : public ::testing::TestWithParam<CppCase> {};

TEST_P(CudaRwkvCppTest, Fp32LogitsMatchRwkvCpp) {
  RWKV_REQUIRE_GPU();
  const CppCase& c = GetParam();
  RWKV_REQUIRE_TESTDATA("rwkv_cpp/" + c.file);
  auto m = LoadGpu(TestDataPath("rwkv_cpp/" + c.file), DType::kF32);
  ASSERT_NE(m, nullptr);
  const std::vector<float> got = StepLogits(*m, {34, 105, 110});
  const std::vector<float> per_token =
      ReadF32File(TestDataPath("rwkv_cpp/generated/rwkvcpp-logits-per-token-" + c.tag + ".f32"));
  const std::vector<float> expected = ReadF32File(TestDataPath("rwkv_cpp/expected-logits-" + c.tag + ".bin"));
  ASSERT_EQ(per_token.size(), 3u * 256);
  double worst = 0;
  for (int t = 0; t < 3; ++t) {
    const double d = MaxAbsDiff(got.data() + t * 256, per_token.data() + t * 256, 256);
    worst = std::max(worst, d);
    EXPECT_LT(d, 1e-4) << "token " << t;
  }
  EXPECT_LT(MaxAbsDiff(got.data() + 2 * 256, expected.data(), 256), 1e-4);
  std::printf("[ maxerr ] %s fp32: max |logit diff| vs rwkv.cpp = %.3g\n", c.file.c_str(), worst);
}

INSTANTIATE_TEST_SUITE_P(TinyModels, CudaRwkvCppTest,
                         ::testing::Values(CppCase{"tiny-rwkv-4v0-660K-FP32.bin", "4v0-660K"},
                                           CppCase{"tiny-rwkv-7v0-834K-FP32.bin", "7v0-834K"},
                                           CppCase{"tiny-rwkv-7v0-834K-FP16.bin", "7v0-834K"}),
                         [](const auto& p) { return Sanitise(p.param.file); });

// ---- (c) 16-bit weights: greedy tokens agree with the CPU backend -----------

class CudaGreedyTest : public ::testing::TestWithParam<std::tuple<std::string, DType>> {};

TEST_P(CudaGreedyTest, GreedyTokensAgreeWithCpuFor64Steps) {
  RWKV_REQUIRE_GPU();
  const std::string& file = std::get<0>(GetParam());
  const DType dtype = std::get<1>(GetParam());
  RWKV_REQUIRE_TESTDATA(file);
  auto cpu = LoadCpu(TestDataPath(file), 1);
  auto gpu = LoadGpu(TestDataPath(file), dtype, 1);
  ASSERT_NE(cpu, nullptr);
  ASSERT_NE(gpu, nullptr);
  const int V = cpu->config().vocab_size;
  const std::vector<int32_t> prompt =
      V == 256 ? std::vector<int32_t>{34, 105, 110} : std::vector<int32_t>(kRefTokens, kRefTokens + 8);
  // The prompt in one call: a multi-row segment through the whole model.
  std::vector<float> lc = Forward(*cpu, 0, prompt, false), lg = Forward(*gpu, 0, prompt, false);
  const double bound = dtype == DType::kF16 ? 0.05 : 0.25;
  double worst = 0;
  int ties = 0, agree = 0;
  for (int step = 0; step < 64; ++step) {
    ASSERT_EQ(lc.size(), static_cast<size_t>(V));
    ASSERT_EQ(lg.size(), static_cast<size_t>(V));
    const double diff = MaxAbsDiff(lg.data(), lc.data(), V);
    worst = std::max(worst, diff / Std(lc.data(), V));
    const int tc = Argmax(lc.data(), V), tg = Argmax(lg.data(), V);
    if (tc == tg) {
      ++agree;
    } else {
      ++ties;
      EXPECT_LE(lc[tc] - lc[tg], 2 * diff) << "step " << step << ": cpu token " << tc << ", gpu token " << tg
                                           << " is no near tie (|diff| " << diff << ")";
    }
    lc = Forward(*cpu, 0, {tc}, false);
    lg = Forward(*gpu, 0, {tc}, false);
  }
  EXPECT_LT(worst, bound);
  std::printf("[ maxerr ] greedy %s %s: %d/64 tokens agree, %d near ties, max |logit diff| / std = %.3g\n",
              file.c_str(), std::string(DTypeName(dtype)).c_str(), agree, ties, worst);
}

INSTANTIATE_TEST_SUITE_P(
    Models, CudaGreedyTest,
    ::testing::Combine(::testing::Values("rwkv_cpp/tiny-rwkv-4v0-660K-FP32.bin", "rwkv_cpp/tiny-rwkv-7v0-834K-FP32.bin",
                                         "rwkv_cpp/tiny-rwkv-7v0-834K-FP16.bin", "official_ref/rwkv7_small_A.pth",
                                         "official_ref/rwkv4_small_A.pth"),
                       ::testing::Values(DType::kF16, DType::kBF16)),
    [](const auto& p) {
      return Sanitise(std::get<0>(p.param)) + "_" + std::string(DTypeName(std::get<1>(p.param)));
    });

// ---- (d) batching and sequence mode ----------------------------------------

std::vector<int32_t> Tokens(int n, uint32_t seed, int vocab) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  uint32_t x = seed * 2654435761u + 1;
  for (auto& v : t) {
    x = x * 1664525u + 1013904223u;
    v = static_cast<int32_t>((x >> 8) % static_cast<uint32_t>(vocab));
  }
  return t;
}

// Parameters: model, weight dtype, batch-invariant mode.
class CudaBatchTest : public ::testing::TestWithParam<std::tuple<std::string, DType, bool>> {
 protected:
  // The bound on max |batched - solo| / std(logits) for this case (see the
  // file comment).
  double Tolerance() const {
    const DType dtype = std::get<1>(GetParam());
    if (dtype == DType::kF32) return 1e-4;
    if (std::get<2>(GetParam())) return 1e-3;
    return dtype == DType::kF16 ? 1e-2 : 8e-2;
  }
  std::string Tag() const {
    return std::get<0>(GetParam()) + " " + std::string(DTypeName(std::get<1>(GetParam()))) +
           (std::get<2>(GetParam()) ? " invariant" : "");
  }
};

TEST_P(CudaBatchTest, BatchedSessionsMatchSoloRuns) {
  RWKV_REQUIRE_GPU();
  const std::string& spec = std::get<0>(GetParam());
  const DType dtype = std::get<1>(GetParam());
  const bool invariant = std::get<2>(GetParam());
  constexpr int B = 5;
  const int32_t slot_of[B] = {4, 0, 5, 2, 1};  // out of order, slot 3 unused
  auto batched = LoadGpu(spec, dtype, 6, invariant);
  auto single = LoadGpu(spec, dtype, 1, invariant);
  ASSERT_NE(batched, nullptr);
  ASSERT_NE(single, nullptr);
  const int V = batched->config().vocab_size;
  std::vector<std::vector<int32_t>> streams;
  for (int b = 0; b < B; ++b) streams.push_back(Tokens(12 + b, 100 + b, V));
  // Each step advances every session with tokens left; session 3 takes two
  // tokens at a time (a mixed prefill/decode batch).
  std::vector<std::vector<float>> last(B);
  std::vector<size_t> pos(B, 0);
  for (;;) {
    std::vector<ForwardRequest> reqs;
    std::vector<int> who;
    for (int b = 0; b < B; ++b) {
      if (pos[b] >= streams[b].size()) continue;
      const size_t take = b == 3 ? std::min<size_t>(2, streams[b].size() - pos[b]) : 1;
      reqs.push_back({slot_of[b], absl::MakeConstSpan(streams[b]).subspan(pos[b], take), false});
      who.push_back(b);
      pos[b] += take;
    }
    if (reqs.empty()) break;
    std::vector<float> out;
    ASSERT_TRUE(batched->Forward(reqs, &out).ok());
    for (size_t i = 0; i < who.size(); ++i) last[who[i]].assign(out.begin() + i * V, out.begin() + (i + 1) * V);
  }
  const double tol = Tolerance();
  double worst = 0;
  for (int b = 0; b < B; ++b) {
    ASSERT_TRUE(single->ResetSlot(0).ok());
    const std::vector<float> solo = StepLogits(*single, streams[b], 0);
    const double rel = MaxAbsDiff(last[b].data(), solo.data() + solo.size() - V, V) / Std(last[b].data(), V);
    worst = std::max(worst, rel);
    EXPECT_LT(rel, tol) << "session " << b;
  }
  std::printf("[ maxerr ] batch vs solo %s: max |logit diff| / std = %.3g (bound %.3g)\n", Tag().c_str(), worst,
              tol);
}

TEST_P(CudaBatchTest, ManySessionsInOneStepMatchSoloRuns) {
  RWKV_REQUIRE_GPU();
  const std::string& spec = std::get<0>(GetParam());
  const DType dtype = std::get<1>(GetParam());
  const bool invariant = std::get<2>(GetParam());
  constexpr int B = 48;
  auto batched = LoadGpu(spec, dtype, B + 3, invariant);
  auto single = LoadGpu(spec, dtype, 1, invariant);
  ASSERT_NE(batched, nullptr);
  ASSERT_NE(single, nullptr);
  const int V = batched->config().vocab_size;
  // Two steps of 48 sessions in scattered slots; each session brings 1 to 3
  // tokens per step, so one batch mixes decode rows and short prefills (and
  // runs on cuBLAS, ~96 rows, while the solo runs take the small-batch path).
  std::vector<std::vector<int32_t>> first(B), second(B);
  std::vector<int32_t> slots(B);
  std::vector<ForwardRequest> reqs(B);
  for (int b = 0; b < B; ++b) {
    slots[b] = (b * 37 + 5) % (B + 3);
    first[b] = Tokens(1 + b % 3, 500 + b, V);
    second[b] = Tokens(1 + (b / 3) % 3, 900 + b, V);
  }
  std::vector<float> out;
  for (int b = 0; b < B; ++b) reqs[b] = {slots[b], first[b], false};
  ASSERT_TRUE(batched->Forward(reqs, &out).ok());
  for (int b = 0; b < B; ++b) reqs[b] = {slots[b], second[b], false};
  ASSERT_TRUE(batched->Forward(reqs, &out).ok());
  ASSERT_EQ(out.size(), static_cast<size_t>(B) * V);
  const double tol = Tolerance();
  double worst = 0;
  for (int b = 0; b < B; ++b) {
    ASSERT_TRUE(single->ResetSlot(0).ok());
    Forward(*single, 0, first[b], false);
    const std::vector<float> solo = Forward(*single, 0, second[b], false);
    const double rel = MaxAbsDiff(out.data() + static_cast<size_t>(b) * V, solo.data(), V) / Std(solo.data(), V);
    worst = std::max(worst, rel);
    EXPECT_LT(rel, tol) << "session " << b;
  }
  std::printf("[ maxerr ] 48 sessions vs solo %s: max |logit diff| / std = %.3g (bound %.3g)\n", Tag().c_str(),
              worst, tol);
}

// Greedy decoding: each session's tokens chosen solo (prompt of 3..19 tokens,
// then 24 greedy steps, one row per pass: the small-batch kernels) are fed to
// the same sessions decoding together in one batch (the prompts as one
// prefill batch: cuBLAS). At every step the batch's argmax must be the solo
// token, unless the solo's top two logits are within twice the step's
// measured |batched - solo| (a near tie, which rounding may flip); the
// logits stay within Tolerance().
TEST_P(CudaBatchTest, GreedyTokensInBatchMatchSoloRuns) {
  RWKV_REQUIRE_GPU();
  const std::string& spec = std::get<0>(GetParam());
  const DType dtype = std::get<1>(GetParam());
  const bool invariant = std::get<2>(GetParam());
  constexpr int B = 6, kSteps = 24;
  auto batched = LoadGpu(spec, dtype, B, invariant);
  auto single = LoadGpu(spec, dtype, 1, invariant);
  ASSERT_NE(batched, nullptr);
  ASSERT_NE(single, nullptr);
  const int V = batched->config().vocab_size;
  std::vector<std::vector<int32_t>> prompt(B), tokens(B);
  std::vector<std::vector<float>> solo_logits(B);  // kSteps + 1 rows: after the prompt, after each token
  for (int b = 0; b < B; ++b) {
    prompt[b] = Tokens(3 + 3 * b, 700 + b, V);
    ASSERT_TRUE(single->ResetSlot(0).ok());
    std::vector<float> l = Forward(*single, 0, prompt[b], false);
    for (int step = 0; step <= kSteps; ++step) {
      solo_logits[b].insert(solo_logits[b].end(), l.begin(), l.end());
      if (step == kSteps) break;
      tokens[b].push_back(Argmax(l.data(), V));
      l = Forward(*single, 0, {tokens[b].back()}, false);
    }
  }
  double worst = 0;
  int ties = 0;
  std::vector<ForwardRequest> reqs(B);
  std::vector<float> out;
  for (int b = 0; b < B; ++b) reqs[b] = {b, prompt[b], false};
  ASSERT_TRUE(batched->Forward(reqs, &out).ok());
  for (int step = 0; step <= kSteps; ++step) {
    for (int b = 0; b < B; ++b) {
      const float* got = out.data() + static_cast<size_t>(b) * V;
      const float* want = solo_logits[b].data() + static_cast<size_t>(step) * V;
      const double diff = MaxAbsDiff(got, want, V);
      worst = std::max(worst, diff / Std(want, V));
      if (step == kSteps) continue;
      const int tb = Argmax(got, V), ts = tokens[b][static_cast<size_t>(step)];
      if (tb != ts) {
        ++ties;
        EXPECT_LE(want[ts] - want[tb], 2 * diff) << "session " << b << " step " << step << ": batched token " << tb
                                                 << ", solo token " << ts << " is no near tie";
      }
    }
    if (step == kSteps) break;
    for (int b = 0; b < B; ++b) reqs[b] = {b, absl::MakeConstSpan(tokens[b]).subspan(static_cast<size_t>(step), 1), false};
    ASSERT_TRUE(batched->Forward(reqs, &out).ok());
  }
  EXPECT_LT(worst, Tolerance());
  std::printf("[ maxerr ] greedy batch vs solo %s: %d of %d tokens differ (near ties), max |logit diff| / std = "
              "%.3g (bound %.3g)\n",
              Tag().c_str(), ties, B * kSteps, worst, Tolerance());
}

INSTANTIATE_TEST_SUITE_P(Synthetic, CudaBatchTest,
                         ::testing::Combine(::testing::Values("synthetic:tiny", "synthetic:v4-tiny"),
                                            ::testing::Values(DType::kF32, DType::kF16, DType::kBF16),
                                            ::testing::Bool()),
                         [](const auto& p) {
                           return Sanitise(std::get<0>(p.param)) + "_" +
                                  std::string(DTypeName(std::get<1>(p.param))) +
                                  (std::get<2>(p.param) ? "_invariant" : "");
                         });

class CudaSequenceTest : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaSequenceTest, Fp32SequenceModeAndLongPromptsMatchCpu) {
  RWKV_REQUIRE_GPU();
  auto gpu = LoadGpu(GetParam(), DType::kF32, 2);
  auto cpu = LoadCpu(GetParam(), 2);
  ASSERT_NE(gpu, nullptr);
  ASSERT_NE(cpu, nullptr);
  const int V = gpu->config().vocab_size;
  // 40 tokens in one segment, logits after each, against the CPU.
  const auto tokens = Tokens(40, 7, V);
  const std::vector<float> g = Forward(*gpu, 1, tokens, true), c = Forward(*cpu, 1, tokens, true);
  ASSERT_EQ(g.size(), c.size());
  double worst = 0;
  for (size_t t = 0; t < tokens.size(); ++t) {
    worst = std::max(worst, MaxAbsDiff(g.data() + t * V, c.data() + t * V, V) / Std(c.data() + t * V, V));
  }
  EXPECT_LT(worst, 1e-4);
  // And stepping on the GPU gives the same logits as its sequence mode.
  const std::vector<float> stepped = StepLogits(*gpu, tokens, 0);
  const double step_vs_seq = MaxAbsDiff(stepped.data(), g.data(), g.size()) / Std(g.data(), V);
  EXPECT_LT(step_vs_seq, 1e-4);
  // A prompt longer than one pass (1024 rows) is split across passes.
  ASSERT_TRUE(gpu->ResetSlot(0).ok());
  ASSERT_TRUE(cpu->ResetSlot(0).ok());
  const auto long_prompt = Tokens(1100, 3, V);
  const std::vector<float> gl = Forward(*gpu, 0, long_prompt, false), cl = Forward(*cpu, 0, long_prompt, false);
  const double long_rel = MaxAbsDiff(gl.data(), cl.data(), V) / Std(cl.data(), V);
  EXPECT_LT(long_rel, 1e-4);
  std::printf("[ maxerr ] %s fp32 vs cpu: 40-token sequence %.3g, step vs sequence %.3g, 1100-token prompt %.3g\n",
              GetParam().c_str(), worst, step_vs_seq, long_rel);
}

// Every state value of slots 0..n-1 of `got` within 1e-4 of the largest in
// `want`'s slot (at least 1).
void ExpectSlotsClose(const Model& want, const Model& got, int n) {
  for (int slot = 0; slot < n; ++slot) {
    std::vector<float> a(static_cast<size_t>(want.state_layout().total)), b(a.size());
    ASSERT_TRUE(want.ReadSlot(slot, a.data()).ok());
    ASSERT_TRUE(got.ReadSlot(slot, b.data()).ok());
    double diff = 0, scale = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      diff = std::max(diff, static_cast<double>(std::fabs(a[i] - b[i])));
      scale = std::max(scale, static_cast<double>(std::fabs(a[i])));
    }
    EXPECT_LE(diff, 1e-4 * std::max(scale, 1.0)) << "slot " << slot;
  }
}

// Padded passes (CudaBackendOptions::pass_padding, graphs on) against eager
// unpadded ones: rounds of the same counts (rows, sessions, logit rows,
// longest prompt, long-kernel segments) in different arrangements, so that a
// graph recorded for one arrangement is replayed for the others. A replay
// that kept anything of the recorded arrangement (segment offsets, logit
// rows, slots) would give another session's logits or corrupt a state.
TEST_P(CudaSequenceTest, PaddedGraphReplaysMatchEagerUnpadded) {
  RWKV_REQUIRE_GPU();
  constexpr int B = 24;
  auto make = [&](bool padded) {
    auto b = MakeCudaBackend({.device = 0,
                              .weight_dtype = DType::kF32,
                              .embedding_dtype = DType::kF32,
                              .cuda_graphs = padded,
                              .pass_padding = padded});
    EXPECT_TRUE(b.ok()) << b.status();
    return b.ok() ? LoadOn(GetParam(), *std::move(b), B) : nullptr;
  };
  auto padded = make(true);
  auto eager = make(false);
  ASSERT_NE(padded, nullptr);
  ASSERT_NE(eager, nullptr);
  const int V = padded->config().vocab_size;
  double worst = 0;
  for (int round = 0; round < 6; ++round) {
    // 17 decoding sessions (1 row) and prompts of 9, 12, 3 and 2 rows among
    // them, in a different order and in different slots every round: 43
    // rows (48 padded), 21 segments and the padding one (32).
    std::vector<int> lengths(17, 1);
    lengths.insert(lengths.end(), {9, 12, 3, 2});
    std::rotate(lengths.begin(), lengths.begin() + (round * 5) % lengths.size(), lengths.end());
    std::vector<std::vector<int32_t>> tokens;
    std::vector<ForwardRequest> reqs;
    for (size_t i = 0; i < lengths.size(); ++i) {
      tokens.push_back(Tokens(lengths[i], 1000 * round + static_cast<uint32_t>(i), V));
    }
    for (size_t i = 0; i < lengths.size(); ++i) {
      // The 9-token prompt wants every row's logits: 29 logit rows (32).
      reqs.push_back({static_cast<int32_t>((i * 7 + round * 3) % B), tokens[i], lengths[i] == 9});
    }
    std::vector<float> want, got;
    ASSERT_TRUE(eager->Forward(reqs, &want).ok());
    ASSERT_TRUE(padded->Forward(reqs, &got).ok());
    ASSERT_EQ(got.size(), want.size());
    for (size_t r = 0; r < want.size() / V; ++r) {
      const double rel = MaxAbsDiff(got.data() + r * V, want.data() + r * V, V) / Std(want.data() + r * V, V);
      worst = std::max(worst, rel);
      EXPECT_LT(rel, 1e-4) << "round " << round << " logit row " << r;
    }
  }
  ExpectSlotsClose(*eager, *padded, B);
  std::printf("[ maxerr ] padded graph replays vs eager unpadded %s: max |logit diff| / std = %.3g\n",
              GetParam().c_str(), worst);
}

// Model::WarmUpPasses records every padded decode shape up to the batch as a
// graph; decode steps of any batch size up to it then replay (nothing more is
// recorded) and give what eager unpadded passes give.
TEST_P(CudaSequenceTest, WarmedUpDecodeShapesReplayAndMatchEager) {
  RWKV_REQUIRE_GPU();
  constexpr int B = 40;
  auto created = CudaBackend::Create({.device = 0,
                                      .weight_dtype = DType::kF32,
                                      .embedding_dtype = DType::kF32,
                                      .cuda_graphs = true,
                                      .pass_padding = true});
  ASSERT_TRUE(created.ok()) << created.status();
  CudaBackend* cuda = created->get();
  if (!cuda->graphs_enabled()) GTEST_SKIP() << "CUDA graphs are off (RWKV_CUDA_GRAPHS=0): nothing is recorded";
  auto warm = LoadOn(GetParam(), *std::move(created), B);
  auto eager_backend = MakeCudaBackend({.device = 0,
                                        .weight_dtype = DType::kF32,
                                        .embedding_dtype = DType::kF32,
                                        .cuda_graphs = false,
                                        .pass_padding = false});
  ASSERT_TRUE(eager_backend.ok()) << eager_backend.status();
  auto eager = LoadOn(GetParam(), *std::move(eager_backend), B);
  ASSERT_NE(warm, nullptr);
  ASSERT_NE(eager, nullptr);
  auto shapes = warm->WarmUpPasses(B, 64);
  ASSERT_TRUE(shapes.ok()) << shapes.status();
  EXPECT_EQ(*shapes, 18);  // 1..16, then 32 and 48 (granule 16)
  EXPECT_EQ(cuda->graphs_captured(), *shapes);
  const int V = warm->config().vocab_size;
  int64_t replays = cuda->graph_replays();
  for (int n : {1, 5, 16, 17, 31, 32, 40, 33}) {
    std::vector<std::vector<int32_t>> tokens;
    std::vector<ForwardRequest> reqs;
    for (int i = 0; i < n; ++i) tokens.push_back(Tokens(1, 100 * n + static_cast<uint32_t>(i), V));
    for (int i = 0; i < n; ++i) reqs.push_back({(i * 3 + n) % B, tokens[static_cast<size_t>(i)], false});
    std::vector<float> want, got;
    ASSERT_TRUE(eager->Forward(reqs, &want).ok());
    ASSERT_TRUE(warm->Forward(reqs, &got).ok());
    ASSERT_EQ(got.size(), want.size());
    for (int r = 0; r < n; ++r) {
      const double rel = MaxAbsDiff(got.data() + static_cast<size_t>(r) * V, want.data() + static_cast<size_t>(r) * V, V) /
                         Std(want.data() + static_cast<size_t>(r) * V, V);
      EXPECT_LT(rel, 1e-4) << n << " sessions, row " << r;
    }
    EXPECT_EQ(cuda->graphs_captured(), *shapes) << n << " sessions: a shape was recorded, not replayed";
    EXPECT_EQ(cuda->graph_replays(), ++replays) << n << " sessions";
  }
  ExpectSlotsClose(*eager, *warm, B);
}

INSTANTIATE_TEST_SUITE_P(Synthetic, CudaSequenceTest, ::testing::Values("synthetic:tiny", "synthetic:v4-tiny"),
                         [](const auto& p) { return Sanitise(p.param); });

// Prefill (issue 5): a T-token prompt in one Forward (passes of at most 1024
// rows, the state carried between them) against T single steps on the GPU
// and against the CPU backend's prefill: the last logits within 1e-4 of
// their std and every state value within 1e-4 (1 + |s|). T = 1 (decode
// shape), 7 (below the long-segment kernel's threshold), 8 and 64 (its
// staging chunk of 16 tokens at the end and inside), 1000, 1024 (exactly one
// pass), 1025 (one row into a second pass), 4096 (four full passes).
class CudaPrefillTest : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaPrefillTest, PromptInOneForwardMatchesSingleStepsAndCpu) {
  RWKV_REQUIRE_GPU();
  auto gpu = LoadGpu(GetParam(), DType::kF32, 2);
  auto cpu = LoadCpu(GetParam(), 1);
  ASSERT_NE(gpu, nullptr);
  ASSERT_NE(cpu, nullptr);
  const int V = gpu->config().vocab_size;
  const size_t S = static_cast<size_t>(gpu->state_layout().total);
  for (int T : {1, 7, 8, 64, 1000, 1024, 1025, 4096}) {
    for (int slot : {0, 1}) ASSERT_TRUE(gpu->ResetSlot(slot).ok());
    ASSERT_TRUE(cpu->ResetSlot(0).ok());
    const auto prompt = Tokens(T, 11 + static_cast<uint32_t>(T), V);
    const std::vector<float> pre = Forward(*gpu, 0, prompt, false);
    std::vector<float> step;
    for (int32_t t : prompt) step = Forward(*gpu, 1, {t}, false);
    const std::vector<float> ref = Forward(*cpu, 0, prompt, false);
    ASSERT_EQ(pre.size(), static_cast<size_t>(V));
    ASSERT_EQ(step.size(), pre.size());
    ASSERT_EQ(ref.size(), pre.size());
    const double std_ref = Std(ref.data(), V);
    const double vs_step = MaxAbsDiff(pre.data(), step.data(), V) / std_ref;
    const double vs_cpu = MaxAbsDiff(pre.data(), ref.data(), V) / std_ref;
    std::vector<float> s_pre(S), s_step(S), s_cpu(S);
    ASSERT_TRUE(gpu->ReadSlot(0, s_pre.data()).ok());
    ASSERT_TRUE(gpu->ReadSlot(1, s_step.data()).ok());
    ASSERT_TRUE(cpu->ReadSlot(0, s_cpu.data()).ok());
    double st_step = 0, st_cpu = 0;
    for (size_t i = 0; i < S; ++i) {
      const double scale = 1 + std::fabs(static_cast<double>(s_cpu[i]));
      const double a = std::fabs(static_cast<double>(s_pre[i]) - s_step[i]) / scale;
      const double b = std::fabs(static_cast<double>(s_pre[i]) - s_cpu[i]) / scale;
      st_step = std::isnan(a) ? INFINITY : std::max(st_step, a);
      st_cpu = std::isnan(b) ? INFINITY : std::max(st_cpu, b);
    }
    EXPECT_LT(vs_step, 1e-4) << "T=" << T;
    EXPECT_LT(vs_cpu, 1e-4) << "T=" << T;
    EXPECT_LT(st_step, 1e-4) << "T=" << T;
    EXPECT_LT(st_cpu, 1e-4) << "T=" << T;
    std::printf("[ maxerr ] %s prefill T=%d: logits vs steps %.3g, vs cpu %.3g of std; state vs steps %.3g, "
                "vs cpu %.3g\n",
                GetParam().c_str(), T, vs_step, vs_cpu, st_step, st_cpu);
  }
}

// The same with fp16 weights: a prompt's passes (above the small-batch row
// counts) take 16-bit inputs written by their producers (the mixes, the
// RWKV-7 output stage, the FFN hidden: MatMulInputType, FfnHiddenType),
// while single steps take fp32 inputs on the small-batch kernels. The last
// logits within 1e-2 of their std and the state within 1e-2 (1 + |s|): the
// fp16 bound of the batch tests.
TEST_P(CudaPrefillTest, F16WeightsPromptInOneForwardMatchesSingleSteps) {
  RWKV_REQUIRE_GPU();
  auto gpu = LoadGpu(GetParam(), DType::kF16, 2);
  ASSERT_NE(gpu, nullptr);
  // Passes of 64 rows and more take the 16-bit inputs and hidden (T = 7 the
  // fp32 small-batch kernels), unless an environment override moved the
  // thresholds.
  ASSERT_EQ(gpu->backend().MatMulInputType(64), DType::kF16);
  ASSERT_EQ(gpu->backend().FfnHiddenType(64), DType::kF16);
  const int V = gpu->config().vocab_size;
  const size_t S = static_cast<size_t>(gpu->state_layout().total);
  for (int T : {7, 64, 1000, 4096}) {
    for (int slot : {0, 1}) ASSERT_TRUE(gpu->ResetSlot(slot).ok());
    const auto prompt = Tokens(T, 31 + static_cast<uint32_t>(T), V);
    const std::vector<float> pre = Forward(*gpu, 0, prompt, false);
    std::vector<float> step;
    for (int32_t t : prompt) step = Forward(*gpu, 1, {t}, false);
    ASSERT_EQ(pre.size(), static_cast<size_t>(V));
    ASSERT_EQ(step.size(), pre.size());
    const double vs_step = MaxAbsDiff(pre.data(), step.data(), V) / Std(step.data(), V);
    std::vector<float> s_pre(S), s_step(S);
    ASSERT_TRUE(gpu->ReadSlot(0, s_pre.data()).ok());
    ASSERT_TRUE(gpu->ReadSlot(1, s_step.data()).ok());
    double st_step = 0;
    for (size_t i = 0; i < S; ++i) {
      const double a = std::fabs(static_cast<double>(s_pre[i]) - s_step[i]) / (1 + std::fabs(s_step[i]));
      st_step = std::isnan(a) ? INFINITY : std::max(st_step, a);
    }
    EXPECT_LT(vs_step, 1e-2) << "T=" << T;
    EXPECT_LT(st_step, 1e-2) << "T=" << T;
    std::printf("[ maxerr ] %s f16 prefill T=%d: logits vs steps %.3g of std; state vs steps %.3g\n",
                GetParam().c_str(), T, vs_step, st_step);
  }
}

INSTANTIATE_TEST_SUITE_P(Synthetic, CudaPrefillTest, ::testing::Values("synthetic:tiny", "synthetic:v4-tiny"),
                         [](const auto& p) { return Sanitise(p.param); });

// ---- released dimensions (C=768, 12 heads, vocab 65536) --------------------
//
// Synthetic RWKV-7 weights make the model ill-conditioned: two fp32 CPU
// products (packed vs OpenBLAS) already differ by ~1.5e-4 * std in the
// logits, and rounding the matrix inputs and the embedding to fp16 moves
// them by ~0.7 * std (measured on the CPU with RoundingCpuBackend), mostly
// through the per-head GroupNorm of a nearly rank-one first-token y. So here
// the GPU is held to the CPU's own spread for the same arithmetic: fp32
// within 10x the packed-vs-OpenBLAS difference, fp16 within 2x the
// difference that fp16 rounding makes on the CPU.

// The CPU backend with the GPU's fp16/bf16 roundings: matrices and the
// embedding stored rounded, and each matrix product's input rounded.
class RoundingCpuBackend final : public Backend {
 public:
  explicit RoundingCpuBackend(DType t) : cpu_(2), t_(t) {}
  std::string name() const override { return "cpu-rounding"; }
  absl::StatusOr<float*> Alloc(size_t n) override { return cpu_.Alloc(n); }
  void Free(float* p) override { cpu_.Free(p); }
  absl::Status Upload(const float* h, float* d, size_t n) override { return cpu_.Upload(h, d, n); }
  absl::Status Download(const float* s, float* h, size_t n) override { return cpu_.Download(s, h, n); }
  absl::Status CopyFloats(const float* s, float* d, size_t n) override { return cpu_.CopyFloats(s, d, n); }
  absl::StatusOr<Matrix> UploadMatrix(const float* h, int32_t r, int32_t c) override {
    return cpu_.UploadMatrix(Round(h, static_cast<size_t>(r) * c).data(), r, c);
  }
  absl::StatusOr<Matrix> UploadEmbedding(const float* h, int32_t r, int32_t c) override {
    return cpu_.UploadEmbedding(Round(h, static_cast<size_t>(r) * c).data(), r, c);
  }
  absl::Status Sync() override { return cpu_.Sync(); }
  void MatMul(const float* x, int n, const Matrix& w, float* y, bool acc) override {
    cpu_.MatMul(Round(x, static_cast<size_t>(n) * w.cols).data(), n, w, y, acc);
  }
  void Embedding(const Matrix& e, const int32_t* t, int n, float* x) override { cpu_.Embedding(e, t, n, x); }
  void LayerNorm(const float* x, int n, int C, const float* w, const float* b, float* y) override {
    cpu_.LayerNorm(x, n, C, w, b, y);
  }
  void GatherRows(const float* x, const int32_t* r, int n, int C, float* o) override { cpu_.GatherRows(x, r, n, C, o); }
  void TokenShift(const float* xx, const Segment* s, int ns, int C, StateRef p, float* d) override {
    cpu_.TokenShift(xx, s, ns, C, p, d);
  }
  void Mix(const float* xx, const float* d, int n, int C, const float* const* m, float* const* o, int k) override {
    cpu_.Mix(xx, d, n, C, m, o, k);
  }
  void Sigmoid(float* x, int64_t n) override { cpu_.Sigmoid(x, n); }
  void Tanh(float* x, int64_t n) override { cpu_.Tanh(x, n); }
  void ReluSquare(float* x, int64_t n) override { cpu_.ReluSquare(x, n); }
  void Mul(float* x, const float* a, int64_t n) override { cpu_.Mul(x, a, n); }
  void MulAdd(float* x, const float* a, const float* b, int64_t n) override { cpu_.MulAdd(x, a, b, n); }
  void SigmoidBias(float* x, const float* b, int n, int C) override { cpu_.SigmoidBias(x, b, n, C); }
  void V7Decay(float* w, const float* w0, int n, int C) override { cpu_.V7Decay(w, w0, n, C); }
  void V7KeyPrep(float* k, float* kk, const float* a, const float* k_k, const float* k_a, int n, int C,
                 int N) override {
    cpu_.V7KeyPrep(k, kk, a, k_k, k_a, n, C, N);
  }
  void V7ValueResidual(float* v, const float* vf, const float* g, const float* v0, int n, int C) override {
    cpu_.V7ValueResidual(v, vf, g, v0, n, C);
  }
  void Wkv7(const Segment* s, int ns, int C, int N, StateRef st, const float* r, const float* w, const float* k,
            const float* v, const float* kk, const float* a, float* y) override {
    cpu_.Wkv7(s, ns, C, N, st, r, w, k, v, kk, a, y);
  }
  void V7Output(float* y, const float* r, const float* k, const float* v, const float* g, const float* r_k,
                const float* lnw, const float* lnb, int n, int C, int N, float* out, DType out_type) override {
    cpu_.V7Output(y, r, k, v, g, r_k, lnw, lnb, n, C, N, out, out_type);
  }
  void Wkv4(const Segment* s, int ns, int C, StateRef st, const float* u, const float* w, const float* k,
            const float* v, float* y) override {
    cpu_.Wkv4(s, ns, C, st, u, w, k, v, y);
  }

 private:
  std::vector<float> Round(const float* p, size_t n) const {
    std::vector<uint16_t> tmp(n);
    std::vector<float> out(n);
    ConvertFromF32(p, t_, tmp.data(), n);
    ConvertToF32(t_, tmp.data(), out.data(), n);
    return out;
  }
  CpuBackend cpu_;
  DType t_;
};

// Max over rows of max |a - b| / std(b), rows of V.
double MaxRelDiff(const std::vector<float>& a, const std::vector<float>& b, int V) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0;
  for (size_t t = 0; t + V <= std::min(a.size(), b.size()); t += V) {
    worst = std::max(worst, MaxAbsDiff(a.data() + t, b.data() + t, V) / Std(b.data() + t, V));
  }
  return worst;
}

class CudaRealDimsTest : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaRealDimsTest, SyntheticPoint1BWithinTheCpusOwnSpread) {
  RWKV_REQUIRE_GPU();
  const std::string& spec = GetParam();
  auto run = [&](std::unique_ptr<Backend> b) {
    auto m = LoadOn(spec, std::move(b), 1);
    EXPECT_NE(m, nullptr);
    return m == nullptr ? std::vector<float>() : Forward(*m, 0, Tokens(16, 11, m->config().vocab_size), true);
  };
  const std::vector<float> cpu = run(std::make_unique<CpuBackend>(2));
  const std::vector<float> blas = run(std::make_unique<CpuBackend>(2, CpuGemm::kOpenBlas));
  const std::vector<float> emu16 = run(std::make_unique<RoundingCpuBackend>(DType::kF16));
  auto g32 = MakeCudaBackend({.device = 0, .weight_dtype = DType::kF32, .embedding_dtype = DType::kF32});
  auto g16 = MakeCudaBackend({.device = 0, .weight_dtype = DType::kF16, .embedding_dtype = DType::kF16});
  ASSERT_TRUE(g32.ok() && g16.ok());
  const std::vector<float> gpu32 = run(*std::move(g32)), gpu16 = run(*std::move(g16));
  const int V = 65536;
  ASSERT_EQ(cpu.size(), 16u * V);
  const double spread32 = MaxRelDiff(blas, cpu, V), spread16 = MaxRelDiff(emu16, cpu, V);
  const double worst32 = MaxRelDiff(gpu32, cpu, V), worst16 = MaxRelDiff(gpu16, cpu, V);
  EXPECT_LT(worst32, std::max(1e-4, 10 * spread32));
  EXPECT_LT(worst16, 2 * spread16);
  int agree = 0;
  for (size_t t = 0; t < 16; ++t) {
    const float* ct = cpu.data() + t * V;
    const int tc = Argmax(ct, V), th = Argmax(gpu16.data() + t * V, V);
    agree += tc == th;
    if (tc != th) {
      EXPECT_LE(ct[tc] - ct[th], 2 * MaxAbsDiff(gpu16.data() + t * V, ct, V)) << "token " << t << ": no near tie";
    }
  }
  std::printf("[ maxerr ] %s vs cpu, max |logit diff| / std: gpu fp32 %.3g (cpu openblas %.3g), gpu fp16 %.3g "
              "(cpu fp16-rounding %.3g); fp16 argmax agrees %d/16\n",
              spec.c_str(), worst32, spread32, worst16, spread16, agree);
}

INSTANTIATE_TEST_SUITE_P(Synthetic, CudaRealDimsTest, ::testing::Values("synthetic:0.1b", "synthetic:v4-0.1b"),
                         [](const auto& p) { return Sanitise(p.param); });

// Informational, not a benchmark (that tool is still to come): wall time of
// an eager decode step (no graphs; Forward includes the logits download).
// Run with --gtest_also_run_disabled_tests --gtest_filter='*DecodeStepTime*'.
TEST(CudaTimingTest, DISABLED_DecodeStepTime) {
  RWKV_REQUIRE_GPU();
  auto m = LoadGpu("synthetic:0.1b", DType::kF16, 64);
  ASSERT_NE(m, nullptr);
  const int V = m->config().vocab_size;
  for (int B : {1, 8, 64}) {
    std::vector<std::vector<int32_t>> tok(static_cast<size_t>(B));
    std::vector<ForwardRequest> reqs(static_cast<size_t>(B));
    for (int b = 0; b < B; ++b) {
      tok[b] = Tokens(1, 300 + b, V);
      reqs[b] = {b, tok[b], false};
    }
    std::vector<float> out;
    for (int i = 0; i < 5; ++i) ASSERT_TRUE(m->Forward(reqs, &out).ok());
    const auto t0 = std::chrono::steady_clock::now();
    constexpr int kSteps = 50;
    for (int i = 0; i < kSteps; ++i) ASSERT_TRUE(m->Forward(reqs, &out).ok());
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / kSteps;
    std::printf("[ timing ] synthetic:0.1b fp16 eager decode B=%d: %.3f ms/step\n", B, ms);
  }
}

}  // namespace
}  // namespace rwkv
