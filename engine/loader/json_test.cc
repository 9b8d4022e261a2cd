// Tests of the strict JSON parser used for safetensors headers.
//
// Why: the header is untrusted input; the parser must accept exactly JSON,
// keep integers exact and refuse deep nesting and duplicate keys.
#include "engine/loader/json.h"

#include <string>

#include "gtest/gtest.h"

namespace rwkv::loader_internal {
namespace {

TEST(JsonTest, ParsesValuesInOrder) {
  absl::StatusOr<JsonValue> v = ParseJson(
      R"( {"b": [1, -2, 9223372036854775807, 1.5e3, 18446744073709551616],
           "a": {"s": "x\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00", "t": true, "f": false, "n": null}} )");
  ASSERT_TRUE(v.ok()) << v.status();
  ASSERT_EQ(v->object.size(), 2u);
  EXPECT_EQ(v->object[0].first, "b");
  const JsonValue& b = v->object[0].second;
  ASSERT_EQ(b.array.size(), 5u);
  EXPECT_TRUE(b.array[0].is_int);
  EXPECT_EQ(b.array[1].integer, -2);
  EXPECT_EQ(b.array[2].integer, INT64_MAX);
  EXPECT_FALSE(b.array[3].is_int);
  EXPECT_EQ(b.array[3].number, 1500.0);
  EXPECT_FALSE(b.array[4].is_int);  // beyond int64: not an exact integer
  const JsonValue* a = v->Get("a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->Get("s")->str, "x\"\\/\b\f\n\r\t\xc3\xa9\xf0\x9f\x98\x80");
  EXPECT_TRUE(a->Get("t")->boolean);
  EXPECT_EQ(a->Get("n")->type, JsonValue::Type::kNull);
  EXPECT_EQ(a->Get("missing"), nullptr);
}

TEST(JsonTest, RefusesMalformedInput) {
  for (const char* bad : {"",
                          "{",
                          "{\"a\":1,}",
                          "{\"a\" 1}",
                          "[1 2]",
                          "01",
                          "1.",
                          "-",
                          "1e",
                          "tru",
                          "\"\\x\"",
                          "\"\\ud800\"",
                          "\"\\udc00\"",
                          "\"a\nb\"",
                          "{\"a\":1}x",
                          "{\"a\":1,\"a\":2}",
                          "\"\xff\"",
                          "\"\xc0\x80\"",
                          "\"\xed\xa0\x80\"",
                          "{1:2}",
                          "[",
                          "\"abc",
                          "nul"}) {
    EXPECT_FALSE(ParseJson(bad).ok()) << bad;
  }
}

TEST(JsonTest, RefusesDeepNesting) {
  std::string deep(100000, '[');
  absl::StatusOr<JsonValue> v = ParseJson(deep);
  ASSERT_FALSE(v.ok());
  EXPECT_NE(v.status().message().find("too deep"), std::string::npos);
  EXPECT_TRUE(ParseJson("[[[[1]]]]", 4).ok());
  EXPECT_FALSE(ParseJson("[[[[[1]]]]]", 4).ok());
}

}  // namespace
}  // namespace rwkv::loader_internal
