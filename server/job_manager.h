// JobManager: the job state machine. QuantizationService and WorkerService are thin gRPC
// adapters over it; it knows nothing of gRPC, so its rules are unit-tested directly with a
// fake clock.
//
//   QUEUED --lease--> RUNNING --complete--> SUCCEEDED | FAILED
//     ^                 |  \--retryable error / lease lapsed (attempts left)--> QUEUED
//     |                 |--lease lapsed (no attempts left)--> FAILED WORKER_LOST
//     |                 |--per-job timeout--> FAILED DEADLINE_EXCEEDED
//   cancel: QUEUED -> CANCELLED at once; RUNNING -> CANCELLING -> CANCELLED when the
//   worker completes (or its lease lapses).
//
// Every write is a compare-and-set on the store, so concurrent calls (and, later, server
// replicas) never lose an update; every write is published on the JobNotifier.
#ifndef OMPQ_SERVER_JOB_MANAGER_H_
#define OMPQ_SERVER_JOB_MANAGER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "ompq/v1/quantization_service.pb.h"
#include "ompq/v1/worker_service.pb.h"
#include "server/blob_store.h"
#include "server/clock.h"
#include "server/job_notifier.h"
#include "server/job_store.h"
#include "server/metrics.h"

namespace ompq {

/// Policy knobs of the state machine.
struct JobManagerOptions {
  absl::Duration lease_timeout = absl::Seconds(60);      // A lease lapses this long after the
                                                         // last lease/heartbeat.
  int max_attempts = 3;                                  // Starts before WORKER_LOST.
  int64_t max_queued_jobs = 10000;                       // CreateJob refuses beyond this.
  absl::Duration default_job_timeout = absl::Hours(24);  // Per-attempt run limit when the
                                                         // spec sets none.
  bool per_tenant_blobs = false;  // Jobs may reference only blobs their tenant owns
                                  // (BlobStore::AddOwner); set when tokens are required.
};

/// A job handed to a worker by TryLeaseJob().
struct LeaseGrant {
  v1::Job job;                    // The job, now RUNNING.
  std::string lease_id;           // Secret the worker quotes in later calls.
  absl::Duration lease_duration;  // Heartbeat before this passes.
};

/// The state machine over a JobStore.
class JobManager {
 public:
  /// All pointers must outlive the manager.
  JobManager(JobStore* store, const BlobStore* blobs, Metrics* metrics, const Clock* clock,
             JobManagerOptions options);
  JobManager(const JobManager&) = delete;
  JobManager& operator=(const JobManager&) = delete;

  /// Where job changes are published (WatchJob, LeaseJob long polls).
  JobNotifier& notifier() { return notifier_; }

  // ---- QuantizationService ----
  //
  // `tenant` is the caller's: another tenant's job is NOT_FOUND, as if absent. An empty
  // tenant (the server's own uses) sees every job.

  /// Validates, checks the referenced blobs exist (and, with per_tenant_blobs, that
  /// `tenant` owns them) and stores a QUEUED job of `tenant`.
  absl::StatusOr<v1::Job> CreateJob(const v1::CreateJobRequest& request,
                                    const std::string& tenant = kDefaultTenant);
  /// One job; NOT_FOUND when absent.
  absl::StatusOr<JobRecord> GetJob(const std::string& name, const std::string& tenant = "");
  /// A page of jobs, newest first.
  absl::StatusOr<v1::ListJobsResponse> ListJobs(const v1::ListJobsRequest& request,
                                                const std::string& tenant = "");
  /// QUEUED -> CANCELLED, RUNNING -> CANCELLING; FAILED_PRECONDITION when terminal.
  absl::StatusOr<v1::Job> CancelJob(const std::string& name, const std::string& tenant = "");
  /// Deletes a terminal job; FAILED_PRECONDITION while it is live.
  absl::Status DeleteJob(const std::string& name, const std::string& tenant = "");

  // ---- WorkerService ----

  /// Leases the oldest QUEUED job to `worker_id`, or nullopt when none is queued (or
  /// leasing was stopped).
  absl::StatusOr<std::optional<LeaseGrant>> TryLeaseJob(const std::string& worker_id,
                                                        const std::string& device);
  /// Records progress and extends the lease. ABORTED (and nothing changes) for a stale
  /// lease; ABORTED after failing the job when its time limit has passed.
  absl::StatusOr<v1::HeartbeatResponse> Heartbeat(const v1::HeartbeatRequest& request);
  /// Finishes a leased job (success, failure, retry or cancellation).
  absl::StatusOr<v1::Job> CompleteJob(const v1::CompleteJobRequest& request);

  // ---- Housekeeping ----

  /// Requeues or fails jobs whose lease lapsed and fails jobs past their time limit, as
  /// of the clock's now. Returns how many jobs changed.
  absl::StatusOr<int> ReapOverdueJobs();
  /// Requeues the jobs leased to `worker_ids` (our own children, stopped on shutdown),
  /// without counting it against max attempts. Returns how many jobs changed.
  absl::StatusOr<int> RequeueJobsOfWorkers(const std::set<std::string>& worker_ids);
  /// After this, TryLeaseJob() hands out nothing (server draining).
  void StopLeasing() { leasing_ = false; }
  /// Refreshes the ompq_jobs gauge and ompq_workers (idle = `idle_workers`).
  absl::Status RefreshMetrics(int64_t idle_workers);

  /// The lease length granted to workers.
  absl::Duration lease_timeout() const { return options_.lease_timeout; }

 private:
  // Reads the job, lets `mutate` change it (returning false: no write needed), writes it
  // with compare-and-set, retrying on conflicts. `now` is one clock reading per attempt.
  using Mutation = std::function<absl::StatusOr<bool>(JobRecord& record, absl::Time now)>;
  absl::StatusOr<JobRecord> Mutate(const std::string& name, const Mutation& mutate);
  // Publishes a write and records the metrics of its transition.
  void AfterWrite(const JobRecord& before, const JobRecord& after, absl::Time now);
  absl::Status CheckBlobExists(const std::string& digest, const std::string& field,
                               const std::string& tenant) const;

  JobStore* const store_;
  const BlobStore* const blobs_;
  Metrics* const metrics_;
  const Clock* const clock_;
  const JobManagerOptions options_;
  JobNotifier notifier_;
  std::atomic<bool> leasing_{true};
};

}  // namespace ompq

#endif  // OMPQ_SERVER_JOB_MANAGER_H_
