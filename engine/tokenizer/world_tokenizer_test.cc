// Tests for the World tokenizer against the real vocabulary and the reference
// test vectors in shared/testdata/tokenizer.
//
// Why: the ids must match BlinkDL's reference tokenizer exactly, or a model
// sees text it was never trained on. Besides the 300 reference cases, random
// inputs are checked against a naive longest-match encoder built from a hash
// map (independent of the trie), and round trips cover invalid UTF-8 and NULs.
// Skipped when the test data is absent.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "engine/testing/testdata.h"
#include "engine/tokenizer/stream_decoder.h"
#include "engine/tokenizer/tokenizer.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace rwkv {
namespace {

constexpr char kVocab[] = "tokenizer/rwkv_vocab_v20230424.txt";
constexpr char kCases[] = "tokenizer/world_cases.jsonl";

struct WorldCase {
  int line = 0;
  std::string text;  // the UTF-8 bytes (from utf8_hex, which is authoritative)
  std::vector<int32_t> ids;
};

// Loads the vocabulary once for the whole test binary.
const Tokenizer* World() {
  static const Tokenizer* const tokenizer = [] {
    absl::StatusOr<std::unique_ptr<Tokenizer>> tok = LoadWorldTokenizer(testing::TestDataPath(kVocab));
    EXPECT_TRUE(tok.ok()) << tok.status();
    return tok.ok() ? tok->release() : nullptr;
  }();
  return tokenizer;
}

bool HexToBytes(const std::string& hex, std::string* out) {
  auto nibble = [](char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  out->clear();
  if (hex.size() % 2 != 0) return false;
  for (size_t i = 0; i < hex.size(); i += 2) {
    const int hi = nibble(hex[i]);
    const int lo = nibble(hex[i + 1]);
    if (hi < 0 || lo < 0) return false;
    out->push_back(static_cast<char>(hi * 16 + lo));
  }
  return true;
}

std::vector<WorldCase> LoadCases() {
  std::ifstream in(testing::TestDataPath(kCases), std::ios::binary);
  std::string line;
  std::vector<WorldCase> cases;
  int line_no = 0;
  while (std::getline(in, line, '\n')) {  // split on '\n' only
    ++line_no;
    if (line.empty()) continue;
    const nlohmann::json j = nlohmann::json::parse(line);
    WorldCase c;
    c.line = line_no;
    EXPECT_TRUE(HexToBytes(j.at("utf8_hex").get<std::string>(), &c.text)) << "bad utf8_hex on line " << line_no;
    EXPECT_EQ(j.at("text").get<std::string>(), c.text) << "text and utf8_hex disagree on line " << line_no;
    c.ids = j.at("ids").get<std::vector<int32_t>>();
    cases.push_back(std::move(c));
  }
  return cases;
}

// Naive greedy longest match: try every length from the longest down, with a
// hash map of all tokens (views into the tokenizer, which outlives the map).
std::vector<int32_t> NaiveEncode(const Tokenizer& tok, std::string_view text) {
  struct Table {
    std::unordered_map<std::string_view, int32_t> ids;
    size_t max_len = 0;
  };
  static const Table* const table = [&tok] {
    auto* t = new Table();
    for (int32_t id = 0; id < tok.vocab_size(); ++id) {
      const std::string_view bytes = tok.TokenBytes(id);
      if (bytes.empty()) continue;
      t->ids[bytes] = id;
      t->max_len = std::max(t->max_len, bytes.size());
    }
    return t;
  }();
  std::vector<int32_t> ids;
  size_t pos = 0;
  while (pos < text.size()) {
    for (size_t len = std::min(table->max_len, text.size() - pos); len > 0; --len) {
      auto it = table->ids.find(text.substr(pos, len));
      if (it != table->ids.end()) {
        ids.push_back(it->second);
        pos += len;
        break;
      }
    }
  }
  return ids;
}

class WorldTokenizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    RWKV_REQUIRE_TESTDATA(kVocab);
    tok_ = World();
    ASSERT_NE(tok_, nullptr);
  }
  const Tokenizer* tok_ = nullptr;
};

