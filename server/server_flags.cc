// See server_flags.h.
#include "server/server_flags.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace rwkv {
namespace {

absl::Status Bad(const std::string& flag, const std::string& value, const std::string& want) {
  return absl::InvalidArgumentError(absl::StrCat(flag, ": expected ", want, ", got '", value, "'"));
}

absl::Status ParseInt(const std::string& flag, const std::string& v, int32_t lo, int32_t* out) {
  int32_t x;
  if (!absl::SimpleAtoi(v, &x) || x < lo) {
    return Bad(flag, v, absl::StrCat("an integer in [", lo, ", ", std::numeric_limits<int32_t>::max(), "]"));
  }
  *out = x;
  return absl::OkStatus();
}

}  // namespace

std::string ServerUsage() {
  return R"(usage: rwkv-server [--model FILE|synthetic:SIZE] [--vocab FILE | --byte-vocab]
                   [--listen HOST:PORT] [--metrics-listen HOST:PORT|off] [--state-dir DIR]
                   [--backend cpu|cuda|auto] [--weight-dtype f16|bf16|f32] [--state-dtype fp32|fp16]
                   [--threads N] [--max-sessions N] [--max-batch N]
                   [--state-memory-mb MB | --state-slots N] [--offload-memory-mb MB]
                   [--max-queue N] [--prefill-chunk N] [--step-tokens N]
                   [--mixed-prefill-tokens N] [--mixed-prefill-ratio R]
                   [--mixed-prefill-drain-steps K] [--max-prompt-tokens N]
                   [--drain-seconds S] [--step-log FILE]

Serves the rwkv.v1.Inference gRPC API, grpc.health.v1 and server reflection.
  --model            a .pth / .safetensors / .st / rwkv.cpp .bin file, or synthetic:SIZE.
                     Default: rwkv7-g1a-0.1b-20250728-ctx4096.pth, downloaded once into
                     $RWKV_CACHE_DIR (else $XDG_CACHE_HOME/rwkv-server, else ~/.cache/rwkv-server)
                     with the World vocabulary; offline, synthetic:0.1b (meaningless text)
  --vocab            the World vocabulary file (rwkv_vocab_v20230424.txt)
  --byte-vocab       byte-level tokens (id = byte), for the tiny test models (the default
                     for a 256-token model). Without a vocabulary the server takes and returns
                     token ids only: text input gets FAILED_PRECONDITION
  --listen           gRPC address (default 127.0.0.1:50051; port 0 picks a free port)
  --metrics-listen   Prometheus /metrics and /healthz (default 127.0.0.1:9090; off disables)
  --state-dir        where SaveSession writes; live sessions are saved there on shutdown
                     and restored on the next start
  --backend          cpu, cuda, or auto (default: cuda when a GPU is usable, else cpu)
  --weight-dtype     how the CUDA backend stores matrices: f16 (default), bf16 or f32
  --state-dtype      how the state pool keeps RWKV-7's wkv matrices: fp32 (default, exact) or
                     fp16 (half the bytes: about twice the sessions per --state-memory-mb; saved
                     states stay fp32 and load into either). RWKV-4 models take fp32 only
  --threads          CPU threads (default: all cores)
  --max-sessions     sessions in the table, resident + offloaded (default: 1024, or the
                     pool's slot count when that is larger)
  --max-batch        sessions advanced per step (default 64 on the CPU, 256 on a GPU)
  --state-memory-mb  memory for the state pool; it holds budget / (state bytes per session,
                     of the --state-dtype)
                     slots (at most --max-sessions when given). Default on a GPU: 90% of
                     the device memory left after the weights, the forward workspace
                     and 1 GiB; on the CPU: 512
  --state-slots      a fixed number of resident state slots instead of a budget
  --offload-memory-mb  host memory for idle sessions moved out of the pool (default 4096),
                     in states of the --state-dtype (fp16: twice the sessions), page-locked
                     on a GPU and allocated as needed; beyond it they go to --state-dir
  --max-queue        waiting requests before RESOURCE_EXHAUSTED (default 256)
  --prefill-chunk    prompt tokens per session per step (default 256)
  --step-tokens      tokens (decode + prefill) per step (default 1024)
  --mixed-prefill-tokens  with --mixed-prefill-ratio, caps the prompt tokens of a step that also
  --mixed-prefill-ratio   decodes at max(N, R x the sessions decoding in it) (defaults 0 and 0:
                     only --step-tokens bounds them; e.g. 128 and 0.5): bounds how much
                     prompts lengthen the decoding sessions' step, at the cost of their
                     first token
  --mixed-prefill-drain-steps  with that cap on (it needs one of the two), raises it to at
                     least the prompt tokens left to feed / K (default 0: no floor): a
                     burst of prompts is spread over a few more than K steps, and a
                     backlog of long prompts gets rows in proportion to its size
  --max-prompt-tokens  the longest prompt accepted (default 1048576)
  --drain-seconds    on SIGTERM/SIGINT, how long running generations may finish (default 30)
  --step-log         append one line per engine step to FILE (time, decoding and prompt rows,
                     milliseconds per phase): for finding slow steps
)";
}

