// Tests for the World vocabulary parser on small synthetic files.
//
// Why: a literal parsed one byte wrong silently changes token ids, so every
// escape form is checked against known bytes, and every kind of damaged file
// must fail loudly with its line number. These tests need no test data.
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/tokenizer/tokenizer.h"
#include "gtest/gtest.h"

namespace rwkv {
namespace {

// The 256 single-byte tokens as ids 1..256 (b'\xNN' literals).
std::string ByteLines() {
  std::string s;
  for (int b = 0; b < 256; ++b) absl::StrAppendFormat(&s, "%d b'\\x%02x' 1\n", b + 1, b);
  return s;
}

class VocabParserTest : public ::testing::Test {
 protected:
  void TearDown() override {
    for (const std::string& path : paths_) std::filesystem::remove(path);
  }

  std::string WriteFile(const std::string& contents) {
    const std::string path =
        absl::StrCat(::testing::TempDir(), "/rwkv_vocab_test_", ::testing::UnitTest::GetInstance()->random_seed(),
                     "_", ::testing::UnitTest::GetInstance()->current_test_info()->name(), "_", paths_.size(), ".txt");
    std::ofstream out(path, std::ios::binary);
    out << contents;
    paths_.push_back(path);
    return path;
  }

  absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& contents) {
    return LoadWorldTokenizer(WriteFile(contents));
  }

  // Expects INVALID_ARGUMENT whose message names `line` and contains `needle`.
  void ExpectError(const std::string& contents, int line, const std::string& needle) {
    absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Load(contents);
    ASSERT_FALSE(tok.ok()) << "accepted: " << contents.substr(contents.size() > 80 ? contents.size() - 80 : 0);
    EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument) << tok.status();
    if (line > 0) {
      EXPECT_NE(tok.status().message().find(absl::StrCat(":", line, ":")), std::string::npos) << tok.status();
    }
    EXPECT_NE(tok.status().message().find(needle), std::string::npos) << tok.status();
  }

  std::vector<std::string> paths_;
};

TEST_F(VocabParserTest, ParsesEveryEscapeForm) {
  const std::string extra =
      "257 '\\t\\n\\r\\\\\\'\\\"' 6\n"         // '\t\n\r\\\'\"'
      "258 '\\a\\b\\f\\v' 4\n"
      "259 '\\x41\\x80' 3\n"                  // str \x80 is U+0080: C2 80
      "260 b'\\x41\\x80' 2\n"                 // bytes \x80 is the byte
      "261 '\\u00e9\\u4e2d' 5\n"              // é (2) + 中 (3)
      "262 \"\\U0001F600'\" 5\n"              // double quotes, U+1F600 + '
      "263 '\\101\\102\\0\\7\\777' 6\n"       // octal: A B NUL BEL U+01FF
      "264 b'\\101\\377' 2\n"
      "265 'a b  c' 6\n"                      // spaces inside the literal
      "266 '\xe4\xb8\xad\xe6\x96\x87' 6\n"    // raw UTF-8
      "267 u'uu' 2\n"
      "268 B'\\xff\\xfe' 2\n";
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Load(ByteLines() + extra);
  ASSERT_TRUE(tok.ok()) << tok.status();
  const Tokenizer& t = **tok;
  EXPECT_EQ(t.vocab_size(), 65536);
  EXPECT_EQ(t.end_of_text_id(), 0);
  EXPECT_EQ(t.name(), "world");
  EXPECT_EQ(t.TokenBytes(257), "\t\n\r\\'\"");
  EXPECT_EQ(t.TokenBytes(258), "\a\b\f\v");
  EXPECT_EQ(t.TokenBytes(259), "A\xC2\x80");
  EXPECT_EQ(t.TokenBytes(260), "A\x80");
  EXPECT_EQ(t.TokenBytes(261), "\xC3\xA9\xE4\xB8\xAD");
  EXPECT_EQ(t.TokenBytes(262), "\xF0\x9F\x98\x80'");
  EXPECT_EQ(t.TokenBytes(263), std::string("AB\0\a\xC7\xBF", 6));
  EXPECT_EQ(t.TokenBytes(264), "A\xFF");
  EXPECT_EQ(t.TokenBytes(265), "a b  c");
  EXPECT_EQ(t.TokenBytes(266), "\xe4\xb8\xad\xe6\x96\x87");
  EXPECT_EQ(t.TokenBytes(267), "uu");
  EXPECT_EQ(t.TokenBytes(268), "\xFF\xFE");
  EXPECT_EQ(t.TokenBytes(0), "");
  EXPECT_EQ(t.TokenBytes(269), "");
  ASSERT_EQ(t.TokenBytes(1).size(), 1u);
  EXPECT_EQ(t.TokenBytes(1)[0], '\0');
  // Greedy longest match over the synthetic vocabulary.
  EXPECT_EQ(t.Encode("a b  cA\x80\xFF\xFE!"), (std::vector<int32_t>{265, 260, 268, '!' + 1}));
  EXPECT_EQ(t.Encode("a b  "), (std::vector<int32_t>{'a' + 1, ' ' + 1, 'b' + 1, ' ' + 1, ' ' + 1}));
}

