// rwkv-state-drift: how far fp16 state moves a model's logits from fp32 state.
//
// Why: fp16 state (ModelLoadOptions::state_dtype) halves the bytes of a
// session, and the price is rounding in the recurrence, which accumulates
// with the context. This tool loads the same model twice on the same backend
// (fp32 state and fp16 state), feeds both the same token stream, and prints,
// after tokens 1, 64, 256, 1024 and 4096 (--at), max |logit_fp16 - logit_fp32|
// / std(logit_fp32) and whether the two argmaxes agree, plus the worst ratio
// and the argmax agreement over every token so far. Teacher-forced: both
// models see the same tokens, so the numbers measure the state alone.
//
// Tokens: --text FILE tokenized with --vocab FILE (World) or --byte-vocab
// (the default for a 256-token model), repeated if shorter than --tokens; or,
// without --text, a deterministic stream: x <- x * 1664525 + 1013904223 from
// x = 7 * 2654435761 + 1 (mod 2^32), token (x >> 8) mod vocab, the stream the
// model tests use. Tokens are fed in chunks of --chunk rows with logits for
// every row (results do not depend on the chunking: fp16 state is rounded
// after every token).
//
// --max-drift X makes it a check: exit 1 unless the worst ratio stays under X
// and every checkpoint's argmax agrees (used by ctest on the CPU).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "engine/model/backend_factory.h"
#include "engine/model/model.h"
#include "engine/tokenizer/tokenizer.h"

namespace rwkv {
namespace {

struct Flags {
  std::string model;
  std::string backend = "cpu";
  std::string weight_dtype = "f16";
  int threads = 0;
  int tokens = 4096;
  int chunk = 256;
  std::vector<int> at = {1, 64, 256, 1024, 4096};
  std::string text, vocab;
  bool byte_vocab = false;
  double max_drift = -1;  // < 0: report only
  bool help = false;
};

constexpr char kUsage[] = R"(usage: rwkv-state-drift --model FILE|synthetic:SIZE [--backend cpu|cuda|auto]
                        [--weight-dtype f16|bf16|f32] [--threads N] [--tokens 4096] [--chunk 256]
                        [--at 1,64,256,1024,4096] [--text FILE [--vocab FILE | --byte-vocab]]
                        [--max-drift X]

Feeds the same tokens through the model with fp32 state and with fp16 state on one
backend and prints max |logit diff| / std(fp32 logits) and argmax agreement at the
--at tokens. Without --text the tokens are a deterministic pseudo-random stream.
  --backend       cpu (default), cuda or auto
  --weight-dtype  how the CUDA backend stores matrices (default f16; the CPU's are f32)
  --threads       CPU threads (default: all cores)
  --tokens        tokens to feed (default 4096)
  --chunk         tokens per Forward call (default 256)
  --at            comma-separated token counts to report at (default 1,64,256,1024,4096)
  --text          a text file to tokenize (repeated to --tokens), with --vocab FILE (World)
                  or --byte-vocab (byte tokens; the default for a 256-token model)
  --max-drift     exit 1 unless the worst ratio < X and the reported argmaxes agree
)";

absl::StatusOr<Flags> Parse(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    std::string name = argv[i], v;
    if (name == "--help" || name == "-h") {
      f.help = true;
      continue;
    }
    if (name == "--byte-vocab") {
      f.byte_vocab = true;
      continue;
    }
    bool inline_value = false;
    if (const size_t eq = name.find('='); eq != std::string::npos) {
      v = name.substr(eq + 1);
      name = name.substr(0, eq);
      inline_value = true;
    }
    // An unknown flag is named as such, not taken for one missing its value.
    static const char* const kValueFlags[] = {"--model", "--backend", "--weight-dtype", "--threads", "--tokens",
                                              "--chunk",  "--at",      "--text",         "--vocab",   "--max-drift"};
    if (std::find(std::begin(kValueFlags), std::end(kValueFlags), name) == std::end(kValueFlags)) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag '", name, "' (see --help)"));
    }
    if (inline_value) {
      // --name=value
    } else if (i + 1 < argc) {
      v = argv[++i];
    } else {
      return absl::InvalidArgumentError(absl::StrCat(name, ": missing value"));
    }
    const auto bad = [&](const char* want) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": expected ", want, ", got '", v, "'"));
    };
    if (name == "--model") {
      f.model = v;
    } else if (name == "--backend") {
      if (v != "cpu" && v != "cuda" && v != "auto") return bad("cpu, cuda or auto");
      f.backend = v;
    } else if (name == "--weight-dtype") {
      if (!ParseWeightDType(v).ok()) return bad("f16, bf16 or f32");
      f.weight_dtype = v;
    } else if (name == "--threads") {
      if (!absl::SimpleAtoi(v, &f.threads) || f.threads < 1) return bad("a positive integer");
    } else if (name == "--tokens") {
      if (!absl::SimpleAtoi(v, &f.tokens) || f.tokens < 1 || f.tokens > (1 << 24)) return bad("1 .. 16777216");
    } else if (name == "--chunk") {
      if (!absl::SimpleAtoi(v, &f.chunk) || f.chunk < 1 || f.chunk > 4096) return bad("1 .. 4096");
    } else if (name == "--at") {
      f.at.clear();
      for (absl::string_view p : absl::StrSplit(v, ',', absl::SkipWhitespace())) {
        int t;
        if (!absl::SimpleAtoi(p, &t) || t < 1) return bad("comma-separated token counts >= 1");
        f.at.push_back(t);
      }
      if (f.at.empty()) return bad("at least one token count");
      std::sort(f.at.begin(), f.at.end());
    } else if (name == "--text") {
      f.text = v;
    } else if (name == "--vocab") {
      f.vocab = v;
    } else if (name == "--max-drift") {
      if (!absl::SimpleAtod(v, &f.max_drift) || !(f.max_drift > 0)) return bad("a positive number");
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag '", name, "' (see --help)"));
    }
  }
  if (!f.help && f.model.empty()) return absl::InvalidArgumentError("--model is required");
  if (!f.vocab.empty() && f.byte_vocab) return absl::InvalidArgumentError("--vocab and --byte-vocab exclude each other");
  return f;
}

