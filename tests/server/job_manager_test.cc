// The job state machine with a fake clock, a real SQLite store and a real blob store:
// leases, heartbeats, expiry, retries, cancellation, timeouts and completion.
#include "server/job_manager.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "common/digest.h"
#include "rpc/proto_time.h"
#include "server/sqlite_job_store.h"
#include "tests/server/test_util.h"

namespace ompq {
namespace {

using ::ompq::testing::FakeClock;
using ::ompq::testing::MetricValue;
using ::ompq::testing::TempDir;

constexpr absl::Duration kLease = absl::Seconds(60);

// Records the states a watched job goes through.
class RecordingWatcher : public JobWatcher {
 public:
  void OnJobChanged(const JobRecord& record) override { states.push_back(record.job.state()); }
  void OnNotifierShutdown() override { shut_down = true; }
  std::vector<v1::JobState> states;
  bool shut_down = false;
};

class JobManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = SqliteJobStore::Open(dir_.path() + "/jobs.db");
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(store).value();
    auto blobs = BlobStore::Open(dir_.path() + "/blobs");
    ASSERT_TRUE(blobs.ok()) << blobs.status();
    blobs_ = std::move(blobs).value();
    model_ = PutBlob("model bytes");
    calib_ = PutBlob("calib bytes");
    MakeManager(JobManagerOptions{});
  }

  void MakeManager(JobManagerOptions options) {
    options.lease_timeout = kLease;
    manager_ =
        std::make_unique<JobManager>(store_.get(), blobs_.get(), &metrics_, &clock_, options);
  }

  std::string PutBlob(const std::string& data) {
    const std::string digest = DigestOf(data);
    auto writer = blobs_->StartWrite(digest, static_cast<int64_t>(data.size()));
    EXPECT_TRUE(writer.ok());
    EXPECT_TRUE((*writer)->Append(data).ok());
    EXPECT_TRUE((*writer)->Commit().ok());
    return digest;
  }

  v1::CreateJobRequest Request() {
    v1::CreateJobRequest request;
    request.mutable_spec()->set_model_digest(model_);
    request.mutable_spec()->set_calib_digest(calib_);
    request.mutable_spec()->set_size_budget_bytes(100000);
    return request;
  }

  std::string Create(v1::CreateJobRequest request) {
    auto job = manager_->CreateJob(request);
    EXPECT_TRUE(job.ok()) << job.status();
    return job.ok() ? job->name() : "";
  }
  std::string Create() { return Create(Request()); }

  LeaseGrant Lease(const std::string& worker = "worker-a") {
    auto grant = manager_->TryLeaseJob(worker, "cpu");
    EXPECT_TRUE(grant.ok()) << grant.status();
    EXPECT_TRUE(grant.ok() && grant->has_value()) << "nothing to lease";
    return grant.ok() && grant->has_value() ? **grant : LeaseGrant{};
  }

  JobRecord Get(const std::string& name) {
    auto record = manager_->GetJob(name);
    EXPECT_TRUE(record.ok()) << record.status();
    return record.ok() ? *record : JobRecord{};
  }

  absl::StatusOr<v1::HeartbeatResponse> Beat(const LeaseGrant& grant, v1::Stage stage,
                                             double progress) {
    v1::HeartbeatRequest request;
    request.set_lease_id(grant.lease_id);
    request.set_job(grant.job.name());
    request.set_stage(stage);
    request.set_progress(progress);
    request.set_message("working");
    return manager_->Heartbeat(request);
  }

  absl::StatusOr<v1::Job> Fail(const LeaseGrant& grant, bool retryable) {
    v1::CompleteJobRequest request;
    request.set_lease_id(grant.lease_id);
    request.set_job(grant.job.name());
    request.mutable_error()->set_code("INVALID_ARGUMENT");
    request.mutable_error()->set_reason("INPUT_MISMATCH");
    request.mutable_error()->set_message("expected 3 channels, got 1");
    request.set_retryable(retryable);
    return manager_->CompleteJob(request);
  }

