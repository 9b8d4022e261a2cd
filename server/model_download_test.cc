// Tests of the cached download: cache-dir rules, SHA-256, download through a
// temp file (file:// URLs, so no network is needed), reuse, and fast failure
// for unreachable hosts.
#include "server/model_download.h"

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace rwkv {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class DownloadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("rwkv_download_test." + std::to_string(getpid()));
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }

  std::string Write(const std::string& name, const std::string& bytes) {
    const fs::path p = root_ / name;
    std::ofstream(p, std::ios::binary) << bytes;
    return p.string();
  }

  // Files in `dir` whose names start with '.' (temp files).
  int HiddenFiles(const fs::path& dir) {
    int n = 0;
    for (const auto& e : fs::directory_iterator(dir)) n += e.path().filename().string()[0] == '.';
    return n;
  }

  fs::path root_;
  DownloadOptions quiet_{5, 60, false};
};

TEST(CacheDirTest, Precedence) {
  EXPECT_EQ(*CacheDirFrom("/r", "/x", "/h"), "/r");
  EXPECT_EQ(*CacheDirFrom(nullptr, "/x", "/h"), "/x/rwkv-server");
  EXPECT_EQ(*CacheDirFrom("", "/x", "/h"), "/x/rwkv-server");
  EXPECT_EQ(*CacheDirFrom(nullptr, nullptr, "/h"), "/h/.cache/rwkv-server");
  EXPECT_EQ(*CacheDirFrom(nullptr, "", "/h"), "/h/.cache/rwkv-server");
  EXPECT_EQ(CacheDirFrom(nullptr, nullptr, nullptr).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(Sha256Test, KnownVectors) {
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST_F(DownloadTest, Sha256File) {
  const std::string big(3 << 20, 'z');  // spans several read buffers
  const std::string path = Write("f", big);
  auto sha = Sha256File(path);
  ASSERT_TRUE(sha.ok()) << sha.status();
  EXPECT_EQ(*sha, Sha256Hex(big));
  EXPECT_EQ(Sha256File((root_ / "missing").string()).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(DownloadTest, DownloadsOnceThenReuses) {
  const std::string source = Write("source.bin", "model bytes");
  const fs::path cache = root_ / "cache" / "nested";
  auto first = EnsureCached("file://" + source, cache.string(), "model.pth", quiet_);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE(first->downloaded);
  EXPECT_EQ(first->path, (cache / "model.pth").string());
  EXPECT_EQ(first->sha256, Sha256Hex("model bytes"));
  EXPECT_EQ(HiddenFiles(cache), 0);  // the temp file was renamed

  fs::remove(source);  // the second call must not need the source
  auto second = EnsureCached("file://" + source, cache.string(), "model.pth", quiet_);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_FALSE(second->downloaded);
  EXPECT_EQ(second->sha256, first->sha256);
}

TEST_F(DownloadTest, FailureLeavesNothingBehind) {
  const fs::path cache = root_ / "cache";
  auto missing = EnsureCached("file://" + (root_ / "nope").string(), cache.string(), "m.pth", quiet_);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(missing.status().message(), HasSubstr("cannot download"));
  EXPECT_FALSE(fs::exists(cache / "m.pth"));
  EXPECT_EQ(HiddenFiles(cache), 0);
}

TEST_F(DownloadTest, UnreachableHostFailsFast) {
  const auto start = std::chrono::steady_clock::now();
  // Port 1 on localhost: connection refused at once. ".invalid" never resolves.
  for (const char* url : {"http://127.0.0.1:1/model.pth", "https://rwkv-test.invalid/model.pth"}) {
    auto r = EnsureCached(url, (root_ / "cache").string(), "m.pth", quiet_);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << url;
    EXPECT_THAT(r.status().message(), HasSubstr(url));
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(12));
}

TEST_F(DownloadTest, EmptyCachedFileIsNotReused) {
  const fs::path cache = root_ / "cache";
  fs::create_directories(cache);
  Write("cache/m.pth", "");  // e.g. truncated by hand
  const std::string source = Write("src", "real");
  auto r = EnsureCached("file://" + source, cache.string(), "m.pth", quiet_);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->downloaded);
  EXPECT_EQ(r->sha256, Sha256Hex("real"));
}

}  // namespace
}  // namespace rwkv
