// See offload_pool.h.
#include "engine/serving/offload_pool.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_format.h"

namespace rwkv {

OffloadPool::Block::Block(Block&& other) noexcept
    : pool_(std::exchange(other.pool_, nullptr)), data_(std::exchange(other.data_, nullptr)) {}

OffloadPool::Block& OffloadPool::Block::operator=(Block&& other) noexcept {
  if (this != &other) {
    Release();
    pool_ = std::exchange(other.pool_, nullptr);
    data_ = std::exchange(other.data_, nullptr);
  }
  return *this;
}

void OffloadPool::Block::Release() {
  if (data_ == nullptr) return;
  pool_->GiveBack(std::exchange(data_, nullptr));
  pool_ = nullptr;
}

OffloadPool::OffloadPool(Backend& backend, int64_t block_bytes, int64_t budget_bytes)
    : backend_(backend),
      block_bytes_(std::max<int64_t>(block_bytes, 4)),
      budget_bytes_(std::max<int64_t>(budget_bytes, 0)),
      capacity_(budget_bytes_ / block_bytes_) {}

OffloadPool::~OffloadPool() {
  for (float* p : all_) backend_.FreeHost(p);
}

absl::StatusOr<OffloadPool::Block> OffloadPool::Acquire() {
  if (!free_.empty()) {
    float* p = free_.back();
    free_.pop_back();
    ++in_use_;
    return Block(this, p);
  }
  if (in_use_ >= capacity_) {
    const double budget_mb = static_cast<double>(budget_bytes_) / (1 << 20);
    const double block_mb = static_cast<double>(block_bytes_) / (1 << 20);
    if (capacity_ == 0) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "the host offload memory (%.1f MB) is smaller than one state (%.2f MB)", budget_mb, block_mb));
    }
    return absl::ResourceExhaustedError(absl::StrFormat(
        "the host offload memory is full: its %.1f MB hold %d states of %.2f MB, all in use", budget_mb, capacity_,
        block_mb));
  }
  absl::StatusOr<void*> p = backend_.AllocHost(static_cast<size_t>(block_bytes_));
  if (!p.ok()) return p.status();
  all_.push_back(static_cast<float*>(*p));
  ++in_use_;
  return Block(this, all_.back());
}

void OffloadPool::GiveBack(float* data) {
  free_.push_back(data);
  --in_use_;
}

}  // namespace rwkv
