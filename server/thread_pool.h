// ThreadPool: a few threads for blocking work (blob file I/O and fsync) that must not run
// inside gRPC reactions.
#ifndef OMPQ_SERVER_THREAD_POOL_H_
#define OMPQ_SERVER_THREAD_POOL_H_

#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace ompq {

/// Runs scheduled closures on a fixed set of threads, in order of scheduling.
class ThreadPool {
 public:
  explicit ThreadPool(int threads);
  /// Runs what is still queued, then joins the threads.
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  /// Queues `work` to run on a pool thread.
  void Schedule(std::function<void()> work);

 private:
  void Run();

  absl::Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace ompq

#endif  // OMPQ_SERVER_THREAD_POOL_H_
