// Op-by-op tests of the CUDA backend against the CPU backend (the reference),
// on random inputs at several sizes: batch 1 and odd batches, several
// segments (multi-row ones too) in slots out of order, outputs poisoned with
// NaN so an unwritten element fails. Without a GPU every test skips, except
// the one that checks the factory's error on such a machine.
//
// Tolerances, |gpu - cpu| <= atol + rtol * |cpu| unless noted, and why:
//  - exact: gathers, copies, token shift (a subtraction is rounded the same
//    everywhere) and fp16/bf16 embedding rows (conversions are exact).
//  - fp32 elementwise and norms: rtol 1e-5, atol 1e-6 (1e-5 for outputs of
//    order 1 that go through a reduction): expf/tanhf differ by a few ulp and
//    the GPU sums in a tree, fp32, where the CPU sums in order, some in double.
//  - WKV-7: 2e-5 * (1 + |cpu|): 64-term fp32 dot products per token
//    (contracted to FMAs on the GPU), whose error carries through the state
//    over up to 20 tokens (first H100 run: 3.8e-6 at worst, 0.09 of this);
//    the same over segments of 1000 tokens (long-segment kernel).
//  - WKV-4: 2e-5 * (1 + |cpu|): no long sums, only expf and a division.
//  - MatMul, relative to mag = sum_k |x_k w_k| (+ |y0| when accumulating),
//    the scale that bounds a dot product's rounding: fp32 weights 1e-5;
//    16-bit weights against the CPU on the same rounded weights: u + 1e-4,
//    where u bounds the rounding of the input to the weight type (fp16 2^-11,
//    bf16 2^-8); on the same rounded input too, 1e-4 (tensor cores accumulate
//    in fp32 but not with round-to-nearest at every add).
// Every check prints its largest error, for the record of what ran.
#include "engine/model/cuda_backend.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <iterator>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "engine/loader/dtype.h"
#include "engine/model/cpu_backend.h"
#include "gtest/gtest.h"
#include "kernels/elementwise.h"
#include "kernels/launch.h"
#include "kernels/v7_output.h"
#include "kernels/wkv7.h"

namespace rwkv {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

std::vector<float> Rand(size_t n, uint32_t seed, float lo = -1, float hi = 1) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

// Host buffer of n 16-bit elements (packed two to a float), each a NaN in
// fp16 and in bf16 (0x7FC0), to catch an element a kernel leaves unwritten.
std::vector<float> Poisoned16(size_t n) {
  const uint32_t pair = 0x7FC07FC0u;
  float f;
  std::memcpy(&f, &pair, sizeof(f));
  return std::vector<float>((n + 1) / 2, f);
}

// Rounds every value to `t` and back (what the GPU stores for 16-bit weights).
std::vector<float> Rounded(const std::vector<float>& v, DType t) {
  std::vector<uint16_t> tmp(v.size());
  std::vector<float> out(v.size());
  if (t == DType::kF32) return v;
  ConvertFromF32(v.data(), t, tmp.data(), v.size());
  ConvertToF32(t, tmp.data(), out.data(), v.size());
  return out;
}

// Normalises each head of N values to unit L2 norm (what kk is in the model).
void NormaliseHeads(std::vector<float>& v, int N) {
  for (size_t h = 0; h + N <= v.size(); h += N) {
    double ss = 0;
    for (int j = 0; j < N; ++j) ss += v[h + j] * v[h + j];
    for (int j = 0; j < N; ++j) v[h + j] = static_cast<float>(v[h + j] / std::sqrt(ss));
  }
}

// Elementwise check; `scale` (if given) replaces |want| in the relative term.
void ExpectClose(const std::vector<float>& got, const std::vector<float>& want, double rtol, double atol,
                 const std::string& what, const std::vector<double>* scale = nullptr) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double max_abs = 0, worst = 0;
  size_t bad = 0, first_bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(static_cast<double>(got[i]) - want[i]);
    const double tol = atol + rtol * (scale != nullptr ? (*scale)[i] : std::fabs(want[i]));
    if (!(err <= tol)) {  // NaN fails too
      if (bad++ == 0) first_bad = i;
    }
    if (std::isfinite(err)) max_abs = std::max(max_abs, err);
    worst = std::max(worst, std::isfinite(err) ? err / tol : INFINITY);
  }
  std::printf("[ maxerr ] %-46s max|diff| %.3g  (%.3g of tolerance)\n", what.c_str(), max_abs, worst);
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << got.size() << " out of tolerance; first at " << first_bad
                     << ": got " << got[first_bad] << " want " << want[first_bad];
}

void ExpectExact(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
  ExpectClose(got, want, 0, 0, what);
}

class CudaOpsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto b = MakeGpu(DType::kF32);
    if (b == nullptr) GTEST_SKIP() << "no CUDA device: " << skip_reason_;
    gpu_ = std::move(b);
  }
  void TearDown() override {
    if (gpu_ != nullptr) {
      const absl::Status s = gpu_->Sync();
      EXPECT_TRUE(s.ok()) << s;
    }
  }

  // invariant: cuBLAS for every product (CudaBackendOptions::batch_invariant).
  // small_rows / skinny_rows / skinny_lora_rows / skinny_wide_rows:
  // CudaBackendOptions' small_batch_rows / skinny_rows / skinny_lora_rows /
  // skinny_wide_rows.
  std::unique_ptr<CudaBackend> MakeGpu(DType dtype, bool invariant = false,
                                       int small_rows = CudaBackendOptions::kDefaultSmallBatchRows,
                                       int skinny_rows = CudaBackendOptions::kDefaultSkinnyRows,
                                       int skinny_lora_rows = CudaBackendOptions::kDefaultSkinnyLoraRows,
                                       int sparse_ffn_rows = CudaBackendOptions::kDefaultSparseFfnRows,
                                       int skinny_wide_rows = CudaBackendOptions::kDefaultSkinnyWideRows,
                                       int lora_gemm_rows = CudaBackendOptions::kDefaultLoraGemmRows) {
    auto b = CudaBackend::Create({.device = 0,
                                  .weight_dtype = dtype,
                                  .embedding_dtype = dtype,
                                  .small_batch_rows = small_rows,
                                  .batch_invariant = invariant,
                                  .skinny_rows = skinny_rows,
                                  .skinny_wide_rows = skinny_wide_rows,
                                  .skinny_lora_rows = skinny_lora_rows,
                                  .lora_gemm_rows = lora_gemm_rows,
                                  .sparse_ffn_rows = sparse_ffn_rows});
    if (!b.ok()) {
      skip_reason_ = b.status().ToString();
      return nullptr;
    }
    return *std::move(b);
  }

  // The skinny GEMM for every product it takes, of any width, from 1 row to
  // its limit (no GEMV).
  std::unique_ptr<CudaBackend> MakeSkinnyGpu(DType dtype) {
    return MakeGpu(dtype, false, /*small_rows=*/0, CudaBackendOptions::kMaxSkinnyRows,
                   CudaBackendOptions::kDefaultSkinnyLoraRows, CudaBackendOptions::kDefaultSparseFfnRows,
                   /*skinny_wide_rows=*/CudaBackendOptions::kMaxSkinnyRows);
  }

  // Device copy of `h` on backend `b` (default: gpu_).
  float* Dev(const std::vector<float>& h, CudaBackend* b = nullptr) {
    if (b == nullptr) b = gpu_.get();
    auto p = b->Alloc(h.size());
    EXPECT_TRUE(p.ok()) << p.status();
    EXPECT_TRUE(b->Upload(h.data(), *p, h.size()).ok());
    return *p;
  }
  float* Poisoned(size_t n) { return Dev(std::vector<float>(n, kNaN)); }
  // h on the device starting `off` floats past an allocation's (aligned) start.
  float* DevAt(const std::vector<float>& h, int off) {
    std::vector<float> padded(static_cast<size_t>(off), 0.0f);
    padded.insert(padded.end(), h.begin(), h.end());
    return Dev(padded) + off;
  }
  std::vector<float> Host(const float* d, size_t n, CudaBackend* b = nullptr) {
    if (b == nullptr) b = gpu_.get();
    std::vector<float> h(n);
    EXPECT_TRUE(b->Download(d, h.data(), n).ok()) << b->Sync();
    return h;
  }

  std::string skip_reason_;
  std::unique_ptr<CudaBackend> gpu_;
  CpuBackend cpu_{2};
};

TEST(CudaBackendFactoryTest, FailsCleanlyWithoutDeviceOrRejectsBadOrdinal) {
  if (CudaDeviceCount() == 0) {
    auto b = MakeCudaBackend();
    ASSERT_FALSE(b.ok());
    EXPECT_EQ(b.status().code(), absl::StatusCode::kFailedPrecondition) << b.status();
    EXPECT_NE(b.status().message().find("no CUDA device"), std::string::npos) << b.status();
    std::printf("no GPU here; the factory said: %s\n", b.status().ToString().c_str());
    return;
  }
  auto b = CudaBackend::Create({});
  ASSERT_TRUE(b.ok()) << b.status();
  std::printf("device: %s\n", (*b)->description().c_str());
  auto bad = MakeCudaBackend({.device = CudaDeviceCount()});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument) << bad.status();
}

TEST_F(CudaOpsTest, AllocReportsOutOfMemoryAndStaysUsable) {
  auto huge = gpu_->Alloc(size_t{1} << 42);  // 16 TiB
  ASSERT_FALSE(huge.ok());
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kResourceExhausted) << huge.status();
  EXPECT_NE(huge.status().message().find("17592186044416 bytes"), std::string::npos) << huge.status();
  EXPECT_NE(huge.status().message().find("free"), std::string::npos) << huge.status();
  auto small = gpu_->Alloc(16);
  EXPECT_TRUE(small.ok()) << small.status();
  EXPECT_TRUE(gpu_->Sync().ok());
}

// Programmatic launch is on for passes of up to kProgrammaticLaunchMaxRows
// rows and off above (a prompt pass), back to the process-wide switch after
// EndPass; a pass's results do not depend on it (the model tests run both).
TEST_F(CudaOpsTest, ProgrammaticLaunchOnlyForPassesUpToTheRowLimit) {
  const bool process_wide = kernels::programmatic_launch();
  const int limit = CudaBackendOptions::kProgrammaticLaunchMaxRows;
  const std::vector<int32_t> tokens(static_cast<size_t>(limit) + 1, 0);
  float* x = Dev(std::vector<float>(static_cast<size_t>(limit + 1) * 64, 1.0f));
  float* w = Dev(std::vector<float>(64, 1.0f));
  for (const int rows : {1, limit, limit + 1, 2}) {
    const Segment seg{0, 0, rows};
    gpu_->BeginPass(&seg, 1, tokens.data(), rows, nullptr, 0);
    EXPECT_EQ(kernels::programmatic_launch(), process_wide && rows <= limit) << rows << " rows";
    gpu_->LayerNorm(x, rows, 64, w, w, x);  // a launch inside the pass
    gpu_->EndPass();
    EXPECT_EQ(kernels::programmatic_launch(), process_wide) << "after a pass of " << rows << " rows";
  }
  EXPECT_TRUE(gpu_->Sync().ok()) << gpu_->Sync();
}

TEST_F(CudaOpsTest, LaunchErrorsSurfaceThroughSyncAndStick) {
  auto b = MakeGpu(DType::kF32);
  ASSERT_NE(b, nullptr);
  auto x = b->Alloc(64);
  ASSERT_TRUE(x.ok());
  b->LayerNorm(*x, 1, 0, *x, *x, *x);  // C = 0: rejected by the launcher
  const absl::Status s = b->Sync();
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal) << s;
  EXPECT_NE(s.message().find("LayerNorm"), std::string::npos) << s;
  EXPECT_EQ(b->Sync().code(), absl::StatusCode::kInternal);  // sticky
  EXPECT_FALSE(b->Alloc(4).ok());
}

TEST_F(CudaOpsTest, EmbeddingAllDtypes) {
  const int V = 37;
  for (DType t : {DType::kF32, DType::kF16, DType::kBF16}) {
    auto b = MakeGpu(t);
    ASSERT_NE(b, nullptr);
    for (int C : {64, 130}) {
      const auto table = Rand(static_cast<size_t>(V) * C, 1 + C, -3, 3);
      auto emb = b->UploadEmbedding(table.data(), V, C);
      ASSERT_TRUE(emb.ok()) << emb.status();
      EXPECT_EQ(emb->dtype, t);
      auto ref_emb = cpu_.UploadEmbedding(Rounded(table, t).data(), V, C);
      ASSERT_TRUE(ref_emb.ok());
      for (int n : {1, 5, 19}) {
        std::vector<int32_t> tokens(static_cast<size_t>(n));
        for (int i = 0; i < n; ++i) tokens[i] = (i * 7 + n) % V;
        float* x = Dev(std::vector<float>(static_cast<size_t>(n) * C, kNaN), b.get());
        b->Embedding(*emb, tokens.data(), n, x);
        std::vector<float> want(static_cast<size_t>(n) * C);
        cpu_.Embedding(*ref_emb, tokens.data(), n, want.data());
        ExpectExact(Host(x, want.size(), b.get()), want,
                    "Embedding " + std::string(DTypeName(t)) + " C=" + std::to_string(C) + " n=" + std::to_string(n));
      }
    }
  }
}

TEST_F(CudaOpsTest, LayerNormOutOfPlaceAndInPlace) {
  for (int C : {64, 128, 768, 1000, 4096}) {
    for (int n : {1, 3, 17}) {
      auto x = Rand(static_cast<size_t>(n) * C, C + n, -3, 3);
      for (float& v : x) v += 5.0f;  // a large mean, as in the residual stream
      const auto w = Rand(C, 2, 0.5f, 1.5f), b = Rand(C, 3);
      std::vector<float> want(x.size());
      cpu_.LayerNorm(x.data(), n, C, w.data(), b.data(), want.data());
      float *dx = Dev(x), *dw = Dev(w), *db = Dev(b), *dy = Poisoned(x.size());
      gpu_->LayerNorm(dx, n, C, dw, db, dy);
      const std::string tag = " C=" + std::to_string(C) + " n=" + std::to_string(n);
      ExpectClose(Host(dy, x.size()), want, 1e-5, 1e-5, "LayerNorm" + tag);
      gpu_->LayerNorm(dx, n, C, dw, db, dx);
      ExpectClose(Host(dx, x.size()), want, 1e-5, 1e-5, "LayerNorm in place" + tag);
    }
  }
}

// mag[i, o] = sum_c |x[i, c] w[o, c]| (+ |y0[i, o]|): the scale that bounds
// the rounding of a dot product.
std::vector<double> DotMagnitude(const std::vector<float>& x, const std::vector<float>& w, int n, int rows, int cols,
                                 const std::vector<float>* y0) {
  std::vector<double> mag(static_cast<size_t>(n) * rows);
  for (int i = 0; i < n; ++i) {
    for (int o = 0; o < rows; ++o) {
      double m = y0 != nullptr ? std::fabs((*y0)[static_cast<size_t>(i) * rows + o]) : 0;
      for (int c = 0; c < cols; ++c) {
        m += std::fabs(x[static_cast<size_t>(i) * cols + c] * w[static_cast<size_t>(o) * cols + c]);
      }
      mag[static_cast<size_t>(i) * rows + o] = m;
    }
  }
  return mag;
}

// Products by row count: 1..small_batch_rows on the GEMV (fp32 input, so
// only the accumulation differs from the CPU on the same rounded weights:
// 1e-4), up to skinny_rows on the skinny GEMM and above on cuBLAS (both round
// the input to the weight type: u + 1e-4 against the CPU, 1e-4 against the
// CPU on the rounded input); batch-invariant backends take cuBLAS everywhere. Row counts straddle the GEMV's 8-row tiles
// and its threshold; shapes cover short LoRA rows (fewer lanes per row), an
// input longer than one staged slice (8448 > 8192), odd row counts and an
// unsupported width (20: cuBLAS).
TEST_F(CudaOpsTest, MatMulAllDtypesAgainstCpuOnSameRoundedWeights) {
  struct Shape {
    int rows, cols;
  };
  for (DType t : {DType::kF32, DType::kF16, DType::kBF16}) {
    for (bool invariant : {false, true}) {
      if (t == DType::kF32 && invariant) continue;  // fp32 is on cuBLAS either way
      auto b = MakeGpu(t, invariant);
      ASSERT_NE(b, nullptr);
      const double u = t == DType::kF32 ? 0 : (t == DType::kF16 ? 1.0 / 2048 : 1.0 / 256);
      const double acc_tol = t == DType::kF32 ? 1e-5 : 1e-4;
      for (Shape s : {Shape{33, 20}, Shape{64, 768}, Shape{768, 32}, Shape{37, 96}, Shape{512, 2048},
                      Shape{2048, 512}, Shape{40, 8448}}) {
        const auto w = Rand(static_cast<size_t>(s.rows) * s.cols, s.rows + s.cols);
        const auto wr = Rounded(w, t);
        auto gw = b->UploadMatrix(w.data(), s.rows, s.cols);
        ASSERT_TRUE(gw.ok()) << gw.status();
        auto cw = cpu_.UploadMatrix(wr.data(), s.rows, s.cols);
        ASSERT_TRUE(cw.ok());
        for (int n : {1, 2, 3, 8, 9, 16, 17, 64}) {
          const bool gemv = t != DType::kF32 && n <= b->small_batch_rows() && s.cols % 8 == 0;
          const bool skinny = t != DType::kF32 && !gemv && n <= b->skinny_rows() && s.cols % 8 == 0;
          const auto x = Rand(static_cast<size_t>(n) * s.cols, n, -2, 2);
          const auto y0 = Rand(static_cast<size_t>(n) * s.rows, n + 1);
          for (bool acc : {false, true}) {
            const std::vector<double> mag = DotMagnitude(x, wr, n, s.rows, s.cols, acc ? &y0 : nullptr);
            const std::string tag = std::string(DTypeName(t)) + (invariant ? " invariant " : " ") +
                                    std::to_string(s.rows) + "x" + std::to_string(s.cols) + " n=" +
                                    std::to_string(n) + (acc ? " acc" : "") + (gemv ? " (gemv)" : "") +
                                    (skinny ? " (skinny)" : "");
            float* dx = Dev(x, b.get());
            float* dy = Dev(acc ? y0 : std::vector<float>(y0.size(), kNaN), b.get());
            b->MatMul(dx, n, *gw, dy, acc);
            const auto got = Host(dy, y0.size(), b.get());
            std::vector<float> want = y0;
            cpu_.MatMul(x.data(), n, *cw, want.data(), acc);
            ExpectClose(got, want, gemv ? acc_tol : u + acc_tol, 0, "MatMul " + tag, &mag);
            if (t != DType::kF32 && !gemv) {  // the same rounded input: only the accumulation differs
              const auto xr = Rounded(x, t);
              std::vector<float> want_r = y0;
              cpu_.MatMul(xr.data(), n, *cw, want_r.data(), acc);
              ExpectClose(got, want_r, acc_tol, 0, "MatMul rounded input " + tag, &mag);
            }
          }
        }
      }
    }
  }
}

// The GEMV's results must not depend on the batch: row i of an n-row product
// equals the 1-row product of row i, bit for bit (each output is one fixed
// FMA chain and shuffle tree, whatever the tile size or the slice length).
TEST_F(CudaOpsTest, GemvRowsDoNotDependOnBatch) {
  auto b = MakeGpu(DType::kF16, false, CudaBackendOptions::kMaxSmallBatchRows);
  ASSERT_NE(b, nullptr);
  const int rows = 300, cols = 2056;  // a slice boundary at 8 rows (1024) but not at 1 row (8192)
  const auto w = Rand(static_cast<size_t>(rows) * cols, 5);
  auto gw = b->UploadMatrix(w.data(), rows, cols);
  ASSERT_TRUE(gw.ok());
  const int n = CudaBackendOptions::kMaxSmallBatchRows;
  const auto x = Rand(static_cast<size_t>(n) * cols, 6, -2, 2);
  float* dx = Dev(x, b.get());
  float* dy = Poisoned(static_cast<size_t>(n) * rows);
  b->MatMul(dx, n, *gw, dy, false);
  const auto all = Host(dy, static_cast<size_t>(n) * rows, b.get());
  float* one = Poisoned(rows);
  for (int i = 0; i < n; i += 7) {
    b->MatMul(dx + static_cast<size_t>(i) * cols, 1, *gw, one, false);
    ExpectExact(Host(one, rows, b.get()), std::vector<float>(all.begin() + i * rows, all.begin() + (i + 1) * rows),
                "GEMV row " + std::to_string(i) + " of " + std::to_string(n) + " vs alone");
  }
}

