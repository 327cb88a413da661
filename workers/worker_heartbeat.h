// The heartbeat of a leased job: a thread that reports the job's latest progress to the
// server, which extends the lease, and notices cancellation or a lost lease.
#ifndef OMPQ_WORKERS_WORKER_HEARTBEAT_H_
#define OMPQ_WORKERS_WORKER_HEARTBEAT_H_

#include <atomic>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "ompq/v1/worker_service.grpc.pb.h"
#include "rpc/channel.h"

namespace ompq::worker {

/// Progress as the next heartbeat will report it.
struct ProgressReport {
  v1::Stage stage = v1::FETCHING_INPUTS;
  double percent = 0;      // Of the whole job, 0..100.
  double eta_seconds = 0;  // Left in this stage; 0 unknown.
  std::string message;
};

/// Timing of heartbeats.
struct HeartbeatOptions {
  // Beat every min(lease_duration / 3, max_interval): a third of the lease keeps it alive
  // through two lost beats; the cap keeps progress and cancellation prompt.
  absl::Duration max_interval = absl::Seconds(2);
  absl::Duration rpc_timeout = absl::Seconds(10);  // Deadline of one Heartbeat call.
};

/// Sends Heartbeat for one lease from its own thread until Stop() or destruction.
class Heartbeat {
 public:
  Heartbeat(v1::WorkerService::StubInterface& stub, rpc::ConnectionOptions connection,
            std::string worker_id, std::string lease_id, std::string job_name,
            absl::Duration lease_duration, HeartbeatOptions options);
  ~Heartbeat();
  Heartbeat(const Heartbeat&) = delete;
  Heartbeat& operator=(const Heartbeat&) = delete;

  /// Starts the thread.
  void Start();
  /// Stops and joins the thread (idempotent).
  void Stop();

  /// Replaces the progress the next beat sends.
  void Report(ProgressReport report);

  /// The server asked the job to stop (CancelJob).
  bool cancel_requested() const { return cancel_requested_.load(); }
  /// The server refused the lease (ABORTED / NOT_FOUND): another worker may own the job
  /// now, so this one must stop and must not complete it.
  bool lease_lost() const { return lease_lost_.load(); }

 private:
  void Loop();
  void Beat();
  // The loop should wake: stopping, or a beat is wanted before the interval ends.
  bool Due() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  v1::WorkerService::StubInterface& stub_;
  const rpc::ConnectionOptions connection_;
  const std::string worker_id_;
  const std::string lease_id_;
  const std::string job_name_;
  const HeartbeatOptions options_;

  mutable absl::Mutex mu_;
  ProgressReport report_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool beat_now_ ABSL_GUARDED_BY(mu_) = false;  // Send without waiting for the interval.
  bool sent_any_ ABSL_GUARDED_BY(mu_) = false;  // The first report goes out at once.
  absl::Duration interval_ ABSL_GUARDED_BY(mu_);

  std::atomic<bool> cancel_requested_{false};
  std::atomic<bool> lease_lost_{false};
  std::thread thread_;
};

}  // namespace ompq::worker

#endif  // OMPQ_WORKERS_WORKER_HEARTBEAT_H_
