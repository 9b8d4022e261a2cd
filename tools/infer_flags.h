// Command-line parsing for rwkv-infer.
//
// Why a separate unit: flag parsing is where user input enters the tool, so
// it is tested on its own (bad numbers, missing values, conflicting prompt
// sources) without loading a model.
#ifndef RWKV_TOOLS_INFER_FLAGS_H_
#define RWKV_TOOLS_INFER_FLAGS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/sampler/sampling_params.h"

namespace rwkv {

struct InferFlags {
  std::string model;                     // --model FILE|synthetic:SIZE
  std::string vocab;                     // --vocab FILE
  bool byte_vocab = false;               // --byte-vocab
  std::optional<std::string> prompt;     // --prompt TEXT
  std::optional<std::string> prompt_file;  // --prompt-file FILE (exact bytes)
  std::optional<std::vector<int32_t>> tokens;  // --tokens 1,2,3
  int32_t max_tokens = 100;              // --max-tokens N (0: only feed the prompt)
  SamplingParams sampling;               // --temperature ... --seed
  std::string dump_logits;               // --dump-logits OUT
  bool tokenize = false;                 // --tokenize
  int32_t threads = 0;                   // --threads N (0: all cores)
  bool openblas = false;                 // --cpu-gemm openblas|invariant
  std::string backend = "cpu";           // --backend cpu|cuda|auto
  std::string weight_dtype = "f16";      // --weight-dtype f16|bf16|f32 (CUDA backend)
  std::string state_dtype = "fp32";      // --state-dtype fp32|fp16
  bool help = false;
};

// Parses argv (without argv[0]). INVALID_ARGUMENT naming the flag on error.
absl::StatusOr<InferFlags> ParseInferFlags(const std::vector<std::string>& args);

std::string InferUsage();

}  // namespace rwkv

#endif  // RWKV_TOOLS_INFER_FLAGS_H_
