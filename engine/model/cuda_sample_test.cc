// The CUDA sampler (kernels/sample.cu through CudaBackend::SampleRows)
// against the host sampler, on random logits over many parameter
// combinations. Without a GPU every test skips, naming the reason.
//
// The reference for a row is Sampler::SampleSpecOnHost with the very spec the
// GPU got (same adjustments, same u), which is Sampler::Sample token for
// token (sampler_device_spec_test.cc). What must hold:
//  - greedy (and the -inf / +inf / NaN fallbacks): the same token, always;
//  - stochastic: the same token for the same u on >= 99% of rows (only float
//    summation order differs: the GPU sums probabilities in fixed point, the
//    CPU in float lanes and doubles, so a u within ~1e-7 of a boundary may
//    pick the neighbour), and every GPU pick inside the CPU's kept set
//    (top_k, top_p, min_p as the CPU applies them);
//  - used_draw as the CPU (false only where every adjusted logit is -inf);
//  - logprob = log_softmax(raw row)[token] within 1e-4;
//  - the logits are not modified.
// Every check prints what it measured.
#include <algorithm>
#include <chrono>
#include <cstring>
#include <cmath>
#include <cstdio>
#include <limits>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <cuda_runtime_api.h>

#include "engine/model/cuda_backend.h"
#include "engine/sampler/sampler.h"
#include "engine/sampler/sampler_test_util.h"
#include "engine/sampler/sampling_ops.h"
#include "gtest/gtest.h"
#include "kernels/sample.h"

