// WorkerMetrics: the one owner of an ompq-worker's prometheus::Registry (the same pattern
// as server/metrics.h). Every family is built once here; the job loop records through the
// methods below, and Serve() exposes /metrics when --metrics-listen is set. No job ids as
// labels: a worker runs many jobs, and Prometheus keeps one series per label value.
#ifndef OMPQ_WORKERS_WORKER_METRICS_H_
#define OMPQ_WORKERS_WORKER_METRICS_H_

#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "ompq/v1/job.pb.h"

namespace ompq::worker {

/// How a leased job ended for this worker: the `result` label of ompq_worker_jobs_total.
namespace job_result {
inline constexpr char kSucceeded[] = "succeeded";  // The server accepted its result.
inline constexpr char kFailed[] = "failed";        // The server accepted its JobError.
inline constexpr char kCancelled[] = "cancelled";  // Stopped on request (CancelJob).
inline constexpr char kAbandoned[] = "abandoned";  // Given back at shutdown (retried).
inline constexpr char kLost[] = "lost";  // Lease lost, or the server never took the outcome.
}  // namespace job_result

/// The worker's Prometheus metrics. Thread-safe (prometheus-cpp metrics are).
class WorkerMetrics {
 public:
  /// `device` is the worker's --device: CUDA allocator gauges exist only for a CUDA
  /// device in a LibTorch built with CUDA (Debian's is CPU-only: the family is absent).
  explicit WorkerMetrics(const std::string& device);
  ~WorkerMetrics();
  WorkerMetrics(const WorkerMetrics&) = delete;
  WorkerMetrics& operator=(const WorkerMetrics&) = delete;

  /// Serves /metrics on `address` (host:port; port 0 picks one) and returns the bound
  /// port. UNAVAILABLE when the address cannot be bound.
  absl::StatusOr<int> Serve(const std::string& address);

  /// A LeaseJob long poll ended: with a job, or empty (its wait ran out).
  void LeasePolled(bool got_job);
  /// A LeaseJob call failed (server away, refused).
  void LeaseError();
  /// The server answered again after failed LeaseJob calls.
  void Reconnected();
  /// A leased job started (ompq_worker_busy = 1).
  void JobStarted();
  /// A job ended with `result` (one of job_result) after `duration` (ompq_worker_busy = 0).
  void JobFinished(absl::string_view result, absl::Duration duration);
  /// Time a job spent in `stage` on this worker.
  void ObserveStage(v1::Stage stage, absl::Duration duration);

 private:
  class Collector;

  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& jobs_;
  prometheus::Family<prometheus::Histogram>& job_seconds_;
  prometheus::Family<prometheus::Histogram>& stage_seconds_;
  prometheus::Gauge& busy_;
  prometheus::Family<prometheus::Counter>& lease_polls_;
  prometheus::Counter& lease_errors_;
  prometheus::Counter& reconnects_;
  // Set only where CUDA allocator statistics can be read; refreshed at each scrape.
  prometheus::Family<prometheus::Gauge>* device_memory_ = nullptr;
  int cuda_device_ = -1;
  std::shared_ptr<Collector> collector_;  // What the exposer collects.
  std::unique_ptr<prometheus::Exposer> exposer_;
};

}  // namespace ompq::worker

#endif  // OMPQ_WORKERS_WORKER_METRICS_H_