// The skinny tensor-core GEMM alone (GEMV off, cuBLAS only past 64 rows),
// against the CPU on the same rounded weights: 1e-4 of the magnitude on the
// rounded input (only the accumulation differs), u + 1e-4 on the fp32 input.
// Shapes: odd row counts (partial 64-row tiles, partial 16-row warp tiles),
// cols a multiple of 8 but not of the 32-wide chunk (40, 264, 520, 4104),
// the LoRA down (96 x 2048: split-K over ~8 CTAs per row tile) and up
// (2048 x 96: no split) shapes, an input longer than one staged slice at 64
// rows (8448), and a width the kernel refuses (20: cuBLAS). Every n from 1 to
// 64 in steps that hit each n-tile count and partial tiles; both dtypes; with
// and without accumulation. Output poisoned with NaN.
TEST_F(CudaOpsTest, SkinnyGemmAgainstCpu) {
  struct Shape {
    int rows, cols;
  };
  for (DType t : {DType::kF16, DType::kBF16}) {
    auto b = MakeSkinnyGpu(t);
    ASSERT_NE(b, nullptr);
    ASSERT_EQ(b->skinny_rows(), CudaBackendOptions::kMaxSkinnyRows);
    const double u = t == DType::kF16 ? 1.0 / 2048 : 1.0 / 256;
    for (Shape s : {Shape{1, 8}, Shape{13, 40}, Shape{65, 264}, Shape{96, 2048}, Shape{2048, 96}, Shape{1000, 520},
                    Shape{200, 4104}, Shape{40, 8448}, Shape{33, 20}}) {
      const auto w = Rand(static_cast<size_t>(s.rows) * s.cols, 7 * s.rows + s.cols);
      const auto wr = Rounded(w, t);
      auto gw = b->UploadMatrix(w.data(), s.rows, s.cols);
      ASSERT_TRUE(gw.ok()) << gw.status();
      auto cw = cpu_.UploadMatrix(wr.data(), s.rows, s.cols);
      ASSERT_TRUE(cw.ok());
      for (int n : {1, 3, 5, 8, 13, 16, 31, 64}) {
        const auto x = Rand(static_cast<size_t>(n) * s.cols, 11 * n + s.cols, -2, 2);
        const auto xr = Rounded(x, t);
        const auto y0 = Rand(static_cast<size_t>(n) * s.rows, n + 3);
        for (bool acc : {false, true}) {
          const std::vector<double> mag = DotMagnitude(x, wr, n, s.rows, s.cols, acc ? &y0 : nullptr);
          const std::string tag = std::string(DTypeName(t)) + " " + std::to_string(s.rows) + "x" +
                                  std::to_string(s.cols) + " n=" + std::to_string(n) + (acc ? " acc" : "");
          float* dx = Dev(x, b.get());
          float* dy = Dev(acc ? y0 : std::vector<float>(y0.size(), kNaN), b.get());
          b->MatMul(dx, n, *gw, dy, acc);
          const auto got = Host(dy, y0.size(), b.get());
          std::vector<float> want = y0, want_r = y0;
          cpu_.MatMul(x.data(), n, *cw, want.data(), acc);
          cpu_.MatMul(xr.data(), n, *cw, want_r.data(), acc);
          ExpectClose(got, want, u + 1e-4, 0, "Skinny " + tag, &mag);
          ExpectClose(got, want_r, 1e-4, 0, "Skinny rounded input " + tag, &mag);
          b->Free(dx);
          b->Free(dy);
        }
      }
    }
  }
}

// Products of kSkinnyWideCols (4,096) or more inputs, the 7.2B model's, leave
// the skinny GEMM for cuBLAS above skinny_wide_rows (7) rows; narrower ones
// stay on it up to skinny_rows (10), and LoRA-sized ones (a side of at most
// kSkinnyLoraMaxDim) follow skinny_lora_rows (32) whatever their width. Which
// path ran shows in the batched cuBLAS calls (a group's three products of one
// shape make one); every result matches the CPU.
TEST_F(CudaOpsTest, WideProductsLeaveTheSkinnyGemmAboveTheirRows) {
  const DType t = DType::kF16;
  const double u = 1.0 / 2048;
  static_assert(CudaBackendOptions::kDefaultSkinnyWideRows == 7 && CudaBackendOptions::kDefaultSkinnyRows == 10 &&
                CudaBackendOptions::kSkinnyWideCols == 4096 && CudaBackendOptions::kDefaultSkinnyLoraRows == 32);
  auto defaults = MakeGpu(t);
  // skinny_wide_rows raised to skinny_rows: the rule off.
  auto off = MakeGpu(t, false, CudaBackendOptions::kDefaultSmallBatchRows, CudaBackendOptions::kDefaultSkinnyRows,
                     CudaBackendOptions::kDefaultSkinnyLoraRows, CudaBackendOptions::kDefaultSparseFfnRows,
                     CudaBackendOptions::kDefaultSkinnyRows);
  ASSERT_TRUE(defaults != nullptr && off != nullptr);
  struct Case {
    const char* what;
    int rows, cols;
    int skinny_up_to_default, skinny_up_to_off;  // rows up to which the skinny GEMM takes it
  };
  const Case cases[] = {{"wide", 576, 4096, 7, 10}, {"narrow", 576, 2048, 10, 10}, {"wide LoRA-sized", 480, 4096, 32, 32}};
  for (const Case& c : cases) {
    std::vector<std::vector<float>> wr(3);
    std::vector<Matrix> cw(3), gw_defaults(3), gw_off(3);
    for (int j = 0; j < 3; ++j) {
      const auto w = Rand(static_cast<size_t>(c.rows) * c.cols, 31 * j + c.cols);
      wr[j] = Rounded(w, t);
      auto a = defaults->UploadMatrix(w.data(), c.rows, c.cols);
      auto o = off->UploadMatrix(w.data(), c.rows, c.cols);
      auto h = cpu_.UploadMatrix(wr[j].data(), c.rows, c.cols);
      ASSERT_TRUE(a.ok() && o.ok() && h.ok());
      gw_defaults[j] = *a;
      gw_off[j] = *o;
      cw[j] = *h;
    }
    for (int n : {7, 8, 10, 11}) {
      for (int which = 0; which < 2; ++which) {
        CudaBackend* b = which == 0 ? defaults.get() : off.get();
        const std::vector<Matrix>& gw = which == 0 ? gw_defaults : gw_off;
        const int up_to = which == 0 ? c.skinny_up_to_default : c.skinny_up_to_off;
        const std::string tag = std::string(c.what) + (which == 0 ? " defaults" : " rule off") + " n=" +
                                std::to_string(n);
        std::vector<std::vector<float>> x(3);
        std::vector<float*> dx(3), dy(3);
        MatMulJob jobs[3];
        for (int j = 0; j < 3; ++j) {
          x[j] = Rand(static_cast<size_t>(n) * c.cols, 97 * n + j, -2, 2);
          dx[j] = Dev(x[j], b);
          dy[j] = Dev(std::vector<float>(static_cast<size_t>(n) * c.rows, kNaN), b);
          jobs[j] = {dx[j], &gw[j], dy[j], false, InputAct::kNone};
        }
        const int64_t batched = b->blas_batched_calls();
        b->GroupedMatMul(n, jobs, 3);
        EXPECT_EQ(b->blas_batched_calls() - batched, n > up_to ? 1 : 0) << tag;
        for (int j = 0; j < 3; ++j) {
          const auto got = Host(dy[j], static_cast<size_t>(n) * c.rows, b);
          std::vector<float> want(got.size());
          cpu_.MatMul(x[j].data(), n, cw[j], want.data(), false);
          const std::vector<double> mag = DotMagnitude(x[j], wr[j], n, c.rows, c.cols, nullptr);
          ExpectClose(got, want, u + 1e-4, 0, tag + " job " + std::to_string(j), &mag);
          b->Free(dx[j]);
          b->Free(dy[j]);
        }
      }
    }
  }
}

// The skinny GEMM's results must not depend on the batch, nor on the run: row
// i of an n-row product equals row i of the 1-row (and of a 13-row) product,
// bit for bit (the K split depends on the shape alone, batch rows never mix
// in an MMA, and split-K partials are added in split order by whichever CTA
// comes last); a repeated call gives the same bits. One shape with split-K,
// one without, in one grouped launch, with an activation.
TEST_F(CudaOpsTest, SkinnyRowsDoNotDependOnBatchOrRun) {
  for (DType t : {DType::kF16, DType::kBF16}) {
    auto b = MakeSkinnyGpu(t);
    ASSERT_NE(b, nullptr);
    struct Shape {
      int rows, cols;
    };
    const Shape shapes[] = {{300, 2056}, {2048, 64}};
    std::vector<Matrix> gw;
    for (const Shape& s : shapes) {
      const auto w = Rand(static_cast<size_t>(s.rows) * s.cols, s.rows + 5);
      auto m = b->UploadMatrix(w.data(), s.rows, s.cols);
      ASSERT_TRUE(m.ok());
      gw.push_back(*m);
    }
    const int n = CudaBackendOptions::kMaxSkinnyRows;
    std::vector<float*> dx, dy;
    for (const Shape& s : shapes) {
      dx.push_back(Dev(Rand(static_cast<size_t>(n) * s.cols, s.cols + 6, -2, 2), b.get()));
      dy.push_back(Poisoned(static_cast<size_t>(n) * s.rows));
    }
    // The sigmoid is applied as x is staged; x itself is left as it was.
    auto run = [&](int rows_in_batch, int first, std::vector<float*>& ys) {
      MatMulJob jobs[2];
      for (int j = 0; j < 2; ++j) {
        jobs[j] = {dx[j] + static_cast<size_t>(first) * shapes[j].cols, &gw[j], ys[j], false, InputAct::kSigmoid};
      }
      b->GroupedMatMul(rows_in_batch, jobs, 2);
    };
    run(n, 0, dy);
    std::vector<std::vector<float>> all;
    for (int j = 0; j < 2; ++j) all.push_back(Host(dy[j], static_cast<size_t>(n) * shapes[j].rows, b.get()));
    run(n, 0, dy);
    for (int j = 0; j < 2; ++j) {
      ExpectExact(Host(dy[j], all[j].size(), b.get()), all[j], "skinny repeat, job " + std::to_string(j) + " " +
                                                                   std::string(DTypeName(t)));
    }
    std::vector<float*> part;
    for (const Shape& s : shapes) part.push_back(Poisoned(static_cast<size_t>(13) * s.rows));
    for (int i : {0, 7, 13, 40, 63}) {
      const int m = i + 13 <= n ? 13 : 1;
      run(m, i, part);
      for (int j = 0; j < 2; ++j) {
        const size_t r = shapes[j].rows;
        ExpectExact(Host(part[j], r, b.get()),
                    std::vector<float>(all[j].begin() + i * r, all[j].begin() + (i + 1) * r),
                    "skinny row " + std::to_string(i) + " in " + std::to_string(m) + " rows vs 64, job " +
                        std::to_string(j) + " " + std::string(DTypeName(t)));
      }
    }
  }
}

// The LoRA GEMM (kernels/lora_gemm.cu: LoRA-sized products of at most 512
// inputs, 33..256 rows by default, after the conversion launch applied the
// activation) likewise: a row's result does not depend on the
// batch, on the other jobs of the launch, nor on the run, bit for bit. The
// 7.2B "out" shapes, padded (480) and not (96, the v LoRA), and a 1.5B one,
// each with an activation or none; and against the CPU.
TEST_F(CudaOpsTest, LoraGemmRowsDoNotDependOnBatchLaunchOrRun) {
  for (DType t : {DType::kF16, DType::kBF16}) {
    auto b = MakeGpu(t);
    ASSERT_NE(b, nullptr);
    const double u = t == DType::kF16 ? 1.0 / 2048 : 1.0 / 256;
    struct Shape {
      int rows, cols;
      InputAct act;
    };
    // Short K (one CTA a tile): the "out" shapes; long K (a cluster of CTAs
    // a tile, split K): the "in" shapes, one of them not a multiple of the
    // split's K range.
    const Shape shapes[] = {{4096, 480, InputAct::kSigmoid}, {4096, 96, InputAct::kNone}, {2048, 256, InputAct::kTanh},
                            {480, 4096, InputAct::kNone},    {96, 2048, InputAct::kTanh},  {128, 2056, InputAct::kNone}};
    constexpr int kJobs = 6;
    std::vector<Matrix> gw, cw;
    std::vector<std::vector<float>> wr;
    for (const Shape& s : shapes) {
      const auto w = Rand(static_cast<size_t>(s.rows) * s.cols, s.rows + s.cols);
      wr.push_back(Rounded(w, t));
      auto m = b->UploadMatrix(w.data(), s.rows, s.cols);
      auto c = cpu_.UploadMatrix(wr.back().data(), s.rows, s.cols);
      ASSERT_TRUE(m.ok() && c.ok());
      gw.push_back(*m);
      cw.push_back(*c);
    }
    const int n = 200;
    std::vector<std::vector<float>> x;
    std::vector<float*> dx, dy;
    for (const Shape& s : shapes) {
      x.push_back(Rand(static_cast<size_t>(n) * s.cols, s.cols + 7, -2, 2));
      dx.push_back(Dev(x.back(), b.get()));
      dy.push_back(Poisoned(static_cast<size_t>(n) * s.rows));
    }
    auto run = [&](int rows_in_batch, int first, std::vector<float*>& ys, int only = -1) {
      MatMulJob jobs[kJobs];
      int count = 0;
      for (int j = 0; j < kJobs; ++j) {
        if (only >= 0 && j != only) continue;
        jobs[count++] = {dx[j] + static_cast<size_t>(first) * shapes[j].cols, &gw[j], ys[j], false, shapes[j].act};
      }
      const int64_t calls = b->lora_gemm_calls();
      b->GroupedMatMul(rows_in_batch, jobs, count);
      // One launch for the short jobs and one for the long ones.
      EXPECT_EQ(b->lora_gemm_calls() - calls, only >= 0 ? 1 : 2) << rows_in_batch << " rows";
    };
    run(n, 0, dy);
    std::vector<std::vector<float>> all;
    for (int j = 0; j < kJobs; ++j) all.push_back(Host(dy[j], static_cast<size_t>(n) * shapes[j].rows, b.get()));
    for (int j = 0; j < kJobs; ++j) {
      // The CPU: the activation, then the product, on the same rounded weights.
      std::vector<float> xa = x[j];
      for (float& v : xa) {
        if (shapes[j].act == InputAct::kTanh) v = std::tanh(v);
        if (shapes[j].act == InputAct::kSigmoid) v = 1.0f / (1.0f + std::exp(-v));
      }
      std::vector<float> want(all[j].size());
      cpu_.MatMul(xa.data(), n, cw[j], want.data(), false);
      const std::vector<double> mag = DotMagnitude(xa, wr[j], n, shapes[j].rows, shapes[j].cols, nullptr);
      ExpectClose(all[j], want, u + 1e-4, 0, "LoRA GEMM job " + std::to_string(j) + " " + std::string(DTypeName(t)), &mag);
    }
    run(n, 0, dy);
    for (int j = 0; j < kJobs; ++j) {
      ExpectExact(Host(dy[j], all[j].size(), b.get()), all[j],
                  "LoRA GEMM repeat, job " + std::to_string(j) + " " + std::string(DTypeName(t)));
    }
    // 33-40 rows: one row tile, so the long launches (at most 12 tiles x 8
    // CTAs) have no more CTAs than an H100 has SMs and run the deeper
    // pipeline (launch_lora_gemm); the 200-row one above did not. Both must
    // give each row the same bits.
    std::vector<float*> part;
    for (const Shape& s : shapes) part.push_back(Poisoned(static_cast<size_t>(40) * s.rows));
    for (int i : {0, 33, 150, 199}) {
      const int m = i + 40 <= n ? 40 : 33;
      const int first = i + m <= n ? i : n - m;
      for (int only : {-1, 0, 1, 2, 3, 4, 5}) {
        run(m, first, part, only);
        for (int j = 0; j < kJobs; ++j) {
          if (only >= 0 && j != only) continue;
          const size_t r = shapes[j].rows;
          ExpectExact(Host(part[j] + static_cast<size_t>(i - first) * r, r, b.get()),
                      std::vector<float>(all[j].begin() + i * r, all[j].begin() + (i + 1) * r),
                      "LoRA GEMM row " + std::to_string(i) + " in " + std::to_string(m) + " rows vs " +
                          std::to_string(n) + (only < 0 ? ", all jobs" : ", alone") + ", job " + std::to_string(j) +
                          " " + std::string(DTypeName(t)));
        }
      }
    }
  }
}

// The RWKV-7 LoRA halves with the activation handed over in 16 bits
// (Backend::LoraHiddenType, MatMulJob::y_act): the "in" products write
// act(sums) rounded (kernels/lora_gemm.cu's epilogue; cuBLAS into fp32
// scratch and the conversion launch for a shape the kernel does not take:
// 98 rows of W, not a multiple of 4), and the "out" products read that as
// it is. The final outputs must equal, bit for bit, those of the fp32
// hand-over, where the "out" call's conversion launch applies the
// activation.
TEST_F(CudaOpsTest, LoraActivatedHiddenGivesTheSameBitsAsTheConversion) {
  for (DType t : {DType::kF16, DType::kBF16}) {
    auto b = MakeGpu(t);
    ASSERT_NE(b, nullptr);
    struct Shape {
      int D, C;
      InputAct act;
    };
    // "In" sides of long K (the cluster kernel), of 98 rows (cuBLAS, both
    // hand-overs) and of short K (256 and 512 inputs, one CTA a tile: a
    // small model's). Every "out" side is short.
    const Shape shapes[] = {{96, 2048, InputAct::kTanh},   {128, 4096, InputAct::kNone},
                            {480, 4096, InputAct::kSigmoid}, {98, 2056, InputAct::kSigmoid},
                            {64, 256, InputAct::kTanh},    {32, 512, InputAct::kSigmoid}};
    constexpr int kJobs = 6;
    std::vector<Matrix> w1, w2;
    for (const Shape& s : shapes) {
      auto a = b->UploadMatrix(Rand(static_cast<size_t>(s.D) * s.C, s.D + s.C, -0.1f, 0.1f).data(), s.D, s.C);
      auto o = b->UploadMatrix(Rand(static_cast<size_t>(s.C) * s.D, s.D + 3 * s.C).data(), s.C, s.D);
      ASSERT_TRUE(a.ok() && o.ok());
      w1.push_back(*a);
      w2.push_back(*o);
    }
    EXPECT_EQ(b->LoraHiddenType(CudaBackendOptions::kDefaultSkinnyLoraRows), DType::kF32);
    EXPECT_EQ(b->LoraHiddenType(CudaBackendOptions::kDefaultLoraGemmRows + 1), DType::kF32);
    for (int n : {CudaBackendOptions::kDefaultSkinnyLoraRows + 1, 64, 200, CudaBackendOptions::kDefaultLoraGemmRows}) {
      ASSERT_EQ(b->LoraHiddenType(n), t) << n;
      ASSERT_EQ(b->MatMulInputType(n), t) << n;
      std::vector<float*> x16, h32, h16, y32, y16;
      for (const Shape& s : shapes) {
        const auto x = Rand(static_cast<size_t>(n) * s.C, n + s.C, -2, 2);
        std::vector<float> packed((x.size() + 1) / 2);
        ConvertFromF32(x.data(), t, packed.data(), x.size());
        x16.push_back(Dev(packed, b.get()));
        h32.push_back(Poisoned(static_cast<size_t>(n) * s.D));
        h16.push_back(Dev(Poisoned16(static_cast<size_t>(n) * s.D), b.get()));
        y32.push_back(Poisoned(static_cast<size_t>(n) * s.C));
        y16.push_back(Poisoned(static_cast<size_t>(n) * s.C));
      }
      MatMulJob in32[kJobs], out32[kJobs], in16[kJobs], out16[kJobs];
      for (int j = 0; j < kJobs; ++j) {
        in32[j] = {x16[j], &w1[j], h32[j], false, InputAct::kNone, t};
        out32[j] = {h32[j], &w2[j], y32[j], false, shapes[j].act};
        in16[j] = {x16[j], &w1[j], h16[j], false, InputAct::kNone, t};
        in16[j].y_type = t;
        in16[j].y_act = shapes[j].act;
        out16[j] = {h16[j], &w2[j], y16[j], false, InputAct::kNone, t};
      }
      // Each call: the kernel's launches (short and long "in", one "out").
      for (const MatMulJob* call : {in32, out32, in16, out16}) {
        const int64_t before = b->lora_gemm_calls();
        b->GroupedMatMul(n, call, kJobs);
        EXPECT_EQ(b->lora_gemm_calls() - before, call == in32 || call == in16 ? 2 : 1) << n;
      }
      ASSERT_TRUE(b->Sync().ok()) << b->Sync();
      for (int j = 0; j < kJobs; ++j) {
        const size_t len = static_cast<size_t>(n) * shapes[j].C;
        const std::vector<float> want = Host(y32[j], len, b.get());
        for (size_t e = 0; e < len; ++e) ASSERT_TRUE(std::isfinite(want[e])) << j << " " << e;
        ExpectExact(Host(y16[j], len, b.get()), want,
                    "LoRA job " + std::to_string(j) + " with a 16-bit activated hidden, n=" + std::to_string(n) +
                        " " + std::string(DTypeName(t)));
      }
    }
  }
  // Refused: an output activation with an fp32 output.
  auto bad = MakeGpu(DType::kF16);
  ASSERT_NE(bad, nullptr);
  const int n = 64, D = 96, C = 2048;
  auto m = bad->UploadMatrix(Rand(static_cast<size_t>(D) * C, 72).data(), D, C);
  ASSERT_TRUE(m.ok());
  MatMulJob job = {Dev(std::vector<float>(static_cast<size_t>(n) * C / 2), bad.get()),
                   &*m,
                   Dev(std::vector<float>(static_cast<size_t>(n) * D), bad.get()),
                   false,
                   InputAct::kNone,
                   DType::kF16};
  job.y_act = InputAct::kTanh;
  bad->GroupedMatMul(n, &job, 1);
  EXPECT_EQ(bad->Sync().code(), absl::StatusCode::kInvalidArgument) << bad->Sync();
}

