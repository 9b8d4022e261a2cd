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
#ifndef RWKV_ENGINE_MODEL_STATE_LAYOUT_H_
#define RWKV_ENGINE_MODEL_STATE_LAYOUT_H_

#include <cstddef>
#include <cstdint>

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

// Writes a fresh state (zeros; RWKV-4 pp = -1e30) into `state` (layout.total floats).
void InitFreshState(const ModelConfig& c, float* state);

}  // namespace rwkv

#endif  // RWKV_ENGINE_MODEL_STATE_LAYOUT_H_
