// rwkv-bench-engine: decode throughput of the engine's Model at several
// batch sizes, against a floor measured on the same device in the same run.
//
// Why: the server advances all its sessions one token per step, so what
// matters is the time of one Model::Forward with B one-token requests, at
// every B the server will see. A number alone says little; this tool also
// measures the two ceilings that bound it (copy bandwidth and matrix-unit
// peak, ceilings.h), computes the floor of each step from the model's sizes
// (bench_math.h), and prints the fraction of the floor we reach and, for the
// synthetic sizes a peer published, our ratio to the peer. It also counts
// the FFN's relu activity on the benchmarked backend (counting_backend.h),
// and reports how many fp32 states fit in the GPU memory the weights leave.
//
// What a step includes, as the engine runs it: host-side request
// validation, the embedding, every layer, the head, then B tokens picked.
// With device sampling (--sampling device, the default where the backend
// can): the logits stay on the backend (Model::ForwardKeepLogits) and one
// SampleRows call returns B tokens. With host sampling: the B x vocab fp32
// logits are downloaded and each session's Sampler picks on the host, one
// after another. Either way this is the step the engine sees, not a
// device-only time.
//
// Prefill (--prefill T1,T2,...): one fresh session (slot reset) fed a
// T-token prompt in one Model::Forward, as a server would feed a whole prompt
// (the model splits it into passes of <= --pass-rows rows), with the last token's
// logits downloaded; host clock, 2 untimed runs (the second captures the
// passes' CUDA graphs) then --prefill-reps timed ones. Reported against
// issue 5's flop count, 2 * matmul params * T, over the measured peak.
#include <algorithm>
#include <barrier>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/model/backend_factory.h"
#include "engine/model/model.h"
#include "engine/sampler/sampler.h"
#include "tools/bench/bench_flags.h"
#include "tools/bench/bench_math.h"
#include "tools/bench/ceilings.h"
#include "tools/bench/counting_backend.h"

namespace rwkv {
namespace {

using Clock = std::chrono::steady_clock;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "rwkv-bench-engine: %s\n", std::string(s.message()).c_str());
  return 1;
}

// Deterministic token ids (splitmix64), never the same stream twice.
class TokenStream {
 public:
  TokenStream(uint64_t seed, int32_t vocab) : s_(seed), vocab_(vocab) {}
  int32_t Next() {
    uint64_t z = (s_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    return static_cast<int32_t>(z % static_cast<uint64_t>(vocab_));
  }

 private:
  uint64_t s_;
  int32_t vocab_;
};

struct BatchResult {
  int32_t batch = 0;
  std::string error;  // empty: ran
  double context_ms = 0;
  double mean_ms = 0, median_ms = 0, min_ms = 0, max_ms = 0;
  double tokens_per_s = 0;
  Floor floor;
  std::optional<PeerPoint> peer;
};

// Feeds `per_session` tokens to each of `n` sessions (slots 0..n-1) in one
// Forward call.
absl::Status Prefill(Model& model, int32_t n, int32_t per_session, TokenStream& tokens) {
  std::vector<std::vector<int32_t>> ids(static_cast<size_t>(n));
  std::vector<ForwardRequest> reqs(static_cast<size_t>(n));
  for (int32_t s = 0; s < n; ++s) {
    for (int32_t t = 0; t < per_session; ++t) ids[static_cast<size_t>(s)].push_back(tokens.Next());
    reqs[static_cast<size_t>(s)] = {s, ids[static_cast<size_t>(s)], false};
  }
  std::vector<float> logits;
  return model.Forward(reqs, &logits);
}

// One model's share of a decode step: `batch` sessions (slots 0..batch-1),
// each with its sampler, as the engine keeps them.
class DecodeLane {
 public:
  DecodeLane(Model* model, int32_t batch, uint64_t seed, bool device_sampling)
      : model_(model), batch_(batch), device_sampling_(device_sampling),
        tokens_(seed, model->config().vocab_size) {}

