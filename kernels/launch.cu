// The programmatic-launch switches (kernel_util.cuh, launch.h).
#include <atomic>

#include "kernels/launch.h"

namespace rwkv::kernels {
namespace {
std::atomic<bool> g_programmatic{false};
thread_local bool t_pass_programmatic = true;
}  // namespace

void set_programmatic_launch(bool on) { g_programmatic.store(on, std::memory_order_relaxed); }
void set_pass_programmatic_launch(bool on) { t_pass_programmatic = on; }
bool pass_programmatic_launch() { return t_pass_programmatic; }
bool programmatic_launch() { return t_pass_programmatic && g_programmatic.load(std::memory_order_relaxed); }

}  // namespace rwkv::kernels