  int Reap() {
    auto reaped = manager_->ReapOverdueJobs();
    EXPECT_TRUE(reaped.ok()) << reaped.status();
    return reaped.ok() ? *reaped : -1;
  }

  double Metric(const std::string& name, const std::map<std::string, std::string>& labels = {}) {
    return MetricValue(*metrics_.registry(), name, labels);
  }

  TempDir dir_;
  FakeClock clock_;
  Metrics metrics_;
  std::unique_ptr<SqliteJobStore> store_;
  std::unique_ptr<BlobStore> blobs_;
  std::unique_ptr<JobManager> manager_;
  std::string model_;
  std::string calib_;
};

TEST_F(JobManagerTest, CreateStoresQueuedJobWithDefaults) {
  auto job = manager_->CreateJob(Request());
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_TRUE(absl::StartsWith(job->name(), "jobs/"));
  EXPECT_EQ(job->state(), v1::QUEUED);
  EXPECT_EQ(job->attempt(), 0);
  EXPECT_EQ(job->spec().act_bits(), 8);
  EXPECT_EQ(job->spec().weight_bits_size(), 7);
  EXPECT_EQ(FromProtoTimestamp(job->create_time()), clock_.Now());
  EXPECT_EQ(Get(job->name()).job.state(), v1::QUEUED);
  EXPECT_EQ(Metric("ompq_jobs_submitted_total"), 1);
}

TEST_F(JobManagerTest, CreateNamesTheMissingBlob) {
  v1::CreateJobRequest request = Request();
  const std::string missing = DigestOf("never uploaded");
  request.mutable_spec()->set_calib_digest(missing);
  auto job = manager_->CreateJob(request);
  EXPECT_EQ(job.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(job.status().message(), missing)) << job.status();
  EXPECT_TRUE(absl::StrContains(job.status().message(), "spec.calib_digest")) << job.status();
  EXPECT_EQ(Metric("ompq_jobs_submitted_total"), 0);
}

TEST_F(JobManagerTest, RequestIdReturnsTheFirstJob) {
  v1::CreateJobRequest request = Request();
  request.set_request_id("ci-run-42");
  const std::string first = Create(request);
  const std::string second = Create(request);
  EXPECT_EQ(first, second);
  EXPECT_EQ(Metric("ompq_jobs_submitted_total"), 1);
  auto list = manager_->ListJobs(v1::ListJobsRequest());
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->jobs_size(), 1);
}

TEST_F(JobManagerTest, QueueFullIsResourceExhausted) {
  JobManagerOptions options;
  options.max_queued_jobs = 1;
  MakeManager(options);
  Create();
  auto refused = manager_->CreateJob(Request());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
}

TEST_F(JobManagerTest, LeaseTakesOldestQueuedJob) {
  const std::string first = Create();
  clock_.Advance(absl::Seconds(5));
  const std::string second = Create();
  LeaseGrant grant = Lease("worker-a");
  EXPECT_EQ(grant.job.name(), first);
  EXPECT_EQ(grant.job.state(), v1::RUNNING);
  EXPECT_EQ(grant.job.attempt(), 1);
  EXPECT_EQ(grant.job.worker(), "worker-a");
  EXPECT_EQ(grant.lease_duration, kLease);
  EXPECT_GE(grant.lease_id.size(), 16u);
  EXPECT_EQ(FromProtoTimestamp(grant.job.start_time()), clock_.Now());
  // The first job waited 5 s in the queue.
  EXPECT_EQ(Metric("ompq_job_queue_wait_seconds"), 1);
  EXPECT_DOUBLE_EQ(testing::HistogramSum(*metrics_.registry(), "ompq_job_queue_wait_seconds"), 5.0);
  EXPECT_EQ(Lease("worker-b").job.name(), second);
  auto none = manager_->TryLeaseJob("worker-c", "cpu");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
}

