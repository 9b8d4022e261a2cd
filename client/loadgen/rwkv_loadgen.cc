// rwkv-loadgen: a load generator for rwkv-server (see loadgen.h and --help).
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "client/loadgen/load_spec.h"
#include "client/loadgen/loadgen.h"
#include "grpcpp/grpcpp.h"
#include "rwkv/v1/rwkv.grpc.pb.h"

int main(int argc, char** argv) {
  namespace lg = rwkv::loadgen;
  const std::vector<std::string> args(argv + 1, argv + argc);
  absl::StatusOr<lg::LoadSpec> spec = lg::ParseLoadSpec(args);
  if (!spec.ok()) {
    std::cerr << "rwkv-loadgen: " << spec.status().message() << "\nrun 'rwkv-loadgen --help' for usage\n";
    return 2;
  }
  if (spec->help) {
    std::cout << lg::LoadgenUsage();
    return 0;
  }
  grpc::ChannelArguments channel_args;
  channel_args.SetMaxReceiveMessageSize(-1);
  channel_args.SetMaxSendMessageSize(-1);  // --mode context sends up to millions of prompt tokens
  // The channel and stub are never destroyed: this gRPC (1.51) runs client
  // callbacks on a completion queue shared by the channels that used the
  // callback API and shuts it down with the last of them, which can abort
  // ("prior > 0") while its thread is still finishing the last call. Exiting
  // with the channel alive avoids that shutdown.
  // One channel per --connections, each with its own subchannel pool (and a
  // distinct argument), so that each is its own TCP connection.
  channel_args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  std::vector<rwkv::v1::Inference::StubInterface*> stubs;
  for (int i = 0; i < spec->connections; ++i) {
    grpc::ChannelArguments args = channel_args;
    args.SetInt("rwkv.loadgen.connection", i);
    auto* channel = new std::shared_ptr<grpc::Channel>(
        grpc::CreateCustomChannel(spec->server, grpc::InsecureChannelCredentials(), args));
    stubs.push_back(rwkv::v1::Inference::NewStub(*channel).release());
  }

  const bool bar = spec->progress && isatty(STDERR_FILENO) == 1;
  bool drawn = false;
  auto progress = [&](double fraction, const std::string& line) {
    if (!bar) return;
    const int width = 30;
    const int filled = static_cast<int>(fraction * width + 0.5);
    std::string b(static_cast<size_t>(filled), '#');
    b.resize(width, '.');
    std::fprintf(stderr, "\r\033[K[%s] %5.1f%% %s", b.c_str(), 100.0 * fraction, line.c_str());
    std::fflush(stderr);
    drawn = true;
  };
  absl::StatusOr<lg::LoadReport> report = lg::RunLoad(*spec, stubs, progress);
  if (drawn) std::fputc('\n', stderr);
  if (!report.ok()) {
    std::cerr << "rwkv-loadgen: " << report.status().message() << "\n";
    return 1;
  }
  const bool json_stdout = spec->json_path == "-";
  (json_stdout ? std::cerr : std::cout) << lg::ReportText(*report);
  if (!spec->json_path.empty()) {
    const std::string json = lg::ReportJson(*report);
    if (json_stdout) {
      std::cout << json;
    } else {
      std::ofstream f(spec->json_path, std::ios::trunc);
      f << json;
      if (!f.good()) {
        std::cerr << "rwkv-loadgen: cannot write " << spec->json_path << "\n";
        return 1;
      }
    }
  }
  // Exit 3 when any request failed, so scripts notice.
  return report->failed > 0 || !report->errors_by_code.empty() ? 3 : 0;
}
