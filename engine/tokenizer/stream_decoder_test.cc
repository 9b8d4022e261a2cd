// Tests for UTF-8 validation, repair and the streaming decoder.
//
// Why: every chunk the server streams must be valid UTF-8 and the joined
// chunks must equal the decoded text. The replacement rule (one U+FFFD per
// maximal invalid subpart) is checked against the Unicode Standard's own
// example, against an independent arithmetic reference, and for invariance
// under arbitrary splitting of the byte stream.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/stream_decoder.h"
#include "engine/tokenizer/tokenizer.h"
#include "gtest/gtest.h"

namespace rwkv {
namespace {

const std::string kFffd = "\xEF\xBF\xBD";

std::string Rep(int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s += kFffd;
  return s;
}

// Independent reference for "is `p` a prefix of some well-formed UTF-8
// character": decode the smallest and largest code points whose encoding
// starts with `p` and intersect that interval with the valid range.
bool RefIsValidPrefix(std::string_view p) {
  const auto b0 = static_cast<uint8_t>(p[0]);
  int n = 0;
  uint32_t lead = 0;
  if (b0 < 0x80) return p.size() == 1;
  if ((b0 >> 5) == 0x6) { n = 2; lead = b0 & 0x1F; }
  else if ((b0 >> 4) == 0xE) { n = 3; lead = b0 & 0x0F; }
  else if ((b0 >> 3) == 0x1E) { n = 4; lead = b0 & 0x07; }
  else return false;
  if (static_cast<int>(p.size()) > n) return false;
  uint32_t lo = lead;
  uint32_t hi = lead;
  for (int k = 1; k < n; ++k) {
    uint32_t c_lo = 0x00;
    uint32_t c_hi = 0x3F;
    if (k < static_cast<int>(p.size())) {
      const auto c = static_cast<uint8_t>(p[k]);
      if ((c >> 6) != 0x2) return false;
      c_lo = c_hi = c & 0x3Fu;
    }
    lo = (lo << 6) | c_lo;
    hi = (hi << 6) | c_hi;
  }
  const uint32_t min_cp = n == 2 ? 0x80 : n == 3 ? 0x800 : 0x10000;
  const uint32_t max_cp = n == 2 ? 0x7FF : n == 3 ? 0xFFFF : 0x10FFFF;
  lo = std::max(lo, min_cp);
  hi = std::min(hi, max_cp);
  if (lo > hi) return false;
  // Remove the surrogates: something must remain.
  return lo < 0xD800 || hi > 0xDFFF;
}

int RefSequenceLength(uint8_t b0) {
  if (b0 < 0x80) return 1;
  if ((b0 >> 5) == 0x6) return 2;
  if ((b0 >> 4) == 0xE) return 3;
  return 4;
}

// Reference sanitizer by maximal subparts, built on RefIsValidPrefix.
std::string RefSanitize(std::string_view s) {
  std::string out;
  size_t i = 0;
  while (i < s.size()) {
    size_t k = 0;  // longest valid prefix at i
    while (i + k < s.size() && k < 4 && RefIsValidPrefix(s.substr(i, k + 1))) ++k;
    if (k == 0) {
      out += kFffd;
      i += 1;
    } else if (static_cast<int>(k) == RefSequenceLength(static_cast<uint8_t>(s[i]))) {
      out.append(s.substr(i, k));
      i += k;
    } else {
      out += kFffd;
      i += k;
    }
  }
  return out;
}

TEST(Utf8Test, IsValidUtf8Basics) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8(std::string("a\0b", 3)));
  EXPECT_TRUE(IsValidUtf8("\xC2\x80\xDF\xBF\xE0\xA0\x80\xEF\xBF\xBF\xF0\x90\x80\x80\xF4\x8F\xBF\xBF"));
  EXPECT_TRUE(IsValidUtf8("\xED\x9F\xBF\xEE\x80\x80"));  // U+D7FF, U+E000
  for (std::string_view bad : {"\x80", "\xBF", "\xC0\x80", "\xC1\xBF", "\xC2", "\xE0\x80\x80", "\xE0\x9F\xBF",
                               "\xED\xA0\x80", "\xED\xBF\xBF", "\xF0\x80\x80\x80", "\xF0\x8F\xBF\xBF",
                               "\xF4\x90\x80\x80", "\xF5\x80\x80\x80", "\xFF", "\xFE", "\xE2\x82", "a\xE2\x82z"}) {
    EXPECT_FALSE(IsValidUtf8(bad)) << ::testing::PrintToString(std::string(bad));
  }
}

