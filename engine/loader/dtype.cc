// Bulk conversions between the stored element types and fp32.
//
// Why here and not inline: the loops are hot when loading multi-GB files and
// are kept in one translation unit so they are written (and vectorised)
// once. The single-element rounding rules live in dtype.h.
#include "engine/loader/dtype.h"

#include <cstring>

namespace rwkv {
namespace {

// Elements handled per step of the chunked loops (fits comfortably on the stack).
constexpr size_t kChunk = 1024;

template <float (*kToF32)(uint16_t)>
void HalfToF32(const void* src, float* dst, size_t n) {
  const auto* s = static_cast<const unsigned char*>(src);
  uint16_t buf[kChunk];
  for (size_t done = 0; done < n;) {
    const size_t m = n - done < kChunk ? n - done : kChunk;
    std::memcpy(buf, s + done * 2, m * 2);
    for (size_t i = 0; i < m; ++i) dst[done + i] = kToF32(buf[i]);
    done += m;
  }
}

template <uint16_t (*kFromF32)(float)>
void F32ToHalf(const float* src, void* dst, size_t n) {
  auto* d = static_cast<unsigned char*>(dst);
  uint16_t buf[kChunk];
  for (size_t done = 0; done < n;) {
    const size_t m = n - done < kChunk ? n - done : kChunk;
    for (size_t i = 0; i < m; ++i) buf[i] = kFromF32(src[done + i]);
    std::memcpy(d + done * 2, buf, m * 2);
    done += m;
  }
}

}  // namespace

void ConvertToF32(DType from, const void* src, float* dst, size_t n) {
  if (n == 0) return;
  switch (from) {
    case DType::kF32:
      std::memcpy(dst, src, n * sizeof(float));
      return;
    case DType::kF16:
      HalfToF32<F16ToF32>(src, dst, n);
      return;
    case DType::kBF16:
      HalfToF32<Bf16ToF32>(src, dst, n);
      return;
  }
}

void ConvertFromF32(const float* src, DType to, void* dst, size_t n) {
  if (n == 0) return;
  switch (to) {
    case DType::kF32:
      std::memcpy(dst, src, n * sizeof(float));
      return;
    case DType::kF16:
      F32ToHalf<F32ToF16>(src, dst, n);
      return;
    case DType::kBF16:
      F32ToHalf<F32ToBf16>(src, dst, n);
      return;
  }
}

void ConvertDType(DType from, const void* src, DType to, void* dst, size_t n) {
  if (n == 0) return;
  if (from == to) {
    std::memcpy(dst, src, n * DTypeSize(from));
    return;
  }
  const auto* s = static_cast<const unsigned char*>(src);
  auto* d = static_cast<unsigned char*>(dst);
  const size_t in_size = DTypeSize(from);
  const size_t out_size = DTypeSize(to);
  // An aligned fp32 staging buffer, so neither side needs to be aligned.
  float buf[kChunk];
  for (size_t done = 0; done < n;) {
    const size_t m = n - done < kChunk ? n - done : kChunk;
    ConvertToF32(from, s + done * in_size, buf, m);
    ConvertFromF32(buf, to, d + done * out_size, m);
    done += m;
  }
}

}  // namespace rwkv