class WorldCasesTest : public WorldTokenizerTest {
 protected:
  void SetUp() override {
    WorldTokenizerTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    RWKV_REQUIRE_TESTDATA(kCases);
    cases_ = LoadCases();
    ASSERT_EQ(cases_.size(), 300u);
  }
  std::vector<WorldCase> cases_;
};

TEST_F(WorldTokenizerTest, Properties) {
  EXPECT_EQ(tok_->vocab_size(), 65536);
  EXPECT_EQ(tok_->end_of_text_id(), 0);
  EXPECT_EQ(tok_->name(), "world");
  EXPECT_EQ(tok_->TokenBytes(0), "");
  EXPECT_EQ(tok_->TokenBytes(1), std::string_view("\0", 1));
  EXPECT_EQ(tok_->TokenBytes(256), "\xFF");
  EXPECT_EQ(tok_->TokenBytes(257), "\t\t");
  EXPECT_EQ(tok_->TokenBytes(65529), std::string(128, ' '));
  EXPECT_EQ(tok_->TokenBytes(65530), "");
  EXPECT_EQ(tok_->TokenBytes(65535), "");
  EXPECT_EQ(tok_->TokenBytes(65536), "");
  EXPECT_EQ(tok_->TokenBytes(-1), "");
  for (int b = 0; b < 256; ++b) {
    ASSERT_EQ(tok_->TokenBytes(b + 1), std::string(1, static_cast<char>(b)));
  }
  int non_empty = 0;
  for (int32_t id = 0; id < tok_->vocab_size(); ++id) non_empty += tok_->TokenBytes(id).empty() ? 0 : 1;
  EXPECT_EQ(non_empty, 65529);
}

TEST_F(WorldCasesTest, EncodesEveryCaseExactly) {
  for (const WorldCase& c : cases_) {
    EXPECT_EQ(tok_->Encode(c.text), c.ids) << "case on line " << c.line << ": " << ::testing::PrintToString(c.text);
  }
}

TEST_F(WorldCasesTest, DecodesEveryCaseExactly) {
  for (const WorldCase& c : cases_) {
    absl::StatusOr<std::string> text = tok_->Decode(c.ids);
    ASSERT_TRUE(text.ok()) << text.status();
    EXPECT_EQ(*text, c.text) << "case on line " << c.line;
  }
}

TEST_F(WorldCasesTest, StreamsEveryCaseInValidChunks) {
  int held_back = 0;  // tokens that ended mid-character
  for (const WorldCase& c : cases_) {
    StreamDecoder decoder(*tok_);
    std::string text;
    for (int32_t id : c.ids) {
      const std::string chunk = decoder.Push(id);
      ASSERT_TRUE(IsValidUtf8(chunk)) << "case on line " << c.line;
      held_back += decoder.held_bytes() > 0 ? 1 : 0;
      text += chunk;
    }
    EXPECT_EQ(decoder.held_bytes(), 0u);
    text += decoder.Finish();
    EXPECT_EQ(text, c.text) << "case on line " << c.line;
  }
  EXPECT_GT(held_back, 0) << "no case exercised holding back a partial character";
}

TEST_F(WorldCasesTest, MatchesNaiveEncoderOnCases) {
  for (const WorldCase& c : cases_) {
    ASSERT_EQ(NaiveEncode(*tok_, c.text), c.ids) << "case on line " << c.line;
  }
}

TEST_F(WorldTokenizerTest, RoundTripsRandomBytes) {
  std::mt19937 rng(42);
  for (int iter = 0; iter < 2000; ++iter) {
    std::string bytes(rng() % 200, '\0');
    const int mode = iter % 3;
    for (char& ch : bytes) {
      // Mode 0: any byte; 1: mostly ASCII with NULs; 2: bytes >= 0x80.
      const uint32_t r = rng();
      ch = static_cast<char>(mode == 0 ? r % 256 : mode == 1 ? (r % 10 == 0 ? 0 : 32 + r % 95) : 0x80 + r % 128);
    }
    const std::vector<int32_t> ids = tok_->Encode(bytes);
    absl::StatusOr<std::string> decoded = tok_->Decode(ids);
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    ASSERT_EQ(*decoded, bytes);
    ASSERT_EQ(ids, NaiveEncode(*tok_, bytes));
  }
}

