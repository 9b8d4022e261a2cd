// See infer_flags.h. Flags accept `--name value` and `--name=value`.
#include "tools/infer_flags.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace rwkv {
namespace {

absl::Status Bad(const std::string& flag, const std::string& value, const std::string& want) {
  return absl::InvalidArgumentError(absl::StrCat(flag, ": expected ", want, ", got '", value, "'"));
}

absl::Status ParseInt(const std::string& flag, const std::string& v, int64_t lo, int64_t hi, int64_t* out) {
  int64_t x;
  if (!absl::SimpleAtoi(v, &x) || x < lo || x > hi) {
    return Bad(flag, v, absl::StrCat("an integer in [", lo, ", ", hi, "]"));
  }
  *out = x;
  return absl::OkStatus();
}

absl::Status ParseFloat(const std::string& flag, const std::string& v, float* out) {
  float x;
  if (!absl::SimpleAtof(v, &x) || !std::isfinite(x)) return Bad(flag, v, "a finite number");
  *out = x;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> ParseIdList(const std::string& flag, const std::string& v) {
  std::vector<int32_t> ids;
  for (absl::string_view part : absl::StrSplit(v, ',', absl::SkipWhitespace())) {
    int32_t id;
    if (!absl::SimpleAtoi(part, &id) || id < 0) {
      return Bad(flag, v, "comma-separated non-negative token ids");
    }
    ids.push_back(id);
  }
  if (ids.empty()) return Bad(flag, v, "at least one token id");
  return ids;
}

}  // namespace

std::string InferUsage() {
  return R"(usage: rwkv-infer --model FILE|synthetic:SIZE [--vocab FILE | --byte-vocab]
                  [--prompt TEXT | --prompt-file FILE | --tokens 1,2,3]
                  [--max-tokens N] [--threads N] [--cpu-gemm invariant|openblas]
                  [--backend cpu|cuda|auto] [--weight-dtype f16|bf16|f32] [--state-dtype fp32|fp16]
                  [--dump-logits OUT] [--tokenize]
                  [--temperature T] [--top-k K] [--top-p P] [--min-p P]
                  [--presence-penalty X] [--frequency-penalty X] [--penalty-decay X]
                  [--repetition-penalty X] [--logit-bias ID:BIAS]... [--stop-token ID]...
                  [--stop STRING]... [--seed S]

Streams generated text to stdout; timing goes to stderr.
  --model          a .pth / .safetensors / .st / rwkv.cpp .bin file, or synthetic:SIZE
                   (0.1b 0.4b 1.5b 2.9b 7.2b tiny v4-0.1b v4-0.4b v4-1.5b v4-2.9b v4-7.2b v4-tiny)
  --vocab          the World vocabulary file (rwkv_vocab_v20230424.txt)
  --byte-vocab     byte-level tokens (id = byte), for the tiny test models
                   (the default when the model's vocabulary has 256 entries)
  --prompt-file    the prompt's exact bytes (NUL bytes included)
  --tokens         the prompt as token ids
                   (no prompt: generation starts from the end-of-text token 0)
  --max-tokens     tokens to generate (default 100; 0 only feeds the prompt)
  --dump-logits    write float32 little-endian logits after every prompt token, [T, vocab]
  --tokenize       print the prompt's token ids (comma-separated) and exit; needs no model
  --threads        CPU threads (default: all cores)
  --cpu-gemm       invariant (default: a row's result never depends on the batch) or openblas
  --backend        cpu (default), cuda, or auto (the GPU when one is usable)
  --weight-dtype   how the CUDA backend stores matrices: f16 (default), bf16 or f32
  --state-dtype    RWKV-7 state matrices kept in fp32 (default, exact) or fp16 (half the bytes)
)";
}

absl::StatusOr<InferFlags> ParseInferFlags(const std::vector<std::string>& args) {
  InferFlags f;
  SamplingParams& s = f.sampling;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string name = args[i];
    std::optional<std::string> inline_value;
    if (const size_t eq = name.find('='); name.rfind("--", 0) == 0 && eq != std::string::npos) {
      inline_value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    auto value = [&]() -> absl::StatusOr<std::string> {
      if (inline_value) return *inline_value;
      if (i + 1 >= args.size()) return absl::InvalidArgumentError(absl::StrCat(name, ": missing value"));
      return args[++i];
    };
    auto flag_is_boolean = [&]() -> absl::Status {
      if (inline_value) return absl::InvalidArgumentError(absl::StrCat(name, " takes no value"));
      return absl::OkStatus();
    };
    absl::Status st;
    int64_t n = 0;
#define RWKV_VALUE(var)                            \
  auto var##_or = value();                         \
  if (!var##_or.ok()) return var##_or.status();    \
  const std::string& var = *var##_or
    if (name == "--help" || name == "-h") {
      f.help = true;
    } else if (name == "--model") {
      RWKV_VALUE(v);
      f.model = v;
    } else if (name == "--vocab") {
      RWKV_VALUE(v);
      f.vocab = v;
    } else if (name == "--byte-vocab") {
      st = flag_is_boolean();
      f.byte_vocab = true;
    } else if (name == "--prompt") {
      RWKV_VALUE(v);
      f.prompt = v;
    } else if (name == "--prompt-file") {
      RWKV_VALUE(v);
      f.prompt_file = v;
    } else if (name == "--tokens") {
      RWKV_VALUE(v);
      auto ids = ParseIdList(name, v);
      if (!ids.ok()) return ids.status();
      f.tokens = *ids;
    } else if (name == "--max-tokens") {
      RWKV_VALUE(v);
      st = ParseInt(name, v, 0, 1 << 24, &n);
      f.max_tokens = static_cast<int32_t>(n);
    } else if (name == "--threads") {
      RWKV_VALUE(v);
      st = ParseInt(name, v, 1, 1024, &n);
      f.threads = static_cast<int32_t>(n);
    } else if (name == "--backend") {
      RWKV_VALUE(v);
      if (v != "cpu" && v != "cuda" && v != "auto") return Bad(name, v, "cpu, cuda or auto");
      f.backend = v;
    } else if (name == "--weight-dtype") {
      RWKV_VALUE(v);
      if (v != "f16" && v != "bf16" && v != "f32") return Bad(name, v, "f16, bf16 or f32");
      f.weight_dtype = v;
    } else if (name == "--state-dtype") {
      RWKV_VALUE(v);
      if (v != "fp32" && v != "fp16") return Bad(name, v, "fp32 or fp16");
      f.state_dtype = v;
    } else if (name == "--cpu-gemm") {
      RWKV_VALUE(v);
      if (v != "invariant" && v != "openblas") return Bad(name, v, "'invariant' or 'openblas'");
      f.openblas = v == "openblas";
    } else if (name == "--dump-logits") {
      RWKV_VALUE(v);
      f.dump_logits = v;
    } else if (name == "--tokenize") {
      st = flag_is_boolean();
      f.tokenize = true;
    } else if (name == "--temperature") {
      RWKV_VALUE(v);
      st = ParseFloat(name, v, &s.temperature);
    } else if (name == "--top-k") {
      RWKV_VALUE(v);
      st = ParseInt(name, v, 0, 1 << 30, &n);
      s.top_k = static_cast<int32_t>(n);
    } else if (name == "--top-p") {
      RWKV_VALUE(v);
      st = ParseFloat(name, v, &s.top_p);
    } else if (name == "--min-p") {
      RWKV_VALUE(v);
      st = ParseFloat(name, v, &s.min_p);
    } else if (name == "--presence-penalty") {
      RWKV_VALUE(v);
      st = ParseFloat(name, v, &s.presence_penalty);
    } else if (name == "--frequency-penalty") {
      RWKV_VALUE(v);
      st = ParseFloat(name, v, &s.frequency_penalty);
    } else if (name == "--penalty-decay") {
      RWKV_VALUE(v);
      st = ParseFloat(name, v, &s.penalty_decay);
    } else if (name == "--repetition-penalty") {
      RWKV_VALUE(v);
      st = ParseFloat(name, v, &s.repetition_penalty);
    } else if (name == "--logit-bias") {
      RWKV_VALUE(v);
      std::vector<std::string> parts = absl::StrSplit(v, ':');
      int32_t id;
      float bias;
      if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &id) || !absl::SimpleAtof(parts[1], &bias) ||
          !std::isfinite(bias)) {
        return Bad(name, v, "ID:BIAS");
      }
      s.logit_bias.emplace_back(id, bias);
    } else if (name == "--stop-token") {
      RWKV_VALUE(v);
      st = ParseInt(name, v, 0, 1 << 30, &n);
      s.stop_token_ids.push_back(static_cast<int32_t>(n));
    } else if (name == "--stop") {
      RWKV_VALUE(v);
      s.stop_strings.push_back(v);
    } else if (name == "--seed") {
      RWKV_VALUE(v);
      uint64_t seed;
      if (!absl::SimpleAtoi(v, &seed)) return Bad(name, v, "an unsigned 64-bit integer");
      s.seed = seed;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag '", args[i], "' (see --help)"));
    }
#undef RWKV_VALUE
    if (!st.ok()) return st;
  }
  if (f.help) return f;
  const int sources = (f.prompt ? 1 : 0) + (f.prompt_file ? 1 : 0) + (f.tokens ? 1 : 0);
  if (sources > 1) {
    return absl::InvalidArgumentError("give at most one of --prompt, --prompt-file and --tokens");
  }
  if (!f.vocab.empty() && f.byte_vocab) {
    return absl::InvalidArgumentError("give either --vocab or --byte-vocab, not both");
  }
  if (f.tokenize) {
    if (f.vocab.empty() && !f.byte_vocab) {
      return absl::InvalidArgumentError("--tokenize needs a vocabulary: --vocab FILE or --byte-vocab");
    }
    if (!f.prompt && !f.prompt_file) {
      return absl::InvalidArgumentError("--tokenize needs --prompt or --prompt-file");
    }
  } else if (f.model.empty()) {
    return absl::InvalidArgumentError("--model is required (a model file or synthetic:SIZE)");
  }
  return f;
}

}  // namespace rwkv
