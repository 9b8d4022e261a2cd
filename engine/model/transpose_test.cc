// Transpose against the element loop it replaces: exact, for shapes that are
// and are not multiples of the tile, one-thread and threaded sizes.
#include "engine/model/transpose.h"

#include <cstdint>
#include <vector>

#include "gtest/gtest.h"

namespace rwkv {
namespace {

TEST(TransposeTest, EqualsTheElementLoop) {
  struct Shape {
    int64_t rows, cols;
  };
  for (Shape s : {Shape{1, 1}, Shape{1, 7}, Shape{5, 1}, Shape{3, 130}, Shape{64, 64}, Shape{65, 129},
                  Shape{1000, 1100}, Shape{2049, 700}}) {
    std::vector<float> src(static_cast<size_t>(s.rows * s.cols));
    for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<float>(i) * 0.5f - 3.0f;
    std::vector<float> want(src.size()), got(src.size(), -1.0f);
    for (int64_t r = 0; r < s.rows; ++r) {
      for (int64_t c = 0; c < s.cols; ++c) want[static_cast<size_t>(c * s.rows + r)] = src[static_cast<size_t>(r * s.cols + c)];
    }
    Transpose(src.data(), s.rows, s.cols, got.data());
    EXPECT_EQ(got, want) << s.rows << " x " << s.cols;
  }
}

}  // namespace
}  // namespace rwkv
