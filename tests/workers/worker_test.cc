// Tests of the worker loop and heartbeat (workers/worker.h, worker_heartbeat.h) against
// a fake WorkerService and BlobService on a real loopback port.
#include "workers/worker.h"

#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "workers/worker_heartbeat.h"

namespace ompq::worker {
namespace {

namespace fs = std::filesystem;

// LeaseJob hands out `job_to_lease` once, then long-polls until cancelled; Heartbeat and
// CompleteJob record what they got and answer as the test says.
class FakeWorkerService : public v1::WorkerService::Service {
 public:
  grpc::Status LeaseJob(grpc::ServerContext* context, const v1::LeaseJobRequest* req,
                        v1::LeaseJobResponse* resp) override {
    leases.fetch_add(1);
    {
      absl::MutexLock lock(&mu);
      worker_id = req->worker_id();
      if (job_to_lease.has_value()) {
        *resp->mutable_job() = *job_to_lease;
        job_to_lease.reset();
        resp->set_lease_id("lease-1");
        resp->mutable_lease_duration()->set_seconds(3);
        return grpc::Status::OK;
      }
    }
    while (!context->IsCancelled()) absl::SleepFor(absl::Milliseconds(10));
    return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
  }
  grpc::Status Heartbeat(grpc::ServerContext*, const v1::HeartbeatRequest* req,
                         v1::HeartbeatResponse* resp) override {
    absl::MutexLock lock(&mu);
    heartbeats.push_back(*req);
    if (heartbeat_answer.ok()) resp->set_cancel_requested(cancel);
    return heartbeat_answer;
  }
  grpc::Status CompleteJob(grpc::ServerContext*, const v1::CompleteJobRequest* req,
                           v1::CompleteJobResponse* resp) override {
    absl::MutexLock lock(&mu);
    completions.push_back(*req);
    resp->mutable_job()->set_name(req->job());
    resp->mutable_job()->set_state(v1::FAILED);
    return grpc::Status::OK;
  }

  absl::Mutex mu;
  std::optional<v1::Job> job_to_lease ABSL_GUARDED_BY(mu);
  std::string worker_id ABSL_GUARDED_BY(mu);
  std::vector<v1::HeartbeatRequest> heartbeats ABSL_GUARDED_BY(mu);
  std::vector<v1::CompleteJobRequest> completions ABSL_GUARDED_BY(mu);
  bool cancel ABSL_GUARDED_BY(mu) = false;
  grpc::Status heartbeat_answer ABSL_GUARDED_BY(mu) = grpc::Status::OK;
  std::atomic<int> leases{0};
};

// Holds no blobs: every Read is NOT_FOUND.
class EmptyBlobService : public v1::BlobService::Service {
  grpc::Status Read(grpc::ServerContext*, const v1::ReadBlobRequest* req,
                    grpc::ServerWriter<v1::ReadBlobResponse>*) override {
    return grpc::Status(grpc::StatusCode::NOT_FOUND, "blob " + req->digest() + " not found");
  }
};

class WorkerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&service_);
    builder.RegisterService(&blobs_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    options_.connection.server = "127.0.0.1:" + std::to_string(port_);
    options_.worker_id = "test-worker";
    options_.work_dir =
        (fs::temp_directory_path() / ("ompq_worker_test_" + std::to_string(::getpid()))).string();
    options_.heartbeat.max_interval = absl::Milliseconds(100);
  }
  void TearDown() override {
    server_->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
    fs::remove_all(options_.work_dir);
  }

  int port_ = 0;
  FakeWorkerService service_;
  EmptyBlobService blobs_;
  std::unique_ptr<grpc::Server> server_;
  WorkerOptions options_;
};

TEST_F(WorkerTest, StopEndsTheLongPollPromptly) {
  auto worker = Worker::Create(options_);
  ASSERT_TRUE(worker.ok()) << worker.status();
  absl::Status result;
  std::thread runner([&] { result = (*worker)->Run(); });
  while (service_.leases.load() == 0) absl::SleepFor(absl::Milliseconds(10));
  absl::Time stop = absl::Now();
  (*worker)->Stop();
  runner.join();
  EXPECT_TRUE(result.ok()) << result;
  EXPECT_LT(absl::Now() - stop, absl::Seconds(2));
  absl::MutexLock lock(&service_.mu);
  EXPECT_EQ(service_.worker_id, "test-worker");
}

