// CPU implementations of the backend ops. Formulas follow BlinkDL's official
// code (see shared/docs/RWKV.md); where a formula is rearranged for speed the
// comment says how. Accumulations that feed normalisations use double where
// it costs nothing measurable, so this stays a trustworthy reference.
#include "engine/model/cpu_backend.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>

#include "absl/strings/str_format.h"
#include "engine/loader/dtype.h"
#include "engine/model/fp16_state_rounding.h"
#include "engine/model/wkv7_chunked.h"

namespace rwkv {
namespace {

inline float SigmoidF(float x) { return 1.0f / (1.0f + std::exp(-x)); }

}  // namespace

CpuBackend::CpuBackend(int threads, CpuGemm gemm, int wkv7_chunk)
    : pool_(std::max(1, threads)), gemm_(gemm), wkv7_chunk_(std::clamp(wkv7_chunk, 0, 64)) {
  openblas_set_num_threads(std::max(1, threads));
}

CpuBackend::~CpuBackend() {
  for (auto& [p, n] : allocations_) std::free(p);
}

absl::StatusOr<float*> CpuBackend::Alloc(size_t floats) {
  const size_t bytes = std::max<size_t>(64, (floats * sizeof(float) + 63) / 64 * 64);
  void* p = std::aligned_alloc(64, bytes);
  if (p == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("out of host memory allocating %.1f MiB", bytes / 1048576.0));
  }
  allocations_[static_cast<float*>(p)] = floats;
  return static_cast<float*>(p);
}

void CpuBackend::Free(float* p) {
  if (p == nullptr) return;
  if (allocations_.erase(p) > 0) std::free(p);
}

absl::Status CpuBackend::Upload(const float* host, float* dst, size_t floats) {
  std::memcpy(dst, host, floats * sizeof(float));
  return absl::OkStatus();
}

absl::Status CpuBackend::Download(const float* src, float* host, size_t floats) {
  std::memcpy(host, src, floats * sizeof(float));
  return absl::OkStatus();
}

absl::Status CpuBackend::CopyFloats(const float* src, float* dst, size_t floats) {
  std::memmove(dst, src, floats * sizeof(float));
  return absl::OkStatus();
}

absl::StatusOr<Matrix> CpuBackend::UploadMatrix(const float* host, int32_t rows, int32_t cols) {
  if (gemm_ == CpuGemm::kOpenBlas) return UploadEmbedding(host, rows, cols);
  auto p = Alloc(PackedGemmFloats(rows, cols));
  if (!p.ok()) return p.status();
  PackGemmWeights(host, rows, cols, *p);
  return Matrix{*p, rows, cols, DType::kF32};
}

absl::StatusOr<Matrix> CpuBackend::UploadEmbedding(const float* host, int32_t rows, int32_t cols) {
  auto p = Alloc(static_cast<size_t>(rows) * cols);
  if (!p.ok()) return p.status();
  std::memcpy(*p, host, static_cast<size_t>(rows) * cols * sizeof(float));
  return Matrix{*p, rows, cols, DType::kF32};
}

void CpuBackend::Embedding(const Matrix& emb, const int32_t* tokens, int n, float* x) {
  const float* table = static_cast<const float*>(emb.data);
  for (int i = 0; i < n; ++i) {
    std::memcpy(x + static_cast<int64_t>(i) * emb.cols, table + static_cast<int64_t>(tokens[i]) * emb.cols,
                emb.cols * sizeof(float));
  }
}

void CpuBackend::LayerNorm(const float* x, int n, int C, const float* w, const float* b, float* y) {
  for (int i = 0; i < n; ++i) {
    const float* xi = x + static_cast<int64_t>(i) * C;
    float* yi = y + static_cast<int64_t>(i) * C;
    double mean = 0;
    for (int c = 0; c < C; ++c) mean += xi[c];
    mean /= C;
    double var = 0;
    for (int c = 0; c < C; ++c) var += (xi[c] - mean) * (xi[c] - mean);
    var /= C;
    const float inv = static_cast<float>(1.0 / std::sqrt(var + 1e-5));
    const float m = static_cast<float>(mean);
    for (int c = 0; c < C; ++c) yi[c] = (xi[c] - m) * inv * w[c] + b[c];
  }
}

