// fp32 -> fp16/bf16, round to nearest even (the same rounding as the host's
// F32ToF16/F32ToBf16 in engine/loader/dtype.h, so a matrix converted here
// equals one converted on the host). cuBLAS needs both operands of a product
// in one type, so with 16-bit weights the fp32 activations pass through here
// on their way into MatMul.
#include "kernels/convert.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>

#include "kernels/kernel_util.cuh"

namespace rwkv::kernels {
namespace {

__device__ __forceinline__ void store(float v, float* p) { *p = v; }
__device__ __forceinline__ void store(float v, __half* p) { *p = __float2half_rn(v); }
__device__ __forceinline__ void store(float v, __nv_bfloat16* p) { *p = __float2bfloat16_rn(v); }

// tanh and sigmoid as kernels/elementwise.cu computes them, so that fusing an
// activation into the conversion rounds the same fp32 value the separate
// in-place activation used to leave.
template <ConvertOp kOp>
__device__ __forceinline__ float apply(float v) {
  if constexpr (kOp == ConvertOp::kReluSquare) {
    const float r = v > 0.0f ? v : 0.0f;
    return r * r;
  } else if constexpr (kOp == ConvertOp::kTanh) {
    return tanhf(v);
  } else if constexpr (kOp == ConvertOp::kSigmoid) {
    return sigmoid_f(v);
  } else {
    return v;
  }
}

template <typename T, ConvertOp kOp>
__global__ void convert_kernel(const float* __restrict__ src,  // (n)
                               T* __restrict__ dst,            // (n)
                               int64_t n) {
  pdl_wait();  // programmatic launch: the previous kernel's writes first (kernel_util.cuh)
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
  pdl_wait();  // programmatic launch: the previous kernel's writes first (kernel_util.cuh)
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
    launch(convert4_kernel<T, kOp>, grid_for(n / 4, 256), 256, 0, stream, reinterpret_cast<const float4*>(src),
                                                                       static_cast<T*>(dst), n / 4);
  } else {
    launch(convert_kernel<T, kOp>, grid_for(n, 256), 256, 0, stream, src, static_cast<T*>(dst), n);
  }
}

// The multi-buffer launch's arguments, passed by value (about 500 bytes) so
// that a captured graph holds them.
struct MultiArgs {
  const float* src[kConvertMaxBuffers];
  void* dst[kConvertMaxBuffers];
  int64_t n[kConvertMaxBuffers];
  int op[kConvertMaxBuffers];     // ConvertOp
  bool vec[kConvertMaxBuffers];   // float4 loads (n % 4 == 0, aligned)
  int count;
  const void* pointers[kConvertMaxPointers];
  void** pointer_dst;
  int npointers;
};

// Grid-stride over one buffer with the x blocks of the grid; the same
// per-element code as the single-buffer kernels.
template <typename T, ConvertOp kOp>
__device__ __forceinline__ void convert_range(const float* __restrict__ src, T* __restrict__ dst, int64_t n,
                                              bool vec) {
  const int64_t first = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  if (vec) {
    const float4* src4 = reinterpret_cast<const float4*>(src);
    for (int64_t e = first; e < n / 4; e += stride) {
      const float4 v = src4[e];
      if constexpr (sizeof(T) == 4) {
        reinterpret_cast<float4*>(dst)[e] =
            make_float4(apply<kOp>(v.x), apply<kOp>(v.y), apply<kOp>(v.z), apply<kOp>(v.w));
      } else {
        T out[4];
        store(apply<kOp>(v.x), &out[0]);
        store(apply<kOp>(v.y), &out[1]);
        store(apply<kOp>(v.z), &out[2]);
        store(apply<kOp>(v.w), &out[3]);
        reinterpret_cast<uint2*>(dst)[e] = *reinterpret_cast<const uint2*>(out);
      }
    }
  } else {
    for (int64_t e = first; e < n; e += stride) store(apply<kOp>(src[e]), dst + e);
  }
}

// blockIdx.y picks the buffer; buffers smaller than the largest leave their
// surplus x blocks idle (they exit at once).
template <typename T>
__global__ void convert_multi_kernel(const MultiArgs a) {
  pdl_wait();  // programmatic launch: the previous kernel's writes first (kernel_util.cuh)
  if (blockIdx.x == 0 && blockIdx.y == 0) {
    for (int i = threadIdx.x; i < a.npointers; i += blockDim.x) a.pointer_dst[i] = const_cast<void*>(a.pointers[i]);
  }
  const int b = blockIdx.y;
  if (b >= a.count) return;
  const float* src = a.src[b];
  T* dst = static_cast<T*>(a.dst[b]);
  const int64_t n = a.n[b];
  const bool vec = a.vec[b];
  switch (static_cast<ConvertOp>(a.op[b])) {
    case ConvertOp::kNone: convert_range<T, ConvertOp::kNone>(src, dst, n, vec); break;
    case ConvertOp::kReluSquare: convert_range<T, ConvertOp::kReluSquare>(src, dst, n, vec); break;
    case ConvertOp::kTanh: convert_range<T, ConvertOp::kTanh>(src, dst, n, vec); break;
    case ConvertOp::kSigmoid: convert_range<T, ConvertOp::kSigmoid>(src, dst, n, vec); break;
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
  switch (op) {
    case ConvertOp::kNone: return launch_op<ConvertOp::kNone>(src, to, dst, n, stream);
    case ConvertOp::kReluSquare: return launch_op<ConvertOp::kReluSquare>(src, to, dst, n, stream);
    case ConvertOp::kTanh: return launch_op<ConvertOp::kTanh>(src, to, dst, n, stream);
    case ConvertOp::kSigmoid: return launch_op<ConvertOp::kSigmoid>(src, to, dst, n, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t launch_convert_multi_from_f32(ElemType to, const ConvertBuffer* buffers, int count,
                                          const void* const* pointers, int npointers, void** pointer_dst,
                                          cudaStream_t stream) {
  if (count < 0 || count > kConvertMaxBuffers || npointers < 0 || npointers > kConvertMaxPointers) {
    return cudaErrorInvalidValue;
  }
  if ((count > 0 && buffers == nullptr) || (npointers > 0 && (pointers == nullptr || pointer_dst == nullptr))) {
    return cudaErrorInvalidValue;
  }
  MultiArgs a{};
  a.count = count;
  unsigned grid_x = 1;
  for (int i = 0; i < count; ++i) {
    const ConvertBuffer& b = buffers[i];
    if (b.n < 0 || (b.n > 0 && (b.src == nullptr || b.dst == nullptr))) return cudaErrorInvalidValue;
    if (b.op != ConvertOp::kNone && b.op != ConvertOp::kReluSquare && b.op != ConvertOp::kTanh &&
        b.op != ConvertOp::kSigmoid) {
      return cudaErrorInvalidValue;
    }
    a.src[i] = b.src;
    a.dst[i] = b.dst;
    a.n[i] = b.n;
    a.op[i] = static_cast<int>(b.op);
    const size_t elem = to == ElemType::kF32 ? 4 : 2;
    a.vec[i] = b.n % 4 == 0 && (reinterpret_cast<uintptr_t>(b.src) & 15u) == 0 &&
               (reinterpret_cast<uintptr_t>(b.dst) & (4 * elem - 1)) == 0;
    grid_x = std::max(grid_x, grid_for(a.vec[i] ? b.n / 4 : b.n, 256));
  }
  a.npointers = npointers;
  for (int i = 0; i < npointers; ++i) a.pointers[i] = pointers[i];
  a.pointer_dst = pointer_dst;
  const dim3 grid(grid_x, static_cast<unsigned>(std::max(count, 1)));
  switch (to) {
    case ElemType::kF32:
      launch(convert_multi_kernel<float>, grid, 256, 0, stream, a);
      break;
    case ElemType::kF16:
      launch(convert_multi_kernel<__half>, grid, 256, 0, stream, a);
      break;
    case ElemType::kBF16:
      launch(convert_multi_kernel<__nv_bfloat16>, grid, 256, 0, stream, a);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace rwkv::kernels
