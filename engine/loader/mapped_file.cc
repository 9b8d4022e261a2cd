// mmap-backed implementation of MappedFile (POSIX).
//
// Why a separate file: keeps the system calls and errno handling in one
// place; the readers only see a byte span.
#include "engine/loader/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace rwkv {
namespace {

absl::Status ErrnoStatus(int err, const std::string& what, const std::string& path) {
  std::string msg = absl::StrCat(what, " ", path, ": ", std::strerror(err));
  switch (err) {
    case ENOENT:
    case ENOTDIR:
      return absl::NotFoundError(msg);
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(msg);
    case EISDIR:
    case ENAMETOOLONG:
    case ELOOP:
      return absl::InvalidArgumentError(msg);
    case ENOMEM:
    case EMFILE:
    case ENFILE:
      return absl::ResourceExhaustedError(msg);
    default:
      return absl::InternalError(msg);
  }
}

// Closes a descriptor on scope exit.
class FdCloser {
 public:
  explicit FdCloser(int fd) : fd_(fd) {}
  ~FdCloser() {
    if (fd_ >= 0) ::close(fd_);
  }
  FdCloser(const FdCloser&) = delete;
  FdCloser& operator=(const FdCloser&) = delete;

 private:
  int fd_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<MappedFile>> MappedFile::Open(const std::string& path) {
  if (path.empty()) return absl::InvalidArgumentError("empty model file path");
  int fd;
  do {
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return ErrnoStatus(errno, "cannot open", path);
  FdCloser closer(fd);

  struct stat st;
  if (::fstat(fd, &st) != 0) return ErrnoStatus(errno, "cannot stat", path);
  if (S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is a directory, not a model file"));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a regular file"));
  }
  if (st.st_size < 0) return absl::InternalError(absl::StrCat("negative size for ", path));

  std::unique_ptr<MappedFile> file(new MappedFile());
  file->path_ = path;
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size == 0) return file;
  if (size > static_cast<uint64_t>(SIZE_MAX)) {
    return absl::ResourceExhaustedError(absl::StrCat(path, " is too large to map"));
  }
  void* p = ::mmap(nullptr, static_cast<size_t>(size), PROT_READ, MAP_PRIVATE, fd, 0);
  if (p == MAP_FAILED) return ErrnoStatus(errno, "cannot mmap", path);
  file->data_ = static_cast<const uint8_t*>(p);
  file->size_ = static_cast<size_t>(size);
  file->is_mmap_ = true;
  return file;
}

std::unique_ptr<MappedFile> MappedFile::FromBytes(std::string bytes, std::string name) {
  std::unique_ptr<MappedFile> file(new MappedFile());
  file->owned_ = std::move(bytes);
  file->path_ = std::move(name);
  file->size_ = file->owned_.size();
  file->data_ = file->size_ == 0 ? nullptr : reinterpret_cast<const uint8_t*>(file->owned_.data());
  return file;
}

std::unique_ptr<MappedFile> MappedFile::FromUnownedMemory(const void* data, size_t size,
                                                          std::string name) {
  std::unique_ptr<MappedFile> file(new MappedFile());
  file->path_ = std::move(name);
  file->size_ = data == nullptr ? 0 : size;
  file->data_ = file->size_ == 0 ? nullptr : static_cast<const uint8_t*>(data);
  return file;
}

MappedFile::~MappedFile() {
  if (is_mmap_ && data_ != nullptr) {
    ::munmap(const_cast<uint8_t*>(data_), size_);
  }
}

}  // namespace rwkv
