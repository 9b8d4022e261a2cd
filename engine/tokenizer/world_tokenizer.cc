// The RWKV "World" tokenizer: vocabulary parser and greedy longest-match encoder.
//
// Why: RWKV World models (v4 World through v7 G1) use a 65536-id vocabulary
// whose encoding is a greedy longest match over the UTF-8 bytes of the text.
// The vocabulary ships as a text file of Python literals, so this file parses
// those literals exactly (str and bytes, every escape the file format can use)
// and cross-checks each token against its stated byte length; a wrong parse
// would silently change ids. Encoding walks a flat, array-based trie (nodes in
// breadth-first order so each node's children are contiguous; nodes with many
// children get a dense 256-entry table), which encodes megabytes per second
// without per-call allocation beyond the output.
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "engine/tokenizer/stream_decoder.h"
#include "engine/tokenizer/tokenizer.h"

namespace rwkv {
namespace {

constexpr int32_t kWorldVocabSize = 65536;
// Ids above this are rejected as implausible (keeps a corrupt file from
// allocating gigabytes).
constexpr int64_t kMaxTokenId = (int64_t{1} << 24) - 1;
constexpr uint32_t kNoDense = std::numeric_limits<uint32_t>::max();
// Nodes with more children than this get a dense 256-entry child table.
constexpr int kDenseThreshold = 12;

// The system Abseil's string_view is its own type, so StrCat needs this.
absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// ---------------------------------------------------------------------------
// Python literal parsing.

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Reads exactly `digits` hex digits from body[*i...], advancing *i.
absl::Status ReadHex(std::string_view body, size_t* i, int digits, char escape, uint32_t* value) {
  uint32_t v = 0;
  for (int d = 0; d < digits; ++d) {
    if (*i >= body.size() || HexValue(body[*i]) < 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("truncated \\%c escape: expected %d hex digits", escape, digits));
    }
    v = (v << 4) | static_cast<uint32_t>(HexValue(body[*i]));
    ++*i;
  }
  *value = v;
  return absl::OkStatus();
}

// Parses one Python str ('...', "...", optional u prefix) or bytes (b'...')
// literal into the token's bytes; str literals are UTF-8-encoded. Unknown
// escapes, \N{...}, raw prefixes and triple quotes are rejected (the
// vocabulary never uses them, so meeting one means the file is damaged).
absl::Status ParsePythonLiteral(std::string_view lit, std::string* out) {
  out->clear();
  bool is_bytes = false;
  size_t pos = 0;
  if (pos < lit.size() && (lit[pos] == 'b' || lit[pos] == 'B')) {
    is_bytes = true;
    ++pos;
  } else if (pos < lit.size() && (lit[pos] == 'u' || lit[pos] == 'U')) {
    ++pos;
  }
  if (pos >= lit.size() || (lit[pos] != '\'' && lit[pos] != '"')) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected a Python str or bytes literal, got `", Av(lit), "`"));
  }
  const char quote = lit[pos];
  if (lit.size() < pos + 2 || lit.back() != quote) {
    return absl::InvalidArgumentError(absl::StrCat("unterminated literal `", Av(lit), "`"));
  }
  const std::string_view body = lit.substr(pos + 1, lit.size() - pos - 2);
  if (!is_bytes && !IsValidUtf8(body)) {
    return absl::InvalidArgumentError("str literal is not valid UTF-8");
  }
  size_t i = 0;
  while (i < body.size()) {
    const char c = body[i];
    if (c == quote) {
      return absl::InvalidArgumentError(absl::StrCat("unescaped quote inside literal `", Av(lit), "`"));
    }
    if (c != '\\') {
      if (is_bytes && static_cast<unsigned char>(c) >= 0x80) {
        return absl::InvalidArgumentError("non-ASCII character in bytes literal");
      }
      out->push_back(c);
      ++i;
      continue;
    }
    if (i + 1 >= body.size()) {
      // The backslash escapes the closing quote.
      return absl::InvalidArgumentError(absl::StrCat("unterminated literal `", Av(lit), "`"));
    }
    const char e = body[i + 1];
    i += 2;
    uint32_t cp = 0;
    switch (e) {
      case '\\': out->push_back('\\'); continue;
      case '\'': out->push_back('\''); continue;
      case '"': out->push_back('"'); continue;
      case 'a': out->push_back('\a'); continue;
      case 'b': out->push_back('\b'); continue;
      case 'f': out->push_back('\f'); continue;
      case 'n': out->push_back('\n'); continue;
      case 'r': out->push_back('\r'); continue;
      case 't': out->push_back('\t'); continue;
      case 'v': out->push_back('\v'); continue;
      case '0': case '1': case '2': case '3': case '4': case '5': case '6': case '7': {
        cp = static_cast<uint32_t>(e - '0');
        for (int d = 1; d < 3 && i < body.size() && body[i] >= '0' && body[i] <= '7'; ++d, ++i) {
          cp = cp * 8 + static_cast<uint32_t>(body[i] - '0');
        }
        if (is_bytes) {
          if (cp > 0xFF) {
            return absl::InvalidArgumentError(absl::StrFormat("octal escape \\%o out of range in bytes literal", cp));
          }
          out->push_back(static_cast<char>(cp));
        } else {
          AppendUtf8(cp, out);
        }
        continue;
      }
      case 'x': {
        absl::Status s = ReadHex(body, &i, 2, 'x', &cp);
        if (!s.ok()) return s;
        if (is_bytes) {
          out->push_back(static_cast<char>(cp));
        } else {
          AppendUtf8(cp, out);
        }
        continue;
      }
      case 'u':
      case 'U': {
        if (is_bytes) {
          return absl::InvalidArgumentError(absl::StrCat("\\", std::string(1, e), " escape in bytes literal"));
        }
        absl::Status s = ReadHex(body, &i, e == 'u' ? 4 : 8, e, &cp);
        if (!s.ok()) return s;
        if (cp > 0x10FFFF) {
          return absl::InvalidArgumentError(absl::StrFormat("\\U%08X is beyond U+10FFFF", cp));
        }
        if (cp >= 0xD800 && cp <= 0xDFFF) {
          return absl::InvalidArgumentError(
              absl::StrFormat("surrogate U+%04X cannot be encoded as UTF-8", cp));
        }
        AppendUtf8(cp, out);
        continue;
      }
      case 'N':
        return absl::InvalidArgumentError("\\N{...} escapes are not supported");
      default:
        return absl::InvalidArgumentError(
            absl::StrFormat("unrecognized escape \\%c (0x%02X)", e, static_cast<unsigned char>(e)));
    }
  }
  return absl::OkStatus();
}