// V7Projections with the LoRA chain on the side stream
// (CudaBackendOptions::lora_side_stream): the same launches as the two
// GroupedMatMul calls, so the same bits (against a backend with it off),
// eager and in captured and replayed passes; at rows the LoRA kernel does
// not take, the two calls.
TEST_F(CudaOpsTest, V7ProjectionsLoraChainOnTheSideStreamGivesTheSameBits) {
  for (DType t : {DType::kF16, DType::kBF16}) {
    auto on = MakeGpu(t);
    auto off = CudaBackend::Create({.device = 0, .weight_dtype = t, .embedding_dtype = t, .lora_side_stream = false});
    ASSERT_NE(on, nullptr);
    ASSERT_TRUE(off.ok()) << off.status();
    constexpr int C = 2048, kLora = 4, kMaxN = 300;
    const int dims[kLora] = {96, 96, 256, 64};
    const InputAct acts[kLora] = {InputAct::kTanh, InputAct::kNone, InputAct::kSigmoid, InputAct::kNone};
    // Weights on each backend, from the same values.
    std::vector<Matrix> main_w[2], in_w[2], out_w[2];
    for (int j = 0; j < 3; ++j) {
      const auto h = Rand(static_cast<size_t>(C) * C, 200 + j, -0.05f, 0.05f);
      for (int k = 0; k < 2; ++k) {
        auto m = (k == 0 ? on.get() : off->get())->UploadMatrix(h.data(), C, C);
        ASSERT_TRUE(m.ok());
        main_w[k].push_back(*m);
      }
    }
    for (int j = 0; j < kLora; ++j) {
      const auto a = Rand(static_cast<size_t>(dims[j]) * C, 210 + j, -0.1f, 0.1f);
      const auto o = Rand(static_cast<size_t>(C) * dims[j], 220 + j);
      for (int k = 0; k < 2; ++k) {
        CudaBackend* be = k == 0 ? on.get() : off->get();
        auto mi = be->UploadMatrix(a.data(), dims[j], C);
        auto mo = be->UploadMatrix(o.data(), C, dims[j]);
        ASSERT_TRUE(mi.ok() && mo.ok());
        in_w[k].push_back(*mi);
        out_w[k].push_back(*mo);
      }
    }
    // The mixes (16-bit; the value LoRA reads v's mix): uploaded into
    // `source`, then copied on each backend's stream into its own mixes just
    // before the op, and its outputs copied just after (so a fork or a join
    // out of place would read or copy what is not yet there).
    const size_t mix_floats = static_cast<size_t>(kMaxN) * C / 2;
    std::vector<float*> source(6), mix[2];
    for (float*& m : source) m = Dev(std::vector<float>(mix_floats), on.get());
    const int in_mix[kLora] = {3, 4, 5, 2};
    std::vector<float*> y_main[2], hidden[2], y_out[2], y_copy[2];
    for (int k = 0; k < 2; ++k) {
      for (int m = 0; m < 6; ++m) mix[k].push_back(Dev(std::vector<float>(mix_floats), on.get()));
      for (int j = 0; j < 3; ++j) y_main[k].push_back(Poisoned(static_cast<size_t>(kMaxN) * C));
      for (int j = 0; j < kLora; ++j) {
        hidden[k].push_back(Dev(Poisoned16(static_cast<size_t>(kMaxN) * dims[j]), on.get()));
        y_out[k].push_back(Poisoned(static_cast<size_t>(kMaxN) * C));
        y_copy[k].push_back(Poisoned(static_cast<size_t>(kMaxN) * C));
      }
    }
    auto call = [&](CudaBackend* be, int k, int n, int n_main = 3) {
      for (int m = 0; m < 6; ++m) ASSERT_TRUE(be->CopyFloats(source[m], mix[k][m], mix_floats).ok());
      MatMulJob main[3], in[kLora], out[kLora];
      for (int j = 0; j < 3; ++j) main[j] = {mix[k][j], &main_w[k][j], y_main[k][j], false, InputAct::kNone, t};
      for (int j = 0; j < kLora; ++j) {
        in[j] = {mix[k][in_mix[j]], &in_w[k][j], hidden[k][j], false, InputAct::kNone, t};
        in[j].y_type = t;
        in[j].y_act = acts[j];
        out[j] = {hidden[k][j], &out_w[k][j], y_out[k][j], false, InputAct::kNone, t};
      }
      be->V7Projections(n, main, n_main, in, kLora, out, kLora);
      for (int j = 0; j < kLora; ++j) {
        ASSERT_TRUE(be->CopyFloats(y_out[k][j], y_copy[k][j], static_cast<size_t>(n) * C).ok());
      }
    };
    auto fill_mixes = [&](int n, int seed) {
      for (int m = 0; m < 6; ++m) {
        const auto x = Rand(static_cast<size_t>(n) * C, seed + m, -2, 2);
        std::vector<float> packed(x.size() / 2);
        ConvertFromF32(x.data(), t, packed.data(), x.size());
        ASSERT_TRUE(on->Upload(packed.data(), source[m], packed.size()).ok());
      }
    };
    auto compare = [&](int n, const std::string& what, bool with_main = true) {
      ASSERT_TRUE(on->Sync().ok()) << on->Sync();
      ASSERT_TRUE((*off)->Sync().ok()) << (*off)->Sync();
      const std::string tail = " n=" + std::to_string(n) + " " + std::string(DTypeName(t)) + ", " + what;
      for (int j = 0; with_main && j < 3; ++j) {
        const size_t len = static_cast<size_t>(n) * C;
        ExpectExact(Host(y_main[0][j], len, on.get()), Host(y_main[1][j], len, off->get()),
                    "main product " + std::to_string(j) + tail);
      }
      for (int j = 0; j < kLora; ++j) {
        const size_t len = static_cast<size_t>(n) * C;
        const std::vector<float> want = Host(y_copy[1][j], len, off->get());
        for (size_t e = 0; e < len; ++e) ASSERT_TRUE(std::isfinite(want[e])) << j << " " << e << tail;
        ExpectExact(Host(y_copy[0][j], len, on.get()), want, "LoRA chain " + std::to_string(j) + tail);
      }
    };
    // Eager: the side stream from just above the skinny LoRA rows up to
    // lora_gemm_rows, the two calls above.
    const int lora_rows = CudaBackendOptions::kDefaultLoraGemmRows;
    for (int n : {CudaBackendOptions::kDefaultSkinnyLoraRows + 1, 64, lora_rows, kMaxN}) {
      fill_mixes(n, 10 * n);
      const int64_t side = on->lora_side_calls(), lora = on->lora_gemm_calls();
      call(on.get(), 0, n);
      call(off->get(), 1, n);
      const bool taken = n <= lora_rows;
      EXPECT_EQ(on->lora_side_calls() - side, taken ? 1 : 0) << n;
      EXPECT_EQ(on->lora_gemm_calls() - lora, taken ? 2 : 0) << n;
      EXPECT_EQ((*off)->lora_side_calls(), 0) << n;
      compare(n, "eager");
    }
    // In passes: eager, captured (fork and join in the graph), replayed,
    // each with new mixes.
    if (on->graphs_enabled()) {
      const int n = 64;
      const int64_t captured = on->graphs_captured(), replays = on->graph_replays();
      for (int pass = 0; pass < 3; ++pass) {
        fill_mixes(n, 5000 + 10 * pass);
        const Segment seg{0, 0, n};
        const std::vector<int32_t> tokens(static_cast<size_t>(n), 0);
        on->BeginPass(&seg, 1, tokens.data(), n, nullptr, 0);
        call(on.get(), 0, n);
        on->EndPass();
        call(off->get(), 1, n);
        compare(n, "pass " + std::to_string(pass));
      }
      EXPECT_EQ(on->graphs_captured() - captured, 1);
      EXPECT_EQ(on->graph_replays() - replays, 1);
    }
    // Eager, the ordering alone: no r/k/v jobs (which would otherwise keep
    // the main stream busy past the LoRA chain), and a slow copy queued on
    // the main stream before the mixes are copied in. A LoRA launch not
    // behind the fork would read the mixes before that copy is done, and an
    // output copy not behind the join would copy outputs the chain has not
    // written yet; either gives other bits than the one-stream backend.
    const size_t slow = size_t{32} << 20;  // floats: 128 MB, ~0.1 ms a copy on an H100
    float* slow_src = Dev(std::vector<float>(slow), on.get());
    float* slow_dst = Dev(std::vector<float>(slow), on.get());
    for (int n : {64, lora_rows}) {
      fill_mixes(n, 7000 + n);
      const int64_t side = on->lora_side_calls();
      ASSERT_TRUE(on->CopyFloats(slow_src, slow_dst, slow).ok());
      call(on.get(), 0, n, /*n_main=*/0);
      call(off->get(), 1, n, /*n_main=*/0);
      EXPECT_EQ(on->lora_side_calls() - side, 1) << n;
      compare(n, "eager, no r/k/v, behind a slow copy", /*with_main=*/false);
    }
  }
}

// Several products in one call, with input activations and accumulation,
// against the CPU's composition (activation, then MatMul) on the same rounded
// weights. Nine jobs: more than one GEMV launch takes; one of an unsupported
// width (cuBLAS, activation applied separately).
TEST_F(CudaOpsTest, GroupedMatMulWithActivations) {
  struct JobSpec {
    int rows, cols;
    InputAct act;
    bool acc;
  };
  const JobSpec specs[] = {{256, 128, InputAct::kNone, false},   {256, 128, InputAct::kNone, true},
                           {32, 256, InputAct::kNone, false},    {256, 32, InputAct::kTanh, false},
                           {256, 64, InputAct::kSigmoid, false}, {48, 256, InputAct::kNone, false},
                           {256, 96, InputAct::kTanh, true},     {100, 20, InputAct::kSigmoid, false},
                           {64, 256, InputAct::kNone, false}};
  const int count = static_cast<int>(std::size(specs));
  for (DType t : {DType::kF16, DType::kBF16}) {
    auto b = MakeGpu(t);
    ASSERT_NE(b, nullptr);
    const double u = t == DType::kF16 ? 1.0 / 2048 : 1.0 / 256;
    for (int n : {1, 5, 17, 64}) {
      std::vector<Matrix> gm(count), cm(count);
      std::vector<std::vector<float>> wr(count), x(count), y0(count);
      std::vector<MatMulJob> gjobs(count), cjobs(count);
      std::vector<std::vector<float>> want(count);
      for (int j = 0; j < count; ++j) {
        const JobSpec& sp = specs[j];
        const auto w = Rand(static_cast<size_t>(sp.rows) * sp.cols, 100 + j);
        wr[j] = Rounded(w, t);
        auto g = b->UploadMatrix(w.data(), sp.rows, sp.cols);
        ASSERT_TRUE(g.ok());
        gm[j] = *g;
        auto c = cpu_.UploadMatrix(wr[j].data(), sp.rows, sp.cols);
        ASSERT_TRUE(c.ok());
        cm[j] = *c;
        x[j] = Rand(static_cast<size_t>(n) * sp.cols, 200 + j + n, -3, 3);
        y0[j] = Rand(static_cast<size_t>(n) * sp.rows, 300 + j);
        want[j] = sp.acc ? y0[j] : std::vector<float>(y0[j].size());
      }
      std::vector<std::vector<float>> cx = x;  // the CPU applies activations in place
      for (int j = 0; j < count; ++j) {
        gjobs[j] = {Dev(x[j], b.get()), &gm[j], Dev(specs[j].acc ? y0[j] : std::vector<float>(y0[j].size(), kNaN), b.get()),
                    specs[j].acc, specs[j].act};
        cjobs[j] = {cx[j].data(), &cm[j], want[j].data(), specs[j].acc, specs[j].act};
      }
      b->GroupedMatMul(n, gjobs.data(), count);
      cpu_.GroupedMatMul(n, cjobs.data(), count);
      for (int j = 0; j < count; ++j) {
        const JobSpec& sp = specs[j];
        // cx[j] now holds act(x): the magnitude of the products actually summed.
        const std::vector<double> mag = DotMagnitude(cx[j], wr[j], n, sp.rows, sp.cols, sp.acc ? &y0[j] : nullptr);
        ExpectClose(Host(gjobs[j].y, y0[j].size(), b.get()), want[j], u + 1e-4, 0,
                    "GroupedMatMul " + std::string(DTypeName(t)) + " n=" + std::to_string(n) + " job " +
                        std::to_string(j),
                    &mag);
      }
    }
  }
}

// The cuBLAS path of GroupedMatMul above skinny_rows: one conversion launch
// per chunk of up to 8 jobs (activations applied as the input is rounded,
// one conversion for inputs shared by several jobs), then one cuBLAS call per
// product shape, batched where several jobs share one. Twelve jobs (two
// chunks): four C x C products in one batched call, two of them on one
// shared input (which a 32-row job reads too); two accumulating C x C
// products (6 and 7: a second batched call, beta 1); tanh and sigmoid
// inputs; an input-major matrix (op N); and two accumulating jobs of one
// shape with one output (7 and 11), which must not share a batched call. Against the CPU on the same rounded weights (u +
// 1e-4 of the magnitude), at 17, 64 and 300 rows, with the LoRA-sized jobs
// on the skinny GEMM up to 64 rows (the limit), on cuBLAS (skinny_lora_rows
// 0), and in batch-invariant mode. A group in which two jobs write one
// output (7 and 11) runs one job at a time (GroupedMatMul keeps their
// order), so each case runs twice: all twelve jobs, and the first eleven,
// where the products of one shape do share batched calls.
struct GroupSpec {
  int rows, cols;
  InputAct act;
  bool acc;
  int x_from;  // -1: own input; otherwise the job whose input this one reads
  int y_from;  // -1: own output; otherwise the job whose output this one adds to
  bool input_major;
};
const GroupSpec kGroupSpecs[] = {
    {256, 256, InputAct::kNone, false, -1, -1, false},    {256, 256, InputAct::kNone, false, -1, -1, false},
    {256, 256, InputAct::kNone, false, -1, -1, false},    {256, 256, InputAct::kNone, false, 2, -1, false},
    {32, 256, InputAct::kNone, false, 2, -1, false},      {256, 32, InputAct::kTanh, false, -1, -1, false},
    {256, 256, InputAct::kNone, true, -1, -1, false},     {256, 256, InputAct::kNone, true, -1, -1, false},
    {256, 64, InputAct::kSigmoid, true, -1, -1, false},   {600, 256, InputAct::kNone, false, -1, -1, false},
    {256, 512, InputAct::kNone, false, -1, -1, true},     {256, 256, InputAct::kNone, true, -1, 7, false},
};

// Every job, and the jobs before 11 (no two writing one output: batched calls).
constexpr int kGroupAll = static_cast<int>(std::size(kGroupSpecs)), kGroupBatched = kGroupAll - 1;

// One group's data: weights on both backends, inputs and initial outputs.
struct GroupData {
  std::vector<Matrix> gm, cm;
  std::vector<std::vector<float>> wr;
};

GroupData UploadGroup(CudaBackend* b, CpuBackend* cpu, DType t) {
  GroupData d;
  int j = 0;
  for (const GroupSpec& sp : kGroupSpecs) {
    const auto w = Rand(static_cast<size_t>(sp.rows) * sp.cols, 700 + j++);
    d.wr.push_back(Rounded(w, t));
    auto g = sp.input_major ? b->UploadSparseInputMatrix(w.data(), sp.rows, sp.cols)
                            : b->UploadMatrix(w.data(), sp.rows, sp.cols);
    EXPECT_TRUE(g.ok());
    d.gm.push_back(g.ok() ? *g : Matrix{});
    auto c = cpu->UploadMatrix(d.wr.back().data(), sp.rows, sp.cols);
    EXPECT_TRUE(c.ok());
    d.cm.push_back(c.ok() ? *c : Matrix{});
  }
  return d;
}

// Runs the group's first x.size() jobs on the CPU from inputs x and initial
// outputs y0 (per job; shared ones are read from the job named), and checks
// the GPU's outputs.
void CheckGroup(const GroupData& d, CpuBackend* cpu, int n, const std::vector<std::vector<float>>& x,
                const std::vector<std::vector<float>>& y0, const std::vector<std::vector<float>>& got, double tol,
                const std::string& tag) {
  const int count = static_cast<int>(x.size());
  std::vector<std::vector<float>> cx = x, want = y0;
  std::vector<MatMulJob> cjobs(count);
  for (int j = 0; j < count; ++j) {
    const GroupSpec& sp = kGroupSpecs[j];
    cjobs[j] = {cx[sp.x_from < 0 ? j : sp.x_from].data(), &d.cm[j], want[sp.y_from < 0 ? j : sp.y_from].data(),
                sp.acc, sp.act};
  }
  // The activation jobs' inputs are their own, so order within the group
  // does not matter; act(x) lands in cx for the magnitudes.
  cpu->GroupedMatMul(n, cjobs.data(), count);
  for (int j = 0; j < count; ++j) {
    const GroupSpec& sp = kGroupSpecs[j];
    if (sp.y_from >= 0) continue;
    // Every job adding to this output contributes to its magnitude.
    std::vector<double> mag(want[j].size(), 0.0);
    for (int i = 0; i < count; ++i) {
      if (i != j && kGroupSpecs[i].y_from != j) continue;
      const GroupSpec& si = kGroupSpecs[i];
      const auto m = DotMagnitude(cx[si.x_from < 0 ? i : si.x_from], d.wr[i], n, si.rows, si.cols,
                                  i == j && sp.acc ? &y0[j] : nullptr);
      for (size_t e = 0; e < mag.size(); ++e) mag[e] += m[e];
    }
    ExpectClose(got[j], want[j], tol, 0, tag + " job " + std::to_string(j), &mag);
  }
}

// Job j's output as the GPU starts it in a group of the first `count` jobs:
// an output another job adds to starts as y0 on both sides; one written with
// beta 0 is poisoned.
std::vector<float> InitialY(int j, const std::vector<float>& y0, int count) {
  const bool poisoned = !kGroupSpecs[j].acc && std::none_of(std::begin(kGroupSpecs), std::begin(kGroupSpecs) + count,
                                                            [&](const GroupSpec& o) { return o.y_from == j; });
  return poisoned ? std::vector<float>(y0.size(), kNaN) : y0;
}

TEST_F(CudaOpsTest, GroupedMatMulCublasPathAgainstCpu) {
  for (const int count : {kGroupAll, kGroupBatched})
  for (DType t : {DType::kF16, DType::kBF16}) {
    const double u = t == DType::kF16 ? 1.0 / 2048 : 1.0 / 256;
    for (int mode = 0; mode < 4; ++mode) {
      // The LoRA-on-skinny rule (on up to 32 rows by default, see
      // cuda_backend.h) at its limit of 64 rows and off, both with the LoRA
      // GEMM off; and the defaults, where every job but the input-major one
      // (all are LoRA-sized: a side of at most 512) takes the LoRA GEMM
      // above 32 rows and up to lora_gemm_rows (256).
      const char* mode_name[] = {"lora on skinny", "lora on cuBLAS", "invariant", "lora GEMM"};
      auto b = MakeGpu(t, mode == 2, CudaBackendOptions::kDefaultSmallBatchRows,
                       CudaBackendOptions::kDefaultSkinnyRows,
                       mode == 0   ? CudaBackendOptions::kMaxSkinnyRows
                       : mode == 3 ? CudaBackendOptions::kDefaultSkinnyLoraRows
                                   : 0,
                       CudaBackendOptions::kDefaultSparseFfnRows, CudaBackendOptions::kDefaultSkinnyWideRows,
                       mode == 3 ? CudaBackendOptions::kDefaultLoraGemmRows : 0);
      ASSERT_NE(b, nullptr);
      const GroupData d = UploadGroup(b.get(), &cpu_, t);
      for (int n : {17, 64, 100, 300}) {
        std::vector<std::vector<float>> x(count), y0(count);
        std::vector<float*> dx(count), dy(count);
        for (int j = 0; j < count; ++j) {
          const GroupSpec& sp = kGroupSpecs[j];
          x[j] = Rand(static_cast<size_t>(n) * sp.cols, 800 + j + n, -3, 3);
          y0[j] = sp.acc ? Rand(static_cast<size_t>(n) * sp.rows, 900 + j + n)
                         : std::vector<float>(static_cast<size_t>(n) * sp.rows);
          dx[j] = Dev(x[j], b.get());
          dy[j] = Dev(InitialY(j, y0[j], count), b.get());
        }
        std::vector<MatMulJob> gjobs(count);
        for (int j = 0; j < count; ++j) {
          const GroupSpec& sp = kGroupSpecs[j];
          gjobs[j] = {dx[sp.x_from < 0 ? j : sp.x_from], &d.gm[j], dy[sp.y_from < 0 ? j : sp.y_from], sp.acc,
                      sp.act};
        }
        const int64_t batched = b->blas_batched_calls(), lora_calls = b->lora_gemm_calls();
        b->GroupedMatMul(n, gjobs.data(), count);
        // The first eleven jobs on cuBLAS: the four C x C products in one
        // call, the two accumulating ones (6, 7) in another (both in the first
        // conversion chunk of 8); the whole group, one job at a time.
        const bool lora_gemm = mode == 3 && n > CudaBackendOptions::kDefaultSkinnyLoraRows &&
                               n <= CudaBackendOptions::kDefaultLoraGemmRows;
        const bool all_blas = (mode != 0 || n > CudaBackendOptions::kMaxSkinnyRows) && !lora_gemm &&
                              !(mode == 3 && n <= CudaBackendOptions::kDefaultSkinnyLoraRows);
        EXPECT_EQ(b->blas_batched_calls() - batched, count == kGroupBatched && all_blas ? 2 : 0)
            << DTypeName(t) << " " << mode_name[mode] << " n=" << n << " jobs=" << count;
        // The LoRA GEMM: the ten row-major jobs in one launch per conversion
        // chunk of eight jobs (two); the whole group one job at a time,
        // eleven launches.
        EXPECT_EQ(b->lora_gemm_calls() - lora_calls, lora_gemm ? (count == kGroupBatched ? 2 : 11) : 0)
            << DTypeName(t) << " " << mode_name[mode] << " n=" << n << " jobs=" << count;
        std::vector<std::vector<float>> got(count);
        for (int j = 0; j < count; ++j) got[j] = Host(dy[j], y0[j].size(), b.get());
        CheckGroup(d, &cpu_, n, x, y0, got, u + 1e-4,
                   "GroupedMatMul " + std::string(DTypeName(t)) + " " + mode_name[mode] + " n=" + std::to_string(n) +
                       " jobs=" + std::to_string(count));
        // Where the backend takes 16-bit inputs for n rows (every product on
        // cuBLAS), the jobs without an input activation again with x given
        // already rounded (as LayerNormShiftMix writes it): the same
        // products of the same values, bit for bit.
        const bool half_inputs = b->MatMulInputType(n) == t;
        EXPECT_EQ(half_inputs, n > (mode == 0   ? CudaBackendOptions::kMaxSkinnyRows
                                    : mode == 1 ? CudaBackendOptions::kDefaultSkinnyRows
                                    : mode == 3 ? CudaBackendOptions::kDefaultSkinnyLoraRows
                                                : 0))
            << mode_name[mode] << " n=" << n;
        if (half_inputs) {
          std::vector<float*> dx16(count);
          for (int j = 0; j < count; ++j) {
            std::vector<float> packed((x[j].size() + 1) / 2);
            ConvertFromF32(x[j].data(), t, packed.data(), x[j].size());
            dx16[j] = Dev(packed, b.get());
            b->Free(dy[j]);
            dy[j] = Dev(InitialY(j, y0[j], count), b.get());
          }
          for (int j = 0; j < count; ++j) {
            const GroupSpec& sp = kGroupSpecs[j];
            const int from = sp.x_from < 0 ? j : sp.x_from;
            gjobs[j] = {sp.act == InputAct::kNone ? dx16[from] : dx[from], &d.gm[j], dy[sp.y_from < 0 ? j : sp.y_from],
                        sp.acc, sp.act, sp.act == InputAct::kNone ? t : DType::kF32};
          }
          b->GroupedMatMul(n, gjobs.data(), count);
          for (int j = 0; j < count; ++j) {
            EXPECT_EQ(Host(dy[j], y0[j].size(), b.get()), got[j])
                << "16-bit inputs, job " << j << " " << DTypeName(t) << " " << mode_name[mode] << " n=" << n;
            b->Free(dx16[j]);
          }
        }
        for (int j = 0; j < count; ++j) {
          b->Free(dx[j]);
          b->Free(dy[j]);
        }
      }
      ASSERT_TRUE(b->Sync().ok()) << b->Sync();
    }
  }
}

