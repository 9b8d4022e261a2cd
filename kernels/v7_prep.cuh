// Device helper of the RWKV-7 per-channel prep shared by kernels/v7_prep.cu
// and the WKV-7 kernel that applies it before a token (kernels/wkv7.cu,
// Wkv7Prep): one source for the arithmetic, so that both give the same bits.
#ifndef RWKV_KERNELS_V7_PREP_CUH_
#define RWKV_KERNELS_V7_PREP_CUH_

#include "kernels/kernel_util.cuh"

namespace rwkv::kernels {

// expf(-0.5f), as the CPU computes it: the decay's scale.
constexpr float kV7DecayScale = 0.60653065971263342f;

// One head of N = 32 V channels, a warp's lane holding channels [V lane,
// V lane + V) (every lane of the warp calls it). In: w, a, k, v as the
// products left them; out: the decay exp(-e^-0.5 sigmoid(w0 + w)), a =
// sigmoid(a + a0), kk = k k_k / |k k_k| (over the head), k = k (1 + (a - 1)
// k_a) and, with `residual`, v += (v_first - v) sigmoid(v0 + v_gate).
template <int V>
__device__ __forceinline__ void v7_prep_head(float (&wv)[V], float (&av)[V], float (&kv)[V], float (&vv)[V],
                                             float (&kko)[V], const float (&vf)[V], const float (&gv)[V],
                                             const float (&pw0)[V], const float (&pa0)[V], const float (&pkk)[V],
                                             const float (&pka)[V], const float (&pv0)[V], bool residual) {
  float ss = 0.0f;
#pragma unroll
  for (int i = 0; i < V; ++i) {
    wv[i] = expf(-kV7DecayScale * sigmoid_f(pw0[i] + wv[i]));
    av[i] = sigmoid_f(av[i] + pa0[i]);
    const float x = kv[i] * pkk[i];
    ss += x * x;
  }
  if (residual) {
#pragma unroll
    for (int i = 0; i < V; ++i) vv[i] += (vf[i] - vv[i]) * sigmoid_f(pv0[i] + gv[i]);
  }
  ss = warp_sum(ss);
  const float inv = 1.0f / fmaxf(sqrtf(ss), 1e-12f);
#pragma unroll
  for (int i = 0; i < V; ++i) {
    kko[i] = kv[i] * pkk[i] * inv;
    kv[i] = kv[i] * (1.0f + (av[i] - 1.0f) * pka[i]);
  }
}

}  // namespace rwkv::kernels

#endif  // RWKV_KERNELS_V7_PREP_CUH_
