// DirectoryStateStore: POSIX files, atomic replace, crash-leftover cleanup.
//
// Why raw POSIX calls: atomicity and durability need exactly O_EXCL temp
// files, fsync of the file, rename(2) and fsync of the directory, with errno
// mapped to a status that names the path. No locks are needed: each save has
// its own temp file and rename(2) is atomic, so concurrent saves of one name
// end with one whole file (last rename wins) and readers never see a partial.
#include "engine/state/state_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace rwkv {
namespace {

absl::Status ErrnoStatus(int err, absl::string_view what, absl::string_view path) {
  const std::string msg = absl::StrCat(what, " '", path, "': ", std::strerror(err));
  switch (err) {
    case ENOENT:
      return absl::NotFoundError(msg);
    case EACCES:
    case EPERM:
    case EROFS:
      return absl::PermissionDeniedError(msg);
    case ENOSPC:
    case EDQUOT:
    case EMFILE:
    case ENFILE:
    case ENOMEM:
      return absl::ResourceExhaustedError(msg);
    case ENOTDIR:
    case EISDIR:
    case ENAMETOOLONG:
      return absl::FailedPreconditionError(msg);
    default:
      return absl::InternalError(msg);
  }
}

// Closes a descriptor on scope exit unless released.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  // Closes now and reports close(2)'s error (it can carry a deferred write error).
  int Close() {
    const int rc = ::close(fd_);
    fd_ = -1;
    return rc;
  }

 private:
  int fd_;
};

int OpenRetry(const char* path, int flags, mode_t mode = 0) {
  int fd;
  do {
    fd = ::open(path, flags, mode);
  } while (fd < 0 && errno == EINTR);
  return fd;
}

// Writes all of `bytes`, retrying short writes and EINTR. Returns errno or 0.
int WriteAll(int fd, absl::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return 0;
}

absl::Status FsyncDir(const std::string& dir) {
  const int fd = OpenRetry(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, "cannot open state directory", dir);
  Fd closer(fd);
  // Some filesystems cannot fsync a directory (EINVAL); nothing more to do there.
  if (::fsync(fd) != 0 && errno != EINVAL) return ErrnoStatus(errno, "cannot fsync directory", dir);
  return absl::OkStatus();
}

bool EndsWith(absl::string_view s, absl::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

absl::Status WithName(absl::string_view name, const absl::Status& s) {
  return absl::Status(s.code(), absl::StrCat("state '", name, "': ", s.message()));
}

}  // namespace

absl::Status ValidateStateName(absl::string_view name) {
  const bool chars_ok = std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
  });
  if (name.empty() || name.size() > kMaxStateNameLength || name[0] == '.' || !chars_ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid state name \"", absl::CHexEscape(name.substr(0, kMaxStateNameLength + 1)), "\": use 1 to ",
        kMaxStateNameLength, " characters from [A-Za-z0-9._-], not starting with '.'"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<DirectoryStateStore>> DirectoryStateStore::Open(const std::string& dir) {
  if (dir.empty()) return absl::InvalidArgumentError("empty state directory path");
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) return ErrnoStatus(ec.value(), "cannot create state directory", dir);
    if (::stat(dir.c_str(), &st) != 0) return ErrnoStatus(errno, "cannot stat state directory", dir);
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat("state directory '", dir, "' is not a directory"));
  }
  std::unique_ptr<DirectoryStateStore> store(new DirectoryStateStore(dir));

  // Remove temp files a crashed save left behind.
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return ErrnoStatus(errno, "cannot list state directory", dir);
  while (const dirent* e = ::readdir(d)) {
    const absl::string_view entry(e->d_name);
    if (entry.substr(0, kTempPrefix.size()) == kTempPrefix) {
      ::unlinkat(::dirfd(d), e->d_name, 0);  // best effort; a leftover is ignored by List anyway
    }
  }
  ::closedir(d);

  // Writability probe: create and remove a temp file, as a save would.
  const std::string probe = absl::StrCat(dir, "/", kTempPrefix, "probe.", ::getpid());
  const int fd = OpenRetry(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus(errno, "state directory is not writable: cannot create a file in", dir);
  ::close(fd);
  ::unlink(probe.c_str());
  return store;
}

std::string DirectoryStateStore::PathFor(absl::string_view name) const {
  return absl::StrCat(dir_, "/", name, kStateFileSuffix);
}

absl::Status DirectoryStateStore::Fault(absl::string_view step, const std::string& temp_path) const {
  if (!fault_hook_) return absl::OkStatus();
  return fault_hook_(step, temp_path);
}