absl::StatusOr<std::vector<int32_t>> MakeTokens(const Flags& f, int vocab_size, std::string* source) {
  std::vector<int32_t> out;
  out.reserve(static_cast<size_t>(f.tokens));
  if (f.text.empty()) {
    uint32_t x = 7u * 2654435761u + 1;
    while (static_cast<int>(out.size()) < f.tokens) {
      x = x * 1664525u + 1013904223u;
      out.push_back(static_cast<int32_t>((x >> 8) % static_cast<uint32_t>(vocab_size)));
    }
    *source = "a deterministic pseudo-random token stream";
    return out;
  }
  std::ifstream in(f.text, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read --text ", f.text));
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::unique_ptr<Tokenizer> tok;
  if (!f.vocab.empty()) {
    auto t = LoadWorldTokenizer(f.vocab);
    if (!t.ok()) return t.status();
    tok = *std::move(t);
  } else if (f.byte_vocab || vocab_size == 256) {
    tok = MakeByteTokenizer();
  } else {
    return absl::InvalidArgumentError("--text needs --vocab FILE or --byte-vocab");
  }
  if (tok->vocab_size() > vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("the ", tok->name(), " vocabulary has ", tok->vocab_size(),
                                                   " tokens but the model only ", vocab_size));
  }
  const std::vector<int32_t> ids = tok->Encode(bytes);
  if (ids.empty()) return absl::InvalidArgumentError(absl::StrCat("--text ", f.text, " is empty"));
  while (static_cast<int>(out.size()) < f.tokens) {
    const size_t take = std::min(ids.size(), static_cast<size_t>(f.tokens) - out.size());
    out.insert(out.end(), ids.begin(), ids.begin() + static_cast<int64_t>(take));
  }
  *source = absl::StrCat(f.text, " (", tok->name(), " tokens: ", ids.size(),
                         ids.size() < static_cast<size_t>(f.tokens) ? ", repeated)" : ")");
  return out;
}

absl::StatusOr<std::unique_ptr<Model>> Load(const Flags& f, DType state, std::string* note) {
  auto weights = ParseWeightDType(f.weight_dtype);
  if (!weights.ok()) return weights.status();
  const int threads = f.threads > 0 ? f.threads : DefaultThreads();
  auto backend = MakeBackend({f.backend, threads, *weights}, note);
  if (!backend.ok()) return backend.status();
  auto m = Model::Load(f.model, *std::move(backend), {.progress = false, .state_dtype = state});
  if (!m.ok()) return m.status();
  if (absl::Status s = (*m)->AllocateSlots(1); !s.ok()) return s;
  return m;
}

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "rwkv-state-drift: %s\n", s.ToString().c_str());
  return 2;
}

