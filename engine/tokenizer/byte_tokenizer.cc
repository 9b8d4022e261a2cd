// The byte-level tokenizer: id = byte value.
//
// Why: the tiny rwkv.cpp test models are trained on raw bytes (vocabulary 256),
// so the engine needs a tokenizer with the same interface as World whose ids
// are simply the bytes. It has no end-of-text token.
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "engine/tokenizer/tokenizer.h"

namespace rwkv {
namespace {

constexpr int32_t kByteVocabSize = 256;

// All 256 byte values in order, so TokenBytes can return a view into it.
constexpr std::array<char, kByteVocabSize> MakeByteTable() {
  std::array<char, kByteVocabSize> table{};
  for (int i = 0; i < kByteVocabSize; ++i) table[i] = static_cast<char>(i);
  return table;
}

constexpr std::array<char, kByteVocabSize> kByteTable = MakeByteTable();

class ByteTokenizer final : public Tokenizer {
 public:
  std::vector<int32_t> Encode(std::string_view bytes) const override {
    std::vector<int32_t> ids;
    ids.reserve(bytes.size());
    for (char c : bytes) ids.push_back(static_cast<int32_t>(static_cast<unsigned char>(c)));
    return ids;
  }

  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids) const override {
    std::string out;
    out.reserve(ids.size());
    for (size_t i = 0; i < ids.size(); ++i) {
      const int32_t id = ids[i];
      if (id < 0 || id >= kByteVocabSize) {
        return absl::InvalidArgumentError(absl::StrCat("byte tokenizer: token id ", id, " at position ", i,
                                                       " is out of range [0, ", kByteVocabSize, ")"));
      }
      out.push_back(kByteTable[id]);
    }
    return out;
  }

  std::string_view TokenBytes(int32_t id) const override {
    if (id < 0 || id >= kByteVocabSize) return {};
    return std::string_view(&kByteTable[id], 1);
  }

  int32_t vocab_size() const override { return kByteVocabSize; }
  int32_t end_of_text_id() const override { return -1; }
  std::string name() const override { return "byte"; }
};

}  // namespace

std::unique_ptr<Tokenizer> MakeByteTokenizer() { return std::make_unique<ByteTokenizer>(); }

}  // namespace rwkv
