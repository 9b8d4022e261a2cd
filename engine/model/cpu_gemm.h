// A batch-invariant fp32 matrix product for the CPU backend.
//
// Why: the server promises that a session's tokens do not depend on which
// other sessions share its batch, nor on how its prompt was chunked. BLAS
// libraries do not give that: OpenBLAS's sgemm rounds a row differently
// depending on how many rows are in the call (measured on this project's
// machines for C=768-sized products). Here every output element is computed
// the same way whatever M, the row's position, the tiling or the thread
// count: acc = 0; for k in order: acc = fma(x[k], w[k], acc); y (=|+=) acc.
// The AVX2/FMA path and the portable path (std::fma) round identically.
//
// Weights are packed once into panels of kPanel output columns,
// P[panel][k][kPanel] (zero padded), so both the one-row (decode) and the
// many-row (prefill) cases stream the weights contiguously.
#ifndef RWKV_ENGINE_MODEL_CPU_GEMM_H_
#define RWKV_ENGINE_MODEL_CPU_GEMM_H_

#include <cstddef>
#include <cstdint>

#include "engine/model/thread_pool.h"

namespace rwkv {

inline constexpr int kGemmPanel = 16;

// Floats needed to pack a [rows, cols] matrix.
size_t PackedGemmFloats(int32_t rows, int32_t cols);

// Packs W [rows = out, cols = in] (row-major) into `packed`.
void PackGemmWeights(const float* w, int32_t rows, int32_t cols, float* packed);

// y[m, 0..rows) (= or +=) sum_k x[m, k] * W[., k] for m < n; x is [n, cols].
void PackedGemm(const float* x, int n, const float* packed, int32_t rows, int32_t cols, float* y,
                bool accumulate, ThreadPool& pool);

// Whether the AVX2+FMA kernel is in use on this machine.
bool GemmUsesAvx2();

}  // namespace rwkv

#endif  // RWKV_ENGINE_MODEL_CPU_GEMM_H_
