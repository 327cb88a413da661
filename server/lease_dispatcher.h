// LeaseDispatcher: the long poll behind WorkerService.LeaseJob.
//
// Waiting workers are parked here, not on threads: one dispatcher thread owns the queue
// of waiters, hands the oldest QUEUED job to the longest-waiting worker whenever a job is
// queued (JobNotifier wakes it) or a worker arrives, and answers "no job" when a waiter's
// time is up.
#ifndef OMPQ_SERVER_LEASE_DISPATCHER_H_
#define OMPQ_SERVER_LEASE_DISPATCHER_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/job_manager.h"

namespace ompq {

/// Parks LeaseJob calls until a job or their deadline comes.
class LeaseDispatcher {
 public:
  /// The outcome handed to a waiter: a lease, no job (time up or draining), or an error.
  using Outcome = absl::StatusOr<std::optional<LeaseGrant>>;

  /// One parked LeaseJob call.
  struct Waiter {
    std::string worker_id;               // Who asks.
    std::string device;                  // Where it computes.
    absl::Time deadline;                 // Answer "no job" at this (wall) time.
    std::function<bool()> is_cancelled;  // The caller went away: lease nothing to it.
    std::function<void(Outcome)> done;   // Called exactly once, unless Remove() wins.
  };

  /// Starts the dispatcher thread; `manager` must outlive it.
  explicit LeaseDispatcher(JobManager* manager);
  /// Stops (answering every waiter) and joins the thread.
  ~LeaseDispatcher();
  LeaseDispatcher(const LeaseDispatcher&) = delete;
  LeaseDispatcher& operator=(const LeaseDispatcher&) = delete;

  /// Parks a waiter and returns its id. After Stop(), answers "no job" at once.
  uint64_t Add(Waiter waiter);
  /// Unparks a waiter whose caller went away. True when it was still parked; then `done`
  /// will never be called. False when `done` has run or is about to.
  bool Remove(uint64_t id);
  /// A job may have been queued: try to hand jobs to waiters.
  void Wake();
  /// Answers every waiter "no job" and ends the thread (server draining).
  void Stop();
  /// Number of parked waiters (idle workers).
  int64_t waiting() const;

 private:
  void Run();

  JobManager* const manager_;
  mutable absl::Mutex mu_;
  std::deque<std::pair<uint64_t, Waiter>> waiters_ ABSL_GUARDED_BY(mu_);
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  bool wake_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace ompq

#endif  // OMPQ_SERVER_LEASE_DISPATCHER_H_