namespace rwkv {
namespace {

using ::rwkv::testing::ApplySpecAdjustments;
using ::rwkv::testing::MakeSampler;
using ::rwkv::testing::RandomLogits;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

#define RWKV_REQUIRE_GPU()                                                                         \
  do {                                                                                             \
    if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device: " << MakeCudaBackend().status(); \
  } while (0)

struct Combo {
  const char* name;
  float temperature;
  int32_t top_k;
  float top_p;
  float min_p;
  bool penalties;  // presence/frequency/repetition on a few generated tokens, plus biases and bans
};

const Combo kCombos[] = {
    {"greedy", 0.0f, 0, 1.0f, 0.0f, false},
    {"greedy+penalties", 0.0f, 0, 1.0f, 0.0f, true},
    {"full", 1.0f, 0, 1.0f, 0.0f, false},
    {"full+penalties", 0.9f, 0, 1.0f, 0.0f, true},
    {"min_p", 0.8f, 0, 1.0f, 0.05f, false},
    {"top_k=1", 1.0f, 1, 1.0f, 0.0f, false},
    {"top_k=50", 1.0f, 50, 1.0f, 0.0f, false},
    {"top_k=256", 1.0f, 256, 1.0f, 0.0f, false},  // the most the one-block path lists (kernels/sample.cu kListMax)
    {"top_k=257,top_p=0.95", 1.0f, 257, 0.95f, 0.0f, false},  // one more: the row passes
    {"top_k=50,top_p=0.9,min_p", 1.2f, 50, 0.9f, 0.02f, true},
    {"top_k=3000", 1.5f, 3000, 1.0f, 0.0f, false},
    {"top_k=3000,top_p=0.95", 1.0f, 3000, 0.95f, 0.0f, true},
    {"top_p=0.9", 1.0f, 0, 0.9f, 0.0f, false},
    {"top_p=0.9+penalties", 1.0f, 0, 0.9f, 0.0f, true},
    {"top_p=0.5,T=0.5", 0.5f, 0, 0.5f, 0.0f, false},
    {"top_p=0.3", 1.0f, 0, 0.3f, 0.0f, false},
    {"top_p=0.99,min_p", 1.0f, 0, 0.99f, 0.01f, false},
    {"top_p=0.999,T=2.5", 2.5f, 0, 0.999f, 0.0f, false},
    {"T=0.01", 0.01f, 0, 1.0f, 0.0f, false},
    {"T=100", 100.0f, 0, 1.0f, 0.0f, false},
    {"min_p=1", 1.0f, 0, 1.0f, 1.0f, false},
};

const Combo& ComboNamed(const std::string& name) {
  for (const Combo& c : kCombos) {
    if (name == c.name) return c;
  }
  ADD_FAILURE() << "no combination named " << name;
  return kCombos[0];
}

SamplingParams ParamsOf(const Combo& c, uint64_t seed, int32_t vocab) {
  SamplingParams p;
  p.temperature = c.temperature;
  p.top_k = std::min(c.top_k, vocab);  // k = vocab: the top_k path is off
  p.top_p = c.top_p;
  p.min_p = c.min_p;
  p.seed = seed;
  if (c.penalties) {
    p.presence_penalty = 0.4f;
    p.frequency_penalty = 0.3f;
    p.repetition_penalty = 1.3f;
    p.penalty_decay = 0.98f;
    p.logit_bias = {{1, 2.0f}, {2, -100.0f}, {3, 5.0f}, {40, -1.5f}};
  }
  return p;
}

// The ids the CPU could pick for this spec and row (probability > 0 after
// its filters), computed from the definitions.
std::set<int32_t> CpuKeptSet(const SampleSpec& spec, const std::vector<float>& raw) {
  const std::vector<float> x = ApplySpecAdjustments(spec, raw);
  const int32_t n = static_cast<int32_t>(x.size());
  const float max = *std::max_element(x.begin(), x.end());
  std::set<int32_t> kept;
  if (max == -kInf || spec.temperature == 0.0f || max == kInf) return kept;  // deterministic: not used
  auto prob = [&](float v) { return sampling_internal::ExpNonPositive((v - max) * spec.inv_temperature); };
  std::vector<sampling_internal::Cand> order(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) order[i] = {x[i], i};
  std::sort(order.begin(), order.end(), sampling_internal::Better);
  if (spec.top_k > 0 && spec.top_k < n) {
    order.resize(static_cast<size_t>(spec.top_k));
    double z = 0;
    for (auto& c : order) z += prob(c.value);
    const double target = spec.top_p < 1.0f ? spec.top_p * z * (1 - 1e-6) : INFINITY;
    double cum = 0;
    for (auto& c : order) {
      const float p = prob(c.value);
      if (p < spec.min_p) break;
      if (p > 0) kept.insert(c.id);
      cum += p;
      if (cum >= target) break;
    }
    return kept;
  }
  if (spec.top_p < 1.0f) {
    sampling_internal::Filters f{max, spec.inv_temperature, spec.top_k, spec.top_p, spec.min_p};
    for (int32_t id : sampling_internal::TopPKeptIds(x, f)) kept.insert(id);
    return kept;
  }
  for (int32_t i = 0; i < n; ++i) {
    const float p = prob(x[i]);
    if (p > 0 && p >= spec.min_p) kept.insert(i);
  }
  return kept;
}

class CudaSampleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (CudaDeviceCount() == 0) return;
    auto b = CudaBackend::Create({});
    ASSERT_TRUE(b.ok()) << b.status();
    backend_ = *std::move(b);
  }

  // Uploads rows, samples rows[i] with specs[i] on the GPU.
  std::vector<SampledToken> Gpu(const std::vector<std::vector<float>>& logits, const std::vector<int32_t>& rows,
                                const std::vector<SampleSpec>& specs) {
    const int V = static_cast<int>(logits[0].size());
    std::vector<float> flat;
    for (const auto& r : logits) flat.insert(flat.end(), r.begin(), r.end());
    auto dev = backend_->Alloc(flat.size());
    EXPECT_TRUE(dev.ok()) << dev.status();
    if (!dev.ok()) return {};
    EXPECT_TRUE(backend_->Upload(flat.data(), *dev, flat.size()).ok());
    std::vector<SampledToken> out(rows.size());
    absl::Status st = backend_->SampleRows(*dev, V, rows.data(), specs.data(), static_cast<int>(rows.size()),
                                           out.data());
    EXPECT_TRUE(st.ok()) << st;
    std::vector<float> after(flat.size());
    EXPECT_TRUE(backend_->Download(*dev, after.data(), after.size()).ok());
    // Not modified (NaN positions compared as NaN).
    size_t changed = 0;
    for (size_t i = 0; i < flat.size(); ++i) {
      changed += !(after[i] == flat[i] || (std::isnan(after[i]) && std::isnan(flat[i])));
    }
    EXPECT_EQ(changed, 0u) << "the sampler wrote into the logits";
    backend_->Free(*dev);
    return out;
  }