void CpuBackend::MatMul(const float* x, int n, const Matrix& w, float* y, bool accumulate) {
  const float* W = static_cast<const float*>(w.data);
  if (gemm_ == CpuGemm::kBatchInvariant) {
    PackedGemm(x, n, W, w.rows, w.cols, y, accumulate, pool_);
    return;
  }
  const float beta = accumulate ? 1.0f : 0.0f;
  if (n == 1) {
    cblas_sgemv(CblasRowMajor, CblasNoTrans, w.rows, w.cols, 1.0f, W, w.cols, x, 1, beta, y, 1);
  } else {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, w.rows, w.cols, 1.0f, x, w.cols, W, w.cols, beta,
                y, w.rows);
  }
}

void CpuBackend::GatherRows(const float* x, const int32_t* rows, int n, int C, float* out) {
  for (int i = 0; i < n; ++i) {
    std::memcpy(out + static_cast<int64_t>(i) * C, x + static_cast<int64_t>(rows[i]) * C, C * sizeof(float));
  }
}

void CpuBackend::TokenShift(const float* xx, const Segment* segs, int nseg, int C, StateRef x_prev, float* d) {
  for (int s = 0; s < nseg; ++s) {
    const Segment& g = segs[s];
    if (g.slot < 0 || g.rows == 0) continue;  // padding (backend.h): no state, rows never read
    float* prev_state = x_prev.base + g.slot * x_prev.slot_stride;
    for (int t = 0; t < g.rows; ++t) {
      const int64_t r = g.row_begin + t;
      const float* cur = xx + r * C;
      const float* prev = t == 0 ? prev_state : xx + (r - 1) * C;
      float* dr = d + r * C;
      for (int c = 0; c < C; ++c) dr[c] = prev[c] - cur[c];
    }
    std::memcpy(prev_state, xx + static_cast<int64_t>(g.row_begin + g.rows - 1) * C, C * sizeof(float));
  }
}

void CpuBackend::Mix(const float* xx, const float* d, int n, int C, const float* const* mixes,
                     float* const* outs, int count) {
  for (int j = 0; j < count; ++j) {
    const float* m = mixes[j];
    float* o = outs[j];
    for (int i = 0; i < n; ++i) {
      const int64_t base = static_cast<int64_t>(i) * C;
      for (int c = 0; c < C; ++c) o[base + c] = xx[base + c] + d[base + c] * m[c];
    }
  }
}

void CpuBackend::Sigmoid(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = SigmoidF(x[i]);
}

void CpuBackend::Tanh(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = std::tanh(x[i]);
}

void CpuBackend::ReluSquare(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i] > 0 ? x[i] : 0.0f;
    x[i] = v * v;
  }
}

void CpuBackend::Mul(float* x, const float* a, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] *= a[i];
}

void CpuBackend::MulAdd(float* x, const float* a, const float* b, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] += a[i] * b[i];
}

void CpuBackend::SigmoidBias(float* x, const float* bias, int n, int C) {
  for (int i = 0; i < n; ++i) {
    float* xi = x + static_cast<int64_t>(i) * C;
    for (int c = 0; c < C; ++c) xi[c] = SigmoidF(xi[c] + bias[c]);
  }
}

void CpuBackend::V7Decay(float* w, const float* w0, int n, int C) {
  const float scale = std::exp(-0.5f);  // exp(-exp(-0.5)*sigmoid(.)) == exp(-exp(-softplus(-.) - 0.5))
  for (int i = 0; i < n; ++i) {
    float* wi = w + static_cast<int64_t>(i) * C;
    for (int c = 0; c < C; ++c) wi[c] = std::exp(-scale * SigmoidF(w0[c] + wi[c]));
  }
}