// Parses a non-negative decimal number of at most 9 digits.
bool ParseDecimal(std::string_view s, int64_t* value) {
  if (s.empty() || s.size() > 9) return false;
  int64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  *value = v;
  return true;
}

// ---------------------------------------------------------------------------
// The tokenizer.

struct TrieNode {
  int32_t token = -1;           // id of the token ending here, or -1
  uint32_t first_child = 0;     // index of the first child; children are contiguous
  uint32_t dense = kNoDense;    // offset of this node's 256-entry table in dense_, or kNoDense
  uint16_t num_children = 0;
};

class WorldTokenizer final : public Tokenizer {
 public:
  // Builds from tokens[id] = bytes (empty: no token). Fails on duplicates and
  // on single bytes without a token.
  static absl::StatusOr<std::unique_ptr<WorldTokenizer>> Create(const std::vector<std::string>& tokens,
                                                                const std::vector<int>& line_of_id,
                                                                const std::string& path);

  std::vector<int32_t> Encode(std::string_view bytes) const override;
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids) const override;

  std::string_view TokenBytes(int32_t id) const override {
    if (id < 0 || id >= vocab_size_) return {};
    return std::string_view(arena_).substr(offsets_[id], offsets_[id + 1] - offsets_[id]);
  }

  int32_t vocab_size() const override { return vocab_size_; }
  int32_t end_of_text_id() const override { return 0; }
  std::string name() const override { return "world"; }

 private:
  int32_t Child(int32_t node, uint8_t byte) const {
    const TrieNode& n = nodes_[node];
    if (n.dense != kNoDense) return dense_[n.dense + byte];
    const uint32_t end = n.first_child + n.num_children;
    for (uint32_t c = n.first_child; c < end; ++c) {
      const uint8_t label = labels_[c];
      if (label == byte) return static_cast<int32_t>(c);
      if (label > byte) break;
    }
    return -1;
  }

  int32_t vocab_size_ = 0;
  std::string arena_;              // all token bytes, concatenated by id
  std::vector<uint32_t> offsets_;  // vocab_size_ + 1 offsets into arena_
  std::vector<TrieNode> nodes_;    // node 0 is the root
  std::vector<uint8_t> labels_;    // labels_[n]: the byte on the edge into node n
  std::vector<int32_t> dense_;     // 256-entry child tables (child index or -1)
};

