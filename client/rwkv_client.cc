// rwkv-client: a command-line client for the rwkv-server gRPC API.
//
// Why: a scriptable way to drive every RPC (generate, the session life
// cycle, tokens, model info) without writing code, and the tool the
// end-to-end tests and the README use. Flag parsing lives in client_flags,
// the commands in client_commands; this file only wires them to a channel.
#include <unistd.h>

#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/client_commands.h"
#include "client/client_flags.h"
#include "grpcpp/grpcpp.h"
#include "rwkv/v1/rwkv.grpc.pb.h"

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  absl::StatusOr<rwkv::ClientFlags> flags = rwkv::ParseClientFlags(args);
  if (!flags.ok()) {
    std::cerr << "rwkv-client: " << flags.status().message() << "\n"
              << "run 'rwkv-client --help' for usage\n";
    return rwkv::kExitUsage;
  }
  if (flags->command == rwkv::ClientCommand::kHelp) {
    std::cout << rwkv::ClientUsage();
    return args.empty() ? rwkv::kExitUsage : rwkv::kExitOk;
  }
  grpc::ChannelArguments channel_args;
  // State files and long prompts can exceed gRPC's 4 MiB default.
  channel_args.SetMaxReceiveMessageSize(-1);
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateCustomChannel(flags->server, grpc::InsecureChannelCredentials(), channel_args);
  std::unique_ptr<rwkv::v1::Inference::Stub> stub = rwkv::v1::Inference::NewStub(channel);
  return rwkv::RunClientCommand(*flags, *stub, std::cout, std::cerr, isatty(STDOUT_FILENO) == 1);
}
