// End-to-end: bad requests get the documented status code and a message,
// and the server stays up without losing any other session.
//
// Why: these are the requests a careless or hostile client sends. Some of
// them (invalid UTF-8 in a string field, hand-corrupted state files) can
// only be sent as raw bytes, so they go through a generic stub.
#include <algorithm>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "engine/testing/testdata.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_util.h"

namespace rwkv::e2e {
namespace {

constexpr char kUnknownId[] = "0123456789abcdef0123456789abcdef";
constexpr char kGenerate[] = "/rwkv.v1.Inference/Generate";

// Expects `status` to carry `code` and a non-empty message.
void ExpectError(const grpc::Status& status, grpc::StatusCode code, const std::string& what) {
  EXPECT_EQ(status.error_code(), code) << what << ": got " << Describe(status);
  EXPECT_FALSE(status.error_message().empty()) << what << ": no message";
}

void ExpectError(const absl::Status& status, absl::StatusCode code, const std::string& what) {
  EXPECT_EQ(status.code(), code) << what << ": got " << status;
  EXPECT_FALSE(status.message().empty()) << what << ": no message";
}

TEST(E2eErrorsTest, BadRequestsGetTheRightCodeAndTheServerLosesNothing) {
  RWKV_REQUIRE_SERVER();
  RWKV_REQUIRE_TESTDATA(kTinyModelV4);
  TempDir dir;
  absl::StatusOr<std::unique_ptr<ServerProcess>> server =
      ServerProcess::Start(rwkv::testing::TestDataPath(kTinyModel),
                           {"--byte-vocab", "--threads", "1", "--max-prompt-tokens", "64", "--state-dir",
                            (dir.path() / "states").string()},
                           dir.path());
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = (*server)->NewStub();

  // Two identical sessions: one is continued now (the expectation), the
  // other only after every bad request below.
  const std::string prompt = "Keep me";
  absl::StatusOr<pb::Session> keeper = CreateSession(*stub, prompt);
  absl::StatusOr<pb::Session> twin = CreateSession(*stub, prompt);
  ASSERT_TRUE(keeper.ok() && twin.ok());
  const GenerateResult expected = RunGenerate(*stub, MakeRequest(" safe", twin->id(), 16, 77));
  ASSERT_TRUE(expected.status.ok()) << Describe(expected.status);

  // ---- Generate with bad parameters.
  struct BadGenerate {
    std::string what;
    grpc::StatusCode code;
    std::function<void(pb::GenerateRequest&)> mutate;
  };
  const std::vector<BadGenerate> bad_generates = {
      {"top_p 2", grpc::StatusCode::INVALID_ARGUMENT, [](auto& r) { r.mutable_sampling()->set_top_p(2); }},
      {"top_p 0", grpc::StatusCode::INVALID_ARGUMENT, [](auto& r) { r.mutable_sampling()->set_top_p(0); }},
      {"temperature -1", grpc::StatusCode::INVALID_ARGUMENT,
       [](auto& r) { r.mutable_sampling()->set_temperature(-1); }},
      {"temperature 101", grpc::StatusCode::INVALID_ARGUMENT,
       [](auto& r) { r.mutable_sampling()->set_temperature(101); }},
      {"top_k -1", grpc::StatusCode::INVALID_ARGUMENT, [](auto& r) { r.mutable_sampling()->set_top_k(-1); }},
      {"top_k 257", grpc::StatusCode::INVALID_ARGUMENT, [](auto& r) { r.mutable_sampling()->set_top_k(257); }},
      {"penalty_decay 0", grpc::StatusCode::INVALID_ARGUMENT,
       [](auto& r) { r.mutable_sampling()->set_penalty_decay(0); }},
      {"logit_bias 1000", grpc::StatusCode::INVALID_ARGUMENT,
       [](auto& r) { (*r.mutable_sampling()->mutable_logit_bias())[3] = 1000; }},
      {"max_tokens 0", grpc::StatusCode::INVALID_ARGUMENT, [](auto& r) { r.set_max_tokens(0); }},
      {"max_tokens -5", grpc::StatusCode::INVALID_ARGUMENT, [](auto& r) { r.set_max_tokens(-5); }},
      {"top_logprobs 21", grpc::StatusCode::INVALID_ARGUMENT,
       [](auto& r) {
         r.set_logprobs(true);
         r.set_top_logprobs(21);
       }},
      {"17 stop strings", grpc::StatusCode::INVALID_ARGUMENT,
       [](auto& r) {
         for (int i = 0; i < 17; ++i) r.mutable_stop()->add_stop_strings(absl::StrCat("s", i));
       }},
      {"token id 256 with a 256-token vocabulary", grpc::StatusCode::INVALID_ARGUMENT,
       [](auto& r) { r.mutable_tokens()->add_ids(256); }},
      {"token id -1", grpc::StatusCode::INVALID_ARGUMENT, [](auto& r) { r.mutable_tokens()->add_ids(-1); }},
      {"unknown session", grpc::StatusCode::NOT_FOUND, [](auto& r) { r.set_session_id(kUnknownId); }},
      {"empty prompt, one-off session", grpc::StatusCode::INVALID_ARGUMENT, [](auto& r) { r.set_text(""); }},
      {"65-token prompt with --max-prompt-tokens 64", grpc::StatusCode::INVALID_ARGUMENT,
       [](auto& r) { r.set_text(std::string(65, 'x')); }},
  };
  for (const BadGenerate& bad : bad_generates) {
    pb::GenerateRequest request = MakeRequest("Hello", "", 8, 1);
    bad.mutate(request);
    const GenerateResult r = RunGenerate(*stub, request, absl::Seconds(20));
    ExpectError(r.status, bad.code, bad.what);
    EXPECT_TRUE(r.tokens.empty()) << bad.what;
  }
  {
    // A malformed id is unknown, or invalid: either is fine.
    const GenerateResult r = RunGenerate(*stub, MakeRequest("Hello", "../etc", 8, 1));
    EXPECT_TRUE(r.status.error_code() == grpc::StatusCode::NOT_FOUND ||
                r.status.error_code() == grpc::StatusCode::INVALID_ARGUMENT)
        << "malformed session id: " << Describe(r.status);
  }
  // 64 tokens is allowed.
  const GenerateResult at_limit = RunGenerate(*stub, MakeRequest(std::string(64, 'x'), "", 2, 1));
  EXPECT_TRUE(at_limit.status.ok()) << "64-token prompt: " << Describe(at_limit.status);

  // Empty prompt on a session that has seen no tokens.
  absl::StatusOr<pb::Session> fresh = CreateSession(*stub, "");
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  ExpectError(RunGenerate(*stub, MakeRequest("", fresh->id(), 4, 1)).status, grpc::StatusCode::INVALID_ARGUMENT,
              "empty prompt on a fresh session");
  // An oversize prompt on CreateSession too.
  ExpectError(CreateSession(*stub, std::string(65, 'y')).status(), absl::StatusCode::kInvalidArgument,
              "CreateSession with a 65-token prompt");

  // ---- Unknown sessions and names.
  ExpectError(GetSession(*stub, kUnknownId).status(), absl::StatusCode::kNotFound, "GetSession unknown");
  {
    grpc::ClientContext ctx;
    pb::SessionRequest request;
    request.set_session_id(kUnknownId);
    pb::DeleteSessionResponse response;
    ExpectError(stub->DeleteSession(&ctx, request, &response), grpc::StatusCode::NOT_FOUND, "DeleteSession unknown");
  }
  {
    grpc::ClientContext ctx;
    pb::SessionRequest request;
    request.set_session_id(kUnknownId);
    pb::Session response;
    ExpectError(stub->ForkSession(&ctx, request, &response), grpc::StatusCode::NOT_FOUND, "ForkSession unknown");
  }
  ExpectError(ExportSession(*stub, kUnknownId).status(), absl::StatusCode::kNotFound, "ExportSession unknown");
  {
    grpc::ClientContext ctx;
    pb::SaveSessionRequest request;
    request.set_session_id(keeper->id());
    request.set_name("../escape");
    pb::SaveSessionResponse response;
    ExpectError(stub->SaveSession(&ctx, request, &response), grpc::StatusCode::INVALID_ARGUMENT,
                "SaveSession with name ../escape");
  }
  {
    grpc::ClientContext ctx;
    pb::LoadSessionRequest request;
    request.set_name("never-saved");
    pb::Session response;
    ExpectError(stub->LoadSession(&ctx, request, &response), grpc::StatusCode::NOT_FOUND, "LoadSession unknown");
  }

  // ---- Invalid UTF-8 in string fields, as raw bytes through a generic stub.
  const std::string bad_utf8 = "ab\xff\xfe\xc3";
  {
    // GenerateRequest{text: bad_utf8, max_tokens: 4}
    const std::string request = WireBytesField(1, bad_utf8) + WireVarintField(6, 4);
    const RawResult r = RawCall((*server)->channel(), kGenerate, request);
    ExpectError(r.status, grpc::StatusCode::INVALID_ARGUMENT, "Generate with invalid UTF-8 text");
    // A well-formed request built the same way works, so the helper is not the problem.
    const RawResult good = RawCall((*server)->channel(), kGenerate, WireBytesField(1, "ab") + WireVarintField(6, 4));
    EXPECT_TRUE(good.status.ok()) << Describe(good.status);
    EXPECT_FALSE(good.responses.empty());
  }
  {
    // TokenizeRequest{text: bad_utf8}, CreateSessionRequest{prompt_text: bad_utf8}
    ExpectError(RawCall((*server)->channel(), "/rwkv.v1.Inference/Tokenize", WireBytesField(1, bad_utf8)).status,
                grpc::StatusCode::INVALID_ARGUMENT, "Tokenize with invalid UTF-8");
    ExpectError(
        RawCall((*server)->channel(), "/rwkv.v1.Inference/CreateSession", WireBytesField(1, bad_utf8)).status,
        grpc::StatusCode::INVALID_ARGUMENT, "CreateSession with invalid UTF-8");
  }

  // ---- Imports: foreign, corrupt, truncated, empty.
  absl::StatusOr<std::string> good_state = ExportSession(*stub, keeper->id());
  ASSERT_TRUE(good_state.ok()) << good_state.status();
  ASSERT_GT(good_state->size(), 64u);
  {
    absl::StatusOr<std::unique_ptr<ServerProcess>> other =
        ServerProcess::Start(rwkv::testing::TestDataPath(kTinyModelV4), {"--byte-vocab", "--threads", "1"},
                             dir.path(), "other-model");
    ASSERT_TRUE(other.ok()) << other.status();
    auto other_stub = (*other)->NewStub();
    absl::StatusOr<pb::Session> foreign_session = CreateSession(*other_stub, "From another model");
    ASSERT_TRUE(foreign_session.ok()) << foreign_session.status();
    absl::StatusOr<std::string> foreign = ExportSession(*other_stub, foreign_session->id());
    ASSERT_TRUE(foreign.ok()) << foreign.status();
    ExpectError(ImportSession(*stub, *foreign).status(), absl::StatusCode::kFailedPrecondition,
                "importing a state exported by a server running another model");
    ExpectError(ImportSession(*other_stub, *good_state).status(), absl::StatusCode::kFailedPrecondition,
                "the other way round");
    absl::StatusOr<int> exit_code = (*other)->Terminate(absl::Seconds(20));
    EXPECT_TRUE(exit_code.ok() && *exit_code == 0) << "other-model server exit";
  }
  // Flips in the magic, the header (its CRC), the state section and the
  // trailing CRC: all "malformed or corrupt" (INVALID_ARGUMENT).
  for (const size_t at : {size_t{0}, size_t{60}, good_state->size() / 2, good_state->size() - 1}) {
    std::string corrupt = *good_state;
    corrupt[at] = static_cast<char>(corrupt[at] ^ 0x5a);
    ExpectError(ImportSession(*stub, corrupt).status(), absl::StatusCode::kInvalidArgument,
                absl::StrCat("import with byte ", at, " of ", good_state->size(), " flipped"));
  }
  for (const size_t keep : {size_t{0}, size_t{7}, size_t{50}, good_state->size() / 2, good_state->size() - 1}) {
    ExpectError(ImportSession(*stub, good_state->substr(0, keep)).status(), absl::StatusCode::kInvalidArgument,
                absl::StrCat("import truncated to ", keep, " of ", good_state->size(), " bytes"));
  }
  ExpectError(ImportSession(*stub, *good_state + "trailing").status(), absl::StatusCode::kInvalidArgument,
              "import with trailing bytes");
  // The good bytes still import.
  absl::StatusOr<pb::Session> imported = ImportSession(*stub, *good_state);
  ASSERT_TRUE(imported.ok()) << imported.status();
  EXPECT_EQ(imported->tokens_seen(), keeper->tokens_seen());

  // ---- A second Generate on a busy session.
  absl::StatusOr<pb::Session> busy = CreateSession(*stub, "Busy");
  ASSERT_TRUE(busy.ok()) << busy.status();
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    auto reader = stub->Generate(&ctx, MakeRequest(" long", busy->id(), 200000, 5));
    pb::GenerateResponse first_chunk;
    ASSERT_TRUE(reader->Read(&first_chunk)) << "the long generation did not start";
    ExpectError(RunGenerate(*stub, MakeRequest(" again", busy->id(), 4, 6)).status,
                grpc::StatusCode::FAILED_PRECONDITION, "a second Generate on a busy session");
    absl::StatusOr<pb::Session> during = GetSession(*stub, busy->id());
    ASSERT_TRUE(during.ok()) << during.status();
    EXPECT_TRUE(during->busy());
    ctx.TryCancel();
    while (reader->Read(&first_chunk)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  // Once the stream is gone the session is free again (within a bounded wait).
  GenerateResult after_busy;
  const absl::Time until = absl::Now() + absl::Seconds(5);
  do {
    after_busy = RunGenerate(*stub, MakeRequest(" again", busy->id(), 4, 6));
    if (after_busy.status.error_code() != grpc::StatusCode::FAILED_PRECONDITION) break;
    absl::SleepFor(absl::Milliseconds(20));
  } while (absl::Now() < until);
  EXPECT_TRUE(after_busy.status.ok()) << "session still busy after its stream was cancelled: "
                                      << Describe(after_busy.status);

  // ---- After all that: the server is up and the first session continues correctly.
  EXPECT_TRUE((*server)->Running()) << (*server)->Log();
  EXPECT_EQ(HealthCheck((*server)->channel()), "SERVING");
  absl::StatusOr<pb::Session> still = GetSession(*stub, keeper->id());
  ASSERT_TRUE(still.ok()) << still.status();
  EXPECT_EQ(still->tokens_seen(), static_cast<int64_t>(prompt.size()));
  const GenerateResult continued = RunGenerate(*stub, MakeRequest(" safe", keeper->id(), 16, 77));
  ASSERT_TRUE(continued.status.ok()) << Describe(continued.status);
  EXPECT_EQ(continued.tokens, expected.tokens);
  EXPECT_EQ(continued.text, expected.text);
}

}  // namespace
}  // namespace rwkv::e2e
