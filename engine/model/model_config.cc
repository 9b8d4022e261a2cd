// Architecture detection: v7 has att.k_k; v6 att.time_maa_x; v5.2 att.gate.weight; v5.1 att.ln_x; otherwise v4, which
// must have att.time_first. Dimensions come from shapes and are
// cross-checked so a foreign or damaged file fails here, not mid-forward.
#include "engine/model/model_config.h"

#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace rwkv {
namespace {

constexpr int64_t kMaxDim = int64_t{1} << 24;  // no real model comes close

absl::StatusOr<std::vector<int64_t>> ShapeOf(const TensorSource& src, const std::string& name) {
  const TensorInfo* info = src.Find(name);
  if (info == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("model file lacks tensor '", name, "'"));
  }
  return info->shape;
}

absl::StatusOr<std::pair<int64_t, int64_t>> Matrix2D(const TensorSource& src, const std::string& name) {
  auto shape = ShapeOf(src, name);
  if (!shape.ok()) return shape.status();
  if (shape->size() != 2 || (*shape)[0] <= 0 || (*shape)[1] <= 0 || (*shape)[0] > kMaxDim ||
      (*shape)[1] > kMaxDim) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", name, "' should be a 2-D matrix, has ", shape->size(), " dims"));
  }
  return std::make_pair((*shape)[0], (*shape)[1]);
}

}  // namespace

int64_t ModelConfig::MatmulParamCount() const {
  const int64_t C = n_embd, F = ffn_dim;
  int64_t per_layer;
  if (arch == Arch::kV7) {
    per_layer = 4 * C * C + 2 * C * F + C * (2 * d_w + 2 * d_a + 2 * d_g) + C * 2 * d_v;
  } else {
    per_layer = 4 * C * C + C * C + 2 * C * F;
  }
  return per_layer * n_layer + int64_t{vocab_size} * C;  // + head
}

int64_t ModelConfig::ParamCount() const { return MatmulParamCount() + int64_t{vocab_size} * n_embd; }

std::string ModelConfig::ToString() const {
  if (arch == Arch::kV7) {
    return absl::StrFormat("%s L=%d C=%d H=%d N=%d ffn=%d vocab=%d lora(w,a,v,g)=%d,%d,%d,%d params=%.3fB",
                           ArchName(), n_layer, n_embd, n_head, head_size, ffn_dim, vocab_size, d_w, d_a,
                           d_v, d_g, ParamCount() / 1e9);
  }
  return absl::StrFormat("%s L=%d C=%d ffn=%d vocab=%d params=%.3fB", ArchName(), n_layer, n_embd, ffn_dim,
                         vocab_size, ParamCount() / 1e9);
}

absl::StatusOr<ModelConfig> DetectModelConfig(const TensorSource& src) {
  const bool is_v7 = src.Find("blocks.0.att.k_k") != nullptr;
  if (src.Find("blocks.0.att.time_maa_x") != nullptr) {
    return absl::UnimplementedError(
        "RWKV-6 models are not supported yet (supported: RWKV-4 and RWKV-7)");
  }
  if (!is_v7 && src.Find("blocks.0.att.gate.weight") != nullptr) {
    return absl::UnimplementedError(
        "RWKV-5 models are not supported yet (supported: RWKV-4 and RWKV-7)");
  }
  if (!is_v7 && src.Find("blocks.0.att.ln_x.weight") != nullptr) {
    return absl::UnimplementedError(
        "RWKV-5 models are not supported yet (supported: RWKV-4 and RWKV-7)");
  }
  ModelConfig c;
  if (is_v7) {
    c.arch = Arch::kV7;
  } else if (src.Find("blocks.0.att.time_first") != nullptr) {
    c.arch = Arch::kV4;
  } else {
    return absl::InvalidArgumentError(
        "not an RWKV checkpoint: found neither blocks.0.att.k_k (RWKV-7) nor blocks.0.att.time_first (RWKV-4)");
  }

  auto emb = Matrix2D(src, "emb.weight");
  if (!emb.ok()) return emb.status();
  c.vocab_size = static_cast<int32_t>(emb->first);
  c.n_embd = static_cast<int32_t>(emb->second);
  while (src.Find(absl::StrCat("blocks.", c.n_layer, ".ln1.weight")) != nullptr) {
    ++c.n_layer;
    if (c.n_layer > 4096) return absl::InvalidArgumentError("implausible layer count (> 4096)");
  }
  if (c.n_layer == 0) return absl::InvalidArgumentError("model file has no blocks (blocks.0.ln1.weight missing)");
  auto fk = Matrix2D(src, "blocks.0.ffn.key.weight");
  if (!fk.ok()) return fk.status();
  c.ffn_dim = static_cast<int32_t>(fk->first);
  if (fk->second != c.n_embd) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "blocks.0.ffn.key.weight has %d inputs but the embedding width is %d", fk->second, c.n_embd));
  }

  if (c.arch == Arch::kV7) {
    auto rk = ShapeOf(src, "blocks.0.att.r_k");
    if (!rk.ok()) return rk.status();
    if (rk->size() != 2 || (*rk)[0] <= 0 || (*rk)[1] <= 0 || (*rk)[0] * (*rk)[1] != c.n_embd) {
      return absl::InvalidArgumentError("blocks.0.att.r_k should have shape (H, N) with H*N = C");
    }
    c.n_head = static_cast<int32_t>((*rk)[0]);
    c.head_size = static_cast<int32_t>((*rk)[1]);
    auto lora = [&](const char* m, int32_t* d) -> absl::Status {
      auto s = Matrix2D(src, absl::StrCat("blocks.0.att.", m, "1"));
      if (!s.ok()) return s.status();
      if (s->first != c.n_embd) {
        return absl::InvalidArgumentError(absl::StrFormat("blocks.0.att.%s1 should be (C=%d, D), is (%d, %d)", m,
                                                          c.n_embd, s->first, s->second));
      }
      *d = static_cast<int32_t>(s->second);
      return absl::OkStatus();
    };
    for (auto [m, d] : {std::pair{"w", &c.d_w}, {"a", &c.d_a}, {"g", &c.d_g}}) {
      if (absl::Status st = lora(m, d); !st.ok()) return st;
    }
    // Layer 0 has no v1/v2 in releases; take Dv from layer 1 when present.
    if (c.n_layer > 1) {
      auto v1 = Matrix2D(src, "blocks.1.att.v1");
      if (!v1.ok()) return v1.status();
      c.d_v = static_cast<int32_t>(v1->second);
    }
  }
  return c;
}

}  // namespace rwkv
