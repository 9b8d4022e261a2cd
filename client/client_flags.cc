// See client_flags.h. Flags are described once, in a table that says which
// commands accept each one; value ranges are left to the server (it answers
// INVALID_ARGUMENT naming the parameter), only syntax is checked here.
#include "client/client_flags.h"

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

namespace rwkv {
namespace {

using Setter = std::function<absl::Status(ClientFlags&, const std::string&)>;

// Bit masks of the commands a flag belongs to.
constexpr uint32_t Bit(ClientCommand c) { return uint32_t{1} << static_cast<int>(c); }
constexpr uint32_t kAnyCommand = ~uint32_t{0};
constexpr uint32_t kGenerate = Bit(ClientCommand::kGenerate);
constexpr uint32_t kCreate = Bit(ClientCommand::kSessionCreate);

struct FlagSpec {
  const char* name;
  bool takes_value;
  uint32_t commands;
  Setter set;
};

absl::Status Bad(const std::string& flag, const std::string& value, const std::string& want) {
  return absl::InvalidArgumentError(absl::StrCat(flag, ": expected ", want, ", got '", value, "'"));
}

template <typename Int>
Setter IntFlag(const char* flag, int64_t lo, int64_t hi, std::function<void(ClientFlags&, Int)> store) {
  return [=](ClientFlags& f, const std::string& v) {
    int64_t x;
    if (!absl::SimpleAtoi(v, &x) || x < lo || x > hi) {
      return Bad(flag, v, absl::StrCat("an integer in [", lo, ", ", hi, "]"));
    }
    store(f, static_cast<Int>(x));
    return absl::OkStatus();
  };
}

Setter FloatFlag(const char* flag, std::function<void(ClientFlags&, float)> store) {
  return [=](ClientFlags& f, const std::string& v) {
    float x;
    if (!absl::SimpleAtof(v, &x) || !std::isfinite(x)) return Bad(flag, v, "a finite number");
    store(f, x);
    return absl::OkStatus();
  };
}

const std::vector<FlagSpec>& FlagTable() {
  static const auto* table = new std::vector<FlagSpec>{
      {"server", true, kAnyCommand,
       [](ClientFlags& f, const std::string& v) {
         if (v.empty()) return Bad("--server", v, "HOST:PORT");
         f.server = v;
         return absl::OkStatus();
       }},
      {"deadline", true, kAnyCommand,
       [](ClientFlags& f, const std::string& v) {
         double x;
         if (!absl::SimpleAtod(v, &x) || !std::isfinite(x) || x <= 0) {
           return Bad("--deadline", v, "a positive number of seconds");
         }
         f.deadline_seconds = x;
         return absl::OkStatus();
       }},
      {"json", false, kGenerate, [](ClientFlags& f, const std::string&) {
         f.json = true;
         return absl::OkStatus();
       }},
      {"prompt", true, kGenerate | kCreate,
       [](ClientFlags& f, const std::string& v) {
         f.prompt = v;
         return absl::OkStatus();
       }},
      {"tokens", true, kGenerate | kCreate,
       [](ClientFlags& f, const std::string& v) -> absl::Status {
         absl::StatusOr<std::vector<int32_t>> ids = ParseTokenList("--tokens", v);
         if (!ids.ok()) return ids.status();
         f.tokens = *std::move(ids);
         return absl::OkStatus();
       }},
      {"session", true, kGenerate,
       [](ClientFlags& f, const std::string& v) {
         if (v.empty()) return Bad("--session", v, "a session id");
         f.session = v;
         return absl::OkStatus();
       }},
      {"max-tokens", true, kGenerate,
       IntFlag<int32_t>("--max-tokens", 1, std::numeric_limits<int32_t>::max(),
                        [](ClientFlags& f, int32_t x) { f.max_tokens = x; })},
      {"temperature", true, kGenerate,
       FloatFlag("--temperature", [](ClientFlags& f, float x) { f.temperature = x; })},
      {"top-p", true, kGenerate, FloatFlag("--top-p", [](ClientFlags& f, float x) { f.top_p = x; })},
      {"top-k", true, kGenerate,
       IntFlag<int32_t>("--top-k", 0, std::numeric_limits<int32_t>::max(),
                        [](ClientFlags& f, int32_t x) { f.top_k = x; })},
      {"min-p", true, kGenerate, FloatFlag("--min-p", [](ClientFlags& f, float x) { f.min_p = x; })},
      {"presence-penalty", true, kGenerate,
       FloatFlag("--presence-penalty", [](ClientFlags& f, float x) { f.presence_penalty = x; })},
      {"frequency-penalty", true, kGenerate,
       FloatFlag("--frequency-penalty", [](ClientFlags& f, float x) { f.frequency_penalty = x; })},
      {"penalty-decay", true, kGenerate,
       FloatFlag("--penalty-decay", [](ClientFlags& f, float x) { f.penalty_decay = x; })},
      {"repetition-penalty", true, kGenerate,
       FloatFlag("--repetition-penalty", [](ClientFlags& f, float x) { f.repetition_penalty = x; })},
      {"seed", true, kGenerate,
       [](ClientFlags& f, const std::string& v) {
         uint64_t x;
         if (!absl::SimpleAtoi(v, &x)) return Bad("--seed", v, "a non-negative integer");
         f.seed = x;
         return absl::OkStatus();
       }},
      {"stop", true, kGenerate,
       [](ClientFlags& f, const std::string& v) {
         if (v.empty()) return Bad("--stop", v, "a non-empty string");
         f.stop.push_back(v);
         return absl::OkStatus();
       }},
      {"stop-token", true, kGenerate,
       IntFlag<int32_t>("--stop-token", 0, std::numeric_limits<int32_t>::max(),
                        [](ClientFlags& f, int32_t x) { f.stop_tokens.push_back(x); })},
      {"ignore-eot", false, kGenerate, [](ClientFlags& f, const std::string&) {
         f.ignore_end_of_text = true;
         return absl::OkStatus();
       }},
      {"logprobs", true, kGenerate,
       IntFlag<int32_t>("--logprobs", 0, 20, [](ClientFlags& f, int32_t x) { f.logprobs = x; })},
      {"from-saved", true, kCreate,
       [](ClientFlags& f, const std::string& v) {
         if (v.empty()) return Bad("--from-saved", v, "a saved state name");
         f.from_saved = v;
         return absl::OkStatus();
       }},
      {"fork", true, kCreate,
       [](ClientFlags& f, const std::string& v) {
         if (v.empty()) return Bad("--fork", v, "a session id");
         f.fork = v;
         return absl::OkStatus();
       }},
  };
  return *table;
}

const FlagSpec* FindFlag(absl::string_view name) {
  for (const FlagSpec& spec : FlagTable()) {
    if (name == spec.name) return &spec;
  }
  return nullptr;
}

struct CommandSpec {
  std::vector<std::string> words;
  ClientCommand command;
  int min_operands;
  int max_operands;  // -1: any
  const char* operand_names;
};

const std::vector<CommandSpec>& CommandTable() {
  static const auto* table = new std::vector<CommandSpec>{
      {{"generate"}, ClientCommand::kGenerate, 0, 0, ""},
      {{"session", "create"}, ClientCommand::kSessionCreate, 0, 0, ""},
      {{"session", "get"}, ClientCommand::kSessionGet, 1, 1, "ID"},
      {{"session", "delete"}, ClientCommand::kSessionDelete, 1, 1, "ID"},
      {{"session", "fork"}, ClientCommand::kSessionFork, 1, 1, "ID"},
      {{"session", "list"}, ClientCommand::kSessionList, 0, 0, ""},
      {{"session", "save"}, ClientCommand::kSessionSave, 2, 2, "ID NAME"},
      {{"session", "load"}, ClientCommand::kSessionLoad, 1, 1, "NAME"},
      {{"session", "export"}, ClientCommand::kSessionExport, 2, 2, "ID FILE"},
      {{"session", "import"}, ClientCommand::kSessionImport, 1, 1, "FILE"},
      {{"tokenize"}, ClientCommand::kTokenize, 1, 1, "TEXT"},
      {{"detokenize"}, ClientCommand::kDetokenize, 1, -1, "1,2,3"},
      {{"info"}, ClientCommand::kInfo, 0, 0, ""},
      {{"help"}, ClientCommand::kHelp, 0, 0, ""},
  };
  return *table;
}

// Picks the command from the leading words; the rest become operands.
absl::Status ResolveCommand(const std::vector<std::string>& words, ClientFlags& f) {
  if (words.empty()) return absl::InvalidArgumentError("no command given");
  for (const CommandSpec& spec : CommandTable()) {
    if (words.size() < spec.words.size() ||
        !std::equal(spec.words.begin(), spec.words.end(), words.begin())) {
      continue;
    }
    f.command = spec.command;
    f.operands.assign(words.begin() + spec.words.size(), words.end());
    const int n = static_cast<int>(f.operands.size());
    if (n < spec.min_operands || (spec.max_operands >= 0 && n > spec.max_operands)) {
      const std::string name = absl::StrJoin(spec.words, " ");
      return absl::InvalidArgumentError(
          spec.min_operands == 0 && spec.max_operands == 0
              ? absl::StrCat(name, ": takes no operands, got '", f.operands.back(), "'")
              : absl::StrCat(name, ": expected ", spec.operand_names, ", got ", n, " operand(s)"));
    }
    return absl::OkStatus();
  }
  if (words[0] == "session") {
    return absl::InvalidArgumentError(
        words.size() < 2 ? "session: expected a subcommand (create get delete fork list save load export import)"
                         : absl::StrCat("session: unknown subcommand '", words[1], "'"));
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown command '", words[0], "'"));
}

// Checks between flags that the table cannot express.
absl::Status CheckCombinations(const ClientFlags& f) {
  if (f.prompt.has_value() && f.tokens.has_value()) {
    return absl::InvalidArgumentError("--prompt and --tokens are mutually exclusive");
  }
  if (f.command == ClientCommand::kGenerate && !f.prompt.has_value() && !f.tokens.has_value() &&
      f.session.empty()) {
    return absl::InvalidArgumentError("generate: --prompt or --tokens is required (or --session ID to continue)");
  }
  if (f.command == ClientCommand::kSessionCreate) {
    const int sources = (f.prompt.has_value() || f.tokens.has_value() ? 1 : 0) + (f.from_saved.empty() ? 0 : 1) +
                        (f.fork.empty() ? 0 : 1);
    if (sources > 1) {
      return absl::InvalidArgumentError(
          "session create: give at most one of --prompt/--tokens, --from-saved, --fork");
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<int32_t>> ParseTokenList(const std::string& what, const std::string& text) {
  std::vector<int32_t> ids;
  for (absl::string_view part : absl::StrSplit(text, absl::ByAnyChar(", "), absl::SkipWhitespace())) {
    int32_t id;
    if (!absl::SimpleAtoi(part, &id) || id < 0) {
      return Bad(what, text, "comma-separated non-negative token ids");
    }
    ids.push_back(id);
  }
  if (ids.empty()) return Bad(what, text, "at least one token id");
  return ids;
}

absl::StatusOr<ClientFlags> ParseClientFlags(const std::vector<std::string>& args) {
  ClientFlags f;
  std::vector<std::string> words;
  std::vector<const FlagSpec*> seen;
  bool flags_done = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (flags_done || arg.size() < 2 || arg[0] != '-') {
      words.push_back(arg);
      continue;
    }
    if (arg == "--") {
      flags_done = true;
      continue;
    }
    if (arg == "-h" || arg == "--help") {
      f.command = ClientCommand::kHelp;
      return f;
    }
    if (arg.rfind("--", 0) != 0) return absl::InvalidArgumentError(absl::StrCat("unknown flag '", arg, "'"));
    std::string name = arg.substr(2);
    std::optional<std::string> value;
    if (const size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
    }
    const FlagSpec* spec = FindFlag(name);
    if (spec == nullptr) return absl::InvalidArgumentError(absl::StrCat("unknown flag '--", name, "'"));
    if (!spec->takes_value && value.has_value()) {
      return absl::InvalidArgumentError(absl::StrCat("--", name, " takes no value"));
    }
    if (spec->takes_value && !value.has_value()) {
      if (i + 1 >= args.size()) return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
      value = args[++i];
    }
    if (absl::Status s = spec->set(f, value.value_or("")); !s.ok()) return s;
    seen.push_back(spec);
  }
  if (absl::Status s = ResolveCommand(words, f); !s.ok()) return s;
  for (const FlagSpec* spec : seen) {
    if ((spec->commands & Bit(f.command)) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", spec->name, " does not apply to '", absl::StrJoin(words.begin(),
                                                                              words.end() - f.operands.size(), " "),
                       "'"));
    }
  }
  if (absl::Status s = CheckCombinations(f); !s.ok()) return s;
  return f;
}

std::string ClientUsage() {
  return R"(usage: rwkv-client [--server HOST:PORT] [--deadline SECONDS] COMMAND ...

Commands:
  generate (--prompt TEXT | --tokens 1,2,3 | --session ID) [--session ID]
           [--max-tokens N] [--temperature T] [--top-p P] [--top-k K] [--min-p P]
           [--presence-penalty X] [--frequency-penalty X] [--penalty-decay X]
           [--repetition-penalty X] [--seed S] [--stop STR]... [--stop-token ID]...
           [--ignore-eot] [--logprobs N] [--json]
      Streams the generated text to stdout; the finish reason and usage go to
      stderr. --json prints one JSON object per streamed chunk instead.
      With --session, continues that session (the prompt may then be empty).
  session create [--prompt TEXT | --tokens 1,2,3 | --from-saved NAME | --fork ID]
  session get ID | delete ID | fork ID | list
  session save ID NAME          save in the server's state directory
  session load NAME             a new session from a saved state
  session export ID FILE        write the session's state file
  session import FILE           a new session from a state file
  tokenize TEXT                 print token ids, comma-separated
  detokenize 1,2,3              print the text of token ids
  info                          describe the served model

Session commands print the session id on the first line of stdout and details
after it. Defaults: --server 127.0.0.1:50051, no deadline.
Exit status: 0 success, 1 the server answered with an error, 2 usage error.
)";
}

}  // namespace rwkv
