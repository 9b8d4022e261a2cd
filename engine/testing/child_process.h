// A child process for tests that start real programs (rwkv-server,
// Prometheus), never left behind.
//
// Why one class: every test that forks a program needs the same care: only
// async-signal-safe calls between fork and exec, the child killed by the
// kernel if the test process dies (PR_SET_PDEATHSIG; it fires when the
// forking *thread* exits, so start children from the test thread), and the
// child killed and reaped on every path out of a test (destructor).
#ifndef RWKV_ENGINE_TESTING_CHILD_PROCESS_H_
#define RWKV_ENGINE_TESTING_CHILD_PROCESS_H_

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace rwkv::testing {

class ChildProcess {
 public:
  // Starts argv[0] (a path) with stdout and stderr appended to `log` and
  // stdin from /dev/null. pid() < 0 if fork failed.
  ChildProcess(const std::vector<std::string>& argv, const std::filesystem::path& log) {
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    const int log_fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    const pid_t parent = getpid();
    pid_ = fork();
    if (pid_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(127);
      if (log_fd >= 0) {
        dup2(log_fd, STDOUT_FILENO);
        dup2(log_fd, STDERR_FILENO);
      }
      const int null_fd = open("/dev/null", O_RDONLY);
      if (null_fd >= 0) dup2(null_fd, STDIN_FILENO);
      execv(args[0], args.data());
      _exit(127);
    }
    if (log_fd >= 0) close(log_fd);
  }
  ~ChildProcess() { Kill(); }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }

  // True while the child runs; reaps it (keeping the wait status) once it has exited.
  bool Running() {
    if (pid_ <= 0) return false;
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      wait_status_ = status;
      pid_ = -1;
      return false;
    }
    return true;
  }

  void Signal(int signal) {
    if (pid_ > 0) kill(pid_, signal);
  }

  // Waits up to `timeout` for the child to exit; its wait status, or nullopt on timeout.
  std::optional<int> Wait(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (Running()) {
      if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return wait_status_;
  }

  // SIGTERM, then SIGKILL if it has not exited within `grace`. Idempotent.
  void Terminate(std::chrono::milliseconds grace) {
    Signal(SIGTERM);
    if (!Wait(grace).has_value()) Kill();
  }

  // SIGKILL and reap. Idempotent.
  void Kill() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
    wait_status_ = status;
    pid_ = -1;
  }

 private:
  pid_t pid_ = -1;
  std::optional<int> wait_status_;
};

}  // namespace rwkv::testing

#endif  // RWKV_ENGINE_TESTING_CHILD_PROCESS_H_