  void RunCombos(int vocab, int rows_per_combo);

  std::unique_ptr<CudaBackend> backend_;
};

// Runs every combination on `rows_per_combo` random rows of `vocab` logits.
void CudaSampleTest::RunCombos(int vocab, int rows_per_combo) {
  int64_t stochastic = 0, same = 0;
  for (size_t ci = 0; ci < std::size(kCombos); ++ci) {
    const Combo& c = kCombos[ci];
    std::vector<std::vector<float>> logits;
    std::vector<SampleSpec> specs;
    std::vector<int32_t> rows;
    for (int r = 0; r < rows_per_combo; ++r) {
      // Scales from flat to peaked; rows reach the kernel in reverse order.
      logits.push_back(RandomLogits(vocab, 7919 * ci + r, 1.0 + (r % 7) * 1.5));
      Sampler s = MakeSampler(ParamsOf(c, 1000 * ci + r, vocab), vocab);
      if (c.penalties) {
        for (int32_t tok : {5, 6, 6, 7, 1, 40, 2, vocab - 1}) s.Accept(tok);
      }
      specs.emplace_back();
      s.PrepareDeviceSample(&specs.back());
    }
    for (int r = 0; r < rows_per_combo; ++r) rows.push_back(rows_per_combo - 1 - r);
    std::vector<SampleSpec> row_specs(rows.size());
    for (size_t i = 0; i < rows.size(); ++i) row_specs[i] = specs[static_cast<size_t>(rows[i])];
    const std::vector<SampledToken> got = Gpu(logits, rows, row_specs);
    ASSERT_EQ(got.size(), rows.size());
    int combo_same = 0;
    double worst_lp = 0;
    for (size_t i = 0; i < rows.size(); ++i) {
      const std::vector<float>& row = logits[static_cast<size_t>(rows[i])];
      const SampleSpec& spec = row_specs[i];
      const SampledToken want = Sampler::SampleSpecOnHost(spec, row);
      const SampledToken& g = got[i];
      ASSERT_GE(g.token, 0);
      ASSERT_LT(g.token, vocab);
      EXPECT_EQ(g.used_draw, want.used_draw) << c.name << " row " << rows[i];
      const float lp = Sampler::TokenLogprob(row, g.token);
      worst_lp = std::max(worst_lp, std::fabs(static_cast<double>(g.logprob) - lp));
      EXPECT_NEAR(g.logprob, lp, 1e-4) << c.name << " row " << rows[i] << " token " << g.token;
      if (c.temperature == 0.0f || c.top_k == 1 || c.min_p == 1.0f) {
        combo_same += g.token == want.token;
        EXPECT_EQ(g.token, want.token) << c.name << " row " << rows[i] << ": deterministic pick differs";
        continue;
      }
      ++stochastic;
      same += g.token == want.token;
      combo_same += g.token == want.token;
      const std::set<int32_t> kept = CpuKeptSet(spec, row);
      ASSERT_TRUE(kept.count(want.token)) << c.name << ": the reference kept set misses the CPU's own pick";
      EXPECT_TRUE(kept.count(g.token)) << c.name << " row " << rows[i] << ": GPU picked " << g.token
                                       << ", outside the CPU's kept set of " << kept.size();
    }
    std::printf("[ sample ] vocab %d %-28s same token %d/%d, max |logprob err| %.2g\n", vocab, c.name, combo_same,
                rows_per_combo, worst_lp);
  }
  std::printf("[ sample ] vocab %d stochastic: %lld/%lld rows pick the CPU's token\n", vocab,
              static_cast<long long>(same), static_cast<long long>(stochastic));
  EXPECT_GE(static_cast<double>(same), 0.99 * static_cast<double>(stochastic));
}

TEST_F(CudaSampleTest, MatchesHostSamplerOnWorldSizedRows) {
  RWKV_REQUIRE_GPU();
  RunCombos(65536, 96);
}

TEST_F(CudaSampleTest, MatchesHostSamplerOnSmallOddVocabulary) {
  RWKV_REQUIRE_GPU();
  RunCombos(1003, 200);
}

// Vocabularies whose bitmap and histograms with the kernel's static shared
// memory pass the 48 KB launch default while the dynamic part alone does not
// (they need the attribute all the same): 120,000, and 93,600, where the sum
// passes 48 KB only by the static part's alignment padding (8 bytes:
// sizeof(Shared) alone does not count it).
TEST_F(CudaSampleTest, MatchesHostSamplerOnAVocabularyPastTheSharedMemoryDefault) {
  RWKV_REQUIRE_GPU();
  RunCombos(120000, 8);
  RunCombos(93600, 8);
}

// Fallbacks and ties, where the pick is fully determined.
TEST_F(CudaSampleTest, EdgeRowsPickExactlyWhatTheCpuPicks) {
  RWKV_REQUIRE_GPU();
  const int V = 4096;
  std::vector<std::vector<float>> logits;
  std::vector<SamplingParams> params;
  auto add = [&](std::vector<float> row, SamplingParams p) {
    logits.push_back(std::move(row));
    params.push_back(std::move(p));
  };
  SamplingParams greedy;
  greedy.temperature = 0.0f;
  SamplingParams plain;
  std::vector<float> base = RandomLogits(V, 3);
  add(std::vector<float>(V, kNaN), plain);  // all NaN: token 0, no draw
  add(std::vector<float>(V, kNaN), greedy);
  {
    auto r = base;
    r[100] = kNaN;
    r[200] = kInf;
    r[300] = kInf;
    add(r, plain);  // +inf: the lowest +inf id (the draw is consumed)
    add(r, greedy);
  }
  {
    auto r = std::vector<float>(V, -kInf);
    r[17] = -kInf;
    add(r, plain);  // every logit -inf: raw argmax = 0 (ties to lowest), no draw
  }
  {
    SamplingParams banned = plain;
    for (int32_t t = 0; t < V; ++t) banned.logit_bias.push_back({t, -100.0f});
    auto r = base;
    r[2222] = 50.0f;
    add(r, banned);  // all banned: raw argmax, no draw
  }
  {
    auto r = std::vector<float>(V, 1.5f);  // all tied
    add(r, greedy);                       // -> 0
    SamplingParams k = plain;
    k.top_k = 10;  // the 10 lowest ids among ties
    add(r, k);
    SamplingParams tp = plain;
    tp.top_p = 0.001f;  // keeps ~5 of the ties, the lowest ids
    add(r, tp);
    r[4000] = 1.6f;
    r[3999] = 1.6f;
    add(r, greedy);  // -> 3999
  }
  {
    SamplingParams tiny = plain;
    tiny.top_p = 1e-6f;  // only the argmax
    add(base, tiny);
    SamplingParams neg_zero = greedy;
    auto r = std::vector<float>(V, -1.0f);
    r[10] = -0.0f;
    r[5] = 0.0f;
    add(r, neg_zero);  // -0 and +0 tie: lowest id (5)
  }
  std::vector<SampleSpec> specs(logits.size());
  std::vector<int32_t> rows;
  std::vector<Sampler> host;
  for (size_t i = 0; i < logits.size(); ++i) {
    params[i].seed = 40 + i;
    Sampler s = MakeSampler(params[i], V);
    s.PrepareDeviceSample(&specs[i]);
    rows.push_back(static_cast<int32_t>(i));
    host.push_back(MakeSampler(params[i], V));
  }
  const std::vector<SampledToken> got = Gpu(logits, rows, specs);
  ASSERT_EQ(got.size(), logits.size());
  for (size_t i = 0; i < logits.size(); ++i) {
    const auto before = host[i].rng().state();
    const int32_t want = host[i].Sample(logits[i]);
    EXPECT_EQ(got[i].token, want) << "edge row " << i;
    EXPECT_EQ(got[i].used_draw, host[i].rng().state() != before) << "edge row " << i;
    const float lp = Sampler::TokenLogprob(logits[i], got[i].token);
    EXPECT_TRUE(got[i].logprob == lp || std::fabs(got[i].logprob - lp) <= 1e-4)
        << "edge row " << i << ": " << got[i].logprob << " vs " << lp;
  }
}

// launch_sample with `parts` blocks per row (0: its own choice) on rows
// 0..n-1 of `logits` (device), each with its spec.
std::vector<kernels::SampleResultDesc> LaunchParts(const float* logits, int vocab,
                                                   const std::vector<SampleSpec>& specs, int parts) {
  const int n = static_cast<int>(specs.size());
  std::vector<kernels::SampleRowDesc> desc;
  std::vector<kernels::LogitAdjustDesc> adj;
  for (int i = 0; i < n; ++i) {
    const SampleSpec& sp = specs[static_cast<size_t>(i)];
    desc.push_back(kernels::SampleRowDesc{sp.u, i, sp.top_k, sp.temperature, sp.inv_temperature, sp.top_p, sp.min_p,
                                          static_cast<int32_t>(adj.size()),
                                          static_cast<int32_t>(sp.adjustments.size())});
    for (const LogitAdjustment& a : sp.adjustments) adj.push_back({a.token, a.bias, a.penalty, a.repetition});
  }
  adj.push_back({});  // never empty
  void *d_desc = nullptr, *d_adj = nullptr, *d_out = nullptr, *d_scratch = nullptr;
  const size_t scratch_bytes = kernels::sample_scratch_bytes(n);
  EXPECT_EQ(cudaMalloc(&d_desc, desc.size() * sizeof(desc[0])), cudaSuccess);
  EXPECT_EQ(cudaMalloc(&d_adj, adj.size() * sizeof(adj[0])), cudaSuccess);
  EXPECT_EQ(cudaMalloc(&d_out, static_cast<size_t>(n) * sizeof(kernels::SampleResultDesc)), cudaSuccess);
  if (scratch_bytes > 0) {
    EXPECT_EQ(cudaMalloc(&d_scratch, scratch_bytes), cudaSuccess);
    EXPECT_EQ(cudaMemset(d_scratch, 0, scratch_bytes), cudaSuccess);
  }
  EXPECT_EQ(cudaMemcpy(d_desc, desc.data(), desc.size() * sizeof(desc[0]), cudaMemcpyHostToDevice), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(d_adj, adj.data(), adj.size() * sizeof(adj[0]), cudaMemcpyHostToDevice), cudaSuccess);
  std::vector<kernels::SampleResultDesc> out(static_cast<size_t>(n));
  // Twice: the second launch finds the scratch as the first left it.
  for (int rep = 0; rep < 2; ++rep) {
    EXPECT_EQ(kernels::launch_sample(logits, vocab, static_cast<const kernels::SampleRowDesc*>(d_desc),
                                     static_cast<const kernels::LogitAdjustDesc*>(d_adj), n,
                                     static_cast<kernels::SampleResultDesc*>(d_out), d_scratch, scratch_bytes, parts,
                                     nullptr),
              cudaSuccess)
        << "parts " << parts;
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  }
  EXPECT_EQ(cudaMemcpy(out.data(), d_out, out.size() * sizeof(out[0]), cudaMemcpyDeviceToHost), cudaSuccess);
  cudaFree(d_desc);
  cudaFree(d_adj);
  cudaFree(d_out);
  if (d_scratch != nullptr) cudaFree(d_scratch);
  return out;
}

// Few rows are split over several blocks each; that must change nothing:
// the token, the logprob (bit for bit) and used_draw equal the one-block
// path's, for every combination, several splits, and a vocabulary that does
// not divide evenly. Rows include NaN, -inf and +inf logits.
TEST_F(CudaSampleTest, SplitRowsEqualOneBlockPerRowBitForBit) {
  RWKV_REQUIRE_GPU();
  int device = 0, sms = 0;
  ASSERT_EQ(cudaGetDevice(&device), cudaSuccess);
  ASSERT_EQ(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), cudaSuccess);
  int compared = 0;
  for (int V : {65536, 1003}) {
    for (int n : {1, 2, 7, 33}) {
      for (size_t ci = 0; ci < std::size(kCombos); ++ci) {
        const Combo& c = kCombos[ci];
        std::vector<float> flat;
        std::vector<SampleSpec> specs(static_cast<size_t>(n));
        for (int r = 0; r < n; ++r) {
          std::vector<float> row = RandomLogits(V, 31 * ci + 7 * r + n, 1.0 + (r % 5) * 2.0);
          if (r % 4 == 1) row[static_cast<size_t>(r) % V] = kNaN;
          if (r % 6 == 2) row[static_cast<size_t>(3 * r) % V] = -kInf;
          if (r == 5) row[static_cast<size_t>(V / 2)] = kInf;
          flat.insert(flat.end(), row.begin(), row.end());
          Sampler s = MakeSampler(ParamsOf(c, 77 * ci + r, V), V);
          if (c.penalties) {
            for (int32_t tok : {5, 6, 6, 7, 1, 40, 2, V - 1}) s.Accept(tok);
          }
          s.PrepareDeviceSample(&specs[static_cast<size_t>(r)]);
        }
        void* mem = nullptr;
        ASSERT_EQ(cudaMalloc(&mem, flat.size() * sizeof(float)), cudaSuccess);
        const float* dev = static_cast<const float*>(mem);
        ASSERT_EQ(cudaMemcpy(mem, flat.data(), flat.size() * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
        const std::vector<kernels::SampleResultDesc> one = LaunchParts(dev, V, specs, 1);
        for (int parts : {0, 2, 3, 16}) {
          if (parts > 0 && n * parts > sms) continue;  // the blocks must all be resident
          const std::vector<kernels::SampleResultDesc> split = LaunchParts(dev, V, specs, parts);
          for (int r = 0; r < n; ++r) {
            const auto& a = one[static_cast<size_t>(r)];
            const auto& b = split[static_cast<size_t>(r)];
            EXPECT_EQ(b.token, a.token) << c.name << " V " << V << " n " << n << " parts " << parts << " row " << r;
            EXPECT_EQ(std::memcmp(&b.logprob, &a.logprob, sizeof(float)), 0)
                << c.name << " V " << V << " n " << n << " parts " << parts << " row " << r << ": logprob "
                << b.logprob << " vs " << a.logprob;
            EXPECT_EQ(b.used_draw, a.used_draw) << c.name << " n " << n << " parts " << parts << " row " << r;
            ++compared;
          }
        }
        cudaFree(mem);
      }
    }
  }
  std::printf("[ sample ] split vs one block per row: %d results compared\n", compared);
}

// Not a check: how long one SampleRows call takes at serving batch sizes
// (the lead's record; compare with copying B x 65536 fp32 to the host).
TEST_F(CudaSampleTest, TimingAtServingBatchSizes) {
  RWKV_REQUIRE_GPU();
  const int V = 65536;
  // Logits of scale 4 (top_p = 0.9 keeps thousands of ids), then of scale 12
  // (peaked, as a trained model's often are: a few hundred candidates).
  for (const auto& [B, scale] : std::vector<std::pair<int, double>>{{1, 4.0}, {8, 4.0}, {64, 4.0}, {960, 4.0},
                                                                    {1, 12.0}, {960, 12.0}}) {
    std::vector<float> flat;
    for (int r = 0; r < B; ++r) {
      const auto row = RandomLogits(V, 500 + r % 16, scale);
      flat.insert(flat.end(), row.begin(), row.end());
    }
    auto dev = backend_->Alloc(flat.size());
    ASSERT_TRUE(dev.ok());
    ASSERT_TRUE(backend_->Upload(flat.data(), *dev, flat.size()).ok());
    const std::vector<Combo> combos = scale == 4.0 ? std::vector<Combo>{ComboNamed("greedy"), ComboNamed("full"),
                                                                        ComboNamed("top_k=50"), ComboNamed("top_p=0.9")}
                                                   : std::vector<Combo>{ComboNamed("top_p=0.9")};
    for (const Combo& c : combos) {
      std::vector<SampleSpec> specs(static_cast<size_t>(B));
      std::vector<int32_t> rows(static_cast<size_t>(B));
      for (int r = 0; r < B; ++r) {
        Sampler s = MakeSampler(ParamsOf(c, r, V), V);
        s.PrepareDeviceSample(&specs[r]);
        rows[r] = r;
      }
      std::vector<SampledToken> out(static_cast<size_t>(B));
      double best = 1e9;
      for (int rep = 0; rep < 5; ++rep) {
        const auto t0 = std::chrono::steady_clock::now();
        ASSERT_TRUE(backend_->SampleRows(*dev, V, rows.data(), specs.data(), B, out.data()).ok());
        best = std::min(best, std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
      }
      std::printf("[ timing ] SampleRows B=%d vocab %d %s%-22s %.0f us\n", B, V, scale == 4.0 ? "" : "peaked,", c.name,
                  best);
    }
    backend_->Free(*dev);
  }
}

}  // namespace
}  // namespace rwkv
