// CRC-32C (Castagnoli), the checksum of saved session states.
//
// Why our own: the Debian abseil we build against (20220623) predates
// absl/crc, and a state file can be tens of megabytes, so the checksum must
// be fast. The portable path is table-driven slicing-by-8 (~1-2 GB/s); on
// x86-64 CPUs with SSE4.2 the hardware crc32 instruction is used instead
// (chosen once at run time). Both give identical results.
#ifndef RWKV_ENGINE_STATE_CRC32C_H_
#define RWKV_ENGINE_STATE_CRC32C_H_

#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"

namespace rwkv {

// Extends `crc` (the CRC-32C of earlier bytes, 0 for none) over `data`:
// Crc32c(a + b) == Crc32c(b, Crc32c(a)). Crc32c("123456789") == 0xE3069283.
uint32_t Crc32c(absl::string_view data, uint32_t crc = 0);

namespace state_internal {
// The two implementations, exposed so tests can compare them. The hardware
// one must only be called when Crc32cHardwareAvailable() is true.
uint32_t Crc32cPortable(const uint8_t* data, size_t n, uint32_t crc);
bool Crc32cHardwareAvailable();
uint32_t Crc32cHardware(const uint8_t* data, size_t n, uint32_t crc);
}  // namespace state_internal

}  // namespace rwkv

#endif  // RWKV_ENGINE_STATE_CRC32C_H_
