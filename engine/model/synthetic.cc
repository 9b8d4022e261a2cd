// See synthetic.h. Each tensor has a recipe (normal, uniform or constant,
// plus an optional offset); element i of tensor `name` is a pure function of
// (hash(name), i), so tensors can be generated in parallel and in any order.
#include "engine/model/synthetic.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/model/model_config.h"

namespace rwkv {
namespace {

struct Dims {
  const char* name;
  Arch arch;
  int L, C, vocab, dw, da, dv, dg;
};

constexpr Dims kSizes[] = {
    {"tiny", Arch::kV7, 2, 128, 512, 32, 32, 32, 64},
    {"0.1b", Arch::kV7, 12, 768, 65536, 64, 64, 32, 128},
    {"0.4b", Arch::kV7, 24, 1024, 65536, 64, 64, 32, 128},
    {"1.5b", Arch::kV7, 24, 2048, 65536, 96, 96, 64, 256},
    {"2.9b", Arch::kV7, 32, 2560, 65536, 96, 96, 64, 320},
    {"7.2b", Arch::kV7, 32, 4096, 65536, 128, 128, 96, 480},
    {"v4-tiny", Arch::kV4, 2, 128, 512, 0, 0, 0, 0},
    {"v4-0.1b", Arch::kV4, 12, 768, 65536, 0, 0, 0, 0},
    {"v4-0.4b", Arch::kV4, 24, 1024, 65536, 0, 0, 0, 0},
    {"v4-1.5b", Arch::kV4, 24, 2048, 65536, 0, 0, 0, 0},
    {"v4-2.9b", Arch::kV4, 32, 2560, 65536, 0, 0, 0, 0},
    {"v4-7.2b", Arch::kV4, 32, 4096, 65536, 0, 0, 0, 0},
};

enum class Dist : uint8_t { kNormal, kUniform, kConst };

struct Recipe {
  TensorInfo info;
  Dist dist = Dist::kConst;
  float a = 0, b = 0;   // normal: mean a, std b; uniform: [a, b); const: a
  float row_offset = 0; // added to every element (ffn.key's -theta/(0.1 C))
  uint64_t key = 0;
};

uint64_t Mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t HashName(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ULL;  // FNV-1a, then mixed
  for (unsigned char ch : s) h = (h ^ ch) * 0x100000001b3ULL;
  return Mix64(h);
}

float Generate(const Recipe& r, int64_t i) {
  if (r.dist == Dist::kConst) return r.a + r.row_offset;
  const uint64_t bits = Mix64(r.key + static_cast<uint64_t>(i) * 0x9e3779b97f4a7c15ULL);
  const double u1 = (static_cast<double>(bits >> 40) + 0.5) / 16777216.0;            // (0,1)
  const double u2 = static_cast<double>((bits >> 16) & 0xffffffULL) / 16777216.0;     // [0,1)
  if (r.dist == Dist::kUniform) return static_cast<float>(r.a + (r.b - r.a) * u1) + r.row_offset;
  const double n = std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  return static_cast<float>(r.a + r.b * n) + r.row_offset;
}

class SyntheticSource final : public TensorSource {
 public:
  SyntheticSource(const Dims& d) : dims_(d) { Build(); }

  std::vector<std::string> Names() const override { return order_; }
  const TensorInfo* Find(std::string_view name) const override {
    auto it = recipes_.find(std::string(name));
    return it == recipes_.end() ? nullptr : &it->second.info;
  }
  absl::Status Read(std::string_view name, DType to, void* dst) const override {
    auto it = recipes_.find(std::string(name));
    if (it == recipes_.end()) return absl::NotFoundError(absl::StrCat("no tensor '", std::string(name), "'"));
    const Recipe& r = it->second;
    const int64_t n = r.info.numel();
    const size_t esize = DTypeSize(to);
    auto work = [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        // Round to bf16 first: the weights are bf16, as in released files.
        const float v = Bf16ToF32(F32ToBf16(Generate(r, i)));
        char* out = static_cast<char*>(dst) + static_cast<size_t>(i) * esize;
        if (to == DType::kF32) {
          std::memcpy(out, &v, 4);
        } else {
          const uint16_t h = to == DType::kF16 ? F32ToF16(v) : F32ToBf16(v);
          std::memcpy(out, &h, 2);
        }
      }
    };
    const int threads = static_cast<int>(std::min<int64_t>(std::max(1u, std::thread::hardware_concurrency()),
                                                           std::max<int64_t>(1, n / (1 << 20))));
    if (threads <= 1) {
      work(0, n);
    } else {
      std::vector<std::thread> pool;
      const int64_t chunk = (n + threads - 1) / threads;
      for (int t = 0; t < threads; ++t) {
        const int64_t b = t * chunk, e = std::min(n, b + chunk);
        if (b < e) pool.emplace_back(work, b, e);
      }
      for (auto& t : pool) t.join();
    }
    return absl::OkStatus();
  }
  std::string Describe() const override { return absl::StrCat("synthetic:", dims_.name); }

 private:
  void Add(const std::string& name, std::vector<int64_t> shape, Dist dist, float a, float b = 0,
           float offset = 0) {
    Recipe r;
    r.info.dtype = DType::kBF16;
    r.info.shape = std::move(shape);
    r.dist = dist;
    r.a = a;
    r.b = b;
    r.row_offset = offset;
    r.key = HashName(name);
    order_.push_back(name);
    recipes_.emplace(name, std::move(r));
  }

