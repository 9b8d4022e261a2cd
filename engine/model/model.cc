// Weight loading (with the load-time transforms the math allows) and the
// forward pass. Load-time transforms, each exact up to fp32 rounding:
//  - ln0 is folded into the embedding table (every use of emb is LN0(emb[t])).
//  - RWKV-7 LoRA matrices (used as x @ w1) are transposed into the [out, in]
//    layout every Matrix uses.
//  - RWKV-4 time_mix m becomes 1 - m, so both architectures share one mix op:
//    x*m + prev*(1-m) == x + (prev - x)*(1-m).
//  - RWKV-4 time_decay becomes -exp(raw) (unless the file already holds it).
#include "engine/model/model.h"

#include <algorithm>
#include <cmath>
#include <thread>
#include <unordered_set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/model/fp16_state_rounding.h"
#include "engine/model/progress_bar.h"
#include "engine/model/synthetic.h"
#include "engine/model/transpose.h"

namespace rwkv {

namespace {

// n rounded up to a multiple of q (q >= 1).
int RoundUpTo(int n, int q) { return q <= 1 ? n : (n + q - 1) / q * q; }
constexpr int kMaxHeadSize = 256;      // the CPU WKV keeps one head row on the stack
}  // namespace

struct Model::Layer {
  float *ln1_w = nullptr, *ln1_b = nullptr, *ln2_w = nullptr, *ln2_b = nullptr;
  // v7
  float* x_mix[6] = {};  // r, w, k, v, a, g
  float *w0 = nullptr, *a0 = nullptr, *v0 = nullptr, *k_k = nullptr, *k_a = nullptr, *r_k = nullptr;
  float *lnx_w = nullptr, *lnx_b = nullptr, *ffn_x_k = nullptr;
  Matrix w1, w2, a1, a2, v1, v2, g1, g2;
  // The same, padded to lora_width_ (Backend::PadsLora): w1p..g1p are
  // [lora_width_, C] (w1..g1 are views of their first rows), w2p..g2p
  // copies [C, lora_width_] with zero columns beyond the rank.
  Matrix w1p, w2p, a1p, a2p, v1p, v2p, g1p, g2p;
  // v4
  float* att_mix[3] = {};  // 1 - time_mix_{k, v, r}
  float *time_first = nullptr, *time_decay = nullptr;
  float* ffn_mix[2] = {};  // 1 - time_mix_{k, r}
  Matrix ffn_r;
  // both
  Matrix att_r, att_k, att_v, att_o, ffn_k, ffn_v;
};

int DefaultThreads() { return std::max(1u, std::thread::hardware_concurrency()); }

Model::~Model() = default;  // the backend frees every allocation it made

absl::StatusOr<std::unique_ptr<Model>> Model::Load(const std::string& spec, std::unique_ptr<Backend> backend,
                                                   const ModelLoadOptions& options) {
  absl::StatusOr<std::unique_ptr<TensorSource>> src =
      absl::StartsWith(spec, "synthetic:") ? OpenSynthetic(spec) : OpenTensorSource(spec);
  if (!src.ok()) return src.status();
  return FromSource(**src, std::move(backend), options);
}

absl::StatusOr<std::unique_ptr<Model>> Model::FromSource(const TensorSource& source,
                                                         std::unique_ptr<Backend> backend,
                                                         const ModelLoadOptions& options) {
  auto config = DetectModelConfig(source);
  if (!config.ok()) return config.status();
  if (config->arch == Arch::kV7 && (config->head_size > kMaxHeadSize || config->head_size <= 0)) {
    return absl::InvalidArgumentError(absl::StrFormat("head size %d is out of range (1..%d)",
                                                      config->head_size, kMaxHeadSize));
  }
  if (options.state_dtype != DType::kF32 && options.state_dtype != DType::kF16) {
    return absl::InvalidArgumentError(absl::StrCat("state dtype must be fp32 or fp16, got ",
                                                   std::string(DTypeName(options.state_dtype))));
  }
  if (options.state_dtype == DType::kF16 && config->arch != Arch::kV7) {
    return absl::InvalidArgumentError(
        "fp16 state is for RWKV-7 models only: an RWKV-4 state is 5 x C floats per layer, with no N x N "
        "matrices to halve, and its running-max recurrence needs the fp32 range; use state dtype fp32");
  }
  std::unique_ptr<Model> m(new Model());
  m->config_ = *config;
  m->layout_ = StateLayout::For(*config);
  m->slot_ = SlotLayout::For(*config, options.state_dtype);
  m->backend_ = std::move(backend);
  if (absl::Status s = m->LoadWeights(source, options); !s.ok()) return s;
  return m;
}

// ---------------------------------------------------------------- loading

namespace {

// Reads tensors from a source into host fp32, checks shapes, uploads.
class WeightReader {
 public:
  WeightReader(const TensorSource& src, Backend& backend, int64_t total, bool progress)
      : src_(src), backend_(backend), bar_("loading weights", total, progress) {}

  // A vector of n elements (any shape with n elements, e.g. (C) or (1,1,C)).
  absl::StatusOr<std::vector<float>> ReadVector(const std::string& name, int64_t n) {
    const TensorInfo* info = src_.Find(name);
    if (info == nullptr) return absl::InvalidArgumentError(absl::StrCat("model file lacks tensor '", name, "'"));
    if (info->numel() != n) {
      return absl::InvalidArgumentError(
          absl::StrFormat("tensor '%s' has %d elements, expected %d", name, info->numel(), n));
    }
    std::vector<float> host(static_cast<size_t>(n));
    if (absl::Status s = src_.Read(name, DType::kF32, host.data()); !s.ok()) return s;
    Advance(n);
    Fingerprint(name, host);
    return host;
  }

  absl::StatusOr<std::vector<float>> ReadMatrix(const std::string& name, int64_t rows, int64_t cols) {
    const TensorInfo* info = src_.Find(name);
    if (info == nullptr) return absl::InvalidArgumentError(absl::StrCat("model file lacks tensor '", name, "'"));
    if (info->shape.size() != 2 || info->shape[0] != rows || info->shape[1] != cols) {
      std::string got;
      for (int64_t d : info->shape) absl::StrAppend(&got, got.empty() ? "" : ", ", d);
      return absl::InvalidArgumentError(
          absl::StrFormat("tensor '%s' has shape (%s), expected (%d, %d)", name, got, rows, cols));
    }
    std::vector<float> host(static_cast<size_t>(rows * cols));
    if (absl::Status s = src_.Read(name, DType::kF32, host.data()); !s.ok()) return s;
    Advance(rows * cols);
    Fingerprint(name, host);
    return host;
  }

