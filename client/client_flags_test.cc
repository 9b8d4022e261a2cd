#include "client/client_flags.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace rwkv {
namespace {

absl::StatusOr<ClientFlags> Parse(std::vector<std::string> args) { return ParseClientFlags(args); }

TEST(ClientFlagsTest, GenerateWithEverySamplingFlag) {
  absl::StatusOr<ClientFlags> f =
      Parse({"--server", "host:1", "generate", "--prompt", "hi", "--session", "abc", "--max-tokens=5",
             "--temperature", "0.5", "--top-p", "0.9", "--top-k", "40", "--seed", "18446744073709551615",
             "--stop", "\n", "--stop", "END", "--stop-token", "7", "--logprobs", "3", "--json", "--deadline",
             "2.5", "--ignore-eot"});
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->command, ClientCommand::kGenerate);
  EXPECT_EQ(f->server, "host:1");
  EXPECT_EQ(f->prompt, "hi");
  EXPECT_EQ(f->session, "abc");
  EXPECT_EQ(f->max_tokens, 5);
  EXPECT_FLOAT_EQ(*f->temperature, 0.5f);
  EXPECT_FLOAT_EQ(*f->top_p, 0.9f);
  EXPECT_EQ(f->top_k, 40);
  EXPECT_EQ(f->seed, 18446744073709551615ull);
  EXPECT_EQ(f->stop, (std::vector<std::string>{"\n", "END"}));
  EXPECT_EQ(f->stop_tokens, (std::vector<int32_t>{7}));
  EXPECT_EQ(f->logprobs, 3);
  EXPECT_TRUE(f->json);
  EXPECT_TRUE(f->ignore_end_of_text);
  EXPECT_DOUBLE_EQ(f->deadline_seconds, 2.5);
}

TEST(ClientFlagsTest, DefaultsAndTokens) {
  absl::StatusOr<ClientFlags> f = Parse({"generate", "--tokens", "1, 2,3"});
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->server, "127.0.0.1:50051");
  EXPECT_EQ(f->tokens, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_FALSE(f->max_tokens.has_value());
  EXPECT_FALSE(f->temperature.has_value());
  EXPECT_EQ(f->deadline_seconds, 0);
}

TEST(ClientFlagsTest, ContinuingASessionNeedsNoPrompt) {
  absl::StatusOr<ClientFlags> f = Parse({"generate", "--session", "abc"});
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_FALSE(f->prompt.has_value());
}

TEST(ClientFlagsTest, SessionCommandsAndOperands) {
  struct Case {
    std::vector<std::string> args;
    ClientCommand command;
    std::vector<std::string> operands;
  };
  const std::vector<Case> cases = {
      {{"session", "create", "--prompt", "x"}, ClientCommand::kSessionCreate, {}},
      {{"session", "create", "--fork", "abc"}, ClientCommand::kSessionCreate, {}},
      {{"session", "get", "abc"}, ClientCommand::kSessionGet, {"abc"}},
      {{"session", "delete", "abc"}, ClientCommand::kSessionDelete, {"abc"}},
      {{"session", "fork", "abc"}, ClientCommand::kSessionFork, {"abc"}},
      {{"session", "list"}, ClientCommand::kSessionList, {}},
      {{"session", "save", "abc", "name"}, ClientCommand::kSessionSave, {"abc", "name"}},
      {{"session", "load", "name"}, ClientCommand::kSessionLoad, {"name"}},
      {{"session", "export", "abc", "/tmp/f"}, ClientCommand::kSessionExport, {"abc", "/tmp/f"}},
      {{"session", "import", "/tmp/f", "--server=x:2"}, ClientCommand::kSessionImport, {"/tmp/f"}},
      {{"tokenize", "hello world"}, ClientCommand::kTokenize, {"hello world"}},
      {{"detokenize", "1,2,3"}, ClientCommand::kDetokenize, {"1,2,3"}},
      {{"detokenize", "1", "2"}, ClientCommand::kDetokenize, {"1", "2"}},
      {{"info"}, ClientCommand::kInfo, {}},
      {{"--help"}, ClientCommand::kHelp, {}},
      {{"tokenize", "--", "--not-a-flag"}, ClientCommand::kTokenize, {"--not-a-flag"}},
  };
  for (const Case& c : cases) {
    absl::StatusOr<ClientFlags> f = Parse(c.args);
    ASSERT_TRUE(f.ok()) << c.args[0] << ": " << f.status();
    EXPECT_EQ(f->command, c.command) << c.args[0];
    EXPECT_EQ(f->operands, c.operands) << c.args[0];
  }
}

TEST(ClientFlagsTest, UsageErrorsNameTheProblem) {
  struct Case {
    std::vector<std::string> args;
    std::string mentions;
  };
  const std::vector<Case> cases = {
      {{}, "no command"},
      {{"frobnicate"}, "frobnicate"},
      {{"session"}, "subcommand"},
      {{"session", "rename", "x"}, "rename"},
      {{"session", "get"}, "ID"},
      {{"session", "save", "abc"}, "ID NAME"},
      {{"info", "extra"}, "extra"},
      {{"generate"}, "--prompt"},
      {{"generate", "--prompt", "a", "--tokens", "1"}, "mutually exclusive"},
      {{"generate", "--prompt"}, "needs a value"},
      {{"generate", "--prompt", "a", "--max-tokens", "0"}, "--max-tokens"},
      {{"generate", "--prompt", "a", "--max-tokens", "abc"}, "--max-tokens"},
      {{"generate", "--prompt", "a", "--temperature", "nan"}, "--temperature"},
      {{"generate", "--prompt", "a", "--seed", "-1"}, "--seed"},
      {{"generate", "--prompt", "a", "--logprobs", "21"}, "--logprobs"},
      {{"generate", "--tokens", "1,x"}, "--tokens"},
      {{"generate", "--prompt", "a", "--bogus"}, "--bogus"},
      {{"generate", "--prompt", "a", "--json=1"}, "takes no value"},
      {{"session", "get", "abc", "--max-tokens", "3"}, "does not apply"},
      {{"session", "create", "--prompt", "a", "--fork", "b"}, "at most one"},
      {{"info", "--deadline", "0"}, "--deadline"},
      {{"info", "-x"}, "-x"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<ClientFlags> f = Parse(c.args);
    ASSERT_FALSE(f.ok()) << (c.args.empty() ? "(none)" : c.args[0]) << " " << c.mentions;
    EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(f.status().message().find(c.mentions), std::string::npos)
        << "'" << f.status().message() << "' should mention '" << c.mentions << "'";
  }
}

TEST(ClientFlagsTest, TokenList) {
  EXPECT_EQ(*ParseTokenList("x", "0,65535"), (std::vector<int32_t>{0, 65535}));
  EXPECT_FALSE(ParseTokenList("x", "").ok());
  EXPECT_FALSE(ParseTokenList("x", "-1").ok());
  EXPECT_FALSE(ParseTokenList("x", "1.5").ok());
}

}  // namespace
}  // namespace rwkv
