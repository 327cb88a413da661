#include "client/client.h"

#include <algorithm>
#include <optional>
#include <thread>
#include <utility>

#include "absl/synchronization/notification.h"
#include "common/grpc_status.h"
#include "common/status_macros.h"
#include "rpc/job_state.h"

namespace ompq::client {
namespace {

// Read() on a stream blocks until the server sends; a stop request (Ctrl-C) can only
// interrupt it through TryCancel() from another thread. This helper is that thread.
class StopWatcher {
 public:
  StopWatcher(grpc::ClientContext& context, const std::atomic<bool>* stop) {
    if (stop == nullptr) return;
    thread_ = std::thread([this, &context, stop] {
      while (!done_.WaitForNotificationWithTimeout(absl::Milliseconds(100))) {
        if (stop->load()) {
          context.TryCancel();
          return;
        }
      }
    });
  }
  ~StopWatcher() {
    done_.Notify();
    if (thread_.joinable()) thread_.join();
  }

 private:
  absl::Notification done_;
  std::thread thread_;
};

bool StopRequested(const WatchOptions& options) {
  return options.stop != nullptr && options.stop->load();
}

// Sleeps up to `duration`, waking early on a stop request or at the deadline.
void SleepUnlessStopped(absl::Duration duration, const WatchOptions& options) {
  absl::Time until = std::min(absl::Now() + duration, options.deadline);
  while (absl::Now() < until && !StopRequested(options)) {
    absl::SleepFor(std::min(absl::Milliseconds(100), until - absl::Now()));
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(const ClientOptions& options) {
  ASSIGN_OR_RETURN(auto channel, rpc::MakeChannel(options.connection));
  return std::make_unique<Client>(std::move(channel), options);
}

Client::Client(const std::shared_ptr<grpc::ChannelInterface>& channel, ClientOptions options)
    : options_(std::move(options)),
      jobs_(v1::QuantizationService::NewStub(channel)),
      blobs_(v1::BlobService::NewStub(channel)),
      health_(grpc::health::v1::Health::NewStub(channel)) {}

absl::StatusOr<rpc::UploadResult> Client::UploadFile(const std::string& path) {
  return rpc::UploadFile(*blobs_, options_.connection, options_.transfer, path);
}

absl::Status Client::Download(const std::string& digest, int64_t size_hint,
                              const std::string& path) {
  return rpc::DownloadBlob(*blobs_, options_.connection, options_.transfer, digest, size_hint,
                           path);
}

absl::StatusOr<v1::Job> Client::CreateJob(const v1::JobSpec& spec, const std::string& request_id) {
  grpc::ClientContext context;
  rpc::PrepareContext(context, options_.connection, options_.rpc_timeout);
  v1::CreateJobRequest request;
  *request.mutable_spec() = spec;
  request.set_request_id(request_id);
  v1::Job job;
  RETURN_IF_ERROR(FromGrpcStatus(jobs_->CreateJob(&context, request, &job)));
  return job;
}

absl::StatusOr<v1::Job> Client::GetJob(const std::string& name) {
  grpc::ClientContext context;
  rpc::PrepareContext(context, options_.connection, options_.rpc_timeout);
  v1::GetJobRequest request;
  request.set_name(name);
  v1::Job job;
  RETURN_IF_ERROR(FromGrpcStatus(jobs_->GetJob(&context, request, &job)));
  return job;
}

absl::StatusOr<v1::ListJobsResponse> Client::ListJobs(const v1::ListJobsRequest& request) {
  grpc::ClientContext context;
  rpc::PrepareContext(context, options_.connection, options_.rpc_timeout);
  v1::ListJobsResponse response;
  RETURN_IF_ERROR(FromGrpcStatus(jobs_->ListJobs(&context, request, &response)));
  return response;
}

absl::StatusOr<v1::Job> Client::CancelJob(const std::string& name) {
  grpc::ClientContext context;
  rpc::PrepareContext(context, options_.connection, options_.rpc_timeout);
  v1::CancelJobRequest request;
  request.set_name(name);
  v1::Job job;
  RETURN_IF_ERROR(FromGrpcStatus(jobs_->CancelJob(&context, request, &job)));
  return job;
}

absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> Client::CheckHealth(
    const std::string& service, absl::Duration timeout) {
  grpc::ClientContext context;
  rpc::PrepareContext(context, options_.connection, timeout);
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  RETURN_IF_ERROR(FromGrpcStatus(health_->Check(&context, request, &response)));
  return response.status();
}

absl::StatusOr<WatchEnd> Client::Watch(const std::string& name, const WatchOptions& options,
                                       const std::function<bool(const v1::Job&)>& on_update) {
  bool ever_connected = false;
  absl::Time last_contact = absl::Now();
  absl::Duration backoff = absl::Milliseconds(200);
  while (true) {
    if (StopRequested(options)) return WatchEnd::kStopped;
    if (absl::Now() >= options.deadline) return WatchEnd::kTimedOut;

    grpc::ClientContext context;
    rpc::PrepareContextUntil(context, options_.connection,
                             std::min(options.deadline, absl::Now() + options.stream_lifetime));
    v1::WatchJobRequest request;
    request.set_name(name);
    bool got_update = false;
    std::optional<WatchEnd> end;
    grpc::Status status;
    {
      StopWatcher stop_watcher(context, options.stop);
      auto reader = jobs_->WatchJob(&context, request);
      v1::Job job;
      while (!end.has_value() && reader->Read(&job)) {
        got_update = true;
        ever_connected = true;
        last_contact = absl::Now();
        backoff = absl::Milliseconds(200);
        if (!on_update(job)) {
          end = WatchEnd::kStopped;
        } else if (IsTerminal(job.state())) {
          end = WatchEnd::kTerminal;
        }
      }
      // Finish() would wait for the server to close the stream; we are done with it.
      if (end.has_value()) context.TryCancel();
      status = reader->Finish();
    }
    if (end.has_value()) return *end;
    if (StopRequested(options)) return WatchEnd::kStopped;
    if (absl::Now() >= options.deadline) return WatchEnd::kTimedOut;

    switch (status.error_code()) {
      case grpc::StatusCode::OK:
        // The server closed the stream before a terminal state (e.g. while draining):
        // reconnect, pausing when it sent nothing so a misbehaving server is not hammered.
        if (!got_update) {
          SleepUnlessStopped(backoff, options);
          backoff = std::min(backoff * 2, absl::Seconds(5));
        }
        break;
      case grpc::StatusCode::DEADLINE_EXCEEDED:
        // The stream's own lifetime ended; only a silent stream means a stuck server.
        if (!got_update) return FromGrpcStatus(status);
        break;
      case grpc::StatusCode::UNAVAILABLE:
        // A server we reached before may be restarting: retry a while with backoff.
        if (!ever_connected || absl::Now() - last_contact > options.reconnect_window) {
          return FromGrpcStatus(status);
        }
        SleepUnlessStopped(backoff, options);
        backoff = std::min(backoff * 2, absl::Seconds(5));
        break;
      default:
        return FromGrpcStatus(status);
    }
  }
}

}  // namespace ompq::client
