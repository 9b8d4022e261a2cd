// UTF-8 validation, repair and streaming detokenization.
//
// Why: see stream_decoder.h. The decoder below is the WHATWG UTF-8 decoder
// state machine (bytes needed + the allowed range of the next byte), which
// yields exactly one U+FFFD per maximal invalid subpart and never needs to look
// more than one byte ahead, so it works unchanged on a stream split anywhere.
#include "engine/tokenizer/stream_decoder.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace rwkv {
namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

}  // namespace

bool IsValidUtf8(std::string_view text) {
  const auto* p = reinterpret_cast<const uint8_t*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const uint8_t b = p[i];
    if (b < 0x80) {
      ++i;
      continue;
    }
    int needed = 0;
    uint8_t lower = 0x80;
    uint8_t upper = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) {
      needed = 1;
    } else if (b >= 0xE0 && b <= 0xEF) {
      needed = 2;
      if (b == 0xE0) lower = 0xA0;
      if (b == 0xED) upper = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
      needed = 3;
      if (b == 0xF0) lower = 0x90;
      if (b == 0xF4) upper = 0x8F;
    } else {
      return false;
    }
    if (n - i - 1 < static_cast<size_t>(needed)) return false;
    if (p[i + 1] < lower || p[i + 1] > upper) return false;
    for (int k = 2; k <= needed; ++k) {
      if (p[i + k] < 0x80 || p[i + k] > 0xBF) return false;
    }
    i += static_cast<size_t>(needed) + 1;
  }
  return true;
}

std::string SanitizeUtf8(std::string_view bytes) {
  if (IsValidUtf8(bytes)) return std::string(bytes);
  std::string out;
  out.reserve(bytes.size() + 16);
  Utf8Sanitizer sanitizer;
  sanitizer.Append(bytes, &out);
  sanitizer.Flush(&out);
  return out;
}

void Utf8Sanitizer::Append(std::string_view bytes, std::string* out) {
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  const size_t n = bytes.size();
  size_t i = 0;
  while (i < n) {
    const uint8_t b = p[i];
    if (needed_ == 0) {
      if (b < 0x80) {  // copy a run of ASCII at once
        size_t j = i + 1;
        while (j < n && p[j] < 0x80) ++j;
        out->append(bytes.data() + i, j - i);
        i = j;
        continue;
      }
      if (b >= 0xC2 && b <= 0xDF) {
        needed_ = 1;
      } else if (b >= 0xE0 && b <= 0xEF) {
        needed_ = 2;
        if (b == 0xE0) lower_ = 0xA0;  // no overlong 3-byte forms
        if (b == 0xED) upper_ = 0x9F;  // no surrogates
      } else if (b >= 0xF0 && b <= 0xF4) {
        needed_ = 3;
        if (b == 0xF0) lower_ = 0x90;  // no overlong 4-byte forms
        if (b == 0xF4) upper_ = 0x8F;  // nothing above U+10FFFF
      } else {
        // 80..BF (unexpected continuation), C0, C1, F5..FF: never valid.
        out->append(kReplacement);
        ++i;
        continue;
      }
      held_[0] = static_cast<char>(b);
      held_len_ = 1;
      ++i;
      continue;
    }
    if (b < lower_ || b > upper_) {
      // The held bytes are a maximal invalid subpart. `b` is not consumed: it
      // is looked at again as a possible start.
      out->append(kReplacement);
      ClearHeld();
      continue;
    }
    lower_ = 0x80;
    upper_ = 0xBF;
    held_[held_len_++] = static_cast<char>(b);
    ++i;
    if (--needed_ == 0) {
      out->append(held_, held_len_);
      held_len_ = 0;
    }
  }
}

void Utf8Sanitizer::Flush(std::string* out) {
  if (held_len_ > 0) out->append(kReplacement);
  ClearHeld();
}

void Utf8Sanitizer::Reset() { ClearHeld(); }

std::string StreamDecoder::Push(int32_t id) { return PushBytes(tokenizer_->TokenBytes(id)); }

std::string StreamDecoder::PushBytes(std::string_view bytes) {
  std::string out;
  sanitizer_.Append(bytes, &out);
  return out;
}

std::string StreamDecoder::Finish() {
  std::string out;
  sanitizer_.Flush(&out);
  return out;
}

}  // namespace rwkv
