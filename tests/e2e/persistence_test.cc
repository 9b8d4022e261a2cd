// End-to-end: sessions survive the server process.
//
// Why: a state saved by one process and loaded by the next must continue
// exactly as if nothing had happened: same tokens for the same prompts and
// seeds. Two paths are covered: an explicit SaveSession followed by SIGKILL
// (nothing is flushed at exit), and SIGTERM with live sessions, which the
// server drains and saves, and a restart restores under the same ids.
#include <atomic>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "engine/testing/testdata.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_util.h"

namespace rwkv::e2e {
namespace {

namespace fs = std::filesystem;

struct Step {
  std::string text;  // "" continues the session without a prompt
  uint64_t seed;
  int32_t max_tokens = 12;
};

// Creates a session fed with `prompt`, runs `steps` on it in order and
// returns the tokens of each step (`id` gets the session id).
std::vector<std::vector<int32_t>> RunSteps(pb::Inference::Stub& stub, const std::string& prompt,
                                           const std::vector<Step>& steps, std::string* id = nullptr) {
  std::vector<std::vector<int32_t>> out;
  absl::StatusOr<pb::Session> s = CreateSession(stub, prompt);
  EXPECT_TRUE(s.ok()) << s.status();
  if (!s.ok()) return out;
  if (id != nullptr) *id = s->id();
  for (const Step& step : steps) {
    const GenerateResult r = RunGenerate(stub, MakeRequest(step.text, s->id(), step.max_tokens, step.seed));
    EXPECT_TRUE(r.status.ok()) << Describe(r.status);
    EXPECT_EQ(r.tokens.size(), static_cast<size_t>(step.max_tokens));
    out.push_back(r.tokens);
  }
  return out;
}

absl::Status DeleteSession(pb::Inference::Stub& stub, const std::string& id) {
  grpc::ClientContext ctx;
  pb::SessionRequest request;
  request.set_session_id(id);
  pb::DeleteSessionResponse response;
  return ToAbsl(stub.DeleteSession(&ctx, request, &response));
}

absl::StatusOr<pb::Session> LoadSession(pb::Inference::Stub& stub, const std::string& name) {
  grpc::ClientContext ctx;
  pb::LoadSessionRequest request;
  request.set_name(name);
  pb::Session session;
  const grpc::Status status = stub.LoadSession(&ctx, request, &session);
  if (!status.ok()) return ToAbsl(status);
  return session;
}

std::vector<std::string> ServerArgs(const fs::path& state_dir) {
  return {"--byte-vocab", "--threads", "1", "--state-dir", state_dir.string(), "--drain-seconds", "1"};
}

TEST(E2ePersistenceTest, SaveThenSigkillThenLoadContinuesExactly) {
  RWKV_REQUIRE_SERVER();
  TempDir dir;
  const fs::path state_dir = dir.path() / "states";
  fs::create_directories(state_dir);
  const std::string model = rwkv::testing::TestDataPath(kTinyModel);

  absl::StatusOr<std::unique_ptr<ServerProcess>> first = ServerProcess::Start(model, ServerArgs(state_dir), dir.path(), "first");
  ASSERT_TRUE(first.ok()) << first.status();
  auto stub = (*first)->NewStub();

  const std::string prompt = "The quick brown fox";
  std::string saved_id;
  const auto before = RunSteps(*stub, prompt, {{" jumps", 1}}, &saved_id);
  ASSERT_EQ(before.size(), 1u);
  grpc::ClientContext save_ctx;
  pb::SaveSessionRequest save;
  save.set_session_id(saved_id);
  save.set_name("fox");
  pb::SaveSessionResponse saved;
  const grpc::Status save_status = stub->SaveSession(&save_ctx, save, &saved);
  ASSERT_TRUE(save_status.ok()) << Describe(save_status);
  EXPECT_EQ(saved.name(), "fox");
  EXPECT_GT(saved.bytes(), 0);
  absl::StatusOr<pb::Session> at_save = GetSession(*stub, saved_id);
  ASSERT_TRUE(at_save.ok()) << at_save.status();
  EXPECT_EQ(at_save->tokens_seen(), static_cast<int64_t>(prompt.size() + 6 + 12));

  // Uninterrupted runs of the same prompts and seeds: one continuing with a
  // prompt, one continuing from the session's last logits alone.
  const auto with_prompt = RunSteps(*stub, prompt, {{" jumps", 1}, {" over the", 2}});
  const auto without_prompt = RunSteps(*stub, prompt, {{" jumps", 1}, {"", 3}});
  ASSERT_EQ(with_prompt.size(), 2u);
  ASSERT_EQ(without_prompt.size(), 2u);
  ASSERT_EQ(with_prompt[0], before[0]) << "the same request on a fresh session gave other tokens";

  (*first)->Kill();  // SIGKILL: nothing is flushed at exit

  absl::StatusOr<std::unique_ptr<ServerProcess>> second =
      ServerProcess::Start(model, ServerArgs(state_dir), dir.path(), "second");
  ASSERT_TRUE(second.ok()) << second.status();
  stub = (*second)->NewStub();
  absl::StatusOr<pb::Session> loaded = LoadSession(*stub, "fox");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->id().size(), 32u);
  EXPECT_EQ(loaded->tokens_seen(), at_save->tokens_seen());
  const GenerateResult continued = RunGenerate(*stub, MakeRequest(" over the", loaded->id(), 12, 2));
  ASSERT_TRUE(continued.status.ok()) << Describe(continued.status);
  EXPECT_EQ(continued.tokens, with_prompt[1]) << "continuing a loaded session with a prompt";

