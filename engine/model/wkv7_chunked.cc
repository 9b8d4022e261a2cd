#include "engine/model/wkv7_chunked.h"

#include <algorithm>
#include <cstddef>

namespace rwkv {
namespace {

// The token-by-token recurrence (CpuBackend::Wkv7's arithmetic, in Acc) over
// tokens [t0, t1), for chunks whose decay leaves the range.
template <typename Acc>
void WalkTokens(float* S, int N, int t0, int t1, const float* r, const float* w, const float* k, const float* v,
                const float* kk, const float* a, int64_t stride, float* y) {
  for (int t = t0; t < t1; ++t) {
    const int64_t o = static_cast<int64_t>(t) * stride;
    for (int i = 0; i < N; ++i) {
      float* Si = S + static_cast<int64_t>(i) * N;
      Acc sa = 0;
      for (int j = 0; j < N; ++j) sa += static_cast<Acc>(Si[j]) * kk[o + j];
      Acc acc = 0;
      for (int j = 0; j < N; ++j) {
        const Acc b = static_cast<Acc>(kk[o + j]) * a[o + j];
        const Acc s = static_cast<Acc>(Si[j]) * w[o + j] - sa * b + static_cast<Acc>(v[o + i]) * k[o + j];
        Si[j] = static_cast<float>(s);
        acc += s * r[o + j];
      }
      y[o + i] = static_cast<float>(acc);
    }
  }
}

}  // namespace

template <typename Acc>
void Wkv7Chunked(float* S, int N, int rows, int chunk, const float* r, const float* w, const float* k,
                 const float* v, const float* kk, const float* a, int64_t stride, float* y,
                 Wkv7ChunkScratch<Acc>* scratch) {
  if (rows <= 0 || N <= 0) return;
  const int L = std::clamp(chunk, 1, 64);
  const size_t LN = static_cast<size_t>(L) * N, LL = static_cast<size_t>(L) * L;
  // D, P, Q, Bi, Ki, B2, K2: [L][N]; Abk, Akk, Bbr, Bkr, W, G1, G2: [L][L];
  // the row's S_in: [N]; sp, sq, v of the row: [L] each.
  scratch->buf.resize(7 * LN + 7 * LL + static_cast<size_t>(N) + 3 * static_cast<size_t>(L));
  Acc* next = scratch->buf.data();
  auto take = [&next](size_t count) {
    Acc* p = next;
    next += count;
    return p;
  };
  Acc *D = take(LN), *P = take(LN), *Q = take(LN), *Bi = take(LN), *Ki = take(LN), *B2 = take(LN), *K2 = take(LN);
  Acc *Abk = take(LL), *Akk = take(LL), *Bbr = take(LL), *Bkr = take(LL), *W = take(LL), *G1 = take(LL),
      *G2 = take(LL);
  Acc *row = take(N), *sp = take(L), *sq = take(L), *vr = take(L);

  for (int t0 = 0; t0 < rows; t0 += L) {
    const int n = std::min(L, rows - t0);
    // Cumulative decays; a chunk they would take out of range is walked.
    bool in_range = true;
    for (int t = 0; t < n; ++t) {
      const int64_t o = static_cast<int64_t>(t0 + t) * stride;
      for (int j = 0; j < N; ++j) {
        const Acc d = (t > 0 ? D[(t - 1) * N + j] : Acc{1}) * static_cast<Acc>(w[o + j]);
        D[t * N + j] = d;
        in_range = in_range && d >= static_cast<Acc>(kWkv7ChunkMinDecay);
      }
    }
    if (!in_range) {
      WalkTokens<Acc>(S, N, t0, t0 + n, r, w, k, v, kk, a, stride, y);
      continue;
    }
    const Acc* Dend = D + static_cast<size_t>(n - 1) * N;
    for (int t = 0; t < n; ++t) {
      const int64_t o = static_cast<int64_t>(t0 + t) * stride;
      for (int j = 0; j < N; ++j) {
        const Acc d = D[t * N + j], dprev = t > 0 ? D[(t - 1) * N + j] : Acc{1};
        const Acc inv = Acc{1} / d;
        P[t * N + j] = static_cast<Acc>(kk[o + j]) * dprev;
        Q[t * N + j] = static_cast<Acc>(r[o + j]) * d;
        Bi[t * N + j] = static_cast<Acc>(kk[o + j]) * a[o + j] * inv;
        Ki[t * N + j] = static_cast<Acc>(k[o + j]) * inv;
      }
    }
    std::fill(Abk, Abk + 4 * LL, Acc{0});  // Abk, Akk, Bbr, Bkr
    for (int t = 0; t < n; ++t) {
      for (int u = 0; u <= t; ++u) {
        Acc pb = 0, pk = 0, qb = 0, qk = 0;
        for (int j = 0; j < N; ++j) {
          pb += P[t * N + j] * Bi[u * N + j];
          pk += P[t * N + j] * Ki[u * N + j];
          qb += Q[t * N + j] * Bi[u * N + j];
          qk += Q[t * N + j] * Ki[u * N + j];
        }
        // sa_t reads the state before token t: only u < t.
        Abk[t * L + u] = u < t ? pb : Acc{0};
        Akk[t * L + u] = u < t ? pk : Acc{0};
        Bbr[t * L + u] = qb;
        Bkr[t * L + u] = qk;
      }
    }
    // W = (I + Abk^T)^-1, unit upper triangular: back substitution per column.
    for (int c = 0; c < n; ++c) {
      for (int q = n - 1; q >= 0; --q) {
        Acc x = q == c ? Acc{1} : Acc{0};
        for (int m = q + 1; m < n; ++m) x -= Abk[m * L + q] * W[m * L + c];
        W[q * L + c] = x;
      }
    }
    // B2 = W (Bi . D_end), K2 = Ki . D_end - Akk^T B2, G1 = -W Bbr^T,
    // G2 = Bkr^T + Akk^T G1 (wkv7_chunked.h): what a row needs besides its
    // own S_in, sp = S_in P^T and v.
    for (int q = 0; q < n; ++q) {
      for (int j = 0; j < N; ++j) {
        Acc x = 0;
        for (int c = q; c < n; ++c) x += W[q * L + c] * Bi[c * N + j];
        B2[q * N + j] = x * Dend[j];
      }
      for (int t = 0; t < n; ++t) {
        Acc x = 0;
        for (int c = q; c < n; ++c) x += W[q * L + c] * Bbr[t * L + c];
        G1[q * L + t] = -x;
      }
    }
    for (int u = 0; u < n; ++u) {
      for (int j = 0; j < N; ++j) {
        Acc x = Ki[u * N + j] * Dend[j];
        for (int q = u + 1; q < n; ++q) x -= Akk[q * L + u] * B2[q * N + j];
        K2[u * N + j] = x;
      }
      for (int t = 0; t < n; ++t) {
        Acc x = Bkr[t * L + u];
        for (int q = u + 1; q < n; ++q) x += Akk[q * L + u] * G1[q * L + t];
        G2[u * L + t] = x;
      }
    }
    // Per row: sp, sq from the entering state; then y and the new state.
    for (int i = 0; i < N; ++i) {
      float* Si = S + static_cast<int64_t>(i) * N;
      for (int j = 0; j < N; ++j) row[j] = Si[j];
      for (int t = 0; t < n; ++t) {
        vr[t] = v[static_cast<int64_t>(t0 + t) * stride + i];
        Acc p = 0, q = 0;
        for (int j = 0; j < N; ++j) {
          p += row[j] * P[t * N + j];
          q += row[j] * Q[t * N + j];
        }
        sp[t] = p;
        sq[t] = q;
      }
      for (int t = 0; t < n; ++t) {
        Acc x = sq[t];
        for (int u = 0; u < n; ++u) x += sp[u] * G1[u * L + t] + vr[u] * G2[u * L + t];
        y[static_cast<int64_t>(t0 + t) * stride + i] = static_cast<float>(x);
      }
      for (int j = 0; j < N; ++j) {
        Acc x = row[j] * Dend[j];
        for (int u = 0; u < n; ++u) x += vr[u] * K2[u * N + j] - sp[u] * B2[u * N + j];
        Si[j] = static_cast<float>(x);
      }
    }
  }
}

template void Wkv7Chunked<float>(float*, int, int, int, const float*, const float*, const float*, const float*,
                                 const float*, const float*, int64_t, float*, Wkv7ChunkScratch<float>*);
template void Wkv7Chunked<double>(float*, int, int, int, const float*, const float*, const float*, const float*,
                                  const float*, const float*, int64_t, float*, Wkv7ChunkScratch<double>*);

}  // namespace rwkv