  // Slots, the context tokens, the samplers and the first step's tokens.
  absl::Status Setup(int32_t context) {
    if (absl::Status s = model_->AllocateSlots(batch_); !s.ok()) return s;
    if (absl::Status s = Prefill(*model_, batch_, context, tokens_); !s.ok()) return s;
    const size_t n = static_cast<size_t>(batch_);
    ids_.assign(n, 0);
    reqs_.assign(n, {});
    rows_.assign(n, 0);
    specs_.assign(n, {});
    picked_.assign(n, {});
    samplers_.clear();
    const int32_t V = model_->config().vocab_size;
    for (int32_t s = 0; s < batch_; ++s) {
      reqs_[s] = {s, absl::Span<const int32_t>(&ids_[s], 1), false};
      rows_[s] = s;
      // One sampler per session, as the engine has (temperature 1, seeded).
      SamplingParams p;
      p.seed = static_cast<uint64_t>(s);
      auto made = Sampler::Create(p, V);
      if (!made.ok()) return made.status();
      samplers_.push_back(*std::move(made));
    }
    for (int32_t& id : ids_) id = tokens_.Next();
    return absl::OkStatus();
  }

  // One forward of the lane's sessions and their next tokens picked.
  absl::Status Step() {
    const int32_t V = model_->config().vocab_size;
    if (device_sampling_) {
      if (absl::Status s = model_->ForwardKeepLogits(reqs_); !s.ok()) return s;
      for (int32_t s = 0; s < batch_; ++s) samplers_[s].PrepareDeviceSample(&specs_[s]);
      if (absl::Status s = model_->SampleKeptLogits(rows_, specs_, absl::MakeSpan(picked_)); !s.ok()) return s;
      for (int32_t s = 0; s < batch_; ++s) {
        samplers_[s].FinishDeviceSample(picked_[s]);
        ids_[s] = picked_[s].token;
      }
    } else {
      if (absl::Status s = model_->Forward(reqs_, &logits_); !s.ok()) return s;
      for (int32_t s = 0; s < batch_; ++s) {
        ids_[s] = samplers_[s].Sample(
            absl::MakeConstSpan(logits_.data() + static_cast<size_t>(s) * V, static_cast<size_t>(V)));
      }
    }
    for (int32_t s = 0; s < batch_; ++s) samplers_[s].Accept(ids_[s]);
    return absl::OkStatus();
  }

