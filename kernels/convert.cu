// fp32 -> fp16/bf16, round to nearest even (the same rounding as the host's
// F32ToF16/F32ToBf16 in engine/loader/dtype.h, so a matrix converted here
// equals one converted on the host). cuBLAS needs both operands of a product
// in one type, so with 16-bit weights the fp32 activations pass through here
// on their way into MatMul.
#include "kernels/convert.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "kernels/kernel_util.cuh"

namespace rwkv::kernels {
namespace {

__device__ __forceinline__ void store(float v, float* p) { *p = v; }
__device__ __forceinline__ void store(float v, __half* p) { *p = __float2half_rn(v); }
__device__ __forceinline__ void store(float v, __nv_bfloat16* p) { *p = __float2bfloat16_rn(v); }

template <ConvertOp kOp>
__device__ __forceinline__ float apply(float v) {
  if constexpr (kOp == ConvertOp::kReluSquare) {
    const float r = v > 0.0f ? v : 0.0f;
    return r * r;
  } else {
    return v;
  }
}

template <typename T, ConvertOp kOp>
__global__ void convert_kernel(const float* __restrict__ src,  // (n)
                               T* __restrict__ dst,            // (n)
                               int64_t n) {
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < n;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    store(apply<kOp>(src[e]), dst + e);
  }
}

// Four elements per thread per iteration: one 16-byte load, one 8-byte store
// (n % 4 == 0, src 16-byte and dst 8-byte aligned). The scalar kernel moved
// about half the copy bandwidth at decode batches of 960 (ncu, docs/PERF.md).
template <typename T, ConvertOp kOp>
__global__ void convert4_kernel(const float4* __restrict__ src,  // (n4)
                                T* __restrict__ dst,             // (4 n4)
                                int64_t n4) {
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < n4;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float4 v = src[e];
    if constexpr (sizeof(T) == 4) {
      reinterpret_cast<float4*>(dst)[e] = make_float4(apply<kOp>(v.x), apply<kOp>(v.y), apply<kOp>(v.z), apply<kOp>(v.w));
    } else {
      T out[4];
      store(apply<kOp>(v.x), &out[0]);
      store(apply<kOp>(v.y), &out[1]);
      store(apply<kOp>(v.z), &out[2]);
      store(apply<kOp>(v.w), &out[3]);
      reinterpret_cast<uint2*>(dst)[e] = *reinterpret_cast<const uint2*>(out);
    }
  }
}

template <typename T, ConvertOp kOp>
void launch_typed(const float* src, void* dst, int64_t n, cudaStream_t stream) {
  const bool vec = n % 4 == 0 && (reinterpret_cast<uintptr_t>(src) & 15u) == 0 &&
                   (reinterpret_cast<uintptr_t>(dst) & (4 * sizeof(T) - 1)) == 0;
  if (vec) {
    convert4_kernel<T, kOp><<<grid_for(n / 4, 256), 256, 0, stream>>>(reinterpret_cast<const float4*>(src),
                                                                       static_cast<T*>(dst), n / 4);
  } else {
    convert_kernel<T, kOp><<<grid_for(n, 256), 256, 0, stream>>>(src, static_cast<T*>(dst), n);
  }
}

template <ConvertOp kOp>
cudaError_t launch_op(const float* src, ElemType to, void* dst, int64_t n, cudaStream_t stream) {
  switch (to) {
    case ElemType::kF32:
      launch_typed<float, kOp>(src, dst, n, stream);
      break;
    case ElemType::kF16:
      launch_typed<__half, kOp>(src, dst, n, stream);
      break;
    case ElemType::kBF16:
      launch_typed<__nv_bfloat16, kOp>(src, dst, n, stream);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_convert_from_f32(const float* src, ElemType to, void* dst, int64_t n, cudaStream_t stream,
                                    ConvertOp op) {
  if (n < 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  if (src == nullptr || dst == nullptr) return cudaErrorInvalidValue;
  return op == ConvertOp::kReluSquare ? launch_op<ConvertOp::kReluSquare>(src, to, dst, n, stream)
                                      : launch_op<ConvertOp::kNone>(src, to, dst, n, stream);
}

}  // namespace rwkv::kernels
