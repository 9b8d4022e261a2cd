// The id-only tokenizer (see the header for why it exists).
#include "server/id_only_tokenizer.h"

#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"

namespace rwkv {
namespace {

class IdOnlyTokenizer final : public Tokenizer {
 public:
  IdOnlyTokenizer(int32_t vocab_size, int32_t end_of_text_id)
      : vocab_size_(vocab_size), end_of_text_id_(end_of_text_id) {}

  std::vector<int32_t> Encode(std::string_view /*bytes*/) const override { return {}; }

  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids) const override {
    for (size_t i = 0; i < ids.size(); ++i) {
      if (ids[i] < 0 || ids[i] >= vocab_size_) {
        return absl::InvalidArgumentError(
            absl::StrCat("token id ", ids[i], " at position ", i, " is out of range [0, ", vocab_size_, ")"));
      }
    }
    return std::string();
  }

  std::string_view TokenBytes(int32_t /*id*/) const override { return {}; }
  int32_t vocab_size() const override { return vocab_size_; }
  int32_t end_of_text_id() const override { return end_of_text_id_; }
  std::string name() const override { return kIdOnlyTokenizerName; }

 private:
  const int32_t vocab_size_;
  const int32_t end_of_text_id_;
};

}  // namespace

std::unique_ptr<Tokenizer> MakeIdOnlyTokenizer(int32_t vocab_size, int32_t end_of_text_id) {
  return std::make_unique<IdOnlyTokenizer>(vocab_size, end_of_text_id);
}

bool HasVocabulary(const Tokenizer& tokenizer) { return tokenizer.name() != kIdOnlyTokenizerName; }

}  // namespace rwkv
