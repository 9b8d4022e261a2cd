// See bench_flags.h. Flags accept `--name value` and `--name=value`.
#include "tools/bench/bench_flags.h"

#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "engine/model/model.h"
#include "tools/bench/bench_math.h"

namespace rwkv {
namespace {

absl::Status Bad(const std::string& flag, const std::string& value, const std::string& want) {
  return absl::InvalidArgumentError(absl::StrCat(flag, ": expected ", want, ", got '", value, "'"));
}

absl::Status ParseInt(const std::string& flag, const std::string& v, int64_t lo, int64_t hi, int32_t* out) {
  int64_t x;
  if (!absl::SimpleAtoi(v, &x) || x < lo || x > hi) {
    return Bad(flag, v, absl::StrCat("an integer in [", lo, ", ", hi, "]"));
  }
  *out = static_cast<int32_t>(x);
  return absl::OkStatus();
}

}  // namespace

std::string BenchUsage() {
  return R"(usage: rwkv-bench-engine [--model FILE|synthetic:SIZE] [--batch 1,8,64,256,960]
                         [--steps N] [--warmup N] [--context N] [--prefill 512,4096,16384]
                         [--prefill-reps N] [--pass-rows N] [--backend cpu|cuda|auto]
                         [--weight-dtype f16|bf16|f32] [--state-dtype fp32|fp16] [--threads N]
                         [--peer albatross]
                         [--json FILE] [--ffn-tokens N] [--copy-mib N] [--gemm-n N]
                         [--sampling device|host|auto] [--lanes N]

Times decode steps of B sessions at once as the server runs them (one forward of B
requests of one token each, then B tokens picked: on the device, or after the
logits download on the host) and compares each with the
floor max((weight bytes + B * 2 * state bytes) / copy bandwidth, 2 * params * B / peak),
both ceilings measured on the same device in the same process.
With --prefill, times instead (or also, if --batch is given) one fresh session fed a
T-token prompt in one forward (passes of <= --pass-rows rows), last token's logits downloaded:
ms, tokens/s, TFLOP/s as 2 * params * T and its fraction of the measured matrix peak.
  --model        a model file or synthetic:SIZE (default synthetic:1.5b)
  --batch        comma-separated batch sizes, run in the order given (default 1,8,64,256,960)
  --steps        timed decode steps per batch (default 20)
  --warmup       untimed decode steps before them (default 3)
  --context      tokens fed to each session before timing decode (default 4)
  --prefill      comma-separated prompt lengths T to time prefill at (default: none); without
                 --batch, decode is not timed
  --prefill-reps timed prompts per length, after 2 untimed ones (default 3)
  --pass-rows    rows of one forward pass (default 1024, the Model's default; a server sets
                 max(--step-tokens, --max-batch)): a longer prompt runs as several passes
  --backend      auto (default: the GPU when one is usable), cuda or cpu
  --weight-dtype how the CUDA backend stores matrices: f16 (default), bf16 or f32
  --state-dtype  RWKV-7 state matrices in fp32 (default) or fp16; the floor counts that
                 dtype's state bytes, and --peer compares with the peer's column of it
  --threads      CPU threads (default: all cores)
  --peer         print a peer's tokens/s and our ratio to it, for our state dtype (known: albatross, for
                 synthetic:1.5b and synthetic:7.2b); for --prefill, issue 5's targets at T = 4096
                 (synthetic:1.5b, 7.2b, v4-1.5b, v4-7.2b)
  --json         also write the results as JSON to FILE
  --ffn-tokens   tokens over which to count positive FFN relu inputs (default 64; 0 skips)
  --copy-mib     copy-bandwidth buffer in MiB (default 2048 on a GPU, 512 on the host)
  --gemm-n       size of the square GEMM that measures the tensor-core peak (default 8192)
  --sampling     device: the logits stay on the backend, which picks the tokens (needs a
                 backend that can, e.g. cuda); host: the B x vocab logits are downloaded
                 and each session's Sampler picks on the host; auto (default): device
                 where the backend can, else host. Sessions sample at temperature 1.
  --lanes        decode with N copies of the model (default 1), each on its own backend (on a
                 GPU: its own stream) and host thread, a batch's sessions split across them and
                 stepped at once; measures what running independent work side by side on one
                 device gains. Each copy loads its own weights
)";
}

