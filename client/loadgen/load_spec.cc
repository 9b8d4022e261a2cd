#include "client/loadgen/load_spec.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace rwkv::loadgen {
namespace {

constexpr int64_t kMaxTokensPerRequest = int64_t{1} << 24;

absl::Status Bad(const std::string& what, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat(what, ": ", why));
}

bool ParseDouble(const std::string& s, double* out) {
  return absl::SimpleAtod(s, out) && std::isfinite(*out);
}

}  // namespace

IntDistribution IntDistribution::Fixed(int64_t n) {
  IntDistribution d;
  d.kind_ = Kind::kFixed;
  d.a_ = d.b_ = static_cast<double>(n);
  return d;
}

absl::StatusOr<IntDistribution> IntDistribution::Parse(const std::string& what, const std::string& text) {
  const std::vector<std::string> parts = absl::StrSplit(text, ':');
  std::vector<double> v;
  for (size_t i = 1; i < parts.size(); ++i) {
    double x = 0;
    if (!ParseDouble(parts[i], &x)) return Bad(what, absl::StrCat("'", parts[i], "' is not a number in '", text, "'"));
    v.push_back(x);
  }
  IntDistribution d;
  const std::string& kind = parts[0];
  auto positive = [&](double x, const char* name) -> absl::Status {
    if (x < 1 || x > static_cast<double>(kMaxTokensPerRequest)) {
      return Bad(what, absl::StrCat(name, " must be in [1, ", kMaxTokensPerRequest, "], got ", x));
    }
    return absl::OkStatus();
  };
  if (parts.size() == 1) {
    int64_t n = 0;
    if (!absl::SimpleAtoi(kind, &n)) {
      return Bad(what, absl::StrCat("'", text, "' is not N, uniform:A:B, normal:MEAN:SD or exp:MEAN"));
    }
    if (auto s = positive(static_cast<double>(n), "the value"); !s.ok()) return s;
    return Fixed(n);
  }
  if (kind == "uniform" && v.size() == 2) {
    if (auto s = positive(v[0], "A"); !s.ok()) return s;
    if (auto s = positive(v[1], "B"); !s.ok()) return s;
    if (v[0] > v[1] || v[0] != std::floor(v[0]) || v[1] != std::floor(v[1])) {
      return Bad(what, absl::StrCat("uniform:A:B needs integers A <= B, got '", text, "'"));
    }
    d.kind_ = Kind::kUniform;
  } else if (kind == "normal" && v.size() == 2) {
    if (auto s = positive(v[0], "MEAN"); !s.ok()) return s;
    if (v[1] < 0) return Bad(what, absl::StrCat("SD must be >= 0, got ", v[1]));
    d.kind_ = Kind::kNormal;
  } else if (kind == "exp" && v.size() == 1) {
    if (auto s = positive(v[0], "MEAN"); !s.ok()) return s;
    d.kind_ = Kind::kExp;
    v.push_back(0);
  } else {
    return Bad(what, absl::StrCat("'", text, "' is not N, uniform:A:B, normal:MEAN:SD or exp:MEAN"));
  }
  d.a_ = v[0];
  d.b_ = v[1];
  return d;
}

int64_t IntDistribution::Sample(std::mt19937_64& rng) const {
  double x = a_;
  switch (kind_) {
    case Kind::kFixed:
      return static_cast<int64_t>(a_);
    case Kind::kUniform:
      return std::uniform_int_distribution<int64_t>(static_cast<int64_t>(a_), static_cast<int64_t>(b_))(rng);
    case Kind::kNormal:
      x = std::normal_distribution<double>(a_, b_)(rng);
      break;
    case Kind::kExp:
      x = std::exponential_distribution<double>(1.0 / a_)(rng);
      break;
  }
  return std::clamp<int64_t>(static_cast<int64_t>(std::llround(x)), 1, UpperBound());
}

int64_t IntDistribution::UpperBound() const {
  double hi = b_;
  if (kind_ == Kind::kNormal) hi = a_ + 6 * b_;
  if (kind_ == Kind::kExp) hi = a_ * 7;
  if (kind_ == Kind::kFixed) hi = a_;
  return std::clamp<int64_t>(static_cast<int64_t>(std::ceil(hi)), 1, kMaxTokensPerRequest);
}

std::string IntDistribution::ToString() const {
  switch (kind_) {
    case Kind::kFixed:
      return absl::StrCat(static_cast<int64_t>(a_));
    case Kind::kUniform:
      return absl::StrCat("uniform:", static_cast<int64_t>(a_), ":", static_cast<int64_t>(b_));
    case Kind::kNormal:
      return absl::StrCat("normal:", a_, ":", b_);
    case Kind::kExp:
      return absl::StrCat("exp:", a_);
  }
  return "";
}

