// End-to-end: generation through a real rwkv-server process.
//
// Why: the unit tests prove the engine is batch-invariant and the scheduler
// admits and cancels correctly; only a real process behind a real socket
// proves that holds through gRPC threads, stream flow control and client
// cancellation: 64 concurrent streams must give exactly the tokens each
// gives alone, and cancelled streams must give their capacity back at once.
#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "engine/testing/testdata.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_util.h"

namespace rwkv::e2e {
namespace {

TEST(E2eGenerateTest, ServesHealthInfoAndTokens) {
  RWKV_REQUIRE_SERVER();
  TempDir dir;
  absl::StatusOr<std::unique_ptr<ServerProcess>> server =
      ServerProcess::Start(rwkv::testing::TestDataPath(kTinyModel), {"--byte-vocab", "--threads", "1"}, dir.path());
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_EQ(HealthCheck((*server)->channel()), "SERVING");

  auto stub = (*server)->NewStub();
  grpc::ClientContext info_ctx;
  pb::ModelInfo info;
  ASSERT_TRUE(stub->GetModelInfo(&info_ctx, pb::GetModelInfoRequest(), &info).ok());
  EXPECT_EQ(info.architecture(), "rwkv7");
  EXPECT_EQ(info.n_layer(), 12);
  EXPECT_EQ(info.n_embd(), 64);
  EXPECT_EQ(info.vocab_size(), 256);
  EXPECT_EQ(info.tokenizer(), "byte");
  EXPECT_EQ(info.backend(), "cpu");
  EXPECT_GT(info.state_bytes_per_session(), 0);
  EXPECT_FALSE(info.model_fingerprint().empty());

  grpc::ClientContext tok_ctx;
  pb::TokenizeRequest tok;
  tok.set_text("Hi\xc3\xa9");
  pb::TokenizeResponse ids;
  ASSERT_TRUE(stub->Tokenize(&tok_ctx, tok, &ids).ok());
  EXPECT_EQ(std::vector<int32_t>(ids.token_ids().begin(), ids.token_ids().end()),
            (std::vector<int32_t>{72, 105, 0xc3, 0xa9}));
  grpc::ClientContext detok_ctx;
  pb::DetokenizeRequest detok;
  detok.mutable_token_ids()->CopyFrom(ids.token_ids());
  detok.add_token_ids(0xff);  // not UTF-8 on its own: becomes U+FFFD
  pb::DetokenizeResponse text;
  ASSERT_TRUE(stub->Detokenize(&detok_ctx, detok, &text).ok());
  EXPECT_EQ(text.text(), "Hi\xc3\xa9\xef\xbf\xbd");

  // A one-off generation: exactly max_tokens (the byte vocabulary has no end-of-text).
  const GenerateResult r = RunGenerate(*stub, MakeRequest("Hello", "", 20, 1));
  ASSERT_TRUE(r.status.ok()) << Describe(r.status);
  EXPECT_EQ(r.tokens.size(), 20u);
  EXPECT_EQ(r.finish_reason, pb::FINISH_REASON_LENGTH);
  EXPECT_EQ(r.usage.prompt_tokens(), 5);
  EXPECT_EQ(r.usage.generated_tokens(), 20);
  EXPECT_GE(r.usage.total_seconds(), r.usage.time_to_first_token_seconds());
  EXPECT_TRUE((*server)->Running());
}

TEST(E2eGenerateTest, ConcurrentStreamsEqualTheSameRequestsAlone) {
  RWKV_REQUIRE_SERVER();
  TempDir dir;
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(
      rwkv::testing::TestDataPath(kTinyModel), {"--byte-vocab", "--threads", "1", "--max-batch", "64"}, dir.path());
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = (*server)->NewStub();

  constexpr int kStreams = 64;
  constexpr int kTokens = 24;
  auto request_for = [](int i, const std::string& session) {
    // Prompts of different lengths, so prefill and decode mix in one step.
    return MakeRequest(absl::StrCat("Stream ", i, std::string(i % 7, '!'), ": "), session, kTokens, 1000 + i);
  };

  std::vector<std::string> sessions(kStreams);
  for (int i = 0; i < kStreams; ++i) {
    absl::StatusOr<pb::Session> s = CreateSession(*stub, "");
    ASSERT_TRUE(s.ok()) << s.status();
    sessions[i] = s->id();
  }
  std::vector<GenerateResult> concurrent(kStreams);
  {
    std::vector<std::thread> threads;
    std::atomic<int> ready{0};
    for (int i = 0; i < kStreams; ++i) {
      threads.emplace_back([&, i] {
        ready.fetch_add(1);
        while (ready.load() < kStreams) std::this_thread::yield();
        concurrent[i] = RunGenerate(*stub, request_for(i, sessions[i]), absl::Seconds(90));
      });
    }
    for (std::thread& t : threads) t.join();
  }
  for (int i = 0; i < kStreams; ++i) {
    ASSERT_TRUE(concurrent[i].status.ok()) << "stream " << i << ": " << Describe(concurrent[i].status);
    ASSERT_EQ(concurrent[i].tokens.size(), static_cast<size_t>(kTokens)) << "stream " << i;
    EXPECT_EQ(concurrent[i].finish_reason, pb::FINISH_REASON_LENGTH) << "stream " << i;
  }
  // Different seeds give different streams (a constant stream would pass trivially).
  EXPECT_NE(concurrent[0].tokens, concurrent[1].tokens);
  // And the streams really shared steps: some step advanced more than 8 sequences.
  const std::string metrics = FetchMetricsText((*server)->metrics_port());
  const std::string steps = SampleValue(metrics, "rwkv_batch_size_count");
  const std::string small_steps = SampleValue(metrics, "rwkv_batch_size_bucket{le=\"8\"}");
  ASSERT_FALSE(steps.empty() || small_steps.empty()) << metrics;
  EXPECT_GT(std::stoll(steps), std::stoll(small_steps)) << "no step batched more than 8 sequences:\n" << metrics;

  // The same requests, one at a time, each on a fresh session.
  for (int i = 0; i < kStreams; ++i) {
    absl::StatusOr<pb::Session> s = CreateSession(*stub, "");
    ASSERT_TRUE(s.ok()) << s.status();
    const GenerateResult alone = RunGenerate(*stub, request_for(i, s->id()));
    ASSERT_TRUE(alone.status.ok()) << Describe(alone.status);
    EXPECT_EQ(alone.tokens, concurrent[i].tokens) << "stream " << i << " differs when run alone";
    EXPECT_EQ(alone.text, concurrent[i].text) << "stream " << i;
    // Every session saw its prompt and every generated token.
    absl::StatusOr<pb::Session> after = GetSession(*stub, sessions[i]);
    ASSERT_TRUE(after.ok()) << after.status();
    EXPECT_EQ(after->tokens_seen(), concurrent[i].usage.prompt_tokens() + kTokens) << "stream " << i;
  }
  EXPECT_TRUE((*server)->Running());
}

// A long one-off generation, read on its own thread until cancelled.
struct LongStream {
  grpc::ClientContext ctx;
  std::thread reader;
  std::atomic<int> chunks{0};
  std::atomic<bool> done{false};
  grpc::Status status;