TEST(Utf8Test, IsValidUtf8MatchesReferenceOnAllShortStrings) {
  auto ref_valid = [](std::string_view s) { return RefSanitize(s) == s && s.find(kFffd) == std::string::npos; };
  for (int a = 0; a < 256; ++a) {
    const std::string s1(1, static_cast<char>(a));
    ASSERT_EQ(IsValidUtf8(s1), ref_valid(s1)) << a;
    for (int b = 0; b < 256; ++b) {
      const std::string s2 = s1 + static_cast<char>(b);
      ASSERT_EQ(IsValidUtf8(s2), ref_valid(s2)) << a << " " << b;
    }
  }
  // All 3-byte strings that start a 3-byte sequence, and 4-byte ones sampled.
  for (int a = 0xE0; a <= 0xEF; ++a) {
    for (int b = 0; b < 256; ++b) {
      for (int c = 0; c < 256; ++c) {
        const char s[3] = {static_cast<char>(a), static_cast<char>(b), static_cast<char>(c)};
        const std::string_view sv(s, 3);
        const bool expected = RefIsValidPrefix(sv);
        ASSERT_EQ(IsValidUtf8(sv), expected) << a << " " << b << " " << c;
      }
    }
  }
}

TEST(Utf8Test, SanitizeMatchesReferenceOnAllTwoByteStringsAndThreeByteStarts) {
  for (int a = 0; a < 256; ++a) {
    for (int b = 0; b < 256; ++b) {
      const std::string s = {static_cast<char>(a), static_cast<char>(b)};
      const std::string got = SanitizeUtf8(s);
      ASSERT_EQ(got, RefSanitize(s)) << a << " " << b;
      ASSERT_TRUE(IsValidUtf8(got));
    }
  }
  for (int a = 0xE0; a <= 0xF4; ++a) {
    for (int b = 0x70; b < 0xD0; ++b) {
      for (int c = 0x70; c < 0xD0; ++c) {
        const std::string s = {static_cast<char>(a), static_cast<char>(b), static_cast<char>(c)};
        ASSERT_EQ(SanitizeUtf8(s), RefSanitize(s)) << a << " " << b << " " << c;
      }
    }
  }
}

TEST(Utf8Test, SanitizeExamples) {
  EXPECT_EQ(SanitizeUtf8("hello"), "hello");
  EXPECT_EQ(SanitizeUtf8("\xFF"), Rep(1));
  EXPECT_EQ(SanitizeUtf8("\x80"), Rep(1));
  EXPECT_EQ(SanitizeUtf8("\xC0\x80"), Rep(2));               // overlong NUL
  EXPECT_EQ(SanitizeUtf8("\xE0\x80\x80"), Rep(3));           // overlong
  EXPECT_EQ(SanitizeUtf8("\xF0\x80\x80\x80"), Rep(4));       // overlong
  EXPECT_EQ(SanitizeUtf8("\xED\xA0\x80"), Rep(3));           // surrogate U+D800
  EXPECT_EQ(SanitizeUtf8("\xF4\x90\x80\x80"), Rep(4));       // U+110000
  EXPECT_EQ(SanitizeUtf8("\xE2\x82" "A"), Rep(1) + "A");     // truncated, then ASCII
  EXPECT_EQ(SanitizeUtf8("\xF0\x9F\x98"), Rep(1));           // truncated at end
  EXPECT_EQ(SanitizeUtf8("\xF0\x9F\x98\xF0\x9F\x98\x80"), Rep(1) + "\xF0\x9F\x98\x80");
  // The example of Unicode 15 section 3.9, Table 3-8.
  EXPECT_EQ(SanitizeUtf8("\x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64"),
            absl::StrCat("a", Rep(3), "b", Rep(1), "c", Rep(2), "d"));
  EXPECT_EQ(SanitizeUtf8(std::string("\0\xFF\0", 3)), std::string("\0", 1) + Rep(1) + std::string("\0", 1));
}

TEST(StreamDecoderTest, HoldsBackIncompleteCharacters) {
  std::unique_ptr<Tokenizer> bytes = MakeByteTokenizer();
  StreamDecoder decoder(*bytes);
  EXPECT_EQ(decoder.Push('a'), "a");
  EXPECT_EQ(decoder.held_bytes(), 0u);
  EXPECT_EQ(decoder.Push(0xF0), "");
  EXPECT_EQ(decoder.held_bytes(), 1u);
  EXPECT_EQ(decoder.Push(0x9F), "");
  EXPECT_EQ(decoder.held_bytes(), 2u);
  EXPECT_EQ(decoder.Push(0x98), "");
  EXPECT_EQ(decoder.held_bytes(), 3u);
  EXPECT_EQ(decoder.Push(0x80), "\xF0\x9F\x98\x80");
  EXPECT_EQ(decoder.held_bytes(), 0u);
  EXPECT_EQ(decoder.Finish(), "");
}

