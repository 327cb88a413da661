#include "workers/worker_heartbeat.h"

#include <algorithm>
#include <utility>

#include "common/grpc_status.h"
#include "common/logging.h"
#include "rpc/proto_time.h"

namespace ompq::worker {
namespace {

absl::Duration IntervalFor(absl::Duration lease_duration, const HeartbeatOptions& options) {
  absl::Duration third = lease_duration / 3;
  if (third <= absl::ZeroDuration()) return options.max_interval;
  return std::min(third, options.max_interval);
}

}  // namespace

Heartbeat::Heartbeat(v1::WorkerService::StubInterface& stub, rpc::ConnectionOptions connection,
                     std::string worker_id, std::string lease_id, std::string job_name,
                     absl::Duration lease_duration, HeartbeatOptions options)
    : stub_(stub),
      connection_(std::move(connection)),
      worker_id_(std::move(worker_id)),
      lease_id_(std::move(lease_id)),
      job_name_(std::move(job_name)),
      options_(options),
      interval_(IntervalFor(lease_duration, options)) {}

Heartbeat::~Heartbeat() { Stop(); }

void Heartbeat::Start() {
  thread_ = std::thread([this] { Loop(); });
}

void Heartbeat::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void Heartbeat::Report(ProgressReport report) {
  absl::MutexLock lock(&mu_);
  // A new stage is news worth sending at once (short jobs would otherwise finish before
  // the first beat and watchers would never see their stages).
  if (report.stage != report_.stage || !sent_any_) beat_now_ = true;
  report_ = std::move(report);
}

bool Heartbeat::Due() const {
  mu_.AssertHeld();
  return stopping_ || beat_now_;
}

void Heartbeat::Loop() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      // Wakes early when Stop() is called or a new stage begins.
      mu_.AwaitWithTimeout(absl::Condition(this, &Heartbeat::Due), interval_);
      if (stopping_) return;
      beat_now_ = false;
      sent_any_ = true;
    }
    Beat();
    if (lease_lost()) return;
  }
}

void Heartbeat::Beat() {
  v1::HeartbeatRequest request;
  request.set_lease_id(lease_id_);
  request.set_job(job_name_);
  {
    absl::MutexLock lock(&mu_);
    request.set_stage(report_.stage);
    request.set_progress(report_.percent);
    request.set_eta_seconds(report_.eta_seconds);
    request.set_message(report_.message);
  }
  grpc::ClientContext context;
  rpc::PrepareContext(context, connection_, options_.rpc_timeout);
  v1::HeartbeatResponse response;
  grpc::Status status = stub_.Heartbeat(&context, request, &response);
  switch (status.error_code()) {
    case grpc::StatusCode::OK:
      if (response.cancel_requested() && !cancel_requested_.exchange(true)) {
        OMPQ_LOG(INFO) << "[" << worker_id_ << "] " << job_name_ << ": cancel requested; stopping";
      }
      if (response.has_lease_duration()) {
        absl::MutexLock lock(&mu_);
        interval_ = IntervalFor(FromProtoDuration(response.lease_duration()), options_);
      }
      break;
    case grpc::StatusCode::ABORTED:
    case grpc::StatusCode::NOT_FOUND:
    case grpc::StatusCode::FAILED_PRECONDITION:
      lease_lost_.store(true);
      OMPQ_LOG(WARNING) << "[" << worker_id_ << "] " << job_name_ << ": lease lost ("
                        << StatusCodeName(FromGrpcStatus(status).code()) << ": "
                        << status.error_message() << "); abandoning the job";
      break;
    default:
      // The server may be restarting; the lease survives a few missed beats.
      OMPQ_LOG(WARNING) << "[" << worker_id_ << "] " << job_name_ << ": heartbeat failed ("
                        << status.error_message() << "); retrying";
      break;
  }
}

}  // namespace ompq::worker
