// Tests of MappedFile: contents, empty files and error codes.
//
// Why: every reader's error for a bad path comes from here, so the status
// codes (NOT_FOUND vs INVALID_ARGUMENT) are part of the loader's contract.
#include "engine/loader/mapped_file.h"

#include <filesystem>
#include <string>

#include "engine/loader/test_util.h"
#include "gtest/gtest.h"

namespace rwkv {
namespace {

using loader_test::WriteTempFile;

TEST(MappedFileTest, MapsContents) {
  const std::string path =
      WriteTempFile("mapped_contents", std::string("hello\0world", 11) + std::string(5000, 'x'));
  absl::StatusOr<std::unique_ptr<MappedFile>> f = MappedFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_EQ((*f)->size(), 5011u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>((*f)->data()), 5), "hello");
  EXPECT_EQ((*f)->data()[5000], 'x');
  EXPECT_EQ((*f)->path(), path);
  EXPECT_EQ(reinterpret_cast<uintptr_t>((*f)->data()) % 4096, 0u);
}

TEST(MappedFileTest, EmptyFile) {
  const std::string path = WriteTempFile("mapped_empty", "");
  absl::StatusOr<std::unique_ptr<MappedFile>> f = MappedFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->size(), 0u);
  EXPECT_TRUE((*f)->bytes().empty());
}

TEST(MappedFileTest, Errors) {
  absl::StatusOr<std::unique_ptr<MappedFile>> f = MappedFile::Open("/nonexistent/dir/model.pth");
  EXPECT_EQ(f.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(f.status().message().find("/nonexistent/dir/model.pth"), std::string::npos);
  f = MappedFile::Open(std::filesystem::temp_directory_path().string());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(f.status().message().find("directory"), std::string::npos);
  f = MappedFile::Open("");
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  f = MappedFile::Open("/dev/null");  // a character device, not a regular file
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(MappedFileTest, InMemoryWrappers) {
  std::unique_ptr<MappedFile> owned = MappedFile::FromBytes("abc", "mem");
  EXPECT_EQ(owned->size(), 3u);
  EXPECT_EQ(owned->data()[2], 'c');
  EXPECT_EQ(owned->path(), "mem");
  const char buf[] = "xyz";
  std::unique_ptr<MappedFile> unowned = MappedFile::FromUnownedMemory(buf, 2, "view");
  EXPECT_EQ(unowned->size(), 2u);
  EXPECT_EQ(unowned->data(), reinterpret_cast<const uint8_t*>(buf));
  EXPECT_EQ(MappedFile::FromBytes("", "e")->data(), nullptr);
}

}  // namespace
}  // namespace rwkv