  absl::StatusOr<float*> UploadVector(const std::vector<float>& host) {
    auto p = backend_.Alloc(host.size());
    if (!p.ok()) return p.status();
    if (absl::Status s = backend_.Upload(host.data(), *p, host.size()); !s.ok()) return s;
    bytes_ += static_cast<int64_t>(host.size() * sizeof(float));
    return *p;
  }

  absl::StatusOr<float*> Vector(const std::string& name, int64_t n) {
    auto host = ReadVector(name, n);
    if (!host.ok()) return host.status();
    return UploadVector(*host);
  }

  // 1 - v, for RWKV-4 mixes.
  absl::StatusOr<float*> OneMinus(const std::string& name, int64_t n) {
    auto host = ReadVector(name, n);
    if (!host.ok()) return host.status();
    for (float& v : *host) v = 1.0f - v;
    return UploadVector(*host);
  }

  // A [rows, cols] matrix applied as x @ W^T.
  absl::StatusOr<Matrix> Mat(const std::string& name, int64_t rows, int64_t cols) {
    auto host = ReadMatrix(name, rows, cols);
    if (!host.ok()) return host.status();
    return UploadMat(*host, rows, cols);
  }

  // A (in, out) matrix applied as x @ W (LoRA): transposed to [out, in].
  absl::StatusOr<Matrix> MatTransposed(const std::string& name, int64_t in, int64_t out) {
    auto t = ReadTransposed(name, in, out, out);
    if (!t.ok()) return t.status();
    return UploadMat(*t, out, in);
  }

  // The (in, out) matrix `name` on the host as [pad_out, in] (pad_out >= out):
  // transposed, with zero rows beyond out.
  absl::StatusOr<std::vector<float>> ReadTransposed(const std::string& name, int64_t in, int64_t out,
                                                    int64_t pad_out) {
    auto host = ReadMatrix(name, in, out);
    if (!host.ok()) return host.status();
    std::vector<float> t(static_cast<size_t>(pad_out * in), 0.0f);
    Transpose(host->data(), in, out, t.data());
    return t;
  }

  // MatTransposed padded: the [out, in] matrix with zero rows up to pad_out
  // in one upload; *view is its first `out` rows (the matrix itself), *padded
  // all pad_out of them.
  absl::Status MatTransposedPadRows(const std::string& name, int64_t in, int64_t out, int64_t pad_out, Matrix* view,
                                    Matrix* padded) {
    auto t = ReadTransposed(name, in, out, pad_out);
    if (!t.ok()) return t.status();
    auto m = UploadMat(*t, pad_out, in);
    if (!m.ok()) return m.status();
    *padded = *m;
    *view = *m;
    view->rows = static_cast<int32_t>(out);
    return absl::OkStatus();
  }

  // MatTransposed, and a second copy with zero columns up to pad_in.
  absl::Status MatTransposedPadCols(const std::string& name, int64_t in, int64_t out, int64_t pad_in, Matrix* m,
                                    Matrix* padded) {
    auto t = ReadTransposed(name, in, out, out);
    if (!t.ok()) return t.status();
    auto a = UploadMat(*t, out, in);
    if (!a.ok()) return a.status();
    *m = *a;
    std::vector<float> p(static_cast<size_t>(out * pad_in), 0.0f);
    for (int64_t o = 0; o < out; ++o) {
      std::copy(t->begin() + o * in, t->begin() + (o + 1) * in, p.begin() + o * pad_in);
    }
    auto b = UploadMat(p, out, pad_in);
    if (!b.ok()) return b.status();
    *padded = *b;
    return absl::OkStatus();
  }

  // A [rows, cols] matrix whose inputs are mostly zero (after relu²).
  absl::StatusOr<Matrix> SparseInputMat(const std::string& name, int64_t rows, int64_t cols) {
    auto host = ReadMatrix(name, rows, cols);
    if (!host.ok()) return host.status();
    return UploadMat(*host, rows, cols, /*sparse_input=*/true);
  }

  absl::StatusOr<Matrix> UploadMat(const std::vector<float>& host, int64_t rows, int64_t cols,
                                   bool sparse_input = false) {
    const int32_t r = static_cast<int32_t>(rows), c = static_cast<int32_t>(cols);
    auto m = sparse_input ? backend_.UploadSparseInputMatrix(host.data(), r, c)
                          : backend_.UploadMatrix(host.data(), r, c);
    if (!m.ok()) return m.status();
    bytes_ += rows * cols * static_cast<int64_t>(DTypeSize(m->dtype));
    return m;
  }

  int64_t bytes() const { return bytes_; }
  void Finish() { bar_.Finish(); }
  std::string fingerprint() const { return absl::StrFormat("%016x", hash_); }

 private:
  // FNV-1a over the name, the size and up to 4096 evenly spaced values.
  void Fingerprint(const std::string& name, const std::vector<float>& v) {
    auto mix = [&](const void* p, size_t n) {
      const unsigned char* b = static_cast<const unsigned char*>(p);
      for (size_t i = 0; i < n; ++i) hash_ = (hash_ ^ b[i]) * 0x100000001b3ULL;
    };
    mix(name.data(), name.size());
    const uint64_t size = v.size();
    mix(&size, sizeof(size));
    const size_t step = std::max<size_t>(1, v.size() / 4096);
    for (size_t i = 0; i < v.size(); i += step) mix(&v[i], sizeof(float));
  }