 private:
  Model* model_;
  int32_t batch_;
  bool device_sampling_;
  TokenStream tokens_;
  std::vector<int32_t> ids_;
  std::vector<ForwardRequest> reqs_;
  std::vector<Sampler> samplers_;
  std::vector<float> logits_;
  std::vector<int32_t> rows_;
  std::vector<SampleSpec> specs_;
  std::vector<SampledToken> picked_;
};

// A decode step of `batch` sessions split over the models (--lanes): lane i
// takes batch / lanes sessions (the first batch % lanes one more). With one
// lane, the engine's step. With several, each model (its own backend and
// stream) steps its share on its own thread, all starting together; a step
// ends when the last lane's does. Setup and warm-up (which captures the
// graphs) run one lane at a time.
BatchResult RunBatch(const std::vector<Model*>& models, const BenchFlags& f, int32_t batch,
                     const FloorInputs& floor_in, bool device_sampling) {
  BatchResult r;
  r.batch = batch;
  r.floor = StepFloor(floor_in, batch);
  r.peer = PeerLookup(f.peer, f.model, batch);
  auto fail = [&](const absl::Status& s) {
    r.error = std::string(s.message());
    return r;
  };
  const int32_t nl = std::min<int32_t>(static_cast<int32_t>(models.size()), batch);
  std::vector<std::unique_ptr<DecodeLane>> lanes;
  const auto p0 = Clock::now();
  for (int32_t i = 0; i < nl; ++i) {
    const int32_t share = batch / nl + (i < batch % nl ? 1 : 0);
    lanes.push_back(std::make_unique<DecodeLane>(models[static_cast<size_t>(i)], share,
                                                 1000 + static_cast<uint64_t>(batch) + 7919 * static_cast<uint64_t>(i),
                                                 device_sampling));
    if (absl::Status s = lanes.back()->Setup(f.context); !s.ok()) return fail(s);
  }
  r.context_ms = Ms(Clock::now() - p0);
  for (int32_t step = 0; step < f.warmup; ++step) {
    for (auto& lane : lanes) {
      if (absl::Status s = lane->Step(); !s.ok()) return fail(s);
    }
  }
  std::vector<double> times;
  if (nl == 1) {
    for (int32_t step = 0; step < f.steps; ++step) {
      const auto t0 = Clock::now();
      if (absl::Status s = lanes[0]->Step(); !s.ok()) return fail(s);
      times.push_back(Ms(Clock::now() - t0));
    }
  } else {
    // Lanes 1.. on their own threads, lane 0 on this one; two barrier phases a
    // step: all start, all done.
    std::barrier sync(nl);
    std::vector<absl::Status> status(static_cast<size_t>(nl));
    std::vector<std::thread> threads;
    for (int32_t i = 1; i < nl; ++i) {
      threads.emplace_back([&, i] {
        for (int32_t step = 0; step < f.steps; ++step) {
          sync.arrive_and_wait();
          if (status[i].ok()) status[i] = lanes[i]->Step();
          sync.arrive_and_wait();
        }
      });
    }
    for (int32_t step = 0; step < f.steps; ++step) {
      sync.arrive_and_wait();
      const auto t0 = Clock::now();
      if (status[0].ok()) status[0] = lanes[0]->Step();
      sync.arrive_and_wait();
      times.push_back(Ms(Clock::now() - t0));
    }
    for (std::thread& t : threads) t.join();
    for (const absl::Status& s : status) {
      if (!s.ok()) return fail(s);
    }
  }
  double sum = 0;
  for (double t : times) sum += t;
  r.mean_ms = sum / static_cast<double>(times.size());
  std::vector<double> sorted = times;
  std::sort(sorted.begin(), sorted.end());
  r.median_ms = sorted[sorted.size() / 2];
  r.min_ms = sorted.front();
  r.max_ms = sorted.back();
  r.tokens_per_s = static_cast<double>(batch) * static_cast<double>(times.size()) / (sum * 1e-3);
  return r;
}

struct PrefillResult {
  int32_t tokens = 0;
  std::string error;  // empty: ran
  double median_ms = 0, min_ms = 0, max_ms = 0;
  double tokens_per_s = 0;  // at the median
  double tflops = 0;        // 2 * params * T / median
  double peak_fraction = 0;  // tflops / measured peak (0 when the peak is unknown)
  std::optional<PrefillTarget> target;
};

PrefillResult RunPrefill(Model& model, const BenchFlags& f, int32_t T, double params, double peak_tflops) {
  PrefillResult r;
  r.tokens = T;
  r.target = PrefillTargetLookup(f.peer, f.model, T);
  auto fail = [&](const absl::Status& s) {
    r.error = std::string(s.message());
    return r;
  };
  if (absl::Status s = model.AllocateSlots(1); !s.ok()) return fail(s);
  TokenStream stream(5000 + static_cast<uint64_t>(T), model.config().vocab_size);
  std::vector<int32_t> prompt(static_cast<size_t>(T));
  for (int32_t& id : prompt) id = stream.Next();
  const ForwardRequest req{0, prompt, false};
  std::vector<float> logits;
  std::vector<double> times;
  constexpr int kUntimed = 2;
  for (int rep = 0; rep < kUntimed + f.prefill_reps; ++rep) {
    if (absl::Status s = model.ResetSlot(0); !s.ok()) return fail(s);
    const auto t0 = Clock::now();
    if (absl::Status s = model.Forward({&req, 1}, &logits); !s.ok()) return fail(s);
    const double ms = Ms(Clock::now() - t0);
    if (rep >= kUntimed) times.push_back(ms);
  }
  std::sort(times.begin(), times.end());
  r.median_ms = times[times.size() / 2];
  r.min_ms = times.front();
  r.max_ms = times.back();
  r.tokens_per_s = static_cast<double>(T) / (r.median_ms * 1e-3);
  r.tflops = PrefillFlops(params, T) / (r.median_ms * 1e-3) / 1e12;
  if (peak_tflops > 0) r.peak_fraction = r.tflops / peak_tflops;
  return r;
}

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += absl::StrFormat("\\u%04x", static_cast<int>(c));
    } else {
      out += c;
    }
  }
  return out + "\"";
}

