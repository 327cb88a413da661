#include "common/job_error.h"

#include "absl/strings/cord.h"

namespace ompq {
namespace {
// Payload type URL under which the reason travels inside an absl::Status.
constexpr char kReasonUrl[] = "type.ompq.dev/ompq.v1.JobErrorReason";
}  // namespace

absl::Status JobFailure(absl::StatusCode code, absl::string_view reason,
                        absl::string_view message) {
  absl::Status status(code, message);
  status.SetPayload(kReasonUrl, absl::Cord(reason));
  return status;
}

std::string ReasonOf(const absl::Status& status) {
  auto payload = status.GetPayload(kReasonUrl);
  if (payload.has_value()) return std::string(*payload);
  if (status.code() == absl::StatusCode::kDeadlineExceeded) return reason::kDeadlineExceeded;
  if (status.code() == absl::StatusCode::kCancelled) return reason::kCancelled;
  return reason::kInternal;
}

}  // namespace ompq
