#include "server/metrics.h"

#include <string>

#include "common/metric_buckets.h"

namespace ompq {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;
using prometheus::Histogram;

}  // namespace

const Histogram::BucketBoundaries& Metrics::GrpcHandlingBuckets() {
  static const auto* buckets = new Histogram::BucketBoundaries{
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300};
  return *buckets;
}

Metrics::Metrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      jobs_submitted_(BuildCounter()
                          .Name("ompq_jobs_submitted_total")
                          .Help("Jobs accepted by CreateJob.")
                          .Register(*registry_)),
      jobs_finished_(BuildCounter()
                         .Name("ompq_jobs_finished_total")
                         .Help("Jobs that reached a terminal state, by state and reason.")
                         .Register(*registry_)),
      jobs_(BuildGauge().Name("ompq_jobs").Help("Jobs stored, by state.").Register(*registry_)),
      queue_wait_(BuildHistogram()
                      .Name("ompq_job_queue_wait_seconds")
                      .Help("Time jobs waited in QUEUED before a worker leased them.")
                      .Register(*registry_)),
      job_duration_(BuildHistogram()
                        .Name("ompq_job_duration_seconds")
                        .Help("Time from a job's first start to its terminal state.")
                        .Register(*registry_)),
      stage_seconds_(BuildHistogram()
                         .Name("ompq_job_stage_seconds")
                         .Help("Time jobs spent in each stage.")
                         .Register(*registry_)),
      workers_(BuildGauge()
                   .Name("ompq_workers")
                   .Help("Workers waiting for a job (idle) or holding a lease (busy).")
                   .Register(*registry_)),
      leases_expired_(BuildCounter()
                          .Name("ompq_leases_expired_total")
                          .Help("Leases that lapsed without a heartbeat.")
                          .Register(*registry_)),
      blob_bytes_written_(BuildCounter()
                              .Name("ompq_blob_bytes_written_total")
                              .Help("Blob bytes newly stored by uploads.")
                              .Register(*registry_)),
      blob_bytes_read_(BuildCounter()
                           .Name("ompq_blob_bytes_read_total")
                           .Help("Blob bytes served by downloads.")
                           .Register(*registry_)),
      blob_store_bytes_(BuildGauge()
                            .Name("ompq_blob_store_bytes")
                            .Help("Bytes held by the blob store.")
                            .Register(*registry_)),
      grpc_handled_(BuildCounter()
                        .Name("grpc_server_handled_total")
                        .Help("RPCs completed on the server, by method and status code.")
                        .Register(*registry_)),
      grpc_handling_seconds_(BuildHistogram()
                                 .Name("grpc_server_handling_seconds")
                                 .Help("Time from an RPC's start to its status, by method.")
                                 .Register(*registry_)) {
  // Series that exist from the start, so dashboards and rate() see zeros, not gaps.
  jobs_submitted_.Add({});
  leases_expired_.Add({});
  blob_bytes_written_.Add({});
  blob_bytes_read_.Add({});
  blob_store_bytes_.Add({});
  queue_wait_.Add({}, StageSecondsBuckets());
  job_duration_.Add({}, JobSecondsBuckets());
  SetJobCounts({});
  SetWorkers(0, 0);
}

void Metrics::JobSubmitted() { jobs_submitted_.Add({}).Increment(); }

void Metrics::JobFinished(v1::JobState state, absl::string_view reason) {
  jobs_finished_.Add({{"state", v1::JobState_Name(state)}, {"reason", std::string(reason)}})
      .Increment();
}

void Metrics::SetJobCounts(const std::map<v1::JobState, int64_t>& counts) {
  for (int s = v1::QUEUED; s <= v1::JobState_MAX; ++s) {
    const auto state = static_cast<v1::JobState>(s);
    const auto it = counts.find(state);
    jobs_.Add({{"state", v1::JobState_Name(state)}})
        .Set(it == counts.end() ? 0.0 : static_cast<double>(it->second));
  }
}

void Metrics::ObserveQueueWait(absl::Duration wait) {
  queue_wait_.Add({}, StageSecondsBuckets()).Observe(absl::ToDoubleSeconds(wait));
}

void Metrics::ObserveJobDuration(absl::Duration duration) {
  job_duration_.Add({}, JobSecondsBuckets()).Observe(absl::ToDoubleSeconds(duration));
}

void Metrics::ObserveStage(v1::Stage stage, absl::Duration duration) {
  stage_seconds_.Add({{"stage", v1::Stage_Name(stage)}}, StageSecondsBuckets())
      .Observe(absl::ToDoubleSeconds(duration));
}

void Metrics::SetWorkers(int64_t idle, int64_t busy) {
  workers_.Add({{"state", "idle"}}).Set(static_cast<double>(idle));
  workers_.Add({{"state", "busy"}}).Set(static_cast<double>(busy));
}

void Metrics::LeaseExpired() { leases_expired_.Add({}).Increment(); }

void Metrics::BlobBytesWritten(int64_t bytes) {
  blob_bytes_written_.Add({}).Increment(static_cast<double>(bytes));
}

void Metrics::BlobBytesRead(int64_t bytes) {
  blob_bytes_read_.Add({}).Increment(static_cast<double>(bytes));
}

void Metrics::SetBlobStoreBytes(int64_t bytes) {
  blob_store_bytes_.Add({}).Set(static_cast<double>(bytes));
}

}  // namespace ompq
