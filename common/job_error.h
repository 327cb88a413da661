// Job-level failure reasons (PRODUCT.md "Errors") carried inside absl::Status.
//
// A Status made by JobFailure() carries a machine-readable reason such as "INVALID_MODEL"
// as a payload, so the engine can say *why* without knowing about gRPC or protos.
#ifndef OMPQ_COMMON_JOB_ERROR_H_
#define OMPQ_COMMON_JOB_ERROR_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace ompq {

/// Reasons a job can fail with (the `reason` field of JobError).
namespace reason {
inline constexpr char kInvalidModel[] = "INVALID_MODEL";
inline constexpr char kInvalidInput[] = "INVALID_INPUT";
inline constexpr char kNoQuantizableLayers[] = "NO_QUANTIZABLE_LAYERS";
inline constexpr char kInputMismatch[] = "INPUT_MISMATCH";
inline constexpr char kNonFiniteInput[] = "NON_FINITE_INPUT";
inline constexpr char kInfeasibleBudget[] = "INFEASIBLE_BUDGET";
inline constexpr char kUnsupportedOp[] = "UNSUPPORTED_OP";
inline constexpr char kDeadlineExceeded[] = "DEADLINE_EXCEEDED";
inline constexpr char kCancelled[] = "CANCELLED";
inline constexpr char kWorkerLost[] = "WORKER_LOST";
inline constexpr char kInternal[] = "INTERNAL";
}  // namespace reason

/// A Status with code `code`, message `message`, and the job failure reason `reason`.
absl::Status JobFailure(absl::StatusCode code, absl::string_view reason,
                        absl::string_view message);

/// The reason attached by JobFailure(); "INTERNAL" for statuses without one.
std::string ReasonOf(const absl::Status& status);

}  // namespace ompq

#endif  // OMPQ_COMMON_JOB_ERROR_H_
