// Launcher for the RWKV-7 per-channel stage between the projections and the
// WKV, in place on [n, C] rows (Backend::V7Prep documents the formulas):
// decay, a = sigmoid(a + a0), key prep with the per-head L2 norm, and the
// value residual (or, for layer 0, v_first = v).
//
// Why: unfused, these are four launches (five with the copy) that each read
// and write some of the same five [n, C] arrays.
#ifndef RWKV_KERNELS_V7_PREP_H_
#define RWKV_KERNELS_V7_PREP_H_

#include <cuda_runtime_api.h>

namespace rwkv::kernels {

cudaError_t launch_v7_prep(float* w,             // (n, C) in: LoRA output, out: decay
                           const float* w0,      // (C)
                           float* a,             // (n, C) in: LoRA output, out: sigmoid(a + a0)
                           const float* a0,      // (C)
                           float* k,             // (n, C) in place
                           float* kk,            // (n, C) out
                           const float* k_k,     // (C)
                           const float* k_a,     // (C)
                           float* v,             // (n, C) in place
                           float* v_first,       // (n, C) in (v0 given) or out (v0 null)
                           const float* v_gate,  // (n, C) or null with v0
                           const float* v0,      // (C) or null (layer 0)
                           int n, int C, int N, cudaStream_t stream);

// Whether launch_v7_prep takes its vector kernel for these arguments (every
// buffer it needs given, N = 64 or 128, each aligned to N / 32 floats): the
// code the WKV-7 kernel's fused prep runs (wkv7_prep_fusable).
bool v7_prep_vectorized(int N, const float* w, const float* w0, const float* a, const float* a0, const float* k,
                        const float* kk, const float* k_k, const float* k_a, const float* v, const float* v_first,
                        const float* v_gate, const float* v0);

}  // namespace rwkv::kernels

#endif  // RWKV_KERNELS_V7_PREP_H_
