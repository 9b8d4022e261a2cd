// See ceilings.h: the CUDA half. Plain C++ against the CUDA runtime and
// cuBLAS (no kernels), built only where the CUDA backend exists.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "tools/bench/ceilings.h"

namespace rwkv {
namespace {

absl::Status Cuda(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": ", cudaGetErrorString(e)));
}

absl::Status Blas(cublasStatus_t s, const char* what) {
  if (s == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": cuBLAS status ", static_cast<int>(s)));
}

#define RWKV_RETURN_IF_ERROR(expr)                     \
  do {                                                 \
    if (absl::Status _s = (expr); !_s.ok()) return _s; \
  } while (0)

// Everything one measurement allocates, released on every path.
struct Resources {
  std::vector<void*> device;
  cudaStream_t stream = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr;
  cublasHandle_t blas = nullptr;
  ~Resources() {
    if (stream != nullptr) (void)cudaStreamSynchronize(stream);
    for (void* p : device) (void)cudaFree(p);
    if (blas != nullptr) (void)cublasDestroy(blas);
    if (start != nullptr) (void)cudaEventDestroy(start);
    if (stop != nullptr) (void)cudaEventDestroy(stop);
    if (stream != nullptr) (void)cudaStreamDestroy(stream);
  }
  absl::StatusOr<void*> Alloc(size_t bytes) {
    void* p = nullptr;
    RWKV_RETURN_IF_ERROR(Cuda(cudaMalloc(&p, bytes), "cudaMalloc (ceilings)"));
    device.push_back(p);
    return p;
  }
};

// Best (shortest) time in ms of `reps` runs of `body` after `warmup` runs,
// each bracketed by events on `r.stream`.
template <typename Body>
absl::StatusOr<double> BestMs(Resources& r, int warmup, int reps, Body&& body) {
  double best = 1e30;
  for (int i = 0; i < warmup + reps; ++i) {
    RWKV_RETURN_IF_ERROR(Cuda(cudaEventRecord(r.start, r.stream), "cudaEventRecord"));
    RWKV_RETURN_IF_ERROR(body());
    RWKV_RETURN_IF_ERROR(Cuda(cudaEventRecord(r.stop, r.stream), "cudaEventRecord"));
    RWKV_RETURN_IF_ERROR(Cuda(cudaEventSynchronize(r.stop), "cudaEventSynchronize"));
    float ms = 0;
    RWKV_RETURN_IF_ERROR(Cuda(cudaEventElapsedTime(&ms, r.start, r.stop), "cudaEventElapsedTime"));
    if (i >= warmup) best = std::min(best, static_cast<double>(ms));
  }
  return best;
}

// n*n values of `dtype`, uniform in [-1, 1), from a fixed-seed generator
// (never zeros: zeros make the tensor cores look faster than they are).
std::vector<uint16_t> RandomHalves(size_t count, DType dtype, uint64_t seed) {
  std::vector<uint16_t> out(count);
  uint64_t s = seed;
  for (size_t i = 0; i < count; ++i) {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    const float v = static_cast<float>(static_cast<double>(s >> 40) / 8388608.0 - 1.0);
    out[i] = dtype == DType::kBF16 ? F32ToBf16(v) : F32ToF16(v);
  }
  return out;
}

std::vector<float> RandomFloats(size_t count, uint64_t seed) {
  std::vector<float> out(count);
  uint64_t s = seed;
  for (size_t i = 0; i < count; ++i) {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    out[i] = static_cast<float>(static_cast<double>(s >> 40) / 8388608.0 - 1.0);
  }
  return out;
}

}  // namespace

