// The process-wide programmatic-dependent-launch switch (see
// kernels/kernel_util.cuh, `launch`). A plain header: the CUDA backend, built
// by the host compiler, sets it at Init.
#ifndef RWKV_KERNELS_LAUNCH_H_
#define RWKV_KERNELS_LAUNCH_H_

namespace rwkv::kernels {

void set_programmatic_launch(bool on);
bool programmatic_launch();

}  // namespace rwkv::kernels

#endif  // RWKV_KERNELS_LAUNCH_H_
