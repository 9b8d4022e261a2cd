// How an fp32 value of the RWKV-7 WKV state is rounded to fp16 when the
// state is kept in fp16 (ModelLoadOptions::state_dtype = kF16).
//
// Why a header of its own: the CPU backend's Wkv7 and the CUDA kernel
// (kernels/wkv7.cu) must round bit for bit alike, so both include this one
// definition (plain C++; __host__ __device__ under nvcc).
//
// Why not round to nearest: the state is S <- S*w + ..., and a decay w close
// to 1 (long-memory channels; w lies in (0.545, 1)) changes S by less than
// half an fp16 ulp per token (2^-12 relative), so round-to-nearest puts S
// back where it was and the decay never happens: with w = 0.9998 a value of
// 1.5 stays 1.5 for ever, where fp32 has it at 1.23 after 1,000 tokens.
// (Peer notes §2: the peer keeps w-1 in fp16 for the same reason; here the
// arithmetic is fp32 in registers, w is exact, and the loss is only in the
// store.) Stochastic rounding removes that bias: x rounds up with
// probability equal to its distance from the fp16 below, so small decays
// happen on average.
//
// The random bits must be deterministic and must not depend on the batch,
// the slot or how a prompt is split into passes, so they are a hash of what
// belongs to this session and this token only: the head, row and column
// indices, the token's value v_i (to its fp16-like top bits, so that the
// last-bit noise of a different GEMM algorithm does not reshuffle them) and
// the element's previous (fp16) value. There is no token counter in the state,
// so under exactly constant inputs (no new v_i) an element can stop at a
// value that round-to-nearest would also keep; any new token moves the key.
//
// Rounding itself: the fp32 bits plus 13 random bits (the bits fp16 drops
// from the fp32 significand), truncated; that is stochastic rounding onto
// the fp16 grid for every value in fp16's normal range (below 2^-14 the
// dithered value is rounded to nearest onto the subnormal grid, keeping its
// sign: within one 2^-24 step, nearly unbiased). Values beyond fp16's range
// saturate at +-65504 instead of becoming inf. A NaN stays NaN unless its
// payload carries the dither out of the magnitude: a NaN with significand
// bits 13..22 all set (the GPU's canonical 0x7FFFFFFF) comes out -0 for a
// nonzero dither (step one below carries it out), where x86's default NaN
// (0xFFC00000) stays NaN. So a NaN state value may vanish on the GPU and
// persist on the CPU; keeping it on both would cost the kernel a test per
// element (not done yet).
#ifndef RWKV_ENGINE_MODEL_FP16_STATE_ROUNDING_H_
#define RWKV_ENGINE_MODEL_FP16_STATE_ROUNDING_H_

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define RWKV_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define RWKV_HOST_DEVICE inline
#endif

namespace rwkv {

inline constexpr float kFp16StateMax = 65504.0f;

RWKV_HOST_DEVICE uint32_t Fp16StateFloatBits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t b;
  std::memcpy(&b, &x, 4);
  return b;
#endif
}

RWKV_HOST_DEVICE float Fp16StateBitsFloat(uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(b);
#else
  float x;
  std::memcpy(&x, &b, 4);
  return x;
#endif
}

// The key of row i of head h for one token (v_i: that token's value).
RWKV_HOST_DEVICE uint32_t Fp16StateRowKey(int h, int N, int i, float v_i) {
  return ((Fp16StateFloatBits(v_i) >> 13) * 0x9E3779B1u) ^ (static_cast<uint32_t>(h * N + i) * 0x85EBCA77u);
}

// 13 random bits for column j of a row, given the element's previous value
// (an fp16 value, widened; its fp32 bits below bit 13 are zero, the rest
// move to bits 8..26 of the hash input).
RWKV_HOST_DEVICE uint32_t Fp16StateDither(uint32_t row_key, int j, float old) {
  const uint32_t z = row_key ^ (Fp16StateFloatBits(old) >> 5) ^ (static_cast<uint32_t>(j) * 0x9E3779B9u);
  return (z * 0xC2B2AE3Du) >> 19;
}

// The rounding in two steps, so that a kernel can take the second only where
// it changes something. Step one: the fp32 bits plus the dither, truncated
// to fp16's significand.
RWKV_HOST_DEVICE float Fp16StateDitherTruncate(float x, uint32_t dither) {
  return Fp16StateBitsFloat((Fp16StateFloatBits(x) + dither) & ~0x1FFFu);
}

// Whether y lies in fp16's normal range (2^-14 <= |y| <= 65504; not zero,
// inf or NaN), where step two leaves it as it is.
RWKV_HOST_DEVICE bool Fp16StateNormal(float y) {
  return (Fp16StateFloatBits(y) & 0x7FFFFFFFu) - 0x38800000u <= 0x477FE000u - 0x38800000u;
}

// Step two: below fp16's smallest normal (2^-14) its grid is 2^-24 apart:
// round the magnitude to it, nearest even (adding 0.75, whose ulp is 2^-24,
// does that in fp32), keeping the sign (a negative value that rounds to zero
// is -0); beyond 65504 saturate. That is exactly what a round-to-nearest,
// saturating conversion to fp16 (PTX cvt.rn.satfinite.f16x2.f32) makes of
// step one's value, so a kernel that stores the result may leave step two to
// that conversion (Fp16StateRoundingTest.StepTwoIsTheSaturatingConversion).
RWKV_HOST_DEVICE float Fp16StateFinish(float y) {
  if (y < 0x1p-14f && y > -0x1p-14f) y = copysignf((fabsf(y) + 0.75f) - 0.75f, y);
  // Comparisons, not fminf/fmaxf: those would turn a NaN into a finite value.
  return y > kFp16StateMax ? kFp16StateMax : (y < -kFp16StateMax ? -kFp16StateMax : y);
}

// x stochastically rounded with `dither` (13 bits): an fp32 value on the
// fp16 grid, so converting it to fp16 is exact and the kernel may keep it in
// a register for the segment's next token instead of storing it.
RWKV_HOST_DEVICE float Fp16StateRound(float x, uint32_t dither) {
  return Fp16StateFinish(Fp16StateDitherTruncate(x, dither));
}

}  // namespace rwkv

#undef RWKV_HOST_DEVICE

#endif  // RWKV_ENGINE_MODEL_FP16_STATE_ROUNDING_H_
