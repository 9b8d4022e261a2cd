// The process-wide programmatic-launch switch (kernel_util.cuh).
#include <atomic>

#include "kernels/launch.h"

namespace rwkv::kernels {
namespace {
std::atomic<bool> g_programmatic{false};
}  // namespace

void set_programmatic_launch(bool on) { g_programmatic.store(on, std::memory_order_relaxed); }
bool programmatic_launch() { return g_programmatic.load(std::memory_order_relaxed); }

}  // namespace rwkv::kernels