// Three products of one shape whose inputs all arrive in the weight type (the
// shift-mixes, MatMulInputType): nothing to convert, so the launch before the
// batched cuBLAS call only writes its pointer arrays. Bit for bit what the
// same jobs give from fp32 inputs. Then the inputs the op refuses: a 16-bit
// input with an input activation, or with weights of another type, are
// INVALID_ARGUMENT errors the backend keeps (its next Sync returns it).
TEST_F(CudaOpsTest, GroupedMatMulSixteenBitInputs) {
  const int rows = 256, cols = 512, n = 64;
  for (DType t : {DType::kF16, DType::kBF16}) {
    auto b = MakeGpu(t);
    ASSERT_NE(b, nullptr);
    ASSERT_EQ(b->MatMulInputType(n), t);
    EXPECT_EQ(b->MatMulInputType(CudaBackendOptions::kDefaultSkinnyRows), DType::kF32);
    std::vector<Matrix> w;
    std::vector<float*> dx(3), dx16(3), dy32(3), dy16(3);
    for (int j = 0; j < 3; ++j) {
      auto m = b->UploadMatrix(Rand(static_cast<size_t>(rows) * cols, 40 + j).data(), rows, cols);
      ASSERT_TRUE(m.ok()) << m.status();
      w.push_back(*m);
      const auto x = Rand(static_cast<size_t>(n) * cols, 50 + j, -3, 3);
      std::vector<float> packed((x.size() + 1) / 2);
      ConvertFromF32(x.data(), t, packed.data(), x.size());
      dx[j] = Dev(x, b.get());
      dx16[j] = Dev(packed, b.get());
      dy32[j] = Dev(std::vector<float>(static_cast<size_t>(n) * rows, kNaN), b.get());
      dy16[j] = Dev(std::vector<float>(static_cast<size_t>(n) * rows, kNaN), b.get());
    }
    std::vector<MatMulJob> j32, j16;
    for (int j = 0; j < 3; ++j) {
      j32.push_back({dx[j], &w[j], dy32[j]});
      j16.push_back({dx16[j], &w[j], dy16[j], false, InputAct::kNone, t});
    }
    b->GroupedMatMul(n, j32.data(), 3);
    b->GroupedMatMul(n, j16.data(), 3);
    for (int j = 0; j < 3; ++j) {
      const auto want = Host(dy32[j], static_cast<size_t>(n) * rows, b.get());
      EXPECT_TRUE(std::all_of(want.begin(), want.end(), [](float v) { return std::isfinite(v); }));
      EXPECT_EQ(Host(dy16[j], want.size(), b.get()), want) << DTypeName(t) << " job " << j;
    }
    ASSERT_TRUE(b->Sync().ok()) << b->Sync();
    // Refused: an activation on a 16-bit input.
    {
      auto bad = MakeGpu(t);
      ASSERT_NE(bad, nullptr);
      auto m = bad->UploadMatrix(Rand(static_cast<size_t>(rows) * cols, 60).data(), rows, cols);
      ASSERT_TRUE(m.ok());
      const MatMulJob job{Dev(std::vector<float>(static_cast<size_t>(n) * cols / 2), bad.get()), &*m,
                          Dev(std::vector<float>(static_cast<size_t>(n) * rows, kNaN), bad.get()), false,
                          InputAct::kTanh, t};
      bad->GroupedMatMul(n, &job, 1);
      EXPECT_EQ(bad->Sync().code(), absl::StatusCode::kInvalidArgument) << bad->Sync();
    }
    // Refused: a 16-bit input of the other type.
    {
      auto bad = MakeGpu(t);
      ASSERT_NE(bad, nullptr);
      auto m = bad->UploadMatrix(Rand(static_cast<size_t>(rows) * cols, 61).data(), rows, cols);
      ASSERT_TRUE(m.ok());
      const DType other = t == DType::kF16 ? DType::kBF16 : DType::kF16;
      const MatMulJob job{Dev(std::vector<float>(static_cast<size_t>(n) * cols / 2), bad.get()), &*m,
                          Dev(std::vector<float>(static_cast<size_t>(n) * rows, kNaN), bad.get()), false,
                          InputAct::kNone, other};
      bad->GroupedMatMul(n, &job, 1);
      EXPECT_EQ(bad->Sync().code(), absl::StatusCode::kInvalidArgument) << bad->Sync();
    }
  }
}

// The batched products' pointer arrays under CUDA graphs: passes of 17 and
// 300 rows, each seen eagerly, then captured, then replayed, on new input
// values every time. The group's first eleven jobs (with job 11, which
// writes job 7's output, the group would run one job at a time, with no
// batched call). The 300-row pass grows the conversion buffer (it moves)
// between the 17-row pass's eager run and its capture, so the arrays the
// capture records must name the buffer as it is then.
TEST_F(CudaOpsTest, GroupedMatMulCublasPathInCapturedPasses) {
  const int count = kGroupBatched;
  for (DType t : {DType::kF16, DType::kBF16}) {
    const double u = t == DType::kF16 ? 1.0 / 2048 : 1.0 / 256;
    auto b = CudaBackend::Create({.device = 0,
                                  .weight_dtype = t,
                                  .embedding_dtype = t,
                                  .cuda_graphs = true,
                                  .skinny_lora_rows = 0,
                                  .lora_gemm_rows = 0});
    ASSERT_TRUE(b.ok()) << b.status();
    if (!(*b)->graphs_enabled()) GTEST_SKIP() << "graphs turned off by RWKV_CUDA_GRAPHS";
    const GroupData d = UploadGroup(b->get(), &cpu_, t);
    const int max_n = 300;
    std::vector<float*> dx(count), dy(count);
    for (int j = 0; j < count; ++j) {
      dx[j] = Dev(std::vector<float>(static_cast<size_t>(max_n) * kGroupSpecs[j].cols), b->get());
      dy[j] = Dev(std::vector<float>(static_cast<size_t>(max_n) * kGroupSpecs[j].rows), b->get());
    }
    std::vector<MatMulJob> gjobs(count);
    for (int j = 0; j < count; ++j) {
      const GroupSpec& sp = kGroupSpecs[j];
      gjobs[j] = {dx[sp.x_from < 0 ? j : sp.x_from], &d.gm[j], dy[sp.y_from < 0 ? j : sp.y_from], sp.acc, sp.act};
    }
    int run = 0;
    for (int n : {17, 300, 17, 17, 300, 300}) {
      ++run;
      std::vector<std::vector<float>> x(count), y0(count);
      for (int j = 0; j < count; ++j) {
        const GroupSpec& sp = kGroupSpecs[j];
        x[j] = Rand(static_cast<size_t>(n) * sp.cols, 1000 * run + j, -3, 3);
        y0[j] = Rand(static_cast<size_t>(n) * sp.rows, 2000 * run + j);
        ASSERT_TRUE((*b)->Upload(x[j].data(), dx[j], x[j].size()).ok());
        ASSERT_TRUE((*b)->Upload(y0[j].data(), dy[j], y0[j].size()).ok());
        if (!sp.acc) y0[j].assign(y0[j].size(), 0.0f);  // overwritten
      }
      const Segment seg{0, 0, n};
      const std::vector<int32_t> tokens(static_cast<size_t>(n), 0);
      (*b)->BeginPass(&seg, 1, tokens.data(), n, nullptr, 0);
      (*b)->GroupedMatMul(n, gjobs.data(), count);
      (*b)->EndPass();
      std::vector<std::vector<float>> got(count);
      for (int j = 0; j < count; ++j) got[j] = Host(dy[j], y0[j].size(), b->get());
      CheckGroup(d, &cpu_, n, x, y0, got, u + 1e-4,
                 "GroupedMatMul graphs " + std::string(DTypeName(t)) + " pass " + std::to_string(run) + " n=" +
                     std::to_string(n));
    }
    ASSERT_TRUE((*b)->Sync().ok()) << (*b)->Sync();
    EXPECT_EQ((*b)->graphs_captured(), 2);
    EXPECT_EQ((*b)->graph_replays(), 2);
    // Two batched calls a pass, in the four passes that ran or captured them.
    EXPECT_EQ((*b)->blas_batched_calls(), 8);
  }
}

// The FFN down-projection: relu² of the key projection times ffn.value, the
// latter stored input-major on the GPU. Up to sparse_ffn_rows rows the sparse
// kernel (fp32 coefficients: 1e-4 of the magnitude against the CPU on the
// same rounded weights), above relu² + cuBLAS (input rounded: u + 1e-4).
// About 25% of h is positive, as in the models; one row is all negative (no
// active unit: y stays 0, or y0 when accumulating). Widths: a partial
// 1024-column block (1032), a hidden size that is no multiple of 32 (520).
// Two tests: the passes the sparse kernel takes (up to sparse_ffn_rows rows)
// and those cuBLAS takes (above them, in batch-invariant mode, and a plain
// MatMul with the input-major matrix), apart so that the bundle can
// racecheck our kernel without cuBLAS's (kernels/gpu_test_bundle.sh says
// why).
class CudaReluSquareTest : public CudaOpsTest {
 protected:
  void Check(bool sparse_part);
};

TEST_F(CudaReluSquareTest, SparseKernelAgainstCpu) { Check(true); }
TEST_F(CudaReluSquareTest, CublasAgainstCpu) { Check(false); }

void CudaReluSquareTest::Check(bool sparse_part) {
  struct Shape {
    int C, F;
  };
  for (DType t : {DType::kF16, DType::kBF16}) {
    // The default, the sparse kernel up to 16 rows, and batch-invariant
    // mode (never sparse).
    for (int mode : {0, 1, 2}) {
      const bool invariant = mode == 2;
      if (sparse_part && invariant) continue;  // never sparse
      auto b = MakeGpu(t, invariant, CudaBackendOptions::kDefaultSmallBatchRows,
                       CudaBackendOptions::kDefaultSkinnyRows, CudaBackendOptions::kDefaultSkinnyLoraRows,
                       mode == 1 ? 16 : CudaBackendOptions::kDefaultSparseFfnRows);
      ASSERT_NE(b, nullptr);
      EXPECT_EQ(b->sparse_ffn_rows(), invariant ? 0 : mode == 1 ? 16 : CudaBackendOptions::kDefaultSparseFfnRows);
      const double u = t == DType::kF16 ? 1.0 / 2048 : 1.0 / 256;
      for (Shape s : {Shape{136, 520}, Shape{1032, 2048}, Shape{768, 3072}}) {
        const auto w = Rand(static_cast<size_t>(s.C) * s.F, s.C + s.F);  // [C, F]: out x in
        const auto wr = Rounded(w, t);
        auto gw = b->UploadSparseInputMatrix(w.data(), s.C, s.F);
        ASSERT_TRUE(gw.ok()) << gw.status();
        EXPECT_TRUE(gw->input_major);
        auto cw = cpu_.UploadMatrix(wr.data(), s.C, s.F);
        ASSERT_TRUE(cw.ok());
        for (int n : {1, 2, 3, 8, 16, 17, 40}) {
          const bool sparse = n <= b->sparse_ffn_rows();
          if (sparse != sparse_part) continue;
          auto h = Rand(static_cast<size_t>(n) * s.F, n + 7, -3, 1);
          if (n > 1) {
            for (int f = s.F; f < 2 * s.F; ++f) h[static_cast<size_t>(f)] = -std::fabs(h[static_cast<size_t>(f)]);
          }
          const auto y0 = Rand(static_cast<size_t>(n) * s.C, n + 8);
          std::vector<float> relu2 = h;
          cpu_.ReluSquare(relu2.data(), static_cast<int64_t>(relu2.size()));
          for (bool acc : {false, true}) {
            const std::vector<double> mag = DotMagnitude(relu2, wr, n, s.C, s.F, acc ? &y0 : nullptr);
            const std::string tag = std::string(DTypeName(t)) + (invariant ? " invariant" : "") +
                                    " sparse<=" + std::to_string(b->sparse_ffn_rows()) + " C=" +
                                    std::to_string(s.C) + " F=" + std::to_string(s.F) + " n=" + std::to_string(n) +
                                    (acc ? " acc" : "") + (sparse ? " (sparse)" : "");
            float* dh = Dev(h, b.get());
            float* dy = Dev(acc ? y0 : std::vector<float>(y0.size(), kNaN), b.get());
            b->ReluSquareMatMul(dh, n, *gw, dy, acc, DType::kF32);
            const auto got = Host(dy, y0.size(), b.get());
            std::vector<float> want = acc ? y0 : std::vector<float>(y0.size()), hc = h;
            cpu_.ReluSquareMatMul(hc.data(), n, *cw, want.data(), acc, DType::kF32);
            ExpectClose(got, want, sparse ? 1e-4 : u + 1e-4, 0, "ReluSquareMatMul " + tag, &mag);
            if (n > 1 && sparse) {
              ExpectExact(std::vector<float>(got.begin() + s.C, got.begin() + 2 * s.C),
                          std::vector<float>(want.begin() + s.C, want.begin() + 2 * s.C),
                          "ReluSquareMatMul inactive row " + tag);
            }
          }
        }
        // A plain MatMul with the input-major matrix (cuBLAS, op N).
        for (int n : {1, 20}) {
          if (sparse_part) break;
          const auto x = Rand(static_cast<size_t>(n) * s.F, n + 9);
          float* dy = Poisoned(static_cast<size_t>(n) * s.C);
          b->MatMul(Dev(x, b.get()), n, *gw, dy, false);
          std::vector<float> want(static_cast<size_t>(n) * s.C);
          cpu_.MatMul(x.data(), n, *cw, want.data(), false);
          const std::vector<double> mag = DotMagnitude(x, wr, n, s.C, s.F, nullptr);
          ExpectClose(Host(dy, want.size(), b.get()), want, u + 1e-4, 0,
                      "MatMul input-major " + std::string(DTypeName(t)) + " C=" + std::to_string(s.C) +
                          " n=" + std::to_string(n),
                      &mag);
        }
      }
    }
  }
}

// The RWKV-4 gates in one launch each (SigmoidGate: out = sigmoid(r) * y,
// SigmoidMulAdd: x += sigmoid(r) * t) against the two-op compositions on the
// same GPU, bit for bit (the same per-element arithmetic), and against the
// CPU within 1e-6 (1 + |x|) (expf differs by an ulp or so). Counts that do
// and do not divide into float4s, buffers off the 16-byte alignment (the
// scalar path), fp32 output in place and fp16/bf16 output into another
// buffer (the composition's result rounded on the host to nearest even).
TEST_F(CudaOpsTest, SigmoidGatesMatchCompositionsAndCpu) {
  for (const int64_t n : {int64_t{4096}, int64_t{100003}}) {
    for (const size_t off : {size_t{0}, size_t{1}}) {
      const std::string tag = " n=" + std::to_string(n) + (off ? " unaligned" : "");
      const size_t m = static_cast<size_t>(n) + off;
      const auto r = Rand(m, 51, -6, 6), y = Rand(m, 52, -3, 3), t = Rand(m, 53, -3, 3), x = Rand(m, 54, -3, 3);
      // SigmoidGate, fp32 in place, against Sigmoid then Mul.
      float *dr1 = Dev(r), *dy1 = Dev(y), *dr2 = Dev(r), *dy2 = Dev(y);
      gpu_->SigmoidGate(dy1 + off, dr1 + off, n, dy1 + off, DType::kF32);
      gpu_->Sigmoid(dr2 + off, n);
      gpu_->Mul(dy2 + off, dr2 + off, n);
      const std::vector<float> got = Host(dy1 + off, static_cast<size_t>(n)),
                               want = Host(dy2 + off, static_cast<size_t>(n));
      EXPECT_EQ(0, std::memcmp(got.data(), want.data(), got.size() * sizeof(float))) << "SigmoidGate fp32" << tag;
      EXPECT_EQ(0, std::memcmp(Host(dr1 + off, static_cast<size_t>(n)).data(), r.data() + off, n * sizeof(float)))
          << "SigmoidGate leaves r" << tag;
      std::vector<float> cpu_r(r.begin() + off, r.end()), cpu_y(y.begin() + off, y.end());
      cpu_.SigmoidGate(cpu_y.data(), cpu_r.data(), n, cpu_y.data(), DType::kF32);
      std::vector<double> scale(static_cast<size_t>(n));
      for (size_t i = 0; i < scale.size(); ++i) scale[i] = 1 + std::fabs(cpu_y[i]);
      ExpectClose(got, cpu_y, 1e-6, 0, "SigmoidGate vs CPU" + tag, &scale);
      // 16-bit output into its own buffer: the fp32 result rounded.
      for (DType ot : {DType::kF16, DType::kBF16}) {
        float* dy3 = Dev(y);
        float* o16 = Dev(Poisoned16(m + 2));
        gpu_->SigmoidGate(dy3 + off, dr1 + off, n, o16 + off, ot);
        std::vector<float> want16((static_cast<size_t>(n) + 1) / 2, 0.0f);
        ConvertFromF32(want.data(), ot, want16.data(), static_cast<size_t>(n));
        std::vector<float> got16 = Host(o16 + off, want16.size());
        if (n % 2 == 1) {  // the last word's upper half is not ours
          uint32_t* a = reinterpret_cast<uint32_t*>(&got16.back());
          uint32_t* b = reinterpret_cast<uint32_t*>(&want16.back());
          *a &= 0xFFFFu;
          *b &= 0xFFFFu;
        }
        EXPECT_EQ(0, std::memcmp(got16.data(), want16.data(), want16.size() * sizeof(float)))
            << "SigmoidGate " << DTypeName(ot) << tag;
        EXPECT_EQ(0, std::memcmp(Host(dy3 + off, static_cast<size_t>(n)).data(), y.data() + off, n * sizeof(float)))
            << "SigmoidGate into another buffer leaves y" << tag;
      }
      // SigmoidMulAdd against Sigmoid then MulAdd.
      float *dx1 = Dev(x), *dx2 = Dev(x), *dr3 = Dev(r), *dr4 = Dev(r), *dt = Dev(t);
      gpu_->SigmoidMulAdd(dx1 + off, dr3 + off, dt + off, n);
      gpu_->Sigmoid(dr4 + off, n);
      gpu_->MulAdd(dx2 + off, dr4 + off, dt + off, n);
      const std::vector<float> gx = Host(dx1 + off, static_cast<size_t>(n)), wx = Host(dx2 + off, static_cast<size_t>(n));
      EXPECT_EQ(0, std::memcmp(gx.data(), wx.data(), gx.size() * sizeof(float))) << "SigmoidMulAdd" << tag;
      std::vector<float> cpu_x(x.begin() + off, x.end()), cpu_r2(r.begin() + off, r.end());
      cpu_.SigmoidMulAdd(cpu_x.data(), cpu_r2.data(), t.data() + off, n);
      for (size_t i = 0; i < scale.size(); ++i) scale[i] = 1 + std::fabs(cpu_x[i]);
      ExpectClose(gx, cpu_x, 1e-6, 0, "SigmoidMulAdd vs CPU" + tag, &scale);
    }
  }
}