TEST_F(JobManagerTest, HeartbeatRecordsProgressAndExtendsLease) {
  const std::string name = Create();
  LeaseGrant grant = Lease();
  clock_.Advance(absl::Seconds(50));
  auto beat = Beat(grant, v1::ANALYZING, 12.5);
  ASSERT_TRUE(beat.ok()) << beat.status();
  EXPECT_FALSE(beat->cancel_requested());
  EXPECT_EQ(FromProtoDuration(beat->lease_duration()), kLease);
  JobRecord record = Get(name);
  EXPECT_EQ(record.job.stage(), v1::ANALYZING);
  EXPECT_DOUBLE_EQ(record.job.progress(), 12.5);
  EXPECT_EQ(record.job.message(), "working");
  // 100 s after the lease, 50 s after the heartbeat: still held.
  clock_.Advance(absl::Seconds(50));
  EXPECT_EQ(Reap(), 0);
  EXPECT_EQ(Get(name).job.state(), v1::RUNNING);
  // A stage change ends the previous stage's timer.
  clock_.Advance(absl::Seconds(3));
  ASSERT_TRUE(Beat(grant, v1::SOLVING, 50).ok());
  EXPECT_EQ(Metric("ompq_job_stage_seconds", {{"stage", "ANALYZING"}}), 1);
  EXPECT_DOUBLE_EQ(testing::HistogramSum(*metrics_.registry(), "ompq_job_stage_seconds",
                                         {{"stage", "ANALYZING"}}),
                   53.0);
}

TEST_F(JobManagerTest, LapsedLeaseRequeuesUntilMaxAttemptsThenWorkerLost) {
  const std::string name = Create();
  for (int attempt = 1; attempt <= 3; ++attempt) {
    LeaseGrant grant = Lease();
    EXPECT_EQ(grant.job.attempt(), attempt);
    clock_.Advance(kLease - absl::Seconds(1));
    EXPECT_EQ(Reap(), 0) << "lease still valid";
    clock_.Advance(absl::Seconds(1));
    EXPECT_EQ(Reap(), 1);
    JobRecord record = Get(name);
    if (attempt < 3) {
      EXPECT_EQ(record.job.state(), v1::QUEUED) << "attempt " << attempt;
      EXPECT_EQ(record.job.attempt(), attempt);
      EXPECT_FALSE(record.leased());
      EXPECT_EQ(record.job.worker(), "");
    } else {
      EXPECT_EQ(record.job.state(), v1::FAILED);
      EXPECT_EQ(record.job.error().reason(), "WORKER_LOST");
      EXPECT_TRUE(record.job.has_end_time());
    }
  }
  EXPECT_EQ(Metric("ompq_leases_expired_total"), 3);
  EXPECT_EQ(Metric("ompq_jobs_finished_total", {{"state", "FAILED"}, {"reason", "WORKER_LOST"}}),
            1);
  // Nothing is left to lease or expire.
  auto none = manager_->TryLeaseJob("w", "cpu");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  clock_.Advance(absl::Hours(100));
  EXPECT_EQ(Reap(), 0);
}

