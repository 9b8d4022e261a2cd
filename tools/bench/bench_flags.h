// Command-line parsing for rwkv-bench-engine.
//
// Why a separate unit: the flags are where user input enters the tool, and
// they are tested (bad batch lists, unknown peers, missing values) without
// loading a model or touching a GPU.
#ifndef RWKV_TOOLS_BENCH_BENCH_FLAGS_H_
#define RWKV_TOOLS_BENCH_BENCH_FLAGS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace rwkv {

struct BenchFlags {
  std::string model = "synthetic:1.5b";                 // --model FILE|synthetic:SIZE
  std::vector<int32_t> batches = {1, 8, 64, 256, 960};  // --batch 1,8,64
  int32_t steps = 20;                                   // --steps N: timed decode steps per batch
  int32_t warmup = 3;                                   // --warmup N: untimed decode steps before them
  bool batches_given = false;                           // --batch was on the command line
  int32_t context = 4;                                  // --context N: tokens fed to each session first
  std::vector<int32_t> prefill;                         // --prefill 512,4096: prompt lengths to time (empty: none)
  int32_t prefill_reps = 3;                             // --prefill-reps N: timed prompts per length
  int32_t pass_rows = 1024;                             // --pass-rows N: rows per forward pass (Model::SetMaxPassRows)
  std::string backend = "auto";                         // --backend cpu|cuda|auto
  std::string weight_dtype = "f16";                     // --weight-dtype f16|bf16|f32 (CUDA backend)
  std::string state_dtype = "fp32";                     // --state-dtype fp32|fp16
  int32_t threads = 0;                                  // --threads N (0: all cores)
  std::string peer;                                     // --peer NAME (empty: no peer columns)
  std::string json;                                     // --json FILE
  int32_t ffn_tokens = 64;                              // --ffn-tokens N (0: skip the FFN activity count)
  int32_t copy_mib = 0;                                 // --copy-mib N (0: 2048 on a GPU, 512 on the host)
  int32_t gemm_n = 8192;                                // --gemm-n N: size of the square peak GEMM
  std::string sampling = "auto";                        // --sampling device|host|auto: where a step picks tokens
  int32_t lanes = 1;                                    // --lanes N: decode batches split over N model copies
  bool help = false;
};

// Parses argv (without argv[0]). INVALID_ARGUMENT naming the flag on error.
absl::StatusOr<BenchFlags> ParseBenchFlags(const std::vector<std::string>& args);

std::string BenchUsage();

}  // namespace rwkv

#endif  // RWKV_TOOLS_BENCH_BENCH_FLAGS_H_