const char* ModeName(LoadMode m) {
  switch (m) {
    case LoadMode::kClosed:
      return "closed";
    case LoadMode::kOpen:
      return "open";
    case LoadMode::kContext:
      return "context";
  }
  return "?";
}

std::string LoadgenUsage() {
  return R"(usage: rwkv-loadgen [flags]

Drives rwkv-server with concurrent Generate streams and reports what a client
sees: generated tokens/s, time to first token (TTFT) and inter-token latency
(ITL) percentiles, and errors by status code.

modes:
  --mode closed        keep --concurrency requests in flight (default)
  --mode open          start requests at Poisson arrivals of --rate per second
  --mode context       constant cost per token: for each --context-lengths L, a
                       session is prefilled with L tokens, then --max-tokens are
                       generated alone and their ITL reported
flags:
  --server ADDR          server address (default 127.0.0.1:50051)
  --concurrency N        closed mode: requests in flight (default 16)
  --connections N        closed/open mode: spread the streams over N gRPC
                         connections, as N clients would (default 1: all
                         multiplexed over one connection)
  --rate R               open mode: requests per second (required there)
  --max-inflight N       open mode: arrivals beyond N in flight are dropped and
                         counted (default 4096)
  --duration S           stop starting requests after S seconds
  --requests N           stop after N requests started (closed/open need
                         --duration or --requests or both)
  --drain S              then wait at most S seconds for in-flight ones
                         (default 300; the rest are cancelled and counted)
  --warmup S             the steady-state window (tokens/s while the load is
                         fully applied) starts S seconds in and ends when the
                         last request starts (default 0)
  --prompt-tokens DIST   prompt length per request (default 128)
  --max-tokens DIST      tokens to generate per request (default 128)
                         DIST: N | uniform:A:B | normal:MEAN:SD | exp:MEAN
  --sessions MODE        ephemeral (default: a one-off session per request) or
                         sticky (closed mode: each stream keeps one session and
                         its context grows from request to request)
  --temperature T        sampling temperature (default: the server's)
  --stop-at-eot          stop at end-of-text (default: ignored, so every
                         request generates exactly its max tokens)
  --seed S               seed of the lengths and prompt tokens (default 1)
  --request-timeout S    deadline per request (default 600)
  --context-lengths L,.. context mode: context lengths (e.g. 100,10000,100000)
  --context-repeats N    context mode: runs per length (default 2)
  --json FILE            write the report as JSON to FILE ('-': stdout)
  --no-progress          no progress bar (drawn only on a terminal anyway)
  --help
)";
}