int Run(const BenchFlags& f) {
  const int threads = f.threads > 0 ? f.threads : DefaultThreads();
  auto dtype = ParseWeightDType(f.weight_dtype);
  if (!dtype.ok()) return Fail(dtype.status());
  auto state_dtype = ParseStateDType(f.state_dtype);
  if (!state_dtype.ok()) return Fail(state_dtype.status());
  const bool fp16_state = *state_dtype == DType::kF16;
  std::string backend_note;
  auto made = MakeBackend({f.backend, threads, *dtype}, &backend_note);
  if (!made.ok()) return Fail(made.status());
  const bool on_gpu = (*made)->name() == "cuda";

  // Ceilings first, while the device is empty.
  Ceilings ceil;
  std::string device_name = "host CPU";
  std::string memory_line = "state pool: not computed on the CPU backend (host memory is the limit)";
  if (on_gpu) {
#ifdef RWKV_HAVE_CUDA_BACKEND
    const size_t copy_bytes = static_cast<size_t>(f.copy_mib > 0 ? f.copy_mib : 2048) << 20;
    auto c = MeasureCudaCeilings(0, *dtype, copy_bytes, f.gemm_n, 10);
    if (!c.ok()) return Fail(c.status());
    ceil = *c;
    auto mem = CudaDeviceMemory(0);
    if (!mem.ok()) return Fail(mem.status());
    device_name = mem->name;
#endif
  } else {
    ceil = MeasureHostCeilings(threads, static_cast<size_t>(f.copy_mib > 0 ? f.copy_mib : 512) << 20, 5);
    device_name = absl::StrFormat("host CPU, %d threads", threads);
  }

  const bool can_sample = (*made)->SupportsDeviceSampling();
  if (f.sampling == "device" && !can_sample) {
    return Fail(absl::FailedPreconditionError(
        absl::StrCat("--sampling device: the ", (*made)->name(), " backend cannot sample in its memory")));
  }
  const bool device_sampling = f.sampling == "device" || (f.sampling == "auto" && can_sample);
  auto counting = std::make_unique<ReluCountingBackend>(*std::move(made));
  ReluCountingBackend* counter = counting.get();
  const auto l0 = Clock::now();
  auto loaded = Model::Load(f.model, std::move(counting), {.state_dtype = *state_dtype});
  if (!loaded.ok()) return Fail(loaded.status());
  const double load_s = Ms(Clock::now() - l0) / 1e3;
  Model& model = **loaded;
  if (absl::Status s = model.SetMaxPassRows(f.pass_rows); !s.ok()) return Fail(s);
  const ModelConfig& cfg = model.config();
  // What one session's state costs in the slot pool (and what a step reads
  // and writes of it): half the matrices' bytes with fp16 state.
  const double state_bytes = static_cast<double>(model.slot_bytes());
  FloorInputs floor_in;
  floor_in.weight_bytes = static_cast<double>(model.weight_bytes());
  floor_in.state_bytes = state_bytes;
  floor_in.params = static_cast<double>(cfg.MatmulParamCount());
  floor_in.copy_gbps = ceil.copy_gbps;
  floor_in.peak_tflops = ceil.peak_tflops;
  int64_t sessions_fit = -1;
  double free_after_load = 0;
#ifdef RWKV_HAVE_CUDA_BACKEND
  if (on_gpu) {
    auto mem = CudaDeviceMemory(0);
    if (!mem.ok()) return Fail(mem.status());
    free_after_load = static_cast<double>(mem->free_bytes);
    sessions_fit = static_cast<int64_t>(free_after_load / state_bytes);
    memory_line = absl::StrFormat(
        "state pool: %.1f GiB of %.1f GiB free after the weights -> %d sessions of %s state "
        "(= --state-memory-mb %d; the forward workspace, ~rows x (19 C + 4C) floats + B x vocab logits "
        "(+ ~4.6 rows x C floats of WKV-7 chunk matrices with fp32 state), comes out of the same memory)",
        free_after_load / 1073741824.0, static_cast<double>(mem->total_bytes) / 1073741824.0, sessions_fit,
        f.state_dtype, static_cast<int64_t>(free_after_load) >> 20);
  }
#endif

  std::printf("rwkv-bench-engine: %s (%s)\n", f.model.c_str(), cfg.ToString().c_str());
  std::printf("%s; loaded in %.1f s\n", backend_note.c_str(), load_s);
  std::printf("device: %s\n", device_name.c_str());
  std::printf(
      "weights read per step: %.3f GB (matrices %s, vectors f32, embedding table excluded); "
      "matmul params %.3fB (head included)\n",
      floor_in.weight_bytes / 1e9, on_gpu ? f.weight_dtype.c_str() : "f32", floor_in.params / 1e9);
  std::printf("state: %.2f MB per session (%s: %s; %lld values)\n", state_bytes / 1e6, f.state_dtype.c_str(),
              fp16_state ? "wkv matrices fp16, token-shift vectors fp32" : "all fp32",
              static_cast<long long>(model.state_layout().total));
  std::printf("%s\n", memory_line.c_str());
  std::printf("ceiling, copy bandwidth: %.0f GB/s [%s]\n", ceil.copy_gbps, ceil.copy_method.c_str());
  if (ceil.peak_tflops > 0) {
    std::printf("ceiling, matrix peak: %.1f TFLOP/s [%s]\n", ceil.peak_tflops, ceil.peak_method.c_str());
  } else {
    std::printf("ceiling, matrix peak: %s\n", ceil.peak_method.c_str());
  }

  // FFN activity, on the benchmarked backend.
  ReluCounts relu;
  int32_t ffn_tokens = 0;
  if (f.ffn_tokens > 0) {
    const int32_t sessions = std::min<int32_t>(8, f.ffn_tokens);
    const int32_t per = (f.ffn_tokens + sessions - 1) / sessions;
    ffn_tokens = sessions * per;
    if (absl::Status s = model.AllocateSlots(sessions); !s.ok()) return Fail(s);
    TokenStream tokens(7, cfg.vocab_size);
    counter->StartCounting(cfg.n_layer);
    const absl::Status s = Prefill(model, sessions, per, tokens);
    relu = counter->StopCounting();
    if (!s.ok()) return Fail(s);
    if (!relu.status.ok()) return Fail(relu.status);
    double lo = 1, hi = 0;
    for (size_t l = 0; l < relu.layer_total.size(); ++l) {
      if (relu.layer_total[l] == 0) continue;
      const double x = static_cast<double>(relu.layer_positive[l]) / static_cast<double>(relu.layer_total[l]);
      lo = std::min(lo, x);
      hi = std::max(hi, x);
    }
    std::printf(
        "FFN activity: %.1f%% of relu inputs positive (%d tokens, all layers; per layer %.1f%% .. %.1f%%)\n",
        100 * relu.Fraction(), ffn_tokens, 100 * lo, 100 * hi);
  } else {
    std::printf("FFN activity: not measured (--ffn-tokens 0)\n");
  }

  // Prefill first: a fresh model, before decode sessions take slots.
  std::vector<PrefillResult> prefills;
  if (!f.prefill.empty()) {
    std::printf(
        "\nprefill: one session, a T-token prompt in one forward (passes of <= %d rows), the last token's "
        "logits downloaded; host clock; median of %d after 2 untimed; flops = 2 * %.3fB matmul params * T "
        "(issue 5's count)\n\n",
        model.max_pass_rows(), f.prefill_reps, floor_in.params / 1e9);
    std::string header = absl::StrFormat("%7s %10s %10s %11s %9s %8s", "T", "ms", "min ms", "tokens/s", "TFLOP/s",
                                         "of peak");
    if (!f.peer.empty()) absl::StrAppend(&header, absl::StrFormat("  %10s %11s %5s", "target t/s", "target peak", "met"));
    std::printf("%s\n", header.c_str());
    std::fflush(stdout);
    for (int32_t T : f.prefill) {
      PrefillResult r = RunPrefill(model, f, T, floor_in.params, ceil.peak_tflops);
      if (!r.error.empty()) {
        std::printf("%7d  failed: %s\n", T, r.error.c_str());
      } else {
        std::string line = absl::StrFormat("%7d %10.2f %10.2f %11.0f %9.1f %8.3f", T, r.median_ms, r.min_ms,
                                           r.tokens_per_s, r.tflops, r.peak_fraction);
        if (!f.peer.empty() && r.target) {
          const bool met = r.tokens_per_s >= r.target->tps &&
                           (r.target->peak_fraction == 0 || r.peak_fraction >= r.target->peak_fraction);
          absl::StrAppend(&line, absl::StrFormat("  %10.0f %11s %5s", r.target->tps,
                                                 r.target->peak_fraction > 0
                                                     ? absl::StrFormat("%.2f", r.target->peak_fraction)
                                                     : std::string("-"),
                                                 met ? "yes" : "no"));
        } else if (!f.peer.empty()) {
          absl::StrAppend(&line, "  (no target)");
        }
        std::printf("%s\n", line.c_str());
      }
      std::fflush(stdout);
      prefills.push_back(r);
    }
  }
  const std::vector<int32_t> decode_batches =
      f.prefill.empty() || f.batches_given ? f.batches : std::vector<int32_t>{};

  // --lanes N: N - 1 more copies of the model, each on its own backend (its
  // own stream on a GPU), for decode steps split across them.
  std::vector<std::unique_ptr<Model>> extra_lanes;
  std::vector<Model*> lane_models = {&model};
  if (!decode_batches.empty()) {
    for (int32_t i = 1; i < f.lanes; ++i) {
      auto backend = MakeBackend({f.backend, threads, *dtype}, nullptr);
      if (!backend.ok()) return Fail(backend.status());
      auto lane = Model::Load(f.model, *std::move(backend), {.state_dtype = *state_dtype});
      if (!lane.ok()) return Fail(lane.status());
      if (absl::Status s = (*lane)->SetMaxPassRows(f.pass_rows); !s.ok()) return Fail(s);
      lane_models.push_back(lane->get());
      extra_lanes.push_back(*std::move(lane));
    }
  }

  const std::string step_what =
      device_sampling
          ? "one forward of B sessions x 1 token, logits kept on the backend, B tokens sampled there "
            "(device sampling; one SampleRows call, B (token, logprob) pairs downloaded)"
          : absl::StrFormat("one forward of B sessions x 1 token, logits (B x %d fp32) downloaded to the host, "
                            "B tokens sampled there (host sampling, one Sampler after another)",
                            cfg.vocab_size);
  const bool peer = !f.peer.empty();
  if (!decode_batches.empty()) {
    std::printf(
        "\nper step: %s; temperature 1, no filters; host clock; %d timed steps after %d warm-up, each session "
        "prefilled with %d tokens\n",
        step_what.c_str(), f.steps, f.warmup, f.context);
    std::printf(
        "floor = max((weight bytes + B*2*state bytes) / copy bw, 2*params*B / matrix peak); "
        "'of floor' = floor / measured\n");
    if (f.lanes > 1) {
      std::printf(
          "lanes: %d copies of the model, each on its own backend and thread, B split across them and stepped "
          "at once (a step ends with the last lane's); the weights are read once per lane, the floor counts "
          "them once\n",
          f.lanes);
    }
    std::printf("\n");
    std::string header = absl::StrFormat("%5s %9s %9s %10s %9s %4s %8s", "B", "ms/step", "median", "tokens/s",
                                         "floor ms", "by", "of floor");
    if (peer) {
      absl::StrAppend(&header, absl::StrFormat("  %10s %10s %8s %9s %6s", "peer fp16s", "peer fp32s",
                                               fp16_state ? "vs fp16s" : "vs fp32s", "target", "met"));
    }
    std::printf("%s\n", header.c_str());
    std::fflush(stdout);
  }

  std::vector<BatchResult> results;
  for (int32_t batch : decode_batches) {
    BatchResult r = RunBatch(lane_models, f, batch, floor_in, device_sampling);
    if (!r.error.empty()) {
      std::printf("%5d  failed: %s\n", batch, r.error.c_str());
    } else {
      std::string line = absl::StrFormat("%5d %9.3f %9.3f %10.1f %9.3f %4s %8.3f", batch, r.mean_ms,
                                         r.median_ms, r.tokens_per_s, r.floor.ms,
                                         r.floor.memory_bound ? "mem" : "mma", r.floor.ms / r.mean_ms);
      if (peer && r.peer) {
        const double peer_tps = PeerTpsForState(*r.peer, fp16_state);
        const double target = TargetFactor(batch) * peer_tps;
        absl::StrAppend(
            &line, absl::StrFormat("  %10.0f %10.0f %8.3f %9.0f %6s", r.peer->fp16_state_tps,
                                   r.peer->fp32_state_tps, r.tokens_per_s / peer_tps, target,
                                   r.tokens_per_s >= target ? "yes" : "no"));
      } else if (peer) {
        absl::StrAppend(&line, "  (no peer number)");
      }
      std::printf("%s\n", line.c_str());
    }
    std::fflush(stdout);
    results.push_back(r);
  }

  if (!f.json.empty()) {
    std::string j = "{\n";
    absl::StrAppend(&j, "  \"sampling\": ", JsonString(device_sampling ? "device" : "host"), ",\n");
    absl::StrAppend(&j, "  \"lanes\": ", f.lanes, ",\n");
    absl::StrAppend(&j, "  \"model\": ", JsonString(f.model), ",\n  \"config\": ", JsonString(cfg.ToString()),
                    ",\n  \"backend\": ", JsonString(backend_note),
                    ",\n  \"device\": ", JsonString(device_name), ",\n");
    absl::StrAppend(&j,
                    absl::StrFormat("  \"load_s\": %.2f,\n  \"weight_bytes\": %d,\n  \"matmul_params\": %d,\n"
                                    "  \"state_dtype\": \"%s\",\n  \"state_bytes\": %d,\n  \"free_bytes_after_load\": %.0f,\n"
                                    "  \"sessions_fit\": %d,\n",
                                    load_s, model.weight_bytes(), cfg.MatmulParamCount(), f.state_dtype,
                                    static_cast<int64_t>(state_bytes), free_after_load, sessions_fit));
    absl::StrAppend(
        &j, absl::StrFormat("  \"copy_gbps\": %.1f,\n  \"copy_method\": %s,\n  \"peak_tflops\": %.2f,\n"
                            "  \"peak_method\": %s,\n",
                            ceil.copy_gbps, JsonString(ceil.copy_method), ceil.peak_tflops,
                            JsonString(ceil.peak_method)));
    absl::StrAppend(&j, absl::StrFormat("  \"ffn_tokens\": %d,\n  \"ffn_activity\": %.5f,\n", ffn_tokens,
                                        relu.Fraction()));
    absl::StrAppend(
        &j, absl::StrFormat("  \"steps\": %d,\n  \"warmup\": %d,\n  \"context\": %d,\n  \"results\": [",
                            f.steps, f.warmup, f.context));
    for (size_t i = 0; i < results.size(); ++i) {
      const BatchResult& r = results[i];
      absl::StrAppend(&j, i == 0 ? "\n" : ",\n", absl::StrFormat("    {\"batch\": %d", r.batch));
      if (!r.error.empty()) {
        absl::StrAppend(&j, ", \"error\": ", JsonString(r.error), "}");
        continue;
      }
      absl::StrAppend(
          &j, absl::StrFormat(", \"context_ms\": %.3f, \"mean_ms\": %.4f, \"median_ms\": %.4f, "
                              "\"min_ms\": %.4f, \"max_ms\": %.4f, \"tokens_per_s\": %.2f, "
                              "\"floor_ms\": %.4f, \"floor_memory_ms\": %.4f, \"floor_compute_ms\": %.4f, "
                              "\"floor_fraction\": %.4f",
                              r.context_ms, r.mean_ms, r.median_ms, r.min_ms, r.max_ms, r.tokens_per_s,
                              r.floor.ms, r.floor.memory_ms, r.floor.compute_ms, r.floor.ms / r.mean_ms));
      if (r.peer) {
        const double peer_tps = PeerTpsForState(*r.peer, fp16_state);
        absl::StrAppend(&j,
                        absl::StrFormat(", \"peer\": %s, \"peer_fp16_state_tps\": %.0f, "
                                        "\"peer_fp32_state_tps\": %.0f, \"ratio_to_peer_%s_state\": %.4f, "
                                        "\"target_tps\": %.0f",
                                        JsonString(f.peer), r.peer->fp16_state_tps, r.peer->fp32_state_tps,
                                        f.state_dtype, r.tokens_per_s / peer_tps, TargetFactor(r.batch) * peer_tps));
      }
      absl::StrAppend(&j, "}");
    }
    absl::StrAppend(&j, "\n  ],\n  \"prefill_reps\": ", f.prefill_reps, ",\n  \"prefill\": [");
    for (size_t i = 0; i < prefills.size(); ++i) {
      const PrefillResult& r = prefills[i];
      absl::StrAppend(&j, i == 0 ? "\n" : ",\n", absl::StrFormat("    {\"tokens\": %d", r.tokens));
      if (!r.error.empty()) {
        absl::StrAppend(&j, ", \"error\": ", JsonString(r.error), "}");
        continue;
      }
      absl::StrAppend(&j, absl::StrFormat(", \"median_ms\": %.3f, \"min_ms\": %.3f, \"max_ms\": %.3f, "
                                          "\"tokens_per_s\": %.1f, \"tflops\": %.2f, \"peak_fraction\": %.4f",
                                          r.median_ms, r.min_ms, r.max_ms, r.tokens_per_s, r.tflops,
                                          r.peak_fraction));
      if (r.target) {
        absl::StrAppend(&j, absl::StrFormat(", \"target_tps\": %.0f, \"target_peak_fraction\": %.2f",
                                            r.target->tps, r.target->peak_fraction));
      }
      absl::StrAppend(&j, "}");
    }
    absl::StrAppend(&j, "\n  ]\n}\n");
    std::ofstream out(f.json);
    out << j;
    if (!out) return Fail(absl::UnavailableError("cannot write " + f.json));
  }
  for (const BatchResult& r : results) {
    if (!r.error.empty()) return 2;  // printed above; a failed batch is not a silent success
  }
  for (const PrefillResult& r : prefills) {
    if (!r.error.empty()) return 2;
  }
  return 0;
}

}  // namespace
}  // namespace rwkv

int main(int argc, char** argv) {
  auto flags = rwkv::ParseBenchFlags(std::vector<std::string>(argv + 1, argv + argc));
  if (!flags.ok()) {
    std::fprintf(stderr, "rwkv-bench-engine: %s\n%s", std::string(flags.status().message()).c_str(),
                 rwkv::BenchUsage().c_str());
    return 2;
  }
  if (flags->help) {
    std::printf("%s", rwkv::BenchUsage().c_str());
    return 0;
  }
  return rwkv::Run(*flags);
}
