// See ceilings.h: the host half.
#include <chrono>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "tools/bench/ceilings.h"

namespace rwkv {

Ceilings MeasureHostCeilings(int threads, size_t bytes, int reps) {
  threads = std::max(1, threads);
  bytes = std::max<size_t>(bytes, size_t{1} << 20);
  std::unique_ptr<char[]> src(new char[bytes]);
  std::unique_ptr<char[]> dst(new char[bytes]);
  // Touch both (first-touch by the thread that will copy the chunk) and
  // fill the source with non-zero data.
  const size_t chunk = (bytes + static_cast<size_t>(threads) - 1) / static_cast<size_t>(threads);
  auto for_chunks = [&](auto&& fn) {
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      const size_t b = static_cast<size_t>(t) * chunk;
      const size_t e = std::min(bytes, b + chunk);
      if (b < e) pool.emplace_back([&fn, b, e] { fn(b, e); });
    }
    for (auto& th : pool) th.join();
  };
  for_chunks([&](size_t b, size_t e) {
    for (size_t i = b; i < e; ++i) src[i] = static_cast<char>(i * 131 + 7);
    std::memset(dst.get() + b, 0, e - b);
  });
  double best = 0;
  for (int r = 0; r <= reps; ++r) {  // r == 0 is the warm-up
    const auto t0 = std::chrono::steady_clock::now();
    for_chunks([&](size_t b, size_t e) { std::memcpy(dst.get() + b, src.get() + b, e - b); });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (r > 0) best = std::max(best, 2.0 * static_cast<double>(bytes) / s / 1e9);
  }
  Ceilings c;
  c.copy_gbps = best;
  c.copy_method = absl::StrFormat("host memcpy of %d MiB in %d threads, (read+write)/time, best of %d",
                                  bytes >> 20, threads, reps);
  c.peak_method = "not measured on the CPU backend: the floor is bandwidth only";
  return c;
}

}  // namespace rwkv
