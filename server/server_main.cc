// rwkv-server: the gRPC inference server process.
//
// Why this file holds only wiring: flags -> config structs -> constructors
// (model, tokenizer, state store, metrics, engine, services), then the
// process lifecycle. The lifecycle is the delicate part: SIGTERM/SIGINT are
// blocked in every thread and received synchronously here with
// sigtimedwait (no work ever runs in a signal handler); on a signal, health
// flips to NOT_SERVING, new calls get UNAVAILABLE, the engine lets running
// generations finish until --drain-seconds and saves live sessions when
// --state-dir is set, and only then do the gRPC server and the metrics port
// stop. A second signal, or a shutdown stuck well past the drain time,
// exits at once. The same loop polls Engine::healthy() so a backend fault
// turns health to NOT_SERVING.
//
// Log lines (stderr, parsed by the end-to-end tests):
//   rwkv-server: listening on HOST:PORT   (the bound port, also for port 0)
//   rwkv-server: metrics on HOST:PORT
#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "engine/metrics/registry.h"
#include "engine/metrics/server_metrics.h"
#include "engine/model/backend_factory.h"
#include "engine/model/model.h"
#include "engine/serving/engine.h"
#include "engine/state/state_store.h"
#include "engine/tokenizer/tokenizer.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "server/id_only_tokenizer.h"
#include "server/inference_service.h"
#include "server/metrics_http.h"
#include "server/model_download.h"
#include "server/server_flags.h"

#ifndef RWKV_SERVER_VERSION
#define RWKV_SERVER_VERSION "dev"
#endif

