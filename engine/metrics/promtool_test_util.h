// Test helper: runs `promtool check metrics` on exposition text.
//
// Why: promtool (Debian package "prometheus") is the reference parser and
// linter for the text format, so the tests feed it our output instead of
// trusting our reading of the spec. Tests skip with a clear message where it
// is not installed. $RWKV_PROMTOOL overrides the binary.
#ifndef RWKV_ENGINE_METRICS_PROMTOOL_TEST_UTIL_H_
#define RWKV_ENGINE_METRICS_PROMTOOL_TEST_UTIL_H_

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace rwkv::metrics::testing {

// The promtool binary, or "" when there is none.
inline std::string FindPromtool() {
  if (const char* env = std::getenv("RWKV_PROMTOOL"); env != nullptr && *env != '\0') return env;
  for (const char* path : {"/usr/bin/promtool", "/usr/local/bin/promtool"}) {
    if (access(path, X_OK) == 0) return path;
  }
  return "";
}

struct PromtoolResult {
  int exit_code = -1;  // 0: valid and lint-clean; 3: lint problems; 1: parse error
  std::string output;  // stdout and stderr
};

// Runs `promtool check metrics < text`.
inline PromtoolResult RunPromtoolCheckMetrics(const std::string& promtool,
                                              const std::string& text) {
  PromtoolResult result;
  const std::filesystem::path dir = std::filesystem::temp_directory_path();
  std::string tmpl = (dir / "rwkv_metrics_XXXXXX").string();
  const int fd = mkstemp(tmpl.data());
  if (fd < 0) {
    result.output = "mkstemp failed";
    return result;
  }
  close(fd);
  std::ofstream(tmpl, std::ios::binary) << text;
  const std::string cmd = "'" + promtool + "' check metrics < '" + tmpl + "' 2>&1";
  if (FILE* pipe = popen(cmd.c_str(), "r"); pipe != nullptr) {
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof(buf), pipe)) > 0) result.output.append(buf, n);
    const int status = pclose(pipe);
    result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  std::filesystem::remove(tmpl);
  return result;
}

}  // namespace rwkv::metrics::testing

#endif  // RWKV_ENGINE_METRICS_PROMTOOL_TEST_UTIL_H_