absl::StatusOr<std::unique_ptr<WorldTokenizer>> WorldTokenizer::Create(const std::vector<std::string>& tokens,
                                                                       const std::vector<int>& line_of_id,
                                                                       const std::string& path) {
  auto tok = std::make_unique<WorldTokenizer>();
  tok->vocab_size_ = static_cast<int32_t>(tokens.size());
  tok->offsets_.resize(tokens.size() + 1);
  size_t total = 0;
  for (const std::string& t : tokens) total += t.size();
  tok->arena_.reserve(total);
  for (size_t id = 0; id < tokens.size(); ++id) {
    tok->offsets_[id] = static_cast<uint32_t>(tok->arena_.size());
    tok->arena_ += tokens[id];
  }
  tok->offsets_[tokens.size()] = static_cast<uint32_t>(tok->arena_.size());

  // Build a pointer-style trie first, then flatten it breadth-first.
  struct BuildNode {
    int32_t token = -1;
    std::vector<std::pair<uint8_t, int32_t>> kids;
  };
  std::vector<BuildNode> build(1);
  build.reserve(total + 1);
  for (size_t id = 0; id < tokens.size(); ++id) {
    const std::string& t = tokens[id];
    if (t.empty()) continue;
    int32_t node = 0;
    for (char ch : t) {
      const uint8_t b = static_cast<uint8_t>(ch);
      int32_t next = -1;
      for (const auto& [label, kid] : build[node].kids) {
        if (label == b) {
          next = kid;
          break;
        }
      }
      if (next < 0) {
        next = static_cast<int32_t>(build.size());
        build[node].kids.emplace_back(b, next);
        build.emplace_back();
      }
      node = next;
    }
    if (build[node].token >= 0) {
      return absl::InvalidArgumentError(absl::StrFormat("%s:%d: token %d has the same bytes as token %d (line %d)",
                                                        path, line_of_id[id], id, build[node].token,
                                                        line_of_id[build[node].token]));
    }
    build[node].token = static_cast<int32_t>(id);
  }

  tok->nodes_.resize(build.size());
  tok->labels_.assign(build.size(), 0);
  std::vector<int32_t> order;  // order[new index] = build index
  order.reserve(build.size());
  order.push_back(0);
  for (size_t n = 0; n < order.size(); ++n) {
    BuildNode& src = build[order[n]];
    std::sort(src.kids.begin(), src.kids.end());
    TrieNode& dst = tok->nodes_[n];
    dst.token = src.token;
    dst.first_child = static_cast<uint32_t>(order.size());
    dst.num_children = static_cast<uint16_t>(src.kids.size());
    const bool dense = n == 0 || src.kids.size() > static_cast<size_t>(kDenseThreshold);
    if (dense) {
      dst.dense = static_cast<uint32_t>(tok->dense_.size());
      tok->dense_.resize(tok->dense_.size() + 256, -1);
    }
    for (const auto& [label, kid] : src.kids) {
      const auto index = static_cast<int32_t>(order.size());
      tok->labels_[index] = label;
      if (dense) tok->dense_[dst.dense + label] = index;
      order.push_back(kid);
    }
  }

  for (int b = 0; b < 256; ++b) {
    const int32_t child = tok->Child(0, static_cast<uint8_t>(b));
    if (child < 0 || tok->nodes_[child].token < 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: the vocabulary has no token for the single byte 0x%02X, so not every byte string "
                          "is encodable",
                          path, b));
    }
  }
  return tok;
}

std::vector<int32_t> WorldTokenizer::Encode(std::string_view bytes) const {
  std::vector<int32_t> ids;
  ids.reserve(bytes.size() / 3 + 1);
  const auto* data = reinterpret_cast<const uint8_t*>(bytes.data());
  const size_t n = bytes.size();
  size_t pos = 0;
  while (pos < n) {
    // Every single byte is a token (checked at load), so the first step always
    // finds one.
    int32_t node = dense_[nodes_[0].dense + data[pos]];  // the root is always dense
    int32_t best_id = nodes_[node].token;
    size_t best_end = pos + 1;
    for (size_t i = pos + 1; i < n; ++i) {
      node = Child(node, data[i]);
      if (node < 0) break;
      if (nodes_[node].token >= 0) {
        best_id = nodes_[node].token;
        best_end = i + 1;
      }
    }
    ids.push_back(best_id);
    pos = best_end;
  }
  return ids;
}

