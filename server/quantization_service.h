// QuantizationService: gRPC front of the JobManager for clients (create, inspect, list,
// cancel, delete and watch jobs).
#ifndef OMPQ_SERVER_QUANTIZATION_SERVICE_H_
#define OMPQ_SERVER_QUANTIZATION_SERVICE_H_

#include "ompq/v1/quantization_service.grpc.pb.h"
#include "server/auth.h"
#include "server/job_manager.h"

namespace ompq {

/// The QuantizationService implementation.
class QuantizationServiceImpl final : public v1::QuantizationService::CallbackService {
 public:
  /// `manager` must outlive the service.
  /// Both must outlive the service.
  QuantizationServiceImpl(JobManager* manager, const Authenticator* auth)
      : manager_(manager), auth_(auth) {}

  grpc::ServerUnaryReactor* CreateJob(grpc::CallbackServerContext* context,
                                      const v1::CreateJobRequest* request,
                                      v1::Job* response) override;
  grpc::ServerUnaryReactor* GetJob(grpc::CallbackServerContext* context,
                                   const v1::GetJobRequest* request, v1::Job* response) override;
  grpc::ServerUnaryReactor* ListJobs(grpc::CallbackServerContext* context,
                                     const v1::ListJobsRequest* request,
                                     v1::ListJobsResponse* response) override;
  grpc::ServerUnaryReactor* CancelJob(grpc::CallbackServerContext* context,
                                      const v1::CancelJobRequest* request,
                                      v1::Job* response) override;
  grpc::ServerUnaryReactor* DeleteJob(grpc::CallbackServerContext* context,
                                      const v1::DeleteJobRequest* request,
                                      google::protobuf::Empty* response) override;
  grpc::ServerWriteReactor<v1::Job>* WatchJob(grpc::CallbackServerContext* context,
                                              const v1::WatchJobRequest* request) override;

 private:
  JobManager* const manager_;
  const Authenticator* const auth_;
};

}  // namespace ompq

#endif  // OMPQ_SERVER_QUANTIZATION_SERVICE_H_