  void Start(pb::Inference::Stub* stub, uint64_t seed) {
    pb::GenerateRequest request = MakeRequest("Cancel me", "", 200000, seed);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    reader = std::thread([this, stub, request] {
      std::unique_ptr<grpc::ClientReader<pb::GenerateResponse>> r = stub->Generate(&ctx, request);
      pb::GenerateResponse chunk;
      while (r->Read(&chunk)) chunks.fetch_add(1);
      status = r->Finish();
      done.store(true);
    });
  }
  ~LongStream() {
    ctx.TryCancel();
    if (reader.joinable()) reader.join();
  }
};

TEST(E2eGenerateTest, CancellingStreamsFreesCapacityAtOnce) {
  RWKV_REQUIRE_SERVER();
  TempDir dir;
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(
      rwkv::testing::TestDataPath(kTinyModel),
      {"--byte-vocab", "--threads", "1", "--max-batch", "2", "--state-slots", "2", "--max-queue", "2"}, dir.path());
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = (*server)->NewStub();

  // Fill the server: start long generations until one is refused.
  constexpr int kMaxStreams = 12;
  std::vector<std::unique_ptr<LongStream>> streams;
  bool refused = false;
  for (int i = 0; i < kMaxStreams && !refused; ++i) {
    streams.push_back(std::make_unique<LongStream>());
    LongStream& s = *streams.back();
    s.Start(stub.get(), 10 + i);
    // Admission is synchronous: a refusal ends the stream at once; an accepted
    // request either streams tokens or waits in the queue.
    const absl::Time until = absl::Now() + absl::Milliseconds(400);
    while (absl::Now() < until && !s.done.load() && s.chunks.load() == 0) absl::SleepFor(absl::Milliseconds(5));
    if (s.done.load()) {
      ASSERT_EQ(s.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
          << "stream " << i << ": " << Describe(s.status);
      EXPECT_FALSE(s.status.error_message().empty());
      refused = true;
      streams.pop_back();
    }
  }
  ASSERT_TRUE(refused) << kMaxStreams << " long generations were all accepted with --max-batch 2 --max-queue 2";
  ASSERT_GE(streams.size(), 2u) << "fewer requests admitted than --max-batch";
  int running = 0;
  for (const auto& s : streams) running += s->chunks.load() > 0 ? 1 : 0;
  EXPECT_EQ(running, 2) << "streams producing tokens with --max-batch 2";

  // Cancel them all; a new request must be accepted within a second.
  const absl::Time cancelled_at = absl::Now();
  for (auto& s : streams) s->ctx.TryCancel();
  GenerateResult next;
  int attempts = 0;
  do {
    ++attempts;
    next = RunGenerate(*stub, MakeRequest("After", "", 4, 3), absl::Seconds(10));
    if (next.status.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED) break;
    absl::SleepFor(absl::Milliseconds(20));
  } while (absl::Now() - cancelled_at < absl::Seconds(1));
  const absl::Duration took = absl::Now() - cancelled_at;
  ASSERT_TRUE(next.status.ok()) << "after " << attempts << " attempts in " << took << ": "
                                << Describe(next.status);
  EXPECT_EQ(next.tokens.size(), 4u);
  EXPECT_LT(took, absl::Seconds(1)) << attempts << " attempts";
  for (auto& s : streams) {
    if (s->reader.joinable()) s->reader.join();
    EXPECT_EQ(s->status.error_code(), grpc::StatusCode::CANCELLED) << Describe(s->status);
  }
  EXPECT_TRUE((*server)->Running());
  EXPECT_EQ(HealthCheck((*server)->channel()), "SERVING");
}

}  // namespace
}  // namespace rwkv::e2e
