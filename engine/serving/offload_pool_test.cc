// OffloadPool on the CPU backend, wrapped to count host allocations: the
// budget fixes the capacity, blocks are allocated lazily and reused, a block
// is given back exactly once however it is moved, and the pool frees every
// block it allocated (and nothing else) when it goes.
#include "engine/serving/offload_pool.h"

#include <cstring>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "engine/model/cpu_backend.h"
#include "engine/model/forwarding_backend.h"
#include "gtest/gtest.h"

namespace rwkv {
namespace {

class CountingHostBackend final : public ForwardingBackend {
 public:
  CountingHostBackend() : ForwardingBackend(std::make_unique<CpuBackend>(1)) {}
  absl::StatusOr<void*> AllocHost(size_t bytes) override {
    if (fail_next) {
      fail_next = false;
      return absl::ResourceExhaustedError("no host memory (test)");
    }
    auto p = ForwardingBackend::AllocHost(bytes);
    if (p.ok()) {
      live.insert(*p);
      ++allocs;
      last_bytes = bytes;
    }
    return p;
  }
  void FreeHost(void* p) override {
    EXPECT_EQ(live.erase(p), 1u) << "freed a block that is not live";
    ++frees;
    ForwardingBackend::FreeHost(p);
  }
  std::set<void*> live;
  int allocs = 0, frees = 0;
  size_t last_bytes = 0;
  bool fail_next = false;
};

constexpr int64_t kBlock = 1000;  // bytes: 250 floats

TEST(OffloadPoolTest, CapacityIsTheBudgetOverTheBlockSize) {
  CountingHostBackend b;
  OffloadPool pool(b, kBlock, 3 * kBlock + 999);
  EXPECT_EQ(pool.capacity(), 3);
  EXPECT_EQ(pool.block_bytes(), kBlock);
  EXPECT_EQ(pool.budget_bytes(), 3 * kBlock + 999);
  EXPECT_FALSE(pool.pinned());  // the CPU backend's host memory is ordinary memory
  EXPECT_EQ(b.allocs, 0);       // nothing until first needed
  std::vector<OffloadPool::Block> held;
  for (int i = 0; i < 3; ++i) {
    auto block = pool.Acquire();
    ASSERT_TRUE(block.ok()) << block.status();
    ASSERT_FALSE(block->empty());
    std::memset(block->data(), i, kBlock);  // the whole block is usable
    held.push_back(*std::move(block));
  }
  EXPECT_EQ(b.allocs, 3);
  EXPECT_EQ(b.last_bytes, static_cast<size_t>(kBlock));
  EXPECT_EQ(pool.in_use(), 3);
  EXPECT_EQ(pool.bytes_in_use(), 3 * kBlock);
  auto full = pool.Acquire();
  ASSERT_FALSE(full.ok());
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(full.status().message().find("3 states"), std::string::npos) << full.status();
  EXPECT_EQ(b.allocs, 3);  // a full pool does not allocate

  OffloadPool none(b, kBlock, kBlock - 1);  // a budget below one block holds none
  EXPECT_EQ(none.capacity(), 0);
  EXPECT_EQ(none.Acquire().status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(b.allocs, 3);
}

TEST(OffloadPoolTest, GivenBackBlocksAreReusedWithoutAllocating) {
  CountingHostBackend b;
  OffloadPool pool(b, kBlock, 2 * kBlock);
  auto first = pool.Acquire();
  auto second = pool.Acquire();
  ASSERT_TRUE(first.ok() && second.ok());
  float* const p1 = first->data();
  float* const p2 = second->data();
  EXPECT_NE(p1, p2);
  first->Release();
  EXPECT_TRUE(first->empty());
  EXPECT_EQ(pool.in_use(), 1);
  auto again = pool.Acquire();
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->data(), p1);  // the same memory, not a new allocation
  EXPECT_EQ(b.allocs, 2);
  // Any number of rounds reuses the two blocks.
  for (int round = 0; round < 10; ++round) {
    again->Release();
    second->Release();
    EXPECT_EQ(pool.in_use(), 0);
    auto x = pool.Acquire();
    auto y = pool.Acquire();
    ASSERT_TRUE(x.ok() && y.ok());
    EXPECT_EQ(std::set<float*>({x->data(), y->data()}), std::set<float*>({p1, p2}));
    *again = *std::move(x);
    *second = *std::move(y);
  }
  EXPECT_EQ(b.allocs, 2);
  EXPECT_EQ(pool.allocated(), 2);
  EXPECT_EQ(b.frees, 0);  // never freed while the pool lives
}

TEST(OffloadPoolTest, ABlockIsGivenBackExactlyOnce) {
  CountingHostBackend b;
  OffloadPool pool(b, kBlock, 2 * kBlock);
  {
    auto made = pool.Acquire();
    ASSERT_TRUE(made.ok());
    OffloadPool::Block a = *std::move(made);
    EXPECT_TRUE(made->empty());  // moved from
    OffloadPool::Block c(std::move(a));
    EXPECT_TRUE(a.empty());
    EXPECT_EQ(pool.in_use(), 1);
    c.Release();
    c.Release();  // the second is a no-op
    a.Release();  // so is releasing a moved-from handle
    EXPECT_EQ(pool.in_use(), 0);
  }  // destroying the three handles gives nothing back again
  EXPECT_EQ(pool.in_use(), 0);
  // Assigning over a held block gives the old one back first.
  auto x = pool.Acquire();
  auto y = pool.Acquire();
  ASSERT_TRUE(x.ok() && y.ok());
  EXPECT_EQ(pool.in_use(), 2);
  *x = *std::move(y);
  EXPECT_EQ(pool.in_use(), 1);
  *x = OffloadPool::Block();
  EXPECT_EQ(pool.in_use(), 0);
  // Two blocks, never three: the free list holds each block once.
  auto p = pool.Acquire();
  auto q = pool.Acquire();
  ASSERT_TRUE(p.ok() && q.ok());
  EXPECT_NE(p->data(), q->data());
  EXPECT_EQ(pool.Acquire().status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(b.allocs, 2);
}

TEST(OffloadPoolTest, AllocationErrorsArePassedOnAndLeaveThePoolUsable) {
  CountingHostBackend b;
  OffloadPool pool(b, kBlock, 2 * kBlock);
  b.fail_next = true;
  auto failed = pool.Acquire();
  ASSERT_FALSE(failed.ok());
  EXPECT_NE(failed.status().message().find("no host memory (test)"), std::string::npos);
  EXPECT_EQ(pool.in_use(), 0);
  auto ok = pool.Acquire();
  EXPECT_TRUE(ok.ok()) << ok.status();
}

TEST(OffloadPoolTest, DestructionFreesEveryBlockThroughTheBackend) {
  CountingHostBackend b;
  {
    OffloadPool pool(b, kBlock, 4 * kBlock);
    auto x = pool.Acquire();
    auto y = pool.Acquire();
    auto z = pool.Acquire();
    ASSERT_TRUE(x.ok() && y.ok() && z.ok());
    y->Release();  // one on the free list, two in use until the handles go
    EXPECT_EQ(b.live.size(), 3u);
  }  // handles first (declared after the pool), then the pool
  EXPECT_EQ(b.frees, 3);
  EXPECT_TRUE(b.live.empty());
}

}  // namespace
}  // namespace rwkv
