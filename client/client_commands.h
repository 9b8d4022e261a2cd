// The rwkv-client commands: each turns parsed flags into one RPC (or one
// stream) and prints the answer.
//
// Why a separate unit from main: the commands write to caller-supplied
// streams and talk to any Inference::StubInterface, so they run the same
// against a real server, an in-process one or a test double.
#ifndef RWKV_CLIENT_CLIENT_COMMANDS_H_
#define RWKV_CLIENT_CLIENT_COMMANDS_H_

#include <ostream>
#include <string>

#include "client/client_flags.h"
#include "grpcpp/grpcpp.h"
#include "rwkv/v1/rwkv.grpc.pb.h"

namespace rwkv {

// Exit codes of rwkv-client.
inline constexpr int kExitOk = 0;
inline constexpr int kExitRpcError = 1;  // the server (or the channel) answered with an error
inline constexpr int kExitUsage = 2;

// Builds the GenerateRequest for `flags` (command kGenerate).
rwkv::v1::GenerateRequest BuildGenerateRequest(const ClientFlags& flags);

// "NOT_FOUND: session 1234 not found" for a status.
std::string DescribeStatus(const grpc::Status& status);

// Runs one command. Regular output goes to `out` (stdout), diagnostics and
// errors ("rwkv-client: CODE: message") to `err`. Returns the exit code.
// `out_is_terminal` adds a final newline after streamed text. Not thread-safe
// with respect to the streams.
int RunClientCommand(const ClientFlags& flags, rwkv::v1::Inference::StubInterface& stub,
                     std::ostream& out, std::ostream& err, bool out_is_terminal = false);

}  // namespace rwkv

#endif  // RWKV_CLIENT_CLIENT_COMMANDS_H_
