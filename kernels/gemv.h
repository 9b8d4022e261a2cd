// Skinny matrix products for small batches: y (= or +=) x @ W^T for n <= 8
// rows of fp32 x against 16-bit weights W [rows, cols]. Used only with the
// CUDA backend's small_batch_gemv option (see cuda_backend.h for why it is
// off by default: cuBLAS, used above 8 rows, sums differently).
//
// Why: at n = 1..8 a decode step is a weight read, and cuBLAS needs a separate
// pass rounding x to the weights' type first (and picks GEMV-like algorithms
// far from the read floor). Here each warp streams one weight row with 16-byte
// loads and applies it to all n input rows at once, so W is read once per
// call. The input is rounded to the weight type in registers, exactly as the
// cuBLAS path rounds it, so both paths compute the same products; sums are
// fp32 (per-lane FMAs, then a warp tree), and a row's result does not depend
// on n (each input row has its own accumulators, summed in the same order).
#ifndef RWKV_KERNELS_GEMV_H_
#define RWKV_KERNELS_GEMV_H_

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/types.h"

namespace rwkv::kernels {

inline constexpr int kGemvMaxRows = 8;

// True when launch_gemv takes this case: 16-bit weights, 1 <= n <=
// kGemvMaxRows, cols a multiple of 8, and W and x 16-byte aligned.
bool gemv_supported(ElemType wtype, int n, int cols, const void* w, const float* x);

cudaError_t launch_gemv(const void* w,   // (rows, cols) of wtype
                        ElemType wtype, int rows, int cols,
                        const float* x,  // (n, cols)
                        int n,
                        float* y,        // (n, rows)
                        bool accumulate, cudaStream_t stream);

}  // namespace rwkv::kernels

#endif  // RWKV_KERNELS_GEMV_H_
