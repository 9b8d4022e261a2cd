// Launchers for the elementwise ops (n = element count unless noted).
#ifndef RWKV_KERNELS_ELEMENTWISE_H_
#define RWKV_KERNELS_ELEMENTWISE_H_

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/types.h"

namespace rwkv::kernels {

// x = 1 / (1 + exp(-x))
cudaError_t launch_sigmoid(float* x /* (n) */, int64_t n, cudaStream_t stream);
// x = tanh(x)
cudaError_t launch_tanh(float* x /* (n) */, int64_t n, cudaStream_t stream);
// x = max(x, 0)^2
cudaError_t launch_relu_square(float* x /* (n) */, int64_t n, cudaStream_t stream);
// The same on n 16-bit elements of type t (kF16 or kBF16) in place: each
// value widened, squared in fp32, rounded back to nearest even.
cudaError_t launch_relu_square_16(void* x /* (n) of t */, int64_t n, ElemType t, cudaStream_t stream);
// x *= a
cudaError_t launch_mul(float* x /* (n) */, const float* a /* (n) */, int64_t n, cudaStream_t stream);
// x += a * b
cudaError_t launch_muladd(float* x /* (n) */, const float* a /* (n) */, const float* b /* (n) */, int64_t n,
                          cudaStream_t stream);
// The RWKV-4 gates, each one launch instead of a sigmoid pass and a product
// pass, with the same per-element arithmetic (so the same bits):
// out = sigmoid(r) * y, out = y (kF32, in place), another fp32 buffer, or
// n elements of out_type (kF16/kBF16, rounded to nearest even, not
// overlapping y); never overlapping r;
cudaError_t launch_sigmoid_gate(const float* r /* (n) */, const float* y /* (n) */, int64_t n,
                                void* out /* (n) of out_type */, ElemType out_type, cudaStream_t stream);
// x += sigmoid(r) * t.
cudaError_t launch_sigmoid_muladd(float* x /* (n) */, const float* r /* (n) */, const float* t /* (n) */, int64_t n,
                                  cudaStream_t stream);
// x = sigmoid(x + bias[col])
cudaError_t launch_sigmoid_bias(float* x,           // (n, C)
                                const float* bias,  // (C)
                                int n, int C, cudaStream_t stream);

}  // namespace rwkv::kernels

#endif  // RWKV_KERNELS_ELEMENTWISE_H_