TEST_F(WorldTokenizerTest, MatchesNaiveEncoderOnRandomTokenConcatenations) {
  // Concatenations of random vocabulary tokens stress longest-match choices.
  std::mt19937 rng(7);
  for (int iter = 0; iter < 1000; ++iter) {
    std::string text;
    const int n = static_cast<int>(rng() % 12);
    for (int i = 0; i < n; ++i) text += tok_->TokenBytes(1 + static_cast<int32_t>(rng() % 65529));
    const std::vector<int32_t> ids = tok_->Encode(text);
    ASSERT_EQ(ids, NaiveEncode(*tok_, text)) << ::testing::PrintToString(text);
    absl::StatusOr<std::string> decoded = tok_->Decode(ids);
    ASSERT_TRUE(decoded.ok());
    ASSERT_EQ(*decoded, text);
  }
}

TEST_F(WorldTokenizerTest, DecodeRejectsOutOfRangeIds) {
  for (int32_t bad : {-1, 65536, 70000}) {
    absl::StatusOr<std::string> text = tok_->Decode({33, 34, bad});
    ASSERT_FALSE(text.ok());
    EXPECT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(text.status().message().find(std::to_string(bad)), std::string::npos) << text.status();
    EXPECT_NE(text.status().message().find("position 2"), std::string::npos) << text.status();
  }
  // In range but without bytes: end-of-text and the unused tail decode to nothing.
  absl::StatusOr<std::string> text = tok_->Decode({0, 33, 65530, 65535});
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, " ");
}

TEST_F(WorldTokenizerTest, EmptyAndNulInput) {
  EXPECT_TRUE(tok_->Encode("").empty());
  EXPECT_EQ(tok_->Encode(std::string_view("\0\0", 2)), (std::vector<int32_t>{1, 1}));
}

TEST_F(WorldTokenizerTest, ConcurrentEncodeIsConsistent) {
  const std::string text = "The quick brown fox \xE4\xB8\xAD\xE6\x96\x87 jumps over 1234567 lazy dogs.\n";
  const std::vector<int32_t> expected = tok_->Encode(text);
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 2000; ++i) mismatches[t] += tok_->Encode(text) == expected ? 0 : 1;
    });
  }
  for (std::thread& th : threads) th.join();
  for (int m : mismatches) EXPECT_EQ(m, 0);
}

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr double kMaxSecondsPerMegabyte = 10.0;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr double kMaxSecondsPerMegabyte = 10.0;
#else
constexpr double kMaxSecondsPerMegabyte = 1.0;
#endif
#else
constexpr double kMaxSecondsPerMegabyte = 1.0;
#endif

TEST_F(WorldTokenizerTest, EncodesAMegabyteQuickly) {
  // About 1 MB of mixed text: prose, code, CJK, emoji, long runs, random bytes.
  std::string text;
  std::mt19937 rng(99);
  const std::vector<std::string> pieces = {
      "The quick brown fox jumps over the lazy dog. ", "def f(x):\n    return x * 2  # double\n",
      "\xE4\xBD\xA0\xE5\xA5\xBD\xEF\xBC\x8C\xE4\xB8\x96\xE7\x95\x8C\xE3\x80\x82",
      "\xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91\xA7 ", std::string(300, ' '),
      "========================================================================================\n"};
  while (text.size() < (1u << 20)) {
    if (rng() % 10 == 0) {
      for (int i = 0; i < 16; ++i) text.push_back(static_cast<char>(rng() % 256));
    } else {
      text += pieces[rng() % pieces.size()];
    }
  }
  const auto start = std::chrono::steady_clock::now();
  const std::vector<int32_t> ids = tok_->Encode(text);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("encoded %zu bytes into %zu tokens in %.1f ms\n", text.size(), ids.size(), seconds * 1e3);
  EXPECT_LT(seconds, kMaxSecondsPerMegabyte * static_cast<double>(text.size()) / (1 << 20));
  absl::StatusOr<std::string> decoded = tok_->Decode(ids);
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(*decoded, text);
}

TEST_F(WorldTokenizerTest, LoadsInReasonableTime) {
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = LoadWorldTokenizer(testing::TestDataPath(kVocab));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(tok.ok()) << tok.status();
  std::printf("loaded the World vocab in %.1f ms\n", seconds * 1e3);
  EXPECT_LT(seconds, 10.0);
}

}  // namespace
}  // namespace rwkv
