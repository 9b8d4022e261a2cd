// The RWKV_CUDA_* environment variables: overrides of CudaBackendOptions for
// measuring and debugging without rebuilding or changing the command line.
//
// Why its own host-only file: the CUDA backend reads them at Init, but the
// parsing is plain C++ and must be tested on machines without a GPU; a typo
// ("RWKV_CUDA_SKINNY_ROWS=sixteen", "RWKV_CUDA_GRAPHS=yes") is an error that
// names the variable, not a silent 0.
#ifndef RWKV_ENGINE_MODEL_CUDA_ENV_H_
#define RWKV_ENGINE_MODEL_CUDA_ENV_H_

#include "absl/status/status.h"
#include "engine/model/cuda_backend.h"

namespace rwkv {

// Applies the variables that are set and not empty to `options`:
//   RWKV_CUDA_GRAPHS, RWKV_CUDA_PASS_PADDING, RWKV_CUDA_BATCH_INVARIANT,
//   RWKV_CUDA_PDL, RWKV_CUDA_FUSE_PREP, RWKV_CUDA_PAD_LORA,
//   RWKV_CUDA_LORA_SIDE_STREAM: 0 or 1;
//   RWKV_CUDA_SMALL_BATCH_ROWS: 0..kMaxSmallBatchRows;
//   RWKV_CUDA_SKINNY_ROWS, RWKV_CUDA_SKINNY_LORA_ROWS, RWKV_CUDA_SKINNY_WIDE_ROWS:
//   0..kMaxSkinnyRows;
//   RWKV_CUDA_SPARSE_FFN_ROWS: 0..kMaxSparseFfnRows;
//   RWKV_CUDA_SPLIT_FREE_FFN_ROWS: 0..kMaxSplitFreeFfnRows;
//   RWKV_CUDA_LORA_ROWS: 0..kMaxLoraGemmRows.
// Anything else: INVALID_ARGUMENT naming the variable, its value and what it
// takes, with `options` unchanged.
absl::Status ApplyCudaEnvironment(CudaBackendOptions* options);

}  // namespace rwkv

#endif  // RWKV_ENGINE_MODEL_CUDA_ENV_H_
