// The sampler's pseudo-random generator: xoshiro256** seeded via splitmix64.
//
// Why: a session's tokens must be reproducible from its seed on any platform
// and whatever else shares the batch. std::mt19937_64 is portable but large
// (2.5 KB of state per session), and the std:: distributions are not
// specified bit-for-bit, so they differ between standard libraries. This is
// the reference algorithm by Blackman and Vigna (public domain), 32 bytes of
// state, plus a 53-bit uniform double built by hand, so every draw is
// defined by this file alone.
#ifndef RWKV_ENGINE_SAMPLER_RNG_H_
#define RWKV_ENGINE_SAMPLER_RNG_H_

#include <array>
#include <cstdint>

namespace rwkv {

// Advances a splitmix64 state and returns its next output.
inline uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Not thread-safe; one per session. Copying forks the stream (both copies
// then produce the same numbers).
class Xoshiro256StarStar {
 public:
  // The four state words are four successive splitmix64 outputs from `seed`,
  // as the algorithm's authors recommend; they are distinct, so never all 0.
  explicit Xoshiro256StarStar(uint64_t seed) {
    uint64_t sm = seed;
    for (uint64_t& word : s_) word = SplitMix64(sm);
  }

  uint64_t Next() {
    const uint64_t result = Rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = Rotl(s_[3], 45);
    return result;
  }

  // Uniform in [0, 1) with 53 random bits: exact, no rounding up to 1.
  double NextDouble() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }

  // The raw state, for saving a session and restoring it bit-for-bit.
  const std::array<uint64_t, 4>& state() const { return s_; }
  void set_state(const std::array<uint64_t, 4>& s) { s_ = s; }

 private:
  static uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

  std::array<uint64_t, 4> s_;
};

}  // namespace rwkv

#endif  // RWKV_ENGINE_SAMPLER_RNG_H_
