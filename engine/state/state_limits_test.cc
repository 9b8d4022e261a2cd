// Tests that hostile size fields are rejected before any large allocation.
//
// Why a separate file: it replaces the global operator new to record the
// largest request made while a check runs, which is the only direct proof
// that a header declaring gigabytes costs no memory. The replacement is a
// plain malloc/free pair, so the rest of the binary is unaffected.
#include <atomic>
#include <cstdlib>
#include <new>
#include <string>
#include <vector>

#include "engine/state/state_file.h"
#include "engine/state/state_test_util.h"
#include "gtest/gtest.h"

namespace {
std::atomic<bool> g_tracking{false};
std::atomic<size_t> g_largest{0};
}  // namespace

void* operator new(size_t n) {
  if (g_tracking.load(std::memory_order_relaxed)) {
    size_t prev = g_largest.load(std::memory_order_relaxed);
    while (n > prev && !g_largest.compare_exchange_weak(prev, n)) {
    }
  }
  void* p = std::malloc(n == 0 ? 1 : n);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }

namespace rwkv {
namespace {

using state_test::MakeSnapshot;
using state_test::PutU32;
using state_test::PutU64;
using state_test::RefreshCrcs;
using state_test::V4Dims;

constexpr size_t kSmall = 1 << 20;  // nothing here may allocate more than this

// Records the largest allocation made while alive.
class AllocationWatch {
 public:
  AllocationWatch() {
    g_largest = 0;
    g_tracking = true;
  }
  ~AllocationWatch() { g_tracking = false; }
  size_t largest() const { return g_largest.load(); }
};

// The 96-byte header of a small real snapshot, plus `extra` bytes of its body.
std::string RealPrefix(size_t extra) {
  return EncodeSnapshot(MakeSnapshot(V4Dims(1, 4, 8), 1, true)).substr(0, kSnapshotHeaderSize + extra);
}

TEST(StateLimitsTest, WatchSeesAllocations) {
  AllocationWatch watch;
  std::vector<char> big(2 * kSmall);
  EXPECT_GE(watch.largest(), big.size());  // the replacement operator new is live
}

TEST(StateLimitsTest, HugeDeclaredSizesFailWithoutAllocating) {
  struct Case {
    const char* what;
    uint32_t layout_version, n_layer, n_embd;
    uint64_t state_floats, state_bytes;
    absl::string_view needle;
  };
  const Case cases[] = {
      // 3 GB declared (valid v4 dims), 100 bytes present.
      {"3 GB declared", 1, 1, 150'000'000, 750'000'000, 3'000'000'000, "truncated"},
      // Over the 4 GiB cap (unknown layout: only the sizes are checked).
      {"over the cap", 2, 1, 4, uint64_t{1} << 40, uint64_t{1} << 42, "limit"},
      // state_floats * 4 overflows 64 bits.
      {"multiply overflow", 2, 1, 4, (uint64_t{1} << 62) + 1, 4, "does not hold"},
      // Consistent sizes near 2^63.
      {"2^63 bytes", 2, 1, 4, (uint64_t{1} << 61) + 10, (uint64_t{1} << 63) + 40, "limit"},
  };
  for (const Case& c : cases) {
    std::string b = RealPrefix(4);
    PutU32(&b, 20, c.layout_version);
    PutU32(&b, 24, c.n_layer);
    PutU32(&b, 28, c.n_embd);
    PutU64(&b, 48, c.state_floats);
    PutU64(&b, 72, c.state_bytes);
    PutU64(&b, 80, 0);
    RefreshCrcs(&b, /*trailer=*/false);
    absl::StatusOr<SessionSnapshot> d;
    {
      AllocationWatch watch;
      d = DecodeSnapshot(b);
      EXPECT_LT(watch.largest(), kSmall) << c.what;
    }
    EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument) << c.what;
    EXPECT_NE(d.status().message().find(c.needle), absl::string_view::npos) << c.what << ": " << d.status();

    // The same header through the assembler: rejected at the header, or
    // accepted there (3 GB is legal) without reserving the declared size.
    AllocationWatch watch;
    SnapshotAssembler a;
    absl::Status st = a.Append(b);
    absl::StatusOr<SessionSnapshot> got = a.Finish();
    EXPECT_LT(watch.largest(), kSmall) << c.what;
    EXPECT_FALSE(got.ok()) << c.what;
    EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument) << c.what;
  }
}

TEST(StateLimitsTest, AssemblerGrowsWithDataNotWithTheDeclaredSize) {
  std::string b = RealPrefix(0);
  PutU32(&b, 28, 150'000'000);
  PutU64(&b, 48, 750'000'000);
  PutU64(&b, 72, 3'000'000'000);
  PutU64(&b, 80, 0);
  RefreshCrcs(&b, /*trailer=*/false);
  AllocationWatch watch;
  SnapshotAssembler a;
  ASSERT_TRUE(a.Append(b).ok());
  EXPECT_EQ(a.declared_size(),
            std::optional<uint64_t>(3'000'000'000 + 100 + std::string("model-fp-0001").size()));
  const std::string chunk(64 * 1024, 'z');
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(a.Append(chunk).ok());
  EXPECT_LT(watch.largest(), kSmall);
  SnapshotAssemblerOptions small;
  small.max_bytes = 1 << 20;
  SnapshotAssembler limited(small);
  absl::Status st = limited.Append(b);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("exceeds the limit"), absl::string_view::npos) << st;
}

}  // namespace
}  // namespace rwkv
