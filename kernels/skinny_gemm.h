// Weight-streaming matrix products for medium batches on tensor cores: for
// each job, y (= or +=) act(x) @ W^T with x fp32 [n, cols], W 16-bit
// [rows, cols] row-major, y fp32 [n, rows], 1 <= n <= kSkinnyMaxRows. Several
// independent jobs (a layer's r/k/v and LoRA products) run in one launch. The
// same job description as the GEMV (kernels/gemv.h), so the backend hands
// either kernel the same list.
//
// Why: between ~4 and ~64 rows a decode step is still a weight read, but the
// GEMV does n fp32 FMAs per weight on CUDA cores and cuBLAS (after a separate
// fp32 -> 16-bit conversion launch) runs far from the read floor. Here each
// weight is loaded once, straight into registers as an mma.sync A fragment,
// and applied to up to 64 rows by m16n8k16 tensor-core products.
//
// Work split: a CTA (4 warps) owns 64 output rows and one K range; a warp
// owns 16 of those rows. K is split so that every launch has about three CTAs
// per SM whatever the shapes (split-K for short, wide matrices such as
// 2048 x 2048 or the LoRA down-projections); the K chunk is the same for every
// job of a launch, so CTAs carry equal work. Split-K partial sums go to a
// workspace and the last CTA of a row tile (an integer counter, reset by that
// CTA for the next launch) adds them in split order: no float atomics, so the
// result does not depend on scheduling.
//
// Numerics: x is rounded to the weight type (to nearest even) as it is staged
// in shared memory, after the activation, as the cuBLAS path rounds it;
// products and sums are fp32 (tensor-core accumulation). The K split depends
// only on the job shapes and the SM count, never on n, and a batch row's
// products never mix with another row's, so a row's result does not depend on
// the batch it came in (within this kernel).
#ifndef RWKV_KERNELS_SKINNY_GEMM_H_
#define RWKV_KERNELS_SKINNY_GEMM_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "kernels/gemv.h"
#include "kernels/types.h"

namespace rwkv::kernels {

inline constexpr int kSkinnyMaxRows = 64;  // batch rows per call
inline constexpr int kSkinnyMaxJobs = 8;   // products per launch
static_assert(kSkinnyMaxJobs == kGemvMaxJobs, "the backend batches jobs for either kernel alike");

// What a launch needs besides its jobs: `partial_floats` of fp32 workspace
// and `counters` zero-initialised ints (left zero by every launch).
struct SkinnyWorkspace {
  size_t partial_floats = 0;
  int counters = 0;
};

// True when launch_skinny_gemm takes this job: 16-bit weights,
// 1 <= n <= kSkinnyMaxRows, cols a multiple of 8, W and x 16-byte aligned.
bool skinny_gemm_supported(ElemType wtype, int n, const GemvJob& job);

// The workspace launch_skinny_gemm needs for these jobs on `sm_count` SMs.
SkinnyWorkspace skinny_gemm_workspace(int n, const GemvJob* jobs, int count, int sm_count);

// Runs `count` (<= kSkinnyMaxJobs) jobs, all with weights of `wtype`, in one
// launch. `partial` and `counters` as skinny_gemm_workspace says (at least);
// counters must be zero before the first launch. No job's y may overlap
// another job's x or y.
cudaError_t launch_skinny_gemm(ElemType wtype, int n, const GemvJob* jobs, int count, float* partial,
                               size_t partial_floats, int* counters, int counter_capacity, int sm_count,
                               cudaStream_t stream);

}  // namespace rwkv::kernels

#endif  // RWKV_KERNELS_SKINNY_GEMM_H_
