// The programmatic-dependent-launch switches (see
// kernels/kernel_util.cuh, `launch`). A plain header: the CUDA backend, built
// by the host compiler, sets it at Init.
#ifndef RWKV_KERNELS_LAUNCH_H_
#define RWKV_KERNELS_LAUNCH_H_

namespace rwkv::kernels {

void set_programmatic_launch(bool on);
// A per-thread veto for the launches of one pass (the CUDA backend clears it
// for passes of many rows, where the early trigger measured slower; see
// CudaBackend::BeginPass). On by default; programmatic_launch() is the
// process-wide switch and this one together.
void set_pass_programmatic_launch(bool on);
// The per-thread veto alone (to restore it exactly after a stretch of
// launches that clear it).
bool pass_programmatic_launch();
bool programmatic_launch();

}  // namespace rwkv::kernels

#endif  // RWKV_KERNELS_LAUNCH_H_
