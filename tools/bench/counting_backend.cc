// See counting_backend.h.
#include "tools/bench/counting_backend.h"

#include <algorithm>

namespace rwkv {

void ReluCountingBackend::StartCounting(int n_layer) {
  counting_ = true;
  n_layer_ = std::max(1, n_layer);
  calls_ = 0;
  counts_ = ReluCounts();
  counts_.layer_positive.assign(static_cast<size_t>(n_layer_), 0);
  counts_.layer_total.assign(static_cast<size_t>(n_layer_), 0);
}

ReluCounts ReluCountingBackend::StopCounting() {
  counting_ = false;
  host_.clear();
  host_.shrink_to_fit();
  return std::move(counts_);
}

void ReluCountingBackend::ReluSquare(float* x, int64_t n) {
  if (counting_ && n > 0 && counts_.status.ok()) {
    host_.resize(static_cast<size_t>(n));
    // Download is ordered after every op queued so far, so x holds the
    // FFN key projection that ReluSquare is about to square.
    counts_.status = inner_->Download(x, host_.data(), static_cast<size_t>(n));
    if (counts_.status.ok()) {
      const int64_t pos = std::count_if(host_.begin(), host_.end(), [](float v) { return v > 0.0f; });
      const size_t layer = static_cast<size_t>(calls_ % n_layer_);
      counts_.positive += pos;
      counts_.total += n;
      counts_.layer_positive[layer] += pos;
      counts_.layer_total[layer] += n;
    }
    ++calls_;
  }
  inner_->ReluSquare(x, n);
}

}  // namespace rwkv
