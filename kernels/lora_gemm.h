// Tensor-core products for the RWKV-7 LoRA matrices at medium batches: for
// each job, y (= or +=) x @ W^T with W 16-bit [rows, cols] row-major, x
// [n, cols] in the weight type (the mixes for the "in" side; for the "out"
// side the "in" product's output, activated and rounded by the "in" launch
// itself, LoraJob::y16, or by the backend's conversion launch), y fp32
// [n, rows] or (y16) in the weight type. The jobs of one launch
// are all short (cols <= kLoraGemmMaxCols: the "out" side) or all long (the
// "in" side, cols = C); any n >= 1.
//
// Why: above the skinny GEMM's rows (32) cuBLAS ran each side as one batched
// call padded to one shape: on an H100, "in" / "out" 9.5 / 9.2 us for the
// 7.2B model at 64 rows (four 480 x 4096 / 4096 x 480, where the real widths
// are 128, 128, 96, 480) and 7.0 / 6.6 us for the 1.5B model at 256 rows,
// ~11% of a 1.5B B=256 step with the conversion launch, for a few MB of real
// weights (tools/probes/ltscan.cu, docs/PERF.md).
//
// Work split: a CTA (8 warps) owns 64 output columns of y (rows of W) x 64
// batch rows; a warp owns 16 of the columns x 32 of the rows. Both operands
// arrive by cp.async in 64-wide K chunks, 4 of them in flight from the start
// (8 in a long launch of at most one CTA an SM, so that all of a CTA's K
// range is in flight at the 7.2B model's 64 rows). A short job
// takes all of K in its CTA. A long job's tile is split over the kSplits CTAs
// of a thread-block cluster, one K range each; the partial tiles meet in
// shared memory and each CTA adds kTileN / kSplits of the tile's rows over
// distributed shared memory, in rank order. Either way each output is one
// fixed sequence of operations, so a batch row's result does not depend on n
// or on the other jobs of the launch.
#ifndef RWKV_KERNELS_LORA_GEMM_H_
#define RWKV_KERNELS_LORA_GEMM_H_

#include <cuda_runtime_api.h>

#include "kernels/gemv.h"
#include "kernels/types.h"

namespace rwkv::kernels {

inline constexpr int kLoraGemmMaxJobs = 8;
inline constexpr int kLoraGemmMaxCols = 512;

// One product: y (= or +=) x @ W^T.
struct LoraJob {
  const void* w = nullptr;  // (rows, cols) of the launch's weight type, row-major
  const void* x = nullptr;  // (n, cols) of the weight type (already activated)
  void* y = nullptr;        // (n, rows): fp32, or the weight type where y16
  int rows = 0, cols = 0;
  bool accumulate = false;
  // Without accumulate: y holds the weight type, each sum passed through
  // y_act (tanhf, or 1 / (1 + expf(-v)), as kernels/convert.cu applies
  // them) and rounded to nearest even: what the conversion launch would
  // make of the fp32 y, bit for bit (the "in" side handing the "out" side
  // its input: Backend::LoraHiddenType).
  bool y16 = false;
  GemvAct y_act = GemvAct::kNone;
};

// True when launch_lora_gemm takes this job: 16-bit weights, n >= 1, rows a
// multiple of 4, cols a multiple of 8, W, x and y 16-byte aligned, y16 and
// y_act as LoraJob allows.
bool lora_gemm_supported(ElemType wtype, int n, const LoraJob& job);

// Runs `count` (<= kLoraGemmMaxJobs) jobs, all with weights of `wtype` and
// all short or all long, in one launch. No job's y may overlap another job's
// x or y.
// sm_count (the device's SMs) picks the pipeline depth of a long launch.
cudaError_t launch_lora_gemm(ElemType wtype, int n, const LoraJob* jobs, int count, int sm_count,
                             cudaStream_t stream);

}  // namespace rwkv::kernels

#endif  // RWKV_KERNELS_LORA_GEMM_H_
