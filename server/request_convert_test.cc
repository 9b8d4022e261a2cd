// Tests of the edge validation: wire requests -> engine requests, and engine
// results -> wire messages. No server, engine or model involved.
#include "server/request_convert.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/id_only_tokenizer.h"

namespace rwkv {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

class RequestConvertTest : public ::testing::Test {
 protected:
  RequestConvertTest() : bytes_(MakeByteTokenizer()) {
    edge_.text_tokenizer = bytes_.get();
    edge_.vocab_size = 300;  // a model larger than its byte vocabulary
    edge_.max_prompt_tokens = 8;
    edge_.max_new_tokens = 1000;
    edge_.random_seed = [] { return uint64_t{4242}; };
  }

  absl::StatusOr<GenerateCall> Convert(const v1::GenerateRequest& req) {
    return ToGenerateCall(req, edge_, absl::InfiniteFuture());
  }

  std::unique_ptr<Tokenizer> bytes_;
  EdgeContext edge_;
};

TEST_F(RequestConvertTest, TextPromptIsTokenized) {
  v1::GenerateRequest req;
  req.set_text("hi");
  auto call = Convert(req);
  ASSERT_TRUE(call.ok()) << call.status();
  EXPECT_THAT(call->request.prompt, ElementsAre('h', 'i'));
}

TEST_F(RequestConvertTest, InvalidUtf8TextIsInvalidArgument) {
  v1::GenerateRequest req;
  req.set_text(std::string("a\xff", 2));
  auto call = Convert(req);
  EXPECT_EQ(call.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(call.status().message(), HasSubstr("UTF-8"));
}

TEST_F(RequestConvertTest, TextWithoutVocabularyIsFailedPrecondition) {
  edge_.text_tokenizer = nullptr;
  v1::GenerateRequest req;
  req.set_text("hi");
  auto call = Convert(req);
  EXPECT_EQ(call.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(call.status().message(), HasSubstr("no vocabulary loaded; send token ids"));
  // Token ids still work.
  req.mutable_tokens()->add_ids(5);
  EXPECT_TRUE(Convert(req).ok());
}

TEST_F(RequestConvertTest, TokenIdsAreRangeChecked) {
  v1::GenerateRequest req;
  req.mutable_tokens()->add_ids(0);
  req.mutable_tokens()->add_ids(299);
  auto call = Convert(req);
  ASSERT_TRUE(call.ok()) << call.status();
  EXPECT_THAT(call->request.prompt, ElementsAre(0, 299));
  for (int32_t bad : {300, -1}) {
    req.mutable_tokens()->set_ids(1, bad);
    auto rejected = Convert(req);
    EXPECT_EQ(rejected.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(rejected.status().message(), HasSubstr("tokens.ids[1]"));
  }
}

TEST_F(RequestConvertTest, PromptOverLimitIsInvalidArgument) {
  v1::GenerateRequest req;
  req.set_text("123456789");  // 9 byte tokens, limit 8
  EXPECT_EQ(Convert(req).status().code(), absl::StatusCode::kInvalidArgument);
  req.set_text("12345678");
  EXPECT_TRUE(Convert(req).ok());
}

TEST_F(RequestConvertTest, NoPromptIsPassedOn) {
  v1::GenerateRequest req;  // the engine decides whether the session allows it
  req.set_session_id("abc");
  auto call = Convert(req);
  ASSERT_TRUE(call.ok()) << call.status();
  EXPECT_TRUE(call->request.prompt.empty());
  EXPECT_EQ(call->request.session_id, "abc");
}

TEST_F(RequestConvertTest, UnsetFieldsTakeDefaults) {
  v1::GenerateRequest req;
  req.set_text("x");
  auto call = Convert(req);
  ASSERT_TRUE(call.ok()) << call.status();
  const GenerateRequest& r = call->request;
  EXPECT_EQ(r.max_tokens, kDefaultMaxTokens);
  EXPECT_EQ(r.sampling.temperature, 1.0f);
  EXPECT_EQ(r.sampling.top_p, 1.0f);
  EXPECT_EQ(r.sampling.penalty_decay, 1.0f);
  EXPECT_EQ(r.sampling.repetition_penalty, 1.0f);
  EXPECT_EQ(r.sampling.top_k, 0);
  EXPECT_EQ(r.sampling.min_p, 0.0f);
  EXPECT_EQ(r.top_logprobs, 0);
  EXPECT_FALSE(call->logprobs);
  EXPECT_FALSE(r.ignore_end_of_text);
  EXPECT_EQ(r.deadline, absl::InfiniteFuture());
}

TEST_F(RequestConvertTest, ExplicitValuesAreKept) {
  v1::GenerateRequest req;
  req.set_text("x");
  v1::SamplingParams* s = req.mutable_sampling();
  s->set_temperature(0);  // greedy: set, so not the default 1
  s->set_top_k(5);
  s->set_top_p(0.5f);
  s->set_min_p(0.1f);
  s->set_presence_penalty(0.2f);
  s->set_frequency_penalty(0.3f);
  s->set_penalty_decay(0.996f);
  s->set_repetition_penalty(1.1f);
  (*s->mutable_logit_bias())[7] = -1.0f;
  (*s->mutable_logit_bias())[3] = 2.0f;
  s->set_seed(99);
  req.mutable_stop()->add_stop_token_ids(4);
  req.mutable_stop()->add_stop_strings("\n\n");
  req.mutable_stop()->set_ignore_end_of_text(true);
  req.set_max_tokens(12);
  req.set_logprobs(true);
  req.set_top_logprobs(3);
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  auto call = ToGenerateCall(req, edge_, deadline);
  ASSERT_TRUE(call.ok()) << call.status();
  const GenerateRequest& r = call->request;
  EXPECT_EQ(r.sampling.temperature, 0.0f);
  EXPECT_EQ(r.sampling.top_k, 5);
  EXPECT_EQ(r.sampling.top_p, 0.5f);
  EXPECT_EQ(r.sampling.min_p, 0.1f);
  EXPECT_EQ(r.sampling.presence_penalty, 0.2f);
  EXPECT_EQ(r.sampling.frequency_penalty, 0.3f);
  EXPECT_EQ(r.sampling.penalty_decay, 0.996f);
  EXPECT_EQ(r.sampling.repetition_penalty, 1.1f);
  EXPECT_THAT(r.sampling.logit_bias,
              ElementsAre(std::pair<int32_t, float>(3, 2.0f), std::pair<int32_t, float>(7, -1.0f)));
  EXPECT_EQ(r.sampling.seed, 99u);
  EXPECT_THAT(r.sampling.stop_token_ids, ElementsAre(4));
  EXPECT_THAT(r.sampling.stop_strings, ElementsAre("\n\n"));
  EXPECT_TRUE(r.ignore_end_of_text);
  EXPECT_EQ(r.max_tokens, 12);
  EXPECT_TRUE(call->logprobs);
  EXPECT_EQ(r.top_logprobs, 3);
  EXPECT_EQ(r.deadline, deadline);
}

TEST_F(RequestConvertTest, SeedZeroPicksARandomSeed) {
  v1::GenerateRequest req;
  req.set_text("x");
  auto call = Convert(req);
  ASSERT_TRUE(call.ok());
  EXPECT_EQ(call->request.sampling.seed, 4242u);  // from the injected source
  edge_.random_seed = nullptr;                    // the real one
  auto a = Convert(req);
  auto b = Convert(req);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(a->request.sampling.seed, 0u);
  EXPECT_NE(a->request.sampling.seed, b->request.sampling.seed);
}

TEST_F(RequestConvertTest, MaxTokensRange) {
  v1::GenerateRequest req;
  req.set_text("x");
  for (int32_t bad : {0, -3, 1001}) {
    req.set_max_tokens(bad);
    EXPECT_EQ(Convert(req).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  for (int32_t good : {1, 1000}) {
    req.set_max_tokens(good);
    EXPECT_TRUE(Convert(req).ok()) << good;
  }
}

TEST_F(RequestConvertTest, TopLogprobsRange) {
  v1::GenerateRequest req;
  req.set_text("x");
  for (int32_t bad : {-1, 21}) {
    req.set_top_logprobs(bad);
    auto call = Convert(req);
    EXPECT_EQ(call.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(call.status().message(), HasSubstr("top_logprobs"));
  }
  for (int32_t good : {0, 20}) {
    req.set_top_logprobs(good);
    EXPECT_TRUE(Convert(req).ok()) << good;
  }
}

TEST_F(RequestConvertTest, SamplingOutOfRangeIsInvalidArgument) {
  v1::GenerateRequest req;
  req.set_text("x");
  req.mutable_sampling()->set_top_p(1.5f);
  auto call = Convert(req);
  EXPECT_EQ(call.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(call.status().message(), HasSubstr("top_p"));
  req.mutable_sampling()->set_top_p(0.0f);  // set to 0 is not "unset": (0, 1] excludes it
  EXPECT_EQ(Convert(req).status().code(), absl::StatusCode::kInvalidArgument);
  req.mutable_sampling()->clear_top_p();
  (*req.mutable_sampling()->mutable_logit_bias())[300] = 1.0f;  // id out of range
  EXPECT_EQ(Convert(req).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(RequestConvertTest, StopStrings) {
  v1::GenerateRequest req;
  req.set_text("x");
  req.mutable_stop()->add_stop_strings("");  // empty: rejected by ValidateSamplingParams
  EXPECT_EQ(Convert(req).status().code(), absl::StatusCode::kInvalidArgument);
  req.mutable_stop()->set_stop_strings(0, std::string("\xc3", 1));
  EXPECT_EQ(Convert(req).status().code(), absl::StatusCode::kInvalidArgument);
  req.mutable_stop()->set_stop_strings(0, "end");
  EXPECT_TRUE(Convert(req).ok());
  edge_.text_tokenizer = nullptr;  // nothing to match them against
  req.mutable_tokens()->add_ids(1);
  EXPECT_EQ(Convert(req).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(RequestConvertTest, CreateSessionSources) {
  v1::CreateSessionRequest req;
  auto empty = ToCreateSessionCall(req, edge_);
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->kind, CreateSessionCall::Kind::kPrompt);
  EXPECT_TRUE(empty->prompt.empty());

  req.set_prompt_text("ab");
  auto text = ToCreateSessionCall(req, edge_);
  ASSERT_TRUE(text.ok());
  EXPECT_THAT(text->prompt, ElementsAre('a', 'b'));

  req.mutable_prompt_tokens()->add_ids(1);
  auto ids = ToCreateSessionCall(req, edge_);
  ASSERT_TRUE(ids.ok());
  EXPECT_THAT(ids->prompt, ElementsAre(1));

  req.set_fork_of("0123");
  auto fork = ToCreateSessionCall(req, edge_);
  ASSERT_TRUE(fork.ok());
  EXPECT_EQ(fork->kind, CreateSessionCall::Kind::kFork);
  EXPECT_EQ(fork->source, "0123");

  req.set_saved_name("system-prompt.v1");
  auto load = ToCreateSessionCall(req, edge_);
  ASSERT_TRUE(load.ok());
  EXPECT_EQ(load->kind, CreateSessionCall::Kind::kLoad);
  EXPECT_EQ(load->source, "system-prompt.v1");
}

TEST_F(RequestConvertTest, CreateSessionRejections) {
  v1::CreateSessionRequest req;
  req.set_saved_name("../etc/passwd");
  EXPECT_EQ(ToCreateSessionCall(req, edge_).status().code(), absl::StatusCode::kInvalidArgument);
  req.set_fork_of("");
  EXPECT_EQ(ToCreateSessionCall(req, edge_).status().code(), absl::StatusCode::kInvalidArgument);
  req.set_prompt_text(std::string("\xff", 1));
  EXPECT_EQ(ToCreateSessionCall(req, edge_).status().code(), absl::StatusCode::kInvalidArgument);
  req.mutable_prompt_tokens()->add_ids(300);
  EXPECT_EQ(ToCreateSessionCall(req, edge_).status().code(), absl::StatusCode::kInvalidArgument);
  edge_.text_tokenizer = nullptr;
  req.set_prompt_text("hi");
  EXPECT_EQ(ToCreateSessionCall(req, edge_).status().code(), absl::StatusCode::kFailedPrecondition);
  req.set_prompt_text("");  // a zero state needs no vocabulary
  EXPECT_TRUE(ToCreateSessionCall(req, edge_).ok());
}

TEST_F(RequestConvertTest, SessionIdAndNames) {
  EXPECT_EQ(CheckSessionId("").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(CheckSessionId("anything").ok());  // unknown ids are the engine's NOT_FOUND
  v1::SaveSessionRequest save;
  save.set_session_id("s");
  save.set_name("good_name-1.0");
  EXPECT_TRUE(CheckSaveSession(save).ok());
  for (const char* bad : {"", ".hidden", "a/b", "..", "sp ace"}) {
    save.set_name(bad);
    EXPECT_EQ(CheckSaveSession(save).code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  save.set_name("ok");
  save.set_session_id("");
  EXPECT_EQ(CheckSaveSession(save).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CheckStateName(std::string(129, 'a')).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(RequestConvertTest, TokenizeAndDetokenize) {
  auto ids = TokenizeText("ok", edge_);
  ASSERT_TRUE(ids.ok());
  EXPECT_THAT(*ids, ElementsAre('o', 'k'));
  EXPECT_EQ(TokenizeText(std::string("\xe2\x82", 2), edge_).status().code(),
            absl::StatusCode::kInvalidArgument);
  const std::vector<int32_t> valid = {'h', 0xC3, 0xA9};
  auto text = DetokenizeIds(valid, edge_);
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, "h\xc3\xa9");
  const std::vector<int32_t> broken = {'a', 0xFF, 'b'};
  text = DetokenizeIds(broken, edge_);
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text,
            "a\xef\xbf\xbd"
            "b");  // U+FFFD
  const std::vector<int32_t> out_of_range = {256};
  EXPECT_EQ(DetokenizeIds(out_of_range, edge_).status().code(), absl::StatusCode::kInvalidArgument);
  edge_.text_tokenizer = nullptr;
  EXPECT_EQ(TokenizeText("ok", edge_).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(DetokenizeIds(valid, edge_).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(ResultConvertTest, Session) {
  SessionInfo info;
  info.id = "0123456789abcdef0123456789abcdef";
  info.tokens_seen = 42;
  info.resident = true;
  info.busy = false;
  info.created = absl::FromUnixMillis(1700000000123);
  info.last_used = absl::FromUnixMillis(1700000005000);
  v1::Session s;
  ToProtoSession(info, &s);
  EXPECT_EQ(s.id(), info.id);
  EXPECT_EQ(s.tokens_seen(), 42);
  EXPECT_TRUE(s.resident());
  EXPECT_FALSE(s.busy());
  EXPECT_EQ(s.created_unix_ms(), 1700000000123);
  EXPECT_EQ(s.last_used_unix_ms(), 1700000005000);
}

TEST(ResultConvertTest, FinishReasonAndUsage) {
  EXPECT_EQ(ToProtoFinishReason(FinishReason::kLength), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(ToProtoFinishReason(FinishReason::kStop), v1::FINISH_REASON_STOP);
  EXPECT_EQ(ToProtoFinishReason(FinishReason::kEndOfText), v1::FINISH_REASON_END_OF_TEXT);
  EXPECT_EQ(ToProtoFinishReason(FinishReason::kCancelled), v1::FINISH_REASON_CANCELLED);
  GenerateUsage usage{3, 7, 0.5, 2.0, 0.25};
  v1::Usage u;
  ToProtoUsage(usage, &u);
  EXPECT_EQ(u.prompt_tokens(), 3);
  EXPECT_EQ(u.generated_tokens(), 7);
  EXPECT_EQ(u.time_to_first_token_seconds(), 0.5);
  EXPECT_EQ(u.total_seconds(), 2.0);
  EXPECT_EQ(u.queue_seconds(), 0.25);
}

TEST(ResultConvertTest, TokenEvents) {
  std::vector<TokenEvent> events(2);
  events[0] = {10, "he", -0.5f, {{10, -0.5f}, {11, -1.5f}}};
  events[1] = {12, "", -0.25f, {{12, -0.25f}, {13, -2.0f}}};
  v1::GenerateResponse with;
  AppendTokenEvents(events, /*logprobs=*/true, &with);
  EXPECT_EQ(with.text(), "he");
  EXPECT_THAT(with.token_ids(), ElementsAre(10, 12));
  ASSERT_EQ(with.logprobs_size(), 2);
  EXPECT_EQ(with.logprobs(1).token_id(), 12);
  EXPECT_EQ(with.logprobs(1).logprob(), -0.25f);
  ASSERT_EQ(with.top_logprobs_size(), 4);
  EXPECT_EQ(with.top_logprobs(3).token_id(), 13);
  v1::GenerateResponse without;
  events[0].top.clear();
  events[1].top.clear();
  AppendTokenEvents(events, /*logprobs=*/false, &without);
  AppendTokenEvents(events, /*logprobs=*/false, &without);  // coalescing appends
  EXPECT_EQ(without.text(), "hehe");
  EXPECT_THAT(without.token_ids(), ElementsAre(10, 12, 10, 12));
  EXPECT_EQ(without.logprobs_size(), 0);
  EXPECT_EQ(without.top_logprobs_size(), 0);
}

TEST(ResultConvertTest, PrintableFingerprint) {
  EXPECT_EQ(PrintableFingerprint("sha256:abc"), "sha256:abc");
  EXPECT_EQ(PrintableFingerprint(std::string("\x01\xff", 2)), "01ff");
}

TEST(IdOnlyTokenizerTest, MapsIdsToNoText) {
  auto t = MakeIdOnlyTokenizer(512, -1);
  EXPECT_FALSE(HasVocabulary(*t));
  EXPECT_TRUE(HasVocabulary(*MakeByteTokenizer()));
  EXPECT_EQ(t->vocab_size(), 512);
  EXPECT_EQ(t->end_of_text_id(), -1);
  EXPECT_EQ(MakeIdOnlyTokenizer(65536, 0)->end_of_text_id(), 0);
  EXPECT_TRUE(t->TokenBytes(5).empty());
  const std::vector<int32_t> ok = {0, 511};
  auto text = t->Decode(ok);
  ASSERT_TRUE(text.ok());
  EXPECT_TRUE(text->empty());
  const std::vector<int32_t> bad = {512};
  EXPECT_EQ(t->Decode(bad).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(t->Encode("abc").empty());
}

}  // namespace
}  // namespace rwkv
