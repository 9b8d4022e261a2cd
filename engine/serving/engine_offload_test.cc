// Offloading idle sessions on the CPU backend, with fp32 and fp16 state:
// a session offloaded to host memory and brought back continues bit for bit
// as one that never left its slot; the host memory counts a slot's native
// bytes (so fp16 sessions take half and twice as many fit); and a state that
// arrives when the offload memory is full (import, load, fork, restore) takes
// a free slot or goes to the store, or is refused with RESOURCE_EXHAUSTED,
// never beyond the budget.
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "engine/metrics/registry.h"
#include "engine/metrics/server_metrics.h"
#include "engine/model/cpu_backend.h"
#include "engine/serving/engine.h"
#include "engine/serving/engine_scenario_test_util.h"
#include "engine/state/state_store.h"
#include "gtest/gtest.h"

namespace rwkv {
namespace {

using ::rwkv::testing::ScenarioSink;

int64_t SlotBytes(DType state_dtype) {
  auto m = Model::Load("synthetic:tiny", std::make_unique<CpuBackend>(1),
                       {.progress = false, .state_dtype = state_dtype});
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? (*m)->slot_bytes() : 0;
}

EngineConfig Config(int32_t slots, int64_t offload_bytes = EngineConfig{}.host_offload_bytes) {
  EngineConfig cfg;
  cfg.state_slots = slots;
  cfg.max_batch = slots;
  cfg.host_offload_bytes = offload_bytes;
  return cfg;
}

std::unique_ptr<Engine> MakeEngine(DType state_dtype, const EngineConfig& cfg, StateStore* store = nullptr,
                                   ServerMetrics* metrics = nullptr) {
  auto model = Model::Load("synthetic:tiny", std::make_unique<CpuBackend>(2),
                           {.progress = false, .state_dtype = state_dtype});
  EXPECT_TRUE(model.ok()) << model.status();
  if (!model.ok()) return nullptr;
  auto engine = Engine::Create(*std::move(model), MakeByteTokenizer(), cfg, store, metrics);
  EXPECT_TRUE(engine.ok()) << engine.status();
  return engine.ok() ? *std::move(engine) : nullptr;
}

template <typename T>
absl::StatusOr<T> Call(const std::function<void(Engine::Done<T>)>& call) {
  std::promise<absl::StatusOr<T>> p;
  call([&p](absl::StatusOr<T> v) { p.set_value(std::move(v)); });
  return p.get_future().get();
}

absl::StatusOr<SessionInfo> Create(Engine& e, std::vector<int32_t> prompt) {
  return Call<SessionInfo>([&](auto done) { e.CreateSession(prompt, done); });
}
absl::StatusOr<std::string> Export(Engine& e, const std::string& id) {
  return Call<std::string>([&](auto done) { e.ExportSession(id, done); });
}
absl::StatusOr<SessionInfo> Import(Engine& e, const std::string& bytes) {
  return Call<SessionInfo>([&](auto done) { e.ImportSession(bytes, done); });
}
absl::StatusOr<SessionInfo> Get(Engine& e, const std::string& id) {
  return Call<SessionInfo>([&](auto done) { e.GetSession(id, done); });
}
size_t SessionCount(Engine& e) {
  auto all = Call<std::vector<SessionInfo>>([&](auto done) { e.ListSessions(done); });
  return all.ok() ? all->size() : 0;
}

std::shared_ptr<ScenarioSink> Start(Engine& e, const std::string& session, std::vector<int32_t> prompt,
                                    uint64_t seed, int max_tokens = 8) {
  GenerateRequest r;
  r.session_id = session;
  r.prompt = std::move(prompt);
  r.sampling.seed = seed;
  r.sampling.temperature = 1.0f;
  r.max_tokens = max_tokens;
  r.ignore_end_of_text = true;
  auto sink = std::make_shared<ScenarioSink>();
  auto h = e.Submit(std::move(r), sink);
  EXPECT_TRUE(h.ok()) << h.status();
  if (!h.ok()) sink->done.set_value();
  return sink;
}

// Tokens and logprobs (compared exactly: any bit of the state that differs
// would move them).
struct Output {
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
  bool operator==(const Output&) const = default;
};

Output Finish(const std::shared_ptr<ScenarioSink>& sink) {
  EXPECT_TRUE(sink->Wait());
  std::lock_guard<std::mutex> lock(sink->mu);
  EXPECT_TRUE(sink->status.ok()) << sink->status;
  return {sink->tokens, sink->logprobs};
}

Output Generate(Engine& e, const std::string& session, std::vector<int32_t> prompt, uint64_t seed) {
  return Finish(Start(e, session, std::move(prompt), seed));
}

class OffloadTest : public ::testing::TestWithParam<DType> {};

// One slot, so each session that runs offloads the other; a reference engine
// with room for both never offloads. The exported state (which carries the
// state, the last logits and the token count) of a session read from its
// host block equals the one read from its slot, and after it comes back and
// generates, tokens, logprobs and the exported state equal the reference's.
TEST_P(OffloadTest, OffloadedSessionsComeBackBitForBit) {
  metrics::Registry registry;
  ServerMetrics metrics(registry, {"m", "cpu", "v"});
  auto e = MakeEngine(GetParam(), Config(1), nullptr, &metrics);
  auto ref = MakeEngine(GetParam(), Config(4));
  ASSERT_NE(e, nullptr);
  ASSERT_NE(ref, nullptr);
  const int64_t block = e->state_bytes_per_session();
  EXPECT_EQ(e->offload_info().block_bytes, block);
  EXPECT_FALSE(e->offload_info().pinned);  // ordinary host memory on the CPU backend
  EXPECT_EQ(metrics.offload_memory_capacity.Value(), static_cast<double>(e->offload_info().capacity * block));

  auto a = Create(*e, {1, 2, 3, 4, 5});
  ASSERT_TRUE(a.ok()) << a.status();
  auto fresh = Create(*e, {});  // occupies nothing, anywhere
  ASSERT_TRUE(fresh.ok());
  auto a_in_slot = Export(*e, a->id);
  ASSERT_TRUE(a_in_slot.ok());
  EXPECT_EQ(e->stats().offload_bytes_used, 0);

  auto b = Create(*e, {9, 8});  // takes the slot: a goes to host memory
  ASSERT_TRUE(b.ok()) << b.status();
  EngineStats st = e->stats();
  EXPECT_EQ(st.sessions_resident, 1);
  EXPECT_EQ(st.sessions_offloaded, 1);  // the fresh session is not counted
  EXPECT_EQ(st.offload_bytes_used, block);
  EXPECT_FALSE(Get(*e, a->id)->resident);
  for (int i = 0; i < 200 && metrics.offload_memory_used.Value() != static_cast<double>(block); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(metrics.offload_memory_used.Value(), static_cast<double>(block));
  auto a_offloaded = Export(*e, a->id);
  ASSERT_TRUE(a_offloaded.ok());
  EXPECT_EQ(*a_offloaded, *a_in_slot);

  // Back into the slot (b goes out), then on.
  const Output got_a = Generate(*e, a->id, {7}, 3);
  EXPECT_TRUE(Get(*e, a->id)->resident);
  EXPECT_EQ(e->stats().offload_bytes_used, block);  // a's block given back, b's taken
  const Output got_b = Generate(*e, b->id, {6, 5}, 4);

  auto ra = Create(*ref, {1, 2, 3, 4, 5});
  auto rb = Create(*ref, {9, 8});
  ASSERT_TRUE(ra.ok() && rb.ok());
  EXPECT_EQ(got_a, Generate(*ref, ra->id, {7}, 3));
  EXPECT_EQ(got_b, Generate(*ref, rb->id, {6, 5}, 4));
  EXPECT_EQ(*Export(*e, a->id), *Export(*ref, ra->id));
  EXPECT_EQ(*Export(*e, b->id), *Export(*ref, rb->id));
  EXPECT_EQ(got_a.tokens.size(), 8u);
}

// Many sessions through few slots, concurrently, twice over: each is evicted
// and restored while others run, and its tokens equal a never-offloaded run.
TEST_P(OffloadTest, GenerationAfterRestoreEqualsNeverOffloaded) {
  auto e = MakeEngine(GetParam(), Config(2));
  auto ref = MakeEngine(GetParam(), Config(8));
  ASSERT_NE(e, nullptr);
  ASSERT_NE(ref, nullptr);
  constexpr int kN = 6;
  std::vector<std::string> ids, ref_ids;
  for (int i = 0; i < kN; ++i) {
    auto s = Create(*e, {i + 1, 2 * i + 3, 40});
    auto t = Create(*ref, {i + 1, 2 * i + 3, 40});
    ASSERT_TRUE(s.ok() && t.ok());
    ids.push_back(s->id);
    ref_ids.push_back(t->id);
  }
  for (int round = 0; round < 2; ++round) {
    std::vector<std::shared_ptr<ScenarioSink>> sinks;
    for (int i = 0; i < kN; ++i) sinks.push_back(Start(*e, ids[i], {round + 60}, 70 + i));
    for (int i = 0; i < kN; ++i) {
      EXPECT_EQ(Finish(sinks[i]), Generate(*ref, ref_ids[i], {round + 60}, 70 + i)) << round << " " << i;
    }
  }
  const EngineStats st = e->stats();
  EXPECT_EQ(st.sessions_resident, 2);
  EXPECT_EQ(st.sessions_offloaded, kN - 2);
  EXPECT_EQ(st.offload_bytes_used, (kN - 2) * e->state_bytes_per_session());
}

// An import finds the offload memory full: with a store it goes there (and
// comes back from it like any state), and the host memory stays at its budget.
TEST_P(OffloadTest, ImportIntoFullOffloadMemoryGoesToTheStore) {
  const std::string dir = ::testing::TempDir() + "/offload_full_" + std::string(DTypeName(GetParam()));
  std::filesystem::remove_all(dir);
  auto store = DirectoryStateStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  const int64_t block = SlotBytes(GetParam());
  auto e = MakeEngine(GetParam(), Config(1, block), store->get());  // room for one offloaded session
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->offload_info().capacity, 1);
  auto a = Create(*e, {11, 12, 13});
  ASSERT_TRUE(a.ok());
  auto bytes = Export(*e, a->id);
  ASSERT_TRUE(bytes.ok());
  auto in_memory = Import(*e, *bytes);
  auto in_store = Import(*e, *bytes);
  ASSERT_TRUE(in_memory.ok()) << in_memory.status();
  ASSERT_TRUE(in_store.ok()) << in_store.status();
  EXPECT_EQ(e->stats().offload_bytes_used, block);
  EXPECT_EQ(e->stats().sessions_offloaded, 2);
  auto names = (*store)->List();
  ASSERT_TRUE(names.ok());
  ASSERT_EQ(names->size(), 1u);
  EXPECT_EQ((*names)[0].name, "offload-" + in_store->id);

  // All three hold the same state: the same continuation, whichever way it came back.
  const Output want = Generate(*e, a->id, {14}, 9);
  EXPECT_EQ(Generate(*e, in_store->id, {14}, 9), want);
  EXPECT_EQ(Generate(*e, in_memory->id, {14}, 9), want);
  EXPECT_LE(e->stats().offload_bytes_used, block);
}

// Sessions saved at shutdown come back into an engine whose offload memory
// holds one: the first restored state takes it, the next the free slot.
TEST_P(OffloadTest, RestoreRespectsTheOffloadBudget) {
  const std::string dir = ::testing::TempDir() + "/offload_restore_" + std::string(DTypeName(GetParam()));
  std::filesystem::remove_all(dir);
  auto store = DirectoryStateStore::Open(dir);
  ASSERT_TRUE(store.ok());
  std::vector<std::string> ids;
  {
    auto e = MakeEngine(GetParam(), Config(1), store->get());
    for (int i = 0; i < 2; ++i) {
      auto s = Create(*e, {20 + i, 30});
      ASSERT_TRUE(s.ok());
      ids.push_back(s->id);
    }
    EXPECT_EQ(e->stats().sessions_offloaded, 1);  // saved from its host block below
    e->Shutdown(absl::Now(), true);
  }
  auto e = MakeEngine(GetParam(), Config(1, SlotBytes(GetParam())), store->get());
  ASSERT_NE(e, nullptr);
  ASSERT_TRUE(e->RestoreSavedSessions().ok());
  const EngineStats st = e->stats();
  EXPECT_EQ(st.sessions_resident, 1);
  EXPECT_EQ(st.sessions_offloaded, 1);
  EXPECT_EQ(st.offload_bytes_used, e->state_bytes_per_session());
  auto ref = MakeEngine(GetParam(), Config(4));
  for (int i = 0; i < 2; ++i) {
    auto r = Create(*ref, {20 + i, 30});
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(Generate(*e, ids[i], {50}, 5 + i), Generate(*ref, r->id, {50}, 5 + i)) << i;
  }
}

INSTANTIATE_TEST_SUITE_P(StateDtypes, OffloadTest, ::testing::Values(DType::kF32, DType::kF16),
                         [](const auto& p) { return std::string(p.param == DType::kF16 ? "fp16" : "fp32"); });

// The offload memory counts a slot's native bytes: in the same budget, fp16
// sessions take about half and about twice as many fit. Without a store, an
// import beyond it is refused with RESOURCE_EXHAUSTED naming the flag, and
// leaves no session behind; deleting an offloaded session makes room again.
TEST(OffloadBudgetTest, Fp16SessionsTakeHalfTheBytesAndTwiceAsManyFit) {
  const int64_t bytes16 = SlotBytes(DType::kF16), bytes32 = SlotBytes(DType::kF32);
  ASSERT_GT(bytes16, 0);
  EXPECT_LT(bytes16, bytes32 * 0.55);
  const int64_t budget = 3 * bytes16;
  for (DType dtype : {DType::kF32, DType::kF16}) {
    SCOPED_TRACE(DTypeName(dtype));
    auto e = MakeEngine(dtype, Config(1, budget));
    ASSERT_NE(e, nullptr);
    const OffloadInfo info = e->offload_info();
    const int64_t want = dtype == DType::kF16 ? 3 : budget / bytes32;
    EXPECT_EQ(info.block_bytes, dtype == DType::kF16 ? bytes16 : bytes32);
    EXPECT_EQ(info.capacity, want);
    EXPECT_EQ(info.budget_bytes, budget);
    auto a = Create(*e, {1, 2});  // resident: the one slot is taken
    ASSERT_TRUE(a.ok());
    auto bytes = Export(*e, a->id);
    ASSERT_TRUE(bytes.ok());
    std::vector<std::string> imported;
    absl::Status refused;
    for (int i = 0; i < 8; ++i) {
      auto s = Import(*e, *bytes);
      if (!s.ok()) {
        refused = s.status();
        break;
      }
      EXPECT_FALSE(s->resident);
      imported.push_back(s->id);
    }
    EXPECT_EQ(static_cast<int64_t>(imported.size()), want);
    EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted) << refused;
    EXPECT_NE(refused.message().find("--offload-memory-mb"), std::string::npos) << refused;
    EXPECT_EQ(SessionCount(*e), 1 + imported.size());
    EXPECT_EQ(e->stats().offload_bytes_used, want * info.block_bytes);
    EXPECT_LE(e->stats().offload_bytes_used, budget);
    // A fork is a new state too: refused the same way.
    auto fork = Call<SessionInfo>([&](auto done) { e->ForkSession(a->id, done); });
    EXPECT_EQ(fork.status().code(), absl::StatusCode::kResourceExhausted);
    // Deleting an offloaded session gives its block back.
    ASSERT_FALSE(imported.empty());
    std::promise<absl::Status> deleted;
    e->DeleteSession(imported.back(), [&](absl::Status s) { deleted.set_value(s); });
    ASSERT_TRUE(deleted.get_future().get().ok());
    EXPECT_EQ(e->stats().offload_bytes_used, (want - 1) * info.block_bytes);
    EXPECT_TRUE(Import(*e, *bytes).ok());
  }
}

// With no offload memory at all and no store, an arriving state takes a free
// slot (resident at once) and, once there is none, is refused.
TEST(OffloadBudgetTest, WithoutOffloadMemoryImportsTakeFreeSlotsThenAreRefused) {
  auto e = MakeEngine(DType::kF32, Config(2, 0));
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->offload_info().capacity, 0);
  auto a = Create(*e, {3, 4, 5});
  ASSERT_TRUE(a.ok());
  auto bytes = Export(*e, a->id);
  ASSERT_TRUE(bytes.ok());
  auto b = Import(*e, *bytes);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_TRUE(b->resident);
  auto c = Import(*e, *bytes);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kResourceExhausted) << c.status();
  EXPECT_NE(c.status().message().find("--state-dir"), std::string::npos) << c.status();
  EXPECT_EQ(e->stats().offload_bytes_used, 0);
  EXPECT_EQ(Generate(*e, b->id, {6}, 1), Generate(*e, a->id, {6}, 1));
}

}  // namespace
}  // namespace rwkv
