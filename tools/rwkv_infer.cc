// rwkv-infer: run a model from the command line.
//
// Why: the quickest way to check a checkpoint end to end (load, tokenize,
// prefill, sample, stream UTF-8-safe text), to dump logits for comparison
// with another implementation, and to measure CPU decode speed. It drives
// the same engine pieces the server uses.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "engine/model/backend_factory.h"
#include "engine/model/cpu_backend.h"
#include "engine/model/model.h"
#include "engine/sampler/sampler.h"
#include "engine/sampler/stop_matcher.h"
#include "engine/tokenizer/stream_decoder.h"
#include "engine/tokenizer/tokenizer.h"
#include "tools/infer_flags.h"

namespace rwkv {
namespace {

using Clock = std::chrono::steady_clock;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "rwkv-infer: %s\n", std::string(s.message()).c_str());
  return 1;
}

absl::StatusOr<std::string> ReadFileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError("cannot open prompt file " + path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

int Run(const InferFlags& f) {
  // Vocabulary.
  std::unique_ptr<Tokenizer> tokenizer;
  if (!f.vocab.empty()) {
    auto t = LoadWorldTokenizer(f.vocab);
    if (!t.ok()) return Fail(t.status());
    tokenizer = *std::move(t);
  } else if (f.byte_vocab) {
    tokenizer = MakeByteTokenizer();
  }
  std::optional<std::string> prompt_text = f.prompt;
  if (f.prompt_file) {
    auto bytes = ReadFileBytes(*f.prompt_file);
    if (!bytes.ok()) return Fail(bytes.status());
    prompt_text = *bytes;
  }
  if (f.tokenize) {
    const std::vector<int32_t> ids = tokenizer->Encode(*prompt_text);
    std::printf("%s\n", absl::StrJoin(ids, ",").c_str());
    return 0;
  }

  // Model.
  const int threads = f.threads > 0 ? f.threads : DefaultThreads();
  const auto t_load = Clock::now();
  std::unique_ptr<Backend> backend;
  std::string backend_note = absl::StrFormat("backend cpu, %d threads", threads);
  if (f.backend == "cpu") {
    backend = std::make_unique<CpuBackend>(threads, f.openblas ? CpuGemm::kOpenBlas : CpuGemm::kBatchInvariant);
  } else {
    auto dtype = ParseWeightDType(f.weight_dtype);
    if (!dtype.ok()) return Fail(dtype.status());
    auto made = MakeBackend({f.backend, threads, *dtype}, &backend_note);
    if (!made.ok()) return Fail(made.status());
    backend = *std::move(made);
  }
  auto state_dtype = ParseStateDType(f.state_dtype);
  if (!state_dtype.ok()) return Fail(state_dtype.status());
  auto loaded = Model::Load(f.model, std::move(backend), {.state_dtype = *state_dtype});
  if (!loaded.ok()) return Fail(loaded.status());
  Model& model = **loaded;
  const ModelConfig& cfg = model.config();
  std::fprintf(stderr, "model: %s (%s), %.1f MB of %s weights, loaded in %.0f ms; %s\n", f.model.c_str(),
               cfg.ToString().c_str(), model.weight_bytes() / 1e6, std::string(DTypeName(model.weight_dtype())).c_str(),
               Ms(Clock::now() - t_load), backend_note.c_str());
  if (!tokenizer && cfg.vocab_size == 256) tokenizer = MakeByteTokenizer();
  if (tokenizer && tokenizer->vocab_size() > cfg.vocab_size) {
    return Fail(absl::InvalidArgumentError(
        absl::StrFormat("the %s vocabulary has %d tokens but the model only %d: use a matching --vocab",
                        tokenizer->name(), tokenizer->vocab_size(), cfg.vocab_size)));
  }
  if (!tokenizer) {
    if (prompt_text) {
      return Fail(absl::InvalidArgumentError(
          "--prompt needs a vocabulary: pass --vocab FILE (or use --tokens)"));
    }
    std::fprintf(stderr, "note: no vocabulary given; printing token ids instead of text\n");
  }

  // Prompt.
  std::vector<int32_t> prompt;
  if (f.tokens) {
    prompt = *f.tokens;
  } else if (prompt_text) {
    prompt = tokenizer->Encode(*prompt_text);
  }
  if (prompt.empty()) {
    prompt = {0};  // a fresh document starts after the end-of-text token
    if (!f.dump_logits.empty() || prompt_text) {
      std::fprintf(stderr, "note: empty prompt; starting from token 0\n");
    }
  }
  for (int32_t t : prompt) {
    if (t >= cfg.vocab_size) {
      return Fail(absl::InvalidArgumentError(
          absl::StrFormat("prompt token %d out of range for a vocabulary of %d", t, cfg.vocab_size)));
    }
  }
  auto sampler = Sampler::Create(f.sampling, cfg.vocab_size);
  if (!sampler.ok()) return Fail(sampler.status());
  if (absl::Status s = model.AllocateSlots(1); !s.ok()) return Fail(s);

  // Prefill.
  const bool dump = !f.dump_logits.empty();
  std::vector<float> logits;
  const auto t_prompt = Clock::now();
  ForwardRequest req{0, prompt, dump};
  if (absl::Status s = model.Forward({&req, 1}, &logits); !s.ok()) return Fail(s);
  const double prompt_ms = Ms(Clock::now() - t_prompt);
  if (dump) {
    std::ofstream out(f.dump_logits, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(logits.data()), static_cast<std::streamsize>(logits.size() * 4));
    out.close();
    if (!out) return Fail(absl::InternalError("cannot write " + f.dump_logits));
    logits.erase(logits.begin(), logits.end() - cfg.vocab_size);
  }

  // Generate.
  std::optional<StreamDecoder> decoder;
  if (tokenizer) decoder.emplace(*tokenizer);
  StopMatcher stops(f.sampling.stop_strings);
  std::string finish = "length";
  int generated = 0;
  const auto t_gen = Clock::now();
  auto emit = [](const std::string& s) {
    std::fwrite(s.data(), 1, s.size(), stdout);
    std::fflush(stdout);
  };
  while (generated < f.max_tokens) {
    const int32_t tok = sampler->Sample(logits);
    ++generated;
    if (sampler->IsStopToken(tok)) {
      finish = "stop token";
      break;
    }
    if (tokenizer && tok == tokenizer->end_of_text_id()) {
      finish = "end of text";
      break;
    }
    sampler->Accept(tok);
    if (decoder) {
      const StopMatchResult r = stops.Push(decoder->Push(tok));
      emit(r.emit);
      if (r.stopped) {
        finish = "stop string";
        break;
      }
    } else {
      emit(std::to_string(tok) + " ");
    }
    if (generated == f.max_tokens) break;
    const int32_t one[1] = {tok};
    ForwardRequest step{0, absl::MakeConstSpan(one, 1), false};
    if (absl::Status s = model.Forward({&step, 1}, &logits); !s.ok()) return Fail(s);
  }
  if (decoder && finish != "stop string") emit(stops.Push(decoder->Finish()).emit + stops.Finish());
  const double gen_ms = Ms(Clock::now() - t_gen);
  if (f.max_tokens > 0) emit("\n");
  std::fprintf(stderr, "prompt: %zu tokens in %.1f ms (%.1f tokens/s)\n", prompt.size(), prompt_ms,
               prompt.size() * 1000.0 / prompt_ms);
  if (generated > 0) {
    std::fprintf(stderr, "decode: %d tokens in %.1f ms (%.2f tokens/s), finish: %s\n", generated, gen_ms,
                 generated * 1000.0 / gen_ms, finish.c_str());
  }
  return 0;
}

}  // namespace
}  // namespace rwkv

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  auto flags = rwkv::ParseInferFlags(args);
  if (!flags.ok()) {
    std::fprintf(stderr, "rwkv-infer: %s\n%s", std::string(flags.status().message()).c_str(),
                 rwkv::InferUsage().c_str());
    return 2;
  }
  if (flags->help) {
    std::fputs(rwkv::InferUsage().c_str(), stdout);
    return 0;
  }
  return rwkv::Run(*flags);
}
