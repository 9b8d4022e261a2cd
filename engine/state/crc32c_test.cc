// Tests of CRC-32C: published check values, chaining, and agreement of the
// hardware and portable implementations.
//
// Why: every state file's integrity rests on this checksum; the RFC 3720
// vectors pin the polynomial and bit order, the comparison pins the SSE4.2 path.
#include "engine/state/crc32c.h"

#include <random>
#include <string>

#include "gtest/gtest.h"

namespace rwkv {
namespace {

TEST(Crc32cTest, KnownVectors) {
  EXPECT_EQ(Crc32c(""), 0u);
  EXPECT_EQ(Crc32c("123456789"), 0xE3069283u);
  // RFC 3720 (iSCSI) appendix B.4.
  EXPECT_EQ(Crc32c(std::string(32, '\0')), 0x8A9136AAu);
  EXPECT_EQ(Crc32c(std::string(32, '\xff')), 0x62A8AB43u);
  std::string inc(32, '\0'), dec(32, '\0');
  for (int i = 0; i < 32; ++i) {
    inc[i] = static_cast<char>(i);
    dec[i] = static_cast<char>(31 - i);
  }
  EXPECT_EQ(Crc32c(inc), 0x46DD794Eu);
  EXPECT_EQ(Crc32c(dec), 0x113FDB5Cu);
}

TEST(Crc32cTest, ChainsAndImplementationsAgree) {
  std::mt19937 rng(7);
  std::string data(10000, '\0');
  for (char& c : data) c = static_cast<char>(rng());
  const uint32_t whole = Crc32c(data);
  for (size_t split : {0, 1, 3, 8, 13, 4096, 9999, 10000}) {
    EXPECT_EQ(Crc32c(absl::string_view(data).substr(split), Crc32c(absl::string_view(data).substr(0, split))),
              whole)
        << split;
  }
  const auto* p = reinterpret_cast<const uint8_t*>(data.data());
  if (!state_internal::Crc32cHardwareAvailable()) {
    GTEST_SKIP() << "no SSE4.2 CRC instruction; portable path checked by KnownVectors";
  }
  for (size_t off = 0; off < 9; ++off) {
    for (size_t n : {0, 1, 7, 8, 9, 63, 64, 65, 1000, 9000}) {
      EXPECT_EQ(state_internal::Crc32cPortable(p + off, n, 0x1234u),
                state_internal::Crc32cHardware(p + off, n, 0x1234u))
          << off << " " << n;
    }
  }
}

}  // namespace
}  // namespace rwkv
