// A small fixed-size thread pool with a blocking ParallelFor.
//
// Why: the CPU backend's non-BLAS work (WKV over sessions and heads, row-wise
// norms) splits into independent pieces; OpenBLAS threads its own matrix
// products. Workers persist so a forward pass does not spawn threads.
#ifndef RWKV_ENGINE_MODEL_THREAD_POOL_H_
#define RWKV_ENGINE_MODEL_THREAD_POOL_H_

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace rwkv {

class ThreadPool {
 public:
  // threads <= 1 runs everything on the caller.
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(i) for i in [0, n), spread over the workers and the caller;
  // returns when all calls are done. Not reentrant; one caller at a time.
  void ParallelFor(int64_t n, const std::function<void(int64_t)>& fn);

 private:
  void WorkerLoop();
  void RunChunks();

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
  const std::function<void(int64_t)>* fn_ = nullptr;
  int64_t n_ = 0;
  int64_t next_ = 0;
  int active_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
};

}  // namespace rwkv

#endif  // RWKV_ENGINE_MODEL_THREAD_POOL_H_
