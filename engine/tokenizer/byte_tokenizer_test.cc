// Tests for the byte-level tokenizer.
//
// Why: the tiny rwkv.cpp test models use ids = bytes; a mistake here (signed
// char, off-by-one range) would corrupt every byte above 0x7F.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/tokenizer/stream_decoder.h"
#include "engine/tokenizer/tokenizer.h"
#include "gtest/gtest.h"

namespace rwkv {
namespace {

TEST(ByteTokenizerTest, Properties) {
  std::unique_ptr<Tokenizer> tok = MakeByteTokenizer();
  EXPECT_EQ(tok->vocab_size(), 256);
  EXPECT_EQ(tok->end_of_text_id(), -1);
  EXPECT_EQ(tok->name(), "byte");
}

TEST(ByteTokenizerTest, RoundTripsAll256Bytes) {
  std::unique_ptr<Tokenizer> tok = MakeByteTokenizer();
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  const std::vector<int32_t> ids = tok->Encode(all);
  ASSERT_EQ(ids.size(), 256u);
  for (int b = 0; b < 256; ++b) {
    EXPECT_EQ(ids[b], b);
    ASSERT_EQ(tok->TokenBytes(b).size(), 1u);
    EXPECT_EQ(static_cast<unsigned char>(tok->TokenBytes(b)[0]), b);
  }
  absl::StatusOr<std::string> decoded = tok->Decode(ids);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(*decoded, all);
}

TEST(ByteTokenizerTest, EncodesNulAndHighBytes) {
  std::unique_ptr<Tokenizer> tok = MakeByteTokenizer();
  EXPECT_EQ(tok->Encode(std::string("\0a\xff", 3)), (std::vector<int32_t>{0, 97, 255}));
  EXPECT_TRUE(tok->Encode("").empty());
}

TEST(ByteTokenizerTest, DecodeRejectsOutOfRangeIds) {
  std::unique_ptr<Tokenizer> tok = MakeByteTokenizer();
  for (int32_t bad : {-1, 256, 65535}) {
    absl::StatusOr<std::string> decoded = tok->Decode({65, bad});
    ASSERT_FALSE(decoded.ok());
    EXPECT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(decoded.status().message().find(std::to_string(bad)), std::string::npos) << decoded.status();
  }
  EXPECT_TRUE(tok->TokenBytes(-1).empty());
  EXPECT_TRUE(tok->TokenBytes(256).empty());
}

TEST(ByteTokenizerTest, StreamsMultiByteCharacters) {
  std::unique_ptr<Tokenizer> tok = MakeByteTokenizer();
  StreamDecoder decoder(*tok);
  std::string text;
  for (int32_t id : tok->Encode("a\xE2\x82\xAC")) {  // "a€"
    const std::string chunk = decoder.Push(id);
    EXPECT_TRUE(IsValidUtf8(chunk));
    text += chunk;
  }
  text += decoder.Finish();
  EXPECT_EQ(text, "a\xE2\x82\xAC");
}

}  // namespace
}  // namespace rwkv
