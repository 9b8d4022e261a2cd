// Reader for rwkv.cpp model files (the "ggmf" container, versions 100/101).
//
// Why the translation: rwkv.cpp's converter rearranges BlinkDL's tensors
// (dims reversed, v7 token-shift vectors concatenated into `att.x_rwkvag`,
// v7 LoRA and v6 mixing matrices transposed, v4 time_decay pre-transformed).
// The TensorSource contract is BlinkDL's convention, so this reader undoes
// the layout changes on the fly: dims back to PyTorch order, x_rwkvag split
// into six virtual (1,1,C) tensors, transposed matrices presented in their
// .pth shape and read transposed. The one value change it cannot undo
// exactly (v4 -exp(time_decay)) is reported through Convention. Squeezed
// `time_*` shapes are left as they are. Quantized tensors are refused.
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "engine/loader/binary_util.h"
#include "engine/loader/mapped_source.h"
#include "engine/loader/readers.h"

namespace rwkv {
namespace loader_internal {
namespace {

constexpr uint32_t kMagic = 0x67676d66;  // "fmgg" on disk
constexpr uint32_t kMaxFileDims = 4;     // ggml tensors have at most 4 dims
constexpr uint32_t kMaxHeaderValue = 1u << 24;

const char* TypeName(uint32_t code) {
  static constexpr const char* kNames[] = {"FP32", "FP16", "Q4_0", "Q4_1", "Q4_1_O", "Q4_2",
                                           "Q4_3", "Q5_0", "Q5_1", "Q8_0", "Q8_1",   "Q2_K",
                                           "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K"};
  return code < sizeof(kNames) / sizeof(kNames[0]) ? kNames[code] : nullptr;
}

struct RawTensor {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;  // PyTorch order
  uint64_t offset;
};

enum class Arch { kV4, kV51, kV52, kV6, kV7 };

const char* ArchName(Arch a) {
  switch (a) {
    case Arch::kV4:
      return "RWKV-4";
    case Arch::kV51:
      return "RWKV-5.1";
    case Arch::kV52:
      return "RWKV-5.2";
    case Arch::kV6:
      return "RWKV-6";
    case Arch::kV7:
      return "RWKV-7";
  }
  return "?";
}

// The same detection rwkv.cpp's converter uses.
Arch DetectArch(const std::vector<RawTensor>& tensors) {
  bool v7 = false, v6 = false, v52 = false, v51 = false;
  for (const RawTensor& t : tensors) {
    v7 |= absl::StrContains(t.name, ".att.k_k") || absl::StrContains(t.name, ".att.x_rwkvag") ||
          absl::StrContains(t.name, ".att.r_k");
    v6 |= absl::StrContains(t.name, ".att.time_maa_x");
    v52 |= absl::StrContains(t.name, ".att.gate.weight");
    v51 |= absl::StrContains(t.name, ".att.ln_x.weight");
  }
  return v7 ? Arch::kV7 : v6 ? Arch::kV6 : v52 ? Arch::kV52 : v51 ? Arch::kV51 : Arch::kV4;
}

bool EndsWithAny(absl::string_view name, std::initializer_list<absl::string_view> suffixes) {
  for (absl::string_view s : suffixes) {
    if (absl::EndsWith(name, s)) return true;
  }
  return false;
}

std::string ShapeString(const std::vector<int64_t>& v) {
  std::string s = "(";
  for (size_t k = 0; k < v.size(); ++k) absl::StrAppend(&s, k ? ", " : "", v[k]);
  return s + ")";
}

// Reads the tensor table. Stops at the first quantized tensor (UNIMPLEMENTED).
absl::Status ReadTensorTable(const MappedFile& file, std::vector<RawTensor>* out) {
  const std::string& path = file.path();
  ByteCursor cur(file.data(), file.size());
  cur.Skip(24);
  while (!cur.at_end()) {
    const size_t at = cur.pos();
    uint32_t dim_count, key_length, type;
    if (!cur.ReadU32(&dim_count) || !cur.ReadU32(&key_length) || !cur.ReadU32(&type)) {
      return Malformed(path, absl::StrCat("truncated tensor header at offset ", at));
    }
    if (dim_count == 0 || dim_count > kMaxFileDims) {
      return Malformed(path, absl::StrCat("tensor header at offset ", at, " has dim_count ",
                                          dim_count, " (expected 1 to ", kMaxFileDims, ")"));
    }
    if (key_length == 0 || key_length > kMaxNameLength) {
      return Malformed(path, absl::StrCat("tensor header at offset ", at, " has key_length ",
                                          key_length, " (expected 1 to ", kMaxNameLength, ")"));
    }
    uint32_t dims[kMaxFileDims];
    for (uint32_t k = 0; k < dim_count; ++k) {
      if (!cur.ReadU32(&dims[k]))
        return Malformed(path, absl::StrCat("truncated tensor header at offset ", at));
    }
    std::string_view name_view;
    if (!cur.ReadString(key_length, &name_view)) {
      return Malformed(path, absl::StrCat("truncated tensor name at offset ", at));
    }
    const std::string name(name_view);
    DType dtype;
    if (type == 0) {
      dtype = DType::kF32;
    } else if (type == 1) {
      dtype = DType::kF16;
    } else if (TypeName(type) != nullptr) {
      return absl::UnimplementedError(absl::StrCat(
          path, ": tensor '", name, "' has quantized type ", TypeName(type),
          "; quantized rwkv.cpp files are not supported (convert the model to FP16 or FP32)"));
    } else {
      return Malformed(path, absl::StrCat("tensor '", name, "' has unknown data type ", type));
    }
    RawTensor t{name, dtype, {}, 0};
    uint64_t numel = 1;
    for (uint32_t k = dim_count; k-- > 0;) {  // reversed: PyTorch order
      if (dims[k] == 0)
        return Malformed(path, absl::StrCat("tensor '", name, "' has a zero dimension"));
      if (!CheckedMul(numel, dims[k], &numel) || numel > (uint64_t{1} << 60)) {
        return Malformed(path, absl::StrCat("tensor '", name, "' is impossibly large"));
      }
      t.shape.push_back(dims[k]);
    }
    const uint64_t bytes = numel * DTypeSize(dtype);
    if (bytes > cur.remaining()) {
      return Malformed(path, absl::StrCat("tensor '", name, "' (", bytes, " bytes at offset ",
                                          cur.pos(), ") extends past the end of the file (",
                                          file.size(), " bytes; truncated?)"));
    }
    t.offset = cur.pos();
    cur.Skip(bytes);
    if (out->size() >= kMaxTensors) return Malformed(path, "too many tensors");
    out->push_back(std::move(t));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<TensorSource>> OpenRwkvCppFile(std::unique_ptr<MappedFile> file) {
  const std::string path = file->path();
  if (file->size() < 24) return Malformed(path, "too small for an rwkv.cpp header (truncated?)");
  const uint8_t* h = file->data();
  if (LoadLE32(h) != kMagic) return Malformed(path, "not an rwkv.cpp file (bad magic)");
  const uint32_t version = LoadLE32(h + 4);
  const uint32_t n_vocab = LoadLE32(h + 8);
  const uint32_t n_embed = LoadLE32(h + 12);
  const uint32_t n_layer = LoadLE32(h + 16);
  if (version != 100 && version != 101) {
    return Malformed(path, absl::StrCat("unsupported rwkv.cpp file version ", version,
                                        " (expected 100 or 101)"));
  }
  if (n_vocab == 0 || n_embed == 0 || n_layer == 0 || n_vocab > kMaxHeaderValue ||
      n_embed > kMaxHeaderValue || n_layer > kMaxHeaderValue) {
    return Malformed(path, absl::StrCat("implausible header: n_vocab ", n_vocab, ", n_embed ",
                                        n_embed, ", n_layer ", n_layer));
  }
  std::vector<RawTensor> raw;
  if (absl::Status s = ReadTensorTable(*file, &raw); !s.ok()) return s;
  const Arch arch = DetectArch(raw);

  // The header must agree with the tensors.
  std::set<uint64_t> blocks;
  bool have_emb = false;
  for (const RawTensor& t : raw) {
    if (t.name == "emb.weight" || t.name == "head.weight") {
      have_emb |= t.name == "emb.weight";
      if (t.shape != std::vector<int64_t>{n_vocab, n_embed}) {
        return Malformed(
            path, absl::StrCat(t.name, " has shape ", ShapeString(t.shape),
                               " but the header says n_vocab ", n_vocab, ", n_embed ", n_embed));
      }
    }
    if (absl::StartsWith(t.name, "blocks.")) {
      const std::string_view rest = std::string_view(t.name).substr(7);
      uint64_t id;
      if (!absl::SimpleAtoi(Av(rest.substr(0, rest.find('.'))), &id)) {
        return Malformed(path, absl::StrCat("bad block tensor name '", t.name, "'"));
      }
      blocks.insert(id);
    }
  }
  if (!have_emb) return Malformed(path, "no emb.weight tensor (truncated?)");
  if (blocks.size() != n_layer || *blocks.rbegin() != n_layer - 1) {
    return Malformed(path, absl::StrCat("the header says n_layer ", n_layer, " but the file has ",
                                        blocks.size(), " blocks (truncated?)"));
  }

  auto source = std::make_unique<MappedTensorSource>(
      std::move(file), absl::StrCat("rwkv.cpp ggmf v", version, " ", ArchName(arch)));
  Convention convention;
  convention.v4_time_decay_is_neg_exp = arch == Arch::kV4;
  source->set_convention(convention);

  for (RawTensor& t : raw) {
    const size_t es = DTypeSize(t.dtype);
    if (arch == Arch::kV7 && absl::EndsWith(t.name, ".att.x_rwkvag")) {
      if (t.shape.size() != 3 || t.shape[0] != 6 || t.shape[1] != 1) {
        return Malformed(path, absl::StrCat("tensor '", t.name, "' has shape ",
                                            ShapeString(t.shape), ", expected (6, 1, C)"));
      }
      const int64_t c = t.shape[2];
      const std::string prefix = t.name.substr(0, t.name.size() - 8);  // "blocks.N.att."
      static constexpr const char* kParts[] = {"x_r", "x_w", "x_k", "x_v", "x_a", "x_g"};
      for (int k = 0; k < 6; ++k) {
        MappedTensor part;
        part.name = prefix + kParts[k];
        part.info.dtype = t.dtype;
        part.info.shape = {1, 1, c};
        part.offset = t.offset + static_cast<uint64_t>(k) * static_cast<uint64_t>(c) * es;
        if (absl::Status s = source->Add(std::move(part)); !s.ok()) return s;
      }
      continue;
    }
    MappedTensor mt;
    mt.info.dtype = t.dtype;
    mt.offset = t.offset;
    const bool transposed_matrix =
        (arch == Arch::kV7 && EndsWithAny(t.name, {".att.w1", ".att.w2", ".att.a1", ".att.a2",
                                                   ".att.v1", ".att.v2", ".att.g1", ".att.g2"})) ||
        (arch == Arch::kV6 &&
         EndsWithAny(t.name, {".att.time_maa_w1", ".att.time_decay_w1", ".att.time_decay_w2"}));
    const bool transposed_batch = arch == Arch::kV6 && absl::EndsWith(t.name, ".att.time_maa_w2");
    if (transposed_matrix || transposed_batch) {
      if (t.shape.size() != (transposed_matrix ? 2u : 3u)) {
        return Malformed(path, absl::StrCat("tensor '", t.name, "' has unexpected shape ",
                                            ShapeString(t.shape)));
      }
      std::swap(t.shape[t.shape.size() - 1], t.shape[t.shape.size() - 2]);
      mt.layout = Layout::kTransposedLast2;
    }
    mt.name = std::move(t.name);
    mt.info.shape = std::move(t.shape);
    if (absl::Status s = source->Add(std::move(mt)); !s.ok()) return s;
  }
  return std::unique_ptr<TensorSource>(std::move(source));
}

}  // namespace loader_internal

absl::StatusOr<std::unique_ptr<TensorSource>> OpenRwkvCppBin(const std::string& path) {
  absl::StatusOr<std::unique_ptr<MappedFile>> file = MappedFile::Open(path);
  if (!file.ok()) return file.status();
  return loader_internal::OpenRwkvCppFile(std::move(*file));
}

}  // namespace rwkv