absl::StatusOr<std::string> WorldTokenizer::Decode(absl::Span<const int32_t> ids) const {
  size_t total = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    if (id < 0 || id >= vocab_size_) {
      return absl::InvalidArgumentError(absl::StrCat("world tokenizer: token id ", id, " at position ", i,
                                                     " is out of range [0, ", vocab_size_, ")"));
    }
    total += offsets_[id + 1] - offsets_[id];
  }
  std::string out;
  out.reserve(total);
  for (const int32_t id : ids) out.append(arena_, offsets_[id], offsets_[id + 1] - offsets_[id]);
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadWorldTokenizer(const std::string& vocab_path) {
  std::error_code ec;
  if (!std::filesystem::exists(vocab_path, ec)) {
    return absl::NotFoundError(absl::StrCat("World vocab file not found: ", vocab_path));
  }
  if (!std::filesystem::is_regular_file(vocab_path, ec)) {
    return absl::InvalidArgumentError(absl::StrCat("World vocab path is not a regular file: ", vocab_path));
  }
  std::ifstream in(vocab_path, std::ios::binary);
  if (!in) {
    return absl::PermissionDeniedError(absl::StrCat("cannot open World vocab file: ", vocab_path));
  }
  const std::string contents((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) {
    return absl::DataLossError(absl::StrCat("error reading World vocab file: ", vocab_path));
  }

  std::vector<std::string> tokens(kWorldVocabSize);
  std::vector<int> line_of_id(kWorldVocabSize, 0);
  int64_t prev_id = 0;
  int num_tokens = 0;
  std::string bytes;
  const std::string_view all(contents);
  size_t start = 0;
  int line_no = 0;
  while (start < all.size()) {
    size_t end = all.find('\n', start);
    if (end == std::string_view::npos) end = all.size();  // last line without a newline
    std::string_view line = all.substr(start, end - start);
    start = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    auto error = [&](const std::string& message) {
      // The message may quote raw bytes of a damaged line: keep it valid UTF-8.
      return absl::InvalidArgumentError(absl::StrFormat("%s:%d: %s", vocab_path, line_no, SanitizeUtf8(message)));
    };
    if (line.empty()) return error("empty line");
    const size_t first_space = line.find(' ');
    const size_t last_space = line.rfind(' ');
    if (first_space == std::string_view::npos || first_space == last_space) {
      return error(absl::StrCat("truncated line `", Av(line), "`: expected `<id> <literal> <byte length>`"));
    }
    int64_t id = 0;
    int64_t length = 0;
    if (!ParseDecimal(line.substr(0, first_space), &id)) {
      return error(absl::StrCat("bad token id `", Av(line.substr(0, first_space)), "`"));
    }
    if (!ParseDecimal(line.substr(last_space + 1), &length)) {
      return error(absl::StrCat("bad byte length `", Av(line.substr(last_space + 1)),
                                "` (truncated line?)"));
    }
    if (id <= prev_id) {
      return error(absl::StrCat("token id ", id, " is not greater than the previous id ", prev_id,
                                " (ids start at 1 and must increase)"));
    }
    if (id > kMaxTokenId) return error(absl::StrCat("token id ", id, " is too large"));
    const std::string_view literal = line.substr(first_space + 1, last_space - first_space - 1);
    if (absl::Status s = ParsePythonLiteral(literal, &bytes); !s.ok()) {
      return error(absl::StrCat("token ", id, ": ", s.message()));
    }
    if (static_cast<int64_t>(bytes.size()) != length) {
      return error(absl::StrCat("token ", id, ": literal ", Av(literal), " has ", bytes.size(),
                                " bytes but the line says ", length));
    }
    if (bytes.empty()) return error(absl::StrCat("token ", id, " is empty"));
    if (id >= static_cast<int64_t>(tokens.size())) {
      tokens.resize(id + 1);
      line_of_id.resize(id + 1, 0);
    }
    tokens[id] = bytes;
    line_of_id[id] = line_no;
    prev_id = id;
    ++num_tokens;
  }
  if (num_tokens == 0) {
    return absl::InvalidArgumentError(absl::StrCat("World vocab file has no tokens: ", vocab_path));
  }
  absl::StatusOr<std::unique_ptr<WorldTokenizer>> tok = WorldTokenizer::Create(tokens, line_of_id, vocab_path);
  if (!tok.ok()) return tok.status();
  return std::unique_ptr<Tokenizer>(std::move(*tok));
}

}  // namespace rwkv
