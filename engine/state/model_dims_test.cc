// Tests of the ModelConfig -> StateDims bridge (model_dims.h).
//
// Why: rwkv_state duplicates the layout-1 size formula (StateFloatsFor) to
// stay independent of rwkv_model; this pins it to StateLayout::For so the two
// cannot drift apart. Header-only: the test does not link rwkv_model.
#include "engine/state/model_dims.h"

#include "engine/model/model_config.h"
#include "engine/model/state_layout.h"
#include "gtest/gtest.h"

namespace rwkv {
namespace {

TEST(ModelDimsTest, MatchesStateLayout) {
  ModelConfig v7;
  v7.arch = Arch::kV7;
  v7.n_layer = 12;
  v7.n_embd = 768;
  v7.n_head = 12;
  v7.head_size = 64;
  v7.vocab_size = 65536;
  ModelConfig v4;
  v4.arch = Arch::kV4;
  v4.n_layer = 24;
  v4.n_embd = 1024;
  v4.vocab_size = 50277;
  for (const ModelConfig& c : {v7, v4}) {
    const StateDims d = StateDimsFor(c);
    EXPECT_EQ(d.state_floats, static_cast<uint64_t>(StateLayout::For(c).total));
    EXPECT_EQ(StateFloatsFor(d), d.state_floats) << d.ToString();
    EXPECT_EQ(d.layout_version, kStateLayoutVersion);
    EXPECT_EQ(d.arch, c.arch == Arch::kV7 ? 7u : 4u);
  }
}

}  // namespace
}  // namespace rwkv
