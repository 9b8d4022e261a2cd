// CRC-32C: slicing-by-8 tables plus an SSE4.2 path picked at run time.
//
// Why both: state files are checksummed on every save and load; the
// hardware instruction makes that ~10x cheaper where it exists, and the
// portable tables keep every other CPU (and the tests) correct.
#include "engine/state/crc32c.h"

#include <array>
#include <cstring>

namespace rwkv {
namespace state_internal {
namespace {

constexpr uint32_t kPoly = 0x82F63B78u;  // reflected Castagnoli polynomial

using Tables = std::array<std::array<uint32_t, 256>, 8>;

constexpr Tables MakeTables() {
  Tables t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1u) ? (c >> 1) ^ kPoly : c >> 1;
    t[0][i] = c;
  }
  for (uint32_t i = 0; i < 256; ++i) {
    for (size_t s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xffu];
  }
  return t;
}

constexpr Tables kTables = MakeTables();

inline uint32_t Load32LE(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}

}  // namespace

uint32_t Crc32cPortable(const uint8_t* data, size_t n, uint32_t crc) {
  uint32_t c = ~crc;
  while (n >= 8) {
    const uint32_t lo = Load32LE(data) ^ c;
    const uint32_t hi = Load32LE(data + 4);
    c = kTables[7][lo & 0xffu] ^ kTables[6][(lo >> 8) & 0xffu] ^ kTables[5][(lo >> 16) & 0xffu] ^
        kTables[4][lo >> 24] ^ kTables[3][hi & 0xffu] ^ kTables[2][(hi >> 8) & 0xffu] ^
        kTables[1][(hi >> 16) & 0xffu] ^ kTables[0][hi >> 24];
    data += 8;
    n -= 8;
  }
  while (n-- > 0) c = (c >> 8) ^ kTables[0][(c ^ *data++) & 0xffu];
  return ~c;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

bool Crc32cHardwareAvailable() {
  static const bool available = __builtin_cpu_supports("sse4.2");
  return available;
}

__attribute__((target("sse4.2"))) uint32_t Crc32cHardware(const uint8_t* data, size_t n, uint32_t crc) {
  uint64_t c = ~crc;
  while (n >= 8) {
    uint64_t v;
    std::memcpy(&v, data, 8);  // x86 is little-endian
    c = __builtin_ia32_crc32di(c, v);
    data += 8;
    n -= 8;
  }
  uint32_t c32 = static_cast<uint32_t>(c);
  while (n-- > 0) c32 = __builtin_ia32_crc32qi(c32, *data++);
  return ~c32;
}

#else

bool Crc32cHardwareAvailable() { return false; }
uint32_t Crc32cHardware(const uint8_t* data, size_t n, uint32_t crc) { return Crc32cPortable(data, n, crc); }

#endif

}  // namespace state_internal

uint32_t Crc32c(absl::string_view data, uint32_t crc) {
  const auto* p = reinterpret_cast<const uint8_t*>(data.data());
  if (state_internal::Crc32cHardwareAvailable()) {
    return state_internal::Crc32cHardware(p, data.size(), crc);
  }
  return state_internal::Crc32cPortable(p, data.size(), crc);
}

}  // namespace rwkv