  absl::StatusOr<pb::Session> loaded_again = LoadSession(*stub, "fox");
  ASSERT_TRUE(loaded_again.ok()) << loaded_again.status();
  EXPECT_NE(loaded_again->id(), loaded->id());
  const GenerateResult from_logits = RunGenerate(*stub, MakeRequest("", loaded_again->id(), 12, 3));
  ASSERT_TRUE(from_logits.status.ok()) << Describe(from_logits.status);
  EXPECT_EQ(from_logits.tokens, without_prompt[1]) << "continuing a loaded session without a prompt";

  absl::StatusOr<pb::Session> missing = LoadSession(*stub, "no-such-state");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound) << missing.status();
  absl::StatusOr<int> exit_code = (*second)->Terminate(absl::Seconds(20));
  ASSERT_TRUE(exit_code.ok()) << exit_code.status() << "\n" << (*second)->Log();
  EXPECT_EQ(*exit_code, 0) << (*second)->Log();
}

TEST(E2ePersistenceTest, SigtermSavesLiveSessionsAndRestartRestoresThem) {
  RWKV_REQUIRE_SERVER();
  TempDir dir;
  const fs::path state_dir = dir.path() / "states";
  fs::create_directories(state_dir);
  const std::string model = rwkv::testing::TestDataPath(kTinyModel);

  absl::StatusOr<std::unique_ptr<ServerProcess>> first = ServerProcess::Start(model, ServerArgs(state_dir), dir.path(), "first");
  ASSERT_TRUE(first.ok()) << first.status();
  auto stub = (*first)->NewStub();

  // Live sessions: generated on, generated on from a zero state, prefilled only.
  struct Live {
    std::string prompt;
    std::vector<Step> before;
    Step after{"", 0};  // continues without a prompt
    std::string id;
    int64_t tokens_seen = 0;
    std::vector<int32_t> expected;
  };
  auto make_live = [](std::string prompt, std::vector<Step> before, uint64_t after_seed) {
    Live l;
    l.prompt = std::move(prompt);
    l.before = std::move(before);
    l.after.seed = after_seed;
    return l;
  };
  std::vector<Live> live;
  live.push_back(make_live("Alpha", {{" beta", 1}}, 4));
  live.push_back(make_live("", {{"Gamma", 2}}, 5));
  live.push_back(make_live("Delta epsilon", {}, 6));
  for (Live& l : live) {
    RunSteps(*stub, l.prompt, l.before, &l.id);
    absl::StatusOr<pb::Session> s = GetSession(*stub, l.id);
    ASSERT_TRUE(s.ok()) << s.status();
    l.tokens_seen = s->tokens_seen();
    // The uninterrupted reference, deleted again so that only the live sessions remain.
    std::vector<Step> all = l.before;
    all.push_back(l.after);
    std::string ref_id;
    const auto ref = RunSteps(*stub, l.prompt, all, &ref_id);
    ASSERT_EQ(ref.size(), all.size());
    l.expected = ref.back();
    ASSERT_TRUE(DeleteSession(*stub, ref_id).ok());
  }
  EXPECT_EQ(live[2].tokens_seen, 13);

  // One more session is generating when SIGTERM arrives; draining (1 s) cuts it.
  absl::StatusOr<pb::Session> busy = CreateSession(*stub, "Busy");
  ASSERT_TRUE(busy.ok()) << busy.status();
  std::atomic<int64_t> busy_tokens{0};
  std::atomic<bool> busy_started{false};
  grpc::Status busy_status;
  grpc::ClientContext busy_ctx;
  busy_ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  std::thread busy_reader([&] {
    auto reader = stub->Generate(&busy_ctx, MakeRequest(" bee", busy->id(), 200000, 9));
    pb::GenerateResponse chunk;
    while (reader->Read(&chunk)) {
      busy_tokens.fetch_add(chunk.token_ids_size());
      busy_started.store(true);
    }
    busy_status = reader->Finish();
  });
  const absl::Time until = absl::Now() + absl::Seconds(10);
  while (!busy_started.load() && absl::Now() < until) absl::SleepFor(absl::Milliseconds(5));
  EXPECT_TRUE(busy_started.load());

  const absl::Time sigterm_at = absl::Now();
  absl::StatusOr<int> exit_code = (*first)->Terminate(absl::Seconds(30));
  const absl::Duration shutdown_took = absl::Now() - sigterm_at;
  busy_ctx.TryCancel();  // only matters if the server failed to end the stream
  busy_reader.join();
  ASSERT_TRUE(exit_code.ok()) << exit_code.status() << "\n" << (*first)->Log();
  EXPECT_EQ(*exit_code, 0) << (*first)->Log();
  // 1 s of drain, then gRPC waits up to 5 s for connected clients to go away.
  EXPECT_LT(shutdown_took, absl::Seconds(15)) << "with --drain-seconds 1";
  EXPECT_TRUE(busy_status.error_code() == grpc::StatusCode::UNAVAILABLE || busy_status.ok())
      << "the stream cut by the drain: " << Describe(busy_status);

  absl::StatusOr<std::unique_ptr<ServerProcess>> second =
      ServerProcess::Start(model, ServerArgs(state_dir), dir.path(), "second");
  ASSERT_TRUE(second.ok()) << second.status();
  stub = (*second)->NewStub();
  grpc::ClientContext list_ctx;
  pb::ListSessionsResponse list;
  ASSERT_TRUE(stub->ListSessions(&list_ctx, pb::ListSessionsRequest(), &list).ok());
  EXPECT_EQ(list.sessions_size(), 4) << "3 idle live sessions and the one cut while generating";
  for (const Live& l : live) {
    absl::StatusOr<pb::Session> s = GetSession(*stub, l.id);
    ASSERT_TRUE(s.ok()) << l.id << ": " << s.status();
    EXPECT_EQ(s->tokens_seen(), l.tokens_seen) << l.id;
    const GenerateResult r = RunGenerate(*stub, MakeRequest(l.after.text, l.id, l.after.max_tokens, l.after.seed));
    ASSERT_TRUE(r.status.ok()) << Describe(r.status);
    EXPECT_EQ(r.tokens, l.expected) << "session '" << l.prompt << "' after the restart";
  }
  absl::StatusOr<pb::Session> restored_busy = GetSession(*stub, busy->id());
  ASSERT_TRUE(restored_busy.ok()) << restored_busy.status();
  EXPECT_FALSE(restored_busy->busy());
  EXPECT_EQ(restored_busy->tokens_seen(), 4 + 4 + busy_tokens.load())
      << "the state holds the prompt and every token streamed before the cut";
  absl::StatusOr<int> second_exit = (*second)->Terminate(absl::Seconds(20));
  ASSERT_TRUE(second_exit.ok()) << second_exit.status();
  EXPECT_EQ(*second_exit, 0);
}

}  // namespace
}  // namespace rwkv::e2e
