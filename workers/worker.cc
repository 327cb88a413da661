#include "workers/worker.h"

#include <algorithm>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "rpc/proto_time.h"
#include "workers/worker_job.h"

namespace ompq::worker {
namespace {

// Errors a retry cannot fix: the worker is misconfigured, not the server away.
bool IsFatal(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kUnauthenticated:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kUnimplemented:
    case absl::StatusCode::kInvalidArgument:
      return true;
    default:
      return false;
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<Worker>> Worker::Create(WorkerOptions options) {
  if (options.worker_id.empty()) return absl::InvalidArgumentError("--worker-id is empty");
  if (options.work_dir.empty()) return absl::InvalidArgumentError("--work-dir is empty");
  ASSIGN_OR_RETURN(auto channel, rpc::MakeChannel(options.connection));
  auto worker = std::make_unique<Worker>(std::move(options), std::move(channel));
  if (!worker->options_.metrics_listen.empty()) {
    ASSIGN_OR_RETURN(int port, worker->metrics_->Serve(worker->options_.metrics_listen));
    // The bound port, for --metrics-listen HOST:0 (tests, several workers on one host).
    OMPQ_LOG(INFO) << "[" << worker->options_.worker_id << "] metrics on port " << port
                   << " (/metrics)";
  }
  return worker;
}

Worker::Worker(WorkerOptions options, const std::shared_ptr<grpc::ChannelInterface>& channel)
    : options_(std::move(options)),
      workers_(v1::WorkerService::NewStub(channel)),
      blobs_(v1::BlobService::NewStub(channel)),
      metrics_(std::make_unique<WorkerMetrics>(options_.device)) {}

bool Worker::stopping() const {
  absl::MutexLock lock(&mu_);
  return stopping_;
}

bool Worker::ShouldAbandon() const {
  absl::MutexLock lock(&mu_);
  return stopping_ && absl::Now() >= stop_time_ + options_.shutdown_grace;
}

void Worker::Stop() {
  absl::MutexLock lock(&mu_);
  if (stopping_) return;
  stopping_ = true;
  stop_time_ = absl::Now();
  if (active_lease_ != nullptr) active_lease_->TryCancel();
}

void Worker::SleepUnlessStopped(absl::Duration duration) {
  absl::MutexLock lock(&mu_);
  mu_.AwaitWithTimeout(absl::Condition(&stopping_), duration);
}

absl::StatusOr<v1::LeaseJobResponse> Worker::Lease() {
  grpc::ClientContext context;
  rpc::PrepareContext(context, options_.connection, options_.lease_wait + options_.rpc_timeout);
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return absl::CancelledError("stopping");
    active_lease_ = &context;
  }
  v1::LeaseJobRequest request;
  request.set_worker_id(options_.worker_id);
  request.set_device(options_.device);
  // In whole milliseconds, as the worker has always sent it.
  *request.mutable_wait() =
      ToProtoDuration(absl::Trunc(options_.lease_wait, absl::Milliseconds(1)));
  v1::LeaseJobResponse response;
  grpc::Status status = workers_->LeaseJob(&context, request, &response);
  {
    absl::MutexLock lock(&mu_);
    active_lease_ = nullptr;
  }
  RETURN_IF_ERROR(FromGrpcStatus(status));
  return response;
}

absl::Status Worker::Run() {
  OMPQ_LOG(INFO) << "[" << options_.worker_id << "] serving jobs from "
                 << options_.connection.server << " on device " << options_.device;
  JobEnvironment env;
  env.options = &options_;
  env.workers = workers_.get();
  env.blobs = blobs_.get();
  env.metrics = metrics_.get();
  env.abandon = [this] { return ShouldAbandon(); };

  std::mt19937 jitter_source(std::random_device{}());
  absl::Duration backoff = options_.initial_backoff;
  bool connected = true;  // Logs each lost/regained connection once.
  while (!stopping()) {
    auto lease = Lease();
    if (!lease.ok()) {
      if (stopping()) break;
      metrics_->LeaseError();
      if (IsFatal(lease.status())) {
        return absl::Status(lease.status().code(),
                            absl::StrCat("ompq-server at ", options_.connection.server,
                                         " refused this worker: ", lease.status().message()));
      }
      if (connected) {
        OMPQ_LOG(WARNING) << "[" << options_.worker_id << "] cannot reach ompq-server at "
                          << options_.connection.server << " (" << lease.status().message()
                          << "); retrying with backoff";
        connected = false;
      }
      // Jitter spreads the reconnects of many workers after a server restart.
      std::uniform_real_distribution<double> jitter(0.5, 1.0);
      SleepUnlessStopped(backoff * jitter(jitter_source));
      backoff = std::min(backoff * 2, options_.max_backoff);
      continue;
    }
    if (!connected) {
      metrics_->Reconnected();
      OMPQ_LOG(INFO) << "[" << options_.worker_id << "] reconnected to "
                     << options_.connection.server;
    }
    connected = true;
    backoff = options_.initial_backoff;
    const bool got_job = lease->has_job() && !lease->job().name().empty();
    metrics_->LeasePolled(got_job);
    if (!got_job) continue;
    RunLeasedJob(env, *lease);
  }
  OMPQ_LOG(INFO) << "[" << options_.worker_id << "] stopped";
  return absl::OkStatus();
}

}  // namespace ompq::worker