TEST_F(VocabParserTest, AcceptsCrlfAndMissingFinalNewline) {
  std::string crlf;
  for (int b = 0; b < 256; ++b) absl::StrAppendFormat(&crlf, "%d b'\\x%02x' 1\r\n", b + 1, b);
  crlf += "300 'ab' 2";  // ids may skip; no final newline
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Load(crlf);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->TokenBytes(300), "ab");
  EXPECT_EQ((*tok)->TokenBytes(299), "");
  EXPECT_EQ((*tok)->Encode("abc"), (std::vector<int32_t>{300, 'c' + 1}));
}

TEST_F(VocabParserTest, MissingFileIsNotFound) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok =
      LoadWorldTokenizer(::testing::TempDir() + "/definitely_not_a_vocab_file.txt");
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kNotFound) << tok.status();
}

TEST_F(VocabParserTest, EmptyFileIsAnError) { ExpectError("", 0, "no tokens"); }

TEST_F(VocabParserTest, BadLiterals) {
  const std::string base = ByteLines();
  ExpectError(base + "257 'ab 3\n", 257, "unterminated");
  ExpectError(base + "257 'ab\\' 3\n", 257, "unterminated");
  ExpectError(base + "257 ab 2\n", 257, "expected a Python str or bytes literal");
  ExpectError(base + "257 r'ab' 2\n", 257, "expected a Python str or bytes literal");
  ExpectError(base + "257 'a'b' 3\n", 257, "unescaped quote");
  ExpectError(base + "257 'a\\qb' 2\n", 257, "unrecognized escape");
  ExpectError(base + "257 '\\x4' 1\n", 257, "truncated \\x");
  ExpectError(base + "257 '\\u12' 1\n", 257, "truncated \\u");
  ExpectError(base + "257 '\\U0001F60' 4\n", 257, "truncated \\U");
  ExpectError(base + "257 '\\U00110000' 4\n", 257, "beyond U+10FFFF");
  ExpectError(base + "257 '\\ud83d\\ude00' 4\n", 257, "surrogate");
  ExpectError(base + "257 b'\\u00e9' 2\n", 257, "escape in bytes literal");
  ExpectError(base + "257 b'\xc3\xa9' 2\n", 257, "non-ASCII character in bytes literal");
  ExpectError(base + "257 b'\\777' 1\n", 257, "out of range in bytes literal");
  ExpectError(base + "257 '\xc3' 1\n", 257, "not valid UTF-8");
  ExpectError(base + "257 '\\N{BULLET}' 3\n", 257, "\\N{");
  ExpectError(base + "257 '' 0\n", 257, "empty");
}

TEST_F(VocabParserTest, WrongLength) {
  const std::string base = ByteLines();
  ExpectError(base + "257 'ab' 3\n", 257, "has 2 bytes but the line says 3");
  ExpectError(base + "257 '\\x80\\x80' 2\n", 257, "has 4 bytes");  // str \x80 is 2 bytes
  ExpectError(base + "257 '\\u4e2d' 1\n", 257, "has 3 bytes");
}

TEST_F(VocabParserTest, NonIncreasingIds) {
  const std::string base = ByteLines();
  ExpectError(base + "257 'ab' 2\n257 'cd' 2\n", 258, "not greater than the previous id 257");
  ExpectError(base + "257 'ab' 2\n200 'cd' 2\n", 258, "not greater than the previous id 257");
  ExpectError("0 'ab' 2\n" + base, 1, "not greater");
}

TEST_F(VocabParserTest, TruncatedAndMalformedLines) {
  const std::string base = ByteLines();
  ExpectError(base + "257 'ab'\n", 257, "truncated line");
  ExpectError(base + "257\n", 257, "truncated line");
  ExpectError(base + "257 'a b'\n", 257, "bad byte length");
  ExpectError(base + "257 'ab' 2x\n", 257, "bad byte length");
  ExpectError(base + "x57 'ab' 2\n", 257, "bad token id");
  ExpectError(base + "-5 'ab' 2\n", 257, "bad token id");
  ExpectError(base + "\n257 'ab' 2\n", 257, "empty line");
  ExpectError(base + "99999999 'ab' 2\n", 257, "too large");
  // The file cut mid-line (no final newline) reads as a truncated line.
  ExpectError(base + "257 'abc", 257, "truncated line");
}

TEST_F(VocabParserTest, DuplicateTokensAndMissingBytes) {
  ExpectError(ByteLines() + "257 'ab' 2\n258 'a' 1\n", 258, "same bytes as token 98");
  std::string missing;
  for (int b = 0; b < 256; ++b) {
    if (b != 0x41) absl::StrAppendFormat(&missing, "%d b'\\x%02x' 1\n", b + 1, b);
  }
  ExpectError(missing, 0, "no token for the single byte 0x41");
}

}  // namespace
}  // namespace rwkv
