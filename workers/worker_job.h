// One leased job from start to CompleteJob: fetch the inputs, run the engine's search,
// export and upload the artifacts, all while a heartbeat reports progress.
#ifndef OMPQ_WORKERS_WORKER_JOB_H_
#define OMPQ_WORKERS_WORKER_JOB_H_

#include <functional>

#include "ompq/v1/blob_service.grpc.pb.h"
#include "ompq/v1/worker_service.grpc.pb.h"
#include "workers/worker_metrics.h"
#include "workers/worker_options.h"

namespace ompq::worker {

/// What a job borrows from its worker.
struct JobEnvironment {
  const WorkerOptions* options = nullptr;
  v1::WorkerService::StubInterface* workers = nullptr;
  v1::BlobService::StubInterface* blobs = nullptr;
  WorkerMetrics* metrics = nullptr;  // Jobs, stages and their times are recorded here.
  std::function<bool()> abandon;  // True once the worker must give the job back.
};

/// Runs the job of `lease` and reports its end with CompleteJob: a result and artifacts,
/// or a JobError (engine reason, CANCELLED, DEADLINE_EXCEEDED, or a retryable
/// WORKER_LOST when abandoned). Reports nothing when the lease was lost. Cleans the job's
/// folder afterwards. Never throws; a failing job leaves the worker fit for the next.
void RunLeasedJob(const JobEnvironment& env, const v1::LeaseJobResponse& lease);

}  // namespace ompq::worker

#endif  // OMPQ_WORKERS_WORKER_JOB_H_
