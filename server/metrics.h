// Metrics: the one owner of the server's prometheus::Registry. Every family is built once
// here; the rest of the server records through the methods below. No job ids as labels.
#ifndef OMPQ_SERVER_METRICS_H_
#define OMPQ_SERVER_METRICS_H_

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <cstdint>
#include <map>
#include <memory>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "ompq/v1/job.pb.h"

namespace ompq {

/// The server's Prometheus metrics (families of PRODUCT.md "Metrics").
class Metrics {
 public:
  Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  /// The registry, for the /metrics exposer.
  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  /// grpc_server_handled_total{grpc_method,grpc_code}: RPCs completed (the interceptor).
  prometheus::Family<prometheus::Counter>& grpc_server_handled() { return grpc_handled_; }
  /// grpc_server_handling_seconds{grpc_method}: time from an RPC's start to its status.
  prometheus::Family<prometheus::Histogram>& grpc_server_handling_seconds() {
    return grpc_handling_seconds_;
  }
  /// Bucket boundaries of grpc_server_handling_seconds (milliseconds up to long streams).
  static const prometheus::Histogram::BucketBoundaries& GrpcHandlingBuckets();

  /// A job was accepted (not a repeated request_id).
  void JobSubmitted();
  /// A job reached a terminal state; `reason` is JobError.reason ("" on success).
  void JobFinished(v1::JobState state, absl::string_view reason);
  /// Sets ompq_jobs{state} for every state (absent states are 0).
  void SetJobCounts(const std::map<v1::JobState, int64_t>& counts);
  /// Time a job waited in QUEUED before a worker leased it.
  void ObserveQueueWait(absl::Duration wait);
  /// Time from a job's first start to its terminal state.
  void ObserveJobDuration(absl::Duration duration);
  /// Time a job spent in one stage.
  void ObserveStage(v1::Stage stage, absl::Duration duration);
  /// Workers waiting for a job (idle) and holding a lease (busy).
  void SetWorkers(int64_t idle, int64_t busy);
  /// A lease lapsed without a heartbeat.
  void LeaseExpired();
  /// Blob bytes newly stored by uploads.
  void BlobBytesWritten(int64_t bytes);
  /// Blob bytes served by downloads.
  void BlobBytesRead(int64_t bytes);
  /// Bytes held by the blob store.
  void SetBlobStoreBytes(int64_t bytes);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& jobs_submitted_;
  prometheus::Family<prometheus::Counter>& jobs_finished_;
  prometheus::Family<prometheus::Gauge>& jobs_;
  prometheus::Family<prometheus::Histogram>& queue_wait_;
  prometheus::Family<prometheus::Histogram>& job_duration_;
  prometheus::Family<prometheus::Histogram>& stage_seconds_;
  prometheus::Family<prometheus::Gauge>& workers_;
  prometheus::Family<prometheus::Counter>& leases_expired_;
  prometheus::Family<prometheus::Counter>& blob_bytes_written_;
  prometheus::Family<prometheus::Counter>& blob_bytes_read_;
  prometheus::Family<prometheus::Gauge>& blob_store_bytes_;
  prometheus::Family<prometheus::Counter>& grpc_handled_;
  prometheus::Family<prometheus::Histogram>& grpc_handling_seconds_;
};

}  // namespace ompq

#endif  // OMPQ_SERVER_METRICS_H_
