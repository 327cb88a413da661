// ompq-worker's main loop: long-poll the server for a job (LeaseJob), run it, repeat;
// reconnect with exponential backoff while the server is away; stop on request.
#ifndef OMPQ_WORKERS_WORKER_H_
#define OMPQ_WORKERS_WORKER_H_

#include <grpcpp/channel.h>

#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "ompq/v1/blob_service.grpc.pb.h"
#include "ompq/v1/worker_service.grpc.pb.h"
#include "workers/worker_metrics.h"
#include "workers/worker_options.h"

namespace ompq::worker {

/// One worker process's loop over jobs.
class Worker {
 public:
  /// Opens the channel and, with `metrics_listen`, serves /metrics; INVALID_ARGUMENT for
  /// missing options, NOT_FOUND for an unreadable TLS CA, UNAVAILABLE for a metrics
  /// address that cannot be bound.
  static absl::StatusOr<std::unique_ptr<Worker>> Create(WorkerOptions options);

  /// Uses an existing channel (tests).
  Worker(WorkerOptions options, const std::shared_ptr<grpc::ChannelInterface>& channel);

  /// Takes and runs jobs until Stop(). Errors only for what retrying cannot fix: the
  /// server refused our credentials or does not serve WorkerService.
  absl::Status Run();

  /// Asks Run() to return: no new lease is taken, a waiting long poll is cancelled, and a
  /// running job gets `shutdown_grace` to finish before it is given back. Thread-safe.
  void Stop();

  /// The worker's metrics (recorded whether or not they are served).
  WorkerMetrics& metrics() { return *metrics_; }

 private:
  bool stopping() const;
  // True once a running job must be given back: stopping for longer than the grace.
  bool ShouldAbandon() const;
  // Sleeps for `duration` unless Stop() comes first.
  void SleepUnlessStopped(absl::Duration duration);
  absl::StatusOr<v1::LeaseJobResponse> Lease();

  const WorkerOptions options_;
  std::unique_ptr<v1::WorkerService::StubInterface> workers_;
  std::unique_ptr<v1::BlobService::StubInterface> blobs_;
  std::unique_ptr<WorkerMetrics> metrics_;

  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time stop_time_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  grpc::ClientContext* active_lease_ ABSL_GUARDED_BY(mu_) = nullptr;  // For Stop().
};

}  // namespace ompq::worker

#endif  // OMPQ_WORKERS_WORKER_H_
