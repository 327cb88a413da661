// WorkerSupervisor: runs the server's local workers as child ompq-worker processes that
// speak WorkerService over loopback, like remote workers do. A model that crashes or
// exhausts memory kills a child, never the server; the child is restarted with backoff.
#ifndef OMPQ_SERVER_WORKER_SUPERVISOR_H_
#define OMPQ_SERVER_WORKER_SUPERVISOR_H_

#include <sys/types.h>

#include <cstdint>

#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace ompq {

/// How the children are started and stopped.
struct WorkerSupervisorOptions {
  std::string worker_binary;                          // Path of ompq-worker.
  std::string server_address;                         // Passed as --server, e.g. "127.0.0.1:50051".
  std::string work_root;                              // Child K works in WORK_ROOT/local-K.
  int workers = 1;                                    // Number of children.
  absl::Duration initial_backoff = absl::Seconds(1);  // Restart delay after a first exit.
  absl::Duration max_backoff = absl::Seconds(30);     // The delay doubles up to this.
  absl::Duration stable_after = absl::Seconds(60);    // A child that ran this long resets it.
  absl::Duration stop_grace = absl::Seconds(10);      // SIGTERM..SIGKILL on Stop().
  int64_t memory_limit_bytes = 0;  // If > 0, passed as --memory-limit (bytes).
  absl::Duration job_time_limit = absl::ZeroDuration();  // If > 0, passed as --job-time-limit.
  std::string token;  // If set, given to children as $OMPQ_TOKEN (an environment variable,
                      // not argv, so `ps` does not show it).
};

/// Starts, watches, restarts and stops the local worker processes.
class WorkerSupervisor {
 public:
  explicit WorkerSupervisor(WorkerSupervisorOptions options);
  /// Stops the children if Stop() was not called.
  ~WorkerSupervisor();
  WorkerSupervisor(const WorkerSupervisor&) = delete;
  WorkerSupervisor& operator=(const WorkerSupervisor&) = delete;

  /// The worker id of child `index`: "local-<index>".
  static std::string WorkerId(int index);

  /// Starts the children and the thread that watches them.
  void Start();
  /// SIGTERM to every child, SIGKILL to those still alive after the grace period; waits
  /// for all of them. Idempotent.
  void Stop();
  /// The ids of all children (for requeueing their jobs).
  std::set<std::string> worker_ids() const;
  /// Children currently alive.
  int running() const;
  /// Times a child was started (first starts included).
  int starts() const;

 private:
  struct Child {
    pid_t pid = 0;  // 0 when not running.
    absl::Time started = absl::InfinitePast();
    absl::Time next_start = absl::InfinitePast();  // Earliest (re)start.
    absl::Duration backoff;                        // Delay before the next restart.
  };

  // Everything below runs on the supervisor thread: fork from one long-lived thread,
  // because PR_SET_PDEATHSIG fires when the *thread* that forked exits.
  void Run();
  void Spawn(int index, Child& child);
  void Reap(int index, Child& child, bool stopping);
  void StopChildren();

  const WorkerSupervisorOptions options_;
  mutable absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  int starts_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<Child> children_;  // Owned by the supervisor thread.
  std::thread thread_;
};

}  // namespace ompq

#endif  // OMPQ_SERVER_WORKER_SUPERVISOR_H_
