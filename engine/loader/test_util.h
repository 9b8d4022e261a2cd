// Helpers shared by the loader tests: temp files, whole-source reads, and
// builders for hand-made (often deliberately broken) model files.
//
// Why builders: hostile inputs are easiest to express as "a valid file, then
// one field changed", so each format has a tiny writer here that mirrors
// what the real producers (torch.save, safetensors, rwkv.cpp) write.
#ifndef RWKV_ENGINE_LOADER_TEST_UTIL_H_
#define RWKV_ENGINE_LOADER_TEST_UTIL_H_

#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/loader/tensor_source.h"
#include "gtest/gtest.h"

namespace rwkv::loader_test {

inline std::string ReadFileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Removes the files WriteTempFile made when the test process exits.
class TempFileRegistry {
 public:
  static TempFileRegistry& Get() {
    static TempFileRegistry registry;
    return registry;
  }
  void Add(const std::string& path) { paths_.push_back(path); }
  ~TempFileRegistry() {
    for (const std::string& p : paths_) ::unlink(p.c_str());
  }

 private:
  std::vector<std::string> paths_;
};

// Writes `bytes` to a fresh file under the gtest temp dir; returns its path.
// Not thread-safe (tests call it from the main thread).
inline std::string WriteTempFile(const std::string& name, const std::string& bytes) {
  std::string dir = ::testing::TempDir();
  if (!dir.empty() && dir.back() != '/') dir += '/';
  // The pid keeps concurrent runs (e.g. two build trees) apart.
  const std::string path = dir + "rwkv_loader_test_" + std::to_string(::getpid()) + "_" + name;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  TempFileRegistry::Get().Add(path);
  return path;
}

// Reads every tensor in every dtype (and probes zero-copy), as a model
// builder would. Returns the first error.
inline absl::Status ReadEveryTensor(const TensorSource& src) {
  std::vector<uint8_t> buf;
  for (const std::string& name : src.Names()) {
    const TensorInfo* info = src.Find(name);
    if (info == nullptr) return absl::InternalError(absl::StrCat("Find failed for listed ", name));
    const size_t n = static_cast<size_t>(info->numel());
    for (DType to : {DType::kF32, info->dtype}) {
      buf.assign(n * DTypeSize(to) + 1, 0);
      if (absl::Status s = src.Read(name, to, buf.data()); !s.ok()) return s;
    }
    if (const float* p = src.TryZeroCopyF32(name); p != nullptr && n > 0) {
      float first;
      std::memcpy(&first, p, sizeof(first));
      (void)first;
    }
  }
  (void)src.Describe();
  (void)src.convention();
  return absl::OkStatus();
}

inline void PutLE(std::string* out, uint64_t v, int bytes) {
  for (int k = 0; k < bytes; ++k) out->push_back(static_cast<char>((v >> (8 * k)) & 0xff));
}

inline void SetLE(std::string* s, size_t at, uint64_t v, int bytes) {
  for (int k = 0; k < bytes; ++k)
    (*s)[at + static_cast<size_t>(k)] = static_cast<char>((v >> (8 * k)) & 0xff);
}

inline std::string F32Bytes(const std::vector<float>& v) {
  std::string s(v.size() * 4, '\0');
  std::memcpy(s.data(), v.data(), s.size());
  return s;
}

// ---- zip (torch.save archives) ----

struct ZipItem {
  std::string name;
  std::string data;
  uint16_t method = 0;
};

// A zip with the given entries; with zip64, every size/offset goes through
// zip64 extra fields and a zip64 end-of-central-directory record.
inline std::string BuildZip(const std::vector<ZipItem>& items, bool zip64 = false) {
  std::string out, cd;
  for (const ZipItem& it : items) {
    const uint64_t local = out.size();
    PutLE(&out, 0x04034b50, 4);
    PutLE(&out, zip64 ? 45 : 20, 2);
    PutLE(&out, 0, 2);  // flags
    PutLE(&out, it.method, 2);
    PutLE(&out, 0, 4);  // time, date
    PutLE(&out, 0, 4);  // crc (not checked)
    PutLE(&out, zip64 ? 0xffffffffu : it.data.size(), 4);
    PutLE(&out, zip64 ? 0xffffffffu : it.data.size(), 4);
    PutLE(&out, it.name.size(), 2);
    PutLE(&out, zip64 ? 20 : 0, 2);
    out += it.name;
    if (zip64) {
      PutLE(&out, 1, 2);
      PutLE(&out, 16, 2);
      PutLE(&out, it.data.size(), 8);
      PutLE(&out, it.data.size(), 8);
    }
    out += it.data;

    PutLE(&cd, 0x02014b50, 4);
    PutLE(&cd, zip64 ? 45 : 20, 2);
    PutLE(&cd, zip64 ? 45 : 20, 2);
    PutLE(&cd, 0, 2);
    PutLE(&cd, it.method, 2);
    PutLE(&cd, 0, 4);
    PutLE(&cd, 0, 4);
    PutLE(&cd, zip64 ? 0xffffffffu : it.data.size(), 4);
    PutLE(&cd, zip64 ? 0xffffffffu : it.data.size(), 4);
    PutLE(&cd, it.name.size(), 2);
    PutLE(&cd, zip64 ? 28 : 0, 2);
    PutLE(&cd, 0, 2);  // comment
    PutLE(&cd, 0, 2);  // disk
    PutLE(&cd, 0, 2);  // internal attrs
    PutLE(&cd, 0, 4);  // external attrs
    PutLE(&cd, zip64 ? 0xffffffffu : local, 4);
    cd += it.name;
    if (zip64) {
      PutLE(&cd, 1, 2);
      PutLE(&cd, 24, 2);
      PutLE(&cd, it.data.size(), 8);
      PutLE(&cd, it.data.size(), 8);
      PutLE(&cd, local, 8);
    }
  }
  const uint64_t cd_offset = out.size();
  out += cd;
  if (zip64) {
    const uint64_t rec = out.size();
    PutLE(&out, 0x06064b50, 4);
    PutLE(&out, 44, 8);
    PutLE(&out, 45, 2);
    PutLE(&out, 45, 2);
    PutLE(&out, 0, 4);
    PutLE(&out, 0, 4);
    PutLE(&out, items.size(), 8);
    PutLE(&out, items.size(), 8);
    PutLE(&out, cd.size(), 8);
    PutLE(&out, cd_offset, 8);
    PutLE(&out, 0x07064b50, 4);
    PutLE(&out, 0, 4);
    PutLE(&out, rec, 8);
    PutLE(&out, 1, 4);
  }
  PutLE(&out, 0x06054b50, 4);
  PutLE(&out, 0, 4);
  PutLE(&out, zip64 ? 0xffff : items.size(), 2);
  PutLE(&out, zip64 ? 0xffff : items.size(), 2);
  PutLE(&out, zip64 ? 0xffffffffu : cd.size(), 4);
  PutLE(&out, zip64 ? 0xffffffffu : cd_offset, 4);
  PutLE(&out, 0, 2);
  return out;
}

// ---- pickle (torch state dicts) ----

namespace pickle {
inline std::string Global(const std::string& module, const std::string& name) {
  return "c" + module + "\n" + name + "\n";
}
inline std::string Str(const std::string& s) {
  std::string out = "X";
  PutLE(&out, s.size(), 4);
  return out + s;
}
inline std::string Int(int64_t v) {
  if (v >= 0 && v < (int64_t{1} << 31)) {
    std::string out = "J";
    PutLE(&out, static_cast<uint64_t>(v), 4);
    return out;
  }
  std::string out = "\x8a\x08";
  PutLE(&out, static_cast<uint64_t>(v), 8);
  return out;
}
inline std::string IntTuple(const std::vector<int64_t>& v) {
  std::string out = "(";
  for (int64_t x : v) out += Int(x);
  return out + "t";
}
}  // namespace pickle

struct FakeTensor {
  std::string name;
  std::string storage = "FloatStorage";  // torch.<storage>
  std::string key;
  int64_t storage_numel = 0;
  int64_t offset = 0;
  std::vector<int64_t> shape, stride;
};

// The pickle torch.save writes for an OrderedDict of these tensors.
inline std::string BuildStateDictPickle(const std::vector<FakeTensor>& tensors) {
  using pickle::Global;
  using pickle::Int;
  using pickle::IntTuple;
  using pickle::Str;
  std::string p = "\x80\x02" + Global("collections", "OrderedDict") + ")R(";
  for (const FakeTensor& t : tensors) {
    p += Str(t.name);
    p += Global("torch._utils", "_rebuild_tensor_v2");
    p += "((" + Str("storage") + Global("torch", t.storage) + Str(t.key) + Str("cpu") +
         Int(t.storage_numel) + "tQ";
    p += Int(t.offset) + IntTuple(t.shape) + IntTuple(t.stride) + "\x89" +
         Global("collections", "OrderedDict") + ")Rt" + "R";
  }
  return p + "u.";
}

// A torch.save-style archive: archive/data.pkl plus archive/data/<key>.
inline std::string BuildPth(const std::string& pkl,
                            const std::vector<std::pair<std::string, std::string>>& storages,
                            bool zip64 = false) {
  std::vector<ZipItem> items;
  items.push_back({"archive/data.pkl", pkl});
  for (const auto& [key, data] : storages) items.push_back({"archive/data/" + key, data});
  items.push_back({"archive/version", "3\n"});
  return BuildZip(items, zip64);
}

// ---- safetensors ----

inline std::string BuildSafetensors(const std::string& header, const std::string& data) {
  std::string out;
  PutLE(&out, header.size(), 8);
  return out + header + data;
}

// ---- rwkv.cpp ggmf ----

struct GgmfTensor {
  std::string name;
  uint32_t type = 0;
  std::vector<uint32_t> dims;  // file order (innermost first)
  std::string data;
};

inline std::string BuildGgmf(uint32_t n_vocab, uint32_t n_embed, uint32_t n_layer,
                             const std::vector<GgmfTensor>& tensors, uint32_t version = 101) {
  std::string out;
  for (uint32_t v : {0x67676d66u, version, n_vocab, n_embed, n_layer, 0u}) PutLE(&out, v, 4);
  for (const GgmfTensor& t : tensors) {
    PutLE(&out, t.dims.size(), 4);
    PutLE(&out, t.name.size(), 4);
    PutLE(&out, t.type, 4);
    for (uint32_t d : t.dims) PutLE(&out, d, 4);
    out += t.name + t.data;
  }
  return out;
}

inline std::vector<float> Iota(size_t n, float start = 0.f) {
  std::vector<float> v(n);
  for (size_t k = 0; k < n; ++k) v[k] = start + static_cast<float>(k);
  return v;
}

}  // namespace rwkv::loader_test

#endif  // RWKV_ENGINE_LOADER_TEST_UTIL_H_
