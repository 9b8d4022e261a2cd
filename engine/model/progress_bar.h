// A one-line progress bar on stderr, drawn only when stderr is a terminal.
//
// Why: loading a multi-GB checkpoint takes seconds to minutes; a user at a
// terminal should see it move, while logs and pipes stay clean.
#ifndef RWKV_ENGINE_MODEL_PROGRESS_BAR_H_
#define RWKV_ENGINE_MODEL_PROGRESS_BAR_H_

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace rwkv {

class ProgressBar {
 public:
  ProgressBar(std::string label, int64_t total, bool enabled)
      : label_(std::move(label)), total_(total > 0 ? total : 1), enabled_(enabled && isatty(2) != 0) {}
  ~ProgressBar() { Finish(); }

  void Update(int64_t done) {
    if (!enabled_) return;
    const auto now = std::chrono::steady_clock::now();
    if (done < total_ && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    const int width = 30;
    const double frac = static_cast<double>(done) / static_cast<double>(total_);
    const int filled = static_cast<int>(frac * width + 0.5);
    std::string bar(static_cast<size_t>(filled), '#');
    bar.resize(width, '.');
    std::fprintf(stderr, "\r%s [%s] %5.1f%%", label_.c_str(), bar.c_str(), 100.0 * frac);
    std::fflush(stderr);
    drawn_ = true;
  }

  void Finish() {
    if (enabled_ && drawn_) {
      Update(total_);
      std::fputc('\n', stderr);
      drawn_ = false;
    }
  }

 private:
  std::string label_;
  int64_t total_;
  bool enabled_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point last_{};
};

}  // namespace rwkv

#endif  // RWKV_ENGINE_MODEL_PROGRESS_BAR_H_
