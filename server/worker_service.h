// WorkerService: gRPC front of the JobManager for ompq-worker processes. LeaseJob is a
// long poll parked in the LeaseDispatcher; Heartbeat and CompleteJob answer at once.
#ifndef OMPQ_SERVER_WORKER_SERVICE_H_
#define OMPQ_SERVER_WORKER_SERVICE_H_

#include "absl/time/time.h"
#include "ompq/v1/worker_service.grpc.pb.h"
#include "server/auth.h"
#include "server/job_manager.h"
#include "server/lease_dispatcher.h"

namespace ompq {

/// The WorkerService implementation.
class WorkerServiceImpl final : public v1::WorkerService::CallbackService {
 public:
  /// Pointers must outlive the service. LeaseJob waits at most `max_lease_wait`.
  /// Every call needs a worker token (`auth`).
  WorkerServiceImpl(JobManager* manager, LeaseDispatcher* dispatcher, absl::Duration max_lease_wait,
                    const Authenticator* auth)
      : manager_(manager), auth_(auth), dispatcher_(dispatcher), max_lease_wait_(max_lease_wait) {}

  grpc::ServerUnaryReactor* LeaseJob(grpc::CallbackServerContext* context,
                                     const v1::LeaseJobRequest* request,
                                     v1::LeaseJobResponse* response) override;
  grpc::ServerUnaryReactor* Heartbeat(grpc::CallbackServerContext* context,
                                      const v1::HeartbeatRequest* request,
                                      v1::HeartbeatResponse* response) override;
  grpc::ServerUnaryReactor* CompleteJob(grpc::CallbackServerContext* context,
                                        const v1::CompleteJobRequest* request,
                                        v1::CompleteJobResponse* response) override;

 private:
  JobManager* const manager_;
  const Authenticator* const auth_;
  LeaseDispatcher* const dispatcher_;
  const absl::Duration max_lease_wait_;
};

}  // namespace ompq

#endif  // OMPQ_SERVER_WORKER_SERVICE_H_