absl::StatusOr<DeviceMemory> CudaDeviceMemory(int device) {
  RWKV_RETURN_IF_ERROR(Cuda(cudaSetDevice(device), "cudaSetDevice"));
  DeviceMemory m;
  RWKV_RETURN_IF_ERROR(Cuda(cudaMemGetInfo(&m.free_bytes, &m.total_bytes), "cudaMemGetInfo"));
  cudaDeviceProp prop;
  RWKV_RETURN_IF_ERROR(Cuda(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties"));
  m.name = prop.name;
  return m;
}

absl::StatusOr<Ceilings> MeasureCudaCeilings(int device, DType dtype, size_t copy_bytes, int gemm_n,
                                             int reps) {
  RWKV_RETURN_IF_ERROR(Cuda(cudaSetDevice(device), "cudaSetDevice"));
  Ceilings c;
  {
    Resources r;
    RWKV_RETURN_IF_ERROR(
        Cuda(cudaStreamCreateWithFlags(&r.stream, cudaStreamNonBlocking), "cudaStreamCreate"));
    RWKV_RETURN_IF_ERROR(Cuda(cudaEventCreate(&r.start), "cudaEventCreate"));
    RWKV_RETURN_IF_ERROR(Cuda(cudaEventCreate(&r.stop), "cudaEventCreate"));
    auto src = r.Alloc(copy_bytes);
    if (!src.ok()) return src.status();
    auto dst = r.Alloc(copy_bytes);
    if (!dst.ok()) return dst.status();
    // Non-zero contents (the copy engine does not care, but be honest).
    RWKV_RETURN_IF_ERROR(Cuda(cudaMemsetAsync(*src, 0x5a, copy_bytes, r.stream), "cudaMemset"));
    RWKV_RETURN_IF_ERROR(Cuda(cudaMemsetAsync(*dst, 0x00, copy_bytes, r.stream), "cudaMemset"));
    auto ms = BestMs(r, 2, reps, [&] {
      return Cuda(cudaMemcpyAsync(*dst, *src, copy_bytes, cudaMemcpyDeviceToDevice, r.stream),
                  "cudaMemcpyAsync");
    });
    if (!ms.ok()) return ms.status();
    c.copy_gbps = 2.0 * static_cast<double>(copy_bytes) / (*ms * 1e-3) / 1e9;
    c.copy_method =
        absl::StrFormat("cudaMemcpy device-to-device of %d MiB, (read+write)/time, best of %d (%.3f ms)",
                        copy_bytes >> 20, reps, *ms);
  }
  {
    Resources r;
    RWKV_RETURN_IF_ERROR(
        Cuda(cudaStreamCreateWithFlags(&r.stream, cudaStreamNonBlocking), "cudaStreamCreate"));
    RWKV_RETURN_IF_ERROR(Cuda(cudaEventCreate(&r.start), "cudaEventCreate"));
    RWKV_RETURN_IF_ERROR(Cuda(cudaEventCreate(&r.stop), "cudaEventCreate"));
    RWKV_RETURN_IF_ERROR(Blas(cublasCreate(&r.blas), "cublasCreate"));
    RWKV_RETURN_IF_ERROR(Blas(cublasSetStream(r.blas, r.stream), "cublasSetStream"));
    const size_t n = static_cast<size_t>(gemm_n);
    const size_t esize = DTypeSize(dtype);
    const cudaDataType type = dtype == DType::kF16    ? CUDA_R_16F
                              : dtype == DType::kBF16 ? CUDA_R_16BF
                                                      : CUDA_R_32F;
    auto a = r.Alloc(n * n * esize);
    if (!a.ok()) return a.status();
    auto b = r.Alloc(n * n * esize);
    if (!b.ok()) return b.status();
    auto out = r.Alloc(n * n * sizeof(float));
    if (!out.ok()) return out.status();
    for (int i = 0; i < 2; ++i) {
      void* dst = i == 0 ? *a : *b;
      if (dtype == DType::kF32) {
        const std::vector<float> host = RandomFloats(n * n, 12345 + static_cast<uint64_t>(i));
        RWKV_RETURN_IF_ERROR(
            Cuda(cudaMemcpy(dst, host.data(), n * n * 4, cudaMemcpyHostToDevice), "cudaMemcpy"));
      } else {
        const std::vector<uint16_t> host = RandomHalves(n * n, dtype, 12345 + static_cast<uint64_t>(i));
        RWKV_RETURN_IF_ERROR(
            Cuda(cudaMemcpy(dst, host.data(), n * n * 2, cudaMemcpyHostToDevice), "cudaMemcpy"));
      }
    }
    const float alpha = 1.0f, beta = 0.0f;
    const int dim = gemm_n;
    // The backend's MatMul call shape: A transposed (weights [out, in]),
    // fp32 output, fp32 compute, default algorithm.
    auto ms = BestMs(r, 3, reps, [&] {
      return Blas(
          cublasGemmEx(r.blas, CUBLAS_OP_T, CUBLAS_OP_N, dim, dim, dim, &alpha, *a, type, dim, *b, type, dim,
                       &beta, *out, CUDA_R_32F, dim, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
          "cublasGemmEx");
    });
    if (!ms.ok()) return ms.status();
    const double flops = 2.0 * static_cast<double>(n) * static_cast<double>(n) * static_cast<double>(n);
    c.peak_tflops = flops / (*ms * 1e-3) / 1e12;
    c.peak_method = absl::StrFormat(
        "cublasGemmEx %dx%dx%d, %s inputs (random), fp32 output, fp32 compute%s, best of %d (%.3f ms)", dim,
        dim, dim, std::string(DTypeName(dtype)),
        dtype == DType::kF32 ? " (no TF32: CUDA cores, as the backend runs f32)" : "", reps, *ms);
  }
  return c;
}

}  // namespace rwkv
