// Tests of the fp16/bf16 rounding rules and the bulk conversions.
//
// Why exhaustive: there are only 65536 half values, so every one is checked
// to survive a round trip through fp32; rounding of values between halves
// (ties, subnormals, overflow) is checked on hand-picked cases.
#include "engine/loader/dtype.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "gtest/gtest.h"

namespace rwkv {
namespace {

float FromBits(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}
uint32_t Bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

TEST(DTypeTest, SizesAndNames) {
  EXPECT_EQ(DTypeSize(DType::kF32), 4u);
  EXPECT_EQ(DTypeSize(DType::kF16), 2u);
  EXPECT_EQ(DTypeSize(DType::kBF16), 2u);
  EXPECT_EQ(DTypeName(DType::kBF16), "bf16");
}

TEST(DTypeTest, F16RoundTripsEveryValue) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = F16ToF32(static_cast<uint16_t>(h));
    const uint16_t back = F32ToF16(f);
    if ((h & 0x7c00u) == 0x7c00u && (h & 0x3ffu) != 0) {  // NaN stays NaN (payload canonical)
      EXPECT_TRUE(std::isnan(f)) << h;
      EXPECT_EQ(back & 0x7c00u, 0x7c00u) << h;
      EXPECT_NE(back & 0x3ffu, 0u) << h;
      EXPECT_EQ(back & 0x8000u, h & 0x8000u) << h;
    } else {
      EXPECT_EQ(back, h) << "half 0x" << std::hex << h;
    }
  }
}

