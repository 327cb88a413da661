#include "server/quantization_service.h"

#include <deque>
#include <optional>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "common/grpc_status.h"
#include "rpc/job_state.h"
#include "server/job_notifier.h"

namespace ompq {
namespace {

// Answers a unary call from a StatusOr.
template <typename T>
grpc::ServerUnaryReactor* Reply(grpc::CallbackServerContext* context, absl::StatusOr<T> result,
                                T* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const grpc::Status status = ToGrpcStatus(result.status());
  if (result.ok()) {
    *response = std::move(result).value();
  }
  reactor->Finish(status);
  return reactor;
}

// Streams one job: its current state, then every change, until a terminal state.
//
// Changes arrive from JobNotifier on whatever thread wrote the job; they are queued here
// and written one at a time (gRPC allows one write in flight). While a write is in flight,
// consecutive changes within one state are coalesced to the newest, so a slow client gets
// every state transition but not every progress tick.
class WatchReactor final : public grpc::ServerWriteReactor<v1::Job>, public JobWatcher {
 public:
  WatchReactor(JobManager* manager, const std::string& name, const std::string& tenant)
      : notifier_(&manager->notifier()), name_(name) {
    // Subscribe before reading, so no change between the read and the subscription is
    // lost; versions drop whatever arrives twice.
    notifier_->Subscribe(name_, this);
    absl::StatusOr<JobRecord> record = manager->GetJob(name_, tenant);
    if (!record.ok()) {
      FinishOnce(ToGrpcStatus(record.status()));
      return;
    }
    OnJobChanged(*record);
  }

  void OnJobChanged(const JobRecord& record) override {
    {
      absl::MutexLock lock(&mu_);
      if (done_ || terminal_queued_ || record.version <= last_version_) {
        return;
      }
      last_version_ = record.version;
      terminal_queued_ = IsTerminal(record.job.state());
      if (!pending_.empty() && pending_.back().state() == record.job.state()) {
        pending_.back() = record.job;
      } else {
        pending_.push_back(record.job);
      }
      if (writing_) {
        return;
      }
      writing_ = true;
      current_ = std::move(pending_.front());
      pending_.pop_front();
    }
    StartWrite(&current_);
  }

  void OnNotifierShutdown() override {
    grpc::Status status(grpc::StatusCode::UNAVAILABLE,
                        "the server is shutting down; watch the job again");
    {
      absl::MutexLock lock(&mu_);
      shutdown_status_ = status;
      if (writing_) {
        return;  // OnWriteDone() finishes after the write in flight.
      }
    }
    FinishOnce(status);
  }

  void OnWriteDone(bool ok) override {
    std::optional<grpc::Status> finish;
    {
      absl::MutexLock lock(&mu_);
      if (!ok) {
        finish = grpc::Status(grpc::StatusCode::CANCELLED, "the watcher went away");
      } else if (IsTerminal(current_.state())) {
        finish = grpc::Status::OK;
      } else if (!pending_.empty()) {
        current_ = std::move(pending_.front());
        pending_.pop_front();
      } else {
        writing_ = false;
        finish = shutdown_status_;
        if (!finish.has_value()) {
          return;
        }
      }
    }
    if (finish.has_value()) {
      FinishOnce(*finish);
    } else {
      StartWrite(&current_);
    }
  }

  void OnCancel() override {
    {
      absl::MutexLock lock(&mu_);
      if (writing_) {
        return;  // The write in flight fails; OnWriteDone() finishes.
      }
    }
    FinishOnce(grpc::Status(grpc::StatusCode::CANCELLED, "the watcher went away"));
  }

  void OnDone() override {
    // After this returns the notifier never calls us again, so deletion is safe.
    notifier_->Unsubscribe(name_, this);
    delete this;
  }

 private:
  void FinishOnce(const grpc::Status& status) {
    {
      absl::MutexLock lock(&mu_);
      if (done_) {
        return;
      }
      done_ = true;
    }
    Finish(status);
  }