namespace rwkv {
namespace {

constexpr char kServiceName[] = "rwkv.v1.Inference";
constexpr char kFallbackModel[] = "synthetic:0.1b";

template <typename... Args>
void Log(const absl::FormatSpec<Args...>& format, const Args&... args) {
  std::fprintf(stderr, "rwkv-server: %s\n", absl::StrFormat(format, args...).c_str());
  std::fflush(stderr);
}

int Fail(const absl::Status& status) {
  Log("error: %s", std::string(status.message()));
  return 1;
}

// Where the model and vocabulary come from.
struct ModelChoice {
  std::string spec;        // file or synthetic:SIZE
  std::string vocab_path;  // World vocabulary file; empty: decided from the model
};

// The default model and World vocabulary from the cache (downloaded on first
// use), or synthetic:0.1b with a loud warning when they cannot be had.
ModelChoice ResolveDefaultModel() {
  ModelChoice choice;
  absl::StatusOr<std::string> dir = CacheDir();
  if (dir.ok()) Log("no --model: using %s (cache %s)", kDefaultModelFile, *dir);
  absl::StatusOr<CachedFile> model =
      dir.ok() ? EnsureCached(DefaultModelUrl(), *dir, kDefaultModelFile) : dir.status();
  if (model.ok()) {
    Log("model file %s %s, sha256 %s", model->path, model->downloaded ? "downloaded" : "found in cache",
        model->sha256);
    choice.spec = model->path;
  } else {
    Log("WARNING: cannot get the default model: %s", std::string(model.status().message()));
    Log("WARNING: starting on %s, a model with RANDOM weights: generated text will be MEANINGLESS. "
        "Pass --model FILE for a real model.",
        kFallbackModel);
    choice.spec = kFallbackModel;
  }
  absl::StatusOr<CachedFile> vocab =
      dir.ok() ? EnsureCached(WorldVocabUrl(), *dir, kWorldVocabFile) : dir.status();
  if (vocab.ok()) {
    Log("vocabulary file %s %s, sha256 %s", vocab->path, vocab->downloaded ? "downloaded" : "found in cache",
        vocab->sha256);
    choice.vocab_path = vocab->path;
  } else {
    Log("WARNING: cannot get the World vocabulary: %s", std::string(vocab.status().message()));
  }
  return choice;
}

// The tokenizer: --byte-vocab, --vocab, the default vocabulary, bytes for a
// 256-token model, else token ids only.
absl::StatusOr<std::unique_ptr<Tokenizer>> ChooseTokenizer(const ServerFlags& flags,
                                                           const ModelChoice& choice,
                                                           const ModelConfig& config) {
  std::unique_ptr<Tokenizer> tokenizer;
  std::string vocab = !flags.vocab.empty() ? flags.vocab : choice.vocab_path;
  if (vocab.empty() && !flags.byte_vocab && config.vocab_size == 65536 &&
      choice.spec.rfind("synthetic:", 0) != 0) {
    // A World-sized model file: use the World vocabulary if an earlier run
    // cached it (never downloaded here, so a start stays predictable).
    absl::StatusOr<std::string> dir = CacheDir();
    const std::string cached = dir.ok() ? absl::StrCat(*dir, "/", kWorldVocabFile) : "";
    if (!cached.empty() && access(cached.c_str(), R_OK) == 0) {
      Log("no --vocab: using the cached World vocabulary %s", cached);
      vocab = cached;
    }
  }
  if (flags.byte_vocab || (vocab.empty() && config.vocab_size == 256)) {
    tokenizer = MakeByteTokenizer();
  } else if (!vocab.empty()) {
    auto world = LoadWorldTokenizer(vocab);
    if (!world.ok()) return world.status();
    tokenizer = *std::move(world);
  } else {
    Log("WARNING: no vocabulary for a %d-token model: text input gets FAILED_PRECONDITION and outputs "
        "carry token ids with empty text (pass --vocab FILE)",
        config.vocab_size);
    // A World-sized model ends text with token 0; for others there is no known end.
    return MakeIdOnlyTokenizer(config.vocab_size, config.vocab_size == 65536 ? 0 : -1);
  }
  if (tokenizer->vocab_size() > config.vocab_size) {
    return absl::InvalidArgumentError(
        absl::StrFormat("the %s vocabulary has %d tokens but the model only %d: use a matching --vocab",
                        tokenizer->name(), tokenizer->vocab_size(), config.vocab_size));
  }
  return tokenizer;
}

// The model's short name for rwkv_info: the file name without directory
// and extension, or the synthetic spec.
std::string ModelLabel(const std::string& spec) {
  if (spec.rfind("synthetic:", 0) == 0) return spec;
  std::string name = spec.substr(spec.find_last_of('/') + 1);
  if (const size_t dot = name.rfind('.'); dot != std::string::npos && dot > 0) name.resize(dot);
  return name;
}

// "127.0.0.1:0" -> "127.0.0.1", "[::1]:0" -> "[::1]", ":0" -> "0.0.0.0".
std::string ListenHost(const std::string& listen) {
  const size_t colon = listen.rfind(':');
  std::string host = colon == std::string::npos ? listen : listen.substr(0, colon);
  return host.empty() ? "0.0.0.0" : host;
}

// Calls an engine method with a Done callback and waits for its result.
// Only for start-up, never from an engine callback.
template <typename T, typename Call>
absl::StatusOr<T> Await(Call call) {
  auto promise = std::make_shared<std::promise<absl::StatusOr<T>>>();
  std::future<absl::StatusOr<T>> future = promise->get_future();
  call([promise](absl::StatusOr<T> result) { promise->set_value(std::move(result)); });
  return future.get();
}

// Waits for SIGINT/SIGTERM; meanwhile mirrors Engine::healthy() into the
// health service once a second. Returns the signal.
int WaitForSignal(const sigset_t& signals, const Engine& engine, grpc::HealthCheckServiceInterface* health) {
  bool serving = true;
  while (true) {
    const timespec one_second = {1, 0};
    siginfo_t info;
    const int sig = sigtimedwait(&signals, &info, &one_second);
    if (sig > 0) return sig;
    if (serving && !engine.healthy()) {
      serving = false;
      Log("the engine reported a backend fault: health is NOT_SERVING");
      health->SetServingStatus(false);
    }
  }
}

// After the first signal: a second one, or a shutdown that takes far longer
// than the drain, ends the process at once.
void StartShutdownWatchdog(const sigset_t& signals, double drain_seconds) {
  std::thread([signals, drain_seconds] {
    const absl::Time give_up = absl::Now() + absl::Seconds(drain_seconds + 30);
    while (absl::Now() < give_up) {
      const timespec one_second = {1, 0};
      siginfo_t info;
      if (sigtimedwait(&signals, &info, &one_second) > 0) {
        Log("second signal: exiting without finishing the shutdown");
        std::_Exit(1);
      }
    }
    Log("error: shutdown did not finish %.0f s after the drain deadline; exiting", 30.0);
    std::_Exit(1);
  }).detach();
}

int Run(const ServerFlags& flags, const sigset_t& signals) {
  Log("rwkv-server %s", RWKV_SERVER_VERSION);

  // Model and tokenizer.
  ModelChoice choice{flags.model, ""};
  if (choice.spec.empty()) choice = ResolveDefaultModel();
  const int threads = flags.threads > 0 ? flags.threads : DefaultThreads();
  auto weight_dtype = ParseWeightDType(flags.weight_dtype);
  if (!weight_dtype.ok()) return Fail(weight_dtype.status());
  auto state_dtype = ParseStateDType(flags.state_dtype);
  if (!state_dtype.ok()) return Fail(state_dtype.status());
  std::string backend_note;
  auto backend = MakeBackend({flags.backend, threads, *weight_dtype}, &backend_note);
  if (!backend.ok()) return Fail(backend.status());
  Log("%s", backend_note);
  const std::string backend_name = (*backend)->name();
  const absl::Time load_start = absl::Now();
  auto model = Model::Load(choice.spec, *std::move(backend), {.state_dtype = *state_dtype});
  if (!model.ok()) {
    if (model.status().code() == absl::StatusCode::kResourceExhausted) {
      return Fail(absl::ResourceExhaustedError(absl::StrCat(
          "the model's weights do not fit: ", model.status().message(),
          ". Use --weight-dtype f16 or bf16 (half the bytes of f32), a smaller model, or a GPU with more "
          "free memory (another process may hold some: see nvidia-smi)")));
    }
    return Fail(model.status());
  }
  const ModelConfig config = (*model)->config();
  Log("model %s: %s, %.1f MB of %s weights, loaded in %.1f s", choice.spec, config.ToString(),
      static_cast<double>((*model)->weight_bytes()) / 1e6, DTypeName((*model)->weight_dtype()),
      absl::ToDoubleSeconds(absl::Now() - load_start));
  auto tokenizer = ChooseTokenizer(flags, choice, config);
  if (!tokenizer.ok()) return Fail(tokenizer.status());
  Log("tokenizer %s", (*tokenizer)->name());

  // State store, metrics, engine.
  std::unique_ptr<DirectoryStateStore> store;
  if (!flags.state_dir.empty()) {
    auto opened = DirectoryStateStore::Open(flags.state_dir);
    if (!opened.ok()) return Fail(opened.status());
    store = *std::move(opened);
  }
  metrics::Registry registry;
  ServerMetrics server_metrics(registry, ServerInfo{ModelLabel(choice.spec), backend_name, RWKV_SERVER_VERSION});
  EngineConfig engine_config = flags.engine;
  // Slots are sized by what one costs in the pool, which depends on --state-dtype.
  const int64_t state_bytes = (*model)->slot_bytes();
  const absl::StatusOr<Backend::MemoryInfo> device_memory = (*model)->backend().DeviceMemory();
  auto pool = PlanStatePool(flags, state_bytes,
                            device_memory.ok() ? std::optional<int64_t>(device_memory->free_bytes) : std::nullopt,
                            [&](int rows, int logit_rows) { return (*model)->WorkspaceBytes(rows, logit_rows); });
  if (!pool.ok()) return Fail(pool.status());
  engine_config.state_slots = pool->slots;
  engine_config.max_sessions = pool->max_sessions;
  engine_config.max_batch = pool->max_batch;
  const double pool_mb = static_cast<double>(state_bytes) * engine_config.state_slots / (1 << 20);
  Log("state pool: %d sessions x %.2f MB of %s state = %.1f MB on %s%s", engine_config.state_slots,
      static_cast<double>(state_bytes) / (1 << 20), flags.state_dtype, pool_mb, backend_name, pool->note);
  auto engine_or =
      Engine::Create(*std::move(model), *std::move(tokenizer), engine_config, store.get(), &server_metrics);
  if (!engine_or.ok()) {
    if (engine_or.status().code() == absl::StatusCode::kResourceExhausted) {
      return Fail(absl::ResourceExhaustedError(absl::StrFormat(
          "the state pool of %d sessions x %.2f MB = %.1f MB did not fit: %s. Lower --state-memory-mb (or "
          "--state-slots), or --max-batch / --step-tokens (the forward workspace grows with them)",
          engine_config.state_slots, static_cast<double>(state_bytes) / (1 << 20), pool_mb,
          engine_or.status().message())));
    }
    return Fail(engine_or.status());
  }
  std::unique_ptr<Engine> engine = *std::move(engine_or);
  const EngineConfig& ec = engine->config();
  Log("state slots %d, max sessions %d, max batch %d, max queue %d, prefill chunk %d, step tokens %d, mixed "
      "prefill tokens %d, mixed prefill ratio %g, mixed prefill drain steps %d",
      ec.state_slots, ec.max_sessions, ec.max_batch, ec.max_queue, ec.prefill_chunk, ec.step_token_budget,
      ec.mixed_prefill_tokens, ec.mixed_prefill_ratio, ec.mixed_prefill_drain_steps);
  if (const Engine::WarmUp w = engine->warm_up(); w.shapes > 0) {
    Log("warm-up: %d decode pass shapes (1..%d sessions) run and recorded in %.2f s", w.shapes, ec.max_batch,
        w.seconds);
  }
  if (!ec.step_log_path.empty()) Log("step log: %s", ec.step_log_path);
  Log("state bytes per session %d (%.2f MB)", engine->state_bytes_per_session(),
      static_cast<double>(engine->state_bytes_per_session()) / 1e6);
  const OffloadInfo offload = engine->offload_info();
  Log("offload memory: %d idle sessions x %.2f MB of %s state = %.1f MB of %s host memory, allocated as needed "
      "(--offload-memory-mb %d); beyond it, %s",
      offload.capacity, static_cast<double>(offload.block_bytes) / (1 << 20), flags.state_dtype,
      static_cast<double>(offload.capacity * offload.block_bytes) / (1 << 20),
      offload.pinned ? "pinned (page-locked)" : "pageable", flags.offload_memory_mb,
      store != nullptr ? "they go to --state-dir"
                       : "with no --state-dir, requests wait for a slot and new sessions' states are refused");
  if (store != nullptr) {
    absl::Status restored = engine->RestoreSavedSessions();
    auto sessions = Await<std::vector<SessionInfo>>(
        [&](Engine::Done<std::vector<SessionInfo>> done) { engine->ListSessions(std::move(done)); });
    if (!restored.ok()) Log("WARNING: cannot restore saved sessions: %s", std::string(restored.message()));
    Log("state dir %s, %d live sessions after restore", store->dir(), sessions.ok() ? sessions->size() : 0);
  } else {
    Log("no --state-dir: SaveSession/LoadSession unavailable, sessions are not kept across restarts");
  }

  // Services.
  InferenceServiceOptions service_options{choice.spec, RWKV_SERVER_VERSION, &server_metrics, nullptr};
  if (store != nullptr) {
    service_options.saved_state_bytes = [dir = store.get()](const std::string& name) -> int64_t {
      struct stat st;
      return stat(dir->PathFor(name).c_str(), &st) == 0 ? static_cast<int64_t>(st.st_size) : 0;
    };
  }
  InferenceService service(engine.get(), std::move(service_options));
  std::unique_ptr<MetricsHttpServer> metrics_http;
  if (flags.metrics_listen != "off") {
    auto started = MetricsHttpServer::Start(flags.metrics_listen, &registry, [&service, &engine] {
      return !service.draining() && engine->healthy();
    });
    if (!started.ok()) return Fail(started.status());
    metrics_http = *std::move(started);
    Log("metrics on %s:%d", ListenHost(flags.metrics_listen), metrics_http->port());
  }
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(flags.listen, grpc::InsecureServerCredentials(), &port);
  // gRPC sets SO_REUSEPORT by default, which lets a second server bind a
  // taken port silently; a taken port must be an error.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  // Room for a prompt of --max-prompt-tokens ids or text (the default 4 MiB
  // is about a million tokens).
  builder.SetMaxReceiveMessageSize(64 << 20);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return Fail(absl::UnavailableError(
        absl::StrCat("cannot listen on ", flags.listen, " (address in use, not local, or malformed)")));
  }
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  health->SetServingStatus(true);
  health->SetServingStatus(kServiceName, true);
  Log("listening on %s:%d", ListenHost(flags.listen), port);