// The FFN with its hidden in fp16 (FfnHiddenType): the key product writes
// [n, F] fp16 from 16-bit inputs (as LayerNormShiftMix writes them), relu²
// runs in place on it, the down-projection reads it. The hidden against the
// CPU's product of the same rounded inputs, rounded (u + 1e-4 of the dot
// magnitudes); the output against the CPU's down-projection of relu² of the
// GPU's own hidden, rounded as the kernel rounds it (1e-4: the same products
// in another order). bf16 weights and small passes keep an fp32 hidden.
TEST_F(CudaOpsTest, FfnHiddenIn16BitsAgainstCpu) {
  auto b16 = MakeGpu(DType::kBF16);
  ASSERT_NE(b16, nullptr);
  EXPECT_EQ(b16->FfnHiddenType(300), DType::kF32);
  auto b = MakeGpu(DType::kF16);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->FfnHiddenType(1), DType::kF32);
  EXPECT_EQ(b->FfnHiddenType(CudaBackendOptions::kDefaultSkinnyRows), DType::kF32);
  // The skinny GEMM's LoRA products take fp32 inputs too, so a pass's inputs
  // are 16-bit only above both limits.
  EXPECT_EQ(b->FfnHiddenType(CudaBackendOptions::kDefaultSkinnyLoraRows), DType::kF32);
  const int first16 =
      std::max(CudaBackendOptions::kDefaultSkinnyRows, CudaBackendOptions::kDefaultSkinnyLoraRows) + 1;
  const DType t = DType::kF16;
  const double u = 1.0 / 2048;
  struct Shape {
    int C, F;
  };
  // C = 4,096: the down-projection's split-free path (cuBLASLt) up to its
  // rows, also without graphs (no explicit cuBLAS workspace: another
  // heuristic answer).
  auto eager =
      CudaBackend::Create({.device = 0, .weight_dtype = t, .embedding_dtype = t, .cuda_graphs = false});
  ASSERT_TRUE(eager.ok()) << eager.status();
  for (CudaBackend* bk : {b.get(), eager->get()}) {
    for (Shape s :
         {Shape{136, 520}, Shape{256, 1032}, Shape{CudaBackendOptions::kSplitFreeFfnMinOutputs, 1032}}) {
      if (bk != b.get() && s.C < CudaBackendOptions::kSplitFreeFfnMinOutputs) continue;
      const auto wk = Rand(static_cast<size_t>(s.F) * s.C, 3 * s.F + s.C, -1, 1);  // key [F, C]
      const auto wv = Rand(static_cast<size_t>(s.C) * s.F, s.F + 5 * s.C);         // value [C, F]
      const auto wkr = Rounded(wk, t), wvr = Rounded(wv, t);
      auto gk = bk->UploadMatrix(wk.data(), s.F, s.C);
      auto gv = bk->UploadSparseInputMatrix(wv.data(), s.C, s.F);
      auto ck = cpu_.UploadMatrix(wkr.data(), s.F, s.C);
      auto cv = cpu_.UploadMatrix(wvr.data(), s.C, s.F);
      ASSERT_TRUE(gk.ok() && gv.ok() && ck.ok() && cv.ok());
      for (int n : {first16, 64, CudaBackendOptions::kDefaultSplitFreeFfnRows,
                    CudaBackendOptions::kDefaultSplitFreeFfnRows + 1, 300}) {
        ASSERT_EQ(bk->FfnHiddenType(n), t) << n;
        ASSERT_EQ(bk->MatMulInputType(n), t) << n;
        const std::string tag = std::string(bk == b.get() ? "" : " no graphs") + " C=" + std::to_string(s.C) +
                                " F=" + std::to_string(s.F) + " n=" + std::to_string(n);
        const auto xr = Rounded(Rand(static_cast<size_t>(n) * s.C, 40 + n, -2, 2), t);
        std::vector<float> x16((xr.size() + 1) / 2);
        ConvertFromF32(xr.data(), t, x16.data(), xr.size());
        const size_t nF = static_cast<size_t>(n) * s.F;
        float* dh = Dev(Poisoned16(nF), bk);
        MatMulJob key = {Dev(x16, bk), &*gk, dh, false, InputAct::kNone, t};
        key.y_type = t;
        bk->GroupedMatMul(n, &key, 1);
        std::vector<float> h(nF), want_h(nF);
        ConvertToF32(t, Host(dh, (nF + 1) / 2, bk).data(), h.data(), nF);
        cpu_.MatMul(xr.data(), n, *ck, want_h.data(), false);
        const std::vector<double> hmag = DotMagnitude(xr, wkr, n, s.F, s.C, nullptr);
        ExpectClose(h, want_h, u + 1e-4, 0, "FFN hidden fp16" + tag, &hmag);
        // relu² as the kernel computes it: widen, square in fp32, round.
        std::vector<float> relu2(nF);
        for (size_t e = 0; e < nF; ++e) relu2[e] = h[e] > 0.0f ? h[e] * h[e] : 0.0f;
        relu2 = Rounded(relu2, t);
        for (bool acc : {false, true}) {
          const auto y0 = Rand(static_cast<size_t>(n) * s.C, n + 60);
          float* dy = Dev(acc ? y0 : std::vector<float>(y0.size(), kNaN), bk);
          if (acc) {
            // dh holds relu² after the first call: rebuild the hidden.
            std::vector<float> h16((nF + 1) / 2);
            ConvertFromF32(h.data(), t, h16.data(), nF);
            ASSERT_TRUE(bk->Upload(h16.data(), dh, h16.size()).ok());
          }
          const int64_t lt_before = bk->blas_lt_calls();
          bk->ReluSquareMatMul(dh, n, *gv, dy, acc, t);
          const bool split_free = s.C >= CudaBackendOptions::kSplitFreeFfnMinOutputs &&
                                  n <= CudaBackendOptions::kDefaultSplitFreeFfnRows;
          EXPECT_EQ(bk->blas_lt_calls() - lt_before, split_free ? 1 : 0) << tag;
          std::vector<float> want = acc ? y0 : std::vector<float>(y0.size());
          cpu_.MatMul(relu2.data(), n, *cv, want.data(), acc);
          const std::vector<double> mag = DotMagnitude(relu2, wvr, n, s.C, s.F, acc ? &y0 : nullptr);
          ExpectClose(Host(dy, y0.size(), bk), want, 1e-4, 0,
                      "FFN down-projection of an fp16 hidden" + tag + (acc ? " acc" : ""), &mag);
        }
      }
    }
  }
  // Refused, each on a fresh backend (errors are sticky): a 16-bit output
  // from an fp32 input, a 16-bit output added to (accumulate), a hidden of
  // the other 16-bit type than the weights.
  const int n = 64, Cx = 136, Fx = 520;
  for (int c = 0; c < 3; ++c) {
    auto bad = MakeGpu(DType::kF16);
    ASSERT_NE(bad, nullptr);
    const std::string what = c == 0 ? "fp32 input" : c == 1 ? "accumulate" : "bf16 hidden";
    if (c < 2) {
      auto m = bad->UploadMatrix(Rand(static_cast<size_t>(Fx) * Cx, 70).data(), Fx, Cx);
      ASSERT_TRUE(m.ok());
      MatMulJob job = {Dev(std::vector<float>(static_cast<size_t>(n) * Cx), bad.get()),
                       &*m,
                       Dev(std::vector<float>(static_cast<size_t>(n) * Fx), bad.get()),
                       c == 1,
                       InputAct::kNone,
                       c == 0 ? DType::kF32 : DType::kF16};
      job.y_type = DType::kF16;
      bad->GroupedMatMul(n, &job, 1);
    } else {
      auto m = bad->UploadSparseInputMatrix(Rand(static_cast<size_t>(Cx) * Fx, 71).data(), Cx, Fx);
      ASSERT_TRUE(m.ok());
      bad->ReluSquareMatMul(Dev(std::vector<float>(static_cast<size_t>(n) * Fx / 2), bad.get()), n, *m,
                            Dev(std::vector<float>(static_cast<size_t>(n) * Cx), bad.get()), false,
                            DType::kBF16);
    }
    EXPECT_EQ(bad->Sync().code(), absl::StatusCode::kInvalidArgument) << what << ": " << bad->Sync();
  }
}

TEST_F(CudaOpsTest, GatherRowsAndStaging) {
  const int C = 48, rows = 10;
  const auto x = Rand(static_cast<size_t>(rows) * C, 4);
  const std::vector<int32_t> idx = {9, 0, 3, 3, 7};
  float *dx = Dev(x), *out = Poisoned(idx.size() * C);
  gpu_->GatherRows(dx, idx.data(), static_cast<int>(idx.size()), C, out);
  std::vector<float> want(idx.size() * C);
  cpu_.GatherRows(x.data(), idx.data(), static_cast<int>(idx.size()), C, want.data());
  ExpectExact(Host(out, want.size()), want, "GatherRows");
  // Many staged arrays before one Sync (the staging space wraps), then one
  // array larger than the staging buffer (it grows).
  float* one = Poisoned(C);
  for (int i = 0; i < 6000; ++i) {
    const int32_t r = i % rows;
    gpu_->GatherRows(dx, &r, 1, C, one);
  }
  ExpectExact(Host(one, C), std::vector<float>(x.begin() + 9 * C, x.begin() + 10 * C), "GatherRows after wrap");
  std::vector<int32_t> many(400000);
  for (size_t i = 0; i < many.size(); ++i) many[i] = static_cast<int32_t>((i * 31) % rows);
  float* big = Poisoned(many.size());
  gpu_->GatherRows(dx, many.data(), static_cast<int>(many.size()), 1, big);  // C = 1: column 0 of each row
  std::vector<float> want_big(many.size());
  cpu_.GatherRows(x.data(), many.data(), static_cast<int>(many.size()), 1, want_big.data());
  // With C = 1 the CPU reads x[rows[i]], the GPU the same: the view is (rows*C, 1).
  ExpectExact(Host(big, many.size()), want_big, "GatherRows 400000 staged ids");
}

// Segments with several rows (one longer than a kernel's row chunk), in slots
// out of order, slot 2 and 4 untouched; state blocks at an odd offset and
// stride, as a layer's block inside a slot is.
const std::vector<Segment> kSegs = {{5, 0, 3}, {0, 3, 1}, {3, 4, 20}, {1, 24, 2}, {6, 26, 1}};
constexpr int kRows = 27, kSlots = 7;

TEST_F(CudaOpsTest, TokenShiftAcrossSegmentsAndSlots) {
  for (int C : {64, 100, 768}) {
    const int64_t stride = 3 * C + 5, offset = C + 2;
    const auto xx = Rand(static_cast<size_t>(kRows) * C, C);
    auto state = Rand(static_cast<size_t>(kSlots * stride), C + 1);
    float *dxx = Dev(xx), *dstate = Dev(state), *dd = Poisoned(xx.size());
    gpu_->TokenShift(dxx, kSegs.data(), static_cast<int>(kSegs.size()), C, {dstate + offset, stride}, dd);
    std::vector<float> want_d(xx.size());
    cpu_.TokenShift(xx.data(), kSegs.data(), static_cast<int>(kSegs.size()), C, {state.data() + offset, stride},
                    want_d.data());
    ExpectExact(Host(dd, xx.size()), want_d, "TokenShift d C=" + std::to_string(C));
    ExpectExact(Host(dstate, state.size()), state, "TokenShift state C=" + std::to_string(C));
  }
}

TEST_F(CudaOpsTest, MixUpToSixOutputs) {
  const int C = 96;
  for (int n : {1, 7}) {
    const auto xx = Rand(static_cast<size_t>(n) * C, n), d = Rand(static_cast<size_t>(n) * C, n + 1);
    float *dxx = Dev(xx), *dd = Dev(d);
    for (int count = 1; count <= 6; ++count) {
      std::vector<std::vector<float>> mixes, want;
      std::vector<const float*> dmix, hmix;
      std::vector<float*> douts, houts;
      for (int j = 0; j < count; ++j) {
        mixes.push_back(Rand(C, 10 + j));
        want.emplace_back(xx.size());
      }
      for (int j = 0; j < count; ++j) {
        dmix.push_back(Dev(mixes[j]));
        douts.push_back(Poisoned(xx.size()));
        hmix.push_back(mixes[j].data());
        houts.push_back(want[j].data());
      }
      gpu_->Mix(dxx, dd, n, C, dmix.data(), douts.data(), count);
      cpu_.Mix(xx.data(), d.data(), n, C, hmix.data(), houts.data(), count);
      for (int j = 0; j < count; ++j) {
        ExpectClose(Host(douts[j], xx.size()), want[j], 1e-5, 1e-6,
                    "Mix n=" + std::to_string(n) + " count=" + std::to_string(count) + " out " + std::to_string(j));
      }
    }
  }
}

TEST_F(CudaOpsTest, Elementwise) {
  for (int64_t n : {int64_t{1}, int64_t{1000}, int64_t{100003}}) {
    const auto x = Rand(static_cast<size_t>(n), 7, -8, 8), a = Rand(static_cast<size_t>(n), 8),
               b = Rand(static_cast<size_t>(n), 9);
    const std::string tag = " n=" + std::to_string(n);
    struct Case {
      const char* name;
      std::function<void(Backend&, float*, const float*, const float*)> op;
    };
    const Case cases[] = {
        {"Sigmoid", [n](Backend& be, float* p, const float*, const float*) { be.Sigmoid(p, n); }},
        {"Tanh", [n](Backend& be, float* p, const float*, const float*) { be.Tanh(p, n); }},
        {"ReluSquare", [n](Backend& be, float* p, const float*, const float*) { be.ReluSquare(p, n); }},
        {"Mul", [n](Backend& be, float* p, const float* pa, const float*) { be.Mul(p, pa, n); }},
        {"MulAdd", [n](Backend& be, float* p, const float* pa, const float* pb) { be.MulAdd(p, pa, pb, n); }},
    };
    for (const Case& c : cases) {
      float *dx = Dev(x), *da = Dev(a), *db = Dev(b);
      c.op(*gpu_, dx, da, db);
      std::vector<float> want = x;
      c.op(cpu_, want.data(), a.data(), b.data());
      ExpectClose(Host(dx, x.size()), want, 1e-5, 1e-6, c.name + tag);
    }
  }
  const int n = 5, C = 77;
  const auto x = Rand(n * C, 11, -6, 6), bias = Rand(C, 12);
  float *dx = Dev(x), *dbias = Dev(bias);
  gpu_->SigmoidBias(dx, dbias, n, C);
  std::vector<float> want = x;
  cpu_.SigmoidBias(want.data(), bias.data(), n, C);
  ExpectClose(Host(dx, x.size()), want, 1e-5, 1e-6, "SigmoidBias");
}

TEST_F(CudaOpsTest, V7DecayValueResidualAndKeyPrep) {
  struct Dims {
    int N, C;
  };
  for (Dims dm : {Dims{64, 64}, Dims{64, 768}, Dims{32, 96}, Dims{16, 48}}) {
    const int N = dm.N, C = dm.C;
    for (int n : {1, 3, 17}) {
      const size_t nC = static_cast<size_t>(n) * C;
      const std::string tag = " N=" + std::to_string(N) + " C=" + std::to_string(C) + " n=" + std::to_string(n);
      // Decay.
      const auto w = Rand(nC, n, -5, 5), w0 = Rand(C, 2, -2, 2);
      float *dw = Dev(w), *dw0 = Dev(w0);
      gpu_->V7Decay(dw, dw0, n, C);
      std::vector<float> want_w = w;
      cpu_.V7Decay(want_w.data(), w0.data(), n, C);
      ExpectClose(Host(dw, nC), want_w, 1e-5, 1e-6, "V7Decay" + tag);
      // Value residual.
      const auto v = Rand(nC, 3), vf = Rand(nC, 4), gate = Rand(nC, 5, -4, 4), v0 = Rand(C, 6);
      float* dv = Dev(v);
      gpu_->V7ValueResidual(dv, Dev(vf), Dev(gate), Dev(v0), n, C);
      std::vector<float> want_v = v;
      cpu_.V7ValueResidual(want_v.data(), vf.data(), gate.data(), v0.data(), n, C);
      ExpectClose(Host(dv, nC), want_v, 1e-5, 1e-6, "V7ValueResidual" + tag);
      // Key prep.
      const auto k = Rand(nC, 7, -3, 3), a = Rand(nC, 8, 0, 1), k_k = Rand(C, 9, 0.5f, 1.5f),
                 k_a = Rand(C, 10, 0.5f, 1.5f);
      float *dk = Dev(k), *dkk = Poisoned(nC);
      gpu_->V7KeyPrep(dk, dkk, Dev(a), Dev(k_k), Dev(k_a), n, C, N);
      std::vector<float> want_k = k, want_kk(nC);
      cpu_.V7KeyPrep(want_k.data(), want_kk.data(), a.data(), k_k.data(), k_a.data(), n, C, N);
      ExpectClose(Host(dk, nC), want_k, 1e-5, 1e-6, "V7KeyPrep k" + tag);
      ExpectClose(Host(dkk, nC), want_kk, 1e-5, 1e-6, "V7KeyPrep kk" + tag);
    }
  }
}

// LayerNorm + token shift + mixes in one op against the CPU's composition,
// over the multi-row segments of kSegs (a row's shift reads the LayerNorm of
// the row before it; the segment's last row becomes x_prev) and over one
// single-row segment (decode at batch 1), for every mix count the models use.
// With `aligned` the x_prev stride and offset are multiples of 4 floats, so
// C % 4 == 0 takes the float4 kernel (one float4 per thread up to C = 4096,
// four per thread above); otherwise the scalar one.
TEST_F(CudaOpsTest, LayerNormShiftMixAcrossSegments) {
  const std::vector<Segment> one = {{2, 0, 1}};
  for (int C : {64, 100, 768, 2048, 4096, 5120}) {
   for (bool aligned : {false, true}) {
    for (const std::vector<Segment>* segs : {&kSegs, &one}) {
      const int n = segs == &one ? 1 : kRows, nseg = static_cast<int>(segs->size());
      const int64_t stride = aligned ? 3 * C + 8 : 3 * C + 5, offset = aligned ? C + 4 : C + 2;
      auto x = Rand(static_cast<size_t>(n) * C, C + n, -3, 3);
      for (float& v : x) v += 2.0f;  // a mean, as in the residual stream
      const auto lw = Rand(C, 2, 0.5f, 1.5f), lb = Rand(C, 3);
      auto state = Rand(static_cast<size_t>(kSlots * stride), C + 1);
      float *dx = Dev(x), *dlw = Dev(lw), *dlb = Dev(lb), *dstate = Dev(state);
      for (int count : {1, 2, 3, 6}) {
        const std::string tag = " C=" + std::to_string(C) + " n=" + std::to_string(n) + " count=" + std::to_string(count) +
                                (aligned ? " aligned" : "");
        std::vector<std::vector<float>> mixes, want;
        std::vector<const float*> dmix, hmix;
        std::vector<float*> douts, houts;
        for (int j = 0; j < count; ++j) {
          mixes.push_back(Rand(C, 20 + j));
          want.emplace_back(static_cast<size_t>(n) * C);
        }
        for (int j = 0; j < count; ++j) {
          dmix.push_back(Dev(mixes[j]));
          douts.push_back(Poisoned(static_cast<size_t>(n) * C));
          hmix.push_back(mixes[j].data());
          houts.push_back(want[j].data());
        }
        std::vector<float> xx(x.size()), d(x.size());
        const std::vector<float> state_before = Host(dstate, state.size());
        gpu_->LayerNormShiftMix(dx, n, C, dlw, dlb, segs->data(), nseg, {dstate + offset, stride}, dmix.data(),
                                douts.data(), count, Poisoned(x.size()), Poisoned(x.size()), DType::kF32);
        cpu_.LayerNormShiftMix(x.data(), n, C, lw.data(), lb.data(), segs->data(), nseg,
                               {state.data() + offset, stride}, hmix.data(), houts.data(), count, xx.data(), d.data(),
                               DType::kF32);
        std::vector<std::vector<float>> got(static_cast<size_t>(count));
        for (int j = 0; j < count; ++j) {
          got[j] = Host(douts[j], want[j].size());
          ExpectClose(got[j], want[j], 1e-5, 1e-5, "LayerNormShiftMix out " + std::to_string(j) + tag);
        }
        // The state advanced once per call on both sides (the next count's
        // call starts from the new x_prev, on both).
        const std::vector<float> state_after = Host(dstate, state.size());
        ExpectClose(state_after, state, 1e-5, 1e-5, "LayerNormShiftMix x_prev" + tag);
        // 16-bit outputs (inputs of 16-bit products, MatMulInputType): the
        // same fp32 values rounded to nearest even, bit for bit what the
        // host's conversion makes of the fp32 outputs above, from the same
        // x_prev; the state advances as with fp32 outputs.
        for (DType t : {DType::kF16, DType::kBF16}) {
          float* dstate16 = Dev(state_before);
          std::vector<float*> d16;
          for (int j = 0; j < count; ++j) d16.push_back(Poisoned(static_cast<size_t>(n) * C));
          gpu_->LayerNormShiftMix(dx, n, C, dlw, dlb, segs->data(), nseg, {dstate16 + offset, stride}, dmix.data(),
                                  d16.data(), count, Poisoned(x.size()), Poisoned(x.size()), t);
          const size_t nC = static_cast<size_t>(n) * C;
          for (int j = 0; j < count; ++j) {
            const std::vector<float> raw = Host(d16[j], (nC + 1) / 2);
            std::vector<uint16_t> got16(nC), want16(nC);
            std::memcpy(got16.data(), raw.data(), nC * sizeof(uint16_t));
            ConvertFromF32(got[j].data(), t, want16.data(), nC);
            EXPECT_EQ(got16, want16) << "LayerNormShiftMix " << DTypeName(t) << " out " << j << tag;
          }
          EXPECT_EQ(Host(dstate16, state.size()), state_after) << "LayerNormShiftMix " << DTypeName(t) << tag;
        }
      }
    }
   }
  }
}

