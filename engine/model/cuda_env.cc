#include "engine/model/cuda_env.h"

#include <cstdlib>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"

namespace rwkv {
namespace {

// The variable's value, or null when unset or empty.
const char* Get(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && v[0] != '\0' ? v : nullptr;
}

absl::Status Bool(const char* name, bool* out) {
  const char* v = Get(name);
  if (v == nullptr) return absl::OkStatus();
  const std::string s(v);
  if (s != "0" && s != "1") {
    return absl::InvalidArgumentError(absl::StrFormat("%s=%s: expected 0 or 1", name, s));
  }
  *out = s == "1";
  return absl::OkStatus();
}

absl::Status Int(const char* name, int max, int* out) {
  const char* v = Get(name);
  if (v == nullptr) return absl::OkStatus();
  int n = 0;
  if (!absl::SimpleAtoi(v, &n) || n < 0 || n > max) {
    return absl::InvalidArgumentError(absl::StrFormat("%s=%s: expected an integer from 0 to %d", name, v, max));
  }
  *out = n;
  return absl::OkStatus();
}

}  // namespace

absl::Status ApplyCudaEnvironment(CudaBackendOptions* options) {
  CudaBackendOptions o = *options;
  for (absl::Status s : {Bool("RWKV_CUDA_GRAPHS", &o.cuda_graphs), Bool("RWKV_CUDA_PASS_PADDING", &o.pass_padding),
                         Bool("RWKV_CUDA_BATCH_INVARIANT", &o.batch_invariant),
                         Bool("RWKV_CUDA_PDL", &o.programmatic_launch),
                         Bool("RWKV_CUDA_FUSE_PREP", &o.fuse_v7_prep), Bool("RWKV_CUDA_PAD_LORA", &o.pad_lora),
                         Bool("RWKV_CUDA_LORA_SIDE_STREAM", &o.lora_side_stream),
                         Int("RWKV_CUDA_SMALL_BATCH_ROWS", CudaBackendOptions::kMaxSmallBatchRows,
                             &o.small_batch_rows),
                         Int("RWKV_CUDA_SKINNY_ROWS", CudaBackendOptions::kMaxSkinnyRows, &o.skinny_rows),
                         Int("RWKV_CUDA_SKINNY_LORA_ROWS", CudaBackendOptions::kMaxSkinnyRows,
                             &o.skinny_lora_rows),
                         Int("RWKV_CUDA_SKINNY_WIDE_ROWS", CudaBackendOptions::kMaxSkinnyRows,
                             &o.skinny_wide_rows),
                         Int("RWKV_CUDA_SPARSE_FFN_ROWS", CudaBackendOptions::kMaxSparseFfnRows,
                             &o.sparse_ffn_rows),
                         Int("RWKV_CUDA_SPLIT_FREE_FFN_ROWS", CudaBackendOptions::kMaxSplitFreeFfnRows,
                             &o.split_free_ffn_rows),
                         Int("RWKV_CUDA_LORA_ROWS", CudaBackendOptions::kMaxLoraGemmRows, &o.lora_gemm_rows)}) {
    if (!s.ok()) return s;
  }
  *options = o;
  return absl::OkStatus();
}

}  // namespace rwkv
