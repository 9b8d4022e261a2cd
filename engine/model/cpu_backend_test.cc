// Op-level tests of the CPU backend: each op against a direct transcription
// of the official formula on random inputs, and the segment semantics
// (token shift and the recurrences) that batching relies on.
#include "engine/model/cpu_backend.h"

#include <atomic>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "engine/model/cpu_gemm.h"
#include "engine/model/thread_pool.h"
#include "gtest/gtest.h"

namespace rwkv {
namespace {

std::vector<float> Rand(size_t n, uint32_t seed, float lo = -1, float hi = 1) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

TEST(ThreadPoolTest, ParallelForVisitsEveryIndexOnce) {
  ThreadPool pool(3);
  for (int round = 0; round < 50; ++round) {
    std::vector<std::atomic<int>> hits(97);
    pool.ParallelFor(97, [&](int64_t i) { hits[static_cast<size_t>(i)]++; });
    for (auto& h : hits) ASSERT_EQ(h.load(), 1);
  }
}

// Host blocks for offloaded states: ordinary aligned memory (nothing to pin),
// usable as Upload / Download buffers.
TEST(CpuBackendTest, HostBlocksAreAlignedUnpinnedAndCopyBothWays) {
  CpuBackend b(1);
  EXPECT_FALSE(b.HostMemoryPinned());
  auto block = b.AllocHost(1000);  // not a multiple of the alignment
  ASSERT_TRUE(block.ok()) << block.status();
  EXPECT_EQ(reinterpret_cast<uintptr_t>(*block) % 64, 0u);
  auto dev = b.Alloc(250);
  ASSERT_TRUE(dev.ok());
  const std::vector<float> x = Rand(250, 3);
  ASSERT_TRUE(b.Upload(x.data(), *dev, x.size()).ok());
  float* host = static_cast<float*>(*block);
  ASSERT_TRUE(b.Download(*dev, host, x.size()).ok());
  EXPECT_EQ(std::vector<float>(host, host + 250), x);
  b.FreeHost(*block);
  b.FreeHost(nullptr);  // a no-op
  b.Free(*dev);
}

TEST(CpuBackendTest, MatMulMatchesNaive) {
  for (CpuGemm gemm : {CpuGemm::kBatchInvariant, CpuGemm::kOpenBlas}) {
    CpuBackend b(2, gemm);
    for (int n : {1, 3, 17}) {
      const int rows = 33, cols = 20;
      auto w = Rand(rows * cols, 1), x = Rand(static_cast<size_t>(n) * cols, 2),
           y0 = Rand(static_cast<size_t>(n) * rows, 3);
      auto m = b.UploadMatrix(w.data(), rows, cols);
      ASSERT_TRUE(m.ok());
      for (bool acc : {false, true}) {
        std::vector<float> y = y0;
        b.MatMul(x.data(), n, *m, y.data(), acc);
        for (int i = 0; i < n; ++i) {
          for (int o = 0; o < rows; ++o) {
            double s = acc ? y0[static_cast<size_t>(i) * rows + o] : 0;
            for (int c = 0; c < cols; ++c)
              s += static_cast<double>(x[static_cast<size_t>(i) * cols + c]) *
                   w[static_cast<size_t>(o) * cols + c];
            EXPECT_NEAR(y[static_cast<size_t>(i) * rows + o], s, 1e-5 * (1 + std::fabs(s)));
          }
        }
      }
    }
  }
}

TEST(CpuGemmTest, RowsDoNotDependOnBatchOrThreads) {
  // Odd sizes: a partial panel and a partial 4-row tile.
  const int rows = 37, cols = 29, n = 11;
  auto w = Rand(static_cast<size_t>(rows) * cols, 11), x = Rand(static_cast<size_t>(n) * cols, 12);
  std::vector<float> packed(PackedGemmFloats(rows, cols));
  PackGemmWeights(w.data(), rows, cols, packed.data());
  ThreadPool one(1), three(3);
  std::vector<float> all(static_cast<size_t>(n) * rows);
  PackedGemm(x.data(), n, packed.data(), rows, cols, all.data(), false, three);
  for (int m = 0; m < n; ++m) {
    std::vector<float> alone(rows);
    PackedGemm(x.data() + static_cast<size_t>(m) * cols, 1, packed.data(), rows, cols, alone.data(), false,
               one);
    for (int o = 0; o < rows; ++o) {
      ASSERT_EQ(alone[o], all[static_cast<size_t>(m) * rows + o]) << "row " << m << " col " << o;
      double s = 0;
      for (int c = 0; c < cols; ++c)
        s += static_cast<double>(x[static_cast<size_t>(m) * cols + c]) * w[static_cast<size_t>(o) * cols + c];
      EXPECT_NEAR(alone[o], s, 1e-5 * (1 + std::fabs(s)));
    }
  }
}

TEST(CpuBackendTest, TokenShiftUsesStateForFirstRowAndStoresLastRow) {
  CpuBackend b(1);
  const int C = 4;
  // Two segments: slot 1 with 3 rows, slot 0 with 1 row.
  std::vector<float> xx = Rand(4 * C, 5);
  std::vector<float> state = Rand(2 * 10, 6);  // slot stride 10, x_prev at offset 2
  const std::vector<float> state0 = state;
  Segment segs[2] = {{1, 0, 3}, {0, 3, 1}};
  std::vector<float> d(4 * C);
  b.TokenShift(xx.data(), segs, 2, C, {state.data() + 2, 10}, d.data());
  for (int c = 0; c < C; ++c) {
    EXPECT_FLOAT_EQ(d[c], state0[10 + 2 + c] - xx[c]);             // row 0: slot 1's x_prev
    EXPECT_FLOAT_EQ(d[C + c], xx[c] - xx[C + c]);                  // row 1: previous row
    EXPECT_FLOAT_EQ(d[3 * C + c], state0[2 + c] - xx[3 * C + c]);  // row 3: slot 0's x_prev
    EXPECT_FLOAT_EQ(state[10 + 2 + c], xx[2 * C + c]);             // slot 1 keeps row 2
    EXPECT_FLOAT_EQ(state[2 + c], xx[3 * C + c]);                  // slot 0 keeps row 3
  }
}

// Direct transcription of the official per-head update for one token.
void NaiveWkv7(int N, float* S, const float* r, const float* w, const float* k, const float* v,
               const float* kk, const float* a, float* y) {
  std::vector<double> sa(N, 0);
  for (int i = 0; i < N; ++i) {
    for (int j = 0; j < N; ++j) sa[i] += S[i * N + j] * -kk[j];
  }
  for (int i = 0; i < N; ++i) {
    double acc = 0;
    for (int j = 0; j < N; ++j) {
      S[i * N + j] = static_cast<float>(S[i * N + j] * w[j] + sa[i] * (kk[j] * a[j]) + v[i] * k[j]);
      acc += S[i * N + j] * r[j];
    }
    y[i] = static_cast<float>(acc);
  }
}

TEST(CpuBackendTest, Wkv7MatchesOfficialUpdateAcrossSegments) {
  CpuBackend b(2);
  const int N = 64, H = 2, C = N * H, rows = 5;
  auto r = Rand(rows * C, 1), k = Rand(rows * C, 2), v = Rand(rows * C, 3), a = Rand(rows * C, 4, 0, 1);
  auto w = Rand(rows * C, 5, 0.5f, 1.0f), kk = Rand(rows * C, 6);
  auto state = Rand(3 * H * N * N, 7, -0.5f, 0.5f);
  auto ref_state = state;
  Segment segs[2] = {{2, 0, 3}, {0, 3, 2}};
  std::vector<float> y(rows * C), ref_y(rows * C);
  b.Wkv7(segs, 2, C, N, {state.data(), H * N * N}, r.data(), w.data(), k.data(), v.data(), kk.data(),
         a.data(), y.data());
  for (const Segment& s : segs) {
    for (int t = 0; t < s.rows; ++t) {
      for (int h = 0; h < H; ++h) {
        const int o = (s.row_begin + t) * C + h * N;
        NaiveWkv7(N, ref_state.data() + s.slot * H * N * N + h * N * N, r.data() + o, w.data() + o,
                  k.data() + o, v.data() + o, kk.data() + o, a.data() + o, ref_y.data() + o);
      }
    }
  }
  for (size_t i = 0; i < y.size(); ++i) EXPECT_NEAR(y[i], ref_y[i], 1e-4 * (1 + std::fabs(ref_y[i])));
  for (size_t i = 0; i < state.size(); ++i)
    EXPECT_NEAR(state[i], ref_state[i], 1e-5 * (1 + std::fabs(ref_state[i])));
  // Slot 1 was not in the batch and is untouched.
  for (int i = 0; i < H * N * N; ++i) EXPECT_EQ(state[H * N * N + i], ref_state[H * N * N + i]);
}

TEST(CpuBackendTest, Wkv4MatchesPaperFormulaAndIsStableForLargeKeys) {
  CpuBackend b(1);
  const int C = 8, rows = 4;
  auto k = Rand(rows * C, 1, -50, 60), v = Rand(rows * C, 2);
  auto u = Rand(C, 3), wd = Rand(C, 4, -3, -0.01f);
  std::vector<float> state(5 * C, 0.0f);
  for (int c = 0; c < C; ++c) state[2 * C + c] = -1e30f;  // pp
  Segment seg{0, 0, rows};
  std::vector<float> y(rows * C);
  b.Wkv4(&seg, 1, C, {state.data(), 5 * C}, u.data(), wd.data(), k.data(), v.data(), y.data());
  // Unstabilised definition in double: wkv_t = (sum_{i<t} e^{-(t-1-i)w + k_i} v_i + e^{u+k_t} v_t) / (same
  // with v=1).
  for (int c = 0; c < C; ++c) {
    for (int t = 0; t < rows; ++t) {
      double num = 0, den = 0;
      for (int i = 0; i < t; ++i) {
        const double e = std::exp((t - 1 - i) * static_cast<double>(wd[c]) + k[i * C + c]);
        num += e * v[i * C + c];
        den += e;
      }
      const double e = std::exp(static_cast<double>(u[c]) + k[t * C + c]);
      num += e * v[t * C + c];
      den += e;
      EXPECT_NEAR(y[t * C + c], num / den, 1e-5) << "c " << c << " t " << t;
      ASSERT_TRUE(std::isfinite(y[t * C + c]));
    }
  }
}

TEST(CpuBackendTest, V7KeyPrepNormalisesPerHead) {
  CpuBackend b(1);
  const int N = 64, C = 128;
  auto k = Rand(C, 1), a = Rand(C, 2, 0, 1), k_k = Rand(C, 3, 0.5f, 1), k_a = Rand(C, 4, 0.8f, 1.2f);
  auto k0 = k;
  std::vector<float> kk(C);
  b.V7KeyPrep(k.data(), kk.data(), a.data(), k_k.data(), k_a.data(), 1, C, N);
  for (int h = 0; h < 2; ++h) {
    double norm = 0;
    for (int j = 0; j < N; ++j) norm += kk[h * N + j] * kk[h * N + j];
    EXPECT_NEAR(norm, 1.0, 1e-5);
  }
  for (int c = 0; c < C; ++c) EXPECT_FLOAT_EQ(k[c], k0[c] * (1 + (a[c] - 1) * k_a[c]));
}

// The fused ops' defaults (backend.cc) are the unfused ops in sequence: the
// CPU backend's results must be exactly what the unfused forward pass
// computed, which is what keeps model_test's references and the batching
// invariance bit-for-bit.
TEST(CpuBackendTest, FusedOpDefaultsEqualTheUnfusedOps) {
  CpuBackend b(2);
  const int n = 3, C = 16, N = 8, D = 8, F = 24;
  auto w1 = b.UploadMatrix(Rand(static_cast<size_t>(D) * C, 1).data(), D, C);
  auto w2 = b.UploadMatrix(Rand(static_cast<size_t>(C) * D, 2).data(), C, D);
  auto wf = b.UploadSparseInputMatrix(Rand(static_cast<size_t>(C) * F, 3).data(), C, F);
  ASSERT_TRUE(w1.ok() && w2.ok() && wf.ok());
  // Grouped products with activations = activation, then MatMul.
  const auto x = Rand(static_cast<size_t>(n) * C, 4), l = Rand(static_cast<size_t>(n) * D, 5, -3, 3);
  std::vector<float> y1(static_cast<size_t>(n) * D), y2 = Rand(static_cast<size_t>(n) * C, 6), lt = l;
  std::vector<float> want1(y1.size()), want2 = y2, lw = l;
  const MatMulJob jobs[] = {{x.data(), &*w1, y1.data()}, {lt.data(), &*w2, y2.data(), true, InputAct::kTanh}};
  b.GroupedMatMul(n, jobs, 2);
  b.MatMul(x.data(), n, *w1, want1.data(), false);
  b.Tanh(lw.data(), static_cast<int64_t>(lw.size()));
  b.MatMul(lw.data(), n, *w2, want2.data(), true);
  EXPECT_EQ(y1, want1);
  EXPECT_EQ(y2, want2);
  // relu² and the down-projection.
  auto h = Rand(static_cast<size_t>(n) * F, 7, -3, 1), hr = h;
  std::vector<float> yf(static_cast<size_t>(n) * C), want_f(yf.size());
  b.ReluSquareMatMul(h.data(), n, *wf, yf.data(), false, DType::kF32);
  b.ReluSquare(hr.data(), static_cast<int64_t>(hr.size()));
  b.MatMul(hr.data(), n, *wf, want_f.data(), false);
  EXPECT_EQ(yf, want_f);
  // V7 prep at layer 0 stores v_first = v and changes nothing else of v.
  auto w = Rand(static_cast<size_t>(n) * C, 8), a = Rand(static_cast<size_t>(n) * C, 9),
       k = Rand(static_cast<size_t>(n) * C, 10), v = Rand(static_cast<size_t>(n) * C, 11);
  const auto w0 = Rand(C, 12), a0 = Rand(C, 13), k_k = Rand(C, 14), k_a = Rand(C, 15);
  std::vector<float> kk(k.size()), vf(v.size()), v_before = v, ww = w, wa = a, wk = k, wkk(k.size());
  b.V7Prep(w.data(), w0.data(), a.data(), a0.data(), k.data(), kk.data(), k_k.data(), k_a.data(), v.data(),
           vf.data(), nullptr, nullptr, n, C, N);
  b.V7Decay(ww.data(), w0.data(), n, C);
  b.SigmoidBias(wa.data(), a0.data(), n, C);
  b.V7KeyPrep(wk.data(), wkk.data(), wa.data(), k_k.data(), k_a.data(), n, C, N);
  EXPECT_EQ(w, ww);
  EXPECT_EQ(a, wa);
  EXPECT_EQ(k, wk);
  EXPECT_EQ(kk, wkk);
  EXPECT_EQ(v, v_before);
  EXPECT_EQ(vf, v_before);
}

}  // namespace
}  // namespace rwkv
