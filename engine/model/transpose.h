// A row-major matrix transposed on the host, in cache-sized tiles and on
// several threads for large matrices.
//
// Why: loading reorders some matrices (LoRA matrices to [out, in], the CUDA
// backend's ffn.value to input-major), and a naive element loop writes every
// output element a whole column apart: ~0.5 s per 7.2B ffn.value, 15 s of a
// 32-layer load on one thread.
#ifndef RWKV_ENGINE_MODEL_TRANSPOSE_H_
#define RWKV_ENGINE_MODEL_TRANSPOSE_H_

#include <cstdint>

namespace rwkv {

// dst[c * rows + r] = src[r * cols + c] for r < rows, c < cols. The ranges
// must not overlap. Exact (a copy), whatever the threads.
void Transpose(const float* src, int64_t rows, int64_t cols, float* dst);

}  // namespace rwkv

#endif  // RWKV_ENGINE_MODEL_TRANSPOSE_H_