  JobNotifier* const notifier_;
  const std::string name_;
  absl::Mutex mu_;
  std::deque<v1::Job> pending_ ABSL_GUARDED_BY(mu_);  // Changes not yet written.
  v1::Job current_;  // The write in flight; owned by whoever set writing_.
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;             // Finish() was called.
  bool terminal_queued_ ABSL_GUARDED_BY(mu_) = false;  // Nothing follows a terminal state.
  int64_t last_version_ ABSL_GUARDED_BY(mu_) = 0;
  std::optional<grpc::Status> shutdown_status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

// Every handler starts by resolving the caller (auth.h); a tenant sees only its own jobs.

grpc::ServerUnaryReactor* QuantizationServiceImpl::CreateJob(grpc::CallbackServerContext* context,
                                                             const v1::CreateJobRequest* request,
                                                             v1::Job* response) {
  absl::StatusOr<Principal> caller = auth_->Authenticate(*context, Role::kClient);
  if (!caller.ok()) {
    return Reply<v1::Job>(context, caller.status(), response);
  }
  return Reply(context, manager_->CreateJob(*request, caller->tenant), response);
}

grpc::ServerUnaryReactor* QuantizationServiceImpl::GetJob(grpc::CallbackServerContext* context,
                                                          const v1::GetJobRequest* request,
                                                          v1::Job* response) {
  absl::StatusOr<Principal> caller = auth_->Authenticate(*context, Role::kClient);
  if (!caller.ok()) {
    return Reply<v1::Job>(context, caller.status(), response);
  }
  absl::StatusOr<JobRecord> record = manager_->GetJob(request->name(), caller->tenant);
  absl::StatusOr<v1::Job> job =
      record.ok() ? absl::StatusOr<v1::Job>(std::move(record->job)) : record.status();
  return Reply(context, std::move(job), response);
}

grpc::ServerUnaryReactor* QuantizationServiceImpl::ListJobs(grpc::CallbackServerContext* context,
                                                            const v1::ListJobsRequest* request,
                                                            v1::ListJobsResponse* response) {
  absl::StatusOr<Principal> caller = auth_->Authenticate(*context, Role::kClient);
  if (!caller.ok()) {
    return Reply<v1::ListJobsResponse>(context, caller.status(), response);
  }
  return Reply(context, manager_->ListJobs(*request, caller->tenant), response);
}

grpc::ServerUnaryReactor* QuantizationServiceImpl::CancelJob(grpc::CallbackServerContext* context,
                                                             const v1::CancelJobRequest* request,
                                                             v1::Job* response) {
  absl::StatusOr<Principal> caller = auth_->Authenticate(*context, Role::kClient);
  if (!caller.ok()) {
    return Reply<v1::Job>(context, caller.status(), response);
  }
  return Reply(context, manager_->CancelJob(request->name(), caller->tenant), response);
}

grpc::ServerUnaryReactor* QuantizationServiceImpl::DeleteJob(
    grpc::CallbackServerContext* context, const v1::DeleteJobRequest* request,
    google::protobuf::Empty* /*response*/) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::StatusOr<Principal> caller = auth_->Authenticate(*context, Role::kClient);
  reactor->Finish(ToGrpcStatus(caller.ok() ? manager_->DeleteJob(request->name(), caller->tenant)
                                           : caller.status()));
  return reactor;
}

grpc::ServerWriteReactor<v1::Job>* QuantizationServiceImpl::WatchJob(
    grpc::CallbackServerContext* context, const v1::WatchJobRequest* request) {
  absl::StatusOr<Principal> caller = auth_->Authenticate(*context, Role::kClient);
  if (!caller.ok()) {
    return new RejectedWriteReactor<v1::Job>(ToGrpcStatus(caller.status()));
  }
  return new WatchReactor(manager_, request->name(), caller->tenant);
}

}  // namespace ompq