TEST(StreamDecoderTest, InvalidBytesBecomeReplacementCharacters) {
  std::unique_ptr<Tokenizer> bytes = MakeByteTokenizer();
  StreamDecoder decoder(*bytes);
  EXPECT_EQ(decoder.Push(0xFF), kFffd);  // never valid: emitted at once
  EXPECT_EQ(decoder.Push(0x80), kFffd);  // unexpected continuation
  EXPECT_EQ(decoder.Push(0xE2), "");
  EXPECT_EQ(decoder.Push(0x82), "");
  EXPECT_EQ(decoder.Push('x'), kFffd + "x");  // truncated sequence, then 'x'
  EXPECT_EQ(decoder.Push(0xED), "");
  EXPECT_EQ(decoder.Push(0xA0), kFffd + kFffd);  // surrogate: ED then A0 both bad
  EXPECT_EQ(decoder.held_bytes(), 0u);
  EXPECT_EQ(decoder.Push(0xE0), "");
  EXPECT_EQ(decoder.Push(0x80), kFffd + kFffd);  // overlong
  EXPECT_EQ(decoder.Push(0xC3), "");
  EXPECT_EQ(decoder.Finish(), kFffd);  // incomplete tail at the end
  EXPECT_EQ(decoder.held_bytes(), 0u);
  // Reusable after Finish.
  EXPECT_EQ(decoder.Push(0xC3), "");
  EXPECT_EQ(decoder.Push(0xA9), "\xC3\xA9");
}

TEST(StreamDecoderTest, ResetDropsHeldBytes) {
  std::unique_ptr<Tokenizer> bytes = MakeByteTokenizer();
  StreamDecoder decoder(*bytes);
  EXPECT_EQ(decoder.PushBytes("ab\xE2\x82"), "ab");
  EXPECT_EQ(decoder.held_bytes(), 2u);
  decoder.Reset();
  EXPECT_EQ(decoder.held_bytes(), 0u);
  EXPECT_EQ(decoder.Finish(), "");
}

TEST(StreamDecoderTest, IdsWithoutBytesAddNothing) {
  std::unique_ptr<Tokenizer> bytes = MakeByteTokenizer();
  StreamDecoder decoder(*bytes);
  EXPECT_EQ(decoder.Push(0xC3), "");
  EXPECT_EQ(decoder.Push(-1), "");
  EXPECT_EQ(decoder.Push(1000), "");
  EXPECT_EQ(decoder.Push(0xA9), "\xC3\xA9");
}

// Any split of any byte string gives SanitizeUtf8 of the whole, in chunks
// that are each valid UTF-8.
TEST(StreamDecoderTest, SplitInvariantOnRandomBytes) {
  std::mt19937 rng(1234);
  std::unique_ptr<Tokenizer> bytes = MakeByteTokenizer();
  // Bias towards bytes that interact: ASCII, continuations, lead bytes.
  const std::vector<uint8_t> pool = {0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2,
                                     0xDF, 0xE0, 0xE1, 0xED, 0xEF, 0xF0, 0xF1, 0xF4, 0xF5, 0xFF};
  for (int iter = 0; iter < 3000; ++iter) {
    std::string input;
    const int len = static_cast<int>(rng() % 40);
    for (int i = 0; i < len; ++i) {
      input.push_back(static_cast<char>(rng() % 3 == 0 ? rng() % 256 : pool[rng() % pool.size()]));
    }
    const std::string expected = SanitizeUtf8(input);
    ASSERT_TRUE(IsValidUtf8(expected));
    ASSERT_EQ(expected, RefSanitize(input));
    StreamDecoder decoder(*bytes);
    std::string got;
    size_t pos = 0;
    while (pos < input.size()) {
      const size_t piece = std::min<size_t>(input.size() - pos, rng() % 5);
      const std::string chunk = decoder.PushBytes(std::string_view(input).substr(pos, piece));
      ASSERT_TRUE(IsValidUtf8(chunk));
      got += chunk;
      pos += piece;
    }
    const std::string tail = decoder.Finish();
    ASSERT_TRUE(IsValidUtf8(tail));
    got += tail;
    ASSERT_EQ(got, expected) << ::testing::PrintToString(input);
  }
}

}  // namespace
}  // namespace rwkv