  void Advance(int64_t n) {
    done_ += n;
    bar_.Update(done_);
  }
  const TensorSource& src_;
  Backend& backend_;
  ProgressBar bar_;
  int64_t done_ = 0;
  int64_t bytes_ = 0;
  uint64_t hash_ = 0xcbf29ce484222325ULL;
};

// Assigns a StatusOr's value or returns its error from the enclosing function.
#define RWKV_ASSIGN(lhs, expr)            \
  do {                                    \
    auto _v = (expr);                     \
    if (!_v.ok()) return _v.status();     \
    lhs = *std::move(_v);                 \
  } while (0)

}  // namespace

absl::Status Model::LoadWeights(const TensorSource& src, const ModelLoadOptions& options) {
  const ModelConfig& c = config_;
  const int64_t C = c.n_embd, F = c.ffn_dim, V = c.vocab_size;
  WeightReader rd(src, *backend_, c.ParamCount(), options.progress);
  lora_width_ = c.arch == Arch::kV7 && backend_->PadsLora() ? std::max({c.d_w, c.d_a, c.d_g, c.d_v}) : 0;

  // Embedding with ln0 folded in.
  {
    std::vector<float> emb, w, b;
    RWKV_ASSIGN(emb, rd.ReadMatrix("emb.weight", V, C));
    RWKV_ASSIGN(w, rd.ReadVector("blocks.0.ln0.weight", C));
    RWKV_ASSIGN(b, rd.ReadVector("blocks.0.ln0.bias", C));
    for (int64_t t = 0; t < V; ++t) {
      float* row = emb.data() + t * C;
      double mean = 0, var = 0;
      for (int64_t i = 0; i < C; ++i) mean += row[i];
      mean /= C;
      for (int64_t i = 0; i < C; ++i) var += (row[i] - mean) * (row[i] - mean);
      var /= C;
      const double inv = 1.0 / std::sqrt(var + 1e-5);
      for (int64_t i = 0; i < C; ++i) row[i] = static_cast<float>((row[i] - mean) * inv) * w[i] + b[i];
    }
    auto table = backend_->UploadEmbedding(emb.data(), static_cast<int32_t>(V), static_cast<int32_t>(C));
    if (!table.ok()) return table.status();
    emb_ = *table;
  }

  layers_.resize(static_cast<size_t>(c.n_layer));
  for (int l = 0; l < c.n_layer; ++l) {
    Layer& L = layers_[static_cast<size_t>(l)];
    const std::string p = absl::StrCat("blocks.", l, ".");
    RWKV_ASSIGN(L.ln1_w, rd.Vector(p + "ln1.weight", C));
    RWKV_ASSIGN(L.ln1_b, rd.Vector(p + "ln1.bias", C));
    RWKV_ASSIGN(L.ln2_w, rd.Vector(p + "ln2.weight", C));
    RWKV_ASSIGN(L.ln2_b, rd.Vector(p + "ln2.bias", C));
    RWKV_ASSIGN(L.att_r, rd.Mat(p + "att.receptance.weight", C, C));
    RWKV_ASSIGN(L.att_k, rd.Mat(p + "att.key.weight", C, C));
    RWKV_ASSIGN(L.att_v, rd.Mat(p + "att.value.weight", C, C));
    RWKV_ASSIGN(L.att_o, rd.Mat(p + "att.output.weight", C, C));
    RWKV_ASSIGN(L.ffn_k, rd.Mat(p + "ffn.key.weight", F, C));
    RWKV_ASSIGN(L.ffn_v, rd.SparseInputMat(p + "ffn.value.weight", C, F));
    if (c.arch == Arch::kV7) {
      const char* mixes[6] = {"x_r", "x_w", "x_k", "x_v", "x_a", "x_g"};
      for (int j = 0; j < 6; ++j) RWKV_ASSIGN(L.x_mix[j], rd.Vector(p + "att." + mixes[j], C));
      RWKV_ASSIGN(L.w0, rd.Vector(p + "att.w0", C));
      RWKV_ASSIGN(L.a0, rd.Vector(p + "att.a0", C));
      RWKV_ASSIGN(L.k_k, rd.Vector(p + "att.k_k", C));
      RWKV_ASSIGN(L.k_a, rd.Vector(p + "att.k_a", C));
      RWKV_ASSIGN(L.r_k, rd.Vector(p + "att.r_k", C));
      RWKV_ASSIGN(L.lnx_w, rd.Vector(p + "att.ln_x.weight", C));
      RWKV_ASSIGN(L.lnx_b, rd.Vector(p + "att.ln_x.bias", C));
      RWKV_ASSIGN(L.ffn_x_k, rd.Vector(p + "ffn.x_k", C));
      // The LoRA pairs, in the fingerprint's order (it hashes tensors as they
      // are read): w, a, g, then v0 and v. Where the backend pads them
      // (lora_width_), each pair also gets its padded copies.
      struct Lora {
        const char* name;
        int64_t d;
        Matrix *m1, *m1p, *m2, *m2p;
      };
      for (Lora lo : {Lora{"w", c.d_w, &L.w1, &L.w1p, &L.w2, &L.w2p}, Lora{"a", c.d_a, &L.a1, &L.a1p, &L.a2, &L.a2p},
                      Lora{"g", c.d_g, &L.g1, &L.g1p, &L.g2, &L.g2p}, Lora{"v", c.d_v, &L.v1, &L.v1p, &L.v2, &L.v2p}}) {
        if (lo.name[0] == 'v') {
          if (l == 0) continue;  // layer 0's value residual tensors, where present, are unused
          RWKV_ASSIGN(L.v0, rd.Vector(p + "att.v0", C));
        }
        const std::string base = p + "att." + lo.name;
        if (lora_width_ > 0) {
          if (absl::Status s = rd.MatTransposedPadRows(base + "1", C, lo.d, lora_width_, lo.m1, lo.m1p); !s.ok()) {
            return s;
          }
          if (absl::Status s = rd.MatTransposedPadCols(base + "2", lo.d, C, lora_width_, lo.m2, lo.m2p); !s.ok()) {
            return s;
          }
        } else {
          RWKV_ASSIGN(*lo.m1, rd.MatTransposed(base + "1", C, lo.d));
          RWKV_ASSIGN(*lo.m2, rd.MatTransposed(base + "2", lo.d, C));
        }
      }
    } else {
      const char* att_mixes[3] = {"att.time_mix_k", "att.time_mix_v", "att.time_mix_r"};
      for (int j = 0; j < 3; ++j) RWKV_ASSIGN(L.att_mix[j], rd.OneMinus(p + att_mixes[j], C));
      RWKV_ASSIGN(L.ffn_mix[0], rd.OneMinus(p + "ffn.time_mix_k", C));
      RWKV_ASSIGN(L.ffn_mix[1], rd.OneMinus(p + "ffn.time_mix_r", C));
      RWKV_ASSIGN(L.time_first, rd.Vector(p + "att.time_first", C));
      std::vector<float> decay;
      RWKV_ASSIGN(decay, rd.ReadVector(p + "att.time_decay", C));
      if (!src.convention().v4_time_decay_is_neg_exp) {
        for (float& d : decay) d = -std::exp(d);
      }
      RWKV_ASSIGN(L.time_decay, rd.UploadVector(decay));
      RWKV_ASSIGN(L.ffn_r, rd.Mat(p + "ffn.receptance.weight", C, C));
    }
  }
  RWKV_ASSIGN(ln_out_w_, rd.Vector("ln_out.weight", C));
  RWKV_ASSIGN(ln_out_b_, rd.Vector("ln_out.bias", C));
  RWKV_ASSIGN(head_, rd.Mat("head.weight", V, C));
  rd.Finish();
  weight_bytes_ = rd.bytes();
  fingerprint_ = rd.fingerprint();
  return backend_->Sync();
}

// ---------------------------------------------------------------- slots

absl::Status Model::AllocateSlots(int32_t n) {
  if (n <= 0) return absl::InvalidArgumentError(absl::StrCat("slot count must be positive, got ", n));
  if (state_ != nullptr) backend_->Free(state_);
  state_ = nullptr;
  num_slots_ = 0;
  // One slot more than asked, kept fresh and never handed out: ResetSlot
  // copies it within the backend. A new session's slot is then reset at
  // device copy speed instead of by a host-built state uploaded over PCIe
  // (13 MB per 1.5B session: ~3 ms on the engine thread each, which at 64
  // new sessions at once held the first tokens of all of them for ~200 ms).
  RWKV_ASSIGN(state_, backend_->Alloc(static_cast<size_t>(n + 1) * slot_.total));
  num_slots_ = n + 1;
  {
    std::vector<float> fresh(static_cast<size_t>(layout_.total));
    InitFreshState(config_, fresh.data());
    absl::Status st = WriteSlot(n, fresh.data());
    num_slots_ = n;
    if (!st.ok()) return st;
  }
  for (int32_t s = 0; s < n; ++s) {
    if (absl::Status st = ResetSlot(s); !st.ok()) return st;
  }
  return backend_->Sync();
}

namespace {
absl::Status CheckSlot(int32_t slot, int32_t n) {
  if (slot < 0 || slot >= n) {
    return absl::InvalidArgumentError(absl::StrFormat("slot %d out of range [0, %d)", slot, n));
  }
  return absl::OkStatus();
}
}  // namespace

absl::Status Model::ResetSlot(int32_t slot) {
  if (absl::Status s = CheckSlot(slot, num_slots_); !s.ok()) return s;
  // The fresh template is the hidden slot after the last one (AllocateSlots).
  return backend_->CopyFloats(state_ + static_cast<int64_t>(num_slots_) * slot_.total,
                              state_ + static_cast<int64_t>(slot) * slot_.total, static_cast<size_t>(slot_.total));
}

absl::Status Model::ReadSlot(int32_t slot, float* host) const {
  // fp32 slots are the host format: no temporary.
  if (slot_.wkv_dtype == DType::kF32) return ReadSlotNative(slot, host);
  if (absl::Status s = CheckSlot(slot, num_slots_); !s.ok()) return s;
  std::vector<float> native(static_cast<size_t>(slot_.total));
  if (absl::Status s = ReadSlotNative(slot, native.data()); !s.ok()) return s;
  NativeToHostState(native.data(), host);
  return absl::OkStatus();
}

absl::Status Model::WriteSlot(int32_t slot, const float* host) {
  if (slot_.wkv_dtype == DType::kF32) return WriteSlotNative(slot, host);
  if (absl::Status s = CheckSlot(slot, num_slots_); !s.ok()) return s;
  std::vector<float> native(static_cast<size_t>(slot_.total));
  HostToNativeState(host, native.data());
  return WriteSlotNative(slot, native.data());
}

absl::Status Model::ReadSlotNative(int32_t slot, float* native) const {
  if (absl::Status s = CheckSlot(slot, num_slots_); !s.ok()) return s;
  return backend_->Download(state_ + static_cast<int64_t>(slot) * slot_.total, native,
                            static_cast<size_t>(slot_.total));
}

absl::Status Model::WriteSlotNative(int32_t slot, const float* native) {
  if (absl::Status s = CheckSlot(slot, num_slots_); !s.ok()) return s;
  return backend_->Upload(native, state_ + static_cast<int64_t>(slot) * slot_.total,
                          static_cast<size_t>(slot_.total));
}

void Model::NativeToHostState(const float* native, float* host) const {
  SlotToHostState(config_, slot_, native, host);
}

void Model::HostToNativeState(const float* host, float* native) const {
  HostToSlotState(config_, slot_, host, native);
}

absl::Status Model::CopySlot(int32_t from, int32_t to) {
  if (absl::Status s = CheckSlot(from, num_slots_); !s.ok()) return s;
  if (absl::Status s = CheckSlot(to, num_slots_); !s.ok()) return s;
  if (from == to) return absl::OkStatus();
  return backend_->CopyFloats(state_ + static_cast<int64_t>(from) * slot_.total,
                              state_ + static_cast<int64_t>(to) * slot_.total, static_cast<size_t>(slot_.total));
}

void SlotToHostState(const ModelConfig& c, const SlotLayout& slot, const float* native, float* host) {
  const StateLayout h = StateLayout::For(c);
  if (slot.wkv_dtype == DType::kF32) {
    std::copy(native, native + h.total, host);
    return;
  }
  const int64_t C = c.n_embd, matrices = h.per_layer - 2 * C;
  for (int l = 0; l < c.n_layer; ++l) {
    const float* src = native + l * slot.per_layer;
    float* dst = host + l * h.per_layer;
    std::copy(src + slot.att_x_prev, src + slot.att_x_prev + C, dst + h.att_x_prev);
    std::copy(src + slot.ffn_x_prev, src + slot.ffn_x_prev + C, dst + h.ffn_x_prev);
    const uint16_t* wkv = reinterpret_cast<const uint16_t*>(src + slot.wkv);
    for (int64_t i = 0; i < matrices; ++i) dst[h.wkv + i] = F16ToF32(wkv[i]);
  }
}

void HostToSlotState(const ModelConfig& c, const SlotLayout& slot, const float* host, float* native) {
  const StateLayout h = StateLayout::For(c);
  if (slot.wkv_dtype == DType::kF32) {
    std::copy(host, host + h.total, native);
    return;
  }
  std::fill(native, native + slot.total, 0.0f);  // padding too, so equal states are equal bytes
  const int64_t C = c.n_embd, matrices = h.per_layer - 2 * C;
  for (int l = 0; l < c.n_layer; ++l) {
    const float* src = host + l * h.per_layer;
    float* dst = native + l * slot.per_layer;
    std::copy(src + h.att_x_prev, src + h.att_x_prev + C, dst + slot.att_x_prev);
    std::copy(src + h.ffn_x_prev, src + h.ffn_x_prev + C, dst + slot.ffn_x_prev);
    uint16_t* wkv = reinterpret_cast<uint16_t*>(dst + slot.wkv);
    for (int64_t i = 0; i < matrices; ++i) {
      const float x = src[h.wkv + i];
      wkv[i] = F32ToF16(x > kFp16StateMax ? kFp16StateMax : (x < -kFp16StateMax ? -kFp16StateMax : x));
    }
  }
}

void InitFreshState(const ModelConfig& c, float* state) {
  const StateLayout s = StateLayout::For(c);
  std::fill(state, state + s.total, 0.0f);
  if (c.arch == Arch::kV4) {
    for (int l = 0; l < c.n_layer; ++l) {
      float* pp = state + l * s.per_layer + s.wkv + 2 * c.n_embd;
      std::fill(pp, pp + c.n_embd, kV4FreshPp);
    }
  }
}

// ---------------------------------------------------------------- forward

namespace {
// The forward workspace's buffers in EnsureWorkspace's order, as floats each:
// 19 [rows, C] activations (x, xx, d, r, k, v, w, a, g, kk, v_first, y, tmp
// and six mixes), one LoRA buffer per chain (w, a, g, v: the four "in"
// products run in one grouped call), the FFN hidden [rows, F], the logit
// rows' inputs [logit_rows, C] and logits [logit_rows, vocab]. One list, so
// the size reported before allocating (WorkspaceBytes) is what is allocated.
std::vector<size_t> WorkspaceFloats(const ModelConfig& c, int rows, int logit_rows, int lora_width) {
  const size_t n = static_cast<size_t>(rows), nl = static_cast<size_t>(logit_rows);
  std::vector<size_t> sizes(19, n * c.n_embd);
  for (int d : {c.d_w, c.d_a, c.d_g, c.d_v}) sizes.push_back(n * static_cast<size_t>(std::max({d, lora_width, 1})));
  sizes.push_back(n * c.ffn_dim);
  sizes.push_back(nl * c.n_embd);
  sizes.push_back(nl * c.vocab_size);
  return sizes;
}
}  // namespace

int64_t Model::WorkspaceBytes(int rows, int logit_rows) const {
  // A padded pass (RunForward) has up to a granule less one more of each;
  // granules are powers of two that never fall with the count, so no smaller
  // pass pads past these.
  auto padded = [&](int n) { return RoundUpTo(n, backend_->PassRowQuantum(n)); };
  rows = padded(rows);
  logit_rows = padded(logit_rows);
  int64_t floats = 0;
  for (size_t n : WorkspaceFloats(config_, rows, logit_rows, lora_width_)) {
    floats += static_cast<int64_t>(std::max<size_t>(n, 1));
  }
  int64_t scratch = 0;
  if (config_.arch == Arch::kV7) {
    scratch = backend_->Wkv7ScratchBytes(rows, config_.n_embd, config_.head_size, slot_.wkv_dtype);
  }
  return floats * static_cast<int64_t>(sizeof(float)) + scratch;
}

absl::Status Model::EnsureWorkspace(int rows, int logit_rows) {
  if (rows <= ws_rows_ && logit_rows <= ws_logit_rows_) return absl::OkStatus();
  for (float* p : ws_) backend_->Free(p);
  ws_.clear();
  ws_rows_ = ws_logit_rows_ = 0;
  float** bufs[] = {&x_,      &xx_,     &d_,      &r_,      &k_,      &v_,       &w_,       &a_,
                    &g_,      &kk_,     &vfirst_, &y_,      &tmp_,    &mix_[0],  &mix_[1],  &mix_[2],
                    &mix_[3], &mix_[4], &mix_[5], &lora_[0], &lora_[1], &lora_[2], &lora_[3], &ffn_,
                    &logit_in_, &logits_};
  const std::vector<size_t> sizes = WorkspaceFloats(config_, rows, logit_rows, lora_width_);
  if (sizes.size() != std::size(bufs)) return absl::InternalError("workspace buffer list out of step");
  for (size_t i = 0; i < sizes.size(); ++i) {
    auto p = backend_->Alloc(std::max<size_t>(sizes[i], 1));
    if (!p.ok()) return p.status();
    ws_.push_back(*p);
    *bufs[i] = *p;
  }
  ws_rows_ = rows;
  ws_logit_rows_ = logit_rows;
  return absl::OkStatus();
}

namespace {

// A product of a shift-mix (written in the backend's MatMulInputType `t`),
// y = x @ W^T, no input activation.
MatMulJob MixJob(const float* x, const Matrix& w, float* y, DType t) {
  return {x, &w, y, /*accumulate=*/false, InputAct::kNone, t};
}

// The two halves of an RWKV-7 LoRA product, act(x @ W1^T) @ W2^T. With lt
// (Backend::LoraHiddenType) kF32 the "in" product writes fp32 and the "out"
// product applies act as it reads; with a 16-bit lt the "in" product writes
// act of its sums rounded to lt (MatMulJob::y_act), which the "out" product
// reads as it is.
MatMulJob LoraInJob(const float* x, const Matrix& w, float* h, DType t, DType lt, InputAct act) {
  MatMulJob job = MixJob(x, w, h, t);
  if (lt != DType::kF32) {
    job.y_type = lt;
    job.y_act = act;
  }
  return job;
}
MatMulJob LoraOutJob(const float* h, const Matrix& w, float* y, DType lt, InputAct act) {
  return {h, &w, y, /*accumulate=*/false, lt == DType::kF32 ? act : InputAct::kNone, lt};
}

// x += in @ W^T, in holding [n, W.cols] elements of t: fp32, or the 16-bit
// MatMulInputType(n) (the output stage wrote it so; no conversion pass).
void AccumulateProduct(Backend& b, const float* in, int n, const Matrix& w, float* x, DType t) {
  if (t == DType::kF32) {
    b.MatMul(in, n, w, x, true);
    return;
  }
  const MatMulJob job = {in, &w, x, /*accumulate=*/true, InputAct::kNone, t};
  b.GroupedMatMul(n, &job, 1);
}

}  // namespace

// A layer is written on the fused ops (backend.h), so that a GPU runs about a
// dozen launches per layer: the shift-mixes with their LayerNorm, every
// product that reads the mixes in one grouped call, the LoRA "out" products
// (with their tanh/sigmoid on the way in, or already applied by the "in"
// products: LoraInJob) in another (both through V7Projections, which may run
// the LoRA chain beside the r/k/v products), the per-channel prep in
// one, and the FFN's relu² inside its down-projection. A backend that does not
// fuse composes the same ops in the same order as before (see backend.cc).
void Model::LayerV7(int l, int n, const std::vector<Segment>& segs) {
  const ModelConfig& c = config_;
  const Layer& L = layers_[static_cast<size_t>(l)];
  Backend& b = *backend_;
  const int C = c.n_embd, N = c.head_size, nseg = static_cast<int>(segs.size());
  float* layer_state = state_ + l * slot_.per_layer;
  const bool first = l == 0;  // layer 0 stores v_first instead of mixing it in

  // The mixes feed only products: the backend may take them as 16-bit.
  const DType mt = b.MatMulInputType(n);
  b.LayerNormShiftMix(x_, n, C, L.ln1_w, L.ln1_b, segs.data(), nseg,
                      {layer_state + slot_.att_x_prev, slot_.total}, L.x_mix, mix_, 6, xx_, d_, mt);
  float *xr = mix_[0], *xw = mix_[1], *xk = mix_[2], *xv = mix_[3], *xa = mix_[4], *xg = mix_[5];
  float *lw = lora_[0], *la = lora_[1], *lg = lora_[2], *lv = lora_[3];
  // Padded LoRA products (Backend::PaddedLoraPays): one shape per side.
  const bool pad = lora_width_ > 0 && b.PaddedLoraPays(n);
  // The hand-over in 16 bits needs the "in" products' input in that type too
  // (MatMulJob::y_type); LoraHiddenType promises it, this keeps a backend
  // that overrides only one of the two on the fp32 hand-over.
  const DType lt = b.LoraHiddenType(n) == mt ? mt : DType::kF32;
  const MatMulJob main[] = {
      MixJob(xr, L.att_r, r_, mt),
      MixJob(xk, L.att_k, k_, mt),
      MixJob(xv, L.att_v, v_, mt),
  };
  const MatMulJob in[] = {
      LoraInJob(xw, pad ? L.w1p : L.w1, lw, mt, lt, InputAct::kTanh),
      LoraInJob(xa, pad ? L.a1p : L.a1, la, mt, lt, InputAct::kNone),
      LoraInJob(xg, pad ? L.g1p : L.g1, lg, mt, lt, InputAct::kSigmoid),
      LoraInJob(xv, pad ? L.v1p : L.v1, lv, mt, lt, InputAct::kNone),
  };
  const MatMulJob out[] = {
      LoraOutJob(lw, pad ? L.w2p : L.w2, w_, lt, InputAct::kTanh),
      LoraOutJob(la, pad ? L.a2p : L.a2, a_, lt, InputAct::kNone),
      LoraOutJob(lg, pad ? L.g2p : L.g2, g_, lt, InputAct::kSigmoid),
      LoraOutJob(lv, pad ? L.v2p : L.v2, tmp_, lt, InputAct::kNone),
  };
  // The "out" inputs are the "in" outputs; the chain writes nothing the
  // r/k/v products read or write (a backend may run the two side by side).
  b.V7Projections(n, main, 3, in, first ? 3 : 4, out, first ? 3 : 4);
  // The prep, the WKV step and the output stage. The output feeds only the
  // o-projection: with 16-bit product inputs it is written in that type into
  // mix_[0] (free since the products read it; not tmp_, the value gate, which
  // a fused prep reads in the same launch), no conversion pass.
  const StateRef wkv = {layer_state + slot_.wkv, slot_.total, slot_.wkv_dtype};
  float* att_out = mt == DType::kF32 ? y_ : mix_[0];
  const Backend::V7PrepArgs prep = {w_,    L.w0,    a_,    L.a0,    k_, kk_, L.k_k, L.k_a, v_,
                                    vfirst_, first ? nullptr : tmp_, first ? nullptr : L.v0};
  b.V7PrepWkv7WithOutput(segs.data(), nseg, n, C, N, wkv, prep, r_, y_, g_, L.r_k, L.lnx_w, L.lnx_b, att_out, mt);
  AccumulateProduct(b, att_out, n, L.att_o, x_, mt);

  const float* ffn_mix[1] = {L.ffn_x_k};
  b.LayerNormShiftMix(x_, n, C, L.ln2_w, L.ln2_b, segs.data(), nseg,
                      {layer_state + slot_.ffn_x_prev, slot_.total}, ffn_mix, mix_, 1, xx_, d_, mt);
  // The hidden may come out of the key product in 16 bits (FfnHiddenType).
  const DType ht = b.FfnHiddenType(n);
  MatMulJob key = MixJob(mix_[0], L.ffn_k, ffn_, mt);
  key.y_type = ht;
  b.GroupedMatMul(n, &key, 1);
  b.ReluSquareMatMul(ffn_, n, L.ffn_v, x_, true, ht);
}

void Model::LayerV4(int l, int n, const std::vector<Segment>& segs) {
  const ModelConfig& c = config_;
  const Layer& L = layers_[static_cast<size_t>(l)];
  Backend& b = *backend_;
  const int C = c.n_embd, nseg = static_cast<int>(segs.size());
  const int64_t nC = static_cast<int64_t>(n) * C;
  float* layer_state = state_ + l * slot_.per_layer;

  // The mixes feed only products: the backend may take them as 16-bit.
  const DType mt = b.MatMulInputType(n);
  b.LayerNormShiftMix(x_, n, C, L.ln1_w, L.ln1_b, segs.data(), nseg,
                      {layer_state + slot_.att_x_prev, slot_.total}, L.att_mix, mix_, 3, xx_, d_, mt);  // k, v, r
  const MatMulJob att[] = {MixJob(mix_[2], L.att_r, r_, mt), MixJob(mix_[0], L.att_k, k_, mt),
                           MixJob(mix_[1], L.att_v, v_, mt)};
  b.GroupedMatMul(n, att, 3);
  b.Wkv4(segs.data(), nseg, C, {layer_state + slot_.wkv, slot_.total}, L.time_first, L.time_decay, k_, v_,
         y_);
  // sigmoid(r) * wkv feeds only the o-projection: with 16-bit product inputs
  // it is written in that type into tmp_ (free until the FFN), no
  // conversion pass.
  float* att_out = mt == DType::kF32 ? y_ : tmp_;
  b.SigmoidGate(y_, r_, nC, att_out, mt);
  AccumulateProduct(b, att_out, n, L.att_o, x_, mt);

  b.LayerNormShiftMix(x_, n, C, L.ln2_w, L.ln2_b, segs.data(), nseg,
                      {layer_state + slot_.ffn_x_prev, slot_.total}, L.ffn_mix, mix_, 2, xx_, d_, mt);  // k, r
  // The hidden may come out of the key product in 16 bits (FfnHiddenType).
  const DType ht = b.FfnHiddenType(n);
  MatMulJob key = MixJob(mix_[0], L.ffn_k, ffn_, mt);
  key.y_type = ht;
  const MatMulJob ffn[] = {MixJob(mix_[1], L.ffn_r, r_, mt), key};
  b.GroupedMatMul(n, ffn, 2);
  b.ReluSquareMatMul(ffn_, n, L.ffn_v, tmp_, false, ht);
  b.SigmoidMulAdd(x_, r_, tmp_, nC);
}

absl::Status Model::Forward(absl::Span<const ForwardRequest> requests, std::vector<float>* logits) {
  return RunForward(requests, logits);
}

absl::Status Model::ForwardKeepLogits(absl::Span<const ForwardRequest> requests) {
  return RunForward(requests, nullptr);
}

absl::Status Model::SampleKeptLogits(absl::Span<const int32_t> rows, absl::Span<const SampleSpec> specs,
                                     absl::Span<SampledToken> out) {
  if (!backend_->SupportsDeviceSampling()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the ", backend_->name(), " backend cannot sample logits in its own memory"));
  }
  if (rows.size() != specs.size() || rows.size() != out.size()) {
    return absl::InvalidArgumentError("SampleKeptLogits: rows, specs and out differ in size");
  }
  for (int32_t r : rows) {
    if (r < 0 || r >= kept_rows_) {
      return absl::InvalidArgumentError(absl::StrFormat("kept logits row %d out of range [0, %d)", r, kept_rows_));
    }
  }
  if (rows.empty()) return absl::OkStatus();
  return backend_->SampleRows(kept_, config_.vocab_size, rows.data(), specs.data(), static_cast<int>(rows.size()),
                              out.data());
}

absl::Status Model::DownloadKeptLogits(int64_t row, float* host) {
  if (row < 0 || row >= kept_rows_) {
    return absl::InvalidArgumentError(absl::StrFormat("kept logits row %d out of range [0, %d)", row, kept_rows_));
  }
  const int64_t V = config_.vocab_size;
  return backend_->Download(kept_ + row * V, host, static_cast<size_t>(V));
}

absl::Status Model::RunForward(absl::Span<const ForwardRequest> requests, std::vector<float>* host_logits) {
  if (requests.empty()) return absl::InvalidArgumentError("forward needs at least one request");
  std::unordered_set<int32_t> seen;
  int64_t out_rows = 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    const ForwardRequest& r = requests[i];
    if (absl::Status s = CheckSlot(r.slot, num_slots_); !s.ok()) return s;
    if (!seen.insert(r.slot).second) {
      return absl::InvalidArgumentError(absl::StrFormat("slot %d appears twice in one batch", r.slot));
    }
    if (r.tokens.empty()) return absl::InvalidArgumentError(absl::StrFormat("request %d has no tokens", i));
    for (int32_t t : r.tokens) {
      if (t < 0 || t >= config_.vocab_size) {
        return absl::InvalidArgumentError(
            absl::StrFormat("token id %d out of range [0, %d)", t, config_.vocab_size));
      }
    }
    out_rows += r.all_logits ? static_cast<int64_t>(r.tokens.size()) : 1;
  }
  const int64_t V = config_.vocab_size;
  // Whatever was kept is overwritten from here on.
  kept_ = nullptr;
  kept_rows_ = 0;
  if (host_logits != nullptr) host_logits->resize(static_cast<size_t>(out_rows * V));  // every row is written below

