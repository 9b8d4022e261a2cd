// Device helpers of the RWKV-7 output stage shared by kernels/v7_output.cu
// and the WKV-7 kernel that applies it as it finishes a token
// (kernels/wkv7.cu, Wkv7OutputStage): one source for the arithmetic, so that
// both give the same bits.
#ifndef RWKV_KERNELS_V7_OUTPUT_CUH_
#define RWKV_KERNELS_V7_OUTPUT_CUH_

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "kernels/kernel_util.cuh"
#include "kernels/types.h"
#include "kernels/weights.cuh"

namespace rwkv::kernels {

// One head of N = 32 V channels, a warp's lane holding channels [V lane,
// V lane + V): yv becomes the output stage of y
//   (GroupNorm(y) * lnw + lnb + sum_head(r * k * r_k) * v) * g
// (two-pass statistics, eps 64e-5). Every lane of the warp calls it.
template <int V>
__device__ __forceinline__ void v7_output_head(float (&yv)[V], const float (&rv)[V], const float (&kv)[V],
                                               const float (&vv)[V], const float (&gv)[V], const float (&prk)[V],
                                               const float (&pw)[V], const float (&pb)[V]) {
  constexpr int N = 32 * V;
  float sum = 0.0f, bonus = 0.0f;
#pragma unroll
  for (int i = 0; i < V; ++i) {
    sum += yv[i];
    bonus += rv[i] * kv[i] * prk[i];
  }
  const float mean = warp_sum(sum) / N;
  bonus = warp_sum(bonus);
  float q = 0.0f;
#pragma unroll
  for (int i = 0; i < V; ++i) {
    const float d = yv[i] - mean;
    q += d * d;
  }
  const float inv = 1.0f / sqrtf(warp_sum(q) / N + 64e-5f);
#pragma unroll
  for (int i = 0; i < V; ++i) {
    const float norm = (yv[i] - mean) * inv * pw[i] + pb[i];
    yv[i] = (norm + bonus * vv[i]) * gv[i];
  }
}

}  // namespace rwkv::kernels

#endif  // RWKV_KERNELS_V7_OUTPUT_CUH_
