// One job in the engine, as one pipeline: the inputs are loaded and checked once, then the
// stages run as calls on them. The worker only does transport, heartbeats and uploads
// around it; bench/ and the tests drive it the same way.
//
//   Load       ANALYZING: eval/train data, the model, its digest and the calibration
//              inputs, each read once; labelled data checked against the model.
//   Search     ANALYZING (graph), ORTHOGONALITY, SOLVING: the bit allocation (search.h).
//   Quantize   CALIBRATING, FINETUNING, EVALUATING, EXPORTING on a copy of the model
//              (quantize.h): model_quantized.pt, model_quantized.onnx, encodings.json.
//   WriteReport  report.json, bit_config.json and report.html.
#ifndef OMPQ_WORKERS_ENGINE_JOB_RUN_H_
#define OMPQ_WORKERS_ENGINE_JOB_RUN_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "workers/engine/job_inputs.h"
#include "workers/engine/quantize.h"
#include "workers/engine/search.h"

namespace ompq::engine {

class JobRun {
 public:
  /// Loads and checks the inputs named by `quantize` (model, calib, eval, train paths and
  /// device); `search` is the search's options. Errors carry job failure reasons.
  static absl::StatusOr<std::unique_ptr<JobRun>> Load(SearchOptions search,
                                                      QuantizeOptions quantize,
                                                      const ProgressFn& progress);

  /// The search; its report becomes report(). The loading counts in its "analyze" time.
  absl::Status Search(const ProgressFn& progress);
  /// Calibration, finetuning, evaluation and export after Search, into the quantize
  /// options' out_dir; adds to report().
  absl::Status Quantize(const ProgressFn& progress);
  /// Writes the report files into out_dir. Returns every file written so far, the report
  /// files first.
  absl::StatusOr<std::vector<std::string>> WriteReport();

  nlohmann::json& report() { return report_; }
  const JobInputs& inputs() const { return inputs_; }

 private:
  JobRun() = default;

  SearchOptions search_options_;
  QuantizeOptions quantize_options_;
  JobInputs inputs_;
  double load_seconds_ = 0;
  nlohmann::json report_;
  std::vector<std::string> files_;  // The quantized model files, once quantized.
};

}  // namespace ompq::engine

#endif  // OMPQ_WORKERS_ENGINE_JOB_RUN_H_