  // Passes of at most max_pass_rows_ rows; a long request is split across
  // passes (its state carries over), so results do not depend on the split.
  struct Piece {
    size_t req;
    size_t begin, count;
    int64_t out_row;  // first logits row this piece writes, or -1
    bool all;
  };
  std::vector<int64_t> first_out(requests.size());
  {
    int64_t o = 0;
    for (size_t i = 0; i < requests.size(); ++i) {
      first_out[i] = o;
      o += requests[i].all_logits ? static_cast<int64_t>(requests[i].tokens.size()) : 1;
    }
  }
  size_t req = 0, offset = 0;
  bool first_pass = true;
  bool kept_in_workspace = false;
  while (req < requests.size()) {
    std::vector<Piece> pieces;
    int rows = 0;
    while (req < requests.size() && rows < max_pass_rows_) {
      const ForwardRequest& r = requests[req];
      const size_t take = std::min(r.tokens.size() - offset, static_cast<size_t>(max_pass_rows_ - rows));
      const bool last_piece = offset + take == r.tokens.size();
      Piece p{req, offset, take, -1, r.all_logits};
      if (r.all_logits) {
        p.out_row = first_out[req] + static_cast<int64_t>(offset);
      } else if (last_piece) {
        p.out_row = first_out[req];
      }
      pieces.push_back(p);
      rows += static_cast<int>(take);
      offset += take;
      if (last_piece) {
        ++req;
        offset = 0;
      }
    }
    // Kept logits of a single pass stay where the head wrote them; several
    // passes each copy theirs into one buffer. (The head always writes the
    // workspace, so a pass replayed from a CUDA graph writes where it did when
    // it was captured.)
    const bool single_pass = first_pass && req == requests.size();
    first_pass = false;
    kept_in_workspace = single_pass;
    if (host_logits == nullptr && !single_pass && out_rows > kept_buf_rows_) {
      if (kept_buf_ != nullptr) backend_->Free(kept_buf_);
      kept_buf_ = nullptr;
      kept_buf_rows_ = 0;
      RWKV_ASSIGN(kept_buf_, backend_->Alloc(static_cast<size_t>(out_rows * V)));
      kept_buf_rows_ = out_rows;
    }
    // Build the pass. Segments go longest first (a backend handing long
    // segments to another kernel then sees them at the same indices whatever
    // the mix of decoding rows), and the logit rows keep the request order.
    std::vector<size_t> order(pieces.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return pieces[a].count > pieces[b].count; });
    std::vector<int32_t> tokens;
    std::vector<Segment> segs;
    std::vector<int32_t> piece_row0(pieces.size());
    tokens.reserve(static_cast<size_t>(rows));
    for (size_t i : order) {
      const Piece& p = pieces[i];
      const ForwardRequest& r = requests[p.req];
      piece_row0[i] = static_cast<int32_t>(tokens.size());
      segs.push_back({r.slot, static_cast<int32_t>(tokens.size()), static_cast<int32_t>(p.count)});
      tokens.insert(tokens.end(), r.tokens.begin() + static_cast<int64_t>(p.begin),
                    r.tokens.begin() + static_cast<int64_t>(p.begin + p.count));
    }
    std::vector<int32_t> logit_rows;
    std::vector<int64_t> logit_dest;
    for (size_t i = 0; i < pieces.size(); ++i) {
      const Piece& p = pieces[i];
      const int32_t row0 = piece_row0[i];
      if (p.all) {
        for (size_t t = 0; t < p.count; ++t) {
          logit_rows.push_back(row0 + static_cast<int32_t>(t));
          logit_dest.push_back(p.out_row + static_cast<int64_t>(t));
        }
      } else if (p.out_row >= 0) {
        logit_rows.push_back(row0 + static_cast<int32_t>(p.count) - 1);
        logit_dest.push_back(p.out_row);
      }
    }
    const int nl = static_cast<int>(logit_rows.size());
    if (absl::Status s = RunPass(segs, tokens, rows, logit_rows); !s.ok()) return s;
    Backend& b = *backend_;
    if (nl > 0 && !(host_logits == nullptr && single_pass)) {
      // One download (or copy) per run of consecutive destination rows (the
      // whole pass: a pass's logit rows are consecutive in the output).
      for (int i = 0; i < nl;) {
        int j = i + 1;
        while (j < nl && logit_dest[static_cast<size_t>(j)] == logit_dest[static_cast<size_t>(j - 1)] + 1) ++j;
        const float* src = logits_ + static_cast<int64_t>(i) * V;
        const int64_t dest = logit_dest[static_cast<size_t>(i)] * V;
        const size_t count = static_cast<size_t>(j - i) * static_cast<size_t>(V);
        absl::Status s = host_logits != nullptr ? b.Download(src, host_logits->data() + dest, count)
                                                : b.CopyFloats(src, kept_buf_ + dest, count);
        if (!s.ok()) return s;
        i = j;
      }
    }
    // The kept-logits path leaves its last pass running (ForwardKeepLogits).
    if (host_logits != nullptr || req < requests.size()) {
      if (absl::Status s = b.Sync(); !s.ok()) return s;
    }
  }
  if (host_logits == nullptr) {
    kept_ = kept_in_workspace ? logits_ : kept_buf_;
    kept_rows_ = out_rows;
  }
  return absl::OkStatus();
}