TEST_F(JobManagerTest, StaleLeaseIsAbortedAndChangesNothing) {
  const std::string name = Create();
  LeaseGrant old_grant = Lease("worker-a");
  clock_.Advance(kLease);
  ASSERT_EQ(Reap(), 1);
  LeaseGrant new_grant = Lease("worker-b");
  ASSERT_TRUE(Beat(new_grant, v1::ORTHOGONALITY, 30).ok());
  const JobRecord before = Get(name);

  auto beat = Beat(old_grant, v1::EXPORTING, 99);
  EXPECT_EQ(beat.status().code(), absl::StatusCode::kAborted);
  v1::CompleteJobRequest complete;
  complete.set_lease_id(old_grant.lease_id);
  complete.set_job(name);
  EXPECT_EQ(manager_->CompleteJob(complete).status().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(Fail(old_grant, false).status().code(), absl::StatusCode::kAborted);

  const JobRecord after = Get(name);
  EXPECT_EQ(after.version, before.version);
  EXPECT_EQ(after.job.state(), v1::RUNNING);
  EXPECT_EQ(after.job.stage(), v1::ORTHOGONALITY);
  EXPECT_EQ(after.job.worker(), "worker-b");
  EXPECT_EQ(after.lease_id, new_grant.lease_id);
}

TEST_F(JobManagerTest, WorkerCallsNeedALeaseId) {
  Create();
  LeaseGrant grant = Lease();
  grant.lease_id = "";
  EXPECT_EQ(Beat(grant, v1::ANALYZING, 1).status().code(), absl::StatusCode::kInvalidArgument);
  grant.lease_id = "made-up";
  EXPECT_EQ(Beat(grant, v1::ANALYZING, 1).status().code(), absl::StatusCode::kAborted);
}

TEST_F(JobManagerTest, CancelQueuedJobAtOnce) {
  const std::string name = Create();
  auto job = manager_->CancelJob(name);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->state(), v1::CANCELLED);
  EXPECT_EQ(job->error().reason(), "CANCELLED");
  EXPECT_TRUE(job->has_end_time());
  auto none = manager_->TryLeaseJob("w", "cpu");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value()) << "a cancelled job must not be leased";
}

TEST_F(JobManagerTest, CancelRunningJobReachesWorkerAtHeartbeat) {
  const std::string name = Create();
  LeaseGrant grant = Lease();
  auto cancelling = manager_->CancelJob(name);
  ASSERT_TRUE(cancelling.ok());
  EXPECT_EQ(cancelling->state(), v1::CANCELLING);
  // Cancelling twice is harmless.
  EXPECT_EQ(manager_->CancelJob(name)->state(), v1::CANCELLING);
  auto beat = Beat(grant, v1::SOLVING, 40);
  ASSERT_TRUE(beat.ok());
  EXPECT_TRUE(beat->cancel_requested());
  // Whatever the worker reports, a cancelled job ends CANCELLED.
  auto done = Fail(grant, /*retryable=*/true);
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->state(), v1::CANCELLED);
  EXPECT_EQ(Get(name).job.state(), v1::CANCELLED);
}

TEST_F(JobManagerTest, CancellingJobWhoseWorkerVanishedEndsCancelled) {
  const std::string name = Create();
  Lease();
  ASSERT_TRUE(manager_->CancelJob(name).ok());
  clock_.Advance(kLease);
  EXPECT_EQ(Reap(), 1);
  EXPECT_EQ(Get(name).job.state(), v1::CANCELLED);
}

TEST_F(JobManagerTest, CancelTerminalJobIsFailedPrecondition) {
  const std::string name = Create();
  ASSERT_TRUE(manager_->CancelJob(name).ok());
  const JobRecord before = Get(name);
  auto again = manager_->CancelJob(name);
  EXPECT_EQ(again.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(again.status().message(), "CANCELLED"));
  EXPECT_EQ(Get(name).version, before.version);
}

TEST_F(JobManagerTest, JobPastItsTimeoutFailsWithDeadlineExceeded) {
  v1::CreateJobRequest request = Request();
  request.mutable_spec()->mutable_timeout()->set_seconds(30);
  const std::string name = Create(request);
  LeaseGrant grant = Lease();
  clock_.Advance(absl::Seconds(29));
  ASSERT_TRUE(Beat(grant, v1::SOLVING, 10).ok());
  EXPECT_EQ(Reap(), 0);
  clock_.Advance(absl::Seconds(1));
  EXPECT_EQ(Reap(), 1);
  JobRecord record = Get(name);
  EXPECT_EQ(record.job.state(), v1::FAILED);
  EXPECT_EQ(record.job.error().reason(), "DEADLINE_EXCEEDED");
  EXPECT_EQ(record.job.error().code(), "DEADLINE_EXCEEDED");
  // The worker learns at its next heartbeat.
  EXPECT_EQ(Beat(grant, v1::SOLVING, 20).status().code(), absl::StatusCode::kAborted);
}

