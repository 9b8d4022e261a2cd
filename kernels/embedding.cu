// Embedding gather: one block per token row, reading the table in its
// storage type and writing fp32. Why a kernel and not a copy: the table may
// be stored fp16/bf16 (half the memory of fp32 at 65536 x C) while every
// activation is fp32, so the gather is also the conversion.
#include "kernels/embedding.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/kernel_util.cuh"
#include "kernels/weights.cuh"

namespace rwkv::kernels {
namespace {

template <typename T>
__global__ void embedding_kernel(const T* __restrict__ table,     // (vocab, C)
                                 const int32_t* __restrict__ tokens,  // (n)
                                 int C,
                                 float* __restrict__ x) {
  pdl_wait();  // programmatic launch: the previous kernel's writes first (kernel_util.cuh)          // (n, C)
  const int i = blockIdx.x;
  const T* src = table + static_cast<int64_t>(tokens[i]) * C;
  float* dst = x + static_cast<int64_t>(i) * C;
  for (int c = threadIdx.x; c < C; c += blockDim.x) dst[c] = to_f32(src[c]);
}

}  // namespace

cudaError_t launch_embedding(const void* table, ElemType type, const int32_t* tokens, int n, int C, float* x,
                             cudaStream_t stream) {
  if (n < 0 || C <= 0 || (n > 0 && (table == nullptr || tokens == nullptr || x == nullptr))) {
    return cudaErrorInvalidValue;
  }
  if (n == 0) return cudaSuccess;
  const int block = C >= 256 ? 256 : 128;
  switch (type) {
    case ElemType::kF32:
      launch(embedding_kernel<float>, n, block, 0, stream, static_cast<const float*>(table), tokens, C, x);
      break;
    case ElemType::kF16:
      launch(embedding_kernel<__half>, n, block, 0, stream, static_cast<const __half*>(table), tokens, C, x);
      break;
    case ElemType::kBF16:
      launch(embedding_kernel<__nv_bfloat16>, n, block, 0, stream, static_cast<const __nv_bfloat16*>(table), tokens, C, x);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace rwkv::kernels