// The RWKV-7 prep in one op against the CPU's composition (decay, a, key
// prep, value residual), for a later layer (v0 given) and layer 0 (v_first =
// v).
TEST_F(CudaOpsTest, V7PrepMatchesComposedOps) {
  // off = 1: every buffer one float past an aligned address, which sends N = 64 and 128 (vector kernels) to
  // the any-N kernel.
  struct Dims {
    int N, C, off;
  };
  for (Dims dm : {Dims{64, 64, 0}, Dims{64, 2048, 0}, Dims{128, 256, 0}, Dims{32, 96, 0}, Dims{16, 48, 0},
                  Dims{64, 128, 1}, Dims{128, 256, 1}}) {
    const int N = dm.N, C = dm.C;
    auto Dev = [&](const std::vector<float>& h) { return DevAt(h, dm.off); };
    auto Poisoned = [&](size_t n) { return DevAt(std::vector<float>(n, kNaN), dm.off); };
    for (int n : {1, 3, 17}) {
      for (bool layer0 : {false, true}) {
        const size_t nC = static_cast<size_t>(n) * C;
        const std::string tag = " N=" + std::to_string(N) + " C=" + std::to_string(C) + " n=" + std::to_string(n) +
                                (layer0 ? " layer 0" : "") + (dm.off ? " unaligned" : "");
        const auto w = Rand(nC, 1, -5, 5), w0 = Rand(C, 2, -2, 2), a = Rand(nC, 3, -4, 4), a0 = Rand(C, 4),
                   k = Rand(nC, 5, -3, 3), k_k = Rand(C, 6, 0.5f, 1.5f), k_a = Rand(C, 7, 0.5f, 1.5f),
                   v = Rand(nC, 8), vf = Rand(nC, 9), gate = Rand(nC, 10, -4, 4), v0 = Rand(C, 11);
        float *dw = Dev(w), *da = Dev(a), *dk = Dev(k), *dkk = Poisoned(nC), *dv = Dev(v),
              *dvf = layer0 ? Poisoned(nC) : Dev(vf);
        gpu_->V7Prep(dw, Dev(w0), da, Dev(a0), dk, dkk, Dev(k_k), Dev(k_a), dv, dvf, layer0 ? nullptr : Dev(gate),
                     layer0 ? nullptr : Dev(v0), n, C, N);
        std::vector<float> ww = w, wa = a, wk = k, wkk(nC), wv = v, wvf = vf;
        cpu_.V7Prep(ww.data(), w0.data(), wa.data(), a0.data(), wk.data(), wkk.data(), k_k.data(), k_a.data(),
                    wv.data(), wvf.data(), layer0 ? nullptr : gate.data(), layer0 ? nullptr : v0.data(), n, C, N);
        ExpectClose(Host(dw, nC), ww, 1e-5, 1e-6, "V7Prep w" + tag);
        ExpectClose(Host(da, nC), wa, 1e-5, 1e-6, "V7Prep a" + tag);
        ExpectClose(Host(dk, nC), wk, 1e-5, 1e-6, "V7Prep k" + tag);
        ExpectClose(Host(dkk, nC), wkk, 1e-5, 1e-6, "V7Prep kk" + tag);
        ExpectClose(Host(dv, nC), wv, 1e-5, 1e-6, "V7Prep v" + tag);
        ExpectClose(Host(dvf, nC), wvf, 1e-5, 1e-6, "V7Prep v_first" + tag);
      }
    }
  }
}

TEST_F(CudaOpsTest, V7Output) {
  // off = 1: every buffer one float past an aligned address (the any-N kernel for N = 64 and 128).
  struct Dims {
    int N, C, off;
  };
  for (Dims dm : {Dims{64, 128, 0}, Dims{64, 768, 0}, Dims{128, 256, 0}, Dims{32, 96, 0}, Dims{16, 48, 0},
                  Dims{64, 128, 1}, Dims{128, 384, 1}}) {
    auto Dev = [&](const std::vector<float>& h) { return DevAt(h, dm.off); };
    for (int n : {1, 5}) {
      const int N = dm.N, C = dm.C;
      const size_t nC = static_cast<size_t>(n) * C;
      const std::string tag = " N=" + std::to_string(N) + " C=" + std::to_string(C) + " n=" + std::to_string(n) +
                              (dm.off ? " unaligned" : "");
      const auto y = Rand(nC, 1, -3, 3), r = Rand(nC, 2), k = Rand(nC, 3), v = Rand(nC, 4), g = Rand(nC, 5),
                 r_k = Rand(C, 6), lnw = Rand(C, 7, 0.5f, 1.5f), lnb = Rand(C, 8);
      std::vector<float> want = y;
      cpu_.V7Output(want.data(), r.data(), k.data(), v.data(), g.data(), r_k.data(), lnw.data(), lnb.data(), n, C,
                    N, want.data(), DType::kF32);
      float *dr = Dev(r), *dk = Dev(k), *dv = Dev(v), *dg = Dev(g), *drk = Dev(r_k), *dw = Dev(lnw),
            *db = Dev(lnb);
      // In place, fp32.
      float* dy = Dev(y);
      gpu_->V7Output(dy, dr, dk, dv, dg, drk, dw, db, n, C, N, dy, DType::kF32);
      ExpectClose(Host(dy, nC), want, 1e-5, 1e-5, "V7Output" + tag);
      // Into another buffer, in each 16-bit type (the o-projection's input):
      // the fp32 result rounded once, y left as it was.
      for (DType t : {DType::kF16, DType::kBF16}) {
        const double u = t == DType::kF16 ? 1.0 / 2048 : 1.0 / 256;
        float* dy2 = Dev(y);
        float* out = Dev(Poisoned16(nC));
        gpu_->V7Output(dy2, dr, dk, dv, dg, drk, dw, db, n, C, N, out, t);
        const std::vector<float> packed = Host(out, (nC + 1) / 2);
        std::vector<float> got(nC);
        ConvertToF32(t, packed.data(), got.data(), nC);
        ExpectClose(got, want, u + 1e-5, 1e-5, "V7Output " + std::string(DTypeName(t)) + tag);
        ExpectExact(Host(dy2, nC), y, "V7Output input kept " + std::string(DTypeName(t)) + tag);
      }
    }
  }
}

TEST_F(CudaOpsTest, Wkv7InPlaceInSlotsAllHeadSizes) {
  // Aligned pools take the tiled kernel for N = 32, 64, 128 (16: the generic
  // one), and the 20-row segment the long-segment kernel in the same call;
  // offsets and strides off the 16-byte grid take the generic one.
  for (const bool aligned : {true, false})
  for (int N : {64, 128, 32, 16}) {
    const int H = N == 64 ? 12 : 3, C = H * N;  // 12 x 64: the 0.1B model's heads
    const int64_t offset = aligned ? 2 * C : 2 * C + 3,
                  stride = offset + static_cast<int64_t>(H) * N * N + (aligned ? 4 : 7);
    const size_t nC = static_cast<size_t>(kRows) * C;
    auto r = Rand(nC, 1), k = Rand(nC, 2), v = Rand(nC, 3), a = Rand(nC, 4, 0, 1), w = Rand(nC, 5, 0.545f, 1.0f),
         kk = Rand(nC, 6);
    NormaliseHeads(kk, N);
    auto state = Rand(static_cast<size_t>(kSlots * stride), 7, -0.5f, 0.5f);
    float* dstate = Dev(state);
    float* dy = Poisoned(nC);
    gpu_->Wkv7(kSegs.data(), static_cast<int>(kSegs.size()), C, N, {dstate + offset, stride}, Dev(r), Dev(w),
               Dev(k), Dev(v), Dev(kk), Dev(a), dy);
    std::vector<float> want_y(nC);
    cpu_.Wkv7(kSegs.data(), static_cast<int>(kSegs.size()), C, N, {state.data() + offset, stride}, r.data(),
              w.data(), k.data(), v.data(), kk.data(), a.data(), want_y.data());
    const std::string tag =
        " N=" + std::to_string(N) + " H=" + std::to_string(H) + (aligned ? " aligned" : " unaligned");
    std::vector<double> scale_y(nC), scale_s(state.size());
    for (size_t i = 0; i < nC; ++i) scale_y[i] = 1 + std::fabs(want_y[i]);
    for (size_t i = 0; i < state.size(); ++i) scale_s[i] = 1 + std::fabs(state[i]);
    ExpectClose(Host(dy, nC), want_y, 2e-5, 0, "Wkv7 y" + tag, &scale_y);
    const auto got_state = Host(dstate, state.size());
    ExpectClose(got_state, state, 2e-5, 0, "Wkv7 state" + tag, &scale_s);
    for (int slot : {2, 4}) {  // not in the batch: bit-identical
      const auto b = state.begin() + slot * stride;
      EXPECT_TRUE(std::equal(b, b + stride, got_state.begin() + slot * stride)) << "slot " << slot << tag;
    }
  }
}

// fp16 state: the kernel against the CPU op on the same fp16 slots. Both
// compute each update in fp32 and round it with the same deterministic
// stochastic rounding (fp16_state_rounding.h), but their fp32 results differ
// in the last bits (FMA contraction, order), and where one lies at a rounding
// threshold the two store neighbouring fp16 values; that element then
// differs by an fp16 ulp and nudges its row's later tokens. A CPU run against
// itself with inputs one fp32 ulp apart (the same kSegs) gives 0.07-0.27% of
// elements differing, at most 0.18 relative for small values and 1.3e-3 on y.
// So: y of each segment's first row (computed from identical states) within
// the fp32 bound; every y within 5e-3 (1 + |y|); at most 1% of state
// elements differing, each within 1e-2 (1 + |s|). A kernel rounding any other
// way (to nearest, another hash) differs in about half of the elements.
TEST_F(CudaOpsTest, Wkv7Fp16StateMatchesCpuTwin) {
  for (const bool aligned : {true, false})
  for (int N : {64, 128, 32, 16}) {
    const int H = N == 64 ? 12 : 3, C = H * N;
    const int64_t per_slot = static_cast<int64_t>(H) * N * N;  // fp16 values per slot
    const int64_t offset = aligned ? 2 * C : 2 * C + 1, stride = offset + per_slot / 2 + (aligned ? 4 : 3);
    const size_t nC = static_cast<size_t>(kRows) * C;
    auto r = Rand(nC, 11), k = Rand(nC, 12), v = Rand(nC, 13), a = Rand(nC, 14, 0, 1),
         w = Rand(nC, 15, 0.545f, 1.0f), kk = Rand(nC, 16);
    NormaliseHeads(kk, N);
    // The pool as floats, fp16 matrices from `offset` in each slot, the rest poison.
    const auto values = Rand(static_cast<size_t>(kSlots * per_slot), 17, -2, 2);
    std::vector<float> pool(static_cast<size_t>(kSlots * stride), kNaN);
    for (int s = 0; s < kSlots; ++s) {
      ConvertFromF32(values.data() + s * per_slot, DType::kF16, pool.data() + s * stride + offset,
                     static_cast<size_t>(per_slot));
    }
    float* dpool = Dev(pool);
    float* dy = Poisoned(nC);
    const int nseg = static_cast<int>(kSegs.size());
    gpu_->Wkv7(kSegs.data(), nseg, C, N, {dpool + offset, stride, DType::kF16}, Dev(r), Dev(w), Dev(k), Dev(v),
               Dev(kk), Dev(a), dy);
    std::vector<float> want_y(nC);
    cpu_.Wkv7(kSegs.data(), nseg, C, N, {pool.data() + offset, stride, DType::kF16}, r.data(), w.data(), k.data(),
              v.data(), kk.data(), a.data(), want_y.data());
    const std::string tag =
        " N=" + std::to_string(N) + " H=" + std::to_string(H) + (aligned ? " aligned" : " unaligned");
    const std::vector<float> got_y = Host(dy, nC);
    std::vector<float> got_first, want_first;
    for (const Segment& g : kSegs) {
      const auto row = [&](const std::vector<float>& x) {
        return std::vector<float>(x.begin() + static_cast<int64_t>(g.row_begin) * C,
                                  x.begin() + static_cast<int64_t>(g.row_begin + 1) * C);
      };
      const auto gr = row(got_y), wr = row(want_y);
      got_first.insert(got_first.end(), gr.begin(), gr.end());
      want_first.insert(want_first.end(), wr.begin(), wr.end());
    }
    std::vector<double> scale_first(want_first.size()), scale_y(nC);
    for (size_t i = 0; i < want_first.size(); ++i) scale_first[i] = 1 + std::fabs(want_first[i]);
    for (size_t i = 0; i < nC; ++i) scale_y[i] = 1 + std::fabs(want_y[i]);
    ExpectClose(got_first, want_first, 2e-5, 0, "Wkv7 fp16 state, y of first rows" + tag, &scale_first);
    ExpectClose(got_y, want_y, 5e-3, 0, "Wkv7 fp16 state, y" + tag, &scale_y);

    const std::vector<float> got_pool = Host(dpool, pool.size());
    size_t differ = 0, out_of_bound = 0;
    double worst = 0;
    for (int s = 0; s < kSlots; ++s) {
      std::vector<float> g(static_cast<size_t>(per_slot)), want(g.size());
      ConvertToF32(DType::kF16, got_pool.data() + s * stride + offset, g.data(), g.size());
      ConvertToF32(DType::kF16, pool.data() + s * stride + offset, want.data(), want.size());
      for (size_t i = 0; i < g.size(); ++i) {
        if (g[i] == want[i]) continue;
        ++differ;
        const double rel = std::fabs(static_cast<double>(g[i]) - want[i]) / (1 + std::fabs(want[i]));
        worst = std::isnan(rel) ? INFINITY : std::max(worst, rel);
        out_of_bound += !(rel <= 1e-2);
      }
      // Everything outside the fp16 block, and slots not in the batch, untouched.
      for (int64_t u = 0; u < stride; ++u) {
        const bool in_block = u >= offset && u < offset + per_slot / 2;
        if (in_block && s != 2 && s != 4) continue;
        const float x = got_pool[s * stride + u], y0 = pool[s * stride + u];
        ASSERT_TRUE(std::memcmp(&x, &y0, 4) == 0) << "slot " << s << " unit " << u << tag;
      }
    }
    const double total = static_cast<double>(kSlots - 2) * per_slot;
    std::printf("[ maxerr ] Wkv7 fp16 state%s: %zu of %.0f elements differ (%.3f%%), worst %.3g (1 + |s|)\n",
                tag.c_str(), differ, total, 100 * differ / total, worst);
    EXPECT_LE(differ, total / 100) << tag;
    EXPECT_EQ(out_of_bound, 0u) << tag;
  }
}

// A decode-like pass: nseg segments of 1 row (every 7th from the 3rd: 2
// rows; with long_segment the 2nd: 20 rows) in slots (j * 37) % nseg; *n
// gets the pass's rows.
std::vector<Segment> DecodeSegments(int nseg, bool long_segment, int* n) {
  std::vector<Segment> segs;
  *n = 0;
  for (int j = 0; j < nseg; ++j) {
    const int len = long_segment && j == 1 ? 20 : 1 + (j % 7 == 2);
    segs.push_back({(j * 37) % nseg, *n, len});
    *n += len;
  }
  return segs;
}

// A pool of nseg state slots `stride` floats apart, each per_slot random
// values in [-1, 1): fp32 slots the values, fp16 slots the values rounded,
// two to a float.
std::vector<float> RandomStatePool(int nseg, int64_t per_slot, int64_t stride, DType st, uint32_t seed) {
  const auto values = Rand(static_cast<size_t>(nseg * per_slot), seed, -1, 1);
  std::vector<float> pool(static_cast<size_t>(nseg * stride), 0.0f);
  for (int sl = 0; sl < nseg; ++sl) {
    if (st == DType::kF16) {
      ConvertFromF32(values.data() + sl * per_slot, DType::kF16, pool.data() + sl * stride,
                     static_cast<size_t>(per_slot));
    } else {
      std::copy_n(values.begin() + sl * per_slot, per_slot, pool.begin() + sl * stride);
    }
  }
  return pool;
}

// Decode passes apply the RWKV-7 output stage inside the WKV kernel
// (Wkv7WithOutput, kernels::wkv7_output_fusable) with V7Output's own code on
// the same inputs, so against Wkv7 then V7Output on the same GPU both the
// state and the output must be equal bit for bit (batch-invariant mode relies
// on it: whether a pass fuses depends on the other sessions' segments). N = 64
// and 128, fp32 and fp16 state, fp32 output in place and fp16/bf16 into
// another buffer; 5 and 160 one- and two-row segments (fused), a pass with a
// 20-row segment and one with the output buffer off its vector alignment
// (both the two ops). The two-op run is also held to the CPU ops.
TEST_F(CudaOpsTest, Wkv7WithOutputMatchesWkv7ThenV7Output) {
  struct Case {
    int N, nseg;
    bool long_segment, misaligned;
  };
  for (const Case cs : {Case{64, 5, false, false}, Case{64, 160, false, false}, Case{128, 7, false, false},
                        Case{64, 3, true, false}, Case{64, 6, false, true}}) {
    const int N = cs.N, H = 2048 / N, C = H * N, nseg = cs.nseg;
    int n = 0;
    const std::vector<Segment> segs = DecodeSegments(nseg, cs.long_segment, &n);
    const size_t nC = static_cast<size_t>(n) * C;
    const auto r = Rand(nC, 31), k = Rand(nC, 32), v = Rand(nC, 33), a = Rand(nC, 34, 0, 1),
               w = Rand(nC, 35, 0.545f, 1.0f), g = Rand(nC, 36), r_k = Rand(C, 37), lnw = Rand(C, 38, 0.5f, 1.5f),
               lnb = Rand(C, 39);
    auto kk = Rand(nC, 40);
    NormaliseHeads(kk, N);
    float *dr = Dev(r), *dw = Dev(w), *dk = Dev(k), *dv = Dev(v), *dkk = Dev(kk), *da = Dev(a), *dg = Dev(g),
          *drk = Dev(r_k), *dlw = Dev(lnw), *dlb = Dev(lnb);
    for (DType st : {DType::kF32, DType::kF16}) {
      const int64_t per_slot = static_cast<int64_t>(H) * N * N;
      const int64_t stride = st == DType::kF16 ? per_slot / 2 + 4 : per_slot + 4;
      const std::vector<float> pool = RandomStatePool(nseg, per_slot, stride, st, 41);
      for (DType t : {DType::kF32, DType::kF16, DType::kBF16}) {
        const std::string tag = " N=" + std::to_string(N) + " nseg=" + std::to_string(nseg) +
                                (cs.long_segment ? " long" : "") + (cs.misaligned ? " misaligned" : "") + " state " +
                                std::string(DTypeName(st)) + " out " + std::string(DTypeName(t));
        const size_t words = t == DType::kF32 ? nC : (nC + 1) / 2;
        const size_t off = cs.misaligned ? 1 : 0;  // one float (two 16-bit values) off the vector alignment
        float *fused = Dev(pool), *apart = Dev(pool);
        float *y1 = Poisoned(nC + off), *y2 = Poisoned(nC + off);
        float* out1 = t == DType::kF32 ? y1 : Dev(Poisoned16(nC + 2 * off));
        float* out2 = t == DType::kF32 ? y2 : Dev(Poisoned16(nC + 2 * off));
        const kernels::Wkv7OutputStage stage{dg, drk, dlw, dlb, out1 + off, kernels::ElemType::kF32};
        const bool want_fused = !cs.long_segment && !cs.misaligned;
        EXPECT_EQ(want_fused, kernels::wkv7_output_fusable(reinterpret_cast<const kernels::SegmentDesc*>(segs.data()),
                                                           nseg, N, fused, stride, y1 + off, dr, dk, dv, stage))
            << tag;
        gpu_->Wkv7WithOutput(segs.data(), nseg, n, C, N, {fused, stride, st}, dr, dw, dk, dv, dkk, da, y1 + off, dg,
                             drk, dlw, dlb, out1 + off, t);
        gpu_->Wkv7(segs.data(), nseg, C, N, {apart, stride, st}, dr, dw, dk, dv, dkk, da, y2 + off);
        gpu_->V7Output(y2 + off, dr, dk, dv, dg, drk, dlw, dlb, n, C, N, out2 + off, t);
        const std::vector<float> sf = Host(fused, pool.size()), sa = Host(apart, pool.size());
        EXPECT_EQ(0, std::memcmp(sf.data(), sa.data(), sf.size() * sizeof(float))) << "state" << tag;
        const std::vector<float> got = Host(out1 + off, words), want = Host(out2 + off, words);
        EXPECT_EQ(0, std::memcmp(got.data(), want.data(), words * sizeof(float))) << "output" << tag;
        if (st == DType::kF32 && t == DType::kF32) {
          // The CPU ops, for the two-op run (and so the fused one).
          std::vector<float> cpu_state = pool, cpu_y(nC), cpu_out(nC);
          cpu_.Wkv7(segs.data(), nseg, C, N, {cpu_state.data(), stride}, r.data(), w.data(), k.data(), v.data(),
                    kk.data(), a.data(), cpu_y.data());
          cpu_.V7Output(cpu_y.data(), r.data(), k.data(), v.data(), g.data(), r_k.data(), lnw.data(), lnb.data(), n,
                        C, N, cpu_out.data(), DType::kF32);
          std::vector<double> scale(nC);
          for (size_t i = 0; i < nC; ++i) scale[i] = 1 + std::fabs(cpu_out[i]);
          ExpectClose(got, cpu_out, 1e-4, 0, "Wkv7WithOutput vs CPU" + tag, &scale);
        }
      }
    }
  }
}

