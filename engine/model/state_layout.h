// The flat, versioned layout of one session's recurrent state.
//
// Why: a session's whole context is this block of floats. It is saved to
// disk, moved between machines and between the CPU and GPU backends, so its
// layout is fixed and documented here, once:
//
//   fp32, little-endian, layer after layer (l = 0 .. L-1):
//   RWKV-7 layer:  att_x_prev[C] | ffn_x_prev[C] | wkv[H][N][N]   (wkv[h][value i][key j])
//   RWKV-4 layer:  att_x_prev[C] | ffn_x_prev[C] | aa[C] | bb[C] | pp[C]
//
// att_x_prev / ffn_x_prev are the LayerNorm outputs (ln1 / ln2) of the
// previous token. A fresh state is all zeros, except RWKV-4's pp = -1e30.
// kStateLayoutVersion changes whenever this layout does.
//
// That fp32 layout is the host format: what Model::ReadSlot / WriteSlot,
// state files and the engine's offload speak, whatever the slots hold. How a
// model keeps the state in its backend's slot pool is SlotLayout (below): the
// same, or with RWKV-7's wkv matrices in fp16.
#ifndef RWKV_ENGINE_MODEL_STATE_LAYOUT_H_
#define RWKV_ENGINE_MODEL_STATE_LAYOUT_H_

#include <cstddef>
#include <cstdint>

#include "engine/loader/dtype.h"
#include "engine/model/model_config.h"

namespace rwkv {

inline constexpr uint32_t kStateLayoutVersion = 1;
inline constexpr float kV4FreshPp = -1e30f;

struct StateLayout {
  int64_t per_layer = 0;   // floats per layer
  int64_t att_x_prev = 0;  // offsets within a layer
  int64_t ffn_x_prev = 0;
  int64_t wkv = 0;         // v7: H*N*N floats; v4: aa, then bb at +C, pp at +2C
  int64_t total = 0;       // floats per session

  static StateLayout For(const ModelConfig& c) {
    StateLayout s;
    const int64_t C = c.n_embd;
    s.att_x_prev = 0;
    s.ffn_x_prev = C;
    s.wkv = 2 * C;
    s.per_layer = c.arch == Arch::kV7 ? 2 * C + int64_t{c.n_head} * c.head_size * c.head_size : 5 * C;
    s.total = s.per_layer * c.n_layer;
    return s;
  }
  size_t bytes() const { return static_cast<size_t>(total) * sizeof(float); }
};

// One session's state as a backend slot holds it (the "native" layout).
//
// Offsets and sizes count 4-byte units, because the slot pool is allocated
// in floats and a StateRef's slot_stride counts floats.
//  - wkv_dtype kF32 (default): exactly StateLayout, so a slot is the host
//    format byte for byte.
//  - wkv_dtype kF16 (RWKV-7 only): per layer att_x_prev[C] | ffn_x_prev[C]
//    (fp32) | wkv[H][N][N] (fp16, two per unit). The token-shift vectors stay
//    fp32: they are 2C of the layer's 2C + H*N*N values (3% at N = 64), and
//    keeping them exact leaves the shift ops alone. The wkv offset and the
//    layer size are rounded up to 4 units, so with a 16-byte aligned pool
//    every head's block is 16-byte aligned for the kernel's vector loads.
struct SlotLayout {
  DType wkv_dtype = DType::kF32;
  int64_t per_layer = 0;   // units per layer
  int64_t att_x_prev = 0;  // offsets within a layer, in units
  int64_t ffn_x_prev = 0;
  int64_t wkv = 0;
  int64_t total = 0;       // units per slot (the slot stride)

  // Precondition: wkv_dtype is kF32, or kF16 with an RWKV-7 config.
  static SlotLayout For(const ModelConfig& c, DType wkv_dtype) {
    const StateLayout h = StateLayout::For(c);
    SlotLayout s;
    s.wkv_dtype = wkv_dtype;
    if (wkv_dtype == DType::kF32) {
      s.per_layer = h.per_layer;
      s.att_x_prev = h.att_x_prev;
      s.ffn_x_prev = h.ffn_x_prev;
      s.wkv = h.wkv;
      s.total = h.total;
      return s;
    }
    const auto round4 = [](int64_t n) { return (n + 3) / 4 * 4; };
    const int64_t C = c.n_embd, matrices = int64_t{c.n_head} * c.head_size * c.head_size;
    s.att_x_prev = 0;
    s.ffn_x_prev = C;
    s.wkv = round4(2 * C);
    s.per_layer = s.wkv + round4((matrices + 1) / 2);
    s.total = s.per_layer * c.n_layer;
    return s;
  }
  size_t bytes() const { return static_cast<size_t>(total) * sizeof(float); }
};

// Converts one session's state between the host format (StateLayout, fp32)
// and a slot's native layout. fp16 values are rounded to nearest even and
// saturated at +-65504 (the bound the kernels saturate at); fp16 -> fp32 is
// exact, so native -> host -> native gives back the same bytes.
void SlotToHostState(const ModelConfig& c, const SlotLayout& slot, const float* native, float* host);
void HostToSlotState(const ModelConfig& c, const SlotLayout& slot, const float* host, float* native);

// Writes a fresh state (zeros; RWKV-4 pp = -1e30) into `state` (layout.total floats).
void InitFreshState(const ModelConfig& c, float* state);

}  // namespace rwkv

#endif  // RWKV_ENGINE_MODEL_STATE_LAYOUT_H_
