// fp32 -> fp16/bf16, round to nearest even (the same rounding as the host's
// F32ToF16/F32ToBf16 in engine/loader/dtype.h, so a matrix converted here
// equals one converted on the host). cuBLAS needs both operands of a product
// in one type, so with 16-bit weights the fp32 activations pass through here
// on their way into MatMul.
#include "kernels/convert.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/kernel_util.cuh"

namespace rwkv::kernels {
namespace {

__device__ __forceinline__ void store(float v, float* p) { *p = v; }
__device__ __forceinline__ void store(float v, __half* p) { *p = __float2half_rn(v); }
__device__ __forceinline__ void store(float v, __nv_bfloat16* p) { *p = __float2bfloat16_rn(v); }

template <typename T>
__global__ void convert_kernel(const float* __restrict__ src,  // (n)
                               T* __restrict__ dst,            // (n)
                               int64_t n) {
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < n;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    store(src[e], dst + e);
  }
}

}  // namespace

cudaError_t launch_convert_from_f32(const float* src, ElemType to, void* dst, int64_t n, cudaStream_t stream) {
  if (n < 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  if (src == nullptr || dst == nullptr) return cudaErrorInvalidValue;
  const unsigned grid = grid_for(n, 256);
  switch (to) {
    case ElemType::kF32:
      convert_kernel<<<grid, 256, 0, stream>>>(src, static_cast<float*>(dst), n);
      break;
    case ElemType::kF16:
      convert_kernel<<<grid, 256, 0, stream>>>(src, static_cast<__half*>(dst), n);
      break;
    case ElemType::kBF16:
      convert_kernel<<<grid, 256, 0, stream>>>(src, static_cast<__nv_bfloat16*>(dst), n);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace rwkv::kernels
