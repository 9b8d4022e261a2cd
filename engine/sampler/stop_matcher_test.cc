// Tests for StopMatcher: matches across chunk boundaries, overlapping
// prefixes, several stop strings, UTF-8, and chunking independence checked
// against a one-shot reference on random text.
#include "engine/sampler/stop_matcher.h"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "engine/sampler/rng.h"
#include "gtest/gtest.h"

namespace rwkv {
namespace {

struct Outcome {
  std::string emitted;
  bool stopped = false;
  int matched = -1;
};

// Feeds `chunks` then Finish (if not stopped); returns everything emitted.
Outcome Feed(const std::vector<std::string>& stops, const std::vector<std::string>& chunks) {
  StopMatcher m(stops);
  Outcome out;
  for (const std::string& c : chunks) {
    StopMatchResult r = m.Push(c);
    out.emitted += r.emit;
    if (r.stopped) {
      out.stopped = true;
      break;
    }
  }
  if (!out.stopped) out.emitted += m.Finish();
  out.matched = m.matched_index();
  return out;
}

std::vector<std::string> Bytes(std::string_view s) {
  std::vector<std::string> out;
  for (char c : s) out.emplace_back(1, c);
  return out;
}

// The definition: stop at the first byte where some stop string is complete,
// preferring the longest one ending there.
Outcome Reference(const std::vector<std::string>& stops, const std::string& text) {
  for (size_t end = 1; end <= text.size(); ++end) {
    int best = -1;
    for (size_t i = 0; i < stops.size(); ++i) {
      const std::string& s = stops[i];
      if (s.empty() || s.size() > end) continue;
      if (text.compare(end - s.size(), s.size(), s) != 0) continue;
      if (best < 0 || s.size() > stops[best].size()) best = static_cast<int>(i);
    }
    if (best >= 0) return {text.substr(0, end - stops[best].size()), true, best};
  }
  return {text, false, -1};
}

TEST(StopMatcherTest, NoStopStringsPassesThrough) {
  StopMatcher m({});
  EXPECT_EQ(m.Push("hello").emit, "hello");
  EXPECT_FALSE(m.Push("x").stopped);
  EXPECT_EQ(m.Finish(), "");
}

TEST(StopMatcherTest, MatchInsideOneChunk) {
  StopMatcher m({"User:"});
  StopMatchResult r = m.Push("Hello User: more");
  EXPECT_EQ(r.emit, "Hello ");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(m.matched_index(), 0);
  EXPECT_TRUE(m.Push("after").stopped);
  EXPECT_EQ(m.Push("after").emit, "");
  EXPECT_EQ(m.Finish(), "");
}

TEST(StopMatcherTest, MatchAcrossChunksHoldsBackThePrefix) {
  StopMatcher m({"User:"});
  StopMatchResult r1 = m.Push("Hello Us");
  EXPECT_EQ(r1.emit, "Hello ");
  EXPECT_FALSE(r1.stopped);
  EXPECT_EQ(m.held_bytes(), 2u);
  StopMatchResult r2 = m.Push("er");
  EXPECT_EQ(r2.emit, "");
  StopMatchResult r3 = m.Push(": hi");
  EXPECT_EQ(r3.emit, "");
  EXPECT_TRUE(r3.stopped);
}

TEST(StopMatcherTest, FalseAlarmIsReleased) {
  StopMatcher m({"User:"});
  EXPECT_EQ(m.Push("Hello Us").emit, "Hello ");
  EXPECT_EQ(m.Push("ually").emit, "Usually");
  EXPECT_EQ(m.Push(" Use").emit, " ");
  EXPECT_EQ(m.Finish(), "Use");  // end of generation releases the tail
}

TEST(StopMatcherTest, OverlappingPrefixes) {
  const std::vector<std::string> stops = {"abab"};
  const std::string text = "abaabab";
  const Outcome expected{"aba", true, 0};
  EXPECT_EQ(Feed(stops, {text}).emitted, expected.emitted);
  EXPECT_EQ(Feed(stops, Bytes(text)).emitted, expected.emitted);
  for (size_t cut = 0; cut <= text.size(); ++cut) {
    const Outcome o = Feed(stops, {text.substr(0, cut), text.substr(cut)});
    EXPECT_EQ(o.emitted, "aba") << "cut at " << cut;
    EXPECT_TRUE(o.stopped);
  }
  // "aab" in "aaab": the held "aa" must shift by one, not be dropped.
  EXPECT_EQ(Feed({"aab"}, Bytes("xaaab")).emitted, "xa");
}

TEST(StopMatcherTest, EarliestEndingStopWinsThenLongest) {
  // "bc" completes at byte 3, before "abcd" does.
  Outcome o = Feed({"abcd", "bc"}, {"xabcd"});
  EXPECT_EQ(o.emitted, "xa");
  EXPECT_EQ(o.matched, 1);
  // Both end at the same byte: the longer one wins.
  o = Feed({"cd", "bcd"}, {"abcd"});
  EXPECT_EQ(o.emitted, "a");
  EXPECT_EQ(o.matched, 1);
  // Several stop strings, the second one appears.
  o = Feed({"\n\n", "User:", "###"}, {"answer", " ##", "# next"});
  EXPECT_EQ(o.emitted, "answer ");
  EXPECT_EQ(o.matched, 2);
}

TEST(StopMatcherTest, HoldsOnlyTheLongestPossiblePrefix) {
  StopMatcher m({"xyz", "yq"});
  EXPECT_EQ(m.Push("axy").emit, "a");  // "xy" could become "xyz"
  EXPECT_EQ(m.held_bytes(), 2u);
  EXPECT_EQ(m.Push("y").emit, "xy");  // "xyy": only the last "y" could grow
  EXPECT_EQ(m.held_bytes(), 1u);
}

TEST(StopMatcherTest, Utf8MultibyteStopStrings) {
  Outcome o = Feed({"世界"}, {"你好世", "界!"});
  EXPECT_EQ(o.emitted, "你好");
  EXPECT_TRUE(o.stopped);
  // Held-back text starts on a character boundary: "你好" is emitted whole.
  StopMatcher m({"世界"});
  EXPECT_EQ(m.Push("你好世").emit, "你好");
  EXPECT_EQ(m.held_bytes(), 3u);
  EXPECT_EQ(m.Push("人").emit, "世人");
  // Bytes of one character split across chunks still match.
  const std::string text =
      "ab\xC3\xA9"
      "cd";  // "abécd"
  o = Feed({"\xC3\xA9"}, Bytes(text));
  EXPECT_EQ(o.emitted, "ab");
  EXPECT_TRUE(o.stopped);
  // Same lead byte, different character: no match, everything emitted.
  o = Feed({"\xC3\xA9"}, {"x\xC3", "\xA8y"});
  EXPECT_EQ(o.emitted, "x\xC3\xA8y");
  EXPECT_FALSE(o.stopped);
}

TEST(StopMatcherTest, EmptyStopStringsAreIgnored) {
  Outcome o = Feed({"", "zz"}, {"abc", "dzz"});
  EXPECT_EQ(o.emitted, "abcd");
  EXPECT_EQ(o.matched, 1);  // index in the caller's list
}

TEST(StopMatcherTest, RandomTextMatchesReferenceForAnyChunking) {
  Xoshiro256StarStar rng(2024);
  auto random_string = [&](size_t max_len, int alphabet) {
    std::string s(1 + rng.Next() % max_len, 'a');
    for (char& c : s) c = static_cast<char>('a' + rng.Next() % alphabet);
    return s;
  };
  for (int iter = 0; iter < 3000; ++iter) {
    std::vector<std::string> stops;
    const int num_stops = 1 + static_cast<int>(rng.Next() % 3);
    for (int i = 0; i < num_stops; ++i) stops.push_back(random_string(4, 3));
    const std::string text = random_string(30, 3);
    const Outcome expected = Reference(stops, text);
    std::vector<std::string> chunks;
    for (size_t pos = 0; pos < text.size();) {
      const size_t len = 1 + rng.Next() % 5;
      chunks.push_back(text.substr(pos, len));
      pos += len;
    }
    for (const auto& split : {std::vector<std::string>{text}, Bytes(text), chunks}) {
      const Outcome got = Feed(stops, split);
      ASSERT_EQ(got.emitted, expected.emitted) << "text " << text << " stop0 " << stops[0];
      ASSERT_EQ(got.stopped, expected.stopped) << text;
      ASSERT_EQ(got.matched, expected.matched) << text;
    }
  }
}

}  // namespace
}  // namespace rwkv
