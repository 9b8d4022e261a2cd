// The two ceilings a decode step is measured against: memory copy bandwidth
// and matrix-unit peak, measured on the machine that runs the benchmark, in
// the same process.
//
// Why measured, not datasheet: the floor in docs/PERF.md must be reachable
// on the card we actually get (clocks, HBM part and driver differ from the
// datasheet), so it is built from what this card does for the simplest
// possible workloads: a large device-to-device cudaMemcpy (bandwidth) and a
// large cuBLAS GEMM with the same operand types and compute mode as the
// CUDA backend's MatMul (peak).
//
// Convention: bandwidth counts bytes read plus bytes written, divided by the
// time (a copy of S bytes moves 2S). The floor's memory term counts bytes
// the same way (weights read once, state read once and written once), so the
// two are consistent.
//
// The CUDA half (ceilings_cuda.cc) is compiled only where the CUDA backend
// exists (RWKV_HAVE_CUDA_BACKEND); the host half is always available, and on
// the CPU there is no matrix-unit ceiling (the floor is then bandwidth only).
#ifndef RWKV_TOOLS_BENCH_CEILINGS_H_
#define RWKV_TOOLS_BENCH_CEILINGS_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "engine/loader/dtype.h"

namespace rwkv {

struct Ceilings {
  double copy_gbps = 0;     // (bytes read + bytes written) / time, 1e9 B/s
  std::string copy_method;  // how it was measured, for the report
  double peak_tflops = 0;   // 0: not measured
  std::string peak_method;
};

// Host memory: `threads` threads each memcpy their share of a `bytes` buffer
// into another, best of `reps` after one warm-up.
Ceilings MeasureHostCeilings(int threads, size_t bytes, int reps);

#ifdef RWKV_HAVE_CUDA_BACKEND
// Device `device`: cudaMemcpy device-to-device of `copy_bytes`, and an
// n x n x n cublasGemmEx with A, B of `dtype` (random values), C fp32,
// fp32 compute (f32 weights: plain fp32, no TF32, as the backend runs it);
// each best of `reps` after warm-up, timed with CUDA events. Frees what it
// allocates.
absl::StatusOr<Ceilings> MeasureCudaCeilings(int device, DType dtype, size_t copy_bytes, int gemm_n,
                                             int reps);

struct DeviceMemory {
  size_t free_bytes = 0;
  size_t total_bytes = 0;
  std::string name;  // e.g. "NVIDIA H100 80GB HBM3"
};
absl::StatusOr<DeviceMemory> CudaDeviceMemory(int device);
#endif

}  // namespace rwkv

#endif  // RWKV_TOOLS_BENCH_CEILINGS_H_
