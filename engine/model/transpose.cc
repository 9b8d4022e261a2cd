// See transpose.h.
#include "engine/model/transpose.h"

#include <algorithm>
#include <thread>
#include <vector>

namespace rwkv {
namespace {

constexpr int64_t kTile = 64;                        // 64 x 64 floats: 16 KiB read, 16 KiB written
constexpr int64_t kParallelElements = int64_t{1} << 20;  // below, one thread

void TransposeRows(const float* src, int64_t rows, int64_t cols, float* dst, int64_t r_begin, int64_t r_end) {
  for (int64_t r0 = r_begin; r0 < r_end; r0 += kTile) {
    const int64_t r1 = std::min(r0 + kTile, r_end);
    for (int64_t c0 = 0; c0 < cols; c0 += kTile) {
      const int64_t c1 = std::min(c0 + kTile, cols);
      for (int64_t r = r0; r < r1; ++r) {
        const float* s = src + r * cols;
        for (int64_t c = c0; c < c1; ++c) dst[c * rows + r] = s[c];
      }
    }
  }
}

}  // namespace

void Transpose(const float* src, int64_t rows, int64_t cols, float* dst) {
  if (rows <= 0 || cols <= 0) return;
  const int64_t tiles = (rows + kTile - 1) / kTile;
  int threads = 1;
  if (rows * cols >= kParallelElements) {
    threads = static_cast<int>(std::min<int64_t>(std::max(1u, std::thread::hardware_concurrency()), tiles));
  }
  if (threads <= 1) {
    TransposeRows(src, rows, cols, dst, 0, rows);
    return;
  }
  // Each thread takes a band of whole row tiles: it writes its own columns
  // of dst's rows, so no two threads write one element.
  std::vector<std::thread> pool;
  const int64_t per = (tiles + threads - 1) / threads;
  for (int t = 0; t < threads; ++t) {
    const int64_t b = std::min(rows, t * per * kTile), e = std::min(rows, (t + 1) * per * kTile);
    if (b < e) pool.emplace_back(TransposeRows, src, rows, cols, dst, b, e);
  }
  for (auto& th : pool) th.join();
}

}  // namespace rwkv
