// See cpu_gemm.h. Two kernels with identical per-element arithmetic: an
// AVX2/FMA one (4 rows x 16 columns of accumulators in registers, then single
// rows) chosen at run time, and a portable one using std::fma.
#include "engine/model/cpu_gemm.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace rwkv {
namespace {

constexpr int P = kGemmPanel;

// Writes one row's accumulators (valid columns only).
inline void Store(float* y, const float* acc, int valid, bool accumulate) {
  if (accumulate) {
    for (int j = 0; j < valid; ++j) y[j] += acc[j];
  } else {
    std::memcpy(y, acc, static_cast<size_t>(valid) * sizeof(float));
  }
}

void PanelsPortable(const float* x, int n, const float* packed, int32_t rows, int32_t cols, float* y,
                    bool accumulate, int64_t p_begin, int64_t p_end) {
  for (int64_t p = p_begin; p < p_end; ++p) {
    const float* wp = packed + static_cast<size_t>(p) * cols * P;
    const int valid = static_cast<int>(std::min<int64_t>(P, rows - p * P));
    for (int m = 0; m < n; ++m) {
      const float* xm = x + static_cast<size_t>(m) * cols;
      float acc[P] = {};
      for (int32_t k = 0; k < cols; ++k) {
        const float xv = xm[k];
        const float* wk = wp + static_cast<size_t>(k) * P;
        for (int j = 0; j < P; ++j) acc[j] = std::fma(xv, wk[j], acc[j]);
      }
      Store(y + static_cast<size_t>(m) * rows + p * P, acc, valid, accumulate);
    }
  }
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) void PanelsAvx2(const float* x, int n, const float* packed, int32_t rows,
                                                    int32_t cols, float* y, bool accumulate, int64_t p_begin,
                                                    int64_t p_end) {
  alignas(32) float acc[4][P];
  for (int64_t p = p_begin; p < p_end; ++p) {
    const float* wp = packed + static_cast<size_t>(p) * cols * P;
    const int valid = static_cast<int>(std::min<int64_t>(P, rows - p * P));
    int m = 0;
    for (; m + 4 <= n; m += 4) {
      const float* x0 = x + static_cast<size_t>(m) * cols;
      const float* x1 = x0 + cols;
      const float* x2 = x1 + cols;
      const float* x3 = x2 + cols;
      __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00,
             a31 = a00;
      for (int32_t k = 0; k < cols; ++k) {
        const __m256 w0 = _mm256_loadu_ps(wp + static_cast<size_t>(k) * P);
        const __m256 w1 = _mm256_loadu_ps(wp + static_cast<size_t>(k) * P + 8);
        __m256 b = _mm256_broadcast_ss(x0 + k);
        a00 = _mm256_fmadd_ps(b, w0, a00);
        a01 = _mm256_fmadd_ps(b, w1, a01);
        b = _mm256_broadcast_ss(x1 + k);
        a10 = _mm256_fmadd_ps(b, w0, a10);
        a11 = _mm256_fmadd_ps(b, w1, a11);
        b = _mm256_broadcast_ss(x2 + k);
        a20 = _mm256_fmadd_ps(b, w0, a20);
        a21 = _mm256_fmadd_ps(b, w1, a21);
        b = _mm256_broadcast_ss(x3 + k);
        a30 = _mm256_fmadd_ps(b, w0, a30);
        a31 = _mm256_fmadd_ps(b, w1, a31);
      }
      _mm256_store_ps(acc[0], a00);
      _mm256_store_ps(acc[0] + 8, a01);
      _mm256_store_ps(acc[1], a10);
      _mm256_store_ps(acc[1] + 8, a11);
      _mm256_store_ps(acc[2], a20);
      _mm256_store_ps(acc[2] + 8, a21);
      _mm256_store_ps(acc[3], a30);
      _mm256_store_ps(acc[3] + 8, a31);
      for (int i = 0; i < 4; ++i) Store(y + static_cast<size_t>(m + i) * rows + p * P, acc[i], valid, accumulate);
    }
    for (; m < n; ++m) {
      const float* x0 = x + static_cast<size_t>(m) * cols;
      __m256 a0 = _mm256_setzero_ps(), a1 = a0;
      for (int32_t k = 0; k < cols; ++k) {
        const __m256 b = _mm256_broadcast_ss(x0 + k);
        a0 = _mm256_fmadd_ps(b, _mm256_loadu_ps(wp + static_cast<size_t>(k) * P), a0);
        a1 = _mm256_fmadd_ps(b, _mm256_loadu_ps(wp + static_cast<size_t>(k) * P + 8), a1);
      }
      _mm256_store_ps(acc[0], a0);
      _mm256_store_ps(acc[0] + 8, a1);
      Store(y + static_cast<size_t>(m) * rows + p * P, acc[0], valid, accumulate);
    }
  }
}

bool DetectAvx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#else
bool DetectAvx2() { return false; }
#endif

}  // namespace

bool GemmUsesAvx2() {
  static const bool avx2 = DetectAvx2();
  return avx2;
}

size_t PackedGemmFloats(int32_t rows, int32_t cols) {
  const size_t panels = (static_cast<size_t>(rows) + P - 1) / P;
  return panels * static_cast<size_t>(cols) * P;
}

void PackGemmWeights(const float* w, int32_t rows, int32_t cols, float* packed) {
  std::memset(packed, 0, PackedGemmFloats(rows, cols) * sizeof(float));
  for (int32_t r = 0; r < rows; ++r) {
    float* dst = packed + static_cast<size_t>(r / P) * cols * P + r % P;
    const float* src = w + static_cast<size_t>(r) * cols;
    for (int32_t k = 0; k < cols; ++k) dst[static_cast<size_t>(k) * P] = src[k];
  }
}

void PackedGemm(const float* x, int n, const float* packed, int32_t rows, int32_t cols, float* y,
                bool accumulate, ThreadPool& pool) {
  const int64_t panels = (rows + P - 1) / P;
  // Enough pieces to balance the threads; each piece is whole panels, so the
  // split never changes any element's arithmetic.
  const int64_t pieces = std::min<int64_t>(panels, static_cast<int64_t>(pool.threads()) * 4);
  const bool avx2 = GemmUsesAvx2();
  pool.ParallelFor(pieces, [&](int64_t i) {
    const int64_t b = panels * i / pieces, e = panels * (i + 1) / pieces;
#if defined(__x86_64__)
    if (avx2) {
      PanelsAvx2(x, n, packed, rows, cols, y, accumulate, b, e);
      return;
    }
#endif
    PanelsPortable(x, n, packed, rows, cols, y, accumulate, b, e);
  });
}

}  // namespace rwkv
