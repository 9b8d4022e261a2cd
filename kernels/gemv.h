// Skinny matrix products for small batches: for each job, y (= or +=)
// act(x) @ W^T with x fp32 [n, cols], W 16-bit [rows, cols], y fp32
// [n, rows], n <= kGemvMaxRows. Several independent jobs (the r/k/v and LoRA
// products of a layer) run in one launch.
//
// Why: at a few rows a decode step is a weight read. cuBLAS needs x rounded
// to the weights' type by a separate kernel first and, at n = 1, runs far
// from the read floor; one launch per product also costs more than the
// product itself for the LoRA matrices. Here a block stages its tile of x
// (up to 8 rows, a K-slice at a time, the activation applied on the way in)
// once in shared memory; each lane group streams output rows of W with
// 16-byte loads and applies each weight to every staged row, so W is read
// once per call (per 8-row tile: tiles of one row block run side by side, so
// a second tile's read of W is served by L2).
//
// Numerics: x stays fp32 (it is not rounded to the weight type, unlike the
// cuBLAS path), products and sums are fp32. Each output is one fixed chain:
// per lane an in-order FMA chain over its K chunks, then a fixed shuffle
// tree, so a row's result does not depend on n or on the other rows of the
// batch (within this kernel family; cuBLAS, used above the backend's row
// threshold, sums differently).
#ifndef RWKV_KERNELS_GEMV_H_
#define RWKV_KERNELS_GEMV_H_

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/types.h"

namespace rwkv::kernels {

inline constexpr int kGemvMaxRows = 64;  // batch rows per call (8 per tile)
inline constexpr int kGemvMaxJobs = 8;   // products per launch

enum class GemvAct : uint8_t { kNone = 0, kTanh = 1, kSigmoid = 2 };

struct GemvJob {
  const void* w = nullptr;   // (rows, cols) of the launch's weight type
  const float* x = nullptr;  // (n, cols)
  float* y = nullptr;        // (n, rows)
  int rows = 0, cols = 0;
  GemvAct act = GemvAct::kNone;  // applied to x as it is staged
  bool accumulate = false;
};

// True when launch_gemv takes this job: 16-bit weights, 1 <= n <=
// kGemvMaxRows, cols a multiple of 8, W and x 16-byte aligned.
bool gemv_supported(ElemType wtype, int n, const GemvJob& job);

// Runs `count` (<= kGemvMaxJobs) jobs, all with weights of `wtype`, in one
// launch. No job's y may overlap another job's x or y.
cudaError_t launch_gemv(ElemType wtype, int n, const GemvJob* jobs, int count, cudaStream_t stream);

}  // namespace rwkv::kernels

#endif  // RWKV_KERNELS_GEMV_H_