// The RWKV-7 prep inside the decode WKV kernel (V7PrepWkv7WithOutput,
// kernels::wkv7_prep_fusable) runs kernels/v7_prep.cu's vector code on the
// same inputs, so against V7Prep then Wkv7WithOutput on the same GPU the
// state, the output and v_first must be equal bit for bit (whether a pass
// fuses depends on the other sessions' segments). N = 64 and 128, layer 0
// (v_first written) and a later layer (the value residual), fp32 and fp16
// state, fp32 output in place and fp16 into another buffer; one- and two-row
// segments (fused: kk is then never written, so it stays poisoned), a pass
// with a 20-row segment (both ops apart) and one with w, a and kk off their
// vector alignment (the prep apart, the output stage still in the WKV
// kernel); and a backend made with RWKV_CUDA_FUSE_PREP=0 (the prep apart).
// fp32 is also held to the CPU ops.
TEST_F(CudaOpsTest, V7PrepWkv7WithOutputMatchesTheOpsApart) {
  struct Case {
    int N, nseg;
    bool long_segment, misaligned, fuse_off;
  };
  setenv("RWKV_CUDA_FUSE_PREP", "0", 1);
  std::unique_ptr<CudaBackend> off = MakeGpu(DType::kF16);
  unsetenv("RWKV_CUDA_FUSE_PREP");
  ASSERT_NE(off, nullptr);
  ASSERT_FALSE(off->options().fuse_v7_prep);
  for (const Case cs : {Case{64, 5, false, false, false}, Case{64, 160, false, false, false},
                        Case{128, 7, false, false, false}, Case{64, 3, true, false, false},
                        Case{64, 6, false, true, false}, Case{64, 5, false, false, true}}) {
    CudaBackend* be = cs.fuse_off ? off.get() : gpu_.get();
    const int N = cs.N, H = 2048 / N, C = H * N, nseg = cs.nseg;
    int n = 0;
    const std::vector<Segment> segs = DecodeSegments(nseg, cs.long_segment, &n);
    const size_t nC = static_cast<size_t>(n) * C;
    const auto r = Rand(nC, 61), w = Rand(nC, 62, -3, 3), k = Rand(nC, 63), v = Rand(nC, 64), a = Rand(nC, 65, -3, 3),
               g = Rand(nC, 66), vf = Rand(nC, 67), vg = Rand(nC, 68, -3, 3), w0 = Rand(C, 69, -2, 2),
               a0 = Rand(C, 70), k_k = Rand(C, 71, 0.5f, 1.5f), k_a = Rand(C, 72, 0, 1), v0 = Rand(C, 73),
               r_k = Rand(C, 74), lnw = Rand(C, 75, 0.5f, 1.5f), lnb = Rand(C, 76);
    float *dr = Dev(r, be), *dg = Dev(g, be), *dvg = Dev(vg, be), *dw0 = Dev(w0, be), *da0 = Dev(a0, be),
          *dkk0 = Dev(k_k, be), *dka = Dev(k_a, be), *dv0 = Dev(v0, be), *drk = Dev(r_k, be), *dlw = Dev(lnw, be),
          *dlb = Dev(lnb, be);
    const int shift = cs.misaligned ? 1 : 0;  // w, a and kk one float off the vector alignment
    // h on be's device memory `shift` floats past an allocation's (aligned) start.
    auto dev_at = [&](const std::vector<float>& h) {
      std::vector<float> padded(static_cast<size_t>(shift), 0.0f);
      padded.insert(padded.end(), h.begin(), h.end());
      return Dev(padded, be) + shift;
    };
    const std::vector<float> poison(nC, kNaN);
    for (bool layer0 : {true, false}) {
      for (DType st : {DType::kF32, DType::kF16}) {
        const int64_t per_slot = static_cast<int64_t>(H) * N * N;
        const int64_t stride = st == DType::kF16 ? per_slot / 2 + 4 : per_slot + 4;
        const std::vector<float> pool = RandomStatePool(nseg, per_slot, stride, st, 77);
        for (DType t : {DType::kF32, DType::kF16}) {
          const std::string tag = " N=" + std::to_string(N) + " nseg=" + std::to_string(nseg) +
                                  (cs.long_segment ? " long" : "") + (cs.misaligned ? " misaligned" : "") +
                                  (cs.fuse_off ? " fusion off" : "") + (layer0 ? " layer 0" : " residual") + " state " + std::string(DTypeName(st)) +
                                  " out " + std::string(DTypeName(t));
          const size_t words = t == DType::kF32 ? nC : (nC + 1) / 2;
          struct Result {
            std::vector<float> state, out, v_first, kk;
          };
          auto run = [&](bool together) {
            float* state = Dev(pool, be);
            Backend::V7PrepArgs p{dev_at(w),     dw0,    dev_at(a),
                                  da0,           Dev(k, be), dev_at(poison),
                                  dkk0,          dka,    Dev(v, be),
                                  Dev(layer0 ? poison : vf, be), layer0 ? nullptr : dvg, layer0 ? nullptr : dv0};
            float* y = Dev(poison, be);
            float* out = t == DType::kF32 ? y : Dev(Poisoned16(nC), be);
            if (together) {
              be->V7PrepWkv7WithOutput(segs.data(), nseg, n, C, N, {state, stride, st}, p, dr, y, dg, drk, dlw, dlb,
                                       out, t);
            } else {
              be->V7Prep(p.w, p.w0, p.a, p.a0, p.k, p.kk, p.k_k, p.k_a, p.v, p.v_first, p.v_gate, p.v0, n, C, N);
              be->Wkv7WithOutput(segs.data(), nseg, n, C, N, {state, stride, st}, dr, p.w, p.k, p.v, p.kk, p.a, y, dg,
                                 drk, dlw, dlb, out, t);
            }
            return Result{Host(state, pool.size(), be), Host(out, words, be), Host(p.v_first, nC, be),
                          Host(p.kk, nC, be)};
          };
          const Result fused = run(true), apart = run(false);
          // The fixture's backend fuses unless the environment says not to.
          const bool want_fused =
              !cs.long_segment && !cs.misaligned && !cs.fuse_off && gpu_->options().fuse_v7_prep;
          size_t kk_written = 0;
          for (float x : fused.kk) kk_written += std::isnan(x) ? 0 : 1;
          EXPECT_EQ(want_fused ? 0u : nC, kk_written) << "kk written (the prep ran apart)" << tag;
          EXPECT_EQ(0, std::memcmp(fused.state.data(), apart.state.data(), pool.size() * sizeof(float)))
              << "state" << tag;
          EXPECT_EQ(0, std::memcmp(fused.out.data(), apart.out.data(), words * sizeof(float))) << "output" << tag;
          EXPECT_EQ(0, std::memcmp(fused.v_first.data(), apart.v_first.data(), nC * sizeof(float)))
              << "v_first" << tag;
          if (st == DType::kF32 && t == DType::kF32) {
            std::vector<float> cw = w, ca = a, ck = k, cv = v, ckk(nC), cvf = layer0 ? std::vector<float>(nC) : vf;
            cpu_.V7Prep(cw.data(), w0.data(), ca.data(), a0.data(), ck.data(), ckk.data(), k_k.data(), k_a.data(),
                        cv.data(), cvf.data(), layer0 ? nullptr : vg.data(), layer0 ? nullptr : v0.data(), n, C, N);
            std::vector<float> cpu_state = pool, cpu_y(nC), cpu_out(nC);
            cpu_.Wkv7(segs.data(), nseg, C, N, {cpu_state.data(), stride}, r.data(), cw.data(), ck.data(), cv.data(),
                      ckk.data(), ca.data(), cpu_y.data());
            cpu_.V7Output(cpu_y.data(), r.data(), ck.data(), cv.data(), g.data(), r_k.data(), lnw.data(), lnb.data(),
                          n, C, N, cpu_out.data(), DType::kF32);
            std::vector<double> scale(nC);
            for (size_t i = 0; i < nC; ++i) scale[i] = 1 + std::fabs(cpu_out[i]);
            ExpectClose(fused.out, cpu_out, 1e-4, 0, "V7PrepWkv7WithOutput vs CPU" + tag, &scale);
            ExpectClose(fused.v_first, cvf, 0, 0, "v_first vs CPU" + tag);
          }
        }
      }
    }
  }
}

// Long segments (prompt chunks of >= 8 rows) take the long-segment kernel
// (kernels/wkv7.cu): rows split over lanes (8 elements a lane), token
// vectors staged by cp.async in chunks of 16 (8 for N = 128) tokens, y summed
// over the lanes 4 (N = 32) or 8 tokens at a time. Segments of 1000 rows (many
// staging chunks, the last one partial), 7 (below the threshold: the tiled
// kernel, in the same call), 8 (the threshold), 9, 16 and 17 (a chunk edge
// inside and at the end), 64, and 1-row ones, in slots out of order; then 130
// segments of 9 rows (more than one launch's list of 128). fp32 state: the
// CPU op within 2e-5 (1 + |cpu|), the tiled kernel's bound: the same
// per-element arithmetic, only the two 64-term dot products per token are
// summed in another order. Calibration on the CPU (these segment shapes,
// N = 64, kk moved by one ulp as a stand-in for another summation order):
// after 1000 tokens 1.7e-7 on the state and 1.5e-6 on y. A wrong column,
// token or row would be off by O(1).
// Needs no GPU: the padding granule is 1 up to 16 rows, then a power of two
// that never falls with the count: at most 15 rows of padding below 256 rows,
// under 1/16 of the pass from there.
TEST(CudaPassPaddingTest, QuantumIsMonotonePowerOfTwo) {
  EXPECT_EQ(CudaBackend::PassQuantumFor(1), 1);
  EXPECT_EQ(CudaBackend::PassQuantumFor(16), 1);
  EXPECT_EQ(CudaBackend::PassQuantumFor(17), 16);
  EXPECT_EQ(CudaBackend::PassQuantumFor(511), 16);
  EXPECT_EQ(CudaBackend::PassQuantumFor(512), 32);
  EXPECT_EQ(CudaBackend::PassQuantumFor(1024), 64);
  EXPECT_EQ(CudaBackend::PassQuantumFor(4096), 128);
  int last = 1;
  for (int n = 1; n <= 5000; ++n) {
    const int q = CudaBackend::PassQuantumFor(n);
    ASSERT_EQ(q & (q - 1), 0) << n;
    ASSERT_GE(q, last) << n;
    if (q > 1) {
      ASSERT_LE(q - 1, std::max(15, n / 16)) << n;  // the padding, at most q - 1 rows
    }
    last = q;
  }
}

TEST_F(CudaOpsTest, Wkv7LongSegmentsMatchCpu) {
  std::vector<Segment> mixed = {{3, 0, 1000}, {0, 1000, 1}, {5, 1001, 7}, {1, 1008, 8},
                                {6, 1016, 17}, {2, 1033, 64}, {4, 1097, 9}, {7, 1106, 16}};
  std::vector<Segment> many;
  for (int s = 0; s < 130; ++s) many.push_back({129 - s, 9 * s, 9});
  // A padded pass as the Model builds it (longest first, padding last): the
  // three long ones are rounded up to four in the long kernel's list, whose
  // fourth (1 row) that kernel skips and the tiled kernel takes; padding
  // segments (slot -1) touch no state and their rows are not compared.
  std::vector<Segment> sorted = {{3, 0, 64}, {1, 64, 16}, {5, 80, 9}, {0, 89, 1},  {2, 90, 1},
                                 {4, 91, 7}, {-1, 98, 5}, {-1, 103, 0}, {-1, 103, 0}};
  {
    std::vector<int32_t> index(sorted.size());
    const int count = kernels::wkv7_long_segments(reinterpret_cast<const kernels::SegmentDesc*>(sorted.data()),
                                                  static_cast<int>(sorted.size()), index.data());
    EXPECT_EQ(std::vector<int32_t>(index.begin(), index.begin() + count), (std::vector<int32_t>{0, 1, 2, 3}));
    const int unsorted = kernels::wkv7_long_segments(reinterpret_cast<const kernels::SegmentDesc*>(mixed.data()),
                                                     static_cast<int>(mixed.size()), index.data());
    EXPECT_EQ(std::vector<int32_t>(index.begin(), index.begin() + unsorted), (std::vector<int32_t>{0, 3, 4, 5, 6, 7}));
  }
  for (const std::vector<Segment>* segs : {&mixed, &many, &sorted})
  for (int N : {64, 32, 128}) {
    const int H = N == 64 ? 4 : 2, C = H * N;
    const int rows = segs->back().row_begin + segs->back().rows;
    const int slots = static_cast<int>(segs->size()) + 1;  // the last slot is in no segment
    const int64_t offset = 2 * C, stride = offset + static_cast<int64_t>(H) * N * N + 4;
    const size_t nC = static_cast<size_t>(rows) * C;
    auto r = Rand(nC, 21), k = Rand(nC, 22), v = Rand(nC, 23), a = Rand(nC, 24, 0, 1),
         w = Rand(nC, 25, 0.545f, 1.0f), kk = Rand(nC, 26);
    NormaliseHeads(kk, N);
    auto state = Rand(static_cast<size_t>(slots * stride), 27, -0.5f, 0.5f);
    float* dstate = Dev(state);
    float* dy = Poisoned(nC);
    gpu_->Wkv7(segs->data(), static_cast<int>(segs->size()), C, N, {dstate + offset, stride}, Dev(r), Dev(w), Dev(k),
               Dev(v), Dev(kk), Dev(a), dy);
    std::vector<float> want_y(nC);
    cpu_.Wkv7(segs->data(), static_cast<int>(segs->size()), C, N, {state.data() + offset, stride}, r.data(),
              w.data(), k.data(), v.data(), kk.data(), a.data(), want_y.data());
    const std::string tag = " N=" + std::to_string(N) +
                            (segs == &mixed ? " mixed lengths" : segs == &many ? " 130 x 9 rows" : " sorted, padded");
    // Rows of real segments only (padding rows are nobody's).
    const size_t real = segs == &sorted ? static_cast<size_t>(98) * C : nC;
    std::vector<double> scale_y(real), scale_s(state.size());
    for (size_t i = 0; i < real; ++i) scale_y[i] = 1 + std::fabs(want_y[i]);
    for (size_t i = 0; i < state.size(); ++i) scale_s[i] = 1 + std::fabs(state[i]);
    ExpectClose(Host(dy, real), std::vector<float>(want_y.begin(), want_y.begin() + static_cast<int64_t>(real)), 2e-5,
                0, "Wkv7 long y" + tag, &scale_y);
    const auto got_state = Host(dstate, state.size());
    ExpectClose(got_state, state, 2e-5, 0, "Wkv7 long state" + tag, &scale_s);
    const auto b = state.begin() + static_cast<int64_t>(slots - 1) * stride;  // in no segment: untouched
    EXPECT_TRUE(std::equal(b, b + stride, got_state.begin() + static_cast<int64_t>(slots - 1) * stride)) << tag;
  }
}

// The chunked WKV-7 form's scratch bound (host code; CudaBackend's
// Wkv7ScratchBytes, so Model::WorkspaceBytes): at least what any pass of at
// most that many rows asks for (here: one segment of every length up to 256,
// alone or in a pass twice as long, and 201 long segments in one pass),
// and nothing where the form is never used (fp16 state, other head sizes,
// passes too short for it).
TEST(Wkv7Scratch, BoundCoversEveryPass) {
  const int C = 256, N = 64;
  const auto F32 = kernels::ElemType::kF32;
  auto floats = [&](const std::vector<Segment>& segs) {
    return kernels::wkv7_scratch_floats(reinterpret_cast<const kernels::SegmentDesc*>(segs.data()),
                                        static_cast<int>(segs.size()), C, N, F32);
  };
  for (int len = 1; len <= 256; ++len) {
    const std::vector<Segment> one = {{0, 0, len}};
    for (int rows : {len, 2 * len}) EXPECT_GE(kernels::wkv7_scratch_bound_floats(rows, C, N, F32), floats(one)) << len;
  }
  // More long segments than a launch group holds (kernels::kWkv7LongRows rows each), after a 64-row one.
  std::vector<Segment> many = {{0, 0, 64}};
  int rows = 64;
  for (int i = 0; i < 200; ++i, rows += kernels::kWkv7LongRows) many.push_back({i + 1, rows, kernels::kWkv7LongRows});
  EXPECT_GT(floats(many), 0u);
  EXPECT_GE(kernels::wkv7_scratch_bound_floats(rows, C, N, F32), floats(many));
  EXPECT_EQ(floats({{0, 0, 32}}), 0u);  // rounds up to 32 rows: the long kernel's
  EXPECT_GT(floats({{0, 0, 33}}), 0u);  // rounds up to 64: the chunked form's
  EXPECT_EQ(kernels::wkv7_scratch_bound_floats(32, C, N, F32), 0u);
  EXPECT_EQ(kernels::wkv7_scratch_bound_floats(4096, C, N, kernels::ElemType::kF16), 0u);
  EXPECT_EQ(kernels::wkv7_scratch_bound_floats(4096, C, 32, F32), 0u);
  EXPECT_EQ(kernels::wkv7_scratch_bound_floats(4096, 4 * 128, 128, F32), 0u);
}

// The launchers added for 16-bit activations refuse bad arguments before
// touching the device (so this runs without a GPU): an element type they do
// not write, a negative count, a missing or misaligned buffer.
TEST(KernelLaunchers, SixteenBitLaunchersRefuseBadArguments) {
  const auto bad = cudaErrorInvalidValue;
  alignas(16) static uint16_t h[16];
  EXPECT_EQ(kernels::launch_relu_square_16(h, 16, kernels::ElemType::kF32, nullptr), bad);
  EXPECT_EQ(kernels::launch_relu_square_16(h, -1, kernels::ElemType::kF16, nullptr), bad);
  EXPECT_EQ(kernels::launch_relu_square_16(nullptr, 16, kernels::ElemType::kF16, nullptr), bad);
  EXPECT_EQ(kernels::launch_relu_square_16(h + 1, 8, kernels::ElemType::kBF16, nullptr), bad);
  EXPECT_EQ(kernels::launch_relu_square_16(h, 0, kernels::ElemType::kF16, nullptr), cudaSuccess);  // nothing to do
  alignas(16) static float f[64];
  const auto odd = static_cast<kernels::ElemType>(7);
  EXPECT_EQ(kernels::launch_v7_output(f, f, f, f, f, f, f, f, 1, 64, 64, f, odd, nullptr), bad);
  EXPECT_EQ(kernels::launch_v7_output(f, f, f, f, f, f, f, f, 1, 64, 64, nullptr, kernels::ElemType::kF16, nullptr),
            bad);
  EXPECT_EQ(kernels::launch_v7_output(f, f, f, f, f, f, f, f, -1, 64, 64, f, kernels::ElemType::kF32, nullptr), bad);
  EXPECT_EQ(kernels::launch_v7_output(f, f, f, f, f, f, f, f, 1, 64, 48, f, kernels::ElemType::kF32, nullptr), bad);
  // The RWKV-4 gates: a bad output type, negative count, null buffers, an
  // output over r, a 16-bit output over y.
  float* g = f + 32;
  EXPECT_EQ(kernels::launch_sigmoid_gate(f, g, 16, g, odd, nullptr), bad);
  EXPECT_EQ(kernels::launch_sigmoid_gate(f, g, -1, g, kernels::ElemType::kF32, nullptr), bad);
  EXPECT_EQ(kernels::launch_sigmoid_gate(nullptr, g, 16, g, kernels::ElemType::kF32, nullptr), bad);
  EXPECT_EQ(kernels::launch_sigmoid_gate(f, g, 16, nullptr, kernels::ElemType::kF16, nullptr), bad);
  EXPECT_EQ(kernels::launch_sigmoid_gate(f, g, 16, f, kernels::ElemType::kF32, nullptr), bad);
  EXPECT_EQ(kernels::launch_sigmoid_gate(f, g, 16, g, kernels::ElemType::kBF16, nullptr), bad);
  EXPECT_EQ(kernels::launch_sigmoid_gate(f, g, 0, g, kernels::ElemType::kF32, nullptr), cudaSuccess);
  EXPECT_EQ(kernels::launch_sigmoid_muladd(f, g, f, -1, nullptr), bad);
  EXPECT_EQ(kernels::launch_sigmoid_muladd(nullptr, g, f, 16, nullptr), bad);
  EXPECT_EQ(kernels::launch_sigmoid_muladd(f, g, nullptr, 16, nullptr), bad);
}

// Where the decode WKV kernel may apply the output stage itself (runs
// without a GPU: a host function). Fused only where launch_v7_output would
// take its vector kernel, so each buffer off its N / 32-float alignment, on
// its own, must say no; so must a long segment with a state (a padding one
// does not count), a head size other than 64/128, and a misaligned state or
// slot stride.
// The per-thread pass veto: it turns programmatic launch off for this
// thread only, and never turns it on where the process-wide switch is off.
TEST(KernelLaunchers, PassVetoOfProgrammaticLaunchIsPerThread) {
  const bool saved = kernels::programmatic_launch();
  kernels::set_programmatic_launch(true);
  EXPECT_TRUE(kernels::programmatic_launch());
  kernels::set_pass_programmatic_launch(false);
  EXPECT_FALSE(kernels::programmatic_launch());
  bool other_thread = false;
  std::thread([&] { other_thread = kernels::programmatic_launch(); }).join();
  EXPECT_TRUE(other_thread);
  kernels::set_pass_programmatic_launch(true);
  EXPECT_TRUE(kernels::programmatic_launch());
  kernels::set_programmatic_launch(false);
  EXPECT_FALSE(kernels::programmatic_launch());
  kernels::set_programmatic_launch(saved);
}

TEST(KernelLaunchers, Wkv7OutputFusableNeedsEveryConditionOnItsOwn) {
  alignas(16) static float buf[10][64];
  const kernels::SegmentDesc decode[] = {{0, 0, 1}, {1, 1, 2}, {-1, 3, 20}};
  const kernels::SegmentDesc prompt[] = {{0, 0, 1}, {1, 1, 20}};
  for (const int N : {64, 128}) {
    float *state = buf[0], *y = buf[1], *r = buf[2], *k = buf[3], *v = buf[4];
    kernels::Wkv7OutputStage os{buf[5], buf[6], buf[7], buf[8], buf[9], kernels::ElemType::kF32};
    auto fusable = [&] { return kernels::wkv7_output_fusable(decode, 3, N, state, 4096 + 4, y, r, k, v, os); };
    EXPECT_TRUE(fusable()) << N;
    EXPECT_FALSE(kernels::wkv7_output_fusable(prompt, 2, N, state, 4096 + 4, y, r, k, v, os)) << N;
    EXPECT_FALSE(kernels::wkv7_output_fusable(decode, 0, N, state, 4096 + 4, y, r, k, v, os)) << N;
    EXPECT_FALSE(kernels::wkv7_output_fusable(decode, 3, 32, state, 4096 + 4, y, r, k, v, os));
    EXPECT_FALSE(kernels::wkv7_output_fusable(decode, 3, N, state + 1, 4096 + 4, y, r, k, v, os)) << N;
    EXPECT_FALSE(kernels::wkv7_output_fusable(decode, 3, N, state, 4096 + 2, y, r, k, v, os)) << N;
    // One float off: misaligned for both V = 2 (8 bytes) and V = 4 (16).
    int which = 0;
    for (float** p : {&y, &r, &k, &v}) {
      float* const keep = *p;
      *p = keep + 1;
      EXPECT_FALSE(fusable()) << N << " y, r, k, v: " << which++;
      *p = keep;
    }
    which = 0;
    for (const float** p : {&os.g, &os.r_k, &os.lnw, &os.lnb}) {
      const float* const keep = *p;
      *p = keep + 1;
      EXPECT_FALSE(fusable()) << N << " g, r_k, lnw, lnb: " << which++;
      *p = keep;
    }
    os.out = buf[9] + 1;
    EXPECT_FALSE(fusable()) << N << " out";
    os.out = buf[9];
    EXPECT_TRUE(fusable()) << N;
  }
}