TEST_F(JobManagerTest, HeartbeatPastTimeoutFailsTheJobItself) {
  JobManagerOptions options;
  options.default_job_timeout = absl::Minutes(10);  // The spec sets none.
  MakeManager(options);
  const std::string name = Create();
  LeaseGrant grant = Lease();
  for (int i = 0; i < 10; ++i) {
    clock_.Advance(absl::Seconds(59));
    ASSERT_TRUE(Beat(grant, v1::FINETUNING, i).ok()) << i;
  }
  clock_.Advance(absl::Seconds(10));  // 600 s since the lease.
  EXPECT_EQ(Beat(grant, v1::FINETUNING, 99).status().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(Get(name).job.state(), v1::FAILED);
  EXPECT_EQ(Get(name).job.error().reason(), "DEADLINE_EXCEEDED");
}

TEST_F(JobManagerTest, SuccessStoresResultAndArtifacts) {
  const std::string name = Create();
  LeaseGrant grant = Lease();
  const std::string report = PutBlob("{\"job\": 1}");
  v1::CompleteJobRequest request;
  request.set_lease_id(grant.lease_id);
  request.set_job(name);
  request.mutable_result()->set_size_bytes(1234);
  auto* artifact = request.add_artifacts();
  artifact->set_name("report.json");
  artifact->set_digest(report);
  artifact->set_size_bytes(10);
  clock_.Advance(absl::Seconds(7));
  auto job = manager_->CompleteJob(request);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->state(), v1::SUCCEEDED);
  EXPECT_EQ(job->result().size_bytes(), 1234);
  ASSERT_EQ(job->artifacts_size(), 1);
  EXPECT_EQ(job->artifacts(0).digest(), report);
  EXPECT_EQ(job->progress(), 100);
  EXPECT_FALSE(Get(name).leased());
  EXPECT_EQ(Metric("ompq_jobs_finished_total", {{"state", "SUCCEEDED"}, {"reason", ""}}), 1);
  EXPECT_DOUBLE_EQ(testing::HistogramSum(*metrics_.registry(), "ompq_job_duration_seconds"), 7.0);
  // The lease is spent: a second completion is stale.
  EXPECT_EQ(manager_->CompleteJob(request).status().code(), absl::StatusCode::kAborted);
}

TEST_F(JobManagerTest, SuccessWithMissingArtifactChangesNothing) {
  const std::string name = Create();
  LeaseGrant grant = Lease();
  v1::CompleteJobRequest request;
  request.set_lease_id(grant.lease_id);
  request.set_job(name);
  const std::string missing = DigestOf("not uploaded");
  auto* artifact = request.add_artifacts();
  artifact->set_name("report.json");
  artifact->set_digest(missing);
  auto job = manager_->CompleteJob(request);
  EXPECT_EQ(job.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(job.status().message(), missing));
  EXPECT_EQ(Get(name).job.state(), v1::RUNNING);

  artifact->set_digest(PutBlob("x"));
  artifact->set_size_bytes(1);
  artifact->set_name("../../etc/passwd");
  EXPECT_EQ(manager_->CompleteJob(request).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Get(name).job.state(), v1::RUNNING);
}

TEST_F(JobManagerTest, RetryableFailureRequeuesWhileAttemptsRemain) {
  const std::string name = Create();
  for (int attempt = 1; attempt <= 3; ++attempt) {
    LeaseGrant grant = Lease();
    auto job = Fail(grant, /*retryable=*/true);
    ASSERT_TRUE(job.ok()) << job.status();
    EXPECT_EQ(job->state(), attempt < 3 ? v1::QUEUED : v1::FAILED) << attempt;
  }
  JobRecord record = Get(name);
  EXPECT_EQ(record.job.error().code(), "INVALID_ARGUMENT");
  EXPECT_EQ(record.job.error().reason(), "INPUT_MISMATCH");
  EXPECT_EQ(record.job.error().message(), "expected 3 channels, got 1");
}