absl::StatusOr<StatePoolPlan> PlanStatePool(const ServerFlags& flags, int64_t slot_bytes,
                                            std::optional<int64_t> device_free_bytes,
                                            const std::function<int64_t(int, int)>& workspace_bytes) {
  auto given = [&](const char* flag) { return flags.given.count(flag) > 0; };
  StatePoolPlan plan;
  plan.max_batch = flags.engine.max_batch;
  plan.max_sessions = flags.engine.max_sessions;
  // On a GPU (a backend with memory of its own) wider batches pay, and the
  // pool takes most of what the weights leave, as every serving engine does:
  // sessions are what the card is for.
  if (device_free_bytes && !given("--max-batch")) plan.max_batch = 256;
  if (flags.state_slots_given) {
    plan.slots = flags.engine.state_slots;
    plan.note = " (--state-slots)";
  } else {
    int64_t budget = int64_t{512} << 20;
    plan.note = " (default budget 512 MB; --state-memory-mb sets it)";
    if (given("--state-memory-mb")) {
      budget = int64_t{flags.state_memory_mb} << 20;
      plan.note = absl::StrFormat(" (--state-memory-mb %d)", flags.state_memory_mb);
    } else if (device_free_bytes) {
      const int rows = std::max(flags.engine.step_token_budget, plan.max_batch);
      const int64_t workspace = workspace_bytes ? workspace_bytes(rows, plan.max_batch) : 0;
      budget = std::max<int64_t>(0, (*device_free_bytes - workspace - (int64_t{1} << 30)) / 10 * 9);
      plan.note = absl::StrFormat(
          " (90%% of the %.1f GiB free after the weights, less %.0f MiB of forward workspace and 1 GiB; "
          "--state-memory-mb sets it)",
          static_cast<double>(*device_free_bytes) / (1 << 30), static_cast<double>(workspace) / (1 << 20));
    }
    if (slot_bytes <= 0 || budget < slot_bytes) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "the state pool holds no session: its budget is %.1f MB%s and one %s state takes %.2f MB",
          static_cast<double>(budget) / (1 << 20), plan.note, flags.state_dtype,
          static_cast<double>(slot_bytes) / (1 << 20)));
    }
    int64_t slots = std::min<int64_t>(budget / slot_bytes, std::numeric_limits<int32_t>::max());
    if (given("--max-sessions")) slots = std::min<int64_t>(slots, flags.engine.max_sessions);
    plan.slots = static_cast<int32_t>(slots);
  }
  if (!given("--max-sessions")) plan.max_sessions = std::max(plan.max_sessions, plan.slots);
  return plan;
}

