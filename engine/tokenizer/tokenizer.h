// Tokenizers: text bytes <-> token ids.
//
// Why: the engine works on token ids, while users send and receive text. This
// header is the one interface the rest of the server sees, so a model with the
// RWKV "World" vocabulary (65536 ids, greedy longest-match over bytes) and a
// byte-level model (the tiny rwkv.cpp test models, ids = byte values) are
// interchangeable. Tokenizers work on raw bytes, not on code points: Encode
// accepts any byte string (NULs and invalid UTF-8 included) and Decode returns
// the exact concatenated token bytes, which need not be valid UTF-8 on their
// own (a token may hold part of a character). Use StreamDecoder
// (stream_decoder.h) to turn a stream of ids into valid UTF-8 text.
#ifndef RWKV_ENGINE_TOKENIZER_TOKENIZER_H_
#define RWKV_ENGINE_TOKENIZER_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace rwkv {

// A vocabulary mapping between byte strings and token ids. Immutable after
// construction, so every method is thread-safe.
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Encodes any byte string (NULs and invalid UTF-8 included) into ids.
  // Never fails: every single byte has a token.
  virtual std::vector<int32_t> Encode(std::string_view bytes) const = 0;

  // Concatenates the bytes of `ids`. The result is the exact bytes, which may
  // be invalid UTF-8. Ids in [0, vocab_size()) that have no bytes (such as the
  // end-of-text id) contribute nothing. Returns INVALID_ARGUMENT naming the id
  // and its position when an id is outside [0, vocab_size()).
  virtual absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids) const = 0;

  // The bytes of one token; empty for ids with no bytes (0 in World) and for
  // ids out of range. The view stays valid for the tokenizer's lifetime.
  virtual std::string_view TokenBytes(int32_t id) const = 0;

  // The number of ids the model's embedding has: 65536 for World, 256 for bytes.
  virtual int32_t vocab_size() const = 0;

  // The id that ends the text: 0 for World; -1 (none) for the byte tokenizer.
  virtual int32_t end_of_text_id() const = 0;

  // "world" or "byte".
  virtual std::string name() const = 0;
};

// Loads the RWKV World vocabulary (rwkv_vocab_v20230424.txt format: one line
// `<id> <Python str or bytes literal> <byte length>` per token). Returns
// NOT_FOUND when the file does not exist and INVALID_ARGUMENT, naming the file
// and line, when it is malformed (bad literal, length mismatch, ids not
// increasing, duplicate token, a single byte with no token, ...). Ids must
// increase but may skip; ids not in the file have no bytes. vocab_size() is
// 65536, or the largest id + 1 if a file goes beyond that.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadWorldTokenizer(const std::string& vocab_path);

// The byte-level tokenizer: id = byte value, vocabulary of 256, no end-of-text.
std::unique_ptr<Tokenizer> MakeByteTokenizer();

}  // namespace rwkv

#endif  // RWKV_ENGINE_TOKENIZER_TOKENIZER_H_