TEST_F(JobManagerTest, PermanentFailureFailsAtOnce) {
  const std::string name = Create();
  auto job = Fail(Lease(), /*retryable=*/false);
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->state(), v1::FAILED);
  EXPECT_EQ(job->attempt(), 1);
  EXPECT_EQ(Metric("ompq_jobs_finished_total", {{"state", "FAILED"}, {"reason", "INPUT_MISMATCH"}}),
            1);
}

TEST_F(JobManagerTest, DeleteOnlyTerminalJobs) {
  const std::string name = Create();
  absl::Status live = manager_->DeleteJob(name);
  EXPECT_EQ(live.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(live.message(), "QUEUED"));
  ASSERT_TRUE(manager_->CancelJob(name).ok());
  EXPECT_TRUE(manager_->DeleteJob(name).ok());
  EXPECT_EQ(manager_->GetJob(name).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(manager_->DeleteJob(name).code(), absl::StatusCode::kNotFound);
}

TEST_F(JobManagerTest, UnknownAndMalformedNames) {
  EXPECT_EQ(manager_->GetJob("jobs/unknown").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(manager_->CancelJob("jobs/unknown").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(manager_->GetJob("unknown").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(JobManagerTest, ShutdownRequeuesOnlyOurWorkersJobs) {
  const std::string ours = Create();
  const std::string theirs = Create();
  Lease("local-0");
  Lease("remote-host-1");
  auto requeued = manager_->RequeueJobsOfWorkers({"local-0", "local-1"});
  ASSERT_TRUE(requeued.ok());
  EXPECT_EQ(*requeued, 1);
  EXPECT_EQ(Get(ours).job.state(), v1::QUEUED);
  EXPECT_EQ(Get(theirs).job.state(), v1::RUNNING);
}

TEST_F(JobManagerTest, StopLeasingHandsOutNothing) {
  Create();
  manager_->StopLeasing();
  auto none = manager_->TryLeaseJob("w", "cpu");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
}

TEST_F(JobManagerTest, EveryChangeIsPublished) {
  const std::string name = Create();
  RecordingWatcher watcher;
  manager_->notifier().Subscribe(name, &watcher);
  int wakeups = 0;
  manager_->notifier().AddQueuedListener([&wakeups] { ++wakeups; });
  LeaseGrant grant = Lease();
  ASSERT_TRUE(Beat(grant, v1::ANALYZING, 5).ok());
  clock_.Advance(kLease);
  ASSERT_EQ(Reap(), 1);  // Back to QUEUED: wakes lease waiters.
  EXPECT_EQ(wakeups, 1);
  ASSERT_TRUE(manager_->CancelJob(name).ok());
  manager_->notifier().Unsubscribe(name, &watcher);
  EXPECT_EQ(watcher.states,
            (std::vector<v1::JobState>{v1::RUNNING, v1::RUNNING, v1::QUEUED, v1::CANCELLED}));
  manager_->notifier().Shutdown();
  EXPECT_FALSE(watcher.shut_down) << "unsubscribed watchers are not called";
}

TEST_F(JobManagerTest, RefreshMetricsCountsJobsAndWorkers) {
  Create();
  Create();
  Lease();
  ASSERT_TRUE(manager_->RefreshMetrics(/*idle_workers=*/3).ok());
  EXPECT_EQ(Metric("ompq_jobs", {{"state", "QUEUED"}}), 1);
  EXPECT_EQ(Metric("ompq_jobs", {{"state", "RUNNING"}}), 1);
  EXPECT_EQ(Metric("ompq_jobs", {{"state", "FAILED"}}), 0);
  EXPECT_EQ(Metric("ompq_workers", {{"state", "idle"}}), 3);
  EXPECT_EQ(Metric("ompq_workers", {{"state", "busy"}}), 1);
}

}  // namespace
}  // namespace ompq
