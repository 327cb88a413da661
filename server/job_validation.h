// Validation of what clients send to QuantizationService: one INVALID_ARGUMENT per bad
// field, one line naming the field and the fix; defaults filled in so stored specs are
// complete.
#ifndef OMPQ_SERVER_JOB_VALIDATION_H_
#define OMPQ_SERVER_JOB_VALIDATION_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ompq/v1/job.pb.h"
#include "ompq/v1/quantization_service.pb.h"

namespace ompq {

/// An unspecified finetune mode means PTQ (PRODUCT.md).
inline constexpr v1::FinetuneMode kDefaultFinetuneMode = v1::PTQ;
/// The allocation objective of a job that names none (docs/results.md says why).
inline constexpr v1::Objective kDefaultObjective = v1::OBJECTIVE_DISTORTION;

/// Checks every field of `spec` and fills defaults (weight_bits 2..8, act_bits 8,
/// pin_first_last_bits 8, search_samples 32, calib_samples 1024, finetune as above,
/// export_profile DEFAULT).
/// INVALID_ARGUMENT for a bad field; UNIMPLEMENTED for what this version lacks (QAT and
/// its training data). Blob existence is checked by the caller.
absl::Status ValidateAndFillSpec(v1::JobSpec* spec);

/// Checks CreateJobRequest.request_id (at most 128 printable characters).
absl::Status ValidateRequestId(const std::string& request_id);

/// Checks a "jobs/<id>" name given in field `field`.
absl::Status ValidateJobName(const std::string& name, const std::string& field = "name");

/// A ListJobsRequest.label filter "key=value", split.
struct LabelFilter {
  std::string key;    // Empty: no filter.
  std::string value;  // Compared exactly.
};

/// Parses ListJobsRequest.label ("" means no filter).
absl::StatusOr<LabelFilter> ParseLabelFilter(const std::string& label);

/// Checks page_size and state of a ListJobsRequest.
absl::Status ValidateListRequest(const v1::ListJobsRequest& request);

}  // namespace ompq

#endif  // OMPQ_SERVER_JOB_VALIDATION_H_
