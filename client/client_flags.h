// Command-line parsing for rwkv-client.
//
// Why a separate unit: the command line is where user input enters the
// client, so it is parsed and checked here (unknown flags, bad numbers,
// missing operands, flags that do not belong to the command) without a
// server, and tested on its own. Errors here are usage errors (exit code 2);
// everything that needs the server is in client_commands.
#ifndef RWKV_CLIENT_CLIENT_FLAGS_H_
#define RWKV_CLIENT_CLIENT_FLAGS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace rwkv {

enum class ClientCommand {
  kGenerate,
  kSessionCreate,
  kSessionGet,
  kSessionDelete,
  kSessionFork,
  kSessionList,
  kSessionSave,
  kSessionLoad,
  kSessionExport,
  kSessionImport,
  kTokenize,
  kDetokenize,
  kInfo,
  kHelp,
};

struct ClientFlags {
  ClientCommand command = ClientCommand::kHelp;
  std::vector<std::string> operands;  // positional arguments after the command words

  // Global.
  std::string server = "127.0.0.1:50051";  // --server ADDR
  double deadline_seconds = 0;             // --deadline S (0: none)
  bool json = false;                       // --json (generate: one JSON object per chunk)

  // generate, session create.
  std::optional<std::string> prompt;           // --prompt TEXT
  std::optional<std::vector<int32_t>> tokens;  // --tokens 1,2,3
  // generate.
  std::string session;                         // --session ID
  std::optional<int32_t> max_tokens;           // --max-tokens N
  std::optional<float> temperature;            // --temperature T
  std::optional<float> top_p;                  // --top-p P
  int32_t top_k = 0;                           // --top-k K
  float min_p = 0;                             // --min-p P
  float presence_penalty = 0;                  // --presence-penalty X
  float frequency_penalty = 0;                 // --frequency-penalty X
  std::optional<float> penalty_decay;          // --penalty-decay X
  std::optional<float> repetition_penalty;     // --repetition-penalty X
  uint64_t seed = 0;                           // --seed S
  std::vector<std::string> stop;               // --stop STR (repeatable)
  std::vector<int32_t> stop_tokens;            // --stop-token ID (repeatable)
  bool ignore_end_of_text = false;             // --ignore-eot
  std::optional<int32_t> logprobs;             // --logprobs N (0..20 alternatives)
  // session create.
  std::string from_saved;                      // --from-saved NAME
  std::string fork;                            // --fork ID
};

// Parses argv without argv[0]. Flags may come before or after the command
// words and take `--name value` or `--name=value`. INVALID_ARGUMENT (a usage
// error) naming the flag or command on any problem.
absl::StatusOr<ClientFlags> ParseClientFlags(const std::vector<std::string>& args);

// Parses "1,2,3" (spaces allowed) into token ids; INVALID_ARGUMENT naming `what`.
absl::StatusOr<std::vector<int32_t>> ParseTokenList(const std::string& what, const std::string& text);

std::string ClientUsage();

}  // namespace rwkv

#endif  // RWKV_CLIENT_CLIENT_FLAGS_H_