  // Run until a signal, then drain.
  const int sig = WaitForSignal(signals, *engine, health);
  StartShutdownWatchdog(signals, flags.drain_seconds);
  Log("received %s: draining for up to %.1f s%s", sig == SIGINT ? "SIGINT" : "SIGTERM", flags.drain_seconds,
      store != nullptr ? ", then saving live sessions" : "");
  health->SetServingStatus(false);
  service.StartDraining();
  engine->Shutdown(absl::Now() + absl::Seconds(flags.drain_seconds), store != nullptr);
  Log("engine stopped");
  // Every generation has ended by now; this only lets their last messages
  // flush. gRPC would otherwise wait the whole deadline for idle connections.
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  server->Wait();
  if (metrics_http != nullptr) metrics_http->Stop();
  engine.reset();
  Log("stopped");
  return 0;
}

}  // namespace
}  // namespace rwkv

int main(int argc, char** argv) {
  // Before any thread exists, so every thread inherits the mask and the
  // signals are only ever taken by sigtimedwait.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  std::vector<std::string> args(argv + 1, argv + argc);
  auto flags = rwkv::ParseServerFlags(args);
  if (!flags.ok()) {
    std::fprintf(stderr, "rwkv-server: %s\n%s", std::string(flags.status().message()).c_str(),
                 rwkv::ServerUsage().c_str());
    return 2;
  }
  if (flags->help) {
    std::fputs(rwkv::ServerUsage().c_str(), stdout);
    return 0;
  }
  return rwkv::Run(*flags, signals);
}