// The chunked (DPLR) form of long segments (kernels/wkv7.cu: fp32 state, N =
// 64, a pass whose longest segment rounds up to 64 rows or more), against the
// CPU's token walk: every chunk position (a 1000-row segment: 62 full chunks
// and a partial one; 64, 17 and 9 rows; 1-row segments in the same pass, which
// the tiled kernel takes), then decays no model makes (w = 1e-6 for ten
// tokens of the 1000-row segment: their chunk's cumulative decay leaves the
// float range, so it is walked token by token). y within 2e-5 (1 + |y|) and
// the state within 2e-5 (1 + |s|): the CPU reference of the same form
// (engine/model/wkv7_chunked.h) is within 2.2e-6 of an exact walk.
TEST_F(CudaOpsTest, Wkv7ChunkedFormMatchesCpu) {
  const std::vector<Segment> segs = {{3, 0, 1000}, {0, 1000, 1}, {5, 1001, 64}, {1, 1065, 17},
                                     {6, 1082, 9},  {2, 1091, 1}};
  const int N = 64, H = 2, C = H * N, rows = 1092, slots = 8;
  ASSERT_GT(kernels::wkv7_scratch_floats(reinterpret_cast<const kernels::SegmentDesc*>(segs.data()),
                                         static_cast<int>(segs.size()), C, N, kernels::ElemType::kF32),
            0u);
  EXPECT_EQ(kernels::wkv7_scratch_floats(reinterpret_cast<const kernels::SegmentDesc*>(segs.data()),
                                         static_cast<int>(segs.size()), C, N, kernels::ElemType::kF16),
            0u);
  for (bool out_of_range : {false, true}) {
    const int64_t offset = 2 * C, stride = offset + static_cast<int64_t>(H) * N * N + 4;
    const size_t nC = static_cast<size_t>(rows) * C;
    auto r = Rand(nC, 71), k = Rand(nC, 72), v = Rand(nC, 73), a = Rand(nC, 74, 0, 1), w = Rand(nC, 75, 0.545f, 1.0f),
         kk = Rand(nC, 76);
    NormaliseHeads(kk, N);
    if (out_of_range) {
      for (size_t i = static_cast<size_t>(500) * C; i < static_cast<size_t>(510) * C; ++i) w[i] = 1e-6f;
    }
    auto state = Rand(static_cast<size_t>(slots) * stride, 77, -0.5f, 0.5f);
    float* dstate = Dev(state);
    float* dy = Poisoned(nC);
    gpu_->Wkv7(segs.data(), static_cast<int>(segs.size()), C, N, {dstate + offset, stride}, Dev(r), Dev(w), Dev(k),
               Dev(v), Dev(kk), Dev(a), dy);
    std::vector<float> want_y(nC);
    cpu_.Wkv7(segs.data(), static_cast<int>(segs.size()), C, N, {state.data() + offset, stride}, r.data(), w.data(),
              k.data(), v.data(), kk.data(), a.data(), want_y.data());
    const std::string tag = out_of_range ? " (a chunk out of range)" : "";
    std::vector<double> scale_y(nC), scale_s(state.size());
    for (size_t i = 0; i < nC; ++i) scale_y[i] = 1 + std::fabs(want_y[i]);
    for (size_t i = 0; i < state.size(); ++i) scale_s[i] = 1 + std::fabs(state[i]);
    ExpectClose(Host(dy, nC), want_y, 2e-5, 0, "Wkv7 chunked y" + tag, &scale_y);
    ExpectClose(Host(dstate, state.size()), state, 2e-5, 0, "Wkv7 chunked state" + tag, &scale_s);
  }
}

// The long-segment kernel with fp16 state rounds at the same points with the
// same keys as the CPU twin (after every token). The first row of each
// segment starts from identical fp16 states, so its y is within the fp32
// bound, as in Wkv7Fp16StateMatchesCpuTwin. Further on, an element that one
// side rounds up and the other down (fp32 results a last bit apart at a
// rounding threshold) differs by an fp16 ulp, which feeds its row's later
// dot products and rounding keys; over hundreds of tokens whole rows then
// follow different (equally valid) stochastic roundings, the difference a
// random walk of ulps held back by the decay. So the rest is bounded
// statistically: y within 1e-2 (1 + |y|) and every state element within
// 1e-2 (1 + |s|), with the mean state difference under 1e-4 (1 + |s|).
// Calibration on the CPU twin against itself with kk one ulp apart (N = 64,
// 1000 tokens): 2.2% of state elements differ, worst 8.7e-4, mean 3.7e-6;
// y worst 2.5e-3.
// Rounding to nearest instead would leave slow decays undone (errors of
// 0.1-0.3 on long-memory elements), a wrong column index or key would make
// even the first rows' states differ in most elements.
TEST_F(CudaOpsTest, Wkv7LongSegmentsFp16StateMatchCpuTwin) {
  const std::vector<Segment> segs = {{3, 0, 1000}, {0, 1000, 1}, {5, 1001, 7}, {1, 1008, 8}, {6, 1016, 17},
                                     {2, 1033, 64}, {4, 1097, 9}};
  const int nseg = static_cast<int>(segs.size()), rows = 1106, slots = 8;
  for (int N : {64, 32, 128}) {
    const int H = N == 64 ? 4 : 2, C = H * N;
    const int64_t per_slot = static_cast<int64_t>(H) * N * N;
    const int64_t offset = 2 * C, stride = offset + per_slot / 2 + 4;
    const size_t nC = static_cast<size_t>(rows) * C;
    auto r = Rand(nC, 31), k = Rand(nC, 32), v = Rand(nC, 33), a = Rand(nC, 34, 0, 1),
         w = Rand(nC, 35, 0.545f, 1.0f), kk = Rand(nC, 36);
    NormaliseHeads(kk, N);
    const auto values = Rand(static_cast<size_t>(slots * per_slot), 37, -2, 2);
    std::vector<float> pool(static_cast<size_t>(slots * stride), kNaN);
    for (int s = 0; s < slots; ++s) {
      ConvertFromF32(values.data() + s * per_slot, DType::kF16, pool.data() + s * stride + offset,
                     static_cast<size_t>(per_slot));
    }
    float* dpool = Dev(pool);
    float* dy = Poisoned(nC);
    gpu_->Wkv7(segs.data(), nseg, C, N, {dpool + offset, stride, DType::kF16}, Dev(r), Dev(w), Dev(k), Dev(v),
               Dev(kk), Dev(a), dy);
    std::vector<float> want_y(nC);
    cpu_.Wkv7(segs.data(), nseg, C, N, {pool.data() + offset, stride, DType::kF16}, r.data(), w.data(), k.data(),
              v.data(), kk.data(), a.data(), want_y.data());
    const std::string tag = " N=" + std::to_string(N);
    const std::vector<float> got_y = Host(dy, nC);
    std::vector<float> got_first, want_first;
    for (const Segment& g : segs) {
      const int64_t b = static_cast<int64_t>(g.row_begin) * C;
      got_first.insert(got_first.end(), got_y.begin() + b, got_y.begin() + b + C);
      want_first.insert(want_first.end(), want_y.begin() + b, want_y.begin() + b + C);
    }
    std::vector<double> scale_first(want_first.size()), scale_y(nC);
    for (size_t i = 0; i < want_first.size(); ++i) scale_first[i] = 1 + std::fabs(want_first[i]);
    for (size_t i = 0; i < nC; ++i) scale_y[i] = 1 + std::fabs(want_y[i]);
    ExpectClose(got_first, want_first, 2e-5, 0, "Wkv7 long fp16, y of first rows" + tag, &scale_first);
    ExpectClose(got_y, want_y, 1e-2, 0, "Wkv7 long fp16, y" + tag, &scale_y);
    const std::vector<float> got_pool = Host(dpool, pool.size());
    std::vector<float> got_s, want_s;
    std::vector<double> scale_s;
    for (int s = 0; s < slots; ++s) {
      std::vector<float> g(static_cast<size_t>(per_slot)), want(g.size());
      ConvertToF32(DType::kF16, got_pool.data() + s * stride + offset, g.data(), g.size());
      ConvertToF32(DType::kF16, pool.data() + s * stride + offset, want.data(), want.size());
      got_s.insert(got_s.end(), g.begin(), g.end());
      want_s.insert(want_s.end(), want.begin(), want.end());
      if (s == 7) {
        EXPECT_EQ(g, want) << "slot 7 is in no segment" << tag;
      }
    }
    double mean = 0;
    for (size_t i = 0; i < want_s.size(); ++i) {
      scale_s.push_back(1 + std::fabs(want_s[i]));
      mean += std::fabs(static_cast<double>(got_s[i]) - want_s[i]) / scale_s.back();
    }
    mean /= static_cast<double>(want_s.size());
    ExpectClose(got_s, want_s, 1e-2, 0, "Wkv7 long fp16, state" + tag, &scale_s);
    std::printf("[ maxerr ] Wkv7 long fp16 state%s: mean |diff| / (1 + |s|) %.3g\n", tag.c_str(), mean);
    EXPECT_LT(mean, 1e-4) << tag;
  }
}

TEST_F(CudaOpsTest, Wkv4InPlaceInSlots) {
  for (int C : {64, 200}) {
    const int64_t offset = 2 * C + 1, stride = offset + 3 * C + 5;
    const size_t nC = static_cast<size_t>(kRows) * C;
    const auto k = Rand(nC, 1, -50, 60), v = Rand(nC, 2), u = Rand(C, 3), wd = Rand(C, 4, -3, -0.01f);
    auto state = Rand(static_cast<size_t>(kSlots * stride), 5, 0.5f, 2.0f);
    for (int c = 0; c < C; ++c) {
      state[5 * stride + offset + 2 * C + c] = -1e30f;  // slot 5 fresh: pp = -1e30
      state[5 * stride + offset + c] = state[5 * stride + offset + C + c] = 0;
      state[0 * stride + offset + 2 * C + c] = 3.0f;  // slot 0: a large running max
    }
    float *dstate = Dev(state), *dy = Poisoned(nC);
    gpu_->Wkv4(kSegs.data(), static_cast<int>(kSegs.size()), C, {dstate + offset, stride}, Dev(u), Dev(wd), Dev(k),
               Dev(v), dy);
    std::vector<float> want_y(nC);
    cpu_.Wkv4(kSegs.data(), static_cast<int>(kSegs.size()), C, {state.data() + offset, stride}, u.data(), wd.data(),
              k.data(), v.data(), want_y.data());
    std::vector<double> scale_y(nC), scale_s(state.size());
    for (size_t i = 0; i < nC; ++i) scale_y[i] = 1 + std::fabs(want_y[i]);
    for (size_t i = 0; i < state.size(); ++i) scale_s[i] = 1 + std::fabs(state[i]);
    ExpectClose(Host(dy, nC), want_y, 2e-5, 0, "Wkv4 y C=" + std::to_string(C), &scale_y);
    ExpectClose(Host(dstate, state.size()), state, 2e-5, 0, "Wkv4 state C=" + std::to_string(C), &scale_s);
  }
}

// Long segments (a pass whose longest has 128 rows or more) take the chunked
// scan of wkv4.cu: against the CPU's sequential walk, for a 700-row prompt, a
// fresh slot's 130 rows, segments of 20 and 8 rows (one chunk each, 8 rounded
// into the scan), a decoding row and padding; then 37 long segments (two
// launch groups of at most 32).
TEST_F(CudaOpsTest, Wkv4LongSegmentsTakeTheChunkedScan) {
  for (int C : {64, 200}) {
    for (int layout = 0; layout < 2; ++layout) {
      std::vector<Segment> segs;
      if (layout == 0) {
        segs = {{2, 0, 700}, {5, 700, 130}, {0, 830, 20}, {3, 850, 8}, {1, 858, 1}, {-1, 859, 5}};
      } else {
        int row = 0;
        segs.push_back({0, row, 300});
        row += 300;
        for (int j = 1; j <= 36; ++j) {
          segs.push_back({j, row, 9 + 5 * j});
          row += 9 + 5 * j;
        }
      }
      int rows = 0, slots = 0;
      for (const Segment& g : segs) {
        rows = std::max(rows, g.row_begin + g.rows);
        slots = std::max(slots, g.slot + 1);
      }
      const int64_t stride = 3 * C + 4;
      const size_t nC = static_cast<size_t>(rows) * C;
      const auto k = Rand(nC, 11, -50, 60), v = Rand(nC, 12), u = Rand(C, 13), wd = Rand(C, 14, -3, -0.01f);
      auto state = Rand(static_cast<size_t>(slots) * stride, 15, 0.5f, 2.0f);
      for (int c = 0; c < C && slots > 5; ++c) {
        state[5 * stride + 2 * C + c] = -1e38f;  // slot 5 fresh, as a new session's
        state[5 * stride + c] = state[5 * stride + C + c] = 0;
      }
      float *dstate = Dev(state), *dy = Poisoned(nC);
      gpu_->Wkv4(segs.data(), static_cast<int>(segs.size()), C, {dstate, stride}, Dev(u), Dev(wd), Dev(k), Dev(v),
                 dy);
      std::vector<float> want_y(nC, kNaN);
      cpu_.Wkv4(segs.data(), static_cast<int>(segs.size()), C, {state.data(), stride}, u.data(), wd.data(), k.data(),
                v.data(), want_y.data());
      std::vector<float> got_y = Host(dy, nC);
      // Padding rows are nobody's: neither side writes them.
      for (const Segment& g : segs) {
        if (g.slot >= 0) continue;
        for (size_t i = static_cast<size_t>(g.row_begin) * C; i < static_cast<size_t>(g.row_begin + g.rows) * C; ++i) {
          got_y[i] = want_y[i] = 0;
        }
      }
      std::vector<double> scale_y(nC);
      for (size_t i = 0; i < nC; ++i) scale_y[i] = 1 + std::fabs(want_y[i]);
      const std::string what = "C=" + std::to_string(C) + " layout " + std::to_string(layout);
      ExpectClose(got_y, want_y, 5e-5, 0, "Wkv4 chunked y " + what, &scale_y);
      // The state means (aa e^pp, bb e^pp): pp is compared as it is, aa and
      // bb at the CPU's pp (the sequential walk adds w to pp once a row, the
      // scan n w at once, so pp may differ in its last bits and aa, bb with it).
      // 2e-4: over 700 rows with keys in [-50, 60] the float sequential walk
      // is itself ~8e-5 from the exact (double) state and the scan ~2e-5 (a
      // host simulation of both), so the two differ by up to ~1e-4.
      std::vector<float> got_s = Host(dstate, state.size());
      std::vector<double> scale_s(state.size());
      for (int slot = 0; slot < slots; ++slot) {
        for (int c = 0; c < C; ++c) {
          const int64_t a = slot * stride + c, b = a + C, p = a + 2 * C;
          const double rescale = std::exp(static_cast<double>(got_s[p]) - state[p]);
          got_s[a] = static_cast<float>(got_s[a] * rescale);
          got_s[b] = static_cast<float>(got_s[b] * rescale);
        }
      }
      for (size_t i = 0; i < state.size(); ++i) scale_s[i] = 1 + std::fabs(state[i]);
      ExpectClose(got_s, state, 2e-4, 0, "Wkv4 chunked state (at the CPU's pp) " + what, &scale_s);
    }
  }
}

// Informational, not a test: which product kernel is fastest at each row
// count, per product shape of the 1.5B (C=2048) and 7.2B (C=4096) models and
// their LoRA matrices, f16 weights. For n = 1..128 it prints microseconds per
// call (host clock over 50 queued calls, so launch cost is included on every
// side, as it is in an eager pass) and weight-read GB/s (16-bit weight bytes /
// time) of the GEMV, the skinny tensor-core GEMM and cuBLAS (with its input
// conversion), marks the fastest, and ends each shape with the row ranges each
// kernel wins: the values for CudaBackendOptions::small_batch_rows (GEMV up to)
// and skinny_rows (skinny up to). The FFN down-projection (stored input-major,
// 25% of its inputs positive) compares the sparse kernel with relu² + cuBLAS;
// the skinny GEMM does not take that layout. Run with
//   cuda_backend_test --gtest_also_run_disabled_tests --gtest_filter='*SmallBatchCrossover*'
TEST_F(CudaOpsTest, DISABLED_SmallBatchCrossover) {
  // Each backend forces one kernel family for every n it supports.
  auto gemv = MakeGpu(DType::kF16, false, CudaBackendOptions::kMaxSmallBatchRows, 0);
  auto skinny = MakeSkinnyGpu(DType::kF16);
  auto blas = MakeGpu(DType::kF16, true);
  ASSERT_TRUE(gemv != nullptr && skinny != nullptr && blas != nullptr);
  auto fill = [](size_t n, uint32_t seed, float lo, float hi) {  // fast: these are large
    std::vector<float> v(n);
    uint32_t x = seed * 2654435761u + 1;
    for (auto& e : v) {
      x = x * 1664525u + 1013904223u;
      e = lo + (hi - lo) * static_cast<float>(x >> 8) / 16777216.0f;
    }
    return v;
  };
  constexpr int kMaxN = 128;
  const int ns[] = {1, 2, 4, 8, 16, 32, 64, 128};
  constexpr int kIters = 50;
  auto time_us = [&](CudaBackend& be, const std::function<void()>& call) {
    for (int i = 0; i < 5; ++i) call();
    EXPECT_TRUE(be.Sync().ok());
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < kIters; ++i) call();
    EXPECT_TRUE(be.Sync().ok());
    return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / kIters;
  };
  struct Shape {
    const char* what;
    int rows, cols;
    bool ffn_down;
  };
  const Shape shapes[] = {{"1.5B r/k/v/o", 2048, 2048, false},  {"1.5B ffn.key", 8192, 2048, false},
                          {"1.5B ffn.value", 2048, 8192, true}, {"1.5B head", 65536, 2048, false},
                          {"1.5B lora w in", 96, 2048, false},  {"1.5B lora w out", 2048, 96, false},
                          {"1.5B lora g in", 256, 2048, false}, {"7.2B r/k/v/o", 4096, 4096, false},
                          {"7.2B ffn.key", 16384, 4096, false}, {"7.2B ffn.value", 4096, 16384, true},
                          {"7.2B head", 65536, 4096, false},    {"7.2B lora w in", 128, 4096, false},
                          {"7.2B lora w out", 4096, 128, false}, {"7.2B lora g in", 480, 4096, false}};
  std::printf("[ timing ] %s\n", skinny->description().c_str());
  std::printf("[ timing ] us per call (weight GB/s); '*' marks the fastest; '-': kernel does not take it\n");
  for (const Shape& sh : shapes) {
    const auto w = fill(static_cast<size_t>(sh.rows) * sh.cols, sh.rows + sh.cols, -1, 1);
    CudaBackend* bes[3] = {gemv.get(), skinny.get(), blas.get()};
    Matrix mats[3];
    float *xs[3], *ys[3];
    const auto x = fill(static_cast<size_t>(kMaxN) * sh.cols, 7, sh.ffn_down ? -3.0f : -1.0f, 1.0f);
    for (int k = 0; k < 3; ++k) {
      auto m = sh.ffn_down ? bes[k]->UploadSparseInputMatrix(w.data(), sh.rows, sh.cols)
                           : bes[k]->UploadMatrix(w.data(), sh.rows, sh.cols);
      ASSERT_TRUE(m.ok()) << m.status();
      mats[k] = *m;
      xs[k] = Dev(x, bes[k]);
      ys[k] = Dev(std::vector<float>(static_cast<size_t>(kMaxN) * sh.rows), bes[k]);
    }
    const double bytes = 2.0 * sh.rows * sh.cols;
    std::printf("[ timing ] %-16s %5d x %5d  %s\n", sh.what, sh.rows, sh.cols,
                sh.ffn_down ? "n: sparse | - | relu2+cuBLAS" : "n: GEMV | skinny | cuBLAS");
    std::string best_by_n;
    for (int n : ns) {
      double us[3] = {-1, -1, -1};
      // GEMV / sparse: up to its row limit; skinny: not input-major; cuBLAS: always.
      if (n <= CudaBackendOptions::kMaxSmallBatchRows) {
        us[0] = time_us(*gemv, [&] {
          // The sparse kernel leaves its input as it was, so calls repeat the same work.
          if (sh.ffn_down) {
            gemv->ReluSquareMatMul(xs[0], n, mats[0], ys[0], false, DType::kF32);
          } else {
            gemv->MatMul(xs[0], n, mats[0], ys[0], false);
          }
        });
      }
      if (!sh.ffn_down && n <= CudaBackendOptions::kMaxSkinnyRows) {
        us[1] = time_us(*skinny, [&] { skinny->MatMul(xs[1], n, mats[1], ys[1], false); });
      }
      // The dense FFN side skips its relu² launch: a lower bound for cuBLAS.
      us[2] = time_us(*blas, [&] { blas->MatMul(xs[2], n, mats[2], ys[2], false); });
      int best = 2;
      for (int k = 0; k < 2; ++k) {
        if (us[k] > 0 && us[k] < us[best]) best = k;
      }
      std::string line;
      for (int k = 0; k < 3; ++k) {
        char cell[64];
        if (us[k] < 0) {
          std::snprintf(cell, sizeof(cell), "%22s", "-");
        } else {
          std::snprintf(cell, sizeof(cell), "%9.1f (%6.0f GB/s)%s", us[k], bytes / (us[k] * 1e3), k == best ? "*" : " ");
        }
        line += cell;
        if (k < 2) line += " | ";
      }
      std::printf("[ timing ]   n=%3d  %s\n", n, line.c_str());
      best_by_n += std::string(" n=") + std::to_string(n) + ":" +
                   (best == 0 ? (sh.ffn_down ? "sparse" : "gemv") : best == 1 ? "skinny" : "cublas");
    }
    std::printf("[ timing ]   fastest:%s\n", best_by_n.c_str());
    for (int k = 0; k < 3; ++k) {
      bes[k]->Free(xs[k]);
      bes[k]->Free(ys[k]);
      bes[k]->Free(const_cast<float*>(static_cast<const float*>(mats[k].data)));
    }
  }
}

}  // namespace
}  // namespace rwkv
