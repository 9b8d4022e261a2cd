// The chunked RWKV-7 recurrence against the token-by-token one: in double
// arithmetic both are the same function of the inputs (they differ by
// rounding only), in float the chunked form stays within the fp32 bound the
// CUDA kernels are held to (2e-5 of 1 + |x|) for chunks of 16 to 64 tokens,
// prompts with a partial last chunk, and decays that leave the range (walked).
#include "engine/model/wkv7_chunked.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "engine/model/cpu_backend.h"
#include "engine/model/model.h"
#include "gtest/gtest.h"

namespace rwkv {
namespace {

struct Inputs {
  int N = 0, T = 0;
  std::vector<float> r, w, k, v, kk, a, S;
};

// As the model makes them: w in [0.545, 1) (exp(-exp(-0.5) sigmoid(.))), kk of
// unit length, a in [0, 1).
Inputs MakeInputs(int N, int T, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> sym(-1.0f, 1.0f), unit(0.0f, 1.0f), decay(0.545f, 1.0f);
  Inputs in;
  in.N = N;
  in.T = T;
  const size_t n = static_cast<size_t>(N) * T;
  for (auto* vec : {&in.r, &in.k, &in.v, &in.kk}) {
    vec->resize(n);
    for (float& x : *vec) x = sym(gen);
  }
  in.w.resize(n);
  for (float& x : in.w) x = decay(gen);
  in.a.resize(n);
  for (float& x : in.a) x = unit(gen);
  for (int t = 0; t < T; ++t) {
    double norm = 0;
    for (int j = 0; j < N; ++j) norm += static_cast<double>(in.kk[t * N + j]) * in.kk[t * N + j];
    for (int j = 0; j < N; ++j) in.kk[t * N + j] = static_cast<float>(in.kk[t * N + j] / std::sqrt(norm));
  }
  in.S.resize(static_cast<size_t>(N) * N);
  for (float& x : in.S) x = 0.5f * sym(gen);
  return in;
}

// The recurrence token by token in double (the state kept in double too).
void Sequential(const Inputs& in, std::vector<double>* S, std::vector<double>* y) {
  const int N = in.N;
  S->assign(in.S.begin(), in.S.end());
  y->assign(static_cast<size_t>(N) * in.T, 0.0);
  for (int t = 0; t < in.T; ++t) {
    const int o = t * N;
    for (int i = 0; i < N; ++i) {
      double* Si = S->data() + static_cast<size_t>(i) * N;
      double sa = 0;
      for (int j = 0; j < N; ++j) sa += Si[j] * in.kk[o + j];
      double acc = 0;
      for (int j = 0; j < N; ++j) {
        Si[j] = Si[j] * in.w[o + j] - sa * (static_cast<double>(in.kk[o + j]) * in.a[o + j]) +
                static_cast<double>(in.v[o + i]) * in.k[o + j];
        acc += Si[j] * in.r[o + j];
      }
      (*y)[o + i] = acc;
    }
  }
}

// Largest |got - want| / (1 + |want|); infinite for a NaN or infinity.
double MaxRel(const std::vector<float>& got, const std::vector<double>& want) {
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    worst = std::max(worst, std::fabs(got[i] - want[i]) / (1 + std::fabs(want[i])));
  }
  return worst;
}

template <typename Acc>
void RunChunked(const Inputs& in, int chunk, std::vector<float>* S, std::vector<float>* y) {
  *S = in.S;
  y->assign(static_cast<size_t>(in.N) * in.T, std::nanf(""));
  Wkv7ChunkScratch<Acc> scratch;
  Wkv7Chunked<Acc>(S->data(), in.N, in.T, chunk, in.r.data(), in.w.data(), in.k.data(), in.v.data(), in.kk.data(),
                   in.a.data(), in.N, y->data(), &scratch);
}

TEST(Wkv7ChunkedTest, MatchesTheSequentialRecurrence) {
  for (int N : {64, 32}) {
    for (int T : {1, 7, 16, 17, 64, 100, 1000}) {
      const Inputs in = MakeInputs(N, T, static_cast<uint32_t>(N * 10007 + T));
      std::vector<double> want_s, want_y;
      Sequential(in, &want_s, &want_y);
      for (int chunk : {16, 32, 64}) {
        const std::string tag = "N=" + std::to_string(N) + " T=" + std::to_string(T) + " chunk=" + std::to_string(chunk);
        std::vector<float> s, y;
        RunChunked<double>(in, chunk, &s, &y);
        // Double: only the last float rounding of each output differs.
        EXPECT_LT(MaxRel(y, want_y), 1e-6) << tag;
        EXPECT_LT(MaxRel(s, want_s), 1e-6) << tag;
        RunChunked<float>(in, chunk, &s, &y);
        const double ey = MaxRel(y, want_y), es = MaxRel(s, want_s);
        if (T == 1000) std::printf("[ maxerr ] chunked fp32 %s: y %.3g, state %.3g of (1 + |x|)\n", tag.c_str(), ey, es);
        EXPECT_LT(ey, 2e-5) << tag;
        EXPECT_LT(es, 2e-5) << tag;
      }
    }
  }
}

// Chunks split anywhere give the same result: 1000 tokens in one call or in
// calls of 1, 15, 64 and 920 (the state carried between calls).
TEST(Wkv7ChunkedTest, SplittingThePromptDoesNotMatter) {
  const int N = 64, T = 1000;
  const Inputs in = MakeInputs(N, T, 7);
  std::vector<float> whole_s, whole_y;
  RunChunked<double>(in, 32, &whole_s, &whole_y);
  std::vector<float> s = in.S, y(static_cast<size_t>(N) * T, std::nanf(""));
  Wkv7ChunkScratch<double> scratch;
  int t0 = 0;
  for (int len : {1, 15, 64, 920}) {
    const size_t o = static_cast<size_t>(t0) * N;
    Wkv7Chunked<double>(s.data(), N, len, 32, in.r.data() + o, in.w.data() + o, in.k.data() + o, in.v.data() + o,
                        in.kk.data() + o, in.a.data() + o, N, y.data() + o, &scratch);
    t0 += len;
  }
  ASSERT_EQ(t0, T);
  std::vector<double> ws(whole_s.begin(), whole_s.end()), wy(whole_y.begin(), whole_y.end());
  EXPECT_LT(MaxRel(s, ws), 1e-6);
  EXPECT_LT(MaxRel(y, wy), 1e-6);
}

// Decays no model makes (w = 1e-6 for ten tokens: the chunk's product is
// 1e-60, below kWkv7ChunkMinDecay and below float's range) are walked token
// by token, with the same result; without the fallback 1 / D is infinite and
// the outputs NaN.
TEST(Wkv7ChunkedTest, DecaysOutOfRangeAreWalked) {
  const int N = 32, T = 50;
  Inputs in = MakeInputs(N, T, 11);
  for (int t = 20; t < 30; ++t) {
    for (int j = 0; j < N; ++j) in.w[t * N + j] = 1e-6f;
  }
  std::vector<double> want_s, want_y;
  Sequential(in, &want_s, &want_y);
  std::vector<float> s, y;
  RunChunked<float>(in, 16, &s, &y);
  EXPECT_LT(MaxRel(y, want_y), 2e-5);
  EXPECT_LT(MaxRel(s, want_s), 2e-5);
}

// The CPU backend with the chunked recurrence (CpuBackend's wkv7_chunk) on a
// whole model: a 1,100-token prompt (two passes, the second 76 rows) gives
// the token-by-token backend's last logits within 1e-5 of their spread and
// its final state within 1e-5 (1 + |s|); a wrong chunk boundary or row
// would be off by O(1).
TEST(Wkv7ChunkedTest, CpuBackendOptionMatchesTokenByTokenOnAModel) {
  std::vector<float> logits[2], state[2];
  for (int chunk : {0, 16}) {
    auto m = Model::Load("synthetic:tiny", std::make_unique<CpuBackend>(2, CpuGemm::kBatchInvariant, chunk),
                         {.progress = false});
    ASSERT_TRUE(m.ok()) << m.status();
    ASSERT_TRUE((*m)->AllocateSlots(1).ok());
    std::mt19937 gen(5);
    std::vector<int32_t> tokens(1100);
    for (int32_t& t : tokens) t = static_cast<int32_t>(gen() % static_cast<uint32_t>((*m)->config().vocab_size));
    ForwardRequest r{0, tokens, false};
    const int i = chunk == 0 ? 0 : 1;
    ASSERT_TRUE((*m)->Forward({&r, 1}, &logits[i]).ok());
    state[i].resize(static_cast<size_t>((*m)->state_layout().total));
    ASSERT_TRUE((*m)->ReadSlot(0, state[i].data()).ok());
  }
  ASSERT_EQ(logits[0].size(), logits[1].size());
  double mean = 0, var = 0, worst = 0;
  for (float x : logits[0]) mean += x;
  mean /= static_cast<double>(logits[0].size());
  for (float x : logits[0]) var += (x - mean) * (x - mean);
  const double sd = std::sqrt(var / static_cast<double>(logits[0].size()));
  for (size_t j = 0; j < logits[0].size(); ++j) worst = std::max(worst, std::fabs(logits[1][j] - logits[0][j]) / sd);
  std::printf("[ maxerr ] CPU chunked vs token by token, 1100-token prompt: logits %.3g of std\n", worst);
  EXPECT_LT(worst, 1e-5);
  EXPECT_NE(logits[0], logits[1]) << "the option changed nothing: is the chunked path taken?";
  std::vector<double> want(state[0].begin(), state[0].end());
  EXPECT_LT(MaxRel(state[1], want), 1e-5);
}

}  // namespace
}  // namespace rwkv