int Run(const Flags& f) {
  std::string note;
  auto m32 = Load(f, DType::kF32, &note);
  if (!m32.ok()) return Fail(m32.status());
  auto m16 = Load(f, DType::kF16, &note);
  if (!m16.ok()) return Fail(m16.status());
  const ModelConfig& cfg = (*m32)->config();
  const int V = cfg.vocab_size;
  std::string source;
  auto tokens = MakeTokens(f, V, &source);
  if (!tokens.ok()) return Fail(tokens.status());
  std::printf("rwkv-state-drift: %s (%s)\n%s; weights %s\n", f.model.c_str(), cfg.ToString().c_str(), note.c_str(),
              std::string(DTypeName((*m32)->weight_dtype())).c_str());
  std::printf("state per session: fp32 %.3f MB, fp16 %.3f MB\n", (*m32)->slot_bytes() / 1e6,
              (*m16)->slot_bytes() / 1e6);
  std::printf("tokens: %d of %s, fed %d per call, same tokens to both (teacher-forced)\n\n", f.tokens,
              source.c_str(), f.chunk);
  std::printf("%7s %16s %8s %8s %6s   %16s %12s\n", "token", "max|dlogit|/std", "argmax32", "argmax16", "agree",
              "worst so far", "agree so far");

  double worst = 0;
  int64_t agree_total = 0;
  bool checkpoints_agree = true;
  size_t next_at = 0;
  std::vector<float> l32, l16;
  for (int begin = 0; begin < f.tokens; begin += f.chunk) {
    const int n = std::min(f.chunk, f.tokens - begin);
    const absl::Span<const int32_t> span(tokens->data() + begin, static_cast<size_t>(n));
    const ForwardRequest r{0, span, true};
    if (absl::Status s = (*m32)->Forward({&r, 1}, &l32); !s.ok()) return Fail(s);
    if (absl::Status s = (*m16)->Forward({&r, 1}, &l16); !s.ok()) return Fail(s);
    for (int t = 0; t < n; ++t) {
      const float* a = l32.data() + static_cast<size_t>(t) * V;
      const float* b = l16.data() + static_cast<size_t>(t) * V;
      double mean = 0, var = 0, diff = 0;
      for (int i = 0; i < V; ++i) mean += a[i];
      mean /= V;
      for (int i = 0; i < V; ++i) {
        var += (a[i] - mean) * (a[i] - mean);
        const double d = std::fabs(static_cast<double>(a[i]) - b[i]);
        diff = std::isnan(d) ? INFINITY : std::max(diff, d);
      }
      const double ratio = diff / std::sqrt(var / V);
      const int arg32 = static_cast<int>(std::max_element(a, a + V) - a);
      const int arg16 = static_cast<int>(std::max_element(b, b + V) - b);
      worst = std::max(worst, ratio);
      agree_total += arg32 == arg16;
      const int count = begin + t + 1;  // tokens fed so far
      if (next_at < f.at.size() && f.at[next_at] == count) {
        checkpoints_agree = checkpoints_agree && arg32 == arg16;
        std::printf("%7d %16.4g %8d %8d %6s   %16.4g %6lld/%-6d\n", count, ratio, arg32, arg16,
                    arg32 == arg16 ? "yes" : "NO", worst, static_cast<long long>(agree_total), count);
        std::fflush(stdout);
        ++next_at;
      }
    }
  }
  if (next_at < f.at.size()) std::printf("(--at beyond --tokens %d skipped)\n", f.tokens);
  if (f.max_drift > 0) {
    const bool ok = worst < f.max_drift && checkpoints_agree;
    std::printf("\ncheck: worst %.4g %s %.4g, checkpoint argmaxes %s: %s\n", worst, worst < f.max_drift ? "<" : ">=",
                f.max_drift, checkpoints_agree ? "agree" : "DIFFER", ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
  }
  return 0;
}

}  // namespace
}  // namespace rwkv

int main(int argc, char** argv) {
  auto flags = rwkv::Parse(argc, argv);
  if (!flags.ok()) {
    std::fprintf(stderr, "rwkv-state-drift: %s\n%s", std::string(flags.status().message()).c_str(), rwkv::kUsage);
    return 2;
  }
  if (flags->help) {
    std::printf("%s", rwkv::kUsage);
    return 0;
  }
  return rwkv::Run(*flags);
}
