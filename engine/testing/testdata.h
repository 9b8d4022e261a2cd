// Locating ../shared/testdata from tests.
//
// Why: the real test data (tiny models, reference logits, the World vocab)
// lives beside the repository, never inside it. Tests find it through
// RWKV_TESTDATA or the compiled-in default, and skip with a clear message
// where it is absent.
#ifndef RWKV_ENGINE_TESTING_TESTDATA_H_
#define RWKV_ENGINE_TESTING_TESTDATA_H_

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace rwkv::testing {

// The test data root: $RWKV_TESTDATA if set, else the build's default
// (<source>/../shared/testdata). Thread-safe.
inline std::string TestDataDir() {
  if (const char* env = std::getenv("RWKV_TESTDATA"); env != nullptr && *env != '\0') {
    return env;
  }
#ifdef RWKV_DEFAULT_TESTDATA
  return RWKV_DEFAULT_TESTDATA;
#else
  return "../shared/testdata";
#endif
}

// Full path of a file under the test data root.
inline std::string TestDataPath(const std::string& relative) {
  return TestDataDir() + "/" + relative;
}

inline bool TestDataExists(const std::string& relative) {
  return std::filesystem::exists(TestDataPath(relative));
}

// Reads a whole file as float32 little-endian values.
inline std::vector<float> ReadF32File(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<float> out(bytes.size() / sizeof(float));
  std::copy(bytes.begin(), bytes.begin() + out.size() * sizeof(float),
            reinterpret_cast<char*>(out.data()));
  return out;
}

}  // namespace rwkv::testing

// Skips the current test when a test data file is missing, naming the path and
// how to point the tests at the data.
#define RWKV_REQUIRE_TESTDATA(relative)                                              \
  do {                                                                               \
    if (!::rwkv::testing::TestDataExists(relative)) {                                \
      GTEST_SKIP() << "test data not found: " << ::rwkv::testing::TestDataPath(relative) \
                   << " (set RWKV_TESTDATA to the shared/testdata folder)";          \
    }                                                                                \
  } while (0)

#endif  // RWKV_ENGINE_TESTING_TESTDATA_H_
