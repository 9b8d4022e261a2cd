// Tests of DirectoryStateStore on real files: CRUD, name validation,
// atomicity under injected failures and crashes, concurrency, corruption.
//
// Why real files: atomic replace, fsync and leftover cleanup are properties
// of the file system calls, which only a real directory exercises.
#include "engine/state/state_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "engine/state/state_test_util.h"
#include "gtest/gtest.h"

namespace rwkv {
namespace {

namespace fs = std::filesystem;
using state_test::ExpectSameSnapshot;
using state_test::FreshDir;
using state_test::MakeSnapshot;
using state_test::V4Dims;
using state_test::V7Dims;

bool Contains(absl::string_view haystack, absl::string_view needle) {
  return haystack.find(needle) != absl::string_view::npos;
}

std::unique_ptr<DirectoryStateStore> OpenOrDie(const std::string& dir) {
  absl::StatusOr<std::unique_ptr<DirectoryStateStore>> store = DirectoryStateStore::Open(dir);
  EXPECT_TRUE(store.ok()) << store.status();
  return store.ok() ? std::move(*store) : nullptr;
}

std::vector<std::string> DirEntries(const std::string& dir) {
  std::vector<std::string> names;
  for (const fs::directory_entry& e : fs::directory_iterator(dir)) names.push_back(e.path().filename());
  std::sort(names.begin(), names.end());
  return names;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

TEST(DirectoryStateStoreTest, SaveLoadListDelete) {
  const std::string dir = FreshDir("crud") + "/nested/states";  // Open creates parents
  std::unique_ptr<DirectoryStateStore> store = OpenOrDie(dir);
  ASSERT_NE(store, nullptr);
  const SessionSnapshot a = MakeSnapshot(V7Dims(2, 2, 8, 100), 1, true, "{}");
  const SessionSnapshot b = MakeSnapshot(V4Dims(3, 8, 50), 2, false);
  ASSERT_TRUE(store->Save("alpha", a).ok());
  ASSERT_TRUE(store->Save("beta-2.v1_x", b).ok());
  EXPECT_EQ(DirEntries(dir), (std::vector<std::string>{"alpha.rwkvstate", "beta-2.v1_x.rwkvstate"}));

  absl::StatusOr<SessionSnapshot> got = store->Load("alpha");
  ASSERT_TRUE(got.ok()) << got.status();
  ExpectSameSnapshot(a, *got);
  absl::StatusOr<std::vector<StateEntry>> list = store->List();
  ASSERT_TRUE(list.ok()) << list.status();
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].name, "alpha");
  EXPECT_EQ((*list)[0].size_bytes, EncodeSnapshot(a).size());
  EXPECT_LT(absl::AbsDuration(absl::Now() - (*list)[0].mtime), absl::Minutes(5));
  EXPECT_EQ((*list)[1].name, "beta-2.v1_x");
  EXPECT_EQ(*store->Exists("alpha"), true);
  EXPECT_EQ(*store->Exists("gamma"), false);

  ASSERT_TRUE(store->Save("alpha", b).ok());  // replace
  ExpectSameSnapshot(b, *store->Load("alpha"));

  ASSERT_TRUE(store->Delete("alpha").ok());
  EXPECT_EQ(*store->Exists("alpha"), false);
  EXPECT_EQ(store->Load("alpha").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store->Delete("alpha").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store->List()->size(), 1u);

