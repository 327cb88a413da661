// The job options of `ompqctl quantize` and `submit` (PRODUCT.md "Job options"): the
// flags as typed, their parsing and checks, and the JobSpec they become.
#ifndef OMPQ_CLIENT_JOB_OPTIONS_H_
#define OMPQ_CLIENT_JOB_OPTIONS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "ompq/v1/job.pb.h"

namespace ompq::client {

/// Job flags as the user typed them; empty strings and zeros mean "not given".
struct JobFlags {
  std::string model;                // Positional: TorchScript archive.
  std::string calib;                // --calib: calibration inputs (required).
  std::string eval;                 // --eval: labelled data for accuracy.
  std::string train;                // --train: labelled data for QAT.
  std::string size;                 // --size: model-size budget, e.g. "1.5MiB".
  std::string bops;                 // --bops: BOPs budget, e.g. "75G".
  std::string weight_bits;          // --weight-bits: "2,3,4".
  int act_bits = 0;                 // --act-bits; 0: server default (8).
  std::string pin_first_last;       // --pin-first-last: bits or "none".
  std::vector<std::string> pins;    // --pin NAME_REGEX=B, repeatable.
  std::string beta;                 // --beta: importance temperature.
  std::string finetune;             // --finetune none|ptq|qat.
  std::string objective;            // --objective orthogonality|distortion.
  std::string export_profile;       // --export-profile default|tensorrt.
  int iters = 0;                    // --iters.
  std::optional<int> frontier_evals;  // --frontier-evals; unset: the server's default.
  int epochs = 0;                   // --epochs.
  double lr = 0;                    // --lr.
  int search_samples = 0;           // --search-samples.
  int calib_samples = 0;            // --calib-samples.
  int64_t seed = 0;                 // --seed.
  std::string timeout;              // --timeout: per-job time limit, e.g. "30m".
  std::string request_id;           // --request-id: idempotency key.
  std::vector<std::string> labels;  // --label k=v, repeatable.
};

/// What a submit needs: local files to upload, and the spec to send once their digests
/// are filled in.
struct JobPlan {
  std::string model_path;
  std::string calib_path;
  std::string eval_path;   // Empty when not given.
  std::string train_path;  // Empty when not given.
  v1::JobSpec spec;        // Everything but the digests.
  std::string request_id;
};

/// Checks the flags and builds the plan; INVALID_ARGUMENT naming the flag and the fix.
absl::StatusOr<JobPlan> BuildJobPlan(const JobFlags& flags);

/// "2,3,4" -> {2,3,4}: each 1..16, no duplicates; returned ascending.
absl::StatusOr<std::vector<int>> ParseBitsList(absl::string_view text);

/// "8" -> 8, "none" -> 0.
absl::StatusOr<int> ParsePinFirstLast(absl::string_view text);

/// "layer1\..*=4" -> {regex, bits}; the last '=' separates (regexes may hold '=').
absl::StatusOr<v1::LayerPin> ParsePin(absl::string_view text);

/// "team=vision" -> {"team", "vision"}.
absl::StatusOr<std::pair<std::string, std::string>> ParseLabel(absl::string_view text);

/// "none" | "ptq" | "qat" (any case).
absl::StatusOr<v1::FinetuneMode> ParseFinetuneMode(absl::string_view text);
/// "orthogonality" / "distortion" (any case).
absl::StatusOr<v1::Objective> ParseObjective(absl::string_view text);

/// "default" or "tensorrt" (case-insensitive).
absl::StatusOr<v1::ExportProfile> ParseExportProfile(absl::string_view text);

/// "abc" -> "jobs/abc"; "jobs/abc" unchanged.
std::string NormalizeJobName(absl::string_view name);

/// "QUEUED", "running", ... -> JobState; INVALID_ARGUMENT listing the states otherwise.
absl::StatusOr<v1::JobState> ParseJobState(absl::string_view text);

}  // namespace ompq::client

#endif  // OMPQ_CLIENT_JOB_OPTIONS_H_
