// The FFN down-projection for small batches, skipping zero hidden units:
// y (= or +=) relu(h)² @ W^T with h fp32 [n, F] (the key projection, before
// relu²), W 16-bit stored input-major [F, C] (so a hidden unit's weights are
// one contiguous row), y fp32 [n, C].
//
// Why: after relu² about 75% of the hidden units are zero (docs/PERF.md: 24.5%
// positive on the benchmark models), and at a few rows the product is a
// weight read, so reading only the active units' rows cuts the FFN's largest
// read by up to 4x at n = 1. Rows of a batch tile share one pass over the
// union of their active units (a unit zero for one row adds an exact 0 there),
// so the saving shrinks as n grows (~44% active at n = 2, ~90% at n = 8), and
// the kernel then works as a dense input-major GEMV.
//
// Work split: blocks over (batch tile of <= 8 rows, 1024 output columns, a
// range of hidden units). Each block compacts its units' nonzero
// coefficients into shared memory (warp ballots, in ascending unit order),
// then each thread streams 16 bytes (8 columns) of every active unit's row and
// accumulates all tile rows in fp32. Blocks write fp32 partial sums per unit
// range; a second kernel adds them in a fixed order. No atomics: results are
// deterministic run to run.
#ifndef RWKV_KERNELS_FFN_SPARSE_H_
#define RWKV_KERNELS_FFN_SPARSE_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "kernels/types.h"

namespace rwkv::kernels {

inline constexpr int kFfnSparseMaxRows = 64;

// Floats of partial sums launch_ffn_sparse needs for these sizes.
size_t ffn_sparse_partial_floats(int n, int F, int C, int sm_count);

// True when launch_ffn_sparse takes this case: 16-bit weights, 1 <= n <=
// kFfnSparseMaxRows, C a multiple of 8, W and h 16-byte aligned.
bool ffn_sparse_supported(ElemType wtype, int n, int F, int C, const void* w, const float* h);

cudaError_t launch_ffn_sparse(ElemType wtype,
                              const float* h,  // (n, F)
                              int n, int F, int C,
                              const void* w,   // (F, C) of wtype
                              float* partial,  // (ffn_sparse_partial_floats(n, F, C, sm_count))
                              float* y,        // (n, C)
                              bool accumulate, int sm_count, cudaStream_t stream);

}  // namespace rwkv::kernels

#endif  // RWKV_KERNELS_FFN_SPARSE_H_