  // Reopening sees the same data.
  std::unique_ptr<DirectoryStateStore> again = OpenOrDie(dir);
  ExpectSameSnapshot(b, *again->Load("beta-2.v1_x"));
}

TEST(DirectoryStateStoreTest, NameValidation) {
  const std::string dir = FreshDir("names");
  std::unique_ptr<DirectoryStateStore> store = OpenOrDie(dir);
  const SessionSnapshot s = MakeSnapshot(V4Dims(1, 4, 8), 1, true);
  const std::vector<std::string> bad = {
      "../x", "a/b",         "",     ".hidden", "..", ".", std::string(129, 'a'), std::string("nul\0byte", 8),
      "a b",  "caf\xc3\xa9", "x\\y", "/abs"};
  for (const std::string& name : bad) {
    absl::Status st = store->Save(name, s);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_TRUE(Contains(st.message(), "[A-Za-z0-9._-]")) << st;
    EXPECT_EQ(store->Load(name).status().code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_EQ(store->Delete(name).code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_EQ(store->Exists(name).status().code(), absl::StatusCode::kInvalidArgument) << name;
  }
  EXPECT_TRUE(DirEntries(dir).empty());
  EXPECT_FALSE(fs::exists(fs::path(dir).parent_path() / "x.rwkvstate"));
  for (const std::string& name : {std::string(128, 'b'), std::string("a..b"), std::string("Model-1_v2.final"),
                                  std::string("0"), std::string("-dash")}) {
    EXPECT_TRUE(store->Save(name, s).ok()) << name;
    EXPECT_TRUE(store->Load(name).ok()) << name;
  }
}

TEST(DirectoryStateStoreTest, CrashLeftoversAreIgnoredAndCleanedAtOpen) {
  const std::string dir = FreshDir("crash");
  std::unique_ptr<DirectoryStateStore> store = OpenOrDie(dir);
  const SessionSnapshot s = MakeSnapshot(V7Dims(1, 2, 4, 10), 3, true);
  ASSERT_TRUE(store->Save("keep", s).ok());
  // What a save killed mid-write leaves behind: a partial temp file.
  const std::string leftover = dir + "/.tmp.keep.4242.0";
  WriteFile(leftover, EncodeSnapshot(s).substr(0, 50));
  WriteFile(dir + "/.tmp.other.1.7", "partial");
  // Foreign files are never listed (nor removed).
  WriteFile(dir + "/notes.txt", "hello");
  WriteFile(dir + "/.hidden.rwkvstate", "x");
  fs::create_directory(dir + "/subdir.rwkvstate");

  absl::StatusOr<std::vector<StateEntry>> list = store->List();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].name, "keep");

  store = OpenOrDie(dir);
  EXPECT_FALSE(fs::exists(leftover));
  EXPECT_FALSE(fs::exists(dir + "/.tmp.other.1.7"));
  EXPECT_TRUE(fs::exists(dir + "/notes.txt"));
  ExpectSameSnapshot(s, *store->Load("keep"));
}

TEST(DirectoryStateStoreTest, FailedWriteLeavesTheOldFileIntact) {
  const std::string dir = FreshDir("fault");
  std::unique_ptr<DirectoryStateStore> store = OpenOrDie(dir);
  const SessionSnapshot old_state = MakeSnapshot(V7Dims(2, 2, 8, 100), 1, true);
  const SessionSnapshot new_state = MakeSnapshot(V7Dims(2, 2, 8, 100), 2, true);
  ASSERT_TRUE(store->Save("s", old_state).ok());
  const std::string old_bytes = ReadFile(store->PathFor("s"));
  for (const char* step : {"open", "write", "fsync", "rename"}) {
    std::string seen_temp;
    store->SetFaultHookForTesting([&](absl::string_view at, const std::string& temp) {
      if (at != step) return absl::OkStatus();
      seen_temp = temp;
      if (at == "write") {  // the temp file really is half written here
        EXPECT_GT(fs::file_size(temp), 0u);
      }
      return absl::ResourceExhaustedError(absl::StrCat("injected failure at ", at));
    });
    absl::Status st = store->Save("s", new_state);
    EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted) << step;
    EXPECT_TRUE(Contains(st.message(), step)) << st;
    EXPECT_FALSE(seen_temp.empty()) << step;
    EXPECT_FALSE(fs::exists(seen_temp)) << "temp file left after failure at " << step;
    EXPECT_EQ(ReadFile(store->PathFor("s")), old_bytes) << step;
    EXPECT_EQ(DirEntries(dir), std::vector<std::string>{"s.rwkvstate"}) << step;
  }
  store->SetFaultHookForTesting(nullptr);
  ASSERT_TRUE(store->Save("s", new_state).ok());
  ExpectSameSnapshot(new_state, *store->Load("s"));
}

TEST(DirectoryStateStoreTest, ReadOnlyDirectoryKeepsTheOldFile) {
  if (::geteuid() == 0)
    GTEST_SKIP() << "running as root: permissions are not enforced (fault hook test covers this)";
  const std::string dir = FreshDir("readonly");
  std::unique_ptr<DirectoryStateStore> store = OpenOrDie(dir);
  const SessionSnapshot s = MakeSnapshot(V4Dims(1, 4, 8), 1, true);
  ASSERT_TRUE(store->Save("s", s).ok());
  ASSERT_EQ(::chmod(dir.c_str(), 0555), 0);
  absl::Status st = store->Save("s", MakeSnapshot(V4Dims(1, 4, 8), 2, true));
  EXPECT_EQ(st.code(), absl::StatusCode::kPermissionDenied) << st;
  ExpectSameSnapshot(s, *store->Load("s"));
  ::chmod(dir.c_str(), 0755);
}

TEST(DirectoryStateStoreTest, OpenErrors) {
  const std::string base = FreshDir("open");
  fs::create_directories(base);
  WriteFile(base + "/file", "x");
  absl::StatusOr<std::unique_ptr<DirectoryStateStore>> s = DirectoryStateStore::Open(base + "/file");
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition) << s.status();
  EXPECT_TRUE(Contains(s.status().message(), "not a directory")) << s.status();
  s = DirectoryStateStore::Open(base + "/file/sub");
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(Contains(s.status().message(), base + "/file/sub")) << s.status();
  EXPECT_EQ(DirectoryStateStore::Open("").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(DirectoryStateStoreTest, OpenNonWritableDirectory) {
  if (::geteuid() == 0) GTEST_SKIP() << "running as root: cannot make a directory non-writable";
  const std::string ro = FreshDir("ro");
  fs::create_directories(ro);
  ASSERT_EQ(::chmod(ro.c_str(), 0555), 0);
  absl::StatusOr<std::unique_ptr<DirectoryStateStore>> s = DirectoryStateStore::Open(ro);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kPermissionDenied) << s.status();
  EXPECT_TRUE(Contains(s.status().message(), "not writable")) << s.status();
  ::chmod(ro.c_str(), 0755);
}