absl::StatusOr<BenchFlags> ParseBenchFlags(const std::vector<std::string>& args) {
  BenchFlags f;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string name = args[i];
    std::optional<std::string> inline_value;
    if (const size_t eq = name.find('='); name.rfind("--", 0) == 0 && eq != std::string::npos) {
      inline_value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    if (name == "--help" || name == "-h") {
      if (inline_value) return absl::InvalidArgumentError(absl::StrCat(name, " takes no value"));
      f.help = true;
      continue;
    }
    std::string v;
    if (inline_value) {
      v = *inline_value;
    } else if (i + 1 < args.size()) {
      v = args[++i];
    } else {
      return absl::InvalidArgumentError(absl::StrCat(name, ": missing value"));
    }
    absl::Status st;
    if (name == "--model") {
      if (v.empty()) return Bad(name, v, "a model file or synthetic:SIZE");
      f.model = v;
    } else if (name == "--batch") {
      f.batches.clear();
      for (absl::string_view part : absl::StrSplit(v, ',', absl::SkipWhitespace())) {
        int32_t b;
        if (!absl::SimpleAtoi(part, &b) || b < 1 || b > 65536) {
          return Bad(name, v, "comma-separated batch sizes in [1, 65536]");
        }
        f.batches.push_back(b);
      }
      if (f.batches.empty()) return Bad(name, v, "at least one batch size");
      f.batches_given = true;
    } else if (name == "--steps") {
      st = ParseInt(name, v, 1, 1000000, &f.steps);
    } else if (name == "--warmup") {
      st = ParseInt(name, v, 0, 1000000, &f.warmup);
    } else if (name == "--context") {
      st = ParseInt(name, v, 1, 4096, &f.context);
    } else if (name == "--prefill") {
      f.prefill.clear();
      for (absl::string_view part : absl::StrSplit(v, ',', absl::SkipWhitespace())) {
        int32_t t;
        if (!absl::SimpleAtoi(part, &t) || t < 1 || t > 1 << 20) {
          return Bad(name, v, "comma-separated prompt lengths in [1, 1048576]");
        }
        f.prefill.push_back(t);
      }
      if (f.prefill.empty()) return Bad(name, v, "at least one prompt length");
    } else if (name == "--prefill-reps") {
      st = ParseInt(name, v, 1, 1000, &f.prefill_reps);
    } else if (name == "--pass-rows") {
      st = ParseInt(name, v, 1, Model::kMaxPassRowsLimit, &f.pass_rows);
    } else if (name == "--backend") {
      if (v != "cpu" && v != "cuda" && v != "auto") return Bad(name, v, "cpu, cuda or auto");
      f.backend = v;
    } else if (name == "--weight-dtype") {
      if (v != "f16" && v != "bf16" && v != "f32") return Bad(name, v, "f16, bf16 or f32");
      f.weight_dtype = v;
    } else if (name == "--state-dtype") {
      if (v != "fp32" && v != "fp16") return Bad(name, v, "fp32 or fp16");
      f.state_dtype = v;
    } else if (name == "--threads") {
      st = ParseInt(name, v, 1, 1024, &f.threads);
    } else if (name == "--peer") {
      if (!IsKnownPeer(v)) return Bad(name, v, absl::StrCat("a known peer (", KnownPeers(), ")"));
      f.peer = v;
    } else if (name == "--json") {
      if (v.empty()) return Bad(name, v, "a file name");
      f.json = v;
    } else if (name == "--ffn-tokens") {
      st = ParseInt(name, v, 0, 1 << 20, &f.ffn_tokens);
    } else if (name == "--copy-mib") {
      st = ParseInt(name, v, 1, 1 << 20, &f.copy_mib);
    } else if (name == "--sampling") {
      if (v != "device" && v != "host" && v != "auto") return Bad(name, v, "device, host or auto");
      f.sampling = v;
    } else if (name == "--lanes") {
      st = ParseInt(name, v, 1, 16, &f.lanes);
    } else if (name == "--gemm-n") {
      st = ParseInt(name, v, 256, 32768, &f.gemm_n);
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag '", name, "' (see --help)"));
    }
    if (!st.ok()) return st;
  }
  return f;
}

}  // namespace rwkv