absl::StatusOr<LoadSpec> ParseLoadSpec(const std::vector<std::string>& args) {
  LoadSpec s;
  bool have_rate = false;
  using Setter = std::function<absl::Status(const std::string&, const std::string&)>;
  auto int_flag = [](auto* out, int64_t lo, int64_t hi) -> Setter {
    return [out, lo, hi](const std::string& name, const std::string& v) -> absl::Status {
      int64_t n = 0;
      if (!absl::SimpleAtoi(v, &n) || n < lo || n > hi) {
        return Bad(name, absl::StrCat("expected an integer in [", lo, ", ", hi, "], got '", v, "'"));
      }
      *out = static_cast<std::remove_pointer_t<decltype(out)>>(n);
      return absl::OkStatus();
    };
  };
  auto double_flag = [](double* out, double lo, double hi) -> Setter {
    return [out, lo, hi](const std::string& name, const std::string& v) -> absl::Status {
      double x = 0;
      if (!ParseDouble(v, &x) || x < lo || x > hi) {
        return Bad(name, absl::StrCat("expected a number in [", lo, ", ", hi, "], got '", v, "'"));
      }
      *out = x;
      return absl::OkStatus();
    };
  };
  double temperature = 0;
  const std::map<std::string, Setter> with_value = {
      {"--server", [&](const std::string& name, const std::string& v) -> absl::Status {
         if (v.empty()) return Bad(name, "empty address");
         s.server = v;
         return absl::OkStatus();
       }},
      {"--mode", [&](const std::string& name, const std::string& v) -> absl::Status {
         if (v == "closed") {
           s.mode = LoadMode::kClosed;
         } else if (v == "open") {
           s.mode = LoadMode::kOpen;
         } else if (v == "context") {
           s.mode = LoadMode::kContext;
         } else {
           return Bad(name, absl::StrCat("expected closed, open or context, got '", v, "'"));
         }
         return absl::OkStatus();
       }},
      {"--concurrency", int_flag(&s.concurrency, 1, 100000)},
      {"--connections", int_flag(&s.connections, 1, 1024)},
      {"--rate", [&](const std::string& name, const std::string& v) -> absl::Status {
         have_rate = true;
         return double_flag(&s.rate, 1e-3, 1e6)(name, v);
       }},
      {"--max-inflight", int_flag(&s.max_inflight, 1, 1000000)},
      {"--duration", double_flag(&s.duration_s, 1e-3, 30 * 86400)},
      {"--requests", int_flag(&s.requests, 1, int64_t{1} << 40)},
      {"--drain", double_flag(&s.drain_s, 0, 86400)},
      {"--warmup", double_flag(&s.warmup_s, 0, 86400)},
      {"--prompt-tokens", [&](const std::string& name, const std::string& v) -> absl::Status {
         auto d = IntDistribution::Parse(name, v);
         if (!d.ok()) return d.status();
         s.prompt_tokens = *d;
         return absl::OkStatus();
       }},
      {"--max-tokens", [&](const std::string& name, const std::string& v) -> absl::Status {
         auto d = IntDistribution::Parse(name, v);
         if (!d.ok()) return d.status();
         s.max_tokens = *d;
         return absl::OkStatus();
       }},
      {"--sessions", [&](const std::string& name, const std::string& v) -> absl::Status {
         if (v != "sticky" && v != "ephemeral") return Bad(name, absl::StrCat("expected sticky or ephemeral, got '", v, "'"));
         s.sticky_sessions = v == "sticky";
         return absl::OkStatus();
       }},
      {"--temperature", [&](const std::string& name, const std::string& v) -> absl::Status {
         if (auto st = double_flag(&temperature, 0, 100)(name, v); !st.ok()) return st;
         s.temperature = static_cast<float>(temperature);
         return absl::OkStatus();
       }},
      {"--seed", int_flag(&s.seed, 0, std::numeric_limits<int64_t>::max())},
      {"--request-timeout", double_flag(&s.request_timeout_s, 1e-3, 86400)},
      {"--context-lengths", [&](const std::string& name, const std::string& v) -> absl::Status {
         s.context_lengths.clear();
         for (absl::string_view part : absl::StrSplit(v, ',')) {
           int64_t n = 0;
           if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(part), &n) || n < 1 || n > kMaxTokensPerRequest) {
             return Bad(name, absl::StrCat("expected positive token counts like 100,10000, got '", v, "'"));
           }
           s.context_lengths.push_back(n);
         }
         return absl::OkStatus();
       }},
      {"--context-repeats", int_flag(&s.context_repeats, 1, 1000)},
      {"--json", [&](const std::string& name, const std::string& v) -> absl::Status {
         if (v.empty()) return Bad(name, "empty path");
         s.json_path = v;
         return absl::OkStatus();
       }},
  };
  for (size_t i = 0; i < args.size(); ++i) {
    std::string name = args[i], value;
    bool has_value = false;
    if (size_t eq = name.find('='); name.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    if (name == "--help" || name == "-h") {
      s.help = true;
      continue;
    }
    if (name == "--stop-at-eot" || name == "--no-progress") {
      if (has_value) return Bad(name, "takes no value");
      if (name == "--stop-at-eot") {
        s.stop_at_eot = true;
      } else {
        s.progress = false;
      }
      continue;
    }
    auto it = with_value.find(name);
    if (it == with_value.end()) return absl::InvalidArgumentError(absl::StrCat("unknown flag '", args[i], "'"));
    if (!has_value) {
      if (i + 1 >= args.size()) return Bad(name, "needs a value");
      value = args[++i];
    }
    if (absl::Status st = it->second(name, value); !st.ok()) return st;
  }
  if (s.help) return s;
  switch (s.mode) {
    case LoadMode::kClosed:
      if (have_rate) return absl::InvalidArgumentError("--rate belongs to --mode open");
      break;
    case LoadMode::kOpen:
      if (!have_rate) return absl::InvalidArgumentError("--mode open needs --rate");
      if (s.sticky_sessions) return absl::InvalidArgumentError("--sessions sticky needs --mode closed");
      break;
    case LoadMode::kContext:
      if (s.context_lengths.empty()) return absl::InvalidArgumentError("--mode context needs --context-lengths");
      break;
  }
  if (s.mode != LoadMode::kContext && s.duration_s <= 0 && s.requests <= 0) {
    return absl::InvalidArgumentError("give --duration S or --requests N (or both)");
  }
  if (s.duration_s > 0 && s.warmup_s >= s.duration_s) {
    return absl::InvalidArgumentError("--warmup must be shorter than --duration");
  }
  if (s.mode != LoadMode::kContext && !s.context_lengths.empty()) {
    return absl::InvalidArgumentError("--context-lengths belongs to --mode context");
  }
  return s;
}

}  // namespace rwkv::loadgen