absl::StatusOr<ServerFlags> ParseServerFlags(const std::vector<std::string>& args) {
  ServerFlags f;
  EngineConfig& e = f.engine;
  const std::map<std::string, std::string*> string_flags = {
      {"--model", &f.model},         {"--vocab", &f.vocab},
      {"--listen", &f.listen},       {"--metrics-listen", &f.metrics_listen},
      {"--state-dir", &f.state_dir}, {"--backend", &f.backend},
      {"--weight-dtype", &f.weight_dtype}, {"--state-dtype", &f.state_dtype},
      {"--step-log", &e.step_log_path},
  };
  struct IntFlag {
    int32_t* value;
    int32_t min;
  };
  const std::map<std::string, IntFlag> int_flags = {
      {"--threads", {&f.threads, 0}},
      {"--max-sessions", {&e.max_sessions, 1}},
      {"--max-batch", {&e.max_batch, 1}},
      {"--state-slots", {&e.state_slots, 1}},
      {"--state-memory-mb", {&f.state_memory_mb, 1}},
      {"--offload-memory-mb", {&f.offload_memory_mb, 0}},
      {"--max-queue", {&e.max_queue, 1}},
      {"--prefill-chunk", {&e.prefill_chunk, 1}},
      {"--step-tokens", {&e.step_token_budget, 1}},
      {"--mixed-prefill-tokens", {&e.mixed_prefill_tokens, 0}},
      {"--mixed-prefill-drain-steps", {&e.mixed_prefill_drain_steps, 0}},
      {"--max-prompt-tokens", {&e.max_prompt_tokens, 1}},
  };
  for (size_t i = 0; i < args.size(); ++i) {
    std::string name = args[i];
    std::string inline_value;
    bool has_inline_value = false;
    if (const size_t eq = name.find('='); name.rfind("--", 0) == 0 && eq != std::string::npos) {
      inline_value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_inline_value = true;
    }
    if (name == "--help" || name == "-h" || name == "--byte-vocab") {
      if (has_inline_value) return absl::InvalidArgumentError(absl::StrCat(name, " takes no value"));
      (name == "--byte-vocab" ? f.byte_vocab : f.help) = true;
      continue;
    }
    const auto str = string_flags.find(name);
    const auto num = int_flags.find(name);
    if (str == string_flags.end() && num == int_flags.end() && name != "--drain-seconds" &&
        name != "--mixed-prefill-ratio") {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag '", args[i], "' (see --help)"));
    }
    std::string value = inline_value;
    if (!has_inline_value) {
      if (i + 1 >= args.size()) return absl::InvalidArgumentError(absl::StrCat(name, ": missing value"));
      value = args[++i];
    }
    if (str != string_flags.end()) {
      if (value.empty()) return Bad(name, value, "a non-empty value");
      *str->second = value;
    } else if (num != int_flags.end()) {
      if (absl::Status s = ParseInt(name, value, num->second.min, num->second.value); !s.ok()) return s;
      if (name == "--state-slots") f.state_slots_given = true;
      f.given.insert(name);
    } else if (name == "--mixed-prefill-ratio") {
      double r;
      if (!absl::SimpleAtod(value, &r) || !(r >= 0 && r <= kMaxMixedPrefillRatio)) {
        return Bad(name, value, absl::StrCat("a number in [0, ", kMaxMixedPrefillRatio, "]"));
      }
      e.mixed_prefill_ratio = r;
    } else {  // --drain-seconds
      double d;
      if (!absl::SimpleAtod(value, &d) || !std::isfinite(d) || d < 0 || d > 86400) {
        return Bad(name, value, "seconds in [0, 86400]");
      }
      f.drain_seconds = d;
    }
  }
  if (!f.vocab.empty() && f.byte_vocab) {
    return absl::InvalidArgumentError("--vocab and --byte-vocab are mutually exclusive");
  }
  f.engine.host_offload_bytes = int64_t{f.offload_memory_mb} << 20;
  if (f.backend != "cpu" && f.backend != "cuda" && f.backend != "auto") {
    return Bad("--backend", f.backend, "cpu, cuda or auto");
  }
  if (f.weight_dtype != "f16" && f.weight_dtype != "bf16" && f.weight_dtype != "f32") {
    return Bad("--weight-dtype", f.weight_dtype, "f16, bf16 or f32");
  }
  if (f.state_dtype != "fp32" && f.state_dtype != "fp16") return Bad("--state-dtype", f.state_dtype, "fp32 or fp16");
  return f;
}

}  // namespace rwkv
