#include "server/worker_service.h"

#include <algorithm>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/grpc_status.h"
#include "rpc/proto_time.h"

namespace ompq {
namespace {

// Answer a long poll this long before the caller's own deadline, so it gets "no job"
// rather than DEADLINE_EXCEEDED.
constexpr absl::Duration kDeadlineMargin = absl::Milliseconds(200);
constexpr size_t kMaxWorkerIdLength = 256;

// One parked LeaseJob call. Finished exactly once: by the dispatcher's answer, or by
// OnCancel() when Remove() takes it back first.
class LeaseReactor final : public grpc::ServerUnaryReactor {
 public:
  LeaseReactor(LeaseDispatcher* dispatcher, grpc::CallbackServerContext* context,
               const v1::LeaseJobRequest& request, v1::LeaseJobResponse* response,
               absl::Duration max_wait)
      : dispatcher_(dispatcher), response_(response) {
    if (request.worker_id().empty() || request.worker_id().size() > kMaxWorkerIdLength) {
      Finish(ToGrpcStatus(absl::InvalidArgumentError(
          "worker_id is required (at most 256 characters): a stable name such as host/pid")));
      return;
    }
    absl::Duration wait = request.has_wait() ? FromProtoDuration(request.wait()) : max_wait;
    wait = std::clamp(wait, absl::ZeroDuration(), max_wait);
    absl::Time deadline = absl::Now() + wait;
    const absl::Time call_deadline = absl::FromChrono(context->deadline());
    if (call_deadline != absl::InfiniteFuture()) {
      deadline = std::min(deadline, call_deadline - kDeadlineMargin);
    }
    LeaseDispatcher::Waiter waiter;
    waiter.worker_id = request.worker_id();
    waiter.device = request.device();
    waiter.deadline = deadline;
    waiter.is_cancelled = [context] { return context->IsCancelled(); };
    waiter.done = [this](LeaseDispatcher::Outcome outcome) { Answer(std::move(outcome)); };
    id_ = dispatcher_->Add(std::move(waiter));
  }

  void OnCancel() override {
    if (dispatcher_->Remove(id_)) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "LeaseJob was cancelled"));
    }
  }
  void OnDone() override { delete this; }

 private:
  void Answer(LeaseDispatcher::Outcome outcome) {
    if (!outcome.ok()) {
      return Finish(ToGrpcStatus(outcome.status()));
    }
    if (outcome->has_value()) {
      LeaseGrant& grant = **outcome;
      *response_->mutable_job() = std::move(grant.job);
      response_->set_lease_id(grant.lease_id);
      *response_->mutable_lease_duration() = ToProtoDuration(grant.lease_duration);
    }
    Finish(grpc::Status::OK);
  }

  LeaseDispatcher* const dispatcher_;
  v1::LeaseJobResponse* const response_;
  uint64_t id_ = 0;
};

}  // namespace

grpc::ServerUnaryReactor* WorkerServiceImpl::LeaseJob(grpc::CallbackServerContext* context,
                                                      const v1::LeaseJobRequest* request,
                                                      v1::LeaseJobResponse* response) {
  absl::StatusOr<Principal> caller = auth_->Authenticate(*context, Role::kWorker);
  if (!caller.ok()) {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(ToGrpcStatus(caller.status()));
    return reactor;
  }
  return new LeaseReactor(dispatcher_, context, *request, response, max_lease_wait_);
}

grpc::ServerUnaryReactor* WorkerServiceImpl::Heartbeat(grpc::CallbackServerContext* context,
                                                       const v1::HeartbeatRequest* request,
                                                       v1::HeartbeatResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::StatusOr<Principal> caller = auth_->Authenticate(*context, Role::kWorker);
  absl::StatusOr<v1::HeartbeatResponse> result =
      caller.ok() ? manager_->Heartbeat(*request) : caller.status();
  const grpc::Status status = ToGrpcStatus(result.status());
  if (result.ok()) {
    *response = std::move(result).value();
  }
  reactor->Finish(status);
  return reactor;
}

grpc::ServerUnaryReactor* WorkerServiceImpl::CompleteJob(grpc::CallbackServerContext* context,
                                                         const v1::CompleteJobRequest* request,
                                                         v1::CompleteJobResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::StatusOr<Principal> caller = auth_->Authenticate(*context, Role::kWorker);
  absl::StatusOr<v1::Job> job = caller.ok() ? manager_->CompleteJob(*request) : caller.status();
  const grpc::Status status = ToGrpcStatus(job.status());
  if (job.ok()) {
    *response->mutable_job() = std::move(job).value();
  }
  reactor->Finish(status);
  return reactor;
}

}  // namespace ompq