  void Build() {
    const int64_t C = dims_.C, F = 4 * dims_.C, V = dims_.vocab;
    const float inv_sqrt_c = 1.0f / std::sqrt(static_cast<float>(C));
    const float theta = 0.85f;  // P(N(0, ~1) > theta) ~= 0.20 for the ffn.key rows below
    Add("emb.weight", {V, C}, Dist::kNormal, 0, 0.5f);
    Add("blocks.0.ln0.weight", {C}, Dist::kConst, 1);
    Add("blocks.0.ln0.bias", {C}, Dist::kConst, 0);
    for (int l = 0; l < dims_.L; ++l) {
      const std::string p = absl::StrCat("blocks.", l, ".");
      Add(p + "ln1.weight", {C}, Dist::kConst, 1);
      Add(p + "ln1.bias", {C}, Dist::kConst, 0);
      Add(p + "ln2.weight", {C}, Dist::kConst, 1);
      Add(p + "ln2.bias", {C}, Dist::kConst, 0.1f);
      for (const char* m : {"receptance", "key", "value", "output"}) {
        Add(p + "att." + m + ".weight", {C, C}, Dist::kNormal, 0, inv_sqrt_c);
      }
      Add(p + "ffn.key.weight", {F, C}, Dist::kNormal, 0, std::sqrt(2.0f / C), -theta / (0.1f * C));
      Add(p + "ffn.value.weight", {C, F}, Dist::kNormal, 0, 1.0f / std::sqrt(0.2f * F));
      if (dims_.arch == Arch::kV7) {
        const int64_t N = 64, H = C / N;
        for (const char* m : {"x_r", "x_w", "x_k", "x_v", "x_a", "x_g"}) {
          Add(p + "att." + m, {1, 1, C}, Dist::kUniform, 0, 1);
        }
        Add(p + "att.w0", {1, 1, C}, Dist::kUniform, -6, 0.5f);
        Add(p + "att.a0", {1, 1, C}, Dist::kNormal, -0.19f, 0.5f);
        Add(p + "att.k_k", {1, 1, C}, Dist::kUniform, 0.5f, 1);
        Add(p + "att.k_a", {1, 1, C}, Dist::kUniform, 0.8f, 1.2f);
        Add(p + "att.r_k", {H, N}, Dist::kNormal, -0.04f, 0.1f);
        struct Lora {
          const char* m;
          int d;
        };
        for (Lora lo : {Lora{"w", dims_.dw}, Lora{"a", dims_.da}, Lora{"v", dims_.dv}, Lora{"g", dims_.dg}}) {
          if (lo.m[0] == 'v' && l == 0) continue;  // layer 0 has no value residual, as in releases
          Add(p + "att." + lo.m + "1", {C, lo.d}, Dist::kNormal, 0, inv_sqrt_c);
          Add(p + "att." + lo.m + "2", {lo.d, C}, Dist::kNormal, 0, 1.0f / std::sqrt(static_cast<float>(lo.d)));
        }
        if (l > 0) Add(p + "att.v0", {1, 1, C}, Dist::kNormal, 0.73f, 0.3f);
        Add(p + "att.ln_x.weight", {C}, Dist::kConst, 1);
        Add(p + "att.ln_x.bias", {C}, Dist::kConst, 0);
        Add(p + "ffn.x_k", {1, 1, C}, Dist::kConst, 0.5f);
      } else {
        Add(p + "att.time_decay", {C}, Dist::kUniform, -5, 1.5f);
        Add(p + "att.time_first", {C}, Dist::kUniform, -1.5f, 1.5f);
        for (const char* m : {"att.time_mix_k", "att.time_mix_v", "att.time_mix_r"}) {
          Add(p + m, {1, 1, C}, Dist::kUniform, 0, 1);
        }
        Add(p + "ffn.time_mix_k", {1, 1, C}, Dist::kConst, 0.5f);
        Add(p + "ffn.time_mix_r", {1, 1, C}, Dist::kUniform, 0, 1);
        Add(p + "ffn.receptance.weight", {C, C}, Dist::kNormal, 0, inv_sqrt_c);
      }
    }
    Add("ln_out.weight", {C}, Dist::kConst, 1);
    Add("ln_out.bias", {C}, Dist::kConst, 0);
    Add("head.weight", {V, C}, Dist::kNormal, 0, inv_sqrt_c);
  }

  Dims dims_;
  std::vector<std::string> order_;
  std::map<std::string, Recipe, std::less<>> recipes_;
};

}  // namespace

std::vector<std::string> SyntheticSizes() {
  std::vector<std::string> out;
  for (const Dims& d : kSizes) out.push_back(d.name);
  return out;
}

absl::StatusOr<std::unique_ptr<TensorSource>> OpenSynthetic(const std::string& spec) {
  constexpr std::string_view kPrefix = "synthetic:";
  const std::string size = spec.substr(spec.rfind(':') == std::string::npos ? 0 : kPrefix.size());
  for (const Dims& d : kSizes) {
    if (size == d.name) return std::unique_ptr<TensorSource>(new SyntheticSource(d));
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown synthetic model size '", size,
                                                 "'; known sizes: ", absl::StrJoin(SyntheticSizes(), ", ")));
}

}  // namespace rwkv
