// The host blocks that idle sessions' states are offloaded to.
//
// Why: when the slot pool is full, the engine moves the least recently used
// idle session out of its slot. Its state goes to one block of host memory
// holding the slot's native bytes (Model::ReadSlotNative, no conversion, so
// an fp16-state session takes half the bytes of an fp32 one). The blocks come
// from Backend::AllocHost: page-locked on a GPU, so the copies to and from a
// slot are DMA transfers. Page-locked memory is slow to allocate and freeing
// it may synchronize the device, so blocks are allocated on first need only
// (a server that never offloads pins nothing), never freed while the pool
// lives, and reused from a free list. The budget (EngineConfig::
// host_offload_bytes, --offload-memory-mb) fixes the block count, so the
// memory held never exceeds it and is, at any time, the peak number of
// sessions offloaded at once times the block size.
//
// Not thread-safe: the engine thread changes the pool (it is the thread that
// drives the backend), under the engine's lock, which other threads take to
// read the counts.
#ifndef RWKV_ENGINE_SERVING_OFFLOAD_POOL_H_
#define RWKV_ENGINE_SERVING_OFFLOAD_POOL_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/backend.h"

namespace rwkv {

class OffloadPool {
 public:
  // One block, given back to its pool when released or destroyed. Move-only,
  // so a block is given back exactly once. Must not outlive its pool.
  class Block {
   public:
    Block() = default;
    Block(Block&& other) noexcept;
    Block& operator=(Block&& other) noexcept;
    Block(const Block&) = delete;
    Block& operator=(const Block&) = delete;
    ~Block() { Release(); }

    // block_bytes() / 4 floats: a slot's native layout (SlotLayout).
    float* data() const { return data_; }
    bool empty() const { return data_ == nullptr; }
    // Gives the block back to the pool's free list; a no-op when empty.
    void Release();

   private:
    friend class OffloadPool;
    Block(OffloadPool* pool, float* data) : pool_(pool), data_(data) {}
    OffloadPool* pool_ = nullptr;
    float* data_ = nullptr;
  };

  // Blocks of `block_bytes` (> 0, a multiple of 4: Model::slot_bytes()) from
  // `backend`, at most budget_bytes / block_bytes of them (0 with a budget
  // below one block: every offload then goes to the store). The backend must
  // outlive the pool.
  OffloadPool(Backend& backend, int64_t block_bytes, int64_t budget_bytes);
  // Frees every block through the backend. Every Block must have been given
  // back (EngineImpl's sessions go before its pool, the pool before the model).
  ~OffloadPool();
  OffloadPool(const OffloadPool&) = delete;
  OffloadPool& operator=(const OffloadPool&) = delete;

  // A block from the free list, or a newly allocated one below capacity().
  // RESOURCE_EXHAUSTED when all capacity() blocks are in use (the message
  // says how many of what size the budget holds), or the allocation's error.
  absl::StatusOr<Block> Acquire();

  int64_t block_bytes() const { return block_bytes_; }
  int64_t budget_bytes() const { return budget_bytes_; }
  int64_t capacity() const { return capacity_; }    // blocks the budget holds
  int64_t in_use() const { return in_use_; }        // blocks held by sessions
  int64_t allocated() const { return static_cast<int64_t>(all_.size()); }  // in use + free
  int64_t bytes_in_use() const { return in_use_ * block_bytes_; }
  bool pinned() const { return backend_.HostMemoryPinned(); }

 private:
  void GiveBack(float* data);

  Backend& backend_;
  const int64_t block_bytes_;
  const int64_t budget_bytes_;
  const int64_t capacity_;
  std::vector<float*> all_;   // every block allocated, for the destructor
  std::vector<float*> free_;  // allocated and not in use
  int64_t in_use_ = 0;
};

}  // namespace rwkv

#endif  // RWKV_ENGINE_SERVING_OFFLOAD_POOL_H_