absl::Status DirectoryStateStore::WriteAtomically(const std::string& target, absl::string_view temp_stem,
                                                  absl::string_view bytes) {
  std::string temp;
  int fd = -1;
  for (int attempt = 0; attempt < 100 && fd < 0; ++attempt) {
    temp = absl::StrCat(dir_, "/", kTempPrefix, temp_stem, ".", ::getpid(), ".", temp_counter_++);
    fd = OpenRetry(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0 && errno != EEXIST) return ErrnoStatus(errno, "cannot create temp file", temp);
  }
  if (fd < 0) return absl::InternalError(absl::StrCat("cannot find a free temp file name in '", dir_, "'"));
  Fd file(fd);
  bool renamed = false;
  auto fail = [&](absl::Status s) {
    if (file.get() >= 0) file.Close();
    if (!renamed) ::unlink(temp.c_str());
    return s;
  };

  if (absl::Status s = Fault("open", temp); !s.ok()) return fail(s);
  const size_t half = bytes.size() / 2;
  if (int err = WriteAll(fd, bytes.substr(0, half)); err != 0) {
    return fail(ErrnoStatus(err, "cannot write", temp));
  }
  if (absl::Status s = Fault("write", temp); !s.ok()) return fail(s);
  if (int err = WriteAll(fd, bytes.substr(half)); err != 0) {
    return fail(ErrnoStatus(err, "cannot write", temp));
  }
  if (absl::Status s = Fault("fsync", temp); !s.ok()) return fail(s);
  if (::fsync(fd) != 0) return fail(ErrnoStatus(errno, "cannot fsync", temp));
  if (file.Close() != 0) return fail(ErrnoStatus(errno, "cannot close", temp));
  if (absl::Status s = Fault("rename", temp); !s.ok()) return fail(s);
  if (::rename(temp.c_str(), target.c_str()) != 0) {
    return fail(ErrnoStatus(errno, absl::StrCat("cannot rename temp file onto ", target, " from"), temp));
  }
  renamed = true;
  return FsyncDir(dir_);
}

absl::Status DirectoryStateStore::Save(absl::string_view name, const SessionSnapshot& snapshot) {
  if (absl::Status s = ValidateStateName(name); !s.ok()) return s;
  if (absl::Status s = ValidateSnapshot(snapshot); !s.ok()) return WithName(name, s);
  return WriteAtomically(PathFor(name), name, EncodeSnapshot(snapshot));
}

absl::StatusOr<SessionSnapshot> DirectoryStateStore::Load(absl::string_view name) {
  if (absl::Status s = ValidateStateName(name); !s.ok()) return s;
  const std::string path = PathFor(name);
  const int fd = OpenRetry(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat("no saved state named '", name, "'"));
    return ErrnoStatus(errno, "cannot open", path);
  }
  Fd file(fd);
  struct stat st;
  if (::fstat(fd, &st) != 0) return ErrnoStatus(errno, "cannot stat", path);
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat("'", path, "' is not a regular file"));
  }
  if (st.st_size < 0 || static_cast<uint64_t>(st.st_size) > kMaxSnapshotBytes) {
    return absl::InvalidArgumentError(absl::StrCat("state '", name, "': file of ", st.st_size,
                                                   " bytes exceeds the limit of ", kMaxSnapshotBytes));
  }
  std::string bytes(static_cast<size_t>(st.st_size), '\0');
  size_t got = 0;
  while (got < bytes.size()) {
    const ssize_t n = ::read(fd, bytes.data() + got, bytes.size() - got);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "cannot read", path);
    }
    if (n == 0) break;  // shrank meanwhile; decoding reports the truncation
    got += static_cast<size_t>(n);
  }
  bytes.resize(got);
  absl::StatusOr<SessionSnapshot> snapshot = DecodeSnapshot(bytes);
  if (!snapshot.ok()) return WithName(name, snapshot.status());
  return snapshot;
}

absl::Status DirectoryStateStore::Delete(absl::string_view name) {
  if (absl::Status s = ValidateStateName(name); !s.ok()) return s;
  const std::string path = PathFor(name);
  if (::unlink(path.c_str()) != 0) {
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat("no saved state named '", name, "'"));
    return ErrnoStatus(errno, "cannot delete", path);
  }
  return FsyncDir(dir_);
}

absl::StatusOr<bool> DirectoryStateStore::Exists(absl::string_view name) {
  if (absl::Status s = ValidateStateName(name); !s.ok()) return s;
  const std::string path = PathFor(name);
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return false;
    return ErrnoStatus(errno, "cannot stat", path);
  }
  return S_ISREG(st.st_mode);
}

absl::StatusOr<std::vector<StateEntry>> DirectoryStateStore::List() {
  DIR* d = ::opendir(dir_.c_str());
  if (d == nullptr) return ErrnoStatus(errno, "cannot list state directory", dir_);
  std::vector<StateEntry> entries;
  errno = 0;
  while (const dirent* e = ::readdir(d)) {
    const absl::string_view file(e->d_name);
    if (!EndsWith(file, kStateFileSuffix)) continue;
    const absl::string_view name = file.substr(0, file.size() - kStateFileSuffix.size());
    if (!ValidateStateName(name).ok()) continue;  // temp files, hidden or foreign files
    struct stat st;
    if (::fstatat(::dirfd(d), e->d_name, &st, 0) != 0 || !S_ISREG(st.st_mode)) continue;  // raced a delete
    entries.push_back(
        StateEntry{std::string(name), static_cast<uint64_t>(st.st_size), absl::TimeFromTimespec(st.st_mtim)});
  }
  ::closedir(d);
  std::sort(entries.begin(), entries.end(),
            [](const StateEntry& a, const StateEntry& b) { return a.name < b.name; });
  return entries;
}

}  // namespace rwkv
