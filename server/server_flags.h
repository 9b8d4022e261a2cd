// Command-line flags of rwkv-server, parsed into plain config structs.
//
// Why a separate unit: flags are where operator input enters the server, so
// parsing and range checks are tested on their own (bad numbers, missing
// values, conflicting vocab flags) without loading a model. Config flows one
// way: flags -> ServerFlags (with an EngineConfig inside) -> constructors.
#ifndef RWKV_SERVER_SERVER_FLAGS_H_
#define RWKV_SERVER_SERVER_FLAGS_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/serving/engine.h"

namespace rwkv {

struct ServerFlags {
  std::string model;        // --model FILE|synthetic:SIZE; empty: the default model (downloaded)
  std::string vocab;        // --vocab FILE (World vocabulary)
  bool byte_vocab = false;  // --byte-vocab
  std::string listen = "127.0.0.1:50051";         // --listen HOST:PORT (port 0: any free port)
  std::string metrics_listen = "127.0.0.1:9090";  // --metrics-listen HOST:PORT, or "off"
  std::string state_dir;         // --state-dir DIR; empty: no save/load, sessions not kept across restarts
  std::string backend = "auto";  // --backend cpu|cuda|auto
  std::string weight_dtype = "f16";  // --weight-dtype f16|bf16|f32 (CUDA backend; the CPU one is fp32)
  std::string state_dtype = "fp32";  // --state-dtype fp32|fp16 (RWKV-7 wkv matrices in the slot pool)
  int32_t threads = 0;           // --threads N; 0: all cores
  double drain_seconds = 30;     // --drain-seconds S
  // --state-memory-mb MB: the state pool's budget; slots = budget / state bytes
  // (at most --max-sessions when that is given). Ignored when --state-slots
  // is given. 0 (not given): chosen at start-up, see server_main.cc.
  int32_t state_memory_mb = 0;
  bool state_slots_given = false;  // --state-slots N was given: a fixed slot count
  // Numeric flags that appeared on the command line (e.g. "--max-batch"):
  // some defaults depend on the backend and apply only to flags not given.
  std::set<std::string> given;
  int32_t offload_memory_mb = 4096;  // --offload-memory-mb MB: host memory for offloaded states
  EngineConfig engine;           // --max-sessions --max-batch --state-slots --max-queue
                                 // --prefill-chunk --step-tokens --max-prompt-tokens
  bool help = false;             // --help
};

// Parses argv without argv[0]; `--name value` and `--name=value` both work.
// INVALID_ARGUMENT naming the flag on error.
absl::StatusOr<ServerFlags> ParseServerFlags(const std::vector<std::string>& args);

std::string ServerUsage();

// The state pool and the limits that follow from it, decided at start-up.
struct StatePoolPlan {
  int32_t slots = 0;         // resident state slots
  int32_t max_sessions = 0;  // --max-sessions, or at least `slots` when not given
  int32_t max_batch = 0;     // --max-batch, or 256 on a device when not given
  std::string note;          // how the size was chosen, for the start-up log
};
// --state-slots when given; else how many states of `slot_bytes` (what one
// costs in the pool, for the chosen --state-dtype) fit the budget: 
// --state-memory-mb when given, else on a device (`device_free_bytes`: what
// is free after the weights) 90% of what the forward workspace
// (`workspace_bytes(rows, logit_rows)`, see Model::WorkspaceBytes) and 1 GiB
// leave, else 512 MB. At most --max-sessions when that was given.
// RESOURCE_EXHAUSTED when the budget holds no session.
absl::StatusOr<StatePoolPlan> PlanStatePool(const ServerFlags& flags, int64_t slot_bytes,
                                            std::optional<int64_t> device_free_bytes,
                                            const std::function<int64_t(int, int)>& workspace_bytes);

}  // namespace rwkv

#endif  // RWKV_SERVER_SERVER_FLAGS_H_
