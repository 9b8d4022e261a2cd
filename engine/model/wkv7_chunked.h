// The RWKV-7 state recurrence of one head over a run of tokens, in chunks:
// the "diagonal plus low-rank" (DPLR) form of issue 5, where a chunk's work is
// small matrix products instead of a token-by-token walk.
//
// Per token t (S is N x N, row i = value index, column j = key index):
//   sa = S kk_t;  S = S diag(w_t) - sa (kk_t a_t)^T + v_t k_t^T;  y_t = S r_t
// With D_t = w_0 ... w_t (per column, within the chunk), b_t = kk_t a_t and
// S_in the state entering the chunk, unrolling gives
//   S_t  = (S_in + sum_{u <= t} (v_u Ki_u^T - sa_u Bi_u^T)) diag(D_t),
//          Ki_u = k_u / D_u, Bi_u = b_u / D_u;
//   sa_t = S_in P_t + sum_{u < t} (Akk[t][u] v_u - Abk[t][u] sa_u),
//          P_t = kk_t D_{t-1}, Akk[t][u] = P_t . Ki_u, Abk[t][u] = P_t . Bi_u;
//   y_t  = S_in Q_t + sum_{u <= t} (Bkr[t][u] v_u - Bbr[t][u] sa_u),
//          Q_t = r_t D_t, Bkr[t][u] = Q_t . Ki_u, Bbr[t][u] = Q_t . Bi_u.
// The L x L matrices depend on the chunk's vectors only, not on the state or
// on v, so they are shared by all N rows. With sp = S_in P^T and sq = S_in Q^T
// (row vectors over the chunk's tokens), sa (I + Abk^T) = sp + v Akk^T, so
// with W = (I + Abk^T)^-1 (unit upper triangular), per row
//   y     = sq + sp G1 + v G2,               G1 = -W Bbr^T, G2 = Bkr^T + Akk^T G1
//   S_out = S_in . D_end + v K2 - sp B2,     B2 = W (Bi . D_end), K2 = Ki . D_end - Akk^T B2
// where G1, G2 (L x L) and B2, K2 (L x N) are the chunk's, shared by its
// rows: a row is two [N] x [N, L] products, two [L] x [L, L] and two
// [L] x [L, N] ones, with no step that waits on the previous token (the
// form the GPU kernel needs; on a CPU core it is as fast as the token walk). Every factor D_t / D_u above has
// u <= t, so it is at most 1 and the form is stable as long as D stays in
// the floating-point range: RWKV-7's decay is exp(-exp(-0.5) sigmoid(.)) >=
// 0.545, so D >= 0.545^L (1e-17 for L = 64). A chunk whose D falls below
// kWkv7ChunkMinDecay (possible only for inputs no model produces) is walked
// token by token instead.
//
// Why here: the CUDA backend's long-segment kernel walks a prompt token by
// token with only H x N x N/8 threads at batch 1 (docs/PERF.md: 0.3
// instructions per cycle, a third of a 7.2B prefill pass). This is the
// reference the chunked GPU kernel is built and tested against; a CpuBackend
// runs a whole model through it with its wkv7_chunk argument.
#ifndef RWKV_ENGINE_MODEL_WKV7_CHUNKED_H_
#define RWKV_ENGINE_MODEL_WKV7_CHUNKED_H_

#include <cstdint>
#include <vector>

namespace rwkv {

inline constexpr double kWkv7ChunkMinDecay = 1e-30;

// Working memory for Wkv7Chunked, reused across calls of one thread.
template <typename Acc>
struct Wkv7ChunkScratch {
  std::vector<Acc> buf;
};

// One head: S (N x N, row-major, fp32) is updated in place over `rows`
// tokens, chunk tokens at a time (1 <= chunk <= 64), in Acc arithmetic
// (float or double); the vectors r, w, k, v, kk, a and the output y hold
// the head's N values of token t at t * stride.
template <typename Acc>
void Wkv7Chunked(float* S, int N, int rows, int chunk, const float* r, const float* w, const float* k,
                 const float* v, const float* kk, const float* a, int64_t stride, float* y,
                 Wkv7ChunkScratch<Acc>* scratch);

extern template void Wkv7Chunked<float>(float*, int, int, int, const float*, const float*, const float*,
                                        const float*, const float*, const float*, int64_t, float*,
                                        Wkv7ChunkScratch<float>*);
extern template void Wkv7Chunked<double>(float*, int, int, int, const float*, const float*, const float*,
                                         const float*, const float*, const float*, int64_t, float*,
                                         Wkv7ChunkScratch<double>*);

}  // namespace rwkv

#endif  // RWKV_ENGINE_MODEL_WKV7_CHUNKED_H_