TEST_F(WorkerTest, JobWithMissingInputFailsAndWorkerCarriesOn) {
  {
    absl::MutexLock lock(&service_.mu);
    v1::Job job;
    job.set_name("jobs/j1");
    job.mutable_spec()->set_model_digest("sha256:" + std::string(64, 'a'));
    job.mutable_spec()->set_calib_digest("sha256:" + std::string(64, 'b'));
    service_.job_to_lease = job;
  }
  auto worker = Worker::Create(options_);
  ASSERT_TRUE(worker.ok());
  std::thread runner([&] { ASSERT_TRUE((*worker)->Run().ok()); });
  // After the job, the worker long-polls again.
  while (service_.leases.load() < 2) absl::SleepFor(absl::Milliseconds(10));
  (*worker)->Stop();
  runner.join();
  absl::MutexLock lock(&service_.mu);
  ASSERT_EQ(service_.completions.size(), 1u);
  const v1::CompleteJobRequest& done = service_.completions[0];
  EXPECT_EQ(done.lease_id(), "lease-1");
  EXPECT_EQ(done.job(), "jobs/j1");
  EXPECT_EQ(done.error().code(), "NOT_FOUND");
  EXPECT_NE(done.error().message().find(std::string(64, 'a')), std::string::npos);
  EXPECT_FALSE(done.retryable());
  // The job folder is cleaned up.
  EXPECT_FALSE(fs::exists(fs::path(options_.work_dir) / "jobs" / "j1"));
}

TEST(WorkerUnreachable, BacksOffAndStops) {
  WorkerOptions options;
  options.connection.server = "127.0.0.1:1";
  options.worker_id = "w";
  options.work_dir = "/tmp/unused";
  options.initial_backoff = absl::Milliseconds(50);
  options.max_backoff = absl::Seconds(30);
  auto worker = Worker::Create(options);
  ASSERT_TRUE(worker.ok());
  std::thread runner([&] { EXPECT_TRUE((*worker)->Run().ok()); });
  absl::SleepFor(absl::Milliseconds(800));
  absl::Time stop = absl::Now();
  (*worker)->Stop();  // Must interrupt the backoff sleep too.
  runner.join();
  EXPECT_LT(absl::Now() - stop, absl::Seconds(2));
}

TEST_F(WorkerTest, HeartbeatReportsProgressAndSeesCancel) {
  auto channel = rpc::MakeChannel(options_.connection);
  ASSERT_TRUE(channel.ok());
  auto stub = v1::WorkerService::NewStub(*channel);
  Heartbeat heartbeat(*stub, options_.connection, "w", "lease-1", "jobs/h", absl::Seconds(3),
                      options_.heartbeat);
  ProgressReport report;
  report.stage = v1::SOLVING;
  report.percent = 70;
  report.message = "solving";
  heartbeat.Report(report);
  heartbeat.Start();
  while (true) {
    absl::MutexLock lock(&service_.mu);
    if (!service_.heartbeats.empty()) break;
    service_.mu.AwaitWithTimeout(absl::Condition(
                                     +[](FakeWorkerService* s) {
                                       s->mu.AssertHeld();
                                       return !s->heartbeats.empty();
                                     },
                                     &service_),
                                 absl::Seconds(5));
  }
  EXPECT_FALSE(heartbeat.cancel_requested());
  {
    absl::MutexLock lock(&service_.mu);
    const v1::HeartbeatRequest& beat = service_.heartbeats.front();
    EXPECT_EQ(beat.lease_id(), "lease-1");
    EXPECT_EQ(beat.job(), "jobs/h");
    EXPECT_EQ(beat.stage(), v1::SOLVING);
    EXPECT_DOUBLE_EQ(beat.progress(), 70);
    EXPECT_EQ(beat.message(), "solving");
    service_.cancel = true;
  }
  absl::Time deadline = absl::Now() + absl::Seconds(5);
  while (!heartbeat.cancel_requested() && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_TRUE(heartbeat.cancel_requested());
  EXPECT_FALSE(heartbeat.lease_lost());
  heartbeat.Stop();
}

TEST_F(WorkerTest, HeartbeatNoticesLostLease) {
  {
    absl::MutexLock lock(&service_.mu);
    service_.heartbeat_answer = grpc::Status(grpc::StatusCode::ABORTED, "stale lease");
  }
  auto channel = rpc::MakeChannel(options_.connection);
  ASSERT_TRUE(channel.ok());
  auto stub = v1::WorkerService::NewStub(*channel);
  Heartbeat heartbeat(*stub, options_.connection, "w", "old", "jobs/h", absl::Seconds(3),
                      options_.heartbeat);
  heartbeat.Start();
  absl::Time deadline = absl::Now() + absl::Seconds(5);
  while (!heartbeat.lease_lost() && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_TRUE(heartbeat.lease_lost());
  EXPECT_FALSE(heartbeat.cancel_requested());
}

}  // namespace
}  // namespace ompq::worker