absl::Status Model::RunPass(std::vector<Segment>& segs, std::vector<int32_t>& tokens, int rows,
                            std::vector<int32_t>& logit_rows) {
  // Padding (backend.h, Segment): rows, segments and logit rows rounded up.
  const int nl = static_cast<int>(logit_rows.size());
  const int padded_rows = RoundUpTo(rows, backend_->PassRowQuantum(rows));
  if (padded_rows > rows) {
    segs.push_back({-1, rows, padded_rows - rows});
    tokens.resize(static_cast<size_t>(padded_rows), 0);
  }
  const int nseg = static_cast<int>(segs.size());
  segs.resize(static_cast<size_t>(RoundUpTo(nseg, backend_->PassRowQuantum(nseg))), Segment{-1, padded_rows, 0});
  logit_rows.resize(static_cast<size_t>(RoundUpTo(nl, backend_->PassRowQuantum(nl))), 0);
  const int pass_rows = padded_rows, pass_logits = static_cast<int>(logit_rows.size());
  if (absl::Status s = EnsureWorkspace(pass_rows, std::max(pass_logits, 1)); !s.ok()) return s;
  Backend& b = *backend_;
  const int C = config_.n_embd;
  b.BeginPass(segs.data(), static_cast<int>(segs.size()), tokens.data(), pass_rows, logit_rows.data(), pass_logits);
  b.Embedding(emb_, tokens.data(), pass_rows, x_);
  for (int l = 0; l < config_.n_layer; ++l) {
    if (config_.arch == Arch::kV7) {
      LayerV7(l, pass_rows, segs);
    } else {
      LayerV4(l, pass_rows, segs);
    }
  }
  if (pass_logits > 0) {
    b.GatherRows(x_, logit_rows.data(), pass_logits, C, logit_in_);
    b.LayerNorm(logit_in_, pass_logits, C, ln_out_w_, ln_out_b_, logit_in_);
    b.MatMul(logit_in_, pass_logits, head_, logits_, false);
  }
  b.EndPass();
  return absl::OkStatus();
}