TEST(DTypeTest, F16SpecialValues) {
  EXPECT_EQ(F16ToF32(0x3c00), 1.0f);
  EXPECT_EQ(F16ToF32(0xc000), -2.0f);
  EXPECT_EQ(F16ToF32(0x7bff), 65504.0f);
  EXPECT_EQ(F16ToF32(0x0001), std::ldexp(1.0f, -24));     // smallest subnormal
  EXPECT_EQ(F16ToF32(0x03ff), std::ldexp(1023.0f, -24));  // largest subnormal
  EXPECT_EQ(F16ToF32(0x0400), std::ldexp(1.0f, -14));     // smallest normal
  EXPECT_EQ(F16ToF32(0x7c00), std::numeric_limits<float>::infinity());
  EXPECT_EQ(F16ToF32(0xfc00), -std::numeric_limits<float>::infinity());
  EXPECT_EQ(Bits(F16ToF32(0x8000)), 0x80000000u);  // -0
  EXPECT_EQ(F32ToF16(std::numeric_limits<float>::infinity()), 0x7c00);
  EXPECT_EQ(F32ToF16(-std::numeric_limits<float>::infinity()), 0xfc00);
  EXPECT_EQ(F32ToF16(-0.0f), 0x8000);
  EXPECT_TRUE(std::isnan(F16ToF32(F32ToF16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_TRUE(std::isnan(F16ToF32(F32ToF16(FromBits(0x7f800001u)))));  // signalling NaN
}

TEST(DTypeTest, F16RoundsToNearestEven) {
  // Halfway between 1 and 1+2^-10 goes down to even (1); 1+3*2^-11 goes up.
  EXPECT_EQ(F32ToF16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  EXPECT_EQ(F32ToF16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
  // Just above the tie rounds up.
  EXPECT_EQ(F32ToF16(FromBits(Bits(1.0f + std::ldexp(1.0f, -11)) + 1)), 0x3c01);
  // Overflow: 65504 is the largest half; 65519 rounds to it, 65520 (a tie) to inf.
  EXPECT_EQ(F32ToF16(65519.0f), 0x7bff);
  EXPECT_EQ(F32ToF16(65520.0f), 0x7c00);
  EXPECT_EQ(F32ToF16(-1e9f), 0xfc00);
  // Subnormal ties: 2^-25 (half the smallest subnormal) goes to 0, 3*2^-25 to 2*2^-24.
  EXPECT_EQ(F32ToF16(std::ldexp(1.0f, -25)), 0x0000);
  EXPECT_EQ(F32ToF16(std::ldexp(3.0f, -25)), 0x0002);
  EXPECT_EQ(F32ToF16(std::ldexp(1.0f, -25) * 1.0001f), 0x0001);
  EXPECT_EQ(F32ToF16(std::ldexp(1.0f, -26)), 0x0000);
  EXPECT_EQ(F32ToF16(-std::ldexp(1.0f, -30)), 0x8000);
  // Rounding up out of the subnormal range yields the smallest normal.
  EXPECT_EQ(F32ToF16(std::ldexp(1023.5f, -24)), 0x0400);
  // f32 subnormals flush to (signed) zero in half.
  EXPECT_EQ(F32ToF16(FromBits(0x00000001u)), 0x0000);
}

TEST(DTypeTest, Bf16RoundTripsEveryValue) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = Bf16ToF32(static_cast<uint16_t>(h));
    const uint16_t back = F32ToBf16(f);
    if ((h & 0x7f80u) == 0x7f80u && (h & 0x7fu) != 0) {
      EXPECT_TRUE(std::isnan(f)) << h;
      EXPECT_TRUE(std::isnan(Bf16ToF32(back))) << h;
    } else {
      EXPECT_EQ(back, h) << "bf16 0x" << std::hex << h;
    }
  }
}

TEST(DTypeTest, Bf16RoundsToNearestEven) {
  EXPECT_EQ(F32ToBf16(1.0f), 0x3f80);
  EXPECT_EQ(F32ToBf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);      // tie -> even
  EXPECT_EQ(F32ToBf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);  // tie -> even (up)
  EXPECT_EQ(F32ToBf16(FromBits(0x3f808001u)), 0x3f81);            // above the tie
  EXPECT_EQ(F32ToBf16(FromBits(0x7f7fffffu)), 0x7f80);            // FLT_MAX -> inf
  EXPECT_EQ(F32ToBf16(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_EQ(F32ToBf16(-std::numeric_limits<float>::infinity()), 0xff80);
  EXPECT_EQ(F32ToBf16(FromBits(0x00010000u)), 0x0001);  // bf16 subnormal kept exactly
  EXPECT_EQ(F32ToBf16(FromBits(0x00018000u)), 0x0002);  // subnormal tie -> even
  EXPECT_TRUE(std::isnan(Bf16ToF32(F32ToBf16(FromBits(0x7f800001u)))));  // NaN not turned into inf
  EXPECT_TRUE(std::isnan(Bf16ToF32(F32ToBf16(FromBits(0xffffffffu)))));
}

TEST(DTypeTest, BulkConversionsMatchScalar) {
  std::vector<float> src;
  for (int k = -300; k < 300; ++k)
    src.push_back(static_cast<float>(k) * 0.37f + std::ldexp(1.0f, -20));
  src.push_back(std::numeric_limits<float>::infinity());
  src.push_back(std::ldexp(1.0f, -24));
  const size_t n = src.size();
  // Odd offsets: the void* sides may be unaligned.
  std::vector<uint8_t> half(n * 2 + 1), bf(n * 2 + 1), f32(n * 4 + 1);
  ConvertFromF32(src.data(), DType::kF16, half.data() + 1, n);
  ConvertFromF32(src.data(), DType::kBF16, bf.data() + 1, n);
  ConvertFromF32(src.data(), DType::kF32, f32.data() + 1, n);
  std::vector<float> back(n);
  for (size_t k = 0; k < n; ++k) {
    uint16_t h, b;
    std::memcpy(&h, half.data() + 1 + 2 * k, 2);
    std::memcpy(&b, bf.data() + 1 + 2 * k, 2);
    EXPECT_EQ(h, F32ToF16(src[k]));
    EXPECT_EQ(b, F32ToBf16(src[k]));
  }
  ConvertToF32(DType::kF16, half.data() + 1, back.data(), n);
  for (size_t k = 0; k < n; ++k) EXPECT_EQ(back[k], F16ToF32(F32ToF16(src[k])));
  ConvertToF32(DType::kBF16, bf.data() + 1, back.data(), n);
  for (size_t k = 0; k < n; ++k) EXPECT_EQ(back[k], Bf16ToF32(F32ToBf16(src[k])));
  ConvertToF32(DType::kF32, f32.data() + 1, back.data(), n);
  EXPECT_EQ(back, src);
}

TEST(DTypeTest, ConvertDTypeBetweenHalves) {
  // 3000 elements: more than one internal chunk.
  std::vector<uint16_t> h(3000), bf(3000), h2(3000);
  for (size_t k = 0; k < h.size(); ++k) h[k] = static_cast<uint16_t>(k * 21 % 0x7c00);
  ConvertDType(DType::kF16, h.data(), DType::kBF16, bf.data(), h.size());
  for (size_t k = 0; k < h.size(); ++k) ASSERT_EQ(bf[k], F32ToBf16(F16ToF32(h[k]))) << k;
  ConvertDType(DType::kF16, h.data(), DType::kF16, h2.data(), h.size());
  EXPECT_EQ(h, h2);
  ConvertDType(DType::kF32, nullptr, DType::kF16, nullptr, 0);  // n == 0 touches nothing
}

}  // namespace
}  // namespace rwkv
