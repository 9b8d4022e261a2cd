// Row gather: one block per output row. Used to pick the rows whose logits
// are wanted (a prompt's last token), so the head product runs on those only.
#include "kernels/gather_rows.h"

#include "kernels/kernel_util.cuh"

namespace rwkv::kernels {
namespace {

__global__ void gather_rows_kernel(const float* __restrict__ x,        // (any, C)
                                   const int32_t* __restrict__ rows,   // (n)
                                   int C,
                                   float* __restrict__ out) {
  pdl_wait();  // programmatic launch: the previous kernel's writes first (kernel_util.cuh)          // (n, C)
  const float* src = x + static_cast<int64_t>(rows[blockIdx.x]) * C;
  float* dst = out + static_cast<int64_t>(blockIdx.x) * C;
  for (int c = threadIdx.x; c < C; c += blockDim.x) dst[c] = src[c];
}

}  // namespace

cudaError_t launch_gather_rows(const float* x, const int32_t* rows, int n, int C, float* out,
                               cudaStream_t stream) {
  if (n < 0 || C <= 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  if (x == nullptr || rows == nullptr || out == nullptr) return cudaErrorInvalidValue;
  launch(gather_rows_kernel, n, C >= 256 ? 256 : 128, 0, stream, x, rows, C, out);
  return cudaGetLastError();
}

}  // namespace rwkv::kernels
