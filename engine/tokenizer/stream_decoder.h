// Streaming detokenization and UTF-8 repair.
//
// Why: a World token may end in the middle of a multi-byte UTF-8 character, and
// a model can emit any byte sequence at all, yet the server streams text to
// clients chunk by chunk and every chunk must be valid UTF-8 (JSON, SSE). The
// StreamDecoder holds back an incomplete trailing character until a later
// token completes it, and replaces bytes that can never become valid text.
//
// Replacement rule (used by StreamDecoder, Utf8Sanitizer and SanitizeUtf8):
// the input is decoded as the WHATWG Encoding Standard's UTF-8 decoder does,
// which is the Unicode Standard's "best practice for U+FFFD substitution"
// (Unicode 15, section 3.9, "U+FFFD Substitution of Maximal Subparts"):
//  * well-formed sequences (Unicode Table 3-7) pass through byte-exact;
//  * each maximal subpart of an ill-formed sequence becomes one U+FFFD
//    (EF BF BD). A maximal subpart is either a byte that cannot start a
//    sequence (80..BF, C0, C1, F5..FF) or the longest prefix of a well-formed
//    sequence that is followed by a byte that cannot continue it. Examples:
//      FF            -> U+FFFD
//      C0 80         -> U+FFFD U+FFFD          (overlong: C0 never starts)
//      E0 80 80      -> U+FFFD U+FFFD U+FFFD   (overlong: E0 needs A0..BF)
//      ED A0 80      -> U+FFFD U+FFFD U+FFFD   (surrogate: ED needs 80..9F)
//      F4 90 80 80   -> 4 x U+FFFD             (above U+10FFFF)
//      E2 82 41      -> U+FFFD 'A'             (truncated, then a new start)
//  * an incomplete sequence still pending at the end (Finish/Flush) becomes
//    one U+FFFD.
// The output is therefore always valid UTF-8, and no byte that belongs to
// valid text is ever dropped or replaced: for any split of the input into
// pieces, the concatenated streaming output equals SanitizeUtf8(input), which
// equals the input itself when it is valid UTF-8.
#ifndef RWKV_ENGINE_TOKENIZER_STREAM_DECODER_H_
#define RWKV_ENGINE_TOKENIZER_STREAM_DECODER_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "engine/tokenizer/tokenizer.h"

namespace rwkv {

// True when `text` is well-formed UTF-8 (no overlong forms, surrogates, code
// points above U+10FFFF or truncated sequences). The empty string is valid.
bool IsValidUtf8(std::string_view text);

// `bytes` with every maximal invalid subpart (including a truncated sequence
// at the end) replaced by U+FFFD, per the rule above. Valid UTF-8 is returned
// unchanged.
std::string SanitizeUtf8(std::string_view bytes);

// Incremental form of SanitizeUtf8 over a byte stream. Holds at most 3 bytes.
// Not thread-safe; use one per stream.
class Utf8Sanitizer {
 public:
  // Appends to *out the valid text (and U+FFFDs) that `bytes` completes,
  // holding back an incomplete trailing sequence that may still become valid.
  void Append(std::string_view bytes, std::string* out);

  // Appends one U+FFFD if an incomplete sequence is held, then resets.
  void Flush(std::string* out);

  // Drops any held bytes.
  void Reset();

  // Bytes of an incomplete sequence currently held back (0..3).
  size_t held_bytes() const { return held_len_; }

 private:
  void ClearHeld() {
    held_len_ = 0;
    needed_ = 0;
    lower_ = 0x80;
    upper_ = 0xBF;
  }

  char held_[4] = {};
  uint8_t held_len_ = 0;  // bytes held in held_
  uint8_t needed_ = 0;    // continuation bytes still needed to complete them
  uint8_t lower_ = 0x80;  // the range the next continuation byte must be in
  uint8_t upper_ = 0xBF;
};

// Turns a stream of token ids into chunks of valid UTF-8 text, one Push per
// id. Concatenating every Push result and then Finish() gives
// SanitizeUtf8(concatenated token bytes), i.e. exactly the decoded text when it
// is valid UTF-8. Ids without bytes (end-of-text, ids out of range) add nothing;
// check ids with Tokenizer::Decode if they may be invalid.
//
// Holds a pointer to `tokenizer`, which must outlive the decoder. Not
// thread-safe; use one per stream. Copyable (copies the held state).
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer) : tokenizer_(&tokenizer) {}

  // Returns the text newly completed by token `id` (possibly empty).
  std::string Push(int32_t id);

  // Same as Push for raw bytes (e.g. a prefix already decoded elsewhere).
  std::string PushBytes(std::string_view bytes);

  // Flushes what is held: an incomplete sequence becomes U+FFFD. The decoder
  // is then empty and may be reused for a new stream.
  std::string Finish();

  // Drops held bytes without emitting them.
  void Reset() { sanitizer_.Reset(); }

  // Bytes of an incomplete trailing sequence currently held back (0..3).
  size_t held_bytes() const { return sanitizer_.held_bytes(); }

 private:
  const Tokenizer* tokenizer_;
  Utf8Sanitizer sanitizer_;
};

}  // namespace rwkv

#endif  // RWKV_ENGINE_TOKENIZER_STREAM_DECODER_H_