void CpuBackend::V7KeyPrep(float* k, float* kk, const float* a, const float* k_k, const float* k_a, int n,
                           int C, int N) {
  for (int i = 0; i < n; ++i) {
    const int64_t base = static_cast<int64_t>(i) * C;
    for (int h = 0; h < C / N; ++h) {
      const int64_t o = base + static_cast<int64_t>(h) * N;
      double ss = 0;
      for (int j = 0; j < N; ++j) {
        const float v = k[o + j] * k_k[h * N + j];
        kk[o + j] = v;
        ss += static_cast<double>(v) * v;
      }
      const float inv = 1.0f / std::max(static_cast<float>(std::sqrt(ss)), 1e-12f);
      for (int j = 0; j < N; ++j) kk[o + j] *= inv;
    }
    for (int c = 0; c < C; ++c) k[base + c] = k[base + c] * (1.0f + (a[base + c] - 1.0f) * k_a[c]);
  }
}

void CpuBackend::V7ValueResidual(float* v, const float* v_first, const float* gate, const float* v0, int n,
                                 int C) {
  for (int i = 0; i < n; ++i) {
    const int64_t base = static_cast<int64_t>(i) * C;
    for (int c = 0; c < C; ++c) {
      const float g = SigmoidF(v0[c] + gate[base + c]);
      v[base + c] += (v_first[base + c] - v[base + c]) * g;
    }
  }
}

void CpuBackend::Wkv7(const Segment* segs, int nseg, int C, int N, StateRef wkv, const float* r,
                      const float* w, const float* k, const float* v, const float* kk, const float* a,
                      float* y) {
  const int H = C / N;
  if (wkv.dtype == DType::kF16) {
    Wkv7Fp16State(segs, nseg, C, N, wkv, r, w, k, v, kk, a, y);
    return;
  }
  // One work item per (segment, head): each owns an N x N state block.
  pool_.ParallelFor(static_cast<int64_t>(nseg) * H, [&](int64_t item) {
    const Segment& g = segs[item / H];
    if (g.slot < 0) return;  // padding
    const int h = static_cast<int>(item % H);
    float* S = wkv.base + g.slot * wkv.slot_stride + static_cast<int64_t>(h) * N * N;  // [N value][N key]
    if (wkv7_chunk_ > 0 && g.rows >= kWkv7ChunkMinRows) {
      thread_local Wkv7ChunkScratch<float> scratch;
      const int64_t o = static_cast<int64_t>(g.row_begin) * C + static_cast<int64_t>(h) * N;
      Wkv7Chunked<float>(S, N, g.rows, wkv7_chunk_, r + o, w + o, k + o, v + o, kk + o, a + o, C, y + o, &scratch);
      return;
    }
    float b[256];  // kk * a for this head (N <= 256 is checked at load)
    for (int t = 0; t < g.rows; ++t) {
      const int64_t o = static_cast<int64_t>(g.row_begin + t) * C + static_cast<int64_t>(h) * N;
      const float* rt = r + o;
      const float* wt = w + o;
      const float* kt = k + o;
      const float* vt = v + o;
      const float* kkt = kk + o;
      for (int j = 0; j < N; ++j) b[j] = kkt[j] * a[o + j];
      float* yt = y + o;
      for (int i = 0; i < N; ++i) {
        float* Si = S + static_cast<int64_t>(i) * N;
        float sa = 0;  // (S kk)_i; the official update subtracts it: S (-kk)
        for (int j = 0; j < N; ++j) sa += Si[j] * kkt[j];
        float acc = 0;
        const float vi = vt[i];
        for (int j = 0; j < N; ++j) {
          const float s = Si[j] * wt[j] - sa * b[j] + vi * kt[j];
          Si[j] = s;
          acc += s * rt[j];
        }
        yt[i] = acc;
      }
    }
  });
}

