// Named, persistent storage of session snapshots.
//
// Why: users save a session under a name and load it later, possibly after
// a crash or restart, so a store must never expose a half-written file and
// must never let a name escape its directory. StateStore is the interface
// the server uses (a remote or database store can implement it later);
// DirectoryStateStore keeps one file per name, `<name>.rwkvstate`, in a local
// directory, and writes through a unique temp file, fsync, rename, and a
// directory fsync, so a reader sees the old file or the new one, whole.
#ifndef RWKV_ENGINE_STATE_STATE_STORE_H_
#define RWKV_ENGINE_STATE_STATE_STORE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "engine/state/state_file.h"

namespace rwkv {

inline constexpr size_t kMaxStateNameLength = 128;
inline constexpr absl::string_view kStateFileSuffix = ".rwkvstate";

// OK when `name` is 1..128 characters of [A-Za-z0-9._-] not starting with
// '.'; else INVALID_ARGUMENT stating this rule. Such names cannot contain a
// path separator, "..", a NUL byte or name a hidden file.
absl::Status ValidateStateName(absl::string_view name);

struct StateEntry {
  std::string name;         // without the suffix
  uint64_t size_bytes = 0;  // encoded size on disk
  absl::Time mtime;         // last modification
};

// All methods are thread-safe. Errors: INVALID_ARGUMENT for a bad name,
// NOT_FOUND for a missing one, and DecodeSnapshot's errors from Load.
class StateStore {
 public:
  virtual ~StateStore() = default;

  // Creates or replaces `name`. Concurrent saves of one name: last writer wins.
  // On error the previous file (if any) is untouched, except for an error
  // from the final directory fsync: the new file is then in place but its
  // durability across a power loss is not confirmed.
  virtual absl::Status Save(absl::string_view name, const SessionSnapshot& snapshot) = 0;
  virtual absl::StatusOr<SessionSnapshot> Load(absl::string_view name) = 0;
  virtual absl::Status Delete(absl::string_view name) = 0;
  // Every saved state, sorted by name.
  virtual absl::StatusOr<std::vector<StateEntry>> List() = 0;
  virtual absl::StatusOr<bool> Exists(absl::string_view name) = 0;
};

class DirectoryStateStore : public StateStore {
 public:
  // Opens `dir`, creating it (and its parents) when missing. Fails when it is
  // not a directory or not writable (checked by creating a probe file).
  // Removes temp files left by a crashed save. One server process per
  // directory: a second process opening it would remove the first one's
  // in-flight temp files (its save then fails cleanly; no file is damaged).
  static absl::StatusOr<std::unique_ptr<DirectoryStateStore>> Open(const std::string& dir);

  absl::Status Save(absl::string_view name, const SessionSnapshot& snapshot) override;
  absl::StatusOr<SessionSnapshot> Load(absl::string_view name) override;
  absl::Status Delete(absl::string_view name) override;
  absl::StatusOr<std::vector<StateEntry>> List() override;
  absl::StatusOr<bool> Exists(absl::string_view name) override;

  const std::string& dir() const { return dir_; }
  // The file that holds `name` (which must be valid).
  std::string PathFor(absl::string_view name) const;

  // Test hook: called at each step of a save ("open", "write" after half the
  // bytes are written, "fsync", "rename") with the temp file's path; a non-OK
  // result aborts the save there as a failing system call would. Set it
  // before any concurrent use.
  using FaultHook = std::function<absl::Status(absl::string_view step, const std::string& temp_path)>;
  void SetFaultHookForTesting(FaultHook hook) { fault_hook_ = std::move(hook); }

  // Temp files are "<dir>/.tmp.<name>.<pid>.<n>"; exposed for tests.
  static constexpr absl::string_view kTempPrefix = ".tmp.";

 private:
  explicit DirectoryStateStore(std::string dir) : dir_(std::move(dir)) {}
  absl::Status WriteAtomically(const std::string& target, absl::string_view temp_stem,
                               absl::string_view bytes);
  absl::Status Fault(absl::string_view step, const std::string& temp_path) const;

  std::string dir_;
  std::atomic<uint64_t> temp_counter_{0};
  FaultHook fault_hook_;
};

}  // namespace rwkv

#endif  // RWKV_ENGINE_STATE_STATE_STORE_H_
