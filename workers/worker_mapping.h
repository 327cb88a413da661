// Conversions between the service's protos and the engine's plain types, for the worker:
// JobSpec -> engine::SearchOptions, report.json -> JobResult, engine stages -> ompq.v1
// stages, and stage progress -> percent of the whole job.
#ifndef OMPQ_WORKERS_WORKER_MAPPING_H_
#define OMPQ_WORKERS_WORKER_MAPPING_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "ompq/v1/job.pb.h"
#include "workers/engine/quantize.h"
#include "workers/engine/search.h"

namespace ompq::worker {

/// The engine's options for `spec`, reading the model and calibration data from the
/// given local paths. Absent fields keep the engine's defaults (pin_first_last_bits
/// absent -> 8; 0 -> no pin).
engine::SearchOptions ToSearchOptions(const v1::JobSpec& spec, const std::string& model_path,
                                      const std::string& calib_path, const std::string& device);

/// The engine's quantization options for `spec` (finetune unspecified -> ptq; epochs and
/// lr 0 -> the engine's defaults). `eval_path` / `train_path` are empty without eval /
/// training data.
engine::QuantizeOptions ToQuantizeOptions(const v1::JobSpec& spec, const std::string& model_path,
                                          const std::string& calib_path,
                                          const std::string& eval_path,
                                          const std::string& train_path, const std::string& device,
                                          const std::string& out_dir);

/// JobResult (sizes, objective, LP bound, per-layer bits, accuracy) from a report.json
/// document; INVALID_ARGUMENT naming the first missing or mistyped field.
absl::StatusOr<v1::JobResult> ToJobResult(const nlohmann::json& report);

/// ompq.v1 stage of an engine stage.
v1::Stage ToProtoStage(engine::Stage stage);

/// Turns per-stage fractions into percent of the whole job, never going backwards.
class JobProgress {
 public:
  /// `stages`: the stages this job will run, in order.
  explicit JobProgress(std::vector<v1::Stage> stages);

  /// The stages a search-only run goes through: fetch, analyze, orthogonality, solve, export.
  static std::vector<v1::Stage> SearchStages();
  /// The stages the job `spec` goes through: the search's, then calibrating, finetuning
  /// (PTQ or QAT), evaluating (with eval data) and exporting.
  static std::vector<v1::Stage> StagesFor(const v1::JobSpec& spec);

  /// Percent (0..100) once `stage` is `fraction` (0..1) done. A stage not in the plan
  /// keeps the percent reached so far.
  double Percent(v1::Stage stage, double fraction);

 private:
  std::vector<v1::Stage> stages_;
  double total_weight_ = 0;
  double reached_ = 0;  // Highest percent reported; progress never moves back.
};

}  // namespace ompq::worker

#endif  // OMPQ_WORKERS_WORKER_MAPPING_H_