// The fp32 loop above on fp16 storage: each row is widened to fp32, updated
// in the same order, and every new value rounded back by
// fp16_state_rounding.h (the rounding the CUDA kernel does, bit for bit).
void CpuBackend::Wkv7Fp16State(const Segment* segs, int nseg, int C, int N, StateRef wkv, const float* r,
                               const float* w, const float* k, const float* v, const float* kk, const float* a,
                               float* y) {
  const int H = C / N;
  pool_.ParallelFor(static_cast<int64_t>(nseg) * H, [&](int64_t item) {
    const Segment& g = segs[item / H];
    if (g.slot < 0) return;  // padding
    const int h = static_cast<int>(item % H);
    uint16_t* S = reinterpret_cast<uint16_t*>(wkv.base + g.slot * wkv.slot_stride) + static_cast<int64_t>(h) * N * N;
    float b[256], row[256];  // N <= 256 is checked at load
    for (int t = 0; t < g.rows; ++t) {
      const int64_t o = static_cast<int64_t>(g.row_begin + t) * C + static_cast<int64_t>(h) * N;
      const float* rt = r + o;
      const float* wt = w + o;
      const float* kt = k + o;
      const float* vt = v + o;
      const float* kkt = kk + o;
      for (int j = 0; j < N; ++j) b[j] = kkt[j] * a[o + j];
      float* yt = y + o;
      for (int i = 0; i < N; ++i) {
        uint16_t* Si = S + static_cast<int64_t>(i) * N;
        for (int j = 0; j < N; ++j) row[j] = F16ToF32(Si[j]);
        float sa = 0;
        for (int j = 0; j < N; ++j) sa += row[j] * kkt[j];
        float acc = 0;
        const float vi = vt[i];
        const uint32_t key = Fp16StateRowKey(h, N, i, vi);
        for (int j = 0; j < N; ++j) {
          const float s = row[j] * wt[j] - sa * b[j] + vi * kt[j];
          acc += s * rt[j];
          Si[j] = F32ToF16(Fp16StateRound(s, Fp16StateDither(key, j, row[j])));
        }
        yt[i] = acc;
      }
    }
  });
}

void CpuBackend::V7Output(float* y, const float* r, const float* k, const float* v, const float* g,
                          const float* r_k, const float* lnw, const float* lnb, int n, int C, int N, float* out,
                          DType out_type) {
  // MatMulInputType is kF32 here: the model never asks for another type.
  if (out_type != DType::kF32) std::abort();
  const int H = C / N;
  for (int i = 0; i < n; ++i) {
    for (int h = 0; h < H; ++h) {
      const int64_t o = static_cast<int64_t>(i) * C + static_cast<int64_t>(h) * N;
      double mean = 0;
      for (int j = 0; j < N; ++j) mean += y[o + j];
      mean /= N;
      double var = 0;
      for (int j = 0; j < N; ++j) var += (y[o + j] - mean) * (y[o + j] - mean);
      var /= N;
      const float inv = static_cast<float>(1.0 / std::sqrt(var + 64e-5));
      float bonus = 0;
      for (int j = 0; j < N; ++j) bonus += r[o + j] * k[o + j] * r_k[h * N + j];
      for (int j = 0; j < N; ++j) {
        const int c = h * N + j;
        const float norm = (y[o + j] - static_cast<float>(mean)) * inv * lnw[c] + lnb[c];
        out[o + j] = (norm + bonus * v[o + j]) * g[o + j];
      }
    }
  }
}

void CpuBackend::Wkv4(const Segment* segs, int nseg, int C, StateRef aa_ref, const float* time_first,
                      const float* time_decay, const float* k, const float* v, float* y) {
  pool_.ParallelFor(nseg, [&](int64_t s) {
    const Segment& g = segs[s];
    if (g.slot < 0) return;  // padding
    float* aa = aa_ref.base + g.slot * aa_ref.slot_stride;
    float* bb = aa + C;
    float* pp = aa + 2 * C;
    for (int t = 0; t < g.rows; ++t) {
      const int64_t o = static_cast<int64_t>(g.row_begin + t) * C;
      for (int c = 0; c < C; ++c) {
        const float kt = k[o + c], vt = v[o + c];
        float ww = time_first[c] + kt;
        float q = std::max(pp[c], ww);
        float e1 = std::exp(pp[c] - q);
        float e2 = std::exp(ww - q);
        y[o + c] = (e1 * aa[c] + e2 * vt) / (e1 * bb[c] + e2);
        ww = pp[c] + time_decay[c];
        q = std::max(ww, kt);
        e1 = std::exp(ww - q);
        e2 = std::exp(kt - q);
        aa[c] = e1 * aa[c] + e2 * vt;
        bb[c] = e1 * bb[c] + e2;
        pp[c] = q;
      }
    }
  });
}

}  // namespace rwkv
