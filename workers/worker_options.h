// Settings of an ompq-worker process; main.cc fills them from flags.
#ifndef OMPQ_WORKERS_WORKER_OPTIONS_H_
#define OMPQ_WORKERS_WORKER_OPTIONS_H_

#include <cstdint>
#include <string>

#include "absl/time/time.h"
#include "rpc/blob_transfer.h"
#include "rpc/channel.h"
#include "workers/worker_heartbeat.h"

namespace ompq::worker {

/// Everything a Worker needs; defaults suit a local child of ompq-server.
struct WorkerOptions {
  rpc::ConnectionOptions connection;                         // Server address, token, TLS CA.
  std::string worker_id;                                     // Stable id shown in jobs; required.
  std::string work_dir;                                      // Jobs run in work_dir/jobs/<id>/.
  std::string device = "auto";                               // auto, cpu, cuda or cuda:N.
  absl::Duration lease_wait = absl::Seconds(20);             // Long-poll wait of LeaseJob.
  absl::Duration rpc_timeout = absl::Seconds(30);            // Deadline of unary calls (plus wait).
  absl::Duration initial_backoff = absl::Milliseconds(500);  // First retry while away.
  absl::Duration max_backoff = absl::Seconds(10);            // Longest pause between retries.
  absl::Duration shutdown_grace = absl::Seconds(5);          // SIGTERM: time to finish the job.
  int64_t memory_limit_bytes = 0;                            // RLIMIT_AS of the process; 0: none.
  absl::Duration job_time_limit = absl::ZeroDuration();      // Per-job run time; 0: none.
  HeartbeatOptions heartbeat;                                // Heartbeat cadence and deadline.
  rpc::TransferLimits transfer;                              // Blob download/upload deadlines.
  std::string metrics_listen;                                // Prometheus /metrics; empty: none.
};

}  // namespace ompq::worker

#endif  // OMPQ_WORKERS_WORKER_OPTIONS_H_
