// Facts about job states that the server, ompqctl and ompq-worker all rely on.
#ifndef OMPQ_RPC_JOB_STATE_H_
#define OMPQ_RPC_JOB_STATE_H_

#include "ompq/v1/job.pb.h"

namespace ompq {

/// True for SUCCEEDED, FAILED and CANCELLED: the job never changes state again.
bool IsTerminal(v1::JobState state);

}  // namespace ompq

#endif  // OMPQ_RPC_JOB_STATE_H_