TEST(DirectoryStateStoreTest, CorruptFilesOnDisk) {
  const std::string dir = FreshDir("corrupt");
  std::unique_ptr<DirectoryStateStore> store = OpenOrDie(dir);
  const SessionSnapshot s = MakeSnapshot(V7Dims(1, 2, 4, 10), 3, true);
  ASSERT_TRUE(store->Save("s", s).ok());
  const std::string good = ReadFile(store->PathFor("s"));

  std::string flipped = good;
  flipped[good.size() / 2] ^= 0x20;
  WriteFile(store->PathFor("s"), flipped);
  absl::StatusOr<SessionSnapshot> got = store->Load("s");
  EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(got.status().message(), "checksum mismatch (corrupt)")) << got.status();
  EXPECT_TRUE(Contains(got.status().message(), "'s'")) << got.status();

  WriteFile(store->PathFor("s"), good.substr(0, good.size() - 3));
  got = store->Load("s");
  EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(got.status().message(), "truncated")) << got.status();

  WriteFile(store->PathFor("s"), "");
  EXPECT_EQ(store->Load("s").status().code(), absl::StatusCode::kInvalidArgument);
  WriteFile(store->PathFor("s"), "not a state at all");
  EXPECT_TRUE(Contains(store->Load("s").status().message(), "not an RWKV state file"));

  // A 5 GiB (sparse) file is refused from its size, before reading.
  ASSERT_EQ(::truncate(store->PathFor("s").c_str(), off_t{5} << 30), 0);
  got = store->Load("s");
  EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(got.status().message(), "exceeds the limit")) << got.status();
  ASSERT_TRUE(store->Delete("s").ok());
}

TEST(DirectoryStateStoreTest, SaveRejectsInvalidSnapshot) {
  const std::string dir = FreshDir("invalid");
  std::unique_ptr<DirectoryStateStore> store = OpenOrDie(dir);
  SessionSnapshot s = MakeSnapshot(V4Dims(1, 4, 8), 1, true);
  s.state.pop_back();
  EXPECT_EQ(store->Save("s", s).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(DirEntries(dir).empty());
}

// Several threads save one shared name and their own names while a reader
// loads the shared one: every load is a whole, valid snapshot; last writer wins.
TEST(DirectoryStateStoreTest, ConcurrentSaves) {
  const std::string dir = FreshDir("concurrent");
  std::unique_ptr<DirectoryStateStore> store = OpenOrDie(dir);
  constexpr int kThreads = 6, kRounds = 15;
  const StateDims dims = V7Dims(2, 2, 16, 500);
  auto snapshot_for = [&](int t, int r) {
    return MakeSnapshot(dims, static_cast<uint32_t>(t * 1000 + r), true);
  };
  ASSERT_TRUE(store->Save("shared", snapshot_for(0, 0)).ok());

  std::atomic<bool> done{false};
  std::atomic<int> loads{0}, bad_loads{0};
  std::thread reader([&] {
    while (!done) {
      absl::StatusOr<SessionSnapshot> s = store->Load("shared");
      ++loads;
      if (!s.ok()) {
        ++bad_loads;
        continue;
      }
      // The content must be exactly what its writer saved.
      const uint32_t seed = static_cast<uint32_t>(s->tokens_seen >> 33);
      const SessionSnapshot want = MakeSnapshot(dims, seed, true);
      if (s->state != want.state || s->last_logits != want.last_logits) ++bad_loads;
    }
  });
  std::vector<std::thread> writers;
  std::atomic<int> failures{0};
  for (int t = 1; t <= kThreads; ++t) {
    writers.emplace_back([&, t] {
      for (int r = 0; r < kRounds; ++r) {
        if (!store->Save("shared", snapshot_for(t, r)).ok()) ++failures;
        if (!store->Save(absl::StrCat("own-", t), snapshot_for(t, r)).ok()) ++failures;
      }
    });
  }
  for (std::thread& w : writers) w.join();
  done = true;
  reader.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(bad_loads.load(), 0) << "of " << loads.load();
  for (int t = 1; t <= kThreads; ++t) {
    ExpectSameSnapshot(snapshot_for(t, kRounds - 1), *store->Load(absl::StrCat("own-", t)));
  }
  absl::StatusOr<SessionSnapshot> last = store->Load("shared");
  ASSERT_TRUE(last.ok()) << last.status();
  const uint32_t seed = static_cast<uint32_t>(last->tokens_seen >> 33);
  EXPECT_EQ(seed % 1000, kRounds - 1u);  // some writer's final round
  EXPECT_EQ(store->List()->size(), kThreads + 1u);
  for (const std::string& name : DirEntries(dir)) EXPECT_NE(name[0], '.') << name;  // no temp files left
}

}  // namespace
}  // namespace rwkv