absl::Status Model::SetMaxPassRows(int rows) {
  if (rows < 1 || rows > kMaxPassRowsLimit) {
    return absl::InvalidArgumentError(
        absl::StrFormat("max pass rows %d out of range [1, %d]", rows, kMaxPassRowsLimit));
  }
  max_pass_rows_ = rows;
  return absl::OkStatus();
}

absl::StatusOr<int> Model::WarmUpPasses(int max_batch, int max_rows) {
  if (max_batch < 1 || max_rows < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("WarmUpPasses: max_batch (%d) and max_rows (%d) must be positive", max_batch, max_rows));
  }
  if (!backend_->RecordsPasses()) return 0;
  kept_ = nullptr;  // the passes below overwrite the workspace's logits
  kept_rows_ = 0;
  // The largest workspace first: growing it later frees the buffers the
  // recorded passes use, and the backend then forgets them.
  auto padded = [&](int n) { return RoundUpTo(n, backend_->PassRowQuantum(n)); };
  max_rows = std::min(std::max(max_rows, max_batch), max_pass_rows_);
  if (absl::Status s = EnsureWorkspace(padded(max_rows), padded(max_batch)); !s.ok()) return s;
  std::vector<int> shapes;  // padded batch sizes, largest first
  for (int n = 1; n <= std::min(max_batch, max_pass_rows_); ++n) {
    if (shapes.empty() || shapes.back() != padded(n)) shapes.push_back(padded(n));
  }
  std::reverse(shapes.begin(), shapes.end());
  // Twice: the first run of each shape sizes the backend's scratch buffers
  // (largest first, so none grows afterwards), the second is the one a
  // recording backend keeps.
  for (int round = 0; round < 2; ++round) {
    for (int n : shapes) {
      std::vector<Segment> segs;
      std::vector<int32_t> logit_rows;
      for (int i = 0; i < n; ++i) {
        segs.push_back({-1, i, 1});
        logit_rows.push_back(i);
      }
      std::vector<int32_t> tokens(static_cast<size_t>(n), 0);
      if (absl::Status s = RunPass(segs, tokens, n, logit_rows); !s.ok()) return s;
    }
  }
  if (absl::Status s = backend_->Sync(); !s.ok()) return s;
  return static_cast<int>(shapes.size());
}

}  // namespace rwkv
